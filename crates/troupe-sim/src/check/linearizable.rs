//! Linearizability of key-value histories, for the tests of services that
//! promise it (the etcd-compatible one first).
//!
//! A client history records, for each call, when it was made, when (if
//! ever) it returned, and what it returned. [`check_kv`] says whether some
//! total order of the calls, each taking effect at one instant between its
//! call and its return, explains every returned value with a single map
//! that starts empty. It returns a [`Verdict`]: linearizable, a violation
//! with the few calls around where every explanation broke down, or "gave
//! up" when the search ran out of budget (never a success).
//!
//! ```
//! use troupe_sim::check::linearizable::{check_kv, KvOp, KvOutcome, Operation, Verdict};
//!
//! let put = |call, ret, v: &str| Operation {
//!     client: 1,
//!     call,
//!     ret: Some(ret),
//!     op: KvOp::Put { key: b"k".to_vec(), value: v.as_bytes().to_vec() },
//!     outcome: KvOutcome::Put,
//! };
//! let get = |call, ret, v: &str| Operation {
//!     client: 2,
//!     call,
//!     ret: Some(ret),
//!     op: KvOp::Get { key: b"k".to_vec() },
//!     outcome: KvOutcome::Get(Some(v.as_bytes().to_vec())),
//! };
//! // The read overlaps the second write: it may see either value.
//! let h = vec![put(0, 10, "a"), put(20, 40, "b"), get(30, 50, "a")];
//! assert_eq!(check_kv(&h), Verdict::Linearizable);
//! // Once the second write has returned, reading the first value is stale.
//! let h = vec![put(0, 10, "a"), put(20, 40, "b"), get(45, 50, "a")];
//! assert!(matches!(check_kv(&h), Verdict::Violation { .. }));
//! ```
//!
//! How: the search of Wing and Gong (linearize, one by one, calls that no
//! pending call must precede; backtrack on a dead end) with Lowe's
//! memoisation (a set of linearized calls together with the map's value
//! is explored at most once), run on each key alone: a history of a map is
//! linearizable if and only if each key's sub-history is (Herlihy and Wing's
//! locality), which turns one search exponential in the whole history into
//! many small ones.
//!
//! Trade-offs and limits:
//! - Intervals are closed: two calls whose intervals only touch
//!   (`a.ret == b.call`) are concurrent, so a clock with coarse ticks gives
//!   false "linearizable" answers at worst, never false violations.
//! - A call whose outcome is unknown (failed, timed out, or never returned)
//!   stays pending forever. Many of them on one key, all pending at once,
//!   multiply the states to explore. Puts of unknown outcome are narrowed
//!   first (a put whose value was read must precede the reads; one whose
//!   value nobody read is dropped when no delete could need it), but the
//!   rest, and deletes of unknown outcome, stay pending. A correct history
//!   is usually accepted fast anyway (the search finds an order at once);
//!   ruling one out may have to try every subset of them, and the budget
//!   ([`STATES_PER_KEY_MAX`], or [`check_kv_with_budget`]) then ends the
//!   search with [`Verdict::GaveUp`].
//! - Keys are checked one after another, on one thread, in key order, so a
//!   verdict is deterministic.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::hash::BuildHasherDefault;

use super::FxHasher;

/// How many (set of linearized calls, value) states the search of one key
/// may explore before [`check_kv`] gives up. Half a million is a fraction
/// of a second and some tens of MB for keys of a few hundred calls; a
/// correct history of that size needs a few thousand.
pub const STATES_PER_KEY_MAX: usize = 500_000;

/// How many linearized calls the explanation of a violation shows before
/// the point where the search got stuck.
const EXPLAIN_BEFORE_MAX: usize = 4;

/// How many calls the explanation shows that could not be linearized next.
const EXPLAIN_STUCK_MAX: usize = 8;

/// How many bytes of a key or value a message shows.
const SHOW_BYTES_MAX: usize = 40;

/// What a client asked of the map.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvOp {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value written.
        value: Vec<u8>,
    },
    /// Read `key`.
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

impl KvOp {
    /// The key the call is about.
    pub fn key(&self) -> &[u8] {
        match self {
            KvOp::Put { key, .. } | KvOp::Get { key } | KvOp::Delete { key } => key,
        }
    }
}

