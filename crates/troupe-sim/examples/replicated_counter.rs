//! A downstream user's own application under the simulator: a replicated
//! counter, incremented by `Total` messages, run over a few seeds with
//! crashes, restarts, pauses and partitions, and checked.
//!
//! ```text
//! cargo run -p troupe-sim --example replicated_counter [SEEDS [FIRST_SEED]]
//! ```
//!
//! Every member applies the same `Total` messages in the same order, so
//! every member that is up to date holds the same count; a joiner gets the
//! count by state transfer. The checkers compare the counters (through
//! `SimApp::digest`) at every view boundary: S1 for joiners, S2 for everyone.

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use troupe_core::{Delivery, Ordering};
use troupe_sim::{Nemesis, SimApp, SimConfig, Simulation};

/// The replicated state: one counter.
#[derive(Default)]
struct Counter {
    value: u64,
}

impl SimApp for Counter {
    fn apply(&mut self, d: &Delivery) {
        // Only totally ordered messages may change replicated state. Each
        // adds the payload's 25th byte (the first after the message key), so
        // that the count depends on which messages were applied, not only how
        // many.
        if d.ordering == Ordering::Total {
            self.value += u64::from(d.payload.get(24).copied().unwrap_or(1));
        }
    }

    fn snapshot(&self) -> Bytes {
        Bytes::copy_from_slice(&self.value.to_le_bytes())
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        let bytes: [u8; 8] = snapshot
            .try_into()
            .map_err(|_| format!("a counter is 8 bytes, not {}", snapshot.len()))?;
        self.value = u64::from_le_bytes(bytes);
        Ok(())
    }

    fn digest(&self) -> u64 {
        // The state is small enough to be its own digest.
        self.value
    }
}

fn main() -> ExitCode {
    let arg = |i: usize, default: u64| -> u64 {
        std::env::args()
            .nth(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let (seeds, first) = (arg(1, 3), arg(2, 1));
    let nemesis: Nemesis = "crash,restart,pause,partition"
        .parse()
        .expect("valid fault names");
    let mut failed = 0;
    for seed in first..first + seeds {
        let mut cfg = SimConfig::new(seed);
        cfg.nodes = 5;
        cfg.duration = Duration::from_secs(20);
        cfg.heal = Duration::from_secs(8);
        cfg.nemesis = nemesis;
        let sim = Simulation::new(cfg, |_member| Counter::default()).expect("valid config");
        let outcome = sim.run();
        let report = outcome.check();
        let counters: Vec<String> = outcome
            .final_digests
            .iter()
            .map(|(m, v)| format!("{m}={}", v.map_or("-".to_string(), |v| v.to_string())))
            .collect();
        println!(
            "seed {seed}: {} deliveries, {} views, {} faults; counters at the end: {}; {}",
            outcome.stats.messages_delivered,
            outcome.stats.views_installed,
            outcome.stats.faults_injected,
            counters.join(" "),
            if report.is_ok() {
                "all guarantees held".to_string()
            } else {
                format!("{} violations", report.total())
            }
        );
        for v in report.violations.iter().take(3) {
            println!("  {v}");
        }
        if !report.is_ok() {
            failed += 1;
            // The run depends on the application (its snapshots travel on
            // the simulated network), so it replays here, not with `troupe sim`.
            println!("  replay: cargo run -p troupe-sim --example replicated_counter -- 1 {seed}");
        }
    }
    println!("{} of {seeds} seeds held every guarantee", seeds - failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
