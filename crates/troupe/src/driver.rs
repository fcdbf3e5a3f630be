//! The one task that drives an engine.
//!
//! It waits on three things at once: a command from the application, a
//! datagram from the transport, and the engine's next timer (a single
//! `sleep_until(poll_timeout)`, reset after every input: no polling loop).
//! After every input it drains the engine's outputs: datagrams go to the
//! transport, events to the application. Sends that find the window full
//! wait in a FIFO queue and are retried after every input, which is how
//! back-pressure reaches `send().await` without the engine buffering more.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use troupe_core::{
    Addr, Config, Engine, Event, ExitReason, MemberId, Ordering, QueryId, QueryQuorum, SendError,
    Stats, Time, View, ViewId,
};

use crate::error::Error;
use crate::metrics;
use crate::transport::{Inbound, Transport};

/// Most inputs (datagrams, or commands) handled before the outputs are
/// drained: enough to amortise a burst, so that many messages share a
/// datagram and many acknowledgements one ack, few enough that deliveries
/// are not held back.
const INPUT_BATCH_MAX: usize = 256;

/// Events queued for the application above which the driver stops reading
/// the network (and below half of which it starts again): a reader that does
/// not keep up slows the group down, or is excluded, instead of making this
/// process grow without bound.
pub(crate) const EVENTS_QUEUED_HIGH: usize = 100_000;

/// The least time between two timer inputs: guards against a timer that
/// stays in the past turning the driver into a busy loop.
const TIMER_SPACING_MIN: Duration = Duration::from_micros(200);

/// How often counters are published to the metrics recorder.
const METRICS_INTERVAL: Duration = Duration::from_secs(1);

/// Called by the driver when the engine accepts a message, with the view it
/// goes out in (None: held during a view change, it goes out in the next view).
pub(crate) type OnAccept = Box<dyn FnOnce(Option<ViewId>) + Send>;

/// The answer to a query: what [`Event::QueryDone`] carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryResult {
    /// The query.
    pub id: QueryId,
    /// The replies gathered, by member.
    pub replies: Vec<(MemberId, Bytes)>,
    /// Members that left the view before replying.
    pub departed: Vec<MemberId>,
}

/// What the application asks the driver to do.
pub(crate) enum Command {
    Send {
        ordering: Ordering,
        payload: Bytes,
        on_accept: Option<OnAccept>,
        reply: oneshot::Sender<Result<Option<ViewId>, Error>>,
    },
    Query {
        ordering: Ordering,
        quorum: QueryQuorum,
        payload: Bytes,
        reply: oneshot::Sender<Result<QueryResult, Error>>,
    },
    Reply {
        id: QueryId,
        payload: Bytes,
    },
    ProvideState {
        view: ViewId,
        snapshot: Bytes,
    },
    Leave {
        reply: oneshot::Sender<()>,
    },
    Rejoin {
        reply: oneshot::Sender<Result<MemberId, Error>>,
    },
    WaitView {
        reply: oneshot::Sender<Result<MemberId, Error>>,
    },
    Stats {
        reply: oneshot::Sender<Stats>,
    },
}

/// What the handles read without asking the driver.
pub(crate) struct Shared {
    pub me: Mutex<MemberId>,
    pub view: Mutex<Option<View>>,
    pub events_queued: AtomicUsize,
    pub events_drained: Notify,
    /// Messages queued by `GroupHandle::try_send` and not yet accepted by
    /// the engine (or dropped).
    pub unaccepted: AtomicUsize,
    /// The mark set by `GroupHandle::set_mark`, and its signal to the driver.
    pub mark: Mutex<Option<Bytes>>,
    pub mark_dirty: AtomicBool,
    pub mark_set: Notify,
}

/// A send or query waiting for room in the window.
pub(crate) enum Waiting {
    Send {
        ordering: Ordering,
        payload: Bytes,
        on_accept: Option<OnAccept>,
        reply: oneshot::Sender<Result<Option<ViewId>, Error>>,
    },
    Query {
        ordering: Ordering,
        quorum: QueryQuorum,
        payload: Bytes,
        reply: oneshot::Sender<Result<QueryResult, Error>>,
    },
}