/// What the client was told. Must match the [`KvOp`] (a `Put` returns
/// [`KvOutcome::Put`], ...), or be [`KvOutcome::Unknown`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvOutcome {
    /// The write was acknowledged.
    Put,
    /// The value read; `None` when the key was absent.
    Get(Option<Vec<u8>>),
    /// The delete was acknowledged; `deleted` says whether the key existed.
    Delete {
        /// Whether the key existed just before.
        deleted: bool,
    },
    /// The call failed or timed out: a write may have taken effect at any
    /// time after its call, or never; a read tells nothing.
    Unknown,
}

/// One call by one client, with its interval and outcome.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Operation {
    /// Who called; only shown in explanations (the real-time order of the
    /// intervals already orders each client's calls).
    pub client: u64,
    /// When the call was made, in nanoseconds of any clock that every client
    /// reads (monotonic, shared).
    pub call: u64,
    /// When it returned, on the same clock; `None` if it never did, which is
    /// read as [`KvOutcome::Unknown`] whatever `outcome` says.
    pub ret: Option<u64>,
    /// What was asked.
    pub op: KvOp,
    /// What was answered.
    pub outcome: KvOutcome,
}

/// The answer of [`check_kv`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some linearization explains every outcome.
    Linearizable,
    /// No linearization of the calls on `key` explains their outcomes.
    Violation {
        /// The first key (in byte order) found not linearizable.
        key: Vec<u8>,
        /// Several lines for a person: the calls around the point where the
        /// longest attempt got stuck, and why each could not come next.
        explanation: String,
    },
    /// The search of `key` exceeded its budget: nothing is known about it.
    /// Not a success. Only returned when no key was found in violation.
    GaveUp {
        /// The first key (in byte order) whose search gave up.
        key: Vec<u8>,
        /// How much was explored.
        reason: String,
    },
    /// The history cannot be read: an outcome of the wrong kind for its
    /// call, or a return before the call. A bug of the test, not the service.
    Malformed {
        /// The position of the offending operation in the history.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
}

impl Verdict {
    /// Whether the history was shown linearizable (`GaveUp` is not).
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

impl fmt::Display for Verdict {
    /// "linearizable", or what went wrong, over several lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => write!(f, "linearizable"),
            Verdict::Violation { key, explanation } => {
                write!(f, "not linearizable on key {}:\n{explanation}", show(key))
            }
            Verdict::GaveUp { key, reason } => {
                write!(f, "gave up on key {}: {reason}", show(key))
            }
            Verdict::Malformed { index, reason } => {
                write!(f, "malformed history, operation #{index}: {reason}")
            }
        }
    }
}

/// Checks that `history` is linearizable with respect to a map whose keys
/// all start absent, within [`STATES_PER_KEY_MAX`] states per key.
///
/// - a `Get` that returned saw the value of the last `Put` of its key
///   linearized before it, or `None` if there is none or a `Delete` came
///   after it;
/// - a `Delete` that returned says whether the key existed, and removes it;
/// - a write whose outcome is `Unknown` (or that never returned) took effect
///   at one instant after its call, or never;
/// - a read whose outcome is `Unknown` is ignored.
pub fn check_kv(history: &[Operation]) -> Verdict {
    check_kv_with_budget(history, STATES_PER_KEY_MAX)
}

/// [`check_kv`] with a budget of `states_per_key_max` explored states per
/// key instead of [`STATES_PER_KEY_MAX`].
pub fn check_kv_with_budget(history: &[Operation], states_per_key_max: usize) -> Verdict {
    let by_key = match split_by_key(history) {
        Ok(by_key) => by_key,
        Err(malformed) => return malformed,
    };
    let mut gave_up = None;
    for (key, entries) in by_key {
        match check_key(history, &entries, states_per_key_max) {
            KeyVerdict::Linearizable => {}
            KeyVerdict::Violation(explanation) => {
                return Verdict::Violation {
                    key: key.to_vec(),
                    explanation,
                }
            }
            KeyVerdict::GaveUp(reason) => {
                gave_up.get_or_insert(Verdict::GaveUp {
                    key: key.to_vec(),
                    reason,
                });
            }
        }
    }
    gave_up.unwrap_or(Verdict::Linearizable)
}

// ---------------------------------------------------------------------------
// One key's sub-history, in the form the search wants.

/// The value of the key in the model: `ABSENT`, or 1 + the index of the
/// value among the key's distinct values.
type Val = u32;

/// The key is absent.
const ABSENT: Val = 0;

