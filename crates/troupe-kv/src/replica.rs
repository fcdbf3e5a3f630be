//! One member of the service: the state machine, its log, the group it is
//! replicated on, and the protocol that makes it durable.
//!
//! # How a write becomes durable
//!
//! A write is a [`Proposal`] multicast `Safe` on the group. Every member
//! applies it in the group's total order, appends it to its write-ahead log
//! (group commit on a writer thread), and once the log is synced publishes a
//! [`Durable`] mark, (epoch, index), as its group mark
//! ([`GroupHandle::set_mark`]): not a message, but a value that rides in the
//! datagrams the member sends anyway, so that marking costs no sequence
//! number, acknowledgement or delivery at every member. A client is answered
//! when a majority of the *configured* cluster, among the members of the
//! current view, has marked the write's index durable in the current epoch.
//!
//! # How a linearizable read is answered
//!
//! A member batches its pending linearizable reads behind a *read index*
//! marker, a [`ReadIndex`] multicast `Safe`, one in flight at a time (reads
//! that arrive meanwhile wait for the next one). The marker is neither
//! applied nor logged and does not advance the index: a read costs no log
//! append, no fsync and no `Durable` round. When the marker's origin
//! delivers it, normally (not in a view change's flush) and in a view that
//! holds a majority of the configured cluster, the batch waits until the
//! commit index reaches `i`, the index of the last entry ordered before the
//! marker (at once if it has already), and is answered at the committed
//! revision, which then includes every entry up to `i`: a read never shows a
//! write that a crash of the whole cluster could lose. A marker delivered in
//! a view change's flush (after `Blocked`) or in a view without a majority
//! is not answered on: its reads go back to the queue, behind a new marker
//! sent once the member is in a view with a majority. The reads waiting for
//! a marker or for the commit index are failed only when the member leaves
//! the group, as writes are.
//!
//! Why this is linearizable. What a read must not miss is a write `w`
//! committed, at any member, before the read began (an acknowledged write,
//! or one another read already showed: both were committed first). Let `R`
//! be the marker of the read's batch, delivered by its origin `O` in view
//! `V` of group `G`. Committing `w` took `Durable` marks for its index from
//! a majority `Q'` of the configured cluster; `V` holds a majority `Q`, so
//! some member `X` is in both. `X` applied `w` before marking it, hence
//! before `w` was committed, hence before `R` was multicast. A `Safe`
//! message delivered outside a flush is stable: every member of the view
//! acknowledged holding it, and acknowledgements carry the view they are
//! made in, so a member that has installed a later view no longer
//! acknowledges in `V`. So `X`, as a member of `V`, held `R` while still in
//! `V`, after it had applied `w`. Two cases:
//!
//! - `X` (or an earlier incarnation of it) applied `w` in `G`, in view
//!   `V_w`. Then `V_w` is `V` or a view before it (a member installs a
//!   group's views in one sequence, and a new incarnation joins after the
//!   old one is gone). If it is `V`, `X` applied `w` outside `V`'s flush
//!   (after a flush it is no longer in `V`), so `w` had its place in `V`'s
//!   total order before `R` was sent: `R`'s place is after it and `O`
//!   delivers `w` before `R`. If `V_w` is earlier, every member of `V`
//!   delivered what `X` delivered in `V_w`, or received a state that
//!   includes it (view synchrony and state transfer; a `Safe` message
//!   delivered anywhere is within the cut that ends its view). Either way
//!   `O` had applied `w` when it delivered `R`: `w` is at or before `i`,
//!   and the answer's revision includes it.
//! - `X` (or an earlier incarnation of it) applied `w` in another group,
//!   and then `X` joined `G` or took part in its recovery. That `G` serves
//!   with `w` in its state is what keeps committed writes across a change
//!   of group (see *How a cluster comes back*): without it `G` would go on
//!   without `w` for writes too. Reads add nothing to what that must show;
//!   the logged barrier that this replaces relied on it in the same way.
//!
//! The two restrictions are needed. With no majority in `V`, `Q` and `Q'`
//! need not meet: a minority left serving would answer from a state
//! without `w`, committed meanwhile by the majority elsewhere. In a flush
//! (the runtime announces it with `Blocked`; nothing is delivered between
//! `Blocked` and the flush), a `Safe` message is delivered once the cut
//! that contains it is decided by a majority of the view's members, which
//! need not hold a majority of the configured cluster, nor `X`.
//!
//! # How a cluster comes back
//!
//! A group that is created (rather than joined) starts *recovering*: every
//! member reports its last (epoch, index) and the highest epoch it promised.
//! Once a majority of the configured cluster has reported, the members agree
//! (everything here is in the group's total order) on a new epoch above
//! every promise and on the member with the highest (last epoch, index);
//! each member durably promises the epoch, the chosen member multicasts its
//! state, and when that state and a majority of promises are delivered,
//! every member adopts the state and the group serves in the new epoch.
//! Any acknowledged write was durable on a majority, so the reporting
//! majority holds it, and (epoch, index) ordering picks a state that has it:
//! the argument of Raft's election restriction, with the group's total order
//! in place of votes. A joiner of a serving group takes the group's state
//! and replaces its own log with it.
//!
//! That argument holds for members whose disks still hold what they marked
//! durable. A member started with `--initial-cluster-state existing` on an
//! empty data directory (a replaced disk) may have marked writes that its
//! empty log no longer has, so it does not report until it has taken a
//! state from its cluster (see [`HardState::awaiting_state`]): a majority of
//! reports is then a majority of intact disks, and meets every write's
//! majority of marks in a member that still holds it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::Status;
use tracing::{debug, error, info, warn};
use troupe::{Event, Group, GroupHandle, Ordering, TrySendError};
use troupe_core::{MemberId, View};
use troupe_store::{FsyncPolicy, Store, StoreOptions, StoreSizes};

use crate::config::{member_id, HeaderIds, ServeConfig};
use crate::machine::{Captured, Command, KvError, LeaseRevoke, Machine, Op, Output};
use crate::mvcc::KeyRange;
use crate::pb::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader, WatchResponse};
use crate::pb::mvccpb;
use crate::wire::{
    Accept, Adopt, Durable, GroupState, HardState, Hello, LogEntry, Msg, Persisted, Proposal,
    ReadIndex, Refresh, Refuse, Report, Wire, PROTOCOL,
};

/// Watch responses queued per watch stream before the watch is cancelled as
/// too slow.
pub const WATCH_QUEUE: usize = 1024;

/// Most group events handled before the log writer is handed what they
/// applied.
const EVENTS_BATCH_MAX: usize = 64;

/// How often lease clocks and group health are looked at.
const TICK: Duration = Duration::from_millis(100);

/// A group without a majority of the configured cluster for this long (plus
/// a rank-based stagger) is abandoned and the member forms or joins another.
const ALONE_MAX: Duration = Duration::from_secs(4);

/// How long a recovery waits for reports before saying why, and again
/// every so often while it still waits.
const RECOVERY_QUIET: Duration = Duration::from_secs(10);

/// Unavailable, as etcd says it, so that clients move to another endpoint.
pub fn unavailable() -> Status {
    Status::unavailable("etcdserver: no leader")
}

/// A watch as a client created it.
pub struct WatchSpec {
    /// The keys.
    pub range: KeyRange,
    /// First revision wanted (0: from now on).
    pub start_revision: i64,
    /// Send the previous version with each event.
    pub prev_kv: bool,
    /// Leave out puts.
    pub no_put: bool,
    /// Leave out deletes.
    pub no_delete: bool,
    /// The id the stream gave it.
    pub watch_id: i64,
    /// The stream it belongs to.
    pub stream: u64,
    /// Where its responses go.
    pub tx: mpsc::Sender<Result<WatchResponse, Status>>,
}

/// What the member's status shows.
#[derive(Clone, Debug)]
pub struct StatusInfo {
    /// The member's etcd id.
    pub member_id: u64,
    /// The leader's etcd id (the group's coordinator), 0 if none.
    pub leader: u64,
    /// Names of the members in the current view.
    pub view: Vec<String>,
    /// Recovering, adopting or serving.
    pub phase: &'static str,
    /// What the member waits for before it serves; `None` when serving.
    pub waiting_for: Option<&'static str>,
    /// The epoch (etcd's raft term).
    pub epoch: u64,
    /// Index of the last applied entry.
    pub applied: u64,
    /// Index known durable on a majority.
    pub committed: u64,
    /// The revision.
    pub revision: i64,
    /// Sizes on disk.
    pub sizes: StoreSizes,
    /// Client URLs of the members by name, as far as this member has heard.
    pub client_urls: BTreeMap<String, Vec<String>>,
}

/// A lease's time to live: (remaining seconds or -1 if it does not exist,
/// granted TTL, attached keys, revision).
pub type LeaseTtl = (i64, i64, Vec<Bytes>, i64);

/// A linearizable read waiting for its read index, and where its answer goes.
type PendingRead = (RangeRequest, oneshot::Sender<Result<RangeResponse, Status>>);

