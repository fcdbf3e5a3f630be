//! The multi-version key-value store: every write makes a new revision, and
//! reads can ask for any revision not yet compacted.
//!
//! It is a plain deterministic data structure: the replicated state machine
//! ([`crate::machine`]) drives it with commands in the group's total order,
//! so every member holds the same store at the same revision.
//!
//! Revisions follow etcd: an empty store is at revision 1, every write
//! request (a put, a delete that deletes something, a transaction with
//! writes) makes one new revision, and the operations inside one request are
//! told apart by a sub-revision.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;

use crate::pb::mvccpb::{self, event::EventType};

/// One version of a key (or its deletion).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// The revision of the request that wrote it.
    pub mod_rev: i64,
    /// Its position among the writes of that request.
    pub sub: u32,
    /// The revision at which this generation of the key was created.
    pub create_rev: i64,
    /// How many times the key was written in this generation (1 at creation).
    pub version: i64,
    /// The value; `None` marks a deletion (a tombstone).
    pub value: Option<Bytes>,
    /// The lease the key is attached to (0: none).
    pub lease: i64,
}

impl Version {
    fn to_kv(&self, key: &Bytes, keys_only: bool) -> mvccpb::KeyValue {
        mvccpb::KeyValue {
            key: key.clone(),
            create_revision: self.create_rev,
            mod_revision: self.mod_rev,
            version: self.version,
            value: if keys_only {
                Bytes::new()
            } else {
                self.value.clone().unwrap_or_default()
            },
            lease: self.lease,
        }
    }

    fn is_live(&self) -> bool {
        self.value.is_some()
    }
}

/// Why a read cannot be answered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MvccError {
    /// The revision asked for was compacted away.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// The revision asked for does not exist yet.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
}

/// A key range as etcd gives it: `end` empty means the single key `start`;
/// `end == [0]` means every key from `start` on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    /// The first key.
    pub start: Bytes,
    /// One past the last key, or empty (a single key), or `\0` (no end).
    pub end: Bytes,
}

impl KeyRange {
    /// The range etcd means by `key` and `range_end`.
    pub fn new(start: Bytes, end: Bytes) -> KeyRange {
        KeyRange { start, end }
    }

    /// Whether `key` is in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        if self.end.is_empty() {
            return key == self.start.as_ref();
        }
        if key < self.start.as_ref() {
            return false;
        }
        self.end.as_ref() == [0] || key < self.end.as_ref()
    }

    fn bounds(&self) -> (Bound<Bytes>, Bound<Bytes>) {
        let lo = Bound::Included(self.start.clone());
        let hi = if self.end.is_empty() {
            Bound::Included(self.start.clone())
        } else if self.end.as_ref() == [0] {
            Bound::Unbounded
        } else if self.end <= self.start {
            // An empty range: etcd answers nothing.
            Bound::Excluded(self.start.clone())
        } else {
            Bound::Excluded(self.end.clone())
        };
        (lo, hi)
    }
}

/// The store.
#[derive(Clone, Debug)]
pub struct Mvcc {
    revision: i64,
    compacted: i64,
    keys: BTreeMap<Bytes, Vec<Version>>,
}

impl Default for Mvcc {
    fn default() -> Self {
        Mvcc {
            revision: 1,
            compacted: 0,
            keys: BTreeMap::new(),
        }
    }
}

/// What one write did, for watchers.
pub type WatchEvent = mvccpb::Event;

impl Mvcc {
    /// The current revision.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The revision up to which history was compacted (0: never).
    pub fn compacted(&self) -> i64 {
        self.compacted
    }

