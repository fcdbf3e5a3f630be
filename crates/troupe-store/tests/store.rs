//! Behaviour of `Store` on a real file system: round trips, roll-over,
//! compaction, reset, meta, locking, and recovery from torn and corrupt files.

use std::fs;
use std::path::{Path, PathBuf};

use troupe_store::format::{encode_snapshot, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use troupe_store::{
    decode_segment, segment_file_name, snapshot_file_name, FsyncPolicy, Recovered, Store,
    StoreError, StoreOptions,
};

fn opts(segment_bytes: u64) -> StoreOptions {
    StoreOptions {
        // Recovery logic does not depend on fsync; keep the suite fast.
        fsync: FsyncPolicy::Never,
        segment_bytes,
    }
}

/// The payload of entry `i`: its index, then a length that varies with it.
fn payload(i: u64) -> Vec<u8> {
    let mut v = i.to_le_bytes().to_vec();
    v.extend(std::iter::repeat_n((i % 251) as u8, (i % 37) as usize));
    v
}

fn fill(store: &mut Store, to: u64, batch: u64) {
    let mut i = store.last_index() + 1;
    while i <= to {
        let end = (i + batch - 1).min(to);
        for j in i..=end {
            store.append(j, &payload(j)).expect("append");
        }
        store.sync().expect("sync");
        i = end + 1;
    }
}

fn assert_entries(rec: &Recovered, first: u64, last: u64) {
    let got: Vec<u64> = rec.entries.iter().map(|e| e.index).collect();
    let want: Vec<u64> = (first..=last).collect();
    assert_eq!(got, want, "recovered indices");
    for e in &rec.entries {
        assert_eq!(e.data, payload(e.index), "payload of entry {}", e.index);
    }
}

fn segments_of(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

fn copy_dir(from: &Path, to: &Path) {
    for e in fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        if e.file_name() != "LOCK" {
            fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

/// Where the records of a segment file end (zero bytes reserved for later
/// records may follow).
fn records_end(bytes: &[u8]) -> usize {
    decode_segment(bytes).expect("valid segment").valid_len as usize
}

/// Offsets of every record in a segment file, with the end of its records.
fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let end = records_end(bytes);
    let mut at = SEGMENT_HEADER_LEN;
    let mut v = Vec::new();
    while at < end {
        v.push(at);
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        at += RECORD_HEADER_LEN + len;
    }
    v.push(end);
    v
}

fn expect_corrupt(result: Result<(Store, Recovered), StoreError>) -> (PathBuf, u64, String) {
    match result {
        Err(StoreError::Corrupt {
            ref file,
            offset,
            ref reason,
        }) => {
            let shown = result
                .as_ref()
                .err()
                .map(ToString::to_string)
                .unwrap_or_default();
            assert!(shown.contains(&file.display().to_string()), "{shown}");
            assert!(shown.contains(&format!("offset {offset}")), "{shown}");
            (file.clone(), offset, reason.clone())
        }
        Err(other) => panic!("expected Corrupt, got {other}"),
        Ok(_) => panic!("expected Corrupt, the store opened"),
    }
}

#[test]
fn empty_store_opens_empty_and_creates_its_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("a/b");
    let (store, rec) = Store::open(&dir, opts(1 << 20)).expect("open");
    assert!(dir.is_dir());
    assert_eq!(rec.snapshot, None);
    assert!(rec.entries.is_empty());
    assert_eq!(rec.meta, None);
    assert_eq!(rec.tail_cut, None);
    assert_eq!((store.last_index(), store.synced_index()), (0, 0));
    assert_eq!(store.dir(), dir);
}

#[test]
fn synced_entries_round_trip_through_reopen() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let o = StoreOptions::default();
    let (mut store, _) = Store::open(tmp.path(), o.clone()).expect("open");
    fill(&mut store, 100, 7);
    assert_eq!((store.last_index(), store.synced_index()), (100, 100));
    // Appended but never synced: lost on close, by contract.
    store.append(101, &payload(101)).expect("append");
    assert_eq!((store.last_index(), store.synced_index()), (101, 100));
    drop(store);

    let (mut store, rec) = Store::open(tmp.path(), o.clone()).expect("reopen");
    assert_entries(&rec, 1, 100);
    assert_eq!(rec.tail_cut, None);
    assert_eq!(store.last_index(), 100);
    fill(&mut store, 150, 50);
    drop(store);
    let (_, rec) = Store::open(tmp.path(), o).expect("reopen");
    assert_entries(&rec, 1, 150);
}

#[test]
fn append_refuses_an_index_out_of_order() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut store, _) = Store::open(tmp.path(), opts(1 << 20)).expect("open");
    match store.append(2, b"x") {
        Err(StoreError::OutOfOrder {
            expected: 1,
            got: 2,
        }) => {}
        other => panic!("expected OutOfOrder, got {other:?}"),
    }
    store.append(1, b"x").expect("append");
    assert!(matches!(
        store.append(1, b"x"),
        Err(StoreError::OutOfOrder {
            expected: 2,
            got: 1
        })
    ));
}