/// A request from the server to the member.
pub enum Request {
    /// Order and apply a command; answered once it is durable on a majority.
    Propose {
        /// The command.
        cmd: Command,
        /// The output and the revision after it.
        reply: oneshot::Sender<Result<(Output, ResponseHeader), Status>>,
    },
    /// A read.
    Range {
        /// The read.
        req: RangeRequest,
        /// Its answer.
        reply: oneshot::Sender<Result<RangeResponse, Status>>,
    },
    /// A lease keep-alive.
    KeepAlive {
        /// The lease.
        id: i64,
        /// Its TTL, or NotFound.
        reply: oneshot::Sender<Result<i64, Status>>,
    },
    /// A lease's remaining time.
    TimeToLive {
        /// The lease.
        id: i64,
        /// (remaining, granted, keys), or None if it does not exist.
        reply: oneshot::Sender<Result<LeaseTtl, Status>>,
    },
    /// Every lease.
    Leases {
        /// Their ids and the revision.
        reply: oneshot::Sender<Result<(Vec<i64>, i64), Status>>,
    },
    /// A new watch.
    Watch(Box<WatchSpec>),
    /// A watch cancelled by its client.
    CancelWatch {
        /// Its stream.
        stream: u64,
        /// Its id.
        watch_id: i64,
    },
    /// A watch stream closed.
    CloseStream {
        /// The stream.
        stream: u64,
    },
    /// The committed revision, for progress notifications.
    Revision {
        /// The revision.
        reply: oneshot::Sender<i64>,
    },
    /// The member's status.
    Status {
        /// The status.
        reply: oneshot::Sender<StatusInfo>,
    },
    /// etcd's defragment, here: a snapshot now, and the log cut below it.
    Defragment {
        /// Answered once the snapshot is saved.
        reply: oneshot::Sender<Result<ResponseHeader, Status>>,
    },
    /// A checksum of this member's key-value data (see [`crate::mvcc::Mvcc::hash_at`]).
    HashKv {
        /// The revision to hash up to (0: the current one).
        rev: i64,
        /// The checksum, or why that revision cannot be hashed.
        reply: oneshot::Sender<Result<KvHash, Status>>,
    },
}

/// A member's answer to [`Request::HashKv`].
#[derive(Debug, Clone)]
pub struct KvHash {
    /// The checksum.
    pub hash: u32,
    /// The revision it covers.
    pub hash_rev: i64,
    /// The revision compacted at.
    pub compacted: i64,
    /// The header, at the member's current revision.
    pub header: ResponseHeader,
}

/// What a snapshot or a state transfer carries, captured on the state
/// machine's task and encoded wherever [`CapturedState::encode`] is called.
struct CapturedState {
    index: u64,
    last_epoch: u64,
    machine: Captured,
}

impl CapturedState {
    /// The bytes of a [`Persisted`].
    fn encode(self) -> Vec<u8> {
        Persisted {
            index: self.index,
            last_epoch: self.last_epoch,
            machine: Bytes::from(self.machine.encode()),
        }
        .encode_to_vec()
    }
}

/// What the writer thread reports.
enum WriterReport {
    /// Entries up to `index` are synced (in writer generation `gen`).
    Synced { gen: u64, index: u64 },
    /// The hard state is on disk.
    Promised { epoch: u64 },
    /// The store's sizes after a change.
    Sizes(StoreSizes),
    /// The disk failed: the member cannot go on.
    Failed(String),
}

enum WriterCmd {
    /// Log entries, `(index, data)` in index order: one command for all the
    /// entries of a delivered proposal, so that the writer syncs them
    /// together rather than after the first.
    Append(Vec<(u64, Vec<u8>)>),
    Reset {
        gen: u64,
        index: u64,
        data: Vec<u8>,
    },
    /// The hard state to save (after syncing what came before it).
    Promise {
        epoch: u64,
        awaiting_state: bool,
    },
    /// A snapshot to encode and save: encoded here, on the writer's
    /// thread, so that the state machine goes on meanwhile.
    Snapshot {
        state: CapturedState,
        /// Told once the snapshot is saved (and the log cut below it).
        saved: Option<oneshot::Sender<()>>,
    },
}

/// The writer thread: group commit of the log.
fn writer(
    mut store: Store,
    rx: std_mpsc::Receiver<WriterCmd>,
    out: mpsc::UnboundedSender<WriterReport>,
) {
    let mut gen = 0u64;
    let fail = |out: &mpsc::UnboundedSender<WriterReport>, e: troupe_store::StoreError| {
        let _ = out.send(WriterReport::Failed(e.to_string()));
    };
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut appended = false;
        for cmd in batch {
            let r = match cmd {
                WriterCmd::Append(entries) => {
                    appended = true;
                    entries
                        .iter()
                        .try_for_each(|(index, data)| store.append(*index, data))
                }
                WriterCmd::Reset {
                    gen: g,
                    index,
                    data,
                } => {
                    appended = false;
                    gen = g;
                    let r = store.reset(index, &data);
                    if r.is_ok() {
                        let _ = out.send(WriterReport::Synced { gen, index });
                        let _ = out.send(WriterReport::Sizes(store.sizes()));
                    }
                    r
                }
                WriterCmd::Promise {
                    epoch,
                    awaiting_state,
                } => {
                    let hard = HardState {
                        promised: epoch,
                        awaiting_state,
                    };
                    let r = store
                        .sync()
                        .and_then(|()| store.save_meta(&hard.encode_to_vec()));
                    if r.is_ok() {
                        let _ = out.send(WriterReport::Promised { epoch });
                    }
                    r
                }
                WriterCmd::Snapshot { state, saved } => {
                    let index = state.index;
                    let data = state.encode();
                    let r = store
                        .sync()
                        .and_then(|()| store.save_snapshot(index, &data));
                    if r.is_ok() {
                        let _ = out.send(WriterReport::Sizes(store.sizes()));
                        if let Some(saved) = saved {
                            let _ = saved.send(());
                        }
                    }
                    r
                }
            };
            if let Err(e) = r {
                fail(&out, e);
                return;
            }
        }
        if appended {
            if let Err(e) = store.sync() {
                fail(&out, e);
                return;
            }
            let _ = out.send(WriterReport::Synced {
                gen,
                index: store.synced_index(),
            });
            let _ = out.send(WriterReport::Sizes(store.sizes()));
        }
    }
}

/// The local state loaded from disk.
pub struct Loaded {
    store: Store,
    machine: Machine,
    index: u64,
    last_epoch: u64,
    promised: u64,
    awaiting_state: bool,
}

/// A store that cannot be used: the member refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The store refused.
    #[error(transparent)]
    Store(#[from] troupe_store::StoreError),
    /// A record passed its checksum but does not decode.
    #[error("{what} in {dir} does not decode: {source}")]
    Decode {
        /// What.
        what: &'static str,
        /// The data directory.
        dir: String,
        /// Why.
        source: prost::DecodeError,
    },
}

/// Opens the data directory and replays it.
pub fn load(cfg: &ServeConfig) -> Result<Loaded, LoadError> {
    let opts = StoreOptions {
        fsync: if cfg.fsync {
            FsyncPolicy::Always
        } else {
            FsyncPolicy::Never
        },
        ..StoreOptions::default()
    };
    let (mut store, rec) = Store::open(&cfg.data_dir, opts)?;
    let dir = cfg.data_dir.display().to_string();
    if let Some(cut) = &rec.tail_cut {
        warn!(file = %cut.file.display(), offset = cut.offset, bytes = cut.bytes_cut, reason = %cut.reason, "cut a torn log tail");
    }
    let decode_err = |what, source| LoadError::Decode {
        what,
        dir: dir.clone(),
        source,
    };
    let (mut machine, mut index, mut last_epoch) = match &rec.snapshot {
        Some(s) => {
            let p =
                Persisted::decode(s.data.as_slice()).map_err(|e| decode_err("the snapshot", e))?;
            let m = Machine::decode(&p.machine).map_err(|e| decode_err("the snapshot", e))?;
            (m, p.index, p.last_epoch)
        }
        None => (Machine::default(), 0, 0),
    };
    // Entries written by earlier versions include a `Barrier` for every
    // batch of linearizable reads: they decode and apply as no-ops.
    for e in &rec.entries {
        let entry =
            LogEntry::decode(e.data.as_slice()).map_err(|err| decode_err("a log entry", err))?;
        if let Some(cmd) = &entry.cmd {
            machine.apply(cmd);
        }
        index = e.index;
        last_epoch = entry.epoch;
    }
    let mut hard = match &rec.meta {
        Some(m) => HardState::decode(m.as_slice()).map_err(|e| decode_err("the hard state", e))?,
        None => HardState::default(),
    };
    let blank = rec.snapshot.is_none() && rec.entries.is_empty() && rec.meta.is_none();
    if cfg.existing && blank {
        // Saved before anything else happens, so that a crash from here on
        // still finds it: until a state from the cluster is on this disk,
        // the member must not report its empty log in a recovery.
        hard.awaiting_state = true;
        store.save_meta(&hard.encode_to_vec())?;
    }
    let promised = hard.promised;
    info!(dir = %dir, index, last_epoch, promised, revision = machine.mvcc.revision(), "recovered the data directory");
    if cfg.force_new_cluster {
        warn!(
            "--force-new-cluster: this member's state becomes the cluster's at the next \
             recovery without a majority; restart it without the flag once the cluster serves"
        );
    }
    if hard.awaiting_state {
        info!(
            "this member joins an existing cluster (--initial-cluster-state existing on an \
             empty data directory): it takes the cluster's state before it counts in a recovery"
        );
    }
    Ok(Loaded {
        store,
        machine,
        index,
        last_epoch,
        promised,
        awaiting_state: hard.awaiting_state,
    })
}

#[derive(Clone, Debug, PartialEq)]
enum Phase {
    /// Not in a group.
    Detached,
    /// Gathering reports.
    Recovering {
        round: u64,
        min_epoch: u64,
        reports: BTreeMap<String, Report>,
    },
    /// Waiting for promises and the chosen state.
    Adopting {
        round: u64,
        epoch: u64,
        winner: String,
        accepts: BTreeSet<String>,
        state: Option<Bytes>,
    },
    /// Serving clients.
    Serving { epoch: u64 },
}

struct Waiter {
    reply: oneshot::Sender<Result<(Output, ResponseHeader), Status>>,
}

struct Watcher {
    spec: Box<WatchSpec>,
    /// The first revision this watcher has not been sent yet.
    next_rev: i64,
}

