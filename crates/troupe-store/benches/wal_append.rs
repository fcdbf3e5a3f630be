//! Group-commit throughput and fsync latency of the WAL, plus recovery speed.
//! Prints figures; asserts nothing about time.
//!
//! `cargo bench -p troupe-store --bench wal_append`. The store lives under
//! `TROUPE_STORE_BENCH_DIR` if set, else under Cargo's target tmp directory:
//! put it on the disk you care about (a tmpfs makes fsync free).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use troupe_store::{FsyncPolicy, Store, StoreOptions};

/// Payload bytes of every record.
const RECORD_BYTES: usize = 128;
/// Wall time spent on each configuration.
const RUN_TIME: Duration = Duration::from_secs(3);
/// Entries written for the recovery measurement (~29 MB with headers).
const RECOVERY_ENTRIES: u64 = 200_000;

fn base_dir() -> PathBuf {
    std::env::var_os("TROUPE_STORE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn run(base: &Path, fsync: FsyncPolicy, batch: u64) {
    let tmp = tempfile::tempdir_in(base).expect("tempdir");
    let (mut store, _) = Store::open(
        tmp.path(),
        StoreOptions {
            fsync,
            ..StoreOptions::default()
        },
    )
    .expect("open");
    let record = [0xabu8; RECORD_BYTES];
    let mut sync_times = Vec::new();
    let mut next = 1u64;
    let start = Instant::now();
    while start.elapsed() < RUN_TIME {
        for i in next..next + batch {
            store.append(i, &record).expect("append");
        }
        next += batch;
        let t = Instant::now();
        store.sync().expect("sync");
        sync_times.push(t.elapsed());
    }
    let elapsed = start.elapsed();
    let appends = next - 1;
    sync_times.sort();
    println!(
        "{:<6} batch {:>4}: {:>10.0} appends/s {:>8.0} syncs/s {:>7.1} MB/s | sync() p50 {:>9.1?} p99 {:>9.1?} max {:>9.1?}",
        format!("{fsync:?}"),
        batch,
        appends as f64 / elapsed.as_secs_f64(),
        sync_times.len() as f64 / elapsed.as_secs_f64(),
        store.sizes().wal_bytes as f64 / elapsed.as_secs_f64() / 1e6,
        percentile(&sync_times, 0.5),
        percentile(&sync_times, 0.99),
        sync_times.last().copied().unwrap_or_default(),
    );
}

/// The floor under `sync()`: one 144-byte write() plus fdatasync on a plain file.
fn raw_fdatasync(base: &Path) {
    let tmp = tempfile::tempdir_in(base).expect("tempdir");
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(tmp.path().join("raw"))
        .expect("open");
    let buf = [0u8; RECORD_BYTES + 16];
    let mut times = Vec::new();
    let start = Instant::now();
    while start.elapsed() < RUN_TIME {
        let t = Instant::now();
        f.write_all(&buf).expect("write");
        f.sync_data().expect("fdatasync");
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "raw write+fdatasync (no store): {:>8.0}/s | p50 {:>9.1?} p99 {:>9.1?} max {:>9.1?}",
        times.len() as f64 / start.elapsed().as_secs_f64(),
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().copied().unwrap_or_default(),
    );
}

fn recovery(base: &Path) {
    let tmp = tempfile::tempdir_in(base).expect("tempdir");
    let opts = StoreOptions {
        fsync: FsyncPolicy::Never,
        ..StoreOptions::default()
    };
    let (mut store, _) = Store::open(tmp.path(), opts.clone()).expect("open");
    let record = [0x5au8; RECORD_BYTES];
    for i in 1..=RECOVERY_ENTRIES {
        store.append(i, &record).expect("append");
        if i % 4096 == 0 {
            store.sync().expect("sync");
        }
    }
    store.sync().expect("sync");
    let bytes = store.sizes().wal_bytes;
    drop(store);
    let t = Instant::now();
    let (_, rec) = Store::open(tmp.path(), opts).expect("reopen");
    let took = t.elapsed();
    assert_eq!(rec.entries.len() as u64, RECOVERY_ENTRIES);
    println!(
        "recovery: {RECOVERY_ENTRIES} entries, {:.1} MB in {took:.1?} ({:.0} MB/s, page cache warm)",
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / took.as_secs_f64()
    );
}

fn main() {
    let base = base_dir();
    std::fs::create_dir_all(&base).expect("bench dir");
    println!(
        "store under {} ; {RECORD_BYTES}-byte records, {RUN_TIME:?} per line",
        base.display()
    );
    raw_fdatasync(&base);
    for batch in [1, 16, 256] {
        run(&base, FsyncPolicy::Always, batch);
    }
    for batch in [1, 256] {
        run(&base, FsyncPolicy::Never, batch);
    }
    recovery(&base);
}
