//! The simulation: many engines on one thread, in virtual time.
//!
//! A [`Simulation`] owns one slot per node. A slot runs at most one process
//! incarnation at a time: a [`troupe_core::Engine`] and the application
//! ([`SimApp`]) on top of it. The simulation loop takes the earliest thing
//! that happens next, a datagram arriving ([`crate::net`]), an engine timer,
//! a workload tick or a fault of the [`crate::nemesis`], advances virtual time
//! to it, feeds it to the engine concerned, and then drains that engine's
//! outputs: datagrams into the network, events into the application and the
//! [`History`]. Nothing reads a wall clock, nothing runs on another thread,
//! and one seed drives every random choice, so a seed replays exactly; the
//! run's [`SimOutcome::trace_hash`] proves it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng as _, RngCore};
use troupe_core::{
    Addr, Config, ConfigError, Engine, Event, ExitReason, MemberId, SendError, Time, View,
};

use crate::app::{LogDigest, SimApp};
use crate::check::{self, Report};
use crate::history::{digest64, History, MemberIdRepr, MsgKey, RecordKind, ViewIdRepr};
use crate::nemesis::{self, FaultKind, Nemesis, Planned};
use crate::net::{duration_ns, Datagram, NetConfig, NetStats, Network};
use crate::rng::{between, rng_from, SimRng, TraceHash, PPM};
use crate::workload::Workload;

/// Everything a run depends on. Two runs with equal configs are identical.
///
/// Start from [`SimConfig::new`] and change fields.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed: every random choice of the run derives from it.
    pub seed: u64,
    /// How many nodes (process slots); node 0 creates the group.
    pub nodes: usize,
    /// Simulated length of the run.
    pub duration: Duration,
    /// The kinds of fault injected during the chaos window.
    pub nemesis: Nemesis,
    /// Mean time between two faults.
    pub fault_interval: Duration,
    /// The healing period at the end of the run: no faults, network healed
    /// (liveness, M4 and V5, is judged on it).
    pub heal: Duration,
    /// The quiet period at the very end: nothing new is sent, so that every
    /// message sent before it can be delivered by the end (V5). A run
    /// shorter than three quiet periods is quiet for its last third.
    pub quiet: Duration,
    /// Time between two nodes' first starts (they join one by one).
    pub join_spacing: Duration,
    /// What the application does.
    pub workload: Workload,
    /// The network's shape.
    pub network: NetConfig,
    /// The engine configuration every member starts from (`addr` is
    /// replaced by each node's address).
    pub engine: Config,
    /// A deliberately broken protocol variant for every engine, to prove that
    /// the checkers catch it.
    #[cfg(feature = "mutants")]
    pub mutant: Option<troupe_core::Mutant>,
}

/// Base loss and duplication on every link during the chaos window when the
/// `loss` or `duplicate` fault is enabled (on top of the timed bursts).
const BASE_LOSS_PPM: u32 = 5_000;
const BASE_DUP_PPM: u32 = 5_000;
/// Time before the chaos window besides the joins: the last joiner's
/// admission and state transfer.
const WARMUP_SLACK: Duration = Duration::from_secs(1);
/// A timer that keeps asking to fire at the same instant is pushed this far
/// ahead after [`SAME_INSTANT_FIRES_MAX`] firings, so that an engine bug
/// cannot hang the simulation at one point of virtual time.
const SAME_INSTANT_PUSH_NS: u64 = 1_000;
const SAME_INSTANT_FIRES_MAX: u32 = 64;
/// How long a member that left stays down before it starts again.
const REJOIN_AFTER_LEAVE_MS: (u64, u64) = (500, 2_000);
/// Clock rates under the `skew` fault, in parts per million of real time.
const SKEW_PPM: (u64, u64) = (980_000, 1_020_000);
/// Clock origins under the `skew` fault: up to 1000 s apart.
const SKEW_OFFSET_NS_MAX: u64 = 1_000_000_000_000;

impl SimConfig {
    /// The defaults for `seed`: 5 nodes, 30 s, every fault, a fault every
    /// 1.5 s on average, 10 s of healing, 3 s of quiet, the default workload
    /// and network, and an engine tuned for simulation: heartbeats every
    /// 50 ms, suspicion after 500 ms, 16 KiB datagrams (so that packing and
    /// fragmentation both happen) and 8 KiB state chunks.
    pub fn new(seed: u64) -> SimConfig {
        let mut engine = Config::new("sim", Bytes::new());
        engine.heartbeat_interval = Duration::from_millis(50);
        engine.suspect_timeout = Duration::from_millis(500);
        engine.flush_timeout = Duration::from_millis(500);
        engine.datagram_bytes_max = 16 << 10;
        engine.state_chunk_bytes = 8 << 10;
        SimConfig {
            seed,
            nodes: 5,
            duration: Duration::from_secs(30),
            nemesis: Nemesis::ALL,
            fault_interval: Duration::from_millis(1_500),
            heal: Duration::from_secs(10),
            quiet: Duration::from_secs(3),
            join_spacing: Duration::from_millis(150),
            workload: Workload::default(),
            network: NetConfig::default(),
            engine,
            #[cfg(feature = "mutants")]
            mutant: None,
        }
    }

    /// Checks that the values make sense together.
    pub fn validate(&self) -> Result<(), SimError> {
        if self.nodes == 0 {
            return Err(SimError::Invalid("nodes must be at least 1".into()));
        }
        if self.nodes > troupe_core::wire::MEMBERS_MAX {
            return Err(SimError::Invalid(format!(
                "at most {} nodes",
                troupe_core::wire::MEMBERS_MAX
            )));
        }
        if self.duration.is_zero() {
            return Err(SimError::Invalid("duration must be positive".into()));
        }
        if self.workload.payload_min < crate::workload::KEY_BYTES
            || self.workload.payload_max < self.workload.payload_min
            || self.workload.large_max < self.workload.large_min
        {
            return Err(SimError::Invalid(format!(
                "payload sizes must satisfy {} <= payload_min <= payload_max and large_min <= large_max",
                crate::workload::KEY_BYTES
            )));
        }
        if self.workload.payload_max > self.engine.fragment_bytes() {
            return Err(SimError::Invalid(
                "payload_max must fit one datagram (unreliable messages)".into(),
            ));
        }
        if self.network.latency_max < self.network.latency_min {
            return Err(SimError::Invalid("latency_max is below latency_min".into()));
        }
        self.engine.validate()?;
        Ok(())
    }

    /// When the chaos window starts: after every node has had time to join.
    pub fn warmup(&self) -> Duration {
        self.join_spacing * self.nodes as u32 + WARMUP_SLACK
    }

    /// (healed_at, quiet_at, end) in nanoseconds.
    ///
    /// The chaos window is `[warmup, healed_at)`; it is empty when the run is
    /// too short for one (then the run is all healing).
    fn timeline(&self) -> (u64, u64, u64) {
        let end = duration_ns(self.duration);
        let quiet_at = end.saturating_sub(duration_ns(self.quiet).min(end / 3));
        let healed_at = end
            .saturating_sub(duration_ns(self.heal))
            .max(duration_ns(self.warmup()))
            .min(quiet_at);
        (healed_at, quiet_at, end)
    }
}

