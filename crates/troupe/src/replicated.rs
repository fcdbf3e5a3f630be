//! [`Replicated`]: a state machine replicated on every member of a group.
//!
//! Commands are multicast `Total` (or `Safe`) so that every member applies
//! the same commands in the same order; a joiner receives a snapshot taken at
//! the exact view boundary where it joined (virtual synchrony makes "the state
//! of every old member at that boundary" one well-defined state), and then
//! applies the commands that follow.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{debug, warn};
use troupe_core::{Event, ExitReason, MemberId, Ordering, View};

use crate::config::ConfigError;
use crate::driver::lock;
use crate::error::Error;
use crate::group::{Events, Group, GroupHandle};

/// First byte of a command's payload: lets a replicated state machine share
/// its group with other traffic, which it ignores.
const COMMAND_TAG: u8 = 0xC5;

/// Bytes before the command itself: the tag and the request number.
const COMMAND_HEADER_BYTES: usize = 9;

/// Pause between two rejoin attempts after an exclusion.
const REJOIN_RETRY: Duration = Duration::from_millis(500);

/// A deterministic state machine: the same commands in the same order from
/// the same state give the same state and the same outputs, at every member.
pub trait StateMachine: Send + 'static {
    /// Applies one command and returns its output.
    fn apply(&mut self, cmd: &[u8]) -> Vec<u8>;
    /// The whole state, for a joiner.
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the state with a snapshot taken by [`StateMachine::snapshot`]
    /// at another member.
    fn restore(&mut self, snapshot: &[u8]);
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Vec<u8>, Error>>>>>;

/// A [`StateMachine`] replicated on a group: see the module documentation.
///
/// ```no_run
/// use troupe::{Group, Ordering, Replicated, StateMachine};
///
/// #[derive(Default)]
/// struct Counter(u64);
///
/// impl StateMachine for Counter {
///     fn apply(&mut self, cmd: &[u8]) -> Vec<u8> {
///         self.0 += cmd.len() as u64;
///         self.0.to_le_bytes().to_vec()
///     }
///     fn snapshot(&self) -> Vec<u8> {
///         self.0.to_le_bytes().to_vec()
///     }
///     fn restore(&mut self, s: &[u8]) {
///         self.0 = s.try_into().map(u64::from_le_bytes).unwrap_or(0);
///     }
/// }
///
/// # async fn demo() -> Result<(), troupe::Error> {
/// let g = Group::builder("counter").start().await?;
/// let counter = Replicated::new(g, Counter::default(), Ordering::Total)?;
/// let out = counter.execute("+").await?;
/// assert_eq!(out, 1u64.to_le_bytes());
/// # Ok(())
/// # }
/// ```
pub struct Replicated<T: StateMachine> {
    handle: GroupHandle,
    state: Arc<Mutex<T>>,
    pending: Pending,
    next: AtomicU64,
    ordering: Ordering,
    task: JoinHandle<()>,
}

impl<T: StateMachine> Replicated<T> {
    /// Replicates `machine` on `group`, whose events it takes over. The
    /// member that created the group starts from `machine`; joiners start
    /// from a snapshot. `ordering` must be `Total` or `Safe`.
    pub fn new(group: Group, machine: T, ordering: Ordering) -> Result<Replicated<T>, Error> {
        if !ordering.is_totally_ordered() {
            return Err(Error::Config(ConfigError::Invalid(format!(
                "a replicated state machine needs total or safe ordering, not {ordering}"
            ))));
        }
        let (handle, events) = group.split();
        let state = Arc::new(Mutex::new(machine));
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let task = tokio::spawn(apply_loop(
            handle.clone(),
            events,
            state.clone(),
            pending.clone(),
        ));
        Ok(Replicated {
            handle,
            state,
            pending,
            next: AtomicU64::new(1),
            ordering,
            task,
        })
    }

