//! `troupe`: the one command of the project (sim, demo, node, ...).

use anyhow::Context;
use clap::{Parser, Subcommand};

mod bench;
mod certs;
mod demo;
mod faults;
mod node;
mod procs;
mod serve;
mod sim;

/// Reliable process groups with virtual synchrony.
#[derive(Parser)]
#[command(name = "troupe", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the deterministic simulator and check every guarantee.
    Sim(sim::SimArgs),
    /// Start member processes on 127.0.0.1, crash and pause some, check the guarantees.
    Demo(demo::DemoArgs),
    /// An interactive member: each line on stdin is multicast.
    Node(node::NodeArgs),
    /// Measure throughput and latency against a raw TCP baseline, on 127.0.0.1.
    Bench(bench::BenchArgs),
    /// One member of the coordination service, spoken to with the etcd v3 API.
    Serve(Box<serve::ServeArgs>),
    /// The coordination service's members: leader, epoch, index, revision, disk.
    Status(serve::StatusArgs),
    /// Create a development CA and per-node certificates for TLS.
    Certs(certs::CertsArgs),
    /// One member process of `troupe bench` (started by the bench itself).
    #[command(hide = true)]
    BenchMember(bench::MemberArgs),
    /// One member process of `troupe demo` (started by the demo itself).
    #[command(hide = true)]
    DemoMember(demo::MemberArgs),
}

/// mimalloc: the service allocates per request (gRPC frames, log records,
/// MVCC keys); glibc malloc was 8% of a member's CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A tokio runtime with `workers` worker threads: 1 is a current-thread
/// runtime (no cross-thread wake-ups), 0 one thread per core.
fn runtime(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = match workers {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if n > 1 {
                b.worker_threads(n);
            }
            b
        }
    };
    b.enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sim(args) => sim::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Node(args) => node::run(args),
        Command::DemoMember(args) => demo::run_member(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchMember(args) => bench::run_member(args),
        Command::Serve(args) => serve::run(*args),
        Command::Status(args) => serve::status(args),
        Command::Certs(args) => certs::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("troupe: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}
