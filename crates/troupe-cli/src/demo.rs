//! `troupe demo`: real member processes, real crashes, the simulator's checkers.
//!
//! The parent starts N copies of this binary (`troupe demo-member`, hidden)
//! on 127.0.0.1. Each runs a replicated state machine (a hash chain over the
//! `Total`/`Safe` messages it delivers) under mixed-ordering traffic, and
//! records its history, in the format of `troupe_sim::history`, as JSON
//! lines in a file of its own. The parent then SIGKILLs one member in
//! mid-stream, starts a replacement (the same node, a new incarnation) that
//! joins by state transfer, SIGSTOPs another member long enough to be
//! excluded and SIGCONTs it (it notices and rejoins as a new incarnation),
//! cuts the coordinator off from the others with the transport's fault
//! injection while it runs on (it too is excluded, notices once healed, and
//! rejoins), lets the traffic stop and drain, and finally merges the histories and runs
//! `troupe_sim::check::check_all` on them: the same checkers as the simulator.
//!
//! Bounded everywhere: every wait has a deadline, children are killed by pid
//! on every way out (their handles kill on drop, Ctrl-C included), a child
//! exits by itself when its parent goes away (end of its standard input) or
//! its own deadline passes, and everything listens on 127.0.0.1 only.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::procs::{signal, tell, unix_ns};
use anyhow::{bail, Context};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;
use troupe::{Event, ExitReason, Faults, GroupBuilder, MemberId, Ordering};
use troupe_sim::check::{check_all, trace_around, Property, Report};
use troupe_sim::history::{
    digest64, History, MemberIdRepr, MsgKey, Record, RecordKind, ViewIdRepr,
};

/// Heartbeat interval of the demo's members: fast, so that the demo's
/// faults are detected within its few seconds.
const DEMO_HEARTBEAT_MS: u64 = 50;
/// Silence after which a demo member is suspected.
const DEMO_SUSPECT_MS: u64 = 800;
/// How long a view-change phase of a demo member waits for answers.
const DEMO_FLUSH_MS: u64 = 800;
/// How long a pause lasts: several suspicion timeouts, so that the paused
/// member is surely excluded before it resumes.
const DEMO_PAUSE_MS: u64 = 3 * DEMO_SUSPECT_MS;
/// How long starting one member (being admitted) may take.
const MEMBER_START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the members have after `stop` to report and exit.
const MEMBER_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Margin a child adds to the run's length before it exits on its own.
const CHILD_DEADLINE_MARGIN_SECS: u64 = 120;
/// Bytes of a demo payload: the 24-byte message key, then filler.
const PAYLOAD_BYTES: usize = 64;
/// Most members a demo starts.
const NODES_MAX: usize = 16;

/// Arguments of `troupe demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Member processes to start (at least 3, so that a majority survives each fault).
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Seconds of traffic (the faults are spread over them; at least 8).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Print one JSON object as the last line of output (and the report on standard error).
    #[arg(long)]
    json: bool,
    /// Messages per second each member multicasts.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// The faults to inject, comma-separated: kill (SIGKILL one member),
    /// replace (start a replacement that joins by state transfer), pause
    /// (SIGSTOP one member until it is excluded, then SIGCONT it), partition
    /// (cut the coordinator off from the others while it runs on, then heal).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill,replace,pause,partition"
    )]
    faults: Vec<Fault>,
    /// Where to keep the histories and logs (default: a new directory under
    /// the system's temp dir, removed after a run that passes unless --keep).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the histories and logs of a run that passes.
    #[arg(long)]
    keep: bool,
    /// SIGKILL the coordinator (the oldest member, which also sequences the
    /// total and safe messages) rather than the second oldest.
    #[arg(long)]
    kill_coordinator: bool,
}

/// A fault the demo can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// SIGKILL a member in mid-stream.
    Kill,
    /// Start a replacement member that joins by state transfer (after `kill`: the same node, restarted).
    Replace,
    /// SIGSTOP a member until it is excluded, then SIGCONT it.
    Pause,
    /// Cut the oldest member still running (the coordinator, which also
    /// sequences) off from the others with the transport's fault injection,
    /// long enough to be excluded while it runs on, then heal.
    Partition,
}

/// Arguments of the hidden `troupe demo-member` (one member process of the demo).
#[derive(clap::Args)]
pub struct MemberArgs {
    /// The node number.
    #[arg(long)]
    node: u64,
    /// Members to join through (none: create the group).
    #[arg(long, num_args = 1..)]
    join: Vec<String>,
    /// The history file (JSON lines, appended).
    #[arg(long)]
    history: PathBuf,
    /// The run's time origin, nanoseconds since the Unix epoch (shared by all processes).
    #[arg(long)]
    epoch_unix_ns: u64,
    /// Messages per second to multicast.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Exit after this many seconds whatever happens.
    #[arg(long, default_value_t = 300)]
    deadline_secs: u64,
    /// Transport faults from this file, read again as it changes (see
    /// `troupe serve --fault-file`).
    #[arg(long)]
    fault_file: Option<PathBuf>,
}

// ---------------------------------------------------------------------------
// Time shared by the processes of one run.

/// The run's clock in one process: the system clock read once against the
/// shared origin, then a monotonic clock, so that a process's records never
/// go back in time (the processes share one machine, hence one system clock).
#[derive(Clone, Copy)]
struct RunClock {
    at_start: Instant,
    offset_ns: u64,
}

impl RunClock {
    fn new(epoch_unix_ns: u64) -> RunClock {
        RunClock {
            at_start: Instant::now(),
            offset_ns: unix_ns().saturating_sub(epoch_unix_ns),
        }
    }

