//! The simulated network: a misbehaving datagram service between nodes.
//!
//! Every directed link `a -> b` has a base latency (drawn once per run) plus
//! per-datagram jitter, so datagrams are reordered as on a real network; on
//! top of that the [nemesis](crate::nemesis) blocks links (symmetric and
//! one-way partitions, isolated coordinators, flapping links) and raises loss
//! and duplication.
//!
//! Datagrams in flight wait in a priority queue keyed by (delivery time,
//! insertion counter): two datagrams due at the same nanosecond leave in the
//! order they were sent, so the network is deterministic given its seed.
//! Whether a datagram is dropped by a partition is decided when it is sent.
//!
//! ```
//! use bytes::Bytes;
//! use troupe_core::{MemberId, Time};
//! use troupe_sim::net::{NetConfig, Network};
//!
//! let mut net = Network::new(3, NetConfig::default(), 7);
//! net.block(0, 1); // one-way: 0 -> 1 is cut, 1 -> 0 still works
//! net.send(Time::ZERO, 0, 1, MemberId::UNKNOWN, Bytes::from_static(b"lost"));
//! net.send(Time::ZERO, 1, 0, MemberId::UNKNOWN, Bytes::from_static(b"arrives"));
//! let d = net.pop(Time::MAX).expect("one datagram in flight");
//! assert_eq!((d.from, d.to, &d.bytes[..]), (1, 0, &b"arrives"[..]));
//! assert!(net.pop(Time::MAX).is_none());
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng as _;
use troupe_core::{MemberId, Time};

use crate::rng::{between, chance, exp_ns, rng_from, SimRng, PPM};

/// The shape of the network: latencies and the base loss and duplication.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Smallest base latency of a link (each directed link draws its base
    /// latency uniformly from `[latency_min, latency_max]` once per run).
    pub latency_min: Duration,
    /// Largest base latency of a link.
    pub latency_max: Duration,
    /// Mean of the per-datagram jitter added to the base latency
    /// (exponentially distributed: a long tail, and reordering).
    pub jitter_mean: Duration,
    /// Chance, in parts per million, that a datagram is held up by a delay
    /// spike (a retransmitting switch, a full queue).
    pub spike_ppm: u32,
    /// Longest delay spike.
    pub spike_max: Duration,
    /// Transmission time per byte, in nanoseconds (8 = 1 Gbit/s): large
    /// datagrams take longer than small ones.
    pub ns_per_byte: u64,
    /// Chance, in parts per million, that any datagram is lost.
    pub loss_ppm: u32,
    /// Chance, in parts per million, that any datagram is delivered twice.
    pub dup_ppm: u32,
}

impl Default for NetConfig {
    /// A LAN: 100 us to 1 ms per link, 200 us mean jitter, 0.1% of datagrams
    /// delayed by up to 20 ms, 1 Gbit/s, no loss, no duplication.
    fn default() -> Self {
        NetConfig {
            latency_min: Duration::from_micros(100),
            latency_max: Duration::from_millis(1),
            jitter_mean: Duration::from_micros(200),
            spike_ppm: 1_000,
            spike_max: Duration::from_millis(20),
            ns_per_byte: 8,
            loss_ppm: 0,
            dup_ppm: 0,
        }
    }
}

/// A datagram leaving the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// When it arrives.
    pub at: Time,
    /// The sending node.
    pub from: usize,
    /// The receiving node.
    pub to: usize,
    /// The member it was addressed to ([`MemberId::UNKNOWN`] for "whoever
    /// listens at the node"). The simulator delivers by address, as a real
    /// network does: whichever incarnation runs at the node now gets it, and
    /// the engine must tell a datagram for its predecessor apart.
    pub dest: MemberId,
    /// The bytes.
    pub bytes: Bytes,
}

