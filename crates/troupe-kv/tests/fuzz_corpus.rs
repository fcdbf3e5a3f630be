//! Replays the committed fuzz corpus of the `kv_wire`, `kv_machine`,
//! `kv_apply` and `kv_cluster` targets (`fuzz/corpus/<target>/`, and crash
//! regressions under `fuzz/regressions/<target>/`) through the same code
//! the targets run (`fuzz/harness/kv.rs`), without libFuzzer.
//!
//! `TROUPE_FUZZ_WRITE_SEEDS=1 cargo test -p troupe-kv --test fuzz_corpus
//! -- --ignored write_seeds` rewrites the seeds made by the real encoders.

#[path = "../../../fuzz/harness/kv.rs"]
#[allow(dead_code)]
mod harness;

#[path = "../../../fuzz/harness/replay.rs"]
#[allow(dead_code)]
mod replay;

use replay::{replay, write_seed};

use bytes::Bytes;
use prost::Message;
use troupe_kv::machine::{Barrier, Command, LeaseGrant, LeaseRevoke, Machine, Op};
use troupe_kv::pb::etcdserverpb::{
    compare, request_op, CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};
use troupe_kv::wire::{
    Accept, Adopt, Durable, GroupState, HardState, LogEntry, Msg, Persisted, Proposal, Refresh,
    Refuse, Report, Wire,
};

#[test]
fn kv_wire_corpus_decodes_without_panic() {
    assert!(replay("kv_wire", &harness::wire) >= 1, "corpus missing");
}

#[test]
fn kv_machine_corpus_decodes_without_panic() {
    assert!(
        replay("kv_machine", &harness::machine) >= 1,
        "corpus missing"
    );
}

#[test]
fn kv_apply_corpus_applies_without_panic() {
    assert!(replay("kv_apply", &harness::apply) >= 1, "corpus missing");
}

#[test]
fn kv_cluster_corpus_parses_without_panic() {
    assert!(
        replay("kv_cluster", &harness::cluster) >= 1,
        "corpus missing"
    );
}

#[test]
fn seeds_round_trip() {
    for (_, s) in seeds_wire() {
        harness::wire(&s);
    }
    harness::machine(&seed_machine());
    harness::apply(&harness::join_chunks(&commands()));
    for (_, s) in seeds_cluster() {
        harness::cluster(s.as_bytes());
    }
}

#[test]
#[ignore]
fn write_seeds() {
    if std::env::var_os("TROUPE_FUZZ_WRITE_SEEDS").is_none() {
        return;
    }
    let write = write_seed;
    for (name, s) in seeds_wire() {
        write("kv_wire", &name, &s);
    }
    write("kv_machine", "machine", &seed_machine());
    write("kv_machine", "empty", &Machine::default().encode());
    write("kv_apply", "all", &harness::join_chunks(&commands()));
    for (k, c) in commands().iter().enumerate() {
        write("kv_apply", &format!("one-{k}"), &harness::join_chunks(&[c]));
    }
    for (name, s) in seeds_cluster() {
        write("kv_cluster", &name, s.as_bytes());
    }
}

fn put(key: &str, value: &str, lease: i64) -> PutRequest {
    PutRequest {
        key: Bytes::from(key.to_string()),
        value: Bytes::from(value.to_string()),
        lease,
        prev_kv: true,
        ..Default::default()
    }
}

fn cmd(op: Op) -> Command {
    Command { op: Some(op) }
}