/// The effect of a call on the key, and what it requires.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Sets the key.
    Write(Val),
    /// Requires the key to hold this (maybe `ABSENT`).
    Read(Val),
    /// Requires the key to be present (`true`) or absent, then removes it.
    Delete(bool),
    /// Removes the key, whatever it held (a delete of unknown outcome).
    DeleteAny,
}

impl Step {
    /// The value after the step from `v`, or None if the step cannot happen
    /// when the key holds `v`.
    fn apply(self, v: Val) -> Option<Val> {
        match self {
            Step::Write(w) => Some(w),
            Step::Read(r) => (r == v).then_some(v),
            Step::Delete(existed) => (existed == (v != ABSENT)).then_some(ABSENT),
            Step::DeleteAny => Some(ABSENT),
        }
    }
}

/// A call of the key's sub-history.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Its position in the whole history.
    index: usize,
    call: u64,
    /// `u64::MAX` when the call may never have taken effect.
    ret: u64,
    /// Whether it must be linearized (else it may be left out: a write of
    /// unknown outcome).
    required: bool,
    step: Step,
}

/// A key's calls, sorted by call time, and its distinct values.
struct KeyHistory<'h> {
    entries: Vec<Entry>,
    /// `values[v - 1]` is the bytes of value `v`.
    values: Vec<&'h [u8]>,
    /// The inverse of `values`.
    ids: BTreeMap<&'h [u8], Val>,
}

impl<'h> KeyHistory<'h> {
    /// The model's name for `value`.
    fn intern(&mut self, value: &'h [u8]) -> Val {
        if let Some(v) = self.ids.get(value) {
            return *v;
        }
        self.values.push(value);
        let v = Val::try_from(self.values.len()).expect("fewer than 2^32 values per key");
        self.ids.insert(value, v);
        v
    }

    /// `v` for a person.
    fn value(&self, v: Val) -> String {
        if v == ABSENT {
            "absent".to_string()
        } else {
            show(self.values[v as usize - 1])
        }
    }
}

/// Groups the calls by key, in key order, checking that each is readable.
fn split_by_key(history: &[Operation]) -> Result<BTreeMap<&[u8], KeyHistory<'_>>, Verdict> {
    let mut by_key: BTreeMap<&[u8], KeyHistory<'_>> = BTreeMap::new();
    for (index, o) in history.iter().enumerate() {
        let malformed = |reason: String| Verdict::Malformed { index, reason };
        if let Some(ret) = o.ret {
            if ret < o.call {
                return Err(malformed(format!(
                    "returned at {ret} before its call at {}",
                    o.call
                )));
            }
        }
        let kh = by_key.entry(o.op.key()).or_insert_with(|| KeyHistory {
            entries: Vec::new(),
            values: Vec::new(),
            ids: BTreeMap::new(),
        });
        // A call that never returned is one of unknown outcome.
        let (ret, outcome) = match o.ret {
            Some(ret) => (ret, &o.outcome),
            None => (u64::MAX, &KvOutcome::Unknown),
        };
        let (step, required) = match (&o.op, outcome) {
            (KvOp::Put { value, .. }, KvOutcome::Put) => (Step::Write(kh.intern(value)), true),
            (KvOp::Put { value, .. }, KvOutcome::Unknown) => (Step::Write(kh.intern(value)), false),
            (KvOp::Get { .. }, KvOutcome::Get(seen)) => {
                let v = seen.as_deref().map_or(ABSENT, |s| kh.intern(s));
                (Step::Read(v), true)
            }
            (KvOp::Get { .. }, KvOutcome::Unknown) => continue,
            (KvOp::Delete { .. }, KvOutcome::Delete { deleted }) => (Step::Delete(*deleted), true),
            (KvOp::Delete { .. }, KvOutcome::Unknown) => (Step::DeleteAny, false),
            (op, outcome) => {
                return Err(malformed(format!("{} answered {outcome:?}", show_op(op))));
            }
        };
        kh.entries.push(Entry {
            index,
            call: o.call,
            // A write that may never have happened can always be put last,
            // where nothing observes it: it never has to precede anything.
            ret: if required { ret } else { u64::MAX },
            required,
            step,
        });
    }
    for kh in by_key.values_mut() {
        pin_unknown_puts(&mut kh.entries);
        kh.entries.sort_by_key(|e| (e.call, e.index));
    }
    Ok(by_key)
}