#[test]
fn segments_roll_over_and_recover_in_order() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let seg = 300;
    let (mut store, _) = Store::open(tmp.path(), opts(seg)).expect("open");
    fill(&mut store, 200, 13);
    let sizes = store.sizes();
    let files = segments_of(tmp.path());
    assert!(files.len() > 10, "{} segments", files.len());
    assert_eq!(sizes.wal_segments, files.len());
    let in_records: u64 = files
        .iter()
        .map(|f| records_end(&fs::read(f).expect("read")) as u64)
        .sum();
    assert_eq!(sizes.wal_bytes, in_records);
    for f in &files {
        assert!(
            fs::metadata(f).expect("meta").len() <= seg,
            "{} too big",
            f.display()
        );
    }
    assert_eq!(
        files[0].file_name().and_then(|n| n.to_str()),
        Some(segment_file_name(1).as_str())
    );
    drop(store);
    let (_, rec) = Store::open(tmp.path(), opts(seg)).expect("reopen");
    assert_entries(&rec, 1, 200);
}

#[test]
fn a_record_larger_than_a_segment_gets_a_segment_of_its_own() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut store, _) = Store::open(tmp.path(), opts(100)).expect("open");
    store.append(1, &[1u8; 10]).expect("append");
    store.append(2, &[2u8; 500]).expect("append");
    store.append(3, &[3u8; 10]).expect("append");
    store.sync().expect("sync");
    assert_eq!(segments_of(tmp.path()).len(), 3);
    drop(store);
    let (_, rec) = Store::open(tmp.path(), opts(100)).expect("reopen");
    assert_eq!(rec.entries.len(), 3);
    assert_eq!(rec.entries[1].data, vec![2u8; 500]);
}

/// Builds a store with entries 1..=`last` in segments of `seg` bytes and
/// returns the path of its last segment, cut to its records (as a crash
/// before the room after them was reserved leaves it; the tests of torn
/// tails append to it or cut it further).
fn build(dir: &Path, last: u64, seg: u64) -> PathBuf {
    let (mut store, _) = Store::open(dir, opts(seg)).expect("open");
    fill(&mut store, last, 3);
    drop(store);
    let path = segments_of(dir).pop().expect("a segment");
    trim_to_records(&path);
    path
}

/// Appends up to entry `to`, reopens, and checks that every entry from 1
/// comes back and nothing is cut: the log goes on after a cut as before it.
fn continue_and_reopen(mut store: Store, dir: &Path, seg: u64, to: u64) {
    fill(&mut store, to, 2);
    drop(store);
    let (_, rec) = Store::open(dir, opts(seg)).expect("reopen");
    assert_entries(&rec, 1, to);
    assert_eq!(rec.tail_cut, None);
}

fn trim_to_records(path: &Path) {
    let end = records_end(&fs::read(path).expect("read"));
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(end as u64))
        .expect("trim");
}

