//! The replicated state machine: the MVCC store and the lease table, changed
//! only by [`Command`]s applied in the group's total order.
//!
//! Everything here is deterministic: the same commands from the same state
//! give the same state and outputs at every member. Time never enters it:
//! lease expiry is a command (`LeaseRevoke` with `expired`) proposed by the
//! member that keeps the lease clocks (see [`crate::replica`]).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use prost::Message;

use crate::mvcc::{key_value, KeyRange, Mvcc, MvccError, Version, WatchEvent, WriteTxn};
use crate::pb::etcdserverpb::{
    compare, range_request, request_op, response_op, CompactionRequest, Compare,
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use crate::pb::mvccpb;

/// A command of the replicated log.
#[derive(Clone, PartialEq, Message)]
pub struct Command {
    /// What to do.
    #[prost(oneof = "Op", tags = "1, 2, 3, 4, 5, 6, 7")]
    pub op: Option<Op>,
}

/// The commands.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Op {
    /// etcd Put.
    #[prost(message, tag = "1")]
    Put(PutRequest),
    /// etcd DeleteRange.
    #[prost(message, tag = "2")]
    Delete(DeleteRangeRequest),
    /// etcd Txn.
    #[prost(message, tag = "3")]
    Txn(TxnRequest),
    /// etcd Compact.
    #[prost(message, tag = "4")]
    Compact(CompactionRequest),
    /// Grant a lease (the id was chosen by the proposer when the client left it 0).
    #[prost(message, tag = "5")]
    LeaseGrant(LeaseGrant),
    /// Revoke a lease, by request or because it expired.
    #[prost(message, tag = "6")]
    LeaseRevoke(LeaseRevoke),
    /// Changes nothing. Earlier versions logged one for every batch of
    /// linearizable reads (they now go through a read index, see
    /// [`crate::replica`]); it stays so that their logs still decode.
    #[prost(message, tag = "7")]
    Barrier(Barrier),
}

/// See [`Op::LeaseGrant`].
#[derive(Clone, PartialEq, Message)]
pub struct LeaseGrant {
    /// The lease id (never 0).
    #[prost(int64, tag = "1")]
    pub id: i64,
    /// Seconds.
    #[prost(int64, tag = "2")]
    pub ttl: i64,
}

/// See [`Op::LeaseRevoke`].
#[derive(Clone, PartialEq, Message)]
pub struct LeaseRevoke {
    /// The lease id.
    #[prost(int64, tag = "1")]
    pub id: i64,
    /// Proposed by the lease keeper because the lease's time ran out.
    #[prost(bool, tag = "2")]
    pub expired: bool,
}

/// See [`Op::Barrier`].
#[derive(Clone, PartialEq, Message)]
pub struct Barrier {}

/// An error a client sees, with etcd's gRPC code and text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// See [`MvccError`].
    #[error(transparent)]
    Mvcc(#[from] MvccError),
    /// A lease that does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A lease id already granted.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// A TTL out of range.
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// A request etcd would refuse.
    #[error("etcdserver: {0}")]
    Invalid(String),
}

impl KvError {
    /// The gRPC status etcd answers with.
    pub fn status(&self) -> tonic::Status {
        let msg = self.to_string();
        match self {
            KvError::Mvcc(_) => tonic::Status::out_of_range(msg),
            KvError::LeaseNotFound => tonic::Status::not_found(msg),
            KvError::LeaseExists => tonic::Status::failed_precondition(msg),
            KvError::LeaseTtlTooLarge | KvError::Invalid(_) => tonic::Status::invalid_argument(msg),
        }
    }
}

/// What applying a command gives its proposer.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// For a Put.
    Put(PutResponse),
    /// For a DeleteRange.
    Delete(DeleteRangeResponse),
    /// For a Txn.
    Txn(TxnResponse),
    /// For a Compact, a Barrier, a LeaseRevoke: nothing but the revision.
    Done,
    /// For a LeaseGrant: the id and TTL.
    Granted {
        /// The id.
        id: i64,
        /// The TTL in seconds.
        ttl: i64,
    },
    /// The command was refused.
    Failed(KvError),
}

