//! Checkers: one per property of `GUARANTEES.md`, over a recorded [`History`].
//!
//! [`check_all`] reads a whole run's history (from the simulator or from real
//! processes) and returns a [`Report`]: every broken promise as a
//! [`Violation`] with a sentence a person can act on, how many of each were
//! found, and the failover and join latencies measured on the way.
//!
//! ```
//! use troupe_sim::check::{check_all, trace_around};
//! use troupe_sim::history::History;
//!
//! let history = History::default();
//! let report = check_all(&history);
//! for v in &report.violations {
//!     println!("{v}");
//!     println!("{}", trace_around(&history, v, 12));
//! }
//! assert!(report.is_ok());
//! ```
//!
//! One module per property class, one function per property, each documented
//! with the property it checks:
//! - `membership`: M1-M4 (and the failover/join measurements),
//! - `delivery`: V1-V5,
//! - `order`: O1-O4,
//! - `state`: S1-S2,
//! - `marks`: K1-K2, troupe's own properties of `Engine::set_mark`.
//!
//! All checkers share one index of the history, built in a single pass, so
//! that each is near-linear in the number of records: hash maps keyed by
//! message or member, never a scan of all records per record. Output is
//! deterministic: checkers walk the history, or `BTreeMap`s, in a fixed order,
//! and the report is sorted by time then property.

mod delivery;
pub mod linearizable;
mod marks;
mod membership;
mod order;
mod state;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use serde::Serialize;
use troupe_core::{Ordering, Time};

use crate::history::{History, MemberIdRepr, MsgKey, Record, RecordKind, ViewIdRepr};

/// How many violations of one property a [`Report`] keeps (the earliest
/// ones). A badly broken run breaks the same promise thousands of times; the
/// first few say what is wrong, and [`Report::counts`] still counts them all.
pub const VIOLATIONS_PER_PROPERTY_MAX: usize = 20;

/// How many example messages (or members) a violation names: enough to find
/// them in a trace, few enough to read.
pub(crate) const EXAMPLES_MAX: usize = 5;

/// A property of `GUARANTEES.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Property {
    /// M1 view agreement.
    M1,
    /// M2 view order.
    M2,
    /// M3 primary continuity.
    M3,
    /// M4 liveness of membership.
    M4,
    /// V1 integrity.
    V1,
    /// V2 sending view.
    V2,
    /// V3 virtual synchrony.
    V3,
    /// V4 self delivery.
    V4,
    /// V5 liveness of delivery.
    V5,
    /// O1 fifo.
    O1,
    /// O2 causal.
    O2,
    /// O3 total.
    O3,
    /// O4 uniformity (safe).
    O4,
    /// S1 state transfer.
    S1,
    /// S2 replicated determinism.
    S2,
    /// K1 mark integrity (marks are troupe's own; not in `GUARANTEES.md`).
    K1,
    /// K2 mark liveness.
    K2,
}

impl Property {
    /// Every property, in the order of `GUARANTEES.md`, then troupe's own.
    pub const ALL: [Property; 17] = [
        Property::M1,
        Property::M2,
        Property::M3,
        Property::M4,
        Property::V1,
        Property::V2,
        Property::V3,
        Property::V4,
        Property::V5,
        Property::O1,
        Property::O2,
        Property::O3,
        Property::O4,
        Property::S1,
        Property::S2,
        Property::K1,
        Property::K2,
    ];

    /// The property's name in `GUARANTEES.md`, e.g. "view agreement".
    pub fn title(self) -> &'static str {
        match self {
            Property::M1 => "view agreement",
            Property::M2 => "view order",
            Property::M3 => "primary continuity",
            Property::M4 => "membership liveness",
            Property::V1 => "integrity",
            Property::V2 => "sending view",
            Property::V3 => "virtual synchrony",
            Property::V4 => "self delivery",
            Property::V5 => "delivery liveness",
            Property::O1 => "fifo",
            Property::O2 => "causal",
            Property::O3 => "total",
            Property::O4 => "uniformity (safe)",
            Property::S1 => "state transfer",
            Property::S2 => "replicated determinism",
            Property::K1 => "mark integrity",
            Property::K2 => "mark liveness",
        }
    }
}

impl fmt::Display for Property {
    /// The code and the title, e.g. "M1 view agreement".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {}", self, self.title())
    }
}

/// One broken promise, with what is needed to understand it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Which property.
    pub property: Property,
    /// The members involved.
    pub members: Vec<MemberIdRepr>,
    /// The messages involved.
    pub messages: Vec<MsgKey>,
    /// The view involved, if any.
    pub view: Option<ViewIdRepr>,
    /// When it became visible (ns), if known.
    pub time_ns: Option<u64>,
    /// A sentence saying what went wrong.
    pub detail: String,
}

impl fmt::Display for Violation {
    /// One line: property, time, sentence.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.time_ns {
            Some(t) => write!(f, "{} at {}: {}", self.property, Time(t), self.detail),
            None => write!(f, "{}: {}", self.property, self.detail),
        }
    }
}

