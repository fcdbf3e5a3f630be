//! Recovery that changes files says so in the log: a cut tail is a `WARN`
//! line naming the file, the offset and the reason.

use std::fs;
use std::io::Write;
use std::sync::{Arc, Mutex};

use troupe_store::{FsyncPolicy, Store, StoreOptions};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_cut_tail_is_logged_as_a_warning_naming_file_and_offset() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let opts = StoreOptions {
        fsync: FsyncPolicy::Never,
        ..StoreOptions::default()
    };
    let (mut store, _) = Store::open(tmp.path(), opts.clone()).expect("open");
    for i in 1..=3 {
        store.append(i, b"entry").expect("append");
    }
    store.sync().expect("sync");
    drop(store);
    let seg = tmp.path().join(troupe_store::segment_file_name(1));
    // The end of the records (the file goes on with zero bytes reserved
    // for later ones).
    let len = store_records_end(&seg);
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .and_then(|f| f.set_len(len - 3))
        .expect("tear");

    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let rec = tracing::subscriber::with_default(subscriber, || Store::open(tmp.path(), opts))
        .expect("open")
        .1;
    let cut = rec.tail_cut.expect("cut");
    let log = String::from_utf8(capture.0.lock().expect("lock").clone()).expect("utf8");
    assert!(log.contains("WARN"), "{log}");
    assert!(log.contains(&seg.display().to_string()), "{log}");
    assert!(log.contains(&format!("offset={}", cut.offset)), "{log}");
    assert!(log.contains("torn record"), "{log}");
}

fn store_records_end(seg: &std::path::Path) -> u64 {
    let bytes = fs::read(seg).expect("read");
    troupe_store::decode_segment(&bytes)
        .expect("valid segment")
        .valid_len
}
