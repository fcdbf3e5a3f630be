//! Errors at the engine's boundary.

/// Why `send` refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The sender's unstable window is full: wait until messages become stable
    /// (the runtime turns this into async back-pressure) and retry.
    #[error("send window full: wait for stability and retry")]
    WouldBlock,
    /// Larger than `Config::message_bytes_max`.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The message's length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// Not a member (not joined yet, or excluded, or left).
    #[error("not a member of the group")]
    NotMember,
}

/// Why a query could not be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The query could not be sent.
    #[error(transparent)]
    Send(#[from] SendError),
    /// A count of zero, or more than the view's size.
    #[error("query quorum of {0} cannot be met by this view")]
    Quorum(u32),
}