/// A lease as the state machine knows it: no clock, only its TTL and keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    /// Granted TTL in seconds.
    pub ttl: i64,
    /// Keys attached to it.
    pub keys: BTreeSet<Bytes>,
}

/// Longest lease etcd grants (its MaxLeaseTTL), in seconds.
pub const LEASE_TTL_MAX: i64 = 9_000_000_000;

/// The state every member holds.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    /// Keys and their history.
    pub mvcc: Mvcc,
    /// Live leases by id.
    pub leases: BTreeMap<i64, Lease>,
}

impl Machine {
    /// Applies one command: returns its output and what watchers must see.
    pub fn apply(&mut self, cmd: &Command) -> (Output, Vec<WatchEvent>) {
        match &cmd.op {
            None => (Output::Done, Vec::new()),
            Some(Op::Barrier(_)) => (Output::Done, Vec::new()),
            Some(Op::Put(p)) => {
                let mut t = self.mvcc.begin();
                match put(&mut t, &mut self.leases, p) {
                    Ok(r) => (Output::Put(r), t.finish()),
                    Err(e) => (Output::Failed(e), Vec::new()),
                }
            }
            Some(Op::Delete(d)) => {
                let mut t = self.mvcc.begin();
                let r = delete(&mut t, &mut self.leases, d);
                (Output::Delete(r), t.finish())
            }
            Some(Op::Txn(req)) => {
                if let Err(e) = check_txn(&self.leases, req) {
                    return (Output::Failed(e), Vec::new());
                }
                let mut t = self.mvcc.begin();
                let r = txn(&mut t, &mut self.leases, req);
                (Output::Txn(r), t.finish())
            }
            Some(Op::Compact(c)) => match self.mvcc.compact(c.revision) {
                Ok(()) => (Output::Done, Vec::new()),
                Err(e) => (Output::Failed(e.into()), Vec::new()),
            },
            Some(Op::LeaseGrant(g)) => {
                if g.ttl > LEASE_TTL_MAX {
                    return (Output::Failed(KvError::LeaseTtlTooLarge), Vec::new());
                }
                if g.id == 0 || self.leases.contains_key(&g.id) {
                    return (Output::Failed(KvError::LeaseExists), Vec::new());
                }
                let ttl = g.ttl.max(crate::LEASE_TTL_MIN);
                self.leases.insert(
                    g.id,
                    Lease {
                        ttl,
                        keys: BTreeSet::new(),
                    },
                );
                (Output::Granted { id: g.id, ttl }, Vec::new())
            }
            Some(Op::LeaseRevoke(r)) => {
                let Some(lease) = self.leases.remove(&r.id) else {
                    return (Output::Failed(KvError::LeaseNotFound), Vec::new());
                };
                let mut t = self.mvcc.begin();
                for k in &lease.keys {
                    t.delete(&KeyRange::new(k.clone(), Bytes::new()));
                }
                (Output::Done, t.finish())
            }
        }
    }

    /// Answers a read at revision `at` (0: now).
    pub fn range(&self, req: &RangeRequest, at: i64) -> Result<RangeResponse, KvError> {
        let rev = self
            .mvcc
            .readable(if req.revision > 0 { req.revision } else { at })?;
        let range = KeyRange::new(req.key.clone(), req.range_end.clone());
        Ok(range_over(self.mvcc.range_at(&range, rev), req))
    }

    /// A snapshot of the whole state.
    pub fn encode(&self) -> Vec<u8> {
        self.capture().encode()
    }