/// The result of checking a history.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// The violations found, sorted by time then property; at most
    /// [`VIOLATIONS_PER_PROPERTY_MAX`] (the earliest) per property.
    pub violations: Vec<Violation>,
    /// How many violations of each property were found, all of them, kept or
    /// not; every property is present (zero when it held).
    pub counts: BTreeMap<Property, usize>,
    /// The liveness properties that were not judged because the history does
    /// not say when the faults stopped (M4 without `healed_at_ns`, V5 without
    /// `quiet_at_ns`).
    pub skipped: Vec<Property>,
    /// For each crash (in history order) after which the survivors excluded
    /// the crashed member: nanoseconds from the crash until every member alive
    /// at the end that had been in a view with it had installed a view
    /// without it. Crashes never acted on are not listed (M4 says whether that
    /// is a violation).
    pub failover_ns: Vec<u64>,
    /// For each joiner admitted (in history order of admission): nanoseconds
    /// from its `Started` to its first installed view.
    pub join_ns: Vec<u64>,
    /// How many records were checked.
    pub records: usize,
}

impl Report {
    /// Whether every judged property held.
    pub fn is_ok(&self) -> bool {
        self.total() == 0
    }

    /// The number of violations found (all of them, kept or not).
    pub fn total(&self) -> usize {
        self.counts.values().sum()
    }

    /// The number of violations of `property` found.
    pub fn count(&self, property: Property) -> usize {
        self.counts.get(&property).copied().unwrap_or(0)
    }
}

/// Runs every checker on `history`.
pub fn check_all(history: &History) -> Report {
    let ix = Index::new(history);
    let mut sink = Sink::new(VIOLATIONS_PER_PROPERTY_MAX);

    membership::m1_view_agreement(&ix, &mut sink);
    membership::m2_view_order(&ix, &mut sink);
    membership::m3_primary_continuity(&ix, &mut sink);
    let mut skipped = Vec::new();
    if !membership::m4_liveness(&ix, &mut sink) {
        skipped.push(Property::M4);
    }

    delivery::v1_integrity(&ix, &mut sink);
    delivery::v2_sending_view(&ix, &mut sink);
    delivery::v3_virtual_synchrony(&ix, &mut sink);
    delivery::v4_self_delivery(&ix, &mut sink);
    if !delivery::v5_liveness(&ix, &mut sink) {
        skipped.push(Property::V5);
    }

    order::o1_fifo(&ix, &mut sink);
    order::o2_causal(&ix, &mut sink);
    order::o3_total(&ix, &mut sink);
    order::o4_uniformity(&ix, &mut sink);

    state::s1_state_transfer(&ix, &mut sink);
    state::s2_replicated_determinism(&ix, &mut sink);

    marks::k1_mark_integrity(&ix, &mut sink);
    if !marks::k2_mark_liveness(&ix, &mut sink) {
        skipped.push(Property::K2);
    }

    let (failover_ns, join_ns) = membership::measure_failover_and_join(&ix);
    let (violations, counts) = sink.finish();
    Report {
        violations,
        counts,
        skipped,
        failover_ns,
        join_ns,
        records: history.records.len(),
    }
}

/// A short trace for a person reading `v`: the records of the members
/// involved in it (or, if it names none, of the senders of its messages; or
/// else of everyone), around `v.time_ns`, one per line with time, member and
/// what happened. Records about the violation's messages (or, for installs
/// and state transfers, its view) are marked with `*`. Most of the `lines`
/// show what led up to the violation; a quarter show what followed.
///
/// Reads only the records near `v.time_ns` (history records are in time
/// order), so printing a few traces of a long history stays cheap.
pub fn trace_around(history: &History, v: &Violation, lines: usize) -> String {
    let mut involved: BTreeSet<MemberIdRepr> = v.members.iter().copied().collect();
    if involved.is_empty() {
        involved = v.messages.iter().map(|k| k.sender).collect();
    }
    let records = &history.records;
    let picked = |i: &usize| involved.is_empty() || involved.contains(&records[*i].member);
    let t = v.time_ns.unwrap_or(history.end_ns);
    let at = records.partition_point(|r| r.time_ns <= t);
    // One more than could be shown on each side, to know whether to say so.
    let before: Vec<usize> = (0..at).rev().filter(picked).take(lines + 1).collect();
    let after: Vec<usize> = (at..records.len()).filter(picked).take(lines + 1).collect();
    let n_after = after
        .len()
        .min((lines / 4).max(lines.saturating_sub(before.len())));
    let n_before = before.len().min(lines - n_after);

    let messages: BTreeSet<MsgKey> = v.messages.iter().copied().collect();
    let mut out = String::new();
    if before.len() > n_before {
        out.push_str("      ... earlier records of these members\n");
    }
    for &i in before[..n_before].iter().rev().chain(&after[..n_after]) {
        let r = &records[i];
        let mark = if mentions(r, &messages, v.view) {
            '*'
        } else {
            ' '
        };
        out.push_str(&format!(
            "  {mark} {:>16} {:<10} {}\n",
            Time(r.time_ns).to_string(),
            fm(r.member),
            describe_record(r)
        ));
    }
    if after.len() > n_after {
        out.push_str("      ... later records of these members\n");
    }
    out
}

/// Whether `r` is about one of `messages` or about `view`.
fn mentions(r: &Record, messages: &BTreeSet<MsgKey>, view: Option<ViewIdRepr>) -> bool {
    match &r.kind {
        RecordKind::Send { msg, .. } => messages.contains(msg),
        RecordKind::Deliver { msg, .. } => messages.contains(msg),
        RecordKind::ViewInstalled { view: iv, .. }
        | RecordKind::StateInstalled { view: iv, .. }
        | RecordKind::StateProvided { view: iv, .. } => Some(*iv) == view,
        _ => false,
    }
}

