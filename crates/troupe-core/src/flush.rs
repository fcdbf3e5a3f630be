//! The view change with flush.
//!
//! Ending a view is a single-decree agreement among the view's members (the
//! decree: the next view, and the cut that closes this one), run with ballots
//! as in Paxos so that a coordinator that dies mid-change is replaced safely:
//!
//! 1. **Prepare.** The acting coordinator (the oldest member it does not
//!    suspect) picks a ballot above every ballot it has seen and asks every
//!    member to stop. A member that promises the ballot stops delivering and
//!    sending in the view (sends are held for the next view) and reports what
//!    it holds of every sender's stream, and the proposal it last accepted.
//! 2. **Propose.** With promises from a majority, the coordinator re-proposes
//!    the highest-ballot accepted proposal if there is one (a decision may
//!    already have been reached), or else proposes: the next view = the
//!    promisers that are not suspected, leaving or still without state, in
//!    their old order, then the joiners; the cut = for each sender, the
//!    highest sequence number any promiser holds without gap (the union of
//!    what survivors hold).
//! 3. **Accept.** Each member fetches the messages up to the cut that it
//!    lacks, then accepts. A proposal accepted by a majority of the old view
//!    is decided.
//! 4. **Commit.** Every member delivers exactly the messages up to the cut,
//!    in the order of each message's ordering, then installs the next view.
//!
//! Why this keeps the guarantees: a member delivers nothing of the view after
//! it promised, and every message it delivered before is within what it
//! reported, hence within the cut, so every survivor delivers a superset of
//! what any survivor delivered before the change and exactly the cut after it
//! (V3). A sender's own messages are all in its report (V4). Two different
//! next views cannot both be decided, because each needs a majority of the
//! same old view and a later ballot must re-propose what a majority accepted
//! (M1, M3). A `Safe` message delivered anywhere was held by every member,
//! so every promiser reports it (O4).

use std::collections::{BTreeMap, BTreeSet};

use crate::engine::{Engine, Status};
use crate::event::{Event, ExitReason};
use crate::types::{Addr, MemberId, Time, View, ViewId};
use crate::wire::{Ballot, Frame, Proposal};

/// What a promiser told the coordinator.
#[derive(Clone, Debug)]
pub(crate) struct PromiseInfo {
    contig: Vec<u64>,
    accepted: Option<(Ballot, Proposal)>,
    ready: bool,
    leaving: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Prepare,
    Accept,
}

/// A view change run by this member as coordinator.
#[derive(Clone, Debug)]
pub(crate) struct Attempt {
    pub ballot: Ballot,
    pub phase: Phase,
    pub deadline: Time,
    promises: BTreeMap<MemberId, PromiseInfo>,
    accepted_by: BTreeSet<MemberId>,
    proposal: Option<Proposal>,
}

impl Attempt {
    /// The address of a member named in the proposal.
    pub fn addr_of(&self, m: MemberId) -> Option<Addr> {
        let p = self.proposal.as_ref()?;
        p.next.rank(m).map(|r| p.next.addrs[r].clone())
    }
}

/// Fetching the messages up to a cut before accepting or committing it.
#[derive(Clone, Debug)]
pub(crate) struct Fetch {
    ballot: Ballot,
    proposal: Proposal,
    /// The proposal is decided: install once everything is held.
    commit: bool,
    /// Members to ask, in turn.
    sources: Vec<MemberId>,
    turn: usize,
    pub retry_at: Time,
}

impl Engine {
    /// Whether every member older than this one is suspected.
    pub(crate) fn acting_coordinator(&self) -> bool {
        let Some(vs) = &self.vs else { return false };
        vs.view
            .members
            .iter()
            .take(vs.me)
            .all(|m| self.suspected.contains(m))
    }

    /// The member this one takes for coordinator.
    pub(crate) fn coordinator_guess(&self) -> Option<MemberId> {
        let vs = self.vs.as_ref()?;
        vs.view
            .members
            .iter()
            .copied()
            .find(|m| *m == self.me || !self.suspected.contains(m))
    }

