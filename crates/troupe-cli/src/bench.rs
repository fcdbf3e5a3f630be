//! `troupe bench`: troupe's throughput and latency, against a raw TCP
//! baseline measured in the same run.
//!
//! The parent starts the members as separate processes of this binary on
//! 127.0.0.1 (`troupe bench-member`, hidden), waits until they form one view,
//! tells them to go, and each member multicasts (all of them, or only the
//! first) for the given seconds while it counts its deliveries and records
//! the latency from send to delivery in an HDR histogram (the send time, from
//! the system clock, travels in the first 8 bytes of the payload: the
//! processes share one machine, hence one clock). Each member reports one
//! `result` line with its figures and histogram; the parent merges them.
//!
//! The baseline (`troupe bench-member --role tcp`) runs the same members,
//! sizes and senders over a full mesh of plain TCP connections with
//! length-prefixed frames and batched writes, and measures a round trip of
//! small frames between two idle members separately.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::AsyncBufReadExt;
use tokio::time::Instant;
use troupe::{Event, Group, Ordering};

use crate::procs::{exit_after, tell, unix_ns, Children};

mod failover;
mod plot;

/// Most members a bench starts.
const MEMBERS_MAX: usize = 16;
/// Largest payload.
const SIZE_MAX: usize = 4 << 20;
/// Smallest payload: the 8-byte send time.
const SIZE_MIN: usize = 8;
/// How long forming the group (or the mesh) may take.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);
/// Time after the run's seconds for the members to report.
const REPORT_TIMEOUT: Duration = Duration::from_secs(20);
/// Margin a child adds to the run's length before it exits on its own.
const CHILD_DEADLINE_MARGIN_SECS: u64 = 90;
/// Round trips of the baseline's ping-pong.
const RTT_ROUNDS: usize = 2000;
/// Bytes of a ping-pong frame.
const RTT_BYTES: usize = 64;
/// The members' default window, messages. At saturation a message waits
/// behind every unstable message of the group (Little's law), so the window
/// sets the latency; this one is still several round trips' worth at the
/// rates measured here, so it does not cost throughput.
const WINDOW_MSGS: usize = 1024;
/// Send tasks per sending member in an --overload run: far more than the
/// window lets out, so that most wait on back-pressure.
const SEND_TASKS_OVERLOAD: usize = 256;
/// The slow reader of an --overload run pauses for [`SLOW_READ_PAUSE`] after
/// this many events: it reads at most about 64k events/s, well below what
/// the others send.
const SLOW_READ_BATCH: u64 = 64;
/// See [`SLOW_READ_BATCH`].
const SLOW_READ_PAUSE: Duration = Duration::from_millis(1);
/// The pace of an --idle run: one message per interval at most (and never
/// two in flight), a load low enough that every message finds the group idle.
const IDLE_SEND_INTERVAL: Duration = Duration::from_millis(1);
/// How often an --overload run samples each member's resident memory.
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(500);
/// Send tasks per sending member (sends in flight at once).
const SEND_TASKS: usize = 32;
/// Highest latency the histograms track, ns (a minute).
const HIST_MAX_NS: u64 = 60_000_000_000;

/// The orderings a bench can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchOrdering {
    /// Per-sender order.
    Fifo,
    /// Happened-before order.
    Causal,
    /// One order at all members.
    Total,
    /// Total, delivered once every member holds it.
    Safe,
}

impl BenchOrdering {
    fn ordering(self) -> Ordering {
        match self {
            BenchOrdering::Fifo => Ordering::Fifo,
            BenchOrdering::Causal => Ordering::Causal,
            BenchOrdering::Total => Ordering::Total,
            BenchOrdering::Safe => Ordering::Safe,
        }
    }

    fn name(self) -> &'static str {
        match self {
            BenchOrdering::Fifo => "fifo",
            BenchOrdering::Causal => "causal",
            BenchOrdering::Total => "total",
            BenchOrdering::Safe => "safe",
        }
    }
}

/// Who multicasts during a bench.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Senders {
    /// Every member.
    All,
    /// The first member only.
    One,
}

impl Senders {
    fn name(self) -> &'static str {
        match self {
            Senders::All => "all",
            Senders::One => "one",
        }
    }

    fn sends(self, index: usize) -> bool {
        self == Senders::All || index == 0
    }
}

/// Arguments of `troupe bench`.
#[derive(Clone, clap::Args)]
pub struct BenchArgs {
    /// Member processes to start (2 to 16).
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// Bytes of each message (at least 8: the send time travels in it).
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// The ordering of troupe's messages.
    #[arg(long, value_enum, default_value_t = BenchOrdering::Total)]
    ordering: BenchOrdering,
    /// Who sends: every member, or the first one only.
    #[arg(long, value_enum, default_value_t = Senders::All)]
    senders: Senders,
    /// Seconds of traffic, for troupe and again for the baseline.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Print one JSON object as the last line of output.
    #[arg(long)]
    json: bool,
    /// Show the members' logs on standard error.
    #[arg(long)]
    verbose: bool,
    /// Run every ordering x size (64 B, 1 KiB, 16 KiB) x senders (the
    /// baseline once per size and senders) and write a CSV; --size,
    /// --ordering and --senders are ignored.
    #[arg(long)]
    sweep: bool,
    /// Where --sweep writes its CSV (and, beside it with the extension
    /// `.svg`, its plot).
    #[arg(long, default_value = "troupe-bench.csv")]
    csv: std::path::PathBuf,
    /// Each member's window: most of its own messages not yet stable.
    #[arg(long, default_value_t = WINDOW_MSGS)]
    window: usize,
    /// Kill a member again and again (restarting it) and report the time
    /// from each kill to a new view at every survivor, beyond the suspect
    /// timeout, and any false suspicion.
    #[arg(long, conflicts_with_all = ["sweep", "overload", "idle"])]
    failover: bool,
    /// Kills of a --failover run.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// The failure detector's timeout in a --failover run, ms.
    #[arg(long, default_value_t = 100)]
    suspect_timeout_ms: u64,
    /// Every member sends far more than the group can deliver (many sends
    /// in flight, and the last member reads its events slowly); each
    /// member's resident memory is sampled over the run. No baseline.
    #[arg(long, conflicts_with_all = ["sweep", "idle"])]
    overload: bool,
    /// One message at a time, at most one per millisecond, from the first
    /// member: latency on an idle group, against the raw TCP round trip.
    #[arg(long, conflicts_with = "sweep")]
    idle: bool,
    /// Worker threads of each troupe member's tokio runtime; 1 runs a
    /// member on a current-thread runtime (no cross-thread wake-ups). With
    /// three members on two cores, 1 is faster at 64 B and 1 KiB (total, 1
    /// KiB, all senders: 0.29 of raw TCP against 0.17 with 2) and at idle;
    /// 2 is faster at 16 KiB, where copying dominates.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    worker_threads: u16,
    /// Member-to-member TLS for troupe's members (mutual authentication,
    /// with a CA and certificates made for the run); the raw TCP baseline
    /// stays plaintext. Not with --failover.
    #[arg(long, conflicts_with = "failover")]
    tls: bool,
    /// Pin member i of either side to the i-th CPU (mod the CPUs this
    /// process may use), so that troupe and the baseline run with the same
    /// placement: members 0 and 1, whose round trip is the baseline's, on
    /// different cores. Unpinned, the scheduler may put both ends of the
    /// round trip on one core, where it is a pair of context switches
    /// (14-17 us here) rather than a wake-up across cores (55-85 us).
    #[arg(long)]
    pin: bool,
    /// Each troupe member loses this fraction of the datagrams it sends
    /// (the transport's fault injection; the baseline runs clean): how the
    /// group's repair holds up.
    #[arg(long, default_value_t = 0.0, conflicts_with = "failover")]
    drop: f64,
    /// Each troupe member holds every datagram it sends this many ms.
    #[arg(long, default_value_t = 0, conflicts_with = "failover")]
    delay_ms: u64,
    /// Where the run's certificates are (made by `run` for --tls).
    #[arg(skip)]
    tls_dir: Option<std::path::PathBuf>,
}

