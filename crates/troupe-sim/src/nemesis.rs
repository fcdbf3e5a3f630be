//! The nemesis: which faults a run injects, and when.
//!
//! A [`Nemesis`] is a set of [`FaultKind`]s (`--nemesis all`, `none`, or a
//! list such as `crash,pause,one-way`). From it and the seed, the simulator
//! plans a fault schedule over the chaos window `[warmup, duration - heal)`:
//! fault start times, kinds and durations are fixed in advance; which nodes a
//! fault hits is chosen when it starts, among the nodes that are healthy then,
//! and a fault that would leave less than a majority healthy is skipped, so a
//! majority can always make progress. Then comes the healing period: every
//! partition removed, loss and duplication off, paused nodes resumed, no new
//! faults.
//!
//! ```
//! use troupe_sim::nemesis::{FaultKind, Nemesis};
//!
//! let n: Nemesis = "crash,one-way".parse().unwrap();
//! assert!(n.contains(FaultKind::Crash) && !n.contains(FaultKind::Pause));
//! assert_eq!(n.to_string(), "crash,one-way");
//! assert_eq!("all".parse::<Nemesis>().unwrap(), Nemesis::ALL);
//! assert!("crush".parse::<Nemesis>().unwrap_err().contains("crash"));
//! ```

use std::fmt;
use std::str::FromStr;

use rand::Rng as _;

use crate::rng::{between, exp_ns, SimRng};

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// kill -9: the process is gone, its in-flight datagrams still arrive and
    /// nobody listens. With [`FaultKind::Restart`] enabled too, the node
    /// comes back as a new incarnation after a few seconds (at the latest when
    /// the healing period starts); without it, it stays down.
    Crash,
    /// A quick reboot: kill -9, then a new incarnation starts within a second
    /// and joins (often before the old one has been excluded).
    Restart,
    /// The process freezes (no timers, no input), then resumes with a backlog
    /// of datagrams, time having moved on.
    Pause,
    /// A symmetric partition cuts a minority off from the rest.
    Partition,
    /// A one-way partition: a minority cannot send to the rest (or cannot
    /// hear from it), the other direction works.
    OneWay,
    /// The coordinator (the first member of the most recent view) is cut off
    /// from everybody.
    IsolateCoordinator,
    /// The link between two nodes goes down and up every few hundred
    /// milliseconds.
    Flap,
    /// Some links, or all, lose a share of their datagrams (besides a small
    /// base loss throughout the chaos window).
    Loss,
    /// Some links, or all, deliver a share of their datagrams twice.
    Duplicate,
    /// Each node's clock runs at its own rate in [0.98, 1.02] from its own
    /// origin, for the whole run.
    Skew,
}

impl FaultKind {
    /// Every kind, in the order of the command line's help.
    pub const ALL: [FaultKind; 10] = [
        FaultKind::Crash,
        FaultKind::Restart,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::OneWay,
        FaultKind::IsolateCoordinator,
        FaultKind::Flap,
        FaultKind::Loss,
        FaultKind::Duplicate,
        FaultKind::Skew,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Crash => "crash",
            FaultKind::Restart => "restart",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::OneWay => "one-way",
            FaultKind::IsolateCoordinator => "isolate-coordinator",
            FaultKind::Flap => "flap",
            FaultKind::Loss => "loss",
            FaultKind::Duplicate => "duplicate",
            FaultKind::Skew => "skew",
        }
    }

    /// The kind with this name.
    pub fn from_name(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.iter().copied().find(|k| k.name() == name)
    }

    /// Whether the kind is injected at moments of the schedule (all but
    /// skew, which holds for the whole run).
    fn is_timed(self) -> bool {
        self != FaultKind::Skew
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of fault kinds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Nemesis(u16);

impl Nemesis {
    /// No fault at all: the network still reorders, nothing else.
    pub const NONE: Nemesis = Nemesis(0);
    /// Every kind of fault.
    pub const ALL: Nemesis = Nemesis((1 << FaultKind::ALL.len()) - 1);

    /// This set with `kind` added.
    pub fn with(self, kind: FaultKind) -> Nemesis {
        Nemesis(self.0 | kind.bit())
    }

    /// This set without `kind`.
    pub fn without(self, kind: FaultKind) -> Nemesis {
        Nemesis(self.0 & !kind.bit())
    }

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: FaultKind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_none(self) -> bool {
        self.0 == 0
    }

    /// The kinds in the set, in [`FaultKind::ALL`] order.
    pub fn kinds(self) -> impl Iterator<Item = FaultKind> {
        FaultKind::ALL
            .into_iter()
            .filter(move |k| self.contains(*k))
    }
}

impl fmt::Display for Nemesis {
    /// `all`, `none`, or the kinds separated by commas.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Nemesis::ALL {
            return f.write_str("all");
        }
        if self.is_none() {
            return f.write_str("none");
        }
        let names: Vec<&str> = self.kinds().map(FaultKind::name).collect();
        f.write_str(&names.join(","))
    }
}

impl FromStr for Nemesis {
    type Err = String;

