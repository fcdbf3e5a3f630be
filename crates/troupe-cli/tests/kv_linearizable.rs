//! Linearizability of `troupe serve` under faults, checked with
//! `troupe_sim::check::linearizable`: clients pinned to one member each (so
//! that a member that lags is what its client sees) put, get and delete a
//! few keys while members are killed -9 and restarted, paused with
//! SIGSTOP, cut off from each other (a partition made by the transport's
//! fault injection, `--fault-file`: the cut-off member's clients still
//! reach it), made to lose datagrams, and made to delay them. Every call
//! is recorded with its interval on one monotonic clock; the history must
//! be linearizable. A second test runs the same recorder against the
//! `--mutant-stale-reads` server with scenarios that make a paused or a
//! cut-off member answer reads from its old state, and the checker must
//! reject each: proof that the first test can fail.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Cluster, Rng};
use etcd_client::Client;
use nix::sys::signal::Signal;
use troupe_sim::check::linearizable::{check_kv, KvOp, KvOutcome, Operation, Verdict};

/// How long one call may take before it counts as failed (outcome unknown).
const OP_TIMEOUT: Duration = Duration::from_secs(4);

/// How long the clients run in the first test.
const RUN: Duration = Duration::from_secs(28);

/// The nemesis starts no new fault after this point of the run, so that the
/// run ends with every member back.
const NEMESIS_UNTIL: Duration = Duration::from_secs(24);

/// The history: every call, with times in ns since the test started.
struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Operation>>,
    /// What the nemesis did and when, for a failure's message.
    events: Mutex<Vec<String>>,
}

impl Recorder {
    fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn event(&self, what: String) {
        let line = format!("{:>8.3}s {what}", self.now() as f64 / 1e9);
        eprintln!("nemesis: {line}");
        lock(&self.events).push(line);
    }

    fn history(&self) -> Vec<Operation> {
        lock(&self.ops).clone()
    }

    fn events(&self) -> String {
        lock(&self.events).join("\n")
    }

