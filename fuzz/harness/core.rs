//! What the `datagram` and `engine` fuzz targets run; the replay test
//! `crates/troupe-core/tests/fuzz_corpus.rs` includes this file, so CI runs
//! exactly the same code over the committed corpus.

use bytes::Bytes;
use troupe_core::wire::{Datagram, DatagramReader};
use troupe_core::{Config, Engine, MemberId, Time};

/// The group name of the engine under test; seeds carry its hash.
pub const GROUP: &str = "fuzz";

/// The engine under test.
pub const ME: MemberId = MemberId {
    node: 1,
    incarnation: 1,
};

/// Decodes `data` as a datagram: an error or a datagram, never a panic; a
/// datagram that decodes re-encodes to one that decodes to the same value,
/// and the streaming reader agrees with `Datagram::decode`.
pub fn datagram(data: &[u8]) {
    let bytes = Bytes::copy_from_slice(data);
    let whole = Datagram::decode(bytes.clone());
    if let Ok(d) = &whole {
        let again = Datagram::decode(d.encode()).expect("a re-encoded datagram decodes");
        assert_eq!(&again, d, "decode(encode(d)) != d");
    }
    match DatagramReader::new(bytes) {
        Err(e) => assert_eq!(whole, Err(e), "reader and decode disagree on the header"),
        Ok(reader) => {
            let frames: Result<Vec<_>, _> = reader.collect();
            match (frames, whole) {
                (Ok(fs), Ok(d)) => assert_eq!(fs, d.frames),
                (Err(a), Err(b)) => assert_eq!(a, b),
                (a, b) => panic!("reader and decode disagree: {a:?} vs {b:?}"),
            }
        }
    }
}

/// Splits `data` into datagrams, each prefixed by its length (u16 LE); the
/// last one takes what is left.
pub fn split_datagrams(mut data: &[u8]) -> Vec<&[u8]> {
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

/// Joins datagrams in the format [`split_datagrams`] reads.
pub fn join_datagrams<B: AsRef<[u8]>>(datagrams: &[B]) -> Vec<u8> {
    let mut out = Vec::new();
    for d in datagrams {
        let d = d.as_ref();
        let len = u16::try_from(d.len()).expect("datagram under 64 KiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(d);
    }
    out
}

/// Drains what the engine wants to send and report.
fn drain(e: &mut Engine) {
    for _ in 0..100_000 {
        if e.poll_transmit().is_none() {
            break;
        }
    }
    for _ in 0..100_000 {
        if e.poll_event().is_none() {
            break;
        }
    }
}

/// A fresh engine that has created group [`GROUP`] alone, at time 0.
pub fn engine_alone() -> Engine {
    let cfg = Config::new(GROUP, Bytes::from_static(b"127.0.0.1:1"));
    let mut e = Engine::new(cfg, ME, Time::ZERO, 7).expect("valid config");
    e.create(Time::ZERO);
    e
}

/// Feeds the datagrams of `data` (see [`split_datagrams`]) to a fresh
/// engine, 10 ms apart, with the group hash of each header rewritten to the
/// engine's own (so that the fuzzer reaches the frame handlers); between
/// datagrams its timers run and its output is drained. Every input must be
/// refused with an error or handled: never a panic.
pub fn engine(data: &[u8]) {
    let mut e = engine_alone();
    drain(&mut e);
    let hash = troupe_core::group_hash(GROUP).to_le_bytes();
    let mut now = 1_000_000u64;
    for d in split_datagrams(data) {
        let mut d = d.to_vec();
        if d.len() >= 10 {
            d[2..10].copy_from_slice(&hash);
        }
        let _ = e.handle_datagram(Time(now), Bytes::from(d));
        drain(&mut e);
        now += 10_000_000;
        e.handle_timeout(Time(now));
        drain(&mut e);
    }
}
