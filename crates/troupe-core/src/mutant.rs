//! Deliberately broken protocol variants. Compiled only with the `mutants`
//! feature; each one must be caught by a checker of `troupe-sim`.

/// A broken variant of the protocol, selected through `Config::mutant`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mutant {
    /// View change without flush: the coordinator closes the view on its own
    /// holdings, and members install without fetching what they miss.
    SkipFlush,
    /// The cut is the coordinator's own holdings, not the union of survivors'.
    CutWithoutUnion,
    /// Causal messages are delivered in FIFO order, ignoring the vector clock.
    IgnoreVectorClock,
    /// `Safe` messages are delivered as soon as ordered, before stability.
    SafeBeforeStable,
    /// An excluded member rejoins under its old incarnation.
    ReadmitIncarnation,
    /// A view is committed without a majority of the previous one.
    CommitWithoutMajority,
    /// The state snapshot is taken after the first delivery of the new view.
    SnapshotOffBoundary,
    /// A retransmitted message is delivered again.
    DeliverRetransmitTwice,
    /// At flush, unordered `Total` messages are delivered in local arrival
    /// order instead of one deterministic order.
    LocalFlushOrder,
    /// `Fifo` messages are delivered as they arrive, ignoring gaps.
    FifoOnArrival,
    /// Sends issued during a view change are dropped instead of held.
    DropHeldSends,
    /// Suspected members are never excluded.
    NeverExclude,
    /// Messages received for an older view are delivered in the current one.
    DeliverInWrongView,
    /// A member hands on any mark numbered other than the last one it
    /// handed on, older ones included.
    MarkOutOfOrder,
}

impl Mutant {
    /// All mutants.
    pub const ALL: [Mutant; 14] = [
        Mutant::SkipFlush,
        Mutant::CutWithoutUnion,
        Mutant::IgnoreVectorClock,
        Mutant::SafeBeforeStable,
        Mutant::ReadmitIncarnation,
        Mutant::CommitWithoutMajority,
        Mutant::SnapshotOffBoundary,
        Mutant::DeliverRetransmitTwice,
        Mutant::LocalFlushOrder,
        Mutant::FifoOnArrival,
        Mutant::DropHeldSends,
        Mutant::NeverExclude,
        Mutant::DeliverInWrongView,
        Mutant::MarkOutOfOrder,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mutant::SkipFlush => "skip-flush",
            Mutant::CutWithoutUnion => "cut-without-union",
            Mutant::IgnoreVectorClock => "ignore-vector-clock",
            Mutant::SafeBeforeStable => "safe-before-stable",
            Mutant::ReadmitIncarnation => "readmit-incarnation",
            Mutant::CommitWithoutMajority => "commit-without-majority",
            Mutant::SnapshotOffBoundary => "snapshot-off-boundary",
            Mutant::DeliverRetransmitTwice => "deliver-retransmit-twice",
            Mutant::LocalFlushOrder => "local-flush-order",
            Mutant::FifoOnArrival => "fifo-on-arrival",
            Mutant::DropHeldSends => "drop-held-sends",
            Mutant::NeverExclude => "never-exclude",
            Mutant::DeliverInWrongView => "deliver-in-wrong-view",
            Mutant::MarkOutOfOrder => "mark-out-of-order",
        }
    }

    /// The mutant with this name.
    pub fn from_name(name: &str) -> Option<Mutant> {
        Mutant::ALL.iter().copied().find(|m| m.name() == name)
    }
}
