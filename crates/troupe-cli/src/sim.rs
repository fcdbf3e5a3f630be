//! `troupe sim`: run the deterministic simulator over many seeds and check
//! every guarantee on each run.
//!
//! Seeds run in parallel, one thread per core (each run is independent and
//! deterministic), and are reported in seed order. A failing seed is printed
//! with its violations, a short trace around each, and the command that
//! replays it exactly.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use troupe_core::Time;
use troupe_sim::check::{describe_record, trace_around, Property, Report};
use troupe_sim::{Nemesis, SimConfig, SimOutcome};

/// Arguments of `troupe sim`.
#[derive(clap::Args, Debug)]
pub struct SimArgs {
    /// Run N seeds, from --seed on (S, S+1, ..., S+N-1).
    #[arg(long, value_name = "N")]
    seeds: Option<u64>,
    /// The seed to run (the first one with --seeds).
    #[arg(long, value_name = "S", default_value_t = 1)]
    seed: u64,
    /// Nodes (process slots) in the group.
    #[arg(long, value_name = "K", default_value_t = 5)]
    nodes: usize,
    /// Simulated length of each run, in seconds (the last 10 s heal).
    #[arg(long, value_name = "SIMULATED_SECS", default_value = "30", value_parser = parse_secs)]
    duration: Secs,
    /// Faults to inject: all, none, or a comma-separated list of crash,
    /// restart, pause, partition, one-way, isolate-coordinator, flap, loss,
    /// duplicate, skew.
    #[arg(long, value_name = "all|none|LIST", default_value = "all", value_parser = parse_nemesis)]
    nemesis: Nemesis,
    /// Run a deliberately broken protocol variant (see --list-mutants): the
    /// checkers must catch it.
    #[arg(long, value_name = "NAME")]
    mutant: Option<String>,
    /// Print the mutants' names, one a line, and exit.
    #[arg(long)]
    list_mutants: bool,
    /// Print one JSON object (the last line of stdout) instead of the summary.
    #[arg(long)]
    json: bool,
    /// Messages per second each member sends (default: the workload's).
    #[arg(long, value_name = "MSGS_PER_SEC")]
    rate: Option<f64>,
    /// Length of the healing period at the end of each run, in simulated
    /// seconds (default 10).
    #[arg(long, value_name = "SIMULATED_SECS", value_parser = parse_secs)]
    heal: Option<Secs>,
    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Print the whole recorded history and the faults of the (single) seed
    /// before the summary: the long form of a replay.
    #[arg(long, conflicts_with_all = ["seeds", "json"])]
    history: bool,
}

/// Seconds as typed (kept to print the replay command as the user wrote it).
#[derive(Clone, Debug)]
struct Secs {
    text: String,
    value: Duration,
}

fn parse_secs(s: &str) -> Result<Secs, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !v.is_finite() || v <= 0.0 || v > 1e6 {
        return Err(format!(
            "{s} must be a positive number of seconds (at most 1000000)"
        ));
    }
    Ok(Secs {
        text: s.to_string(),
        value: Duration::from_secs_f64(v),
    })
}

fn parse_nemesis(s: &str) -> Result<Nemesis, String> {
    s.parse()
}

/// How many failing seeds are printed in detail, and how many violations
/// of each: enough to start debugging, few enough to read.
const FAILING_SEEDS_SHOWN: usize = 3;
const VIOLATIONS_SHOWN: usize = 3;
/// Records of trace printed around each violation.
const TRACE_LINES: usize = 16;
/// Faults listed before the first violation of a failing seed.
const FAULTS_SHOWN: usize = 8;

/// What one seed's run left for the report (the history stays in the worker).
struct SeedResult {
    seed: u64,
    counts: Vec<(Property, usize)>,
    violations: usize,
    panic: Option<String>,
    messages_sent: u64,
    messages_delivered: u64,
    views_installed: u64,
    faults_injected: u64,
    sim_seconds: f64,
    trace_hash: u64,
    failover_ns: Vec<u64>,
    join_ns: Vec<u64>,
    /// The rendered details, for a failing seed.
    detail: String,
}

impl SeedResult {
    fn failed(&self) -> bool {
        self.violations > 0 || self.panic.is_some()
    }
}