/// What happened to the datagrams handed to the network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams handed to [`Network::send`].
    pub sent: u64,
    /// Bytes handed to [`Network::send`].
    pub sent_bytes: u64,
    /// Datagrams dropped by loss.
    pub lost: u64,
    /// Datagrams dropped because their link was blocked (a partition).
    pub blocked: u64,
    /// Extra copies made by duplication.
    pub duplicated: u64,
    /// Datagrams addressed to a node that does not exist.
    pub misaddressed: u64,
    /// Datagrams that left the network through [`Network::pop`].
    pub arrived: u64,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    at: u64,
    seq: u64,
}

#[derive(Debug)]
struct InFlight {
    key: Reverse<Key>,
    from: u32,
    to: u32,
    dest: MemberId,
    bytes: Bytes,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

/// The simulated network between `nodes` nodes, numbered from 0.
pub struct Network {
    nodes: usize,
    cfg: NetConfig,
    rng: SimRng,
    /// `base_ns[from * nodes + to]`.
    base_ns: Vec<u64>,
    /// How many active faults block each directed link (faults overlap, so
    /// a link opens again only when the last one ends).
    blocked: Vec<u32>,
    /// Extra loss per directed link from active faults, in ppm (summed).
    extra_loss: Vec<u32>,
    /// Extra duplication per directed link from active faults, in ppm.
    extra_dup: Vec<u32>,
    in_flight: BinaryHeap<InFlight>,
    seq: u64,
    stats: NetStats,
}

/// Most loss or duplication a link can have, however many faults overlap:
/// at 100% nothing gets through and the fault is a partition by another name.
const LINK_PPM_MAX: u32 = 900_000;

impl Network {
    /// A network of `nodes` nodes; `seed` drives latencies, jitter, loss and
    /// duplication.
    pub fn new(nodes: usize, cfg: NetConfig, seed: u64) -> Network {
        let mut rng = rng_from(seed);
        let lo = duration_ns(cfg.latency_min);
        let hi = duration_ns(cfg.latency_max);
        let links = nodes * nodes;
        let base_ns = (0..links).map(|_| between(&mut rng, lo, hi)).collect();
        Network {
            nodes,
            cfg,
            rng,
            base_ns,
            blocked: vec![0; links],
            extra_loss: vec![0; links],
            extra_dup: vec![0; links],
            in_flight: BinaryHeap::new(),
            seq: 0,
            stats: NetStats::default(),
        }
    }

    /// The number of nodes.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// The counters so far.
    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// Datagrams in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    fn link(&self, from: usize, to: usize) -> usize {
        debug_assert!(from < self.nodes && to < self.nodes);
        from * self.nodes + to
    }

    /// Hands a datagram from node `from` to node `to` to the network at
    /// `now`. It may be dropped (partition, loss), duplicated, and arrives
    /// after the link's latency. Returns how many copies are in flight.
    pub fn send(
        &mut self,
        now: Time,
        from: usize,
        to: usize,
        dest: MemberId,
        bytes: Bytes,
    ) -> usize {
        self.stats.sent += 1;
        self.stats.sent_bytes += bytes.len() as u64;
        if from >= self.nodes || to >= self.nodes {
            self.stats.misaddressed += 1;
            return 0;
        }
        let l = self.link(from, to);
        if self.blocked[l] > 0 {
            self.stats.blocked += 1;
            return 0;
        }
        let loss = self
            .cfg
            .loss_ppm
            .saturating_add(self.extra_loss[l])
            .min(LINK_PPM_MAX);
        if chance(&mut self.rng, loss) {
            self.stats.lost += 1;
            return 0;
        }
        let dup = self
            .cfg
            .dup_ppm
            .saturating_add(self.extra_dup[l])
            .min(LINK_PPM_MAX);
        let copies = if chance(&mut self.rng, dup) { 2 } else { 1 };
        self.stats.duplicated += copies as u64 - 1;
        for _ in 0..copies {
            let at = now.as_nanos().saturating_add(self.delay_ns(l, bytes.len()));
            self.seq += 1;
            self.in_flight.push(InFlight {
                key: Reverse(Key { at, seq: self.seq }),
                from: from as u32,
                to: to as u32,
                dest,
                bytes: bytes.clone(),
            });
        }
        copies
    }