    /// Number of keys with any history (live or deleted but not compacted).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Starts a write request; its writes share one new revision, which
    /// `WriteTxn::finish` makes current if anything was written.
    pub fn begin(&mut self) -> WriteTxn<'_> {
        WriteTxn {
            rev: self.revision + 1,
            sub: 0,
            mvcc: self,
            events: Vec::new(),
        }
    }

    /// The live version of `key` at revision `rev`.
    pub fn get_at(&self, key: &[u8], rev: i64) -> Option<&Version> {
        let versions = self.keys.get(key)?;
        latest_at(versions, rev).filter(|v| v.is_live())
    }

    /// The live version of `key` now.
    pub fn get(&self, key: &[u8]) -> Option<&Version> {
        self.get_at(key, self.revision)
    }

    /// Checks that `rev` can be read (0 means the current revision) and
    /// returns the revision meant.
    pub fn readable(&self, rev: i64) -> Result<i64, MvccError> {
        if rev <= 0 {
            return Ok(self.revision);
        }
        if rev < self.compacted {
            return Err(MvccError::Compacted);
        }
        if rev > self.revision {
            return Err(MvccError::FutureRevision);
        }
        Ok(rev)
    }

    /// The live keys of `range` at revision `rev`, in key order, each with
    /// its version.
    pub fn range_at<'a>(
        &'a self,
        range: &KeyRange,
        rev: i64,
    ) -> impl Iterator<Item = (&'a Bytes, &'a Version)> + 'a {
        let rev = rev.min(self.revision);
        self.keys
            .range(range.bounds())
            .filter_map(move |(k, vs)| latest_at(vs, rev).filter(|v| v.is_live()).map(|v| (k, v)))
    }

    /// Every event on keys of `range` with a revision in `from..=to`, in
    /// revision order (the history a watcher starting at `from` must see).
    pub fn events_between(
        &self,
        range: &KeyRange,
        from: i64,
        to: i64,
        prev_kv: bool,
    ) -> Result<Vec<WatchEvent>, MvccError> {
        if from < self.compacted {
            return Err(MvccError::Compacted);
        }
        let mut out: Vec<(i64, u32, WatchEvent)> = Vec::new();
        for (k, vs) in self.keys.range(range.bounds()) {
            for (i, v) in vs.iter().enumerate() {
                if v.mod_rev < from || v.mod_rev > to {
                    continue;
                }
                let prev = if prev_kv && i > 0 {
                    vs.get(i - 1)
                        .filter(|p| p.is_live())
                        .map(|p| p.to_kv(k, false))
                } else {
                    None
                };
                out.push((v.mod_rev, v.sub, event_of(k, v, prev)));
            }
        }
        out.sort_by_key(|(r, s, _)| (*r, *s));
        Ok(out.into_iter().map(|(_, _, e)| e).collect())
    }

    /// Forgets every version superseded at or before `rev`, keeping what a
    /// read at `rev` or later needs.
    pub fn compact(&mut self, rev: i64) -> Result<(), MvccError> {
        if rev <= self.compacted {
            return Err(MvccError::Compacted);
        }
        if rev > self.revision {
            return Err(MvccError::FutureRevision);
        }
        self.compacted = rev;
        self.keys.retain(|_, vs| {
            // The newest version at or before `rev` stays if it is live;
            // everything older goes.
            let keep_from = vs
                .iter()
                .rposition(|v| v.mod_rev <= rev)
                .map(|i| if vs[i].is_live() { i } else { i + 1 })
                .unwrap_or(0);
            vs.drain(..keep_from);
            !vs.is_empty()
        });
        Ok(())
    }

    /// A checksum of every key version written at or before `rev` (0: now)
    /// that compaction kept, in key order: members that applied the same
    /// commands agree on it, so `etcdctl endpoint hashkv --cluster` shows
    /// whether the replicas hold the same data. Returns the checksum and
    /// the revision it covers.
    pub fn hash_at(&self, rev: i64) -> Result<(u32, i64), MvccError> {
        let rev = self.readable(rev)?;
        let mut crc = 0u32;
        let mut feed = |bytes: &[u8]| crc = crc32c::crc32c_append(crc, bytes);
        for (key, versions) in &self.keys {
            for v in versions.iter().take_while(|v| v.mod_rev <= rev) {
                feed(&(key.len() as u64).to_le_bytes());
                feed(key);
                feed(&v.mod_rev.to_le_bytes());
                feed(&v.sub.to_le_bytes());
                feed(&v.create_rev.to_le_bytes());
                feed(&v.version.to_le_bytes());
                feed(&v.lease.to_le_bytes());
                match &v.value {
                    Some(value) => {
                        feed(&[1]);
                        feed(&(value.len() as u64).to_le_bytes());
                        feed(value);
                    }
                    None => feed(&[0]),
                }
            }
        }
        Ok((crc, rev))
    }

    /// Every key version, for a snapshot.
    pub fn dump(&self) -> (i64, i64, &BTreeMap<Bytes, Vec<Version>>) {
        (self.revision, self.compacted, &self.keys)
    }

    /// Rebuilds a store from [`Mvcc::dump`]'s parts.
    pub fn from_parts(revision: i64, compacted: i64, keys: BTreeMap<Bytes, Vec<Version>>) -> Mvcc {
        Mvcc {
            revision,
            compacted,
            keys,
        }
    }
}

fn latest_at(versions: &[Version], rev: i64) -> Option<&Version> {
    let i = versions.partition_point(|v| v.mod_rev <= rev);
    i.checked_sub(1).map(|i| &versions[i])
}

fn event_of(key: &Bytes, v: &Version, prev: Option<mvccpb::KeyValue>) -> WatchEvent {
    let (ty, kv) = if v.is_live() {
        (EventType::Put, v.to_kv(key, false))
    } else {
        (
            EventType::Delete,
            mvccpb::KeyValue {
                key: key.clone(),
                mod_revision: v.mod_rev,
                ..Default::default()
            },
        )
    };
    mvccpb::Event {
        r#type: ty as i32,
        kv: Some(kv),
        prev_kv: prev,
    }
}

