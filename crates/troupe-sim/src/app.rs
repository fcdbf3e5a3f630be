//! The replicated application a simulation runs on top of the engines.
//!
//! Every member of a simulated group has one [`SimApp`]: the simulator hands
//! it every delivery, asks it for a snapshot when the engine needs state for
//! a joiner, restores a joiner's from the snapshot received, and records its
//! [`SimApp::digest`] at every view boundary so that the checkers can compare
//! the replicated state of members (S1 state transfer, S2 replicated
//! determinism). Bring your own to test your own state machine under faults;
//! [`LogDigest`] is the default.
//!
//! ```
//! use bytes::Bytes;
//! use troupe_core::{Delivery, MemberId, Ordering, ViewId};
//! use troupe_sim::{LogDigest, SimApp};
//!
//! let d = Delivery {
//!     sender: MemberId::new(1, 1),
//!     ordering: Ordering::Total,
//!     view: ViewId::default(),
//!     payload: Bytes::from(vec![7u8; 40]),
//! };
//! let mut a = LogDigest::default();
//! a.apply(&d);
//! let mut b = LogDigest::default();
//! b.restore(&a.snapshot()).unwrap();
//! assert_eq!((a.count(), a.digest()), (b.count(), b.digest()));
//! ```

use bytes::Bytes;
use troupe_core::Delivery;

use crate::history::History;

/// An application replicated over a simulated group.
///
/// The simulator creates one per process incarnation (through the factory
/// given to [`crate::Simulation::new`]); a joiner's instance starts empty and
/// receives its state through [`SimApp::restore`] before any delivery.
pub trait SimApp {
    /// A delivered message. Every delivery is handed over, whatever its
    /// ordering; replicated state must depend only on `Total` and `Safe`
    /// messages, the only ones delivered in the same order everywhere.
    fn apply(&mut self, d: &Delivery);

    /// The state as of now, to be sent to a joiner.
    fn snapshot(&self) -> Bytes;

    /// Replaces the state with a snapshot taken by [`SimApp::snapshot`] on
    /// another member.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String>;

    /// A digest of the replicated state: equal states give equal digests.
    fn digest(&self) -> u64;
}

/// The default application: a hash chain over the message keys of the
/// delivered `Total` and `Safe` messages, and their count.
///
/// Its snapshot is the count and the chain padded with deterministic bytes to
/// 40-120 KB, so that state transfer goes in several chunks and a chunk lost
/// or misplaced shows up as a refused or different state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogDigest {
    count: u64,
    chain: u64,
}

/// Snapshot header: count, chain, padding length.
const SNAPSHOT_HEADER_BYTES: usize = 20;
/// Smallest padding: with the simulator's 8 KiB chunks, at least 5 chunks.
const SNAPSHOT_PAD_MIN: u64 = 40_000;
/// Padding spread above the minimum (so the size varies with the state).
const SNAPSHOT_PAD_SPREAD: u64 = 80_000;

impl LogDigest {
    /// How many `Total`/`Safe` messages were applied.
    pub fn count(&self) -> u64 {
        self.count
    }

    fn pad_byte(chain: u64, i: usize) -> u8 {
        (chain >> ((i % 8) * 8)) as u8 ^ (i as u8).wrapping_mul(31)
    }
}

/// One step of a 64-bit hash chain.
fn chain_step(h: u64, w: u64) -> u64 {
    let mut z = (h ^ w).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl SimApp for LogDigest {
    fn apply(&mut self, d: &Delivery) {
        if !d.ordering.is_totally_ordered() {
            return;
        }
        // Keyed by the message, not its bytes: the chain says which messages
        // were applied in which order, which is what S2 compares.
        let (node, inc, n) = match History::key_of(&d.payload) {
            Some(k) => (k.sender.node, k.sender.incarnation, k.n),
            None => (u64::MAX, u64::MAX, crate::history::digest64(&d.payload)),
        };
        self.chain = chain_step(chain_step(chain_step(self.chain, node), inc), n);
        self.count += 1;
    }

    fn snapshot(&self) -> Bytes {
        let pad = (SNAPSHOT_PAD_MIN + self.chain % SNAPSHOT_PAD_SPREAD) as usize;
        let mut out = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + pad);
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.chain.to_le_bytes());
        out.extend_from_slice(&(pad as u32).to_le_bytes());
        out.extend((0..pad).map(|i| Self::pad_byte(self.chain, i)));
        Bytes::from(out)
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        if snapshot.len() < SNAPSHOT_HEADER_BYTES {
            return Err(format!(
                "snapshot of {} bytes is shorter than its header",
                snapshot.len()
            ));
        }
        let word = |i: usize| u64::from_le_bytes(snapshot[i..i + 8].try_into().expect("8 bytes"));
        let count = word(0);
        let chain = word(8);
        let pad = u32::from_le_bytes(snapshot[16..20].try_into().expect("4 bytes")) as usize;
        let body = &snapshot[SNAPSHOT_HEADER_BYTES..];
        if body.len() != pad {
            return Err(format!(
                "snapshot padding is {} bytes, its header says {pad}",
                body.len()
            ));
        }
        if let Some(i) = body
            .iter()
            .enumerate()
            .position(|(i, b)| *b != Self::pad_byte(chain, i))
        {
            return Err(format!("snapshot padding differs at byte {i}"));
        }
        self.count = count;
        self.chain = chain;
        Ok(())
    }

    fn digest(&self) -> u64 {
        chain_step(self.chain, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe_core::{MemberId, Ordering, ViewId};

    fn delivery(ordering: Ordering, n: u64) -> Delivery {
        let mut payload = vec![0u8; 30];
        payload[16..24].copy_from_slice(&n.to_le_bytes());
        Delivery {
            sender: MemberId::new(0, 1),
            ordering,
            view: ViewId::default(),
            payload: Bytes::from(payload),
        }
    }

    #[test]
    fn only_total_and_safe_messages_change_the_state() {
        let mut a = LogDigest::default();
        let before = a.digest();
        a.apply(&delivery(Ordering::Fifo, 1));
        a.apply(&delivery(Ordering::Causal, 2));
        assert_eq!(a.digest(), before);
        a.apply(&delivery(Ordering::Safe, 3));
        assert_ne!(a.digest(), before);
        assert_eq!(a.count(), 1);
    }

    #[test]
    fn order_matters() {
        let (mut a, mut b) = (LogDigest::default(), LogDigest::default());
        a.apply(&delivery(Ordering::Total, 1));
        a.apply(&delivery(Ordering::Total, 2));
        b.apply(&delivery(Ordering::Total, 2));
        b.apply(&delivery(Ordering::Total, 1));
        assert_ne!(a.digest(), b.digest());
    }

    #[test]
    fn snapshot_round_trips_and_damage_is_refused() {
        let mut a = LogDigest::default();
        a.apply(&delivery(Ordering::Total, 9));
        let s = a.snapshot();
        assert!((40_000..=120_100).contains(&s.len()));
        let mut b = LogDigest::default();
        b.restore(&s).unwrap();
        assert_eq!(a, b);
        let mut bad = s.to_vec();
        bad[5_000] ^= 1;
        assert!(LogDigest::default().restore(&bad).is_err());
        assert!(LogDigest::default().restore(&s[..s.len() - 1]).is_err());
        assert!(LogDigest::default().restore(&s[..3]).is_err());
    }
}
