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
//! Frames follow the header until the end of the datagram; a frame's fields
//! follow its tag in declaration order. The tags:
//!
//! | tag | frame          | fields                                                    |
//! |----:|----------------|-----------------------------------------------------------|
//! |   1 | `Data`         | origin:u32, seq, body                                     |
//! |   2 | `Unreliable`   | useq, payload:bytes                                       |
//! |   3 | `Ack`          | contig:vec(u64)                                           |
//! |   4 | `Nak`          | origin:u32, ranges:vec(first, last)                       |
//! |   5 | `Heartbeat`    | sent                                                      |
//! |   6 | `Suspect`      | members:vec(member)                                       |
//! |   7 | `Leave`        |                                                           |
//! |   8 | `JoinRequest`  | joiner:member, addr:bytes                                 |
//! |   9 | `Prepare`      | ballot                                                    |
//! |  10 | `Promise`      | ballot, contig:vec(u64), accepted:opt(ballot, proposal), ready:bool, leaving:bool |
//! |  11 | `Reject`       | ballot, promised:ballot                                   |
//! |  12 | `Accept`       | ballot, proposal                                          |
//! |  13 | `Accepted`     | ballot                                                    |
//! |  14 | `Commit`       | proposal                                                  |
//! |  15 | `NotMember`    | view:view_id, member                                      |
//! |  16 | `StateRequest` | view:view_id, offset                                      |
//! |  17 | `StateChunk`   | view:view_id, offset, total_len, bytes:bytes              |
//! |  18 | `QueryReply`   | query:query_id, payload:bytes                             |
//! |  19 | `QueryPoll`    | query:query_id                                            |
//! |  20 | `Mark`         | seq, mark:bytes (at most [`MARK_BYTES_MAX`])              |
//!
//! Tag 0 and tags above 20 are refused with [`DecodeError::UnknownFrame`]. The
//! composite fields:
//!
//! ```text
//! body      := 1, ordering:u8, frag:opt(index:u32, count:u32), causal:vec(u64),
//!              query:opt(u64), payload:bytes                      (Body::App)
//!            | 2, first, runs:vec(origin:u32, seq, count:u32)     (Body::Order)
//! ballot    := round, coord:member
//! proposal  := next:view, cut:vec(u64), provider:opt(member), joiners:vec(member)
//! view      := id:view_id, n, member * n, addr:bytes * n
//! query_id  := asker:member, n
//! u32       := a varint whose value fits 32 bits
//! bool      := u8, 0 or 1
//! opt(x)    := u8 flag 0 (absent) | u8 flag 1, x
//! vec(x)    := count, x * count
//! bytes     := length, the bytes
//! ordering  := u8, the `Ordering` code (`Unreliable` is refused inside a body)
//! ```
//!
//! Every variable-length field is length-prefixed, and a length is checked
//! against the bytes that remain before anything is allocated, so a hostile
//! length cannot make the decoder allocate more than the datagram's size.
//! Member lists and per-rank vectors (`contig`, `cut`, `causal`, `joiners`,
//! suspects, view members) are also bounded by [`MEMBERS_MAX`]. A fragment must
//! have `count >= 2` and `index < count`. Decoded byte fields (payloads,
//! addresses, state chunks) are zero-copy slices of the received buffer.
//!
//! Decoding accepts non-minimal varints (as long as they fit 10 bytes and the
//! field's width); encoding always writes minimal ones.

use bytes::{BufMut, Bytes, BytesMut};

use crate::types::{Addr, MemberId, Ordering, QueryId, View, ViewId};

