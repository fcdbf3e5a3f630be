//! The simulator's acceptance runs, through the `troupe` command exactly as a
//! user types it: 300 seeds with every fault must break no promise, and every
//! mutant must be caught within 300 seeds.

use std::process::Command;

use serde_json::Value;

fn troupe(args: &[&str]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args(args)
        .output()
        .expect("troupe runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let json: Value = serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "last line of `troupe {}` is not JSON ({e}): {last}",
            args.join(" ")
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

#[test]
fn three_hundred_seeds_with_every_fault_break_no_promise() {
    let (code, json) = troupe(&[
        "sim",
        "--seeds",
        "300",
        "--nodes",
        "5",
        "--nemesis",
        "all",
        "--json",
    ]);
    assert_eq!(json["violations"], 0, "violations: {json}");
    assert_eq!(json["failing_seeds"].as_array().map(Vec::len), Some(0));
    assert_eq!(json["seeds"], 300);
    assert!(
        json["messages_delivered"].as_u64().unwrap_or(0) > 100_000,
        "{json}"
    );
    assert!(
        json["views_installed"].as_u64().unwrap_or(0) > 1000,
        "{json}"
    );
    assert_eq!(code, 0);
    eprintln!(
        "300 seeds: {} delivered, {} views, {} simulated seconds in {} wall seconds",
        json["messages_delivered"],
        json["views_installed"],
        json["sim_seconds"],
        json["wall_seconds"]
    );
}

#[test]
fn every_mutant_is_caught() {
    let out = Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args(["sim", "--list-mutants"])
        .output()
        .expect("troupe runs");
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(names.len() >= 10, "mutants: {names:?}");
    let mut escaped = Vec::new();
    for name in &names {
        let (code, json) = troupe(&[
            "sim", "--mutant", name, "--seeds", "300", "--nodes", "5", "--json",
        ]);
        let caught = json["violations"].as_u64().unwrap_or(0);
        eprintln!(
            "mutant {name:<28} {caught:>6} violations {}",
            json["violations_by_property"]
        );
        assert_eq!(json["mutant"], name.as_str());
        if caught == 0 || code != 1 {
            escaped.push(name.clone());
        }
    }
    assert!(escaped.is_empty(), "mutants not caught: {escaped:?}");
}
