//! A lock service on a group: the lock is a queue replicated in total order.
//! `acquire` appends the caller to the queue, `release` removes the head; the
//! head holds the lock. Every replica applies the same commands in the same
//! order, so every replica agrees on who holds the lock, and each grant
//! carries a fencing token that grows strictly (a resource can refuse a stale
//! holder by its token).
//!
//! Three members take the lock three times each; the example checks that no
//! two of them were ever inside the critical section at once and that the
//! tokens increase.
//!
//! ```text
//! cargo run -p troupe --example lock
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use troupe::{Group, GroupBuilder, Ordering, Replicated, StateMachine};

const ACQUIRE: u8 = 1;
const RELEASE: u8 = 2;

/// The replicated lock: waiting clients in order, the head holds the lock.
#[derive(Default)]
struct LockQueue {
    /// (client, fencing token of its grant; 0 while waiting).
    queue: VecDeque<(u64, u64)>,
    /// The last token handed out.
    token: u64,
}

impl LockQueue {
    fn grant_head(&mut self) {
        if let Some(head) = self.queue.front_mut() {
            if head.1 == 0 {
                self.token += 1;
                head.1 = self.token;
            }
        }
    }

    /// The holder and its token.
    fn holder(&self) -> Option<(u64, u64)> {
        self.queue.front().copied()
    }
}

fn command(op: u8, client: u64) -> Vec<u8> {
    let mut c = vec![op];
    c.extend_from_slice(&client.to_le_bytes());
    c
}

impl StateMachine for LockQueue {
    fn apply(&mut self, cmd: &[u8]) -> Vec<u8> {
        let (Some(&op), Some(client)) =
            (cmd.first(), cmd.get(1..9).and_then(|b| b.try_into().ok()))
        else {
            return Vec::new(); // not a command of ours
        };
        let client = u64::from_le_bytes(client);
        match op {
            ACQUIRE if !self.queue.iter().any(|(c, _)| *c == client) => {
                self.queue.push_back((client, 0))
            }
            RELEASE if self.holder().is_some_and(|(c, _)| c == client) => {
                self.queue.pop_front();
            }
            _ => {}
        }
        self.grant_head();
        Vec::new()
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut s = self.token.to_le_bytes().to_vec();
        for (c, t) in &self.queue {
            s.extend_from_slice(&c.to_le_bytes());
            s.extend_from_slice(&t.to_le_bytes());
        }
        s
    }

    fn restore(&mut self, snapshot: &[u8]) {
        let word = |i: usize| {
            snapshot
                .get(i..i + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        };
        *self = LockQueue {
            token: word(0).unwrap_or(0),
            queue: VecDeque::new(),
        };
        let mut i = 8;
        while let (Some(c), Some(t)) = (word(i), word(i + 8)) {
            self.queue.push_back((c, t));
            i += 16;
        }
    }
}

fn member() -> GroupBuilder {
    Group::builder("locks")
        .listen("127.0.0.1:0")
        .join_timeout(Duration::from_secs(10))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs on standard error: RUST_LOG=troupe=debug shows the runtime's.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let a = member().start().await?;
    let contact = a.local_addr().to_string();
    let mut replicas = vec![Arc::new(Replicated::new(
        a,
        LockQueue::default(),
        Ordering::Total,
    )?)];
    for _ in 0..2 {
        let g = member().join([contact.clone()]).start().await?;
        replicas.push(Arc::new(Replicated::new(
            g,
            LockQueue::default(),
            Ordering::Total,
        )?));
    }

    let inside = Arc::new(AtomicBool::new(false));
    let grants = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for r in &replicas {
        let (r, inside, grants) = (r.clone(), inside.clone(), grants.clone());
        tasks.push(tokio::spawn(async move {
            let me = r.handle().me().node;
            for _ in 0..3 {
                r.execute(command(ACQUIRE, me)).await?;
                // Granted when this replica sees us at the head of the queue.
                let token = loop {
                    if let Some((c, t)) = r.read(|q| q.holder()) {
                        if c == me {
                            break t;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                };
                assert!(
                    !inside.swap(true, AtomicOrdering::SeqCst),
                    "two holders at once"
                );
                grants
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((token, r.handle().me()));
                tokio::time::sleep(Duration::from_millis(10)).await;
                inside.store(false, AtomicOrdering::SeqCst);
                r.execute(command(RELEASE, me)).await?;
            }
            Ok::<(), troupe::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let grants = grants.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (token, who) in &grants {
        println!("token {token:>2} granted to {who}");
    }
    let increasing = grants.windows(2).all(|w| w[0].0 < w[1].0);
    println!(
        "{} grants, never two holders at once, tokens strictly increasing: {increasing}",
        grants.len()
    );
    Ok(())
}