/// The wire version this build speaks. A datagram of another version is
/// refused with [`DecodeError::Version`].
pub const WIRE_VERSION: u8 = 2;

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
        /// The member it is for. A restarted process listens where its old
        /// incarnation did, so the address alone does not say.
        member: MemberId,
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
    /// The sender's mark, as its application last set it (see
    /// `Engine::set_mark`): the latest one wins.
    Mark {
        /// Which of the sender's marks: they are numbered from 1 in the
        /// order it set them, so that a receiver never takes an older one
        /// for news.
        seq: u64,
        /// At most [`MARK_BYTES_MAX`] bytes.
        mark: Bytes,
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

// ---------------------------------------------------------------------------
// Tags and sizes
// ---------------------------------------------------------------------------

const TAG_DATA: u8 = 1;
const TAG_UNRELIABLE: u8 = 2;
const TAG_ACK: u8 = 3;
const TAG_NAK: u8 = 4;
const TAG_HEARTBEAT: u8 = 5;
const TAG_SUSPECT: u8 = 6;
const TAG_LEAVE: u8 = 7;
const TAG_JOIN_REQUEST: u8 = 8;
const TAG_PREPARE: u8 = 9;
const TAG_PROMISE: u8 = 10;
const TAG_REJECT: u8 = 11;
const TAG_ACCEPT: u8 = 12;
const TAG_ACCEPTED: u8 = 13;
const TAG_COMMIT: u8 = 14;
const TAG_NOT_MEMBER: u8 = 15;
const TAG_STATE_REQUEST: u8 = 16;
const TAG_STATE_CHUNK: u8 = 17;
const TAG_QUERY_REPLY: u8 = 18;
const TAG_QUERY_POLL: u8 = 19;
const TAG_MARK: u8 = 20;

/// Longest mark a member may publish (see `Engine::set_mark`): a mark is a
/// small progress record, not a message.
pub const MARK_BYTES_MAX: usize = 256;

const BODY_APP: u8 = 1;
const BODY_ORDER: u8 = 2;

/// Longest varint of a `u64`.
const VARINT_MAX: usize = 10;
/// Longest encoding of a [`MemberId`].
const MEMBER_LEN_MAX: usize = 2 * VARINT_MAX;
/// Longest encoding of a [`ViewId`], a [`Ballot`] or a [`QueryId`].
const TRIPLE_LEN_MAX: usize = 3 * VARINT_MAX;

/// An upper bound of the length of the datagram header written by
/// [`encode_header`]: magic, version, 8-byte group, sender and view id.
pub const HEADER_LEN_MAX: usize = 1 + 1 + 8 + MEMBER_LEN_MAX + TRIPLE_LEN_MAX;

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

/// The number of bytes of the varint of `v` (1 to 10).
#[inline]
fn varint_len(v: u64) -> usize {
    // Significant bits (at least 1), rounded up to 7-bit groups.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
fn put_varint(buf: &mut BytesMut, mut v: u64) {
    if v < 0x80 {
        buf.put_u8(v as u8);
        return;
    }
    let mut tmp = [0u8; VARINT_MAX];
    let mut n = 0;
    while v >= 0x80 {
        tmp[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    tmp[n] = v as u8;
    buf.put_slice(&tmp[..=n]);
}

#[inline]
fn put_len(buf: &mut BytesMut, len: usize) {
    put_varint(buf, len as u64);
}

#[inline]
fn put_bool(buf: &mut BytesMut, b: bool) {
    buf.put_u8(u8::from(b));
}

#[inline]
fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    put_len(buf, b.len());
    buf.put_slice(b);
}

#[inline]
fn put_member(buf: &mut BytesMut, m: MemberId) {
    put_varint(buf, m.node);
    put_varint(buf, m.incarnation);
}

#[inline]
fn put_view_id(buf: &mut BytesMut, v: ViewId) {
    put_varint(buf, v.epoch);
    put_member(buf, v.coord);
}

#[inline]
fn put_ballot(buf: &mut BytesMut, b: Ballot) {
    put_varint(buf, b.round);
    put_member(buf, b.coord);
}

#[inline]
fn put_query_id(buf: &mut BytesMut, q: QueryId) {
    put_member(buf, q.asker);
    put_varint(buf, q.n);
}

fn put_u64s(buf: &mut BytesMut, v: &[u64]) {
    debug_assert!(
        v.len() <= MEMBERS_MAX,
        "per-rank vector longer than MEMBERS_MAX does not decode"
    );
    put_len(buf, v.len());
    for x in v {
        put_varint(buf, *x);
    }
}

fn put_members(buf: &mut BytesMut, v: &[MemberId]) {
    debug_assert!(
        v.len() <= MEMBERS_MAX,
        "member list longer than MEMBERS_MAX does not decode"
    );
    put_len(buf, v.len());
    for m in v {
        put_member(buf, *m);
    }
}

fn put_view(buf: &mut BytesMut, v: &View) {
    debug_assert_eq!(
        v.members.len(),
        v.addrs.len(),
        "a view needs one address per member"
    );
    put_view_id(buf, v.id);
    put_members(buf, &v.members);
    // Exactly one address per member, so the member list survives a
    // (buggy) view with missing addresses: those go out empty.
    for i in 0..v.members.len() {
        put_bytes(buf, v.addrs.get(i).map_or(&[][..], |a| &a[..]));
    }
}

fn put_proposal(buf: &mut BytesMut, p: &Proposal) {
    put_view(buf, &p.next);
    put_u64s(buf, &p.cut);
    match p.provider {
        None => buf.put_u8(0),
        Some(m) => {
            buf.put_u8(1);
            put_member(buf, m);
        }
    }
    put_members(buf, &p.joiners);
}

fn put_body(buf: &mut BytesMut, body: &Body) {
    match body {
        Body::App {
            ordering,
            frag,
            causal,
            query,
            payload,
        } => {
            debug_assert!(
                *ordering != Ordering::Unreliable,
                "Body::App never carries Unreliable"
            );
            buf.put_u8(BODY_APP);
            buf.put_u8(*ordering as u8);
            match frag {
                None => buf.put_u8(0),
                Some(f) => {
                    debug_assert!(f.count >= 2 && f.index < f.count, "invalid fragment {f:?}");
                    buf.put_u8(1);
                    put_varint(buf, u64::from(f.index));
                    put_varint(buf, u64::from(f.count));
                }
            }
            put_u64s(buf, causal);
            match query {
                None => buf.put_u8(0),
                Some(q) => {
                    buf.put_u8(1);
                    put_varint(buf, *q);
                }
            }
            put_bytes(buf, payload);
        }
        Body::Order { first, runs } => {
            buf.put_u8(BODY_ORDER);
            put_varint(buf, *first);
            put_len(buf, runs.len());
            for r in runs {
                put_varint(buf, u64::from(r.origin));
                put_varint(buf, r.seq);
                put_varint(buf, u64::from(r.count));
            }
        }
    }
}

/// Appends the datagram header to `buf` (used to build packed datagrams
/// incrementally): magic, version, `group`, the sender `from` and its `view`.
/// At most [`HEADER_LEN_MAX`] bytes.
pub fn encode_header(buf: &mut BytesMut, group: u64, from: MemberId, view: ViewId) {
    buf.reserve(HEADER_LEN_MAX);
    buf.put_u8(MAGIC);
    buf.put_u8(WIRE_VERSION);
    buf.put_u64_le(group);
    put_member(buf, from);
    put_view_id(buf, view);
}

/// Appends one frame to `buf`: its tag, then its fields. At most
/// [`frame_len_max`]`(frame)` bytes.
pub fn encode_frame(buf: &mut BytesMut, frame: &Frame) {
    match frame {
        Frame::Data { origin, seq, body } => {
            buf.put_u8(TAG_DATA);
            put_varint(buf, u64::from(*origin));
            put_varint(buf, *seq);
            put_body(buf, body);
        }
        Frame::Unreliable { useq, payload } => {
            buf.put_u8(TAG_UNRELIABLE);
            put_varint(buf, *useq);
            put_bytes(buf, payload);
        }
        Frame::Ack { contig } => {
            buf.put_u8(TAG_ACK);
            put_u64s(buf, contig);
        }
        Frame::Nak { origin, ranges } => {
            buf.put_u8(TAG_NAK);
            put_varint(buf, u64::from(*origin));
            put_len(buf, ranges.len());
            for (first, last) in ranges {
                put_varint(buf, *first);
                put_varint(buf, *last);
            }
        }
        Frame::Heartbeat { sent } => {
            buf.put_u8(TAG_HEARTBEAT);
            put_varint(buf, *sent);
        }
        Frame::Suspect { members } => {
            buf.put_u8(TAG_SUSPECT);
            put_members(buf, members);
        }
        Frame::Leave => buf.put_u8(TAG_LEAVE),
        Frame::JoinRequest { joiner, addr } => {
            buf.put_u8(TAG_JOIN_REQUEST);
            put_member(buf, *joiner);
            put_bytes(buf, addr);
        }
        Frame::Prepare { ballot } => {
            buf.put_u8(TAG_PREPARE);
            put_ballot(buf, *ballot);
        }
        Frame::Promise {
            ballot,
            contig,
            accepted,
            ready,
            leaving,
        } => {
            buf.put_u8(TAG_PROMISE);
            put_ballot(buf, *ballot);
            put_u64s(buf, contig);
            match accepted {
                None => buf.put_u8(0),
                Some((b, p)) => {
                    buf.put_u8(1);
                    put_ballot(buf, *b);
                    put_proposal(buf, p);
                }
            }
            put_bool(buf, *ready);
            put_bool(buf, *leaving);
        }
        Frame::Reject { ballot, promised } => {
            buf.put_u8(TAG_REJECT);
            put_ballot(buf, *ballot);
            put_ballot(buf, *promised);
        }
        Frame::Accept { ballot, proposal } => {
            buf.put_u8(TAG_ACCEPT);
            put_ballot(buf, *ballot);
            put_proposal(buf, proposal);
        }
        Frame::Accepted { ballot } => {
            buf.put_u8(TAG_ACCEPTED);
            put_ballot(buf, *ballot);
        }
        Frame::Commit { proposal } => {
            buf.put_u8(TAG_COMMIT);
            put_proposal(buf, proposal);
        }
        Frame::NotMember { view, member } => {
            buf.put_u8(TAG_NOT_MEMBER);
            put_view_id(buf, *view);
            put_member(buf, *member);
        }
        Frame::StateRequest { view, offset } => {
            buf.put_u8(TAG_STATE_REQUEST);
            put_view_id(buf, *view);
            put_varint(buf, *offset);
        }
        Frame::StateChunk {
            view,
            offset,
            total_len,
            bytes,
        } => {
            buf.put_u8(TAG_STATE_CHUNK);
            put_view_id(buf, *view);
            put_varint(buf, *offset);
            put_varint(buf, *total_len);
            put_bytes(buf, bytes);
        }
        Frame::QueryReply { query, payload } => {
            buf.put_u8(TAG_QUERY_REPLY);
            put_query_id(buf, *query);
            put_bytes(buf, payload);
        }
        Frame::QueryPoll { query } => {
            buf.put_u8(TAG_QUERY_POLL);
            put_query_id(buf, *query);
        }
        Frame::Mark { seq, mark } => {
            buf.put_u8(TAG_MARK);
            put_varint(buf, *seq);
            put_bytes(buf, mark);
        }
    }
}

/// Upper bound of a length-prefixed byte field.
#[inline]
fn bytes_len_max(len: usize) -> usize {
    varint_len(len as u64).saturating_add(len)
}

/// Upper bound of a vector of `n` elements of at most `each` bytes.
#[inline]
fn vec_len_max(n: usize, each: usize) -> usize {
    varint_len(n as u64).saturating_add(n.saturating_mul(each))
}

fn view_len_max(v: &View) -> usize {
    let addrs = v
        .addrs
        .iter()
        .fold(0usize, |acc, a| acc.saturating_add(bytes_len_max(a.len())));
    // `+ members.len()`: one empty address per member that lacks one.
    TRIPLE_LEN_MAX
        .saturating_add(vec_len_max(v.members.len(), MEMBER_LEN_MAX))
        .saturating_add(addrs)
        .saturating_add(v.members.len())
}

fn proposal_len_max(p: &Proposal) -> usize {
    view_len_max(&p.next)
        .saturating_add(vec_len_max(p.cut.len(), VARINT_MAX))
        .saturating_add(1 + MEMBER_LEN_MAX)
        .saturating_add(vec_len_max(p.joiners.len(), MEMBER_LEN_MAX))
}

/// An upper bound of the bytes [`encode_frame`] appends for this frame. Cheap:
/// constant time except for views, whose addresses are summed; exact for
/// scalar fields and byte fields, and assuming the longest varint for
/// elements of vectors.
pub fn frame_len_max(frame: &Frame) -> usize {
    1 + match frame {
        Frame::Data { origin, seq, body } => {
            let head = varint_len(u64::from(*origin)) + varint_len(*seq);
            let body = match body {
                Body::App {
                    frag,
                    causal,
                    query,
                    payload,
                    ..
                } => {
                    // kind, ordering, frag flag and fields, causal, query flag and value, payload
                    let frag = frag.map_or(0, |f| {
                        varint_len(u64::from(f.index)) + varint_len(u64::from(f.count))
                    });
                    let query = query.map_or(0, varint_len);
                    (3 + frag + 1 + query)
                        .saturating_add(vec_len_max(causal.len(), VARINT_MAX))
                        .saturating_add(bytes_len_max(payload.len()))
                }
                Body::Order { first, runs } => (1 + varint_len(*first))
                    .saturating_add(vec_len_max(runs.len(), 5 + VARINT_MAX + 5)),
            };
            head.saturating_add(body)
        }
        Frame::Unreliable { useq, payload } => {
            varint_len(*useq).saturating_add(bytes_len_max(payload.len()))
        }
        Frame::Ack { contig } => vec_len_max(contig.len(), VARINT_MAX),
        Frame::Nak { origin, ranges } => {
            varint_len(u64::from(*origin)).saturating_add(vec_len_max(ranges.len(), 2 * VARINT_MAX))
        }
        Frame::Heartbeat { sent } => varint_len(*sent),
        Frame::Suspect { members } => vec_len_max(members.len(), MEMBER_LEN_MAX),
        Frame::Leave => 0,
        Frame::JoinRequest { addr, .. } => MEMBER_LEN_MAX.saturating_add(bytes_len_max(addr.len())),
        Frame::Prepare { .. } | Frame::Accepted { .. } => TRIPLE_LEN_MAX,
        Frame::Promise {
            contig, accepted, ..
        } => {
            let accepted = accepted.as_ref().map_or(0, |(_, p)| {
                TRIPLE_LEN_MAX.saturating_add(proposal_len_max(p))
            });
            (TRIPLE_LEN_MAX + 1 + 2)
                .saturating_add(vec_len_max(contig.len(), VARINT_MAX))
                .saturating_add(accepted)
        }
        Frame::Reject { .. } => 2 * TRIPLE_LEN_MAX,
        Frame::Accept { proposal, .. } => TRIPLE_LEN_MAX.saturating_add(proposal_len_max(proposal)),
        Frame::Commit { proposal } => proposal_len_max(proposal),
        Frame::NotMember { .. } => TRIPLE_LEN_MAX + MEMBER_LEN_MAX,
        Frame::QueryPoll { .. } => TRIPLE_LEN_MAX,
        Frame::Mark { seq, mark } => varint_len(*seq).saturating_add(bytes_len_max(mark.len())),
        Frame::StateRequest { offset, .. } => TRIPLE_LEN_MAX + varint_len(*offset),
        Frame::StateChunk {
            offset,
            total_len,
            bytes,
            ..
        } => (TRIPLE_LEN_MAX + varint_len(*offset) + varint_len(*total_len))
            .saturating_add(bytes_len_max(bytes.len())),
        Frame::QueryReply { payload, .. } => {
            TRIPLE_LEN_MAX.saturating_add(bytes_len_max(payload.len()))
        }
    }
}

impl Datagram {
    /// Encodes into a fresh buffer, sized up front so that it never grows.
    pub fn encode(&self) -> Bytes {
        let cap = self.frames.iter().fold(HEADER_LEN_MAX, |acc, f| {
            acc.saturating_add(frame_len_max(f))
        });
        let mut buf = BytesMut::with_capacity(cap);
        encode_header(&mut buf, self.group, self.from, self.view);
        for f in &self.frames {
            encode_frame(&mut buf, f);
        }
        buf.freeze()
    }

    /// Decodes a whole datagram. Byte fields of the result are zero-copy
    /// slices of `bytes`.
    pub fn decode(bytes: Bytes) -> Result<Datagram, DecodeError> {
        let mut reader = DatagramReader::new(bytes)?;
        let mut frames = Vec::new();
        while let Some(f) = reader.next_frame() {
            frames.push(f?);
        }
        Ok(Datagram {
            group: reader.group,
            from: reader.from,
            view: reader.view,
            frames,
        })
    }
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/// A read position in a received buffer. Every read is bounds-checked and
/// returns a [`DecodeError`] naming the field; nothing here can panic.
struct Cursor {
    buf: Bytes,
    /// Invariant: `pos <= buf.len()`.
    pos: usize,
}

/// Decodes a varint from the start of `s`: its value and length.
#[inline(never)]
fn varint_slow(s: &[u8], what: &'static str) -> Result<(u64, usize), DecodeError> {
    let mut v = 0u64;
    for (i, &b) in s.iter().take(VARINT_MAX).enumerate() {
        // The tenth byte holds bit 63 only, and must end the varint.
        if i == VARINT_MAX - 1 && b > 1 {
            return Err(DecodeError::Varint(what));
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok((v, i + 1));
        }
    }
    if s.len() >= VARINT_MAX {
        Err(DecodeError::Varint(what))
    } else {
        Err(DecodeError::Truncated(what))
    }
}

impl Cursor {
    #[inline]
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    #[inline]
    fn rest(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    #[inline]
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        match self.buf.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(DecodeError::Truncated(what)),
        }
    }

    /// A 0/1 byte.
    #[inline]
    fn flag(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid(what)),
        }
    }

    /// A varint; the one-byte case (most lengths, ranks, flags-sized values)
    /// is inlined into every caller.
    #[inline(always)]
    fn varint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        match self.buf.get(self.pos) {
            Some(&b) if b < 0x80 => {
                self.pos += 1;
                Ok(u64::from(b))
            }
            Some(_) => {
                let (v, n) = varint_slow(self.rest(), what)?;
                self.pos += n;
                Ok(v)
            }
            None => Err(DecodeError::Truncated(what)),
        }
    }

    /// A varint that must fit 32 bits.
    #[inline]
    fn varint_u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        u32::try_from(self.varint(what)?).map_err(|_| DecodeError::Varint(what))
    }

    /// A count of elements of at least `elem_min` bytes each, at most `max`:
    /// safe to allocate for once it returns.
    #[inline]
    fn count(
        &mut self,
        what: &'static str,
        elem_min: usize,
        max: usize,
    ) -> Result<usize, DecodeError> {
        let n = usize::try_from(self.varint(what)?).map_err(|_| DecodeError::Length(what))?;
        let fits = n
            .checked_mul(elem_min)
            .is_some_and(|need| need <= self.remaining());
        if n > max || !fits {
            return Err(DecodeError::Length(what));
        }
        Ok(n)
    }

    /// A length-prefixed byte field, as a zero-copy slice of the buffer.
    #[inline]
    fn bytes(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.count(what, 1, usize::MAX)?;
        // `count` checked `len <= remaining`, so the range is in bounds.
        let end = self.pos + len;
        let b = self.buf.slice(self.pos..end);
        self.pos = end;
        Ok(b)
    }

    fn u64_le(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let end = self
            .pos
            .checked_add(8)
            .ok_or(DecodeError::Truncated(what))?;
        let raw: [u8; 8] = self
            .buf
            .get(self.pos..end)
            .and_then(|s| s.try_into().ok())
            .ok_or(DecodeError::Truncated(what))?;
        self.pos = end;
        Ok(u64::from_le_bytes(raw))
    }

    #[inline]
    fn member(&mut self, what: &'static str) -> Result<MemberId, DecodeError> {
        Ok(MemberId {
            node: self.varint(what)?,
            incarnation: self.varint(what)?,
        })
    }

    #[inline]
    fn view_id(&mut self, what: &'static str) -> Result<ViewId, DecodeError> {
        Ok(ViewId {
            epoch: self.varint(what)?,
            coord: self.member(what)?,
        })
    }

    #[inline]
    fn ballot(&mut self, what: &'static str) -> Result<Ballot, DecodeError> {
        Ok(Ballot {
            round: self.varint(what)?,
            coord: self.member(what)?,
        })
    }

    #[inline]
    fn query_id(&mut self) -> Result<QueryId, DecodeError> {
        Ok(QueryId {
            asker: self.member("query asker")?,
            n: self.varint("query counter")?,
        })
    }

    /// A per-rank vector of varints, bounded by [`MEMBERS_MAX`].
    fn u64s(&mut self, what: &'static str) -> Result<Vec<u64>, DecodeError> {
        let n = self.count(what, 1, MEMBERS_MAX)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.varint(what)?);
        }
        Ok(v)
    }

    /// A member list, bounded by [`MEMBERS_MAX`].
    fn members(&mut self, what: &'static str) -> Result<Vec<MemberId>, DecodeError> {
        let n = self.count(what, 2, MEMBERS_MAX)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.member(what)?);
        }
        Ok(v)
    }

    fn view(&mut self) -> Result<View, DecodeError> {
        let id = self.view_id("view id")?;
        let members = self.members("view members")?;
        if members.len() > self.remaining() {
            return Err(DecodeError::Length("view addrs"));
        }
        let mut addrs = Vec::with_capacity(members.len());
        for _ in 0..members.len() {
            addrs.push(self.bytes("view addr")?);
        }
        Ok(View { id, members, addrs })
    }

    fn proposal(&mut self) -> Result<Proposal, DecodeError> {
        let next = self.view()?;
        let cut = self.u64s("proposal cut")?;
        let provider = if self.flag("proposal provider flag")? {
            Some(self.member("proposal provider")?)
        } else {
            None
        };
        let joiners = self.members("proposal joiners")?;
        Ok(Proposal {
            next,
            cut,
            provider,
            joiners,
        })
    }

    #[inline]
    fn body(&mut self) -> Result<Body, DecodeError> {
        match self.u8("body kind")? {
            BODY_APP => {
                let ordering = match Ordering::from_u8(self.u8("ordering")?) {
                    Some(Ordering::Unreliable) | None => {
                        return Err(DecodeError::Invalid("ordering"))
                    }
                    Some(o) => o,
                };
                let frag = if self.flag("fragment flag")? {
                    let index = self.varint_u32("fragment index")?;
                    let count = self.varint_u32("fragment count")?;
                    if count < 2 || index >= count {
                        return Err(DecodeError::Invalid("fragment"));
                    }
                    Some(Fragment { index, count })
                } else {
                    None
                };
                let causal = self.u64s("causal")?;
                let query = if self.flag("query flag")? {
                    Some(self.varint("query")?)
                } else {
                    None
                };
                let payload = self.bytes("payload")?;
                Ok(Body::App {
                    ordering,
                    frag,
                    causal,
                    query,
                    payload,
                })
            }
            BODY_ORDER => {
                let first = self.varint("order first")?;
                let n = self.count("order runs", 3, usize::MAX)?;
                let mut runs = Vec::with_capacity(n);
                for _ in 0..n {
                    runs.push(OrderRun {
                        origin: self.varint_u32("run origin")?,
                        seq: self.varint("run seq")?,
                        count: self.varint_u32("run count")?,
                    });
                }
                Ok(Body::Order { first, runs })
            }
            _ => Err(DecodeError::Invalid("body kind")),
        }
    }

    /// One frame. Struct fields are read in the order they are written (Rust
    /// evaluates struct expressions left to right), which is the wire order.
    #[inline]
    fn frame(&mut self) -> Result<Frame, DecodeError> {
        Ok(match self.u8("frame tag")? {
            TAG_DATA => Frame::Data {
                origin: self.varint_u32("data origin")?,
                seq: self.varint("data seq")?,
                body: self.body()?,
            },
            TAG_UNRELIABLE => Frame::Unreliable {
                useq: self.varint("unreliable useq")?,
                payload: self.bytes("unreliable payload")?,
            },
            TAG_ACK => Frame::Ack {
                contig: self.u64s("ack contig")?,
            },
            TAG_NAK => {
                let origin = self.varint_u32("nak origin")?;
                let n = self.count("nak ranges", 2, usize::MAX)?;
                let mut ranges = Vec::with_capacity(n);
                for _ in 0..n {
                    ranges.push((self.varint("nak range")?, self.varint("nak range")?));
                }
                Frame::Nak { origin, ranges }
            }
            TAG_HEARTBEAT => Frame::Heartbeat {
                sent: self.varint("heartbeat sent")?,
            },
            TAG_SUSPECT => Frame::Suspect {
                members: self.members("suspects")?,
            },
            TAG_LEAVE => Frame::Leave,
            TAG_JOIN_REQUEST => Frame::JoinRequest {
                joiner: self.member("joiner")?,
                addr: self.bytes("joiner addr")?,
            },
            TAG_PREPARE => Frame::Prepare {
                ballot: self.ballot("ballot")?,
            },
            TAG_PROMISE => {
                let ballot = self.ballot("ballot")?;
                let contig = self.u64s("promise contig")?;
                let accepted = if self.flag("promise accepted flag")? {
                    Some((self.ballot("accepted ballot")?, self.proposal()?))
                } else {
                    None
                };
                let ready = self.flag("promise ready")?;
                let leaving = self.flag("promise leaving")?;
                Frame::Promise {
                    ballot,
                    contig,
                    accepted,
                    ready,
                    leaving,
                }
            }
            TAG_REJECT => Frame::Reject {
                ballot: self.ballot("ballot")?,
                promised: self.ballot("promised ballot")?,
            },
            TAG_ACCEPT => Frame::Accept {
                ballot: self.ballot("ballot")?,
                proposal: self.proposal()?,
            },
            TAG_ACCEPTED => Frame::Accepted {
                ballot: self.ballot("ballot")?,
            },
            TAG_COMMIT => Frame::Commit {
                proposal: self.proposal()?,
            },
            TAG_NOT_MEMBER => Frame::NotMember {
                view: self.view_id("view id")?,
                member: self.member("excluded member")?,
            },
            TAG_STATE_REQUEST => Frame::StateRequest {
                view: self.view_id("state view")?,
                offset: self.varint("state offset")?,
            },
            TAG_STATE_CHUNK => Frame::StateChunk {
                view: self.view_id("state view")?,
                offset: self.varint("state offset")?,
                total_len: self.varint("state total length")?,
                bytes: self.bytes("state chunk")?,
            },
            TAG_QUERY_REPLY => Frame::QueryReply {
                query: self.query_id()?,
                payload: self.bytes("query reply payload")?,
            },
            TAG_QUERY_POLL => Frame::QueryPoll {
                query: self.query_id()?,
            },
            TAG_MARK => {
                let seq = self.varint("mark seq")?;
                let mark = self.bytes("mark")?;
                if mark.len() > MARK_BYTES_MAX {
                    return Err(DecodeError::Length("mark"));
                }
                Frame::Mark { seq, mark }
            }
            tag => return Err(DecodeError::UnknownFrame(tag)),
        })
    }
}