    fn now_ns(&self) -> u64 {
        self.offset_ns
            .saturating_add(u64::try_from(self.at_start.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }
}

// ---------------------------------------------------------------------------
// The member process.

/// Appends history records to a file, one JSON object per line.
struct Recorder {
    out: BufWriter<File>,
    clock: RunClock,
    failed: bool,
}

impl Recorder {
    fn record(&mut self, member: MemberId, kind: RecordKind) {
        let flush = matches!(kind, RecordKind::Send { .. });
        let r = Record {
            time_ns: self.clock.now_ns(),
            member: member.into(),
            kind,
        };
        let ok =
            serde_json::to_writer(&mut self.out, &r).is_ok() && self.out.write_all(b"\n").is_ok();
        // A send is written through before the message can leave the
        // process: a kill -9 right after must not hide a message that other
        // members deliver.
        if !ok || (flush && self.out.flush().is_err()) {
            if !self.failed {
                tracing::error!(
                    "cannot write the history file; the demo's checks will be incomplete"
                );
            }
            self.failed = true;
        }
    }

    fn flush(&mut self) {
        let _ = self.out.flush();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The replicated state of a demo member: how many `Total`/`Safe` messages
/// it applied, and a hash chain over them. Equal digests mean equal sequences.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ChainState {
    applied: u64,
    chain: u64,
}

impl ChainState {
    fn apply(&mut self, payload: &[u8]) {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.chain.to_le_bytes());
        b[8..].copy_from_slice(&digest64(payload).to_le_bytes());
        self.chain = digest64(&b);
        self.applied += 1;
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(&self.applied.to_le_bytes());
        v.extend_from_slice(&self.chain.to_le_bytes());
        v
    }

    fn restore(bytes: &[u8]) -> Option<ChainState> {
        let applied = u64::from_le_bytes(bytes.get(0..8)?.try_into().ok()?);
        let chain = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
        (bytes.len() == 16).then_some(ChainState { applied, chain })
    }

    fn digest(&self) -> u64 {
        digest64(&self.snapshot())
    }
}

/// xorshift64*: the demo's traffic only needs variety, not quality.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// An ordering for the next message: every class, more of the ordered ones.
    fn ordering(&mut self) -> Ordering {
        match self.next() % 20 {
            0..=5 => Ordering::Total,
            6..=8 => Ordering::Safe,
            9..=11 => Ordering::Fifo,
            12..=14 => Ordering::Causal,
            15..=17 => Ordering::Reliable,
            _ => Ordering::Unreliable,
        }
    }
}

/// Runs `troupe demo-member`.
pub fn run_member(args: MemberArgs) -> anyhow::Result<ExitCode> {
    crate::node::init_logging("warn,troupe=info");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let deadline = Duration::from_secs(args.deadline_secs);
    rt.block_on(async move {
        match tokio::time::timeout(deadline, member(args)).await {
            Ok(r) => r,
            Err(_) => bail!("member deadline passed"),
        }
    })
}

async fn member(args: MemberArgs) -> anyhow::Result<ExitCode> {
    let clock = RunClock::new(args.epoch_unix_ns);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.history)
        .with_context(|| format!("cannot open {}", args.history.display()))?;
    let rec = Arc::new(Mutex::new(Recorder {
        out: BufWriter::with_capacity(256 << 10, file),
        clock,
        failed: false,
    }));

    let started_ns = clock.now_ns();
    let group = GroupBuilder::from_config(troupe::GroupConfig {
        group: "troupe-demo".into(),
        listen: "127.0.0.1:0".into(),
        join: args.join.clone(),
        node_id: Some(args.node),
        heartbeat_interval_ms: Some(DEMO_HEARTBEAT_MS),
        suspect_timeout_ms: Some(DEMO_SUSPECT_MS),
        flush_timeout_ms: Some(DEMO_FLUSH_MS),
        join_timeout_ms: u64::try_from(MEMBER_START_TIMEOUT.as_millis()).unwrap_or(20_000),
        // A window small enough that back-pressure is exercised.
        window_msgs_max: Some(1024),
        ..troupe::GroupConfig::default()
    })
    .faults(crate::faults::from_flag(args.fault_file.as_deref())?)
    .start()
    .await
    .context("cannot start the member")?;
    let (handle, mut events) = group.split();
    let me = handle.me();
    {
        let mut r = lock(&rec);
        // The Started record carries the time before the join began, so
        // that the checkers measure the whole admission.
        let line = Record {
            time_ns: started_ns,
            member: me.into(),
            kind: RecordKind::Started,
        };
        let _ = serde_json::to_writer(&mut r.out, &line);
        let _ = r.out.write_all(b"\n");
        r.flush();
    }
    tell(&format!("port {}", handle.local_addr().port()));
    tell(&format!("member {} {}", me.node, me.incarnation));

    // The sender task holds this lock (with the current id, None while
    // excluded) around every send, and the event loop holds it while it
    // rejoins: no message is ever built with one incarnation's key and
    // accepted by the next.
    let sending_as: Arc<tokio::sync::Mutex<Option<MemberId>>> =
        Arc::new(tokio::sync::Mutex::new(Some(me)));
    let (quiet_tx, mut quiet_rx) = tokio::sync::watch::channel(false);
    let sender = {
        let handle = handle.clone();
        let rec = rec.clone();
        let sending_as = sending_as.clone();
        let rate = args.rate.max(1);
        tokio::spawn(async move {
            let mut rng = Rng((args.node.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ me.incarnation) | 1);
            let mut counters: BTreeMap<MemberId, u64> = BTreeMap::new();
            // Timers are coarse (about a millisecond): at high rates send a
            // burst per tick rather than ask for sub-millisecond ticks.
            let period = (Duration::from_secs(1) / rate).max(Duration::from_millis(2));
            let burst = (f64::from(rate) * period.as_secs_f64()).ceil().max(1.0) as u32;
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut credit = 0u32;
            loop {
                if credit == 0 {
                    tick.tick().await;
                    credit = burst;
                }
                credit -= 1;
                if *quiet_rx.borrow_and_update() {
                    return;
                }
                let guard = sending_as.lock().await;
                let Some(me) = *guard else { continue };
                let n = counters.entry(me).or_insert(0);
                *n += 1;
                let key = MsgKey {
                    sender: me.into(),
                    n: *n,
                };
                let mut payload = vec![0u8; PAYLOAD_BYTES];
                History::write_key(key, &mut payload);
                for b in payload[24..].iter_mut() {
                    *b = rng.next() as u8;
                }
                let ordering = rng.ordering();
                let digest = digest64(&payload);
                let rec2 = rec.clone();
                let r = handle
                    .send_with(ordering, payload, move |view| {
                        lock(&rec2).record(
                            me,
                            RecordKind::Send {
                                msg: key,
                                ordering: ordering as u8,
                                digest,
                                view: view.map(Into::into),
                            },
                        );
                    })
                    .await;
                drop(guard);
                if let Err(e) = r {
                    tracing::debug!(error = %e, "send refused");
                    if matches!(e, troupe::Error::Closed) {
                        return;
                    }
                }
            }
        })
    };