/// What a record says, in a few words (without its time and member), e.g.
/// "deliver n1.1#3 total in v2@n1.1".
pub fn describe_record(r: &Record) -> String {
    match &r.kind {
        RecordKind::Started => "started".to_string(),
        RecordKind::Send {
            msg,
            ordering,
            digest,
            view,
        } => match view {
            Some(v) => format!(
                "send {} {} in {} (digest {digest:#x})",
                fk(*msg),
                fo(*ordering),
                fv(*v)
            ),
            None => format!(
                "send {} {} while blocked (digest {digest:#x})",
                fk(*msg),
                fo(*ordering)
            ),
        },
        RecordKind::Deliver {
            msg,
            sender,
            ordering,
            view,
            digest,
        } => {
            let mut s = format!(
                "deliver {} {} in {} (digest {digest:#x})",
                fk(*msg),
                fo(*ordering),
                fv(*view)
            );
            if *sender != msg.sender {
                s.push_str(&format!(" reported sender {}", fm(*sender)));
            }
            s
        }
        RecordKind::ViewInstalled {
            view,
            members,
            state_digest,
        } => {
            let mut s = format!(
                "install {} [{}]",
                fv(*view),
                members.iter().map(|m| fm(*m)).collect::<Vec<_>>().join(" ")
            );
            if let Some(d) = state_digest {
                s.push_str(&format!(" state {d:#x}"));
            }
            s
        }
        RecordKind::Blocked => "blocked (view change began)".to_string(),
        RecordKind::StateInstalled { view, state_digest } => {
            format!("state installed for {}: {state_digest:#x}", fv(*view))
        }
        RecordKind::StateProvided { view, state_digest } => {
            format!("state provided for {}: {state_digest:#x}", fv(*view))
        }
        RecordKind::LeaveRequested => "leave requested".to_string(),
        RecordKind::Exited { left: true } => "exited (left)".to_string(),
        RecordKind::Exited { left: false } => "exited (excluded)".to_string(),
        RecordKind::Crashed => "crashed".to_string(),
        RecordKind::QueryDone { replies, departed } => {
            format!("query done: {replies} replies, {departed} departed")
        }
        RecordKind::MarkSet { value } => format!("mark set to {value}"),
        RecordKind::MarkSeen { from, value } => format!("mark {value} from {}", fm(*from)),
    }
}

// ---------------------------------------------------------------------------
// Formatting helpers shared by the checkers.

/// "n2.1".
pub(crate) fn fm(m: MemberIdRepr) -> String {
    format!("n{}.{}", m.node, m.incarnation)
}

/// "v5@n1.1".
pub(crate) fn fv(v: ViewIdRepr) -> String {
    format!("v{}@{}", v.epoch, fm(v.coord))
}

/// "n4.1#17".
pub(crate) fn fk(k: MsgKey) -> String {
    format!("{}#{}", fm(k.sender), k.n)
}

/// "1.234567s".
pub(crate) fn ft(ns: u64) -> String {
    Time(ns).to_string()
}

/// "total", or "ordering 9" for an unknown code.
pub(crate) fn fo(code: u8) -> String {
    match Ordering::from_u8(code) {
        Some(o) => o.name().to_string(),
        None => format!("ordering {code}"),
    }
}

/// "a, b, c and 4 more", naming at most [`EXAMPLES_MAX`].
pub(crate) fn flist<T: Copy>(items: &[T], f: fn(T) -> String) -> String {
    let mut s = items
        .iter()
        .take(EXAMPLES_MAX)
        .map(|x| f(*x))
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > EXAMPLES_MAX {
        s.push_str(&format!(" and {} more", items.len() - EXAMPLES_MAX));
    }
    s
}

/// [`flist`] for ready-made strings.
pub(crate) fn flist_str(items: &[String]) -> String {
    let mut s = items[..items.len().min(EXAMPLES_MAX)].join(", ");
    if items.len() > EXAMPLES_MAX {
        s.push_str(&format!(" and {} more", items.len() - EXAMPLES_MAX));
    }
    s
}

/// The first [`EXAMPLES_MAX`] of `items`.
pub(crate) fn few<T: Copy>(items: &[T]) -> Vec<T> {
    items.iter().take(EXAMPLES_MAX).copied().collect()
}

// Ordering codes, as recorded.
pub(crate) const UNRELIABLE: u8 = Ordering::Unreliable as u8;
pub(crate) const FIFO: u8 = Ordering::Fifo as u8;
pub(crate) const CAUSAL: u8 = Ordering::Causal as u8;
pub(crate) const TOTAL: u8 = Ordering::Total as u8;
pub(crate) const SAFE: u8 = Ordering::Safe as u8;

/// Whether messages of this ordering are ordered with the sequencer (O3).
pub(crate) fn is_total(code: u8) -> bool {
    code == TOTAL || code == SAFE
}

// ---------------------------------------------------------------------------
// Collecting violations.

/// What a checker found, before the sink stamps it with property and time.
pub(crate) struct Found {
    /// See [`Violation::members`].
    pub members: Vec<MemberIdRepr>,
    /// See [`Violation::messages`].
    pub messages: Vec<MsgKey>,
    /// See [`Violation::view`].
    pub view: Option<ViewIdRepr>,
    /// See [`Violation::detail`].
    pub detail: String,
}

