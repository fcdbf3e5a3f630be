//! Crash test: a child process appends and syncs in a loop, printing every
//! index that `sync` acknowledged, and is killed with SIGKILL at a varying
//! moment. After each kill the parent reopens the store and checks that every
//! acknowledged index is recovered, with the right bytes; then the next child
//! continues the same log. The child also takes snapshots and saves meta, so
//! compaction and atomic renames are interrupted too.
//!
//! Runs without the libtest harness: the same binary is the child when
//! `TROUPE_STORE_CRASH_DIR` is set.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::path::{Path, PathBuf};

use troupe_store::{decode_segment, FsyncPolicy, Store, StoreOptions};

const CHILD_ENV: &str = "TROUPE_STORE_CRASH_DIR";
/// Kill/reopen cycles. Each takes well under a second.
const ROUNDS: u64 = 12;
/// Small segments so that roll-over and compaction happen within a round.
const SEGMENT_BYTES: u64 = 8 << 10;
/// The child snapshots every this many entries.
const SNAPSHOT_EVERY: u64 = 300;

fn opts() -> StoreOptions {
    StoreOptions {
        fsync: FsyncPolicy::Always,
        segment_bytes: SEGMENT_BYTES,
    }
}

fn payload(i: u64) -> Vec<u8> {
    let mut v = i.to_le_bytes().to_vec();
    v.extend(std::iter::repeat_n((i % 251) as u8, (i % 97) as usize));
    v
}

fn snapshot_payload(i: u64) -> Vec<u8> {
    format!("state through {i}").into_bytes()
}

fn child(dir: &str) {
    let (mut store, _) = Store::open(dir, opts()).expect("child open");
    let out = std::io::stdout();
    let mut out = out.lock();
    let mut next = store.last_index() + 1;
    let mut last_snapshot = store.sizes().snapshot_index;
    loop {
        let batch = 1 + next % 17;
        for i in next..next + batch {
            store.append(i, &payload(i)).expect("append");
        }
        next += batch;
        store.sync().expect("sync");
        let synced = store.synced_index();
        writeln!(out, "SYNCED {synced}").expect("stdout");
        out.flush().expect("stdout");
        if synced >= last_snapshot + SNAPSHOT_EVERY {
            store
                .save_snapshot(synced, &snapshot_payload(synced))
                .expect("snapshot");
            last_snapshot = synced;
            store.save_meta(&synced.to_le_bytes()).expect("meta");
            writeln!(out, "META {synced}").expect("stdout");
            out.flush().expect("stdout");
        }
    }
}