impl Default for SimConfig {
    /// [`SimConfig::new`] with seed 1.
    fn default() -> Self {
        SimConfig::new(1)
    }
}

/// Why a simulation could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The simulation's own settings make no sense.
    #[error("invalid simulation config: {0}")]
    Invalid(String),
    /// The engine configuration is refused by the engine.
    #[error(transparent)]
    Engine(#[from] ConfigError),
}

/// Counters of one run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimStats {
    /// Simulated seconds run.
    pub sim_seconds: f64,
    /// Messages the engines accepted (`Send` records).
    pub messages_sent: u64,
    /// Deliveries, over all members (`Deliver` records).
    pub messages_delivered: u64,
    /// View installations, over all members.
    pub views_installed: u64,
    /// Process incarnations started (the first start of each node included).
    pub incarnations: u64,
    /// Faults injected.
    pub faults_injected: u64,
    /// Faults skipped because they would have left less than a majority healthy.
    pub faults_skipped: u64,
    /// Processes killed.
    pub crashes: u64,
    /// Voluntary leaves requested.
    pub leaves: u64,
    /// Members excluded (and restarted as new incarnations).
    pub exclusions: u64,
    /// Queries started, and finished.
    pub queries: u64,
    /// Queries finished.
    pub queries_done: u64,
    /// Snapshots provided for joiners.
    pub states_provided: u64,
    /// Snapshots installed by joiners.
    pub states_installed: u64,
    /// Snapshots the application refused to restore.
    pub restore_errors: u64,
    /// Sends refused with `WouldBlock` (back-pressure) and retried.
    pub sends_blocked: u64,
    /// Datagrams handed to an engine.
    pub datagrams_delivered: u64,
    /// Datagrams that arrived at a node where no process listened.
    pub datagrams_unheard: u64,
    /// Datagrams an engine refused as malformed.
    pub decode_errors: u64,
    /// The network's counters.
    pub net: NetStats,
}

/// One fault as it happened, for the run's report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultNote {
    /// When (simulated nanoseconds).
    pub time_ns: u64,
    /// What, e.g. "crash n2.1 (restart in 2.300s)".
    pub text: String,
}

impl fmt::Display for FaultNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>12} {}", Time(self.time_ns).to_string(), self.text)
    }
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct SimOutcome {
    /// The seed it ran.
    pub seed: u64,
    /// Everything that happened at every member, for the checkers.
    pub history: History,
    /// A hash of every datagram handed to an engine (time, sender,
    /// receiver, bytes) and every event recorded: equal for two runs of the
    /// same config, different (with overwhelming probability) otherwise.
    pub trace_hash: u64,
    /// Counters.
    pub stats: SimStats,
    /// The faults injected (and skipped), in order.
    pub faults: Vec<FaultNote>,
    /// Every process running at the end, with its application's
    /// [`SimApp::digest`] (None while it has no state yet), by node.
    pub final_digests: Vec<(MemberId, Option<u64>)>,
}

impl SimOutcome {
    /// Runs every checker on the history.
    pub fn check(&self) -> Report {
        check::check_all(&self.history)
    }
}

/// Runs one simulation of `cfg` with the default application, [`LogDigest`].
pub fn run(cfg: SimConfig) -> Result<SimOutcome, SimError> {
    Ok(Simulation::new(cfg, |_| LogDigest::default())?.run())
}

/// A node's clock: `local = offset + global * rate`, the rate in ppm.
#[derive(Clone, Copy, Debug)]
struct Clock {
    offset_ns: u64,
    rate_ppm: u64,
}

impl Clock {
    const EXACT: Clock = Clock {
        offset_ns: 0,
        rate_ppm: PPM as u64,
    };

    fn local(self, global_ns: u64) -> Time {
        let scaled = u128::from(global_ns) * u128::from(self.rate_ppm) / u128::from(PPM);
        Time(
            self.offset_ns
                .saturating_add(u64::try_from(scaled).unwrap_or(u64::MAX)),
        )
    }

    /// The earliest global time at which the local clock reads `local` or later.
    fn global(self, local: Time) -> u64 {
        let since = local.as_nanos().saturating_sub(self.offset_ns);
        let g = (u128::from(since) * u128::from(PPM)).div_ceil(u128::from(self.rate_ppm));
        u64::try_from(g).unwrap_or(u64::MAX)
    }
}

/// Where a node's process stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proc {
    /// Not started yet.
    Never,
    /// An engine runs (it may be joining, a member, or leaving).
    Running,
    /// The engine reported `Exited`; a restart is scheduled.
    Exited,
    /// Killed.
    Crashed,
}

/// One node: a slot for successive process incarnations.
struct Node<A> {
    index: usize,
    addr: Addr,
    clock: Clock,
    proc: Proc,
    incarnation: u64,
    /// Bumped at every start and crash: ticks of older processes are stale.
    gen: u64,
    /// Boxed: `drive` takes it out of the slot while it drains it, and the
    /// engine is large (moving it by value was a sixth of the run time).
    engine: Option<Box<Engine>>,
    app: Option<A>,
    /// The application holds replicated state (created the group or restored).
    has_state: bool,
    /// Installed a view in this incarnation, and has not exited.
    member: bool,
    leaving: bool,
    paused: bool,
    /// Datagrams that arrived while paused, in arrival order.
    backlog: VecDeque<Datagram>,
    /// Active faults that count this node as faulty.
    held: u32,
    /// Scheduled engine timer (global ns) and its token.
    timer: Option<u64>,
    timer_token: u64,
    last_fire_ns: u64,
    same_instant_fires: u32,
    /// Messages sent by this incarnation (the next key is `sent + 1`).
    sent: u64,
    /// Messages delivered to this incarnation, and the last count it
    /// published as its mark (the workload's marks are that count).
    delivered: u64,
    marked: u64,
    /// A send refused with `WouldBlock`, to retry.
    pending: Option<(troupe_core::Ordering, Bytes, MsgKey)>,
}

impl<A> Node<A> {
    fn me(&self) -> MemberId {
        MemberId::new(self.index as u64, self.incarnation)
    }

    fn running(&self) -> bool {
        self.proc == Proc::Running
    }

    /// Counts towards the majority the nemesis must leave alone.
    fn healthy(&self) -> bool {
        self.running() && self.member && !self.leaving && !self.paused && self.held == 0
    }
}

/// The address of node `i`: its number as 8 little-endian bytes.
fn node_addr(i: usize) -> Addr {
    Bytes::copy_from_slice(&(i as u64).to_le_bytes())
}

/// The node an address names, if it is one.
fn addr_node(addr: &[u8], nodes: usize) -> Option<usize> {
    let b: [u8; 8] = addr.try_into().ok()?;
    let i = u64::from_le_bytes(b);
    (i < nodes as u64).then_some(i as usize)
}