/// Counts every violation and keeps the earliest few of each property.
/// Checkers hand it a closure, so that the sentence of a violation that will
/// not be kept is never formatted (a broken run can have millions).
pub(crate) struct Sink {
    cap: usize,
    /// Per property: (time or MAX, arrival sequence, violation).
    kept: BTreeMap<Property, Vec<(u64, u64, Violation)>>,
    counts: BTreeMap<Property, usize>,
    seq: u64,
}

impl Sink {
    pub(crate) fn new(cap: usize) -> Sink {
        Sink {
            cap,
            kept: BTreeMap::new(),
            counts: Property::ALL.iter().map(|p| (*p, 0)).collect(),
            seq: 0,
        }
    }

    /// Records one violation of `property`, visible at `time_ns`.
    pub(crate) fn add(
        &mut self,
        property: Property,
        time_ns: Option<u64>,
        make: impl FnOnce() -> Found,
    ) {
        *self.counts.entry(property).or_insert(0) += 1;
        let key = (time_ns.unwrap_or(u64::MAX), self.seq);
        self.seq += 1;
        let kept = self.kept.entry(property).or_default();
        let slot = if kept.len() < self.cap {
            None
        } else {
            // Full: replace the latest kept one if this one is earlier.
            let Some((latest, _)) = kept
                .iter()
                .enumerate()
                .max_by_key(|(_, (t, s, _))| (*t, *s))
            else {
                return; // cap 0: count only
            };
            if key >= (kept[latest].0, kept[latest].1) {
                return;
            }
            Some(latest)
        };
        let f = make();
        let v = Violation {
            property,
            members: f.members,
            messages: f.messages,
            view: f.view,
            time_ns,
            detail: f.detail,
        };
        match slot {
            None => kept.push((key.0, key.1, v)),
            Some(i) => kept[i] = (key.0, key.1, v),
        }
    }

    /// The kept violations sorted by (time, property, arrival), and the counts.
    pub(crate) fn finish(self) -> (Vec<Violation>, BTreeMap<Property, usize>) {
        let mut all: Vec<(u64, Property, u64, Violation)> = self
            .kept
            .into_iter()
            .flat_map(|(p, vs)| vs.into_iter().map(move |(t, s, v)| (t, p, s, v)))
            .collect();
        all.sort_by_key(|(t, p, s, _)| (*t, *p, *s));
        (all.into_iter().map(|(_, _, _, v)| v).collect(), self.counts)
    }
}

// ---------------------------------------------------------------------------
// Hashing.

/// FxHash (rustc's hasher): a multiply-rotate over the key's words. The
/// checkers' keys are small integers from the history under check, with no
/// adversary, and std's SipHash made hashing the largest cost of a check.
#[derive(Clone, Copy, Default)]
pub(crate) struct FxHasher {
    hash: u64,
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        // The multiply leaves the best bits high; hashbrown picks buckets
        // with the low ones.
        self.hash.rotate_left(26)
    }
}

/// A `HashMap` with [`FxHasher`]; only for lookups, never iterated where
/// the order shows in the output.
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

// ---------------------------------------------------------------------------
// The shared index of a history.

/// "No install": a record before the member's first view.
pub(crate) const NONE: u32 = u32::MAX;

/// One `ViewInstalled` record of a member.
pub(crate) struct Install<'h> {
    pub view: ViewIdRepr,
    pub members: &'h [MemberIdRepr],
    pub state_digest: Option<u64>,
    /// Index of the record in the history.
    pub rec: usize,
    pub time_ns: u64,
}

impl Install<'_> {
    pub(crate) fn contains(&self, m: MemberIdRepr) -> bool {
        self.members.contains(&m)
    }
}

/// What the checkers need to know about one member (one incarnation).
#[derive(Default)]
pub(crate) struct MemberInfo<'h> {
    /// Indices of its records, in program order.
    pub records: Vec<usize>,
    /// Its views, in program order.
    pub installs: Vec<Install<'h>>,
    /// `deliveries[i]`: indices of the `Deliver` records while `installs[i]`
    /// was its current view ("delivered in" that view), in order.
    pub deliveries: Vec<Vec<usize>>,
    /// `Deliver` records before its first view.
    pub deliveries_before_view: Vec<usize>,
    /// Index into `installs` of its first install of each view.
    pub first_install: FastMap<ViewIdRepr, usize>,
    /// Its first `Started` record.
    pub started: Option<usize>,
    /// Its first `LeaveRequested` record.
    pub leave_requested: Option<usize>,
    /// Whether it has an `Exited { left: true }` record.
    pub exited_left: bool,
    /// Whether its last record is not `Crashed` or `Exited`, and it started
    /// (or installed a view).
    pub alive_at_end: bool,
    /// When it started: its `Started` record, else its first record.
    pub start_ns: u64,
}

impl MemberInfo<'_> {
    /// Whether it installed a view after `installs[i]` ("survives" it).
    pub(crate) fn survives(&self, i: usize) -> bool {
        i + 1 < self.installs.len()
    }
}

/// A message's `Send` record, as the checkers read it.
pub(crate) struct SendInfo {
    /// Index of the (first) `Send` record by the message's sender.
    pub rec: usize,
    pub ordering: u8,
    pub digest: u64,
    /// The sending view: the record's, or the first view the sender installed
    /// after it; None if it installed none (then the message was never sent).
    pub view: Option<ViewIdRepr>,
    /// Index into the sender's installs of the sending view.
    pub install: Option<usize>,
}

