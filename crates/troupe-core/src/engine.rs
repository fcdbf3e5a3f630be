//! The engine: one member of one group, as a pure state machine.
//!
//! This file holds the struct, the public inputs and outputs, and the data
//! path (sending, receiving, delivery, stability, retransmission). The view
//! change lives in `flush.rs`, failure detection in `failure.rs`, state
//! transfer in `transfer.rs`, group queries in `query.rs`, the packing of
//! frames into datagrams in `outbox.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::{Bytes, BytesMut};
use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::config::{Config, ConfigError};
use crate::error::{QueryError, SendError};
use crate::event::{Delivery, Event};
use crate::flush::{Attempt, Fetch};
use crate::order::causal::Causal;
use crate::order::total::Total;
use crate::order::AppMsg;
use crate::outbox::Outbox;
use crate::query::{QueryState, ReplyCache};
use crate::stream::{Msg, Stream};
use crate::transfer::{Providing, Receiving};
use crate::types::{Addr, MemberId, Ordering, QueryId, QueryQuorum, Time, View, ViewId};
use crate::wire::{Ballot, Body, DatagramReader, DecodeError, Fragment, Frame, Proposal};

/// A datagram to send: the bytes, the destination member and its address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The destination ([`MemberId::UNKNOWN`] for a join contact).
    pub to: MemberId,
    /// The destination's address.
    pub addr: Addr,
    /// The encoded datagram (shared between the destinations of a multicast).
    pub bytes: Bytes,
}

/// Counters, for metrics and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Application messages sent, by ordering (index = `Ordering as usize`).
    pub sent: [u64; 6],
    /// Application messages delivered, by ordering.
    pub delivered: [u64; 6],
    /// Messages retransmitted in answer to a NAK.
    pub retransmitted: u64,
    /// Retransmission requests sent.
    pub naks_sent: u64,
    /// Views installed.
    pub views: u64,
    /// Datagrams built.
    pub datagrams_out: u64,
    /// Datagrams that failed to decode, or named another group.
    pub decode_errors: u64,
    /// Own messages not yet stable.
    pub unstable_msgs: u64,
    /// Payload bytes of own messages not yet stable.
    pub unstable_bytes: u64,
    /// Messages held in all streams (unstable or not yet processed).
    pub held_msgs: u64,
    /// Sends held during a view change.
    pub pending_sends: u64,
    /// Highest minus lowest stable sequence number over senders (stability lag).
    pub stability_lag: u64,
}

/// Where the member stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Created, neither `create` nor `join` called.
    Idle,
    /// Asking contacts to be admitted.
    Joining { contacts: Vec<Addr>, retry_at: Time },
    /// In a view.
    Member,
    /// Left or excluded: the engine does nothing more.
    Exited,
}

/// A send held during a view change.
#[derive(Clone, Debug)]
pub(crate) struct HeldSend {
    pub ordering: Ordering,
    pub payload: Bytes,
    pub query: Option<u64>,
}

/// A fragmented message being reassembled.
#[derive(Debug)]
pub(crate) struct Partial {
    count: u32,
    next_index: u32,
    ordering: Ordering,
    query: Option<u64>,
    causal: Vec<u64>,
    parts: Vec<Bytes>,
}

/// The state of one installed view.
pub(crate) struct ViewState {
    pub view: View,
    /// This member's rank.
    pub me: usize,
    pub streams: Vec<Stream>,
    pub partial: Vec<Option<Partial>>,
    /// `acks[j][r]`: what member `j` reported holding of rank `r`.
    pub acks: Vec<Vec<u64>>,
    /// `stable[r]`: held by every member.
    pub stable: Vec<u64>,
    pub causal: Causal,
    pub total: Total,
    /// Highest unreliable counter delivered per rank.
    pub unreliable_seen: Vec<u64>,
    /// Payload bytes of own unstable messages.
    pub unstable_bytes: usize,
    /// A view change started: no more delivery or sending in this view.
    pub frozen: bool,
    /// Delivery stops at this cut (set when the view's end is decided).
    pub limit: Option<Vec<u64>>,
    /// New messages since the last acknowledgement, and when it is due.
    pub ack_pending: u32,
    pub ack_due: Option<Time>,
    /// A `Safe` message waits for stability at the head of the total order,
    /// or one was just delivered (perhaps made stable by this member's own
    /// holding, which nobody else knows of yet). Every member waits for
    /// every other's acknowledgement before it delivers it, so this
    /// member's goes out with its next datagrams ([`Engine::poll_transmit`],
    /// once per batch of inputs), not after `ack_delay` or at the next
    /// heartbeat. Raised only while `ack_pending > 0`
    /// ([`ViewState::ack_soon_if_pending`]), and lowered with it by
    /// [`Engine::send_ack`].
    pub ack_soon: bool,
    /// When the next heartbeat (an acknowledgement) is due.
    pub heartbeat_due: Time,
    /// Local arrival counter.
    pub arrivals: u64,
    /// Set at the first promise: acknowledgements never exceed it.
    pub ack_cap: Option<Vec<u64>>,
    /// Mutant support: messages delivered on arrival, skipped when processed.
    pub early: BTreeSet<(usize, u64)>,
    /// `marks[j]`: the number of the last mark of member `j` handed to the
    /// application (0: none yet).
    pub marks: Vec<u64>,
    /// This member's mark goes out with its next datagrams (it is new, or
    /// the view is).
    pub mark_due: bool,
    /// After this, the mark goes out again with the next acknowledgement.
    pub mark_resend_due: Time,
}

impl ViewState {
    /// Sends this member's acknowledgement with its next datagrams (see
    /// `ack_soon`), if it holds anything it has not acknowledged yet: else
    /// its last acknowledgement already counts, and the flag would only
    /// hurry the acknowledgement of whatever arrives next.
    fn ack_soon_if_pending(&mut self) {
        if self.ack_pending > 0 {
            self.ack_soon = true;
        }
    }

    pub fn new(view: View, me: usize, now: Time) -> ViewState {
        let n = view.members.len();
        ViewState {
            view,
            me,
            streams: (0..n).map(|_| Stream::new()).collect(),
            partial: (0..n).map(|_| None).collect(),
            acks: vec![vec![0; n]; n],
            stable: vec![0; n],
            causal: Causal::new(n),
            total: Total::new(),
            unreliable_seen: vec![0; n],
            unstable_bytes: 0,
            frozen: false,
            limit: None,
            ack_pending: 0,
            ack_due: None,
            ack_soon: false,
            heartbeat_due: now,
            arrivals: 0,
            ack_cap: None,
            early: BTreeSet::new(),
            marks: vec![0; n],
            mark_due: true,
            mark_resend_due: now,
        }
    }