/// What a fault did, to undo it.
enum Applied {
    Crash {
        node: usize,
    },
    Pause {
        nodes: Vec<usize>,
    },
    Block {
        links: Vec<(usize, usize)>,
        nodes: Vec<usize>,
    },
    Flap {
        a: usize,
        b: usize,
        down: bool,
    },
    Loss {
        links: Vec<(usize, usize)>,
        ppm: u32,
    },
    Dup {
        links: Vec<(usize, usize)>,
        ppm: u32,
    },
}

/// Something scheduled.
#[derive(Clone, Copy, Debug)]
enum Ev {
    Start { node: usize },
    Timer { node: usize, token: u64 },
    SendTick { node: usize, gen: u64 },
    QueryTick { node: usize, gen: u64 },
    LeaveTick,
    FaultStart(usize),
    FaultEnd(usize),
    FlapToggle(usize),
    Heal,
}

struct Scheduled {
    key: Reverse<(u64, u64)>,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

/// A deterministic simulation of one group, with application `A` on every
/// member.
///
/// ```
/// use std::time::Duration;
/// use troupe_sim::{LogDigest, Nemesis, SimConfig, Simulation};
///
/// let mut cfg = SimConfig::new(42);
/// cfg.nodes = 3;
/// cfg.duration = Duration::from_secs(2);
/// cfg.nemesis = Nemesis::NONE;
/// let outcome = Simulation::new(cfg, |_member| LogDigest::default()).unwrap().run();
/// assert!(outcome.stats.views_installed > 0);
/// ```
pub struct Simulation<A: SimApp> {
    cfg: SimConfig,
    factory: Box<dyn FnMut(MemberId) -> A>,
    nodes: Vec<Node<A>>,
    net: Network,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    now: u64,
    healed_at: u64,
    quiet_at: u64,
    end: u64,
    healed: bool,
    plan: Vec<Planned>,
    active: Vec<Option<Applied>>,
    /// Drives the workload (what to send, when, to whom).
    work_rng: SimRng,
    /// Drives the nemesis's choice of targets.
    fault_rng: SimRng,
    /// Seeds engines and picks restart delays.
    proc_rng: SimRng,
    latest_view: Option<View>,
    history: History,
    hash: TraceHash,
    stats: SimStats,
    faults: Vec<FaultNote>,
    /// Large payloads recently sent, with their digest: a delivery whose
    /// bytes compare equal takes the digest from here instead of hashing
    /// them again (FNV over 100-300 KB, five times per message, was a fifth
    /// of the run time under load). Only a cache: results do not depend on it.
    sent_large: BTreeMap<MsgKey, (u64, Bytes, u64)>,
}

/// Payloads at least this large are cached in `sent_large`.
const DIGEST_CACHE_BYTES_MIN: usize = 4 << 10;
/// Entries older than this are dropped when the cache is swept (a delivery
/// after that just hashes its bytes).
const DIGEST_CACHE_AGE_NS: u64 = 5_000_000_000;
/// The cache is swept when it holds more entries than this.
const DIGEST_CACHE_ENTRIES_MAX: usize = 256;

impl<A: SimApp> Simulation<A> {
    /// A simulation of `cfg`; `factory` makes the application of each
    /// process incarnation (it starts empty: a joiner's state arrives by
    /// state transfer).
    pub fn new(
        cfg: SimConfig,
        factory: impl FnMut(MemberId) -> A + 'static,
    ) -> Result<Simulation<A>, SimError> {
        cfg.validate()?;
        let (healed_at, quiet_at, end) = cfg.timeline();
        // One seed, split into independent streams in a fixed order: the
        // fault plan does not shift when the workload or the engine changes.
        let mut master = rng_from(cfg.seed);
        let net_seed = master.next_u64();
        let mut plan_rng = rng_from(master.next_u64());
        let fault_rng = rng_from(master.next_u64());
        let work_rng = rng_from(master.next_u64());
        let proc_rng = rng_from(master.next_u64());

        let skew = cfg.nemesis.contains(FaultKind::Skew);
        let nodes = (0..cfg.nodes)
            .map(|i| Node {
                index: i,
                addr: node_addr(i),
                clock: if skew {
                    Clock {
                        offset_ns: between(&mut plan_rng, 0, SKEW_OFFSET_NS_MAX),
                        rate_ppm: between(&mut plan_rng, SKEW_PPM.0, SKEW_PPM.1),
                    }
                } else {
                    Clock::EXACT
                },
                proc: Proc::Never,
                incarnation: 0,
                gen: 0,
                engine: None,
                app: None,
                has_state: false,
                member: false,
                leaving: false,
                paused: false,
                backlog: VecDeque::new(),
                held: 0,
                timer: None,
                timer_token: 0,
                last_fire_ns: 0,
                same_instant_fires: 0,
                sent: 0,
                delivered: 0,
                marked: 0,
                pending: None,
            })
            .collect();
        let warmup = duration_ns(cfg.warmup()).min(healed_at);
        let plan = nemesis::plan(
            cfg.nemesis,
            warmup,
            healed_at,
            duration_ns(cfg.fault_interval),
            &mut plan_rng,
        );
        let mut net = Network::new(cfg.nodes, cfg.network.clone(), net_seed);
        if cfg.nemesis.contains(FaultKind::Loss) {
            net.set_base_loss(cfg.network.loss_ppm.max(BASE_LOSS_PPM));
        }
        if cfg.nemesis.contains(FaultKind::Duplicate) {
            net.set_base_dup(cfg.network.dup_ppm.max(BASE_DUP_PPM));
        }
        let history = History {
            records: Vec::new(),
            healed_at_ns: Some(healed_at),
            quiet_at_ns: Some(quiet_at),
            end_ns: end,
        };
        let mut sim = Simulation {
            active: (0..plan.len()).map(|_| None).collect(),
            hash: TraceHash::new(cfg.seed),
            factory: Box::new(factory),
            nodes,
            net,
            queue: BinaryHeap::new(),
            seq: 0,
            now: 0,
            healed_at,
            quiet_at,
            end,
            healed: false,
            plan,
            work_rng,
            fault_rng,
            proc_rng,
            latest_view: None,
            history,
            stats: SimStats::default(),
            faults: Vec::new(),
            sent_large: BTreeMap::new(),
            cfg,
        };
        let spacing = duration_ns(sim.cfg.join_spacing);
        for i in 0..sim.cfg.nodes {
            sim.schedule(spacing * i as u64, Ev::Start { node: i });
        }
        for i in 0..sim.plan.len() {
            sim.schedule(sim.plan[i].start_ns, Ev::FaultStart(i));
        }
        if let Some(gap) = sim.cfg.workload.next_leave_gap_ns(&mut sim.work_rng) {
            sim.schedule(warmup + gap, Ev::LeaveTick);
        }
        sim.schedule(healed_at, Ev::Heal);
        Ok(sim)
    }

