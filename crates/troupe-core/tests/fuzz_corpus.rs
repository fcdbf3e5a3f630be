//! Replays the committed fuzz corpus of the `datagram` and `engine` targets
//! (`fuzz/corpus/<target>/`) and the crash regressions
//! (`fuzz/regressions/<target>/`) through the same code the targets run
//! (`fuzz/harness/core.rs`), without libFuzzer, on the stable toolchain.
//!
//! `TROUPE_FUZZ_WRITE_SEEDS=1 cargo test -p troupe-core --test fuzz_corpus
//! -- --ignored write_seeds` rewrites the seed inputs produced by the real
//! encoders.

#[path = "../../../fuzz/harness/core.rs"]
#[allow(dead_code)]
mod harness;

#[path = "../../../fuzz/harness/replay.rs"]
#[allow(dead_code)]
mod replay;

use replay::{fuzz_dir, replay, write_seed};

use bytes::Bytes;
use troupe_core::wire::{
    Ballot, Body, Datagram, Fragment, Frame, OrderRun, Proposal, MAGIC, WIRE_VERSION,
};
use troupe_core::{Config, Engine, MemberId, Ordering, QueryId, Time, View, ViewId};

/// Every file of `fuzz/corpus/<target>` and `fuzz/regressions/<target>`.

#[test]
fn datagram_corpus_decodes_without_panic() {
    let n = replay("datagram", &harness::datagram);
    assert!(n >= seeds_datagram().len(), "corpus missing: {n} files");
}

#[test]
fn engine_corpus_is_handled_without_panic() {
    let n = replay("engine", &harness::engine);
    assert!(n >= 1, "corpus missing");
}

/// Found by the `engine` target (issue 8): one datagram whose Commit frame
/// carries a cut near `u64::MAX` for a stream makes the engine walk every
/// sequence number up to the cut, one at a time, looking for gaps
/// (`check_fetch` in `flush.rs` raises `highest` to the cut, then
/// `Stream::missing` in `stream.rs` steps through it): one hostile datagram
/// hung a member. Fixed: `missing` jumps over what nobody holds, and the
/// fetch bounds `highest` by the window, as acknowledgements are bounded.
#[test]
fn engine_hang_commit_with_huge_cut() {
    let dir = fuzz_dir().join("regressions/engine-hang");
    for e in std::fs::read_dir(&dir).expect("regressions/engine-hang") {
        let bytes = std::fs::read(e.expect("entry").path()).expect("read");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            harness::engine(&bytes);
            let _ = tx.send(());
        });
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("the engine handles one datagram in well under 5 s");
    }
}

#[test]
fn seeds_round_trip() {
    for (_, d) in seeds_datagram() {
        let bytes = d.encode();
        assert_eq!(Datagram::decode(bytes.clone()).expect("seed decodes"), d);
        harness::datagram(&bytes);
    }
    for (_, s) in seeds_engine() {
        harness::engine(&s);
    }
}

/// Writes the seeds into `fuzz/corpus/`.
#[test]
#[ignore]
fn write_seeds() {
    if std::env::var_os("TROUPE_FUZZ_WRITE_SEEDS").is_none() {
        return;
    }
    let write = write_seed;
    for (name, d) in seeds_datagram() {
        write("datagram", &name, &d.encode());
    }
    for (name, s) in seeds_engine() {
        write("engine", &name, &s);
    }
    for (name, s) in seeds_frames() {
        write("frame_reader", &name, &s);
    }
}

fn m(node: u64, inc: u64) -> MemberId {
    MemberId::new(node, inc)
}

fn group() -> u64 {
    troupe_core::group_hash(harness::GROUP)
}

