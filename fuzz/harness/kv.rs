//! What the `kv_wire`, `kv_machine`, `kv_apply` and `kv_cluster` fuzz
//! targets run; the replay test `crates/troupe-kv/tests/fuzz_corpus.rs`
//! includes this file.

use prost::Message;
use troupe_kv::config::{host_port, parse_cluster};
use troupe_kv::machine::{Command, Machine};
use troupe_kv::wire::{GroupState, HardState, LogEntry, Persisted, Wire};

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(w) = M::decode(data) {
        let again = M::decode(&w.encode_to_vec()[..]).expect("a re-encoded message decodes");
        assert_eq!(again, w);
    }
}

/// A group message of the service, and the records it keeps on disk: an
/// error or a message that re-encodes to one that decodes to the same value.
pub fn wire(data: &[u8]) {
    round_trip::<Wire>(data);
    round_trip::<LogEntry>(data);
    round_trip::<Persisted>(data);
    round_trip::<HardState>(data);
    round_trip::<GroupState>(data);
}

/// A snapshot of the state machine: an error or a machine whose encoding
/// is a fixed point of decode-then-encode.
pub fn machine(data: &[u8]) {
    if let Ok(m) = Machine::decode(data) {
        let bytes = m.encode();
        let again = Machine::decode(&bytes).expect("a re-encoded snapshot decodes");
        assert_eq!(again.encode(), bytes, "snapshot does not round-trip");
    }
}

/// Splits `data` into chunks, each prefixed by its length (u16 LE).
fn chunks(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([data[0], data[1]]));
        data = &data[2..];
        let n = len.min(data.len());
        out.push(&data[..n]);
        data = &data[n..];
    }
    out
}

/// Joins chunks in the format `chunks` reads.
pub fn join_chunks<B: AsRef<[u8]>>(parts: &[B]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        let p = p.as_ref();
        let len = u16::try_from(p.len()).expect("chunk under 64 KiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// Decodes commands from the chunks of `data` and applies them in order to
/// an empty machine (a command that does not decode is skipped): no command
/// makes `apply` panic, and the final state round-trips as a snapshot.
pub fn apply(data: &[u8]) {
    let mut m = Machine::default();
    for c in chunks(data) {
        if let Ok(cmd) = Command::decode(c) {
            let _ = m.apply(&cmd);
        }
    }
    let bytes = m.encode();
    let again = Machine::decode(&bytes).expect("a snapshot of an applied machine decodes");
    assert_eq!(again.encode(), bytes, "snapshot does not round-trip");
}

/// `--initial-cluster` and URL parsing.
pub fn cluster(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(peers) = parse_cluster(s) {
        assert!(!peers.is_empty());
    }
    let _ = host_port(s);
}