#[test]
fn torn_tail_at_every_byte_of_the_last_record_is_cut() {
    for seg in [1 << 20, 200] {
        let template = tempfile::tempdir().expect("tempdir");
        let last_seg = build(template.path(), 20, seg);
        let bytes = fs::read(&last_seg).expect("read");
        let offs = record_offsets(&bytes);
        assert!(offs.len() >= 2, "the last segment holds a record");
        let last_start = offs[offs.len() - 2];
        for cut in last_start..bytes.len() {
            let tmp = tempfile::tempdir().expect("tempdir");
            copy_dir(template.path(), tmp.path());
            let name = last_seg.file_name().expect("name");
            let victim = tmp.path().join(name);
            fs::write(&victim, &bytes[..cut]).expect("truncate");

            let (store, rec) = Store::open(tmp.path(), opts(seg)).expect("torn tail opens");
            assert_entries(&rec, 1, 19);
            if cut == last_start {
                assert_eq!(
                    rec.tail_cut, None,
                    "a cut on a record boundary is a clean end"
                );
            } else {
                let tc = rec.tail_cut.as_ref().expect("tail cut reported");
                assert_eq!(tc.file, victim);
                assert_eq!(tc.offset, last_start as u64);
                assert_eq!(tc.bytes_cut, (cut - last_start) as u64);
                assert!(tc.reason.contains("torn"), "{}", tc.reason);
            }
            assert_eq!(
                fs::metadata(&victim).expect("meta").len(),
                last_start as u64
            );
            // The log continues where the cut left it.
            continue_and_reopen(store, tmp.path(), seg, 25);
        }
    }
}

#[test]
fn torn_header_of_a_new_last_segment_removes_it() {
    let template = tempfile::tempdir().expect("tempdir");
    let seg = 200;
    let (mut store, _) = Store::open(template.path(), opts(seg)).expect("open");
    fill(&mut store, 30, 1);
    let before = segments_of(template.path());
    // Find the first index of the next segment by forcing one more roll-over.
    let mut i = 31;
    while segments_of(template.path()).len() == before.len() {
        store.append(i, &payload(i)).expect("append");
        store.sync().expect("sync");
        i += 1;
    }
    drop(store);
    let last_seg = segments_of(template.path()).pop().expect("segment");
    trim_to_records(&last_seg);
    let bytes = fs::read(&last_seg).expect("read");
    let in_last = record_offsets(&bytes).len() as u64 - 1;
    let kept_last = i - 1 - in_last;
    for cut in 0..SEGMENT_HEADER_LEN {
        let tmp = tempfile::tempdir().expect("tempdir");
        copy_dir(template.path(), tmp.path());
        let victim = tmp.path().join(last_seg.file_name().expect("name"));
        fs::write(&victim, &bytes[..cut]).expect("truncate");
        let (mut store, rec) = Store::open(tmp.path(), opts(seg)).expect("opens");
        assert_entries(&rec, 1, kept_last);
        let tc = rec.tail_cut.expect("cut reported");
        assert_eq!(
            (tc.file.as_path(), tc.offset, tc.bytes_cut),
            (victim.as_path(), 0, cut as u64)
        );
        assert!(!victim.exists());
        fill(&mut store, kept_last + 5, 5);
        drop(store);
        let (_, rec) = Store::open(tmp.path(), opts(seg)).expect("reopen");
        assert_entries(&rec, 1, kept_last + 5);
    }
}

#[test]
fn random_garbage_after_the_last_record_is_cut() {
    for garbage in [
        (0..5000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect::<Vec<u8>>(),
        // Zeros with one stray byte are not reserved room.
        {
            let mut z = vec![0u8; 8192];
            z[4000] = 0x5a;
            z
        },
    ] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let last_seg = build(tmp.path(), 10, 1 << 20);
        let mut bytes = fs::read(&last_seg).expect("read");
        let good = bytes.len() as u64;
        bytes.extend_from_slice(&garbage);
        fs::write(&last_seg, &bytes).expect("write");
        let (_, rec) = Store::open(tmp.path(), opts(1 << 20)).expect("opens");
        assert_entries(&rec, 1, 10);
        let tc = rec.tail_cut.expect("cut");
        assert_eq!((tc.offset, tc.bytes_cut), (good, garbage.len() as u64));
    }
}

