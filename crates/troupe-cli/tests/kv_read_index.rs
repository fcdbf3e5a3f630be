//! Linearizable reads go through a read index, not the log (issue 7): on an
//! idle 3-member cluster, gets at every member leave every member's log
//! where it was, and still see the writes acknowledged before them.

mod common;

use std::time::Duration;

use common::{client, eventually, wait_serving, Cluster};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

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
    let r = rt().block_on(async {
        tokio::time::timeout(Duration::from_secs(120), async {
            wait_serving(&eps).await;
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
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e}\n{}", cluster.logs()),
        Err(_) => panic!("timed out\n{}", cluster.logs()),
    }
}
