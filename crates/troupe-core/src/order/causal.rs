//! Causal delivery with vector timestamps over the view's ranks.
//!
//! `delivered[r]` counts the causal messages of rank `r` delivered here. A
//! message stamped `vt` from rank `r` is deliverable when `vt[r] ==
//! delivered[r] + 1` and `vt[k] <= delivered[k]` for every other `k`: every
//! causal message that happened before it has been delivered.

use super::AppMsg;

#[derive(Debug)]
pub(crate) struct Causal {
    delivered: Vec<u64>,
    pending: Vec<(Vec<u64>, AppMsg)>,
}

impl Causal {
    pub fn new(ranks: usize) -> Causal {
        Causal {
            delivered: vec![0; ranks],
            pending: Vec::new(),
        }
    }

    /// The timestamp for this member's next causal message.
    pub fn stamp(&self, me: usize) -> Vec<u64> {
        let mut vt = self.delivered.clone();
        vt[me] += 1;
        vt
    }

    fn deliverable(&self, vt: &[u64], rank: usize) -> bool {
        vt.len() == self.delivered.len()
            && vt[rank] == self.delivered[rank] + 1
            && vt
                .iter()
                .zip(&self.delivered)
                .enumerate()
                .all(|(k, (v, d))| k == rank || v <= d)
    }

    /// Accepts a message; returns the messages now deliverable, in a causal order.
    pub fn push(&mut self, vt: Vec<u64>, msg: AppMsg, ignore_clock: bool) -> Vec<AppMsg> {
        let mut out = Vec::new();
        if ignore_clock {
            out.push(msg);
            return out;
        }
        self.pending.push((vt, msg));
        self.drain(&mut out);
        out
    }

    fn drain(&mut self, out: &mut Vec<AppMsg>) {
        loop {
            let Some(i) = self
                .pending
                .iter()
                .position(|(vt, m)| self.deliverable(vt, m.rank as usize))
            else {
                return;
            };
            let (_, m) = self.pending.swap_remove(i);
            self.delivered[m.rank as usize] += 1;
            out.push(m);
        }
    }

    /// At the end of a view: the messages still waiting (their causal past is
    /// lost with a crashed sender), in an order consistent with causality and
    /// the same at every member: by the sum of the timestamp, then rank.
    pub fn drain_all(&mut self, cut: &[u64]) -> Vec<AppMsg> {
        let mut out = Vec::new();
        self.drain(&mut out);
        let mut rest: Vec<_> = std::mem::take(&mut self.pending);
        rest.retain(|(_, m)| cut.get(m.rank as usize).is_some_and(|c| m.seq <= *c));
        rest.sort_by_key(|(vt, m)| (vt.iter().sum::<u64>(), m.rank, m.seq));
        out.extend(rest.into_iter().map(|(_, m)| m));
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
            ordering: Ordering::Causal,
            query: None,
            payload: Bytes::new(),
            arrival: 0,
        }
    }

    #[test]
    fn waits_for_causal_past_from_another_sender() {
        let mut c = Causal::new(3);
        // Rank 1 sent its message after delivering rank 0's first one.
        assert!(c.push(vec![1, 1, 0], m(1, 1), false).is_empty());
        let out = c.push(vec![1, 0, 0], m(0, 1), false);
        assert_eq!(out.iter().map(|x| x.rank).collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn stamp_counts_own_messages() {
        let mut c = Causal::new(2);
        let vt = c.stamp(1);
        assert_eq!(vt, vec![0, 1]);
        assert_eq!(c.push(vt, m(1, 1), false).len(), 1);
        assert_eq!(c.stamp(1), vec![0, 2]);
    }

    #[test]
    fn drain_all_respects_causality_among_orphans() {
        let mut c = Causal::new(3);
        // Both depend on a lost message of rank 0; the second also on the first.
        c.push(vec![1, 0, 1], m(2, 1), false);
        c.push(vec![1, 1, 1], m(1, 1), false);
        let out = c.drain_all(&[9, 9, 9]);
        assert_eq!(out.iter().map(|x| x.rank).collect::<Vec<_>>(), vec![2, 1]);
    }

    #[test]
    fn ignoring_the_clock_delivers_at_once() {
        let mut c = Causal::new(2);
        assert_eq!(c.push(vec![5, 5], m(1, 1), true).len(), 1);
    }
}