    /// Starts a view change if one is needed and this member coordinates.
    pub(crate) fn maybe_change_view(&mut self, now: Time) {
        if self.status != Status::Member || self.attempt.is_some() || now < self.backoff_until {
            return;
        }
        if !self.acting_coordinator() || self.receiving.is_some() {
            return;
        }
        let Some(vs) = &self.vs else { return };
        if vs.limit.is_some() {
            return; // the end of this view is decided; installing
        }
        let never_exclude = self.mutant(mutant!(NeverExclude));
        let suspects = !never_exclude && vs.view.members.iter().any(|m| self.suspected.contains(m));
        let leavers = self.leaving
            || vs
                .view
                .members
                .iter()
                .any(|m| self.leave_requests.contains(m));
        let joiners = self.join_requests.keys().any(|j| !vs.view.contains(*j));
        if !(suspects || leavers || joiners) {
            return;
        }
        if vs.view.members.len() == 1 && self.leaving && self.join_requests.is_empty() {
            // The last member leaves: nobody to agree with.
            self.exit(ExitReason::Left);
            return;
        }
        let round = self.promised.round.max(vs.view.id.epoch) + 1;
        let ballot = Ballot {
            round,
            coord: self.me,
        };
        self.attempt = Some(Attempt {
            ballot,
            phase: Phase::Prepare,
            deadline: now.plus(self.cfg.flush_timeout),
            promises: BTreeMap::new(),
            accepted_by: BTreeSet::new(),
            proposal: None,
        });
        let view = vs.view.clone();
        for (m, addr) in view.members.iter().zip(&view.addrs) {
            if *m != self.me {
                self.out
                    .unicast(*m, addr.clone(), view.id, &Frame::Prepare { ballot });
            }
        }
        self.on_prepare(now, self.me, view.id, ballot);
    }

    /// Stops sending and delivering in the current view.
    fn freeze(&mut self) {
        let Some(vs) = &mut self.vs else { return };
        if !vs.frozen {
            vs.frozen = true;
            // From the first promise on, acknowledgements report no more than
            // it did: every cut that can be decided is at least what each of
            // a majority promised, so a message stable under capped
            // acknowledgements is within every possible cut (O4).
            vs.ack_cap = Some(vs.contig());
            self.emit(Event::Blocked);
        }
    }

    /// Promises `ballot` if it is not below the one promised already;
    /// otherwise tells its coordinator which ballot to beat.
    fn take_ballot(&mut self, now: Time, from: MemberId, view: ViewId, ballot: Ballot) -> bool {
        if ballot < self.promised {
            let promised = self.promised;
            self.send_flush(now, from, view, Frame::Reject { ballot, promised });
            return false;
        }
        self.promised = ballot;
        true
    }

    /// Sends a frame of the view-change protocol, or handles it here if it is
    /// addressed to this member.
    fn send_flush(&mut self, now: Time, to: MemberId, view: ViewId, frame: Frame) {
        if to == self.me {
            match frame {
                Frame::Promise {
                    ballot,
                    contig,
                    accepted,
                    ready,
                    leaving,
                } => self.on_promise(now, to, view, ballot, contig, accepted, ready, leaving),
                Frame::Accepted { ballot } => self.on_accepted(now, to, view, ballot),
                _ => debug_assert!(false, "unexpected local flush frame"),
            }
            return;
        }
        if let Some(addr) = self.addr_of(to) {
            self.out.unicast(to, addr, view, &frame);
        }
    }

