//! `etcdctl` 3.4 from the system's `etcd-client` package, unchanged, against
//! a 3-member `troupe serve` cluster. `.ci/run` installs the package; run
//! elsewhere without it, the test says so and passes only if `CI` is unset.

mod common;

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Cluster;

fn have_etcdctl() -> bool {
    Command::new("etcdctl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

struct Ctl {
    endpoints: String,
}

impl Ctl {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("etcdctl");
        c.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints))
            .arg("--command-timeout=10s")
            .args(args);
        c
    }

    /// Runs etcdctl; panics with its output unless it succeeds.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = self.cmd(args);
        c.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap_or_else(|e| panic!("etcdctl: {e}"));
        if let (Some(text), Some(mut si)) = (stdin, child.stdin.take()) {
            use std::io::Write;
            let _ = si.write_all(text.as_bytes());
        }
        wait_bounded(child, Duration::from_secs(20))
    }

    /// Starts a long-running etcdctl (watch, lock, elect).
    fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.cmd(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("etcdctl: {e}"))
    }
}

fn wait_bounded(mut child: std::process::Child, limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("etcdctl output: {e}"))
}

/// Kills a long-running etcdctl and returns what it printed.
fn stop(mut child: std::process::Child) -> String {
    let _ = child.kill();
    let _ = child.wait();
    let mut s = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut s);
    }
    s
}

fn until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn etcdctl_works_unchanged() {
    if !have_etcdctl() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install etcdctl (Debian package etcd-client)"
        );
        eprintln!("etcdctl not installed; skipping (apt-get install etcd-client)");
        return;
    }
    let cluster = Cluster::start(3, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), cluster.wait_serving())
            .await
            .unwrap_or_else(|_| panic!("cluster never served\n{}", cluster.logs()))
    });
    // Endpoints as URLs, as etcd's documentation writes them.
    let ctl = Ctl {
        endpoints: cluster
            .endpoints()
            .iter()
            .map(|e| format!("http://{e}"))
            .collect::<Vec<_>>()
            .join(","),
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_all(&ctl)));
    if let Err(e) = result {
        eprintln!("{}", cluster.logs());
        std::panic::resume_unwind(e);
    }
}