/// The writes of one request: see [`Mvcc::begin`].
pub struct WriteTxn<'a> {
    mvcc: &'a mut Mvcc,
    rev: i64,
    sub: u32,
    events: Vec<WatchEvent>,
}

impl WriteTxn<'_> {
    /// The store as this request has left it so far.
    pub fn mvcc(&self) -> &Mvcc {
        self.mvcc
    }

    /// The revision this request writes at.
    pub fn revision(&self) -> i64 {
        self.rev
    }

    /// The live version of `key`, with this request's writes so far.
    pub fn get(&self, key: &[u8]) -> Option<&Version> {
        self.mvcc.get_at(key, self.rev)
    }

    /// The live keys of `range`, with this request's writes so far.
    pub fn range<'b>(
        &'b self,
        range: &KeyRange,
    ) -> impl Iterator<Item = (&'b Bytes, &'b Version)> + 'b {
        let rev = self.rev;
        self.mvcc
            .keys
            .range(range.bounds())
            .filter_map(move |(k, vs)| latest_at(vs, rev).filter(|v| v.is_live()).map(|v| (k, v)))
    }

    /// Writes `value` (attached to `lease`, 0 for none) at `key`; returns the
    /// previous live version.
    pub fn put(&mut self, key: Bytes, value: Bytes, lease: i64) -> Option<Version> {
        let rev = self.rev;
        let sub = self.sub;
        self.sub += 1;
        let versions = self.mvcc.keys.entry(key.clone()).or_default();
        let prev = versions.last().filter(|v| v.is_live()).cloned();
        let (create_rev, version) = match &prev {
            Some(p) => (p.create_rev, p.version + 1),
            None => (rev, 1),
        };
        let v = Version {
            mod_rev: rev,
            sub,
            create_rev,
            version,
            value: Some(value),
            lease,
        };
        let prev_kv = prev.as_ref().map(|p| p.to_kv(&key, false));
        self.events.push(event_of(&key, &v, prev_kv));
        versions.push(v);
        prev
    }

    /// Deletes every live key of `range`; returns the deleted keys with
    /// their last versions.
    pub fn delete(&mut self, range: &KeyRange) -> Vec<(Bytes, Version)> {
        let rev = self.rev;
        let live: Vec<Bytes> = self.range(range).map(|(k, _)| k.clone()).collect();
        let mut out = Vec::with_capacity(live.len());
        for key in live {
            let sub = self.sub;
            self.sub += 1;
            let Some(versions) = self.mvcc.keys.get_mut(&key) else {
                continue;
            };
            let Some(prev) = versions.last().cloned() else {
                continue;
            };
            let tomb = Version {
                mod_rev: rev,
                sub,
                create_rev: 0,
                version: 0,
                value: None,
                lease: 0,
            };
            self.events
                .push(event_of(&key, &tomb, Some(prev.to_kv(&key, false))));
            versions.push(tomb);
            out.push((key, prev));
        }
        out
    }

    /// Ends the request: the store moves to the new revision if anything was
    /// written. Returns the events, in order.
    pub fn finish(self) -> Vec<WatchEvent> {
        if self.sub > 0 {
            self.mvcc.revision = self.rev;
        }
        self.events
    }
}

