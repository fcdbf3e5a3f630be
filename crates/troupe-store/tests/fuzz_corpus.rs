//! Replays the committed fuzz corpus of the `store_format` and `store_open`
//! targets (`fuzz/corpus/<target>/`, and crash regressions under
//! `fuzz/regressions/<target>/`) through the same code the targets run
//! (`fuzz/harness/store.rs`), without libFuzzer.
//!
//! `TROUPE_FUZZ_WRITE_SEEDS=1 cargo test -p troupe-store --test fuzz_corpus
//! -- --ignored write_seeds` rewrites the seeds made by the real encoders.

#[path = "../../../fuzz/harness/store.rs"]
#[allow(dead_code)]
mod harness;

#[path = "../../../fuzz/harness/replay.rs"]
#[allow(dead_code)]
mod replay;

use replay::{replay, write_seed};

use troupe_store::format::{encode_meta, encode_record, encode_segment_header, encode_snapshot};
use troupe_store::{FsyncPolicy, Store, StoreOptions, META_FILE};

#[test]
fn store_format_corpus_decodes_without_panic() {
    assert!(
        replay("store_format", &harness::format) >= 3,
        "corpus missing"
    );
}

#[test]
fn store_open_corpus_opens_or_fails_without_panic() {
    assert!(
        replay("store_open", &harness::store_open) >= 1,
        "corpus missing"
    );
}

#[test]
fn seeds_round_trip() {
    for (_, s) in seeds_format() {
        harness::format(&s);
    }
    for (_, s) in seeds_open() {
        harness::store_open(&s);
    }
}

#[test]
#[ignore]
fn write_seeds() {
    if std::env::var_os("TROUPE_FUZZ_WRITE_SEEDS").is_none() {
        return;
    }
    let write = write_seed;
    for (name, s) in seeds_format() {
        write("store_format", &name, &s);
    }
    for (name, s) in seeds_open() {
        write("store_open", &name, &s);
    }
}

fn segment(first: u64, n: u64) -> Vec<u8> {
    let mut out = encode_segment_header(first).to_vec();
    for k in 0..n {
        encode_record(&mut out, first + k, format!("entry {k}").as_bytes());
    }
    out
}

fn seeds_format() -> Vec<(String, Vec<u8>)> {
    let mut torn = segment(1, 3);
    torn.truncate(torn.len() - 3);
    vec![
        ("segment-empty".into(), segment(1, 0)),
        ("segment-3".into(), segment(1, 3)),
        ("segment-torn".into(), torn),
        ("snapshot".into(), encode_snapshot(7, b"state at 7")),
        ("meta".into(), encode_meta(b"term=3 vote=2")),
    ]
}

/// The files of a store directory in the input format of the target.
fn pack(dir: &std::path::Path) -> Vec<u8> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let mut out = Vec::new();
    for p in files {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let kind = if name.starts_with("wal-") {
            0u8
        } else if name.starts_with("snap-") {
            1
        } else if name == META_FILE {
            2
        } else {
            continue;
        };
        let bytes = std::fs::read(&p).expect("read");
        out.push(kind);
        out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

fn seeds_open() -> Vec<(String, Vec<u8>)> {
    let opts = StoreOptions {
        fsync: FsyncPolicy::Never,
        segment_bytes: 256,
    };
    let mut out = Vec::new();
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let (mut s, _) = Store::open(dir.path(), opts.clone()).expect("open");
        for i in 1..=20u64 {
            s.append(i, format!("entry {i}").as_bytes())
                .expect("append");
        }
        s.sync().expect("sync");
        s.save_meta(b"term=1").expect("meta");
    }
    out.push(("log-and-meta".to_string(), pack(dir.path())));
    {
        let (mut s, _) = Store::open(dir.path(), opts).expect("open");
        s.save_snapshot(12, b"state at 12").expect("snapshot");
        for i in 21..=24u64 {
            s.append(i, b"more").expect("append");
        }
        s.sync().expect("sync");
    }
    out.push(("log-snapshot-meta".to_string(), pack(dir.path())));
    out
}