/// A member's first delivery of a message.
#[derive(Clone, Copy)]
pub(crate) struct Delivered {
    /// Index into the member's installs of the view it was delivered in
    /// ([`NONE`] if before any view).
    pub install: u32,
    /// Index of the `Deliver` record.
    pub rec: usize,
}

/// One view id, over all members.
pub(crate) struct ViewInfo<'h> {
    /// The member list of its first install in history order.
    pub members: &'h [MemberIdRepr],
    /// The first `ViewInstalled` record of it.
    pub first_rec: usize,
    /// (member, index into its installs) of every install, in history order.
    pub installers: Vec<(MemberIdRepr, usize)>,
    /// (member, the view it installed just before) for every installer that
    /// had one.
    pub pred_by: Vec<(MemberIdRepr, ViewIdRepr)>,
    /// The distinct views in `pred_by`.
    pub preds: BTreeSet<ViewIdRepr>,
}

impl ViewInfo<'_> {
    pub(crate) fn contains(&self, m: MemberIdRepr) -> bool {
        self.members.contains(&m)
    }
}

/// Everything the checkers look up, built in one pass over the history.
pub(crate) struct Index<'h> {
    pub history: &'h History,
    pub members: BTreeMap<MemberIdRepr, MemberInfo<'h>>,
    pub views: BTreeMap<ViewIdRepr, ViewInfo<'h>>,
    pub sends: FastMap<MsgKey, SendInfo>,
    /// Per record: index into its member's installs of its current view then
    /// (a `ViewInstalled` record is in its own view), or [`NONE`].
    pub cur: Vec<u32>,
    /// (member, message) -> its first delivery of the message.
    pub delivered: FastMap<(MemberIdRepr, MsgKey), Delivered>,
    /// The views that start a group: no installer had a view before, and no
    /// member of it had installed an earlier view.
    pub first_views: BTreeSet<ViewIdRepr>,
}

impl<'h> Index<'h> {
    pub(crate) fn new(history: &'h History) -> Index<'h> {
        let records = &history.records;
        let mut members: BTreeMap<MemberIdRepr, MemberInfo<'h>> = BTreeMap::new();
        let mut cur = Vec::with_capacity(records.len());
        for (ri, r) in records.iter().enumerate() {
            let mi = members.entry(r.member).or_default();
            mi.records.push(ri);
            match &r.kind {
                RecordKind::ViewInstalled {
                    view,
                    members: ms,
                    state_digest,
                } => {
                    mi.first_install.entry(*view).or_insert(mi.installs.len());
                    mi.installs.push(Install {
                        view: *view,
                        members: ms,
                        state_digest: *state_digest,
                        rec: ri,
                        time_ns: r.time_ns,
                    });
                    mi.deliveries.push(Vec::new());
                }
                RecordKind::Deliver { .. } => match mi.deliveries.last_mut() {
                    Some(d) => d.push(ri),
                    None => mi.deliveries_before_view.push(ri),
                },
                RecordKind::Started => {
                    mi.started.get_or_insert(ri);
                }
                RecordKind::LeaveRequested => {
                    mi.leave_requested.get_or_insert(ri);
                }
                RecordKind::Exited { left: true } => mi.exited_left = true,
                _ => {}
            }
            cur.push(match mi.installs.len() {
                0 => NONE,
                n => u32::try_from(n - 1).expect("fewer than 2^32 views per member"),
            });
        }
        for mi in members.values_mut() {
            let last = &records[*mi.records.last().expect("a member has a record")];
            let ended = matches!(last.kind, RecordKind::Crashed | RecordKind::Exited { .. });
            mi.alive_at_end = !ended && (mi.started.is_some() || !mi.installs.is_empty());
            mi.start_ns = records[mi.started.unwrap_or(mi.records[0])].time_ns;
        }

        let mut views: BTreeMap<ViewIdRepr, ViewInfo<'h>> = BTreeMap::new();
        for (p, mi) in &members {
            for (i, inst) in mi.installs.iter().enumerate() {
                let vi = views.entry(inst.view).or_insert_with(|| ViewInfo {
                    members: inst.members,
                    first_rec: inst.rec,
                    installers: Vec::new(),
                    pred_by: Vec::new(),
                    preds: BTreeSet::new(),
                });
                if inst.rec < vi.first_rec {
                    vi.first_rec = inst.rec;
                    vi.members = inst.members;
                }
                vi.installers.push((*p, i));
                if i > 0 {
                    vi.pred_by.push((*p, mi.installs[i - 1].view));
                    vi.preds.insert(mi.installs[i - 1].view);
                }
            }
        }
        for (w, vi) in views.iter_mut() {
            vi.installers
                .sort_by_key(|(p, i)| members[p].installs[*i].rec);
            vi.pred_by
                .sort_by_key(|(p, _)| members[p].installs[members[p].first_install[w]].rec);
        }

        let mut first_views = BTreeSet::new();
        for (w, wi) in &views {
            if !wi.preds.is_empty() {
                continue;
            }
            let older = wi.members.iter().any(|x| {
                members
                    .get(x)
                    .is_some_and(|mx| mx.installs.iter().any(|inst| inst.view < *w))
            });
            if !older {
                first_views.insert(*w);
            }
        }

        let mut sends = FastMap::default();
        for (ri, r) in records.iter().enumerate() {
            let RecordKind::Send {
                msg,
                ordering,
                digest,
                view,
            } = &r.kind
            else {
                continue;
            };
            if r.member != msg.sender || sends.contains_key(msg) {
                continue; // V1 reports these
            }
            let mi = &members[&r.member];
            let (view, install) = match view {
                Some(v) => {
                    let c = cur[ri];
                    let at = if c != NONE && mi.installs[c as usize].view == *v {
                        Some(c as usize)
                    } else {
                        mi.first_install.get(v).copied()
                    };
                    (Some(*v), at)
                }
                None => {
                    let next = mi.installs.partition_point(|inst| inst.rec < ri);
                    match mi.installs.get(next) {
                        Some(inst) => (Some(inst.view), Some(next)),
                        None => (None, None),
                    }
                }
            };
            sends.insert(
                *msg,
                SendInfo {
                    rec: ri,
                    ordering: *ordering,
                    digest: *digest,
                    view,
                    install,
                },
            );
        }

        let mut delivered: FastMap<(MemberIdRepr, MsgKey), Delivered> = FastMap::default();
        for (ri, r) in records.iter().enumerate() {
            if let RecordKind::Deliver { msg, .. } = &r.kind {
                delivered.entry((r.member, *msg)).or_insert(Delivered {
                    install: cur[ri],
                    rec: ri,
                });
            }
        }

        Index {
            history,
            members,
            views,
            sends,
            cur,
            delivered,
            first_views,
        }
    }

    /// The record at index `ri`.
    pub(crate) fn rec(&self, ri: usize) -> &'h Record {
        &self.history.records[ri]
    }

