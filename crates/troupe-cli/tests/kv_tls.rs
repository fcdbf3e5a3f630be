//! Client TLS of `troupe serve`: certificates from `troupe certs`, a
//! 3-member cluster with `--client-cert-auth`, etcdctl and the etcd-client
//! crate over https, and the clients that must be refused (no certificate,
//! another CA, an expired certificate, plaintext), each without disturbing
//! the cluster. etcdctl comes from the system's `etcd-client` package; run
//! elsewhere without it, its part says so and is skipped only if `CI` is
//! unset.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{eventually, Cluster};
use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

const CLUSTER: &str = "tlstest";

fn troupe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running troupe: {e}"))
}

fn certs(out: &Path, nodes: &str, extra: &[&str]) -> Output {
    let out = out.display().to_string();
    let mut args = vec![
        "certs",
        "--out",
        &out,
        "--cluster",
        CLUSTER,
        "--nodes",
        nodes,
    ];
    args.extend_from_slice(extra);
    troupe(&args)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn certs_writes_a_ca_and_private_keys_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let dir = tmp.path().join("pki");
    let o = certs(&dir, "a,b,c", &[]);
    assert!(o.status.success(), "troupe certs: {}", text(&o));
    for f in ["ca", "a", "b", "c", "client"] {
        let cert = read(&dir.join(format!("{f}.pem")));
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{f}.pem");
        let key = dir.join(format!("{f}-key.pem"));
        assert!(read(&key).contains("PRIVATE KEY"), "{f}-key.pem");
        let mode = std::fs::metadata(&key)
            .unwrap_or_else(|e| panic!("{e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}-key.pem mode {mode:o}");
    }
    // Not over a non-empty directory without --force.
    let again = certs(&dir, "a", &[]);
    assert!(!again.status.success());
    assert!(text(&again).contains("not empty"), "{}", text(&again));
    let forced = certs(&dir, "a", &["--force"]);
    assert!(forced.status.success(), "{}", text(&forced));
    // Names that cannot be file names, or that collide, are refused.
    for bad in ["a,a", "../x", "client", ""] {
        let o = certs(&tmp.path().join("bad"), bad, &[]);
        assert!(!o.status.success(), "--nodes '{bad}' was accepted");
    }
}

/// A certificate signed by the good CA (`ca-key.pem`), written as
/// `NAME.pem` / `NAME-key.pem`: valid for server and client authentication
/// at 127.0.0.1, with the URI `troupe://URI_CLUSTER/NAME`, expired if
/// `expired`. The issuer's subject is the one `troupe certs` documents:
/// `O=<cluster>, CN=troupe CA <cluster>`.
fn write_signed(pki: &Path, name: &str, uri_cluster: &str, expired: bool) {
    let ca_key = rcgen::KeyPair::from_pem(&read(&pki.join("ca-key.pem")))
        .unwrap_or_else(|e| panic!("ca-key.pem: {e}"));
    let mut ca = rcgen::CertificateParams::default();
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(rcgen::DnType::OrganizationName, CLUSTER);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("troupe CA {CLUSTER}"));
    let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, uri_cluster);
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    p.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let uri = format!("troupe://{uri_cluster}/{name}");
    p.subject_alt_names = vec![
        rcgen::SanType::IpAddress([127, 0, 0, 1].into()),
        rcgen::SanType::URI(uri.as_str().try_into().unwrap_or_else(|e| panic!("{e}"))),
    ];
    let now = time::OffsetDateTime::now_utc();
    if expired {
        p.not_before = now - time::Duration::days(30);
        p.not_after = now - time::Duration::days(1);
    } else {
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(30);
    }
    let cert = p
        .signed_by(&key, &issuer)
        .unwrap_or_else(|e| panic!("signing: {e}"));
    std::fs::write(pki.join(format!("{name}.pem")), cert.pem()).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(pki.join(format!("{name}-key.pem")), key.serialize_pem())
        .unwrap_or_else(|e| panic!("{e}"));
}

/// An expired client certificate of this cluster signed by the good CA,
/// written as `expired.pem` / `expired-key.pem`.
fn write_expired_client(pki: &Path) {
    write_signed(pki, "expired", CLUSTER, true);
}

/// Under `dir`: `pki/`, the cluster's CA with nodes m0, m1, m2 and a
/// client; `other/`, another CA with the same cluster name and node m0.
fn two_pkis(dir: &Path) -> (PathBuf, PathBuf) {
    let pki = dir.join("pki");
    let other = dir.join("other");
    for (out, nodes) in [(&pki, "m0,m1,m2"), (&other, "m0")] {
        let o = certs(out, nodes, &[]);
        assert!(o.status.success(), "troupe certs: {}", text(&o));
    }
    (pki, other)
}