    /// How long one datagram of `len` bytes takes on link `l`.
    fn delay_ns(&mut self, l: usize, len: usize) -> u64 {
        let mut d = self.base_ns[l] + exp_ns(&mut self.rng, duration_ns(self.cfg.jitter_mean));
        d += self.cfg.ns_per_byte * len as u64;
        if chance(&mut self.rng, self.cfg.spike_ppm) {
            d += self.rng.random_range(0..=duration_ns(self.cfg.spike_max));
        }
        d.max(1)
    }

    /// When the next datagram arrives, if any is in flight.
    pub fn next_arrival(&self) -> Option<Time> {
        self.in_flight.peek().map(|f| Time(f.key.0.at))
    }

    /// The next datagram to arrive, if it arrives at or before `until`.
    pub fn pop(&mut self, until: Time) -> Option<Datagram> {
        if self.in_flight.peek()?.key.0.at > until.as_nanos() {
            return None;
        }
        let f = self.in_flight.pop()?;
        self.stats.arrived += 1;
        Some(Datagram {
            at: Time(f.key.0.at),
            from: f.from as usize,
            to: f.to as usize,
            dest: f.dest,
            bytes: f.bytes,
        })
    }

    /// Blocks the directed link `from -> to` (counted: each `block` needs its
    /// own `unblock`).
    pub fn block(&mut self, from: usize, to: usize) {
        if from != to {
            let l = self.link(from, to);
            self.blocked[l] += 1;
        }
    }

    /// Undoes one [`Network::block`] of `from -> to`.
    pub fn unblock(&mut self, from: usize, to: usize) {
        if from != to {
            let l = self.link(from, to);
            debug_assert!(self.blocked[l] > 0, "unblocking a link that is open");
            self.blocked[l] = self.blocked[l].saturating_sub(1);
        }
    }

    /// Whether `from -> to` is blocked now.
    pub fn is_blocked(&self, from: usize, to: usize) -> bool {
        from != to && self.blocked[self.link(from, to)] > 0
    }

    /// Blocks every link from a node of `a` to a node of `b` and back (a
    /// symmetric partition between the two sides).
    pub fn partition(&mut self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                self.block(x, y);
                self.block(y, x);
            }
        }
    }

    /// Undoes [`Network::partition`] with the same sides.
    pub fn heal_partition(&mut self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                self.unblock(x, y);
                self.unblock(y, x);
            }
        }
    }

    /// Adds `ppm` loss to the directed link `from -> to` (undo with
    /// [`Network::remove_loss`]).
    pub fn add_loss(&mut self, from: usize, to: usize, ppm: u32) {
        let l = self.link(from, to);
        self.extra_loss[l] = self.extra_loss[l].saturating_add(ppm);
    }

    /// Undoes [`Network::add_loss`].
    pub fn remove_loss(&mut self, from: usize, to: usize, ppm: u32) {
        let l = self.link(from, to);
        self.extra_loss[l] = self.extra_loss[l].saturating_sub(ppm);
    }

    /// Adds `ppm` duplication to the directed link `from -> to`.
    pub fn add_dup(&mut self, from: usize, to: usize, ppm: u32) {
        let l = self.link(from, to);
        self.extra_dup[l] = self.extra_dup[l].saturating_add(ppm);
    }

    /// Undoes [`Network::add_dup`].
    pub fn remove_dup(&mut self, from: usize, to: usize, ppm: u32) {
        let l = self.link(from, to);
        self.extra_dup[l] = self.extra_dup[l].saturating_sub(ppm);
    }

    /// Sets the loss every link has besides the faults' (ppm).
    pub fn set_base_loss(&mut self, ppm: u32) {
        self.cfg.loss_ppm = ppm.min(PPM);
    }

    /// Sets the duplication every link has besides the faults' (ppm).
    pub fn set_base_dup(&mut self, ppm: u32) {
        self.cfg.dup_ppm = ppm.min(PPM);
    }
}

/// A duration in nanoseconds, saturating.
pub(crate) fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
