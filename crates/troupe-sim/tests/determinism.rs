//! The same seed gives the same run, to the last byte; another seed does not.

use std::time::Duration;

use troupe_sim::{run, Nemesis, SimConfig, SimOutcome};

/// A short run under every fault: enough to exercise crashes, pauses,
/// partitions and joins, small enough for a debug build on CI.
fn config(seed: u64) -> SimConfig {
    let mut cfg = SimConfig::new(seed);
    cfg.nodes = 4;
    cfg.duration = Duration::from_secs(6);
    cfg.heal = Duration::from_secs(2);
    cfg.quiet = Duration::from_secs(1);
    cfg.fault_interval = Duration::from_millis(400);
    cfg.nemesis = Nemesis::ALL;
    cfg
}

fn run_seed(seed: u64) -> SimOutcome {
    run(config(seed)).expect("valid config")
}

#[test]
fn same_seed_gives_the_same_trace_and_history() {
    let a = run_seed(11);
    let b = run_seed(11);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.history, b.history);
    assert_eq!(a.faults, b.faults);
    assert_eq!(a.stats, b.stats);
    assert!(!a.history.records.is_empty());
}

#[test]
fn different_seeds_give_different_traces() {
    let a = run_seed(11);
    let b = run_seed(12);
    assert_ne!(a.trace_hash, b.trace_hash);
    assert_ne!(a.history, b.history);
}