/// Runs `troupe sim`.
pub fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    if args.list_mutants {
        for name in mutant_names() {
            println!("{name}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.nodes == 0 || args.nodes > 1024 {
        bail!("--nodes must be between 1 and 1024, not {}", args.nodes);
    }
    if args.seeds == Some(0) {
        bail!("--seeds must be at least 1");
    }
    if let Some(r) = args.rate {
        if !r.is_finite() || r < 0.0 {
            bail!("--rate must be a non-negative number of messages per second");
        }
    }
    let mutant = args.mutant.as_deref().map(resolve_mutant).transpose()?;
    let count = args.seeds.unwrap_or(1);
    let first = args.seed;
    if first.checked_add(count - 1).is_none() {
        bail!("--seed {first} with --seeds {count} runs past the last seed");
    }
    let base = config(&args, mutant)?;
    if args.history {
        print_history(&base);
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 256)
        .min(usize::try_from(count).unwrap_or(usize::MAX));

    let progress = (!args.json && count > 1 && std::io::stderr().is_terminal()).then(|| {
        let pb = indicatif::ProgressBar::new(count);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} seeds {pos}/{len} [{bar:40}] {elapsed} (eta {eta}) {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        pb
    });

    let wall = Instant::now();
    let results = run_seeds(&base, &args, first, count, threads, progress.as_ref());
    let wall_seconds = wall.elapsed().as_secs_f64();
    if let Some(pb) = &progress {
        pb.finish_and_clear();
    }

    let summary = Summary::new(&results, wall_seconds);
    if args.json {
        println!("{}", summary.json(&args, first, count));
    } else {
        print!("{}", summary.text(&args, first, count, &results));
    }
    Ok(if summary.failing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The simulation config the arguments ask for (the seed is set per run).
fn config(args: &SimArgs, mutant: Option<MutantSel>) -> anyhow::Result<SimConfig> {
    let mut cfg = SimConfig::new(args.seed);
    cfg.nodes = args.nodes;
    cfg.duration = args.duration.value;
    cfg.nemesis = args.nemesis;
    if let Some(h) = &args.heal {
        cfg.heal = h.value;
    }
    if let Some(r) = args.rate {
        cfg.workload.send_rate = r;
    }
    #[cfg(feature = "mutants")]
    {
        cfg.mutant = mutant;
    }
    #[cfg(not(feature = "mutants"))]
    let _ = mutant;
    cfg.validate()
        .context("the simulation cannot run with these arguments")?;
    Ok(cfg)
}

#[cfg(feature = "mutants")]
type MutantSel = troupe_core::Mutant;
#[cfg(not(feature = "mutants"))]
type MutantSel = std::convert::Infallible;

fn mutant_names() -> Vec<&'static str> {
    #[cfg(feature = "mutants")]
    {
        troupe_core::Mutant::ALL.iter().map(|m| m.name()).collect()
    }
    #[cfg(not(feature = "mutants"))]
    {
        Vec::new()
    }
}

fn resolve_mutant(name: &str) -> anyhow::Result<MutantSel> {
    #[cfg(feature = "mutants")]
    {
        match troupe_core::Mutant::from_name(name) {
            Some(m) => Ok(m),
            None => bail!(
                "unknown mutant {name:?}; the mutants are: {}",
                mutant_names().join(", ")
            ),
        }
    }
    #[cfg(not(feature = "mutants"))]
    {
        bail!("this build of troupe has no mutants (build troupe-cli with the `mutants` feature to run {name:?})")
    }
}

thread_local! {
    /// The last panic on this thread (message and location), captured by the
    /// hook installed while seeds run, so that an engine assertion becomes a
    /// failing seed rather than a crash of the whole command.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs the seeds on `threads` workers; results in seed order.
fn run_seeds(
    base: &SimConfig,
    args: &SimArgs,
    first: u64,
    count: u64,
    threads: usize,
    progress: Option<&indicatif::ProgressBar>,
) -> Vec<SeedResult> {
    let n = usize::try_from(count).expect("seed count fits in memory");
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<SeedResult>>> = Mutex::new((0..n).map(|_| None).collect());
    let failures = AtomicUsize::new(0);
    let previous_hook = panic::take_hook();
    panic::set_hook(Box::new(|info| {
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
    }));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let k = next.fetch_add(1, AtomicOrdering::Relaxed);
                if k >= n {
                    break;
                }
                let seed = first + k as u64;
                let r = run_seed(base, args, seed);
                if r.failed() {
                    failures.fetch_add(1, AtomicOrdering::Relaxed);
                }
                slots.lock().expect("no worker panics holding the lock")[k] = Some(r);
                if let Some(pb) = progress {
                    pb.inc(1);
                    let f = failures.load(AtomicOrdering::Relaxed);
                    if f > 0 {
                        pb.set_message(format!("{f} failing"));
                    }
                }
            });
        }
    });
    panic::set_hook(previous_hook);
    slots
        .into_inner()
        .expect("workers done")
        .into_iter()
        .map(|r| r.expect("every seed ran"))
        .collect()
}