    pub(crate) fn on_prepare(&mut self, now: Time, from: MemberId, view: ViewId, ballot: Ballot) {
        let Some(vs) = &self.vs else { return };
        if view != vs.view.id {
            self.lagging_peer(now, from, view);
            return;
        }
        if !vs.view.contains(from) || ballot.coord != from || ballot.round <= vs.view.id.epoch {
            return;
        }
        if !self.take_ballot(now, from, view, ballot) {
            return;
        }
        if self.attempt.as_ref().is_some_and(|a| a.ballot < ballot) {
            // A later attempt supersedes ours: give it time to finish before
            // we try again, or two coordinators outbid each other forever.
            self.attempt = None;
            self.backoff_until = now.plus(self.cfg.flush_timeout);
        }
        self.freeze();
        let vs = self.vs.as_ref().expect("member");
        let frame = Frame::Promise {
            ballot,
            contig: vs.contig(),
            accepted: self.accepted.clone(),
            ready: self.receiving.is_none(),
            leaving: self.leaving,
        };
        self.send_flush(now, from, view, frame);
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_promise(
        &mut self,
        now: Time,
        from: MemberId,
        view: ViewId,
        ballot: Ballot,
        contig: Vec<u64>,
        accepted: Option<(Ballot, Proposal)>,
        ready: bool,
        leaving: bool,
    ) {
        let Some(vs) = &self.vs else { return };
        let Some(a) = &mut self.attempt else { return };
        if a.ballot != ballot
            || a.phase != Phase::Prepare
            || view != vs.view.id
            || !vs.view.contains(from)
        {
            return;
        }
        if contig.len() != vs.view.members.len() {
            return;
        }
        a.promises.insert(
            from,
            PromiseInfo {
                contig,
                accepted,
                ready,
                leaving,
            },
        );
        let all = vs
            .view
            .members
            .iter()
            .all(|m| a.promises.contains_key(m) || self.suspected.contains(m));
        if all {
            self.propose(now);
        }
    }

    pub(crate) fn on_reject(&mut self, now: Time, ballot: Ballot, promised: Ballot) {
        let Some(a) = &self.attempt else { return };
        if a.ballot != ballot || promised <= ballot {
            return;
        }
        // Someone runs a later attempt. If it is older than us, let it finish;
        // otherwise retry above it after a randomised pause.
        self.promised = self.promised.max(promised);
        self.attempt = None;
        let jitter = rand::Rng::random_range(
            &mut self.rng,
            0..=self.cfg.flush_timeout.as_nanos() as u64 / 2,
        );
        self.backoff_until = now
            .plus(self.cfg.flush_timeout / 2)
            .plus(std::time::Duration::from_nanos(jitter));
    }

    /// The members of the old view that go on into the next one, oldest
    /// first, with their addresses, and those of them that still need state.
    ///
    /// Promisers go on unless they leave or are suspected. The next view must
    /// hold a majority of the old view's members that do not leave (primary
    /// continuity, M3), so if excluding every suspect would break that,
    /// suspects that promised are kept: their promise shows they are alive.
    /// If even that is not enough, there is no next view to propose.
    fn choose_members(
        &self,
        old: &View,
        a: &Attempt,
        bypass_majority: bool,
    ) -> Option<(Vec<MemberId>, Vec<Addr>, Vec<MemberId>)> {
        let never_exclude = self.mutant(mutant!(NeverExclude));
        let leaver = |m: &MemberId| {
            self.leave_requests.contains(m) || a.promises.get(m).is_some_and(|p| p.leaving)
        };
        let staying = old.members.iter().filter(|m| !leaver(m)).count();
        let needed = staying / 2 + 1;
        let mut keep: Vec<bool> = old
            .members
            .iter()
            .map(|m| {
                !leaver(m)
                    && (never_exclude
                        || (a.promises.contains_key(m) && !self.suspected.contains(m)))
            })
            .collect();
        let mut kept = keep.iter().filter(|k| **k).count();
        for (r, m) in old.members.iter().enumerate() {
            if kept >= needed {
                break;
            }
            if !keep[r] && a.promises.contains_key(m) && !leaver(m) {
                keep[r] = true;
                kept += 1;
            }
        }
        if kept < needed && staying > 0 && !bypass_majority {
            return None;
        }
        let mut members = Vec::new();
        let mut addrs = Vec::new();
        // Members whose state transfer has not finished stay, and get a fresh
        // snapshot at the new boundary (they have not shown the application
        // the view they joined yet).
        let mut joiners = Vec::new();
        for (r, (m, addr)) in old.members.iter().zip(&old.addrs).enumerate() {
            if keep[r] {
                members.push(*m);
                addrs.push(addr.clone());
                if a.promises.get(m).is_some_and(|p| !p.ready) {
                    joiners.push(*m);
                }
            }
        }
        Some((members, addrs, joiners))
    }

    /// Phase 2: build (or adopt) the proposal and ask for acceptance.
    fn propose(&mut self, now: Time) {
        let bypass_majority = self.mutant(mutant!(CommitWithoutMajority));
        let own_cut = self.mutant(mutant!(CutWithoutUnion)) || self.mutant(mutant!(SkipFlush));
        let Some(vs) = &self.vs else { return };
        let Some(a) = &self.attempt else { return };
        let old = vs.view.clone();
        if a.promises.len() < old.majority() && !bypass_majority {
            return;
        }
        let adopted = a
            .promises
            .values()
            .filter_map(|p| p.accepted.clone())
            .max_by_key(|(b, _)| *b)
            .map(|(_, p)| p);
        let proposal = match adopted {
            Some(p) => p,
            None => {
                let Some((mut members, mut addrs, mut joiners)) =
                    self.choose_members(&old, a, bypass_majority)
                else {
                    return;
                };
                let provider = members.iter().copied().find(|m| !joiners.contains(m));
                if provider.is_none() {
                    // Nobody with state survives: nobody can be admitted.
                    let stateless: Vec<MemberId> = std::mem::take(&mut joiners);
                    for j in stateless {
                        if let Some(i) = members.iter().position(|m| *m == j) {
                            members.remove(i);
                            addrs.remove(i);
                        }
                    }
                }
                if provider.is_some() {
                    for (j, addr) in &self.join_requests {
                        if !old.contains(*j)
                            && !self.is_excluded(*j)
                            && members.len() < crate::wire::MEMBERS_MAX
                        {
                            members.push(*j);
                            addrs.push(addr.clone());
                            joiners.push(*j);
                        }
                    }
                }
                let cut = if own_cut {
                    vs.contig()
                } else {
                    (0..old.members.len())
                        .map(|r| a.promises.values().map(|p| p.contig[r]).max().unwrap_or(0))
                        .collect()
                };
                Proposal {
                    next: View {
                        id: ViewId {
                            epoch: a.ballot.round,
                            coord: self.me,
                        },
                        members,
                        addrs,
                    },
                    cut,
                    provider: if joiners.is_empty() { None } else { provider },
                    joiners,
                }
            }
        };
        let ballot = a.ballot;
        let promisers: Vec<MemberId> = a.promises.keys().copied().collect();
        let a = self.attempt.as_mut().expect("attempt");
        a.phase = Phase::Accept;
        a.deadline = now.plus(self.cfg.flush_timeout);
        a.proposal = Some(proposal.clone());
        if self.mutant(mutant!(SkipFlush)) {
            self.decide(now);
            return;
        }
        for m in &promisers {
            if *m != self.me {
                self.send_flush(
                    now,
                    *m,
                    old.id,
                    Frame::Accept {
                        ballot,
                        proposal: proposal.clone(),
                    },
                );
            }
        }
        self.on_accept(now, self.me, old.id, ballot, proposal);
    }

    pub(crate) fn on_accept(
        &mut self,
        now: Time,
        from: MemberId,
        view: ViewId,
        ballot: Ballot,
        proposal: Proposal,
    ) {
        let Some(vs) = &self.vs else { return };
        if view != vs.view.id {
            self.lagging_peer(now, from, view);
            return;
        }
        if !vs.view.contains(from) || ballot.coord != from || !valid_proposal(&proposal, &vs.view) {
            return;
        }
        if !self.take_ballot(now, from, view, ballot) {
            return;
        }
        self.freeze();
        let sources = self.fetch_sources(from, &proposal);
        self.fetch = Some(Fetch {
            ballot,
            proposal,
            commit: false,
            sources,
            turn: 0,
            retry_at: now,
        });
        self.check_fetch(now);
    }

    pub(crate) fn on_accepted(&mut self, now: Time, from: MemberId, view: ViewId, ballot: Ballot) {
        let bypass_majority = self.mutant(mutant!(CommitWithoutMajority));
        let Some(vs) = &self.vs else { return };
        let Some(a) = &mut self.attempt else { return };
        if a.ballot != ballot
            || a.phase != Phase::Accept
            || view != vs.view.id
            || !vs.view.contains(from)
        {
            return;
        }
        a.accepted_by.insert(from);
        if a.accepted_by.len() >= vs.view.majority() || bypass_majority {
            self.decide(now);
        }
    }

    /// The proposal is decided: tell everyone, then commit here.
    fn decide(&mut self, now: Time) {
        let Some(a) = self.attempt.take() else { return };
        let Some(proposal) = a.proposal else { return };
        let Some(vs) = &self.vs else { return };
        let old = vs.view.clone();
        let frame = Frame::Commit {
            proposal: proposal.clone(),
        };
        for (m, addr) in old.members.iter().zip(&old.addrs) {
            if *m != self.me {
                self.out.unicast(*m, addr.clone(), old.id, &frame);
            }
        }
        for j in &proposal.joiners {
            if let Some(r) = proposal.next.rank(*j) {
                self.out
                    .unicast(*j, proposal.next.addrs[r].clone(), old.id, &frame);
            }
        }
        self.on_commit(now, self.me, old.id, proposal);
    }

    pub(crate) fn on_commit(
        &mut self,
        now: Time,
        from: MemberId,
        view: ViewId,
        proposal: Proposal,
    ) {
        if matches!(self.status, Status::Joining { .. }) {
            if proposal.next.contains(self.me)
                && proposal.joiners.contains(&self.me)
                && proposal.provider.is_some()
            {
                self.install_as_joiner(now, view, proposal);
            }
            return;
        }
        let Some(vs) = &self.vs else { return };
        if view != vs.view.id || !valid_proposal(&proposal, &vs.view) {
            return;
        }
        if self.fetch.as_ref().is_some_and(|f| f.commit) {
            return; // already committing
        }
        let skip_flush = self.mutant(mutant!(SkipFlush));
        if skip_flush {
            // Install on what is held, without fetching what is missing.
            let mut p = proposal;
            p.cut = p
                .cut
                .iter()
                .zip(vs.contig())
                .map(|(c, h)| (*c).min(h))
                .collect();
            self.commit(now, view, p);
            return;
        }
        let sources = self.fetch_sources(from, &proposal);
        let ballot = self.promised;
        self.freeze();
        self.fetch = Some(Fetch {
            ballot,
            proposal,
            commit: true,
            sources,
            turn: 0,
            retry_at: now,
        });
        self.check_fetch(now);
    }

    fn fetch_sources(&self, coordinator: MemberId, proposal: &Proposal) -> Vec<MemberId> {
        let mut sources = Vec::new();
        if coordinator == self.me {
            // Ask the promisers that hold the most first.
            if let Some(a) = &self.attempt {
                let mut ps: Vec<(&MemberId, &PromiseInfo)> =
                    a.promises.iter().filter(|(m, _)| **m != self.me).collect();
                ps.sort_by_key(|(m, p)| (std::cmp::Reverse(p.contig.iter().sum::<u64>()), **m));
                sources.extend(ps.into_iter().map(|(m, _)| *m));
            }
        } else {
            sources.push(coordinator);
        }
        if let Some(vs) = &self.vs {
            for m in &vs.view.members {
                if *m != self.me && !sources.contains(m) && proposal.next.contains(*m) {
                    sources.push(*m);
                }
            }
        }
        sources
    }

    /// Called after every input: is the fetch complete?
    pub(crate) fn check_fetch(&mut self, now: Time) {
        let Some(f) = &self.fetch else { return };
        let Some(vs) = &mut self.vs else { return };
        if f.ballot < self.promised && !f.commit {
            self.fetch = None; // superseded by a later attempt
            return;
        }
        let complete = vs
            .streams
            .iter()
            .zip(&f.proposal.cut)
            .all(|(s, c)| s.contig >= *c);
        if complete {
            let f = self.fetch.take().expect("fetch");
            let view = vs.view.id;
            if f.commit {
                self.commit(now, view, f.proposal);
            } else {
                self.accepted = Some((f.ballot, f.proposal));
                self.send_flush(
                    now,
                    f.ballot.coord,
                    view,
                    Frame::Accepted { ballot: f.ballot },
                );
            }
            return;
        }
        if now < f.retry_at {
            return;
        }
        // Ask for what is missing below the cut, from the sources in turn.
        let f = self.fetch.as_mut().expect("fetch");
        let view = vs.view.id;
        let mut naks = Vec::new();
        for (r, (s, c)) in vs.streams.iter_mut().zip(&f.proposal.cut).enumerate() {
            if s.contig < *c {
                // Bounded like an acknowledgement's claim: no member can hold
                // more than the window ahead of what this one holds.
                s.highest = s.highest.max((*c).min(s.contig + crate::stream::AHEAD_MAX));
                let ranges: Vec<(u64, u64)> = s
                    .missing(16)
                    .into_iter()
                    .filter(|(lo, _)| lo <= c)
                    .map(|(lo, hi)| (lo, hi.min(*c)))
                    .collect();
                naks.push((r as u32, ranges));
            }
        }
        let to = if f.sources.is_empty() {
            None
        } else {
            Some(f.sources[f.turn % f.sources.len()])
        };
        f.turn += 1;
        f.retry_at = now.plus(self.cfg.nak_interval);
        if let Some(to) = to {
            if let Some(addr) = self.addr_of(to) {
                for (origin, ranges) in naks {
                    self.stats.naks_sent += 1;
                    self.out
                        .unicast(to, addr.clone(), view, &Frame::Nak { origin, ranges });
                }
            }
        }
    }

    /// Delivers everything up to the cut, then installs the next view (or exits).
    fn commit(&mut self, now: Time, ended: ViewId, proposal: Proposal) {
        let local_order = self.mutant(mutant!(LocalFlushOrder));
        let Some(vs) = &mut self.vs else { return };
        debug_assert_eq!(vs.view.id, ended);
        vs.limit = Some(proposal.cut.clone());
        self.process_streams();
        let vs = self.vs.as_mut().expect("member");
        let causal = vs.causal.drain_all(&proposal.cut);
        let total = vs.total.drain_all(&proposal.cut, local_order);
        for m in causal.into_iter().chain(total) {
            self.deliver(m);
        }
        self.last_commit = Some((ended, proposal.clone()));
        if proposal.joiners.contains(&self.me) && self.receiving.is_some() {
            // Our state transfer did not finish in the view that ends: start
            // over from a snapshot at the new boundary. Nothing of the old
            // view was shown to the application. (A proposal made while we
            // still waited may name us as a joiner after the state arrived:
            // then we simply install, below.)
            self.held_events.clear();
            self.receiving = None;
            self.install_as_joiner(now, ended, proposal);
        } else if proposal.next.contains(self.me) {
            let provider = proposal.provider == Some(self.me) && !proposal.joiners.is_empty();
            self.install(now, proposal.next, provider);
        } else if self.leaving {
            self.exit(ExitReason::Left);
        } else {
            self.exit(ExitReason::Excluded);
        }
    }

    /// A joiner is admitted: install the view, then wait for the state.
    fn install_as_joiner(&mut self, now: Time, ended: ViewId, proposal: Proposal) {
        let Some(provider) = proposal.provider else {
            return;
        };
        self.status = Status::Member;
        self.last_commit = Some((ended, proposal.clone()));
        // Receiving first, so that the view itself is held back with the
        // deliveries until the state is installed.
        self.start_receiving(proposal.next.id, provider);
        self.install(now, proposal.next, false);
        self.transfer_tick(now);
    }

    /// Installs a view: fresh streams and failure detection, held sends go out.
    pub(crate) fn install(&mut self, now: Time, view: View, provider: bool) {
        let Some(me) = view.rank(self.me) else { return };
        let gone: Vec<MemberId> = match &self.vs {
            Some(old) => old
                .view
                .members
                .iter()
                .copied()
                .filter(|m| !view.contains(*m))
                .collect(),
            None => Vec::new(),
        };
        for m in gone {
            self.mark_excluded(m);
        }
        if self.directory.len() + view.members.len() > crate::engine::DIRECTORY_MAX {
            self.directory.clear();
        }
        for (m, a) in view.members.iter().zip(&view.addrs) {
            self.directory.insert(*m, a.clone());
        }
        let vs = crate::engine::ViewState::new(view.clone(), me, now);
        self.prev = self.vs.replace(vs);
        self.status = Status::Member;
        self.accepted = None;
        self.fetch = None;
        self.attempt = None;
        self.suspected.clear();
        self.lag_replies.clear();
        self.last_heard = view
            .members
            .iter()
            .filter(|m| **m != self.me)
            .map(|m| (*m, now))
            .collect();
        self.leave_requests.retain(|m| view.contains(*m));
        self.join_requests.retain(|j, _| !view.contains(*j));
        self.providing = None;
        self.stats.views += 1;
        self.query_view_changed();
        self.emit(Event::View(view.clone()));
        if provider {
            self.start_providing(view.id);
        }
        self.send_ack(now);
        self.release_held_sends();
    }

    /// Leaves the group for good.
    pub(crate) fn exit(&mut self, reason: ExitReason) {
        if self.status == Status::Exited {
            return;
        }
        if reason == ExitReason::Excluded && self.mutant(mutant!(ReadmitIncarnation)) {
            // Rejoin under the same identity, through the members of the view
            // that excluded us.
            let contacts: Vec<Addr> = self
                .last_commit
                .as_ref()
                .map(|(_, p)| p.next.addrs.clone())
                .or_else(|| self.vs.as_ref().map(|v| v.view.addrs.clone()))
                .unwrap_or_default();
            self.reset_membership();
            self.status = Status::Joining {
                contacts,
                retry_at: Time::ZERO,
            };
            return;
        }
        self.reset_membership();
        self.status = Status::Exited;
        self.receiving = None;
        let held = std::mem::take(&mut self.held_events);
        self.events.extend(
            held.into_iter()
                .filter(|e| !matches!(e, Event::Deliver(_) | Event::Query { .. })),
        );
        self.events.push_back(Event::Exited(reason));
    }

    fn reset_membership(&mut self) {
        self.vs = None;
        self.prev = None;
        self.attempt = None;
        self.fetch = None;
        self.accepted = None;
        self.held_sends.clear();
        self.queries.clear();
        self.providing = None;
        self.receiving = None;
        self.held_events.clear();
    }

    /// A member sent a view-scoped frame for a view other than ours.
    pub(crate) fn lagging_peer(&mut self, now: Time, from: MemberId, their_view: ViewId) {
        let Some(vs) = &self.vs else { return };
        if their_view >= vs.view.id {
            return; // we are the one behind; the commit will reach us
        }
        if self
            .lag_replies
            .get(&from)
            .is_some_and(|t| now < t.plus(self.cfg.heartbeat_interval))
        {
            return;
        }
        if self.lag_replies.len() >= crate::wire::MEMBERS_MAX {
            self.lag_replies.clear();
        }
        self.lag_replies.insert(from, now);
        let Some(addr) = self.addr_of(from) else {
            return;
        };
        if !vs.view.contains(from) {
            let mine = vs.view.id;
            let frame = Frame::NotMember {
                view: mine,
                member: from,
            };
            self.out.unicast(from, addr, their_view, &frame);
            return;
        }
        if let Some((ended, p)) = &self.last_commit {
            if *ended == their_view {
                let frame = Frame::Commit {
                    proposal: p.clone(),
                };
                self.out.unicast(from, addr, *ended, &frame);
            }
        }
    }

    pub(crate) fn on_not_member(&mut self, from: MemberId, theirs: ViewId) {
        if matches!(self.status, Status::Joining { .. }) {
            // A member of the group refuses this incarnation: it was admitted
            // once and excluded before it heard of it.
            self.exit(ExitReason::Excluded);
            return;
        }
        let Some(vs) = &self.vs else { return };
        if theirs > vs.view.id && vs.view.contains(from) {
            let reason = if self.leaving {
                ExitReason::Left
            } else {
                ExitReason::Excluded
            };
            self.exit(reason);
        }
    }

    pub(crate) fn on_suspect(
        &mut self,
        now: Time,
        from: MemberId,
        view: ViewId,
        members: Vec<MemberId>,
    ) {
        let Some(vs) = &self.vs else { return };
        if view != vs.view.id || !vs.view.contains(from) {
            return;
        }
        // A report is taken only if our own detector agrees the member has
        // been quiet for a while: one member cut off from the rest must not
        // get everybody else excluded.
        let half = self.cfg.suspect_timeout / 2;
        for m in members {
            if m == self.me || !vs.view.contains(m) {
                continue;
            }
            let quiet = self
                .last_heard
                .get(&m)
                .is_none_or(|t| now.since(*t) >= half);
            if quiet {
                self.suspected.insert(m);
            }
        }
    }

    pub(crate) fn on_leave(&mut self, from: MemberId, view: ViewId) {
        let Some(vs) = &self.vs else { return };
        if view == vs.view.id && vs.view.contains(from) {
            self.leave_requests.insert(from);
        }
    }

    pub(crate) fn on_join_request(&mut self, joiner: MemberId, addr: Addr) {
        if self.status != Status::Member || joiner == self.me || joiner == MemberId::UNKNOWN {
            return;
        }
        let Some(vs) = &self.vs else { return };
        if self.is_excluded(joiner) && !self.mutant(mutant!(ReadmitIncarnation)) {
            let mine = vs.view.id;
            self.out.unicast(
                joiner,
                addr,
                ViewId::default(),
                &Frame::NotMember {
                    view: mine,
                    member: joiner,
                },
            );
            return;
        }
        if vs.view.contains(joiner) {
            // Admitted already: the commit that admitted it was lost.
            if let Some((ended, p)) = &self.last_commit {
                if p.next.contains(joiner) {
                    let frame = Frame::Commit {
                        proposal: p.clone(),
                    };
                    let ended = *ended;
                    self.out.unicast(joiner, addr, ended, &frame);
                }
            }
            return;
        }
        // A new incarnation of a member's node: the old one is gone.
        let stale: Vec<MemberId> = vs
            .view
            .members
            .iter()
            .copied()
            .filter(|m| m.node == joiner.node && m.incarnation < joiner.incarnation)
            .collect();
        if joiner.incarnation
            <= vs
                .view
                .members
                .iter()
                .filter(|m| m.node == joiner.node)
                .map(|m| m.incarnation)
                .max()
                .unwrap_or(0)
            && !stale.is_empty()
        {
            return;
        }
        if !self.mutant(mutant!(NeverExclude)) {
            self.suspected.extend(stale);
        }
        if self.acting_coordinator() {
            if self.join_requests.len() < crate::wire::MEMBERS_MAX {
                self.join_requests.insert(joiner, addr);
            }
        } else if let Some(c) = self.coordinator_guess() {
            if let Some(caddr) = self.addr_of(c) {
                let id = vs.view.id;
                self.out
                    .unicast(c, caddr, id, &Frame::JoinRequest { joiner, addr });
            }
        }
    }

    /// Timers of the view change: phase deadlines, fetch retries.
    pub(crate) fn flush_tick(&mut self, now: Time) {
        self.check_fetch(now);
        let Some(a) = &self.attempt else { return };
        if now < a.deadline {
            return;
        }
        let Some(vs) = &self.vs else { return };
        // Members that did not answer in time are suspected; the attempt
        // proceeds if a majority answered, else starts over later.
        let answered: BTreeSet<MemberId> = match a.phase {
            Phase::Prepare => a.promises.keys().copied().collect(),
            Phase::Accept => a.accepted_by.clone(),
        };
        let silent: Vec<MemberId> = vs
            .view
            .members
            .iter()
            .copied()
            .filter(|m| !answered.contains(m))
            .collect();
        let phase = a.phase;
        let enough = answered.len() >= vs.view.majority();
        self.suspected
            .extend(silent.into_iter().filter(|m| *m != self.me));
        if phase == Phase::Prepare && enough {
            self.propose(now);
            if self
                .attempt
                .as_ref()
                .is_some_and(|a| a.phase == Phase::Accept)
            {
                return;
            }
            // No proposal could be made (no majority would go on): start over.
        }
        self.attempt = None;
        let jitter = rand::Rng::random_range(
            &mut self.rng,
            0..=self.cfg.flush_timeout.as_nanos() as u64 / 4,
        );
        self.backoff_until = now.plus(std::time::Duration::from_nanos(jitter));
    }

    /// A member that asked to leave repeats its request to the coordinator.
    pub(crate) fn leave_tick(&mut self, now: Time) {
        if !self.leaving || now < self.leave_due {
            return;
        }
        self.leave_due = now.plus(self.cfg.heartbeat_interval);
        let Some(c) = self.coordinator_guess() else {
            return;
        };
        if c == self.me {
            return;
        }
        let Some(vs) = &self.vs else { return };
        let id = vs.view.id;
        if let Some(addr) = self.addr_of(c) {
            self.out.unicast(c, addr, id, &Frame::Leave);
        }
    }

    /// While joining: ask the contacts again.
    pub(crate) fn join_tick(&mut self, now: Time) {
        let Status::Joining { contacts, retry_at } = &mut self.status else {
            return;
        };
        if now < *retry_at {
            return;
        }
        *retry_at = now.plus(self.cfg.join_retry_interval);
        let contacts = contacts.clone();
        let frame = Frame::JoinRequest {
            joiner: self.me,
            addr: self.cfg.addr.clone(),
        };
        for addr in contacts {
            self.out
                .unicast(MemberId::UNKNOWN, addr, ViewId::default(), &frame);
        }
    }
}

/// What the wire cannot check about a proposal: that it fits the view it ends.
fn valid_proposal(p: &Proposal, old: &View) -> bool {
    let mut seen = BTreeSet::new();
    p.cut.len() == old.members.len()
        && p.next.members.len() == p.next.addrs.len()
        && p.next.id > old.id
        && p.next.members.iter().all(|m| seen.insert(*m))
        && p.joiners.iter().all(|j| p.next.contains(*j))
        && p.provider
            .is_none_or(|m| p.next.contains(m) && old.contains(m) && !p.joiners.contains(&m))
        && (p.joiners.is_empty() || p.provider.is_some())
}
