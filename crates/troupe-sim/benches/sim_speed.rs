//! How fast the simulator runs: simulated seconds per wall second, and
//! deliveries per wall second, for 5 members under load.
//!
//! ```text
//! cargo bench -p troupe-sim --bench sim_speed
//! ```
//!
//! A benchmark prints figures; it asserts nothing about time.

use std::time::{Duration, Instant};

use troupe_sim::{run, Nemesis, SimConfig};

/// One measured configuration.
struct Case {
    name: &'static str,
    nemesis: Nemesis,
    send_rate: f64,
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument picks cases by name.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let cases = [
        Case {
            name: "5 members, 200 msg/s each, no faults",
            nemesis: Nemesis::NONE,
            send_rate: 200.0,
        },
        Case {
            name: "5 members, 200 msg/s each, every fault",
            nemesis: Nemesis::ALL,
            send_rate: 200.0,
        },
        Case {
            name: "5 members, default load (40 msg/s), every fault",
            nemesis: Nemesis::ALL,
            send_rate: 40.0,
        },
    ];
    for case in cases
        .iter()
        .filter(|c| filter.as_ref().is_none_or(|f| c.name.contains(f.as_str())))
    {
        let mut sim_s = 0.0;
        let mut delivered = 0u64;
        let mut sent = 0u64;
        let mut datagrams = 0u64;
        let start = Instant::now();
        let mut seeds = 0;
        // At least three seeds and two wall seconds, so that one odd seed does
        // not make the figure.
        while seeds < 3 || start.elapsed() < Duration::from_secs(2) {
            seeds += 1;
            let mut cfg = SimConfig::new(seeds);
            cfg.nodes = 5;
            cfg.duration = Duration::from_secs(30);
            cfg.nemesis = case.nemesis;
            cfg.workload.send_rate = case.send_rate;
            let out = run(cfg).expect("valid config");
            sim_s += out.stats.sim_seconds;
            delivered += out.stats.messages_delivered;
            sent += out.stats.messages_sent;
            datagrams += out.stats.datagrams_delivered;
        }
        let wall = start.elapsed().as_secs_f64();
        println!("{}:", case.name);
        println!("  {seeds} runs of 30 s: {sim_s:.0} simulated s in {wall:.2} wall s");
        println!("  {:>12.1} simulated seconds per wall second", sim_s / wall);
        println!(
            "  {:>12.0} deliveries per wall second ({sent} sends, {delivered} deliveries)",
            delivered as f64 / wall
        );
        println!(
            "  {:>12.0} datagrams per wall second",
            datagrams as f64 / wall
        );
    }
}