/// Narrows the puts of unknown outcome, which otherwise stay pending
/// forever and multiply the states to explore by two each:
/// - one whose value was read, and that is the only put of that value, took
///   effect before every read of it: it becomes required, with the last of
///   those reads' returns as its own;
/// - one whose value no read returned can be dropped, unless a delete
///   that found the key present could come after it: in a linearization
///   with it, nothing reads the key between it and the next write, and
///   that write (a put, or a delete that may or may not find the key) does
///   not care what the key held.
fn pin_unknown_puts(entries: &mut Vec<Entry>) {
    let mut writers: BTreeMap<Val, usize> = BTreeMap::new();
    let mut last_read: BTreeMap<Val, u64> = BTreeMap::new();
    let mut last_found_delete = None;
    for e in entries.iter() {
        match e.step {
            Step::Write(v) => *writers.entry(v).or_default() += 1,
            Step::Read(v) => {
                let ret = last_read.entry(v).or_default();
                *ret = (*ret).max(e.ret);
            }
            Step::Delete(true) => last_found_delete = last_found_delete.max(Some(e.ret)),
            Step::Delete(false) | Step::DeleteAny => {}
        }
    }
    entries.retain_mut(|e| {
        let Step::Write(v) = e.step else {
            return true;
        };
        if e.required {
            return true;
        }
        match last_read.get(&v) {
            Some(&ret) if writers[&v] == 1 => {
                e.required = true;
                e.ret = ret.max(e.call);
                true
            }
            Some(_) => true,
            None => last_found_delete.is_some_and(|d| d >= e.call),
        }
    });
}

// ---------------------------------------------------------------------------
// The search.

/// The answer for one key.
enum KeyVerdict {
    Linearizable,
    Violation(String),
    GaveUp(String),
}

/// Checks one key's sub-history.
fn check_key(history: &[Operation], kh: &KeyHistory<'_>, states_max: usize) -> KeyVerdict {
    // A read of a value that no call ever wrote needs no search, and says
    // more plainly what is wrong than a dead end would.
    let written: BTreeSet<Val> = kh
        .entries
        .iter()
        .filter_map(|e| match e.step {
            Step::Write(v) => Some(v),
            _ => None,
        })
        .collect();
    for e in &kh.entries {
        if let Step::Read(v) = e.step {
            if v != ABSENT && !written.contains(&v) {
                return KeyVerdict::Violation(format!(
                    "  {}\n  read {}, which no call ever wrote to this key\n",
                    show_call(history, e),
                    kh.value(v)
                ));
            }
        }
    }
    match search(&kh.entries, states_max) {
        Search::Linearizable => KeyVerdict::Linearizable,
        Search::Stuck { best, states } => {
            KeyVerdict::Violation(explain(history, kh, &best, states))
        }
        Search::GaveUp { states } => KeyVerdict::GaveUp(format!(
            "explored {states} states of its {} calls (limit {states_max}) without finding a \
             linearization or ruling one out; nothing is known about this key",
            kh.entries.len()
        )),
    }
}

/// What the search of one key found.
enum Search {
    Linearizable,
    /// No linearization; `best` is one of the longest partial ones found (by
    /// required calls), as indices into the entries, in linearization order.
    Stuck {
        best: Vec<usize>,
        states: usize,
    },
    GaveUp {
        states: usize,
    },
}

/// A state of the search: the set of linearized entries, one bit each, and
/// in a last word the key's value after them. One flat slice, so that the
/// cache is looked up without building a key.
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64) + 1])
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
    fn set_value(&mut self, v: Val) {
        *self.0.last_mut().expect("never empty") = u64::from(v);
    }
    /// The first index not in the set (maybe past the end).
    fn first_clear(&self) -> usize {
        let sets = &self.0[..self.0.len() - 1];
        sets.iter()
            .position(|w| *w != u64::MAX)
            .map_or(sets.len() * 64, |w| {
                w * 64 + sets[w].trailing_ones() as usize
            })
    }
}