/// Commands of every kind, as encoded bytes, in an order that applies.
fn commands() -> Vec<Vec<u8>> {
    let txn = TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Create as i32,
            key: Bytes::from_static(b"lock/a"),
            range_end: Bytes::new(),
            target_union: Some(compare::TargetUnion::CreateRevision(0)),
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(put("lock/a", "me", 7))),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: Bytes::from_static(b"lock/"),
                range_end: Bytes::from_static(b"lock0"),
                ..Default::default()
            })),
        }],
    };
    [
        cmd(Op::Put(put("a", "1", 0))),
        cmd(Op::Put(put("b", "2", 0))),
        cmd(Op::Put(put("a", "3", 0))),
        cmd(Op::LeaseGrant(LeaseGrant { id: 7, ttl: 10 })),
        cmd(Op::Txn(txn)),
        cmd(Op::Put(put("c", "leased", 7))),
        cmd(Op::Delete(DeleteRangeRequest {
            key: Bytes::from_static(b"b"),
            range_end: Bytes::from_static(b"c"),
            prev_kv: true,
        })),
        cmd(Op::Compact(CompactionRequest {
            revision: 3,
            physical: false,
        })),
        cmd(Op::LeaseRevoke(LeaseRevoke {
            id: 7,
            expired: true,
        })),
        cmd(Op::Barrier(Barrier {})),
    ]
    .iter()
    .map(|c| c.encode_to_vec())
    .collect()
}

fn seed_machine() -> Vec<u8> {
    let mut m = Machine::default();
    let cmds = commands();
    // Stop before the revoke so that the snapshot holds a lease.
    for c in &cmds[..cmds.len() - 2] {
        let _ = m.apply(&Command::decode(&c[..]).expect("decodes"));
    }
    m.encode()
}

fn seeds_wire() -> Vec<(String, Vec<u8>)> {
    let c = Command::decode(&commands()[4][..]).expect("decodes");
    let w = |m: Msg| Wire { msg: Some(m) }.encode_to_vec();
    vec![
        (
            "proposal".into(),
            w(Msg::Proposal(Proposal {
                origin: 3,
                req: 9,
                cmd: Some(c.clone()),
                batch: vec![c.clone()],
            })),
        ),
        (
            "durable".into(),
            w(Msg::Durable(Durable {
                name: "n1".into(),
                epoch: 2,
                index: 40,
            })),
        ),
        ("refresh".into(), w(Msg::Refresh(Refresh { lease: 7 }))),
        (
            "report".into(),
            w(Msg::Report(Report {
                round: 1,
                name: "n2".into(),
                promised: 2,
                last_epoch: 1,
                index: 40,
                force: true,
            })),
        ),
        (
            "accept".into(),
            w(Msg::Accept(Accept {
                round: 1,
                name: "n2".into(),
                epoch: 3,
            })),
        ),
        (
            "refuse".into(),
            w(Msg::Refuse(Refuse {
                round: 1,
                name: "n3".into(),
                promised: 5,
            })),
        ),
        (
            "adopt".into(),
            w(Msg::Adopt(Adopt {
                round: 1,
                epoch: 3,
                state: Bytes::from(seed_machine()),
            })),
        ),
        (
            "log-entry".into(),
            LogEntry {
                epoch: 3,
                cmd: Some(c),
            }
            .encode_to_vec(),
        ),
        (
            "persisted".into(),
            Persisted {
                index: 40,
                last_epoch: 3,
                machine: Bytes::from(seed_machine()),
            }
            .encode_to_vec(),
        ),
        (
            "hard-state".into(),
            HardState {
                promised: 4,
                awaiting_state: true,
            }
            .encode_to_vec(),
        ),
        (
            "group-state".into(),
            GroupState {
                phase: 1,
                round: 2,
                min_epoch: 3,
                epoch: 3,
                winner: "n1".into(),
                reports: vec![Report::default()],
                accepts: vec!["n1".into(), "n2".into()],
                state: Some(Bytes::from_static(b"x")),
            }
            .encode_to_vec(),
        ),
    ]
}

fn seeds_cluster() -> Vec<(String, String)> {
    vec![
        (
            "three".into(),
            "n1=http://127.0.0.1:2380,n2=http://127.0.0.1:2381,n3=http://127.0.0.1:2382".into(),
        ),
        ("one-https".into(), "infra0=https://10.0.1.10:2380/".into()),
        ("duplicate".into(), "a=http://h:1,a=http://h:2".into()),
        ("ipv6".into(), "a=http://[::1]:2380".into()),
    ]
}
