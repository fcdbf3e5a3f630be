//! Configuration of a group member: one struct, from a builder or a TOML file.
//!
//! Every field has a default, so a TOML file names only what it changes:
//!
//! ```toml
//! group = "inventory"
//! listen = "127.0.0.1:7001"
//! join = ["127.0.0.1:7002", "127.0.0.1:7003"]
//! node_id = 1
//! heartbeat_interval_ms = 50
//! suspect_timeout_ms = 1000
//!
//! [tls]
//! cert_file = "pki/a.pem"
//! key_file = "pki/a-key.pem"
//! trusted_ca_file = "pki/ca.pem"
//! ```

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::tls::TlsFiles;

/// Most bytes of a configuration file: a configuration is a few lines, and a
/// limit keeps a wrong path (a log file, a device) from being read whole.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1 << 20;

/// The runtime's retransmission-request interval, in milliseconds, shorter
/// than the engine's default (20 ms, which waits 10 ms in case reordering
/// fills a gap). Over this transport a sender's datagrams come in order on
/// one connection, so a gap is a loss: asking after 2 ms instead of 10 ms
/// kept `troupe bench` (total, 1 KiB, all sending) at 707k msgs/s per member
/// with 1% of datagrams lost, where 20 ms gave 390k, and at 563k instead of
/// 171k with 5%; with no loss no request is sent at all.
pub const NAK_INTERVAL_MS: u64 = 4;

/// How a member runs: its group, its addresses, and the engine's timing.
///
/// Durations are in milliseconds so that the TOML file stays plain. Fields
/// left `None` keep the engine's defaults (see `troupe_core::Config::new`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupConfig {
    /// The group's name. Members of different groups ignore each other.
    pub group: String,
    /// The socket address to listen on, e.g. `127.0.0.1:7001`; port 0 picks a
    /// free port.
    pub listen: String,
    /// The address the other members reach this one at, when it differs from
    /// the bound address (e.g. when listening on `0.0.0.0`).
    pub advertise: Option<String>,
    /// Addresses of members to join through. Empty: this member creates the
    /// group.
    pub join: Vec<String>,
    /// This member's node number. `None`: derived from the advertised address.
    pub node_id: Option<u64>,
    /// Heartbeat interval, in milliseconds.
    pub heartbeat_interval_ms: Option<u64>,
    /// Silence after which a member is suspected, in milliseconds.
    pub suspect_timeout_ms: Option<u64>,
    /// How long a view-change phase waits for answers, in milliseconds.
    pub flush_timeout_ms: Option<u64>,
    /// Interval between join attempts, in milliseconds.
    pub join_retry_interval_ms: Option<u64>,
    /// Shortest interval between two retransmission requests to the same
    /// sender, in milliseconds; the first goes out half of it after a gap
    /// is seen. `None`: [`NAK_INTERVAL_MS`].
    pub nak_interval_ms: Option<u64>,
    /// How long starting (or rejoining) waits for the first view, in milliseconds.
    pub join_timeout_ms: u64,
    /// Most unstable messages this member may have outstanding.
    pub window_msgs_max: Option<usize>,
    /// Most unstable payload bytes this member may have outstanding.
    pub window_bytes_max: Option<usize>,
    /// Largest datagram the engine builds.
    pub datagram_bytes_max: Option<usize>,
    /// Largest application message.
    pub message_bytes_max: Option<usize>,
    /// Most frames queued for one peer; beyond it the oldest are dropped
    /// (the engine retransmits what matters).
    pub peer_queue_frames_max: usize,
    /// Most bytes queued for one peer; beyond it the oldest frames are dropped.
    pub peer_queue_bytes_max: usize,
    /// The application keeps no replicated state: the runtime answers
    /// `StateNeeded` itself with an empty snapshot (and does not pass
    /// `StateNeeded` on). Otherwise the application must call
    /// `provide_state` for every `StateNeeded`, or joiners are never admitted.
    pub stateless: bool,
    /// Member-to-member TLS (a `[tls]` table with `cert_file`, `key_file`
    /// and `trusted_ca_file`). `None`: plaintext TCP, for a private network.
    pub tls: Option<TlsFiles>,
}

impl Default for GroupConfig {
    fn default() -> GroupConfig {
        GroupConfig {
            group: "troupe".to_string(),
            listen: "127.0.0.1:0".to_string(),
            advertise: None,
            join: Vec::new(),
            node_id: None,
            heartbeat_interval_ms: None,
            suspect_timeout_ms: None,
            flush_timeout_ms: None,
            join_retry_interval_ms: None,
            nak_interval_ms: None,
            join_timeout_ms: 30_000,
            window_msgs_max: None,
            window_bytes_max: None,
            datagram_bytes_max: None,
            message_bytes_max: None,
            peer_queue_frames_max: 4096,
            peer_queue_bytes_max: 16 << 20,
            stateless: false,
            tls: None,
        }
    }
}

