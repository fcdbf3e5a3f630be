//! The etcd v3 gRPC services, on top of a [`crate::replica`] member.
//!
//! Locks and elections are served the way etcd serves them: on plain keys
//! under the lock's or election's name, one key per lease, ownership ordered
//! by creation revision. The key's creation revision is the fencing token.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request as GrpcRequest, Response, Status, Streaming};

use crate::config::{member_id, HeaderIds, ServeConfig};
use crate::machine::{Command, LeaseGrant, LeaseRevoke, Op, Output};
use crate::mvcc::KeyRange;
use crate::pb::etcdserverpb::{
    self as pb, compare, range_request, request_op, response_op, watch_create_request::FilterType,
    watch_request,
};
use crate::pb::mvccpb;
use crate::pb::v3electionpb as el;
use crate::pb::v3lockpb as lk;
use crate::replica::{unavailable, Request, StatusInfo, WatchSpec, WATCH_QUEUE};

/// How long a request waits for the group before the client is told to retry.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The version clients are told (the etcd API level troupe speaks).
pub const VERSION: &str = "3.4.0";

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The handle every service shares.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Request>,
    cfg: ServeConfig,
    ids: HeaderIds,
    streams: AtomicU64,
    lease_ids: AtomicU64,
}

impl Server {
    /// Serves the member behind `tx`.
    pub fn new(cfg: ServeConfig, tx: mpsc::Sender<Request>) -> Server {
        let ids = HeaderIds::of(&cfg);
        let seed = ids.member_id ^ now_nanos();
        Server {
            inner: Arc::new(Inner {
                tx,
                ids,
                cfg,
                streams: AtomicU64::new(1),
                lease_ids: AtomicU64::new(seed),
            }),
        }
    }

    async fn call<T>(&self, f: impl FnOnce(oneshot::Sender<T>) -> Request) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        self.inner.tx.send(f(tx)).await.map_err(|_| unavailable())?;
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(unavailable()),
            Err(_) => Err(Status::unavailable("etcdserver: request timed out")),
        }
    }

    async fn propose(&self, op: Op) -> Result<(Output, pb::ResponseHeader), Status> {
        let cmd = Command { op: Some(op) };
        let (out, header) = self.call(|reply| Request::Propose { cmd, reply }).await??;
        if let Output::Failed(e) = &out {
            return Err(e.status());
        }
        Ok((out, header))
    }

    async fn range(&self, req: pb::RangeRequest) -> Result<pb::RangeResponse, Status> {
        self.call(|reply| Request::Range { req, reply }).await?
    }

    async fn status_info(&self) -> Result<StatusInfo, Status> {
        self.call(|reply| Request::Status { reply }).await
    }

    fn next_stream(&self) -> u64 {
        self.inner.streams.fetch_add(1, AtomicOrdering::Relaxed)
    }

    fn header(&self, rev: i64, term: u64) -> pb::ResponseHeader {
        self.inner.ids.header(rev, term)
    }

    /// Registers a watch whose responses go to `tx`; returns its stream id.
    async fn watch_internal(
        &self,
        range: KeyRange,
        start_revision: i64,
        tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    ) -> Result<u64, Status> {
        let stream = self.next_stream();
        let spec = WatchSpec {
            range,
            start_revision,
            prev_kv: true,
            no_put: false,
            no_delete: false,
            watch_id: 0,
            stream,
            tx,
        };
        self.inner
            .tx
            .send(Request::Watch(Box::new(spec)))
            .await
            .map_err(|_| unavailable())?;
        Ok(stream)
    }

    async fn close_stream(&self, stream: u64) {
        let _ = self.inner.tx.send(Request::CloseStream { stream }).await;
    }

    /// Waits until no key under `prefix` older than `my_rev` remains (the
    /// lock and election queue): watches the deletion of the newest older
    /// key, again and again.
    async fn wait_turn(
        &self,
        prefix: &Bytes,
        my_key: &Bytes,
        my_rev: i64,
    ) -> Result<pb::ResponseHeader, Status> {
        loop {
            let r = self
                .range(pb::RangeRequest {
                    key: prefix.clone(),
                    range_end: prefix_end(prefix),
                    sort_order: range_request::SortOrder::Descend as i32,
                    sort_target: range_request::SortTarget::Create as i32,
                    max_create_revision: my_rev - 1,
                    limit: 1,
                    ..Default::default()
                })
                .await?;
            let header = r.header.unwrap_or_default();
            let Some(pred) = r.kvs.first() else {
                // Still ours? A lease that expired took the key with it.
                let mine = self
                    .range(pb::RangeRequest {
                        key: my_key.clone(),
                        ..Default::default()
                    })
                    .await?;
                if mine.kvs.first().map(|k| k.create_revision) != Some(my_rev) {
                    return Err(Status::failed_precondition(
                        "etcdserver: lock or campaign key lost (its lease expired)",
                    ));
                }
                return Ok(header);
            };
            let (tx, mut rx) = mpsc::channel(WATCH_QUEUE);
            let stream = self
                .watch_internal(
                    KeyRange::new(pred.key.clone(), Bytes::new()),
                    header.revision + 1,
                    tx,
                )
                .await?;
            let deleted = async {
                while let Some(resp) = rx.recv().await {
                    let resp = resp?;
                    if resp.canceled {
                        return Err(unavailable());
                    }
                    if resp
                        .events
                        .iter()
                        .any(|e| e.r#type == mvccpb::event::EventType::Delete as i32)
                    {
                        return Ok(());
                    }
                }
                Err(unavailable())
            }
            .await;
            self.close_stream(stream).await;
            deleted?;
        }
    }

    fn new_lease_id(&self) -> i64 {
        // Positive, non-zero, spread out: a proposer-chosen id the state
        // machine accepts if nobody holds it.
        let x = self
            .inner
            .lease_ids
            .fetch_add(0x9E37_79B9_7F4A_7C15, AtomicOrdering::Relaxed);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        i64::try_from(z >> 2).unwrap_or(1).max(1)
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(0))
        .unwrap_or(0)
}

