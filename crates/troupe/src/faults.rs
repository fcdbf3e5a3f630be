//! Faults the transport injects on purpose: lost datagrams and network
//! partitions for tests that run real processes.
//!
//! The deterministic simulator (`troupe-sim`) injects faults into the engine
//! with full control and replay. Kernel traffic shaping is not always
//! available, and a test of a whole service (its clients, its disk, its
//! processes) needs them on real sockets too. A [`FaultInjector`] given to a
//! group (see [`crate::GroupBuilder::faults`]) does that inside the
//! transport.
//!
//! Faults act on what a member *sends*. A datagram is discarded before it
//! reaches a socket, exactly as if the network had lost it, when:
//! - its destination is in [`Faults::block`]; or
//! - a coin with probability [`Faults::drop`] says so.
//!
//! A datagram that goes is held back [`Faults::delay_ms`] plus a uniform
//! draw up to [`Faults::jitter_ms`] first. The datagrams to one peer keep
//! their order (they share a connection), so jitter delays them without
//! reordering them: a later one waits for an earlier one held longer.
//!
//! The engine repairs loss as it always does, and a silence long enough
//! leads to suspicion and a view change. A datagram a member addresses to
//! itself is never dropped or delayed.
//!
//! A partition between members A and B is A blocking B's address *and* B
//! blocking A's. A one-sided block is a one-way link failure, which is also
//! worth testing.
//!
//! Faults can be changed at any time, and every transport that shares the
//! injector sees the change at its next datagram. That includes the groups a
//! process forms again after it was excluded.
//!
//! ```
//! use troupe::{FaultInjector, Faults};
//!
//! let faults = FaultInjector::new();
//! faults.set(Faults::from_toml("drop = 0.05\nblock = [\"127.0.0.1:7001\"]")?)?;
//! assert!(faults.is_active());
//! faults.clear();
//! assert!(!faults.is_active());
//! # Ok::<(), troupe::FaultsError>(())
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::info;

/// What to inject; the default injects nothing.
///
/// As TOML (every field optional):
///
/// ```toml
/// drop = 0.1                                   # lose 10% of datagrams
/// block = ["127.0.0.1:2380", "127.0.0.1:2381"] # send nothing to these
/// delay_ms = 20                                # hold each one 20 ms
/// jitter_ms = 30                               # and up to 30 ms more
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Probability, from 0 to 1, that an outbound datagram is lost.
    pub drop: f64,
    /// Peer addresses, as those members advertise them (`host:port`; an
    /// `http://` or `https://` prefix is ignored), that nothing is sent to.
    pub block: Vec<String>,
    /// Milliseconds every datagram to a peer is held back.
    pub delay_ms: u64,
    /// Up to this many milliseconds more, drawn uniformly per datagram.
    pub jitter_ms: u64,
}

/// Why a fault description was refused.
#[derive(Debug, thiserror::Error)]
pub enum FaultsError {
    /// The file could not be read.
    #[error("cannot read the fault file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// The text is not a fault description.
    #[error("{what}: {message}")]
    Parse {
        /// The file, or "fault description" for text.
        what: String,
        /// What is wrong, as the TOML parser says it.
        message: String,
    },
    /// `drop` is not a probability.
    #[error("drop = {0} is not a probability between 0 and 1")]
    Drop(f64),
    /// An entry of `block` is empty.
    #[error("an empty address in block")]
    EmptyAddress,
    /// `delay_ms` plus `jitter_ms` is over [`DELAY_MS_MAX`].
    #[error("delay_ms + jitter_ms = {0} is over the limit of {DELAY_MS_MAX} ms")]
    Delay(u64),
}

/// Longest delay (with jitter) the transport holds a datagram for: longer
/// is a partition, which `block` says more plainly.
pub const DELAY_MS_MAX: u64 = 60_000;

impl Faults {
    /// Nothing injected.
    pub fn none() -> Faults {
        Faults::default()
    }

    /// Whether this injects anything.
    pub fn is_none(&self) -> bool {
        self.drop == 0.0 && self.block.is_empty() && self.delay_ms == 0 && self.jitter_ms == 0
    }

    /// Parses a TOML description and checks it.
    pub fn from_toml(text: &str) -> Result<Faults, FaultsError> {
        Faults::parse(text, "fault description")
    }