/// A client's TLS material: CA to trust, and maybe a certificate.
struct Who {
    ca: PathBuf,
    id: Option<(PathBuf, PathBuf)>,
}

impl Who {
    fn new(ca: &Path, cert: Option<(&Path, &str)>) -> Who {
        Who {
            ca: ca.join("ca.pem"),
            id: cert.map(|(dir, name)| {
                (
                    dir.join(format!("{name}.pem")),
                    dir.join(format!("{name}-key.pem")),
                )
            }),
        }
    }

    fn options(&self) -> ConnectOptions {
        let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(read(&self.ca)));
        if let Some((c, k)) = &self.id {
            tls = tls.identity(Identity::from_pem(read(c), read(k)));
        }
        ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5))
            .with_tls(tls)
    }

    /// A put through `endpoints` (https URLs), as this client.
    async fn put(&self, endpoints: &[String], key: &str, value: &str) -> Result<(), String> {
        let mut c = etcd_client::Client::connect(endpoints, Some(self.options()))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        c.put(key, value, None)
            .await
            .map(|_| ())
            .map_err(|e| format!("put: {e}"))
    }

    async fn get(&self, endpoints: &[String], key: &str) -> Result<Option<String>, String> {
        let mut c = etcd_client::Client::connect(endpoints, Some(self.options()))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let r = c.get(key, None).await.map_err(|e| format!("get: {e}"))?;
        Ok(r.kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).to_string()))
    }
}

/// Every member's whole log.
fn all_logs(c: &Cluster) -> String {
    c.members
        .iter()
        .map(|m| std::fs::read_to_string(&m.log).unwrap_or_default())
        .collect()
}

fn have_etcdctl() -> bool {
    Command::new("etcdctl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn etcdctl(endpoints: &[String], tls: &[String], args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .arg("--dial-timeout=3s")
        .arg("--command-timeout=5s")
        .args(tls)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("etcdctl: {e}"))
}