/// The end of the range of every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    Bytes::from_static(&[0])
}

fn with_header<T>(
    mut r: T,
    h: pb::ResponseHeader,
    set: impl FnOnce(&mut T, pb::ResponseHeader),
) -> T {
    set(&mut r, h);
    r
}

#[tonic::async_trait]
impl pb::kv_server::Kv for Server {
    async fn range(
        &self,
        req: GrpcRequest<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        Ok(Response::new(Server::range(self, req.into_inner()).await?))
    }

    async fn put(
        &self,
        req: GrpcRequest<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        match self.propose(Op::Put(req.into_inner())).await? {
            (Output::Put(r), h) => Ok(Response::new(with_header(r, h, |r, h| r.header = Some(h)))),
            _ => Err(Status::internal("unexpected output")),
        }
    }

    async fn delete_range(
        &self,
        req: GrpcRequest<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        match self.propose(Op::Delete(req.into_inner())).await? {
            (Output::Delete(r), h) => {
                Ok(Response::new(with_header(r, h, |r, h| r.header = Some(h))))
            }
            _ => Err(Status::internal("unexpected output")),
        }
    }

    async fn txn(
        &self,
        req: GrpcRequest<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        match self.propose(Op::Txn(req.into_inner())).await? {
            (Output::Txn(mut r), h) => {
                fill_txn_headers(&mut r, &h);
                r.header = Some(h);
                Ok(Response::new(r))
            }
            _ => Err(Status::internal("unexpected output")),
        }
    }

    async fn compact(
        &self,
        req: GrpcRequest<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let (_, h) = self.propose(Op::Compact(req.into_inner())).await?;
        Ok(Response::new(pb::CompactionResponse { header: Some(h) }))
    }
}

/// etcd gives every response inside a transaction the transaction's header.
fn fill_txn_headers(r: &mut pb::TxnResponse, h: &pb::ResponseHeader) {
    for op in &mut r.responses {
        match &mut op.response {
            Some(response_op::Response::ResponseRange(x)) => x.header = Some(*h),
            Some(response_op::Response::ResponsePut(x)) => x.header = Some(*h),
            Some(response_op::Response::ResponseDeleteRange(x)) => x.header = Some(*h),
            Some(response_op::Response::ResponseTxn(x)) => {
                fill_txn_headers(x, h);
                x.header = Some(*h);
            }
            None => {}
        }
    }
}

#[tonic::async_trait]
impl pb::watch_server::Watch for Server {
    type WatchStream = BoxStream<pb::WatchResponse>;

