//! # troupe-sim: deterministic simulation of troupe groups
//!
//! (Work in progress: the simulator, the nemesis and the checkers land here.)

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod check;
pub mod history;