    /// Orders `cmd` with every other member's commands and returns its output
    /// once this member has applied it. On [`Error::Exited`] the outcome is
    /// unknown: the member was excluded (it rejoins by itself) while the
    /// command was in flight.
    pub async fn execute(&self, cmd: impl AsRef<[u8]>) -> Result<Vec<u8>, Error> {
        let cmd = cmd.as_ref();
        let n = self.next.fetch_add(1, AtomicOrdering::Relaxed);
        let mut payload = BytesMut::with_capacity(COMMAND_HEADER_BYTES + cmd.len());
        payload.put_u8(COMMAND_TAG);
        payload.put_u64_le(n);
        payload.put_slice(cmd);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(n, tx);
        if let Err(e) = self.handle.send(self.ordering, payload.freeze()).await {
            lock(&self.pending).remove(&n);
            return Err(e);
        }
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Reads the local replica (it reflects every command applied here so far).
    pub fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&lock(&self.state))
    }

    /// The group underneath (for its view, its id, or other traffic).
    pub fn handle(&self) -> &GroupHandle {
        &self.handle
    }

    /// The current view, if this member is in one.
    pub fn view(&self) -> Option<View> {
        self.handle.view()
    }

    /// Leaves the group.
    pub async fn leave(&self) -> Result<(), Error> {
        self.handle.leave().await
    }
}

impl<T: StateMachine> Drop for Replicated<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Splits a delivered payload into request number and command.
fn parse_command(payload: &[u8]) -> Option<(u64, &[u8])> {
    if payload.len() < COMMAND_HEADER_BYTES || payload[0] != COMMAND_TAG {
        return None;
    }
    let n = u64::from_le_bytes(payload[1..COMMAND_HEADER_BYTES].try_into().ok()?);
    Some((n, &payload[COMMAND_HEADER_BYTES..]))
}

async fn apply_loop<T: StateMachine>(
    handle: GroupHandle,
    mut events: Events,
    state: Arc<Mutex<T>>,
    pending: Pending,
) {
    // The id whose deliveries answer our own `execute` calls.
    let mut me: MemberId = handle.me();
    while let Some(ev) = events.recv().await {
        match ev {
            Event::View(_) => me = handle.me(),
            Event::Deliver(d) => {
                if !d.ordering.is_totally_ordered() {
                    continue;
                }
                let Some((n, cmd)) = parse_command(&d.payload) else {
                    continue;
                };
                let out = lock(&state).apply(cmd);
                if d.sender == me {
                    if let Some(tx) = lock(&pending).remove(&n) {
                        let _ = tx.send(Ok(out));
                    }
                }
            }
            Event::StateNeeded { view } => {
                let snap = lock(&state).snapshot();
                if handle.provide_state(view, snap).await.is_err() {
                    return;
                }
            }
            Event::StateInstalled { view, snapshot } => {
                debug!(%view, bytes = snapshot.len(), "replicated state installed");
                lock(&state).restore(&snapshot);
            }
            Event::Mark { .. } => {}
            Event::Query { id, .. } => {
                // Not ours to answer meaningfully; an empty reply keeps the asker from waiting.
                let _ = handle.reply(id, Bytes::new()).await;
            }
            Event::Exited(reason) => {
                for (_, tx) in lock(&pending).drain() {
                    let _ = tx.send(Err(Error::Exited(reason)));
                }
                if reason == ExitReason::Left {
                    return;
                }
                loop {
                    match handle.rejoin().await {
                        Ok(id) => {
                            me = id;
                            break;
                        }
                        Err(Error::Closed) => return,
                        Err(e) => {
                            warn!(error = %e, "rejoin failed; retrying");
                            tokio::time::sleep(REJOIN_RETRY).await;
                        }
                    }
                }
            }
            Event::Blocked | Event::QueryDone { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_header_round_trips_and_garbage_is_ignored() {
        let mut p = vec![COMMAND_TAG];
        p.extend_from_slice(&7u64.to_le_bytes());
        p.extend_from_slice(b"x");
        assert_eq!(parse_command(&p), Some((7, &b"x"[..])));
        assert_eq!(parse_command(&p[..5]), None);
        assert_eq!(parse_command(b"hello world"), None);
    }
}
