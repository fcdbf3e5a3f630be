//! What a run records: every send, delivery, view and fault, per member, in
//! the order they happened. The checkers read only this, so the same checkers
//! serve the simulator and the multi-process demo.

use serde::{Deserialize, Serialize};
use troupe_core::{MemberId, Ordering, ViewId};

/// Identifies one application message across the whole run. The simulator's
/// workload writes it into the first 24 bytes of every payload (node,
/// incarnation, counter as little-endian u64s), so a delivery names the
/// message it delivers without help from the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MsgKey {
    /// The sending member.
    pub sender: MemberIdRepr,
    /// The sender's counter, from 1.
    pub n: u64,
}

/// A serialisable [`MemberId`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberIdRepr {
    /// See [`MemberId::node`].
    pub node: u64,
    /// See [`MemberId::incarnation`].
    pub incarnation: u64,
}

impl From<MemberId> for MemberIdRepr {
    fn from(m: MemberId) -> Self {
        MemberIdRepr {
            node: m.node,
            incarnation: m.incarnation,
        }
    }
}

impl From<MemberIdRepr> for MemberId {
    fn from(m: MemberIdRepr) -> Self {
        MemberId::new(m.node, m.incarnation)
    }
}

/// A serialisable [`ViewId`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ViewIdRepr {
    /// See [`ViewId::epoch`].
    pub epoch: u64,
    /// See [`ViewId::coord`].
    pub coord: MemberIdRepr,
}

impl From<ViewId> for ViewIdRepr {
    fn from(v: ViewId) -> Self {
        ViewIdRepr {
            epoch: v.epoch,
            coord: v.coord.into(),
        }
    }
}

/// One thing that happened at one member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordKind {
    /// The process started (as a new incarnation) and will create or join.
    Started,
    /// The application called `send`, and the engine accepted the message.
    /// `view` is the view it goes out in if known at the call (None when the
    /// member was blocked by a view change: it then goes out in the next view
    /// the member installs).
    Send {
        /// The message.
        msg: MsgKey,
        /// Its ordering (as `Ordering as u8`).
        ordering: u8,
        /// 64-bit hash of the whole payload.
        digest: u64,
        /// The member's installed view at the call, unless blocked.
        view: Option<ViewIdRepr>,
    },
    /// The engine delivered a message.
    Deliver {
        /// The message (from the payload's first 24 bytes).
        msg: MsgKey,
        /// The sender the engine reports.
        sender: MemberIdRepr,
        /// The ordering the engine reports (as `Ordering as u8`).
        ordering: u8,
        /// The view the engine reports it delivered in.
        view: ViewIdRepr,
        /// 64-bit hash of the delivered payload.
        digest: u64,
    },
    /// The member installed a view; `state_digest` is the application's
    /// replicated-state digest at that moment (for a joiner, None: it has no
    /// state until `StateInstalled`).
    ViewInstalled {
        /// The view's id.
        view: ViewIdRepr,
        /// Its members, oldest first.
        members: Vec<MemberIdRepr>,
        /// The replicated-state digest at the boundary.
        state_digest: Option<u64>,
    },
    /// A view change began at this member (sends are held).
    Blocked,
    /// A joiner restored the state snapshot it was sent for `view`.
    StateInstalled {
        /// The view at whose boundary it was taken.
        view: ViewIdRepr,
        /// The replicated-state digest after restoring.
        state_digest: u64,
    },
    /// A provider took a snapshot for the joiners of `view`.
    StateProvided {
        /// The view the joiners joined.
        view: ViewIdRepr,
        /// The replicated-state digest of the snapshot.
        state_digest: u64,
    },
    /// The application asked to leave.
    LeaveRequested,
    /// The engine reported that this member left (`left = true`) or was excluded.
    Exited {
        /// True for a voluntary leave.
        left: bool,
    },
    /// The process was killed (kill -9 semantics): nothing more is recorded for it.
    Crashed,
    /// A query this member started finished.
    QueryDone {
        /// How many replies it gathered.
        replies: u32,
        /// How many members departed before replying.
        departed: u32,
    },
    /// The application published a new mark (`Engine::set_mark`); the
    /// simulator's workload publishes how many messages it has delivered.
    MarkSet {
        /// The mark, as a number.
        value: u64,
    },
    /// The engine handed on another member's mark.
    MarkSeen {
        /// Who published it.
        from: MemberIdRepr,
        /// The mark, as a number (`u64::MAX` if it was not 8 bytes).
        value: u64,
    },
}

/// One recorded event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Virtual (or real) time in nanoseconds.
    pub time_ns: u64,
    /// The member it happened at.
    pub member: MemberIdRepr,
    /// What happened.
    pub kind: RecordKind,
}

/// A whole run's history: records in the order they happened (per member,
/// this is that member's program order).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The records.
    pub records: Vec<Record>,
    /// Time after which no fault was injected and the network was healed
    /// (liveness is judged on what happens after it). None: no liveness check.
    pub healed_at_ns: Option<u64>,
    /// Time after which no new message was sent (so that all can be delivered
    /// by the end). None: no liveness check.
    pub quiet_at_ns: Option<u64>,
    /// The end of the run.
    pub end_ns: u64,
}

impl History {
    /// Appends a record.
    pub fn push(&mut self, time_ns: u64, member: MemberId, kind: RecordKind) {
        self.records.push(Record {
            time_ns,
            member: member.into(),
            kind,
        });
    }

    /// Parses the message key from a payload written by the workload.
    pub fn key_of(payload: &[u8]) -> Option<MsgKey> {
        let field = |i: usize| -> Option<u64> {
            let b: [u8; 8] = payload.get(i * 8..i * 8 + 8)?.try_into().ok()?;
            Some(u64::from_le_bytes(b))
        };
        Some(MsgKey {
            sender: MemberIdRepr {
                node: field(0)?,
                incarnation: field(1)?,
            },
            n: field(2)?,
        })
    }

    /// Writes a message key into the first 24 bytes of a payload.
    pub fn write_key(key: MsgKey, payload: &mut [u8]) {
        payload[0..8].copy_from_slice(&key.sender.node.to_le_bytes());
        payload[8..16].copy_from_slice(&key.sender.incarnation.to_le_bytes());
        payload[16..24].copy_from_slice(&key.n.to_le_bytes());
    }
}

/// A 64-bit FNV-1a hash, used for payload and state digests.
pub fn digest64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The ordering with this code (as recorded).
pub fn ordering_of(code: u8) -> Option<Ordering> {
    Ordering::from_u8(code)
}