    /// The whole state, captured for [`Captured::encode`] to encode
    /// elsewhere: values are shared, not copied, so capturing costs a
    /// fraction of encoding and the state machine's task need not wait
    /// for the bytes.
    pub fn capture(&self) -> Captured {
        let (revision, compacted, keys) = self.mvcc.dump();
        Captured(SnapshotPb {
            revision,
            compacted,
            keys: keys
                .iter()
                .map(|(k, vs)| KeyPb {
                    key: k.clone(),
                    versions: vs
                        .iter()
                        .map(|v| VersionPb {
                            mod_rev: v.mod_rev,
                            sub: v.sub,
                            create_rev: v.create_rev,
                            version: v.version,
                            value: v.value.clone(),
                            lease: v.lease,
                        })
                        .collect(),
                })
                .collect(),
            leases: self
                .leases
                .iter()
                .map(|(id, l)| LeasePb {
                    id: *id,
                    ttl: l.ttl,
                })
                .collect(),
        })
    }

    /// Rebuilds the state from [`Machine::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<Machine, prost::DecodeError> {
        let snap = SnapshotPb::decode(bytes)?;
        let mut leases: BTreeMap<i64, Lease> = snap
            .leases
            .iter()
            .map(|l| {
                (
                    l.id,
                    Lease {
                        ttl: l.ttl,
                        keys: BTreeSet::new(),
                    },
                )
            })
            .collect();
        let mut keys = BTreeMap::new();
        for k in snap.keys {
            let versions: Vec<Version> = k
                .versions
                .into_iter()
                .map(|v| Version {
                    mod_rev: v.mod_rev,
                    sub: v.sub,
                    create_rev: v.create_rev,
                    version: v.version,
                    value: v.value,
                    lease: v.lease,
                })
                .collect();
            if let Some(last) = versions.last() {
                if last.value.is_some() && last.lease != 0 {
                    if let Some(l) = leases.get_mut(&last.lease) {
                        l.keys.insert(k.key.clone());
                    }
                }
            }
            keys.insert(k.key, versions);
        }
        Ok(Machine {
            mvcc: Mvcc::from_parts(snap.revision, snap.compacted, keys),
            leases,
        })
    }
}

/// A state machine's state as [`Machine::capture`] took it.
pub struct Captured(SnapshotPb);

impl Captured {
    /// The bytes [`Machine::decode`] reads.
    pub fn encode(self) -> Vec<u8> {
        self.0.encode_to_vec()
    }
}

#[derive(Clone, PartialEq, Message)]
struct SnapshotPb {
    #[prost(int64, tag = "1")]
    revision: i64,
    #[prost(int64, tag = "2")]
    compacted: i64,
    #[prost(message, repeated, tag = "3")]
    keys: Vec<KeyPb>,
    #[prost(message, repeated, tag = "4")]
    leases: Vec<LeasePb>,
}

#[derive(Clone, PartialEq, Message)]
struct KeyPb {
    #[prost(bytes = "bytes", tag = "1")]
    key: Bytes,
    #[prost(message, repeated, tag = "2")]
    versions: Vec<VersionPb>,
}

#[derive(Clone, PartialEq, Message)]
struct VersionPb {
    #[prost(int64, tag = "1")]
    mod_rev: i64,
    #[prost(uint32, tag = "2")]
    sub: u32,
    #[prost(int64, tag = "3")]
    create_rev: i64,
    #[prost(int64, tag = "4")]
    version: i64,
    #[prost(bytes = "bytes", optional, tag = "5")]
    value: Option<Bytes>,
    #[prost(int64, tag = "6")]
    lease: i64,
}

#[derive(Clone, PartialEq, Message)]
struct LeasePb {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(int64, tag = "2")]
    ttl: i64,
}

fn header() -> Option<ResponseHeader> {
    // Filled in by the server, which knows the member and the revision.
    None
}

