//! `troupe serve`: one member of the coordination service, with etcd's
//! flag names, and `troupe status`: the cluster as an operator sees it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use troupe_kv::config::{host_port, parse_cluster};
use troupe_kv::pb::etcdserverpb::{
    cluster_client::ClusterClient, maintenance_client::MaintenanceClient, MemberListRequest,
    StatusRequest,
};
use troupe_kv::pb::troupepb::{admin_client::AdminClient, MemberStatusRequest};
use troupe_kv::{ClientTls, ServeConfig};

/// Whether this member starts a new cluster or joins one that exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClusterState {
    /// A new cluster: an empty data directory counts as this member's state
    /// (nothing written yet). A data directory that holds state is used as
    /// it is, whichever is given.
    New,
    /// An existing cluster: on an empty data directory (a member whose disk
    /// was replaced or lost, or one started after the others), the member
    /// takes the cluster's state before it counts in a recovery, so that
    /// its empty log cannot stand in for writes the cluster committed.
    Existing,
}

/// etcd's flags where they apply.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// This member's name; it must appear in --initial-cluster.
    #[arg(long, default_value = "default")]
    name: String,
    /// Where the log and snapshots live [default: <name>.troupe].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Where clients connect (the first URL is used).
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    listen_client_urls: String,
    /// Client URLs this member tells others about [default: the listen URL].
    #[arg(long)]
    advertise_client_urls: Option<String>,
    /// Where group traffic from other members arrives (the first URL is used).
    #[arg(long, default_value = "http://127.0.0.1:2380")]
    listen_peer_urls: String,
    /// This member's peer URL as the others reach it [default: the listen URL].
    #[arg(long)]
    initial_advertise_peer_urls: Option<String>,
    /// Every member: name=peer-url,... [default: this member alone].
    #[arg(long)]
    initial_cluster: Option<String>,
    /// new or existing.
    #[arg(long, value_enum, default_value = "new")]
    initial_cluster_state: ClusterState,
    /// Accepted for etcd compatibility; the cluster id comes from the members.
    #[arg(long)]
    initial_cluster_token: Option<String>,
    /// Entries between two snapshots (etcd 3.4's default too). A snapshot
    /// holds up the log while it is written: fewer of them cost less.
    #[arg(long, default_value_t = 100_000)]
    snapshot_count: u64,
    /// Threads that run the server's tasks (gRPC, the group, the state
    /// machine); 0 means one per core. The log is written on a thread of its
    /// own either way. With 1, every task runs on one thread and hands work
    /// on without waking another: cheaper when members share a machine's
    /// cores, as in `bench/etcd`.
    #[arg(long, default_value_t = 0)]
    worker_threads: usize,
    /// Do not fsync the log: a crash of the machine can lose acknowledged writes.
    #[arg(long)]
    unsafe_no_fsync: bool,
    /// How long a silent member is waited for before it is excluded (ms).
    #[arg(long, default_value_t = 1000)]
    suspect_timeout_ms: u64,
    /// Log filter (tracing's EnvFilter syntax; RUST_LOG wins).
    #[arg(long, default_value = "info")]
    log: String,
    /// Test only: answer linearizable reads from local state (a stale-read
    /// mutant that the linearizability checker must catch).
    #[arg(long, hide = true)]
    mutant_stale_reads: bool,
    /// Disaster recovery, when a majority of the members lost their disks:
    /// this member's state becomes the cluster's at the next recovery
    /// without a majority of reports, and writes that only the lost disks
    /// held are gone. Start the others on empty data directories with
    /// `--initial-cluster-state existing`, and restart this member without
    /// the flag once the cluster serves.
    #[arg(long)]
    force_new_cluster: bool,
    /// This member's certificate for client TLS, PEM (etcd's flag). With
    /// --key-file, clients must speak TLS and the client URLs are https.
    #[arg(long, requires = "key_file")]
    cert_file: Option<PathBuf>,
    /// The private key of --cert-file, PEM.
    #[arg(long, requires = "cert_file")]
    key_file: Option<PathBuf>,
    /// CA certificates that client certificates are verified against, PEM.
    /// Without --client-cert-auth a client may present no certificate.
    #[arg(long, requires = "cert_file")]
    trusted_ca_file: Option<PathBuf>,
    /// Require every client to present a certificate signed by
    /// --trusted-ca-file; others are refused at the TLS handshake.
    #[arg(long, requires = "trusted_ca_file")]
    client_cert_auth: bool,
    /// This member's certificate for member-to-member TLS, PEM (etcd's
    /// flag). It must carry the URI troupe://CLUSTER/NAME (`troupe certs`
    /// writes it): peers are accepted only with a certificate signed by
    /// --peer-trusted-ca-file that names the same CLUSTER.
    #[arg(long, requires_all = ["peer_key_file", "peer_trusted_ca_file"])]
    peer_cert_file: Option<PathBuf>,
    /// The private key of --peer-cert-file, PEM.
    #[arg(long, requires = "peer_cert_file")]
    peer_key_file: Option<PathBuf>,
    /// CA certificates that peers' certificates are verified against, PEM.
    #[arg(long, requires = "peer_cert_file")]
    peer_trusted_ca_file: Option<PathBuf>,
    /// Accepted for etcd's command lines: with --peer-cert-file, peers
    /// always authenticate each other with certificates.
    #[arg(long, requires = "peer_cert_file")]
    peer_client_cert_auth: bool,
    /// Allow plaintext where no TLS flags are given (clients, members or
    /// both), on a private network: without it, a member without TLS does
    /// not start. Plaintext is logged as a warning either way.
    #[arg(long)]
    insecure_plaintext: bool,
    /// For tests: transport faults from a TOML file, read again every 100 ms
    /// (`drop = 0.1` loses 10% of datagrams to peers; `block = ["host:port"]`
    /// sends nothing to those peers, and both ways make a partition;
    /// `delay_ms = 20` and `jitter_ms = 30` hold each datagram 20 to 50 ms).
    /// Write it atomically (rename over it).
    #[arg(long)]
    fault_file: Option<PathBuf>,
}