fn run_seed(base: &SimConfig, args: &SimArgs, seed: u64) -> SeedResult {
    let mut cfg = base.clone();
    cfg.seed = seed;
    let ran = panic::catch_unwind(AssertUnwindSafe(|| {
        let outcome = troupe_sim::run(cfg).expect("config validated before the run");
        let report = outcome.check();
        (outcome, report)
    }));
    match ran {
        Ok((outcome, report)) => {
            let detail = if report.is_ok() {
                String::new()
            } else {
                render_failure(args, &outcome, &report)
            };
            SeedResult {
                seed,
                counts: report.counts.iter().map(|(p, c)| (*p, *c)).collect(),
                violations: report.total(),
                panic: None,
                messages_sent: outcome.stats.messages_sent,
                messages_delivered: outcome.stats.messages_delivered,
                views_installed: outcome.stats.views_installed,
                faults_injected: outcome.stats.faults_injected,
                sim_seconds: outcome.stats.sim_seconds,
                trace_hash: outcome.trace_hash,
                failover_ns: report.failover_ns,
                join_ns: report.join_ns,
                detail,
            }
        }
        Err(payload) => {
            let msg = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_else(|| {
                    payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panic".to_string())
                });
            let detail = format!(
                "  the simulation panicked: {msg}\n  replay: {}\n",
                replay_command(args, seed)
            );
            SeedResult {
                seed,
                counts: Vec::new(),
                violations: 0,
                panic: Some(msg),
                messages_sent: 0,
                messages_delivered: 0,
                views_installed: 0,
                faults_injected: 0,
                sim_seconds: 0.0,
                trace_hash: 0,
                failover_ns: Vec::new(),
                join_ns: Vec::new(),
                detail,
            }
        }
    }
}

/// Prints every record of one run, and its faults, in time order.
fn print_history(cfg: &SimConfig) {
    let Ok(outcome) = troupe_sim::run(cfg.clone()) else {
        return;
    };
    let mut faults = outcome.faults.iter().peekable();
    for r in &outcome.history.records {
        while let Some(f) = faults.next_if(|f| f.time_ns <= r.time_ns) {
            println!("{:>16} nemesis    {}", Time(f.time_ns).to_string(), f.text);
        }
        println!(
            "{:>16} {:<10} {}",
            Time(r.time_ns).to_string(),
            format!("n{}.{}", r.member.node, r.member.incarnation),
            describe_record(r)
        );
    }
    for f in faults {
        println!("{:>16} nemesis    {}", Time(f.time_ns).to_string(), f.text);
    }
    println!("{:#?}", outcome.stats);
}

/// The command that replays `seed` with the same settings.
fn replay_command(args: &SimArgs, seed: u64) -> String {
    let mut c = format!(
        "troupe sim --seed {seed} --nodes {} --duration {} --nemesis {}",
        args.nodes, args.duration.text, args.nemesis
    );
    if let Some(m) = &args.mutant {
        let _ = write!(c, " --mutant {m}");
    }
    if let Some(r) = args.rate {
        let _ = write!(c, " --rate {r}");
    }
    if let Some(h) = &args.heal {
        let _ = write!(c, " --heal {}", h.text);
    }
    c
}

