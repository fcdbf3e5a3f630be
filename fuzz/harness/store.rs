//! What the `store_format` and `store_open` fuzz targets run; the replay
//! test `crates/troupe-store/tests/fuzz_corpus.rs` includes this file.

use std::path::Path;

use troupe_store::format::{
    decode_meta, decode_segment, decode_snapshot, encode_meta, encode_record,
    encode_segment_header, encode_snapshot, find_valid_record,
};
use troupe_store::{
    segment_file_name, snapshot_file_name, FsyncPolicy, Store, StoreOptions, META_FILE, RESET_FILE,
};

/// The pure decoders over `data`: errors, never panics; what decodes
/// re-encodes to bytes that decode to the same thing.
pub fn format(data: &[u8]) {
    if let Ok(seg) = decode_segment(data) {
        assert!(seg.valid_len as usize <= data.len());
        let mut again = encode_segment_header(seg.first_index).to_vec();
        for r in &seg.records {
            encode_record(&mut again, r.index, r.data);
        }
        assert_eq!(
            &again[..],
            &data[..seg.valid_len as usize],
            "valid records re-encode to the bytes they came from"
        );
        let d2 = decode_segment(&again).expect("re-encoded segment decodes");
        assert_eq!(d2.records, seg.records);
    }
    if let Ok((index, payload)) = decode_snapshot(data) {
        let again = encode_snapshot(index, payload);
        assert_eq!(decode_snapshot(&again), Ok((index, payload)));
    }
    if let Ok(meta) = decode_meta(data) {
        let again = encode_meta(meta);
        assert_eq!(decode_meta(&again), Ok(meta));
    }
    let _ = find_valid_record(data, 0, 0, 0);
}

/// The files of a store directory, from fuzz input: a sequence of
/// `kind: u8, len: u16 LE, bytes`. Kind % 4: 0 a segment (named after the
/// index its header holds, or 1), 1 a snapshot (likewise, or 0), 2 the meta
/// file, 3 an interrupted reset.
pub fn store_files(mut data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    while data.len() >= 3 && out.len() < 16 {
        let kind = data[0];
        let len = usize::from(u16::from_le_bytes([data[1], data[2]]));
        data = &data[3..];
        let n = len.min(data.len());
        let bytes = data[..n].to_vec();
        data = &data[n..];
        let name = match kind % 4 {
            0 => {
                let first = decode_segment(&bytes).map_or(1, |s| s.first_index);
                segment_file_name(first)
            }
            1 => {
                let index = decode_snapshot(&bytes).map_or(0, |(i, _)| i);
                snapshot_file_name(index)
            }
            2 => META_FILE.to_string(),
            _ => RESET_FILE.to_string(),
        };
        out.retain(|(n, _)| *n != name);
        out.push((name, bytes));
    }
    out
}

/// Writes the files of `data` (see [`store_files`]) into the empty
/// directory `dir`, opens a store there, and if it opens appends one entry
/// and opens it again: errors, never panics, and a store that opened once
/// opens again with what it recovered.
pub fn store_open_in(dir: &Path, data: &[u8]) {
    for (name, bytes) in store_files(data) {
        std::fs::write(dir.join(name), bytes).expect("write a store file");
    }
    let opts = StoreOptions {
        fsync: FsyncPolicy::Never,
        segment_bytes: 4096,
    };
    let first = match Store::open(dir, opts.clone()) {
        Ok((mut store, _recovered)) => {
            let next = store.last_index().saturating_add(1);
            let _ = store.append(next, b"fuzz");
            let _ = store.sync();
            store.last_index()
        }
        Err(_) => return,
    };
    let (store, _) = Store::open(dir, opts).expect("a store that opened opens again");
    assert_eq!(
        store.last_index(),
        first,
        "the reopened store lost or invented entries"
    );
}

/// [`store_open_in`] in a fresh temporary directory.
pub fn store_open(data: &[u8]) {
    let dir = tempfile::tempdir().expect("temp dir");
    store_open_in(dir.path(), data);
}
