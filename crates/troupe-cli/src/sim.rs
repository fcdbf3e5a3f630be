//! `troupe sim` (not implemented yet).

use std::process::ExitCode;

/// Arguments of `troupe sim`.
#[derive(clap::Args)]
pub struct SimArgs {}

/// Runs `troupe sim`.
pub fn run(_args: SimArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("troupe sim is not implemented yet")
}
