//! `troupe bench` runs end to end and reports every figure. No assertion on
//! speed: the machines are shared and noisy, a benchmark prints figures and
//! a test never passes or fails on time.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Kills the child by pid when dropped (a failing test included); its
/// members exit when its pipes close or their own deadline passes.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One bench at a time: each starts several processes on a small machine.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `troupe bench` with `args` and returns its last line, as JSON.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let child = Command::new(env!("CARGO_BIN_EXE_troupe"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("troupe bench starts");
    let mut guard = Guard(child);
    let stdout = guard.0.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let lines: Vec<String> = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect();
        let _ = tx.send(lines);
    });
    let lines = rx
        .recv_timeout(Duration::from_secs(150))
        .expect("troupe bench finishes within 150 s");
    let status = guard.0.wait().expect("troupe bench exit status");
    assert!(status.success(), "troupe bench {args:?} failed: {status}");
    let last = lines.last().expect("troupe bench printed a line");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("the last line is not JSON ({e}): {last}"))
}

fn number(v: &serde_json::Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} missing in {v}"))
}

#[test]
fn bench_json_reports_positive_figures() {
    let v = bench_json(&["--members", "3", "--seconds", "2"]);
    let last = v.to_string();
    assert_eq!(v["ordering"], "total");
    assert_eq!(v["senders"], "all");
    assert_eq!(v["members"], 3);
    assert_eq!(v["size"], 1024);
    for field in [
        "msgs_per_sec",
        "mb_per_sec",
        "p50_us",
        "p99_us",
        "baseline_msgs_per_sec",
        "baseline_rtt_p50_us",
        "baseline_mesh_rtt_p50_us",
        "ratio",
    ] {
        let x = v[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{field} missing in {last}"));
        assert!(x > 0.0, "{field} is not positive in {last}");
    }
}

/// With --tls the members authenticate each other with certificates made
/// for the run, and the report says so.
#[test]
fn bench_runs_troupe_over_tls() {
    let v = bench_json(&["--members", "3", "--seconds", "1", "--tls"]);
    assert_eq!(v["tls"], true, "{v}");
    assert!(number(&v, "msgs_per_sec") > 0.0, "{v}");
}

/// --drop makes troupe's members lose datagrams (the group repairs them);
/// the report says how many, and a value that is not a probability is
/// refused before anything starts.
#[test]
fn bench_runs_troupe_under_injected_loss() {
    let v = bench_json(&["--members", "3", "--seconds", "1", "--drop", "0.02"]);
    assert_eq!(v["drop"], 0.02, "{v}");
    assert!(number(&v, "msgs_per_sec") > 0.0, "{v}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args(["bench", "--drop", "2"])
        .output()
        .unwrap_or_else(|e| panic!("running troupe: {e}"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a probability"),
        "{out:?}"
    );
}

#[test]
fn failover_reports_its_distribution_and_false_suspicions() {
    let v = bench_json(&["--failover", "--kills", "2", "--suspect-timeout-ms", "1000"]);
    assert_eq!(v["mode"], "failover");
    assert_eq!(v["kills"], 2);
    assert_eq!(v["suspect_timeout_ms"], 1000);
    let (p50, p99, max) = (
        number(&v, "failover_p50_ms"),
        number(&v, "failover_p99_ms"),
        number(&v, "failover_max_ms"),
    );
    // Beyond the timeout, so possibly a little negative; never more
    // negative than the whole timeout (the kill came first).
    assert!(p50 > -1000.0 && p50 <= p99 && p99 <= max, "{v}");
    assert!(number(&v, "rejoin_p50_ms") > 0.0, "{v}");
    assert!(v["false_suspicions"].as_u64().is_some(), "{v}");
}

#[test]
fn idle_latency_is_reported_against_the_round_trip() {
    let v = bench_json(&["--idle", "--seconds", "1", "--pin"]);
    assert_eq!(v["mode"], "idle");
    assert_eq!(v["pinned"], true, "{v}");
    assert_eq!(v["ordering"], "total");
    assert!(v["messages"].as_u64().is_some_and(|n| n > 0), "{v}");
    for f in [
        "p50_us",
        "p99_us",
        "baseline_rtt_p50_us",
        "p50_over_rtt",
        "baseline_mesh_rtt_p50_us",
        "p50_over_mesh_rtt",
    ] {
        assert!(number(&v, f) > 0.0, "{f} is not positive in {v}");
    }
    assert!(number(&v, "p50_us") <= number(&v, "p99_us"), "{v}");
}

#[test]
fn overload_samples_every_members_memory() {
    let v = bench_json(&[
        "--overload",
        "--members",
        "3",
        "--seconds",
        "2",
        "--size",
        "256",
    ]);
    assert_eq!(v["mode"], "overload");
    let samples = v["rss_samples"].as_array().expect("rss_samples");
    assert!(!samples.is_empty(), "{v}");
    for s in samples {
        let kib = s["rss_kib"].as_array().expect("rss_kib");
        assert_eq!(kib.len(), 3, "{s}");
    }
    // The last sample is taken while every member still runs.
    let first = &samples[0]["rss_kib"];
    for i in 0..3 {
        assert!(first[i].as_u64().is_some_and(|k| k > 0), "{first}");
    }
    assert_eq!(
        v["rss_second_half_max_kib"].as_array().map(Vec::len),
        Some(3)
    );
}
