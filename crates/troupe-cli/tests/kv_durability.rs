//! Durability of acknowledged writes in `troupe serve`: writers put unique
//! keys through every member; at a random moment every member is killed -9
//! at once and restarted on the same data directories; every put that was
//! acknowledged before the crash must be there afterwards, with its value.
//! One round kills and restarts a single member instead, while the writers
//! go on, and the restarted member must catch up. A second test replaces
//! members' disks (empty data directories with
//! `--initial-cluster-state existing`) and forces a cluster back from one
//! member with `--force-new-cluster`.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Cluster, Rng};
use etcd_client::{Client, GetOptions};

/// Concurrent writers, spread over the members.
const WRITERS: usize = 8;

/// Rounds; the one numbered `MINORITY_ROUND` kills one member only.
const ROUNDS: u64 = 6;
const MINORITY_ROUND: u64 = 2;

/// Entries between two snapshots (the default, 100 000, is never reached).
const SNAPSHOT_COUNT: &str = "200";

/// How long one put may take before it counts as failed.
const OP_TIMEOUT: Duration = Duration::from_secs(3);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The puts of one round: every key tried, and those acknowledged.
#[derive(Default)]
struct Writes {
    tried: Mutex<BTreeMap<String, String>>,
    acked: Mutex<BTreeMap<String, String>>,
}

/// Puts `r{round}/w{w}/{n}` through `ep` until `stop`; each key once.
async fn writer(round: u64, w: usize, ep: String, stop: Arc<AtomicBool>, writes: Arc<Writes>) {
    let mut c: Option<Client> = None;
    let mut n = 0u64;
    while !stop.load(AtomicOrdering::Relaxed) {
        let Some(cl) = c.as_mut() else {
            c = common::pinned(&ep, OP_TIMEOUT).await;
            if c.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            continue;
        };
        let key = format!("r{round}/w{w}/{n}");
        let value = format!("v{round}.{w}.{n}");
        n += 1;
        lock(&writes.tried).insert(key.clone(), value.clone());
        match tokio::time::timeout(OP_TIMEOUT, cl.put(key.clone(), value.clone(), None)).await {
            Ok(Ok(_)) => {
                lock(&writes.acked).insert(key, value);
            }
            _ => {
                c = None;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Every key and value under `r{round}/`, read through `c` (linearizable,
/// or serializable: what that member has applied).
async fn read_round(
    c: &mut Client,
    round: u64,
    serializable: bool,
) -> Result<BTreeMap<String, String>, etcd_client::Error> {
    let mut opts = GetOptions::new().with_prefix();
    if serializable {
        opts = opts.with_serializable();
    }
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        c.get(format!("r{round}/"), Some(opts)),
    )
    .await
    .map_err(|_| etcd_client::Error::InvalidArgs("read timed out".into()))??;
    Ok(r.kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).to_string(),
                String::from_utf8_lossy(kv.value()).to_string(),
            )
        })
        .collect())
}

/// What a round found, and what was wrong.
struct Tally {
    acked: usize,
    found: usize,
    unacked_present: usize,
    problems: Vec<String>,
}

fn compare(writes: &Writes, present: &BTreeMap<String, String>) -> Tally {
    let acked = lock(&writes.acked).clone();
    let tried = lock(&writes.tried).clone();
    let mut t = Tally {
        acked: acked.len(),
        found: 0,
        unacked_present: 0,
        problems: Vec::new(),
    };
    for (k, v) in &acked {
        match present.get(k) {
            Some(got) if got == v => t.found += 1,
            Some(got) => t
                .problems
                .push(format!("{k}: acknowledged {v:?}, found {got:?}")),
            None => t.problems.push(format!("{k}: acknowledged, lost")),
        }
    }
    for (k, v) in present {
        if acked.contains_key(k) {
            continue;
        }
        match tried.get(k) {
            Some(tv) if tv == v => t.unacked_present += 1,
            _ => t
                .problems
                .push(format!("{k} = {v:?} is present but was never put")),
        }
    }
    t
}

