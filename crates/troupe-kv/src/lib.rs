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
    /// v3electionpb: the Election service.
    pub mod v3electionpb {
        tonic::include_proto!("v3electionpb");
    }
}

pub use config::{ConfigError, Peer, ServeConfig};

use std::net::SocketAddr;

use tokio::sync::mpsc;
use tracing::info;

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
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// Runs one member until the process is stopped: opens the data directory,
/// joins (or recovers) the cluster, and serves clients.
pub async fn serve(cfg: ServeConfig) -> Result<(), ServeError> {
    cfg.validate()?;
    let loaded = replica::load(&cfg)?;
    let addr: SocketAddr = cfg.listen_client.parse().map_err(|e| {
        ServeError::Config(ConfigError::Invalid(format!(
            "--listen-client-urls {}: {e}",
            cfg.listen_client
        )))
    })?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen {
            addr: cfg.listen_client.clone(),
            source,
        })?;
    let (tx, rx) = mpsc::channel(65_536);
    let server = server::Server::new(cfg.clone(), tx);
    info!(name = %cfg.name, clients = %cfg.listen_client, peers = %cfg.listen_peer, "troupe-kv member starting");
    let member = tokio::spawn(replica::run(cfg.clone(), loaded, rx));
    use pb::etcdserverpb::{
        cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
        maintenance_server::MaintenanceServer, watch_server::WatchServer,
    };
    let grpc = tonic::transport::Server::builder()
        .add_service(KvServer::new(server.clone()))
        .add_service(WatchServer::new(server.clone()))
        .add_service(LeaseServer::new(server.clone()))
        .add_service(ClusterServer::new(server.clone()))
        .add_service(MaintenanceServer::new(server.clone()))
        .add_service(pb::v3lockpb::lock_server::LockServer::new(server.clone()))
        .add_service(pb::v3electionpb::election_server::ElectionServer::new(
            server,
        ))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::select! {
        r = grpc => r?,
        _ = member => {}
    }
    Ok(())
}
