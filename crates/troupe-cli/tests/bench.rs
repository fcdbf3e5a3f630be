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

#[test]
fn bench_json_reports_positive_figures() {
    let child = Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args(["bench", "--members", "3", "--seconds", "2", "--json"])
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
    assert!(status.success(), "troupe bench failed: {status}");
    let last = lines.last().expect("troupe bench printed a line");
    let v: serde_json::Value = serde_json::from_str(last).expect("the last line is JSON");
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
        "ratio",
    ] {
        let x = v[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{field} missing in {last}"));
        assert!(x > 0.0, "{field} is not positive in {last}");
    }
}
