//! Replaying the committed corpus without libFuzzer: shared by every crate's
//! `tests/fuzz_corpus.rs`, which include this file with `#[path]`.

use std::path::PathBuf;

/// The `fuzz/` directory, from a crate under `crates/`.
pub fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// Every input of `target`: its corpus and its crash regressions, sorted.
pub fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for kind in ["corpus", "regressions"] {
        let Ok(rd) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else {
            continue;
        };
        for e in rd {
            let p = e.expect("dir entry").path();
            if p.is_file() {
                let bytes = std::fs::read(&p).expect("read corpus file");
                out.push((p, bytes));
            }
        }
    }
    out.sort();
    out
}

/// Runs `f` on every input of `target`; a panic names the input's file.
/// Returns how many inputs there were.
pub fn replay(target: &str, f: &dyn Fn(&[u8])) -> usize {
    let all = inputs(target);
    for (path, bytes) in &all {
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(bytes))) {
            std::panic::resume_unwind(Box::new(format!("{}: {e:?}", path.display())));
        }
    }
    all.len()
}

/// Writes a seed input into `fuzz/corpus/<target>/seed-<name>`.
pub fn write_seed(target: &str, name: &str, bytes: &[u8]) {
    let dir = fuzz_dir().join("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
}