/// The faults `--drop` and `--delay-ms` ask troupe's members to inject.
fn injected(drop: f64, delay_ms: u64) -> troupe::Faults {
    troupe::Faults {
        drop,
        delay_ms,
        ..troupe::Faults::none()
    }
}

/// Which side of the comparison a member process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// A troupe member.
    Troupe,
    /// A member of the raw TCP baseline.
    Tcp,
    /// A troupe member that only reports its views (--failover).
    Watch,
}

/// Arguments of the hidden `troupe bench-member` (one member process of a bench).
#[derive(clap::Args)]
pub struct MemberArgs {
    /// Which side of the comparison.
    #[arg(long, value_enum)]
    role: Role,
    /// This member's index, from 0.
    #[arg(long)]
    index: usize,
    /// How many members the group has.
    #[arg(long)]
    members: usize,
    /// Bytes of each message.
    #[arg(long)]
    size: usize,
    /// The ordering (troupe only).
    #[arg(long, value_enum, default_value_t = BenchOrdering::Total)]
    ordering: BenchOrdering,
    /// Who sends.
    #[arg(long, value_enum)]
    senders: Senders,
    /// Seconds of traffic.
    #[arg(long)]
    seconds: u64,
    /// Members to join through (troupe; none: create the group).
    #[arg(long, num_args = 1..)]
    join: Vec<String>,
    /// Exit after this many seconds whatever happens.
    #[arg(long, default_value_t = 300)]
    deadline_secs: u64,
    /// The window (troupe only).
    #[arg(long, default_value_t = WINDOW_MSGS)]
    window: usize,
    /// The suspect timeout, ms (watch only).
    #[arg(long, default_value_t = 100)]
    suspect_timeout_ms: u64,
    /// Send without pause, and read slowly at the last member (troupe only).
    #[arg(long)]
    overload: bool,
    /// One message at a time, from the first member (troupe only).
    #[arg(long)]
    idle: bool,
    /// Worker threads of the member's runtime (troupe and watch only).
    #[arg(long, default_value_t = 1)]
    worker_threads: u16,
    /// Member-to-member TLS with the certificates in this directory (the
    /// member's are m<index>.pem and m<index>-key.pem; troupe only).
    #[arg(long)]
    tls_dir: Option<std::path::PathBuf>,
    /// Fraction of sent datagrams lost (troupe only).
    #[arg(long, default_value_t = 0.0)]
    drop: f64,
    /// Delay of every sent datagram, ms (troupe only).
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Run on one CPU: the index-th (mod) of those this process may use.
    #[arg(long)]
    pin: bool,
}

/// The CPUs in `set`, in order.
fn cpus_of(set: &nix::sched::CpuSet) -> Vec<usize> {
    (0..nix::sched::CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect()
}

/// Pins this process (its threads yet to start too) to the `index`-th of
/// the CPUs it may use, counting round.
fn pin_to_cpu(index: usize) -> anyhow::Result<usize> {
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    let allowed = sched_getaffinity(Pid::from_raw(0)).context("reading the CPU affinity")?;
    let cpus = cpus_of(&allowed);
    let Some(&cpu) = cpus.get(index % cpus.len().max(1)) else {
        bail!("no CPU to pin to");
    };
    let mut one = CpuSet::new();
    one.set(cpu).context("choosing a CPU")?;
    sched_setaffinity(Pid::from_raw(0), &one).context("pinning to a CPU")?;
    Ok(cpu)
}

// ---------------------------------------------------------------------------
// Figures.

fn new_hist() -> Histogram<u64> {
    // 3 significant digits from 1 ns to a minute: the bounds are valid constants.
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3).unwrap_or_else(|_| unreachable!())
}

fn record(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns.clamp(1, HIST_MAX_NS));
}

/// One member's figures over the measured window.
struct MemberResult {
    delivered: u64,
    secs: f64,
    hist: Histogram<u64>,
    /// Messages this member multicast, and datagrams its engine built
    /// (troupe only, else 0): how well messages share datagrams.
    sent: u64,
    datagrams_out: u64,
}

impl MemberResult {
    /// The `result` line a member prints: its counts and the histogram's
    /// recorded values as `[value, count]` pairs.
    fn to_line(&self) -> String {
        let buckets: Vec<[u64; 2]> = self
            .hist
            .iter_recorded()
            .map(|v| [v.value_iterated_to(), v.count_at_value()])
            .collect();
        format!(
            "result {}",
            json!({
                "delivered": self.delivered,
                "secs": self.secs,
                "sent": self.sent,
                "datagrams_out": self.datagrams_out,
                "hist": buckets,
            })
        )
    }

    fn parse(text: &str) -> anyhow::Result<MemberResult> {
        let v: serde_json::Value = serde_json::from_str(text).context("bad result line")?;
        let delivered = v["delivered"]
            .as_u64()
            .context("result without delivered")?;
        let secs = v["secs"].as_f64().context("result without secs")?;
        let mut hist = new_hist();
        if let Some(buckets) = v["hist"].as_array() {
            for b in buckets {
                let (Some(value), Some(count)) = (b[0].as_u64(), b[1].as_u64()) else {
                    bail!("bad histogram bucket in a result");
                };
                hist.saturating_record_n(value.clamp(1, HIST_MAX_NS), count);
            }
        }
        Ok(MemberResult {
            delivered,
            secs,
            hist,
            sent: v["sent"].as_u64().unwrap_or(0),
            datagrams_out: v["datagrams_out"].as_u64().unwrap_or(0),
        })
    }
}