    let mut state = ChainState::default();
    // The creator starts with the (empty) state; a joiner has none until
    // its snapshot is installed.
    let mut has_state = args.join.is_empty();
    let mut me = me;
    let mut delivered: u64 = 0;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut flush_tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { bail!("the group shut down") };
                match ev {
                    Event::View(v) => {
                        let digest = has_state.then(|| state.digest());
                        lock(&rec).record(me, RecordKind::ViewInstalled {
                            view: v.id.into(),
                            members: v.members.iter().map(|m| (*m).into()).collect(),
                            state_digest: digest,
                        });
                        tell(&format!("view {} {}", v.id.epoch, v.members.len()));
                    }
                    Event::Deliver(d) => {
                        delivered += 1;
                        let Some(msg) = History::key_of(&d.payload) else {
                            tracing::warn!(sender = %d.sender, "delivered a message without a key");
                            continue;
                        };
                        if d.ordering.is_totally_ordered() {
                            state.apply(&d.payload);
                        }
                        lock(&rec).record(me, RecordKind::Deliver {
                            msg,
                            sender: d.sender.into(),
                            ordering: d.ordering as u8,
                            view: d.view.into(),
                            digest: digest64(&d.payload),
                        });
                    }
                    Event::Blocked => lock(&rec).record(me, RecordKind::Blocked),
                    Event::Mark { .. } => {}
                    Event::StateNeeded { view } => {
                        lock(&rec).record(me, RecordKind::StateProvided { view: view.into(), state_digest: state.digest() });
                        let _ = handle.provide_state(view, state.snapshot()).await;
                    }
                    Event::StateInstalled { view, snapshot } => {
                        match ChainState::restore(&snapshot) {
                            Some(s) => state = s,
                            None => tracing::error!(bytes = snapshot.len(), "state snapshot does not parse"),
                        }
                        has_state = true;
                        lock(&rec).record(me, RecordKind::StateInstalled { view: view.into(), state_digest: state.digest() });
                    }
                    Event::Query { id, .. } => {
                        let _ = handle.reply(id, Vec::new()).await;
                    }
                    Event::QueryDone { replies, departed, .. } => {
                        let n = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
                        lock(&rec).record(me, RecordKind::QueryDone { replies: n(replies.len()), departed: n(departed.len()) });
                    }
                    Event::Exited(reason) => {
                        lock(&rec).record(me, RecordKind::Exited { left: reason == ExitReason::Left });
                        lock(&rec).flush();
                        if reason == ExitReason::Left {
                            bail!("left the group");
                        }
                        tell("excluded");
                        let mut guard = sending_as.lock().await;
                        *guard = None;
                        let rejoin_ns = clock.now_ns();
                        let new = loop {
                            match handle.rejoin().await {
                                Ok(id) => break id,
                                Err(troupe::Error::Closed) => bail!("the group shut down"),
                                Err(e) => {
                                    tracing::warn!(error = %e, "rejoin failed; retrying");
                                    tokio::time::sleep(Duration::from_millis(200)).await;
                                }
                            }
                        };
                        me = new;
                        state = ChainState::default();
                        has_state = false;
                        {
                            let mut r = lock(&rec);
                            let line = Record { time_ns: rejoin_ns, member: me.into(), kind: RecordKind::Started };
                            let _ = serde_json::to_writer(&mut r.out, &line);
                            let _ = r.out.write_all(b"\n");
                            r.flush();
                        }
                        *guard = Some(me);
                        drop(guard);
                        tell(&format!("member {} {}", me.node, me.incarnation));
                    }
                }
                // Write through at the end of every burst of events: a
                // kill -9 then loses at most the records of the burst it
                // interrupts, so what a member delivered right before a
                // crash is in its history for the checkers (O3, O4).
                if events.queued() == 0 {
                    lock(&rec).flush();
                }
            }
            line = stdin.next_line() => {
                match line {
                    Ok(Some(l)) if l.trim() == "quiet" => {
                        let _ = quiet_tx.send(true);
                    }
                    Ok(Some(l)) if l.trim() == "stop" => break,
                    Ok(Some(_)) => {}
                    // The parent went away: stop.
                    Ok(None) | Err(_) => break,
                }
            }
            _ = flush_tick.tick() => lock(&rec).flush(),
        }
    }
    let _ = quiet_tx.send(true);
    sender.abort();
    lock(&rec).flush();
    tell(&format!(
        "final {} {} {} {}",
        state.digest(),
        state.applied,
        delivered,
        u8::from(has_state)
    ));
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------
// The parent.

/// What a member reported when it stopped.
#[derive(Clone, Copy, Debug)]
struct Final {
    digest: u64,
    applied: u64,
    delivered: u64,
    has_state: bool,
}

/// One member process.
struct Proc {
    node: u64,
    child: Child,
    pid: Option<u32>,
    stdin: Option<ChildStdin>,
    port: Option<u16>,
    /// Its incarnations, in order.
    members: Vec<MemberId>,
    view_size: usize,
    history: PathBuf,
    log: PathBuf,
    /// Its `--fault-file`.
    faults: PathBuf,
    fin: Option<Final>,
    killed: bool,
    exited: bool,
    excluded: usize,
}