#[test]
fn a_flipped_byte_in_any_middle_record_refuses_to_open() {
    let template = tempfile::tempdir().expect("tempdir");
    let last_seg = build(template.path(), 10, 1 << 20);
    let bytes = fs::read(&last_seg).expect("read");
    let offs = record_offsets(&bytes);
    let (start, end) = (offs[4], offs[5]);
    for at in start..end {
        let tmp = tempfile::tempdir().expect("tempdir");
        copy_dir(template.path(), tmp.path());
        let victim = tmp.path().join(last_seg.file_name().expect("name"));
        let mut b = bytes.clone();
        b[at] ^= 0x10;
        fs::write(&victim, &b).expect("write");
        let (file, offset, reason) = expect_corrupt(Store::open(tmp.path(), opts(1 << 20)));
        assert_eq!(file, victim);
        assert_eq!(offset, start as u64, "flip at {at}: {reason}");
        // Nothing was changed on disk.
        assert_eq!(fs::read(&victim).expect("read"), b);
    }
}

#[test]
fn a_flipped_byte_in_a_segment_that_is_not_the_last_refuses_to_open() {
    let template = tempfile::tempdir().expect("tempdir");
    build(template.path(), 60, 300);
    let files = segments_of(template.path());
    assert!(files.len() >= 3);
    let first = &files[0];
    let bytes = fs::read(first).expect("read");
    let offs = record_offsets(&bytes);
    // The last record of the segment: nothing valid follows it in that file,
    // so only its position (not the last segment) makes it corruption.
    for rec in [offs.len() - 2, 1] {
        let (start, end) = (offs[rec], offs[rec + 1]);
        for at in [start, start + 5, start + 9, end - 1] {
            let tmp = tempfile::tempdir().expect("tempdir");
            copy_dir(template.path(), tmp.path());
            let victim = tmp.path().join(first.file_name().expect("name"));
            let mut b = bytes.clone();
            b[at] ^= 0x01;
            fs::write(&victim, &b).expect("write");
            let (file, offset, _) = expect_corrupt(Store::open(tmp.path(), opts(300)));
            assert_eq!((file, offset), (victim, start as u64));
        }
    }
    // A damaged segment header, too.
    let tmp = tempfile::tempdir().expect("tempdir");
    copy_dir(template.path(), tmp.path());
    let victim = tmp.path().join(first.file_name().expect("name"));
    let mut b = bytes.clone();
    b[9] ^= 0x01;
    fs::write(&victim, &b).expect("write");
    let (file, _, _) = expect_corrupt(Store::open(tmp.path(), opts(300)));
    assert_eq!(file, victim);
}

#[test]
fn a_missing_segment_is_a_gap_that_refuses_to_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    build(tmp.path(), 60, 300);
    let files = segments_of(tmp.path());
    fs::remove_file(&files[1]).expect("remove");
    let (file, offset, reason) = expect_corrupt(Store::open(tmp.path(), opts(300)));
    assert_eq!((file, offset), (files[2].clone(), 8));
    assert!(reason.contains("gap"), "{reason}");
}

#[test]
fn snapshot_deletes_covered_segments_and_recovery_resumes_after_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let seg = 300;
    let (mut store, _) = Store::open(
        tmp.path(),
        StoreOptions {
            fsync: FsyncPolicy::Always,
            segment_bytes: seg,
        },
    )
    .expect("open");
    fill(&mut store, 100, 10);
    let before = store.sizes();
    assert!(matches!(
        store.save_snapshot(101, b"too new"),
        Err(StoreError::SnapshotIndex {
            index: 101,
            min: 0,
            max: 100
        })
    ));
    store.save_snapshot(60, b"state@60").expect("snapshot");
    let after = store.sizes();
    assert!(after.wal_segments < before.wal_segments);
    assert!(after.wal_bytes < before.wal_bytes);
    assert_eq!(after.snapshot_index, 60);
    assert_eq!(after.wal_segments, segments_of(tmp.path()).len());
    // Every remaining segment but the first starts after the snapshot, and the
    // first one holds index 61.
    let firsts: Vec<u64> = segments_of(tmp.path())
        .iter()
        .map(|p| {
            p.file_name().and_then(|n| n.to_str()).expect("name")[4..24]
                .parse()
                .expect("index")
        })
        .collect();
    assert!(
        firsts[0] <= 61 && firsts.get(1).is_none_or(|&f| f > 61),
        "{firsts:?}"
    );
    store.save_snapshot(80, b"state@80").expect("snapshot");
    assert!(
        !tmp.path().join(snapshot_file_name(60)).exists(),
        "older snapshot deleted"
    );
    assert!(matches!(
        store.save_snapshot(70, b"old"),
        Err(StoreError::SnapshotIndex { .. })
    ));
    fill(&mut store, 120, 10);
    drop(store);

    let (store, rec) = Store::open(tmp.path(), opts(seg)).expect("reopen");
    let snap = rec.snapshot.as_ref().expect("snapshot");
    assert_eq!((snap.index, snap.data.as_slice()), (80, &b"state@80"[..]));
    assert_entries(&rec, 81, 120);
    assert_eq!(store.sizes().snapshot_index, 80);
    assert_eq!(store.last_index(), 120);
}