    /// Reads a TOML file (an empty file injects nothing) and checks it.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Faults, FaultsError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| FaultsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Faults::parse(&text, &path.display().to_string())
    }

    fn parse(text: &str, what: &str) -> Result<Faults, FaultsError> {
        let f: Faults = toml::from_str(text).map_err(|e| FaultsError::Parse {
            what: what.to_string(),
            message: e.message().to_string(),
        })?;
        f.checked()
    }

    /// Whether these faults can be injected (what [`FaultInjector::set`]
    /// checks).
    pub fn check(&self) -> Result<(), FaultsError> {
        self.clone().checked().map(|_| ())
    }

    /// The same faults with addresses normalised, or why they cannot work.
    fn checked(mut self) -> Result<Faults, FaultsError> {
        if !(0.0..=1.0).contains(&self.drop) {
            return Err(FaultsError::Drop(self.drop));
        }
        let delay = self.delay_ms.saturating_add(self.jitter_ms);
        if delay > DELAY_MS_MAX {
            return Err(FaultsError::Delay(delay));
        }
        for a in &mut self.block {
            let bare = a
                .strip_prefix("http://")
                .or_else(|| a.strip_prefix("https://"))
                .unwrap_or(a)
                .trim_end_matches('/')
                .to_string();
            if bare.is_empty() {
                return Err(FaultsError::EmptyAddress);
            }
            *a = bare;
        }
        Ok(self)
    }
}

/// A handle on the faults of one or more transports; cheap to clone, and
/// every clone sees the same faults. The default injects nothing.
#[derive(Clone, Debug, Default)]
pub struct FaultInjector {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Anything to inject: the only thing a datagram looks at when nothing
    /// is (one relaxed load).
    active: AtomicBool,
    state: Mutex<State>,
    /// Datagrams discarded so far.
    dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    faults: Faults,
    /// `drop` as a threshold on a uniform u64.
    drop_below: u64,
    /// xorshift64* state; never 0 once seeded.
    rng: u64,
}

impl FaultInjector {
    /// An injector that injects nothing until [`FaultInjector::set`].
    pub fn new() -> FaultInjector {
        FaultInjector::default()
    }

    /// Replaces the faults, after checking them.
    pub fn set(&self, faults: Faults) -> Result<(), FaultsError> {
        let faults = faults.checked()?;
        let mut st = lock(&self.inner.state);
        if faults != st.faults {
            info!(
                drop = faults.drop,
                block = ?faults.block,
                delay_ms = faults.delay_ms,
                jitter_ms = faults.jitter_ms,
                "transport faults set"
            );
        }
        // The product is at most 2^64; `as` saturates at u64::MAX.
        st.drop_below = (faults.drop * 18_446_744_073_709_551_616.0) as u64;
        if st.rng == 0 {
            st.rng = seed();
        }
        self.inner
            .active
            .store(!faults.is_none(), AtomicOrdering::Release);
        st.faults = faults;
        Ok(())
    }

    /// Injects nothing from now on.
    pub fn clear(&self) {
        let mut st = lock(&self.inner.state);
        if !st.faults.is_none() {
            info!("transport faults cleared");
        }
        self.inner.active.store(false, AtomicOrdering::Release);
        st.faults = Faults::none();
        st.drop_below = 0;
    }

    /// The faults injected now.
    pub fn faults(&self) -> Faults {
        lock(&self.inner.state).faults.clone()
    }

    /// Whether anything is injected now.
    pub fn is_active(&self) -> bool {
        self.inner.active.load(AtomicOrdering::Acquire)
    }

    /// Datagrams discarded so far, by every transport sharing this injector.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(AtomicOrdering::Relaxed)
    }

    /// What becomes of a datagram to `addr` (discards are counted).
    pub(crate) fn fate(&self, addr: &[u8]) -> Fate {
        if !self.is_active() {
            return Fate::Send;
        }
        let mut st = lock(&self.inner.state);
        let gone = st.faults.block.iter().any(|b| b.as_bytes() == addr) || {
            let below = st.drop_below;
            below > 0 && next(&mut st.rng) < below
        };
        if gone {
            self.inner.dropped.fetch_add(1, AtomicOrdering::Relaxed);
            return Fate::Drop;
        }
        let (delay, jitter) = (st.faults.delay_ms, st.faults.jitter_ms);
        if delay == 0 && jitter == 0 {
            return Fate::Send;
        }
        let extra = match jitter {
            0 => 0,
            j => next(&mut st.rng) % (j.saturating_mul(1000) + 1),
        };
        Fate::Delay(Duration::from_micros(delay.saturating_mul(1000) + extra))
    }
}

