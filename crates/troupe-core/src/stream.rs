//! Reliable FIFO streams: one per sender per view. Sequence numbers, gap
//! detection, duplicate suppression, and the store that serves
//! retransmissions until a message is stable.

use std::collections::VecDeque;

use crate::types::Time;
use crate::wire::Body;

/// One received (or sent) message of a stream.
#[derive(Clone, Debug)]
pub(crate) struct Msg {
    pub body: Body,
    /// Payload bytes, for window accounting.
    pub len: usize,
}

/// The messages of one sender in one view.
#[derive(Debug)]
pub(crate) struct Stream {
    /// Sequence number of `slots[0]`. Everything below has been garbage
    /// collected (stable and processed).
    base: u64,
    slots: VecDeque<Option<Msg>>,
    /// Highest sequence number held with no gap below it (0: none).
    pub contig: u64,
    /// Highest sequence number known to exist.
    pub highest: u64,
    /// Highest sequence number handed to the delivery stage (`<= contig`).
    pub processed: u64,
    /// Earliest time at which a retransmission may be requested again.
    pub nak_due: Option<Time>,
}

/// Most messages of one sender held beyond the contiguous prefix: a bound on
/// what a hostile or buggy sender can make a receiver store (a multiple of the
/// largest window a sender may use).
pub(crate) const AHEAD_MAX: u64 = 1 << 17;

impl Stream {
    pub fn new() -> Stream {
        Stream {
            base: 1,
            slots: VecDeque::new(),
            contig: 0,
            highest: 0,
            processed: 0,
            nak_due: None,
        }
    }

    /// Stores a message. Returns false for a duplicate, an already collected
    /// sequence number, or one too far ahead.
    pub fn insert(&mut self, seq: u64, msg: Msg) -> bool {
        if seq < self.base || seq == 0 || seq > self.contig.saturating_add(AHEAD_MAX) {
            return false;
        }
        let idx = (seq - self.base) as usize;
        if idx >= self.slots.len() {
            self.slots.resize_with(idx + 1, || None);
        }
        if self.slots[idx].is_some() {
            return false;
        }
        self.slots[idx] = Some(msg);
        self.highest = self.highest.max(seq);
        if seq == self.contig + 1 {
            let mut s = seq;
            while self.get(s + 1).is_some() {
                s += 1;
            }
            self.contig = s;
        }
        true
    }

    /// The message with this sequence number, if held.
    pub fn get(&self, seq: u64) -> Option<&Msg> {
        if seq < self.base {
            return None;
        }
        self.slots.get((seq - self.base) as usize)?.as_ref()
    }

    /// Whether a message has been held (now or before collection).
    pub fn has(&self, seq: u64) -> bool {
        seq < self.base || self.get(seq).is_some()
    }

    /// Drops messages up to `upto` (stable and processed). Returns the payload
    /// bytes freed.
    pub fn collect(&mut self, upto: u64) -> usize {
        debug_assert!(upto <= self.contig);
        let mut freed = 0;
        while self.base <= upto {
            match self.slots.pop_front() {
                Some(Some(m)) => freed += m.len,
                Some(None) => debug_assert!(false, "hole below contig"),
                None => break,
            }
            self.base += 1;
        }
        freed
    }

    /// Number of messages held.
    pub fn held(&self) -> usize {
        self.slots.len()
    }

    /// The missing sequence numbers in `(contig, highest]`, as inclusive
    /// ranges, at most `ranges_max` of them.
    pub fn missing(&self, ranges_max: usize) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        // Nothing is held at or past `end`: a gap that reaches it runs to
        // `highest` in one step, however far away `highest` is.
        let end = self.base.saturating_add(self.slots.len() as u64);
        let mut s = self.contig + 1;
        while s <= self.highest && out.len() < ranges_max {
            if self.has(s) {
                s += 1;
                continue;
            }
            let first = s;
            let last = if s >= end {
                self.highest
            } else {
                let mut t = s;
                while t < self.highest && t + 1 < end && !self.has(t + 1) {
                    t += 1;
                }
                if t + 1 >= end && t < self.highest {
                    self.highest
                } else {
                    t
                }
            };
            out.push((first, last));
            if last >= self.highest {
                break;
            }
            s = last + 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> Msg {
        Msg {
            body: Body::Order {
                first: 1,
                runs: vec![],
            },
            len: 1,
        }
    }

    #[test]
    fn contig_advances_over_filled_gap() {
        let mut s = Stream::new();
        assert!(s.insert(1, msg()));
        assert!(s.insert(3, msg()));
        assert_eq!(s.contig, 1);
        assert_eq!(s.missing(8), vec![(2, 2)]);
        assert!(s.insert(2, msg()));
        assert_eq!(s.contig, 3);
        assert!(s.missing(8).is_empty());
    }

    #[test]
    fn duplicates_and_collected_are_refused() {
        let mut s = Stream::new();
        assert!(s.insert(1, msg()));
        assert!(!s.insert(1, msg()));
        s.processed = 1;
        assert_eq!(s.collect(1), 1);
        assert!(!s.insert(1, msg()));
        assert!(s.has(1));
        assert!(s.get(1).is_none());
    }

    #[test]
    fn far_ahead_is_refused() {
        let mut s = Stream::new();
        assert!(!s.insert(AHEAD_MAX + 5, msg()));
        assert!(!s.insert(0, msg()));
    }

    #[test]
    fn missing_reports_ranges_up_to_highest() {
        let mut s = Stream::new();
        s.insert(2, msg());
        s.insert(5, msg());
        s.highest = 7;
        assert_eq!(s.missing(8), vec![(1, 1), (3, 4), (6, 7)]);
        assert_eq!(s.missing(1), vec![(1, 1)]);
    }

    #[test]
    fn missing_is_quick_when_highest_is_far_away() {
        let mut s = Stream::new();
        s.insert(3, msg());
        s.highest = u64::MAX;
        assert_eq!(s.missing(8), vec![(1, 2), (4, u64::MAX)]);
        let mut e = Stream::new();
        e.highest = u64::MAX;
        assert_eq!(e.missing(8), vec![(1, u64::MAX)]);
    }
}