/// A failing seed's violations, each with a trace, and the replay command.
fn render_failure(args: &SimArgs, outcome: &SimOutcome, report: &Report) -> String {
    let mut s = String::new();
    let shown = report.violations.len().min(VIOLATIONS_SHOWN);
    if let Some(first) = report.violations.first() {
        let t = first.time_ns.unwrap_or(outcome.history.end_ns);
        let before: Vec<_> = outcome.faults.iter().filter(|f| f.time_ns <= t).collect();
        if !before.is_empty() {
            let skip = before.len().saturating_sub(FAULTS_SHOWN);
            let _ = writeln!(
                s,
                "  faults before the first violation ({} in all):",
                before.len()
            );
            if skip > 0 {
                let _ = writeln!(s, "    ... {skip} earlier");
            }
            for f in &before[skip..] {
                let _ = writeln!(s, "    {f}");
            }
        }
    }
    for v in &report.violations[..shown] {
        let _ = writeln!(s, "  {v}");
        if !v.members.is_empty() {
            let ms: Vec<String> = v
                .members
                .iter()
                .map(|m| format!("n{}.{}", m.node, m.incarnation))
                .collect();
            let _ = writeln!(s, "    members:  {}", ms.join(", "));
        }
        if !v.messages.is_empty() {
            let ks: Vec<String> = v
                .messages
                .iter()
                .map(|k| format!("n{}.{}#{}", k.sender.node, k.sender.incarnation, k.n))
                .collect();
            let _ = writeln!(s, "    messages: {}", ks.join(", "));
        }
        let _ = writeln!(s, "    trace (* marks the records involved):");
        for line in trace_around(&outcome.history, v, TRACE_LINES).lines() {
            let _ = writeln!(s, "    {line}");
        }
    }
    if report.total() > shown {
        let _ = writeln!(s, "  ... and {} more violations", report.total() - shown);
    }
    let _ = writeln!(s, "  replay: {}", replay_command(args, outcome.seed));
    s
}

/// Totals over all seeds.
struct Summary {
    failing: Vec<u64>,
    panics: usize,
    violations: usize,
    by_property: Vec<(Property, usize)>,
    messages_sent: u64,
    messages_delivered: u64,
    views_installed: u64,
    faults_injected: u64,
    sim_seconds: f64,
    wall_seconds: f64,
    trace_hash: u64,
    failover_ns: Vec<u64>,
    join_ns: Vec<u64>,
}

impl Summary {
    fn new(results: &[SeedResult], wall_seconds: f64) -> Summary {
        let mut by_property: Vec<(Property, usize)> =
            Property::ALL.iter().map(|p| (*p, 0)).collect();
        let mut failover_ns = Vec::new();
        let mut join_ns = Vec::new();
        // Combines the runs' hashes in seed order: one number says whether two
        // machines ran the same simulations.
        let mut trace_hash: u64 = 0xcbf2_9ce4_8422_2325;
        for r in results {
            for (p, c) in &r.counts {
                if let Some(slot) = by_property.iter_mut().find(|(q, _)| q == p) {
                    slot.1 += c;
                }
            }
            failover_ns.extend_from_slice(&r.failover_ns);
            join_ns.extend_from_slice(&r.join_ns);
            trace_hash = (trace_hash ^ r.trace_hash).wrapping_mul(0x0000_0100_0000_01b3);
        }
        failover_ns.sort_unstable();
        join_ns.sort_unstable();
        Summary {
            failing: results
                .iter()
                .filter(|r| r.failed())
                .map(|r| r.seed)
                .collect(),
            panics: results.iter().filter(|r| r.panic.is_some()).count(),
            violations: results.iter().map(|r| r.violations).sum(),
            by_property,
            messages_sent: results.iter().map(|r| r.messages_sent).sum(),
            messages_delivered: results.iter().map(|r| r.messages_delivered).sum(),
            views_installed: results.iter().map(|r| r.views_installed).sum(),
            faults_injected: results.iter().map(|r| r.faults_injected).sum(),
            sim_seconds: results.iter().map(|r| r.sim_seconds).sum(),
            wall_seconds,
            trace_hash,
            failover_ns,
            join_ns,
        }
    }

    fn speed(&self) -> f64 {
        if self.wall_seconds > 0.0 {
            self.sim_seconds / self.wall_seconds
        } else {
            0.0
        }
    }

    fn json(&self, args: &SimArgs, first: u64, count: u64) -> Value {
        let by_property: serde_json::Map<String, Value> = self
            .by_property
            .iter()
            .filter(|(_, c)| *c > 0)
            .map(|(p, c)| (format!("{p:?}"), json!(c)))
            .collect();
        json!({
            "seeds": count,
            "first_seed": first,
            "nodes": args.nodes,
            "duration_s": args.duration.value.as_secs_f64(),
            "nemesis": args.nemesis.to_string(),
            "mutant": args.mutant,
            "violations": self.violations,
            "panics": self.panics,
            "failing_seeds": self.failing,
            "violations_by_property": by_property,
            "messages_sent": self.messages_sent,
            "messages_delivered": self.messages_delivered,
            "views_installed": self.views_installed,
            "faults_injected": self.faults_injected,
            "sim_seconds": self.sim_seconds,
            "wall_seconds": self.wall_seconds,
            "sim_seconds_per_wall_second": self.speed(),
            "failover_ms": percentiles_ms(&self.failover_ns),
            "join_ms": percentiles_ms(&self.join_ns),
            "trace_hash": format!("{:016x}", self.trace_hash),
        })
    }

