//! Marks: a small value each member publishes to the others of its view,
//! such as how far its application's log is durable.
//!
//! A mark is not a message. It has no sequence number, is never
//! acknowledged, retransmitted or ordered against messages, and only the
//! latest one matters: it rides in the datagrams the member sends anyway
//! (the outbox packs it beside acknowledgements and data). It goes out when
//! the application sets a new one, at the start of every view, and again
//! with an acknowledgement once a heartbeat interval has passed since it
//! last went out, so a datagram lost to a full peer queue or a broken
//! connection delays it by at most about a heartbeat interval. Marks are
//! numbered in the order the member sets them; a receiver hands
//! [`Event::Mark`] to its application when a member of its current view
//! sends one numbered above the last it handed on for that member in this
//! view, so a datagram that arrives late (reordered, or from a connection
//! being replaced) never brings an older value back.
//!
//! What it is for: a protocol whose members each report progress to all the
//! others (Derecho's persisted counters, a replicated log's durable index)
//! would otherwise multicast a message per report, and every such message
//! costs a sequence number, acknowledgements and a slot in the sender's
//! window at every member.

use bytes::Bytes;

use crate::engine::Engine;
use crate::error::SendError;
use crate::event::Event;
use crate::types::{MemberId, Time, ViewId};
use crate::wire::{Frame, MARK_BYTES_MAX};

impl Engine {
    /// Publishes `mark` to the members of this member's view, now and in
    /// every later view, until it is set again. See the module `mark` for
    /// how it travels; the receivers see it as [`Event::Mark`].
    ///
    /// # Errors
    ///
    /// [`SendError::TooLarge`] when `mark` is longer than
    /// [`MARK_BYTES_MAX`]; the mark published before stays.
    pub fn set_mark(&mut self, now: Time, mark: Bytes) -> Result<(), SendError> {
        let _ = now;
        if mark.len() > MARK_BYTES_MAX {
            return Err(SendError::TooLarge {
                len: mark.len(),
                max: MARK_BYTES_MAX,
            });
        }
        if self.mark.as_ref().map(|(_, m)| m) != Some(&mark) {
            self.mark_seq += 1;
            self.mark = Some((self.mark_seq, mark));
            if let Some(vs) = &mut self.vs {
                vs.mark_due = true;
            }
        }
        Ok(())
    }

    /// Puts this member's mark in the next multicast datagram if it is due
    /// (new, or the view is), or if `heartbeat` and a heartbeat interval
    /// has passed since it last went out.
    pub(crate) fn send_mark_if_due(&mut self, now: Time, heartbeat: bool) {
        let Some((seq, mark)) = &self.mark else {
            return;
        };
        let Some(vs) = &mut self.vs else { return };
        if !(vs.mark_due || heartbeat && vs.mark_resend_due <= now) {
            return;
        }
        vs.mark_due = false;
        vs.mark_resend_due = now.plus(self.cfg.heartbeat_interval);
        self.out.multicast(
            &vs.view,
            vs.me,
            &Frame::Mark {
                seq: *seq,
                mark: mark.clone(),
            },
        );
    }

    /// A member's mark: handed on if it is newer than the last one handed
    /// on for that member in this view.
    pub(crate) fn on_mark(&mut self, from: MemberId, view: ViewId, seq: u64, mark: Bytes) {
        let out_of_order = self.mutant(mutant!(MarkOutOfOrder));
        let Some(vs) = &mut self.vs else { return };
        if view != vs.view.id {
            return;
        }
        let Some(j) = vs.view.rank(from) else { return };
        let stale = if out_of_order {
            seq == vs.marks[j]
        } else {
            seq <= vs.marks[j]
        };
        if stale {
            return;
        }
        vs.marks[j] = seq;
        self.emit(Event::Mark { from, mark });
    }
}