/// The member.
pub struct Replica {
    cfg: ServeConfig,
    /// The ids of this member's response headers.
    ids: HeaderIds,
    phase: Phase,
    machine: Machine,
    index: u64,
    last_epoch: u64,
    promised: u64,
    /// This member has no state from its cluster yet (see
    /// [`HardState::awaiting_state`]) and does not report in recoveries.
    awaiting_state: bool,
    /// Recovery round this member reported in.
    reported: Option<u64>,
    writer: std_mpsc::Sender<WriterCmd>,
    /// Entries applied and not yet handed to the writer.
    appends: Vec<(u64, Vec<u8>)>,
    gen: u64,
    synced: u64,
    sizes: StoreSizes,
    snapshot_index: u64,
    // The group.
    handle: Option<GroupHandle>,
    /// Messages for the group wait here (for `sender_task`) only while the
    /// driver's queue is full; `backlog` counts them.
    sender: Option<mpsc::Sender<(Ordering, Bytes)>>,
    sender_task: Option<tokio::task::JoinHandle<()>>,
    backlog: Arc<AtomicUsize>,
    me: Option<MemberId>,
    view: Option<View>,
    view_names: Vec<String>,
    /// Client URLs of each member by name, as it last said them in a
    /// [`Hello`] (this member's own from the start), for `member list`.
    client_urls: BTreeMap<String, Vec<String>>,
    /// (member, protocol) pairs already warned about.
    protocol_warned: BTreeSet<(String, u32)>,
    alone_since: Option<Instant>,
    /// When the recovery in progress last said why it waits.
    recovery_said: Option<Instant>,
    origin: u64,
    next_req: u64,
    // Serving.
    /// The latest durable mark, (epoch, index), of each member of the view
    /// by name, this member's own included; only those of the current epoch
    /// count (see [`Replica::mark_of`]).
    durable: BTreeMap<String, (u64, u64)>,
    /// The member must leave its group (it refused, or could not take, the
    /// group's state).
    leave: bool,
    committed: u64,
    committed_rev: i64,
    proposals: HashMap<u64, Waiter>,
    /// Writes waiting for this member's proposal in flight to be delivered;
    /// they then go as the next one (see [`Replica::propose`]).
    queued: Vec<(Command, Option<Waiter>)>,
    /// The request number of this member's proposal in flight, if any.
    proposal_in_flight: Option<u64>,
    awaiting_commit: BTreeMap<u64, (Waiter, Output, i64)>,
    uncommitted: VecDeque<(u64, i64, Vec<mvccpb::Event>)>,
    /// The request number of this member's read index marker in flight.
    read_marker: Option<u64>,
    /// Reads waiting for the next marker.
    reads_next: Vec<PendingRead>,
    /// Reads waiting for the marker in flight.
    reads_sent: Vec<PendingRead>,
    /// Reads whose marker was delivered, by the index they wait to see
    /// committed, with the revision at that index.
    reads_at: BTreeMap<u64, (i64, Vec<PendingRead>)>,
    /// The runtime said `Blocked`: until the next view, deliveries are the
    /// flush of a view change.
    blocked: bool,
    watchers: HashMap<(u64, i64), Watcher>,
    deadlines: HashMap<i64, Instant>,
    revoking: BTreeSet<i64>,
    refresh_waiters: HashMap<i64, Vec<oneshot::Sender<Result<i64, Status>>>>,
    leader: bool,
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

impl Replica {
    /// A member with the state loaded from disk, and its writer thread.
    fn new(cfg: ServeConfig, loaded: Loaded) -> (Replica, mpsc::UnboundedReceiver<WriterReport>) {
        let (wtx, wrx) = std_mpsc::channel();
        let (ptx, prx) = mpsc::unbounded_channel();
        let sizes = loaded.store.sizes();
        let synced = loaded.store.synced_index();
        let snapshot_index = sizes.snapshot_index;
        let store = loaded.store;
        std::thread::Builder::new()
            .name("troupe-kv-wal".into())
            .spawn(move || writer(store, wrx, ptx))
            .map_err(|e| error!(error = %e, "cannot start the log writer"))
            .ok();
        let rev = loaded.machine.mvcc.revision();
        let client_urls = BTreeMap::from([(cfg.name.clone(), cfg.advertise_client.clone())]);
        (
            Replica {
                ids: HeaderIds::of(&cfg),
                cfg,
                phase: Phase::Detached,
                machine: loaded.machine,
                index: loaded.index,
                last_epoch: loaded.last_epoch,
                promised: loaded.promised,
                awaiting_state: loaded.awaiting_state,
                reported: None,
                writer: wtx,
                appends: Vec::new(),
                gen: 0,
                synced,
                sizes,
                snapshot_index,
                handle: None,
                sender: None,
                sender_task: None,
                backlog: Arc::new(AtomicUsize::new(0)),
                me: None,
                view: None,
                view_names: Vec::new(),
                client_urls,
                protocol_warned: BTreeSet::new(),
                alone_since: None,
                recovery_said: None,
                origin: random_u64(),
                next_req: 1,
                durable: BTreeMap::new(),
                leave: false,
                committed: 0,
                committed_rev: rev,
                proposals: HashMap::new(),
                queued: Vec::new(),
                proposal_in_flight: None,
                awaiting_commit: BTreeMap::new(),
                uncommitted: VecDeque::new(),
                read_marker: None,
                reads_next: Vec::new(),
                reads_sent: Vec::new(),
                reads_at: BTreeMap::new(),
                blocked: false,
                watchers: HashMap::new(),
                deadlines: HashMap::new(),
                revoking: BTreeSet::new(),
                refresh_waiters: HashMap::new(),
                leader: false,
            },
            prx,
        )
    }

    fn epoch(&self) -> Option<u64> {
        match self.phase {
            Phase::Serving { epoch } => Some(epoch),
            _ => None,
        }
    }

    fn phase_name(&self) -> &'static str {
        match self.phase {
            Phase::Detached => "detached",
            Phase::Recovering { .. } if self.awaiting_state => "recovering, awaiting a state",
            Phase::Recovering { .. } => "recovering",
            Phase::Adopting { .. } => "adopting",
            Phase::Serving { .. } => "serving",
        }
    }