fn first_url(s: &str) -> Result<String> {
    let first = s.split(',').next().unwrap_or_default().trim();
    Ok(host_port(first)?)
}

fn config(a: &ServeArgs) -> Result<ServeConfig> {
    let listen_peer = first_url(&a.listen_peer_urls)?;
    let advertise_peer = match &a.initial_advertise_peer_urls {
        Some(u) => first_url(u)?,
        None => listen_peer.clone(),
    };
    let listen_client = first_url(&a.listen_client_urls)?;
    let client_tls = match (&a.cert_file, &a.key_file) {
        (Some(cert_file), Some(key_file)) => Some(ClientTls {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            trusted_ca_file: a.trusted_ca_file.clone(),
            client_cert_auth: a.client_cert_auth,
        }),
        _ => None,
    };
    let peer_tls = match (&a.peer_cert_file, &a.peer_key_file, &a.peer_trusted_ca_file) {
        (Some(cert_file), Some(key_file), Some(trusted_ca_file)) => Some(troupe::TlsFiles {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            trusted_ca_file: trusted_ca_file.clone(),
        }),
        _ => None,
    };
    if client_tls.is_none() && a.listen_client_urls.trim_start().starts_with("https://") {
        bail!("--listen-client-urls is https: pass --cert-file and --key-file");
    }
    // With TLS, the client URLs this member advertises are https, whatever
    // scheme the flags were written with.
    let advertise_client: Vec<String> = a
        .advertise_client_urls
        .as_deref()
        .unwrap_or(&a.listen_client_urls)
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .map(|s| match (&client_tls, s.strip_prefix("http://")) {
            (Some(_), Some(rest)) => format!("https://{rest}"),
            _ => s,
        })
        .collect();
    let cluster = match &a.initial_cluster {
        Some(c) => parse_cluster(c)?,
        None => parse_cluster(&format!("{}=http://{advertise_peer}", a.name))?,
    };
    let data_dir = a
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.troupe", a.name)));
    if a.snapshot_count == 0 {
        bail!("--snapshot-count must be at least 1");
    }
    let cfg = ServeConfig {
        name: a.name.clone(),
        data_dir,
        listen_client,
        advertise_client,
        listen_peer,
        advertise_peer,
        cluster,
        existing: a.initial_cluster_state == ClusterState::Existing,
        fsync: !a.unsafe_no_fsync,
        suspect_timeout: Duration::from_millis(a.suspect_timeout_ms.max(10)),
        snapshot_entries: a.snapshot_count,
        mutant_stale_reads: a.mutant_stale_reads,
        force_new_cluster: a.force_new_cluster,
        client_tls,
        peer_tls,
        insecure_plaintext: a.insecure_plaintext,
        faults: troupe::FaultInjector::new(),
    };
    cfg.validate()?;
    Ok(cfg)
}