/// One datagram per kind of frame (and body), with the group of the targets.
fn seeds_datagram() -> Vec<(String, Datagram)> {
    let vid = ViewId {
        epoch: 1,
        coord: m(1, 1),
    };
    let ballot = Ballot {
        round: 2,
        coord: m(2, 1),
    };
    let proposal = Proposal {
        next: View {
            id: ViewId {
                epoch: 2,
                coord: m(2, 1),
            },
            members: vec![m(1, 1), m(2, 1)],
            addrs: vec![
                Bytes::from_static(b"127.0.0.1:1"),
                Bytes::from_static(b"127.0.0.1:2"),
            ],
        },
        cut: vec![3, 0],
        provider: Some(m(1, 1)),
        joiners: vec![m(2, 1)],
    };
    let p = Bytes::from_static(b"hello");
    let frames: Vec<(&str, Vec<Frame>)> = vec![
        ("empty", vec![]),
        (
            "data-fifo",
            vec![Frame::Data {
                origin: 0,
                seq: 1,
                body: Body::App {
                    ordering: Ordering::Fifo,
                    frag: None,
                    causal: vec![],
                    query: None,
                    payload: p.clone(),
                },
            }],
        ),
        (
            "data-causal-frag-query",
            vec![Frame::Data {
                origin: 1,
                seq: 7,
                body: Body::App {
                    ordering: Ordering::Causal,
                    frag: Some(Fragment { index: 0, count: 3 }),
                    causal: vec![4, 6],
                    query: Some(9),
                    payload: p.clone(),
                },
            }],
        ),
        (
            "data-order",
            vec![Frame::Data {
                origin: 0,
                seq: 2,
                body: Body::Order {
                    first: 10,
                    runs: vec![
                        OrderRun {
                            origin: 0,
                            seq: 1,
                            count: 3,
                        },
                        OrderRun {
                            origin: 1,
                            seq: 5,
                            count: 1,
                        },
                    ],
                },
            }],
        ),
        (
            "unreliable",
            vec![Frame::Unreliable {
                useq: 5,
                payload: p.clone(),
            }],
        ),
        (
            "ack-nak-heartbeat",
            vec![
                Frame::Ack {
                    contig: vec![3, u64::MAX],
                },
                Frame::Nak {
                    origin: 1,
                    ranges: vec![(1, 2), (5, 9)],
                },
                Frame::Heartbeat { sent: 123_456 },
            ],
        ),
        (
            "suspect-leave",
            vec![
                Frame::Suspect {
                    members: vec![m(3, 1)],
                },
                Frame::Leave,
            ],
        ),
        (
            "join-request",
            vec![Frame::JoinRequest {
                joiner: m(2, 1),
                addr: Bytes::from_static(b"127.0.0.1:2"),
            }],
        ),
        ("prepare", vec![Frame::Prepare { ballot }]),
        (
            "promise",
            vec![Frame::Promise {
                ballot,
                contig: vec![3],
                accepted: Some((ballot, proposal.clone())),
                ready: true,
                leaving: false,
            }],
        ),
        (
            "reject",
            vec![Frame::Reject {
                ballot,
                promised: Ballot {
                    round: 9,
                    coord: m(1, 1),
                },
            }],
        ),
        (
            "accept-accepted",
            vec![
                Frame::Accept {
                    ballot,
                    proposal: proposal.clone(),
                },
                Frame::Accepted { ballot },
            ],
        ),
        ("commit", vec![Frame::Commit { proposal }]),
        (
            "not-member",
            vec![Frame::NotMember {
                view: vid,
                member: m(1, 1),
            }],
        ),
        (
            "state",
            vec![
                Frame::StateRequest {
                    view: vid,
                    offset: 0,
                },
                Frame::StateChunk {
                    view: vid,
                    offset: 0,
                    total_len: 5,
                    bytes: p.clone(),
                },
            ],
        ),
        (
            "query",
            vec![
                Frame::QueryReply {
                    query: QueryId {
                        asker: m(1, 1),
                        n: 1,
                    },
                    payload: p.clone(),
                },
                Frame::QueryPoll {
                    query: QueryId {
                        asker: m(2, 1),
                        n: 4,
                    },
                },
            ],
        ),
    ];
    frames
        .into_iter()
        .map(|(name, frames)| {
            (
                name.to_string(),
                Datagram {
                    group: group(),
                    from: m(2, 1),
                    view: vid,
                    frames,
                },
            )
        })
        .collect()
}

