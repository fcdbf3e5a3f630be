//! [`Group`]: one member of a process group, over TCP.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use tracing::info;
use troupe_core::{
    Addr, Engine, Event, MemberId, Ordering, QueryId, QueryQuorum, Stats, View, ViewId,
};

use crate::config::{ConfigError, GroupConfig};
use crate::driver::{self, lock, Command, Driver, QueryResult, Shared, EVENTS_QUEUED_HIGH};
use crate::error::Error;
use crate::faults::FaultInjector;
use crate::tls::{self, PeerTls, TlsFiles};
use crate::transport::{Limits, Transport};

/// Commands queued for the driver: senders beyond it wait (they are
/// back-pressured anyway by the engine's window).
const COMMANDS_QUEUED_MAX: usize = 1024;

/// Reads (each a batch of datagrams, at most a read buffer plus one frame)
/// queued between the sockets and the driver; beyond it the readers wait,
/// and TCP flow control pushes back on the senders. Small, because each
/// entry can hold a read buffer's worth of bytes.
const INBOUND_QUEUED_MAX: usize = 64;

/// Frames may exceed the engine's datagram size by this much (headers of
/// large views): anything beyond is refused as garbage.
const FRAME_SLACK_BYTES: usize = 64 << 10;

/// Starts a member: see [`Group::builder`].
#[derive(Clone, Debug)]
pub struct GroupBuilder {
    cfg: GroupConfig,
    faults: FaultInjector,
}

impl GroupBuilder {
    /// A builder from a whole configuration (e.g. read from a TOML file).
    pub fn from_config(cfg: GroupConfig) -> GroupBuilder {
        GroupBuilder {
            cfg,
            faults: FaultInjector::new(),
        }
    }

    /// A builder from a TOML file (see [`GroupConfig`] for the fields).
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<GroupBuilder, ConfigError> {
        Ok(GroupBuilder::from_config(GroupConfig::from_toml_file(
            path,
        )?))
    }

    /// The configuration so far.
    pub fn config(&self) -> &GroupConfig {
        &self.cfg
    }

    /// The socket address to listen on (default `127.0.0.1:0`: a free port).
    pub fn listen(mut self, addr: impl Into<String>) -> GroupBuilder {
        self.cfg.listen = addr.into();
        self
    }

    /// The address other members reach this one at, if not the bound one.
    pub fn advertise(mut self, addr: impl Into<String>) -> GroupBuilder {
        self.cfg.advertise = Some(addr.into());
        self
    }

