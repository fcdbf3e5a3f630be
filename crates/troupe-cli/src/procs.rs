//! Child processes of this binary, shared by `troupe demo` and `troupe bench`:
//! the system clock shared by the processes of one machine, the line channel
//! a child uses to talk to its parent, signals by pid, and a guard that kills
//! every child by pid when it is dropped (on every way out, Ctrl-C included).

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Nanoseconds since the Unix epoch, from the system clock (comparable
/// between the processes of one machine).
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Prints a line for the parent (a child's standard output is its channel).
pub fn tell(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) -> bool {
    match i32::try_from(pid) {
        Ok(p) if p > 0 => nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), sig).is_ok(),
        _ => false,
    }
}

/// A child process exits by itself after `secs`, whatever happens (its
/// parent may be gone without closing its standard input).
pub fn exit_after(secs: u64) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(secs));
        eprintln!("troupe: child deadline passed");
        std::process::exit(3);
    });
}

/// One child process.
struct Kid {
    child: Child,
    pid: Option<u32>,
    stdin: Option<ChildStdin>,
    exited: bool,
}

/// Children of this binary; dropping it SIGKILLs every one by pid.
pub struct Children {
    kids: Vec<Kid>,
    lines_tx: mpsc::UnboundedSender<(usize, Option<String>)>,
    lines_rx: mpsc::UnboundedReceiver<(usize, Option<String>)>,
    exe: PathBuf,
}

impl Drop for Children {
    fn drop(&mut self) {
        for k in &mut self.kids {
            if let Some(pid) = k.pid {
                signal(pid, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = k.child.start_kill();
        }
    }
}

impl Children {
    /// No children yet; they will run this very executable.
    pub fn new() -> anyhow::Result<Children> {
        let exe = std::env::current_exe().context("cannot find the troupe executable")?;
        let (lines_tx, lines_rx) = mpsc::unbounded_channel();
        Ok(Children {
            kids: Vec::new(),
            lines_tx,
            lines_rx,
            exe,
        })
    }

    /// How many children were started.
    pub fn len(&self) -> usize {
        self.kids.len()
    }

    /// Starts this binary with `args`; standard error goes to ours (or is
    /// discarded when `quiet`). Returns the child's index.
    pub fn spawn(&mut self, args: &[String], quiet: bool) -> anyhow::Result<usize> {
        let i = self.kids.len();
        let mut cmd = Command::new(&self.exe);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if quiet {
                Stdio::null()
            } else {
                Stdio::inherit()
            })
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", self.exe.display()))?;
        let pid = child.id();
        let stdin = child.stdin.take();
        if let Some(out) = child.stdout.take() {
            let tx = self.lines_tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    if tx.send((i, Some(l))).is_err() {
                        return;
                    }
                }
                let _ = tx.send((i, None));
            });
        }
        self.kids.push(Kid {
            child,
            pid,
            stdin,
            exited: false,
        });
        Ok(i)
    }

    /// The next line of any child until `until`: `(index, line)`. A child
    /// whose output ends is an error (`what` says what we waited for).
    pub async fn next_line(
        &mut self,
        until: Instant,
        what: &str,
    ) -> anyhow::Result<(usize, String)> {
        match tokio::time::timeout_at(until, self.lines_rx.recv()).await {
            Ok(Some((i, Some(l)))) => Ok((i, l)),
            Ok(Some((i, None))) => {
                if let Some(k) = self.kids.get_mut(i) {
                    k.exited = true;
                }
                bail!("child {i} exited while waiting for {what}")
            }
            Ok(None) => bail!("child output channel closed"),
            Err(_) => bail!("timed out waiting for {what}"),
        }
    }

    /// The next line of any child until `until`, as `(index, Some(line))`,
    /// or `(index, None)` when that child's output ended (it exited or was
    /// killed): for callers that kill children on purpose.
    pub async fn next_output(&mut self, until: Instant) -> Option<(usize, Option<String>)> {
        match tokio::time::timeout_at(until, self.lines_rx.recv()).await {
            Ok(Some((i, None))) => {
                if let Some(k) = self.kids.get_mut(i) {
                    k.exited = true;
                }
                Some((i, None))
            }
            Ok(Some(x)) => Some(x),
            Ok(None) | Err(_) => None,
        }
    }

    /// Child `i`'s process id, while it may be running.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.kids.get(i).filter(|k| !k.exited).and_then(|k| k.pid)
    }

    /// SIGKILLs child `i` by pid.
    pub fn kill(&mut self, i: usize) {
        if let Some(k) = self.kids.get_mut(i) {
            if let Some(pid) = k.pid.take() {
                signal(pid, nix::sys::signal::Signal::SIGKILL);
            }
            k.stdin = None;
        }
    }

    /// Writes a line to child `i`'s standard input.
    pub async fn tell(&mut self, i: usize, line: &str) {
        if let Some(k) = self.kids.get_mut(i) {
            if let Some(s) = &mut k.stdin {
                let _ = s.write_all(format!("{line}\n").as_bytes()).await;
                let _ = s.flush().await;
            }
        }
    }

    /// Writes a line to every child.
    pub async fn tell_all(&mut self, line: &str) {
        for i in 0..self.kids.len() {
            self.tell(i, line).await;
        }
    }

    /// Closes every child's standard input (they exit), waits up to
    /// `grace` for them, then kills the rest by pid.
    pub async fn finish(mut self, grace: Duration) {
        for k in &mut self.kids {
            k.stdin = None;
        }
        let until = Instant::now() + grace;
        for k in &mut self.kids {
            if k.exited {
                continue;
            }
            if let Ok(Ok(_)) = tokio::time::timeout_at(until, k.child.wait()).await {
                k.exited = true;
                k.pid = None;
            }
        }
        // Drop kills by pid whatever did not exit.
    }
}
