//! # troupe: process groups with virtual synchrony, on tokio
//!
//! (Work in progress: the runtime lands here.)

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use troupe_core as core;