/// The figures of one side, over all members.
struct SideFigures {
    /// Mean over members of each member's deliveries per second.
    msgs_per_sec: f64,
    /// Each member's deliveries per second.
    per_member: Vec<f64>,
    hist: Histogram<u64>,
    /// Messages sent per datagram built, over all members (0: not known).
    msgs_per_datagram: f64,
}

impl SideFigures {
    fn of(results: &[MemberResult]) -> SideFigures {
        let mut hist = new_hist();
        let mut per_member = Vec::new();
        for r in results {
            per_member.push(r.delivered as f64 / r.secs.max(1e-3));
            let _ = hist.add(&r.hist);
        }
        let msgs_per_sec = per_member.iter().sum::<f64>() / (per_member.len().max(1) as f64);
        let sent: u64 = results.iter().map(|r| r.sent).sum();
        let datagrams: u64 = results.iter().map(|r| r.datagrams_out).sum();
        SideFigures {
            msgs_per_sec,
            per_member,
            hist,
            msgs_per_datagram: if datagrams > 0 {
                sent as f64 / datagrams as f64
            } else {
                0.0
            },
        }
    }

    fn us(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1e3
    }
}

// ---------------------------------------------------------------------------
// The parent.

/// Runs `troupe bench`.
pub fn run(mut args: BenchArgs) -> anyhow::Result<ExitCode> {
    if !(2..=MEMBERS_MAX).contains(&args.members) {
        bail!("--members must be between 2 and {MEMBERS_MAX}");
    }
    if !(SIZE_MIN..=SIZE_MAX).contains(&args.size) {
        bail!("--size must be between {SIZE_MIN} and {SIZE_MAX} bytes");
    }
    if !(1..=3600).contains(&args.seconds) {
        bail!("--seconds must be between 1 and 3600");
    }
    injected(args.drop, args.delay_ms)
        .check()
        .map_err(|e| anyhow::anyhow!("--drop / --delay-ms: {e}"))?;
    // The run's certificates live as long as this guard.
    let pki = if args.tls {
        let dir = tempfile::Builder::new()
            .prefix("troupe-bench-pki")
            .tempdir()
            .context("cannot make a directory for the run's certificates")?;
        let nodes: Vec<String> = (0..args.members).map(|i| format!("m{i}")).collect();
        crate::certs::write_pki(
            dir.path(),
            "troupe-bench",
            &nodes,
            &["127.0.0.1".to_string()],
            1,
        )?;
        args.tls_dir = Some(dir.path().to_path_buf());
        Some(dir)
    } else {
        None
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = rt.block_on(async move {
        tokio::select! {
            r = bench(&args) => r,
            _ = tokio::signal::ctrl_c() => {
                // Dropping bench's future dropped its children: killed by pid.
                eprintln!("troupe bench: interrupted; members killed");
                Ok(ExitCode::from(130))
            }
        }
    });
    drop(pki);
    result
}

fn member_args(args: &BenchArgs, role: Role, index: usize) -> Vec<String> {
    let role = match role {
        Role::Troupe => "troupe",
        Role::Tcp => "tcp",
        Role::Watch => "watch",
    };
    let mut v: Vec<String> = vec![
        "bench-member".into(),
        "--role".into(),
        role.into(),
        "--index".into(),
        index.to_string(),
        "--members".into(),
        args.members.to_string(),
        "--size".into(),
        args.size.to_string(),
        "--ordering".into(),
        args.ordering.name().into(),
        "--senders".into(),
        args.senders.name().into(),
        "--seconds".into(),
        args.seconds.to_string(),
        "--deadline-secs".into(),
        (2 * args.seconds + CHILD_DEADLINE_MARGIN_SECS).to_string(),
        "--window".into(),
        args.window.to_string(),
    ];
    if args.overload {
        v.push("--overload".into());
    }
    if args.idle {
        v.push("--idle".into());
    }
    v.push("--worker-threads".into());
    v.push(args.worker_threads.to_string());
    if args.pin {
        v.push("--pin".into());
    }
    if role == "troupe" {
        if let Some(dir) = &args.tls_dir {
            v.push("--tls-dir".into());
            v.push(dir.display().to_string());
        }
        if args.drop > 0.0 {
            v.push("--drop".into());
            v.push(args.drop.to_string());
        }
        if args.delay_ms > 0 {
            v.push("--delay-ms".into());
            v.push(args.delay_ms.to_string());
        }
    }
    v
}

/// Waits for one line `word ...` from every child; returns the rest of each.
async fn gather(kids: &mut Children, word: &str, timeout: Duration) -> anyhow::Result<Vec<String>> {
    let until = Instant::now() + timeout;
    let mut got: Vec<Option<String>> = vec![None; kids.len()];
    while got.iter().any(Option::is_none) {
        let (i, line) = kids.next_line(until, word).await?;
        if let Some(rest) = line.strip_prefix(word) {
            if let Some(slot) = got.get_mut(i) {
                *slot = Some(rest.trim().to_string());
            }
        }
    }
    Ok(got.into_iter().flatten().collect())
}

/// Waits for one line `word ...` from child `i`.
async fn expect(
    kids: &mut Children,
    i: usize,
    word: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let until = Instant::now() + timeout;
    loop {
        let (j, line) = kids.next_line(until, word).await?;
        if j == i {
            if let Some(rest) = line.strip_prefix(word) {
                return Ok(rest.trim().to_string());
            }
        }
    }
}

fn parse_port(s: &str) -> anyhow::Result<u16> {
    s.parse::<u16>()
        .with_context(|| format!("bad port from a member: {s:?}"))
}

/// Resident memory samples of the members: (seconds since the start, KiB
/// per member, 0 when unreadable).
type RssSamples = Vec<(f64, Vec<u64>)>;

/// A process's resident memory in KiB, from `/proc/<pid>/status` (VmRSS).
fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples the resident memory of `pids` every [`RSS_SAMPLE_INTERVAL`]
/// until `stop`.
async fn sample_rss(pids: Vec<u32>, stop: Arc<AtomicBool>) -> RssSamples {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut tick = tokio::time::interval(RSS_SAMPLE_INTERVAL);
    while !stop.load(AtomicOrdering::Relaxed) {
        tick.tick().await;
        let kib = pids.iter().map(|p| rss_kib(*p).unwrap_or(0)).collect();
        out.push((start.elapsed().as_secs_f64(), kib));
    }
    out
}

/// Runs the troupe side: its members' results, and their resident memory
/// over the run when `args.overload`.
async fn troupe_side(args: &BenchArgs) -> anyhow::Result<(Vec<MemberResult>, RssSamples)> {
    let mut kids = Children::new()?;
    let first = kids.spawn(&member_args(args, Role::Troupe, 0), !args.verbose)?;
    let port = parse_port(&expect(&mut kids, first, "port", FORM_TIMEOUT).await?)?;
    for i in 1..args.members {
        let mut a = member_args(args, Role::Troupe, i);
        a.push("--join".into());
        a.push(format!("127.0.0.1:{port}"));
        kids.spawn(&a, !args.verbose)?;
    }
    gather(&mut kids, "ready", FORM_TIMEOUT).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = args.overload.then(|| {
        let pids = (0..kids.len()).filter_map(|i| kids.pid(i)).collect();
        tokio::spawn(sample_rss(pids, stop.clone()))
    });
    kids.tell_all("go").await;
    let results = gather(
        &mut kids,
        "result",
        Duration::from_secs(args.seconds) + REPORT_TIMEOUT,
    )
    .await;
    stop.store(true, AtomicOrdering::Relaxed);
    let rss = match sampler {
        Some(s) => s.await.unwrap_or_default(),
        None => Vec::new(),
    };
    let results = results?;
    kids.finish(Duration::from_secs(3)).await;
    let results = results
        .iter()
        .map(|r| MemberResult::parse(r))
        .collect::<anyhow::Result<_>>()?;
    Ok((results, rss))
}

/// The baseline's round trips, measured on idle members before its run.
struct RoundTrips {
    /// A ping to one other member and its echo.
    one: Histogram<u64>,
    /// A ping to every other member at once, until every echo is back: the
    /// raw TCP counterpart of a message reaching the whole group and
    /// coming back.
    mesh: Histogram<u64>,
}

impl RoundTrips {
    fn p50_us(h: &Histogram<u64>) -> f64 {
        h.value_at_quantile(0.5) as f64 / 1e3
    }
}

/// Runs the baseline: its members' results and the ping-pongs' round trips.
async fn tcp_side(args: &BenchArgs) -> anyhow::Result<(Vec<MemberResult>, RoundTrips)> {
    let mut kids = Children::new()?;
    for i in 0..args.members {
        kids.spawn(&member_args(args, Role::Tcp, i), !args.verbose)?;
    }
    let ports = gather(&mut kids, "port", FORM_TIMEOUT).await?;
    for p in &ports {
        parse_port(p)?;
    }
    kids.tell_all(&format!("peers {}", ports.join(" "))).await;
    gather(&mut kids, "ready", FORM_TIMEOUT).await?;
    // The round trip first, on idle members.
    kids.tell(0, "rtt").await;
    let one = expect(&mut kids, 0, "rtt", FORM_TIMEOUT).await?;
    kids.tell(0, "rtt-mesh").await;
    let mesh = expect(&mut kids, 0, "rtt", FORM_TIMEOUT).await?;
    let rtt = RoundTrips {
        one: MemberResult::parse(&one)?.hist,
        mesh: MemberResult::parse(&mesh)?.hist,
    };
    kids.tell_all("go").await;
    let results = gather(
        &mut kids,
        "result",
        Duration::from_secs(args.seconds) + REPORT_TIMEOUT,
    )
    .await?;
    kids.finish(Duration::from_secs(3)).await;
    let results = results
        .iter()
        .map(|r| MemberResult::parse(r))
        .collect::<anyhow::Result<_>>()?;
    Ok((results, rtt))
}

/// The figures of one configuration, as the JSON object and CSV row report them.
fn row(args: &BenchArgs, t: &SideFigures, b: &SideFigures, rtt: &RoundTrips) -> serde_json::Value {
    let mb = |m: f64| m * args.size as f64 / 1e6;
    let ratio = if b.msgs_per_sec > 0.0 {
        t.msgs_per_sec / b.msgs_per_sec
    } else {
        0.0
    };
    json!({
        "ordering": args.ordering.name(),
        "members": args.members,
        "size": args.size,
        "senders": args.senders.name(),
        "seconds": args.seconds,
        "msgs_per_sec": t.msgs_per_sec,
        "mb_per_sec": mb(t.msgs_per_sec),
        "per_member_msgs_per_sec": t.per_member,
        "p50_us": t.us(0.5),
        "p99_us": t.us(0.99),
        "p999_us": t.us(0.999),
        "baseline_msgs_per_sec": b.msgs_per_sec,
        "baseline_mb_per_sec": mb(b.msgs_per_sec),
        "baseline_per_member_msgs_per_sec": b.per_member,
        "baseline_p50_us": b.us(0.5),
        "baseline_p99_us": b.us(0.99),
        "baseline_rtt_p50_us": RoundTrips::p50_us(&rtt.one),
        "baseline_mesh_rtt_p50_us": RoundTrips::p50_us(&rtt.mesh),
        "ratio": ratio,
        "msgs_per_datagram": t.msgs_per_datagram,
        "tls": args.tls,
        "drop": args.drop,
        "delay_ms": args.delay_ms,
        "pinned": args.pin,
    })
}

/// The columns of the sweep's CSV, in order (fields of [`row`]).
const CSV_COLUMNS: [&str; 16] = [
    "ordering",
    "members",
    "size",
    "senders",
    "seconds",
    "msgs_per_sec",
    "mb_per_sec",
    "p50_us",
    "p99_us",
    "p999_us",
    "baseline_msgs_per_sec",
    "baseline_mb_per_sec",
    "baseline_p50_us",
    "baseline_rtt_p50_us",
    "baseline_mesh_rtt_p50_us",
    "ratio",
];

fn csv_line(r: &serde_json::Value) -> String {
    CSV_COLUMNS
        .iter()
        .map(|c| match &r[*c] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => match n.as_f64() {
                Some(x) if n.is_f64() => format!("{x:.3}"),
                _ => n.to_string(),
            },
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn print_table(r: &serde_json::Value) {
    let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
    println!(
        "\n{:<18} {:>14} {:>10} {:>10} {:>10} {:>10}",
        "", "msgs/s/member", "MB/s", "p50 us", "p99 us", "p99.9 us"
    );
    println!(
        "{:<18} {:>14.0} {:>10.1} {:>10.0} {:>10.0} {:>10.0}",
        format!(
            "troupe {}{}",
            r["ordering"].as_str().unwrap_or("?"),
            if r["tls"] == true { " tls" } else { "" }
        ),
        f("msgs_per_sec"),
        f("mb_per_sec"),
        f("p50_us"),
        f("p99_us"),
        f("p999_us")
    );
    println!(
        "{:<18} {:>14.0} {:>10.1} {:>10.0} {:>10.0} {:>10}",
        "raw TCP mesh",
        f("baseline_msgs_per_sec"),
        f("baseline_mb_per_sec"),
        f("baseline_p50_us"),
        f("baseline_p99_us"),
        ""
    );
    println!(
        "\nraw TCP round trip ({RTT_BYTES} B, idle) p50: {:.1} us (to every other member at once: {:.1} us)",
        f("baseline_rtt_p50_us"),
        f("baseline_mesh_rtt_p50_us")
    );
    if f("drop") > 0.0 || f("delay_ms") > 0.0 {
        println!(
            "(troupe's members lost {:.2}% of the datagrams they sent and held each {} ms; the baseline ran clean)",
            100.0 * f("drop"),
            f("delay_ms")
        );
    }
    println!("troupe / raw TCP deliveries per member: {:.3}", f("ratio"));
}

async fn bench(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    if args.sweep {
        return sweep(args).await;
    }
    if args.failover {
        return failover::run(args).await;
    }
    if args.overload {
        return overload(args).await;
    }
    if args.idle {
        return idle(args).await;
    }
    if !args.json {
        eprintln!(
            "troupe bench: {} members, {} B, {}, senders {}, {} s each side",
            args.members,
            args.size,
            args.ordering.name(),
            args.senders.name(),
            args.seconds
        );
        eprintln!("  running troupe ...");
    }
    let t = SideFigures::of(&troupe_side(args).await.context("troupe side")?.0);
    if !args.json {
        eprintln!("  running the raw TCP baseline ...");
    }
    let (b, rtt) = tcp_side(args).await.context("baseline side")?;
    let r = row(args, &t, &SideFigures::of(&b), &rtt);
    if args.json {
        println!("{r}");
    } else {
        print_table(&r);
    }
    Ok(ExitCode::SUCCESS)
}

/// `--idle`: one message at a time, then the baseline's round trip.
async fn idle(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    if !args.json {
        eprintln!(
            "troupe bench --idle: {} members, {} B, {}, one message at a time for {} s",
            args.members,
            args.size,
            args.ordering.name(),
            args.seconds
        );
    }
    let (results, _) = troupe_side(args).await.context("troupe side")?;
    let t = SideFigures::of(&results);
    // The baseline's round trip is measured on idle members before its
    // run, which needs only a second here.
    let mut a = args.clone();
    a.seconds = 1;
    let (_, rtt) = tcp_side(&a).await.context("baseline side")?;
    let rtt_us = RoundTrips::p50_us(&rtt.one);
    let mesh_us = RoundTrips::p50_us(&rtt.mesh);
    let over = |x: f64| if x > 0.0 { t.us(0.5) / x } else { 0.0 };
    let r = json!({
        "mode": "idle",
        "ordering": args.ordering.name(),
        "members": args.members,
        "size": args.size,
        "seconds": args.seconds,
        "messages": results.first().map_or(0, |r| r.sent),
        "p50_us": t.us(0.5),
        "p99_us": t.us(0.99),
        "p999_us": t.us(0.999),
        "baseline_rtt_p50_us": rtt_us,
        "p50_over_rtt": over(rtt_us),
        "baseline_mesh_rtt_p50_us": mesh_us,
        "p50_over_mesh_rtt": over(mesh_us),
        "pinned": args.pin,
    });
    if args.json {
        println!("{r}");
    } else {
        let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
        println!(
            "\ntroupe {} at idle, send to delivery at every member: p50 {:.0} us, p99 {:.0} us, p99.9 {:.0} us ({} messages)",
            args.ordering.name(),
            f("p50_us"),
            f("p99_us"),
            f("p999_us"),
            r["messages"]
        );
        println!(
            "raw TCP round trip ({RTT_BYTES} B, idle) p50: {:.1} us; troupe p50 / round trip: {:.2}",
            rtt_us,
            f("p50_over_rtt")
        );
        println!(
            "raw TCP round trip to all {} other members at once p50: {:.1} us; troupe p50 / that: {:.2}",
            args.members.saturating_sub(1),
            mesh_us,
            f("p50_over_mesh_rtt")
        );
        if args.pin {
            println!(
                "(members pinned: member i on CPU i mod CPUs, on either side; the round trip is between two cores)"
            );
        } else {
            println!(
                "(members not pinned: the scheduler may put both ends of the round trip on one core, where it is far \
                 shorter than across cores; --pin fixes the placement)"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--overload`: the members' resident memory while every sender pushes far
/// more than the group can deliver.
async fn overload(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    if !args.json {
        eprintln!(
            "troupe bench --overload: {} members, {} B, {}, window {}, {} s; the last member reads slowly",
            args.members,
            args.size,
            args.ordering.name(),
            args.window,
            args.seconds
        );
    }
    let mut a = args.clone();
    a.senders = Senders::All;
    let (results, rss) = troupe_side(&a).await.context("troupe side")?;
    let t = SideFigures::of(&results);
    let n = args.members;
    // Per member: the samples in the second half of the run against the
    // first half's peak: flat means the second half grows no further.
    let mut first_half_max = vec![0u64; n];
    let mut second_half_max = vec![0u64; n];
    let half = args.seconds as f64 / 2.0;
    for (at, kib) in &rss {
        for (i, k) in kib.iter().enumerate().take(n) {
            let slot = if *at < half {
                &mut first_half_max[i]
            } else {
                &mut second_half_max[i]
            };
            *slot = (*slot).max(*k);
        }
    }
    let samples: Vec<serde_json::Value> = rss
        .iter()
        .map(|(at, kib)| json!({ "secs": at, "rss_kib": kib }))
        .collect();
    let r = json!({
        "mode": "overload",
        "ordering": args.ordering.name(),
        "members": n,
        "size": args.size,
        "seconds": args.seconds,
        "window": args.window,
        "per_member_msgs_per_sec": t.per_member,
        "rss_first_half_max_kib": first_half_max,
        "rss_second_half_max_kib": second_half_max,
        "rss_samples": samples,
    });
    if args.json {
        println!("{r}");
    } else {
        println!(
            "\nresident memory (MiB) every {} ms:",
            RSS_SAMPLE_INTERVAL.as_millis()
        );
        print!("{:>7}", "s");
        for i in 0..n {
            print!(" {:>9}", format!("member {i}"));
        }
        println!();
        for (at, kib) in &rss {
            print!("{at:>7.1}");
            for k in kib {
                print!(" {:>9.1}", *k as f64 / 1024.0);
            }
            println!();
        }
        println!("\ndeliveries per second at each member (the last reads slowly):");
        for (i, m) in t.per_member.iter().enumerate() {
            println!("  member {i}: {m:.0}");
        }
        for i in 0..n {
            println!(
                "member {i}: peak {:.1} MiB in the first half, {:.1} MiB in the second",
                first_half_max[i] as f64 / 1024.0,
                second_half_max[i] as f64 / 1024.0
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Sizes of a sweep, bytes.
const SWEEP_SIZES: [usize; 3] = [64, 1024, 16 << 10];

/// `--sweep`: every ordering x size x senders, one baseline per size and
/// senders; a CSV of the rows.
async fn sweep(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    let orderings = [
        BenchOrdering::Fifo,
        BenchOrdering::Causal,
        BenchOrdering::Total,
        BenchOrdering::Safe,
    ];
    let senders = [Senders::All, Senders::One];
    let runs = (SWEEP_SIZES.len() * senders.len() * (orderings.len() + 1)) as u64;
    let mut csv = std::fs::File::create(&args.csv)
        .with_context(|| format!("cannot create {}", args.csv.display()))?;
    writeln!(csv, "{}", CSV_COLUMNS.join(","))?;
    let progress = (!args.json && std::io::stderr().is_terminal()).then(|| {
        let pb = indicatif::ProgressBar::new(runs);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} runs {pos}/{len} [{bar:40}] {elapsed} (eta {eta}) {msg}",
        ) {
            pb.set_style(style.progress_chars("=> "));
        }
        pb
    });
    let mut rows = Vec::new();
    for size in SWEEP_SIZES {
        for s in senders {
            let mut a = args.clone();
            a.size = size;
            a.senders = s;
            let note = |what: String| match &progress {
                Some(pb) => pb.set_message(what),
                None if !args.json => eprintln!("  {what}"),
                None => {}
            };
            note(format!("raw TCP, {size} B, senders {}", s.name()));
            let (b, rtt) = tcp_side(&a).await.context("baseline side")?;
            let b = SideFigures::of(&b);
            if let Some(pb) = &progress {
                pb.inc(1);
            }
            for o in orderings {
                a.ordering = o;
                note(format!(
                    "troupe {}, {size} B, senders {}",
                    o.name(),
                    s.name()
                ));
                let t = SideFigures::of(&troupe_side(&a).await.context("troupe side")?.0);
                let r = row(&a, &t, &b, &rtt);
                writeln!(csv, "{}", csv_line(&r))?;
                csv.flush()?;
                if let Some(pb) = &progress {
                    pb.inc(1);
                }
                rows.push(r);
            }
        }
    }
    if let Some(pb) = &progress {
        pb.finish_and_clear();
    }
    let svg = args.csv.with_extension("svg");
    plot::write_svg(&svg, &rows)?;
    if args.json {
        println!(
            "{}",
            json!({
                "csv": args.csv.display().to_string(),
                "svg": svg.display().to_string(),
                "rows": rows,
            })
        );
    } else {
        println!(
            "\n{:<8} {:>6} {:>7} {:>14} {:>14} {:>8} {:>10}",
            "ordering", "size", "senders", "msgs/s/member", "TCP msgs/s", "ratio", "p50 us"
        );
        for r in &rows {
            let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
            println!(
                "{:<8} {:>6} {:>7} {:>14.0} {:>14.0} {:>8.3} {:>10.0}",
                r["ordering"].as_str().unwrap_or("?"),
                r["size"],
                r["senders"].as_str().unwrap_or("?"),
                f("msgs_per_sec"),
                f("baseline_msgs_per_sec"),
                f("ratio"),
                f("p50_us")
            );
        }
        println!("\nCSV in {}, plot in {}", args.csv.display(), svg.display());
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------
// The member processes.

/// Runs `troupe bench-member`.
pub fn run_member(args: MemberArgs) -> anyhow::Result<ExitCode> {
    if args.size < SIZE_MIN || args.size > SIZE_MAX || args.members < 2 {
        bail!("bad bench member arguments");
    }
    if args.pin {
        // Before any thread starts: threads inherit the mask.
        pin_to_cpu(args.index)?;
    }
    exit_after(args.deadline_secs);
    match args.role {
        Role::Troupe => {
            crate::node::init_logging("warn");
            let rt = crate::runtime(usize::from(args.worker_threads.max(1)))?;
            rt.block_on(troupe_member(args))
        }
        Role::Tcp => tcp_member(args),
        Role::Watch => {
            crate::node::init_logging("warn");
            let rt = crate::runtime(usize::from(args.worker_threads.max(1)))?;
            rt.block_on(failover::member(args))
        }
    }
}

/// A payload: the send time, then zeros.
fn payload(size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size];
    p[..8].copy_from_slice(&unix_ns().to_le_bytes());
    p
}

fn sent_at(payload: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(payload.get(..8)?.try_into().ok()?))
}

async fn troupe_member(args: MemberArgs) -> anyhow::Result<ExitCode> {
    let mut b = Group::builder("troupe-bench")
        .listen("127.0.0.1:0")
        .node_id(args.index as u64 + 1)
        // Generous: a loaded 2-core machine must not exclude anyone.
        .suspect_timeout(Duration::from_secs(10))
        .flush_timeout(Duration::from_secs(10))
        .join_timeout(FORM_TIMEOUT)
        .window_msgs_max(args.window.max(2))
        .stateless();
    if !args.join.is_empty() {
        b = b.join(args.join.clone());
    }
    if let Some(dir) = &args.tls_dir {
        let me = format!("m{}", args.index);
        b = b.tls(troupe::TlsFiles {
            cert_file: dir.join(format!("{me}.pem")),
            key_file: dir.join(format!("{me}-key.pem")),
            trusted_ca_file: dir.join("ca.pem"),
        });
    }
    let faults = troupe::FaultInjector::new();
    faults.set(injected(args.drop, args.delay_ms))?;
    b = b.faults(faults);
    let group = b.start().await.context("cannot start the member")?;
    let (handle, mut events) = group.split();
    tell(&format!("port {}", handle.local_addr().port()));

    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    // Until every member is in the view, then until "go".
    let mut ready = false;
    let mut go = false;
    if handle
        .view()
        .is_some_and(|v| v.members.len() >= args.members)
    {
        ready = true;
        tell("ready");
    }
    while !go {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(Event::View(v)) => {
                    if !ready && v.members.len() >= args.members {
                        ready = true;
                        tell("ready");
                    }
                }
                Some(Event::Exited(r)) => bail!("excluded before the run: {r:?}"),
                Some(_) => {}
                None => bail!("the group closed before the run"),
            },
            line = stdin.next_line() => match line {
                Ok(Some(l)) if l.trim() == "go" => go = true,
                Ok(Some(_)) => {}
                _ => return Ok(ExitCode::SUCCESS),
            },
        }
    }

    let seconds = Duration::from_secs(args.seconds);
    let start = Instant::now();
    let end = start + seconds;
    let stop = Arc::new(AtomicBool::new(false));
    // Several sends in flight, as an application with many clients has:
    // each `send` waits for the driver to accept its message, so a single
    // loop would hand the driver one message per wake-up.
    let mut senders = tokio::task::JoinSet::new();
    // --idle: the next send waits for the delivery of the last one here.
    let own_delivered = Arc::new(tokio::sync::Notify::new());
    let me = handle.me();
    if args.idle {
        if args.index == 0 {
            let handle = handle.clone();
            let own = own_delivered.clone();
            let ordering = args.ordering.ordering();
            let size = args.size;
            senders.spawn(async move {
                let mut tick = tokio::time::interval(IDLE_SEND_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while Instant::now() < end {
                    tick.tick().await;
                    if let Err(e) = handle.send(ordering, payload(size)).await {
                        tracing::warn!(error = %e, "send failed");
                        return;
                    }
                    own.notified().await;
                }
            });
        }
    } else if args.senders.sends(args.index) {
        let tasks = if args.overload {
            SEND_TASKS_OVERLOAD
        } else {
            SEND_TASKS
        };
        for _ in 0..tasks {
            let handle = handle.clone();
            let stop = stop.clone();
            let ordering = args.ordering.ordering();
            let size = args.size;
            senders.spawn(async move {
                while !stop.load(AtomicOrdering::Relaxed) && Instant::now() < end {
                    if let Err(e) = handle.send(ordering, payload(size)).await {
                        tracing::warn!(error = %e, "send failed");
                        return;
                    }
                }
            });
        }
    }
    // --overload: the last member is a slow reader.
    let slow = args.overload && args.index + 1 == args.members;
    let mut read = 0u64;
    let mut hist = new_hist();
    let mut delivered = 0u64;
    let deadline = tokio::time::sleep_until(end);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            ev = events.recv() => match ev {
                Some(Event::Deliver(d)) => {
                    let now = unix_ns();
                    delivered += 1;
                    if let Some(t) = sent_at(&d.payload) {
                        record(&mut hist, now.saturating_sub(t));
                    }
                    if args.idle && d.sender == me {
                        own_delivered.notify_one();
                    }
                    read += 1;
                    if slow && read == SLOW_READ_BATCH {
                        read = 0;
                        tokio::time::sleep(SLOW_READ_PAUSE).await;
                    }
                }
                Some(Event::Exited(r)) => bail!("excluded during the run: {r:?}"),
                Some(_) => {}
                None => bail!("the group closed during the run"),
            },
        }
    }
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, AtomicOrdering::Relaxed);
    senders.abort_all();
    let stats = handle.stats().await.unwrap_or_default();
    tell(
        &MemberResult {
            delivered,
            secs,
            hist,
            sent: stats.sent.iter().sum(),
            datagrams_out: stats.datagrams_out,
        }
        .to_line(),
    );
    // Keep the group up (draining events) until the parent is done.
    loop {
        tokio::select! {
            ev = events.recv() => if ev.is_none() { break },
            line = stdin.next_line() => match line {
                Ok(Some(_)) => {}
                _ => break,
            },
        }
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------
// The raw TCP baseline.

/// First byte of a connection: what it carries.
const CONN_DATA: u8 = 0;
const CONN_PING: u8 = 1;
/// Largest frame a baseline member accepts.
const FRAME_MAX: usize = SIZE_MAX;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the receiving threads of a baseline member count.
struct Rx {
    /// When counting starts and stops (unix ns; 0: not yet).
    window: Mutex<(u64, u64)>,
    counts: Mutex<(u64, Histogram<u64>)>,
}

/// Reads length-prefixed frames from one peer until the connection ends.
fn read_frames(stream: TcpStream, rx: Arc<Rx>) {
    let mut r = BufReader::with_capacity(256 << 10, stream);
    let mut buf = vec![0u8; 64];
    let mut local = new_hist();
    let mut n = 0u64;
    loop {
        let mut len = [0u8; 4];
        if r.read_exact(&mut len).is_err() {
            return;
        }
        let len = u32::from_le_bytes(len) as usize;
        if !(SIZE_MIN..=FRAME_MAX).contains(&len) {
            return;
        }
        buf.resize(len, 0);
        if r.read_exact(&mut buf).is_err() {
            return;
        }
        let now = unix_ns();
        let (from, to) = *lock(&rx.window);
        if from != 0 && now >= from && now <= to {
            n += 1;
            if let Some(t) = sent_at(&buf) {
                record(&mut local, now.saturating_sub(t));
            }
            // Publish in batches: the lock is not on every frame.
            if n >= 256 || r.buffer().is_empty() {
                let mut c = lock(&rx.counts);
                c.0 += n;
                let _ = c.1.add(&local);
                local.reset();
                n = 0;
            }
        }
    }
}

/// Echoes ping frames until the connection ends.
fn echo(mut s: TcpStream) {
    let mut buf = [0u8; RTT_BYTES];
    while s.read_exact(&mut buf).is_ok() {
        if s.write_all(&buf).is_err() {
            return;
        }
    }
}

fn tcp_member(args: MemberArgs) -> anyhow::Result<ExitCode> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot listen on 127.0.0.1")?;
    let port = listener.local_addr().context("no local address")?.port();
    let rx = Arc::new(Rx {
        window: Mutex::new((0, 0)),
        counts: Mutex::new((0, new_hist())),
    });
    {
        let rx = rx.clone();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { continue };
                let _ = s.set_nodelay(true);
                let mut kind = [0u8; 1];
                if s.read_exact(&mut kind).is_err() {
                    continue;
                }
                let rx = rx.clone();
                match kind[0] {
                    CONN_DATA => std::thread::spawn(move || read_frames(s, rx)),
                    CONN_PING => std::thread::spawn(move || echo(s)),
                    _ => continue,
                };
            }
        });
    }
    tell(&format!("port {port}"));

    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut next = move || -> Option<String> { lines.next().and_then(Result::ok) };

    // "peers p0 p1 ...": connect to every other member.
    let ports: Vec<u16> = loop {
        let Some(l) = next() else {
            return Ok(ExitCode::SUCCESS);
        };
        if let Some(rest) = l.strip_prefix("peers") {
            break rest
                .split_whitespace()
                .map(|p| p.parse::<u16>().context("bad peer port"))
                .collect::<anyhow::Result<_>>()?;
        }
    };
    if ports.len() != args.members {
        bail!("expected {} peer ports, got {}", args.members, ports.len());
    }
    let connect = |p: u16, kind: u8| -> anyhow::Result<TcpStream> {
        let mut s = TcpStream::connect(("127.0.0.1", p)).context("cannot connect to a peer")?;
        s.set_nodelay(true)?;
        s.write_all(&[kind])?;
        Ok(s)
    };
    let mut outs: Vec<BufWriter<TcpStream>> = Vec::new();
    for (j, p) in ports.iter().enumerate() {
        if j != args.index {
            outs.push(BufWriter::with_capacity(256 << 10, connect(*p, CONN_DATA)?));
        }
    }
    // Member 0 pings: one peer for the round trip, all for the mesh's.
    let mut pings: Vec<TcpStream> = Vec::new();
    if args.index == 0 {
        for (j, p) in ports.iter().enumerate() {
            if j != args.index {
                pings.push(connect(*p, CONN_PING)?);
            }
        }
    }
    tell("ready");

    loop {
        let Some(l) = next() else {
            return Ok(ExitCode::SUCCESS);
        };
        match l.trim() {
            cmd @ ("rtt" | "rtt-mesh") => {
                let mut hist = new_hist();
                let mut buf = [0u8; RTT_BYTES];
                let n = if cmd == "rtt" { 1 } else { pings.len() };
                let to = pings.get_mut(..n).unwrap_or_default();
                if !to.is_empty() {
                    for _ in 0..RTT_ROUNDS {
                        let t = std::time::Instant::now();
                        for s in to.iter_mut() {
                            s.write_all(&buf)?;
                        }
                        for s in to.iter_mut() {
                            s.read_exact(&mut buf)?;
                        }
                        record(
                            &mut hist,
                            u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX),
                        );
                    }
                }
                let r = MemberResult {
                    delivered: RTT_ROUNDS as u64,
                    secs: 1.0,
                    hist,
                    sent: 0,
                    datagrams_out: 0,
                };
                tell(&r.to_line().replacen("result", "rtt", 1));
            }
            "go" => break,
            _ => {}
        }
    }

    let seconds = Duration::from_secs(args.seconds);
    let from = unix_ns();
    let start = std::time::Instant::now();
    *lock(&rx.window) = (
        from,
        from.saturating_add(u64::try_from(seconds.as_nanos()).unwrap_or(u64::MAX)),
    );
    // Own messages count as delivered to oneself, as a multicast's are (the
    // latency histogram holds only the frames that crossed a connection).
    let mut own = 0u64;
    if args.senders.sends(args.index) {
        let len = u32::try_from(args.size)
            .context("size too large")?
            .to_le_bytes();
        let mut frame = vec![0u8; 4 + args.size];
        frame[..4].copy_from_slice(&len);
        let mut failed = false;
        while start.elapsed() < seconds && !failed {
            let t = unix_ns();
            frame[4..12].copy_from_slice(&t.to_le_bytes());
            for o in &mut outs {
                if o.write_all(&frame).is_err() {
                    failed = true;
                }
            }
            own += 1;
        }
        for o in &mut outs {
            let _ = o.flush();
        }
    }
    let rest = seconds.saturating_sub(start.elapsed());
    std::thread::sleep(rest);
    let secs = start.elapsed().as_secs_f64();
    let (n, hist) = {
        let c = lock(&rx.counts);
        (c.0, c.1.clone())
    };
    tell(
        &MemberResult {
            delivered: n + own,
            secs,
            hist,
            sent: own,
            datagrams_out: 0,
        }
        .to_line(),
    );
    // Stay until the parent is done (the peers may still be reading).
    while next().is_some() {}
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_thread_runs_on_one_cpu_of_those_allowed() {
        use nix::sched::sched_getaffinity;
        use nix::unistd::Pid;
        let allowed = sched_getaffinity(Pid::from_raw(0)).ok();
        // A thread of its own: the mask is per thread.
        let (cpu, after) = std::thread::spawn(|| {
            let cpu = pin_to_cpu(3).ok();
            (cpu, sched_getaffinity(Pid::from_raw(0)).ok())
        })
        .join()
        .unwrap_or_default();
        let (Some(cpu), Some(after), Some(allowed)) = (cpu, after, allowed) else {
            panic!("pinning failed");
        };
        assert_eq!(cpus_of(&after), vec![cpu]);
        assert!(allowed.is_set(cpu).unwrap_or(false));
    }

    #[test]
    fn result_line_round_trips_and_garbage_is_refused() {
        let mut hist = new_hist();
        for ns in [1_000, 2_000, 2_000, 50_000_000] {
            record(&mut hist, ns);
        }
        let r = MemberResult {
            delivered: 4,
            secs: 2.0,
            hist,
            sent: 3,
            datagrams_out: 2,
        };
        let line = r.to_line();
        let back = MemberResult::parse(line.trim_start_matches("result ")).expect("parses");
        assert_eq!(back.delivered, 4);
        assert_eq!(back.hist.len(), 4);
        assert_eq!(
            back.hist.value_at_quantile(0.5),
            r.hist.value_at_quantile(0.5)
        );
        assert!(MemberResult::parse("not json").is_err());
        assert!(MemberResult::parse(r#"{"delivered":1,"secs":1,"hist":[["x",1]]}"#).is_err());
        assert!(MemberResult::parse(r#"{"secs":1}"#).is_err());
    }

    #[test]
    fn csv_rows_have_every_column() {
        let args = BenchArgs {
            members: 3,
            size: 64,
            ordering: BenchOrdering::Fifo,
            senders: Senders::One,
            seconds: 1,
            json: false,
            verbose: false,
            sweep: true,
            csv: "x.csv".into(),
            window: WINDOW_MSGS,
            failover: false,
            kills: 1,
            suspect_timeout_ms: 100,
            overload: false,
            idle: false,
            worker_threads: 2,
            tls: false,
            tls_dir: None,
            drop: 0.0,
            delay_ms: 0,
            pin: false,
        };
        let fig = SideFigures::of(&[MemberResult {
            delivered: 10,
            secs: 1.0,
            hist: new_hist(),
            sent: 10,
            datagrams_out: 5,
        }]);
        let rtt = RoundTrips {
            one: new_hist(),
            mesh: new_hist(),
        };
        let line = csv_line(&row(&args, &fig, &fig, &rtt));
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells.len(), CSV_COLUMNS.len());
        assert_eq!(&cells[..4], &["fifo", "3", "64", "one"]);
        assert_eq!(cells[cells.len() - 1], "1.000");
    }
}
