//! A short run without faults completes, records views and deliveries, and
//! breaks no promise.

use std::time::Duration;

use troupe_sim::history::RecordKind;
use troupe_sim::{run, Nemesis, SimConfig};

#[test]
fn short_fault_free_runs_install_views_and_deliver() {
    for seed in 1..=3 {
        let mut cfg = SimConfig::new(seed);
        cfg.nodes = 3;
        cfg.duration = Duration::from_secs(4);
        cfg.heal = Duration::from_secs(2);
        cfg.quiet = Duration::from_secs(1);
        cfg.nemesis = Nemesis::NONE;
        let out = run(cfg).expect("valid config");
        let h = &out.history;
        let views = h
            .records
            .iter()
            .filter(|r| matches!(r.kind, RecordKind::ViewInstalled { .. }))
            .count();
        let sends = h
            .records
            .iter()
            .filter(|r| matches!(r.kind, RecordKind::Send { .. }))
            .count();
        let delivered = h
            .records
            .iter()
            .filter(|r| matches!(r.kind, RecordKind::Deliver { .. }))
            .count();
        assert!(views >= 3, "seed {seed}: {views} views installed");
        assert!(sends > 0, "seed {seed}: nothing sent");
        assert!(
            delivered >= sends,
            "seed {seed}: {sends} sends, {delivered} deliveries"
        );
        assert_eq!(out.stats.crashes, 0);
        assert_eq!(out.stats.faults_injected, 0);
        let report = out.check();
        let shown: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
        assert!(report.is_ok(), "seed {seed}:\n{}", shown.join("\n"));
    }
}

#[test]
fn every_member_joins_and_ends_in_one_view() {
    let mut cfg = SimConfig::new(5);
    cfg.nodes = 5;
    cfg.duration = Duration::from_secs(4);
    cfg.heal = Duration::from_secs(2);
    cfg.quiet = Duration::from_secs(1);
    cfg.nemesis = Nemesis::NONE;
    cfg.workload.leave_interval = None;
    let out = run(cfg).expect("valid config");
    // The last view each node installed: all the same, with all five.
    let mut last = std::collections::BTreeMap::new();
    for r in &out.history.records {
        if let RecordKind::ViewInstalled { view, members, .. } = &r.kind {
            last.insert(r.member.node, (*view, members.len()));
        }
    }
    assert_eq!(last.len(), 5, "every node installed a view: {last:?}");
    let first = *last.values().next().unwrap();
    assert!(
        last.values().all(|v| *v == first),
        "one final view: {last:?}"
    );
    assert_eq!(first.1, 5);
}
