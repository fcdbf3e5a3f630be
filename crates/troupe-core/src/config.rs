//! Engine configuration: one struct, checked once by [`Config::validate`].

use std::time::Duration;

use crate::types::Addr;

/// Everything an engine can be tuned with. Start from [`Config::new`] and
/// change fields; [`crate::Engine::new`] validates.
#[derive(Clone, Debug)]
pub struct Config {
    /// The group's name. Members of different groups ignore each other.
    pub group: String,
    /// Where this member listens, in the driver's terms (opaque to the engine).
    pub addr: Addr,
    /// How often a member multicasts a heartbeat when it has nothing else to send.
    pub heartbeat_interval: Duration,
    /// Silence after which a member is suspected. Must exceed two heartbeat intervals.
    pub suspect_timeout: Duration,
    /// How long a view-change phase waits for answers before it suspects the
    /// silent members and starts over.
    pub flush_timeout: Duration,
    /// Longest delay between receiving a message and acknowledging it.
    pub ack_delay: Duration,
    /// Acknowledge at once after this many new messages (batched acknowledgements).
    pub ack_batch: u32,
    /// Minimum interval between two retransmission requests for the same sender.
    pub nak_interval: Duration,
    /// Interval between join attempts while not admitted.
    pub join_retry_interval: Duration,
    /// Most unstable messages a sender may have outstanding before `send`
    /// answers [`crate::SendError::WouldBlock`].
    pub window_msgs_max: usize,
    /// Most unstable payload bytes a sender may have outstanding (a single
    /// message larger than this is still accepted into an empty window).
    pub window_bytes_max: usize,
    /// Largest datagram the engine builds; small messages are packed up to this.
    pub datagram_bytes_max: usize,
    /// Largest application message accepted by `send`.
    pub message_bytes_max: usize,
    /// Size of a state-transfer chunk.
    pub state_chunk_bytes: usize,
    /// Deliberately broken behaviour, for proving the simulator's checkers.
    #[cfg(feature = "mutants")]
    pub mutant: Option<crate::Mutant>,
}

/// Wire and header overhead kept free in every datagram besides payload.
pub const DATAGRAM_OVERHEAD_BYTES: usize = 256;

impl Config {
    /// Defaults suited to a LAN: heartbeats every 50 ms, suspicion after 1 s.
    pub fn new(group: impl Into<String>, addr: Addr) -> Config {
        Config {
            group: group.into(),
            addr,
            heartbeat_interval: Duration::from_millis(50),
            suspect_timeout: Duration::from_millis(1000),
            flush_timeout: Duration::from_millis(1000),
            ack_delay: Duration::from_millis(2),
            ack_batch: 64,
            nak_interval: Duration::from_millis(20),
            join_retry_interval: Duration::from_millis(200),
            window_msgs_max: 8192,
            window_bytes_max: 64 << 20,
            datagram_bytes_max: 64 << 10,
            message_bytes_max: 256 << 20,
            state_chunk_bytes: 32 << 10,
            #[cfg(feature = "mutants")]
            mutant: None,
        }
    }

    /// Checks that the values make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.group.is_empty() {
            return Err(ConfigError::Invalid("group name is empty"));
        }
        if self.heartbeat_interval.is_zero() {
            return Err(ConfigError::Invalid("heartbeat_interval is zero"));
        }
        if self.suspect_timeout < self.heartbeat_interval * 2 {
            return Err(ConfigError::Invalid(
                "suspect_timeout must be at least twice heartbeat_interval",
            ));
        }
        if self.flush_timeout.is_zero() || self.nak_interval.is_zero() {
            return Err(ConfigError::Invalid(
                "flush_timeout and nak_interval must be positive",
            ));
        }
        if self.join_retry_interval.is_zero() {
            return Err(ConfigError::Invalid("join_retry_interval is zero"));
        }
        if self.ack_batch == 0 || self.window_msgs_max < 2 {
            return Err(ConfigError::Invalid(
                "ack_batch must be positive and window_msgs_max at least 2",
            ));
        }
        if self.datagram_bytes_max < 2 * DATAGRAM_OVERHEAD_BYTES {
            return Err(ConfigError::Invalid(
                "datagram_bytes_max is too small (at least 512)",
            ));
        }
        if self.state_chunk_bytes == 0
            || self.state_chunk_bytes + DATAGRAM_OVERHEAD_BYTES > self.datagram_bytes_max
        {
            return Err(ConfigError::Invalid(
                "state_chunk_bytes must fit in a datagram",
            ));
        }
        if self.message_bytes_max == 0 {
            return Err(ConfigError::Invalid("message_bytes_max is zero"));
        }
        Ok(())
    }

    /// Payload bytes carried by one fragment.
    pub fn fragment_bytes(&self) -> usize {
        self.datagram_bytes_max - DATAGRAM_OVERHEAD_BYTES
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A value, or a combination of values, that makes no sense.
    #[error("invalid configuration: {0}")]
    Invalid(&'static str),
}