/// The member processes; dropping it kills every one still running.
struct Fleet {
    procs: Vec<Proc>,
    lines_tx: mpsc::UnboundedSender<(usize, Option<String>)>,
    lines_rx: mpsc::UnboundedReceiver<(usize, Option<String>)>,
    exe: PathBuf,
    dir: PathBuf,
    epoch_unix_ns: u64,
    rate: u32,
    deadline_secs: u64,
    clock: RunClock,
    /// (time, what the parent did or saw), for the timeline.
    log: Vec<(u64, String)>,
    /// Every incarnation seen of each node, in order: "n3/2" is `[3][1]`.
    incarnations: BTreeMap<u64, Vec<u64>>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for p in &mut self.procs {
            if let Some(pid) = p.pid {
                if !p.exited {
                    // SIGCONT first: a stopped process dies of SIGKILL too,
                    // but its pipes close sooner when it runs.
                    signal(pid, nix::sys::signal::Signal::SIGCONT);
                }
            }
            let _ = p.child.start_kill();
        }
    }
}

impl Fleet {
    fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    fn note(&mut self, what: String, json: bool) {
        let t = self.now_ns();
        if !json {
            eprintln!("  [{:>7.3}s] {what}", t as f64 / 1e9);
        }
        self.log.push((t, what));
    }

    /// The addresses of the members running now.
    fn contacts(&self) -> Vec<String> {
        self.procs
            .iter()
            .filter(|p| !p.killed && !p.exited)
            .filter_map(|p| p.port.map(|port| format!("127.0.0.1:{port}")))
            .collect()
    }

    /// Starts a member process of node `node`; returns its index.
    fn spawn(&mut self, node: u64) -> anyhow::Result<usize> {
        let i = self.procs.len();
        let history = self.dir.join(format!("history-{i}.jsonl"));
        let log = self.dir.join(format!("member-{i}.log"));
        let faults = self.dir.join(format!("faults-{i}.toml"));
        crate::faults::write(&faults, &Faults::none())?;
        let log_file =
            File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("demo-member")
            .arg("--node")
            .arg(node.to_string())
            .arg("--history")
            .arg(&history)
            .arg("--epoch-unix-ns")
            .arg(self.epoch_unix_ns.to_string())
            .arg("--rate")
            .arg(self.rate.to_string())
            .arg("--deadline-secs")
            .arg(self.deadline_secs.to_string())
            .arg("--fault-file")
            .arg(&faults);
        let contacts = self.contacts();
        if !contacts.is_empty() {
            cmd.arg("--join").args(contacts);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", self.exe.display()))?;
        let pid = child.id();
        let stdin = child.stdin.take();
        if let Some(out) = child.stdout.take() {
            let tx = self.lines_tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    if tx.send((i, Some(l))).is_err() {
                        return;
                    }
                }
                let _ = tx.send((i, None));
            });
        }
        self.procs.push(Proc {
            node,
            child,
            pid,
            stdin,
            port: None,
            members: Vec::new(),
            view_size: 0,
            history,
            log,
            faults,
            fin: None,
            killed: false,
            exited: false,
            excluded: 0,
        });
        Ok(i)
    }

    /// Handles one line from member `i` (None: its output ended).
    fn line(&mut self, i: usize, line: Option<String>, json: bool) {
        let Some(line) = line else {
            self.procs[i].exited = true;
            return;
        };
        let mut w = line.split_whitespace();
        let word = w.next().unwrap_or("");
        let nums: Vec<u64> = w.filter_map(|x| x.parse().ok()).collect();
        match (word, nums.as_slice()) {
            ("port", [p]) => self.procs[i].port = u16::try_from(*p).ok(),
            ("member", [node, inc]) => {
                let m = MemberId::new(*node, *inc);
                let before = self.procs[i].members.last().copied();
                if before == Some(m) {
                    return; // the same incarnation announced again
                }
                self.procs[i].members.push(m);
                let incs = self.incarnations.entry(*node).or_default();
                if !incs.contains(inc) {
                    incs.push(*inc);
                }
                if let Some(old) = before {
                    self.note(
                        format!(
                            "{} rejoined as a new incarnation {}",
                            self.name(old),
                            self.name(m)
                        ),
                        json,
                    );
                }
            }
            ("view", [_, n]) => self.procs[i].view_size = usize::try_from(*n).unwrap_or(0),
            ("excluded", []) => {
                self.procs[i].excluded += 1;
                let who = self.current_name(i);
                self.note(format!("{who} noticed it was excluded"), json);
            }
            ("final", [digest, applied, delivered, has_state]) => {
                self.procs[i].fin = Some(Final {
                    digest: *digest,
                    applied: *applied,
                    delivered: *delivered,
                    has_state: *has_state != 0,
                })
            }
            _ => tracing::debug!(member = i, line, "unexpected line from a member"),
        }
    }

    /// Handles member output until `until`.
    async fn pump_until(&mut self, until: Instant, json: bool) {
        loop {
            match tokio::time::timeout_at(until, self.lines_rx.recv()).await {
                Ok(Some((i, l))) => self.line(i, l, json),
                Ok(None) | Err(_) => return,
            }
        }
    }

    /// Handles member output until `done` holds; fails after `timeout`.
    async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        json: bool,
        done: impl Fn(&Fleet) -> bool,
    ) -> anyhow::Result<()> {
        let until = Instant::now() + timeout;
        while !done(self) {
            if let Some(p) = self
                .procs
                .iter()
                .find(|p| p.exited && !p.killed && p.fin.is_none())
            {
                bail!(
                    "a member exited early (node {}); see {}",
                    p.node,
                    p.log.display()
                );
            }
            match tokio::time::timeout_at(until, self.lines_rx.recv()).await {
                Ok(Some((i, l))) => self.line(i, l, json),
                Ok(None) => bail!("member output channel closed"),
                Err(_) => bail!(
                    "timed out after {timeout:?} waiting for {what}; logs in {}",
                    self.dir.display()
                ),
            }
        }
        Ok(())
    }

    /// Writes a command line to every running member.
    async fn tell_all(&mut self, line: &str) {
        for p in &mut self.procs {
            if p.killed || p.exited {
                continue;
            }
            if let Some(s) = &mut p.stdin {
                let _ = s.write_all(format!("{line}\n").as_bytes()).await;
                let _ = s.flush().await;
            }
        }
    }
}

