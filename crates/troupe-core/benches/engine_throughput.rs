//! How many small messages per second one engine pipeline processes on one
//! core, end to end: the sender's `send` and encoding, the receiver's decoding,
//! ordering and delivery, and the acknowledgements flowing back. Both engines
//! run on this one thread, so the figure is for the whole pipeline on one core.
//!
//! The baseline, measured in the same run, is the wire codec alone: the same
//! messages packed into datagrams and decoded again, with no protocol. The
//! ratio says what the protocol costs over bare encoding.
//!
//! Run: `cargo bench -p troupe-core --bench engine_throughput`

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use troupe_core::wire::{encode_frame, encode_header, Body, Datagram, Frame};
use troupe_core::{Config, Engine, Event, MemberId, Ordering, SendError, Time, ViewId};

const PAYLOAD_BYTES: usize = 32;
const MESSAGES: u64 = 2_000_000;
/// Overridable for a quick run: `TROUPE_BENCH_MESSAGES=100000`.
fn messages() -> u64 {
    std::env::var("TROUPE_BENCH_MESSAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(MESSAGES)
}

fn config(node: u8) -> Config {
    let mut c = Config::new("bench", Bytes::copy_from_slice(&[node]));
    c.window_msgs_max = 16_384;
    c.suspect_timeout = Duration::from_secs(3600);
    c.flush_timeout = Duration::from_secs(3600);
    c
}

/// Moves every datagram from `from` to its destination, at time `now`.
fn pump(engines: &mut [Engine], now: Time) -> bool {
    let mut moved = false;
    for i in 0..engines.len() {
        while let Some(t) = engines[i].poll_transmit() {
            moved = true;
            let to = t.addr[0] as usize;
            let _ = engines[to].handle_datagram(now, t.bytes);
        }
    }
    moved
}

/// Drains events as an application would: counts deliveries, and answers a
/// state request (with an empty state: the bench has none).
fn drain_events(e: &mut Engine, now: Time) -> u64 {
    let mut n = 0;
    while let Some(ev) = e.poll_event() {
        match ev {
            Event::Deliver(_) => n += 1,
            Event::StateNeeded { view } => e.provide_state(now, view, Bytes::new()),
            _ => {}
        }
    }
    n
}

/// Builds a group of `members` (addresses 0..members), all on this thread.
fn group(members: u8) -> Vec<Engine> {
    let mut now = Time::ZERO;
    let mut engines: Vec<Engine> = (0..members)
        .map(|i| {
            Engine::new(
                config(i),
                MemberId::new(u64::from(i) + 1, 1),
                now,
                u64::from(i),
            )
            .expect("config")
        })
        .collect();
    engines[0].create(now);
    for i in 1..members as usize {
        engines[i].join(now, &[Bytes::from_static(&[0])]);
        for _ in 0..200 {
            now = now.plus(Duration::from_millis(5));
            for e in engines.iter_mut() {
                e.handle_timeout(now);
            }
            while pump(&mut engines, now) {}
            for e in engines.iter_mut() {
                drain_events(e, now);
            }
            let formed = engines[..=i]
                .iter()
                .all(|e| e.view().is_some_and(|v| v.members.len() == i + 1));
            if formed {
                // Let the state transfer finish too.
                for _ in 0..20 {
                    now = now.plus(Duration::from_millis(5));
                    for e in engines.iter_mut() {
                        e.handle_timeout(now);
                    }
                    while pump(&mut engines, now) {}
                    for e in engines.iter_mut() {
                        drain_events(e, now);
                    }
                }
                break;
            }
        }
    }
    engines
}

/// Sender 0 multicasts `MESSAGES` messages; returns deliveries per second at member 1.
fn run(ordering: Ordering, members: u8) -> (f64, u64) {
    let mut engines = group(members);
    assert!(
        engines.iter().all(|e| e
            .view()
            .is_some_and(|v| v.members.len() == members as usize)),
        "group did not form"
    );
    let payload = Bytes::from(vec![0x5a; PAYLOAD_BYTES]);
    let mut delivered = 0u64;
    let mut sent = 0u64;
    let mut now = Time(1_000_000_000);
    let start = Instant::now();
    let target = messages();
    let mut rounds = 0u64;
    while delivered < target {
        rounds += 1;
        assert!(
            rounds < 100_000_000,
            "{ordering}: no progress (sent {sent}, delivered {delivered})"
        );
        // A batch of sends, as an application would issue them between two
        // turns of the runtime's loop.
        for _ in 0..256 {
            if sent == target {
                break;
            }
            match engines[0].send(now, ordering, payload.clone()) {
                Ok(()) => sent += 1,
                Err(SendError::WouldBlock) => break,
                Err(e) => panic!("send failed: {e}"),
            }
        }
        now = now.plus(Duration::from_micros(50));
        while pump(&mut engines, now) {}
        for e in engines.iter_mut() {
            e.handle_timeout(now);
        }
        while pump(&mut engines, now) {}
        drain_events(&mut engines[0], now);
        delivered += drain_events(&mut engines[1], now);
        for e in engines.iter_mut().skip(2) {
            drain_events(e, now);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    (delivered as f64 / secs, engines[0].stats().datagrams_out)
}

/// The wire codec alone: the same frames packed into datagrams and decoded.
fn baseline() -> f64 {
    let payload = Bytes::from(vec![0x5a; PAYLOAD_BYTES]);
    let view = ViewId::default();
    let me = MemberId::new(1, 1);
    let start = Instant::now();
    let mut decoded = 0u64;
    let mut seq = 0u64;
    let target = messages();
    while decoded < target {
        let mut buf = BytesMut::with_capacity(64 << 10);
        encode_header(&mut buf, 1, me, view);
        while buf.len() < (64 << 10) - 256 {
            seq += 1;
            let f = Frame::Data {
                origin: 0,
                seq,
                body: Body::App {
                    ordering: Ordering::Fifo,
                    frag: None,
                    causal: Vec::new(),
                    query: None,
                    payload: payload.clone(),
                },
            };
            encode_frame(&mut buf, &f);
        }
        let d = Datagram::decode(buf.freeze()).expect("decodes");
        decoded += d.frames.len() as u64;
    }
    decoded as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let base = baseline();
    println!("engine_throughput: {PAYLOAD_BYTES}-byte messages, {MESSAGES} per run, one core");
    println!(
        "  baseline (wire codec only, no protocol): {:>10.0} msgs/s",
        base
    );
    for members in [2u8, 3] {
        for ordering in [
            Ordering::Reliable,
            Ordering::Fifo,
            Ordering::Causal,
            Ordering::Total,
            Ordering::Safe,
        ] {
            let (rate, datagrams) = run(ordering, members);
            println!(
                "  {members} members {:<8} {:>10.0} msgs/s delivered   ratio to baseline {:.2}   datagrams from sender {}",
                ordering.name(),
                rate,
                rate / base,
                datagrams
            );
        }
    }
}