/// Runs `troupe serve`.
pub fn run(args: ServeArgs) -> Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&args.log));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let mut cfg = config(&args)?;
    if args.unsafe_no_fsync {
        tracing::warn!("--unsafe-no-fsync: acknowledged writes can be lost if the machine crashes");
    }
    let rt = crate::runtime(args.worker_threads)?;
    rt.block_on(async {
        cfg.faults = crate::faults::from_flag(args.fault_file.as_deref())?;
        tokio::select! {
            r = troupe_kv::serve(cfg) => r.map_err(anyhow::Error::from),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `troupe status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Client URLs of the members to ask, comma-separated.
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    endpoints: String,
    /// One JSON object per member instead of a table.
    #[arg(long)]
    json: bool,
    /// CA certificate to verify the members' TLS certificates with (PEM);
    /// endpoints without a scheme are then https.
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// Client certificate to present (PEM), for --client-cert-auth.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
}

/// The client TLS configuration of `troupe status`, if any flag asks for TLS.
fn status_tls(args: &StatusArgs) -> Result<Option<tonic::transport::ClientTlsConfig>> {
    let read = |flag: &str, p: &PathBuf| {
        std::fs::read(p).with_context(|| format!("reading {flag} {}", p.display()))
    };
    if args.cacert.is_none() && args.cert.is_none() {
        return Ok(None);
    }
    let mut tls = tonic::transport::ClientTlsConfig::new();
    if let Some(ca) = &args.cacert {
        tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(read(
            "--cacert", ca,
        )?));
    }
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        tls = tls.identity(tonic::transport::Identity::from_pem(
            read("--cert", cert)?,
            read("--key", key)?,
        ));
    }
    Ok(Some(tls))
}

/// Runs `troupe status`.
pub fn status(args: StatusArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let tls = status_tls(&args)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    rt.block_on(async {
        let mut names = std::collections::HashMap::new();
        let mut rows = Vec::new();
        let mut failed = 0;
        for ep in args.endpoints.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let url = if ep.contains("://") { ep.to_string() } else { format!("{scheme}://{ep}") };
            let ask = async {
                let mut endpoint = tonic::transport::Endpoint::from_shared(url.clone())?;
                if let Some(tls) = &tls {
                    endpoint = endpoint.tls_config(tls.clone())?;
                }
                let channel = endpoint
                    .connect_timeout(Duration::from_secs(2))
                    .timeout(Duration::from_secs(3))
                    .connect()
                    .await?;
                let s = MaintenanceClient::new(channel.clone())
                    .status(StatusRequest {})
                    .await?
                    .into_inner();
                let m = ClusterClient::new(channel.clone())
                    .member_list(MemberListRequest { linearizable: false })
                    .await?
                    .into_inner();
                let a = AdminClient::new(channel)
                    .member_status(MemberStatusRequest {})
                    .await?
                    .into_inner();
                anyhow::Ok((s, m, a))
            };
            match tokio::time::timeout(Duration::from_secs(5), ask).await {
                Ok(Ok((s, m, a))) => {
                    for mem in &m.members {
                        names.insert(mem.id, mem.name.clone());
                    }
                    rows.push((ep.to_string(), Some((s, a))));
                }
                Ok(Err(e)) => {
                    failed += 1;
                    eprintln!("{ep}: {e:#}");
                    rows.push((ep.to_string(), None));
                }
                Err(_) => {
                    failed += 1;
                    eprintln!("{ep}: no answer within 5 s");
                    rows.push((ep.to_string(), None));
                }
            }
        }
        let name = |id: u64| names.get(&id).cloned().unwrap_or_else(|| format!("{id:x}"));
        if !args.json {
            println!(
                "{:<22} {:<8} {:<8} {:>5} {:>9} {:>9} {:>9} {:>11} {:>11}  STATE (VIEW)",
                "ENDPOINT", "MEMBER", "LEADER", "EPOCH", "INDEX", "COMMITTED", "REVISION", "LOG", "SNAPSHOT"
            );
        }
        for (ep, s) in rows {
            match s {
                Some((s, a)) => {
                    let h = s.header.unwrap_or_default();
                    let state = if s.errors.is_empty() { "serving".to_string() } else { s.errors.join("; ") };
                    if args.json {
                        println!(
                            "{}",
                            serde_json::json!({
                                "endpoint": ep, "member": name(h.member_id), "member_id": format!("{:x}", h.member_id),
                                "leader": if s.leader == 0 { String::new() } else { name(s.leader) },
                                "epoch": s.raft_term, "index": s.raft_index, "revision": h.revision,
                                "db_bytes": s.db_size, "errors": s.errors, "version": s.version,
                                "phase": a.phase, "view": a.view, "committed": a.committed_index,
                                "wal_bytes": a.wal_bytes, "wal_segments": a.wal_segments,
                                "snapshot_bytes": a.snapshot_bytes, "snapshot_index": a.snapshot_index,
                            })
                        );
                    } else {
                        println!(
                            "{:<22} {:<8} {:<8} {:>5} {:>9} {:>9} {:>9} {:>11} {:>11}  {} ({})",
                            ep,
                            name(h.member_id),
                            if s.leader == 0 { "-".into() } else { name(s.leader) },
                            s.raft_term,
                            s.raft_index,
                            a.committed_index,
                            h.revision,
                            format!("{} B/{}", a.wal_bytes, a.wal_segments),
                            format!("{} B@{}", a.snapshot_bytes, a.snapshot_index),
                            state,
                            a.view.join(",")
                        );
                    }
                }
                None if args.json => println!("{}", serde_json::json!({"endpoint": ep, "error": "unreachable"})),
                None => println!("{ep:<24} unreachable"),
            }
        }
        Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
    })
}
