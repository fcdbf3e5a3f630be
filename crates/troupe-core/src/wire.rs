//! The versioned wire format: one datagram carries a header and a packed list
//! of frames. Decoding arbitrary bytes returns a [`DecodeError`], never panics.
//!
//! Layout (all integers are LEB128 varints unless noted):
//!
//! ```text
//! datagram := magic:u8 = 0xA7, version:u8 = WIRE_VERSION, group:u64 (8 bytes LE),
//!             from:member, view:view_id, frame*
//! member   := node, incarnation
//! view_id  := epoch, coord:member
//! frame    := tag:u8, fields...
//! ```
//!
//! Every variable-length field is length-prefixed, and a length is checked
//! against the bytes that remain before anything is allocated, so a hostile
//! length cannot make the decoder allocate more than the datagram's size.

use bytes::Bytes;

use crate::types::{Addr, MemberId, Ordering, QueryId, View, ViewId};

/// The wire version this build speaks. A datagram of another version is
/// refused with [`DecodeError::Version`].
pub const WIRE_VERSION: u8 = 1;

/// First byte of every datagram: cheap rejection of traffic that is not ours.
pub const MAGIC: u8 = 0xA7;

/// The most members a view may hold. Bounds every member list on the wire.
pub const MEMBERS_MAX: usize = 1024;

/// A datagram: who sent it, for which group and view, and what it carries.
#[derive(Clone, Debug, PartialEq)]
pub struct Datagram {
    /// The group, as a 64-bit hash of its name: traffic for another group is dropped.
    pub group: u64,
    /// The sender.
    pub from: MemberId,
    /// The view the sender was in when it built the datagram. View-scoped
    /// frames (data, acks, naks, heartbeats) refer to this view.
    pub view: ViewId,
    /// The frames, processed in order.
    pub frames: Vec<Frame>,
}

/// A ballot of the view-change agreement: proposals with higher ballots win.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ballot {
    /// Grows with every attempt; always above the epoch of the view being ended.
    pub round: u64,
    /// The member running the attempt.
    pub coord: MemberId,
}

/// What a view-change attempt proposes: the next view, and the cut that closes
/// the current one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// The next view.
    pub next: View,
    /// `cut[r]`: the last sequence number of the member of rank `r` in the
    /// ending view that is delivered in it. Everything up to the cut is
    /// delivered by every member of the next view before it installs it.
    pub cut: Vec<u64>,
    /// The old member that sends the state snapshot to the joiners.
    pub provider: Option<MemberId>,
    /// Members of the next view that need a state snapshot (the joiners).
    pub joiners: Vec<MemberId>,
}

/// One position range of the total order: messages `seq..seq+count` of the
/// member of rank `origin` take the next `count` positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderRun {
    /// Rank of the sender in the view.
    pub origin: u32,
    /// First sequence number of the run.
    pub seq: u64,
    /// Number of consecutive messages (each counts one position; fragments of
    /// one message are one entry, named by the sequence number of the last one).
    pub count: u32,
}

/// One fragment's place in its message: fragments of a message occupy
/// consecutive sequence numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment {
    /// 0-based position of this fragment.
    pub index: u32,
    /// How many fragments the message has (at least 2).
    pub count: u32,
}

/// The body of a reliable, sequenced message.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// An application message, or one fragment of one.
    App {
        /// The ordering the sender asked for (never `Unreliable`).
        ordering: Ordering,
        /// Set when the message was split.
        frag: Option<Fragment>,
        /// Vector timestamp over the view's ranks; only on `Causal` messages,
        /// only on the first fragment; empty otherwise.
        causal: Vec<u64>,
        /// Set when the message is a group query with this asker counter.
        query: Option<u64>,
        /// The bytes (of this fragment).
        payload: Bytes,
    },
    /// Ordering records of the sequencer: positions `first..` of the total order.
    Order {
        /// Position of the first message of the first run.
        first: u64,
        /// The runs, in order.
        runs: Vec<OrderRun>,
    },
}

