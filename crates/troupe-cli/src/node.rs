//! `troupe node`: an interactive member, like Spread's user program.
//!
//! Each line on standard input is multicast with the chosen ordering; views
//! and deliveries are printed as they happen (one JSON object per line with
//! `--json`). A line `/view` prints the current view, `/leave` (or the end of
//! input) leaves the group and exits. A member excluded by the group (after a
//! pause, say) rejoins by itself as a new incarnation.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use troupe::{
    Event, ExitReason, Group, GroupBuilder, GroupConfig, MemberId, Ordering, View, ViewId,
};

/// Arguments of `troupe node`.
#[derive(clap::Args)]
pub struct NodeArgs {
    /// This member's name; its node number is derived from it.
    #[arg(long)]
    name: String,
    /// The address to listen on (port 0: any free port) [default: 127.0.0.1:0, or the config file's].
    #[arg(long)]
    listen: Option<String>,
    /// Members to join through; without any, this member creates the group.
    #[arg(long, num_args = 1..)]
    join: Vec<String>,
    /// The ordering of the lines multicast: unreliable, reliable, fifo, causal, total or safe.
    #[arg(long, default_value = "total", value_parser = parse_ordering)]
    ordering: Ordering,
    /// Print one JSON object per event instead of text.
    #[arg(long)]
    json: bool,
    /// The group's name [default: troupe, or the config file's].
    #[arg(long)]
    group: Option<String>,
    /// A TOML configuration file (see `troupe::GroupConfig`); the options above override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Serve Prometheus metrics over HTTP at this address (e.g. 127.0.0.1:9464).
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// Transport faults from a TOML file, read again every 100 ms (as
    /// `troupe serve --fault-file`: drop, block, delay_ms, jitter_ms).
    #[arg(long)]
    fault_file: Option<PathBuf>,
}

/// Parses an ordering name for clap.
pub(crate) fn parse_ordering(s: &str) -> Result<Ordering, String> {
    s.parse()
}

/// Logs to standard error, at `default` unless `RUST_LOG` says otherwise.
pub(crate) fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Serves Prometheus metrics at `addr` (inside a tokio runtime).
pub(crate) fn install_metrics(addr: SocketAddr) -> anyhow::Result<()> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .with_context(|| format!("cannot serve metrics on {addr}"))
}

/// A node number from a name: stable, so that a restarted member keeps it.
pub(crate) fn node_of_name(name: &str) -> u64 {
    // Keep clear of MemberId::UNKNOWN's node.
    troupe::core::group_hash(name) >> 1
}

/// "n12.3".
pub(crate) fn fmt_member(m: MemberId) -> String {
    m.to_string()
}

/// "v4@n12.3".
pub(crate) fn fmt_view_id(v: ViewId) -> String {
    v.to_string()
}

fn view_json(v: &View) -> serde_json::Value {
    let members: Vec<_> = v
        .members
        .iter()
        .zip(&v.addrs)
        .map(|(m, a)| json!({"member": fmt_member(*m), "addr": String::from_utf8_lossy(a)}))
        .collect();
    json!({"event": "view", "view": fmt_view_id(v.id), "epoch": v.id.epoch, "coordinator": fmt_member(v.coordinator()), "members": members})
}

fn view_text(v: &View) -> String {
    let members: Vec<String> = v
        .members
        .iter()
        .zip(&v.addrs)
        .map(|(m, a)| format!("{m}@{}", String::from_utf8_lossy(a)))
        .collect();
    format!(
        "view {} ({} members): {}",
        v.id,
        v.members.len(),
        members.join(" ")
    )
}

/// Runs `troupe node`.
pub fn run(args: NodeArgs) -> anyhow::Result<ExitCode> {
    init_logging("warn,troupe=info");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(node(args))
}

