//! `troupe demo` (not implemented yet).

use std::process::ExitCode;

/// Arguments of `troupe demo`.
#[derive(clap::Args)]
pub struct DemoArgs {}

/// Runs `troupe demo`.
pub fn run(_args: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("troupe demo is not implemented yet")
}
