//! What members of the service multicast to each other, and what they keep
//! on disk, as protobuf messages (prost gives typed decode errors for free).

use bytes::Bytes;
use prost::Message;

use crate::machine::Command;

/// One group message.
#[derive(Clone, PartialEq, Message)]
pub struct Wire {
    /// Which one.
    #[prost(oneof = "Msg", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9")]
    pub msg: Option<Msg>,
}

/// The group messages.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Msg {
    /// Commands for the log, in order (sent `Safe`).
    #[prost(message, tag = "1")]
    Proposal(Proposal),
    /// A member's log is durable up to an index. Members of earlier
    /// versions multicast it `Fifo`; this one publishes it as its group mark
    /// (`GroupHandle::set_mark`), and still takes it either way.
    #[prost(message, tag = "2")]
    Durable(Durable),
    /// A client kept a lease alive (sent `Fifo`).
    #[prost(message, tag = "3")]
    Refresh(Refresh),
    /// Recovery: what a member holds (sent `Safe`).
    #[prost(message, tag = "4")]
    Report(Report),
    /// Recovery: a member promised the new epoch, durably (sent `Safe`).
    #[prost(message, tag = "5")]
    Accept(Accept),
    /// Recovery: a member had promised a higher epoch already (sent `Safe`).
    #[prost(message, tag = "6")]
    Refuse(Refuse),
    /// Recovery: the chosen member's state, which every member adopts (sent `Safe`).
    #[prost(message, tag = "7")]
    Adopt(Adopt),
    /// A batch of linearizable reads waits for its place in the total order
    /// (sent `Safe`; neither applied nor logged).
    #[prost(message, tag = "8")]
    ReadIndex(ReadIndex),
    /// Who a member is, sent `Fifo` at every view it installs: its client
    /// URLs (for `member list`) and the protocol it speaks. Members of
    /// earlier versions ignore it (an unknown message decodes as none).
    #[prost(message, tag = "9")]
    Hello(Hello),
}

/// The version of what members say to each other (these messages and what
/// they mean), in [`Hello`]. A change that an earlier member would
/// misunderstand, rather than ignore, raises it.
pub const PROTOCOL: u32 = 1;

/// See [`Msg::Hello`].
#[derive(Clone, PartialEq, Message)]
pub struct Hello {
    /// The member's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The client URLs it advertises.
    #[prost(string, repeated, tag = "2")]
    pub client_urls: Vec<String>,
    /// The [`PROTOCOL`] it speaks.
    #[prost(uint32, tag = "3")]
    pub protocol: u32,
}

/// See [`Msg::Proposal`].
#[derive(Clone, PartialEq, Message)]
pub struct Proposal {
    /// The proposing replica instance (fresh for every group it is in).
    #[prost(uint64, tag = "1")]
    pub origin: u64,
    /// Its request number.
    #[prost(uint64, tag = "2")]
    pub req: u64,
    /// A single command (as members of earlier versions send it), applied
    /// before `batch`.
    #[prost(message, optional, tag = "3")]
    pub cmd: Option<Command>,
    /// The commands, in order: command `k` (counting `cmd` first, if set)
    /// has request number `req + k`.
    #[prost(message, repeated, tag = "4")]
    pub batch: Vec<Command>,
}

/// See [`Msg::ReadIndex`]: only its origin acts on it, when it delivers it.
#[derive(Clone, PartialEq, Message)]
pub struct ReadIndex {
    /// The replica instance whose reads wait on it (see [`Proposal::origin`]).
    #[prost(uint64, tag = "1")]
    pub origin: u64,
    /// Its request number, from the same sequence as proposals'.
    #[prost(uint64, tag = "2")]
    pub req: u64,
}

/// See [`Msg::Durable`].
#[derive(Clone, PartialEq, Message)]
pub struct Durable {
    /// The member's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The epoch its log is in.
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
    /// Everything up to here is on its disk.
    #[prost(uint64, tag = "3")]
    pub index: u64,
}

/// See [`Msg::Refresh`].
#[derive(Clone, PartialEq, Message)]
pub struct Refresh {
    /// The lease.
    #[prost(int64, tag = "1")]
    pub lease: i64,
}

/// See [`Msg::Report`].
#[derive(Clone, PartialEq, Message)]
pub struct Report {
    /// The recovery round it answers.
    #[prost(uint64, tag = "1")]
    pub round: u64,
    /// The member's name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// The highest epoch it has promised.
    #[prost(uint64, tag = "3")]
    pub promised: u64,
    /// The epoch of the last entry it holds.
    #[prost(uint64, tag = "4")]
    pub last_epoch: u64,
    /// The index of the last entry it holds.
    #[prost(uint64, tag = "5")]
    pub index: u64,
    /// The member was started with `--force-new-cluster`: its state is
    /// chosen at once, without a majority of reports. (Serving still takes
    /// a majority of promises, and committing a majority of marks.)
    #[prost(bool, tag = "6")]
    pub force: bool,
}