/// The driver's state.
pub(crate) struct Driver {
    pub engine: Engine,
    /// The engine configuration, kept to start a new incarnation.
    pub cfg: Config,
    pub origin: Instant,
    pub transport: Transport,
    pub cmd_rx: mpsc::Receiver<Command>,
    pub inbound_rx: mpsc::Receiver<Inbound>,
    pub events_tx: mpsc::UnboundedSender<Event>,
    pub shared: Arc<Shared>,
    /// The contacts given at start, used again to rejoin.
    pub contacts: Vec<Addr>,
    pub waiting: VecDeque<Waiting>,
    pub queries: HashMap<QueryId, oneshot::Sender<Result<QueryResult, Error>>>,
    pub leave_waiters: Vec<oneshot::Sender<()>>,
    pub view_waiters: Vec<oneshot::Sender<Result<MemberId, Error>>>,
    /// The addresses of the last view installed, to rejoin through.
    pub last_view_addrs: Vec<Addr>,
    pub exited: Option<ExitReason>,
    /// Counters of earlier incarnations of this process.
    pub stats_base: Stats,
    /// Answer state requests with an empty snapshot, without the application.
    pub stateless: bool,
    /// The time at which this turn of the loop woke: the clock is read once
    /// per turn, not per message (a read cost as much as handling a small
    /// message; see [`Driver::tick`]).
    pub now: Time,
}

static SEED_COUNTER: AtomicU64 = AtomicU64::new(0);
static LAST_INCARNATION: AtomicU64 = AtomicU64::new(0);

/// A new incarnation number: microseconds since the Unix epoch, and always
/// above any this process handed out before. A restarted process therefore
/// never reuses an incarnation unless the clock went back by more than its
/// previous life.
pub(crate) fn fresh_incarnation() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX - 1))
        .unwrap_or(1);
    let mut last = LAST_INCARNATION.load(AtomicOrdering::Relaxed);
    loop {
        let next = now.max(last + 1).min(u64::MAX - 1);
        match LAST_INCARNATION.compare_exchange(
            last,
            next,
            AtomicOrdering::Relaxed,
            AtomicOrdering::Relaxed,
        ) {
            Ok(_) => return next,
            Err(x) => last = x,
        }
    }
}

/// A seed for an engine's randomness: differs between members and processes.
pub(crate) fn engine_seed(me: MemberId) -> u64 {
    let n = SEED_COUNTER.fetch_add(1, AtomicOrdering::Relaxed);
    let mut h = troupe_core::group_hash(&format!("{}-{}-{}", me, std::process::id(), n));
    h ^= me.incarnation.rotate_left(17);
    h
}

impl Driver {
    /// The time of this turn of the loop.
    fn now(&self) -> Time {
        self.now
    }