fn put(
    t: &mut WriteTxn<'_>,
    leases: &mut BTreeMap<i64, Lease>,
    p: &PutRequest,
) -> Result<PutResponse, KvError> {
    let cur = t.get(&p.key).cloned();
    let value = if p.ignore_value {
        match &cur {
            Some(c) => c.value.clone().unwrap_or_default(),
            None => return Err(KvError::Invalid("key not found".into())),
        }
    } else {
        p.value.clone()
    };
    let lease = if p.ignore_lease {
        match &cur {
            Some(c) => c.lease,
            None => return Err(KvError::Invalid("key not found".into())),
        }
    } else {
        p.lease
    };
    if lease != 0 && !leases.contains_key(&lease) {
        return Err(KvError::LeaseNotFound);
    }
    if let Some(c) = &cur {
        if c.lease != 0 && c.lease != lease {
            if let Some(l) = leases.get_mut(&c.lease) {
                l.keys.remove(&p.key);
            }
        }
    }
    if let Some(l) = leases.get_mut(&lease) {
        l.keys.insert(p.key.clone());
    }
    let prev = t.put(p.key.clone(), value, lease);
    Ok(PutResponse {
        header: header(),
        prev_kv: if p.prev_kv {
            prev.map(|v| key_value(&p.key, &v, false))
        } else {
            None
        },
    })
}

fn delete(
    t: &mut WriteTxn<'_>,
    leases: &mut BTreeMap<i64, Lease>,
    d: &DeleteRangeRequest,
) -> DeleteRangeResponse {
    let gone = t.delete(&KeyRange::new(d.key.clone(), d.range_end.clone()));
    for (k, v) in &gone {
        if v.lease != 0 {
            if let Some(l) = leases.get_mut(&v.lease) {
                l.keys.remove(k);
            }
        }
    }
    DeleteRangeResponse {
        header: header(),
        deleted: i64::try_from(gone.len()).unwrap_or(i64::MAX),
        prev_kvs: if d.prev_kv {
            gone.iter().map(|(k, v)| key_value(k, v, false)).collect()
        } else {
            Vec::new()
        },
    }
}

/// etcd refuses a transaction whose puts name a missing lease before
/// evaluating anything.
fn check_txn(leases: &BTreeMap<i64, Lease>, req: &TxnRequest) -> Result<(), KvError> {
    fn ops(leases: &BTreeMap<i64, Lease>, ops: &[RequestOp]) -> Result<(), KvError> {
        for op in ops {
            match &op.request {
                Some(request_op::Request::RequestPut(p))
                    if p.lease != 0 && !leases.contains_key(&p.lease) =>
                {
                    return Err(KvError::LeaseNotFound)
                }
                Some(request_op::Request::RequestTxn(t)) => check_txn(leases, t)?,
                _ => {}
            }
        }
        Ok(())
    }
    ops(leases, &req.success)?;
    ops(leases, &req.failure)
}

fn txn(t: &mut WriteTxn<'_>, leases: &mut BTreeMap<i64, Lease>, req: &TxnRequest) -> TxnResponse {
    let succeeded = req.compare.iter().all(|c| compare_holds(t, c));
    let branch = if succeeded {
        &req.success
    } else {
        &req.failure
    };
    let mut responses = Vec::with_capacity(branch.len());
    for op in branch {
        let r = match &op.request {
            None => continue,
            Some(request_op::Request::RequestRange(r)) => {
                let range = KeyRange::new(r.key.clone(), r.range_end.clone());
                response_op::Response::ResponseRange(range_over(t.range(&range), r))
            }
            Some(request_op::Request::RequestPut(p)) => match put(t, leases, p) {
                Ok(r) => response_op::Response::ResponsePut(r),
                // Checked up front; an ignore_value on a missing key lands here.
                Err(_) => response_op::Response::ResponsePut(PutResponse::default()),
            },
            Some(request_op::Request::RequestDeleteRange(d)) => {
                response_op::Response::ResponseDeleteRange(delete(t, leases, d))
            }
            Some(request_op::Request::RequestTxn(inner)) => {
                response_op::Response::ResponseTxn(txn(t, leases, inner))
            }
        };
        responses.push(ResponseOp { response: Some(r) });
    }
    TxnResponse {
        header: header(),
        succeeded,
        responses,
    }
}