    pub fn contig(&self) -> Vec<u64> {
        self.streams.iter().map(|s| s.contig).collect()
    }

    /// What this member acknowledges of rank `r`: what it holds, capped at
    /// what it reported when it first promised in this view.
    fn acked(&self, r: usize) -> u64 {
        let c = self.streams[r].contig;
        match &self.ack_cap {
            Some(cap) => c.min(cap[r]),
            None => c,
        }
    }

    /// The next sequence number this member sends.
    pub fn next_seq(&self) -> u64 {
        self.streams[self.me].contig + 1
    }

    fn recompute_stable(&mut self) -> bool {
        let mut changed = false;
        for r in 0..self.stable.len() {
            changed |= self.recompute_stable_rank(r);
        }
        changed
    }

    /// `stable[r]` is the least of what every member reported of rank `r`.
    fn recompute_stable_rank(&mut self, r: usize) -> bool {
        let s = self.acks.iter().map(|a| a[r]).min().unwrap_or(0);
        if s > self.stable[r] {
            self.stable[r] = s;
            return true;
        }
        false
    }
}

/// One member of one group: a pure state machine.
pub struct Engine {
    pub(crate) cfg: Config,
    pub(crate) me: MemberId,
    pub(crate) group: u64,
    pub(crate) rng: SmallRng,
    pub(crate) status: Status,
    pub(crate) vs: Option<ViewState>,
    /// The previous view's state, kept to serve members that lag behind.
    pub(crate) prev: Option<ViewState>,
    /// The decision that installed the current view: (view it ended, proposal).
    pub(crate) last_commit: Option<(ViewId, Proposal)>,
    // Failure detection (failure.rs).
    pub(crate) last_heard: BTreeMap<MemberId, Time>,
    pub(crate) suspected: BTreeSet<MemberId>,
    pub(crate) last_input: Time,
    pub(crate) suspect_report_due: Time,
    // View change (flush.rs).
    pub(crate) promised: Ballot,
    pub(crate) accepted: Option<(Ballot, Proposal)>,
    pub(crate) fetch: Option<Fetch>,
    pub(crate) attempt: Option<Attempt>,
    pub(crate) join_requests: BTreeMap<MemberId, Addr>,
    pub(crate) leave_requests: BTreeSet<MemberId>,
    pub(crate) leaving: bool,
    pub(crate) leave_due: Time,
    /// For each node, the highest incarnation known to be excluded: that
    /// one and every earlier one are never admitted again. (Incarnations of
    /// a node only grow, so this is all there is to remember, and it stays
    /// bounded by the number of nodes however long the group runs.)
    pub(crate) excluded: BTreeMap<u64, u64>,
    pub(crate) backoff_until: Time,
    /// Addresses of every member seen lately (of this view, earlier views and
    /// join requests), so that one left behind can still be told so.
    pub(crate) directory: BTreeMap<MemberId, Addr>,
    /// Last answer to each lagging or excluded peer (rate limit).
    pub(crate) lag_replies: BTreeMap<MemberId, Time>,
    // Sends.
    pub(crate) held_sends: VecDeque<HeldSend>,
    pub(crate) useq: u64,
    // State transfer (transfer.rs).
    pub(crate) providing: Option<Providing>,
    pub(crate) receiving: Option<Receiving>,
    pub(crate) held_events: VecDeque<Event>,
    // Queries (query.rs).
    pub(crate) query_n: u64,
    pub(crate) queries: BTreeMap<u64, QueryState>,
    pub(crate) reply_cache: ReplyCache,
    /// What this member publishes with [`Engine::set_mark`], and its number.
    pub(crate) mark: Option<(u64, Bytes)>,
    /// How many marks this member has set.
    pub(crate) mark_seq: u64,
    // Outputs.
    pub(crate) events: VecDeque<Event>,
    pub(crate) out: Outbox,
    pub(crate) stats: Stats,
}

/// Most ranges one retransmission request names.
const NAK_RANGES_MAX: usize = 16;
/// Most addresses remembered beyond the current view's: bounds the directory.
pub(crate) const DIRECTORY_MAX: usize = 4096;
/// Longest run one ordering record may name: a sequencer orders at most what
/// a sender's window holds, and a hostile record must not make a member
/// reserve positions without bound.
const ORDER_RUN_MAX: u32 = 1 << 16;
/// Most messages retransmitted in answer to one request: bounds the work a
/// request can cause.
const RETRANSMIT_MAX: u64 = 1024;

impl Engine {
    /// A new engine for member `me`, not yet in a group: call [`Engine::create`]
    /// or [`Engine::join`]. `rng_seed` seeds the engine's own randomness.
    pub fn new(cfg: Config, me: MemberId, now: Time, rng_seed: u64) -> Result<Engine, ConfigError> {
        cfg.validate()?;
        let group = crate::group_hash(&cfg.group);
        let out = Outbox::new(group, me, cfg.datagram_bytes_max);
        Ok(Engine {
            group,
            me,
            rng: SmallRng::seed_from_u64(rng_seed),
            status: Status::Idle,
            vs: None,
            prev: None,
            last_commit: None,
            last_heard: BTreeMap::new(),
            suspected: BTreeSet::new(),
            last_input: now,
            suspect_report_due: now,
            promised: Ballot::default(),
            accepted: None,
            fetch: None,
            attempt: None,
            join_requests: BTreeMap::new(),
            leave_requests: BTreeSet::new(),
            leaving: false,
            leave_due: now,
            excluded: BTreeMap::new(),
            backoff_until: now,
            lag_replies: BTreeMap::new(),
            directory: BTreeMap::new(),
            held_sends: VecDeque::new(),
            useq: 0,
            providing: None,
            receiving: None,
            held_events: VecDeque::new(),
            query_n: 0,
            queries: BTreeMap::new(),
            reply_cache: ReplyCache::default(),
            mark: None,
            mark_seq: 0,
            events: VecDeque::new(),
            out,
            stats: Stats::default(),
            cfg,
        })
    }

