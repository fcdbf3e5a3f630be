//! # troupe-sim: deterministic simulation of troupe groups
//!
//! The building blocks of the simulator: a seeded [`net`]work model that
//! loses, duplicates, delays, reorders and partitions datagrams, the
//! [`nemesis`]'s fault kinds and schedule, the [`workload`], and the
//! replicated application trait [`SimApp`]. The simulation loop that runs
//! engines on them comes next.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod check;
pub mod history;
pub mod nemesis;
pub mod net;
mod rng;
pub mod workload;

pub use app::{LogDigest, SimApp};
pub use nemesis::{FaultKind, Nemesis};
pub use workload::Workload;