fn run_all(ctl: &Ctl) {
    // put and get: prefix, range, revision, keys-only, limit.
    assert_eq!(ctl.ok(&["put", "k1", "v1"]).trim(), "OK");
    let rev1: i64 = {
        let j = ctl.ok(&["get", "k1", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap_or_default();
        v["kvs"][0]["mod_revision"].as_i64().unwrap_or(0)
    };
    assert!(rev1 > 0);
    ctl.ok(&["put", "k1", "v1b"]);
    ctl.ok(&["put", "k2", "v2"]);
    ctl.ok(&["put", "k3", "v3"]);
    assert_eq!(
        ctl.ok(&["get", "k", "--prefix", "--keys-only"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["k1", "k2", "k3"]
    );
    assert_eq!(
        ctl.ok(&["get", "k1", "k3"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["k1", "v1b", "k2", "v2"]
    );
    assert_eq!(
        ctl.ok(&["get", "k", "--prefix", "--limit", "1"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["k1", "v1b"]
    );
    assert_eq!(
        ctl.ok(&["get", "k1", &format!("--rev={rev1}"), "--print-value-only"])
            .trim(),
        "v1"
    );
    assert_eq!(
        ctl.ok(&["get", "k1", "--consistency=s", "--print-value-only"])
            .trim(),
        "v1b"
    );

    // del.
    assert_eq!(ctl.ok(&["del", "k2"]).trim(), "1");
    assert_eq!(ctl.ok(&["get", "k2"]).trim(), "");

    // txn, from stdin as etcdctl reads it.
    let out = ctl.run(
        &["txn"],
        Some("value(\"k1\") = \"v1b\"\n\nput k1 t1\n\nput k1 never\n\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("SUCCESS"));
    assert_eq!(ctl.ok(&["get", "k1", "--print-value-only"]).trim(), "t1");

    // watch a prefix from a past revision, then live.
    let w = ctl.spawn(&["watch", "k", "--prefix", &format!("--rev={rev1}")]);
    std::thread::sleep(Duration::from_millis(800));
    ctl.ok(&["put", "k9", "live"]);
    std::thread::sleep(Duration::from_millis(800));
    let seen = stop(w);
    for needle in ["PUT\nk1\nv1\n", "DELETE\nk2\n", "PUT\nk9\nlive\n"] {
        assert!(
            seen.contains(needle),
            "watch output lacks {needle:?}: {seen}"
        );
    }

    // leases: grant, keep-alive, timetolive, list, revoke.
    let grant = ctl.ok(&["lease", "grant", "60"]);
    let id = grant
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    assert!(grant.contains("granted with TTL(60s)"), "{grant}");
    ctl.ok(&["put", "leased", "x", &format!("--lease={id}")]);
    assert!(ctl
        .ok(&["lease", "keep-alive", "--once", &id])
        .contains("keepalived with TTL(60)"));
    let ttl = ctl.ok(&["lease", "timetolive", &id, "--keys"]);
    assert!(ttl.contains("attached keys([leased])"), "{ttl}");
    assert!(ctl.ok(&["lease", "list"]).contains(&id));
    assert!(ctl.ok(&["lease", "revoke", &id]).contains("revoked"));
    assert_eq!(ctl.ok(&["get", "leased"]).trim(), "");

    // lock: etcdctl's client-side recipe on plain KV. The second holder runs
    // its command only after the first lets go.
    let first = ctl.spawn(&["lock", "mylock"]);
    assert!(until(Duration::from_secs(10), || {
        ctl.ok(&["get", "mylock", "--prefix", "--keys-only"])
            .contains("mylock/")
    }));
    let second = ctl.spawn(&["lock", "mylock", "echo", "second-has-it"]);
    std::thread::sleep(Duration::from_millis(1000));
    let mut second = second;
    assert!(
        matches!(second.try_wait(), Ok(None)),
        "the second locker must wait"
    );
    stop(first);
    let out = wait_bounded(second, Duration::from_secs(15));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("second-has-it"),
        "{out:?}"
    );

    // elect: campaign, then observe the leader.
    let cand = ctl.spawn(&["elect", "myelection", "alice"]);
    assert!(
        until(Duration::from_secs(10), || {
            let o = ctl.run(&["elect", "-l", "myelection"], None);
            String::from_utf8_lossy(&o.stdout).contains("alice")
        }),
        "the elected value is observed"
    );
    stop(cand);

    // member list, endpoint status and health, compaction.
    assert_eq!(ctl.ok(&["member", "list"]).lines().count(), 3);
    // Membership is static: a change is refused with a message that says
    // so (not the generic "unknown method" of a service without it).
    for args in [
        &["member", "add", "m9", "--peer-urls=http://127.0.0.1:1"][..],
        &["member", "remove", "1"][..],
    ] {
        let out = ctl.run(args, None);
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && text.contains("membership is static"),
            "etcdctl {args:?}: {text}"
        );
    }
    // Every member's client URLs are known to each, so that a client given
    // one endpoint finds the rest (`--cluster` asks `member list` for them
    // and dials each `http://` URL with that URL as the HTTP/2 :authority,
    // which the server reads as host:port: see troupe-kv's authority.rs).
    let one = Ctl {
        endpoints: ctl
            .endpoints
            .split(',')
            .next()
            .unwrap_or_default()
            .to_string(),
    };
    let mut want: Vec<String> = ctl.endpoints.split(',').map(str::to_string).collect();
    want.sort();
    let all = one.ok(&["endpoint", "health", "--cluster", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&all).unwrap_or_default();
    let mut found: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["health"].as_bool() == Some(true))
        .filter_map(|e| e["endpoint"].as_str().map(str::to_string))
        .collect();
    found.sort();
    assert_eq!(found, want, "endpoint health --cluster: {all}");
    let all = one.ok(&["endpoint", "status", "--cluster", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&all).unwrap_or_default();
    let rows = v.as_array().cloned().unwrap_or_default();
    let mut found: Vec<String> = rows
        .iter()
        .filter_map(|e| e["Endpoint"].as_str().map(str::to_string))
        .collect();
    found.sort();
    assert_eq!(found, want, "endpoint status --cluster: {all}");
    // One leader, the same for every member, and it is one of them.
    let leaders: Vec<u64> = rows
        .iter()
        .filter_map(|e| e["Status"]["leader"].as_u64())
        .collect();
    let ids: Vec<u64> = rows
        .iter()
        .filter_map(|e| e["Status"]["header"]["member_id"].as_u64())
        .collect();
    assert_eq!(leaders.len(), 3, "{all}");
    assert!(leaders.iter().all(|l| *l == leaders[0]), "{all}");
    assert!(ids.contains(&leaders[0]), "{all}");
    let status = ctl.ok(&["endpoint", "status", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap_or_default();
    assert_eq!(v.as_array().map(Vec::len), Some(3), "{status}");
    // hashkv: every member hashes its own data; replicas that applied the
    // same commands agree at the same revision, and a write changes it.
    let hashes = |rev: i64| -> Option<Vec<u64>> {
        let o = one.run(
            &[
                "endpoint",
                "hashkv",
                "--cluster",
                &format!("--rev={rev}"),
                "-w",
                "json",
            ],
            None,
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        let h: Vec<u64> = v
            .as_array()?
            .iter()
            .filter_map(|e| e["HashKV"]["hash"].as_u64())
            .collect();
        (o.status.success() && h.len() == 3).then_some(h)
    };
    // The revision now (a linearizable get's header).
    let rev_now = || -> i64 {
        let j = ctl.ok(&["get", "k1", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap_or_default();
        v["header"]["revision"].as_i64().unwrap_or(0)
    };
    let agreed = |rev: i64| -> Option<u64> {
        let mut found = None;
        until(Duration::from_secs(10), || {
            found = hashes(rev)
                .filter(|h| h.iter().all(|x| *x == h[0]))
                .map(|h| h[0]);
            found.is_some()
        });
        found
    };
    let before_rev = rev_now();
    let before = agreed(before_rev);
    assert!(
        before.is_some(),
        "endpoint hashkv --cluster at {before_rev}: {:?}",
        hashes(before_rev)
    );
    ctl.ok(&["put", "hashed", "changes-the-hash"]);
    let after_rev = rev_now();
    let after = agreed(after_rev);
    assert!(after.is_some(), "endpoint hashkv --cluster at {after_rev}");
    assert_ne!(before, after, "a write changes the hash");
    assert_eq!(agreed(before_rev), before, "the past hashes as it did");
    // defrag: each member saves a snapshot now and cuts its log below it.
    let status = || common::status_rows(&ctl.endpoints).unwrap_or_else(|e| panic!("{e}"));
    let before = status();
    assert_eq!(before.len(), 3, "{before:?}");
    let out = one.ok(&["defrag", "--cluster"]);
    assert_eq!(out.matches("Finished defragmenting").count(), 3, "{out}");
    let after = status();
    for (b, a) in before.iter().zip(&after) {
        let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
        assert_eq!(a["member"], b["member"]);
        assert!(
            n(a, "snapshot_index") >= n(b, "index")
                && n(a, "snapshot_index") > n(b, "snapshot_index"),
            "defrag took no snapshot: before {b}, after {a}"
        );
    }
    // Endpoints written as host:port work as well.
    let bare = Ctl {
        endpoints: ctl.endpoints.replace("http://", ""),
    };
    let status = bare.ok(&["endpoint", "status", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap_or_default();
    assert_eq!(v.as_array().map(Vec::len), Some(3), "{status}");
    let health = ctl.run(&["endpoint", "health"], None);
    assert!(health.status.success(), "{health:?}");
    assert_eq!(
        String::from_utf8_lossy(&health.stdout)
            .matches("is healthy")
            .count()
            + String::from_utf8_lossy(&health.stderr)
                .matches("is healthy")
                .count(),
        3
    );
    let now = rev_now();
    assert!(ctl
        .ok(&["compaction", &now.to_string()])
        .contains("compacted revision"));
    let old = ctl.run(&["get", "k1", &format!("--rev={rev1}")], None);
    assert!(!old.status.success());
    assert!(String::from_utf8_lossy(&old.stderr).contains("required revision has been compacted"));
}