    /// What the member waits for before it serves, in the phase
    /// [`Replica::phase_name`] names.
    fn waiting_for(&self) -> Option<&'static str> {
        match self.phase {
            Phase::Detached => Some("no majority of the cluster in its group"),
            Phase::Recovering { .. } if self.awaiting_state => Some(
                "it takes the cluster's state before it counts (--initial-cluster-state \
                 existing on an empty data directory)",
            ),
            Phase::Recovering { .. } => Some("waiting for reports from a majority of the cluster"),
            Phase::Adopting { .. } => {
                Some("waiting for the chosen state and a majority of promises")
            }
            Phase::Serving { .. } => None,
        }
    }

    /// Hands a message to the group's driver directly, or, when the
    /// driver's queue is full, to the sender task that waits for room; once
    /// one waits there, the later ones queue behind it, in order.
    fn multicast(&self, ordering: Ordering, msg: Msg) {
        let (Some(h), Some(s)) = (&self.handle, &self.sender) else {
            return;
        };
        let mut bytes = Bytes::from(Wire { msg: Some(msg) }.encode_to_vec());
        if self.backlog.load(AtomicOrdering::Acquire) == 0 {
            match h.try_send(ordering, bytes) {
                Ok(()) | Err(TrySendError::Closed) => return,
                Err(TrySendError::Full(b)) => bytes = b,
            }
        }
        self.backlog.fetch_add(1, AtomicOrdering::AcqRel);
        if s.try_send((ordering, bytes)).is_err() {
            self.backlog.fetch_sub(1, AtomicOrdering::AcqRel);
            warn!("group send queue full; dropping a message (the request will time out)");
        }
    }

    fn capture(&self) -> CapturedState {
        CapturedState {
            index: self.index,
            last_epoch: self.last_epoch,
            machine: self.machine.capture(),
        }
    }

    // ----- attaching to a group -----

    fn attach(&mut self, group: Group, created: bool) -> troupe::Events {
        let (handle, events) = group.split();
        let (tx, mut rx) = mpsc::channel::<(Ordering, Bytes)>(65_536);
        let h = handle.clone();
        let backlog = Arc::new(AtomicUsize::new(0));
        self.backlog = backlog.clone();
        self.sender_task = Some(tokio::spawn(async move {
            while let Some((ord, bytes)) = rx.recv().await {
                // Queued in the driver once `send` returns: later messages
                // may go to it directly when this was the last one waiting.
                let r = h.send(ord, bytes).await;
                backlog.fetch_sub(1, AtomicOrdering::AcqRel);
                if r.is_err() {
                    return;
                }
            }
        }));
        self.me = Some(handle.me());
        self.handle = Some(handle);
        self.sender = Some(tx);
        self.origin = random_u64();
        self.reported = None;
        self.blocked = false;
        self.alone_since = Some(Instant::now());
        if created {
            self.phase = Phase::Recovering {
                round: 1,
                min_epoch: 0,
                reports: BTreeMap::new(),
            };
        }
        events
    }

    fn detach(&mut self) {
        if let Some(t) = self.sender_task.take() {
            t.abort();
        }
        self.sender = None;
        self.handle = None;
        self.me = None;
        self.view = None;
        self.view_names.clear();
        self.phase = Phase::Detached;
        self.durable.clear();
        self.leader = false;
        self.read_marker = None;
        self.blocked = false;
        self.proposal_in_flight = None;
        let queued = std::mem::take(&mut self.queued)
            .into_iter()
            .filter_map(|(_, w)| w);
        for w in self.proposals.drain().map(|(_, w)| w).chain(queued) {
            let _ = w.reply.send(Err(unavailable()));
        }
        for (_, (w, _, _)) in std::mem::take(&mut self.awaiting_commit) {
            let _ = w.reply.send(Err(unavailable()));
        }
        let reads = std::mem::take(&mut self.reads_next)
            .into_iter()
            .chain(std::mem::take(&mut self.reads_sent))
            .chain(
                std::mem::take(&mut self.reads_at)
                    .into_values()
                    .flat_map(|(_, reads)| reads),
            );
        for (_, tx) in reads {
            let _ = tx.send(Err(unavailable()));
        }
        for (_, ws) in self.refresh_waiters.drain() {
            for tx in ws {
                let _ = tx.send(Err(unavailable()));
            }
        }
        // Watchers stay: they resume from the committed revision when the
        // member serves again. Uncommitted events are dropped; the state
        // that produced them is replaced when the member rejoins.
        self.uncommitted.clear();
        self.revoking.clear();
    }

    // ----- group events -----

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::View(v) => self.on_view(v),
            Event::Deliver(d) => {
                let Ok(w) = Wire::decode(d.payload.as_ref()) else {
                    warn!(sender = %d.sender, "undecodable group message ignored");
                    return;
                };
                let from_me = Some(d.sender) == self.me;
                match w.msg {
                    Some(Msg::Proposal(p)) => self.on_proposal(p),
                    Some(Msg::Durable(m)) => self.on_durable(m),
                    Some(Msg::Refresh(r)) => self.on_refresh(r, from_me),
                    Some(Msg::Report(r)) => self.on_report(r),
                    Some(Msg::Accept(a)) => self.on_accept(a),
                    Some(Msg::Refuse(r)) => self.on_refuse(r),
                    Some(Msg::Adopt(a)) => self.on_adopt(a),
                    Some(Msg::ReadIndex(m)) => self.on_read_index(m),
                    Some(Msg::Hello(h)) => self.on_hello(h),
                    None => {}
                }
            }
            Event::StateNeeded { view } => {
                let state = self.group_state().encode_to_vec();
                if let Some(h) = self.handle.clone() {
                    tokio::spawn(async move {
                        let _ = h.provide_state(view, state).await;
                    });
                }
            }
            Event::StateInstalled { snapshot, .. } => self.on_state(&snapshot),
            Event::Query { id, .. } => {
                if let Some(h) = self.handle.clone() {
                    tokio::spawn(async move {
                        let _ = h.reply(id, Bytes::new()).await;
                    });
                }
            }
            Event::Mark { from, mark } => match Durable::decode(mark.as_ref()) {
                Ok(d) => self.on_durable(d),
                Err(_) => warn!(member = %from, "undecodable durable mark ignored"),
            },
            Event::Blocked => self.blocked = true,
            Event::QueryDone { .. } | Event::Exited(_) => {}
        }
    }

    fn on_view(&mut self, v: View) {
        self.blocked = false;
        self.view_names = v
            .addrs
            .iter()
            .filter_map(|a| self.cfg.name_of(a).map(str::to_string))
            .collect();
        let names: BTreeSet<String> = self.view_names.iter().cloned().collect();
        self.durable.retain(|n, _| names.contains(n));
        let was_leader = self.leader;
        self.leader = v.members.first() == self.me.as_ref();
        debug!(view = ?self.view_names, leader = self.leader, phase = self.phase_name(), "view");
        self.view = Some(v);
        if self.leader && !was_leader {
            // A new lease keeper gives every lease a full TTL from now, as etcd
            // does on a leader change: it cannot know the old keeper's clocks.
            self.rebase_leases();
        }
        if let Phase::Recovering { reports, .. } = &mut self.phase {
            // Only members still here count: the chosen one must be able to
            // send its state.
            reports.retain(|n, _| names.contains(n));
        }
        if let Phase::Adopting {
            round,
            epoch,
            winner,
            ..
        } = &self.phase
        {
            if !names.contains(winner) {
                info!(winner = %winner, "the chosen member left before its state was adopted; recovering again");
                self.phase = Phase::Recovering {
                    round: round + 1,
                    min_epoch: *epoch,
                    reports: BTreeMap::new(),
                };
            }
        }
        self.multicast(
            Ordering::Fifo,
            Msg::Hello(Hello {
                name: self.cfg.name.clone(),
                client_urls: self.cfg.advertise_client.clone(),
                protocol: PROTOCOL,
            }),
        );
        self.maybe_report();
        self.send_durable();
        self.recompute_commit();
        self.send_read_index();
        // A proposal in flight may have been lost with the old view; the
        // queue does not wait for it (if it is delivered after all, its
        // writes are answered as usual).
        self.proposal_in_flight = None;
        self.send_proposals();
    }

    fn on_hello(&mut self, h: Hello) {
        if self.cfg.cluster.iter().all(|p| p.name != h.name) {
            warn!(name = %h.name, "hello from a member not in --initial-cluster ignored");
            return;
        }
        if h.protocol != PROTOCOL && self.protocol_warned.insert((h.name.clone(), h.protocol)) {
            warn!(
                name = %h.name,
                theirs = h.protocol,
                ours = PROTOCOL,
                "a member speaks another version of the service's protocol"
            );
        }
        self.client_urls.insert(h.name, h.client_urls);
    }

    fn group_state(&self) -> GroupState {
        match &self.phase {
            Phase::Detached => GroupState::default(),
            Phase::Recovering {
                round,
                min_epoch,
                reports,
            } => GroupState {
                phase: 0,
                round: *round,
                min_epoch: *min_epoch,
                reports: reports.values().cloned().collect(),
                ..Default::default()
            },
            Phase::Adopting {
                round,
                epoch,
                winner,
                accepts,
                state,
            } => GroupState {
                phase: 1,
                round: *round,
                epoch: *epoch,
                winner: winner.clone(),
                accepts: accepts.iter().cloned().collect(),
                state: state.clone(),
                ..Default::default()
            },
            Phase::Serving { epoch } => GroupState {
                phase: 2,
                epoch: *epoch,
                state: Some(Bytes::from(self.capture().encode())),
                ..Default::default()
            },
        }
    }

    fn on_state(&mut self, snapshot: &[u8]) {
        let Ok(gs) = GroupState::decode(snapshot) else {
            error!("undecodable group state from the group; leaving it");
            self.phase = Phase::Detached;
            self.leave = true;
            return;
        };
        self.phase = match gs.phase {
            0 => Phase::Recovering {
                round: gs.round,
                min_epoch: gs.min_epoch,
                reports: gs
                    .reports
                    .into_iter()
                    .map(|r| (r.name.clone(), r))
                    .collect(),
            },
            1 => Phase::Adopting {
                round: gs.round,
                epoch: gs.epoch,
                winner: gs.winner,
                accepts: gs.accepts.into_iter().collect(),
                state: gs.state,
            },
            _ => {
                let Some(state) = gs.state else {
                    error!("a serving group sent no state; leaving it");
                    self.phase = Phase::Detached;
                    self.leave = true;
                    return;
                };
                if gs.epoch < self.promised {
                    // This member took part in a later epoch: the group's
                    // state may lack writes committed there, and taking it
                    // would replace this member's log, which may hold them.
                    warn!(
                        group_epoch = gs.epoch,
                        promised = self.promised,
                        "the group serves an epoch older than one this member promised; leaving it"
                    );
                    self.phase = Phase::Detached;
                    self.leave = true;
                    return;
                }
                if !self.install(&state, gs.epoch) {
                    // Logged by `install`. A member that cannot take the
                    // group's state cannot serve in it: it leaves, and the
                    // main loop joins again (or finds another group).
                    self.phase = Phase::Detached;
                    self.leave = true;
                    return;
                }
                Phase::Serving { epoch: gs.epoch }
            }
        };
        info!(
            phase = self.phase_name(),
            index = self.index,
            "joined the group"
        );
        if let Phase::Adopting { round, epoch, .. } = self.phase {
            self.promise(round, epoch);
        }
        self.maybe_report();
        self.maybe_complete();
    }

    /// Replaces the local state and log with `state` (a [`Persisted`]).
    fn install(&mut self, state: &Bytes, epoch: u64) -> bool {
        let Ok(p) = Persisted::decode(state.as_ref()) else {
            error!("undecodable state from the group");
            return false;
        };
        let Ok(m) = Machine::decode(&p.machine) else {
            error!("undecodable machine state from the group");
            return false;
        };
        self.machine = m;
        self.index = p.index;
        self.last_epoch = p.last_epoch;
        self.promised = self.promised.max(epoch);
        // The state is on disk before the hard state that says so (the
        // writer does them in order, and `reset` is synced).
        self.awaiting_state = false;
        self.gen += 1;
        self.synced = 0;
        self.snapshot_index = p.index;
        let _ = self.writer.send(WriterCmd::Reset {
            gen: self.gen,
            index: p.index,
            data: state.to_vec(),
        });
        let _ = self.writer.send(WriterCmd::Promise {
            epoch: self.promised,
            awaiting_state: self.awaiting_state,
        });
        self.committed = 0;
        // What the adopted state adds becomes visible once it is durable on a
        // majority (see `recompute_commit`).
        self.committed_rev = self.committed_rev.min(self.machine.mvcc.revision());
        self.uncommitted.clear();
        self.awaiting_commit.clear();
        self.revoking.clear();
        let now = Instant::now();
        self.deadlines = self
            .machine
            .leases
            .iter()
            .map(|(id, l)| (*id, now + ttl_duration(l.ttl)))
            .collect();
        true
    }

    // ----- recovery -----

    fn maybe_report(&mut self) {
        let Phase::Recovering { round, .. } = self.phase else {
            return;
        };
        if self.reported == Some(round) {
            return;
        }
        if self.awaiting_state {
            // Its empty log may lack what the cluster committed (a replaced
            // disk): counting it could let a majority of reports miss every
            // member that holds a committed write. It waits for the others
            // and takes the state they choose.
            debug!(round, "awaiting a state from the cluster: not reporting");
            return;
        }
        self.reported = Some(round);
        self.multicast(
            Ordering::Safe,
            Msg::Report(Report {
                round,
                name: self.cfg.name.clone(),
                promised: self.promised,
                last_epoch: self.last_epoch,
                index: self.index,
                force: self.cfg.force_new_cluster,
            }),
        );
    }

    fn on_report(&mut self, r: Report) {
        let majority = self.cfg.majority();
        let Phase::Recovering {
            round,
            min_epoch,
            reports,
        } = &mut self.phase
        else {
            return;
        };
        if r.round != *round || !self.cfg.cluster.iter().any(|p| p.name == r.name) {
            return;
        }
        reports.insert(r.name.clone(), r);
        // A forced report decides at once, and its member wins (the
        // lowest-named if several: every member holds the same reports).
        let forced = reports.values().find(|r| r.force).map(|r| r.name.clone());
        if reports.len() < majority && forced.is_none() {
            return;
        }
        let epoch = reports
            .values()
            .map(|r| r.promised)
            .max()
            .unwrap_or(0)
            .max(*min_epoch)
            + 1;
        // Highest (last epoch, index); the lowest name breaks ties.
        let Some(winner) = forced.clone().or_else(|| {
            reports
                .values()
                .max_by(|a, b| {
                    (a.last_epoch, a.index)
                        .cmp(&(b.last_epoch, b.index))
                        .then_with(|| b.name.cmp(&a.name))
                })
                .map(|r| r.name.clone())
        }) else {
            return;
        };
        let round = *round;
        if forced.is_some() {
            warn!(
                epoch,
                winner = %winner,
                "recovery forced (--force-new-cluster): the winner's state becomes the cluster's \
                 without a majority; writes that only other members held are lost"
            );
        } else {
            info!(epoch, winner = %winner, "recovery: reports from a majority; adopting");
        }
        self.phase = Phase::Adopting {
            round,
            epoch,
            winner: winner.clone(),
            accepts: BTreeSet::new(),
            state: None,
        };
        self.promise(round, epoch);
        if winner == self.cfg.name {
            let state = Bytes::from(self.capture().encode());
            self.multicast(
                Ordering::Safe,
                Msg::Adopt(Adopt {
                    round,
                    epoch,
                    state,
                }),
            );
        }
    }

    /// Promises `epoch` durably, then says so; or refuses.
    fn promise(&mut self, round: u64, epoch: u64) {
        if self.promised >= epoch {
            self.multicast(
                Ordering::Safe,
                Msg::Refuse(Refuse {
                    round,
                    name: self.cfg.name.clone(),
                    promised: self.promised,
                }),
            );
            return;
        }
        self.promised = epoch;
        let _ = self.writer.send(WriterCmd::Promise {
            epoch,
            awaiting_state: self.awaiting_state,
        });
    }

    fn on_promised(&mut self, epoch: u64) {
        if let Phase::Adopting {
            round, epoch: e, ..
        } = self.phase
        {
            if e == epoch {
                self.multicast(
                    Ordering::Safe,
                    Msg::Accept(Accept {
                        round,
                        name: self.cfg.name.clone(),
                        epoch,
                    }),
                );
            }
        }
    }

    fn on_accept(&mut self, a: Accept) {
        if let Phase::Adopting {
            round,
            epoch,
            accepts,
            ..
        } = &mut self.phase
        {
            if a.round == *round && a.epoch == *epoch {
                accepts.insert(a.name);
            }
        }
        self.maybe_complete();
    }

    fn on_refuse(&mut self, r: Refuse) {
        let (round, floor) = match &self.phase {
            Phase::Adopting { round, epoch, .. } => (*round, *epoch),
            Phase::Recovering {
                round, min_epoch, ..
            } => (*round, *min_epoch),
            _ => return,
        };
        if r.round != round {
            return;
        }
        info!(name = %r.name, promised = r.promised, "recovery: a member promised a higher epoch; recovering again");
        self.phase = Phase::Recovering {
            round: round + 1,
            min_epoch: floor.max(r.promised),
            reports: BTreeMap::new(),
        };
        self.maybe_report();
    }

    fn on_adopt(&mut self, a: Adopt) {
        if let Phase::Adopting {
            round,
            epoch,
            state,
            ..
        } = &mut self.phase
        {
            if a.round == *round && a.epoch == *epoch {
                *state = Some(a.state);
            }
        }
        self.maybe_complete();
    }

    fn maybe_complete(&mut self) {
        let majority = self.cfg.majority();
        let Phase::Adopting {
            epoch,
            accepts,
            state: Some(state),
            ..
        } = &self.phase
        else {
            return;
        };
        if accepts.len() < majority {
            return;
        }
        let (epoch, state) = (*epoch, state.clone());
        if !self.install(&state, epoch) {
            self.phase = Phase::Detached;
            return;
        }
        info!(
            epoch,
            index = self.index,
            revision = self.machine.mvcc.revision(),
            "serving"
        );
        self.phase = Phase::Serving { epoch };
        self.recompute_commit();
    }

    // ----- serving -----

    fn on_proposal(&mut self, p: Proposal) {
        let Some(epoch) = self.epoch() else {
            return;
        };
        let mine = p.origin == self.origin;
        for (k, cmd) in p.cmd.into_iter().chain(p.batch).enumerate() {
            let req = p.req + k as u64;
            let waiter = if mine {
                self.proposals.remove(&req)
            } else {
                None
            };
            self.apply_entry(epoch, cmd, waiter);
        }
        // The entries go to the log writer after the rest of this batch of
        // events (see `run`).
        self.recompute_commit();
        if mine && self.proposal_in_flight == Some(p.req) {
            self.proposal_in_flight = None;
            self.send_proposals();
        }
    }

    /// Hands the entries applied since the last call to the writer thread.
    fn flush_appends(&mut self) {
        if !self.appends.is_empty() {
            let _ = self
                .writer
                .send(WriterCmd::Append(std::mem::take(&mut self.appends)));
        }
    }

    /// Applies one command of a delivered proposal and queues it for the
    /// log (see [`Replica::flush_appends`]).
    fn apply_entry(&mut self, epoch: u64, cmd: Command, waiter: Option<Waiter>) {
        // Members of earlier versions logged a `Barrier` for every batch of
        // linearizable reads; their data directories hold such entries (and
        // a member of such a version may still propose one). They are
        // applied, logged and replayed like any entry, and change nothing.
        self.index += 1;
        self.last_epoch = epoch;
        let (out, events) = self.machine.apply(&cmd);
        let rev = self.machine.mvcc.revision();
        match (&cmd.op, &out) {
            (Some(Op::LeaseGrant(_)), Output::Granted { id, ttl }) => {
                self.deadlines
                    .insert(*id, Instant::now() + ttl_duration(*ttl));
            }
            (Some(Op::LeaseRevoke(r)), _) => {
                self.deadlines.remove(&r.id);
                self.revoking.remove(&r.id);
            }
            _ => {}
        }
        self.appends.push((
            self.index,
            LogEntry {
                epoch,
                cmd: Some(cmd),
            }
            .encode_to_vec(),
        ));
        if !events.is_empty() {
            self.uncommitted.push_back((self.index, rev, events));
        }
        if let Some(w) = waiter {
            self.awaiting_commit.insert(self.index, (w, out, rev));
        }
        if self.index.saturating_sub(self.snapshot_index) >= self.cfg.snapshot_entries {
            self.snapshot(None);
        }
    }

    /// Saves a snapshot of the state as applied now, which lets the store
    /// cut the log below it; `saved` is told once it is on disk.
    fn snapshot(&mut self, saved: Option<oneshot::Sender<()>>) {
        self.snapshot_index = self.index;
        self.flush_appends();
        let _ = self.writer.send(WriterCmd::Snapshot {
            state: self.capture(),
            saved,
        });
    }

    fn on_synced(&mut self, gen: u64, index: u64) {
        if gen != self.gen {
            return;
        }
        self.synced = self.synced.max(index);
        self.send_durable();
    }

    /// Publishes how far this member's log is durable, in its epoch, as its
    /// group mark, and counts it for this member: after every sync, and in
    /// every new view (the group sends the mark to every new view itself;
    /// this one counts it again after the view's departures are dropped).
    /// A member that has just joined learns where the others stand from
    /// their marks (its reads wait for marks from a majority; see
    /// [`Replica::marked_by_majority`]).
    fn send_durable(&mut self) {
        let (Some(epoch), Some(h)) = (self.epoch(), &self.handle) else {
            return;
        };
        let d = Durable {
            name: self.cfg.name.clone(),
            epoch,
            index: self.synced,
        };
        // A name and two integers: far below the mark's limit.
        let _ = h.set_mark(d.encode_to_vec());
        self.on_durable(d);
    }

    /// A member's durable mark (the latest it published, which the group
    /// hands on once per new value; members of earlier versions multicast
    /// it instead). Marks of another epoch are kept: a member may report the
    /// epoch it serves before this one has adopted it, and that mark must
    /// count once this one has.
    fn on_durable(&mut self, d: Durable) {
        let e = self.durable.entry(d.name).or_insert((0, 0));
        *e = (*e).max((d.epoch, d.index));
        self.recompute_commit();
    }

    /// The index member `name` marked durable in the current epoch.
    fn mark_of(&self, name: &str) -> Option<u64> {
        let (epoch, index) = self.durable.get(name)?;
        (Some(*epoch) == self.epoch()).then_some(*index)
    }

    fn recompute_commit(&mut self) {
        if self.epoch().is_none() {
            return;
        }
        let majority = self.cfg.majority();
        let mut marks: Vec<u64> = self
            .view_names
            .iter()
            .filter_map(|n| self.mark_of(n))
            .collect();
        if marks.len() < majority {
            return;
        }
        marks.sort_unstable_by(|a, b| b.cmp(a));
        let c = marks[majority - 1].min(self.index);
        if c <= self.committed {
            // A new mark may still be the one that reads wait for.
            self.answer_committed_reads();
            return;
        }
        self.committed = c;
        // Writes.
        let later = self.awaiting_commit.split_off(&(c + 1));
        for (_, (w, out, rev)) in std::mem::replace(&mut self.awaiting_commit, later) {
            let _ = w.reply.send(Ok((out, self.header(rev))));
        }
        // Watch events, in order.
        while let Some((i, rev, _)) = self.uncommitted.front() {
            if *i > c {
                break;
            }
            let rev = *rev;
            if let Some((_, _, events)) = self.uncommitted.pop_front() {
                self.committed_rev = self.committed_rev.max(rev);
                self.dispatch(rev, &events);
            }
        }
        // With no events pending up to `c`, the committed revision is the one at `c`.
        if self.uncommitted.front().is_none_or(|(i, _, _)| *i > c) && c == self.index {
            self.committed_rev = self.machine.mvcc.revision();
        }
        self.catch_up_watchers();
        self.answer_committed_reads();
    }

    /// Answers the reads whose index is committed, once a majority serves
    /// this epoch in the view (see [`Replica::marked_by_majority`]).
    fn answer_committed_reads(&mut self) {
        if self.reads_at.is_empty() || !self.marked_by_majority() {
            return;
        }
        let later = self.reads_at.split_off(&(self.committed + 1));
        for (_, (rev, reads)) in std::mem::replace(&mut self.reads_at, later) {
            self.answer_reads(rev, reads);
        }
    }

    /// Answers reads whose index is committed, at the committed revision
    /// (never below `rev`, the revision at their index, committed too).
    fn answer_reads(&self, rev: i64, reads: Vec<PendingRead>) {
        let rev = self.committed_rev.max(rev);
        for (req, tx) in reads {
            let _ = tx.send(self.read_at(&req, rev));
        }
    }

    fn read_at(&self, req: &RangeRequest, rev: i64) -> Result<RangeResponse, Status> {
        if req.revision > rev {
            return Err(KvError::from(crate::mvcc::MvccError::FutureRevision).status());
        }
        let mut r = self.machine.range(req, rev).map_err(|e| e.status())?;
        r.header = Some(self.header(rev));
        Ok(r)
    }

    /// The header of a response at revision `rev`.
    pub fn header(&self, rev: i64) -> ResponseHeader {
        self.ids.header(rev, self.epoch().unwrap_or(self.promised))
    }

    /// Whether a majority of the configured cluster, among the view's
    /// members, has marked something durable in this epoch since it joined
    /// the view: members that serve this group's state, not members that
    /// are in the view but have not (or will not) take it. Reads need it as
    /// well as the commit index, which never goes back.
    fn marked_by_majority(&self) -> bool {
        self.majority_in_view(|n| self.mark_of(n).is_some())
    }

    /// Whether the view holds a majority of the configured cluster (each
    /// member counted once, whatever its incarnations).
    fn view_has_majority(&self) -> bool {
        self.majority_in_view(|_| true)
    }

    /// Whether the view's members for which `counts` holds are, by name
    /// (each counted once), a majority of the configured cluster.
    fn majority_in_view(&self, counts: impl Fn(&str) -> bool) -> bool {
        let names: BTreeSet<&str> = self
            .view_names
            .iter()
            .map(String::as_str)
            .filter(|n| counts(n))
            .collect();
        names.len() >= self.cfg.majority()
    }

    /// Sends a read index marker for the reads waiting, if there are some
    /// and none is in flight (see the module doc).
    fn send_read_index(&mut self) {
        if self.read_marker.is_some()
            || self.reads_next.is_empty()
            || self.epoch().is_none()
            || self.blocked
            || !self.view_has_majority()
        {
            return;
        }
        let req = self.next_req;
        self.next_req += 1;
        self.read_marker = Some(req);
        self.reads_sent = std::mem::take(&mut self.reads_next);
        self.multicast(
            Ordering::Safe,
            Msg::ReadIndex(ReadIndex {
                origin: self.origin,
                req,
            }),
        );
    }

    /// A read index marker is delivered: if it is this member's, its reads
    /// wait for the index of the last entry ordered before it to be
    /// committed (see the module doc for why that suffices, and when not).
    fn on_read_index(&mut self, m: ReadIndex) {
        if m.origin != self.origin || self.read_marker != Some(m.req) {
            return;
        }
        self.read_marker = None;
        let reads = std::mem::take(&mut self.reads_sent);
        if self.blocked || self.epoch().is_none() || !self.view_has_majority() {
            // Not a delivery the reads may rely on: they wait for another
            // marker, sent once in a view with a majority.
            debug!(
                blocked = self.blocked,
                reads = reads.len(),
                "read index delivered in a flush or without a majority; sending another"
            );
            let later = std::mem::replace(&mut self.reads_next, reads);
            self.reads_next.extend(later);
        } else if !reads.is_empty() {
            // Answered now if the index is already committed and marked.
            let rev = self.machine.mvcc.revision();
            self.reads_at
                .entry(self.index)
                .or_insert_with(|| (rev, Vec::new()))
                .1
                .extend(reads);
            self.answer_committed_reads();
        }
        self.send_read_index();
    }

    /// Queues a write for this member's next proposal. A member has one
    /// proposal in flight at a time: writes that arrive meanwhile go
    /// together in the next one, once it is delivered (or a new view comes).
    /// Under load a group round then carries many writes, and the messages,
    /// acknowledgements and system calls per write fall; a lone write goes
    /// at once.
    fn propose(&mut self, cmd: Command, waiter: Option<Waiter>) {
        self.queued.push((cmd, waiter));
        if self.proposal_in_flight.is_none() {
            self.send_proposals();
        }
    }

    /// Multicasts the queued writes as one proposal (`Safe`); command `k`
    /// of it has request number `req + k`.
    fn send_proposals(&mut self) {
        if self.queued.is_empty() || self.epoch().is_none() {
            return;
        }
        let req = self.next_req;
        let mut batch = Vec::with_capacity(self.queued.len());
        for (cmd, waiter) in std::mem::take(&mut self.queued) {
            if let Some(w) = waiter {
                self.proposals.insert(self.next_req, w);
            }
            self.next_req += 1;
            batch.push(cmd);
        }
        self.proposal_in_flight = Some(req);
        self.multicast(
            Ordering::Safe,
            Msg::Proposal(Proposal {
                origin: self.origin,
                req,
                cmd: None,
                batch,
            }),
        );
    }

    // ----- leases -----

    fn rebase_leases(&mut self) {
        let now = Instant::now();
        for (id, l) in &self.machine.leases {
            self.deadlines.insert(*id, now + ttl_duration(l.ttl));
        }
    }

    fn on_refresh(&mut self, r: Refresh, from_me: bool) {
        if let Some(l) = self.machine.leases.get(&r.lease) {
            let ttl = l.ttl;
            self.deadlines
                .insert(r.lease, Instant::now() + ttl_duration(ttl));
            if from_me {
                for tx in self.refresh_waiters.remove(&r.lease).unwrap_or_default() {
                    let _ = tx.send(Ok(ttl));
                }
            }
        } else if from_me {
            for tx in self.refresh_waiters.remove(&r.lease).unwrap_or_default() {
                let _ = tx.send(Err(KvError::LeaseNotFound.status()));
            }
        }
    }

    fn on_tick(&mut self) -> bool {
        let now = Instant::now();
        // Group health: a member of a group without a majority of the cluster
        // for too long goes and finds the majority.
        let healthy = self.view_names.len() >= self.cfg.majority();
        if healthy {
            self.alone_since = None;
        } else {
            let since = *self.alone_since.get_or_insert(now);
            let stagger = Duration::from_millis(700 * self.cfg.rank() as u64);
            if now.duration_since(since) > ALONE_MAX + stagger {
                return false;
            }
        }
        self.say_why_recovery_waits(now);
        // Lease expiry, by the keeper (the coordinator).
        if self.leader && self.epoch().is_some() {
            let expired: Vec<i64> = self
                .deadlines
                .iter()
                .filter(|(id, d)| **d <= now && !self.revoking.contains(id))
                .map(|(id, _)| *id)
                .collect();
            for id in expired {
                debug!(lease = id, "lease expired; revoking");
                self.revoking.insert(id);
                self.propose(
                    Command {
                        op: Some(Op::LeaseRevoke(LeaseRevoke { id, expired: true })),
                    },
                    None,
                );
            }
        }
        true
    }

    /// A recovery that cannot finish says so now and then, with who has
    /// reported: the operator's clue when a majority of the disks is lost.
    fn say_why_recovery_waits(&mut self, now: Instant) {
        let Phase::Recovering { reports, .. } = &self.phase else {
            self.recovery_said = None;
            return;
        };
        let since = *self.recovery_said.get_or_insert(now);
        if now.duration_since(since) < RECOVERY_QUIET {
            return;
        }
        self.recovery_said = Some(now);
        let reported: Vec<&String> = reports.keys().collect();
        warn!(
            ?reported,
            needed = self.cfg.majority(),
            in_view = ?self.view_names,
            awaiting_state = self.awaiting_state,
            "recovery waits for reports from a majority of the cluster; a member on an empty \
             data directory with --initial-cluster-state existing does not report (if a \
             majority of the disks is lost, see --force-new-cluster)"
        );
    }

    // ----- requests -----

    fn on_request(&mut self, r: Request) {
        match r {
            Request::Propose { cmd, reply } => {
                if self.epoch().is_none() {
                    let _ = reply.send(Err(unavailable()));
                    return;
                }
                self.propose(cmd, Some(Waiter { reply }));
            }
            Request::Range { req, reply } => {
                if req.serializable {
                    let rev = if self.epoch().is_some() {
                        self.committed_rev
                    } else {
                        self.machine.mvcc.revision()
                    };
                    let _ = reply.send(self.read_at(&req, rev));
                    return;
                }
                if self.epoch().is_none() {
                    let _ = reply.send(Err(unavailable()));
                    return;
                }
                if self.cfg.mutant_stale_reads {
                    let rev = self.machine.mvcc.revision();
                    let _ = reply.send(self.read_at(&req, rev));
                    return;
                }
                self.reads_next.push((req, reply));
                self.send_read_index();
            }
            Request::KeepAlive { id, reply } => {
                if self.epoch().is_none() {
                    let _ = reply.send(Err(unavailable()));
                    return;
                }
                if !self.machine.leases.contains_key(&id) {
                    let _ = reply.send(Err(KvError::LeaseNotFound.status()));
                    return;
                }
                let first = !self.refresh_waiters.contains_key(&id);
                self.refresh_waiters.entry(id).or_default().push(reply);
                if first {
                    self.multicast(Ordering::Fifo, Msg::Refresh(Refresh { lease: id }));
                }
            }
            Request::TimeToLive { id, reply } => {
                let rev = self.committed_rev;
                let r = match self.machine.leases.get(&id) {
                    None => Ok((-1, 0, Vec::new(), rev)),
                    Some(l) => {
                        let left = self
                            .deadlines
                            .get(&id)
                            .map(|d| d.saturating_duration_since(Instant::now()).as_secs())
                            .unwrap_or(0);
                        Ok((
                            i64::try_from(left).unwrap_or(i64::MAX),
                            l.ttl,
                            l.keys.iter().cloned().collect(),
                            rev,
                        ))
                    }
                };
                let _ = reply.send(r);
            }
            Request::Leases { reply } => {
                let _ = reply.send(Ok((
                    self.machine.leases.keys().copied().collect(),
                    self.committed_rev,
                )));
            }
            Request::Watch(spec) => self.add_watch(spec),
            Request::CancelWatch { stream, watch_id } => {
                if let Some(w) = self.watchers.remove(&(stream, watch_id)) {
                    let _ = w.spec.tx.try_send(Ok(WatchResponse {
                        header: Some(self.header(self.committed_rev)),
                        watch_id,
                        canceled: true,
                        ..Default::default()
                    }));
                }
            }
            Request::CloseStream { stream } => self.watchers.retain(|(s, _), _| *s != stream),
            Request::Revision { reply } => {
                let _ = reply.send(self.committed_rev);
            }
            Request::Defragment { reply } => {
                let Some(epoch) = self.epoch() else {
                    let _ = reply.send(Err(unavailable()));
                    return;
                };
                let header = self.ids.header(self.machine.mvcc.revision(), epoch);
                if self.index == self.snapshot_index {
                    // Nothing applied since the last snapshot.
                    let _ = reply.send(Ok(header));
                } else {
                    let (tx, rx) = oneshot::channel();
                    self.snapshot(Some(tx));
                    tokio::spawn(async move {
                        let r = rx.await.map(|()| header).map_err(|_| {
                            Status::internal("the snapshot was not saved (see the member's log)")
                        });
                        let _ = reply.send(r);
                    });
                }
            }
            Request::HashKv { rev, reply } => {
                let mvcc = &self.machine.mvcc;
                let header = self.ids.header(mvcc.revision(), self.epoch().unwrap_or(0));
                let r = mvcc
                    .hash_at(rev)
                    .map(|(hash, hash_rev)| KvHash {
                        hash,
                        hash_rev,
                        compacted: mvcc.compacted(),
                        header,
                    })
                    .map_err(|e| Status::out_of_range(e.to_string()));
                let _ = reply.send(r);
            }
            Request::Status { reply } => {
                let leader = self
                    .view
                    .as_ref()
                    .filter(|_| self.epoch().is_some())
                    .and_then(|v| v.addrs.first())
                    .and_then(|a| self.cfg.name_of(a))
                    .map(member_id)
                    .unwrap_or(0);
                let _ = reply.send(StatusInfo {
                    member_id: self.ids.member_id,
                    leader,
                    view: self.view_names.clone(),
                    phase: self.phase_name(),
                    waiting_for: self.waiting_for(),
                    epoch: self.epoch().unwrap_or(0),
                    applied: self.index,
                    committed: self.committed,
                    revision: self.machine.mvcc.revision(),
                    sizes: self.sizes,
                    client_urls: self.client_urls.clone(),
                });
            }
        }
    }

    fn add_watch(&mut self, spec: Box<WatchSpec>) {
        let rev = self.committed_rev;
        let created = WatchResponse {
            header: Some(self.header(rev)),
            watch_id: spec.watch_id,
            created: true,
            ..Default::default()
        };
        if spec.tx.try_send(Ok(created)).is_err() {
            return;
        }
        if spec.start_revision > 0 && spec.start_revision <= rev {
            match self.machine.mvcc.events_between(
                &spec.range,
                spec.start_revision,
                rev,
                spec.prev_kv,
            ) {
                Err(_) => {
                    let _ = spec.tx.try_send(Ok(WatchResponse {
                        header: Some(self.header(rev)),
                        watch_id: spec.watch_id,
                        canceled: true,
                        compact_revision: self.machine.mvcc.compacted(),
                        cancel_reason: "etcdserver: mvcc: required revision has been compacted"
                            .into(),
                        ..Default::default()
                    }));
                    return;
                }
                Ok(events) => {
                    let events = filter_events(&spec, events);
                    if !events.is_empty() {
                        let _ = spec.tx.try_send(Ok(WatchResponse {
                            header: Some(self.header(rev)),
                            watch_id: spec.watch_id,
                            events,
                            ..Default::default()
                        }));
                    }
                }
            }
        }
        self.watchers.insert(
            (spec.stream, spec.watch_id),
            Watcher {
                next_rev: spec.start_revision.max(rev + 1),
                spec,
            },
        );
    }

    /// Sends watchers the history they missed when the committed revision
    /// jumped without events to dispatch (the member adopted a state).
    fn catch_up_watchers(&mut self) {
        let to = self.committed_rev;
        let behind: Vec<(u64, i64)> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.next_rev <= to)
            .map(|(k, _)| *k)
            .collect();
        let header = self.header(to);
        for k in behind {
            let Some(w) = self.watchers.get_mut(&k) else {
                continue;
            };
            let from = w.next_rev;
            w.next_rev = to + 1;
            match self
                .machine
                .mvcc
                .events_between(&w.spec.range, from, to, w.spec.prev_kv)
            {
                Ok(events) => {
                    let events = filter_events(&w.spec, events);
                    if events.is_empty() {
                        continue;
                    }
                    let resp = WatchResponse {
                        header: Some(header),
                        watch_id: w.spec.watch_id,
                        events,
                        ..Default::default()
                    };
                    if w.spec.tx.try_send(Ok(resp)).is_ok() {
                        continue;
                    }
                }
                Err(_) => {
                    let _ = w.spec.tx.try_send(Ok(WatchResponse {
                        header: Some(header),
                        watch_id: w.spec.watch_id,
                        canceled: true,
                        compact_revision: self.machine.mvcc.compacted(),
                        cancel_reason: "etcdserver: mvcc: required revision has been compacted"
                            .into(),
                        ..Default::default()
                    }));
                }
            }
            self.watchers.remove(&k);
        }
    }

    fn dispatch(&mut self, rev: i64, events: &[mvccpb::Event]) {
        let header = self.header(rev);
        let mut slow = Vec::new();
        for (k, w) in &mut self.watchers {
            if w.next_rev > rev {
                continue;
            }
            w.next_rev = rev + 1;
            let mine: Vec<mvccpb::Event> = events
                .iter()
                .filter(|e| {
                    e.kv.as_ref()
                        .is_some_and(|kv| w.spec.range.contains(&kv.key))
                })
                .cloned()
                .collect();
            let mine = filter_events(&w.spec, mine);
            if mine.is_empty() {
                continue;
            }
            let resp = WatchResponse {
                header: Some(header),
                watch_id: w.spec.watch_id,
                events: mine,
                ..Default::default()
            };
            if w.spec.tx.try_send(Ok(resp)).is_err() {
                slow.push(*k);
            }
        }
        for k in slow {
            if let Some(w) = self.watchers.remove(&k) {
                warn!(watch = k.1, "watcher too slow; cancelling it");
                let _ = w.spec.tx.try_send(Ok(WatchResponse {
                    header: Some(header),
                    watch_id: w.spec.watch_id,
                    canceled: true,
                    cancel_reason: "troupe: watcher too slow".into(),
                    ..Default::default()
                }));
            }
        }
    }
}