/// Wing and Gong's search with Lowe's cache, over `entries` sorted by call.
///
/// At each point, the entries that may be linearized next are the ones not
/// yet linearized that were called no later than the earliest return of a
/// pending required entry (that one must come before anything called after
/// it returned). Entries are tried in call order; a step whose resulting
/// (linearized set, value) was already explored is skipped, since what can
/// follow depends on nothing else. Success when every required entry is
/// linearized: the writes of unknown outcome left can go last, unobserved.
fn search(entries: &[Entry], states_max: usize) -> Search {
    let n = entries.len();
    let mut linearized = Bits::new(n);
    // The required entries not linearized, by return time: the first one is
    // the bound on what may come next.
    let mut pending: BTreeSet<(u64, usize)> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.required)
        .map(|(i, e)| (e.ret, i))
        .collect();
    let required = pending.len();
    let mut seen: HashSet<Box<[u64]>, BuildHasherDefault<FxHasher>> = HashSet::default();
    // The linearization so far: (entry, value before it).
    let mut stack: Vec<(usize, Val)> = Vec::new();
    let mut value = ABSENT;
    let mut best: Vec<usize> = Vec::new();
    let mut best_required = 0;
    let mut next = 0;
    loop {
        let Some(&(bound, _)) = pending.first() else {
            return Search::Linearizable;
        };
        let mut stepped = false;
        let mut i = next.max(linearized.first_clear());
        while i < n && entries[i].call <= bound {
            let e = &entries[i];
            if !linearized.get(i) {
                if let Some(after) = e.step.apply(value) {
                    linearized.set(i);
                    linearized.set_value(after);
                    if !seen.contains(&linearized.0[..]) {
                        seen.insert(linearized.0.clone().into_boxed_slice());
                        if seen.len() > states_max {
                            return Search::GaveUp { states: seen.len() };
                        }
                        stack.push((i, value));
                        value = after;
                        if e.required {
                            pending.remove(&(e.ret, i));
                        }
                        if required - pending.len() > best_required {
                            best_required = required - pending.len();
                            best = stack.iter().map(|(j, _)| *j).collect();
                        }
                        stepped = true;
                        break;
                    }
                    linearized.clear(i);
                }
            }
            i += 1;
        }
        if stepped {
            next = 0;
            continue;
        }
        // Dead end: undo the last step and try what comes after it.
        let Some((j, before)) = stack.pop() else {
            return Search::Stuck {
                best,
                states: seen.len(),
            };
        };
        debug_assert!(linearized.get(j));
        linearized.clear(j);
        value = before;
        if entries[j].required {
            pending.insert((entries[j].ret, j));
        }
        next = j + 1;
    }
}

// ---------------------------------------------------------------------------
// Explanations.

/// The calls around the point where the longest linearization found (`best`)
/// could not go on, and why each candidate could not come next.
fn explain(history: &[Operation], kh: &KeyHistory<'_>, best: &[usize], states: usize) -> String {
    let entries = &kh.entries;
    let mut linearized = Bits::new(entries.len());
    let mut value = ABSENT;
    let mut last_write: Option<usize> = None;
    for &i in best {
        linearized.set(i);
        value = entries[i]
            .step
            .apply(value)
            .expect("the best linearization was built from steps that apply");
        if !matches!(entries[i].step, Step::Read(_)) {
            last_write = Some(i);
        }
    }
    let required = entries.iter().filter(|e| e.required).count();
    let done = best.iter().filter(|&&i| entries[i].required).count();
    let blocking = (0..entries.len())
        .filter(|&i| entries[i].required && !linearized.get(i))
        .min_by_key(|&i| (entries[i].ret, i))
        .expect("a failed search leaves a required call out");
    let bound = entries[blocking].ret;

    let mut out = format!(
        "  no order of its {} calls explains what they returned ({states} states explored);\n  \
         the longest explanation found covers {done} of the {required} calls that must have \
         taken effect, and ends with the key {}{}.\n",
        entries.len(),
        kh.value(value),
        match last_write {
            Some(w) => format!(" (from #{})", entries[w].index),
            None => String::new(),
        }
    );
    let shown = best.len().min(EXPLAIN_BEFORE_MAX);
    if shown > 0 {
        out.push_str("  last calls taking effect, in that order:\n");
        if best.len() > shown {
            out.push_str(&format!("    ... {} earlier\n", best.len() - shown));
        }
        for &i in &best[best.len() - shown..] {
            out.push_str(&format!("    {}\n", show_call(history, &entries[i])));
        }
    }
    out.push_str(&format!(
        "  none of these can take effect next (each was called before #{} returned at {}):\n",
        entries[blocking].index, bound
    ));
    let stuck: Vec<usize> = (0..entries.len())
        .filter(|&i| !linearized.get(i) && entries[i].call <= bound)
        .collect();
    for &i in stuck.iter().take(EXPLAIN_STUCK_MAX) {
        let e = &entries[i];
        let why = match e.step {
            Step::Read(v) => match e.step.apply(value) {
                None => format!("it read {} but the key is {}", kh.value(v), kh.value(value)),
                Some(_) => "every order after it fails".to_string(),
            },
            Step::Delete(existed) if e.step.apply(value).is_none() => format!(
                "it says the key {} but the key is {}",
                if existed { "existed" } else { "was absent" },
                kh.value(value)
            ),
            _ => "every order after it fails".to_string(),
        };
        out.push_str(&format!("    {}: {why}\n", show_call(history, e)));
    }
    if stuck.len() > EXPLAIN_STUCK_MAX {
        out.push_str(&format!(
            "    ... {} more\n",
            stuck.len() - EXPLAIN_STUCK_MAX
        ));
    }
    out
}