/// See [`Msg::Accept`].
#[derive(Clone, PartialEq, Message)]
pub struct Accept {
    /// The recovery round.
    #[prost(uint64, tag = "1")]
    pub round: u64,
    /// The member's name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// The epoch promised.
    #[prost(uint64, tag = "3")]
    pub epoch: u64,
}

/// See [`Msg::Refuse`].
#[derive(Clone, PartialEq, Message)]
pub struct Refuse {
    /// The recovery round.
    #[prost(uint64, tag = "1")]
    pub round: u64,
    /// The member's name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// What it had promised.
    #[prost(uint64, tag = "3")]
    pub promised: u64,
}

/// See [`Msg::Adopt`].
#[derive(Clone, PartialEq, Message)]
pub struct Adopt {
    /// The recovery round.
    #[prost(uint64, tag = "1")]
    pub round: u64,
    /// The new epoch.
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
    /// The state, as a [`Persisted`].
    #[prost(bytes = "bytes", tag = "3")]
    pub state: Bytes,
}

/// A log entry on disk: the command and the epoch it was applied in.
#[derive(Clone, PartialEq, Message)]
pub struct LogEntry {
    /// The epoch.
    #[prost(uint64, tag = "1")]
    pub epoch: u64,
    /// The command.
    #[prost(message, optional, tag = "2")]
    pub cmd: Option<Command>,
}

/// A state as snapshots and adoption carry it.
#[derive(Clone, PartialEq, Message)]
pub struct Persisted {
    /// The index of the last entry applied.
    #[prost(uint64, tag = "1")]
    pub index: u64,
    /// The epoch of that entry.
    #[prost(uint64, tag = "2")]
    pub last_epoch: u64,
    /// The machine, as [`crate::machine::Machine::encode`] gives it.
    #[prost(bytes = "bytes", tag = "3")]
    pub machine: Bytes,
}

/// What survives a restart besides the log: the highest epoch promised, and
/// whether this member still waits for a state from its cluster.
#[derive(Clone, PartialEq, Message)]
pub struct HardState {
    /// See [`Report::promised`].
    #[prost(uint64, tag = "1")]
    pub promised: u64,
    /// The member started on an empty data directory with
    /// `--initial-cluster-state existing` and has not yet taken a state from
    /// its cluster: its empty log says nothing about what the cluster
    /// committed (its disk may have been replaced), so it does not report in
    /// a recovery. Cleared once a state from the cluster is on its disk.
    #[prost(bool, tag = "2")]
    pub awaiting_state: bool,
}

/// The group's replicated state, as a joiner receives it.
#[derive(Clone, PartialEq, Message)]
pub struct GroupState {
    /// 0: recovering, 1: adopting, 2: serving.
    #[prost(uint32, tag = "1")]
    pub phase: u32,
    /// The recovery round.
    #[prost(uint64, tag = "2")]
    pub round: u64,
    /// The lowest epoch the next recovery may choose.
    #[prost(uint64, tag = "3")]
    pub min_epoch: u64,
    /// The epoch (adopting, serving).
    #[prost(uint64, tag = "4")]
    pub epoch: u64,
    /// The chosen member (adopting).
    #[prost(string, tag = "5")]
    pub winner: String,
    /// Reports gathered (recovering).
    #[prost(message, repeated, tag = "6")]
    pub reports: Vec<Report>,
    /// Names that accepted (adopting).
    #[prost(string, repeated, tag = "7")]
    pub accepts: Vec<String>,
    /// The adopted state once it arrived (adopting), or the state (serving).
    #[prost(bytes = "bytes", optional, tag = "8")]
    pub state: Option<Bytes>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{Barrier, Machine, Op, Output};

    #[test]
    fn read_index_round_trips() {
        let w = Wire {
            msg: Some(Msg::ReadIndex(ReadIndex { origin: 7, req: 9 })),
        };
        let back = Wire::decode(w.encode_to_vec().as_slice());
        assert_eq!(back.ok(), Some(w));
    }

    /// Logs of earlier versions hold a `Barrier` entry per batch of
    /// linearizable reads: it still decodes, and applying it changes nothing.
    #[test]
    fn old_barrier_entries_decode_and_change_nothing() {
        let entry = LogEntry {
            epoch: 3,
            cmd: Some(Command {
                op: Some(Op::Barrier(Barrier {})),
            }),
        };
        let bytes = entry.encode_to_vec();
        let back = LogEntry::decode(bytes.as_slice()).ok();
        assert_eq!(back.as_ref(), Some(&entry));
        let mut m = Machine::default();
        let before = m.encode();
        let cmd = back.and_then(|e| e.cmd).unwrap_or_default();
        let (out, events) = m.apply(&cmd);
        assert!(matches!(out, Output::Done));
        assert!(events.is_empty());
        assert_eq!(m.encode(), before);
    }
}
