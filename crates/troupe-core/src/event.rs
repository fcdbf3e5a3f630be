//! What the engine hands to the application, drained with `poll_event`.

use bytes::Bytes;

use crate::types::{MemberId, Ordering, QueryId, View, ViewId};

/// A message handed to the application, in the order its ordering promises.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Who multicast it.
    pub sender: MemberId,
    /// The ordering it was sent with.
    pub ordering: Ordering,
    /// The view it was sent and is delivered in.
    pub view: ViewId,
    /// The bytes, as sent.
    pub payload: Bytes,
}

/// Why a member stopped being one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// It asked to leave, and the view without it is installed.
    Left,
    /// The group installed a view without it (it was suspected, or was on the
    /// minority side of a partition). It may rejoin as a new incarnation.
    Excluded,
}

/// Something the application must see, in this order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A new view is installed. Every delivery after it belongs to it.
    View(View),
    /// A message is delivered.
    Deliver(Delivery),
    /// A view change started: sends are held until the next `View`.
    Blocked,
    /// This member provides the state for joiners of `view`: call
    /// `provide_state(view, snapshot)` with the state as of this event (all
    /// deliveries before it, none after).
    StateNeeded {
        /// The view the joiners joined.
        view: ViewId,
    },
    /// A joiner's state: restore it before handling the events that follow.
    StateInstalled {
        /// The view at whose boundary it was taken.
        view: ViewId,
        /// The snapshot, as the provider gave it.
        snapshot: Bytes,
    },
    /// A group query from a member: answer with `reply`.
    Query {
        /// The query.
        id: QueryId,
        /// Its ordering.
        ordering: Ordering,
        /// Its bytes.
        payload: Bytes,
    },
    /// A query of ours has gathered what it asked for, or can no longer.
    QueryDone {
        /// The query.
        id: QueryId,
        /// The replies gathered, by member.
        replies: Vec<(MemberId, Bytes)>,
        /// Members that left the view before replying.
        departed: Vec<MemberId>,
    },
    /// A member of the current view published a new mark (see
    /// `Engine::set_mark`): a value it set after every mark of it handed on
    /// before in this view (values set in quick succession may be skipped,
    /// never reordered). Marks of this member itself are not reported.
    Mark {
        /// Who published it.
        from: MemberId,
        /// Its bytes, as set.
        mark: Bytes,
    },
    /// This member is no longer in the group.
    Exited(ExitReason),
}
