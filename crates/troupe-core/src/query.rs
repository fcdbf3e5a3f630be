//! Group queries: a member multicasts a query (a message with a query number,
//! in the ordering the asker chose), every member's application answers it
//! with `reply`, and the asker gathers the answers until it has as many as
//! it asked for (all, a majority, or k). Members that leave the view before
//! answering are reported as departed, never waited for.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use crate::engine::Engine;
use crate::event::Event;
use crate::types::{MemberId, QueryId, Time};
use crate::wire::Frame;

/// Replies kept to answer polls from askers that missed them.
const REPLY_CACHE_MAX: usize = 256;

/// A query this member asked.
#[derive(Debug)]
pub(crate) struct QueryState {
    needed: u32,
    members: Vec<MemberId>,
    replies: BTreeMap<MemberId, Bytes>,
    departed: BTreeSet<MemberId>,
    pub poll_at: Time,
}

impl QueryState {
    pub fn new(needed: u32, members: Vec<MemberId>, now: Time) -> QueryState {
        QueryState {
            needed,
            members,
            replies: BTreeMap::new(),
            departed: BTreeSet::new(),
            poll_at: now,
        }
    }

    fn done(&self) -> bool {
        let got = self.replies.len() as u32;
        let possible = got
            + self
                .members
                .iter()
                .filter(|m| !self.replies.contains_key(m) && !self.departed.contains(m))
                .count() as u32;
        got >= self.needed || possible < self.needed
    }
}

/// Recent replies of this member.
#[derive(Debug, Default)]
pub(crate) struct ReplyCache(VecDeque<(QueryId, Bytes)>);

impl Engine {
    /// Answers a query received through [`Event::Query`].
    pub fn reply(&mut self, now: Time, id: QueryId, payload: Bytes) {
        if self.reply_cache.0.len() >= REPLY_CACHE_MAX {
            self.reply_cache.0.pop_front();
        }
        self.reply_cache.0.push_back((id, payload.clone()));
        if id.asker == self.me {
            self.on_query_reply(self.me, id, payload);
        } else if let Some(addr) = self.addr_of(id.asker) {
            let view = self.vs.as_ref().map(|v| v.view.id).unwrap_or_default();
            self.out.unicast(
                id.asker,
                addr,
                view,
                &Frame::QueryReply { query: id, payload },
            );
        }
        self.after_input(now);
    }

    pub(crate) fn on_query_reply(&mut self, from: MemberId, id: QueryId, payload: Bytes) {
        if id.asker != self.me {
            return;
        }
        let Some(q) = self.queries.get_mut(&id.n) else {
            return;
        };
        if !q.members.contains(&from) {
            return;
        }
        q.replies.entry(from).or_insert(payload);
        self.finish_queries();
    }

    pub(crate) fn on_query_poll(&mut self, from: MemberId, id: QueryId) {
        if id.asker != from {
            return;
        }
        let Some((_, payload)) = self.reply_cache.0.iter().find(|(q, _)| *q == id) else {
            return;
        };
        let payload = payload.clone();
        if let Some(addr) = self.addr_of(from) {
            let view = self.vs.as_ref().map(|v| v.view.id).unwrap_or_default();
            self.out
                .unicast(from, addr, view, &Frame::QueryReply { query: id, payload });
        }
    }

    /// A new view: members gone from it will not answer.
    pub(crate) fn query_view_changed(&mut self) {
        let Some(vs) = &self.vs else { return };
        for q in self.queries.values_mut() {
            for m in &q.members {
                if !vs.view.contains(*m) && !q.replies.contains_key(m) {
                    q.departed.insert(*m);
                }
            }
        }
        self.finish_queries();
    }

    fn finish_queries(&mut self) {
        let done: Vec<u64> = self
            .queries
            .iter()
            .filter(|(_, q)| q.done())
            .map(|(n, _)| *n)
            .collect();
        for n in done {
            let Some(q) = self.queries.remove(&n) else {
                continue;
            };
            let id = QueryId { asker: self.me, n };
            let replies = q.replies.into_iter().collect();
            let departed = q.departed.into_iter().collect();
            self.emit(Event::QueryDone {
                id,
                replies,
                departed,
            });
        }
    }

    /// Asks members that have not answered to resend their reply.
    pub(crate) fn query_tick(&mut self, now: Time) {
        let Some(vs) = &self.vs else { return };
        let view = vs.view.id;
        let mut polls = Vec::new();
        for (n, q) in self.queries.iter_mut() {
            if now < q.poll_at {
                continue;
            }
            q.poll_at = now.plus(self.cfg.heartbeat_interval * 2);
            for m in &q.members {
                if *m != self.me && !q.replies.contains_key(m) && !q.departed.contains(m) {
                    polls.push((*m, *n));
                }
            }
        }
        for (m, n) in polls {
            if let Some(addr) = self.addr_of(m) {
                self.out.unicast(
                    m,
                    addr,
                    view,
                    &Frame::QueryPoll {
                        query: QueryId { asker: self.me, n },
                    },
                );
            }
        }
    }
}