/// A small deterministic generator, so a failing round replays.
fn lcg(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

/// Truncates the last segment at a random byte inside a record written after
/// the last acknowledged index, if there is one. Returns the file and the
/// length it was cut to.
fn tear_unacknowledged(dir: &Path, acked: u64, rng: &mut u64) -> Option<(PathBuf, u64)> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segments.sort();
    let last = segments.pop()?;
    let bytes = std::fs::read(&last).expect("read");
    let decoded = decode_segment(&bytes).ok()?;
    let first_unacked = decoded.records.iter().find(|r| r.index > acked)?;
    let from = first_unacked.offset + 1;
    // Within the records: the zero bytes reserved after them are no record.
    let len = decoded.valid_len;
    if from >= len {
        return None;
    }
    let at = from + lcg(rng) % (len - from);
    // Only cut inside a record, so that recovery has something to report.
    if decoded.records.iter().any(|r| r.offset == at) {
        return None;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .and_then(|f| f.set_len(at))
        .expect("truncate");
    Some((last, at))
}

fn parent() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let exe = std::env::current_exe().expect("current_exe");
    let mut rng = 0x5eed_u64;
    let mut total_cuts = 0;
    let mut total_tears = 0;
    let mut acked_max = 0u64;
    let started = Instant::now();
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .env(CHILD_ENV, &dir)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut synced_max = 0u64;
        let mut meta_max = 0u64;
        let note = |line: &str, synced_max: &mut u64, meta_max: &mut u64| {
            if let Some(n) = line.strip_prefix("SYNCED ") {
                *synced_max = (*synced_max).max(n.parse().expect("index"));
            } else if let Some(n) = line.strip_prefix("META ") {
                *meta_max = (*meta_max).max(n.parse().expect("index"));
            }
        };
        // Let the child make some progress, then kill it at a varying moment.
        let wait_lines = 20 + lcg(&mut rng) % 200;
        for _ in 0..wait_lines {
            match lines.next() {
                Some(line) => note(&line.expect("line"), &mut synced_max, &mut meta_max),
                None => panic!("child exited early in round {round}"),
            }
        }
        std::thread::sleep(Duration::from_micros(lcg(&mut rng) % 3000));
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        assert!(!status.success(), "the child was killed");
        // What the child printed before it died is still in the pipe.
        for line in lines {
            note(&line.expect("line"), &mut synced_max, &mut meta_max);
        }

        // Every other round, also lose part of what was written but never
        // acknowledged, as a power loss could: tear the last segment at a
        // random byte after the last acknowledged record.
        let mut torn_at = None;
        if round % 2 == 1 {
            torn_at = tear_unacknowledged(&dir, synced_max, &mut rng);
        }

        let (store, rec) = Store::open(&dir, opts()).expect("reopen after kill");
        if let Some(at) = torn_at {
            total_tears += 1;
            let (file, len) = at;
            let cut = rec.tail_cut.as_ref().unwrap_or_else(|| {
                panic!(
                    "round {round}: tore {} at {len}, no cut reported",
                    file.display()
                )
            });
            assert_eq!(cut.file, file, "round {round}");
            assert!(
                cut.offset < len,
                "round {round}: cut at a record start before the tear"
            );
            assert_eq!(cut.offset + cut.bytes_cut, len, "round {round}");
        }
        let snap_index = rec.snapshot.as_ref().map_or(0, |s| s.index);
        if let Some(s) = &rec.snapshot {
            assert_eq!(
                s.data,
                snapshot_payload(s.index),
                "round {round}: snapshot bytes"
            );
        }
        for (k, e) in rec.entries.iter().enumerate() {
            assert_eq!(
                e.index,
                snap_index + 1 + k as u64,
                "round {round}: contiguous"
            );
            assert_eq!(
                e.data,
                payload(e.index),
                "round {round}: bytes of entry {}",
                e.index
            );
        }
        assert!(
            store.last_index() >= synced_max,
            "round {round}: acknowledged index {synced_max} lost, recovered up to {}",
            store.last_index()
        );
        assert!(synced_max >= acked_max, "round {round}: progress");
        let meta = rec.meta.as_ref().map_or(0, |m| {
            u64::from_le_bytes(m.as_slice().try_into().expect("8-byte meta"))
        });
        assert!(
            meta >= meta_max,
            "round {round}: meta {meta} older than acknowledged {meta_max}"
        );
        assert!(snap_index <= store.last_index());
        if let Some(cut) = &rec.tail_cut {
            total_cuts += 1;
            println!(
                "round {round}: cut {} bytes at {}:{} ({})",
                cut.bytes_cut,
                cut.file.display(),
                cut.offset,
                cut.reason
            );
        }
        println!(
            "round {round}: acknowledged up to {synced_max}, recovered up to {} (snapshot {snap_index}, {} segments)",
            store.last_index(),
            store.sizes().wal_segments
        );
        acked_max = synced_max;
    }
    println!(
        "crash test: {ROUNDS} SIGKILLs, {total_tears} simulated power-loss tears, {total_cuts} torn tails cut, \
         every acknowledged index recovered ({acked_max} entries, {:.1?})",
        started.elapsed()
    );
}

fn main() {
    match std::env::var(CHILD_ENV) {
        Ok(dir) => child(&dir),
        Err(_) => parent(),
    }
}