fn filter_events(spec: &WatchSpec, events: Vec<mvccpb::Event>) -> Vec<mvccpb::Event> {
    events
        .into_iter()
        .filter(|e| {
            let put = e.r#type == mvccpb::event::EventType::Put as i32;
            !(put && spec.no_put || !put && spec.no_delete)
        })
        .map(|mut e| {
            if !spec.prev_kv {
                e.prev_kv = None;
            }
            e
        })
        .collect()
}

fn ttl_duration(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

/// Joins the cluster's group through the other members, or creates it after
/// a wait that grows with this member's rank, so that after a restart of the
/// whole cluster the lowest-ranked live member is the one that creates it.
async fn form_group(cfg: &ServeConfig) -> (Group, bool) {
    let contacts: Vec<String> = cfg
        .cluster
        .iter()
        .filter(|p| p.name != cfg.name)
        .map(|p| p.addr.clone())
        .collect();
    let group_name = format!("troupe-kv:{:x}", cfg.cluster_id());
    let rank = cfg.rank() as u64;
    let mut attempt = 0u64;
    loop {
        attempt += 1;
        let join_wait = Duration::from_millis(1000 + 800 * rank + (random_u64() % 400));
        let builder = |join: bool| {
            let b = Group::builder(group_name.clone())
                .listen(cfg.listen_peer.clone())
                .advertise(cfg.advertise_peer.clone())
                .suspect_timeout(cfg.suspect_timeout)
                .heartbeat_interval(cfg.suspect_timeout / 5)
                .join_timeout(join_wait)
                .faults(cfg.faults.clone());
            let b = match &cfg.peer_tls {
                Some(files) => b.tls(files.clone()),
                None => b,
            };
            if join {
                b.join(contacts.clone())
            } else {
                b
            }
        };
        if !contacts.is_empty() {
            match builder(true).start().await {
                Ok(g) => return (g, false),
                Err(e @ troupe::Error::Bind { .. }) => {
                    // The group this member just left still holds the port
                    // while it shuts down: try joining again, never create
                    // a group because of it.
                    debug!(attempt, error = %e, "peer port still held; joining again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => debug!(attempt, error = %e, "no group to join"),
            }
        }
        // The listener of the failed attempt closes asynchronously.
        tokio::time::sleep(Duration::from_millis(50)).await;
        match builder(false).start().await {
            Ok(g) => {
                info!(attempt, "created the group");
                return (g, true);
            }
            Err(e) => {
                warn!(attempt, error = %e, "cannot create the group; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Runs the member until `requests` closes.
pub async fn run(cfg: ServeConfig, loaded: Loaded, mut requests: mpsc::Receiver<Request>) {
    let (mut r, mut persisted) = Replica::new(cfg.clone(), loaded);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Form or join a group, answering clients (Unavailable) meanwhile.
        let form = form_group(&cfg);
        tokio::pin!(form);
        let (group, created) = loop {
            tokio::select! {
                g = &mut form => break g,
                req = requests.recv() => match req {
                    Some(req) => r.on_request(req),
                    None => return,
                },
                p = persisted.recv() => if !r.on_persisted(p) { return },
            }
        };
        let mut events = r.attach(group, created);
        let mut exited = false;
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(Event::Exited(reason)) => {
                        warn!(?reason, "left the group");
                        break;
                    }
                    Some(ev) => {
                        // Take what else is queued first: the proposals one
                        // turn of the group delivered then reach the log
                        // writer together, and share its next sync.
                        let mut next = Some(ev);
                        let mut taken = 0;
                        while let Some(ev) = next.take() {
                            if let Event::Exited(reason) = ev {
                                warn!(?reason, "left the group");
                                exited = true;
                                break;
                            }
                            r.on_event(ev);
                            taken += 1;
                            if taken < EVENTS_BATCH_MAX {
                                next = events.try_recv();
                            }
                        }
                        r.flush_appends();
                        if exited || std::mem::take(&mut r.leave) {
                            break;
                        }
                    }
                    None => break,
                },
                req = requests.recv() => match req {
                    Some(req) => r.on_request(req),
                    None => return,
                },
                p = persisted.recv() => if !r.on_persisted(p) { return },
                _ = tick.tick() => if !r.on_tick() {
                    warn!("no majority of the cluster in this group for too long; looking for it");
                    break;
                },
            }
        }
        r.detach();
        drop(events);
    }
}

impl Replica {
    fn on_persisted(&mut self, p: Option<WriterReport>) -> bool {
        match p {
            None => false,
            Some(WriterReport::Synced { gen, index }) => {
                self.on_synced(gen, index);
                true
            }
            Some(WriterReport::Promised { epoch }) => {
                self.on_promised(epoch);
                true
            }
            Some(WriterReport::Sizes(s)) => {
                self.sizes = s;
                true
            }
            Some(WriterReport::Failed(e)) => {
                error!(error = %e, "the log cannot be written; stopping");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Peer;

    /// The configuration of member `m0` of a 3-member cluster.
    fn config(dir: &std::path::Path, existing: bool) -> ServeConfig {
        ServeConfig {
            name: "m0".into(),
            data_dir: dir.to_path_buf(),
            listen_client: "127.0.0.1:0".into(),
            advertise_client: vec!["http://127.0.0.1:1".into()],
            listen_peer: "127.0.0.1:0".into(),
            advertise_peer: "127.0.0.1:2".into(),
            cluster: (0..3)
                .map(|i| Peer {
                    name: format!("m{i}"),
                    addr: format!("127.0.0.1:{}", 2 + i),
                })
                .collect(),
            existing,
            fsync: false,
            suspect_timeout: Duration::from_millis(500),
            snapshot_entries: 100_000,
            mutant_stale_reads: false,
            force_new_cluster: false,
            client_tls: None,
            peer_tls: None,
            insecure_plaintext: true,
            faults: troupe::FaultInjector::default(),
        }
    }

    /// Loads `cfg`'s data directory, waiting for a dropped member's writer
    /// thread to let go of it.
    async fn load_when_free(cfg: &ServeConfig) -> Loaded {
        let mut tries = 0;
        loop {
            match load(cfg) {
                Ok(l) => return l,
                Err(_) if tries < 200 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("load: {e}"),
            }
        }
    }

    /// A member `m0` of a 3-member cluster, on a fresh data directory,
    /// with one write applied (index 1) and epoch 4 promised.
    fn member(dir: &std::path::Path) -> Replica {
        let cfg = config(dir, false);
        let loaded = load(&cfg).unwrap_or_else(|e| panic!("load: {e}"));
        let (mut r, _reports) = Replica::new(cfg, loaded);
        r.index = 1;
        r.last_epoch = 3;
        r.promised = 4;
        r
    }

    /// A serving group's state in `epoch`, holding `index` entries.
    fn serving(epoch: u64, index: u64) -> Vec<u8> {
        let state = Persisted {
            index,
            last_epoch: epoch,
            machine: Bytes::from(Machine::default().encode()),
        };
        serving_with(epoch, Some(Bytes::from(state.encode_to_vec())))
    }

    /// A serving group's state in `epoch` carrying `state` as it is.
    fn serving_with(epoch: u64, state: Option<Bytes>) -> Vec<u8> {
        GroupState {
            phase: 2,
            epoch,
            state,
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn left(r: &Replica) -> bool {
        matches!(r.phase, Phase::Detached) && r.leave
    }

    #[tokio::test]
    async fn a_group_serving_an_epoch_below_a_promise_is_left_and_the_log_kept() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut r = member(dir.path());
        r.on_state(&serving(3, 7));
        assert!(left(&r), "joined a group older than its promise");
        assert_eq!(
            (r.index, r.last_epoch),
            (1, 3),
            "its own state was replaced"
        );
    }

    #[tokio::test]
    async fn a_group_serving_the_promised_epoch_or_later_is_joined_and_its_state_taken() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut r = member(dir.path());
        r.on_state(&serving(4, 7));
        assert!(
            matches!(r.phase, Phase::Serving { epoch: 4 }),
            "{}",
            r.phase_name()
        );
        assert!(!r.leave);
        assert_eq!(r.index, 7);
    }

    #[tokio::test]
    async fn a_state_that_does_not_decode_is_left() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut r = member(dir.path());
        r.on_state(b"\xff\xff\xff not a group state");
        assert!(left(&r));
        // A serving group that sends no state, or one that does not decode.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut r = member(dir.path());
        r.on_state(&serving_with(9, None));
        assert!(left(&r));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut r = member(dir.path());
        r.on_state(&serving_with(9, Some(Bytes::from_static(b"\xff\xff\xff"))));
        assert!(left(&r));
        assert_eq!(r.index, 1, "its own state was replaced");
    }

    /// A recovering group's state, in round 1, with no reports yet.
    fn recovering() -> Vec<u8> {
        GroupState {
            phase: 0,
            round: 1,
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[tokio::test]
    async fn an_empty_member_of_an_existing_cluster_reports_only_once_it_has_the_clusters_state() {
        // With `new`, an empty data directory is a state like any other: the
        // member reports it.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let cfg = config(dir.path(), false);
        let (mut r, _reports) = Replica::new(cfg.clone(), load_when_free(&cfg).await);
        r.on_state(&recovering());
        assert_eq!(r.reported, Some(1), "a new member did not report");

        // With `existing`, it does not, and that survives a restart, even
        // one that (wrongly) says `new`.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let cfg = config(dir.path(), true);
        let (mut r, _reports) = Replica::new(cfg.clone(), load_when_free(&cfg).await);
        r.on_state(&recovering());
        assert_eq!(r.reported, None, "reported an empty log to a recovery");
        assert_eq!(r.phase_name(), "recovering, awaiting a state");
        drop((r, _reports));
        let cfg = config(dir.path(), false);
        let (mut r, mut reports) = Replica::new(cfg.clone(), load_when_free(&cfg).await);
        r.on_state(&recovering());
        assert_eq!(r.reported, None, "the restart forgot it awaits a state");

        // Once it has joined a serving group and taken its state, it is a
        // member like the others, after a restart too.
        r.on_state(&serving(4, 7));
        assert!(matches!(r.phase, Phase::Serving { epoch: 4 }));
        loop {
            match tokio::time::timeout(Duration::from_secs(10), reports.recv()).await {
                Ok(Some(WriterReport::Promised { epoch: 4 })) => break,
                Ok(Some(WriterReport::Failed(e))) => panic!("writer: {e}"),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => panic!("the hard state was not saved"),
            }
        }
        drop((r, reports));
        let loaded = load_when_free(&cfg).await;
        assert!(
            !loaded.awaiting_state,
            "still awaiting after taking a state"
        );
        assert_eq!((loaded.index, loaded.promised), (7, 4));
        let (mut r, _reports) = Replica::new(cfg, loaded);
        r.on_state(&recovering());
        assert_eq!(r.reported, Some(1));
    }

    #[tokio::test]
    async fn a_forced_report_decides_a_recovery_alone_and_picks_its_member() {
        let report = |name: &str, index: u64, force: bool| Report {
            round: 1,
            name: name.into(),
            promised: 1,
            last_epoch: 1,
            index,
            force,
        };
        let winner = |r: &Replica| match &r.phase {
            Phase::Adopting { winner, .. } => Some(winner.clone()),
            _ => None,
        };
        // One report of three is no majority...
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut r = member(dir.path());
        r.on_state(&recovering());
        r.on_report(report("m1", 9, false));
        assert_eq!(winner(&r), None, "decided on one report of three");
        // ...unless it is forced.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut r = member(dir.path());
        r.on_state(&recovering());
        r.on_report(report("m1", 3, true));
        assert_eq!(winner(&r).as_deref(), Some("m1"));
        // The forced member wins against a longer log too.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut r = member(dir.path());
        r.on_state(&recovering());
        r.on_report(report("m2", 9, false));
        assert_eq!(winner(&r), None);
        r.on_report(report("m1", 3, true));
        assert_eq!(winner(&r).as_deref(), Some("m1"));
    }
}