    /// Members to join through. Without contacts, this member creates the group.
    pub fn join<I, S>(mut self, contacts: I) -> GroupBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cfg.join.extend(contacts.into_iter().map(Into::into));
        self
    }

    /// This member's node number (default: derived from its address).
    pub fn node_id(mut self, node: u64) -> GroupBuilder {
        self.cfg.node_id = Some(node);
        self
    }

    /// How often a heartbeat goes out when there is nothing else to send.
    pub fn heartbeat_interval(mut self, d: Duration) -> GroupBuilder {
        self.cfg.heartbeat_interval_ms = Some(millis(d));
        self
    }

    /// Silence after which a member is suspected and excluded.
    pub fn suspect_timeout(mut self, d: Duration) -> GroupBuilder {
        self.cfg.suspect_timeout_ms = Some(millis(d));
        self
    }

    /// How long a view-change phase waits for answers.
    pub fn flush_timeout(mut self, d: Duration) -> GroupBuilder {
        self.cfg.flush_timeout_ms = Some(millis(d));
        self
    }

    /// Shortest interval between two retransmission requests to the same
    /// sender (default [`crate::NAK_INTERVAL_MS`]).
    pub fn nak_interval(mut self, d: Duration) -> GroupBuilder {
        self.cfg.nak_interval_ms = Some(millis(d).max(1));
        self
    }

    /// How long [`GroupBuilder::start`] and [`GroupHandle::rejoin`] wait to be admitted.
    pub fn join_timeout(mut self, d: Duration) -> GroupBuilder {
        self.cfg.join_timeout_ms = millis(d).max(1);
        self
    }

    /// Most unstable messages this member may have outstanding before
    /// `send` waits.
    pub fn window_msgs_max(mut self, n: usize) -> GroupBuilder {
        self.cfg.window_msgs_max = Some(n);
        self
    }

    /// The application keeps no replicated state: the runtime answers state
    /// requests for joiners itself, with an empty snapshot. Without it, every
    /// [`Event::StateNeeded`] must be answered with
    /// [`GroupHandle::provide_state`], or joiners wait forever.
    pub fn stateless(mut self) -> GroupBuilder {
        self.cfg.stateless = true;
        self
    }

    /// Member-to-member TLS with these files: mutual authentication against
    /// the CA, and peers must name this member's cluster (see [`crate::tls`]).
    pub fn tls(mut self, files: TlsFiles) -> GroupBuilder {
        self.cfg.tls = Some(files);
        self
    }

    /// Faults for this member's transport to inject (lost datagrams, blocked
    /// peers: see [`crate::faults`]), for tests. The injector can be changed
    /// at any time, through it or [`GroupHandle::faults`]; by default each
    /// member has its own, injecting nothing.
    pub fn faults(mut self, faults: FaultInjector) -> GroupBuilder {
        self.faults = faults;
        self
    }

    /// Binds the listener, starts the driver, creates the group (no
    /// contacts) or joins it, and returns once the first view is installed.
    pub async fn start(self) -> Result<Group, Error> {
        let GroupBuilder { cfg, faults } = self;
        cfg.validate()?;
        // The files are read before the port is bound: a wrong file is the
        // error, not a member that nobody can reach.
        let tls = match &cfg.tls {
            Some(files) => Some(Arc::new(PeerTls::load(files, tls::TOML_NAMES)?)),
            None => None,
        };
        let listener = TcpListener::bind(cfg.listen.as_str())
            .await
            .map_err(|source| Error::Bind {
                addr: cfg.listen.clone(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| Error::Bind {
            addr: cfg.listen.clone(),
            source,
        })?;
        let advertised = match &cfg.advertise {
            Some(a) => a.clone(),
            None if local.ip().is_unspecified() => {
                return Err(Error::Config(ConfigError::Invalid(format!(
                    "listening on {local} needs an `advertise` address that other members can reach"
                ))))
            }
            None => local.to_string(),
        };
        // Keep clear of MemberId::UNKNOWN's node.
        let node = cfg
            .node_id
            .unwrap_or_else(|| troupe_core::group_hash(&advertised) >> 1);
        let me = MemberId::new(node, driver::fresh_incarnation());
        let ecfg = cfg.engine_config(&advertised);
        let origin = Instant::now();
        let engine = Engine::new(
            ecfg.clone(),
            me,
            troupe_core::Time::ZERO,
            driver::engine_seed(me),
        )?;

        let limits = Limits {
            frame_bytes_max: ecfg
                .datagram_bytes_max
                .saturating_mul(2)
                .saturating_add(FRAME_SLACK_BYTES),
            queue_frames_max: cfg.peer_queue_frames_max,
            queue_bytes_max: cfg.peer_queue_bytes_max,
            group: troupe_core::group_hash(&cfg.group),
        };
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUED_MAX);
        let local_addr: Addr = Bytes::from(advertised.clone());
        match &tls {
            Some(t) => info!(cluster = %t.cluster, "member-to-member traffic over TLS"),
            None => info!("member-to-member traffic is plaintext TCP"),
        }
        let transport = Transport::start(
            listener,
            local_addr,
            limits,
            inbound_tx,
            tls,
            faults.clone(),
        );
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMANDS_QUEUED_MAX);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            me: Mutex::new(me),
            view: Mutex::new(None),
            events_queued: AtomicUsize::new(0),
            events_drained: Notify::new(),
            unaccepted: AtomicUsize::new(0),
            mark: Mutex::new(None),
            mark_dirty: AtomicBool::new(false),
            mark_set: Notify::new(),
        });
        let contacts: Vec<Addr> = cfg
            .join
            .iter()
            .filter(|c| **c != advertised)
            .map(|c| Bytes::from(c.clone()))
            .collect();
        let mut d = Driver {
            engine,
            cfg: ecfg,
            origin,
            transport,
            cmd_rx,
            inbound_rx,
            events_tx,
            shared: shared.clone(),
            contacts: contacts.clone(),
            waiting: VecDeque::new(),
            queries: HashMap::new(),
            leave_waiters: Vec::new(),
            view_waiters: Vec::new(),
            last_view_addrs: Vec::new(),
            exited: None,
            stats_base: Stats::default(),
            stateless: cfg.stateless,
            now: troupe_core::Time::ZERO,
        };
        if contacts.is_empty() {
            info!(me = %me, addr = %advertised, group = %cfg.group, "creating the group");
            d.engine.create(troupe_core::Time::ZERO);
        } else {
            info!(me = %me, addr = %advertised, group = %cfg.group, contacts = ?cfg.join, "joining the group");
            d.engine.join(troupe_core::Time::ZERO, &contacts);
        }
        tokio::spawn(d.run());

        let join_timeout = Duration::from_millis(cfg.join_timeout_ms);
        let handle = GroupHandle {
            cmd: cmd_tx,
            shared: shared.clone(),
            local,
            join_timeout,
            faults,
        };
        handle.wait_view().await?;
        Ok(Group {
            handle,
            events: Events {
                rx: events_rx,
                shared,
            },
        })
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One member of a process group: a [`GroupHandle`] to act (it derefs to
/// one) and the [`Events`] it receives.
///
/// ```no_run
/// use troupe::{Event, Group, Ordering};
///
/// # async fn demo() -> Result<(), troupe::Error> {
/// let mut g = Group::builder("chat").listen("127.0.0.1:7001").join(["127.0.0.1:7002"]).start().await?;
/// g.send(Ordering::Total, "hello").await?;
/// while let Some(ev) = g.recv().await {
///     if let Event::Deliver(d) = ev {
///         println!("{}: {}", d.sender, String::from_utf8_lossy(&d.payload));
///     }
/// }
/// # Ok(())
/// # }
/// ```
pub struct Group {
    handle: GroupHandle,
    events: Events,
}

impl Group {
    /// A builder for a member of the group named `group`.
    pub fn builder(group: impl Into<String>) -> GroupBuilder {
        GroupBuilder::from_config(GroupConfig {
            group: group.into(),
            ..GroupConfig::default()
        })
    }

    /// A handle that can be cloned into other tasks.
    pub fn handle(&self) -> GroupHandle {
        self.handle.clone()
    }

    /// The events: views, deliveries, state requests, queries.
    pub fn events(&mut self) -> &mut Events {
        &mut self.events
    }

    /// The next event; None once the group has shut down.
    pub async fn recv(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// Splits into a handle and the event stream, for use in different tasks.
    pub fn split(self) -> (GroupHandle, Events) {
        (self.handle, self.events)
    }
}

impl std::ops::Deref for Group {
    type Target = GroupHandle;
    fn deref(&self) -> &GroupHandle {
        &self.handle
    }
}

/// The events of a member, in the order the engine produced them.
///
/// Read them promptly: above a high-water mark of unread events the member
/// stops reading the network, which slows the group and can get the member
/// excluded as if it had paused.
pub struct Events {
    rx: mpsc::UnboundedReceiver<Event>,
    shared: Arc<Shared>,
}

impl Events {
    /// The next event; None once the group has shut down.
    pub async fn recv(&mut self) -> Option<Event> {
        let ev = self.rx.recv().await;
        if ev.is_some() {
            self.taken();
        }
        ev
    }

    /// The next event if one is ready.
    pub fn try_recv(&mut self) -> Option<Event> {
        let ev = self.rx.try_recv().ok();
        if ev.is_some() {
            self.taken();
        }
        ev
    }

    /// Events produced and not read yet.
    pub fn queued(&self) -> usize {
        self.shared.events_queued.load(AtomicOrdering::Relaxed)
    }

    fn taken(&self) {
        let before = self
            .shared
            .events_queued
            .fetch_sub(1, AtomicOrdering::Relaxed);
        if before == EVENTS_QUEUED_HIGH / 2 {
            self.shared.events_drained.notify_one();
        }
    }
}

/// Acts on a group member from any task; cheap to clone. The member stops
/// (abruptly, as if it crashed: call [`GroupHandle::leave`] first to go
/// quietly) when the last handle, the [`Group`]'s included, is dropped.
#[derive(Clone)]
pub struct GroupHandle {
    cmd: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    local: SocketAddr,
    join_timeout: Duration,
    faults: FaultInjector,
}

/// Messages queued by [`GroupHandle::try_send`] and not yet accepted by the
/// engine, beyond which it answers [`TrySendError::Full`]: the window's
/// back-pressure, for a sender that does not wait.
const TRY_SENDS_UNACCEPTED_MAX: usize = 65_536;

/// One message of [`Shared::unaccepted`], uncounted when dropped.
struct Unaccepted(Arc<Shared>);

impl Unaccepted {
    fn new(shared: Arc<Shared>) -> Unaccepted {
        shared.unaccepted.fetch_add(1, AtomicOrdering::Relaxed);
        Unaccepted(shared)
    }
}

impl Drop for Unaccepted {
    fn drop(&mut self) {
        self.0.unaccepted.fetch_sub(1, AtomicOrdering::Relaxed);
    }
}

/// Why [`GroupHandle::try_send`] did not queue a message.
#[derive(Debug, thiserror::Error)]
pub enum TrySendError {
    /// The driver's queue of commands is full; here is the payload back.
    #[error("the group's command queue is full")]
    Full(Bytes),
    /// The group's driver task has stopped.
    #[error("the group has shut down")]
    Closed,
}

/// Where a message went out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    /// The view it was sent in; None if a view change was under way (it goes
    /// out in the next view this member installs).
    pub view: Option<ViewId>,
}

impl GroupHandle {
    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(make(tx)).await.map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// This member's current id (it changes when it rejoins).
    pub fn me(&self) -> MemberId {
        *lock(&self.shared.me)
    }

    /// The view installed last, if this member is in one.
    pub fn view(&self) -> Option<View> {
        lock(&self.shared.view).clone()
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The faults this member's transport injects (see [`crate::faults`]).
    pub fn faults(&self) -> &FaultInjector {
        &self.faults
    }

    /// Multicasts `payload` with `ordering`. When this member's window of
    /// unstable messages is full, waits until there is room (back-pressure).
    pub async fn send(&self, ordering: Ordering, payload: impl Into<Bytes>) -> Result<Sent, Error> {
        let payload = payload.into();
        let view = self
            .call(|reply| Command::Send {
                ordering,
                payload,
                on_accept: None,
                reply,
            })
            .await??;
        Ok(Sent { view })
    }

    /// Queues `payload` for multicast with `ordering` without waiting: the
    /// driver sends it as soon as the window has room, in order behind the
    /// sends queued before it. Nothing reports how it went (a message the
    /// engine refuses, say because this member is no longer in a view, is
    /// dropped); use [`GroupHandle::send`] to learn the view or the error.
    /// It saves the task switch of awaiting the driver's answer, which is on
    /// the critical path of a protocol that sends from its event loop.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`], with the payload back, when the driver's queue
    /// of commands is full or 65,536 messages queued this way wait for room
    /// in the window; [`TrySendError::Closed`] once the group has shut down.
    pub fn try_send(&self, ordering: Ordering, payload: Bytes) -> Result<(), TrySendError> {
        if self.shared.unaccepted.load(AtomicOrdering::Relaxed) >= TRY_SENDS_UNACCEPTED_MAX {
            return Err(TrySendError::Full(payload));
        }
        // Counted until the engine accepts the message or it is dropped
        // (refused, or the member left): the guard goes with the callback.
        let guard = Unaccepted::new(self.shared.clone());
        let (reply, _) = oneshot::channel();
        self.cmd
            .try_send(Command::Send {
                ordering,
                payload,
                on_accept: Some(Box::new(move |_| drop(guard))),
                reply,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(Command::Send { payload, .. }) => {
                    TrySendError::Full(payload)
                }
                _ => TrySendError::Closed,
            })
    }

    /// Like [`GroupHandle::send`], and calls `on_accept` with the sending
    /// view the moment the engine accepts the message, before any datagram
    /// of it leaves this process. Use it to record a send durably before
    /// anybody can deliver it (write-ahead); it runs on the driver's task,
    /// so keep it short.
    pub async fn send_with(
        &self,
        ordering: Ordering,
        payload: impl Into<Bytes>,
        on_accept: impl FnOnce(Option<ViewId>) + Send + 'static,
    ) -> Result<Sent, Error> {
        let payload = payload.into();
        let on_accept: driver::OnAccept = Box::new(on_accept);
        let view = self
            .call(|reply| Command::Send {
                ordering,
                payload,
                on_accept: Some(on_accept),
                reply,
            })
            .await??;
        Ok(Sent { view })
    }

    /// Publishes `mark` to the other members: they see it as
    /// [`Event::Mark`], in this view and every later one, until it is set
    /// again. A mark is the latest value of some progress (say, how far this
    /// member's log is durable), not a message: it rides in the datagrams
    /// the member sends anyway, values set in quick succession may reach the
    /// others only as the last of them, and it is never ordered against
    /// messages. It never waits: the driver takes the latest value at its
    /// next turn, and carries it into a new incarnation after a rejoin.
    ///
    /// # Errors
    ///
    /// [`Error::Send`] with [`troupe_core::SendError::TooLarge`] when `mark` is longer than
    /// [`troupe_core::wire::MARK_BYTES_MAX`]; the mark published before stays.
    pub fn set_mark(&self, mark: impl Into<Bytes>) -> Result<(), Error> {
        let mark = mark.into();
        let max = troupe_core::wire::MARK_BYTES_MAX;
        if mark.len() > max {
            return Err(Error::Send(troupe_core::SendError::TooLarge {
                len: mark.len(),
                max,
            }));
        }
        *lock(&self.shared.mark) = Some(mark);
        self.shared.mark_dirty.store(true, AtomicOrdering::Release);
        self.shared.mark_set.notify_one();
        Ok(())
    }

    /// Multicasts a query and gathers the replies (see [`QueryQuorum`]).
    pub async fn query(
        &self,
        ordering: Ordering,
        quorum: QueryQuorum,
        payload: impl Into<Bytes>,
    ) -> Result<QueryResult, Error> {
        let payload = payload.into();
        self.call(|reply| Command::Query {
            ordering,
            quorum,
            payload,
            reply,
        })
        .await?
    }

    /// Answers a query received as [`Event::Query`].
    pub async fn reply(&self, id: QueryId, payload: impl Into<Bytes>) -> Result<(), Error> {
        let payload = payload.into();
        self.cmd
            .send(Command::Reply { id, payload })
            .await
            .map_err(|_| Error::Closed)
    }

    /// Hands over the state asked for by [`Event::StateNeeded`]: the
    /// application's state as of that event.
    pub async fn provide_state(
        &self,
        view: ViewId,
        snapshot: impl Into<Bytes>,
    ) -> Result<(), Error> {
        let snapshot = snapshot.into();
        self.cmd
            .send(Command::ProvideState { view, snapshot })
            .await
            .map_err(|_| Error::Closed)
    }

    /// Leaves the group; returns once the view without this member is
    /// installed (or after the join timeout, if the group does not answer).
    pub async fn leave(&self) -> Result<(), Error> {
        let r = tokio::time::timeout(
            self.join_timeout,
            self.call(|reply| Command::Leave { reply }),
        )
        .await;
        match r {
            Ok(r) => r,
            Err(_) => Err(Error::LeaveTimeout(self.join_timeout)),
        }
    }

    /// After [`troupe_core::ExitReason::Excluded`]: joins again as a new
    /// incarnation (through the first contacts and the last view's members)
    /// and returns the new id once admitted. A member still in the group
    /// just gets its id back.
    pub async fn rejoin(&self) -> Result<MemberId, Error> {
        match tokio::time::timeout(
            self.join_timeout,
            self.call(|reply| Command::Rejoin { reply }),
        )
        .await
        {
            Ok(r) => r?,
            Err(_) => Err(Error::JoinTimeout(self.join_timeout)),
        }
    }

    /// Waits until this member is in a view (at most the join timeout).
    pub async fn wait_view(&self) -> Result<MemberId, Error> {
        match tokio::time::timeout(
            self.join_timeout,
            self.call(|reply| Command::WaitView { reply }),
        )
        .await
        {
            Ok(r) => r?,
            Err(_) => Err(Error::JoinTimeout(self.join_timeout)),
        }
    }

    /// The engine's counters (summed over this process's incarnations).
    pub async fn stats(&self) -> Result<Stats, Error> {
        self.call(|reply| Command::Stats { reply }).await
    }
}