    /// This member's id.
    pub fn me(&self) -> MemberId {
        self.me
    }

    /// The installed view, if any.
    pub fn view(&self) -> Option<&View> {
        self.vs.as_ref().map(|v| &v.view)
    }

    /// Whether a view change is in progress (sends are held until the next view).
    pub fn is_blocked(&self) -> bool {
        self.vs.as_ref().is_some_and(|v| v.frozen)
    }

    /// Whether the member has left or been excluded.
    pub fn has_exited(&self) -> bool {
        self.status == Status::Exited
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        if let Some(vs) = &self.vs {
            s.unstable_msgs = vs.streams[vs.me].contig - vs.stable[vs.me];
            s.unstable_bytes = vs.unstable_bytes as u64;
            s.held_msgs = vs.streams.iter().map(|x| x.held() as u64).sum();
            let hi = vs.stable.iter().max().copied().unwrap_or(0);
            let lo = vs.stable.iter().min().copied().unwrap_or(0);
            s.stability_lag = hi - lo;
        }
        s.pending_sends = self.held_sends.len() as u64;
        s
    }

    #[cfg(feature = "mutants")]
    pub(crate) fn mutant(&self, m: crate::Mutant) -> bool {
        self.cfg.mutant == Some(m)
    }

    #[cfg(not(feature = "mutants"))]
    #[inline(always)]
    pub(crate) fn mutant(&self, _m: crate::types::NoMutant) -> bool {
        false
    }

    /// Starts a new group with this member as its only member.
    pub fn create(&mut self, now: Time) {
        if self.status != Status::Idle {
            return;
        }
        let view = View {
            id: ViewId {
                epoch: 1,
                coord: self.me,
            },
            members: vec![self.me],
            addrs: vec![self.cfg.addr.clone()],
        };
        self.status = Status::Member;
        self.install(now, view, false);
    }

    /// Asks to join the group through these contact addresses. The engine
    /// retries until admitted.
    pub fn join(&mut self, now: Time, contacts: &[Addr]) {
        if self.status != Status::Idle {
            return;
        }
        self.status = Status::Joining {
            contacts: contacts.to_vec(),
            retry_at: now,
        };
        self.join_tick(now);
    }

    /// Asks to leave the group; [`Event::Exited`] follows once the view
    /// without this member is installed.
    pub fn leave(&mut self, now: Time) {
        match self.status {
            Status::Member => {}
            Status::Idle | Status::Joining { .. } => {
                self.exit(crate::event::ExitReason::Left);
                return;
            }
            Status::Exited => return,
        }
        self.leaving = true;
        self.leave_due = now;
        self.leave_tick(now);
        self.maybe_change_view(now);
    }

    /// Multicasts `payload` to the view with the given ordering. While a view
    /// change is in progress the message is held and goes out in the next view.
    pub fn send(&mut self, now: Time, ordering: Ordering, payload: Bytes) -> Result<(), SendError> {
        // Every input takes the time; a send needs none (timers start from
        // the next input that does).
        let _ = now;
        self.send_inner(ordering, payload, None)
    }

    pub(crate) fn send_inner(
        &mut self,
        ordering: Ordering,
        payload: Bytes,
        query: Option<u64>,
    ) -> Result<(), SendError> {
        if self.status != Status::Member {
            return Err(SendError::NotMember);
        }
        let limit = if ordering == Ordering::Unreliable {
            self.cfg.fragment_bytes()
        } else {
            self.cfg.message_bytes_max
        };
        if payload.len() > limit {
            return Err(SendError::TooLarge {
                len: payload.len(),
                max: limit,
            });
        }
        let blocked = self.is_blocked();
        if blocked || !self.held_sends.is_empty() {
            if self.mutant(mutant!(DropHeldSends)) {
                return Ok(());
            }
            if self.held_sends.len() >= self.cfg.window_msgs_max {
                return Err(SendError::WouldBlock);
            }
            self.held_sends.push_back(HeldSend {
                ordering,
                payload,
                query,
            });
            return Ok(());
        }
        if ordering == Ordering::Unreliable {
            self.send_unreliable(payload);
            return Ok(());
        }
        if !self.window_has_room(payload.len()) {
            return Err(SendError::WouldBlock);
        }
        self.multicast_app(ordering, payload, query);
        Ok(())
    }

    fn window_has_room(&self, len: usize) -> bool {
        let Some(vs) = &self.vs else { return false };
        let unstable = vs.streams[vs.me].contig - vs.stable[vs.me];
        if unstable == 0 {
            return true; // a message always fits an empty window
        }
        let frags = len.div_ceil(self.cfg.fragment_bytes()).max(1) as u64;
        unstable + frags <= self.cfg.window_msgs_max as u64
            && vs.unstable_bytes + len <= self.cfg.window_bytes_max
    }

    fn send_unreliable(&mut self, payload: Bytes) {
        let Some(vs) = &self.vs else { return };
        self.useq += 1;
        let frame = Frame::Unreliable {
            useq: self.useq,
            payload: payload.clone(),
        };
        self.out.multicast(&vs.view, vs.me, &frame);
        self.stats.sent[Ordering::Unreliable as usize] += 1;
        // Delivered to self at once: best effort still reaches the sender.
        let view = vs.view.id;
        self.deliver_unreliable(self.me, view, payload);
    }

    fn deliver_unreliable(&mut self, sender: MemberId, view: ViewId, payload: Bytes) {
        let d = Delivery {
            sender,
            ordering: Ordering::Unreliable,
            view,
            payload,
        };
        self.stats.delivered[Ordering::Unreliable as usize] += 1;
        self.emit(Event::Deliver(d));
    }

    /// Puts an application message (fragmented if large) into this member's
    /// stream, multicasts it, and processes it locally.
    fn multicast_app(&mut self, ordering: Ordering, payload: Bytes, query: Option<u64>) {
        let frag_len = self.cfg.fragment_bytes();
        let Some(vs) = &mut self.vs else { return };
        debug_assert!(!vs.frozen);
        let causal = if ordering == Ordering::Causal {
            vs.causal.stamp(vs.me)
        } else {
            Vec::new()
        };
        let count = payload.len().div_ceil(frag_len).max(1);
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        let mut bodies = Vec::with_capacity(count as usize);
        if count == 1 {
            bodies.push(Body::App {
                ordering,
                frag: None,
                causal,
                query,
                payload,
            });
        } else {
            for i in 0..count {
                let lo = i as usize * frag_len;
                let hi = (lo + frag_len).min(payload.len());
                bodies.push(Body::App {
                    ordering,
                    frag: Some(Fragment { index: i, count }),
                    causal: if i == 0 { causal.clone() } else { Vec::new() },
                    query,
                    payload: payload.slice(lo..hi),
                });
            }
        }
        self.stats.sent[ordering as usize] += 1;
        for body in bodies {
            self.multicast_body(body);
        }
    }