/// Converts a version to the wire form.
pub fn key_value(key: &Bytes, v: &Version, keys_only: bool) -> mvccpb::KeyValue {
    v.to_kv(key, keys_only)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn put(m: &mut Mvcc, k: &str, v: &str) -> i64 {
        let mut t = m.begin();
        t.put(b(k), b(v), 0);
        t.finish();
        m.revision()
    }

    #[test]
    fn replicas_with_the_same_writes_hash_alike_and_others_do_not() {
        let writes = [("a", "1"), ("b", "2"), ("a", "3"), ("c", "4")];
        let mut one = Mvcc::default();
        let mut two = Mvcc::default();
        for (k, v) in writes {
            put(&mut one, k, v);
            put(&mut two, k, v);
        }
        let now = one.hash_at(0).ok();
        assert_eq!(now, two.hash_at(0).ok());
        assert_eq!(now.map(|(_, rev)| rev), Some(5));
        // A past revision hashes what a store that stopped there holds.
        let mut early = Mvcc::default();
        for (k, v) in &writes[..2] {
            put(&mut early, k, v);
        }
        assert_eq!(one.hash_at(3), early.hash_at(0));
        assert!(one.hash_at(3).is_ok());
        assert_ne!(one.hash_at(3).ok(), now);
        // One value different, or a key deleted: a different hash.
        let mut other = Mvcc::default();
        for (k, v) in [("a", "1"), ("b", "2"), ("a", "3"), ("c", "5")] {
            put(&mut other, k, v);
        }
        assert_ne!(other.hash_at(0).ok(), now);
        let mut t = two.begin();
        t.delete(&KeyRange::new(b("c"), Bytes::new()));
        t.finish();
        assert_ne!(two.hash_at(0).ok().map(|(h, _)| h), now.map(|(h, _)| h));
        assert_eq!(two.hash_at(5).ok(), now);
        assert_eq!(one.hash_at(9), Err(MvccError::FutureRevision));
        assert_eq!(one.compact(4), Ok(()));
        assert_eq!(one.hash_at(3), Err(MvccError::Compacted));
    }

    #[test]
    fn revisions_count_writes_and_reads_see_the_past() {
        let mut m = Mvcc::default();
        assert_eq!(m.revision(), 1);
        let r1 = put(&mut m, "a", "1");
        let r2 = put(&mut m, "a", "2");
        assert_eq!((r1, r2), (2, 3));
        assert_eq!(
            m.get_at(b"a", r1).and_then(|v| v.value.clone()),
            Some(b("1"))
        );
        let now = m.get(b"a").cloned();
        assert_eq!(
            now.as_ref().map(|v| (v.create_rev, v.version)),
            Some((2, 2))
        );
        assert!(m.get_at(b"a", 1).is_none());
    }

    #[test]
    fn delete_makes_a_tombstone_and_a_new_generation_after() {
        let mut m = Mvcc::default();
        put(&mut m, "a", "1");
        let mut t = m.begin();
        let gone = t.delete(&KeyRange::new(b("a"), Bytes::new()));
        let ev = t.finish();
        assert_eq!(gone.len(), 1);
        assert_eq!(ev.len(), 1);
        assert!(m.get(b"a").is_none());
        let r = put(&mut m, "a", "x");
        assert_eq!(m.get(b"a").map(|v| (v.create_rev, v.version)), Some((r, 1)));
        // A delete of nothing makes no revision.
        let before = m.revision();
        let mut t = m.begin();
        assert!(t.delete(&KeyRange::new(b("zz"), Bytes::new())).is_empty());
        t.finish();
        assert_eq!(m.revision(), before);
    }

    #[test]
    fn ranges_prefixes_and_open_ends() {
        let mut m = Mvcc::default();
        for k in ["a", "b/1", "b/2", "c"] {
            put(&mut m, k, "v");
        }
        let keys = |r: KeyRange| -> Vec<Bytes> {
            m.range_at(&r, m.revision())
                .map(|(k, _)| k.clone())
                .collect()
        };
        assert_eq!(
            keys(KeyRange::new(b("b/"), b("b0"))),
            vec![b("b/1"), b("b/2")]
        );
        assert_eq!(
            keys(KeyRange::new(b("b"), Bytes::from_static(&[0]))).len(),
            3
        );
        assert_eq!(keys(KeyRange::new(b("c"), Bytes::new())), vec![b("c")]);
        assert!(keys(KeyRange::new(b("c"), b("a"))).is_empty());
    }

    #[test]
    fn compaction_keeps_what_later_reads_need() {
        let mut m = Mvcc::default();
        put(&mut m, "a", "1");
        let r = put(&mut m, "a", "2");
        put(&mut m, "b", "1");
        let mut t = m.begin();
        t.delete(&KeyRange::new(b("b"), Bytes::new()));
        t.finish();
        let last = m.revision();
        m.compact(last).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.readable(r), Err(MvccError::Compacted));
        assert_eq!(m.get(b"a").and_then(|v| v.value.clone()), Some(b("2")));
        assert_eq!(m.key_count(), 1, "the deleted key is gone entirely");
        assert_eq!(m.compact(last), Err(MvccError::Compacted));
        assert_eq!(m.readable(last + 1), Err(MvccError::FutureRevision));
    }

    #[test]
    fn events_between_are_in_revision_order_with_prev() {
        let mut m = Mvcc::default();
        put(&mut m, "b", "1");
        put(&mut m, "a", "1");
        put(&mut m, "b", "2");
        let all = KeyRange::new(b("a"), Bytes::from_static(&[0]));
        let ev = m
            .events_between(&all, 3, m.revision(), true)
            .unwrap_or_default();
        let revs: Vec<i64> = ev
            .iter()
            .filter_map(|e| e.kv.as_ref().map(|k| k.mod_revision))
            .collect();
        assert_eq!(revs, vec![3, 4]);
        assert_eq!(
            ev[1].prev_kv.as_ref().map(|p| p.value.clone()),
            Some(b("1"))
        );
    }
}