    /// The ordering class of a delivered message: its `Send`'s ordering if the
    /// send is known (the engine may misreport it: V1 says so), else the
    /// ordering the delivery reports.
    pub(crate) fn class_of(&self, msg: &MsgKey, reported: u8) -> u8 {
        self.sends.get(msg).map_or(reported, |s| s.ordering)
    }

    /// The messages `p` delivered while `installs[i]` was current, with their
    /// class and record index, in delivery order.
    pub(crate) fn delivered_in(
        &self,
        p: MemberIdRepr,
        i: usize,
    ) -> impl Iterator<Item = (MsgKey, u8, usize)> + '_ {
        self.members[&p].deliveries[i]
            .iter()
            .filter_map(move |&ri| match &self.rec(ri).kind {
                RecordKind::Deliver { msg, ordering, .. } => {
                    Some((*msg, self.class_of(msg, *ordering), ri))
                }
                _ => None,
            })
    }

    /// The members alive at the end, each with its last installed view (if any).
    pub(crate) fn alive_at_end(
        &self,
    ) -> impl Iterator<Item = (MemberIdRepr, &MemberInfo<'h>)> + '_ {
        self.members
            .iter()
            .filter(|(_, mi)| mi.alive_at_end)
            .map(|(p, mi)| (*p, mi))
    }
}

#[cfg(test)]
pub(crate) mod testkit {
    //! A tiny builder of hand-made histories for the checkers' tests: each
    //! record is one millisecond after the one before, sends and deliveries
    //! fill in digest, ordering and view from what the builder has seen.

    use std::collections::{BTreeMap, BTreeSet};

    use troupe_core::Ordering;

    use super::{check_all, Property, Report};
    use crate::history::{digest64, History, MemberIdRepr, MsgKey, Record, RecordKind, ViewIdRepr};

    /// Time between two records.
    pub(crate) const STEP_NS: u64 = 1_000_000;

    /// Member `n<node>.<incarnation>`.
    pub(crate) fn m(node: u64, incarnation: u64) -> MemberIdRepr {
        MemberIdRepr { node, incarnation }
    }

    /// View `v<epoch>@<coord>`.
    pub(crate) fn v(epoch: u64, coord: MemberIdRepr) -> ViewIdRepr {
        ViewIdRepr { epoch, coord }
    }

    /// The payload digest the builder gives a message.
    pub(crate) fn digest_of(k: MsgKey) -> u64 {
        let mut payload = [0u8; 24];
        History::write_key(k, &mut payload);
        digest64(&payload)
    }

    /// Builds a history record by record.
    #[derive(Default)]
    pub(crate) struct B {
        pub h: History,
        cur: BTreeMap<MemberIdRepr, ViewIdRepr>,
        sends: BTreeMap<MsgKey, u8>,
        next_n: BTreeMap<MemberIdRepr, u64>,
    }

    impl B {
        pub(crate) fn new() -> B {
            B::default()
        }

        /// `ps` start and all install `v1@ps[0]` with members `ps`, state 0.
        pub(crate) fn group(ps: &[MemberIdRepr]) -> (B, ViewIdRepr) {
            let mut b = B::new();
            for p in ps {
                b.start(*p);
            }
            let v1 = v(1, ps[0]);
            b.install(ps, v1, ps, Some(0));
            (b, v1)
        }

        /// The time of the last record.
        pub(crate) fn now(&self) -> u64 {
            self.h.records.last().map_or(0, |r| r.time_ns)
        }

        /// Appends any record.
        pub(crate) fn raw(&mut self, p: MemberIdRepr, kind: RecordKind) {
            let time_ns = self.now() + STEP_NS;
            self.h.records.push(Record {
                time_ns,
                member: p,
                kind,
            });
        }

        pub(crate) fn start(&mut self, p: MemberIdRepr) {
            self.raw(p, RecordKind::Started);
        }

