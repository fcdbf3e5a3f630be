//! Member-to-member TLS: every connection between members is mutually
//! authenticated against the cluster's CA, and the cluster's name is checked
//! before a byte of group traffic is read.
//!
//! A member's certificate carries its cluster's name as a URI subject
//! alternative name, `troupe://CLUSTER/NODE` (`troupe certs` writes it). A
//! member takes CLUSTER from its own certificate and accepts a peer only if
//! the peer's certificate, signed by the trusted CA, names the same
//! cluster: a certificate of another cluster that happens to share a CA is
//! refused as surely as one from another CA. Both ends check: the accepting
//! member checks the connecting one's client certificate, and the
//! connecting member checks the server certificate (its chain, its address
//! in the subject alternative names, and its cluster).
//!
//! rustls with the ring provider, TLS 1.2 and 1.3; no session tickets
//! (connections between members are long-lived).
//!
//! The PEM loaders here are also what `troupe serve` uses for client TLS, so
//! that every TLS file error names the file and the flag it came from.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio_rustls::rustls::{
    self,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName},
    server::WebPkiClientVerifier,
    RootCertStore,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The scheme of the URI that names a certificate's cluster and node.
pub const CLUSTER_URI_SCHEME: &str = "troupe://";

/// The files of member-to-member TLS (in a TOML configuration, the `[tls]`
/// table; for `troupe serve`, etcd's `--peer-cert-file`,
/// `--peer-key-file` and `--peer-trusted-ca-file`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// This member's certificate chain, PEM. Its first certificate must
    /// carry the URI `troupe://CLUSTER/NODE`.
    pub cert_file: PathBuf,
    /// Its private key, PEM.
    pub key_file: PathBuf,
    /// The CA certificates peers' certificates must be signed by, PEM.
    pub trusted_ca_file: PathBuf,
}

impl TlsFiles {
    /// Loads and checks every file (as starting a member would), and
    /// returns the cluster name of this member's certificate. Errors name
    /// the files by `names` (e.g. the flags they were given with), in the
    /// order cert, key, CA.
    pub fn check(&self, names: [&str; 3]) -> Result<String, TlsError> {
        PeerTls::load(self, names).map(|t| t.cluster)
    }
}

/// How a TOML configuration names the files, for errors.
pub const TOML_NAMES: [&str; 3] = ["tls.cert_file", "tls.key_file", "tls.trusted_ca_file"];

/// A TLS file, or what is in it, that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TLS: {}: {reason}", file.display())]
pub struct TlsError {
    /// The file at fault.
    pub file: PathBuf,
    /// Why, naming the setting or flag the file was given by.
    pub reason: String,
}

impl TlsError {
    /// An error about `file`.
    pub fn new(file: &Path, reason: impl Into<String>) -> TlsError {
        TlsError {
            file: file.to_path_buf(),
            reason: reason.into(),
        }
    }
}

fn read_file(what: &str, file: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(file)
        .map_err(|e| TlsError::new(file, format!("cannot read the {what} file: {e}")))
}

