//! A chat room on a process group: every line is multicast in total order, so
//! every member sees the same conversation in the same order.
//!
//! Without arguments, three members (alice, bob, carol) start in this process
//! on 127.0.0.1, each says two things, and each prints the conversation it
//! saw; the example checks that the three transcripts are identical.
//!
//! ```text
//! cargo run -p troupe --example chat
//! ```
//!
//! With arguments it is one interactive member reading lines from standard
//! input (start the first without a contact):
//!
//! ```text
//! cargo run -p troupe --example chat -- 127.0.0.1:7001
//! cargo run -p troupe --example chat -- 127.0.0.1:7002 127.0.0.1:7001
//! ```

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use troupe::{Event, Group, GroupBuilder, Ordering};

fn member(listen: &str) -> GroupBuilder {
    Group::builder("chat")
        .listen(listen)
        .stateless()
        .join_timeout(Duration::from_secs(10))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs on standard error: RUST_LOG=troupe=debug shows the runtime's.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(listen) = args.first() {
        return interactive(listen, &args[1..]).await;
    }

    let names = ["alice", "bob", "carol"];
    let first = member("127.0.0.1:0").start().await?;
    let contact = first.local_addr().to_string();
    let mut groups = vec![first];
    for _ in 1..names.len() {
        groups.push(
            member("127.0.0.1:0")
                .join([contact.clone()])
                .start()
                .await?,
        );
    }
    // Wait until everybody is in the full view before talking.
    for g in groups.iter_mut() {
        while g.view().map_or(0, |v| v.members.len()) < names.len() {
            tokio::time::timeout(Duration::from_millis(50), g.recv())
                .await
                .ok();
        }
    }
    let mut tasks = Vec::new();
    for (name, mut g) in names.into_iter().zip(groups) {
        tasks.push(tokio::spawn(async move {
            for line in ["hello", "how are you?"] {
                g.send(Ordering::Total, format!("{name}: {line}")).await?;
            }
            let mut transcript = Vec::new();
            while transcript.len() < 2 * names.len() {
                match g.recv().await {
                    Some(Event::Deliver(d)) => {
                        transcript.push(String::from_utf8_lossy(&d.payload).into_owned())
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            // Hand the member back: dropping it here would be a crash
            // for the others, who may not have delivered everything yet.
            Ok::<_, troupe::Error>((name, transcript, g))
        }));
    }
    let mut transcripts = Vec::new();
    let mut members = Vec::new();
    for t in tasks {
        let (name, transcript, g) = t.await??;
        transcripts.push((name, transcript));
        members.push(g);
    }
    for (name, t) in &transcripts {
        println!("{name} saw:");
        for line in t {
            println!("    {line}");
        }
    }
    let same = transcripts.windows(2).all(|w| w[0].1 == w[1].1);
    println!("all transcripts identical: {same}");
    Ok(())
}

async fn interactive(listen: &str, contacts: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let mut g = member(listen)
        .join(contacts.iter().cloned())
        .start()
        .await?;
    println!(
        "joined as {}; type lines to chat, end of input to leave",
        g.me()
    );
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line? {
                Some(l) => { g.send(Ordering::Total, l).await?; }
                None => break,
            },
            ev = g.recv() => match ev {
                Some(Event::View(v)) => println!("-- {} members", v.members.len()),
                Some(Event::Deliver(d)) => println!("{}: {}", d.sender, String::from_utf8_lossy(&d.payload)),
                Some(_) => {}
                None => break,
            },
        }
    }
    g.leave().await?;
    Ok(())
}
