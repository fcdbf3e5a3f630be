//! The engine: one member of one group. (Skeleton: the protocol lands next.)

use std::collections::VecDeque;

use bytes::Bytes;

use crate::config::{Config, ConfigError};
use crate::error::{QueryError, SendError};
use crate::event::Event;
use crate::types::{Addr, MemberId, Ordering, QueryId, QueryQuorum, Time, View, ViewId};
use crate::wire::DecodeError;

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
    /// Views installed.
    pub views: u64,
    /// Datagrams built.
    pub datagrams_out: u64,
    /// Datagrams that failed to decode.
    pub decode_errors: u64,
    /// Own messages not yet stable.
    pub unstable_msgs: u64,
    /// Messages of others held (unstable).
    pub held_msgs: u64,
    /// Sends held during a view change.
    pub pending_sends: u64,
}

/// One member of one group: a pure state machine.
pub struct Engine {
    cfg: Config,
    me: MemberId,
    view: Option<View>,
    events: VecDeque<Event>,
    transmits: VecDeque<Transmit>,
    stats: Stats,
}

impl Engine {
    /// A new engine for member `me`, not yet in a group: call [`Engine::create`]
    /// or [`Engine::join`]. `rng_seed` seeds the engine's own randomness.
    pub fn new(cfg: Config, me: MemberId, now: Time, rng_seed: u64) -> Result<Engine, ConfigError> {
        cfg.validate()?;
        let _ = (now, rng_seed);
        Ok(Engine { cfg, me, view: None, events: VecDeque::new(), transmits: VecDeque::new(), stats: Stats::default() })
    }

    /// This member's id.
    pub fn me(&self) -> MemberId {
        self.me
    }

    /// The installed view, if any.
    pub fn view(&self) -> Option<&View> {
        self.view.as_ref()
    }

    /// Whether a view change is in progress (sends are held).
    pub fn is_blocked(&self) -> bool {
        false
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats.clone()
    }

    /// Starts a new group with this member as its only member.
    pub fn create(&mut self, now: Time) {
        let _ = now;
        let _ = &self.cfg;
        let v = View { id: ViewId { epoch: 1, coord: self.me }, members: vec![self.me], addrs: vec![self.cfg.addr.clone()] };
        self.view = Some(v.clone());
        self.events.push_back(Event::View(v));
    }

    /// Asks to join the group through these contact addresses.
    pub fn join(&mut self, now: Time, contacts: &[Addr]) {
        let _ = (now, contacts);
    }

    /// Asks to leave the group; [`Event::Exited`] follows.
    pub fn leave(&mut self, now: Time) {
        let _ = now;
    }

    /// Multicasts `payload` to the view with the given ordering.
    pub fn send(&mut self, now: Time, ordering: Ordering, payload: Bytes) -> Result<(), SendError> {
        let _ = (now, ordering, payload);
        Err(SendError::NotMember)
    }

    /// Multicasts a query; [`Event::QueryDone`] follows.
    pub fn query(&mut self, now: Time, ordering: Ordering, quorum: QueryQuorum, payload: Bytes) -> Result<QueryId, QueryError> {
        let _ = (now, ordering, quorum, payload);
        Err(QueryError::Send(SendError::NotMember))
    }

    /// Answers a query received through [`Event::Query`].
    pub fn reply(&mut self, now: Time, id: QueryId, payload: Bytes) {
        let _ = (now, id, payload);
    }

    /// Hands over the snapshot asked for by [`Event::StateNeeded`].
    pub fn provide_state(&mut self, now: Time, view: ViewId, snapshot: Bytes) {
        let _ = (now, view, snapshot);
    }

    /// A datagram arrived.
    pub fn handle_datagram(&mut self, now: Time, bytes: Bytes) -> Result<(), DecodeError> {
        let _ = (now, bytes);
        Ok(())
    }

    /// The time given by [`Engine::poll_timeout`] has come.
    pub fn handle_timeout(&mut self, now: Time) {
        let _ = now;
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// When [`Engine::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Time> {
        None
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}