    /// Reads the clock for a new turn of the loop. Everything the turn
    /// handles (up to [`INPUT_BATCH_MAX`] inputs) is stamped with it; the
    /// engine only needs its time to be monotonic and close to the truth.
    fn tick(&mut self) {
        let t = Time(u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX - 1));
        self.now = self.now.max(t);
    }

    fn instant_of(&self, t: Time) -> Option<Instant> {
        self.origin.checked_add(Duration::from_nanos(t.as_nanos()))
    }

    /// Runs until every handle on the group is dropped.
    pub async fn run(mut self) {
        let far = Duration::from_secs(3600);
        let sleep = tokio::time::sleep(far);
        tokio::pin!(sleep);
        let mut metrics_tick = tokio::time::interval(METRICS_INTERVAL);
        metrics_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut timer_not_before = Instant::now();
        metrics::describe();
        loop {
            self.drain();
            let deadline = self.engine.poll_timeout().and_then(|t| self.instant_of(t));
            if let Some(d) = deadline {
                sleep.as_mut().reset(d.max(timer_not_before));
            }
            let queued = self.shared.events_queued.load(AtomicOrdering::Relaxed);
            let paused = queued >= EVENTS_QUEUED_HIGH;
            tokio::select! {
                cmd = self.cmd_rx.recv() => match cmd {
                    Some(c) => {
                        self.tick();
                        self.command(c);
                        // Take what else is queued before draining, so that
                        // a burst of sends leaves in shared datagrams. One
                        // yield first lets the tasks that the last round of
                        // replies woke (on this worker or another) queue
                        // their next sends: without it, on a multi-threaded
                        // runtime, every message went out in a datagram of
                        // its own.
                        tokio::task::yield_now().await;
                        self.tick();
                        self.take_commands(1);
                    }
                    None => break,
                },
                inbound = self.inbound_rx.recv(), if !paused => {
                    self.tick();
                    if let Some(i) = inbound {
                        let mut n = self.datagrams(i);
                        while n < INPUT_BATCH_MAX {
                            match self.inbound_rx.try_recv() {
                                Ok(i) => n += self.datagrams(i),
                                Err(_) => break,
                            }
                        }
                    }
                    // Hand the application what these datagrams delivered,
                    // and let it answer before anything is sent: what it
                    // sends in reply (the next proposal of a replicated
                    // log, a new mark) then leaves in the same datagrams as
                    // the acknowledgements, rather than in datagrams and
                    // system calls of its own one turn later.
                    if self.forward_events() {
                        tokio::task::yield_now().await;
                        self.tick();
                        self.take_commands(0);
                        self.take_mark();
                    }
                }
                () = &mut sleep, if deadline.is_some() => {
                    self.tick();
                    let now = self.now();
                    self.engine.handle_timeout(now);
                    timer_not_before = Instant::now() + TIMER_SPACING_MIN;
                }
                () = self.shared.events_drained.notified(), if paused => self.tick(),
                () = self.shared.mark_set.notified() => {
                    self.tick();
                    self.take_mark();
                }
                _ = metrics_tick.tick() => {
                    self.tick();
                    metrics::publish(&self.stats_base, &self.engine.stats(), self.transport.stats(), queued);
                }
            }
        }
        debug!(me = %self.engine.me(), "group driver stopped");
    }

    /// Takes the commands queued, up to [`INPUT_BATCH_MAX`] in all with the
    /// `taken` already handled this turn.
    fn take_commands(&mut self, taken: usize) {
        for _ in taken..INPUT_BATCH_MAX {
            match self.cmd_rx.try_recv() {
                Ok(c) => self.command(c),
                Err(_) => break,
            }
        }
    }

    /// Hands the engine's events to the application; whether there were any.
    fn forward_events(&mut self) -> bool {
        let mut any = false;
        while let Some(ev) = self.engine.poll_event() {
            any = true;
            self.event(ev);
        }
        any
    }

    /// Hands one read's datagrams to the engine; returns how many it took.
    /// A datagram the engine refuses closes its connection, and the rest of
    /// the read is dropped with it.
    fn datagrams(&mut self, i: Inbound) -> usize {
        let now = self.now();
        let n = i.frames.len();
        for bytes in i.frames {
            if let Err(e) = self.engine.handle_datagram(now, bytes) {
                match &i.conn {
                    Some(c) => {
                        warn!(conn = c.id, peer = %c.peer, error = %e, "datagram refused; closing the connection");
                        c.close();
                        break;
                    }
                    None => warn!(error = %e, "own datagram refused"),
                }
            }
        }
        n
    }

    fn command(&mut self, c: Command) {
        let now = self.now();
        match c {
            Command::Send {
                ordering,
                payload,
                on_accept,
                reply,
            } => {
                self.waiting.push_back(Waiting::Send {
                    ordering,
                    payload,
                    on_accept,
                    reply,
                });
            }
            Command::Query {
                ordering,
                quorum,
                payload,
                reply,
            } => {
                self.waiting.push_back(Waiting::Query {
                    ordering,
                    quorum,
                    payload,
                    reply,
                });
            }
            Command::Reply { id, payload } => self.engine.reply(now, id, payload),
            Command::ProvideState { view, snapshot } => {
                self.engine.provide_state(now, view, snapshot)
            }
            Command::Leave { reply } => {
                if self.engine.has_exited() {
                    let _ = reply.send(());
                } else {
                    info!(me = %self.engine.me(), "leaving the group");
                    self.leave_waiters.push(reply);
                    self.engine.leave(now);
                }
            }
            Command::Rejoin { reply } => self.rejoin(now, reply),
            Command::WaitView { reply } => {
                if let Some(r) = self.exited {
                    let _ = reply.send(Err(Error::Exited(r)));
                } else if self.engine.view().is_some() {
                    let _ = reply.send(Ok(self.engine.me()));
                } else {
                    self.view_waiters.push(reply);
                }
            }
            Command::Stats { reply } => {
                let mut s = self.engine.stats();
                metrics::accumulate(&mut s, &self.stats_base);
                let _ = reply.send(s);
            }
        }
    }

    /// Hands the engine the mark set through the handle, if it is new.
    fn take_mark(&mut self) {
        if self.shared.mark_dirty.swap(false, AtomicOrdering::AcqRel) {
            self.apply_mark();
        }
    }

    /// Hands the engine the mark last set through the handle.
    fn apply_mark(&mut self) {
        let mark = lock(&self.shared.mark).clone();
        if let Some(m) = mark {
            // The handle checked its length.
            let _ = self.engine.set_mark(self.now(), m);
        }
    }

    /// Starts a new incarnation that joins through the first contacts and
    /// the members of the last view.
    fn rejoin(&mut self, now: Time, reply: oneshot::Sender<Result<MemberId, Error>>) {
        if !self.engine.has_exited() {
            if self.engine.view().is_some() {
                let _ = reply.send(Ok(self.engine.me()));
            } else {
                self.view_waiters.push(reply);
            }
            return;
        }
        let old = self.engine.me();
        let me = MemberId::new(old.node, fresh_incarnation().max(old.incarnation + 1));
        let engine = match Engine::new(self.cfg.clone(), me, now, engine_seed(me)) {
            Ok(e) => e,
            Err(e) => {
                let _ = reply.send(Err(Error::Engine(e)));
                return;
            }
        };
        let mut contacts: Vec<Addr> = self.contacts.clone();
        for a in &self.last_view_addrs {
            if *a != self.cfg.addr && !contacts.contains(a) {
                contacts.push(a.clone());
            }
        }
        info!(old = %old, new = %me, contacts = contacts.len(), "rejoining as a new incarnation");
        metrics::accumulate(&mut self.stats_base, &self.engine.stats());
        self.engine = engine;
        self.exited = None;
        *lock(&self.shared.me) = me;
        *lock(&self.shared.view) = None;
        self.apply_mark();
        if contacts.is_empty() {
            self.engine.create(now);
        } else {
            self.engine.join(now, &contacts);
        }
        self.view_waiters.push(reply);
    }

    /// Drains the engine's outputs and retries the waiting sends, until
    /// nothing more comes out.
    fn drain(&mut self) {
        loop {
            self.retry_waiting();
            let mut any = false;
            while let Some(t) = self.engine.poll_transmit() {
                any = true;
                self.transport.send(&t.addr, t.bytes);
            }
            any |= self.forward_events();
            if !any {
                break;
            }
        }
    }

    /// Offers the waiting sends and queries to the engine, oldest first, until
    /// one finds the window full.
    fn retry_waiting(&mut self) {
        while let Some(w) = self.waiting.pop_front() {
            let now = self.now();
            match w {
                Waiting::Send {
                    ordering,
                    payload,
                    on_accept,
                    reply,
                } => {
                    let view = if self.engine.is_blocked() {
                        None
                    } else {
                        self.engine.view().map(|v| v.id)
                    };
                    match self.engine.send(now, ordering, payload.clone()) {
                        Ok(()) => {
                            if let Some(f) = on_accept {
                                f(view);
                            }
                            let _ = reply.send(Ok(view));
                        }
                        Err(SendError::WouldBlock) => {
                            self.waiting.push_front(Waiting::Send {
                                ordering,
                                payload,
                                on_accept,
                                reply,
                            });
                            return;
                        }
                        Err(e) => {
                            let _ = reply.send(Err(self.send_error(e)));
                        }
                    }
                }
                Waiting::Query {
                    ordering,
                    quorum,
                    payload,
                    reply,
                } => match self.engine.query(now, ordering, quorum, payload.clone()) {
                    Ok(id) => {
                        self.queries.insert(id, reply);
                    }
                    Err(troupe_core::QueryError::Send(SendError::WouldBlock)) => {
                        self.waiting.push_front(Waiting::Query {
                            ordering,
                            quorum,
                            payload,
                            reply,
                        });
                        return;
                    }
                    Err(troupe_core::QueryError::Send(e)) => {
                        let _ = reply.send(Err(self.send_error(e)));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(Error::Query(e)));
                    }
                },
            }
        }
    }

    /// `NotMember` after an exit says why.
    fn send_error(&self, e: SendError) -> Error {
        match (e, self.exited) {
            (SendError::NotMember, Some(r)) => Error::Exited(r),
            _ => Error::Send(e),
        }
    }

    fn event(&mut self, ev: Event) {
        match &ev {
            Event::View(v) => {
                debug!(me = %self.engine.me(), view = %v.id, members = v.members.len(), "view installed");
                *lock(&self.shared.view) = Some(v.clone());
                self.last_view_addrs = v.addrs.clone();
                let me = self.engine.me();
                for w in self.view_waiters.drain(..) {
                    let _ = w.send(Ok(me));
                }
            }
            Event::StateNeeded { view } if self.stateless => {
                let now = self.now();
                self.engine.provide_state(now, *view, Bytes::new());
                return;
            }
            Event::QueryDone {
                id,
                replies,
                departed,
            } => {
                if let Some(w) = self.queries.remove(id) {
                    let _ = w.send(Ok(QueryResult {
                        id: *id,
                        replies: replies.clone(),
                        departed: departed.clone(),
                    }));
                    return;
                }
            }
            Event::Exited(reason) => {
                match reason {
                    ExitReason::Left => info!(me = %self.engine.me(), "left the group"),
                    ExitReason::Excluded => {
                        warn!(me = %self.engine.me(), "excluded from the group")
                    }
                }
                self.exited = Some(*reason);
                *lock(&self.shared.view) = None;
                for w in self.leave_waiters.drain(..) {
                    let _ = w.send(());
                }
                for w in self.view_waiters.drain(..) {
                    let _ = w.send(Err(Error::Exited(*reason)));
                }
                for (_, q) in self.queries.drain() {
                    let _ = q.send(Err(Error::Exited(*reason)));
                }
                for w in self.waiting.drain(..) {
                    match w {
                        Waiting::Send { reply, .. } => {
                            let _ = reply.send(Err(Error::Exited(*reason)));
                        }
                        Waiting::Query { reply, .. } => {
                            let _ = reply.send(Err(Error::Exited(*reason)));
                        }
                    }
                }
            }
            _ => {}
        }
        self.shared
            .events_queued
            .fetch_add(1, AtomicOrdering::Relaxed);
        if let Err(mpsc::error::SendError(ev)) = self.events_tx.send(ev) {
            self.shared
                .events_queued
                .fetch_sub(1, AtomicOrdering::Relaxed);
            // Nobody reads events: answer what must be answered so that the
            // rest of the group is not held up by this member.
            let now = self.now();
            match ev {
                Event::StateNeeded { view } => self.engine.provide_state(now, view, Bytes::new()),
                Event::Query { id, .. } => self.engine.reply(now, id, Bytes::new()),
                _ => {}
            }
        }
    }
}

/// Locks a mutex, going on past poisoning (the values behind these locks are
/// plain snapshots, valid at every step).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