    /// `all`, `none`, or a comma-separated list of kind names.
    fn from_str(s: &str) -> Result<Nemesis, String> {
        let s = s.trim();
        match s {
            "all" => return Ok(Nemesis::ALL),
            "none" => return Ok(Nemesis::NONE),
            _ => {}
        }
        let mut set = Nemesis::NONE;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match FaultKind::from_name(part) {
                Some(k) => set = set.with(k),
                None => {
                    let valid: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                    return Err(format!(
                        "unknown fault {part:?}: expected all, none, or a comma-separated list of {}",
                        valid.join(", ")
                    ));
                }
            }
        }
        if set.is_none() {
            return Err("empty fault list: say `none` for no faults".to_string());
        }
        Ok(set)
    }
}

/// A fault planned at a moment of the schedule; its targets are chosen when
/// it starts.
#[derive(Clone, Debug)]
pub(crate) struct Planned {
    pub kind: FaultKind,
    pub start_ns: u64,
    /// How long it lasts (for a crash: until the restart, if restarts are
    /// enabled; see `permanent`).
    pub length_ns: u64,
    /// A crash without restarts: the node stays down.
    pub permanent: bool,
    /// Loss or duplication rate, in ppm.
    pub rate_ppm: u32,
    /// Whether loss or duplication hits every link (else one node's links).
    pub everywhere: bool,
    /// Flapping period.
    pub period_ns: u64,
    /// How many nodes the fault would like to hit (partitions, pauses),
    /// trimmed to what the majority rule allows.
    pub width: usize,
}

/// Durations, in milliseconds, of each kind of fault: long enough to matter
/// against the engine's 500 ms suspicion timeout in the simulator's engine
/// config, short enough that a 20 s chaos window holds a dozen of them.
fn length_range_ms(kind: FaultKind) -> (u64, u64) {
    match kind {
        // Down time before the restart.
        FaultKind::Crash => (1_000, 5_000),
        // A reboot: often faster than the failure detector.
        FaultKind::Restart => (0, 1_000),
        // Short pauses are survived without exclusion, long ones are not.
        FaultKind::Pause => (100, 3_000),
        FaultKind::Partition | FaultKind::OneWay | FaultKind::IsolateCoordinator => (500, 4_000),
        FaultKind::Flap => (1_000, 4_000),
        FaultKind::Loss | FaultKind::Duplicate => (1_000, 5_000),
        FaultKind::Skew => (0, 0),
    }
}

/// Plans the faults of `nemesis` over `[from_ns, until_ns)`, one every
/// `mean_gap_ns` on average.
pub(crate) fn plan(
    nemesis: Nemesis,
    from_ns: u64,
    until_ns: u64,
    mean_gap_ns: u64,
    rng: &mut SimRng,
) -> Vec<Planned> {
    let kinds: Vec<FaultKind> = nemesis.kinds().filter(|k| k.is_timed()).collect();
    let mut out = Vec::new();
    if kinds.is_empty() || mean_gap_ns == 0 {
        return out;
    }
    let mut t = from_ns;
    loop {
        t = t.saturating_add(exp_ns(rng, mean_gap_ns).max(1));
        if t >= until_ns {
            break;
        }
        let kind = kinds[rng.random_range(0..kinds.len())];
        let (lo, hi) = length_range_ms(kind);
        let length_ns = between(rng, lo, hi) * 1_000_000;
        let rate_ppm = match kind {
            FaultKind::Loss => rng.random_range(50_000..=300_000),
            FaultKind::Duplicate => rng.random_range(50_000..=200_000),
            _ => 0,
        };
        // Mostly one node: several at once is rarer and bounded by the
        // majority rule anyway.
        let width = if rng.random_range(0..4) == 0 {
            2 + rng.random_range(0..4)
        } else {
            1
        };
        out.push(Planned {
            kind,
            start_ns: t,
            length_ns,
            permanent: kind == FaultKind::Crash && !nemesis.contains(FaultKind::Restart),
            rate_ppm,
            everywhere: rng.random_range(0..3) == 0,
            period_ns: between(rng, 100, 500) * 1_000_000,
            width,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::rng_from;

    #[test]
    fn every_kind_parses_back_from_its_name() {
        for k in FaultKind::ALL {
            assert_eq!(FaultKind::from_name(k.name()), Some(k));
            let n: Nemesis = k.name().parse().unwrap();
            assert_eq!(n.kinds().collect::<Vec<_>>(), vec![k]);
        }
        assert_eq!(Nemesis::ALL.kinds().count(), FaultKind::ALL.len());
        assert_eq!("none".parse::<Nemesis>().unwrap().to_string(), "none");
    }

    #[test]
    fn plan_stays_in_the_window_and_uses_only_enabled_kinds() {
        let mut rng = rng_from(3);
        let n: Nemesis = "pause,flap".parse().unwrap();
        let p = plan(n, 1_000, 20_000_000_000, 1_000_000_000, &mut rng);
        assert!(p.len() > 5);
        assert!(p
            .iter()
            .all(|f| (1_000..20_000_000_000).contains(&f.start_ns)));
        assert!(p
            .iter()
            .all(|f| matches!(f.kind, FaultKind::Pause | FaultKind::Flap)));
        assert!(plan(Nemesis::NONE, 0, u64::MAX / 2, 1, &mut rng).is_empty());
    }
}