fn compare_holds(t: &WriteTxn<'_>, c: &Compare) -> bool {
    use compare::{CompareResult, CompareTarget, TargetUnion};
    let target = CompareTarget::try_from(c.target).unwrap_or(CompareTarget::Version);
    let result = CompareResult::try_from(c.result).unwrap_or(CompareResult::Equal);
    let check = |v: Option<&Version>| -> bool {
        let ord = match (target, &c.target_union) {
            (CompareTarget::Version, Some(TargetUnion::Version(x))) => {
                v.map_or(0, |v| v.version).cmp(x)
            }
            (CompareTarget::Create, Some(TargetUnion::CreateRevision(x))) => {
                v.map_or(0, |v| v.create_rev).cmp(x)
            }
            (CompareTarget::Mod, Some(TargetUnion::ModRevision(x))) => {
                v.map_or(0, |v| v.mod_rev).cmp(x)
            }
            (CompareTarget::Lease, Some(TargetUnion::Lease(x))) => v.map_or(0, |v| v.lease).cmp(x),
            (CompareTarget::Value, Some(TargetUnion::Value(x))) => match v {
                // etcd: a value compare against a missing key is false.
                None => return false,
                Some(v) => v.value.as_deref().unwrap_or_default().cmp(x.as_ref()),
            },
            // A target without its value (proto3 default): compare with 0.
            (CompareTarget::Version, None) => v.map_or(0, |v| v.version).cmp(&0),
            (CompareTarget::Create, None) => v.map_or(0, |v| v.create_rev).cmp(&0),
            (CompareTarget::Mod, None) => v.map_or(0, |v| v.mod_rev).cmp(&0),
            (CompareTarget::Lease, None) => v.map_or(0, |v| v.lease).cmp(&0),
            _ => return false,
        };
        match result {
            CompareResult::Equal => ord.is_eq(),
            CompareResult::Greater => ord.is_gt(),
            CompareResult::Less => ord.is_lt(),
            CompareResult::NotEqual => ord.is_ne(),
        }
    };
    if c.range_end.is_empty() {
        check(t.get(&c.key))
    } else {
        let range = KeyRange::new(c.key.clone(), c.range_end.clone());
        t.range(&range).all(|(_, v)| check(Some(v)))
    }
}

/// Applies a Range request's filters, sorting and limit to the keys it covers.
pub fn range_over<'a>(
    kvs: impl Iterator<Item = (&'a Bytes, &'a Version)>,
    req: &RangeRequest,
) -> RangeResponse {
    use range_request::{SortOrder, SortTarget};
    let mut hits: Vec<(&Bytes, &Version)> = kvs
        .filter(|(_, v)| {
            (req.min_mod_revision == 0 || v.mod_rev >= req.min_mod_revision)
                && (req.max_mod_revision == 0 || v.mod_rev <= req.max_mod_revision)
                && (req.min_create_revision == 0 || v.create_rev >= req.min_create_revision)
                && (req.max_create_revision == 0 || v.create_rev <= req.max_create_revision)
        })
        .collect();
    let count = hits.len();
    let mut order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
    let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
    if order == SortOrder::None && target != SortTarget::Key {
        order = SortOrder::Ascend;
    }
    if order != SortOrder::None {
        hits.sort_by(|a, b| {
            let o = match target {
                SortTarget::Key => a.0.cmp(b.0),
                SortTarget::Version => a.1.version.cmp(&b.1.version),
                SortTarget::Create => a.1.create_rev.cmp(&b.1.create_rev),
                SortTarget::Mod => a.1.mod_rev.cmp(&b.1.mod_rev),
                SortTarget::Value => a.1.value.cmp(&b.1.value),
            };
            // Keys are the tie-break, as in etcd (a stable sort on key order).
            o.then_with(|| a.0.cmp(b.0))
        });
        if order == SortOrder::Descend {
            hits.reverse();
        }
    }
    let limit = usize::try_from(req.limit).unwrap_or(0);
    let more = limit > 0 && count > limit;
    if req.count_only {
        hits.clear();
    } else if limit > 0 {
        hits.truncate(limit);
    }
    RangeResponse {
        header: header(),
        kvs: hits
            .into_iter()
            .map(|(k, v)| key_value(k, v, req.keys_only))
            .collect(),
        more,
        count: i64::try_from(count).unwrap_or(i64::MAX),
    }
}