    async fn watch(
        &self,
        req: GrpcRequest<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut incoming = req.into_inner();
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        let stream = self.next_stream();
        let me = self.clone();
        tokio::spawn(async move {
            let mut next_id: i64 = 0;
            while let Some(Ok(msg)) = incoming.next().await {
                match msg.request_union {
                    Some(watch_request::RequestUnion::CreateRequest(c)) => {
                        let watch_id = if c.watch_id != 0 {
                            c.watch_id
                        } else {
                            let id = next_id;
                            next_id += 1;
                            id
                        };
                        let spec = WatchSpec {
                            range: KeyRange::new(c.key, c.range_end),
                            start_revision: c.start_revision,
                            prev_kv: c.prev_kv,
                            no_put: c.filters.contains(&(FilterType::Noput as i32)),
                            no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
                            watch_id,
                            stream,
                            tx: tx.clone(),
                        };
                        if me
                            .inner
                            .tx
                            .send(Request::Watch(Box::new(spec)))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    Some(watch_request::RequestUnion::CancelRequest(c)) => {
                        let _ = me
                            .inner
                            .tx
                            .send(Request::CancelWatch {
                                stream,
                                watch_id: c.watch_id,
                            })
                            .await;
                    }
                    Some(watch_request::RequestUnion::ProgressRequest(_)) => {
                        if let Ok(rev) = me.call(|reply| Request::Revision { reply }).await {
                            let term = me.status_info().await.map(|s| s.epoch).unwrap_or(0);
                            let _ = tx
                                .send(Ok(pb::WatchResponse {
                                    header: Some(me.header(rev, term)),
                                    watch_id: -1,
                                    ..Default::default()
                                }))
                                .await;
                        }
                    }
                    None => {}
                }
            }
            me.close_stream(stream).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl pb::lease_server::Lease for Server {
    type LeaseKeepAliveStream = BoxStream<pb::LeaseKeepAliveResponse>;

    async fn lease_grant(
        &self,
        req: GrpcRequest<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let r = req.into_inner();
        let id = if r.id != 0 { r.id } else { self.new_lease_id() };
        match self
            .propose(Op::LeaseGrant(LeaseGrant { id, ttl: r.ttl }))
            .await?
        {
            (Output::Granted { id, ttl }, h) => Ok(Response::new(pb::LeaseGrantResponse {
                header: Some(h),
                id,
                ttl,
                error: String::new(),
            })),
            _ => Err(Status::internal("unexpected output")),
        }
    }

    async fn lease_revoke(
        &self,
        req: GrpcRequest<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let id = req.into_inner().id;
        let (_, h) = self
            .propose(Op::LeaseRevoke(LeaseRevoke { id, expired: false }))
            .await?;
        Ok(Response::new(pb::LeaseRevokeResponse { header: Some(h) }))
    }

    async fn lease_keep_alive(
        &self,
        req: GrpcRequest<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut incoming = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let me = self.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = incoming.next().await {
                let id = msg.id;
                let r = me.call(|reply| Request::KeepAlive { id, reply }).await;
                let info = me.status_info().await.ok();
                let (rev, term) = info.map(|s| (s.revision, s.epoch)).unwrap_or((0, 0));
                let resp = match r {
                    Ok(Ok(ttl)) => Ok(pb::LeaseKeepAliveResponse {
                        header: Some(me.header(rev, term)),
                        id,
                        ttl,
                    }),
                    // etcd answers a keep-alive of an unknown lease with TTL 0.
                    Ok(Err(s)) if s.code() == tonic::Code::NotFound => {
                        Ok(pb::LeaseKeepAliveResponse {
                            header: Some(me.header(rev, term)),
                            id,
                            ttl: 0,
                        })
                    }
                    Ok(Err(s)) | Err(s) => Err(s),
                };
                let stop = resp.is_err();
                if tx.send(resp).await.is_err() || stop {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        req: GrpcRequest<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let r = req.into_inner();
        let id = r.id;
        let (left, granted, keys, rev) = self
            .call(|reply| Request::TimeToLive { id, reply })
            .await??;
        let term = self.status_info().await.map(|s| s.epoch).unwrap_or(0);
        Ok(Response::new(pb::LeaseTimeToLiveResponse {
            header: Some(self.header(rev, term)),
            id,
            ttl: left,
            granted_ttl: granted,
            keys: if r.keys { keys } else { Vec::new() },
        }))
    }

    async fn lease_leases(
        &self,
        _req: GrpcRequest<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let (ids, rev) = self.call(|reply| Request::Leases { reply }).await??;
        let term = self.status_info().await.map(|s| s.epoch).unwrap_or(0);
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: Some(self.header(rev, term)),
            leases: ids.into_iter().map(|id| pb::LeaseStatus { id }).collect(),
        }))
    }
}

/// What `member add`, `remove`, `update` and `promote` answer.
fn membership_is_static() -> Status {
    Status::unimplemented(
        "troupe: the cluster's membership is static (--initial-cluster); member add, remove, \
         update and promote are not served. To replace a member's disk, restart it on an empty \
         data directory with --initial-cluster-state existing",
    )
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for Server {
    async fn member_add(
        &self,
        _req: GrpcRequest<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        Err(membership_is_static())
    }

    async fn member_remove(
        &self,
        _req: GrpcRequest<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        Err(membership_is_static())
    }

    async fn member_update(
        &self,
        _req: GrpcRequest<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(membership_is_static())
    }

    async fn member_promote(
        &self,
        _req: GrpcRequest<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        Err(membership_is_static())
    }

    async fn member_list(
        &self,
        _req: GrpcRequest<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let s = self.status_info().await?;
        let cfg = &self.inner.cfg;
        let members = cfg
            .cluster
            .iter()
            .map(|p| pb::Member {
                id: member_id(&p.name),
                name: p.name.clone(),
                peer_ur_ls: vec![format!("http://{}", p.addr)],
                // Empty for a member not heard from since this one started.
                client_ur_ls: s.client_urls.get(&p.name).cloned().unwrap_or_default(),
                is_learner: false,
            })
            .collect();
        Ok(Response::new(pb::MemberListResponse {
            header: Some(self.header(s.revision, s.epoch)),
            members,
        }))
    }
}

#[tonic::async_trait]
impl crate::pb::troupepb::admin_server::Admin for Server {
    async fn member_status(
        &self,
        _req: GrpcRequest<crate::pb::troupepb::MemberStatusRequest>,
    ) -> Result<Response<crate::pb::troupepb::MemberStatusResponse>, Status> {
        let s = self.status_info().await?;
        let cfg = &self.inner.cfg;
        let leader = cfg
            .cluster
            .iter()
            .find(|p| s.leader != 0 && member_id(&p.name) == s.leader)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        Ok(Response::new(crate::pb::troupepb::MemberStatusResponse {
            name: cfg.name.clone(),
            phase: s.phase.to_string(),
            epoch: s.epoch,
            view: s.view,
            leader,
            applied_index: s.applied,
            committed_index: s.committed,
            revision: s.revision,
            wal_bytes: s.sizes.wal_bytes,
            wal_segments: u64::try_from(s.sizes.wal_segments).unwrap_or(u64::MAX),
            snapshot_bytes: s.sizes.snapshot_bytes,
            snapshot_index: s.sizes.snapshot_index,
        }))
    }
}

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for Server {
    async fn alarm(
        &self,
        _req: GrpcRequest<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        let s = self.status_info().await?;
        Ok(Response::new(pb::AlarmResponse {
            header: Some(self.header(s.revision, s.epoch)),
            alarms: Vec::new(),
        }))
    }

    /// etcd rewrites its database file to give back the space of deleted
    /// and compacted data; here the member saves a snapshot now and cuts
    /// its log below it. This member only, as in etcd (`etcdctl defrag
    /// --cluster` asks each).
    async fn defragment(
        &self,
        _req: GrpcRequest<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        let header = self.call(|reply| Request::Defragment { reply }).await??;
        Ok(Response::new(pb::DefragmentResponse {
            header: Some(header),
        }))
    }

    /// Served by this member from its own data, like etcd's: members that
    /// applied the same commands give the same hash at the same revision.
    async fn hash_kv(
        &self,
        req: GrpcRequest<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let rev = req.into_inner().revision;
        let h = self.call(|reply| Request::HashKv { rev, reply }).await??;
        Ok(Response::new(pb::HashKvResponse {
            header: Some(h.header),
            hash: h.hash,
            compact_revision: h.compacted,
            hash_revision: h.hash_rev,
        }))
    }

    async fn status(
        &self,
        _req: GrpcRequest<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self.status_info().await?;
        let db = i64::try_from(s.sizes.wal_bytes + s.sizes.snapshot_bytes).unwrap_or(i64::MAX);
        let mut errors = Vec::new();
        if let Some(why) = s.waiting_for {
            errors.push(format!("troupe: member is {} ({why})", s.phase));
        }
        Ok(Response::new(pb::StatusResponse {
            header: Some(self.header(s.revision, s.epoch)),
            version: VERSION.into(),
            db_size: db,
            leader: s.leader,
            raft_index: s.applied,
            raft_term: s.epoch,
            raft_applied_index: s.applied,
            errors,
            db_size_in_use: db,
            is_learner: false,
        }))
    }
}

fn lease_key(name: &[u8], lease: i64) -> Bytes {
    let mut k = name.to_vec();
    k.push(b'/');
    k.extend_from_slice(format!("{lease:x}").as_bytes());
    Bytes::from(k)
}

fn prefix_of(name: &[u8]) -> Bytes {
    let mut k = name.to_vec();
    k.push(b'/');
    Bytes::from(k)
}

fn create_if_absent(key: &Bytes, value: Bytes, lease: i64) -> pb::TxnRequest {
    pb::TxnRequest {
        compare: vec![pb::Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Create as i32,
            key: key.clone(),
            target_union: Some(compare::TargetUnion::CreateRevision(0)),
            range_end: Bytes::new(),
        }],
        success: vec![pb::RequestOp {
            request: Some(request_op::Request::RequestPut(pb::PutRequest {
                key: key.clone(),
                value,
                lease,
                ..Default::default()
            })),
        }],
        failure: vec![pb::RequestOp {
            request: Some(request_op::Request::RequestRange(pb::RangeRequest {
                key: key.clone(),
                ..Default::default()
            })),
        }],
    }
}

fn guarded(key: &Bytes, rev: i64, op: request_op::Request) -> pb::TxnRequest {
    pb::TxnRequest {
        compare: vec![pb::Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Create as i32,
            key: key.clone(),
            target_union: Some(compare::TargetUnion::CreateRevision(rev)),
            range_end: Bytes::new(),
        }],
        success: vec![pb::RequestOp { request: Some(op) }],
        failure: Vec::new(),
    }
}

impl Server {
    /// Creates the queue key of `lease` under `name`; returns it with its
    /// creation revision.
    async fn enqueue(&self, name: &[u8], lease: i64, value: Bytes) -> Result<(Bytes, i64), Status> {
        let key = lease_key(name, lease);
        let (out, h) = self
            .propose(Op::Txn(create_if_absent(&key, value, lease)))
            .await?;
        let Output::Txn(r) = out else {
            return Err(Status::internal("unexpected output"));
        };
        if r.succeeded {
            return Ok((key, h.revision));
        }
        let rev = r
            .responses
            .first()
            .and_then(|op| match &op.response {
                Some(response_op::Response::ResponseRange(rr)) => {
                    rr.kvs.first().map(|kv| kv.create_revision)
                }
                _ => None,
            })
            .ok_or_else(|| Status::internal("queue key vanished"))?;
        Ok((key, rev))
    }

    async fn leader_kv(
        &self,
        name: &[u8],
    ) -> Result<(Option<mvccpb::KeyValue>, pb::ResponseHeader), Status> {
        let prefix = prefix_of(name);
        let r = self
            .range(pb::RangeRequest {
                key: prefix.clone(),
                range_end: prefix_end(&prefix),
                sort_order: range_request::SortOrder::Ascend as i32,
                sort_target: range_request::SortTarget::Create as i32,
                limit: 1,
                ..Default::default()
            })
            .await?;
        Ok((r.kvs.into_iter().next(), r.header.unwrap_or_default()))
    }
}

#[tonic::async_trait]
impl lk::lock_server::Lock for Server {
    async fn lock(
        &self,
        req: GrpcRequest<lk::LockRequest>,
    ) -> Result<Response<lk::LockResponse>, Status> {
        let r = req.into_inner();
        let (key, rev) = self.enqueue(&r.name, r.lease, Bytes::new()).await?;
        let header = self.wait_turn(&prefix_of(&r.name), &key, rev).await?;
        Ok(Response::new(lk::LockResponse {
            header: Some(header),
            key,
        }))
    }

    async fn unlock(
        &self,
        req: GrpcRequest<lk::UnlockRequest>,
    ) -> Result<Response<lk::UnlockResponse>, Status> {
        let key = req.into_inner().key;
        let (_, h) = self
            .propose(Op::Delete(pb::DeleteRangeRequest {
                key,
                ..Default::default()
            }))
            .await?;
        Ok(Response::new(lk::UnlockResponse { header: Some(h) }))
    }
}

#[tonic::async_trait]
impl el::election_server::Election for Server {
    type ObserveStream = BoxStream<el::LeaderResponse>;

    async fn campaign(
        &self,
        req: GrpcRequest<el::CampaignRequest>,
    ) -> Result<Response<el::CampaignResponse>, Status> {
        let r = req.into_inner();
        let (key, rev) = self.enqueue(&r.name, r.lease, r.value.clone()).await?;
        let header = self.wait_turn(&prefix_of(&r.name), &key, rev).await?;
        Ok(Response::new(el::CampaignResponse {
            header: Some(header),
            leader: Some(el::LeaderKey {
                name: r.name,
                key,
                rev,
                lease: r.lease,
            }),
        }))
    }

    async fn proclaim(
        &self,
        req: GrpcRequest<el::ProclaimRequest>,
    ) -> Result<Response<el::ProclaimResponse>, Status> {
        let r = req.into_inner();
        let l = r
            .leader
            .ok_or_else(|| Status::invalid_argument("election: no leader key given"))?;
        let op = request_op::Request::RequestPut(pb::PutRequest {
            key: l.key.clone(),
            value: r.value,
            lease: l.lease,
            ..Default::default()
        });
        let (out, h) = self.propose(Op::Txn(guarded(&l.key, l.rev, op))).await?;
        match out {
            Output::Txn(t) if t.succeeded => {
                Ok(Response::new(el::ProclaimResponse { header: Some(h) }))
            }
            _ => Err(Status::failed_precondition("election: not leader")),
        }
    }

    async fn leader(
        &self,
        req: GrpcRequest<el::LeaderRequest>,
    ) -> Result<Response<el::LeaderResponse>, Status> {
        let (kv, header) = self.leader_kv(&req.into_inner().name).await?;
        match kv {
            Some(kv) => Ok(Response::new(el::LeaderResponse {
                header: Some(header),
                kv: Some(kv),
            })),
            None => Err(Status::not_found("election: no leader")),
        }
    }

    async fn observe(
        &self,
        req: GrpcRequest<el::LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let name = req.into_inner().name;
        let prefix = prefix_of(&name);
        let (out_tx, out_rx) = mpsc::channel(64);
        let me = self.clone();
        tokio::spawn(async move {
            let (wtx, mut wrx) = mpsc::channel(WATCH_QUEUE);
            let Ok(stream) = me
                .watch_internal(KeyRange::new(prefix.clone(), prefix_end(&prefix)), 0, wtx)
                .await
            else {
                return;
            };
            let mut last: Option<(Bytes, i64, Bytes)> = None;
            loop {
                match me.leader_kv(&name).await {
                    Ok((Some(kv), header)) => {
                        let now = (kv.key.clone(), kv.mod_revision, kv.value.clone());
                        if last.as_ref() != Some(&now) {
                            last = Some(now);
                            let resp = el::LeaderResponse {
                                header: Some(header),
                                kv: Some(kv),
                            };
                            if out_tx.send(Ok(resp)).await.is_err() {
                                break;
                            }
                        }
                    }
                    Ok((None, _)) => last = None,
                    Err(s) => {
                        let _ = out_tx.send(Err(s)).await;
                        break;
                    }
                }
                // Wait for any change under the election's prefix.
                match wrx.recv().await {
                    Some(Ok(r)) if !r.canceled => {}
                    _ => break,
                }
                if out_tx.is_closed() {
                    break;
                }
            }
            me.close_stream(stream).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    async fn resign(
        &self,
        req: GrpcRequest<el::ResignRequest>,
    ) -> Result<Response<el::ResignResponse>, Status> {
        let l = req
            .into_inner()
            .leader
            .ok_or_else(|| Status::invalid_argument("election: no leader key given"))?;
        let op = request_op::Request::RequestDeleteRange(pb::DeleteRangeRequest {
            key: l.key.clone(),
            ..Default::default()
        });
        let (_, h) = self.propose(Op::Txn(guarded(&l.key, l.rev, op))).await?;
        Ok(Response::new(el::ResignResponse { header: Some(h) }))
    }
}