/// Bytes a plaintext gRPC client would send; the member must close the
/// connection without answering them in the clear.
fn plaintext_is_refused(addr: &str) {
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0");
    let mut buf = [0u8; 256];
    // Closed (0 or an error), or at most a TLS alert record (type 21).
    match s.read(&mut buf) {
        Ok(0) | Err(_) => {}
        Ok(n) => assert_eq!(
            buf[0], 21,
            "a plaintext client got {n} bytes that are not a TLS alert"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tls_with_client_cert_auth_refuses_strangers() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (pki, other) = two_pkis(tmp.path());
    write_expired_client(&pki);

    let ca = pki.join("ca.pem").display().to_string();
    let pki2 = pki.clone();
    let mut cluster = Cluster::start_with(3, &["--client-cert-auth"], move |name| {
        vec![
            "--cert-file".into(),
            pki2.join(format!("{name}.pem")).display().to_string(),
            "--key-file".into(),
            pki2.join(format!("{name}-key.pem")).display().to_string(),
            "--trusted-ca-file".into(),
            ca.clone(),
        ]
    });
    let eps: Vec<String> = cluster
        .endpoints()
        .iter()
        .map(|e| format!("https://{e}"))
        .collect();

    let good = Who::new(&pki, Some((&pki, "client")));
    // A node certificate is a client certificate too.
    let node = Who::new(&pki, Some((&pki, "m1")));
    for ep in &eps {
        let one = vec![ep.clone()];
        let good = &good;
        eventually(
            Duration::from_secs(30),
            &format!("{ep} serves over TLS"),
            || {
                let one = one.clone();
                async move { good.put(&one, "__ready", "1").await.ok() }
            },
        )
        .await;
    }
    good.put(&eps, "k", "v1")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    assert_eq!(
        node.get(&eps[2..], "k")
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        Some("v1".into())
    );

    // Every refusal is followed by a put with the good certificate.
    let mut round = 0;
    let mut still_serving = |what: &str| {
        round += 1;
        let key = format!("after-{round}");
        let what = what.to_string();
        let good = &good;
        let eps = &eps;
        async move {
            good.put(eps, &key, &what)
                .await
                .unwrap_or_else(|e| panic!("after {what}, the good client: {e}"));
            assert_eq!(good.get(eps, &key).await.ok().flatten(), Some(what));
        }
    };

    let refusals = [
        ("no client certificate", Who::new(&pki, None)),
        (
            "a certificate from another CA",
            Who::new(&pki, Some((&other, "client"))),
        ),
        (
            "another CA's node certificate",
            Who::new(&pki, Some((&other, "m0"))),
        ),
        (
            "an expired certificate",
            Who::new(&pki, Some((&pki, "expired"))),
        ),
    ];
    for (what, who) in &refusals {
        let r = who.put(&eps, "stranger", what).await;
        assert!(r.is_err(), "a client with {what} could write");
        still_serving(what).await;
    }
    // Plaintext clients: etcd-client over http, and raw bytes.
    let plain_eps: Vec<String> = cluster
        .endpoints()
        .iter()
        .map(|e| format!("http://{e}"))
        .collect();
    let plain = async {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(3));
        let mut c = etcd_client::Client::connect(&plain_eps, Some(opts)).await?;
        c.put("stranger", "plaintext", None).await
    };
    assert!(plain.await.is_err(), "a plaintext client could write");
    plaintext_is_refused(&cluster.endpoints()[0]);
    still_serving("plaintext").await;
    assert_eq!(good.get(&eps, "stranger").await.ok().flatten(), None);

    // etcdctl, unchanged, with etcd's TLS flags.
    if have_etcdctl() {
        let flag = |f: &str, p: PathBuf| format!("--{f}={}", p.display());
        let with_cert = vec![
            flag("cacert", pki.join("ca.pem")),
            flag("cert", pki.join("client.pem")),
            flag("key", pki.join("client-key.pem")),
        ];
        let o = etcdctl(&eps, &with_cert, &["put", "ctl", "from-etcdctl"]);
        assert!(
            o.status.success(),
            "etcdctl put: {}\n{}",
            text(&o),
            cluster.logs()
        );
        let o = etcdctl(&eps, &with_cert, &["get", "ctl", "--print-value-only"]);
        assert!(o.status.success(), "etcdctl get: {}", text(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "from-etcdctl");
        assert_eq!(
            good.get(&eps, "ctl").await.ok().flatten(),
            Some("from-etcdctl".into())
        );
        // `endpoint status` dials each `https://` URL with the whole URL as
        // its :authority (see troupe-kv's authority.rs).
        let o = etcdctl(&eps, &with_cert, &["endpoint", "status", "-w", "json"]);
        assert!(o.status.success(), "etcdctl endpoint status: {}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        assert_eq!(v.as_array().map(Vec::len), Some(3), "{}", text(&o));
        let refused = [
            ("etcdctl without a certificate", vec![with_cert[0].clone()]),
            (
                "etcdctl with another CA's certificate",
                vec![
                    with_cert[0].clone(),
                    flag("cert", other.join("client.pem")),
                    flag("key", other.join("client-key.pem")),
                ],
            ),
            (
                "etcdctl with an expired certificate",
                vec![
                    with_cert[0].clone(),
                    flag("cert", pki.join("expired.pem")),
                    flag("key", pki.join("expired-key.pem")),
                ],
            ),
        ];
        for (what, tls) in &refused {
            let o = etcdctl(&eps[..1], tls, &["put", "stranger", what]);
            assert!(!o.status.success(), "{what} could write: {}", text(&o));
            still_serving(what).await;
        }
        let o = etcdctl(&eps[..1], &[], &["put", "stranger", "plaintext"]);
        assert!(!o.status.success(), "plaintext etcdctl could write");
        still_serving("plaintext etcdctl").await;
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "etcdctl is not installed, and CI needs it"
        );
        eprintln!("etcdctl is not installed: its part of this test is skipped");
    }

    // `troupe status` with the client certificate, and without.
    let joined = eps.join(",");
    let p = |f: &str| pki.join(f).display().to_string();
    let o = troupe(&[
        "status",
        "--endpoints",
        &joined,
        "--cacert",
        &p("ca.pem"),
        "--cert",
        &p("client.pem"),
        "--key",
        &p("client-key.pem"),
    ]);
    assert!(o.status.success(), "troupe status: {}", text(&o));
    assert_eq!(text(&o).matches("serving").count(), 3, "{}", text(&o));
    let o = troupe(&["status", "--endpoints", &joined, "--cacert", &p("ca.pem")]);
    assert!(
        !o.status.success(),
        "status without a certificate: {}",
        text(&o)
    );

    // The refusals are in the members' logs, with the reason.
    let logs = all_logs(&cluster);
    assert!(
        logs.contains("client refused at the TLS handshake"),
        "{logs}"
    );
    // The reasons: none given, another CA, expired.
    let lower = logs.to_lowercase();
    for reason in [
        "peer sent no certificates",
        "invalid peer certificate",
        "expired",
    ] {
        assert!(
            lower.contains(reason),
            "no refusal for '{reason}' in the logs:\n{logs}"
        );
    }
    assert!(
        !logs.contains("client traffic is unencrypted"),
        "a TLS member warned about plaintext clients"
    );
    still_serving("the end").await;
    cluster.kill_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_certificate_file_is_named_and_plaintext_must_be_asked_for() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let missing = tmp.path().join("missing.pem");
    let garbage = tmp.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap_or_else(|e| panic!("{e}"));
    let data = tmp.path().join("d").display().to_string();
    let port = common::free_port();
    let peer = common::free_port();
    let client_url = format!("http://127.0.0.1:{port}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let base = [
        "serve",
        "--data-dir",
        &data,
        "--listen-client-urls",
        &client_url,
        "--listen-peer-urls",
        &peer_url,
        "--insecure-plaintext",
    ];
    for (file, what) in [(&missing, "cannot read"), (&garbage, "no PEM certificate")] {
        let f = file.display().to_string();
        let mut args = base.to_vec();
        args.extend(["--cert-file", &f, "--key-file", &f]);
        let o = troupe(&args);
        assert!(!o.status.success());
        let t = text(&o);
        assert!(t.contains(&f) && t.contains(what), "{t}");
    }
    let o = troupe(&["serve", "--client-cert-auth", "--data-dir", &data]);
    assert!(!o.status.success(), "--client-cert-auth alone was accepted");

    // Plaintext only when asked for: without TLS flags or
    // --insecure-plaintext a member does not start, and says why.
    let o = troupe(&base[..base.len() - 1]);
    assert!(!o.status.success(), "a member started in plaintext unasked");
    let t = text(&o);
    assert!(
        t.contains("client (--cert-file")
            && t.contains("member-to-member (--peer-cert-file")
            && t.contains("--insecure-plaintext"),
        "{t}"
    );
    // Asked for (the harness passes --insecure-plaintext): it serves, with
    // a warning for each kind of traffic.
    let cluster = Cluster::start(1, &[]);
    cluster.wait_serving().await;
    let logs = all_logs(&cluster);
    for what in ["client", "member-to-member"] {
        assert!(
            logs.contains(&format!("{what} traffic is unencrypted")),
            "no warning for plaintext {what} traffic: {logs}"
        );
    }
}

/// Connects to a member's peer port as a stranger would: over TLS trusting
/// `ca`, with the certificate `id` (`dir`, `name`) if any, or in plaintext
/// with a few bytes. Returns the local address the member's log names it
/// by, once the member has closed the connection.
async fn stranger_at_peer_port(
    port: u16,
    ca: &Path,
    id: Option<(&Path, &str)>,
    tls: bool,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::{self, pki_types::ServerName, RootCertStore};
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("peer port {port}: {e}"));
    let local = tcp
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string();
    let mut buf = [0u8; 64];
    let limit = Duration::from_secs(15);
    if !tls {
        let mut tcp = tcp;
        let _ = tcp.write_all(&[20, 0, 0, 0, 1, 2, 3]).await;
        let closed = tokio::time::timeout(limit, tcp.read(&mut buf)).await;
        assert!(closed.is_ok(), "a plaintext stranger was not closed");
        return local;
    }
    let mut roots = RootCertStore::empty();
    for c in troupe::tls::load_certs("ca", &ca.join("ca.pem")).unwrap_or_else(|e| panic!("{e}")) {
        roots.add(c).unwrap_or_else(|e| panic!("{e}"));
    }
    let builder = rustls::ClientConfig::builder_with_provider(troupe::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("{e}"))
        .with_root_certificates(roots);
    let config = match id {
        Some((dir, name)) => {
            let cert = troupe::tls::load_certs("cert", &dir.join(format!("{name}.pem")))
                .unwrap_or_else(|e| panic!("{e}"));
            let key = troupe::tls::load_key("key", &dir.join(format!("{name}-key.pem")))
                .unwrap_or_else(|e| panic!("{e}"));
            builder
                .with_client_auth_cert(cert, key)
                .unwrap_or_else(|e| panic!("{e}"))
        }
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = ServerName::try_from("127.0.0.1").unwrap_or_else(|e| panic!("{e}"));
    // With TLS 1.3 the client may finish its side of the handshake before
    // the member has looked at its certificate: the refusal then comes as
    // an alert or a close on the first read.
    if let Ok(Ok(mut s)) = tokio::time::timeout(limit, connector.connect(name, tcp)).await {
        let _ = s.write_all(&[20, 0, 0, 0, 1, 2, 3]).await;
        let _ = s.flush().await;
        let closed = tokio::time::timeout(limit, s.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "a TLS stranger was not closed: {closed:?}"
        );
    }
    local
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_tls_refuses_strangers_before_reading_group_traffic() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (pki, other) = two_pkis(tmp.path());
    // Signed by the cluster's own CA, but wrong: expired, or for another
    // cluster that shares the CA.
    write_signed(&pki, "stale", CLUSTER, true);
    write_signed(&pki, "neighbour", "othercluster", false);

    let ca = pki.join("ca.pem").display().to_string();
    let pki2 = pki.clone();
    let mut cluster = Cluster::start_with(3, &[], move |name| {
        vec![
            "--peer-cert-file".into(),
            pki2.join(format!("{name}.pem")).display().to_string(),
            "--peer-key-file".into(),
            pki2.join(format!("{name}-key.pem")).display().to_string(),
            "--peer-trusted-ca-file".into(),
            ca.clone(),
            "--peer-client-cert-auth".into(),
        ]
    });
    let mut client = cluster.wait_serving().await;
    client
        .put("k", "over peer TLS", None)
        .await
        .unwrap_or_else(|e| panic!("put: {e}\n{}", cluster.logs()));

    let port = cluster.members[0].peer_port;
    // (what, certificate, over TLS, what the member's log says)
    type Stranger<'a> = (&'a str, Option<(&'a Path, &'a str)>, bool, &'a str);
    let strangers: [Stranger; 5] = [
        ("plaintext", None, false, "refused at the TLS handshake"),
        ("no certificate", None, true, "refused at the TLS handshake"),
        (
            "another CA's node certificate",
            Some((&other, "m0")),
            true,
            "refused at the TLS handshake",
        ),
        (
            "an expired certificate of the CA",
            Some((&pki, "stale")),
            true,
            "refused at the TLS handshake",
        ),
        (
            "a certificate of another cluster on the same CA",
            Some((&pki, "neighbour")),
            true,
            "certificate is for cluster 'othercluster', not 'tlstest'",
        ),
    ];
    for (i, (what, id, tls, why)) in strangers.into_iter().enumerate() {
        let local = stranger_at_peer_port(port, &pki, id, tls).await;
        // The member says why, naming the stranger's address.
        // (by its address only: field names may come with colour codes).
        let needle = local.clone();
        let line = eventually(
            Duration::from_secs(10),
            &format!("a log line about {what}"),
            || {
                let log = std::fs::read_to_string(&cluster.members[0].log).unwrap_or_default();
                let line = log
                    .lines()
                    .find(|l| l.contains(&needle))
                    .map(str::to_string);
                async move { line }
            },
        )
        .await;
        assert!(line.contains(why), "{what}: {line}");
        // The group still works: a write needs the other members.
        let key = format!("after-{i}");
        client
            .put(key.as_str(), what, None)
            .await
            .unwrap_or_else(|e| panic!("after {what}: {e}\n{}", cluster.logs()));
        let got = client
            .get(key.as_str(), None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            got.kvs().first().map(|kv| kv.value().to_vec()),
            Some(what.as_bytes().to_vec())
        );
    }
    let logs = all_logs(&cluster);
    assert!(logs.contains("member-to-member traffic over TLS"), "{logs}");
    assert!(
        !logs.contains("member-to-member traffic is unencrypted"),
        "a TLS member warned about plaintext peers"
    );
    // A member with a wrong peer file does not start, and says which file.
    let garbage = tmp.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap_or_else(|e| panic!("{e}"));
    let g = garbage.display().to_string();
    let data = tmp.path().join("d").display().to_string();
    let o = troupe(&[
        "serve",
        "--data-dir",
        &data,
        "--insecure-plaintext",
        "--peer-cert-file",
        &g,
        "--peer-key-file",
        &g,
        "--peer-trusted-ca-file",
        &pki.join("ca.pem").display().to_string(),
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains(&g) && text(&o).contains("--peer-cert-file"),
        "{}",
        text(&o)
    );
    cluster.kill_all();
}