#[test]
fn snapshot_at_the_last_index_keeps_the_active_segment() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut store, _) = Store::open(tmp.path(), opts(300)).expect("open");
    fill(&mut store, 50, 5);
    store.save_snapshot(50, b"all").expect("snapshot");
    assert_eq!(store.sizes().wal_segments, 1);
    drop(store);
    let (mut store, rec) = Store::open(tmp.path(), opts(300)).expect("reopen");
    assert_eq!(rec.snapshot.map(|s| s.index), Some(50));
    assert!(rec.entries.is_empty());
    assert_eq!(store.last_index(), 50);
    fill(&mut store, 55, 5);
    drop(store);
    let (_, rec) = Store::open(tmp.path(), opts(300)).expect("reopen");
    assert_entries(&rec, 51, 55);
}

#[test]
fn reset_replaces_everything_and_old_entries_never_come_back() {
    for reset_to in [10u64, 500] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (mut store, _) = Store::open(tmp.path(), opts(300)).expect("open");
        fill(&mut store, 100, 10);
        store.save_snapshot(40, b"mine").expect("snapshot");
        store.save_meta(b"term=3").expect("meta");
        store.append(101, b"unsynced").expect("append");
        store.reset(reset_to, b"theirs").expect("reset");
        assert_eq!(
            (store.last_index(), store.synced_index()),
            (reset_to, reset_to)
        );
        assert_eq!(store.sizes().wal_segments, 0);
        assert!(segments_of(tmp.path()).is_empty());
        assert!(matches!(
            store.append(reset_to + 2, b"x"),
            Err(StoreError::OutOfOrder { .. })
        ));
        drop(store);

        let (mut store, rec) = Store::open(tmp.path(), opts(300)).expect("reopen");
        let snap = rec.snapshot.expect("snapshot");
        assert_eq!(
            (snap.index, snap.data.as_slice()),
            (reset_to, &b"theirs"[..])
        );
        assert!(rec.entries.is_empty());
        assert_eq!(rec.meta.as_deref(), Some(&b"term=3"[..]));
        store
            .append(reset_to + 1, &payload(reset_to + 1))
            .expect("append");
        store.sync().expect("sync");
        drop(store);
        let (_, rec) = Store::open(tmp.path(), opts(300)).expect("reopen");
        assert_entries(&rec, reset_to + 1, reset_to + 1);
    }
}

#[test]
fn an_interrupted_reset_is_finished_on_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    build(tmp.path(), 50, 300);
    // What a crash right after `reset` made its snapshot durable leaves.
    fs::write(tmp.path().join("RESET"), encode_snapshot(20, b"adopted")).expect("write");
    let (store, rec) = Store::open(tmp.path(), opts(300)).expect("open");
    assert_eq!(
        rec.snapshot.map(|s| (s.index, s.data)),
        Some((20, b"adopted".to_vec()))
    );
    assert!(rec.entries.is_empty());
    assert_eq!(store.last_index(), 20);
    assert!(segments_of(tmp.path()).is_empty());
    assert!(!tmp.path().join("RESET").exists());
}