    fn text(&self, args: &SimArgs, first: u64, count: u64, results: &[SeedResult]) -> String {
        let mut s = String::new();
        let seeds = if count == 1 {
            format!("seed {first}")
        } else {
            format!("{count} seeds ({first}..={})", first + count - 1)
        };
        let mutant = args
            .mutant
            .as_deref()
            .map(|m| format!(", mutant {m}"))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "troupe sim: {seeds}, {} nodes, {} s simulated each, nemesis {}{mutant}",
            args.nodes, args.duration.text, args.nemesis
        );
        let _ = writeln!(
            s,
            "  seeds passed   {} of {count}",
            count - self.failing.len() as u64
        );
        let props: Vec<String> = self
            .by_property
            .iter()
            .filter(|(_, c)| *c > 0)
            .map(|(p, c)| format!("{p}: {c}"))
            .collect();
        if props.is_empty() {
            let _ = writeln!(s, "  violations     0");
        } else {
            let _ = writeln!(
                s,
                "  violations     {} ({})",
                self.violations,
                props.join(", ")
            );
        }
        if self.panics > 0 {
            let _ = writeln!(s, "  panics         {}", self.panics);
        }
        let _ = writeln!(
            s,
            "  simulated      {:.0} s in {:.2} s of wall time ({:.0}x real time)",
            self.sim_seconds,
            self.wall_seconds,
            self.speed()
        );
        let _ = writeln!(
            s,
            "  messages       {} sent, {} deliveries; {} views installed; {} faults injected",
            self.messages_sent, self.messages_delivered, self.views_installed, self.faults_injected
        );
        for (name, v) in [("failover", &self.failover_ns), ("join", &self.join_ns)] {
            if !v.is_empty() {
                let _ = writeln!(
                    s,
                    "  {name:<14} p50 {} ms, p90 {} ms, p99 {} ms, max {} ms ({} measured)",
                    pct(v, 50) / 1_000_000,
                    pct(v, 90) / 1_000_000,
                    pct(v, 99) / 1_000_000,
                    v.last().copied().unwrap_or(0) / 1_000_000,
                    v.len()
                );
            }
        }
        if self.failing.is_empty() {
            return s;
        }
        let list: Vec<String> = self.failing.iter().take(50).map(u64::to_string).collect();
        let more = if self.failing.len() > 50 {
            format!(" and {} more", self.failing.len() - 50)
        } else {
            String::new()
        };
        let _ = writeln!(s, "failing seeds: {}{more}", list.join(", "));
        for r in results
            .iter()
            .filter(|r| r.failed())
            .take(FAILING_SEEDS_SHOWN)
        {
            let what = match &r.panic {
                Some(_) => "panicked".to_string(),
                None => format!(
                    "{} violation{}",
                    r.violations,
                    if r.violations == 1 { "" } else { "s" }
                ),
            };
            let _ = writeln!(s, "\n--- seed {}: {what}", r.seed);
            s.push_str(&r.detail);
        }
        if self.failing.len() > FAILING_SEEDS_SHOWN {
            let _ = writeln!(
                s,
                "\n({} more failing seeds not shown)",
                self.failing.len() - FAILING_SEEDS_SHOWN
            );
        }
        s
    }
}

/// The `p`th percentile of sorted `v` (nearest rank).
fn pct(v: &[u64], p: usize) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let rank = (p * v.len()).div_ceil(100).clamp(1, v.len());
    v[rank - 1]
}

fn percentiles_ms(v: &[u64]) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    let ms = |ns: u64| ns as f64 / 1e6;
    json!({
        "count": v.len(),
        "p50": ms(pct(v, 50)),
        "p90": ms(pct(v, 90)),
        "p99": ms(pct(v, 99)),
        "max": ms(*v.last().expect("not empty")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(
            (pct(&v, 50), pct(&v, 90), pct(&v, 99), pct(&v, 100)),
            (50, 90, 99, 100)
        );
        assert_eq!(pct(&[7], 50), 7);
        assert_eq!(pct(&[], 50), 0);
    }

    #[test]
    fn durations_must_be_positive_numbers() {
        assert!(parse_secs("2.5").is_ok());
        assert!(parse_secs("0").is_err());
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("soon").is_err());
        assert!(parse_secs("inf").is_err());
    }
}