/// A streaming decoder: parses the header up front, then yields the frames one
/// by one without collecting them. After the first error it yields nothing
/// more (a malformed frame leaves no way to find the next one).
///
/// It is also an [`Iterator`] over the same items as [`DatagramReader::next_frame`].
pub struct DatagramReader {
    /// The group hash of the header.
    pub group: u64,
    /// The sender.
    pub from: MemberId,
    /// The sender's view.
    pub view: ViewId,
    cur: Cursor,
}

impl DatagramReader {
    /// Parses the header of `bytes`; the frames are decoded by
    /// [`DatagramReader::next_frame`].
    pub fn new(bytes: Bytes) -> Result<DatagramReader, DecodeError> {
        let mut cur = Cursor { buf: bytes, pos: 0 };
        let magic = cur.u8("magic")?;
        if magic != MAGIC {
            return Err(DecodeError::Magic(magic));
        }
        let version = cur.u8("version")?;
        if version != WIRE_VERSION {
            return Err(DecodeError::Version(version));
        }
        let group = cur.u64_le("group")?;
        let from = cur.member("sender")?;
        let view = cur.view_id("sender view")?;
        Ok(DatagramReader {
            group,
            from,
            view,
            cur,
        })
    }

    /// The group hash of the header.
    pub fn group(&self) -> u64 {
        self.group
    }

