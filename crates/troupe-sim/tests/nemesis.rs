//! The nemesis keeps its rules: faults only in the chaos window, never a
//! majority out of action, everything lifted at the heal.

use std::collections::BTreeSet;
use std::time::Duration;

use troupe_sim::history::RecordKind;
use troupe_sim::{run, Nemesis, SimConfig};

fn config(seed: u64, nemesis: &str) -> SimConfig {
    let mut cfg = SimConfig::new(seed);
    cfg.nodes = 5;
    cfg.duration = Duration::from_secs(8);
    cfg.heal = Duration::from_secs(2);
    cfg.quiet = Duration::from_secs(1);
    cfg.fault_interval = Duration::from_millis(250);
    // These tests are about the faults: a light workload keeps them fast in a
    // debug build.
    cfg.workload.send_rate = 10.0;
    cfg.workload.large_one_in = 0;
    cfg.nemesis = nemesis.parse::<Nemesis>().expect("valid nemesis");
    cfg
}

#[test]
fn crashes_without_restarts_never_take_a_majority() {
    for seed in 1..=2 {
        let out = run(config(seed, "crash")).expect("valid config");
        let crashed: BTreeSet<u64> = out
            .history
            .records
            .iter()
            .filter(|r| r.kind == RecordKind::Crashed)
            .map(|r| r.member.node)
            .collect();
        assert!(
            crashed.len() <= 2,
            "seed {seed}: nodes {crashed:?} crashed for good out of 5"
        );
        let planned = out.stats.faults_injected + out.stats.faults_skipped;
        assert!(planned >= 3, "seed {seed}: {planned} crashes planned");
        assert!(
            out.stats.faults_skipped >= 1,
            "seed {seed}: later crashes are refused"
        );
    }
}

#[test]
fn faults_happen_only_in_the_chaos_window() {
    let cfg = config(4, "all");
    let warmup = cfg.warmup().as_nanos() as u64;
    let out = run(cfg).expect("valid config");
    let healed_at = out.history.healed_at_ns.expect("recorded");
    assert!(out.stats.faults_injected + out.stats.faults_skipped > 3);
    let heal_notes = out
        .faults
        .iter()
        .filter(|f| f.text.starts_with("healing"))
        .count();
    assert_eq!(heal_notes, 1);
    for f in out.faults.iter().filter(|f| !f.text.starts_with("healing")) {
        assert!(
            (warmup..healed_at).contains(&f.time_ns),
            "{f} outside [{warmup}, {healed_at})"
        );
    }
}

#[test]
fn crashed_nodes_come_back_as_new_incarnations_when_restarts_are_on() {
    let out = run(config(5, "crash,restart")).expect("valid config");
    assert!(out.stats.crashes > 0);
    let records = &out.history.records;
    for (i, r) in records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.kind == RecordKind::Crashed)
    {
        let back = records[i..].iter().any(|s| {
            s.kind == RecordKind::Started
                && s.member.node == r.member.node
                && s.member.incarnation > r.member.incarnation
        });
        assert!(
            back,
            "n{}.{} crashed and never came back",
            r.member.node, r.member.incarnation
        );
    }
}

#[test]
fn no_faults_means_no_faults() {
    let out = run(config(6, "none")).expect("valid config");
    assert_eq!(out.stats.faults_injected + out.stats.faults_skipped, 0);
    assert_eq!(out.stats.crashes, 0);
    assert_eq!(
        out.stats.net.lost + out.stats.net.blocked + out.stats.net.duplicated,
        0
    );
}
