//! A cluster of `troupe serve` processes on 127.0.0.1 for the service's
//! integration tests: free ports, data directories in a temporary
//! directory, every process killed by pid when the cluster is dropped.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One member: its name, ports and process.
pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// Its `--fault-file` (empty: no faults).
    pub faults: PathBuf,
    pub child: Option<Child>,
}

impl Member {
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// The cluster.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub members: Vec<Member>,
    pub extra: Vec<String>,
    /// Extra `serve` flags for one member only (by index), after `extra`.
    pub member_extra: Vec<Vec<String>>,
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

impl Cluster {
    /// Starts `n` members (names m0, m1, ...) with extra `serve` flags.
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let members: Vec<Member> = (0..n)
            .map(|i| {
                let name = format!("m{i}");
                Member {
                    data_dir: dir.path().join(format!("{name}.data")),
                    log: dir.path().join(format!("{name}.log")),
                    faults: dir.path().join(format!("{name}.faults.toml")),
                    name,
                    client_port: free_port(),
                    peer_port: free_port(),
                    child: None,
                }
            })
            .collect();
        let mut c = Cluster {
            dir,
            members,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            member_extra: Vec::new(),
        };
        for i in 0..n {
            c.spawn(i);
        }
        c
    }

    /// Like [`Cluster::start`], with flags for each member as well, from
    /// its name (m0, m1, ...): for example its own certificate.
    pub fn start_with(n: usize, extra: &[&str], member: impl Fn(&str) -> Vec<String>) -> Cluster {
        let mut c = Cluster::start(0, extra);
        for i in 0..n {
            let name = format!("m{i}");
            c.member_extra.push(member(&name));
            c.members.push(Member {
                data_dir: c.dir.path().join(format!("{name}.data")),
                log: c.dir.path().join(format!("{name}.log")),
                faults: c.dir.path().join(format!("{name}.faults.toml")),
                name,
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
            });
        }
        for i in 0..n {
            c.spawn(i);
        }
        c
    }

    pub fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// Starts member `i` (again), on its data directory.
    pub fn spawn(&mut self, i: usize) {
        let initial = self.initial_cluster();
        let m = &mut self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .unwrap_or_else(|e| panic!("log file: {e}"));
        if !m.faults.exists() {
            write_atomically(&m.faults, "");
        }
        let child = Command::new(env!("CARGO_BIN_EXE_troupe"))
            .args([
                "serve",
                "--name",
                &m.name,
                "--data-dir",
                &m.data_dir.display().to_string(),
                "--listen-client-urls",
                &format!("http://127.0.0.1:{}", m.client_port),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer_port),
                "--initial-cluster",
                &initial,
                "--suspect-timeout-ms",
                "500",
                "--log",
                "info",
                "--fault-file",
                &m.faults.display().to_string(),
                // Where a test gives no TLS flags, plaintext (it says so).
                "--insecure-plaintext",
            ])
            .args(&self.extra)
            .args(self.member_extra.get(i).into_iter().flatten())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning troupe serve: {e}"));
        m.child = Some(child);
    }

    /// SIGKILL member `i` and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn signal(&self, i: usize, sig: nix::sys::signal::Signal) {
        if let Some(pid) = self.members[i].pid() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
        }
    }

    /// Replaces member `i`'s transport faults (TOML, see `troupe::Faults`);
    /// it applies them within 100 ms (wait [`FAULTS_APPLIED`] to be sure).
    pub fn set_faults(&self, i: usize, toml: &str) {
        write_atomically(&self.members[i].faults, toml);
    }

    /// Cuts member `i` off from every other member, both ways (clients
    /// still reach it).
    pub fn isolate(&self, i: usize) {
        let peer = |m: &Member| format!("\"127.0.0.1:{}\"", m.peer_port);
        let others: Vec<String> = (0..self.members.len())
            .filter(|j| *j != i)
            .map(|j| peer(&self.members[j]))
            .collect();
        self.set_faults(i, &format!("block = [{}]\n", others.join(", ")));
        for j in (0..self.members.len()).filter(|j| *j != i) {
            self.set_faults(j, &format!("block = [{}]\n", peer(&self.members[i])));
        }
    }

    /// Every member loses each datagram it sends with probability `p`.
    pub fn lossy(&self, p: f64) {
        for i in 0..self.members.len() {
            self.set_faults(i, &format!("drop = {p}\n"));
        }
    }

    /// Every member holds each datagram it sends `delay_ms` plus up to
    /// `jitter_ms` more.
    pub fn slow(&self, delay_ms: u64, jitter_ms: u64) {
        for i in 0..self.members.len() {
            self.set_faults(
                i,
                &format!("delay_ms = {delay_ms}\njitter_ms = {jitter_ms}\n"),
            );
        }
    }

    /// No faults anywhere.
    pub fn heal(&self) {
        for i in 0..self.members.len() {
            self.set_faults(i, "");
        }
    }

    pub fn kill_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }

    /// Every member's log, for a failing test's message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for m in &self.members {
            let text = std::fs::read_to_string(&m.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            out.push_str(&format!("--- {} ---\n", m.name));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Time after which a member has applied a change of its `--fault-file`
/// (it reads it every 100 ms).
pub const FAULTS_APPLIED: Duration = Duration::from_millis(250);

/// Writes `path` so that a reader sees the old text or the new, never part.
pub fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// `troupe status --json` of `endpoints` (comma-separated): one row per
/// endpoint; an error if it cannot run or fails.
pub fn status_rows(endpoints: &str) -> Result<Vec<serde_json::Value>, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args(["status", "--json", "--endpoints", endpoints])
        .output()
        .map_err(|e| format!("troupe status: {e}"))?;
    if !out.status.success() {
        return Err(format!("troupe status: {out:?}"));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_default())
        .collect())
}

