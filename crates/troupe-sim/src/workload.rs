//! What the simulated application does: multicasts of every ordering, leaves
//! and rejoins, group queries.
//!
//! Every member sends at [`Workload::send_rate`] (exponential gaps), each
//! message with an ordering drawn uniformly from the six. Payloads are mostly
//! small (`payload_min..=payload_max` bytes) with an occasional large one
//! that the engine must fragment; the first 24 bytes of every payload are its
//! [`MsgKey`], the rest filler from the run's generator.

use std::time::Duration;

use bytes::Bytes;
use rand::{Rng as _, RngCore};
use troupe_core::{Ordering, QueryQuorum};

use crate::history::{History, MsgKey};
use crate::net::duration_ns;
use crate::rng::{exp_ns, SimRng};

/// The workload's knobs. [`Workload::default`] is a moderate load that keeps
/// a 5-member run fast; raise `send_rate` for a load test.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Messages per second each member sends (0: none).
    pub send_rate: f64,
    /// Smallest payload, in bytes (at least 24: the message key).
    pub payload_min: usize,
    /// Largest ordinary payload, in bytes.
    pub payload_max: usize,
    /// One message in this many is large (0: never).
    pub large_one_in: u32,
    /// Smallest large payload, in bytes.
    pub large_min: usize,
    /// Largest large payload, in bytes.
    pub large_max: usize,
    /// Mean time between two voluntary leaves in the whole group, during the
    /// chaos window (None: no leaves). A member that left starts again as a
    /// new incarnation a little later.
    pub leave_interval: Option<Duration>,
    /// Mean time between two group queries of one member (None: no queries).
    pub query_interval: Option<Duration>,
    /// How long a sender waits before retrying a send refused with
    /// `WouldBlock` (back-pressure).
    pub retry_after: Duration,
}

impl Default for Workload {
    /// 40 messages per second per member, 24-200 bytes, one in 400 of
    /// 100-300 KB; a leave every 8 s; a query every 2 s per member.
    fn default() -> Self {
        Workload {
            send_rate: 40.0,
            payload_min: 24,
            payload_max: 200,
            large_one_in: 400,
            large_min: 100_000,
            large_max: 300_000,
            leave_interval: Some(Duration::from_secs(8)),
            query_interval: Some(Duration::from_secs(2)),
            retry_after: Duration::from_millis(10),
        }
    }
}

/// Bytes of the message key at the start of every payload.
pub(crate) const KEY_BYTES: usize = 24;

impl Workload {
    /// The gap until a member's next send, or None if it does not send.
    pub(crate) fn next_send_gap_ns(&self, rng: &mut SimRng) -> Option<u64> {
        if self.send_rate.is_nan() || self.send_rate <= 0.0 {
            return None;
        }
        let mean = (1e9 / self.send_rate).max(1.0) as u64;
        Some(exp_ns(rng, mean).max(1))
    }

    /// The gap until a member's next query, if it makes queries.
    pub(crate) fn next_query_gap_ns(&self, rng: &mut SimRng) -> Option<u64> {
        self.query_interval
            .map(|d| exp_ns(rng, duration_ns(d)).max(1))
    }

    /// The gap until the next leave in the group, if members leave.
    pub(crate) fn next_leave_gap_ns(&self, rng: &mut SimRng) -> Option<u64> {
        self.leave_interval
            .map(|d| exp_ns(rng, duration_ns(d)).max(1))
    }

    /// An ordering, uniformly.
    pub(crate) fn ordering(&self, rng: &mut SimRng) -> Ordering {
        Ordering::ALL[rng.random_range(0..Ordering::ALL.len())]
    }

    /// A payload for `key`: the key, then filler. `small_max` bounds the size
    /// (unreliable messages must fit one datagram).
    pub(crate) fn payload(&self, rng: &mut SimRng, key: MsgKey, small_only: bool) -> Bytes {
        let large =
            !small_only && self.large_one_in > 0 && rng.random_range(0..self.large_one_in) == 0;
        let (lo, hi) = if large {
            (self.large_min, self.large_max)
        } else {
            (self.payload_min, self.payload_max)
        };
        let lo = lo.max(KEY_BYTES);
        let len = if hi > lo {
            rng.random_range(lo..=hi)
        } else {
            lo
        };
        let mut buf = vec![0u8; len];
        History::write_key(key, &mut buf);
        rng.fill_bytes(&mut buf[KEY_BYTES..]);
        Bytes::from(buf)
    }

    /// A quorum for a query in a view of `members` members.
    pub(crate) fn quorum(&self, rng: &mut SimRng, members: usize) -> QueryQuorum {
        match rng.random_range(0..3) {
            0 => QueryQuorum::All,
            1 => QueryQuorum::Majority,
            _ => QueryQuorum::Count(rng.random_range(1..=members.max(1)) as u32),
        }
    }

    /// An ordering for a query (every one that can carry a query).
    pub(crate) fn query_ordering(&self, rng: &mut SimRng) -> Ordering {
        Ordering::ALL[rng.random_range(1..Ordering::ALL.len())]
    }
}