#[test]
fn meta_round_trips_and_the_last_write_wins() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let o = StoreOptions::default();
    let (mut store, rec) = Store::open(tmp.path(), o.clone()).expect("open");
    assert_eq!(rec.meta, None);
    store.save_meta(b"first").expect("meta");
    store.save_meta(b"").expect("meta");
    store.save_meta(b"term=7 vote=2").expect("meta");
    drop(store);
    let (_, rec) = Store::open(tmp.path(), o.clone()).expect("reopen");
    assert_eq!(rec.meta.as_deref(), Some(&b"term=7 vote=2"[..]));

    let meta = tmp.path().join("meta");
    let mut b = fs::read(&meta).expect("read");
    b[14] ^= 0x80;
    fs::write(&meta, &b).expect("write");
    let (file, _, _) = expect_corrupt(Store::open(tmp.path(), o));
    assert_eq!(file, meta);
}

#[test]
fn the_lock_refuses_a_second_open_until_the_first_is_dropped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, _) = Store::open(tmp.path(), opts(1 << 20)).expect("open");
    match Store::open(tmp.path(), opts(1 << 20)) {
        Err(e @ StoreError::Locked { .. }) => {
            assert!(
                e.to_string().contains(&tmp.path().display().to_string()),
                "{e}"
            );
        }
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
    drop(store);
    Store::open(tmp.path(), opts(1 << 20)).expect("open after drop");
}

#[test]
fn a_damaged_newest_snapshot_falls_back_to_the_previous_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut store, _) = Store::open(tmp.path(), opts(1 << 20)).expect("open");
    fill(&mut store, 30, 10);
    store.save_snapshot(10, b"at 10").expect("snapshot");
    let older = fs::read(tmp.path().join(snapshot_file_name(10))).expect("read");
    store.save_snapshot(20, b"at 20").expect("snapshot");
    drop(store);
    // What a crash between the new snapshot's rename and the old one's
    // deletion leaves, plus damage to the new one.
    fs::write(tmp.path().join(snapshot_file_name(10)), &older).expect("write");
    let newest = tmp.path().join(snapshot_file_name(20));
    let mut b = fs::read(&newest).expect("read");
    let n = b.len();
    b[n - 6] ^= 1;
    fs::write(&newest, &b).expect("write");

    let (_, rec) = Store::open(tmp.path(), opts(1 << 20)).expect("falls back");
    assert_eq!(
        rec.snapshot.clone().map(|s| (s.index, s.data)),
        Some((10, b"at 10".to_vec()))
    );
    assert_entries(&rec, 11, 30);
    assert!(!newest.exists());
    assert!(tmp
        .path()
        .join(format!("{}.corrupt", snapshot_file_name(20)))
        .exists());
}

#[test]
fn a_damaged_only_snapshot_refuses_to_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut store, _) = Store::open(tmp.path(), opts(1 << 20)).expect("open");
    fill(&mut store, 30, 10);
    store.save_snapshot(20, b"at 20").expect("snapshot");
    drop(store);
    let snap = tmp.path().join(snapshot_file_name(20));
    let mut b = fs::read(&snap).expect("read");
    b[25] ^= 1;
    fs::write(&snap, &b).expect("write");
    let (file, offset, _) = expect_corrupt(Store::open(tmp.path(), opts(1 << 20)));
    assert_eq!(file, snap);
    assert_eq!(offset, b.len() as u64 - 4, "the checksum trailer");
}

#[test]
fn a_snapshot_beyond_the_end_of_the_log_refuses_to_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    build(tmp.path(), 20, 1 << 20);
    fs::write(
        tmp.path().join(snapshot_file_name(50)),
        encode_snapshot(50, b"x"),
    )
    .expect("write");
    let (_, _, reason) = expect_corrupt(Store::open(tmp.path(), opts(1 << 20)));
    assert!(reason.contains("newer than the end of the log"), "{reason}");
}

#[test]
fn a_log_that_does_not_reach_back_to_the_snapshot_refuses_to_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    build(tmp.path(), 60, 300);
    let files = segments_of(tmp.path());
    fs::remove_file(&files[0]).expect("remove");
    let (file, _, reason) = expect_corrupt(Store::open(tmp.path(), opts(300)));
    assert_eq!(file, files[1]);
    assert!(reason.contains("missing"), "{reason}");
}

