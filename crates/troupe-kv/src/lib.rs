//! troupe-kv: a durable coordination service on troupe groups, spoken to
//! with the etcd v3 gRPC API so that etcd's clients work against it
//! unchanged.
//!
//! - [`mvcc`]: the multi-version key-value store (revisions, ranges,
//!   compaction, watch history).
//! - [`machine`]: the replicated state machine (commands, leases, txns).
//! - [`replica`]: one member: the group, the write-ahead log, durability
//!   and recovery after a restart of the whole cluster.
//! - [`server`]: the gRPC services (KV, Watch, Lease, Cluster, Maintenance,
//!   Lock, Election).
//! - [`config`]: etcd's flags.
//!
//! Client traffic is served over TLS when [`ServeConfig::client_tls`] is
//! set (rustls with the ring provider; see [`client_tls_config`]), with
//! client certificates verified against a trusted CA when asked for.
//! Member-to-member traffic is not encrypted yet.

mod authority;
pub mod config;
pub mod machine;
pub mod mvcc;
pub mod replica;
pub mod server;
pub mod wire;

/// The etcd v3 protocol, generated from `proto/`.
pub mod pb {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    /// mvccpb: keys, values and watch events.
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    /// etcdserverpb: the KV, Watch, Lease, Cluster and Maintenance services.
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    /// v3lockpb: the Lock service.
    pub mod v3lockpb {
        tonic::include_proto!("v3lockpb");
    }
    /// troupepb: troupe's own operator status of a member.
    pub mod troupepb {
        tonic::include_proto!("troupepb");
    }
    /// v3electionpb: the Election service.
    pub mod v3electionpb {
        tonic::include_proto!("v3electionpb");
    }
}

pub use config::{ClientTls, ConfigError, Peer, ServeConfig};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use authority::AuthorityFix;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::rustls::{self, server::WebPkiClientVerifier};
use tokio_rustls::{server::TlsStream, TlsAcceptor};
use tracing::{info, warn};
use troupe::tls;