async fn node(args: NodeArgs) -> anyhow::Result<ExitCode> {
    if let Some(addr) = args.metrics_addr {
        install_metrics(addr)?;
    }
    let mut cfg = match &args.config {
        Some(p) => GroupConfig::from_toml_file(p)?,
        None => GroupConfig::default(),
    };
    if let Some(g) = &args.group {
        cfg.group = g.clone();
    }
    if let Some(l) = &args.listen {
        cfg.listen = l.clone();
    }
    if !args.join.is_empty() {
        cfg.join = args.join.clone();
    }
    cfg.node_id = Some(node_of_name(&args.name));
    let json = args.json;
    let mut group = GroupBuilder::from_config(cfg)
        .faults(crate::faults::from_flag(args.fault_file.as_deref())?)
        .start()
        .await
        .context("cannot start the member")?;
    let me = group.me();
    let addr = group.local_addr();
    if json {
        println!(
            "{}",
            json!({"event": "started", "name": args.name, "member": fmt_member(me), "addr": addr.to_string()})
        );
    } else {
        println!(
            "{} is {me}, listening on {addr}; lines typed are multicast {}",
            args.name, args.ordering
        );
    }

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let line = match line {
                    Ok(Some(l)) => l,
                    Ok(None) | Err(_) => {
                        leave(&group, json).await;
                        return Ok(ExitCode::SUCCESS);
                    }
                };
                match line.trim() {
                    "/leave" | "/quit" => {
                        leave(&group, json).await;
                        return Ok(ExitCode::SUCCESS);
                    }
                    "/view" => match group.view() {
                        Some(v) if json => println!("{}", view_json(&v)),
                        Some(v) => println!("{}", view_text(&v)),
                        None => println!("not in a view"),
                    },
                    _ => {
                        if let Err(e) = group.send(args.ordering, line.into_bytes()).await {
                            if json {
                                println!("{}", json!({"event": "send_failed", "error": e.to_string()}));
                            } else {
                                println!("send failed: {e}");
                            }
                        }
                    }
                }
            }
            ev = group.recv() => {
                let Some(ev) = ev else { return Ok(ExitCode::from(1)) };
                if !print_and_answer(&group, ev, json).await {
                    return Ok(ExitCode::from(1));
                }
            }
        }
    }
}

async fn leave(group: &Group, json: bool) {
    let r = group.leave().await;
    if json {
        println!("{}", json!({"event": "left", "ok": r.is_ok()}));
    } else {
        match r {
            Ok(()) => println!("left the group"),
            Err(e) => println!("leaving: {e}"),
        }
    }
}

/// Prints one event and does what it asks; false when the member cannot go on.
async fn print_and_answer(group: &Group, ev: Event, json: bool) -> bool {
    match ev {
        Event::View(v) => {
            if json {
                println!("{}", view_json(&v));
            } else {
                println!("{}", view_text(&v));
            }
        }
        Event::Deliver(d) => {
            let text = String::from_utf8_lossy(&d.payload);
            if json {
                println!(
                    "{}",
                    json!({"event": "deliver", "sender": fmt_member(d.sender), "ordering": d.ordering.name(), "view": fmt_view_id(d.view), "payload": text})
                );
            } else {
                println!("[{}] {}: {}", d.ordering, d.sender, text);
            }
        }
        Event::Blocked => {
            if json {
                println!("{}", json!({"event": "blocked"}));
            }
        }
        Event::StateNeeded { view } => {
            // A chat member has no replicated state.
            let _ = group.provide_state(view, Vec::new()).await;
        }
        Event::StateInstalled { .. } => {}
        Event::Query { id, .. } => {
            let _ = group.reply(id, group.me().to_string().into_bytes()).await;
        }
        Event::QueryDone { .. } => {}
        Event::Mark { from, mark } => {
            let text = String::from_utf8_lossy(&mark);
            if json {
                println!(
                    "{}",
                    json!({"event": "mark", "member": fmt_member(from), "mark": text})
                );
            } else {
                println!("[mark] {from}: {text}");
            }
        }
        Event::Exited(ExitReason::Left) => {
            if json {
                println!("{}", json!({"event": "exited", "reason": "left"}));
            }
        }
        Event::Exited(ExitReason::Excluded) => {
            if json {
                println!("{}", json!({"event": "exited", "reason": "excluded"}));
            } else {
                println!("excluded from the group; rejoining as a new incarnation");
            }
            loop {
                match group.rejoin().await {
                    Ok(me) => {
                        if json {
                            println!("{}", json!({"event": "rejoined", "member": fmt_member(me)}));
                        } else {
                            println!("rejoined as {me}");
                        }
                        break;
                    }
                    Err(troupe::Error::Closed) => return false,
                    Err(e) => {
                        eprintln!("rejoin failed: {e}; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
    }
    true
}