#[test]
fn leftover_temporary_files_are_removed_and_foreign_files_kept() {
    let tmp = tempfile::tempdir().expect("tempdir");
    build(tmp.path(), 5, 1 << 20);
    fs::write(tmp.path().join("meta.tmp"), b"half").expect("write");
    fs::write(tmp.path().join("notes.txt"), b"mine").expect("write");
    let (_, rec) = Store::open(tmp.path(), opts(1 << 20)).expect("open");
    assert_entries(&rec, 1, 5);
    assert!(!tmp.path().join("meta.tmp").exists());
    assert!(tmp.path().join("notes.txt").exists());
}

#[test]
fn options_and_sizes_are_checked_before_anything_is_written() {
    let tmp = tempfile::tempdir().expect("tempdir");
    match Store::open(tmp.path(), opts(10)) {
        Err(StoreError::Options { reason }) => {
            assert!(reason.contains("segment_bytes"), "{reason}")
        }
        other => panic!("expected Options, got {:?}", other.map(|_| ())),
    }
    let (mut store, _) = Store::open(tmp.path(), opts(1 << 20)).expect("open");
    let big = vec![0u8; troupe_store::format::META_BYTES_MAX + 1];
    assert!(matches!(
        store.save_meta(&big),
        Err(StoreError::TooLarge { what: "meta", .. })
    ));
    let huge = vec![0u8; troupe_store::format::RECORD_PAYLOAD_MAX + 1];
    assert!(matches!(
        store.append(1, &huge),
        Err(StoreError::TooLarge { what: "record", .. })
    ));
    assert_eq!(store.last_index(), 0, "a refused append changes nothing");
}

#[test]
fn segments_left_by_an_interrupted_compaction_are_removed_even_with_gaps() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let aside = tempfile::tempdir().expect("tempdir");
    let (mut store, _) = Store::open(tmp.path(), opts(300)).expect("open");
    fill(&mut store, 80, 4);
    let files = segments_of(tmp.path());
    copy_dir(tmp.path(), aside.path());
    store.save_snapshot(70, b"at 70").expect("snapshot");
    drop(store);
    let kept = segments_of(tmp.path());
    assert!(kept.len() < files.len());
    // A power loss persisted some deletions and not others, out of order.
    for f in [&files[0], &files[2]] {
        fs::copy(aside.path().join(f.file_name().expect("name")), f).expect("restore");
    }
    let (store, rec) = Store::open(tmp.path(), opts(300)).expect("opens");
    assert_eq!(rec.snapshot.as_ref().map(|s| s.index), Some(70));
    assert_entries(&rec, 71, 80);
    assert_eq!(segments_of(tmp.path()), kept);
    assert_eq!(store.sizes().wal_segments, kept.len());
}

#[test]
fn the_store_and_its_error_can_move_to_the_service_thread() {
    fn send<T: Send + 'static>() {}
    fn error<T: std::error::Error + Send + Sync + 'static>() {}
    send::<Store>();
    send::<Recovered>();
    error::<StoreError>();
}

#[test]
fn extreme_indices_give_errors_not_panics() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut store, _) = Store::open(tmp.path(), opts(1 << 20)).expect("open");
    store.reset(u64::MAX, b"end of time").expect("reset");
    assert!(matches!(
        store.append(0, b"x"),
        Err(StoreError::OutOfOrder { .. })
    ));
    drop(store);
    let (mut store, rec) = Store::open(tmp.path(), opts(1 << 20)).expect("reopen");
    assert_eq!(rec.snapshot.map(|s| s.index), Some(u64::MAX));
    assert!(matches!(
        store.append(u64::MAX, b"x"),
        Err(StoreError::OutOfOrder { .. })
    ));
    // A segment named with index 0 is refused, not trusted.
    drop(store);
    fs::write(tmp.path().join(segment_file_name(0)), b"").expect("write");
    fs::write(tmp.path().join(segment_file_name(1)), b"").expect("write");
    let _ = Store::open(tmp.path(), opts(1 << 20));
}

