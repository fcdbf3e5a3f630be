//! `--fault-file`: transport faults (lost datagrams, blocked peers) read from
//! a TOML file that a test or an operator can change while the process runs.
//!
//! The file is read at start (a missing or wrong file is an error then) and
//! again every [`POLL`]; a change takes effect at once. A file that later
//! cannot be read or parsed is reported once and the faults stay as they
//! were. Write it atomically (write another file, rename it over this one)
//! so that a half-written file is never read. See [`troupe::faults`] for
//! what the faults do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use troupe::{FaultInjector, Faults};

/// How often the file is read again.
pub const POLL: Duration = Duration::from_millis(100);

/// Reads `path` into a new injector and starts a task (on the current tokio
/// runtime) that applies every change of the file.
pub fn watch(path: &Path) -> Result<FaultInjector> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --fault-file {}", path.display()))?;
    let faults = FaultInjector::new();
    apply(&faults, &text, path).with_context(|| format!("--fault-file {}", path.display()))?;
    tokio::spawn(poll(faults.clone(), path.to_path_buf(), text));
    Ok(faults)
}

/// The injector for an optional `--fault-file` (none: nothing injected).
pub fn from_flag(path: Option<&Path>) -> Result<FaultInjector> {
    match path {
        Some(p) => watch(p),
        None => Ok(FaultInjector::new()),
    }
}

/// Replaces a fault file with `faults`, atomically (written beside it, then
/// renamed over it), so that a member polling it never reads half of it.
pub fn write(path: &Path, faults: &Faults) -> Result<()> {
    let text = toml::to_string(faults).context("encoding faults as TOML")?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot write {}", path.display()))
}

fn apply(faults: &FaultInjector, text: &str, path: &Path) -> Result<()> {
    let f = Faults::from_toml(text).with_context(|| path.display().to_string())?;
    faults.set(f)?;
    Ok(())
}

async fn poll(faults: FaultInjector, path: PathBuf, mut last: String) {
    let mut reported: Option<String> = None;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A small local file: read in place, not worth a blocking-pool hop.
        let result = match std::fs::read_to_string(&path) {
            Ok(text) if text == last => continue,
            Ok(text) => apply(&faults, &text, &path).map(|()| text),
            Err(e) => {
                Err(anyhow::Error::from(e).context(format!("cannot read {}", path.display())))
            }
        };
        match result {
            Ok(text) => {
                last = text;
                reported = None;
            }
            Err(e) => {
                let msg = format!("{e:#}");
                if reported.as_ref() != Some(&msg) {
                    tracing::warn!(error = %msg, "--fault-file not applied; the faults stay as they were");
                    reported = Some(msg);
                }
            }
        }
    }
}