    /// Appends a body to this member's stream and multicasts it.
    pub(crate) fn multicast_body(&mut self, body: Body) {
        let Some(vs) = &mut self.vs else { return };
        let seq = vs.next_seq();
        let me = vs.me;
        let frame = Frame::Data {
            origin: me as u32,
            seq,
            body,
        };
        self.out.multicast(&vs.view, me, &frame);
        let Frame::Data { body, .. } = frame else {
            unreachable!()
        };
        let len = body_len(&body);
        vs.unstable_bytes += len;
        let inserted = vs.streams[me].insert(seq, Msg { body, len });
        debug_assert!(inserted, "own sequence number reused");
        self.process_ranks(Some(me));
    }

    /// Multicasts a group query; [`Event::QueryDone`] follows.
    pub fn query(
        &mut self,
        now: Time,
        ordering: Ordering,
        quorum: QueryQuorum,
        payload: Bytes,
    ) -> Result<QueryId, QueryError> {
        if ordering == Ordering::Unreliable {
            return Err(QueryError::Send(SendError::NotMember));
        }
        let view = self
            .vs
            .as_ref()
            .map(|v| v.view.clone())
            .ok_or(SendError::NotMember)?;
        let needed = match quorum {
            QueryQuorum::All => view.members.len() as u32,
            QueryQuorum::Majority => view.majority() as u32,
            QueryQuorum::Count(k) => k,
        };
        if needed == 0 || needed as usize > view.members.len() {
            return Err(QueryError::Quorum(needed));
        }
        let n = self.query_n + 1;
        self.send_inner(ordering, payload, Some(n))?;
        self.query_n = n;
        self.queries
            .insert(n, QueryState::new(needed, view.members.clone(), now));
        Ok(QueryId { asker: self.me, n })
    }

    /// Hands over the snapshot asked for by [`Event::StateNeeded`].
    pub fn provide_state(&mut self, now: Time, view: ViewId, snapshot: Bytes) {
        // Every input takes the time; handing over a snapshot needs none.
        let _ = now;
        let Some(p) = &mut self.providing else { return };
        if p.view != view || p.snapshot.is_some() {
            return;
        }
        p.snapshot = Some(snapshot);
        // Push the first chunks at once rather than wait for the joiners to ask.
        let joiners: Vec<MemberId> = match &self.last_commit {
            Some((_, prop)) if prop.next.id == view => prop.joiners.clone(),
            _ => Vec::new(),
        };
        for j in joiners {
            self.on_state_request(j, view, 0);
        }
    }

    /// A datagram arrived. Bytes that do not decode are counted and refused
    /// with the error; the engine's state is unchanged by them.
    pub fn handle_datagram(&mut self, now: Time, bytes: Bytes) -> Result<(), DecodeError> {
        self.observe_time(now);
        let mut reader = match DatagramReader::new(bytes) {
            Ok(r) => r,
            Err(e) => {
                self.stats.decode_errors += 1;
                return Err(e);
            }
        };
        if reader.group() != self.group {
            self.stats.decode_errors += 1;
            return Err(DecodeError::Invalid("group"));
        }
        let from = reader.from();
        let view = reader.view();
        if from == self.me || self.status == Status::Exited {
            return Ok(());
        }
        self.heard(now, from);
        // Frames are decoded one by one; a malformed frame stops the datagram,
        // and the frames before it have been handled (they were well-formed).
        let mut result = Ok(());
        while let Some(frame) = reader.next_frame() {
            match frame {
                Ok(f) => self.handle_frame(now, from, view, f),
                Err(e) => {
                    self.stats.decode_errors += 1;
                    result = Err(e);
                    break;
                }
            }
            if self.status == Status::Exited {
                break;
            }
        }
        self.after_input(now);
        result
    }

    fn handle_frame(&mut self, now: Time, from: MemberId, view: ViewId, frame: Frame) {
        match frame {
            Frame::Data { origin, seq, body } => self.on_data(now, from, view, origin, seq, body),
            Frame::Unreliable { useq, payload } => self.on_unreliable(from, view, useq, payload),
            Frame::Ack { contig } => self.on_ack(now, from, view, contig),
            Frame::Nak { origin, ranges } => self.on_nak(from, view, origin, &ranges),
            Frame::Heartbeat { .. } => {}
            Frame::Suspect { members } => self.on_suspect(now, from, view, members),
            Frame::Leave => self.on_leave(from, view),
            Frame::JoinRequest { joiner, addr } => self.on_join_request(joiner, addr),
            Frame::Prepare { ballot } => self.on_prepare(now, from, view, ballot),
            Frame::Promise {
                ballot,
                contig,
                accepted,
                ready,
                leaving,
            } => self.on_promise(now, from, view, ballot, contig, accepted, ready, leaving),
            Frame::Reject { ballot, promised } => self.on_reject(now, ballot, promised),
            Frame::Accept { ballot, proposal } => self.on_accept(now, from, view, ballot, proposal),
            Frame::Accepted { ballot } => self.on_accepted(now, from, view, ballot),
            Frame::Commit { proposal } => self.on_commit(now, from, view, proposal),
            Frame::NotMember {
                view: theirs,
                member,
            } => {
                if member == self.me {
                    self.on_not_member(from, theirs)
                }
            }
            Frame::StateRequest { view: v, offset } => self.on_state_request(from, v, offset),
            Frame::StateChunk {
                view: v,
                offset,
                total_len,
                bytes,
            } => self.on_state_chunk(now, from, v, offset, total_len, bytes),
            Frame::QueryReply { query, payload } => self.on_query_reply(from, query, payload),
            Frame::QueryPoll { query } => self.on_query_poll(from, query),
            Frame::Mark { seq, mark } => self.on_mark(from, view, seq, mark),
        }
    }