/// One call for a person: `#12 client 3 [100, 250] get -> "a"`.
fn show_call(history: &[Operation], e: &Entry) -> String {
    let o = &history[e.index];
    let ret = o
        .ret
        .map_or("never returned".to_string(), |r| r.to_string());
    let outcome = match (o.ret, &o.outcome) {
        (None, _) | (_, KvOutcome::Unknown) => "unknown".to_string(),
        (_, KvOutcome::Put) => "ok".to_string(),
        (_, KvOutcome::Get(Some(v))) => show(v),
        (_, KvOutcome::Get(None)) => "absent".to_string(),
        (_, KvOutcome::Delete { deleted }) => format!("deleted={deleted}"),
    };
    format!(
        "#{} client {} [{}, {ret}] {} -> {outcome}",
        e.index,
        o.client,
        o.call,
        show_op(&o.op)
    )
}

/// A call without its key (explanations are per key): `put "a"`, `get`.
fn show_op(op: &KvOp) -> String {
    match op {
        KvOp::Put { value, .. } => format!("put {}", show(value)),
        KvOp::Get { .. } => "get".to_string(),
        KvOp::Delete { .. } => "delete".to_string(),
    }
}

/// Bytes for a person: quoted text when printable, else hex; long ones cut.
fn show(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(SHOW_BYTES_MAX)];
    let more = if bytes.len() > cut.len() { "..." } else { "" };
    match std::str::from_utf8(cut) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => format!("{s:?}{more}"),
        _ => {
            let hex: String = cut.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}{more}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(call: u64, ret: u64, required: bool, step: Step) -> Entry {
        Entry {
            index: 0,
            call,
            ret,
            required,
            step,
        }
    }

    #[test]
    fn search_finds_the_order_that_is_not_the_call_order() {
        // The read is called first but must come after the write it saw.
        let es = [
            entry(0, 10, true, Step::Read(1)),
            entry(1, 5, true, Step::Write(1)),
        ];
        assert!(matches!(search(&es, 100), Search::Linearizable));
    }

    #[test]
    fn search_backtracks_out_of_a_wrong_first_choice() {
        // Two concurrent writes, then a read of the first one called: the
        // search tries the writes in call order, which leaves the second
        // value, so it must undo them and try the other order.
        let es = [
            entry(0, 10, true, Step::Write(2)),
            entry(1, 10, true, Step::Write(1)),
            entry(20, 30, true, Step::Read(2)),
        ];
        assert!(matches!(search(&es, 100), Search::Linearizable));
    }

    #[test]
    fn search_reports_a_longest_attempt_when_stuck() {
        let es = [
            entry(0, 10, true, Step::Write(1)),
            entry(20, 30, true, Step::Write(2)),
            entry(40, 50, true, Step::Read(1)),
        ];
        match search(&es, 100) {
            Search::Stuck { best, .. } => assert_eq!(best, vec![0, 1]),
            _ => panic!("a stale read must be stuck"),
        }
    }

    #[test]
    fn bits_first_clear_skips_full_words() {
        let mut b = Bits::new(130);
        for i in 0..70 {
            b.set(i);
        }
        assert_eq!(b.first_clear(), 70);
        b.clear(3);
        assert_eq!(b.first_clear(), 3);
    }

    #[test]
    fn show_quotes_text_and_hexes_binary() {
        assert_eq!(show(b"ab"), "\"ab\"");
        assert_eq!(show(&[0, 255]), "0x00ff");
        assert!(show(&[b'x'; 100]).ends_with("..."));
    }
}