    /// The sender.
    pub fn from(&self) -> MemberId {
        self.from
    }

    /// The view the sender was in.
    pub fn view(&self) -> ViewId {
        self.view
    }

    /// The next frame; `None` at the end of the datagram, and after an error.
    pub fn next_frame(&mut self) -> Option<Result<Frame, DecodeError>> {
        if self.cur.remaining() == 0 {
            return None;
        }
        let f = self.cur.frame();
        if f.is_err() {
            // Stop: the rest of the buffer cannot be framed.
            self.cur.pos = self.cur.buf.len();
        }
        Some(f)
    }
}

impl Iterator for DatagramReader {
    type Item = Result<Frame, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_frame()
    }
}

impl std::iter::FusedIterator for DatagramReader {}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(node: u64, inc: u64) -> MemberId {
        MemberId::new(node, inc)
    }

    fn vid(epoch: u64) -> ViewId {
        ViewId {
            epoch,
            coord: m(1, 1),
        }
    }

    fn ballot(round: u64) -> Ballot {
        Ballot {
            round,
            coord: m(2, 7),
        }
    }

    fn proposal() -> Proposal {
        Proposal {
            next: View {
                id: vid(9),
                members: vec![m(1, 1), m(3, 2), m(u64::MAX, u64::MAX)],
                addrs: vec![
                    Bytes::from_static(b"10.0.0.1:7000"),
                    Bytes::new(),
                    Bytes::from_static(b"x"),
                ],
            },
            cut: vec![0, 17, u64::MAX],
            provider: Some(m(1, 1)),
            joiners: vec![m(u64::MAX, u64::MAX)],
        }
    }

    /// One of every frame variant (and both bodies, both sides of every option).
    fn every_frame() -> Vec<Frame> {
        vec![
            Frame::Data {
                origin: 2,
                seq: 300,
                body: Body::App {
                    ordering: Ordering::Causal,
                    frag: Some(Fragment { index: 0, count: 3 }),
                    causal: vec![1, 2, 3],
                    query: Some(u64::MAX),
                    payload: Bytes::from_static(b"hello"),
                },
            },
            Frame::Data {
                origin: u32::MAX,
                seq: 1,
                body: Body::App {
                    ordering: Ordering::Safe,
                    frag: None,
                    causal: vec![],
                    query: None,
                    payload: Bytes::new(),
                },
            },
            Frame::Data {
                origin: 0,
                seq: 2,
                body: Body::Order {
                    first: 1 << 40,
                    runs: vec![
                        OrderRun {
                            origin: 0,
                            seq: 1,
                            count: 5,
                        },
                        OrderRun {
                            origin: 3,
                            seq: 9,
                            count: u32::MAX,
                        },
                    ],
                },
            },
            Frame::Unreliable {
                useq: 127,
                payload: Bytes::from(vec![0xee; 1000]),
            },
            Frame::Ack {
                contig: vec![0, 128, 1 << 63],
            },
            Frame::Nak {
                origin: 1,
                ranges: vec![(1, 5), (9, 9)],
            },
            Frame::Heartbeat { sent: 16384 },
            Frame::Suspect {
                members: vec![m(4, 1), m(5, 2)],
            },
            Frame::Leave,
            Frame::JoinRequest {
                joiner: m(8, 3),
                addr: Bytes::from_static(b"node-8"),
            },
            Frame::Prepare { ballot: ballot(10) },
            Frame::Promise {
                ballot: ballot(10),
                contig: vec![4, 5],
                accepted: None,
                ready: true,
                leaving: false,
            },
            Frame::Promise {
                ballot: ballot(11),
                contig: vec![],
                accepted: Some((ballot(10), proposal())),
                ready: false,
                leaving: true,
            },
            Frame::Reject {
                ballot: ballot(10),
                promised: ballot(12),
            },
            Frame::Accept {
                ballot: ballot(12),
                proposal: Proposal {
                    provider: None,
                    joiners: vec![],
                    ..proposal()
                },
            },
            Frame::Accepted { ballot: ballot(12) },
            Frame::Commit {
                proposal: proposal(),
            },
            Frame::NotMember {
                view: vid(4),
                member: MemberId::new(9, 2),
            },
            Frame::StateRequest {
                view: vid(4),
                offset: 65536,
            },
            Frame::StateChunk {
                view: vid(4),
                offset: 0,
                total_len: 3,
                bytes: Bytes::from_static(b"abc"),
            },
            Frame::QueryReply {
                query: QueryId {
                    asker: m(1, 1),
                    n: 42,
                },
                payload: Bytes::from_static(b"yes"),
            },
            Frame::QueryPoll {
                query: QueryId {
                    asker: m(1, 1),
                    n: 42,
                },
            },
            Frame::Mark {
                seq: 300,
                mark: Bytes::from_static(b"epoch 3, index 17"),
            },
        ]
    }

    fn sample() -> Datagram {
        Datagram {
            group: 0x0123_4567_89ab_cdef,
            from: m(2, 7),
            view: vid(3),
            frames: every_frame(),
        }
    }

    /// A valid header (group 1, sender n1.1, view v0@n0.0) followed by `rest`.
    fn with_header(rest: &[u8]) -> Bytes {
        let mut buf = BytesMut::new();
        encode_header(&mut buf, 1, m(1, 1), ViewId::default());
        buf.put_slice(rest);
        buf.freeze()
    }

    fn first_frame(rest: &[u8]) -> Result<Frame, DecodeError> {
        let mut r = DatagramReader::new(with_header(rest))?;
        r.next_frame().expect("a frame")
    }

    #[test]
    fn every_frame_round_trips() {
        let d = sample();
        let bytes = d.encode();
        assert_eq!(Datagram::decode(bytes.clone()), Ok(d.clone()));

        // Incremental encoding gives the same bytes, and each frame stays
        // within its bound.
        let mut buf = BytesMut::new();
        encode_header(&mut buf, d.group, d.from, d.view);
        assert!(buf.len() <= HEADER_LEN_MAX);
        for f in &d.frames {
            let before = buf.len();
            encode_frame(&mut buf, f);
            assert!(buf.len() - before <= frame_len_max(f), "{f:?}");
        }
        assert_eq!(buf.freeze(), bytes);

        // The reader yields the same frames, then stops.
        let mut r = DatagramReader::new(bytes).unwrap();
        assert_eq!((r.group(), r.from(), r.view()), (d.group, d.from, d.view));
        for f in &d.frames {
            assert_eq!(r.next_frame(), Some(Ok(f.clone())));
        }
        assert_eq!(r.next_frame(), None);
    }

    #[test]
    fn header_only_and_longest_header() {
        let d = Datagram {
            group: 0,
            from: m(1, 1),
            view: vid(0),
            frames: vec![],
        };
        assert_eq!(Datagram::decode(d.encode()), Ok(d));
        let big = MemberId::UNKNOWN;
        let d = Datagram {
            group: u64::MAX,
            from: big,
            view: ViewId {
                epoch: u64::MAX,
                coord: big,
            },
            frames: vec![],
        };
        let bytes = d.encode();
        assert_eq!(bytes.len(), HEADER_LEN_MAX);
        assert_eq!(Datagram::decode(bytes), Ok(d));
    }

    #[test]
    fn payloads_are_zero_copy_slices() {
        let d = sample();
        let bytes = d.encode();
        let range = bytes.as_ptr_range();
        let back = Datagram::decode(bytes.clone()).unwrap();
        let Frame::Unreliable { payload, .. } = &back.frames[3] else {
            panic!("frame 3 is Unreliable")
        };
        assert!(
            range.contains(&payload.as_ptr()),
            "payload points into the datagram"
        );
    }

    #[test]
    fn varint_encoding_is_minimal_and_sized() {
        for v in [
            0,
            1,
            127,
            128,
            16383,
            16384,
            (1 << 35) - 1,
            1 << 35,
            u64::MAX >> 1,
            u64::MAX,
        ] {
            let mut buf = BytesMut::new();
            put_varint(&mut buf, v);
            assert_eq!(buf.len(), varint_len(v), "{v}");
            let mut c = Cursor {
                buf: buf.freeze(),
                pos: 0,
            };
            assert_eq!(c.varint("v"), Ok(v));
            assert_eq!(c.remaining(), 0);
        }
        // A non-minimal varint is accepted: 0 in two bytes.
        let mut c = Cursor {
            buf: Bytes::from_static(&[0x80, 0x00]),
            pos: 0,
        };
        assert_eq!(c.varint("v"), Ok(0));
    }

    #[test]
    fn bad_magic() {
        assert_eq!(
            Datagram::decode(Bytes::from_static(b"\x00\x01")),
            Err(DecodeError::Magic(0))
        );
    }

    #[test]
    fn bad_version() {
        assert_eq!(
            Datagram::decode(Bytes::from(vec![MAGIC, WIRE_VERSION + 1, 0, 0])),
            Err(DecodeError::Version(WIRE_VERSION + 1))
        );
    }

    #[test]
    fn truncated_fields() {
        assert_eq!(
            Datagram::decode(Bytes::new()),
            Err(DecodeError::Truncated("magic"))
        );
        assert_eq!(
            Datagram::decode(Bytes::from_static(&[MAGIC])),
            Err(DecodeError::Truncated("version"))
        );
        assert_eq!(
            Datagram::decode(Bytes::from(vec![MAGIC, WIRE_VERSION, 0, 0, 0])),
            Err(DecodeError::Truncated("group"))
        );
        // Heartbeat whose varint has its continuation bit set at the end.
        assert_eq!(
            first_frame(&[TAG_HEARTBEAT, 0x80]),
            Err(DecodeError::Truncated("heartbeat sent"))
        );
        // Promise that stops before its `leaving` flag.
        assert_eq!(
            first_frame(&[TAG_PROMISE, 1, 1, 1, 0, 0, 1]),
            Err(DecodeError::Truncated("promise leaving"))
        );
    }

    #[test]
    fn mark_longer_than_its_limit_is_refused() {
        let mut rest = vec![TAG_MARK, 5];
        let len = MARK_BYTES_MAX + 1;
        rest.extend_from_slice(&[(len as u8) | 0x80, (len >> 7) as u8]);
        rest.resize(rest.len() + len, 7);
        assert_eq!(first_frame(&rest), Err(DecodeError::Length("mark")));
        assert_eq!(
            first_frame(&[TAG_MARK, 5, 2, 1, 2]),
            Ok(Frame::Mark {
                seq: 5,
                mark: Bytes::from_static(&[1, 2])
            })
        );
    }

    #[test]
    fn unknown_tag() {
        assert_eq!(first_frame(&[0]), Err(DecodeError::UnknownFrame(0)));
        assert_eq!(first_frame(&[21]), Err(DecodeError::UnknownFrame(21)));
        assert_eq!(
            first_frame(&[0xff, 1, 2, 3]),
            Err(DecodeError::UnknownFrame(0xff))
        );
    }

    #[test]
    fn overlong_varint() {
        // Eleven bytes.
        let mut raw = vec![TAG_HEARTBEAT];
        raw.extend([0x80; 10]);
        raw.push(0);
        assert_eq!(
            first_frame(&raw),
            Err(DecodeError::Varint("heartbeat sent"))
        );
        // Ten bytes whose last holds more than bit 63.
        let mut raw = vec![TAG_HEARTBEAT];
        raw.extend([0xff; 9]);
        raw.push(0x02);
        assert_eq!(
            first_frame(&raw),
            Err(DecodeError::Varint("heartbeat sent"))
        );
        // u64::MAX itself is fine.
        raw[10] = 0x01;
        assert_eq!(first_frame(&raw), Ok(Frame::Heartbeat { sent: u64::MAX }));
        // A u32 field holding 2^32.
        assert_eq!(
            first_frame(&[TAG_NAK, 0x80, 0x80, 0x80, 0x80, 0x10, 0]),
            Err(DecodeError::Varint("nak origin"))
        );
        // In the header.
        let mut raw = vec![MAGIC, WIRE_VERSION, 0, 0, 0, 0, 0, 0, 0, 0];
        raw.extend([0x80; 11]);
        assert_eq!(
            Datagram::decode(Bytes::from(raw)),
            Err(DecodeError::Varint("sender"))
        );
    }

    #[test]
    fn bad_ordering_code() {
        // Data, origin 0, seq 1, App, ordering 6.
        assert_eq!(
            first_frame(&[TAG_DATA, 0, 1, BODY_APP, 6, 0, 0, 0, 0]),
            Err(DecodeError::Invalid("ordering"))
        );
        // Unreliable is not a body ordering.
        assert_eq!(
            first_frame(&[TAG_DATA, 0, 1, BODY_APP, 0, 0, 0, 0, 0]),
            Err(DecodeError::Invalid("ordering"))
        );
        // The same bytes with Fifo are fine.
        assert!(first_frame(&[TAG_DATA, 0, 1, BODY_APP, 2, 0, 0, 0, 0]).is_ok());
    }

    #[test]
    fn bad_option_and_bool_flags() {
        assert_eq!(
            first_frame(&[TAG_DATA, 0, 1, BODY_APP, 2, 2, 0, 0, 0]),
            Err(DecodeError::Invalid("fragment flag"))
        );
        assert_eq!(
            first_frame(&[TAG_DATA, 0, 1, BODY_APP, 2, 0, 0, 7, 0]),
            Err(DecodeError::Invalid("query flag"))
        );
        assert_eq!(
            first_frame(&[TAG_PROMISE, 1, 1, 1, 0, 0, 1, 2]),
            Err(DecodeError::Invalid("promise leaving"))
        );
        assert_eq!(
            first_frame(&[TAG_DATA, 0, 1, 3]),
            Err(DecodeError::Invalid("body kind"))
        );
    }

    #[test]
    fn bad_fragment() {
        // count 1, and index == count.
        assert_eq!(
            first_frame(&[TAG_DATA, 0, 1, BODY_APP, 2, 1, 0, 1, 0, 0, 0]),
            Err(DecodeError::Invalid("fragment"))
        );
        assert_eq!(
            first_frame(&[TAG_DATA, 0, 1, BODY_APP, 2, 1, 2, 2, 0, 0, 0]),
            Err(DecodeError::Invalid("fragment"))
        );
    }

    #[test]
    fn count_larger_than_remaining() {
        // Ack claiming 5 entries with 2 bytes left.
        assert_eq!(
            first_frame(&[TAG_ACK, 5, 1, 2]),
            Err(DecodeError::Length("ack contig"))
        );
        // Nak claiming 2^60 ranges: refused before allocating.
        assert_eq!(
            first_frame(&[TAG_NAK, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10]),
            Err(DecodeError::Length("nak ranges"))
        );
        // A payload longer than the datagram.
        assert_eq!(
            first_frame(&[TAG_UNRELIABLE, 0, 4, b'a', b'b']),
            Err(DecodeError::Length("unreliable payload"))
        );
        // A count whose element bytes overflow usize.
        let mut raw = vec![TAG_DATA, 0, 1, BODY_ORDER, 0];
        raw.extend([0xff; 9]);
        raw.push(0x01);
        assert_eq!(first_frame(&raw), Err(DecodeError::Length("order runs")));
    }

    #[test]
    fn member_list_over_the_limit() {
        // MEMBERS_MAX + 1 suspects, all present: refused on the count.
        let mut buf = BytesMut::new();
        put_len(&mut buf, MEMBERS_MAX + 1);
        for i in 0..=MEMBERS_MAX {
            put_member(&mut buf, m(i as u64, 1));
        }
        let mut raw = vec![TAG_SUSPECT];
        raw.extend_from_slice(&buf);
        assert_eq!(first_frame(&raw), Err(DecodeError::Length("suspects")));
        // Exactly MEMBERS_MAX is fine.
        let members: Vec<MemberId> = (0..MEMBERS_MAX as u64).map(|i| m(i, 1)).collect();
        let f = Frame::Suspect { members };
        let mut buf = BytesMut::new();
        encode_frame(&mut buf, &f);
        assert_eq!(first_frame(&buf), Ok(f));
    }

    #[test]
    fn reader_stops_after_an_error() {
        let mut buf = BytesMut::new();
        encode_header(&mut buf, 1, m(1, 1), vid(1));
        encode_frame(&mut buf, &Frame::Leave);
        buf.put_u8(0); // bad tag
        encode_frame(&mut buf, &Frame::Leave);
        let mut r = DatagramReader::new(buf.freeze()).unwrap();
        assert_eq!(r.next_frame(), Some(Ok(Frame::Leave)));
        assert_eq!(r.next_frame(), Some(Err(DecodeError::UnknownFrame(0))));
        assert_eq!(r.next_frame(), None);
        assert_eq!(r.next(), None);
    }
}
