//! Linearizable reads go through a read index, not the log (issue 7): on an
//! idle 3-member cluster, gets at every member leave every member's log
//! where it was, and still see the writes acknowledged before them.

mod common;

use std::time::Duration;

use common::{client, eventually, Cluster};

/// Every member's applied index (etcd's raft index), in endpoint order.
async fn applied(clients: &mut [etcd_client::Client]) -> Result<Vec<u64>, etcd_client::Error> {
    let mut out = Vec::new();
    for c in clients.iter_mut() {
        out.push(c.status().await?.raft_index());
    }
    Ok(out)
}

#[test]
fn linearizable_reads_do_not_touch_the_log() {
    let cluster = Cluster::start(3, &[]);
    let eps = cluster.endpoints();
    let r = common::rt().block_on(async {
        tokio::time::timeout(Duration::from_secs(120), async {
            cluster.wait_serving().await;
            let mut clients = Vec::new();
            for ep in &eps {
                clients.push(client(std::slice::from_ref(ep)).await);
            }
            clients[0].put("k", "v1", None).await?;

            // Idle: every member has applied the same last entry.
            let before = eventually(Duration::from_secs(30), "the members agree", || {
                let mut cs = clients.clone();
                async move {
                    let a = applied(&mut cs).await.ok()?;
                    (a.iter().all(|i| *i == a[0] && *i > 0)).then_some(a)
                }
            })
            .await;

            // 99 gets one at a time, round the members.
            for i in 0..99 {
                let c = &mut clients[i % 3];
                let got = c.get("k", None).await?;
                assert_eq!(got.kvs().first().map(|kv| kv.value()), Some(&b"v1"[..]));
            }
            // And 30 at once at each member: batched behind read index markers.
            let mut tasks = Vec::new();
            for i in 0..90 {
                let mut c = clients[i % 3].clone();
                tasks.push(tokio::spawn(async move { c.get("k", None).await }));
            }
            for t in tasks {
                let got = t
                    .await
                    .map_err(|e| etcd_client::Error::InvalidArgs(e.to_string()))??;
                assert_eq!(got.kvs().first().map(|kv| kv.value()), Some(&b"v1"[..]));
            }
            let after = applied(&mut clients).await?;
            assert_eq!(
                after, before,
                "linearizable gets appended to the log (applied index per member)"
            );

            // A write acknowledged by one member is seen by a linearizable read
            // at another, at once.
            for i in 0..30 {
                let v = format!("x{i}");
                clients[i % 3].put("k2", v.clone(), None).await?;
                let got = clients[(i + 1) % 3].get("k2", None).await?;
                assert_eq!(
                    got.kvs().first().map(|kv| kv.value()),
                    Some(v.as_bytes()),
                    "read at m{} after a put acknowledged by m{}",
                    (i + 1) % 3,
                    i % 3
                );
            }
            Ok::<(), etcd_client::Error>(())
        })
        .await
    });
    common::finished(r, &cluster);
}

/// A member that restarts and joins the serving group answers linearizable
/// reads with no write after it: it learns where the others' logs stand
/// from the marks they send again in the new view (they used to wait for
/// the next write, forever on an idle cluster).
#[test]
fn a_member_that_rejoins_an_idle_cluster_answers_reads() {
    let mut cluster = Cluster::start(3, &[]);
    let eps = cluster.endpoints();
    let runtime = common::rt();
    let r = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(120), async {
            let mut any = cluster.wait_serving().await;
            for i in 0..20 {
                any.put(format!("k{i}"), "v", None).await?;
            }
            Ok::<(), etcd_client::Error>(())
        })
        .await
    });
    common::finished(r, &cluster);
    cluster.kill(2);
    cluster.spawn(2);
    let one = vec![eps[2].clone()];
    let r = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), async {
            // Serializable first: the member is back and holds the writes.
            eventually(Duration::from_secs(30), "m2 is back", || {
                let one = one.clone();
                async move {
                    let mut c = client(&one).await;
                    let opts = etcd_client::GetOptions::new().with_serializable();
                    let got = c.get("k19", Some(opts)).await.ok()?;
                    (got.count() == 1).then_some(())
                }
            })
            .await;
            // Then linearizable, with nothing written since. Serializable
            // reads work from the member's own data before it is back in
            // the group; until it serves there, a linearizable read is
            // refused at once ("no leader"), and is retried. What must not
            // happen is a read that hangs.
            let mut c = client(&one).await;
            let start = std::time::Instant::now();
            loop {
                match tokio::time::timeout(Duration::from_secs(10), c.get("k19", None)).await {
                    Err(_) => {
                        return Err(etcd_client::Error::InvalidArgs(
                            "linearizable get hung".into(),
                        ))
                    }
                    Ok(Err(etcd_client::Error::GRpcStatus(s)))
                        if s.message().contains("no leader")
                            && start.elapsed() < Duration::from_secs(30) =>
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Ok(r) => break r,
                }
            }
        })
        .await
    });
    assert_eq!(common::finished(r, &cluster).count(), 1);
    cluster.kill_all();
}