    /// The time given by [`Engine::poll_timeout`] has come (calling it early
    /// or late is harmless).
    pub fn handle_timeout(&mut self, now: Time) {
        self.observe_time(now);
        match self.status {
            Status::Joining { .. } => self.join_tick(now),
            Status::Member => {
                self.failure_tick(now);
                self.data_tick(now);
                self.leave_tick(now);
                self.flush_tick(now);
                self.transfer_tick(now);
                self.query_tick(now);
            }
            Status::Idle | Status::Exited => {}
        }
        self.after_input(now);
        if self.status == Status::Member {
            self.report_suspicions(now);
        }
        // Every timer that was due has been dealt with: a timer left in the
        // past would make the driver spin.
        #[cfg(debug_assertions)]
        {
            let mut due = Vec::new();
            self.for_each_timer(|name, at| {
                if at <= now {
                    due.push((name, at));
                }
            });
            assert!(
                due.is_empty(),
                "{} left timers due after handling time {now}: {due:?}",
                self.me
            );
        }
    }

    /// Work done after every input: sequencer batches, acknowledgements,
    /// membership decisions.
    pub(crate) fn after_input(&mut self, now: Time) {
        if self.status != Status::Member {
            return;
        }
        self.flush_order_batch();
        self.check_fetch(now);
        self.maybe_change_view(now);
        if let Some(vs) = &mut self.vs {
            if vs.ack_pending >= self.cfg.ack_batch {
                self.send_ack(now);
            } else if vs.ack_pending > 0 && vs.ack_due.is_none() {
                vs.ack_due = Some(now.plus(self.cfg.ack_delay));
            }
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.flush_order_batch();
        if self.status == Status::Member
            && self
                .vs
                .as_ref()
                .is_some_and(|vs| vs.ack_soon && vs.ack_pending > 0)
        {
            self.send_ack(self.last_input);
        }
        if self.status == Status::Member {
            self.send_mark_if_due(self.last_input, false);
        }
        let t = self.out.poll();
        if t.is_some() {
            self.stats.datagrams_out += 1;
        }
        t
    }

    /// When [`Engine::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Time> {
        let mut t = Time::MAX;
        self.for_each_timer(|_, at| t = t.min(at));
        (t != Time::MAX).then_some(t)
    }