/// Reads the round's keys through any member, retrying a few seconds.
async fn read_after(eps: &[String], round: u64) -> Result<BTreeMap<String, String>, String> {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(20) {
        for ep in eps {
            if let Some(mut c) = common::pinned(ep, OP_TIMEOUT).await {
                match read_round(&mut c, round, false).await {
                    Ok(m) => return Ok(m),
                    Err(e) => last = e.to_string(),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "round {round}: no read of its keys succeeded: {last}"
    ))
}

#[test]
fn acknowledged_writes_survive_crashes() {
    let mut rng = Rng::from_env("acknowledged_writes_survive_crashes");
    // Snapshots every SNAPSHOT_COUNT entries, so that crashes land before,
    // during and after them and restarts read a snapshot and a log tail.
    let mut cluster = Cluster::start(3, &["--snapshot-count", SNAPSHOT_COUNT]);
    let eps = cluster.endpoints();
    let started = Instant::now();
    let mut problems: Vec<String> = Vec::new();
    let mut total_acked = 0;
    let run = common::rt().block_on(async {
        tokio::time::timeout(Duration::from_secs(170), async {
            if let Err(e) = common::all_serve(&eps, Duration::from_secs(30)).await {
                problems.push(format!("at the start: {e}"));
                return;
            }
            for round in 0..ROUNDS {
                let minority = round == MINORITY_ROUND;
                let writes = Arc::new(Writes::default());
                let stop = Arc::new(AtomicBool::new(false));
                let writers: Vec<_> = (0..WRITERS)
                    .map(|w| {
                        tokio::spawn(writer(
                            round,
                            w,
                            eps[w % eps.len()].clone(),
                            stop.clone(),
                            writes.clone(),
                        ))
                    })
                    .collect();
                let crash_at = Duration::from_millis(rng.range(500, 2000));
                tokio::time::sleep(crash_at).await;
                let what;
                let mut victim = None;
                if minority {
                    let i = rng.range(0, eps.len() as u64) as usize;
                    victim = Some(i);
                    what = format!("kill -9 m{i} at {crash_at:?}, restart, writers go on");
                    cluster.kill(i);
                    tokio::time::sleep(Duration::from_millis(rng.range(300, 1000))).await;
                    cluster.spawn(i);
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    stop.store(true, AtomicOrdering::Relaxed);
                    for w in writers {
                        let _ = w.await;
                    }
                } else {
                    what = format!("kill -9 all at {crash_at:?}");
                    // Killed first, the writers stopped after: every writer
                    // has a put in flight when the members die.
                    cluster.kill_all_at_once();
                    stop.store(true, AtomicOrdering::Relaxed);
                    for w in writers {
                        let _ = w.await;
                    }
                    // No writer is left to retry anything into the new run.
                    for i in 0..eps.len() {
                        cluster.spawn(i);
                    }
                }
                let t = Instant::now();
                if let Err(e) = common::all_serve(&eps, Duration::from_secs(30)).await {
                    problems.push(format!("round {round} ({what}): {e}"));
                    return;
                }
                let back = t.elapsed();
                let present = match read_after(&eps, round).await {
                    Ok(p) => p,
                    Err(e) => {
                        problems.push(e);
                        continue;
                    }
                };
                let tally = compare(&writes, &present);
                eprintln!(
                    "round {round} ({what}): {} acknowledged, {} found, {} unacknowledged but present; serving again after {back:?}",
                    tally.acked, tally.found, tally.unacked_present
                );
                total_acked += tally.acked;
                problems.extend(tally.problems.iter().take(20).map(|p| format!("round {round}: {p}")));
                if let Some(i) = victim {
                    // The restarted member catches up: what it has applied
                    // (a serializable read through it) holds every acked put.
                    let acked = lock(&writes.acked).clone();
                    let t = Instant::now();
                    let mut missing = acked.len();
                    while t.elapsed() < Duration::from_secs(30) {
                        if let Some(mut c) = common::pinned(&eps[i], OP_TIMEOUT).await {
                            if let Ok(m) = read_round(&mut c, round, true).await {
                                missing = acked.iter().filter(|(k, v)| m.get(*k) != Some(*v)).count();
                                if missing == 0 {
                                    break;
                                }
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    eprintln!(
                        "round {round}: restarted m{i} has {} of {} acknowledged puts after {:?}",
                        acked.len() - missing,
                        acked.len(),
                        t.elapsed()
                    );
                    if missing > 0 {
                        problems.push(format!(
                            "round {round}: restarted m{i} still misses {missing} acknowledged puts after 30 s"
                        ));
                    }
                }
            }
        })
        .await
    });
    eprintln!(
        "{ROUNDS} rounds, {total_acked} acknowledged puts, in {:?}",
        started.elapsed()
    );
    if run.is_err() {
        problems.push("the test did not end within 170 s".into());
    }
    if total_acked == 0 && problems.is_empty() {
        problems.push("no put was ever acknowledged".into());
    }
    // The restarts above must have read snapshots: each member has one.
    for m in &cluster.members {
        let snapshots = std::fs::read_dir(&m.data_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".snap"))
            .count();
        if snapshots == 0 {
            problems.push(format!("{} never wrote a snapshot", m.name));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n{}",
        problems.join("\n"),
        cluster.logs()
    );
}

/// The keys the replaced-disk test writes.
const DISK_KEYS: usize = 100;

/// Whether every one of the replaced-disk test's keys is at every member of
/// `eps`, with its value (a linearizable read through each).
async fn disk_keys_at(eps: &[String]) -> Result<(), String> {
    for ep in eps {
        let mut m = common::pinned(ep, OP_TIMEOUT)
            .await
            .ok_or_else(|| format!("cannot connect to {ep}"))?;
        let got = m
            .get("disk/", Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| format!("{ep}: get: {e}"))?;
        let kvs: BTreeMap<String, String> = got
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                )
            })
            .collect();
        for k in 0..DISK_KEYS {
            let key = format!("disk/{k:03}");
            if kvs.get(&key).map(String::as_str) != Some(format!("v{k}").as_str()) {
                return Err(format!("{ep}: {key} is {:?}", kvs.get(&key)));
            }
        }
    }
    Ok(())
}

/// Member `i`'s disk replaced: its data directory gone (it is down).
fn replace_disk(cluster: &Cluster, i: usize) {
    let dir = &cluster.members[i].data_dir;
    std::fs::remove_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
}

/// Replaced disks, as an operator replaces them: the member comes back on
/// an empty data directory with `--initial-cluster-state existing`.
///
/// 1. m2's disk is replaced while the whole cluster is down, and the writes
///    were committed by m0 and m2 while m1 was down. Counted in a recovery,
///    m2's empty log and m1's stale one would be a majority of reports
///    without a copy of the writes, and the cluster would come back without
///    them (it did: all 100 lost). m1 and m2 must not serve until m0 is
///    back; then every write must be at every member.
/// 2. m2 now counts like the others: m1 and m2 recover without m0.
/// 3. Two disks of three lost at once: nobody serves (m0 alone is no
///    majority of reports) until m0 is restarted with
///    `--force-new-cluster`; then every write is at every member.
/// 4. A disk replaced while the others serve: the member takes the state.
#[test]
fn a_member_on_a_replaced_disk_waits_for_a_member_that_holds_the_writes() {
    let existing = || vec!["--initial-cluster-state".to_string(), "existing".into()];
    let mut cluster = Cluster::start(3, &[]);
    let eps = cluster.endpoints();
    let r = common::rt().block_on(async {
        tokio::time::timeout(Duration::from_secs(60), async {
            cluster.wait_serving().await;
            // m1 misses the writes: they are committed by m0 and m2.
            cluster.kill(1);
            let mut c = common::client(&[eps[0].clone(), eps[2].clone()]).await;
            for k in 0..DISK_KEYS {
                c.put(format!("disk/{k:03}"), format!("v{k}"), None)
                    .await
                    .map_err(|e| format!("put {k}: {e}"))?;
            }
            Ok::<_, String>(())
        })
        .await
    });
    common::finished(r, &cluster);

    cluster.kill_all_at_once();
    replace_disk(&cluster, 2);
    cluster.member_extra = vec![vec![], vec![], existing()];
    cluster.spawn(1);
    cluster.spawn(2);
    let r = common::rt().block_on(async {
        tokio::time::timeout(Duration::from_secs(120), async {
            // A group of m1 and m2 forms within about two seconds here, and
            // would serve soon after if m2's empty log counted.
            for ep in &eps[1..] {
                if common::serves(ep, Duration::from_secs(6)).await.is_ok() {
                    return Err(format!(
                        "{ep} serves while the only members that held the writes are down"
                    ));
                }
            }
            // `troupe status` tells the operator why m2 waits.
            let row = common::eventually(Duration::from_secs(15), "m2 awaiting a state", || {
                let ep = eps[2].clone();
                async move {
                    let row = common::status_rows(&ep).ok()?.into_iter().next()?;
                    (row["phase"] == "recovering, awaiting a state").then_some(row)
                }
            })
            .await;
            if !row["errors"]
                .to_string()
                .contains("--initial-cluster-state existing")
            {
                return Err(format!("m2's status does not say why it waits: {row}"));
            }
            cluster.spawn(0);
            cluster.wait_serving().await;
            disk_keys_at(&eps).await
        })
        .await
    });
    common::finished(r, &cluster);

    // m2 now holds the cluster's state: with m0 down and the whole
    // cluster restarted, m1 and m2 are a majority of reports and serve.
    cluster.kill_all_at_once();
    cluster.spawn(1);
    cluster.spawn(2);
    let r = common::rt().block_on(async {
        tokio::time::timeout(Duration::from_secs(60), async {
            common::all_serve(&eps[1..], Duration::from_secs(30)).await
        })
        .await
    });
    common::finished(r, &cluster);

    // Two disks of three lost at once: m0 alone is no majority of reports,
    // and the cluster does not come back by itself. The operator forces it
    // from m0's state.
    cluster.kill_all_at_once();
    replace_disk(&cluster, 1);
    replace_disk(&cluster, 2);
    cluster.member_extra = vec![vec![], existing(), existing()];
    for i in 0..3 {
        cluster.spawn(i);
    }
    let r = common::rt().block_on(async {
        tokio::time::timeout(Duration::from_secs(120), async {
            for ep in &eps {
                if common::serves(ep, Duration::from_secs(4)).await.is_ok() {
                    return Err(format!("{ep} serves with a majority of the disks lost"));
                }
            }
            cluster.kill(0);
            cluster.member_extra[0] = vec!["--force-new-cluster".into()];
            cluster.spawn(0);
            cluster.wait_serving().await;
            disk_keys_at(&eps).await
        })
        .await
    });
    common::finished(r, &cluster);

    // The common case: a disk replaced while the others serve. The member
    // joins the serving group and takes its state.
    cluster.kill(1);
    replace_disk(&cluster, 1);
    cluster.member_extra = vec![vec![], existing(), existing()];
    cluster.spawn(1);
    let r = common::rt().block_on(async {
        tokio::time::timeout(Duration::from_secs(60), async {
            cluster.wait_serving().await;
            disk_keys_at(&eps).await
        })
        .await
    });
    common::finished(r, &cluster);
    let logs = cluster.full_logs();
    assert!(
        logs.contains("it takes the cluster's state before it counts in a recovery"),
        "the replaced member did not say that it waits for a state"
    );
    assert!(
        logs.contains("recovery forced (--force-new-cluster)"),
        "the forced recovery was not logged"
    );
    assert!(
        logs.contains("recovery waits for reports from a majority of the cluster"),
        "a recovery that could not finish did not say why"
    );
}
