//! `troupe certs`: a development certificate authority and one certificate
//! per node, with rcgen (ring), for client TLS of `troupe serve` and for
//! member-to-member TLS (`--peer-*` flags, or `[tls]` in a member's TOML).
//!
//! What is written to `--out`:
//!
//! - `ca.pem`, `ca-key.pem`: the CA. Its subject is `O=<cluster>,
//!   CN=troupe CA <cluster>`, in that order.
//! - `<node>.pem`, `<node>-key.pem` for each node: valid for server and
//!   client authentication; subject `O=<cluster>, CN=<node>`; subject
//!   alternative names: every `--hosts` entry (IP address or DNS name), the
//!   node's name, and the URI `troupe://<cluster>/<node>`, so that a peer
//!   handshake can check the cluster as well as the CA.
//! - `client.pem`, `client-key.pem`: client authentication only, for tools
//!   such as `etcdctl --cert/--key`; URI `troupe://<cluster>/client`.
//!
//! Key files are created with mode 0600. These are development
//! certificates: the CA key sits next to the certificates it signed; a
//! production deployment keeps it elsewhere (or uses its own PKI).

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// `troupe certs --out DIR --cluster NAME --nodes a,b,c`.
#[derive(Args, Debug)]
pub struct CertsArgs {
    /// Directory to write the CA, node and client certificates to.
    #[arg(long)]
    out: PathBuf,
    /// The cluster's name, written into every certificate (organization and
    /// the URI `troupe://CLUSTER/NODE`).
    #[arg(long)]
    cluster: String,
    /// The nodes to make certificates for, comma-separated (e.g. a,b,c).
    #[arg(long, value_delimiter = ',', required = true)]
    nodes: Vec<String>,
    /// Host names and IP addresses the nodes are reached at (subject
    /// alternative names of every node certificate).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1,localhost")]
    hosts: Vec<String>,
    /// Days the certificates are valid for, from now.
    #[arg(long, default_value_t = 365)]
    days: u32,
    /// Overwrite the files in a non-empty --out directory.
    #[arg(long)]
    force: bool,
}

/// Names a certificate file can be made from without surprises.
fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        || name.starts_with('.')
    {
        bail!("{what} '{name}': use letters, digits, '-', '_' and '.' (not first)");
    }
    Ok(())
}

/// The CA's parameters. Its subject is fixed (`O=<cluster>, CN=troupe CA
/// <cluster>`) so that a certificate signed with `ca-key.pem` alone names
/// the right issuer.
fn ca_params(
    cluster: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::OrganizationName, cluster);
    p.distinguished_name
        .push(DnType::CommonName, format!("troupe CA {cluster}"));
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = not_before;
    p.not_after = not_after;
    p
}

/// One leaf certificate's parameters.
fn leaf_params(
    cluster: &str,
    name: &str,
    hosts: &[String],
    server: bool,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams> {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::OrganizationName, cluster);
    p.distinguished_name.push(DnType::CommonName, name);
    let mut sans = Vec::new();
    if server {
        for h in hosts.iter().map(|h| h.as_str()).chain([name]) {
            let san = match h.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    h.try_into()
                        .with_context(|| format!("'{h}' is not a valid DNS name"))?,
                ),
            };
            if !sans.contains(&san) {
                sans.push(san);
            }
        }
    }
    let uri = format!("troupe://{cluster}/{name}");
    sans.push(SanType::URI(
        uri.as_str()
            .try_into()
            .with_context(|| format!("'{uri}' is not a valid URI"))?,
    ));
    p.subject_alt_names = sans;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = if server {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    } else {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    };
    p.use_authority_key_identifier_extension = true;
    p.not_before = not_before;
    p.not_after = not_after;
    Ok(p)
}

/// Writes `text` to `path`; a key file (`secret`) gets mode 0600 even when
/// it replaces an existing file.
fn write_file(path: &Path, text: &str, secret: bool) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if secret {
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    if secret {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} private (mode 0600)", path.display()))?;
    }
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Runs `troupe certs`.
pub fn run(args: CertsArgs) -> Result<ExitCode> {
    check_name("--cluster", &args.cluster)?;
    if args.nodes.is_empty() {
        bail!("--nodes is empty");
    }
    for (i, n) in args.nodes.iter().enumerate() {
        check_name("node", n)?;
        if n == "ca" || n == "client" {
            bail!("node '{n}': the name is taken by {n}.pem");
        }
        if args.nodes[..i].contains(n) {
            bail!("--nodes names '{n}' twice");
        }
    }
    if args.days == 0 {
        bail!("--days must be at least 1");
    }
    let out = &args.out;
    match std::fs::read_dir(out) {
        Ok(mut entries) => {
            if entries.next().is_some() && !args.force {
                bail!(
                    "{} exists and is not empty: choose another --out or pass --force to overwrite",
                    out.display()
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", out.display())),
    }

    write_pki(out, &args.cluster, &args.nodes, &args.hosts, args.days)?;
    println!(
        "wrote ca.pem, {}.pem and client.pem (with their -key.pem) to {}, valid for {} days",
        args.nodes.join(".pem, "),
        out.display(),
        args.days
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes the CA, a certificate for each of `nodes` and the client's into
/// the existing directory `out` (the files listed at the top of this module).
pub fn write_pki(
    out: &Path,
    cluster: &str,
    nodes: &[String],
    hosts: &[String],
    days: u32,
) -> Result<()> {
    // An hour of slack for clocks slightly behind this one.
    let now = OffsetDateTime::now_utc();
    let not_before = now - Duration::hours(1);
    let not_after = now + Duration::days(i64::from(days));

    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let ca = ca_params(cluster, not_before, not_after);
    let ca_cert = ca
        .self_signed(&ca_key)
        .context("signing the CA certificate")?;
    let issuer = Issuer::from_params(&ca, &ca_key);
    write_file(&out.join("ca.pem"), &ca_cert.pem(), false)?;
    write_file(&out.join("ca-key.pem"), &ca_key.serialize_pem(), true)?;

    let leaves = nodes
        .iter()
        .map(|n| (n.as_str(), true))
        .chain([("client", false)]);
    for (name, server) in leaves {
        let key = KeyPair::generate().with_context(|| format!("generating {name}'s key"))?;
        let cert = leaf_params(cluster, name, hosts, server, not_before, not_after)?
            .signed_by(&key, &issuer)
            .with_context(|| format!("signing {name}'s certificate"))?;
        write_file(&out.join(format!("{name}.pem")), &cert.pem(), false)?;
        write_file(
            &out.join(format!("{name}-key.pem")),
            &key.serialize_pem(),
            true,
        )?;
    }
    Ok(())
}
