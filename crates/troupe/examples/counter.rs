//! A replicated counter: a `StateMachine` whose commands add to a number.
//! Three members add concurrently; a fourth joins afterwards and receives the
//! state by state transfer; all four end with the same value.
//!
//! ```text
//! cargo run -p troupe --example counter
//! ```

use std::time::Duration;

use troupe::{Group, GroupBuilder, Ordering, Replicated, StateMachine};

/// The replicated state: one number.
#[derive(Default)]
struct Counter(u64);

impl StateMachine for Counter {
    /// A command is a little-endian u64 to add; the output is the new value.
    fn apply(&mut self, cmd: &[u8]) -> Vec<u8> {
        let add = cmd.try_into().map(u64::from_le_bytes).unwrap_or(0);
        self.0 = self.0.wrapping_add(add);
        self.0.to_le_bytes().to_vec()
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.to_le_bytes().to_vec()
    }
    fn restore(&mut self, snapshot: &[u8]) {
        self.0 = snapshot.try_into().map(u64::from_le_bytes).unwrap_or(0);
    }
}

fn member() -> GroupBuilder {
    Group::builder("counter")
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
    let mut replicas = vec![Replicated::new(a, Counter::default(), Ordering::Total)?];
    for _ in 0..2 {
        let g = member().join([contact.clone()]).start().await?;
        replicas.push(Replicated::new(g, Counter::default(), Ordering::Total)?);
    }

    // Every replica adds 1..=100 concurrently with the others.
    let replicas: Vec<_> = replicas.into_iter().map(std::sync::Arc::new).collect();
    let mut tasks = Vec::new();
    for r in &replicas {
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            let mut last = 0;
            for i in 1..=100u64 {
                let out = r.execute(i.to_le_bytes()).await?;
                last = out
                    .as_slice()
                    .try_into()
                    .map(u64::from_le_bytes)
                    .unwrap_or(0);
            }
            Ok::<u64, troupe::Error>(last)
        }));
    }
    for t in tasks {
        t.await??;
    }
    let expected = 3 * (1..=100u64).sum::<u64>();

    // A late joiner starts from a snapshot taken at its view boundary.
    let d = member().join([contact]).start().await?;
    let late = Replicated::new(d, Counter::default(), Ordering::Total)?;
    late.execute(0u64.to_le_bytes()).await?;
    for r in replicas.iter().map(|r| r.as_ref()).chain([&late]) {
        // Each replica has applied everything once it applied the late joiner's no-op.
        while r.read(|c| c.0) < expected {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!("{} holds {}", r.handle().me(), r.read(|c| c.0));
    }
    println!("expected {expected}: every replica agrees");
    Ok(())
}
