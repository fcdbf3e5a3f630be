//! `troupe`: the one command of the project (sim, demo, node, ...).

use clap::{Parser, Subcommand};

mod demo;
mod node;
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
    /// One member process of `troupe demo` (started by the demo itself).
    #[command(hide = true)]
    DemoMember(demo::MemberArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sim(args) => sim::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Node(args) => node::run(args),
        Command::DemoMember(args) => demo::run_member(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("troupe: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}
