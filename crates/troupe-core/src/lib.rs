//! # troupe-core: the sans-IO virtual-synchrony engine
//!
//! One [`Engine`] is one member of one process group. It is a pure state
//! machine: it performs no I/O, reads no clock, starts no thread and owns no
//! global randomness. The driver (the deterministic simulator in `troupe-sim`,
//! or the tokio runtime in `troupe`) feeds it inputs and drains its outputs:
//!
//! * inputs: [`Engine::handle_datagram`], [`Engine::handle_timeout`],
//!   [`Engine::send`], [`Engine::join`], [`Engine::leave`],
//!   [`Engine::provide_state`], [`Engine::query`], [`Engine::reply`];
//! * outputs: [`Engine::poll_transmit`] (datagrams to send),
//!   [`Engine::poll_timeout`] (when to call `handle_timeout` next),
//!   [`Engine::poll_event`] (views, deliveries, state transfer, queries).
//!
//! The engine keeps the contract of `GUARANTEES.md`: every member sees the same
//! sequence of views; a multicast reaches all surviving members of its view or
//! none; each message is delivered in the order its [`Ordering`] asks for.
//!
//! ```
//! use bytes::Bytes;
//! use troupe_core::{Config, Engine, Event, MemberId, Ordering, Time};
//!
//! // A group of one: create it, multicast, and see the delivery.
//! let cfg = Config::new("demo", Bytes::from_static(b"a"));
//! let mut a = Engine::new(cfg, MemberId::new(1, 1), Time::ZERO, 7).unwrap();
//! a.create(Time::ZERO);
//! a.send(Time::ZERO, Ordering::Total, Bytes::from_static(b"hello")).unwrap();
//! let mut delivered = Vec::new();
//! while let Some(ev) = a.poll_event() {
//!     if let Event::Deliver(d) = ev {
//!         delivered.push(d.payload);
//!     }
//! }
//! assert_eq!(delivered, vec![Bytes::from_static(b"hello")]);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// Names a mutant in a check `self.mutant(mutant!(Name))`; without the
/// `mutants` feature the check is a constant `false` and compiles away.
#[cfg(feature = "mutants")]
macro_rules! mutant {
    ($m:ident) => {
        crate::Mutant::$m
    };
}
#[cfg(not(feature = "mutants"))]
macro_rules! mutant {
    ($m:ident) => {
        crate::types::NoMutant
    };
}

mod config;
mod engine;
mod error;
mod event;
mod failure;
mod flush;
mod mark;
#[cfg(feature = "mutants")]
mod mutant;
mod order;
mod outbox;
mod query;
mod stream;
mod transfer;
mod types;
pub mod wire;

pub use config::{Config, ConfigError, DATAGRAM_OVERHEAD_BYTES};
pub use engine::{Engine, Stats, Transmit};
pub use error::{QueryError, SendError};
pub use event::{Delivery, Event, ExitReason};
#[cfg(feature = "mutants")]
pub use mutant::Mutant;
pub use types::{Addr, MemberId, Ordering, QueryId, QueryQuorum, Time, View, ViewId};
pub use wire::DecodeError;

/// A 64-bit hash of a group name (FNV-1a): datagrams carry it so that members
/// of different groups sharing a network ignore each other.
pub fn group_hash(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests;
