//! How a member of the service is configured: etcd's flags, parsed.

use std::path::PathBuf;
use std::time::Duration;

/// A configuration a person must fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Something is missing or malformed.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// One member of the cluster, as `--initial-cluster` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its `--name`.
    pub name: String,
    /// Where its group traffic goes (`host:port`, from its peer URL).
    pub addr: String,
}

/// TLS for client traffic, with etcd's flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTls {
    /// This member's certificate chain, PEM (`--cert-file`).
    pub cert_file: PathBuf,
    /// Its private key, PEM (`--key-file`).
    pub key_file: PathBuf,
    /// CA certificates client certificates are verified against, PEM
    /// (`--trusted-ca-file`). Without `client_cert_auth`, a client may
    /// present no certificate, but one it presents must verify.
    pub trusted_ca_file: Option<PathBuf>,
    /// Require a client certificate signed by `trusted_ca_file`
    /// (`--client-cert-auth`).
    pub client_cert_auth: bool,
}

/// Everything `troupe serve` needs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// This member's name (`--name`).
    pub name: String,
    /// Where the log and snapshots live (`--data-dir`).
    pub data_dir: PathBuf,
    /// Where clients connect (`--listen-client-urls`, `host:port`).
    pub listen_client: String,
    /// Client URLs other members and clients are told (`--advertise-client-urls`).
    pub advertise_client: Vec<String>,
    /// Where group traffic is accepted (`--listen-peer-urls`, `host:port`).
    pub listen_peer: String,
    /// This member's group address as the others reach it
    /// (`--initial-advertise-peer-urls`, `host:port`).
    pub advertise_peer: String,
    /// Every member, sorted by name (`--initial-cluster`).
    pub cluster: Vec<Peer>,
    /// Whether the data directory is expected to hold state already.
    pub existing: bool,
    /// fsync every group commit (true, the default) or leave it to the OS.
    pub fsync: bool,
    /// How long a silent member is waited for before it is excluded.
    pub suspect_timeout: Duration,
    /// Entries between two snapshots.
    pub snapshot_entries: u64,
    /// For tests of the checker: serve linearizable reads from local state
    /// without a barrier (a stale-read mutant). Never set in production.
    pub mutant_stale_reads: bool,
    /// Disaster recovery (`--force-new-cluster`): this member's state
    /// becomes the cluster's at the next recovery, without a majority.
    pub force_new_cluster: bool,
    /// TLS for client traffic; `None` serves clients in plaintext.
    pub client_tls: Option<ClientTls>,
    /// Member-to-member TLS (`--peer-cert-file`, `--peer-key-file`,
    /// `--peer-trusted-ca-file`); `None`: plaintext group traffic.
    pub peer_tls: Option<troupe::TlsFiles>,
    /// Plaintext, wherever TLS is not configured, was asked for explicitly
    /// (`--insecure-plaintext`); without it a member without TLS for
    /// clients and for members does not start. Plaintext is logged as a
    /// warning either way.
    pub insecure_plaintext: bool,
    /// Faults the member's transport injects (`--fault-file`, for tests);
    /// the default injects none.
    pub faults: troupe::FaultInjector,
}

/// Strips `http://` or `https://` and a trailing `/` from a URL.
pub fn host_port(url: &str) -> Result<String, ConfigError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || !rest.contains(':') {
        return Err(ConfigError::Invalid(format!(
            "'{url}' is not a URL with a host and a port"
        )));
    }
    Ok(rest.to_string())
}