/// Polls `f` until it returns Some, or panics after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > limit {
            panic!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An etcd-client connected to every member (it moves to another endpoint
/// when one is down), with short timeouts.
pub async fn client(endpoints: &[String]) -> etcd_client::Client {
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5));
    etcd_client::Client::connect(endpoints, Some(opts))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"))
}

/// Whether `ep` serves: a put through a client pinned to it (no moving to
/// another endpoint) succeeds within 2 s. Retried every 100 ms until
/// `limit`; the error names the member.
pub async fn serves(ep: &str, limit: Duration) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if let Some(mut c) = pinned(ep, Duration::from_secs(3)).await {
            let put = c.put("__ready", "1", None);
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), put).await {
                return Ok(());
            }
        }
        if start.elapsed() > limit {
            return Err(format!("{ep} does not serve within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether every member of `eps` serves (see [`serves`]), all within `limit`.
pub async fn all_serve(eps: &[String], limit: Duration) -> Result<(), String> {
    let start = Instant::now();
    for ep in eps {
        serves(ep, limit.saturating_sub(start.elapsed())).await?;
    }
    Ok(())
}

impl Cluster {
    /// Waits up to 30 s until every member serves (see [`all_serve`]), and
    /// returns a client connected to all of them; panics, with every
    /// member's log, if one does not.
    pub async fn wait_serving(&self) -> etcd_client::Client {
        let eps = self.endpoints();
        if let Err(e) = all_serve(&eps, Duration::from_secs(30)).await {
            panic!("{e}\n{}", self.logs());
        }
        client(&eps).await
    }

    /// SIGKILLs every member before reaping any, so that they die as close
    /// together as the signals can be sent.
    pub fn kill_all_at_once(&mut self) {
        for m in &self.members {
            if let Some(pid) = m.pid() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        self.kill_all();
    }

    /// Every member's whole log, for a failure that needs more than the tails.
    pub fn full_logs(&self) -> String {
        let mut out = String::new();
        for m in &self.members {
            out.push_str(&format!("--- {} ---\n", m.name));
            out.push_str(&std::fs::read_to_string(&m.log).unwrap_or_default());
        }
        out
    }
}

/// A small deterministic generator (xorshift64*), so that a failing run can
/// be repeated with its seed (`TROUPE_TEST_SEED`) without a dependency.
pub struct Rng(u64);

impl Rng {
    /// From `TROUPE_TEST_SEED` if set, else from the clock; prints the seed.
    pub fn from_env(what: &str) -> Rng {
        let seed = std::env::var("TROUPE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("{what}: seed {seed} (TROUPE_TEST_SEED={seed} repeats it)");
        Rng::new(seed)
    }

    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..hi` (`lo` if the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.next_u64() % (hi - lo)
        }
    }
}

/// The tokio runtime of a test: two worker threads.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

/// A client of one member only (no moving to another endpoint), each call
/// bounded by `op_timeout`; None if it cannot connect within 3 s.
pub async fn pinned(ep: &str, op_timeout: Duration) -> Option<etcd_client::Client> {
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(op_timeout);
    tokio::time::timeout(
        Duration::from_secs(3),
        etcd_client::Client::connect([ep.to_string()], Some(opts)),
    )
    .await
    .ok()?
    .ok()
}

/// The value of a test body run under a timeout, or a panic that says what
/// went wrong, with every member's log.
pub fn finished<T, E: std::fmt::Display>(
    r: Result<Result<T, E>, tokio::time::error::Elapsed>,
    cluster: &Cluster,
) -> T {
    match r {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("{e}\n{}", cluster.logs()),
        Err(_) => panic!("timed out\n{}", cluster.logs()),
    }
}
