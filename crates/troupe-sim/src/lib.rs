//! # troupe-sim: deterministic simulation of troupe groups
//!
//! Many [`troupe_core::Engine`]s run on one thread in virtual time, on a
//! simulated network that loses, duplicates, delays and reorders datagrams
//! and is partitioned on purpose, while a nemesis crashes, restarts and
//! pauses processes and skews their clocks. Every send, delivery, view and
//! fault is recorded in a [`history::History`], and the [`check`]ers verify
//! every property of `GUARANTEES.md` on it. One seed drives every random
//! choice, so a failing seed is a bug report that replays exactly.
//!
//! The parts:
//! - [`Simulation`] and [`SimConfig`]: the run, its timeline (joins, chaos
//!   window, healing period, quiet period) and its knobs;
//! - [`net`]: the network model; [`nemesis`]: which faults, when;
//!   [`workload`]: what the application sends;
//! - [`SimApp`]: the replicated application on every member, bring your own
//!   or use [`LogDigest`];
//! - [`history`] and [`check`]: what is recorded, and the checkers.
//!
//! ```
//! use std::time::Duration;
//! use troupe_sim::{run, Nemesis, SimConfig};
//!
//! let mut cfg = SimConfig::new(7); // the seed
//! cfg.nodes = 3;
//! cfg.duration = Duration::from_secs(3);
//! cfg.heal = Duration::from_secs(2);
//! cfg.quiet = Duration::from_secs(1);
//! cfg.nemesis = "pause,loss".parse::<Nemesis>().unwrap();
//! let outcome = run(cfg.clone()).unwrap();
//! let report = outcome.check();
//! for v in &report.violations {
//!     println!("seed {}: {v}", outcome.seed);
//! }
//! // Same seed, same run, to the last byte.
//! assert_eq!(run(cfg).unwrap().trace_hash, outcome.trace_hash);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod check;
pub mod history;
pub mod nemesis;
pub mod net;
mod rng;
mod sim;
pub mod workload;

pub use app::{LogDigest, SimApp};
pub use nemesis::{FaultKind, Nemesis};
pub use sim::{run, FaultNote, SimConfig, SimError, SimOutcome, SimStats, Simulation};
pub use workload::Workload;