/// What the transport does with one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Send it now.
    Send,
    /// Discard it.
    Drop,
    /// Send it after this long.
    Delay(Duration),
}

/// A seed that differs between processes and between injectors.
fn seed() -> u64 {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let s = t
        ^ u64::from(std::process::id()).rotate_left(32)
        ^ COUNT
            .fetch_add(1, AtomicOrdering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    s.max(1)
}

/// xorshift64*: plenty for a coin; not for anything an attacker sees.
fn next(s: &mut u64) -> u64 {
    let mut x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_addresses_are_dropped_and_others_are_not() {
        let f = FaultInjector::new();
        assert_eq!(f.fate(b"127.0.0.1:1"), Fate::Send);
        f.set(Faults {
            block: vec!["http://127.0.0.1:1/".into()],
            ..Faults::none()
        })
        .expect("valid");
        assert_eq!(f.faults().block, vec!["127.0.0.1:1".to_string()]);
        assert_eq!(f.fate(b"127.0.0.1:1"), Fate::Drop);
        assert_eq!(f.fate(b"127.0.0.1:2"), Fate::Send);
        assert_eq!(f.dropped(), 1);
        f.clear();
        assert_eq!(f.fate(b"127.0.0.1:1"), Fate::Send);
    }

    #[test]
    fn delays_stay_within_delay_plus_jitter_and_spread_over_it() {
        let f = FaultInjector::new();
        f.set(Faults::from_toml("delay_ms = 20\njitter_ms = 30").expect("parses"))
            .expect("valid");
        let ds: Vec<Duration> = (0..10_000)
            .map(|_| match f.fate(b"a:1") {
                Fate::Delay(d) => d,
                other => panic!("not delayed: {other:?}"),
            })
            .collect();
        let (lo, hi) = (Duration::from_millis(20), Duration::from_millis(50));
        assert!(ds.iter().all(|d| (lo..=hi).contains(d)));
        // Both halves of the jitter are drawn.
        assert!(ds.iter().any(|d| *d < Duration::from_millis(25)));
        assert!(ds.iter().any(|d| *d > Duration::from_millis(45)));
        assert!(matches!(
            Faults::from_toml("delay_ms = 60000\njitter_ms = 1"),
            Err(FaultsError::Delay(60_001))
        ));
    }

    #[test]
    fn drop_probability_is_about_what_was_asked() {
        let f = FaultInjector::new();
        f.set(Faults::from_toml("drop = 0.25").expect("parses"))
            .expect("valid");
        let n = 100_000;
        let lost = (0..n).filter(|_| f.fate(b"a:1") == Fate::Drop).count();
        // 0.25 +- 1% of 100k: more than 20 standard deviations apart.
        assert!((24_000..26_000).contains(&lost), "lost {lost} of {n}");
        f.set(Faults::from_toml("drop = 1.0").expect("parses"))
            .expect("valid");
        assert!((0..1000).all(|_| f.fate(b"a:1") == Fate::Drop));
    }

    #[test]
    fn bad_descriptions_are_refused_with_what_is_wrong() {
        let e = Faults::from_toml("drop = 1.5").expect_err("not a probability");
        assert!(e.to_string().contains("1.5"), "{e}");
        let e = Faults::from_toml("drop = nan").expect_err("not a probability");
        assert!(matches!(e, FaultsError::Drop(_)), "{e}");
        let e = Faults::from_toml("dorp = 0.1").expect_err("unknown field");
        assert!(e.to_string().contains("dorp"), "{e}");
        let e = Faults::from_toml("block = [\"\"]").expect_err("empty address");
        assert!(matches!(e, FaultsError::EmptyAddress), "{e}");
        let e = Faults::from_toml_file("/nonexistent/faults.toml").expect_err("no file");
        assert!(e.to_string().contains("/nonexistent/faults.toml"), "{e}");
        assert!(Faults::from_toml("").expect("empty is none").is_none());
        // A refused description leaves the faults as they were.
        let f = FaultInjector::new();
        f.set(Faults::from_toml("block = [\"x:1\"]").expect("parses"))
            .expect("valid");
        assert!(f
            .set(Faults {
                drop: -0.1,
                ..Faults::none()
            })
            .is_err());
        assert_eq!(f.faults().block, vec!["x:1".to_string()]);
        assert!(f.is_active());
    }
}