/// Parses `--initial-cluster`: `name=url,name=url,...`.
pub fn parse_cluster(s: &str) -> Result<Vec<Peer>, ConfigError> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, url)) = part.split_once('=') else {
            return Err(ConfigError::Invalid(format!(
                "--initial-cluster entry '{part}' is not name=url"
            )));
        };
        if out.iter().any(|p: &Peer| p.name == name) {
            return Err(ConfigError::Invalid(format!(
                "--initial-cluster names '{name}' twice"
            )));
        }
        out.push(Peer {
            name: name.to_string(),
            addr: host_port(url)?,
        });
    }
    if out.is_empty() {
        return Err(ConfigError::Invalid("--initial-cluster is empty".into()));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

impl ServeConfig {
    /// Checks that this member is in the cluster with the address it advertises.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(t) = &self.client_tls {
            if t.client_cert_auth && t.trusted_ca_file.is_none() {
                return Err(ConfigError::Invalid(
                    "--client-cert-auth needs --trusted-ca-file to verify client certificates against"
                        .into(),
                ));
            }
        }
        // Plaintext only when asked for.
        let plain: Vec<&str> = [
            (
                self.client_tls.is_none(),
                "client (--cert-file, --key-file)",
            ),
            (
                self.peer_tls.is_none(),
                "member-to-member (--peer-cert-file, --peer-key-file, --peer-trusted-ca-file)",
            ),
        ]
        .into_iter()
        .filter_map(|(plain, what)| plain.then_some(what))
        .collect();
        if plain.is_empty() && self.insecure_plaintext {
            return Err(ConfigError::Invalid(
                "--insecure-plaintext contradicts TLS for both clients and members".into(),
            ));
        }
        if !plain.is_empty() && !self.insecure_plaintext {
            return Err(ConfigError::Invalid(format!(
                "{} traffic would be unencrypted and unauthenticated: give the TLS flags, or \
                 --insecure-plaintext to run without TLS on a private network",
                plain.join(" and ")
            )));
        }
        match self.cluster.iter().find(|p| p.name == self.name) {
            None => Err(ConfigError::Invalid(format!(
                "--name '{}' is not in --initial-cluster",
                self.name
            ))),
            Some(p) if p.addr != self.advertise_peer => Err(ConfigError::Invalid(format!(
                "--initial-cluster gives '{}' the peer address {}, but it advertises {}",
                self.name, p.addr, self.advertise_peer
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Members needed for anything to be acknowledged.
    pub fn majority(&self) -> usize {
        self.cluster.len() / 2 + 1
    }

    /// The name of the member at a group address.
    pub fn name_of(&self, addr: &[u8]) -> Option<&str> {
        self.cluster
            .iter()
            .find(|p| p.addr.as_bytes() == addr)
            .map(|p| p.name.as_str())
    }

    /// This member's rank in the cluster (by name).
    pub fn rank(&self) -> usize {
        self.cluster
            .iter()
            .position(|p| p.name == self.name)
            .unwrap_or(0)
    }

    /// The etcd cluster id: a hash of the members.
    pub fn cluster_id(&self) -> u64 {
        let mut s = String::new();
        for p in &self.cluster {
            s.push_str(&p.name);
            s.push('=');
            s.push_str(&p.addr);
            s.push(',');
        }
        id_hash(&s)
    }
}

/// The ids every response header carries, computed once: a header goes
/// with every response.
#[derive(Clone, Copy, Debug)]
pub struct HeaderIds {
    /// [`ServeConfig::cluster_id`].
    pub cluster_id: u64,
    /// [`member_id`] of this member's name.
    pub member_id: u64,
}

impl HeaderIds {
    /// The ids of the member `cfg` configures.
    pub fn of(cfg: &ServeConfig) -> HeaderIds {
        HeaderIds {
            cluster_id: cfg.cluster_id(),
            member_id: member_id(&cfg.name),
        }
    }

    /// A response header at revision `rev` in term (epoch) `term`.
    pub fn header(&self, rev: i64, term: u64) -> crate::pb::etcdserverpb::ResponseHeader {
        crate::pb::etcdserverpb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision: rev,
            raft_term: term,
        }
    }
}

/// The etcd member id of a name.
pub fn member_id(name: &str) -> u64 {
    id_hash(name)
}

/// FNV-1a: stable across runs and machines (ids are shown to clients).
fn id_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // etcd ids are non-zero and printed as hex; keep them positive as i64 too.
    (h >> 1).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_parses_and_rejects_garbage() {
        let c = parse_cluster("b=http://127.0.0.1:2,a=http://127.0.0.1:1/").unwrap_or_default();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].name, "a");
        assert_eq!(c[0].addr, "127.0.0.1:1");
        assert!(parse_cluster("a").is_err());
        assert!(parse_cluster("a=http://x:1,a=http://y:2").is_err());
        assert!(parse_cluster("a=nohost").is_err());
        assert!(parse_cluster("").is_err());
    }
}
