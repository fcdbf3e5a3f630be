//! Delivery orderings: vector clocks for `Causal`, a sequencer for `Total` and
//! `Safe`. `Reliable` and `Fifo` need no state beyond the per-sender stream.

pub(crate) mod causal;
pub(crate) mod total;

use bytes::Bytes;

use crate::types::Ordering;

/// A whole application message (fragments reassembled), ready for its
/// ordering's delivery rule.
#[derive(Clone, Debug)]
pub(crate) struct AppMsg {
    /// Rank of the sender in the view.
    pub rank: u32,
    /// Sequence number of its last fragment.
    pub seq: u64,
    pub ordering: Ordering,
    pub query: Option<u64>,
    pub payload: Bytes,
    /// Local arrival counter (used only by a mutant).
    pub arrival: u64,
}
