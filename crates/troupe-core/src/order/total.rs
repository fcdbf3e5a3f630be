//! Total order by a sequencer: the view's coordinator assigns positions to
//! `Total` and `Safe` messages as it receives them (in each sender's FIFO
//! order), and multicasts batched ordering records in its own reliable stream.
//! A member delivers in position order once it holds the message (and, for
//! `Safe`, once the message and its record are stable).
//!
//! Senders multicast their data themselves; only the small records go through
//! the sequencer, one batch per input the sequencer handles, so the ordering
//! cost is amortised over every message that input carried.

use std::collections::{BTreeMap, VecDeque};

use super::AppMsg;
use crate::wire::OrderRun;

/// One position of the total order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub rank: u32,
    pub seq: u64,
    /// Sequence number, in the coordinator's stream, of the record that
    /// assigned this position (its stability matters for `Safe`).
    pub record_seq: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Total {
    /// Positions known and not yet delivered, from `next_pos`.
    order: VecDeque<Slot>,
    /// Position of `order[0]`.
    next_pos: u64,
    /// Messages held and waiting for their position, by (rank, seq).
    ready: BTreeMap<(u32, u64), AppMsg>,
    /// Sequencer: next position to assign, and the batch not yet multicast.
    assign_next: u64,
    batch: Vec<OrderRun>,
    batch_first: u64,
}

impl Total {
    pub fn new() -> Total {
        Total {
            next_pos: 1,
            assign_next: 1,
            batch_first: 1,
            ..Total::default()
        }
    }

    /// Sequencer: assigns the next position to (rank, seq).
    pub fn assign(&mut self, rank: u32, seq: u64) {
        if self.batch.is_empty() {
            self.batch_first = self.assign_next;
        }
        self.assign_next += 1;
        if let Some(last) = self.batch.last_mut() {
            if last.origin == rank && last.seq + u64::from(last.count) == seq {
                last.count += 1;
                return;
            }
        }
        self.batch.push(OrderRun {
            origin: rank,
            seq,
            count: 1,
        });
    }

    /// Sequencer: the batch to multicast, if any.
    pub fn take_batch(&mut self) -> Option<(u64, Vec<OrderRun>)> {
        if self.batch.is_empty() {
            return None;
        }
        Some((self.batch_first, std::mem::take(&mut self.batch)))
    }

    /// Whether ordering records wait to be multicast.
    pub fn has_batch(&self) -> bool {
        !self.batch.is_empty()
    }

    /// A record arrived (in the coordinator's stream order). Returns false if
    /// it does not continue the order (a protocol error by the sender).
    pub fn record(&mut self, first: u64, runs: &[OrderRun], record_seq: u64) -> bool {
        let expected = self.next_pos + self.order.len() as u64;
        if first != expected {
            return false;
        }
        for run in runs {
            for i in 0..u64::from(run.count) {
                self.order.push_back(Slot {
                    rank: run.origin,
                    seq: run.seq + i,
                    record_seq,
                });
            }
        }
        true
    }

    /// A `Total` or `Safe` message is held and waits for its position.
    pub fn hold(&mut self, msg: AppMsg) {
        self.ready.insert((msg.rank, msg.seq), msg);
    }

    /// The next position, if known.
    pub fn front(&self) -> Option<Slot> {
        self.order.front().copied()
    }

    /// Whether the message at the next position is held.
    pub fn front_held(&self) -> Option<&AppMsg> {
        let s = self.order.front()?;
        self.ready.get(&(s.rank, s.seq))
    }

    /// Takes the message at the next position (which must be held).
    pub fn pop(&mut self) -> Option<AppMsg> {
        let s = self.order.pop_front()?;
        self.next_pos += 1;
        self.ready.remove(&(s.rank, s.seq))
    }

    /// At the end of a view: every held message, first those with positions in
    /// position order (positions whose message is not held are skipped: no
    /// survivor has it), then the unordered ones by (rank, seq), an order every
    /// survivor computes alike.
    pub fn drain_all(&mut self, cut: &[u64], local_order: bool) -> Vec<AppMsg> {
        // Only messages within the cut are delivered in the view: a member
        // that is not in the next view may hold more, which nobody else
        // delivers.
        let within = |m: &AppMsg| cut.get(m.rank as usize).is_some_and(|c| m.seq <= *c);
        let mut out = Vec::new();
        while let Some(s) = self.order.pop_front() {
            self.next_pos += 1;
            // A position assigned by a record outside the cut is not agreed:
            // its message, if within the cut, goes with the unordered ones.
            if cut.first().is_none_or(|c| s.record_seq > *c) {
                continue;
            }
            if let Some(m) = self.ready.remove(&(s.rank, s.seq)) {
                if within(&m) {
                    out.push(m);
                }
            }
        }
        let mut rest: Vec<AppMsg> = std::mem::take(&mut self.ready)
            .into_values()
            .filter(within)
            .collect();
        if local_order {
            rest.sort_by_key(|m| m.arrival);
        }
        out.extend(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Ordering;
    use bytes::Bytes;

    fn m(rank: u32, seq: u64) -> AppMsg {
        AppMsg {
            rank,
            seq,
            ordering: Ordering::Total,
            query: None,
            payload: Bytes::new(),
            arrival: 0,
        }
    }

    #[test]
    fn sequencer_batches_consecutive_messages_into_runs() {
        let mut t = Total::new();
        t.assign(1, 5);
        t.assign(1, 6);
        t.assign(2, 1);
        let (first, runs) = t.take_batch().unwrap();
        assert_eq!(first, 1);
        assert_eq!(
            runs,
            vec![
                OrderRun {
                    origin: 1,
                    seq: 5,
                    count: 2
                },
                OrderRun {
                    origin: 2,
                    seq: 1,
                    count: 1
                }
            ]
        );
        assert!(t.take_batch().is_none());
        t.assign(0, 1);
        assert_eq!(t.take_batch().unwrap().0, 4);
    }

    #[test]
    fn delivers_in_position_order_only_when_held() {
        let mut t = Total::new();
        assert!(t.record(
            1,
            &[
                OrderRun {
                    origin: 2,
                    seq: 1,
                    count: 1
                },
                OrderRun {
                    origin: 1,
                    seq: 1,
                    count: 1
                }
            ],
            1
        ));
        t.hold(m(1, 1));
        assert!(t.front_held().is_none());
        t.hold(m(2, 1));
        assert_eq!(t.pop().unwrap().rank, 2);
        assert_eq!(t.pop().unwrap().rank, 1);
    }

    #[test]
    fn refuses_a_record_that_skips_positions() {
        let mut t = Total::new();
        assert!(!t.record(
            2,
            &[OrderRun {
                origin: 0,
                seq: 1,
                count: 1
            }],
            1
        ));
    }

    #[test]
    fn drain_all_skips_lost_positions_and_sorts_the_unordered() {
        let mut t = Total::new();
        t.record(
            1,
            &[
                OrderRun {
                    origin: 3,
                    seq: 9,
                    count: 1,
                },
                OrderRun {
                    origin: 2,
                    seq: 4,
                    count: 1,
                },
            ],
            1,
        );
        t.hold(m(2, 4));
        t.hold(m(1, 2));
        t.hold(m(0, 7));
        let out: Vec<_> = t
            .drain_all(&[9, 9, 9, 9], false)
            .iter()
            .map(|x| (x.rank, x.seq))
            .collect();
        assert_eq!(out, vec![(2, 4), (0, 7), (1, 2)]);
    }
}