/// Shortest lease granted, in seconds: shorter TTLs are raised to it, as
/// etcd raises them to its minimum.
pub const LEASE_TTL_MIN: i64 = 2;

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory cannot be used.
    #[error(transparent)]
    Load(#[from] replica::LoadError),
    /// The client address cannot be served.
    #[error("cannot serve clients on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// A TLS file or setting cannot be used (the error names the file and
    /// the flag).
    #[error(transparent)]
    Tls(#[from] troupe::TlsError),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// TLS handshakes in progress at once; connections beyond are closed at
/// once (a flood of connections cannot pile up handshake state).
pub const MAX_TLS_HANDSHAKES: usize = 256;

/// The flags member-to-member TLS files are given with, for errors.
pub const PEER_TLS_FLAGS: [&str; 3] = [
    "--peer-cert-file",
    "--peer-key-file",
    "--peer-trusted-ca-file",
];

/// Time a client has to complete its TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The rustls configuration for client traffic (ring provider, TLS 1.2
/// and 1.3, ALPN `h2`): the member's certificate and key, and, with a
/// trusted CA, a verifier of client certificates that requires one when
/// `client_cert_auth` is set. Each file is named in the error it causes.
pub fn client_tls_config(t: &ClientTls) -> Result<rustls::ServerConfig, ServeError> {
    let provider = tls::provider();
    let certs = tls::load_certs("--cert-file", &t.cert_file)?;
    let key = tls::load_key("--key-file", &t.key_file)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| troupe::TlsError::new(&t.cert_file, e.to_string()))?;
    let builder = match &t.trusted_ca_file {
        Some(ca) => {
            let roots = tls::load_roots("--trusted-ca-file", ca)?;
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if t.client_cert_auth {
                v
            } else {
                v.allow_unauthenticated()
            };
            let v = v
                .build()
                .map_err(|e| troupe::TlsError::new(ca, format!("--trusted-ca-file: {e}")))?;
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_single_cert(certs, key).map_err(|e| {
        troupe::TlsError::new(
            &t.cert_file,
            format!("--cert-file with --key-file {}: {e}", t.key_file.display()),
        )
    })?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// Accepts TCP connections and completes their TLS handshakes, at most
/// [`MAX_TLS_HANDSHAKES`] at once and each within
/// [`TLS_HANDSHAKE_TIMEOUT`]; a client refused at the handshake (no
/// certificate, another CA, expired, plaintext) is logged with its address
/// and does not disturb the others.
fn tls_incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
) -> tokio_stream::wrappers::ReceiverStream<
    Result<AuthorityFix<TlsStream<TcpStream>>, std::io::Error>,
> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let handshakes = Arc::new(Semaphore::new(MAX_TLS_HANDSHAKES));
        while !tx.is_closed() {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: wait, then go on.
                    warn!(error = %e, "accepting a client connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                warn!(%peer, "client refused: {MAX_TLS_HANDSHAKES} TLS handshakes already in progress");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(AuthorityFix::new(tls))).await;
                    }
                    Ok(Err(e)) => warn!(%peer, error = %e, "client refused at the TLS handshake"),
                    Err(_) => {
                        warn!(%peer, "client refused: no TLS handshake within {TLS_HANDSHAKE_TIMEOUT:?}")
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Runs one member until the process is stopped: opens the data directory,
/// joins (or recovers) the cluster, and serves clients.
pub async fn serve(cfg: ServeConfig) -> Result<(), ServeError> {
    cfg.validate()?;
    // Read the certificates before anything else, so that a wrong file is
    // reported before the member joins its group.
    let tls = match &cfg.client_tls {
        Some(t) => Some(TlsAcceptor::from(Arc::new(client_tls_config(t)?))),
        None => None,
    };
    let peer_cluster = match &cfg.peer_tls {
        Some(files) => Some(files.check(PEER_TLS_FLAGS)?),
        None => None,
    };
    let loaded = replica::load(&cfg)?;
    let addr: SocketAddr = cfg.listen_client.parse().map_err(|e| {
        ServeError::Config(ConfigError::Invalid(format!(
            "--listen-client-urls {}: {e}",
            cfg.listen_client
        )))
    })?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen {
            addr: cfg.listen_client.clone(),
            source,
        })?;
    let (tx, rx) = mpsc::channel(65_536);
    let server = server::Server::new(cfg.clone(), tx);
    info!(name = %cfg.name, clients = %cfg.listen_client, peers = %cfg.listen_peer, tls = tls.is_some(), "troupe-kv member starting");
    match &cfg.client_tls {
        Some(t) => info!(
            client_cert_auth = t.client_cert_auth,
            "client traffic is served over TLS"
        ),
        None => warn!(
            "client traffic is unencrypted and unauthenticated (--insecure-plaintext): anyone \
             who reaches the client port can read and write; give --cert-file and --key-file \
             (with --trusted-ca-file and --client-cert-auth to require client certificates)"
        ),
    }
    match &peer_cluster {
        Some(cluster) => info!(
            %cluster,
            "member-to-member traffic over TLS: peers must hold a certificate of this cluster"
        ),
        None => warn!(
            "member-to-member traffic is unencrypted and unauthenticated (--insecure-plaintext): \
             anyone who reaches the peer port can read, inject or disrupt; give --peer-cert-file, \
             --peer-key-file and --peer-trusted-ca-file"
        ),
    }
    let member = tokio::spawn(replica::run(cfg.clone(), loaded, rx));
    use pb::etcdserverpb::{
        cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
        maintenance_server::MaintenanceServer, watch_server::WatchServer,
    };
    let router = tonic::transport::Server::builder()
        .add_service(KvServer::new(server.clone()))
        .add_service(WatchServer::new(server.clone()))
        .add_service(LeaseServer::new(server.clone()))
        .add_service(ClusterServer::new(server.clone()))
        .add_service(MaintenanceServer::new(server.clone()))
        .add_service(pb::troupepb::admin_server::AdminServer::new(server.clone()))
        .add_service(pb::v3lockpb::lock_server::LockServer::new(server.clone()))
        .add_service(pb::v3electionpb::election_server::ElectionServer::new(
            server,
        ));
    let grpc = async {
        match tls {
            Some(acceptor) => {
                router
                    .serve_with_incoming(tls_incoming(listener, acceptor))
                    .await
            }
            None => {
                // No Nagle: a small response must not wait for the
                // client's delayed acknowledgement (it cost 40-50 ms per
                // sequential request); the TLS path sets it per connection.
                // Every client connection is read through `AuthorityFix`
                // (etcdctl's `http://` authorities; see authority.rs).
                let incoming =
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                let incoming = tokio_stream::StreamExt::map(incoming, |c| c.map(AuthorityFix::new));
                router.serve_with_incoming(incoming).await
            }
        }
    };
    tokio::select! {
        r = grpc => r?,
        _ = member => {}
    }
    Ok(())
}