/// The certificates of a PEM file; `what` (a flag or setting name) goes
/// into the error.
pub fn load_certs(what: &str, file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(what, file)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(file, format!("{what}: not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::new(
            file,
            format!("{what}: no PEM certificate in it"),
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn load_key(what: &str, file: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file(what, file)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| TlsError::new(file, format!("{what}: no PEM private key in it: {e}")))
}

/// The CA certificates of a PEM file, as trust roots.
pub fn load_roots(what: &str, file: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(what, file)? {
        roots.add(c).map_err(|e| {
            TlsError::new(file, format!("{what}: not a usable CA certificate: {e}"))
        })?;
    }
    Ok(roots)
}

/// The ring crypto provider every TLS configuration of troupe uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The cluster a DER certificate names in its `troupe://CLUSTER/NODE` URI,
/// if it has exactly one such URI.
pub fn cluster_of(cert: &[u8]) -> Option<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(cert).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut found = None;
    for name in &san.value.general_names {
        if let GeneralName::URI(uri) = name {
            if let Some(rest) = uri.strip_prefix(CLUSTER_URI_SCHEME) {
                let cluster = rest.split('/').next().unwrap_or_default();
                if cluster.is_empty() || found.is_some() {
                    return None;
                }
                found = Some(cluster.to_string());
            }
        }
    }
    found
}

/// Member-to-member TLS, loaded: what the transport accepts and connects with.
pub(crate) struct PeerTls {
    pub acceptor: TlsAcceptor,
    pub connector: TlsConnector,
    /// The cluster every peer's certificate must name.
    pub cluster: String,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl PeerTls {
    /// Reads the files and builds both ends' configurations; errors name
    /// the files by `names` (cert, key, CA).
    pub fn load(files: &TlsFiles, names: [&str; 3]) -> Result<PeerTls, TlsError> {
        let [cert_name, key_name, ca_name] = names;
        let provider = provider();
        let certs = load_certs(cert_name, &files.cert_file)?;
        let key = load_key(key_name, &files.key_file)?;
        let cluster = cluster_of(&certs[0]).ok_or_else(|| {
            TlsError::new(
                &files.cert_file,
                format!(
                    "{cert_name}: the certificate names no cluster: it needs exactly one \
                     subject alternative name URI troupe://CLUSTER/NODE (`troupe certs` \
                     writes one)"
                ),
            )
        })?;
        let roots = Arc::new(load_roots(ca_name, &files.trusted_ca_file)?);
        let ca_error = |e: &dyn std::fmt::Display| {
            TlsError::new(&files.trusted_ca_file, format!("{ca_name}: {e}"))
        };
        let key_error = |e: rustls::Error| {
            TlsError::new(
                &files.cert_file,
                format!(
                    "{cert_name} with {key_name} {}: {e}",
                    files.key_file.display()
                ),
            )
        };
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| ca_error(&e))?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ca_error(&e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(key_error)?;
        server.send_tls13_tickets = 0;
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ca_error(&e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(key_error)?;
        client.resumption = rustls::client::Resumption::disabled();
        Ok(PeerTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            cluster,
        })
    }

    /// Checks that a verified peer's certificate names this cluster.
    pub fn check_cluster(&self, certs: Option<&[CertificateDer<'_>]>) -> Result<(), String> {
        let Some(first) = certs.and_then(|c| c.first()) else {
            return Err("no certificate".to_string());
        };
        match cluster_of(first) {
            Some(c) if c == self.cluster => Ok(()),
            Some(c) => Err(format!(
                "its certificate is for cluster '{c}', not '{}'",
                self.cluster
            )),
            None => Err("its certificate names no troupe://CLUSTER/NODE".to_string()),
        }
    }
}

/// The name a peer's certificate must be valid for: the host part of its
/// address (an IP address or a DNS name).
pub(crate) fn server_name(addr: &str) -> Option<ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((h, port)) if port.parse::<u16>().is_ok() => h,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_host_part() {
        assert_eq!(
            server_name("127.0.0.1:7001"),
            ServerName::try_from("127.0.0.1").ok()
        );
        assert_eq!(server_name("[::1]:7001"), ServerName::try_from("::1").ok());
        assert_eq!(
            server_name("node-a.example:7001"),
            ServerName::try_from("node-a.example").ok()
        );
        assert_eq!(server_name("bad host:1"), None);
    }

    #[test]
    fn garbage_is_no_certificate_and_missing_files_are_named() {
        assert_eq!(cluster_of(b"not a certificate"), None);
        assert_eq!(cluster_of(&[]), None);
        let e = TlsFiles {
            cert_file: "/nonexistent/a.pem".into(),
            key_file: "/nonexistent/a-key.pem".into(),
            trusted_ca_file: "/nonexistent/ca.pem".into(),
        }
        .check(TOML_NAMES)
        .unwrap_err();
        assert_eq!(e.file, PathBuf::from("/nonexistent/a.pem"));
        assert!(e.to_string().contains("tls.cert_file"), "{e}");
    }
}