/// One frame of a datagram.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// A message of the reliable stream of the member of rank `origin` in the
    /// datagram's view (possibly a retransmission by another member).
    Data {
        /// Rank of the original sender.
        origin: u32,
        /// Its sequence number in that sender's stream (from 1).
        seq: u64,
        /// What it carries.
        body: Body,
    },
    /// A best-effort message: never retransmitted.
    Unreliable {
        /// Sender-local counter, for duplicate suppression.
        useq: u64,
        /// The bytes.
        payload: Bytes,
    },
    /// Cumulative acknowledgement: `contig[r]` is the highest sequence number of
    /// rank `r` held with no gap below it.
    Ack {
        /// Per rank of the datagram's view.
        contig: Vec<u64>,
    },
    /// Request for retransmission of `origin`'s messages in the inclusive ranges.
    Nak {
        /// Rank of the sender whose messages are missing.
        origin: u32,
        /// Inclusive `(first, last)` ranges.
        ranges: Vec<(u64, u64)>,
    },
    /// Liveness, and the sender's highest sequence number sent in the view (so
    /// that a lost tail is noticed).
    Heartbeat {
        /// Highest sequence number sent.
        sent: u64,
    },
    /// The sender suspects these members; sent to the coordinator.
    Suspect {
        /// The suspected members.
        members: Vec<MemberId>,
    },
    /// The sender asks to leave the group.
    Leave,
    /// A process asks to join; a contact forwards it to its coordinator.
    JoinRequest {
        /// The process that wants to join.
        joiner: MemberId,
        /// Where it listens.
        addr: Addr,
    },
    /// Phase 1 of a view change: stop delivering in the datagram's view and report.
    Prepare {
        /// The attempt.
        ballot: Ballot,
    },
    /// Answer to [`Frame::Prepare`].
    Promise {
        /// The attempt being answered.
        ballot: Ballot,
        /// What the sender holds of each rank's stream, without gaps.
        contig: Vec<u64>,
        /// The proposal the sender accepted last, with its ballot, if any.
        accepted: Option<(Ballot, Proposal)>,
        /// Whether the sender holds the application state (false for a joiner
        /// whose state transfer has not finished).
        ready: bool,
        /// Whether the sender asked to leave.
        leaving: bool,
    },
    /// Refusal: the sender promised a higher ballot.
    Reject {
        /// The refused ballot.
        ballot: Ballot,
        /// The ballot the sender promised.
        promised: Ballot,
    },
    /// Phase 2: accept this proposal (after fetching every message up to its cut).
    Accept {
        /// The attempt.
        ballot: Ballot,
        /// The proposal.
        proposal: Proposal,
    },
    /// Answer to [`Frame::Accept`]: the sender holds the cut and accepted.
    Accepted {
        /// The attempt.
        ballot: Ballot,
    },
    /// The proposal is decided: deliver up to the cut and install the next view.
    Commit {
        /// The decided proposal; the datagram's view is the view it ends.
        proposal: Proposal,
    },
    /// "You are not a member of my view": the receiver was excluded.
    NotMember {
        /// The sender's current view.
        view: ViewId,
    },
    /// A joiner asks its provider for state bytes from `offset`.
    StateRequest {
        /// The view at whose boundary the snapshot was taken.
        view: ViewId,
        /// The first byte wanted.
        offset: u64,
    },
    /// A chunk of a state snapshot.
    StateChunk {
        /// The view at whose boundary the snapshot was taken.
        view: ViewId,
        /// Offset of `bytes` in the snapshot.
        offset: u64,
        /// Length of the whole snapshot.
        total_len: u64,
        /// The chunk.
        bytes: Bytes,
    },
    /// A member's reply to a group query.
    QueryReply {
        /// The query answered.
        query: QueryId,
        /// The reply.
        payload: Bytes,
    },
    /// The asker has not heard a reply yet: resend it if you have one.
    QueryPoll {
        /// The query.
        query: QueryId,
    },
}

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The datagram ended in the middle of a field.
    #[error("datagram truncated while reading {0}")]
    Truncated(&'static str),
    /// The first byte is not [`MAGIC`].
    #[error("not a troupe datagram (bad magic byte {0:#04x})")]
    Magic(u8),
    /// A wire version this build does not speak.
    #[error("unsupported wire version {0} (this build speaks {WIRE_VERSION})")]
    Version(u8),
    /// A frame tag that does not exist.
    #[error("unknown frame tag {0}")]
    UnknownFrame(u8),
    /// A varint longer than 10 bytes or overflowing 64 bits.
    #[error("malformed varint in {0}")]
    Varint(&'static str),
    /// A value outside its domain (an ordering code, a flag, a count).
    #[error("invalid value for {0}")]
    Invalid(&'static str),
    /// A length larger than the bytes that remain, or than its limit.
    #[error("length of {0} exceeds the datagram or its limit")]
    Length(&'static str),
}
