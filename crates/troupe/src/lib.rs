//! # troupe: process groups with virtual synchrony, on tokio
//!
//! This crate runs the sans-IO engine of [`troupe_core`] over TCP: a full mesh
//! of connections between the members, one task per member that drives its
//! engine, and a small API on top.
//!
//! * [`Group`]: join a named group (or create it), [`GroupHandle::send`]
//!   with an [`Ordering`] (waiting when the send window is full), receive
//!   [`Event`]s (views, deliveries, state transfer, queries),
//!   [`GroupHandle::query`] the members, [`GroupHandle::leave`].
//! * [`Replicated`]: a [`StateMachine`] replicated on every member, with
//!   commands in total order and state transfer to joiners.
//! * [`GroupConfig`]: the same settings from a builder or a TOML file.
//! * [`TlsFiles`]: member-to-member TLS with mutual authentication and a
//!   check of the cluster's name (see [`tls`]).
//!
//! Every member installs the same sequence of views, and a multicast reaches
//! every surviving member of its view or none (see `GUARANTEES.md`). A
//! member that the group excluded (it crashed, paused or was cut off) learns
//! it from [`Event::Exited`] and may come back as a new incarnation with
//! [`GroupHandle::rejoin`].
//!
//! ```no_run
//! use troupe::{Event, Group, Ordering};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), troupe::Error> {
//!     // The first member creates the group; the others join through it.
//!     let mut a = Group::builder("chat").listen("127.0.0.1:7001").start().await?;
//!     let b = Group::builder("chat").listen("127.0.0.1:7002").join(["127.0.0.1:7001"]).start().await?;
//!     b.send(Ordering::Total, "hello").await?;
//!     while let Some(ev) = a.recv().await {
//!         if let Event::Deliver(d) = ev {
//!             println!("{} says {}", d.sender, String::from_utf8_lossy(&d.payload));
//!             break;
//!         }
//!     }
//!     Ok(())
//! }
//! ```
//!
//! Logs go through `tracing`. Counters and gauges go through the `metrics`
//! facade once a second (install any recorder; `troupe node --metrics-addr`
//! serves them to Prometheus): `troupe_messages_sent_total` and
//! `troupe_messages_delivered_total` (label `ordering`),
//! `troupe_retransmissions_total`, `troupe_naks_sent_total`,
//! `troupe_view_changes_total`, `troupe_datagrams_sent_total`,
//! `troupe_decode_errors_total`, `troupe_frames_dropped_total`,
//! `troupe_connections_refused_total`, and the gauges
//! `troupe_unstable_messages`, `troupe_unstable_bytes`,
//! `troupe_held_messages`, `troupe_pending_sends`, `troupe_stability_lag`,
//! `troupe_transport_queued_frames`, `troupe_events_queued`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod driver;
mod error;
pub mod faults;
mod group;
mod metrics;
mod replicated;
pub mod tls;
mod transport;

pub use config::{ConfigError, GroupConfig, NAK_INTERVAL_MS};
pub use driver::QueryResult;
pub use error::Error;
pub use faults::{FaultInjector, Faults, FaultsError};
pub use group::{Events, Group, GroupBuilder, GroupHandle, Sent, TrySendError};
pub use replicated::{Replicated, StateMachine};
pub use tls::{TlsError, TlsFiles};
pub use transport::{cut_frames, Refusal};
pub use troupe_core as core;
pub use troupe_core::{
    Delivery, Event, ExitReason, MemberId, Ordering, QueryId, QueryQuorum, Stats, View, ViewId,
};