    /// Runs `op` through `c` and records it. Any error or timeout makes the
    /// outcome unknown, and the client is dropped (a new one is connected
    /// for the next call).
    async fn call(&self, client_id: u64, c: &mut Option<Client>, op: KvOp) -> KvOutcome {
        let Some(cl) = c.as_mut() else {
            return KvOutcome::Unknown;
        };
        let call = self.now();
        let res = tokio::time::timeout(OP_TIMEOUT, exec(cl, &op)).await;
        let ret = self.now();
        let outcome = match res {
            Ok(Ok(o)) => o,
            _ => {
                *c = None;
                KvOutcome::Unknown
            }
        };
        lock(&self.ops).push(Operation {
            client: client_id,
            call,
            ret: Some(ret),
            op,
            outcome: outcome.clone(),
        });
        outcome
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One call, as the etcd API answers it.
async fn exec(c: &mut Client, op: &KvOp) -> Result<KvOutcome, etcd_client::Error> {
    Ok(match op {
        KvOp::Put { key, value } => {
            c.put(key.clone(), value.clone(), None).await?;
            KvOutcome::Put
        }
        KvOp::Get { key } => {
            let r = c.get(key.clone(), None).await?;
            KvOutcome::Get(r.kvs().first().map(|kv| kv.value().to_vec()))
        }
        KvOp::Delete { key } => {
            let r = c.delete(key.clone(), None).await?;
            KvOutcome::Delete {
                deleted: r.deleted() > 0,
            }
        }
    })
}

fn key(k: u64) -> Vec<u8> {
    format!("k{k}").into_bytes()
}

/// A client pinned to `ep`: random puts (unique values), gets and deletes
/// over 5 keys until `stop`.
async fn client_loop(
    id: u64,
    ep: String,
    seed: u64,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
) {
    let mut rng = Rng::new(seed);
    let mut c = common::pinned(&ep, OP_TIMEOUT).await;
    let mut n = 0u64;
    while !stop.load(AtomicOrdering::Relaxed) {
        if c.is_none() {
            c = common::pinned(&ep, OP_TIMEOUT).await;
            if c.is_none() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        let k = key(rng.range(0, 5));
        let op = match rng.range(0, 100) {
            0..=44 => {
                n += 1;
                KvOp::Put {
                    key: k,
                    value: format!("c{id}-{n}").into_bytes(),
                }
            }
            45..=89 => KvOp::Get { key: k },
            _ => KvOp::Delete { key: k },
        };
        let out = rec.call(id, &mut c, op).await;
        ops.fetch_add(1, AtomicOrdering::Relaxed);
        if out == KvOutcome::Unknown {
            // Do not pile up calls of unknown outcome on a member that is down.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// One fault at a time, in turn: kill -9 and restart a member; pause it
/// (SIGSTOP) and resume it; cut it off from the other members while its
/// clients still reach it, then heal; make every member lose 30% of the
/// datagrams it sends; make every member hold each datagram 10 to 50 ms.
/// After each, waits for the member to serve again
/// before the next (a majority is always up otherwise).
async fn nemesis(
    cluster: Arc<Mutex<Cluster>>,
    eps: Vec<String>,
    seed: u64,
    rec: Arc<Recorder>,
) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let mut round = rng.range(0, 5);
    while rec.start.elapsed() < NEMESIS_UNTIL {
        tokio::time::sleep(Duration::from_millis(rng.range(1000, 2500))).await;
        let i = rng.range(0, eps.len() as u64) as usize;
        match round % 5 {
            0 => {
                rec.event(format!("kill -9 m{i}"));
                lock(&cluster).kill(i);
                tokio::time::sleep(Duration::from_millis(rng.range(300, 2000))).await;
                rec.event(format!("restart m{i}"));
                lock(&cluster).spawn(i);
            }
            1 => {
                rec.event(format!("SIGSTOP m{i}"));
                lock(&cluster).signal(i, Signal::SIGSTOP);
                tokio::time::sleep(Duration::from_millis(rng.range(1000, 3000))).await;
                rec.event(format!("SIGCONT m{i}"));
                lock(&cluster).signal(i, Signal::SIGCONT);
            }
            2 => {
                rec.event(format!("partition m{i} from the others"));
                lock(&cluster).isolate(i);
                tokio::time::sleep(common::FAULTS_APPLIED).await;
                tokio::time::sleep(Duration::from_millis(rng.range(1000, 3000))).await;
                rec.event("heal".into());
                lock(&cluster).heal();
            }
            3 => {
                rec.event("every member delays what it sends by 10-50 ms".into());
                lock(&cluster).slow(10, 40);
                tokio::time::sleep(common::FAULTS_APPLIED).await;
                tokio::time::sleep(Duration::from_millis(rng.range(1000, 3000))).await;
                rec.event("heal".into());
                lock(&cluster).heal();
            }
            _ => {
                rec.event("every member loses 30% of what it sends".into());
                lock(&cluster).lossy(0.3);
                tokio::time::sleep(common::FAULTS_APPLIED).await;
                tokio::time::sleep(Duration::from_millis(rng.range(1000, 3000))).await;
                rec.event("heal".into());
                lock(&cluster).heal();
            }
        }
        common::all_serve(&eps, Duration::from_secs(30)).await?;
        rec.event("every member serves".into());
        round += 1;
    }
    Ok(())
}

/// Counts for the report.
fn summary(h: &[Operation]) -> String {
    let unknown = h.iter().filter(|o| o.outcome == KvOutcome::Unknown).count();
    let unknown_writes = h
        .iter()
        .filter(|o| o.outcome == KvOutcome::Unknown && !matches!(o.op, KvOp::Get { .. }))
        .count();
    let reads = h
        .iter()
        .filter(|o| matches!(o.op, KvOp::Get { .. }))
        .count();
    format!(
        "{} operations ({reads} gets), {unknown} of unknown outcome ({unknown_writes} writes)",
        h.len()
    )
}

#[test]
fn kv_is_linearizable_under_kills_pauses_partitions_and_loss() {
    let mut rng = Rng::from_env("kv_is_linearizable_under_kills_pauses_partitions_and_loss");
    let cluster = Arc::new(Mutex::new(Cluster::start(3, &[])));
    let eps = lock(&cluster).endpoints();
    let rec = Recorder::new();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let nemesis_seed = rng.next_u64();
    let client_seeds: Vec<u64> = (0..6).map(|_| rng.next_u64()).collect();

    let run = common::rt().block_on({
        let (cluster, eps, rec, stop, count) = (
            cluster.clone(),
            eps.clone(),
            rec.clone(),
            stop.clone(),
            count.clone(),
        );
        async move {
            tokio::time::timeout(Duration::from_secs(100), async move {
                common::all_serve(&eps, Duration::from_secs(30)).await?;
                rec.event("every member serves; clients start".into());
                let start = Instant::now();
                let clients: Vec<_> = client_seeds
                    .iter()
                    .enumerate()
                    .map(|(i, seed)| {
                        tokio::spawn(client_loop(
                            i as u64,
                            eps[i % eps.len()].clone(),
                            *seed,
                            rec.clone(),
                            stop.clone(),
                            count.clone(),
                        ))
                    })
                    .collect();
                let nem = nemesis(cluster, eps.clone(), nemesis_seed, rec.clone()).await;
                if let Some(left) = RUN.checked_sub(start.elapsed()) {
                    tokio::time::sleep(left).await;
                }
                stop.store(true, AtomicOrdering::Relaxed);
                for c in clients {
                    let _ = c.await;
                }
                nem
            })
            .await
        }
    });
    for i in 0..eps.len() {
        lock(&cluster).signal(i, Signal::SIGCONT);
    }
    let fail = |what: String| -> ! {
        let c = lock(&cluster);
        panic!(
            "{what}\nnemesis:\n{}\n{}\n{}",
            rec.events(),
            summary(&rec.history()),
            c.logs()
        )
    };
    // The history is checked even when the run failed: what it says about
    // the calls made so far is part of the failure's report.
    let history = rec.history();
    let t = Instant::now();
    let verdict = check_kv(&history);
    eprintln!(
        "checked {} in {:?}: {verdict}",
        summary(&history),
        t.elapsed(),
    );
    match run {
        Err(_) => fail(format!("the run did not end within 100 s; {verdict}")),
        Ok(Err(e)) => fail(format!("{e}; {verdict}")),
        Ok(Ok(())) => {}
    }
    let acked = history
        .iter()
        .filter(|o| o.outcome != KvOutcome::Unknown)
        .count();
    assert!(
        acked > 100,
        "too few answered calls to mean anything: {}",
        summary(&history)
    );
    if !verdict.is_linearizable() {
        fail(format!("not linearizable: {verdict}"));
    }
}

/// The stale-read mutant, and two scenarios that show its stale reads. In
/// one, pause a member, write a new value through another (it is answered
/// once the paused member is excluded), call a read through the paused
/// member after that write returned, and resume the member: the mutant
/// answers from its old state before it learns it was excluded. In the
/// other, the member is cut off by a partition instead, and the mutant
/// answers its clients from the old state while the partition lasts. Each
/// scenario alone must be caught; the message of a failure says which
/// rounds were stale.
#[test]
fn stale_read_mutant_is_caught() {
    let cluster = Arc::new(Mutex::new(Cluster::start(3, &["--mutant-stale-reads"])));
    let eps = lock(&cluster).endpoints();
    let rec = Recorder::new();

    let run = common::rt().block_on({
        let (cluster, eps, rec) = (cluster.clone(), eps.clone(), rec.clone());
        async move {
            tokio::time::timeout(Duration::from_secs(100), async move {
                common::all_serve(&eps, Duration::from_secs(30)).await?;
                for round in 0..5u64 {
                    let victim = (round % 3) as usize;
                    let other = (victim + 1) % 3;
                    let k = format!("s{round}").into_bytes();
                    let mut w = common::pinned(&eps[other], OP_TIMEOUT).await;
                    let mut r = common::pinned(&eps[victim], OP_TIMEOUT).await;
                    let old = format!("old{round}").into_bytes();
                    let new = format!("new{round}").into_bytes();
                    let put = |value: &Vec<u8>| KvOp::Put {
                        key: k.clone(),
                        value: value.clone(),
                    };
                    let get = || KvOp::Get { key: k.clone() };
                    if rec.call(10, &mut w, put(&old)).await != KvOutcome::Put {
                        return Err(format!("round {round}: the first put failed"));
                    }
                    // The victim has applied the old value.
                    let seen_old = Instant::now();
                    while rec.call(20, &mut r, get()).await != KvOutcome::Get(Some(old.clone())) {
                        if seen_old.elapsed() > Duration::from_secs(10) {
                            return Err(format!("round {round}: m{victim} never saw the put"));
                        }
                        if r.is_none() {
                            r = common::pinned(&eps[victim], OP_TIMEOUT).await;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    if round % 2 == 1 {
                        // Cut off: the others exclude the victim and take
                        // the new value, while the victim still answers
                        // its clients.
                        rec.event(format!("round {round}: partition m{victim}"));
                        lock(&cluster).isolate(victim);
                        tokio::time::sleep(common::FAULTS_APPLIED).await;
                        let mut w2 = common::pinned(&eps[other], OP_TIMEOUT).await;
                        let out = rec.call(10, &mut w2, put(&new)).await;
                        rec.event(format!("round {round}: new value put: {out:?}"));
                        let mut outs = Vec::new();
                        for _ in 0..3 {
                            if r.is_none() {
                                break;
                            }
                            outs.push(rec.call(20, &mut r, get()).await);
                        }
                        rec.event(format!("round {round}: reads through m{victim}: {outs:?}"));
                        lock(&cluster).heal();
                        common::serves(&eps[victim], Duration::from_secs(30)).await?;
                        continue;
                    }
                    rec.event(format!("round {round}: SIGSTOP m{victim}"));
                    lock(&cluster).signal(victim, Signal::SIGSTOP);
                    // Answered once the others have excluded the victim.
                    let mut w2 = common::pinned(&eps[other], OP_TIMEOUT).await;
                    let out = rec.call(10, &mut w2, put(&new)).await;
                    rec.event(format!("round {round}: new value put: {out:?}"));
                    // Reads called after the put returned, queued at the
                    // paused member; then it is resumed.
                    let reader = {
                        let rec = rec.clone();
                        let get = get();
                        tokio::spawn(async move {
                            let mut outs = Vec::new();
                            for _ in 0..5 {
                                if r.is_none() {
                                    break;
                                }
                                outs.push(rec.call(20, &mut r, get.clone()).await);
                            }
                            outs
                        })
                    };
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    rec.event(format!("round {round}: SIGCONT m{victim}"));
                    lock(&cluster).signal(victim, Signal::SIGCONT);
                    let outs = reader.await.unwrap_or_default();
                    rec.event(format!("round {round}: reads through m{victim}: {outs:?}"));
                    // A restart brings the victim back at once.
                    lock(&cluster).kill(victim);
                    lock(&cluster).spawn(victim);
                    common::serves(&eps[victim], Duration::from_secs(30)).await?;
                }
                Ok(())
            })
            .await
        }
    });
    for i in 0..eps.len() {
        lock(&cluster).signal(i, Signal::SIGCONT);
    }
    let fail = |what: String| -> ! {
        let c = lock(&cluster);
        panic!("{what}\nevents:\n{}\n{}", rec.events(), c.logs())
    };
    match run {
        Err(_) => fail("the run did not end within 100 s".into()),
        Ok(Err(e)) => fail(e),
        Ok(Ok(())) => {}
    }
    // Keys are independent registers (one per round), so each scenario's
    // rounds are checked on their own: each must show the mutant.
    let history = rec.history();
    let round_of = |op: &Operation| -> Option<u64> {
        let key = match &op.op {
            KvOp::Put { key, .. } | KvOp::Get { key } | KvOp::Delete { key } => key,
        };
        std::str::from_utf8(key)
            .ok()?
            .strip_prefix('s')?
            .parse()
            .ok()
    };
    for (scenario, parity) in [("pause", 0), ("partition", 1)] {
        let part: Vec<Operation> = history
            .iter()
            .filter(|o| round_of(o).is_some_and(|r| r % 2 == parity))
            .cloned()
            .collect();
        let t = Instant::now();
        let verdict = check_kv(&part);
        eprintln!(
            "{scenario} rounds: checked {} in {:?}: {verdict}",
            summary(&part),
            t.elapsed()
        );
        if !matches!(verdict, Verdict::Violation { .. }) {
            fail(format!(
                "the stale-read mutant was not caught in the {scenario} rounds: {verdict}\nhistory: {part:#?}"
            ));
        }
    }
}

/// `--fault-file`: a missing or wrong file stops the member at start and
/// says what is wrong; a file spoiled later is reported and changes nothing,
/// and the next good one is applied.
#[test]
fn a_bad_fault_file_is_refused_at_start_and_left_unapplied_later() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let missing = tmp.path().join("missing.toml");
    let wrong = tmp.path().join("wrong.toml");
    common::write_atomically(&wrong, "drop = 2.5\n");
    for (file, what) in [(&missing, "cannot read"), (&wrong, "not a probability")] {
        let f = file.display().to_string();
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_troupe"))
            .args([
                "serve",
                "--insecure-plaintext",
                "--data-dir",
                &tmp.path().join("d").display().to_string(),
                "--listen-client-urls",
                &format!("http://127.0.0.1:{}", common::free_port()),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", common::free_port()),
                "--fault-file",
                &f,
            ])
            .output()
            .unwrap_or_else(|e| panic!("running troupe: {e}"));
        let t = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "started with {f}: {t}");
        assert!(t.contains(&f) && t.contains(what), "{t}");
    }

    let cluster = Cluster::start(1, &[]);
    let ep = cluster.endpoints()[0].clone();
    common::rt().block_on(async {
        common::serves(&ep, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        cluster.set_faults(0, "drop = [\n");
        tokio::time::sleep(common::FAULTS_APPLIED).await;
        cluster.set_faults(0, "block = [\"127.0.0.1:9\"]\n");
        tokio::time::sleep(common::FAULTS_APPLIED).await;
        common::serves(&ep, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    });
    let log = std::fs::read_to_string(&cluster.members[0].log).unwrap_or_default();
    let spoiled = log.find("--fault-file not applied");
    let applied = log.rfind("transport faults set");
    let blocked = log.rfind("\"127.0.0.1:9\"");
    assert!(
        matches!((spoiled, applied, blocked), (Some(s), Some(a), Some(b)) if s < a && a < b),
        "the spoiled file was not reported before the good one was applied:\n{log}"
    );
}