    /// Runs to the end and returns what happened.
    pub fn run(mut self) -> SimOutcome {
        loop {
            let next_ev = self.queue.peek().map(|s| s.key.0 .0);
            let next_dg = self.net.next_arrival().map(Time::as_nanos);
            // Datagrams first at equal times: an arbitrary but fixed rule.
            let take_dg = match (next_dg, next_ev) {
                (Some(d), Some(e)) => d <= e,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let t = if take_dg { next_dg } else { next_ev }.expect("one is due");
            if t > self.end {
                break;
            }
            debug_assert!(t >= self.now, "virtual time runs backwards");
            self.now = t;
            if take_dg {
                let dg = self.net.pop(Time(t)).expect("due datagram");
                self.on_datagram(dg);
            } else {
                let s = self.queue.pop().expect("due event");
                self.dispatch(s.ev);
            }
        }
        self.now = self.end;
        self.stats.sim_seconds = self.end as f64 / 1e9;
        self.stats.net = self.net.stats().clone();
        let final_digests = self
            .nodes
            .iter()
            .filter(|n| n.running())
            .map(|n| {
                (
                    n.me(),
                    n.app.as_ref().filter(|_| n.has_state).map(|a| a.digest()),
                )
            })
            .collect();
        SimOutcome {
            final_digests,
            seed: self.cfg.seed,
            trace_hash: self.hash.finish(),
            history: self.history,
            stats: self.stats,
            faults: self.faults,
        }
    }

    fn schedule(&mut self, at_ns: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Scheduled {
            key: Reverse((at_ns, self.seq)),
            ev,
        });
    }

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::Start { node } => self.start(node),
            Ev::Timer { node, token } => self.on_timer(node, token),
            Ev::SendTick { node, gen } => self.on_send_tick(node, gen),
            Ev::QueryTick { node, gen } => self.on_query_tick(node, gen),
            Ev::LeaveTick => self.on_leave_tick(),
            Ev::FaultStart(i) => self.fault_start(i),
            Ev::FaultEnd(i) => self.fault_end(i),
            Ev::FlapToggle(i) => self.flap_toggle(i),
            Ev::Heal => self.heal(),
        }
    }

    // ----- recording --------------------------------------------------------

    fn record(&mut self, member: MemberId, kind: RecordKind) {
        hash_record(&mut self.hash, self.now, member, &kind);
        self.history.push(self.now, member, kind);
    }

    fn note(&mut self, text: String) {
        self.faults.push(FaultNote {
            time_ns: self.now,
            text,
        });
    }

    // ----- processes --------------------------------------------------------

    /// Starts a new incarnation at node `i`: node 0's first creates the
    /// group, every other joins through the nodes running now.
    fn start(&mut self, i: usize) {
        if self.nodes[i].running() || self.nodes[i].paused {
            return;
        }
        let first_ever = self.nodes[i].proc == Proc::Never;
        let mut ecfg = self.cfg.engine.clone();
        ecfg.addr = self.nodes[i].addr.clone();
        #[cfg(feature = "mutants")]
        if self.cfg.mutant.is_some() {
            ecfg.mutant = self.cfg.mutant;
        }
        let rng_seed = self.proc_rng.next_u64();
        let contacts: Vec<Addr> = {
            let live: Vec<Addr> = self
                .nodes
                .iter()
                .filter(|n| n.index != i && n.running())
                .map(|n| n.addr.clone())
                .collect();
            if live.is_empty() {
                self.nodes
                    .iter()
                    .filter(|n| n.index != i)
                    .map(|n| n.addr.clone())
                    .collect()
            } else {
                live
            }
        };
        let node = &mut self.nodes[i];
        node.incarnation += 1;
        node.gen += 1;
        node.proc = Proc::Running;
        node.member = false;
        node.leaving = false;
        node.has_state = false;
        node.sent = 0;
        node.delivered = 0;
        node.marked = 0;
        node.pending = None;
        node.backlog.clear();
        node.timer = None;
        node.timer_token += 1;
        let me = node.me();
        let now_local = node.clock.local(self.now);
        let mut engine = Box::new(
            Engine::new(ecfg, me, now_local, rng_seed)
                .expect("engine config validated in SimConfig::validate"),
        );
        node.app = Some((self.factory)(me));
        self.stats.incarnations += 1;
        self.record(me, RecordKind::Started);
        if i == 0 && first_ever {
            self.nodes[i].has_state = true;
            engine.create(now_local);
        } else {
            engine.join(now_local, &contacts);
        }
        self.nodes[i].engine = Some(engine);
        self.drive(i);
        let gen = self.nodes[i].gen;
        if let Some(gap) = self.cfg.workload.next_send_gap_ns(&mut self.work_rng) {
            self.schedule(self.now + gap, Ev::SendTick { node: i, gen });
        }
        if let Some(gap) = self.cfg.workload.next_query_gap_ns(&mut self.work_rng) {
            self.schedule(self.now + gap, Ev::QueryTick { node: i, gen });
        }
    }

    /// kill -9: the engine and the application are gone.
    fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if !node.running() {
            return;
        }
        let me = node.me();
        node.proc = Proc::Crashed;
        node.gen += 1;
        node.engine = None;
        node.app = None;
        node.member = false;
        node.leaving = false;
        node.paused = false;
        node.backlog.clear();
        node.timer = None;
        node.timer_token += 1;
        node.pending = None;
        self.stats.crashes += 1;
        self.record(me, RecordKind::Crashed);
    }

    /// The engine said it is no longer a member.
    fn exited(&mut self, i: usize, reason: ExitReason) {
        let node = &mut self.nodes[i];
        node.proc = Proc::Exited;
        node.member = false;
        node.leaving = false;
        node.pending = None;
        node.gen += 1;
        let me = node.me();
        self.record(
            me,
            RecordKind::Exited {
                left: reason == ExitReason::Left,
            },
        );
        let at = match reason {
            // Excluded (suspected, or cut off on a minority side): the
            // process starts again at once as a new incarnation.
            ExitReason::Excluded => {
                self.stats.exclusions += 1;
                self.now
            }
            ExitReason::Left => {
                let delay = between(
                    &mut self.proc_rng,
                    REJOIN_AFTER_LEAVE_MS.0,
                    REJOIN_AFTER_LEAVE_MS.1,
                ) * 1_000_000;
                let at = self.now + delay;
                if self.now < self.healed_at {
                    at.min(self.healed_at)
                } else {
                    at
                }
            }
        };
        self.schedule(at, Ev::Start { node: i });
    }

    /// Drains an engine's outputs after an input: datagrams into the network,
    /// events into the application and the history; then schedules its timer.
    fn drive(&mut self, i: usize) {
        let Some(mut engine) = self.nodes[i].engine.take() else {
            return;
        };
        loop {
            let mut busy = false;
            while let Some(t) = engine.poll_transmit() {
                busy = true;
                match addr_node(&t.addr, self.nodes.len()) {
                    Some(to) => {
                        self.net.send(Time(self.now), i, to, t.to, t.bytes);
                    }
                    None => self.stats.net.misaddressed += 1,
                }
            }
            while let Some(ev) = engine.poll_event() {
                busy = true;
                self.on_event(i, &mut engine, ev);
            }
            busy |= self.publish_mark(i, &mut engine);
            if !busy {
                break;
            }
        }
        let due = engine.poll_timeout();
        self.nodes[i].engine = Some(engine);
        self.set_timer(i, due);
    }

    /// Publishes how many messages this member has delivered as its mark,
    /// when that changed; whether it did.
    fn publish_mark(&mut self, i: usize, engine: &mut Engine) -> bool {
        let node = &mut self.nodes[i];
        if !node.member || node.delivered == node.marked {
            return false;
        }
        node.marked = node.delivered;
        let value = node.delivered;
        let local = node.clock.local(self.now);
        let me = node.me();
        if engine
            .set_mark(local, Bytes::copy_from_slice(&value.to_le_bytes()))
            .is_err()
        {
            return false;
        }
        self.record(me, RecordKind::MarkSet { value });
        true
    }

    fn set_timer(&mut self, i: usize, due_local: Option<Time>) {
        let now = self.now;
        let node = &mut self.nodes[i];
        let Some(local) = due_local else {
            if node.timer.is_some() {
                node.timer = None;
                node.timer_token += 1;
            }
            return;
        };
        let mut at = node.clock.global(local).max(now);
        if at == now
            && node.last_fire_ns == now
            && node.same_instant_fires >= SAME_INSTANT_FIRES_MAX
        {
            at = now + SAME_INSTANT_PUSH_NS;
        }
        if node.timer == Some(at) {
            return;
        }
        node.timer = Some(at);
        node.timer_token += 1;
        let token = node.timer_token;
        self.schedule(at, Ev::Timer { node: i, token });
    }

    fn on_timer(&mut self, i: usize, token: u64) {
        let now = self.now;
        let node = &mut self.nodes[i];
        if token != node.timer_token || !node.running() {
            return; // stale
        }
        node.timer = None;
        if node.paused {
            return; // frozen: `resume` calls `handle_timeout` and reschedules
        }
        if node.last_fire_ns == now {
            node.same_instant_fires += 1;
        } else {
            node.last_fire_ns = now;
            node.same_instant_fires = 0;
        }
        let local = node.clock.local(now);
        if let Some(e) = node.engine.as_mut() {
            e.handle_timeout(local);
        }
        self.drive(i);
    }

    fn on_datagram(&mut self, dg: Datagram) {
        let node = &mut self.nodes[dg.to];
        // Like a real network, delivery goes by address: whichever
        // incarnation listens at the node now gets the datagram, even one
        // meant for its predecessor (the engine must tell them apart).
        if !node.running() {
            self.stats.datagrams_unheard += 1;
            return;
        }
        if node.paused {
            node.backlog.push_back(dg);
            return;
        }
        self.feed(dg);
    }

    /// Hands a datagram to the engine of its node.
    fn feed(&mut self, dg: Datagram) {
        let i = dg.to;
        let node = &mut self.nodes[i];
        if !node.running() {
            self.stats.datagrams_unheard += 1;
            return;
        }
        let local = node.clock.local(self.now);
        self.hash.word(0xD6);
        self.hash.word(self.now);
        self.hash.word(dg.from as u64);
        self.hash.word(i as u64);
        self.hash.bytes(&dg.bytes);
        self.stats.datagrams_delivered += 1;
        if let Some(e) = node.engine.as_mut() {
            if e.handle_datagram(local, dg.bytes).is_err() {
                self.stats.decode_errors += 1;
            }
        }
        self.drive(i);
    }

    /// One engine event: into the history, the application, and back into
    /// the engine where it asks for an answer.
    fn on_event(&mut self, i: usize, engine: &mut Engine, ev: Event) {
        let me = self.nodes[i].me();
        let local = self.nodes[i].clock.local(self.now);
        match ev {
            Event::View(view) => {
                let node = &mut self.nodes[i];
                node.member = true;
                let state_digest = match (&node.app, node.has_state) {
                    (Some(app), true) => Some(app.digest()),
                    _ => None,
                };
                self.stats.views_installed += 1;
                if self.latest_view.as_ref().is_none_or(|v| v.id < view.id) {
                    self.latest_view = Some(view.clone());
                }
                let members = view
                    .members
                    .iter()
                    .map(|m| MemberIdRepr::from(*m))
                    .collect();
                self.record(
                    me,
                    RecordKind::ViewInstalled {
                        view: view.id.into(),
                        members,
                        state_digest,
                    },
                );
            }
            Event::Deliver(d) => {
                // A payload too short to carry a key was never sent by the
                // workload: recorded under a key nobody sent, for V1 to see.
                let msg = History::key_of(&d.payload).unwrap_or(MsgKey {
                    sender: MemberIdRepr {
                        node: u64::MAX,
                        incarnation: u64::MAX,
                    },
                    n: 0,
                });
                let digest = self.delivered_digest(msg, &d.payload);
                self.stats.messages_delivered += 1;
                self.record(
                    me,
                    RecordKind::Deliver {
                        msg,
                        sender: d.sender.into(),
                        ordering: d.ordering as u8,
                        view: d.view.into(),
                        digest,
                    },
                );
                self.nodes[i].delivered += 1;
                if let Some(app) = self.nodes[i].app.as_mut() {
                    app.apply(&d);
                }
            }
            Event::Blocked => self.record(me, RecordKind::Blocked),
            Event::Mark { from, mark } => {
                // A mark the workload did not set (not 8 bytes) is recorded
                // as a value nobody set, for K1 to see.
                let value = <[u8; 8]>::try_from(mark.as_ref()).map_or(u64::MAX, u64::from_le_bytes);
                self.record(
                    me,
                    RecordKind::MarkSeen {
                        from: from.into(),
                        value,
                    },
                );
            }
            Event::StateNeeded { view } => {
                let Some(app) = self.nodes[i].app.as_ref() else {
                    return;
                };
                let snapshot = app.snapshot();
                let state_digest = app.digest();
                self.stats.states_provided += 1;
                self.record(
                    me,
                    RecordKind::StateProvided {
                        view: view.into(),
                        state_digest,
                    },
                );
                engine.provide_state(local, view, snapshot);
            }
            Event::StateInstalled { view, snapshot } => {
                let node = &mut self.nodes[i];
                let Some(app) = node.app.as_mut() else { return };
                if app.restore(&snapshot).is_err() {
                    self.stats.restore_errors += 1;
                }
                node.has_state = true;
                let state_digest = app.digest();
                self.stats.states_installed += 1;
                self.record(
                    me,
                    RecordKind::StateInstalled {
                        view: view.into(),
                        state_digest,
                    },
                );
            }
            Event::Query {
                id,
                ordering,
                payload,
            } => {
                self.hash.word(0x51);
                self.hash.word(id.asker.node);
                self.hash.word(id.asker.incarnation);
                self.hash.word(id.n);
                self.hash.word(ordering as u64);
                self.hash.bytes(&payload);
                let answer = self.nodes[i].app.as_ref().map_or(0, |a| a.digest());
                engine.reply(local, id, Bytes::copy_from_slice(&answer.to_le_bytes()));
            }
            Event::QueryDone {
                replies, departed, ..
            } => {
                self.stats.queries_done += 1;
                self.record(
                    me,
                    RecordKind::QueryDone {
                        replies: u32::try_from(replies.len()).unwrap_or(u32::MAX),
                        departed: u32::try_from(departed.len()).unwrap_or(u32::MAX),
                    },
                );
            }
            Event::Exited(reason) => self.exited(i, reason),
        }
    }

    /// The digest of a payload just sent (remembered if it is large).
    fn sent_digest(&mut self, key: MsgKey, payload: &Bytes) -> u64 {
        let digest = digest64(payload);
        if payload.len() >= DIGEST_CACHE_BYTES_MIN {
            if self.sent_large.len() >= DIGEST_CACHE_ENTRIES_MAX {
                let cutoff = self.now.saturating_sub(DIGEST_CACHE_AGE_NS);
                self.sent_large.retain(|_, (at, _, _)| *at >= cutoff);
            }
            self.sent_large
                .insert(key, (self.now, payload.clone(), digest));
        }
        digest
    }

    /// The digest of a delivered payload: the sent one's if the bytes are
    /// the same, else computed.
    fn delivered_digest(&self, key: MsgKey, payload: &[u8]) -> u64 {
        match self.sent_large.get(&key) {
            Some((_, sent, digest)) if sent[..] == *payload => *digest,
            _ => digest64(payload),
        }
    }

    // ----- workload ---------------------------------------------------------

    fn on_send_tick(&mut self, i: usize, gen: u64) {
        if self.nodes[i].gen != gen || self.now >= self.quiet_at {
            return; // an older process's tick, or the quiet period
        }
        let gap = self
            .cfg
            .workload
            .next_send_gap_ns(&mut self.work_rng)
            .unwrap_or(u64::MAX / 4);
        let mut next = self.now + gap;
        let node = &self.nodes[i];
        if node.running() && node.member && !node.paused {
            let me = node.me();
            let (ordering, payload, key) = match self.nodes[i].pending.take() {
                Some(p) => p,
                None => {
                    let key = MsgKey {
                        sender: me.into(),
                        n: self.nodes[i].sent + 1,
                    };
                    let ordering = self.cfg.workload.ordering(&mut self.work_rng);
                    let small = ordering == troupe_core::Ordering::Unreliable;
                    let payload = self.cfg.workload.payload(&mut self.work_rng, key, small);
                    (ordering, payload, key)
                }
            };
            let node = &mut self.nodes[i];
            let local = node.clock.local(self.now);
            let engine = node.engine.as_mut().expect("a running node has an engine");
            let view = if engine.is_blocked() {
                None
            } else {
                engine.view().map(|v| ViewIdRepr::from(v.id))
            };
            match engine.send(local, ordering, payload.clone()) {
                Ok(()) => {
                    node.sent += 1;
                    self.stats.messages_sent += 1;
                    let digest = self.sent_digest(key, &payload);
                    self.record(
                        me,
                        RecordKind::Send {
                            msg: key,
                            ordering: ordering as u8,
                            digest,
                            view,
                        },
                    );
                }
                Err(SendError::WouldBlock) => {
                    node.pending = Some((ordering, payload, key));
                    self.stats.sends_blocked += 1;
                    next = self.now + duration_ns(self.cfg.workload.retry_after).max(1);
                }
                Err(SendError::NotMember | SendError::TooLarge { .. }) => {}
            }
            self.drive(i);
        }
        self.schedule(next, Ev::SendTick { node: i, gen });
    }

    fn on_query_tick(&mut self, i: usize, gen: u64) {
        if self.nodes[i].gen != gen || self.now >= self.quiet_at {
            return;
        }
        let node = &self.nodes[i];
        if node.running() && node.member && !node.paused {
            let size = node
                .engine
                .as_ref()
                .and_then(|e| e.view())
                .map_or(1, |v| v.members.len());
            let quorum = self.cfg.workload.quorum(&mut self.work_rng, size);
            let ordering = self.cfg.workload.query_ordering(&mut self.work_rng);
            let node = &mut self.nodes[i];
            let local = node.clock.local(self.now);
            let engine = node.engine.as_mut().expect("a running node has an engine");
            if engine
                .query(local, ordering, quorum, Bytes::from_static(b"digest?"))
                .is_ok()
            {
                self.stats.queries += 1;
            }
            self.drive(i);
        }
        if let Some(gap) = self.cfg.workload.next_query_gap_ns(&mut self.work_rng) {
            self.schedule(self.now + gap, Ev::QueryTick { node: i, gen });
        }
    }

    /// A healthy member leaves, if the majority rule allows one more node
    /// out of action.
    fn on_leave_tick(&mut self) {
        if self.healed {
            return;
        }
        if let Some(&[i]) = self.pick_healthy(1).as_deref() {
            let node = &mut self.nodes[i];
            node.leaving = true;
            let me = node.me();
            let local = node.clock.local(self.now);
            self.stats.leaves += 1;
            self.record(me, RecordKind::LeaveRequested);
            if let Some(e) = self.nodes[i].engine.as_mut() {
                e.leave(local);
            }
            self.drive(i);
        }
        if let Some(gap) = self.cfg.workload.next_leave_gap_ns(&mut self.work_rng) {
            self.schedule(self.now + gap, Ev::LeaveTick);
        }
    }

    // ----- nemesis ----------------------------------------------------------

    /// Up to `want` healthy nodes, chosen at random, such that no more than a
    /// minority of all nodes is out of action afterwards. None if not even
    /// one can be taken.
    fn pick_healthy(&mut self, want: usize) -> Option<Vec<usize>> {
        let minority = (self.nodes.len() - 1) / 2;
        let healthy: Vec<usize> = self
            .nodes
            .iter()
            .filter(|n| n.healthy())
            .map(|n| n.index)
            .collect();
        let faulty = self.nodes.len() - healthy.len();
        let room = minority.saturating_sub(faulty).min(want).min(healthy.len());
        if room == 0 {
            return None;
        }
        let mut pool = healthy;
        let mut out = Vec::with_capacity(room);
        for _ in 0..room {
            let k = self.fault_rng.random_range(0..pool.len());
            out.push(pool.swap_remove(k));
        }
        out.sort_unstable();
        Some(out)
    }

    fn fault_start(&mut self, f: usize) {
        if self.healed {
            return;
        }
        let p = self.plan[f].clone();
        let end = p.start_ns.saturating_add(p.length_ns).min(self.healed_at);
        let applied = match p.kind {
            FaultKind::Crash | FaultKind::Restart => self.pick_healthy(1).map(|t| {
                let node = t[0];
                let who = self.nodes[node].me();
                self.crash(node);
                if p.permanent {
                    self.note(format!("crash {who} (for good)"));
                } else {
                    self.note(format!(
                        "{} {who} (restart in {})",
                        p.kind,
                        secs(end - self.now)
                    ));
                }
                Applied::Crash { node }
            }),
            FaultKind::Pause => self.pick_healthy(p.width).map(|nodes| {
                for &n in &nodes {
                    self.nodes[n].paused = true;
                }
                self.note(format!(
                    "pause {} for {}",
                    self.names(&nodes),
                    secs(end - self.now)
                ));
                Applied::Pause { nodes }
            }),
            FaultKind::Partition | FaultKind::OneWay => self.pick_healthy(p.width).map(|side| {
                let rest: Vec<usize> = (0..self.nodes.len())
                    .filter(|n| !side.contains(n))
                    .collect();
                let outward =
                    p.kind == FaultKind::Partition || self.fault_rng.random_range(0..2) == 0;
                let inward = p.kind == FaultKind::Partition || !outward;
                let mut links = Vec::new();
                for &a in &side {
                    for &b in &rest {
                        if outward {
                            links.push((a, b));
                        }
                        if inward {
                            links.push((b, a));
                        }
                    }
                }
                let what = match (outward, inward) {
                    (true, true) => format!("partition {} | rest", self.names(&side)),
                    (true, false) => {
                        format!("one-way: {} cannot send to the rest", self.names(&side))
                    }
                    _ => format!("one-way: {} cannot hear the rest", self.names(&side)),
                };
                self.note(format!("{what} for {}", secs(end - self.now)));
                self.block_all(links, side)
            }),
            FaultKind::IsolateCoordinator => {
                let coord = self.latest_view.as_ref().map(|v| v.coordinator());
                let target = coord
                    .and_then(|c| usize::try_from(c.node).ok())
                    .filter(|&n| n < self.nodes.len());
                match target {
                    Some(c) if self.nodes[c].healthy() && self.pick_room() => {
                        let rest: Vec<usize> = (0..self.nodes.len()).filter(|&n| n != c).collect();
                        let links = rest.iter().flat_map(|&b| [(c, b), (b, c)]).collect();
                        self.note(format!(
                            "isolate coordinator {} for {}",
                            self.nodes[c].me(),
                            secs(end - self.now)
                        ));
                        Some(self.block_all(links, vec![c]))
                    }
                    _ => None,
                }
            }
            FaultKind::Flap => self.pick_healthy(1).map(|t| {
                let b = t[0];
                let others: Vec<usize> = (0..self.nodes.len()).filter(|&n| n != b).collect();
                let a = if others.is_empty() {
                    b
                } else {
                    others[self.fault_rng.random_range(0..others.len())]
                };
                self.nodes[b].held += 1;
                self.note(format!(
                    "flap n{a}<->n{b} every {} for {}",
                    secs(p.period_ns),
                    secs(end - self.now)
                ));
                self.schedule(self.now, Ev::FlapToggle(f));
                Applied::Flap { a, b, down: false }
            }),
            FaultKind::Loss | FaultKind::Duplicate => {
                let n = self.nodes.len();
                let links: Vec<(usize, usize)> = if p.everywhere {
                    (0..n)
                        .flat_map(|a| (0..n).map(move |b| (a, b)))
                        .filter(|(a, b)| a != b)
                        .collect()
                } else {
                    let x = self.fault_rng.random_range(0..n);
                    (0..n)
                        .filter(|&y| y != x)
                        .flat_map(|y| [(x, y), (y, x)])
                        .collect()
                };
                let scope = if p.everywhere {
                    "all links".to_string()
                } else {
                    format!("the links of n{}", links.first().map_or(0, |l| l.0))
                };
                let pct = f64::from(p.rate_ppm) / 1e4;
                if p.kind == FaultKind::Loss {
                    for &(a, b) in &links {
                        self.net.add_loss(a, b, p.rate_ppm);
                    }
                    self.note(format!(
                        "loss {pct:.0}% on {scope} for {}",
                        secs(end - self.now)
                    ));
                    Some(Applied::Loss {
                        links,
                        ppm: p.rate_ppm,
                    })
                } else {
                    for &(a, b) in &links {
                        self.net.add_dup(a, b, p.rate_ppm);
                    }
                    self.note(format!(
                        "duplicate {pct:.0}% on {scope} for {}",
                        secs(end - self.now)
                    ));
                    Some(Applied::Dup {
                        links,
                        ppm: p.rate_ppm,
                    })
                }
            }
            FaultKind::Skew => None,
        };
        match applied {
            Some(a) => {
                self.stats.faults_injected += 1;
                self.active[f] = Some(a);
                if !p.permanent {
                    self.schedule(end, Ev::FaultEnd(f));
                }
            }
            None => {
                self.stats.faults_skipped += 1;
                self.note(format!("{} skipped: no healthy node to spare", p.kind));
            }
        }
    }

    /// Whether one more node may be taken out of action.
    fn pick_room(&self) -> bool {
        let minority = (self.nodes.len() - 1) / 2;
        let faulty = self.nodes.iter().filter(|n| !n.healthy()).count();
        faulty < minority
    }

    fn block_all(&mut self, links: Vec<(usize, usize)>, nodes: Vec<usize>) -> Applied {
        for &(a, b) in &links {
            self.net.block(a, b);
        }
        for &n in &nodes {
            self.nodes[n].held += 1;
        }
        Applied::Block { links, nodes }
    }

    fn fault_end(&mut self, f: usize) {
        let Some(applied) = self.active[f].take() else {
            return;
        };
        match applied {
            Applied::Crash { node } => {
                if self.nodes[node].proc == Proc::Crashed {
                    self.start(node);
                }
            }
            Applied::Pause { nodes } => {
                for n in nodes {
                    self.resume(n);
                }
            }
            Applied::Block { links, nodes } => {
                for (a, b) in links {
                    self.net.unblock(a, b);
                }
                for n in nodes {
                    self.nodes[n].held -= 1;
                }
            }
            Applied::Flap { a, b, down } => {
                if down {
                    self.net.unblock(a, b);
                    self.net.unblock(b, a);
                }
                self.nodes[b].held -= 1;
            }
            Applied::Loss { links, ppm } => {
                for (a, b) in links {
                    self.net.remove_loss(a, b, ppm);
                }
            }
            Applied::Dup { links, ppm } => {
                for (a, b) in links {
                    self.net.remove_dup(a, b, ppm);
                }
            }
        }
    }

    fn flap_toggle(&mut self, f: usize) {
        let period = self.plan[f].period_ns;
        let Some(Applied::Flap { a, b, down }) = self.active[f].as_mut() else {
            return;
        };
        let (a, b) = (*a, *b);
        *down = !*down;
        if *down {
            self.net.block(a, b);
            self.net.block(b, a);
        } else {
            self.net.unblock(a, b);
            self.net.unblock(b, a);
        }
        self.schedule(self.now + period, Ev::FlapToggle(f));
    }

    /// A paused node wakes up: it handles the datagrams that queued up, then
    /// its timers, all at the current time.
    fn resume(&mut self, i: usize) {
        if !self.nodes[i].paused {
            return;
        }
        self.nodes[i].paused = false;
        while let Some(dg) = self.nodes[i].backlog.pop_front() {
            self.feed(dg);
            if !self.nodes[i].running() {
                self.nodes[i].backlog.clear();
                return;
            }
        }
        let node = &mut self.nodes[i];
        if node.running() {
            let local = node.clock.local(self.now);
            if let Some(e) = node.engine.as_mut() {
                e.handle_timeout(local);
            }
            self.drive(i);
        }
    }

    /// The healing period begins: every fault ends, no new one starts.
    fn heal(&mut self) {
        if self.healed {
            return;
        }
        self.healed = true;
        for f in 0..self.active.len() {
            // A crash without restarts stays: the node is gone for good.
            if !self.plan[f].permanent {
                self.fault_end(f);
            }
        }
        self.net.set_base_loss(0);
        self.net.set_base_dup(0);
        let n = self.nodes.len();
        debug_assert!(
            (0..n).all(|a| (0..n).all(|b| !self.net.is_blocked(a, b))),
            "a link is still blocked after the heal"
        );
        debug_assert!(
            self.nodes.iter().all(|x| !x.paused && x.held == 0),
            "a node is still held by a fault after the heal"
        );
        self.note("healing period: faults end, network healed".to_string());
    }

    fn names(&self, nodes: &[usize]) -> String {
        let names: Vec<String> = nodes
            .iter()
            .map(|&n| self.nodes[n].me().to_string())
            .collect();
        format!("{{{}}}", names.join(" "))
    }
}