        /// Each of `ps` installs `view` with `members` and `state_digest`.
        pub(crate) fn install(
            &mut self,
            ps: &[MemberIdRepr],
            view: ViewIdRepr,
            members: &[MemberIdRepr],
            state_digest: Option<u64>,
        ) {
            for p in ps {
                self.cur.insert(*p, view);
                self.raw(
                    *p,
                    RecordKind::ViewInstalled {
                        view,
                        members: members.to_vec(),
                        state_digest,
                    },
                );
            }
        }

        fn next_key(&mut self, p: MemberIdRepr) -> MsgKey {
            let n = self.next_n.entry(p).or_insert(0);
            *n += 1;
            MsgKey { sender: p, n: *n }
        }

        /// `p` sends its next message in its current view.
        pub(crate) fn send(&mut self, p: MemberIdRepr, ordering: Ordering) -> MsgKey {
            let view = self.cur.get(&p).copied();
            self.send_in(p, ordering, view)
        }

        /// `p` sends its next message, recording `view` as its sending view.
        pub(crate) fn send_in(
            &mut self,
            p: MemberIdRepr,
            ordering: Ordering,
            view: Option<ViewIdRepr>,
        ) -> MsgKey {
            let msg = self.next_key(p);
            let ordering = ordering as u8;
            self.sends.insert(msg, ordering);
            self.raw(
                p,
                RecordKind::Send {
                    msg,
                    ordering,
                    digest: digest_of(msg),
                    view,
                },
            );
            msg
        }

        /// Each of `ps` delivers `msg`, correctly, in its current view.
        pub(crate) fn deliver(&mut self, ps: &[MemberIdRepr], msg: MsgKey) {
            for p in ps {
                let view = self.cur[p];
                self.deliver_as(*p, msg, view);
            }
        }

        /// `p` delivers `msg` reporting `view`.
        pub(crate) fn deliver_as(&mut self, p: MemberIdRepr, msg: MsgKey, view: ViewIdRepr) {
            let ordering = self
                .sends
                .get(&msg)
                .copied()
                .unwrap_or(Ordering::Reliable as u8);
            self.raw(
                p,
                RecordKind::Deliver {
                    msg,
                    sender: msg.sender,
                    ordering,
                    view,
                    digest: digest_of(msg),
                },
            );
        }

        pub(crate) fn crash(&mut self, p: MemberIdRepr) {
            self.raw(p, RecordKind::Crashed);
        }

        /// The network is healed from now on (M4 is judged).
        pub(crate) fn heal(&mut self) {
            self.h.healed_at_ns = Some(self.now());
        }

        /// No message is sent from now on (V5 is judged).
        pub(crate) fn quiet(&mut self) {
            self.h.quiet_at_ns = Some(self.now());
        }

        /// The history, ending one step after the last record.
        pub(crate) fn build(&self) -> History {
            let mut h = self.h.clone();
            h.end_ns = self.now() + STEP_NS;
            h
        }
    }

    /// The properties reported.
    pub(crate) fn props(r: &Report) -> BTreeSet<Property> {
        r.violations.iter().map(|v| v.property).collect()
    }

    fn show(r: &Report) -> String {
        r.violations.iter().map(|v| format!("  {v}\n")).collect()
    }

    /// Checks `h` and asserts that every property held.
    pub(crate) fn assert_clean(h: &History) -> Report {
        let r = check_all(h);
        assert!(r.is_ok(), "expected no violation, got:\n{}", show(&r));
        r
    }

