//! Packing frames into datagrams. Frames for the whole view go into one shared
//! multicast datagram (encoded once, its bytes shared by every destination);
//! frames for one member go into a datagram of their own. Datagrams are
//! sealed when full or when the driver polls, so everything one input
//! produces leaves in as few datagrams as the size limit allows.

use std::collections::VecDeque;

use bytes::BytesMut;

use crate::engine::Transmit;
use crate::types::{Addr, MemberId, View, ViewId};
use crate::wire::{encode_frame, encode_header, frame_len_max, Frame, HEADER_LEN_MAX};

struct Open {
    view: ViewId,
    buf: BytesMut,
}

struct OpenUnicast {
    to: MemberId,
    addr: Addr,
    open: Open,
}

pub(crate) struct Outbox {
    group: u64,
    from: MemberId,
    max: usize,
    mcast: Option<Open>,
    mcast_dests: Vec<(MemberId, Addr)>,
    ucast: Vec<OpenUnicast>,
    ready: VecDeque<Transmit>,
}

impl Outbox {
    pub fn new(group: u64, from: MemberId, max: usize) -> Outbox {
        Outbox {
            group,
            from,
            max,
            mcast: None,
            mcast_dests: Vec::new(),
            ucast: Vec::new(),
            ready: VecDeque::new(),
        }
    }

    fn open(&self, view: ViewId, need: usize) -> Open {
        let mut buf = BytesMut::with_capacity((HEADER_LEN_MAX + need).max(self.max.min(16 << 10)));
        encode_header(&mut buf, self.group, self.from, view);
        Open { view, buf }
    }

    /// Adds a frame for every member of `view` but `me`.
    pub fn multicast(&mut self, view: &View, me: usize, frame: &Frame) {
        if view.members.len() <= 1 {
            return;
        }
        let need = frame_len_max(frame);
        let fits = self
            .mcast
            .as_ref()
            .is_some_and(|o| o.view == view.id && o.buf.len() + need <= self.max);
        if !fits {
            self.seal_mcast();
            self.mcast = Some(self.open(view.id, need));
            self.mcast_dests.clear();
            for (r, (m, a)) in view.members.iter().zip(&view.addrs).enumerate() {
                if r != me {
                    self.mcast_dests.push((*m, a.clone()));
                }
            }
        }
        let o = self.mcast.as_mut().expect("opened above");
        encode_frame(&mut o.buf, frame);
    }

    /// Adds a frame for one member.
    pub fn unicast(&mut self, to: MemberId, addr: Addr, view: ViewId, frame: &Frame) {
        let need = frame_len_max(frame);
        let pos = self
            .ucast
            .iter()
            .position(|u| u.to == to && u.addr == addr && u.open.view == view);
        if let Some(i) = pos {
            if self.ucast[i].open.buf.len() + need <= self.max {
                encode_frame(&mut self.ucast[i].open.buf, frame);
                return;
            }
            let u = self.ucast.swap_remove(i);
            self.ready.push_back(Transmit {
                to: u.to,
                addr: u.addr,
                bytes: u.open.buf.freeze(),
            });
        }
        let mut open = self.open(view, need);
        encode_frame(&mut open.buf, frame);
        self.ucast.push(OpenUnicast { to, addr, open });
    }

    fn seal_mcast(&mut self) {
        if let Some(o) = self.mcast.take() {
            let bytes = o.buf.freeze();
            for (m, a) in &self.mcast_dests {
                self.ready.push_back(Transmit {
                    to: *m,
                    addr: a.clone(),
                    bytes: bytes.clone(),
                });
            }
        }
    }

    /// The next datagram; seals what is open when nothing is ready.
    pub fn poll(&mut self) -> Option<Transmit> {
        if self.ready.is_empty() {
            self.seal_mcast();
            for u in self.ucast.drain(..) {
                self.ready.push_back(Transmit {
                    to: u.to,
                    addr: u.addr,
                    bytes: u.open.buf.freeze(),
                });
            }
        }
        self.ready.pop_front()
    }
}
