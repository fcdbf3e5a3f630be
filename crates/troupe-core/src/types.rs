//! The nouns of the protocol: time, members, views, orderings.

use std::fmt;
use std::time::Duration;

/// A point in time, in nanoseconds since an origin the driver chooses.
///
/// The engine never reads a clock: every input carries `now`. The simulator
/// passes virtual time, the runtime passes time since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    /// The origin.
    pub const ZERO: Time = Time(0);
    /// A time later than every other; used for "no deadline".
    pub const MAX: Time = Time(u64::MAX);

    /// Nanoseconds since the origin.
    pub fn as_nanos(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating at [`Time::MAX`].
    pub fn plus(self, d: Duration) -> Time {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Time(self.0.saturating_add(nanos))
    }

    /// `self - earlier`, or zero if `earlier` is later.
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:06}s",
            self.0 / 1_000_000_000,
            (self.0 % 1_000_000_000) / 1_000
        )
    }
}

/// One process incarnation. A process that is excluded never returns under
/// the same id: it rejoins with a higher `incarnation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MemberId {
    /// The stable identity of the process (a node number, chosen by the driver).
    pub node: u64,
    /// Increases every time the node (re)joins.
    pub incarnation: u64,
}

impl MemberId {
    /// A member id.
    pub const fn new(node: u64, incarnation: u64) -> MemberId {
        MemberId { node, incarnation }
    }

    /// Stands for "whoever listens at this address": used as the destination
    /// of a join request sent to a contact whose id is not known yet.
    pub const UNKNOWN: MemberId = MemberId {
        node: u64::MAX,
        incarnation: u64::MAX,
    };
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}.{}", self.node, self.incarnation)
    }
}

/// The identity of a view: an epoch that grows strictly, ties broken by the
/// member that proposed the view. Ordered by `(epoch, coord)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ViewId {
    /// Grows strictly from one view to the next.
    pub epoch: u64,
    /// The member that proposed the view.
    pub coord: MemberId,
}

impl fmt::Display for ViewId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}@{}", self.epoch, self.coord)
    }
}

/// A driver-defined address (a socket address in the runtime, a node number in
/// the simulator). The engine only stores and returns it.
pub type Addr = bytes::Bytes;

/// A membership view: an id and the members, oldest first. The oldest member
/// coordinates.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct View {
    /// The view's id.
    pub id: ViewId,
    /// The members, oldest first.
    pub members: Vec<MemberId>,
    /// `addrs[i]` is the address of `members[i]`.
    pub addrs: Vec<Addr>,
}

impl View {
    /// The coordinator: the oldest member.
    pub fn coordinator(&self) -> MemberId {
        self.members[0]
    }

    /// The position of `m` in the member list, if it is a member.
    pub fn rank(&self, m: MemberId) -> Option<usize> {
        self.members.iter().position(|x| *x == m)
    }

    /// Whether `m` is a member.
    pub fn contains(&self, m: MemberId) -> bool {
        self.rank(m).is_some()
    }

    /// The smallest number of members that is more than half of this view.
    pub fn majority(&self) -> usize {
        self.members.len() / 2 + 1
    }
}

/// How a multicast is ordered and how reliable it is. Each is stronger than the
/// one before it; see `GUARANTEES.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Ordering {
    /// Best effort: may be lost, never duplicated or invented.
    Unreliable = 0,
    /// View-synchronous atomic delivery, no order promised.
    Reliable = 1,
    /// Per-sender send order.
    Fifo = 2,
    /// Happened-before order (vector clocks).
    Causal = 3,
    /// One order at all members, consistent with `Fifo`.
    Total = 4,
    /// `Total`, and delivered nowhere until every view member holds it.
    Safe = 5,
}

impl Ordering {
    /// All orderings, weakest first.
    pub const ALL: [Ordering; 6] = [
        Ordering::Unreliable,
        Ordering::Reliable,
        Ordering::Fifo,
        Ordering::Causal,
        Ordering::Total,
        Ordering::Safe,
    ];

    /// The ordering with this wire code.
    pub fn from_u8(code: u8) -> Option<Ordering> {
        Ordering::ALL.get(code as usize).copied()
    }

    /// Lower-case name, as used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Ordering::Unreliable => "unreliable",
            Ordering::Reliable => "reliable",
            Ordering::Fifo => "fifo",
            Ordering::Causal => "causal",
            Ordering::Total => "total",
            Ordering::Safe => "safe",
        }
    }

    /// Whether messages of this ordering go through the sequencer.
    pub fn is_totally_ordered(self) -> bool {
        matches!(self, Ordering::Total | Ordering::Safe)
    }
}

impl fmt::Display for Ordering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Ordering {
    type Err = String;
    fn from_str(s: &str) -> Result<Ordering, String> {
        Ordering::ALL
            .iter()
            .copied()
            .find(|o| o.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown ordering {s:?}: expected unreliable, reliable, fifo, causal, total or safe")
            })
    }
}

/// How many replies a group query waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryQuorum {
    /// Every member of the view (members that leave are reported, not waited for).
    All,
    /// More than half of the view.
    Majority,
    /// This many members.
    Count(u32),
}

/// Identifies a query: the asking member and its local counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueryId {
    /// The member that asked.
    pub asker: MemberId,
    /// The asker's counter.
    pub n: u64,
}

/// Stands for "no mutant" in builds without the `mutants` feature.
#[cfg(not(feature = "mutants"))]
#[derive(Clone, Copy, Debug)]
pub(crate) struct NoMutant;
