//! Multi-process tests of the built `troupe` binary: real processes on
//! 127.0.0.1, real SIGKILL, SIGSTOP and SIGCONT, and the recorded histories
//! checked by the simulator's checkers (through `troupe demo`, which runs
//! `troupe_sim::check::check_all` on them).
//!
//! Every child is killed by pid when its guard is dropped (a failing test
//! included); the demo kills its own members, and they exit by themselves
//! when the demo goes away. The demos run one at a time: two at once on a
//! small machine would starve each other's heartbeats.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One demo at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Numbers the demo runs of this process, for their directories.
static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Kills the child by pid when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn troupe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_troupe"))
}

/// Runs `troupe demo` with `args` (bounded by `limit`) and returns the JSON of
/// its last line, and its standard error for messages.
fn demo(args: &[&str], limit: Duration) -> (serde_json::Value, String) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("troupe-test-{}-{n}", std::process::id()));
    let child = troupe()
        .arg("demo")
        .arg("--json")
        .arg("--dir")
        .arg(&dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("troupe demo starts");
    let mut guard = Guard(child);
    let stdout = guard.0.stdout.take().expect("stdout");
    let stderr = guard.0.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        let lines: Vec<String> = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect();
        let _ = tx.send((true, lines.join("\n")));
    });
    std::thread::spawn(move || {
        let lines: Vec<String> = BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect();
        let _ = tx2.send((false, lines.join("\n")));
    });
    let deadline = Instant::now() + limit;
    let (mut out, mut err) = (None, None);
    while out.is_none() || err.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((true, s)) => out = Some(s),
            Ok((false, s)) => err = Some(s),
            Err(_) => panic!("troupe demo {args:?} did not finish within {limit:?}"),
        }
    }
    let out = out.unwrap_or_default();
    let err = err.unwrap_or_default();
    let last = out.lines().last().unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last:?}\nstderr:\n{err}"));
    let _ = std::fs::remove_dir_all(&dir);
    (v, err)
}

/// The checks every demo run must pass.
fn assert_clean(v: &serde_json::Value, err: &str) {
    assert_eq!(
        v["violations"], 0,
        "violations: {}\n{err}",
        v["violations_by_property"]
    );
    assert_eq!(
        v["state_digest_agree"], true,
        "state digests disagree\n{err}"
    );
    assert!(
        v["delivered"].as_u64().unwrap_or(0) > 0,
        "nothing delivered\n{err}"
    );
}

/// An 8-second demo of `nodes` members at `rate` with `faults` (and
/// `extra` flags), which must pass every check; its JSON and its report.
fn fault_demo(nodes: u32, rate: u32, faults: &str, extra: &[&str]) -> (serde_json::Value, String) {
    let (nodes, rate) = (nodes.to_string(), rate.to_string());
    let mut args = vec![
        "--nodes",
        &nodes,
        "--seconds",
        "8",
        "--rate",
        &rate,
        "--faults",
        faults,
    ];
    args.extend_from_slice(extra);
    let (v, err) = demo(&args, Duration::from_secs(90));
    assert_clean(&v, &err);
    (v, err)
}

#[test]
fn kill_minus_nine_of_a_member_in_mid_stream_is_survived_and_checked() {
    let (v, err) = fault_demo(4, 50, "kill", &[]);
    assert_eq!(v["killed"], 1);
    let failover = v["failover_ms"].as_f64().unwrap_or(f64::MAX);
    assert!(failover < 5000.0, "failover took {failover} ms\n{err}");
}

#[test]
fn kill_minus_nine_of_the_coordinator_and_sequencer_is_survived_and_checked() {
    let (v, err) = fault_demo(3, 100, "kill", &["--kill-coordinator"]);
    assert_eq!(v["killed"], 1);
    assert!(
        v["failover_ms"].as_f64().is_some(),
        "the coordinator was never excluded\n{err}"
    );
}

#[test]
fn stopped_and_continued_member_notices_its_exclusion_and_rejoins() {
    let (v, err) = fault_demo(3, 50, "pause", &[]);
    assert_eq!(v["paused"], 1);
    assert_eq!(v["rejoined"], 1, "the paused member did not rejoin\n{err}");
}

/// The coordinator (which also sequences) is cut off by the transport's
/// fault injection while it runs on: the others go on without it, and the
/// guarantees hold across the two sides; after the heal it notices its
/// exclusion and rejoins.
#[test]
fn coordinator_cut_off_by_a_partition_is_excluded_and_rejoins_after_the_heal() {
    let (v, err) = fault_demo(3, 100, "partition", &[]);
    assert_eq!(v["partitioned"], 1);
    assert_eq!(
        v["partition_rejoined"], 1,
        "the cut-off member did not rejoin\n{err}"
    );
}

#[test]
fn killed_member_restarts_and_joins_by_state_transfer_under_load() {
    let (v, _) = fault_demo(3, 200, "kill,replace", &[]);
    assert_eq!(v["killed"], 1);
    assert_eq!(v["replaced"], 1);
}

#[test]
fn full_demo_with_every_fault_passes() {
    let (v, err) = demo(
        &["--nodes", "5", "--seconds", "10", "--rate", "50"],
        Duration::from_secs(120),
    );
    assert_clean(&v, &err);
    for k in [
        "killed",
        "paused",
        "rejoined",
        "partitioned",
        "partition_rejoined",
        "replaced",
    ] {
        assert_eq!(v[k], 1, "{k}\n{err}");
    }
    assert!(
        v["views"].as_u64().unwrap_or(0) >= 8,
        "views: {}\n{err}",
        v["views"]
    );
}

/// Reads JSON lines from a `troupe node` until one satisfies `pred`.
fn wait_line(
    rx: &mpsc::Receiver<String>,
    limit: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("the node printed the expected line in time");
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            if pred(&v) {
                return v;
            }
        }
    }
}

fn spawn_node(name: &str, join: Option<&str>) -> (Guard, mpsc::Receiver<String>) {
    let mut cmd = troupe();
    cmd.args([
        "node",
        "--name",
        name,
        "--listen",
        "127.0.0.1:0",
        "--json",
        "--group",
        "test-node",
    ]);
    if let Some(j) = join {
        cmd.args(["--join", j]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("troupe node starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (Guard(child), rx)
}

#[test]
fn node_multicasts_stdin_lines_and_prints_json_events() {
    let limit = Duration::from_secs(20);
    let (mut a, a_rx) = spawn_node("alpha", None);
    let started = wait_line(&a_rx, limit, |v| v["event"] == "started");
    let addr = started["addr"].as_str().expect("addr").to_string();
    let (_b, b_rx) = spawn_node("beta", Some(&addr));
    wait_line(&b_rx, limit, |v| {
        v["event"] == "view" && v["members"].as_array().is_some_and(|m| m.len() == 2)
    });
    wait_line(&a_rx, limit, |v| {
        v["event"] == "view" && v["members"].as_array().is_some_and(|m| m.len() == 2)
    });
    let stdin = a.0.stdin.as_mut().expect("stdin");
    writeln!(stdin, "hello from alpha").expect("write");
    stdin.flush().expect("flush");
    let d = wait_line(&b_rx, limit, |v| v["event"] == "deliver");
    assert_eq!(d["payload"], "hello from alpha");
    assert_eq!(d["ordering"], "total");
}