/// Datagrams a second member (node 2) sends to the engine of the target
/// while it joins and sends messages of every ordering, recorded from a
/// run of two engines connected in memory; and the same stream with the
/// datagrams from the engine to node 2.
fn exchange() -> (Vec<Bytes>, Vec<Bytes>) {
    let addr_a = Bytes::from_static(b"127.0.0.1:1");
    let addr_b = Bytes::from_static(b"127.0.0.1:2");
    let mut a = harness::engine_alone();
    let cfg = Config::new(harness::GROUP, addr_b.clone());
    let mut b = Engine::new(cfg, m(2, 1), Time::ZERO, 8).expect("config");
    b.join(Time::ZERO, std::slice::from_ref(&addr_a));
    let (mut to_a, mut to_b) = (Vec::new(), Vec::new());
    let mut now = 0u64;
    for step in 0..400u64 {
        now += 5_000_000;
        let t = Time(now);
        a.handle_timeout(t);
        b.handle_timeout(t);
        if step > 100 && step % 10 == 0 && b.view().is_some() {
            for (k, o) in [
                Ordering::Unreliable,
                Ordering::Reliable,
                Ordering::Fifo,
                Ordering::Causal,
                Ordering::Total,
                Ordering::Safe,
            ]
            .into_iter()
            .enumerate()
            {
                let _ = b.send(t, o, Bytes::from(vec![k as u8; 1 + k * 40]));
                let _ = a.send(t, o, Bytes::from(vec![k as u8; 3]));
            }
        }
        while let Some(tx) = a.poll_transmit() {
            if tx.addr == addr_b {
                to_b.push(tx.bytes.clone());
                let _ = b.handle_datagram(t, tx.bytes);
            }
        }
        while let Some(tx) = b.poll_transmit() {
            if tx.addr == addr_a {
                to_a.push(tx.bytes.clone());
                let _ = a.handle_datagram(t, tx.bytes);
            }
        }
        while a.poll_event().is_some() {}
        while b.poll_event().is_some() {}
    }
    (to_a, to_b)
}

fn seeds_engine() -> Vec<(String, Vec<u8>)> {
    let (to_a, _) = exchange();
    let mut out = vec![
        (
            "join".to_string(),
            harness::join_datagrams(&to_a[..to_a.len().min(12)]),
        ),
        (
            "join-and-send".to_string(),
            harness::join_datagrams(&to_a[..to_a.len().min(120)]),
        ),
    ];
    for (name, d) in seeds_datagram() {
        out.push((
            format!("one-{name}"),
            harness::join_datagrams(&[d.encode()]),
        ));
    }
    out
}

/// Byte streams of an inbound connection: frames `u32 LE length + bytes`.
fn seeds_frames() -> Vec<(String, Vec<u8>)> {
    let frame = |d: &[u8]| {
        let mut v = (d.len() as u32).to_le_bytes().to_vec();
        v.extend_from_slice(d);
        v
    };
    let (to_a, _) = exchange();
    let stream: Vec<u8> = to_a.iter().take(40).flat_map(|d| frame(d)).collect();
    let mut out = vec![
        ("exchange".to_string(), stream),
        ("empty-frame".to_string(), vec![0, 0, 0, 0]),
        ("oversized".to_string(), vec![0xff, 0xff, 0xff, 0x7f, 1, 2]),
        (
            "torn".to_string(),
            frame(&seeds_datagram()[1].1.encode())[..9].to_vec(),
        ),
        (
            "bad-magic".to_string(),
            frame(&[MAGIC ^ 1, WIRE_VERSION, 0, 0, 0, 0, 0, 0, 0, 0]),
        ),
    ];
    for (name, d) in seeds_datagram() {
        out.push((format!("one-{name}"), frame(&d.encode())));
    }
    out
}