/// "1.250s".
fn secs(ns: u64) -> String {
    format!("{:.3}s", ns as f64 / 1e9)
}

fn hash_member(h: &mut TraceHash, m: MemberIdRepr) {
    h.word(m.node);
    h.word(m.incarnation);
}

fn hash_view(h: &mut TraceHash, v: ViewIdRepr) {
    h.word(v.epoch);
    hash_member(h, v.coord);
}

/// Feeds a record into the trace hash.
fn hash_record(h: &mut TraceHash, now: u64, member: MemberId, kind: &RecordKind) {
    h.word(0xE7);
    h.word(now);
    hash_member(h, member.into());
    match kind {
        RecordKind::Started => h.word(1),
        RecordKind::Send {
            msg,
            ordering,
            digest,
            view,
        } => {
            h.word(2);
            hash_member(h, msg.sender);
            h.word(msg.n);
            h.word(u64::from(*ordering));
            h.word(*digest);
            match view {
                Some(v) => hash_view(h, *v),
                None => h.word(u64::MAX),
            }
        }
        RecordKind::Deliver {
            msg,
            sender,
            ordering,
            view,
            digest,
        } => {
            h.word(3);
            hash_member(h, msg.sender);
            h.word(msg.n);
            hash_member(h, *sender);
            h.word(u64::from(*ordering));
            hash_view(h, *view);
            h.word(*digest);
        }
        RecordKind::ViewInstalled {
            view,
            members,
            state_digest,
        } => {
            h.word(4);
            hash_view(h, *view);
            h.word(members.len() as u64);
            for m in members {
                hash_member(h, *m);
            }
            h.word(state_digest.unwrap_or(u64::MAX));
        }
        RecordKind::Blocked => h.word(5),
        RecordKind::StateInstalled { view, state_digest } => {
            h.word(6);
            hash_view(h, *view);
            h.word(*state_digest);
        }
        RecordKind::StateProvided { view, state_digest } => {
            h.word(7);
            hash_view(h, *view);
            h.word(*state_digest);
        }
        RecordKind::LeaveRequested => h.word(8),
        RecordKind::Exited { left } => {
            h.word(9);
            h.word(u64::from(*left));
        }
        RecordKind::Crashed => h.word(10),
        RecordKind::QueryDone { replies, departed } => {
            h.word(11);
            h.word(u64::from(*replies));
            h.word(u64::from(*departed));
        }
        RecordKind::MarkSet { value } => {
            h.word(12);
            h.word(*value);
        }
        RecordKind::MarkSeen { from, value } => {
            h.word(13);
            hash_member(h, *from);
            h.word(*value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::rng_from;

    #[test]
    fn a_timer_fires_at_the_first_global_instant_its_local_time_is_reached() {
        let mut rng = rng_from(1);
        for _ in 0..2_000 {
            let clock = Clock {
                offset_ns: between(&mut rng, 0, SKEW_OFFSET_NS_MAX),
                rate_ppm: between(&mut rng, SKEW_PPM.0, SKEW_PPM.1),
            };
            let g = between(&mut rng, 0, 100_000_000_000);
            let deadline = Time(clock.local(g).as_nanos() + between(&mut rng, 0, 1_000_000_000));
            let at = clock.global(deadline);
            assert!(
                clock.local(at) >= deadline,
                "the timer is due when it fires"
            );
            assert!(
                at == 0 || clock.local(at - 1) < deadline,
                "and not a nanosecond later than needed"
            );
        }
    }

    #[test]
    fn local_time_never_runs_backwards() {
        let clock = Clock {
            offset_ns: 12_345,
            rate_ppm: 980_000,
        };
        let mut last = clock.local(0);
        for g in (0..10_000_000u64).step_by(997) {
            let t = clock.local(g);
            assert!(t >= last);
            last = t;
        }
        assert_eq!(Clock::EXACT.local(42), Time(42));
        assert_eq!(Clock::EXACT.global(Time(42)), 42);
    }

    #[test]
    fn addresses_name_their_node() {
        for i in [0usize, 1, 7, 31] {
            assert_eq!(addr_node(&node_addr(i), 32), Some(i));
        }
        assert_eq!(addr_node(&node_addr(32), 32), None);
        assert_eq!(addr_node(b"short", 32), None);
    }

    #[test]
    fn short_runs_keep_a_quiet_third_and_an_empty_chaos_window() {
        let mut cfg = SimConfig::new(1);
        cfg.duration = Duration::from_secs(3);
        let (healed_at, quiet_at, end) = cfg.timeline();
        assert_eq!(end, 3_000_000_000);
        assert_eq!(quiet_at, 2_000_000_000);
        assert!(healed_at <= quiet_at);
        let cfg = SimConfig::new(1);
        let (healed_at, quiet_at, end) = cfg.timeline();
        assert_eq!(
            (healed_at, quiet_at, end),
            (20_000_000_000, 27_000_000_000, 30_000_000_000)
        );
    }

    #[test]
    fn bad_configs_are_refused() {
        let mut cfg = SimConfig::new(1);
        cfg.nodes = 0;
        assert!(cfg.validate().is_err());
        let mut cfg = SimConfig::new(1);
        cfg.workload.payload_min = 8;
        assert!(cfg.validate().is_err());
        let mut cfg = SimConfig::new(1);
        cfg.engine.suspect_timeout = Duration::from_millis(1);
        assert!(matches!(cfg.validate(), Err(SimError::Engine(_))));
        assert!(SimConfig::default().validate().is_ok());
    }
}
