//! The Rust `etcd-client` crate, unchanged, against a 3-member `troupe serve`
//! cluster: every API the issue lists.

mod common;

use std::time::Duration;

use common::Cluster;
use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, LeaseGrantOptions, LockOptions, PutOptions, Txn,
    TxnOp, WatchOptions,
};

#[test]
fn etcd_client_crate_works_unchanged() {
    let cluster = Cluster::start(3, &[]);
    let eps = cluster.endpoints();
    let r = common::rt().block_on(async { tokio::time::timeout(Duration::from_secs(120), async {
        let mut c = cluster.wait_serving().await;

        // put / get, prefix, range, revision, keys-only, limit, prev_kv.
        let r1 = c.put("a/1", "x", None).await?.header().map(|h| h.revision()).unwrap_or(0);
        c.put("a/2", "y", None).await?;
        c.put("b", "z", None).await?;
        let prev = c.put("a/1", "x2", Some(PutOptions::new().with_prev_key())).await?;
        assert_eq!(prev.prev_key().map(|kv| kv.value()), Some(&b"x"[..]));
        let got = c.get("a/", Some(GetOptions::new().with_prefix())).await?;
        assert_eq!(got.kvs().len(), 2);
        assert_eq!(got.kvs()[0].value(), b"x2");
        let old = c.get("a/1", Some(GetOptions::new().with_revision(r1))).await?;
        assert_eq!(old.kvs()[0].value(), b"x", "a read at an old revision sees the old value");
        let keys = c.get("a/", Some(GetOptions::new().with_prefix().with_keys_only())).await?;
        assert!(keys.kvs().iter().all(|kv| kv.value().is_empty()));
        let lim = c.get("a/", Some(GetOptions::new().with_prefix().with_limit(1))).await?;
        assert_eq!((lim.kvs().len(), lim.more(), lim.count()), (1, true, 2));
        let range = c.get("a/1", Some(GetOptions::new().with_range("b"))).await?;
        assert_eq!(range.kvs().len(), 2);
        let ser = c.get("b", Some(GetOptions::new().with_serializable())).await?;
        assert_eq!(ser.kvs()[0].value(), b"z");

        // del.
        let d = c.delete("a/2", None).await?;
        assert_eq!(d.deleted(), 1);
        assert_eq!(c.get("a/2", None).await?.count(), 0);

        // txn: compare, then, else.
        let t = Txn::new()
            .when(vec![Compare::value("b", CompareOp::Equal, "z")])
            .and_then(vec![TxnOp::put("b", "z2", None)])
            .or_else(vec![TxnOp::get("b", None)]);
        assert!(c.txn(t).await?.succeeded());
        let t = Txn::new()
            .when(vec![Compare::value("b", CompareOp::Equal, "z")])
            .and_then(vec![TxnOp::put("b", "never", None)])
            .or_else(vec![TxnOp::get("b", None)]);
        assert!(!c.txn(t).await?.succeeded());
        assert_eq!(c.get("b", None).await?.kvs()[0].value(), b"z2");

        // watch a prefix, from a past revision.
        let mut stream = c
            .watch("a/", Some(WatchOptions::new().with_prefix().with_start_revision(r1)))
            .await?;
        let mut seen = Vec::new();
        let mut watch_id = None;
        while seen.len() < 5 {
            let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .map_err(|_| etcd_client::Error::WatchError("no watch events".into()))??
                .ok_or_else(|| etcd_client::Error::WatchError("watch closed".into()))?;
            watch_id.get_or_insert(resp.watch_id());
            for e in resp.events() {
                let kv = e.kv().map(|kv| kv.key_str().unwrap_or("").to_string()).unwrap_or_default();
                seen.push((e.event_type(), kv));
            }
            if seen.len() == 4 {
                c.put("a/3", "live", None).await?;
            }
        }
        assert_eq!(seen[0], (EventType::Put, "a/1".to_string()));
        assert_eq!(seen[1], (EventType::Put, "a/2".to_string()));
        assert_eq!(seen[2], (EventType::Put, "a/1".to_string()));
        assert_eq!(seen[3], (EventType::Delete, "a/2".to_string()));
        assert_eq!(seen[4], (EventType::Put, "a/3".to_string()));
        stream.cancel(watch_id.unwrap_or(0)).await?;

        // leases: grant, keep-alive, time-to-live, list, revoke; keys go with them.
        let lease = c.lease_grant(30, None).await?;
        c.put("leased", "v", Some(PutOptions::new().with_lease(lease.id()))).await?;
        let (mut keeper, mut ka) = c.lease_keep_alive(lease.id()).await?;
        keeper.keep_alive().await?;
        let k = ka.message().await?.map(|m| m.ttl()).unwrap_or(0);
        assert_eq!(k, 30);
        let ttl = c
            .lease_time_to_live(lease.id(), Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()))
            .await?;
        assert!(ttl.ttl() > 20 && ttl.granted_ttl() == 30, "ttl {}", ttl.ttl());
        assert_eq!(ttl.keys().len(), 1);
        assert!(c.leases().await?.leases().iter().any(|l| l.id() == lease.id()));
        c.lease_revoke(lease.id()).await?;
        assert_eq!(c.get("leased", None).await?.count(), 0, "a revoked lease takes its keys");
        // A short lease left alone expires, and its key with it.
        let short = c.lease_grant(2, Some(LeaseGrantOptions::new())).await?;
        c.put("short", "v", Some(PutOptions::new().with_lease(short.id()))).await?;
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(c.get("short", None).await?.count(), 0, "an expired lease takes its keys");

        // lock (v3lockpb.Lock): the second owner waits for the first.
        let l1 = c.lease_grant(30, None).await?.id();
        let l2 = c.lease_grant(30, None).await?.id();
        let first = c.lock("mylock", Some(LockOptions::new().with_lease(l1))).await?;
        let mut c2 = c.clone();
        let second = tokio::spawn(async move {
            c2.lock("mylock", Some(LockOptions::new().with_lease(l2))).await
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!second.is_finished(), "the lock is held by the first owner");
        let fence1 = first.header().map(|h| h.revision()).unwrap_or(0);
        c.unlock(first.key().to_vec()).await?;
        let second = tokio::time::timeout(Duration::from_secs(10), second)
            .await
            .map_err(|_| etcd_client::Error::InvalidArgs("second lock never granted".into()))?
            .map_err(|e| etcd_client::Error::InvalidArgs(e.to_string()))??;
        let key2 = String::from_utf8_lossy(second.key()).to_string();
        let rev2 = c.get(second.key(), None).await?.kvs()[0].create_revision();
        assert!(rev2 > fence1 - 1, "fencing tokens grow: {rev2} after {fence1}");
        assert!(key2.starts_with("mylock/"));

        // election: campaign, leader, proclaim, resign.
        let el = c.lease_grant(30, None).await?.id();
        let won = c.campaign("myelection", "alice", el).await?;
        let leader = c.leader("myelection").await?;
        assert_eq!(leader.kv().map(|kv| kv.value()), Some(&b"alice"[..]));
        let key = won.leader().cloned().ok_or_else(|| etcd_client::Error::InvalidArgs("no leader key".into()))?;
        c.proclaim("alice2", Some(etcd_client::ProclaimOptions::new().with_leader(key.clone()))).await?;
        assert_eq!(c.leader("myelection").await?.kv().map(|kv| kv.value()), Some(&b"alice2"[..]));
        c.resign(Some(etcd_client::ResignOptions::new().with_leader(key))).await?;
        assert!(c.leader("myelection").await.is_err(), "no leader after resigning");

        // member list, status, compaction.
        let members = c.member_list().await?;
        assert_eq!(members.members().len(), 3);
        for m in members.members() {
            let i: usize = m.name().trim_start_matches('m').parse().unwrap_or(usize::MAX);
            let want = eps.get(i).map(|ep| vec![format!("http://{ep}")]);
            assert_eq!(Some(m.client_urls().to_vec()), want, "client URLs of {}", m.name());
        }
        // Membership is static: a change is refused, saying so.
        match c.member_add(["http://127.0.0.1:1"], None).await {
            Err(etcd_client::Error::GRpcStatus(s)) => {
                assert_eq!(s.code(), tonic::Code::Unimplemented);
                assert!(s.message().contains("membership is static"), "{}", s.message());
            }
            other => panic!("member add: {other:?}"),
        }
        let st = c.status().await?;
        assert!(st.raft_index() > 0 && st.leader() != 0);
        let now = c.get("b", None).await?.header().map(|h| h.revision()).unwrap_or(0);
        c.compact(now, None).await?;
        let err = c.get("a/1", Some(GetOptions::new().with_revision(r1))).await;
        assert!(
            matches!(&err, Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("compacted")),
            "a read below the compaction fails with etcd's error: {err:?}"
        );
        Ok::<(), etcd_client::Error>(())
    }).await });
    common::finished(r, &cluster);

    // `troupe status`: every member serving in one view, with its log and snapshot.
    let rows = common::status_rows(&eps.join(",")).unwrap_or_else(|e| panic!("{e}"));
    let text = serde_json::Value::from(rows.clone());
    assert_eq!(rows.len(), 3, "{text}");
    for r in &rows {
        assert_eq!(r["phase"], "serving", "{text}");
        assert_eq!(r["view"].as_array().map(Vec::len), Some(3), "{text}");
        assert!(r["wal_bytes"].as_u64().unwrap_or(0) > 0, "{text}");
        assert!(r["committed"].as_u64().unwrap_or(0) > 0, "{text}");
        assert_eq!(r["leader"], rows[0]["leader"], "one leader: {text}");
    }
}