#[test]
fn segments_reserve_zeroed_room_that_recovery_keeps_and_appends_reuse() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let seg_bytes = 1 << 20;
    let (mut store, _) = Store::open(tmp.path(), opts(seg_bytes)).expect("open");
    fill(&mut store, 10, 3);
    let records_end = store.sizes().wal_bytes;
    drop(store);
    let segs = segments_of(tmp.path());
    assert_eq!(segs.len(), 1);
    // The file holds the records and zero bytes reserved after them.
    let bytes = fs::read(&segs[0]).expect("read");
    assert_eq!(
        bytes.len() as u64,
        seg_bytes,
        "room reserved up to the segment size"
    );
    assert!(bytes[records_end as usize..].iter().all(|b| *b == 0));
    // Reserved room is not a torn tail: nothing is cut, and the next
    // records go right after the last one.
    let (store, rec) = Store::open(tmp.path(), opts(seg_bytes)).expect("reopen");
    assert_entries(&rec, 1, 10);
    assert_eq!(rec.tail_cut, None);
    continue_and_reopen(store, tmp.path(), seg_bytes, 20);
}

/// Entries 1..=400 in segments of 4 KiB: their size and their files.
fn rolled_over(dir: &Path) -> (u64, Vec<PathBuf>) {
    let seg_bytes = 4096;
    let (mut store, _) = Store::open(dir, opts(seg_bytes)).expect("open");
    fill(&mut store, 400, 7);
    drop(store);
    (seg_bytes, segments_of(dir))
}

#[test]
fn a_segment_rolled_over_is_cut_to_its_records() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (seg_bytes, segs) = rolled_over(tmp.path());
    assert!(segs.len() > 2, "{segs:?}");
    for s in &segs[..segs.len() - 1] {
        let bytes = fs::read(s).expect("read");
        let offs = record_offsets(&bytes);
        assert_eq!(
            offs.last(),
            Some(&bytes.len()),
            "{} ends at its records",
            s.display()
        );
        assert_ne!(bytes.last(), Some(&0), "{}: no zero tail", s.display());
    }
    let (_, rec) = Store::open(tmp.path(), opts(seg_bytes)).expect("reopen");
    assert_entries(&rec, 1, 400);
}

#[test]
fn zero_bytes_after_the_records_of_a_segment_that_is_not_the_last_refuse_to_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (seg_bytes, segs) = rolled_over(tmp.path());
    let victim = &segs[0];
    let mut bytes = fs::read(victim).expect("read");
    let offs = record_offsets(&bytes);
    // The last record of the first segment became zeros: lost data, not room.
    let last = offs[offs.len() - 2];
    for b in &mut bytes[last..] {
        *b = 0;
    }
    fs::write(victim, &bytes).expect("write");
    let (file, offset, why) = expect_corrupt(Store::open(tmp.path(), opts(seg_bytes)));
    assert_eq!((file.as_path(), offset), (victim.as_path(), last as u64));
    assert!(why.contains("not the last"), "{why}");
}

#[test]
fn a_torn_last_record_followed_by_reserved_zeros_is_cut() {
    let template = tempfile::tempdir().expect("tempdir");
    let seg = 1 << 16;
    let (mut store, _) = Store::open(template.path(), opts(seg)).expect("open");
    fill(&mut store, 20, 3);
    drop(store);
    let last_seg = segments_of(template.path()).pop().expect("a segment");
    let bytes = fs::read(&last_seg).expect("read");
    let offs = record_offsets(&bytes);
    let (last_start, end) = (offs[offs.len() - 2], offs[offs.len() - 1]);
    assert!(bytes.len() > end, "room is reserved after the records");
    // A power loss that kept only part of the last record: zeros after it.
    for keep in last_start + 1..end {
        let tmp = tempfile::tempdir().expect("tempdir");
        copy_dir(template.path(), tmp.path());
        let victim = tmp.path().join(last_seg.file_name().expect("name"));
        let mut b = bytes.clone();
        for x in &mut b[keep..end] {
            *x = 0;
        }
        fs::write(&victim, &b).expect("write");
        let (store, rec) = Store::open(tmp.path(), opts(seg)).expect("opens");
        assert_entries(&rec, 1, 19);
        if b[last_start..].iter().all(|x| *x == 0) {
            assert_eq!(rec.tail_cut, None, "only zeros are left of the record");
        } else {
            let tc = rec.tail_cut.as_ref().expect("tail cut reported");
            assert_eq!(
                (tc.offset, tc.bytes_cut),
                (last_start as u64, (b.len() - last_start) as u64)
            );
        }
        continue_and_reopen(store, tmp.path(), seg, 25);
    }
}
