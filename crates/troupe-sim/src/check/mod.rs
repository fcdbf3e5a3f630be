//! Checkers: one per property of `GUARANTEES.md`, over a recorded [`History`].
//!
//! (Work in progress: the checkers land here.)

use serde::Serialize;

use crate::history::{History, MemberIdRepr, MsgKey, ViewIdRepr};

/// A property of `GUARANTEES.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Property {
    /// M1 view agreement.
    M1,
    /// M2 view order.
    M2,
    /// M3 primary continuity.
    M3,
    /// M4 liveness of membership.
    M4,
    /// V1 integrity.
    V1,
    /// V2 sending view.
    V2,
    /// V3 virtual synchrony.
    V3,
    /// V4 self delivery.
    V4,
    /// V5 liveness of delivery.
    V5,
    /// O1 fifo.
    O1,
    /// O2 causal.
    O2,
    /// O3 total.
    O3,
    /// O4 uniformity (safe).
    O4,
    /// S1 state transfer.
    S1,
    /// S2 replicated determinism.
    S2,
}

/// One broken promise, with what is needed to understand it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Which property.
    pub property: Property,
    /// The members involved.
    pub members: Vec<MemberIdRepr>,
    /// The messages involved.
    pub messages: Vec<MsgKey>,
    /// The view involved, if any.
    pub view: Option<ViewIdRepr>,
    /// When it became visible (ns), if known.
    pub time_ns: Option<u64>,
    /// A sentence saying what went wrong.
    pub detail: String,
}

/// The result of checking a history.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Every violation found.
    pub violations: Vec<Violation>,
}

/// Runs every checker on `history`.
pub fn check_all(history: &History) -> Report {
    let _ = history;
    Report::default()
}
