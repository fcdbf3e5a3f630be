//! Leader election by seniority: the leader of a group is the oldest member of
//! its current view. Every member installs the same views, so every member
//! names the same leader without exchanging a single extra message; when the
//! leader goes, the next view names the next oldest.
//!
//! ```text
//! cargo run -p troupe --example election
//! ```

use std::time::Duration;

use troupe::{Event, Group, GroupBuilder};

fn member() -> GroupBuilder {
    Group::builder("election")
        .listen("127.0.0.1:0")
        .stateless()
        .suspect_timeout(Duration::from_millis(500))
        .join_timeout(Duration::from_secs(10))
}

/// Reads events until the view has `n` members; returns the leader it names.
async fn leader_when(g: &mut Group, n: usize) -> troupe::MemberId {
    loop {
        if let Some(v) = g.view() {
            if v.members.len() == n {
                return v.coordinator();
            }
        }
        if let Ok(Some(Event::Exited(_)) | None) =
            tokio::time::timeout(Duration::from_millis(50), g.recv()).await
        {
            panic!("left the group");
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs on standard error: RUST_LOG=troupe=debug shows the runtime's.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let first = member().start().await?;
    let contact = first.local_addr().to_string();
    let mut groups = vec![first];
    for _ in 0..2 {
        groups.push(member().join([contact.clone()]).start().await?);
    }
    for g in groups.iter_mut() {
        let leader = leader_when(g, 3).await;
        println!("{} says the leader is {leader}", g.me());
    }

    // The leader steps down (leaves); the others elect the next oldest.
    let old = groups.remove(0);
    println!("{} leaves", old.me());
    old.leave().await?;
    let mut leaders = Vec::new();
    for g in groups.iter_mut() {
        let leader = leader_when(g, 2).await;
        println!("{} says the new leader is {leader}", g.me());
        leaders.push(leader);
    }
    println!("all agree: {}", leaders.windows(2).all(|w| w[0] == w[1]));
    Ok(())
}