impl GroupConfig {
    /// Parses a TOML document.
    pub fn from_toml(text: &str) -> Result<GroupConfig, ConfigError> {
        let cfg: GroupConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and parses a TOML file.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<GroupConfig, ConfigError> {
        let path = path.as_ref();
        let io = |e: std::io::Error| ConfigError::Io(format!("{}: {e}", path.display()));
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > CONFIG_FILE_BYTES_MAX {
            return Err(ConfigError::Io(format!(
                "{}: {len} bytes is more than a configuration file may hold ({CONFIG_FILE_BYTES_MAX})",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        GroupConfig::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse(m) => ConfigError::Parse(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Checks what can be checked without binding a socket; the engine's own
    /// rules are checked when the member starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.group.is_empty() {
            return Err(ConfigError::Invalid("group name is empty".into()));
        }
        if self.listen.is_empty() {
            return Err(ConfigError::Invalid("listen address is empty".into()));
        }
        if self.join_timeout_ms == 0 {
            return Err(ConfigError::Invalid("join_timeout_ms is zero".into()));
        }
        if self.peer_queue_frames_max == 0 || self.peer_queue_bytes_max == 0 {
            return Err(ConfigError::Invalid(
                "peer queue limits must be positive".into(),
            ));
        }
        Ok(())
    }

    /// The engine configuration for this member listening at `addr`.
    pub fn engine_config(&self, addr: &str) -> troupe_core::Config {
        let mut c =
            troupe_core::Config::new(self.group.clone(), bytes::Bytes::from(addr.to_string()));
        let ms = Duration::from_millis;
        if let Some(v) = self.heartbeat_interval_ms {
            c.heartbeat_interval = ms(v);
        }
        if let Some(v) = self.suspect_timeout_ms {
            c.suspect_timeout = ms(v);
        }
        if let Some(v) = self.flush_timeout_ms {
            c.flush_timeout = ms(v);
        }
        if let Some(v) = self.join_retry_interval_ms {
            c.join_retry_interval = ms(v);
        }
        c.nak_interval = ms(self.nak_interval_ms.unwrap_or(NAK_INTERVAL_MS));
        if let Some(v) = self.window_msgs_max {
            c.window_msgs_max = v;
        }
        if let Some(v) = self.window_bytes_max {
            c.window_bytes_max = v;
        }
        if let Some(v) = self.datagram_bytes_max {
            c.datagram_bytes_max = v;
        }
        if let Some(v) = self.message_bytes_max {
            c.message_bytes_max = v;
        }
        c
    }
}

/// A configuration that cannot be read or cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration: {0}")]
    Io(String),
    /// The text is not valid TOML for [`GroupConfig`].
    #[error("invalid configuration file: {0}")]
    Parse(String),
    /// A value, or a combination of values, that makes no sense.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_names_only_what_it_changes() {
        let c = GroupConfig::from_toml(
            "group = \"g\"\njoin = [\"127.0.0.1:1\"]\nsuspect_timeout_ms = 700\n",
        )
        .unwrap();
        assert_eq!(c.group, "g");
        assert_eq!(c.join, vec!["127.0.0.1:1".to_string()]);
        assert_eq!(
            c.engine_config("127.0.0.1:2").suspect_timeout,
            Duration::from_millis(700)
        );
        assert_eq!(c.listen, GroupConfig::default().listen);
    }

    #[test]
    fn the_tls_table_names_three_files_and_nothing_else() {
        let c = GroupConfig::from_toml(
            "[tls]\ncert_file = \"a.pem\"\nkey_file = \"a-key.pem\"\ntrusted_ca_file = \"ca.pem\"\n",
        )
        .unwrap();
        assert_eq!(
            c.tls.map(|t| t.trusted_ca_file),
            Some(std::path::PathBuf::from("ca.pem"))
        );
        assert!(matches!(
            GroupConfig::from_toml("[tls]\ncert_file = \"a.pem\"\n"),
            Err(ConfigError::Parse(_))
        ));
        assert!(matches!(
            GroupConfig::from_toml(
                "[tls]\ncert_file = \"a\"\nkey_file = \"b\"\ntrusted_ca_file = \"c\"\nverify = false\n"
            ),
            Err(ConfigError::Parse(_))
        ));
    }

    #[test]
    fn unknown_fields_and_garbage_are_refused_not_panicked_on() {
        assert!(matches!(
            GroupConfig::from_toml("grup = \"g\""),
            Err(ConfigError::Parse(_))
        ));
        assert!(matches!(
            GroupConfig::from_toml("\u{0}\u{ff}[[["),
            Err(ConfigError::Parse(_))
        ));
        assert!(matches!(
            GroupConfig::from_toml("group = \"\""),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            GroupConfig::from_toml_file("/nonexistent/troupe.toml"),
            Err(ConfigError::Io(_))
        ));
    }
}