    /// Every armed timer, by name: `poll_timeout` takes the earliest, and the
    /// invariant check in `handle_timeout` names any left in the past.
    fn for_each_timer(&self, mut f: impl FnMut(&'static str, Time)) {
        match &self.status {
            Status::Joining { retry_at, .. } => f("join retry", *retry_at),
            Status::Member => {
                if let Some(vs) = &self.vs {
                    f("heartbeat", vs.heartbeat_due);
                    if let Some(a) = vs.ack_due {
                        f("ack", a);
                    }
                    for s in &vs.streams {
                        if let Some(n) = s.nak_due {
                            f("nak", n);
                        }
                    }
                }
                // Failure detection: the earliest moment someone becomes suspect.
                for (m, at) in &self.last_heard {
                    if !self.suspected.contains(m) {
                        f("suspicion", at.plus(self.cfg.suspect_timeout));
                    }
                }
                if self.leaving {
                    f("leave", self.leave_due);
                }
                if !self.suspected.is_empty() {
                    f("suspect report", self.suspect_report_due);
                }
                if let Some(a) = &self.attempt {
                    f("flush phase", a.deadline);
                }
                if let Some(x) = &self.fetch {
                    f("fetch", x.retry_at);
                }
                if let Some(r) = &self.receiving {
                    f("state request", r.retry_at);
                }
                for q in self.queries.values() {
                    f("query poll", q.poll_at);
                }
            }
            Status::Idle | Status::Exited => {}
        }
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.flush_order_batch();
        self.events.pop_front()
    }

    /// Queues an event for the application (held back for a joiner until its
    /// state is installed).
    pub(crate) fn emit(&mut self, ev: Event) {
        if self.receiving.is_some() && !matches!(ev, Event::Exited(_)) {
            self.held_events.push_back(ev);
        } else {
            self.events.push_back(ev);
        }
    }

    // ----- receiving data -------------------------------------------------

    fn on_data(
        &mut self,
        now: Time,
        from: MemberId,
        view: ViewId,
        origin: u32,
        seq: u64,
        body: Body,
    ) {
        let fifo_on_arrival = self.cfg_mutant_fifo_on_arrival();
        let retransmit_twice = self.cfg_mutant_retransmit_twice();
        let Some(vs) = &mut self.vs else { return };
        if view != vs.view.id {
            self.on_data_other_view(now, from, view, origin, seq, body);
            return;
        }
        let r = origin as usize;
        if r >= vs.streams.len() || r == vs.me || !valid_body(&body, vs.view.members.len()) {
            return;
        }
        let len = body_len(&body);
        // Mutants keep what they need of the body before it is stored.
        let early = match &body {
            Body::App {
                ordering: Ordering::Fifo,
                frag: None,
                query: None,
                payload,
                ..
            } if fifo_on_arrival && seq > vs.streams[r].contig + 1 => Some(payload.clone()),
            _ => None,
        };
        let again = match &body {
            Body::App {
                ordering,
                frag: None,
                query: None,
                payload,
                ..
            } if retransmit_twice => Some((*ordering, payload.clone())),
            _ => None,
        };
        let vs = self.vs.as_mut().expect("checked above");
        let st = &mut vs.streams[r];
        let was_contig = st.contig;
        if !st.insert(seq, Msg { body, len }) {
            if let Some((ordering, payload)) = again {
                if seq <= st.contig {
                    let d = Delivery {
                        sender: vs.view.members[r],
                        ordering,
                        view: vs.view.id,
                        payload,
                    };
                    self.emit(Event::Deliver(d));
                }
            }
            return;
        }
        if let Some(payload) = early {
            vs.early.insert((r, seq));
            let d = Delivery {
                sender: vs.view.members[r],
                ordering: Ordering::Fifo,
                view: vs.view.id,
                payload,
            };
            self.emit(Event::Deliver(d));
        }
        let vs = self.vs.as_mut().expect("checked above");
        // The sender holds every message it sent: count that towards
        // stability now, not at the sender's next acknowledgement (which, in
        // a quiet group, is its next heartbeat).
        let mut stable_moved = false;
        if seq > vs.acks[r][r] {
            vs.acks[r][r] = seq;
            stable_moved = vs.recompute_stable_rank(r);
        }
        let st = &mut vs.streams[r];
        if st.contig > was_contig {
            vs.ack_pending = vs
                .ack_pending
                .saturating_add((st.contig - was_contig) as u32);
            self.process_ranks(Some(r));
        } else if st.nak_due.is_none() {
            // A gap: ask for retransmission soon, unless reordering fills it first.
            st.nak_due = Some(now.plus(self.cfg.nak_interval / 2));
        }
        if stable_moved {
            self.on_stable();
        }
    }

    /// A message of another view: a retransmission of the previous view's end
    /// (stored there), or a sign that the sender lags behind.
    fn on_data_other_view(
        &mut self,
        now: Time,
        from: MemberId,
        view: ViewId,
        origin: u32,
        seq: u64,
        body: Body,
    ) {
        if self.mutant(mutant!(DeliverInWrongView)) {
            let cur = self.vs.as_ref().map(|v| v.view.id);
            if let (
                Some(cur),
                Body::App {
                    ordering,
                    frag: None,
                    query: None,
                    payload,
                    ..
                },
            ) = (cur, &body)
            {
                if view < cur {
                    let sender = self
                        .prev
                        .as_ref()
                        .and_then(|p| p.view.members.get(origin as usize).copied())
                        .unwrap_or(from);
                    let d = Delivery {
                        sender,
                        ordering: *ordering,
                        view: cur,
                        payload: payload.clone(),
                    };
                    self.emit(Event::Deliver(d));
                    return;
                }
            }
        }
        if let Some(p) = &mut self.prev {
            if p.view.id == view && (origin as usize) < p.streams.len() {
                let len = body_len(&body);
                p.streams[origin as usize].insert(seq, Msg { body, len });
                return;
            }
        }
        self.lagging_peer(now, from, view);
    }

    #[inline]
    fn cfg_mutant_fifo_on_arrival(&self) -> bool {
        self.mutant(mutant!(FifoOnArrival))
    }

    #[inline]
    fn cfg_mutant_retransmit_twice(&self) -> bool {
        self.mutant(mutant!(DeliverRetransmitTwice))
    }

    fn on_unreliable(&mut self, from: MemberId, view: ViewId, useq: u64, payload: Bytes) {
        let Some(vs) = &mut self.vs else { return };
        if view != vs.view.id || vs.frozen {
            return;
        }
        let Some(r) = vs.view.rank(from) else { return };
        if useq <= vs.unreliable_seen[r] {
            return;
        }
        vs.unreliable_seen[r] = useq;
        let view = vs.view.id;
        self.deliver_unreliable(from, view, payload);
    }

    fn on_ack(&mut self, now: Time, from: MemberId, view: ViewId, contig: Vec<u64>) {
        let Some(vs) = &mut self.vs else { return };
        if view != vs.view.id {
            self.lagging_peer(now, from, view);
            return;
        }
        let Some(j) = vs.view.rank(from) else { return };
        if contig.len() != vs.streams.len() {
            return;
        }
        for (r, c) in contig.iter().enumerate() {
            // What a member holds only grows; what it claims of a sender is
            // bounded by what that sender could have sent.
            if *c > vs.acks[j][r] {
                vs.acks[j][r] = *c;
            }
            let st = &mut vs.streams[r];
            if *c > st.highest && r != vs.me {
                st.highest = (*c).min(st.contig + crate::stream::AHEAD_MAX);
            }
            if st.highest > st.contig && st.nak_due.is_none() {
                st.nak_due = Some(now.plus(self.cfg.nak_interval / 2));
            }
        }
        if vs.recompute_stable() {
            self.on_stable();
        }
    }

    /// Stability advanced: collect garbage, deliver `Safe` messages.
    fn on_stable(&mut self) {
        let Some(vs) = &mut self.vs else { return };
        for r in 0..vs.streams.len() {
            let upto = vs.stable[r].min(vs.streams[r].processed);
            let freed = vs.streams[r].collect(upto);
            if r == vs.me {
                vs.unstable_bytes -= freed;
            }
        }
        self.deliver_total();
    }

    fn on_nak(&mut self, from: MemberId, view: ViewId, origin: u32, ranges: &[(u64, u64)]) {
        let src = match &self.vs {
            Some(vs) if vs.view.id == view => vs,
            _ => match &self.prev {
                Some(p) if p.view.id == view => p,
                _ => return,
            },
        };
        let r = origin as usize;
        if r >= src.streams.len() {
            return;
        }
        let Some(addr) = self.addr_of(from) else {
            return;
        };
        // Only what is held can be resent: ranges are clipped to the stream,
        // and the work one request causes is bounded whatever it asks for.
        let st = &src.streams[r];
        let mut frames = Vec::new();
        for &(lo, hi) in ranges {
            let hi = hi.min(st.highest);
            let mut s = lo.max(1);
            while s <= hi && (frames.len() as u64) < RETRANSMIT_MAX {
                if let Some(m) = st.get(s) {
                    frames.push(Frame::Data {
                        origin,
                        seq: s,
                        body: m.body.clone(),
                    });
                }
                s += 1;
            }
        }
        self.stats.retransmitted += frames.len() as u64;
        for f in frames {
            self.out.unicast(from, addr.clone(), view, &f);
        }
    }

    /// Retransmission requests and heartbeats, on timer.
    fn data_tick(&mut self, now: Time) {
        let Some(vs) = &mut self.vs else { return };
        let mut naks = Vec::new();
        for (r, st) in vs.streams.iter_mut().enumerate() {
            if r == vs.me {
                continue;
            }
            match st.nak_due {
                Some(due) if due <= now => {
                    if st.highest > st.contig {
                        naks.push((r, st.missing(NAK_RANGES_MAX)));
                        st.nak_due = Some(now.plus(self.cfg.nak_interval));
                    } else {
                        st.nak_due = None;
                    }
                }
                _ => {}
            }
        }
        let view_id = vs.view.id;
        for (r, ranges) in naks {
            if ranges.is_empty() {
                continue;
            }
            // Ask the sender, unless it is suspected: then a member that
            // reported holding the messages.
            let vs = self.vs.as_ref().expect("member");
            let need = ranges.last().map(|x| x.1).unwrap_or(0);
            let origin = vs.view.members[r];
            let target = if !self.suspected.contains(&origin) {
                Some(r)
            } else {
                (0..vs.acks.len())
                    .filter(|j| *j != vs.me && vs.acks[*j][r] >= need.min(vs.acks[*j][r].max(1)))
                    .max_by_key(|j| vs.acks[*j][r])
            };
            if let Some(j) = target {
                let to = vs.view.members[j];
                let addr = vs.view.addrs[j].clone();
                self.stats.naks_sent += 1;
                self.out.unicast(
                    to,
                    addr,
                    view_id,
                    &Frame::Nak {
                        origin: r as u32,
                        ranges,
                    },
                );
            }
        }
        let vs = self.vs.as_mut().expect("member");
        if vs.ack_due.is_some_and(|d| d <= now) || vs.heartbeat_due <= now {
            self.send_ack(now);
        }
    }

    /// Multicasts what this member holds (also its heartbeat).
    pub(crate) fn send_ack(&mut self, now: Time) {
        let Some(vs) = &mut self.vs else { return };
        let contig: Vec<u64> = (0..vs.streams.len()).map(|r| vs.acked(r)).collect();
        vs.acks[vs.me] = contig.clone();
        vs.ack_pending = 0;
        vs.ack_due = None;
        vs.ack_soon = false;
        vs.heartbeat_due = now.plus(self.cfg.heartbeat_interval);
        self.out.multicast(&vs.view, vs.me, &Frame::Ack { contig });
        if vs.recompute_stable() {
            self.on_stable();
        }
        self.send_mark_if_due(now, true);
    }

    // ----- delivery ---------------------------------------------------------

    /// Hands every newly contiguous message to its ordering's delivery rule.
    pub(crate) fn process_streams(&mut self) {
        self.process_ranks(None);
    }

    /// Processes the newly contiguous messages of one rank (`Some(r)`: the
    /// one that just advanced, the common case on the data path) or of all.
    /// Ranks go in order, so the coordinator's stream (rank 0, with the
    /// ordering records) comes first and positions are known when the
    /// messages reach the total stage.
    pub(crate) fn process_ranks(&mut self, only: Option<usize>) {
        let Some(vs) = &self.vs else { return };
        if vs.frozen && vs.limit.is_none() {
            return;
        }
        let (lo, hi) = match only {
            Some(r) => (r, r + 1),
            None => (0, vs.streams.len()),
        };
        for r in lo..hi {
            let vs = self.vs.as_mut().expect("member");
            let upto = match &vs.limit {
                Some(cut) => vs.streams[r].contig.min(cut[r]),
                None => vs.streams[r].contig,
            };
            let from = vs.streams[r].processed + 1;
            vs.streams[r].processed = vs.streams[r].processed.max(upto);
            for seq in from..=upto {
                self.process_one(r, seq);
            }
            let Some(vs) = self.vs.as_mut() else { return };
            // What this member holds counts towards stability at once (a
            // group of one needs nobody else's acknowledgement).
            let me = vs.me;
            let acked = vs.acked(r);
            if vs.acks[me][r] < acked {
                vs.acks[me][r] = acked;
                vs.recompute_stable_rank(r);
            }
        }
        self.deliver_total();
        if let Some(vs) = &mut self.vs {
            // Messages processed and stable can go.
            for r in lo..hi {
                let upto = vs.stable[r].min(vs.streams[r].processed);
                let freed = vs.streams[r].collect(upto);
                if r == vs.me {
                    vs.unstable_bytes -= freed;
                }
            }
        }
    }

    fn process_one(&mut self, r: usize, seq: u64) {
        let vs = self.vs.as_mut().expect("member");
        if !vs.early.is_empty() && vs.early.remove(&(r, seq)) {
            return;
        }
        let Some(msg) = vs.streams[r].get(seq) else {
            debug_assert!(false, "processing a message that is not held");
            return;
        };
        let body = msg.body.clone();
        match body {
            Body::Order { first, runs } => {
                if r != 0 {
                    return; // only the sequencer orders
                }
                let ok = vs.total.record(first, &runs, seq);
                debug_assert!(ok, "ordering record does not continue the order");
            }
            Body::App {
                ordering,
                frag,
                causal,
                query,
                payload,
            } => {
                let whole = match frag {
                    None => Some((ordering, query, causal, payload)),
                    Some(f) => Self::reassemble(vs, r, f, ordering, query, causal, payload),
                };
                let Some((ordering, query, causal, payload)) = whole else {
                    return;
                };
                vs.arrivals += 1;
                let m = AppMsg {
                    rank: r as u32,
                    seq,
                    ordering,
                    query,
                    payload,
                    arrival: vs.arrivals,
                };
                self.stage(m, causal);
            }
        }
    }

    fn reassemble(
        vs: &mut ViewState,
        r: usize,
        f: Fragment,
        ordering: Ordering,
        query: Option<u64>,
        causal: Vec<u64>,
        payload: Bytes,
    ) -> Option<(Ordering, Option<u64>, Vec<u64>, Bytes)> {
        let slot = &mut vs.partial[r];
        if f.index == 0 {
            *slot = Some(Partial {
                count: f.count,
                next_index: 1,
                ordering,
                query,
                causal,
                parts: vec![payload],
            });
        } else {
            match slot {
                Some(p) if p.next_index == f.index && p.count == f.count => {
                    p.parts.push(payload);
                    p.next_index += 1;
                }
                _ => {
                    *slot = None; // inconsistent fragments: the message is dropped
                    return None;
                }
            }
        }
        let p = slot.as_ref()?;
        if p.next_index < p.count {
            return None;
        }
        let p = slot.take()?;
        let total: usize = p.parts.iter().map(|b| b.len()).sum();
        let mut buf = BytesMut::with_capacity(total);
        for part in &p.parts {
            buf.extend_from_slice(part);
        }
        Some((p.ordering, p.query, p.causal, buf.freeze()))
    }

    /// A whole message meets its ordering's rule.
    fn stage(&mut self, m: AppMsg, causal: Vec<u64>) {
        let ignore_clock = self.mutant(mutant!(IgnoreVectorClock));
        let vs = self.vs.as_mut().expect("member");
        match m.ordering {
            Ordering::Unreliable | Ordering::Reliable | Ordering::Fifo => self.deliver(m),
            Ordering::Causal => {
                for d in vs.causal.push(causal, m, ignore_clock) {
                    self.deliver(d);
                }
            }
            Ordering::Total | Ordering::Safe => {
                if vs.me == 0 && vs.limit.is_none() {
                    vs.total.assign(m.rank, m.seq);
                }
                vs.total.hold(m);
            }
        }
    }

    /// Delivers `Total` and `Safe` messages whose position has come (a `Safe`
    /// one only once it is stable). When the view's end is decided, what is
    /// left goes through `Total::drain_all` in `flush::commit`.
    pub(crate) fn deliver_total(&mut self) {
        let safe_early = self.mutant(mutant!(SafeBeforeStable));
        loop {
            let Some(vs) = &mut self.vs else { return };
            if vs.frozen && vs.limit.is_none() {
                // After a promise nothing is delivered until the view's end
                // is decided: a proposal accepted under an earlier ballot,
                // with a smaller cut, may still be the one decided.
                return;
            }
            let Some(slot) = vs.total.front() else { break };
            let Some(m) = vs.total.front_held() else {
                break;
            };
            if let Some(cut) = &vs.limit {
                // The view's end is decided: positions are agreed only where
                // the record and the message are within the cut; the rest is
                // for `Total::drain_all`.
                if slot.record_seq > cut[0] || slot.seq > cut[slot.rank as usize] {
                    break;
                }
            }
            if m.ordering == Ordering::Safe && !safe_early {
                // Uniform: the message and the record that ordered it must be
                // held by every member before anyone delivers it.
                let stable =
                    vs.stable[slot.rank as usize] >= slot.seq && vs.stable[0] >= slot.record_seq;
                if !stable {
                    // Everyone waits for everyone's acknowledgement of it:
                    // send this member's without the usual delay.
                    vs.ack_soon_if_pending();
                    break;
                }
            }
            let m = vs.total.pop().expect("front is held");
            if m.ordering == Ordering::Safe {
                // Stable here may mean that this member's own holding was
                // the last one missing, counted before anyone else heard
                // of it: the others deliver once its acknowledgement comes,
                // so it goes out with the next datagrams too.
                vs.ack_soon_if_pending();
            }
            self.deliver(m);
        }
    }

    /// Hands a message to the application.
    pub(crate) fn deliver(&mut self, m: AppMsg) {
        let Some(vs) = &self.vs else { return };
        let sender = vs.view.members[m.rank as usize];
        let view = vs.view.id;
        self.stats.delivered[m.ordering as usize] += 1;
        match m.query {
            Some(n) => self.emit(Event::Query {
                id: QueryId { asker: sender, n },
                ordering: m.ordering,
                payload: m.payload,
            }),
            None => self.emit(Event::Deliver(Delivery {
                sender,
                ordering: m.ordering,
                view,
                payload: m.payload,
            })),
        }
        if self.providing.as_ref().is_some_and(|p| p.deferred) {
            self.deferred_state_needed();
        }
    }

    /// Sequencer: multicasts the ordering records gathered during this input.
    ///
    /// Called after every input and whenever the driver polls for output, so
    /// that the records of everything one input (or a run of sends) ordered
    /// leave in one message.
    fn flush_order_batch(&mut self) {
        let Some(vs) = &mut self.vs else { return };
        if vs.me != 0 || vs.frozen || !vs.total.has_batch() {
            return;
        }
        if let Some((first, runs)) = vs.total.take_batch() {
            self.multicast_body(Body::Order { first, runs });
        }
    }

    /// Whether `m` (or a later incarnation of its node) has been excluded.
    pub(crate) fn is_excluded(&self, m: MemberId) -> bool {
        self.excluded
            .get(&m.node)
            .is_some_and(|inc| m.incarnation <= *inc)
    }

    /// Remembers that `m` is out of the group for good.
    pub(crate) fn mark_excluded(&mut self, m: MemberId) {
        let inc = self.excluded.entry(m.node).or_insert(m.incarnation);
        *inc = (*inc).max(m.incarnation);
    }

    /// The address of a member of the current or previous view, or of a joiner.
    pub(crate) fn addr_of(&self, m: MemberId) -> Option<Addr> {
        for vs in [&self.vs, &self.prev].into_iter().flatten() {
            if let Some(r) = vs.view.rank(m) {
                return Some(vs.view.addrs[r].clone());
            }
        }
        if let Some(a) = self.join_requests.get(&m) {
            return Some(a.clone());
        }
        if let Some(a) = self.directory.get(&m) {
            return Some(a.clone());
        }
        if let Some((_, p)) = &self.last_commit {
            if let Some(r) = p.next.rank(m) {
                return Some(p.next.addrs[r].clone());
            }
        }
        if let Some(a) = &self.attempt {
            if let Some(addr) = a.addr_of(m) {
                return Some(addr);
            }
        }
        None
    }

    /// Sends held during the view change go out in the new view.
    pub(crate) fn release_held_sends(&mut self) {
        while let Some(h) = self.held_sends.front() {
            if self.is_blocked() {
                return;
            }
            if h.ordering != Ordering::Unreliable && !self.window_has_room(h.payload.len()) {
                // The window refills as messages become stable; the rest
                // waits (sends keep queueing behind them, in order).
                return;
            }
            let h = self.held_sends.pop_front().expect("front exists");
            if h.ordering == Ordering::Unreliable {
                self.send_unreliable(h.payload);
            } else {
                self.multicast_app(h.ordering, h.payload, h.query);
            }
        }
    }
}

/// Payload bytes of a body, for window accounting.
pub(crate) fn body_len(body: &Body) -> usize {
    match body {
        Body::App { payload, .. } => payload.len(),
        Body::Order { runs, .. } => runs.len() * 8,
    }
}

/// Checks what the wire format cannot: that a message's fields fit the view.
fn valid_body(body: &Body, ranks: usize) -> bool {
    match body {
        Body::App {
            ordering,
            frag,
            causal,
            ..
        } => {
            *ordering != Ordering::Unreliable
                && frag.is_none_or(|f| f.count >= 2 && f.index < f.count)
                && (causal.is_empty() || (*ordering == Ordering::Causal && causal.len() == ranks))
                && (*ordering != Ordering::Causal
                    || frag.is_some_and(|f| f.index > 0)
                    || causal.len() == ranks)
        }
        Body::Order { runs, .. } => runs.iter().all(|r| {
            (r.origin as usize) < ranks
                && r.count > 0
                && r.count <= ORDER_RUN_MAX
                && r.seq.checked_add(u64::from(r.count)).is_some()
        }),
    }
}