/// Watch events as mvccpb events (re-exported for the server).
pub type Event = mvccpb::Event;

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn put_cmd(k: &str, v: &str, lease: i64) -> Command {
        Command {
            op: Some(Op::Put(PutRequest {
                key: b(k),
                value: b(v),
                lease,
                prev_kv: true,
                ..Default::default()
            })),
        }
    }

    #[test]
    fn lease_revoke_deletes_its_keys() {
        let mut m = Machine::default();
        let (out, _) = m.apply(&Command {
            op: Some(Op::LeaseGrant(LeaseGrant { id: 7, ttl: 5 })),
        });
        assert_eq!(out, Output::Granted { id: 7, ttl: 5 });
        m.apply(&put_cmd("a", "1", 7));
        m.apply(&put_cmd("b", "1", 0));
        assert_eq!(
            m.apply(&put_cmd("c", "1", 99)).0,
            Output::Failed(KvError::LeaseNotFound)
        );
        let (_, ev) = m.apply(&Command {
            op: Some(Op::LeaseRevoke(LeaseRevoke {
                id: 7,
                expired: true,
            })),
        });
        assert_eq!(ev.len(), 1);
        assert!(m.mvcc.get(b"a").is_none());
        assert!(m.mvcc.get(b"b").is_some());
    }

    #[test]
    fn txn_compare_create_revision_is_the_lock_recipe() {
        let mut m = Machine::default();
        let acquire = |who: &str| Command {
            op: Some(Op::Txn(TxnRequest {
                compare: vec![Compare {
                    result: compare::CompareResult::Equal as i32,
                    target: compare::CompareTarget::Create as i32,
                    key: b("lock"),
                    target_union: Some(compare::TargetUnion::CreateRevision(0)),
                    range_end: Bytes::new(),
                }],
                success: vec![RequestOp {
                    request: Some(request_op::Request::RequestPut(PutRequest {
                        key: b("lock"),
                        value: b(who),
                        ..Default::default()
                    })),
                }],
                failure: vec![RequestOp {
                    request: Some(request_op::Request::RequestRange(RangeRequest {
                        key: b("lock"),
                        ..Default::default()
                    })),
                }],
            })),
        };
        let Output::Txn(first) = m.apply(&acquire("x")).0 else {
            panic!("not a txn")
        };
        assert!(first.succeeded);
        let Output::Txn(second) = m.apply(&acquire("y")).0 else {
            panic!("not a txn")
        };
        assert!(!second.succeeded);
        let Some(ResponseOp {
            response: Some(response_op::Response::ResponseRange(r)),
        }) = second.responses.first()
        else {
            panic!("no range")
        };
        assert_eq!(r.kvs[0].value, b("x"));
    }

    #[test]
    fn snapshot_round_trips() {
        let mut m = Machine::default();
        m.apply(&Command {
            op: Some(Op::LeaseGrant(LeaseGrant { id: 3, ttl: 10 })),
        });
        m.apply(&put_cmd("k", "v", 3));
        m.apply(&put_cmd("k", "w", 3));
        let bytes = m.encode();
        let n = Machine::decode(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.encode(), bytes);
        assert_eq!(n.leases.get(&3).map(|l| l.keys.len()), Some(1));
        assert_eq!(n.mvcc.revision(), m.mvcc.revision());
        assert!(Machine::decode(&[0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn range_sort_limit_and_count() {
        let mut m = Machine::default();
        for (k, v) in [("p/b", "2"), ("p/a", "3"), ("p/c", "1")] {
            m.apply(&put_cmd(k, v, 0));
        }
        let req = RangeRequest {
            key: b("p/"),
            range_end: b("p0"),
            limit: 2,
            sort_order: range_request::SortOrder::Descend as i32,
            sort_target: range_request::SortTarget::Create as i32,
            ..Default::default()
        };
        let r = m.range(&req, 0).unwrap_or_default();
        assert_eq!(r.count, 3);
        assert!(r.more);
        let keys: Vec<Bytes> = r.kvs.iter().map(|k| k.key.clone()).collect();
        assert_eq!(keys, vec![b("p/c"), b("p/a")]);
    }
}