    /// Checks `h` and asserts that `p`, and only `p`, was violated.
    pub(crate) fn assert_only(h: &History, p: Property) -> Report {
        let r = check_all(h);
        assert!(
            r.count(p) > 0,
            "expected a {p} violation, got:\n{}",
            show(&r)
        );
        assert_eq!(
            props(&r),
            BTreeSet::from([p]),
            "expected only {p}, got:\n{}",
            show(&r)
        );
        assert_eq!(r.total(), r.count(p));
        r
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use troupe_core::Ordering;

    use super::testkit::{assert_clean, m, v, B};
    use super::{check_all, trace_around, Property, VIOLATIONS_PER_PROPERTY_MAX};
    use crate::history::{History, MemberIdRepr, MsgKey, RecordKind};

    /// A long, correct run by construction: every message is delivered at
    /// once by every member of the view in one global order; members crash
    /// (keeping a majority) and rejoin as new incarnations with state
    /// transfer. `drop_at`: the one delivery (by count) to leave out.
    fn long_run(views: u64, msgs_per_view: u64, drop_at: Option<u64>) -> History {
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut b = B::new();
        let mut members: Vec<MemberIdRepr> = (1..=5).map(|n| m(n, 1)).collect();
        let mut down: Vec<u64> = Vec::new();
        for p in &members {
            b.start(*p);
        }
        let mut state = 0u64;
        let mut view = v(1, members[0]);
        b.install(&members, view, &members, Some(state));
        let mut deliveries = 0u64;
        for epoch in 2..=views + 1 {
            for _ in 0..msgs_per_view {
                let s = members[next(members.len() as u64) as usize];
                let o = Ordering::ALL[next(6) as usize];
                let k = b.send(s, o);
                if o.is_totally_ordered() {
                    state = state.wrapping_mul(31).wrapping_add(k.n ^ k.sender.node);
                }
                for p in members.clone() {
                    deliveries += 1;
                    if Some(deliveries) != drop_at {
                        b.deliver(&[p], k);
                    }
                }
            }
            for p in &members {
                b.raw(*p, RecordKind::Blocked);
            }
            let mut joiners = Vec::new();
            if members.len() > 3 && next(2) == 0 {
                let victim = members.remove(1 + next(members.len() as u64 - 1) as usize);
                b.crash(victim);
                down.push(victim.node);
            } else if let Some(node) = down.pop() {
                let j = m(node, epoch);
                b.start(j);
                joiners.push(j);
            }
            let old = members.clone();
            members.extend(&joiners);
            view = v(epoch, members[0]);
            b.install(&old, view, &members, Some(state));
            if !joiners.is_empty() {
                b.raw(
                    old[0],
                    RecordKind::StateProvided {
                        view,
                        state_digest: state,
                    },
                );
                b.install(&joiners, view, &members, None);
                for j in &joiners {
                    b.raw(
                        *j,
                        RecordKind::StateInstalled {
                            view,
                            state_digest: state,
                        },
                    );
                }
            }
        }
        b.quiet();
        b.heal();
        b.build()
    }

    #[test]
    fn long_correct_run_passes_quickly() {
        let h = long_run(200, 200, None);
        assert!(h.records.len() > 150_000, "{} records", h.records.len());
        let started = Instant::now();
        let r = assert_clean(&h);
        let took = started.elapsed();
        eprintln!("checked {} records in {took:?}", h.records.len());
        assert!(!r.failover_ns.is_empty() && !r.join_ns.is_empty());
        assert_eq!(r.records, h.records.len());
    }

    #[test]
    fn one_missing_delivery_in_a_long_run_is_found() {
        let h = long_run(50, 100, Some(10_000));
        let r = check_all(&h);
        assert!(!r.is_ok());
        // A reliable-or-stronger message missing at one survivor is a V3
        // violation (and O4 if it was safe, O1/O2 never: gaps are allowed);
        // if it was unreliable, nothing is broken.
        assert!(
            r.violations
                .iter()
                .all(|x| matches!(x.property, Property::V3 | Property::O4)),
            "{:#?}",
            r
        );
        assert_eq!(r.count(Property::V3), 1);
    }

    #[test]
    fn violations_are_counted_all_but_only_the_earliest_kept() {
        let [a, b2] = [m(1, 1), m(2, 1)];
        let (mut h, _) = B::group(&[a, b2]);
        let k = h.send(a, Ordering::Reliable);
        h.deliver(&[a], k);
        for _ in 0..VIOLATIONS_PER_PROPERTY_MAX + 10 {
            h.deliver(&[b2], k);
        }
        let r = check_all(&h.build());
        assert_eq!(r.count(Property::V1), VIOLATIONS_PER_PROPERTY_MAX + 9);
        assert_eq!(r.violations.len(), VIOLATIONS_PER_PROPERTY_MAX);
        let times: Vec<u64> = r.violations.iter().map(|x| x.time_ns.unwrap()).collect();
        let mut sorted = times.clone();
        sorted.sort_unstable();
        assert_eq!(times, sorted);
        // The earliest ones: the first duplicate is the third delivery.
        let first_dup =
            h.h.records
                .iter()
                .filter(|r| matches!(r.kind, RecordKind::Deliver { .. }))
                .nth(2)
                .unwrap();
        assert_eq!(times[0], first_dup.time_ns);
        assert_eq!(r.counts.len(), Property::ALL.len());
    }

    #[test]
    fn report_is_deterministic_and_serialises() {
        let h = long_run(20, 50, Some(500));
        let one = serde_json::to_string(&check_all(&h)).unwrap();
        let two = serde_json::to_string(&check_all(&h)).unwrap();
        assert_eq!(one, two);
        assert!(one.contains("\"V3\":1"), "{one}");
    }

    #[test]
    fn trace_shows_the_involved_members_around_the_violation() {
        let [a, b2, c] = [m(1, 1), m(2, 1), m(3, 1)];
        let (mut h, _) = B::group(&[a, b2, c]);
        let k = h.send(a, Ordering::Reliable);
        h.deliver(&[a, b2], k);
        h.install(&[a, b2, c], v(2, a), &[a, b2, c], Some(0));
        let k2 = h.send(b2, Ordering::Reliable);
        h.deliver(&[a, b2, c], k2);
        let hist = h.build();
        let r = check_all(&hist);
        let x = &r.violations[0];
        assert_eq!(x.property, Property::V3);
        let t = trace_around(&hist, x, 6);
        eprintln!("{x}\n{t}");
        let lines: Vec<&str> = t.lines().collect();
        let who: Vec<&str> = lines
            .iter()
            .filter(|l| !l.contains("..."))
            .map(|l| l[4..].split_whitespace().nth(1).unwrap())
            .collect();
        assert!(
            who.iter().all(|w| *w == "n1.1" || *w == "n3.1"),
            "only a and c are involved:\n{t}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("  *") && l.contains("send n1.1#1 reliable")),
            "{t}"
        );
        assert!(lines[0].contains("earlier records"), "{t}");
        assert!(lines.last().unwrap().contains("later records"), "{t}");
        assert_eq!(lines.len(), 8, "{t}");
        assert!(
            x.to_string().starts_with("V3 virtual synchrony at 0.0"),
            "{x}"
        );
    }

    #[test]
    fn empty_history_passes() {
        let r = assert_clean(&History::default());
        assert_eq!(r.records, 0);
        let _ = MsgKey {
            sender: m(1, 1),
            n: 1,
        };
    }
}
