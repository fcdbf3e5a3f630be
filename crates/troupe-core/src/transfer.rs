//! State transfer: a joiner is admitted at a view boundary, and one old member
//! (the provider, named in the decided proposal) sends it a snapshot of the
//! application state taken at exactly that boundary: the provider's
//! application is asked for it (`Event::StateNeeded`) right after the view is
//! installed, before any delivery of the new view.
//!
//! The joiner pulls the snapshot in chunks (`StateRequest` from an offset,
//! answered by a burst of `StateChunk`s), so loss only costs a re-request.
//! Until the snapshot is complete the joiner's deliveries of the new view are
//! held back; then it sees `StateInstalled` followed by them. If the provider
//! fails first, the joiner reports itself not ready at the next view change
//! and is excluded, to rejoin as a new incarnation.

use bytes::{Bytes, BytesMut};

use crate::engine::Engine;
use crate::event::Event;
use crate::types::{MemberId, Time, ViewId};
use crate::wire::Frame;

/// Chunks sent in answer to one request.
const STATE_BURST: u64 = 8;
/// Largest snapshot a joiner accepts (a hostile total length must not make it
/// reserve memory).
const STATE_BYTES_MAX: u64 = 1 << 34;

/// The provider's side.
#[derive(Debug)]
pub(crate) struct Providing {
    pub view: ViewId,
    pub snapshot: Option<Bytes>,
    /// Mutant: ask for the snapshot only after the first delivery of the view.
    pub deferred: bool,
}

/// The joiner's side.
#[derive(Debug)]
pub(crate) struct Receiving {
    view: ViewId,
    provider: MemberId,
    buf: BytesMut,
    requested_upto: u64,
    pub retry_at: Time,
}

impl Engine {
    pub(crate) fn start_providing(&mut self, view: ViewId) {
        let deferred = self.mutant(mutant!(SnapshotOffBoundary));
        self.providing = Some(Providing {
            view,
            snapshot: None,
            deferred,
        });
        if !deferred {
            self.emit(Event::StateNeeded { view });
        }
    }

    /// Mutant support: the deferred request goes out after a delivery.
    pub(crate) fn deferred_state_needed(&mut self) {
        if let Some(p) = &mut self.providing {
            if p.deferred {
                p.deferred = false;
                let view = p.view;
                self.emit(Event::StateNeeded { view });
            }
        }
    }

    /// Starts waiting for a snapshot; every event from now on is held back
    /// until it is installed.
    pub(crate) fn start_receiving(&mut self, view: ViewId, provider: MemberId) {
        self.receiving = Some(Receiving {
            view,
            provider,
            buf: BytesMut::new(),
            requested_upto: 0,
            retry_at: Time::ZERO,
        });
    }

    pub(crate) fn on_state_request(&mut self, from: MemberId, view: ViewId, offset: u64) {
        let Some(p) = &self.providing else { return };
        let Some(snap) = &p.snapshot else { return };
        if p.view != view {
            return;
        }
        let Some(addr) = self.addr_of(from) else {
            return;
        };
        let total = snap.len() as u64;
        let chunk = self.cfg.state_chunk_bytes as u64;
        let mut off = offset.min(total);
        let cur = self.vs.as_ref().map(|v| v.view.id).unwrap_or(view);
        for _ in 0..STATE_BURST {
            let end = (off + chunk).min(total);
            let bytes = snap.slice(off as usize..end as usize);
            self.out.unicast(
                from,
                addr.clone(),
                cur,
                &Frame::StateChunk {
                    view,
                    offset: off,
                    total_len: total,
                    bytes,
                },
            );
            off = end;
            if off >= total {
                break;
            }
        }
    }

    pub(crate) fn on_state_chunk(
        &mut self,
        now: Time,
        from: MemberId,
        view: ViewId,
        offset: u64,
        total: u64,
        bytes: Bytes,
    ) {
        let Some(r) = &mut self.receiving else { return };
        if r.view != view || r.provider != from || total > STATE_BYTES_MAX {
            return;
        }
        if offset != r.buf.len() as u64 || offset + bytes.len() as u64 > total {
            return; // out of order or inconsistent: re-requested on timer
        }
        r.buf.extend_from_slice(&bytes);
        let have = r.buf.len() as u64;
        if have == total {
            let r = self.receiving.take().expect("receiving");
            // The view the snapshot belongs to comes first, then the state,
            // then everything that happened since.
            let mut held = std::mem::take(&mut self.held_events);
            if let Some(view) = held.pop_front() {
                debug_assert!(matches!(&view, Event::View(v) if v.id == r.view));
                self.events.push_back(view);
            }
            self.events.push_back(Event::StateInstalled {
                view: r.view,
                snapshot: r.buf.freeze(),
            });
            self.events.extend(held);
            return;
        }
        if have >= r.requested_upto {
            r.retry_at = now;
            self.transfer_tick(now);
        }
    }

    /// Asks the provider for the next chunks (again, if the last ask got lost).
    pub(crate) fn transfer_tick(&mut self, now: Time) {
        let Some(r) = &mut self.receiving else { return };
        if now < r.retry_at {
            return;
        }
        let offset = r.buf.len() as u64;
        r.requested_upto = offset + STATE_BURST * self.cfg.state_chunk_bytes as u64;
        r.retry_at = now.plus(self.cfg.nak_interval * 4);
        let (provider, view) = (r.provider, r.view);
        let Some(addr) = self.addr_of(provider) else {
            return;
        };
        let cur = self.vs.as_ref().map(|v| v.view.id).unwrap_or(view);
        self.out
            .unicast(provider, addr, cur, &Frame::StateRequest { view, offset });
    }
}
