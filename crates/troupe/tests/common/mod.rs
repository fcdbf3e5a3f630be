//! Members on 127.0.0.1 for the runtime's test binaries.
#![allow(dead_code)] // each binary uses its own subset

use std::time::Duration;

use tokio::time::timeout;
use troupe::{Event, Group, GroupBuilder};

/// A member of `name` on a free port, with timeouts short enough for tests.
pub fn member(name: &str) -> GroupBuilder {
    Group::builder(name)
        .listen("127.0.0.1:0")
        .heartbeat_interval(Duration::from_millis(20))
        .suspect_timeout(Duration::from_millis(500))
        .flush_timeout(Duration::from_millis(500))
        .join_timeout(Duration::from_secs(20))
}

/// `n` stateless members of `name`, each joining through the first, once
/// every one has installed a view of all `n`.
pub async fn group_of(name: &str, n: usize) -> Vec<Group> {
    group_with(n, || member(name).stateless()).await
}

/// `n` members built by `builder`, each joining through the first, once
/// every one has installed a view of all `n`.
pub async fn group_with(n: usize, builder: impl Fn() -> GroupBuilder) -> Vec<Group> {
    let first = builder().start().await.expect("first member starts");
    let contact = first.local_addr().to_string();
    let mut gs = vec![first];
    for _ in 1..n {
        gs.push(
            builder()
                .join([contact.clone()])
                .start()
                .await
                .expect("member joins"),
        );
    }
    for g in gs.iter_mut() {
        until_view_of(g, n).await;
    }
    gs
}

/// Reads events of `g` until it has installed a view of `n` members.
pub async fn until_view_of(g: &mut Group, n: usize) {
    while g.view().map_or(0, |v| v.members.len()) < n {
        let _ = timeout(Duration::from_millis(100), g.recv()).await;
    }
}

/// Reads events of `g` until `count` deliveries; returns their payloads.
pub async fn deliveries(g: &mut Group, count: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while out.len() < count {
        match g.recv().await {
            Some(Event::Deliver(d)) => out.push(d.payload.to_vec()),
            Some(_) => {}
            None => panic!("group shut down"),
        }
    }
    out
}