impl Fleet {
    /// "n3/2": node 3, its second incarnation in this run.
    fn name(&self, m: MemberId) -> String {
        let k = self
            .incarnations
            .get(&m.node)
            .and_then(|v| v.iter().position(|x| *x == m.incarnation));
        match k {
            Some(k) => format!("n{}/{}", m.node, k + 1),
            None => m.to_string(),
        }
    }

    /// The name of member process `i`'s current incarnation.
    fn current_name(&self, i: usize) -> String {
        match self.procs[i].members.last() {
            Some(m) => self.name(*m),
            None => format!("n{}/?", self.procs[i].node),
        }
    }
}

/// Runs `troupe demo`.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    crate::node::init_logging("warn");
    if !(3..=NODES_MAX).contains(&args.nodes) {
        bail!("--nodes must be between 3 and {NODES_MAX} (a majority must survive each fault)");
    }
    if !(8..=600).contains(&args.seconds) {
        bail!("--seconds must be between 8 and 600");
    }
    if args.rate == 0 || args.rate > 10_000 {
        bail!("--rate must be between 1 and 10000 messages per second");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        tokio::select! {
            r = demo(args) => r,
            _ = tokio::signal::ctrl_c() => {
                // Dropping the demo's future dropped the fleet: the members are killed.
                eprintln!("troupe demo: interrupted; members killed");
                Ok(ExitCode::from(130))
            }
        }
    })
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let json = args.json;
    let epoch_unix_ns = unix_ns();
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!(
            "troupe-demo-{}-{}",
            std::process::id(),
            epoch_unix_ns / 1_000_000
        )),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let (lines_tx, lines_rx) = mpsc::unbounded_channel();
    let mut f = Fleet {
        procs: Vec::new(),
        lines_tx,
        lines_rx,
        exe,
        dir: dir.clone(),
        epoch_unix_ns,
        rate: args.rate,
        deadline_secs: args.seconds + CHILD_DEADLINE_MARGIN_SECS,
        clock: RunClock::new(epoch_unix_ns),
        log: Vec::new(),
        incarnations: BTreeMap::new(),
    };
    let n = args.nodes;
    if !json {
        eprintln!(
            "troupe demo: {n} member processes on 127.0.0.1, {} s of mixed-ordering traffic at {} msg/s each",
            args.seconds, args.rate
        );
        eprintln!("  histories and logs in {}", dir.display());
    }

    // Form the group: the first member creates it, the others join one by one.
    for node in 1..=n as u64 {
        let i = f.spawn(node)?;
        f.wait_for("a member to start", MEMBER_START_TIMEOUT, json, |f| {
            f.procs[i].port.is_some()
        })
        .await?;
    }
    f.wait_for("the group to form", MEMBER_START_TIMEOUT, json, |f| {
        f.procs.iter().all(|p| p.view_size == n)
    })
    .await?;
    f.note(format!("group of {n} formed"), json);

    let has = |x: Fault| args.faults.contains(&x);
    let s = Duration::from_secs(args.seconds);
    let t0 = Instant::now();
    let at = |frac: f64| t0 + s.mul_f64(frac);
    let pause_len = Duration::from_millis(DEMO_PAUSE_MS);
    let kill_at = at(0.2);
    let replace_at = at(0.4);
    let pause_at = at(0.55);
    let cont_at = pause_at + pause_len;
    let cut_at = at(0.65).max(cont_at + Duration::from_millis(500));
    let heal_at = cut_at + pause_len;
    let mut quiet_at = at(0.8);
    if has(Fault::Pause) {
        quiet_at = quiet_at.max(cont_at + Duration::from_secs(3));
    }
    if has(Fault::Partition) {
        quiet_at = quiet_at.max(heal_at + Duration::from_secs(3));
    }
    let end_at = (t0 + s).max(quiet_at + Duration::from_millis(2500));
    let traffic_start_ns = f.now_ns();

    let mut killed: Option<(u64, MemberId)> = None;
    let mut faults_end_ns = traffic_start_ns;
    if has(Fault::Kill) {
        f.pump_until(kill_at, json).await;
        let victim = if args.kill_coordinator { 0 } else { 1 };
        let Some(m) = f.procs[victim].members.last().copied() else {
            bail!("the victim never reported its id")
        };
        let pid = f.procs[victim].pid.unwrap_or(0);
        let t = f.now_ns();
        if !signal(pid, nix::sys::signal::Signal::SIGKILL) {
            bail!("cannot SIGKILL pid {pid}");
        }
        f.procs[victim].killed = true;
        killed = Some((t, m));
        faults_end_ns = t;
        f.note(
            format!(
                "SIGKILL {} (pid {pid}) in mid-stream",
                f.current_name(victim)
            ),
            json,
        );
    }
    let mut replacement: Option<usize> = None;
    if has(Fault::Replace) {
        f.pump_until(replace_at, json).await;
        let node = match killed {
            Some((_, m)) => m.node,
            None => n as u64 + 1,
        };
        let i = f.spawn(node)?;
        replacement = Some(i);
        f.note(
            format!(
                "started a replacement for node {node}: it joins by state transfer, under load"
            ),
            json,
        );
    }
    let mut paused: Option<usize> = None;
    if has(Fault::Pause) {
        f.pump_until(pause_at, json).await;
        let victim = 2;
        let pid = f.procs[victim].pid.unwrap_or(0);
        if !signal(pid, nix::sys::signal::Signal::SIGSTOP) {
            bail!("cannot SIGSTOP pid {pid}");
        }
        paused = Some(victim);
        f.note(
            format!(
                "SIGSTOP {} (pid {pid}) for {} ms",
                f.current_name(victim),
                pause_len.as_millis()
            ),
            json,
        );
        f.pump_until(cont_at, json).await;
        signal(pid, nix::sys::signal::Signal::SIGCONT);
        faults_end_ns = f.now_ns();
        f.note(format!("SIGCONT {}", f.current_name(victim)), json);
    }
    // The member cut off, and its incarnations then.
    let mut cut_off: Option<(usize, usize)> = None;
    if has(Fault::Partition) {
        f.pump_until(cut_at, json).await;
        let running = |p: &Proc| !p.killed && !p.exited;
        let Some(victim) = f.procs.iter().position(running) else {
            bail!("no member left to cut off");
        };
        let addr = |p: &Proc| p.port.map(|port| format!("127.0.0.1:{port}"));
        let victim_addr: Vec<String> = addr(&f.procs[victim]).into_iter().collect();
        let others: Vec<String> = f
            .procs
            .iter()
            .enumerate()
            .filter(|(i, p)| *i != victim && running(p))
            .filter_map(|(_, p)| addr(p))
            .collect();
        for (i, p) in f.procs.iter().enumerate().filter(|(_, p)| running(p)) {
            let block = if i == victim { &others } else { &victim_addr };
            let cut = Faults {
                block: block.clone(),
                ..Faults::none()
            };
            crate::faults::write(&p.faults, &cut)?;
        }
        cut_off = Some((victim, f.procs[victim].members.len()));
        f.note(
            format!(
                "partition: {} cut off from the others for {} ms; it runs on",
                f.current_name(victim),
                pause_len.as_millis()
            ),
            json,
        );
        f.pump_until(heal_at, json).await;
        for p in f.procs.iter().filter(|p| running(p)) {
            crate::faults::write(&p.faults, &Faults::none())?;
        }
        faults_end_ns = f.now_ns();
        f.note("partition healed".to_string(), json);
    }
    f.pump_until(quiet_at, json).await;
    f.tell_all("quiet").await;
    let quiet_ns = f.now_ns();
    f.note("traffic stops; the members drain".to_string(), json);
    f.pump_until(end_at, json).await;
    let end_ns = f.now_ns();
    f.tell_all("stop").await;
    let stop_wait = f
        .wait_for("the members to stop", MEMBER_STOP_TIMEOUT, json, |f| {
            f.procs
                .iter()
                .all(|p| p.killed || p.exited || p.fin.is_some())
        })
        .await;
    if let Err(e) = stop_wait {
        tracing::warn!(error = %e, "not every member reported its final state");
    }
    for p in &mut f.procs {
        if !p.killed {
            let _ = tokio::time::timeout(Duration::from_secs(2), p.child.wait()).await;
        }
    }

    // Gather the histories.
    let mut history = History::default();
    let mut bad_lines = 0usize;
    for p in &f.procs {
        let (records, bad) = read_history(&p.history)?;
        history.records.extend(records);
        bad_lines += bad;
    }
    if let Some((t, m)) = killed {
        history.records.push(Record {
            time_ns: t,
            member: m.into(),
            kind: RecordKind::Crashed,
        });
    }
    // One order for all: by time, each member's records in program order.
    history.records.sort_by_key(|r| r.time_ns);
    history.healed_at_ns = Some(faults_end_ns);
    history.quiet_at_ns = Some(quiet_ns);
    history.end_ns = end_ns;
    let hist_path = dir.join("history.json");
    if let Ok(file) = File::create(&hist_path) {
        let _ = serde_json::to_writer(BufWriter::new(file), &history);
    }
    let report = check_all(&history);

    let mut summary = Summary::new(
        &f,
        &history,
        &report,
        killed,
        paused,
        cut_off,
        replacement,
        traffic_start_ns,
        quiet_ns,
        bad_lines,
    );
    let pass = report.is_ok() && summary.digests_agree;
    // A run that fails keeps its evidence; one that passes keeps it only if asked.
    summary.dir_kept = !pass || args.keep || args.dir.is_some();
    if json {
        summary.print_text(&f, &history, &report, true);
        println!("{}", summary.json(&f, &report, n, args.seconds));
    } else {
        summary.print_text(&f, &history, &report, false);
    }
    if !summary.dir_kept {
        drop(history);
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(if pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Reads one member's history file: its records, and how many lines did not
/// parse (a member killed mid-write leaves at most a torn last line).
fn read_history(path: &Path) -> anyhow::Result<(Vec<Record>, usize)> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut records = Vec::new();
    let mut bad = 0;
    for line in std::io::BufReader::new(file).lines() {
        let Ok(line) = line else {
            bad += 1;
            break;
        };
        match serde_json::from_str::<Record>(&line) {
            Ok(r) => records.push(r),
            Err(_) => bad += 1,
        }
    }
    Ok((records, bad))
}

/// What the demo measured.
struct Summary {
    views: Vec<(u64, ViewIdRepr, Vec<MemberIdRepr>, usize)>,
    sent: BTreeMap<u8, u64>,
    delivered: u64,
    traffic_secs: f64,
    failover_ms: Option<f64>,
    join_ms: Vec<f64>,
    killed: usize,
    paused: usize,
    rejoined: usize,
    /// A member was cut off by a partition (1) or not (0).
    partitioned: usize,
    /// It was excluded and rejoined as a new incarnation after the heal.
    partition_rejoined: usize,
    replaced: usize,
    digests_agree: bool,
    digests: Vec<(String, Option<Final>)>,
    bad_lines: usize,
    /// Whether the run's directory is kept after the report.
    dir_kept: bool,
}

impl Summary {
    #[allow(clippy::too_many_arguments)]
    fn new(
        f: &Fleet,
        h: &History,
        report: &Report,
        killed: Option<(u64, MemberId)>,
        paused: Option<usize>,
        cut_off: Option<(usize, usize)>,
        replacement: Option<usize>,
        start_ns: u64,
        quiet_ns: u64,
        bad_lines: usize,
    ) -> Summary {
        let mut first: BTreeMap<ViewIdRepr, (u64, Vec<MemberIdRepr>, usize)> = BTreeMap::new();
        let mut sent: BTreeMap<u8, u64> = BTreeMap::new();
        let mut delivered = 0u64;
        for r in &h.records {
            match &r.kind {
                RecordKind::ViewInstalled { view, members, .. } => {
                    let e = first
                        .entry(*view)
                        .or_insert((r.time_ns, members.clone(), 0));
                    e.0 = e.0.min(r.time_ns);
                    e.2 += 1;
                }
                RecordKind::Send { ordering, .. } => *sent.entry(*ordering).or_insert(0) += 1,
                RecordKind::Deliver { .. } => delivered += 1,
                _ => {}
            }
        }
        let mut views: Vec<_> = first
            .into_iter()
            .map(|(v, (t, ms, k))| (t, v, ms, k))
            .collect();
        views.sort_by_key(|x| (x.0, x.1));

        let failover_ms = killed
            .and_then(|(t, m)| failover_ns(h, t, m.into()))
            .map(|ns| ns as f64 / 1e6)
            .or_else(|| report.failover_ns.first().map(|ns| *ns as f64 / 1e6));
        let join_ms = report.join_ns.iter().map(|ns| *ns as f64 / 1e6).collect();
        let rejoined = paused.map_or(0, |i| usize::from(f.procs[i].members.len() >= 2));
        let partition_rejoined = cut_off.map_or(0, |(i, before)| {
            usize::from(f.procs[i].members.len() > before)
        });
        let replaced = replacement.map_or(0, |i| usize::from(!f.procs[i].members.is_empty()));
        let mut digests = Vec::new();
        for (i, p) in f.procs.iter().enumerate() {
            if !p.killed {
                digests.push((f.current_name(i), p.fin));
            }
        }
        let agreed: BTreeSet<u64> = digests
            .iter()
            .filter_map(|(_, fin)| fin.filter(|x| x.has_state).map(|x| x.digest))
            .collect();
        let all_reported = digests
            .iter()
            .all(|(_, fin)| fin.is_some_and(|x| x.has_state));
        Summary {
            views,
            sent,
            delivered,
            traffic_secs: (quiet_ns.saturating_sub(start_ns)) as f64 / 1e9,
            failover_ms,
            join_ms,
            killed: usize::from(killed.is_some()),
            paused: usize::from(paused.is_some()),
            rejoined,
            partitioned: usize::from(cut_off.is_some()),
            partition_rejoined,
            replaced,
            digests_agree: all_reported && agreed.len() == 1,
            digests,
            bad_lines,
            dir_kept: true,
        }
    }

    fn print_text(&self, f: &Fleet, h: &History, report: &Report, to_stderr: bool) {
        let mut out = String::new();
        let names = display_names(h);
        let name = |m: &MemberIdRepr| {
            names
                .get(m)
                .cloned()
                .unwrap_or_else(|| format!("n{}.{}", m.node, m.incarnation))
        };
        out.push_str("\ntimeline (views as first installed; what the demo did)\n");
        let mut lines: Vec<(u64, String)> =
            f.log.iter().map(|(t, s)| (*t, format!("** {s}"))).collect();
        for (t, v, ms, k) in &self.views {
            let members: Vec<String> = ms.iter().map(&name).collect();
            lines.push((
                *t,
                format!(
                    "view v{}@{} [{}]  installed by {k}",
                    v.epoch,
                    name(&v.coord),
                    members.join(" ")
                ),
            ));
        }
        lines.sort_by_key(|x| x.0);
        for (t, s) in lines {
            out.push_str(&format!("  {:>8.3}s  {s}\n", t as f64 / 1e9));
        }
        let sent: u64 = self.sent.values().sum();
        out.push_str("\nthroughput\n");
        let per: Vec<String> = self
            .sent
            .iter()
            .map(|(o, c)| format!("{} {c}", Ordering::from_u8(*o).map_or("?", |o| o.name())))
            .collect();
        out.push_str(&format!(
            "  sent {sent} messages in {:.1} s ({:.0}/s over the group): {}\n",
            self.traffic_secs,
            sent as f64 / self.traffic_secs.max(0.001),
            per.join(", ")
        ));
        out.push_str(&format!(
            "  delivered {} times ({:.0} deliveries/s)\n",
            self.delivered,
            self.delivered as f64 / self.traffic_secs.max(0.001)
        ));
        out.push_str("\nfaults\n");
        match self.failover_ms {
            Some(ms) => out.push_str(&format!(
                "  failover: {ms:.0} ms from the kill to the new view at every survivor\n"
            )),
            None if self.killed > 0 => {
                out.push_str("  failover: the killed member was never excluded everywhere\n")
            }
            None => out.push_str("  failover: no member was killed\n"),
        }
        if self.paused > 0 {
            out.push_str(&format!(
                "  pause: the paused member {} excluded and rejoined as a new incarnation\n",
                if self.rejoined > 0 { "was" } else { "was NOT" }
            ));
        }
        if self.partitioned > 0 {
            out.push_str(&format!(
                "  partition: the cut-off member {} excluded and rejoined as a new incarnation after the heal\n",
                if self.partition_rejoined > 0 { "was" } else { "was NOT" }
            ));
        }
        if !self.join_ms.is_empty() {
            let j: Vec<String> = self.join_ms.iter().map(|x| format!("{x:.0}")).collect();
            out.push_str(&format!(
                "  admissions (start to first view), ms: {}\n",
                j.join(" ")
            ));
        }
        out.push_str("\nreplicated state (hash chain over total and safe messages), at the end\n");
        for (who, fin) in &self.digests {
            match fin {
                Some(x) if x.has_state => out.push_str(&format!(
                    "  {who:<8} digest {:#018x}  {} commands applied, {} messages delivered\n",
                    x.digest, x.applied, x.delivered
                )),
                Some(_) => out.push_str(&format!(
                    "  {who:<8} has no state (never installed a snapshot)\n"
                )),
                None => out.push_str(&format!("  {who:<8} did not report\n")),
            }
        }
        out.push_str(&format!(
            "  state digests {}\n",
            if self.digests_agree {
                "agree"
            } else {
                "DO NOT agree"
            }
        ));
        out.push_str(&format!("\nchecks ({} records", report.records));
        if self.bad_lines > 0 {
            out.push_str(&format!(", {} torn lines skipped", self.bad_lines));
        }
        out.push_str(")\n");
        for p in Property::ALL {
            let c = report.count(p);
            let status = if report.skipped.contains(&p) {
                "not judged".to_string()
            } else if c == 0 {
                "ok".to_string()
            } else {
                format!("{c} VIOLATIONS")
            };
            out.push_str(&format!("  {:<32} {status}\n", p.to_string()));
        }
        for v in report.violations.iter().take(5) {
            out.push_str(&format!("\n  {v}\n{}", trace_around(h, v, 12)));
        }
        let verdict = if report.is_ok() && self.digests_agree {
            "PASS"
        } else {
            "FAIL"
        };
        let where_ = if self.dir_kept {
            format!("histories in {}", f.dir.display())
        } else {
            "histories removed (--keep keeps them)".to_string()
        };
        out.push_str(&format!(
            "\n{verdict}: {} violations; {where_}\n",
            report.total()
        ));
        if to_stderr {
            eprint!("{out}");
        } else {
            print!("{out}");
        }
    }

    fn json(&self, f: &Fleet, report: &Report, nodes: usize, seconds: u64) -> serde_json::Value {
        let by_property: BTreeMap<String, usize> = report
            .counts
            .iter()
            .filter(|(_, c)| **c > 0)
            .map(|(p, c)| (format!("{p:?}"), *c))
            .collect();
        let sent: u64 = self.sent.values().sum();
        json!({
            "nodes": nodes,
            "seconds": seconds,
            "violations": report.total(),
            "violations_by_property": by_property,
            "skipped": report.skipped.iter().map(|p| format!("{p:?}")).collect::<Vec<_>>(),
            "views": self.views.len(),
            "sent": sent,
            "delivered": self.delivered,
            "throughput_msgs_per_s": sent as f64 / self.traffic_secs.max(0.001),
            "killed": self.killed,
            "paused": self.paused,
            "rejoined": self.rejoined,
            "partitioned": self.partitioned,
            "partition_rejoined": self.partition_rejoined,
            "replaced": self.replaced,
            "failover_ms": self.failover_ms,
            "join_ms": self.join_ms,
            "state_digest_agree": self.digests_agree,
            "records": report.records,
            "dir": self.dir_kept.then(|| f.dir.display().to_string()),
        })
    }
}

/// Nanoseconds from the crash of `victim` at `t` until every other member
/// that was in a view with it then has installed a view without it.
fn failover_ns(h: &History, t: u64, victim: MemberIdRepr) -> Option<u64> {
    let mut current: BTreeMap<MemberIdRepr, (bool, Option<u64>)> = BTreeMap::new();
    for r in &h.records {
        if r.member == victim {
            continue;
        }
        if let RecordKind::ViewInstalled { members, .. } = &r.kind {
            let with = members.contains(&victim);
            let e = current.entry(r.member).or_insert((false, None));
            if r.time_ns <= t {
                e.0 = with;
            } else if e.0 && !with && e.1.is_none() {
                e.1 = Some(r.time_ns);
            }
        }
    }
    let survivors: Vec<_> = current.values().filter(|(with, _)| *with).collect();
    if survivors.is_empty() {
        return None;
    }
    let mut worst = 0;
    for (_, after) in survivors {
        worst = worst.max(after.map(|x| x - t)?);
    }
    Some(worst)
}

/// Short names for members: "n3/2" is the second incarnation of node 3 seen in the run.
fn display_names(h: &History) -> BTreeMap<MemberIdRepr, String> {
    let mut by_node: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for r in &h.records {
        by_node
            .entry(r.member.node)
            .or_default()
            .insert(r.member.incarnation);
        if let RecordKind::ViewInstalled { members, .. } = &r.kind {
            for m in members {
                by_node.entry(m.node).or_default().insert(m.incarnation);
            }
        }
    }
    let mut out = BTreeMap::new();
    for (node, incs) in by_node {
        for (k, inc) in incs.into_iter().enumerate() {
            out.insert(
                MemberIdRepr {
                    node,
                    incarnation: inc,
                },
                format!("n{node}/{}", k + 1),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_state_snapshot_round_trips_and_garbage_is_refused() {
        let mut s = ChainState::default();
        s.apply(b"a");
        s.apply(b"b");
        assert_eq!(ChainState::restore(&s.snapshot()), Some(s));
        assert_eq!(ChainState::restore(b"short"), None);
        assert_eq!(ChainState::restore(&[0u8; 17]), None);
    }

    #[test]
    fn failover_is_measured_to_the_last_survivor() {
        let m = |n: u64| MemberIdRepr {
            node: n,
            incarnation: 1,
        };
        let v = |e: u64| ViewIdRepr {
            epoch: e,
            coord: m(1),
        };
        let mut h = History::default();
        for p in [1, 2, 3] {
            h.records.push(Record {
                time_ns: 10,
                member: m(p),
                kind: RecordKind::ViewInstalled {
                    view: v(1),
                    members: vec![m(1), m(2), m(3)],
                    state_digest: Some(0),
                },
            });
        }
        for (p, t) in [(1, 150), (2, 170)] {
            h.records.push(Record {
                time_ns: t,
                member: m(p),
                kind: RecordKind::ViewInstalled {
                    view: v(2),
                    members: vec![m(1), m(2)],
                    state_digest: Some(0),
                },
            });
        }
        assert_eq!(failover_ns(&h, 100, m(3)), Some(70));
        assert_eq!(failover_ns(&h, 100, m(2)), None);
    }
}
