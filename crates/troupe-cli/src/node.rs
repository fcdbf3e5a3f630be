//! `troupe node` (not implemented yet).

use std::process::ExitCode;

/// Arguments of `troupe node`.
#[derive(clap::Args)]
pub struct NodeArgs {}

/// Runs `troupe node`.
pub fn run(_args: NodeArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("troupe node is not implemented yet")
}
