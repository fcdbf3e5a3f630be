//! The runtime's error type.

use std::time::Duration;

use troupe_core::{ExitReason, QueryError, SendError};

use crate::config::ConfigError;

/// Why a runtime operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The engine refused its configuration.
    #[error("engine configuration: {0}")]
    Engine(#[from] troupe_core::ConfigError),
    /// A member-to-member TLS file cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// No view was installed in time (the contacts are unreachable, or do not
    /// admit this member).
    #[error("not admitted to the group within {0:?}")]
    JoinTimeout(Duration),
    /// The group did not install a view without this member in time (it may
    /// be on the minority side, where no view can be installed).
    #[error("the group did not let this member leave within {0:?}")]
    LeaveTimeout(Duration),
    /// The engine refused a message.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The engine refused a query.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// This member left or was excluded before the operation finished. For
    /// `execute` this means the outcome is unknown: the command may or may
    /// not have been applied by the group.
    #[error("this member is no longer in the group ({0:?})")]
    Exited(ExitReason),
    /// The group's driver task has stopped (the group was shut down).
    #[error("the group has shut down")]
    Closed,
}
