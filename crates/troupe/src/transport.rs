//! The TCP mesh under the engine.
//!
//! The engine treats its transport as a lossy datagram service, so this one
//! promises little: a datagram handed to [`Transport::send`] is queued for its
//! destination address and written, in order, over one outbound connection
//! per peer, as a frame `u32 LE length + bytes`. A connection that breaks is
//! reconnected with back-off; whatever was in flight is lost, and a queue
//! that overflows drops its oldest frames. The engine's sequence numbers,
//! negative acknowledgements and retransmissions repair all of that.
//!
//! Inbound, every accepted connection gets a reader task that reads as much
//! as the socket holds into one buffer, cuts the frames out of it without
//! copying (each datagram is a slice of the buffer it arrived in), and hands
//! them to the driver as one batch per read, with a [`ConnCtl`] so that the
//! driver can close a connection whose bytes the engine refuses to decode.
//! One channel message and one allocation per read, not per datagram: at
//! small message sizes the per-datagram costs (allocation, a wake of the
//! driver) were what limited throughput. A frame over the size limit, a
//! zero-length frame or a read error closes the connection with a log line;
//! nothing from the network can make this module panic or allocate more than
//! a read buffer plus one frame's limit per connection.
//!
//! With [`PeerTls`], both directions run over TLS with mutual
//! authentication, and the peer's certificate must name this member's
//! cluster; a connection that fails either check is closed before any of
//! its bytes is read as a frame. Direct writes from the driver's task are
//! then off (a TLS stream has one owner, the writer task).
//!
//! Hostile connections cost little and not for long:
//! - a connection has [`TLS_HANDSHAKE_TIMEOUT`] for its handshake and
//!   [`FIRST_FRAME_TIMEOUT`] to deliver its first valid frame; until then it
//!   is *unproven*, reads into a small buffer, and at most
//!   [`UNPROVEN_CONNECTIONS_MAX`] unproven connections are kept (a new one
//!   closes the oldest), so a flood of connections cannot crowd out peers;
//! - a frame that has begun must be complete within [`FRAME_TIMEOUT`] (a
//!   peer that sends a byte a second is closed), and a connection silent
//!   for [`INBOUND_IDLE_TIMEOUT`] is closed (writers close their own after
//!   [`PEER_IDLE_TIMEOUT`]);
//! - memory grows with the bytes that arrive, not with a frame length a
//!   header announces;
//! - refusals are logged, at most [`REFUSAL_LOG_LINES`] lines a second; the
//!   rest are counted in one line.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::faults::{Fate, FaultInjector};
use crate::tls::{self, PeerTls};

/// Bytes of the length prefix of a frame.
const FRAME_HEADER_BYTES: usize = 4;

/// Most bytes written with one `write_all`: large enough to coalesce a burst
/// of small datagrams into one system call, small enough that one peer's
/// batch does not hold a big buffer.
const BATCH_BYTES_MAX: usize = 256 << 10;

/// First reconnection delay; doubled after every failed attempt.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(10);

/// Longest reconnection delay: short enough that a peer that comes back (a
/// process resumed after a pause) is reached again well within a failure
/// detector timeout.
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// How long a connection attempt may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A peer nothing was sent to for this long loses its writer task and
/// connection (a member that left or died stops costing anything).
const PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Most inbound connections at once: each costs a task and a read buffer.
const INBOUND_CONNECTIONS_MAX: usize = 1024;

/// Bytes an inbound connection asks the socket for at once: a read of this
/// size holds dozens of full datagrams under load, so the per-read costs (a
/// system call, an allocation, a channel message to the driver) are spread
/// over all of them.
const READ_BUFFER_BYTES: usize = 128 << 10;

/// Below this much free room, the read buffer is replaced before the next
/// read (a smaller read would cost a system call for little data).
const READ_ROOM_MIN: usize = 16 << 10;

/// The read buffer of a connection that has not yet sent a valid frame.
const FIRST_READ_BYTES: usize = 4 << 10;

/// Time a TLS handshake between members may take (either end).
pub(crate) const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Time an inbound connection has, once accepted (and through its
/// handshake), to deliver its first valid frame. A member's writer connects
/// because it has a datagram to send, so it sends one at once.
pub(crate) const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(5);

/// Time a frame that has begun to arrive has to arrive whole.
pub(crate) const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// An inbound connection silent for this long is closed.
pub(crate) const INBOUND_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Most inbound connections that have not yet sent a valid frame; a new one
/// beyond closes the oldest of them.
pub(crate) const UNPROVEN_CONNECTIONS_MAX: usize = 64;

/// Most log lines a second about refused connections.
pub(crate) const REFUSAL_LOG_LINES: u32 = 20;

/// Limits of the transport.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Largest frame accepted or sent; a larger inbound frame closes the connection.
    pub frame_bytes_max: usize,
    /// Most frames queued per peer.
    pub queue_frames_max: usize,
    /// Most bytes queued per peer.
    pub queue_bytes_max: usize,
    /// The hash of the group's name, which every datagram's header must carry.
    pub group: u64,
}

/// A handle on one inbound connection, carried with each of its frames.
#[derive(Debug)]
pub(crate) struct ConnCtl {
    /// A number for the logs.
    pub id: u64,
    /// The remote address.
    pub peer: SocketAddr,
    close: Notify,
    closed: AtomicBool,
    /// Closed to make room for a newer unproven connection.
    evicted: AtomicBool,
    /// It has sent a valid frame.
    proven: AtomicBool,
    /// Its reader has stopped.
    done: AtomicBool,
}

impl ConnCtl {
    fn new(id: u64, peer: SocketAddr) -> ConnCtl {
        ConnCtl {
            id,
            peer,
            close: Notify::new(),
            closed: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            proven: AtomicBool::new(false),
            done: AtomicBool::new(false),
        }
    }

    /// Closes the connection (its reader stops at its next step).
    pub fn close(&self) {
        self.closed.store(true, AtomicOrdering::Relaxed);
        self.close.notify_one();
    }

    fn evict(&self) {
        self.evicted.store(true, AtomicOrdering::Relaxed);
        self.close();
    }

    /// Why the connection was closed from this side.
    fn close_reason(&self) -> ReadEnd {
        if self.evicted.load(AtomicOrdering::Relaxed) {
            ReadEnd::Evicted
        } else {
            ReadEnd::Closed
        }
    }
}

/// The datagrams of one read of one connection, in the order they came.
#[derive(Debug)]
pub(crate) struct Inbound {
    /// The datagrams (slices of one read buffer).
    pub frames: Vec<Bytes>,
    /// The connection they came on (None for one this member sent itself).
    pub conn: Option<Arc<ConnCtl>>,
}

/// Counters shared with the metrics.
#[derive(Debug, Default)]
pub(crate) struct TransportStats {
    /// Frames dropped because a peer's queue was full.
    pub dropped_frames: AtomicU64,
    /// Frames queued over all peers.
    pub queued_frames: AtomicUsize,
    /// Inbound connections closed for bad input.
    pub refused_connections: AtomicU64,
    /// The refusal log's budget: (start of the current second, lines
    /// logged in it, refusals not logged).
    refusal_log: Mutex<Option<(Instant, u32, u64)>>,
}

impl TransportStats {
    /// Whether one more refusal may be logged now; logs how many were not
    /// when a new second begins.
    fn may_log_refusal(&self) -> bool {
        let now = Instant::now();
        let mut log = lock(&self.refusal_log);
        let (start, lines, quiet) = log.get_or_insert((now, 0, 0));
        if now.duration_since(*start) >= Duration::from_secs(1) {
            if *quiet > 0 {
                warn!(
                    refused = *quiet,
                    "more inbound connections were refused than logged"
                );
            }
            *start = now;
            *lines = 0;
            *quiet = 0;
        }
        if *lines < REFUSAL_LOG_LINES {
            *lines += 1;
            true
        } else {
            *quiet += 1;
            false
        }
    }
}

/// The frames waiting for one peer.
#[derive(Default)]
struct QueueState {
    /// Each frame, with the time before which it must not be written (a
    /// delay injected by [`FaultInjector`]), if any.
    frames: VecDeque<(Bytes, Option<Instant>)>,
    bytes: usize,
    /// The writer task ended (idle); a new send starts a new one.
    finished: bool,
    /// The connection, while the writer holds one: with nothing queued and
    /// no write under way, [`Transport::send`] writes to it directly (a
    /// non-blocking write from the driver's task), which saves waking the
    /// writer for every datagram.
    stream: Option<Arc<TcpStream>>,
    /// The writer task is writing a batch.
    writing: bool,
    /// The rest of a frame that a direct write wrote only in part: it goes
    /// out before anything else, or the stream loses its framing.
    partial: Option<Bytes>,
    /// A direct write happened since the writer last looked (it is not idle).
    used: bool,
}

struct PeerQueue {
    state: Mutex<QueueState>,
    ready: Notify,
}

struct Peer {
    queue: Arc<PeerQueue>,
    task: JoinHandle<()>,
}

/// The mesh: one listener, one writer per destination address.
pub(crate) struct Transport {
    local_addr: Bytes,
    limits: Limits,
    peers: HashMap<Bytes, Peer>,
    inbound_tx: mpsc::Sender<Inbound>,
    accept_task: JoinHandle<()>,
    stats: Arc<TransportStats>,
    bad_addr_logged: bool,
    tls: Option<Arc<PeerTls>>,
    faults: FaultInjector,
}

impl Transport {
    /// Starts accepting on `listener`; frames go to `inbound_tx`. `local_addr`
    /// is this member's advertised address: datagrams to it loop back.
    /// With `tls`, every connection, both ways, runs over member-to-member TLS.
    /// Datagrams are discarded as `faults` says (see [`crate::faults`]).
    pub fn start(
        listener: TcpListener,
        local_addr: Bytes,
        limits: Limits,
        inbound_tx: mpsc::Sender<Inbound>,
        tls: Option<Arc<PeerTls>>,
        faults: FaultInjector,
    ) -> Transport {
        let stats = Arc::new(TransportStats::default());
        let accept_task = tokio::spawn(accept_loop(
            listener,
            limits,
            inbound_tx.clone(),
            stats.clone(),
            tls.clone(),
        ));
        Transport {
            local_addr,
            limits,
            peers: HashMap::new(),
            inbound_tx,
            accept_task,
            stats,
            bad_addr_logged: false,
            tls,
            faults,
        }
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<TransportStats> {
        &self.stats
    }

    /// Queues a datagram for `addr`. Never blocks, never fails: a datagram
    /// that cannot go is lost, which the engine is built to survive.
    pub fn send(&mut self, addr: &Bytes, bytes: Bytes) {
        if *addr == self.local_addr {
            // The engine may address itself (e.g. a contact list that
            // names this member); skip the sockets.
            let _ = self.inbound_tx.try_send(Inbound {
                frames: vec![bytes],
                conn: None,
            });
            return;
        }
        let not_before = match self.faults.fate(addr) {
            Fate::Send => None,
            Fate::Drop => return,
            Fate::Delay(d) => Some(Instant::now() + d),
        };
        if bytes.len() > self.limits.frame_bytes_max {
            warn!(
                len = bytes.len(),
                max = self.limits.frame_bytes_max,
                "datagram larger than the frame limit dropped"
            );
            return;
        }
        let Ok(text) = std::str::from_utf8(addr) else {
            if !self.bad_addr_logged {
                warn!("destination address is not UTF-8; datagram dropped");
                self.bad_addr_logged = true;
            }
            return;
        };
        let finished = self
            .peers
            .get(addr)
            .is_none_or(|p| lock(&p.queue.state).finished);
        if finished {
            let queue = Arc::new(PeerQueue {
                state: Mutex::new(QueueState::default()),
                ready: Notify::new(),
            });
            let task = tokio::spawn(peer_writer(
                text.to_string(),
                queue.clone(),
                self.stats.clone(),
                self.tls.clone(),
            ));
            if let Some(old) = self.peers.insert(addr.clone(), Peer { queue, task }) {
                old.task.abort();
            }
        }
        let Some(peer) = self.peers.get(addr) else {
            return;
        };
        let mut st = lock(&peer.queue.state);
        if not_before.is_none() && st.frames.is_empty() && st.partial.is_none() && !st.writing {
            if let Some(stream) = st.stream.clone() {
                // The transport refuses larger datagrams above.
                let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes();
                let total = FRAME_HEADER_BYTES + bytes.len();
                let slices = [std::io::IoSlice::new(&len), std::io::IoSlice::new(&bytes)];
                match stream.try_write_vectored(&slices) {
                    Ok(n) if n >= total => {
                        st.used = true;
                        return;
                    }
                    Ok(n) => {
                        // The writer finishes the frame when the socket has room.
                        let rest = if n >= FRAME_HEADER_BYTES {
                            bytes.slice(n - FRAME_HEADER_BYTES..)
                        } else {
                            let mut v = len[n..].to_vec();
                            v.extend_from_slice(&bytes);
                            Bytes::from(v)
                        };
                        st.partial = Some(rest);
                        st.used = true;
                        drop(st);
                        peer.queue.ready.notify_one();
                        return;
                    }
                    // Full socket, or a broken one: queue it, and the writer
                    // waits for room or reconnects.
                    Err(_) => {}
                }
            }
        }
        st.bytes += bytes.len();
        st.frames.push_back((bytes, not_before));
        self.stats
            .queued_frames
            .fetch_add(1, AtomicOrdering::Relaxed);
        while st.frames.len() > self.limits.queue_frames_max
            || st.bytes > self.limits.queue_bytes_max
        {
            let Some((old, _)) = st.frames.pop_front() else {
                break;
            };
            st.bytes -= old.len();
            self.stats
                .queued_frames
                .fetch_sub(1, AtomicOrdering::Relaxed);
            self.stats
                .dropped_frames
                .fetch_add(1, AtomicOrdering::Relaxed);
        }
        drop(st);
        peer.queue.ready.notify_one();
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.accept_task.abort();
        for p in self.peers.values() {
            p.task.abort();
        }
    }
}

/// Locks a mutex, going on past poisoning: the state behind these locks is a
/// queue that stays consistent at every step.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn accept_loop(
    listener: TcpListener,
    limits: Limits,
    tx: mpsc::Sender<Inbound>,
    stats: Arc<TransportStats>,
    tls: Option<Arc<PeerTls>>,
) {
    // Dropping the set (when this task is aborted) aborts every reader.
    let mut readers = JoinSet::new();
    // Connections that have not yet sent a valid frame, oldest first.
    let mut unproven: VecDeque<Arc<ConnCtl>> = VecDeque::new();
    let mut next_id = 0u64;
    loop {
        while readers.try_join_next().is_some() {}
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors and the like: wait rather than spin.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if readers.len() >= INBOUND_CONNECTIONS_MAX {
            stats
                .refused_connections
                .fetch_add(1, AtomicOrdering::Relaxed);
            if stats.may_log_refusal() {
                warn!(%peer, max = INBOUND_CONNECTIONS_MAX, "too many inbound connections; refusing one");
            }
            continue;
        }
        unproven.retain(|c| {
            !c.proven.load(AtomicOrdering::Relaxed) && !c.done.load(AtomicOrdering::Relaxed)
        });
        if unproven.len() >= UNPROVEN_CONNECTIONS_MAX {
            if let Some(oldest) = unproven.pop_front() {
                oldest.evict();
            }
        }
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let ctl = Arc::new(ConnCtl::new(next_id, peer));
        unproven.push_back(ctl.clone());
        debug!(conn = ctl.id, %peer, "inbound connection");
        readers.spawn(read_frames(
            stream,
            ctl,
            limits,
            tx.clone(),
            stats.clone(),
            tls.clone(),
        ));
    }
}

/// Why a reader stopped.
#[derive(Debug)]
enum ReadEnd {
    Eof,
    Closed,
    Io(std::io::Error),
    DriverGone,
    /// Bytes that are not frames of this group.
    Refused(Refusal),
    /// Closed to make room for a newer unproven connection.
    Evicted,
    /// The TLS handshake failed.
    Handshake(std::io::Error),
    /// No TLS handshake in time.
    HandshakeTimeout,
    /// The peer's certificate is not of this cluster.
    OtherCluster(String),
    /// No valid frame within [`FIRST_FRAME_TIMEOUT`].
    Silent,
    /// A frame began and did not finish within [`FRAME_TIMEOUT`].
    Stalled(usize),
    /// Nothing arrived for [`INBOUND_IDLE_TIMEOUT`].
    Idle,
}

/// Why bytes that arrived are not frames of this group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A frame longer than the limit.
    Oversized(usize),
    /// A frame of length zero.
    Empty,
    /// The header does not decode.
    Garbage(troupe_core::DecodeError),
    /// The header names another group.
    OtherGroup(u64),
    /// The connection spoke for one node, then claimed to be another.
    Impostor {
        /// The node it spoke for first.
        node: u64,
        /// Who it then claimed to be.
        claimed: troupe_core::MemberId,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Oversized(n) => write!(f, "a frame of {n} bytes, over the size limit"),
            Refusal::Empty => write!(f, "an empty frame"),
            Refusal::Garbage(e) => write!(f, "not a troupe datagram: {e}"),
            Refusal::OtherGroup(g) => write!(f, "a datagram of another group ({g:#x})"),
            Refusal::Impostor { node, claimed } => {
                write!(f, "it spoke for node {node}, then claimed to be {claimed}")
            }
        }
    }
}

/// Cuts every whole frame out of `buf` (what a connection has sent so far)
/// into `frames`, checking each datagram's header: its group must be
/// `group`, and every frame of a connection must come from the same node,
/// which `pinned` remembers. What is left in `buf` is the start of the next
/// frame. Allocates nothing beyond `frames`' growth: each frame is a slice
/// of `buf`'s allocation. On a refusal the frames cut before it are kept in
/// `frames` but the connection must be closed.
pub fn cut_frames(
    buf: &mut BytesMut,
    frame_bytes_max: usize,
    group: u64,
    pinned: &mut Option<u64>,
    frames: &mut Vec<Bytes>,
) -> Result<(), Refusal> {
    while buf.len() >= FRAME_HEADER_BYTES {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        header.copy_from_slice(&buf[..FRAME_HEADER_BYTES]);
        let len = u32::from_le_bytes(header) as usize;
        if len > frame_bytes_max {
            return Err(Refusal::Oversized(len));
        }
        if len == 0 {
            return Err(Refusal::Empty);
        }
        if buf.len() < FRAME_HEADER_BYTES + len {
            return Ok(());
        }
        let _ = buf.split_to(FRAME_HEADER_BYTES);
        let bytes = buf.split_to(len).freeze();
        // Only the header is read here (the engine decodes the rest).
        let (g, from) = match troupe_core::wire::DatagramReader::new(bytes.clone()) {
            Ok(h) => (h.group(), h.from()),
            Err(e) => return Err(Refusal::Garbage(e)),
        };
        if g != group {
            return Err(Refusal::OtherGroup(g));
        }
        match *pinned {
            None => *pinned = Some(from.node),
            Some(node) if node != from.node => {
                return Err(Refusal::Impostor {
                    node,
                    claimed: from,
                })
            }
            Some(_) => {}
        }
        frames.push(bytes);
    }
    Ok(())
}

async fn read_frames(
    stream: TcpStream,
    ctl: Arc<ConnCtl>,
    limits: Limits,
    tx: mpsc::Sender<Inbound>,
    stats: Arc<TransportStats>,
    tls: Option<Arc<PeerTls>>,
) {
    let end = match tls {
        None => read_frames_inner(stream, &ctl, limits, &tx).await,
        Some(tls) => match handshake(stream, &ctl, &tls).await {
            Ok(stream) => read_frames_inner(stream, &ctl, limits, &tx).await,
            Err(end) => end,
        },
    };
    ctl.done.store(true, AtomicOrdering::Relaxed);
    let (conn, peer) = (ctl.id, ctl.peer);
    match end {
        ReadEnd::Eof => debug!(conn, %peer, "inbound connection closed by peer"),
        ReadEnd::Io(e) => debug!(conn, %peer, error = %e, "inbound connection broke"),
        ReadEnd::DriverGone => {}
        ReadEnd::Idle => debug!(conn, %peer, "inbound connection closed: idle"),
        refused => {
            stats
                .refused_connections
                .fetch_add(1, AtomicOrdering::Relaxed);
            if !stats.may_log_refusal() {
                return;
            }
            match refused {
                ReadEnd::Closed => {
                    warn!(conn, %peer, "inbound connection closed: it sent a datagram that does not decode")
                }
                ReadEnd::Refused(r) => warn!(conn, %peer, "inbound connection closed: {r}"),
                ReadEnd::Evicted => {
                    warn!(conn, %peer, max = UNPROVEN_CONNECTIONS_MAX, "inbound connection closed: too many connections that have sent no valid frame")
                }
                ReadEnd::Handshake(e) => {
                    warn!(conn, %peer, error = %e, "inbound connection refused at the TLS handshake")
                }
                ReadEnd::HandshakeTimeout => {
                    warn!(conn, %peer, "inbound connection refused: no TLS handshake within {TLS_HANDSHAKE_TIMEOUT:?}")
                }
                ReadEnd::OtherCluster(why) => {
                    warn!(conn, %peer, "inbound connection refused after the TLS handshake: {why}")
                }
                ReadEnd::Silent => {
                    warn!(conn, %peer, "inbound connection closed: no valid frame within {FIRST_FRAME_TIMEOUT:?}")
                }
                ReadEnd::Stalled(have) => {
                    warn!(conn, %peer, bytes = have, "inbound connection closed: a frame did not arrive whole within {FRAME_TIMEOUT:?}")
                }
                _ => {}
            }
        }
    }
}

/// The server side of a member-to-member TLS handshake, then the check of
/// the peer's cluster.
async fn handshake(
    stream: TcpStream,
    ctl: &ConnCtl,
    tls: &PeerTls,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, ReadEnd> {
    let accepted = tokio::select! {
        r = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream)) => r,
        _ = ctl.close.notified() => return Err(ctl.close_reason()),
    };
    let stream = match accepted {
        Err(_) => return Err(ReadEnd::HandshakeTimeout),
        Ok(Err(e)) => return Err(ReadEnd::Handshake(e)),
        Ok(Ok(s)) => s,
    };
    tls.check_cluster(stream.get_ref().1.peer_certificates())
        .map_err(ReadEnd::OtherCluster)?;
    Ok(stream)
}

async fn read_frames_inner<S: AsyncRead + Unpin>(
    mut stream: S,
    ctl: &Arc<ConnCtl>,
    limits: Limits,
    tx: &mpsc::Sender<Inbound>,
) -> ReadEnd {
    let max = limits.frame_bytes_max;
    let accepted = Instant::now();
    let mut buf = BytesMut::with_capacity(FIRST_READ_BYTES);
    // The node this connection speaks for, from its first datagram: a peer
    // sends its own datagrams on its own connection, so a connection that
    // changes node is lying about one of them. (A node that rejoins as a new
    // incarnation keeps its node number and its connections.) Until then
    // the connection is unproven.
    let mut pinned: Option<u64> = None;
    // When the frame now in `buf` began (or the last whole frame arrived).
    let mut frame_started: Option<Instant> = None;
    let mut last_read = accepted;
    // Fires at the earliest deadline; looked at (and moved on) only when it
    // fires, so a busy connection does not touch the timer per read.
    let timer = tokio::time::sleep_until(accepted + FIRST_FRAME_TIMEOUT);
    tokio::pin!(timer);
    loop {
        if ctl.closed.load(AtomicOrdering::Relaxed) {
            return ctl.close_reason();
        }
        let was_proven = pinned.is_some();
        let mut frames = Vec::new();
        let cut = cut_frames(&mut buf, max, limits.group, &mut pinned, &mut frames);
        if !was_proven && pinned.is_some() {
            ctl.proven.store(true, AtomicOrdering::Relaxed);
        }
        frame_started = if buf.is_empty() {
            None
        } else if !frames.is_empty() || frame_started.is_none() {
            Some(last_read)
        } else {
            frame_started
        };
        if !frames.is_empty() {
            let item = Inbound {
                frames,
                conn: Some(ctl.clone()),
            };
            tokio::select! {
                r = tx.send(item) => if r.is_err() { return ReadEnd::DriverGone },
                _ = ctl.close.notified() => return ctl.close_reason(),
            }
        }
        if let Err(r) = cut {
            return ReadEnd::Refused(r);
        }
        // Room for the next read: a full read buffer once the connection is
        // proven, a small one before; never more than the bytes of the frame
        // under way still need plus a read, so memory follows what arrives.
        let room = if pinned.is_some() {
            READ_BUFFER_BYTES
        } else {
            FIRST_READ_BYTES
        };
        if buf.capacity() - buf.len() < READ_ROOM_MIN.min(room) {
            // The frames cut above keep the old allocation alive until the
            // engine lets go of them; the partial frame moves to a new one.
            buf.reserve(room);
        }
        tokio::select! {
            r = stream.read_buf(&mut buf) => match r {
                Ok(0) => return ReadEnd::Eof,
                Ok(_) => last_read = Instant::now(),
                Err(e) => return ReadEnd::Io(e),
            },
            _ = ctl.close.notified() => return ctl.close_reason(),
            _ = &mut timer => {
                let now = Instant::now();
                let mut next = last_read + INBOUND_IDLE_TIMEOUT;
                if now >= next {
                    return ReadEnd::Idle;
                }
                if pinned.is_none() {
                    let d = accepted + FIRST_FRAME_TIMEOUT;
                    if now >= d {
                        return ReadEnd::Silent;
                    }
                    next = next.min(d);
                }
                if let Some(started) = frame_started {
                    let d = started + FRAME_TIMEOUT;
                    if now >= d {
                        return ReadEnd::Stalled(buf.len());
                    }
                    next = next.min(d);
                }
                timer.as_mut().reset(next);
            }
        }
    }
}

/// The connection a writer writes to.
enum Link {
    /// Plain TCP, which [`Transport::send`] may also write to directly.
    Plain(Arc<TcpStream>),
    /// TLS, written by the writer task alone.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Link {
    async fn write(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Link::Plain(s) => write_all(s, buf).await,
            Link::Tls(s) => {
                s.write_all(buf).await?;
                s.flush().await
            }
        }
    }
}

/// Why a connection to a peer could not be made.
enum ConnectError {
    /// No TCP connection: the peer is down or unreachable, as members are
    /// from time to time.
    Down(String),
    /// TLS failed or the peer was refused: a configuration error (its
    /// certificate, or this member's), worth a warning.
    Refused(String),
}

/// Connects to a peer, over TLS when `tls` is given (then the peer's
/// certificate must be valid for its address and name this cluster).
async fn connect(addr: &str, tls: Option<&PeerTls>) -> Result<Link, ConnectError> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(ConnectError::Down(format!("cannot connect: {e}"))),
        Err(_) => {
            return Err(ConnectError::Down(format!(
                "no connection within {CONNECT_TIMEOUT:?}"
            )))
        }
    };
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(Link::Plain(Arc::new(stream)));
    };
    let Some(name) = tls::server_name(addr) else {
        return Err(ConnectError::Refused(
            "the address has no host name or IP address to check the certificate against".into(),
        ));
    };
    let stream = match tokio::time::timeout(
        TLS_HANDSHAKE_TIMEOUT,
        tls.connector.connect(name, stream),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(ConnectError::Refused(format!("TLS handshake failed: {e}"))),
        Err(_) => {
            return Err(ConnectError::Refused(format!(
                "no TLS handshake within {TLS_HANDSHAKE_TIMEOUT:?}"
            )))
        }
    };
    tls.check_cluster(stream.get_ref().1.peer_certificates())
        .map_err(|why| {
            ConnectError::Refused(format!("peer refused after the TLS handshake: {why}"))
        })?;
    Ok(Link::Tls(Box::new(stream)))
}

/// Writes the frames queued for one peer, (re)connecting as needed, until
/// the peer has been idle for [`PEER_IDLE_TIMEOUT`].
async fn peer_writer(
    addr: String,
    queue: Arc<PeerQueue>,
    stats: Arc<TransportStats>,
    tls: Option<Arc<PeerTls>>,
) {
    let mut backoff = RECONNECT_BACKOFF_MIN;
    let mut batch: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut logged_down = false;
    'connect: loop {
        if !wait_ready(&queue).await {
            return;
        }
        let mut link = match connect(&addr, tls.as_deref()).await {
            Ok(l) => l,
            Err(e) => {
                // Logged once per outage; a refusal is a configuration
                // error, not a member that is down.
                if !logged_down {
                    match e {
                        ConnectError::Refused(why) => {
                            warn!(peer = %addr, "{why}; retrying with back-off")
                        }
                        ConnectError::Down(why) => {
                            debug!(peer = %addr, "{why}; retrying with back-off")
                        }
                    }
                    logged_down = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                continue;
            }
        };
        if logged_down {
            info!(peer = %addr, "connected again");
        } else {
            debug!(peer = %addr, "connected");
        }
        logged_down = false;
        backoff = RECONNECT_BACKOFF_MIN;
        if let Link::Plain(stream) = &link {
            lock(&queue.state).stream = Some(stream.clone());
        }
        loop {
            if !wait_ready(&queue).await {
                return;
            }
            // Coalesce everything queued (up to a batch) into one write.
            batch.clear();
            let mut held_until = None;
            {
                let mut st = lock(&queue.state);
                if let Some(p) = st.partial.take() {
                    batch.extend_from_slice(&p);
                }
                while let Some((f, not_before)) = st.frames.front() {
                    if !batch.is_empty()
                        && batch.len() + FRAME_HEADER_BYTES + f.len() > BATCH_BYTES_MAX
                    {
                        break;
                    }
                    if let Some(t) = *not_before {
                        if t > Instant::now() {
                            held_until = Some(t);
                            break;
                        }
                    }
                    let Some((f, _)) = st.frames.pop_front() else {
                        break;
                    };
                    st.bytes -= f.len();
                    stats.queued_frames.fetch_sub(1, AtomicOrdering::Relaxed);
                    // The transport refuses larger datagrams before queueing them.
                    let len = u32::try_from(f.len()).unwrap_or(u32::MAX);
                    batch.extend_from_slice(&len.to_le_bytes());
                    batch.extend_from_slice(&f);
                }
                st.writing = !batch.is_empty();
            }
            if batch.is_empty() {
                if let Some(t) = held_until {
                    tokio::time::sleep_until(t).await;
                }
                continue;
            }
            let r = link.write(&batch).await;
            let mut st = lock(&queue.state);
            st.writing = false;
            if let Err(e) = r {
                // What was in the batch is lost; the engine repairs it.
                st.stream = None;
                st.partial = None;
                drop(st);
                debug!(peer = %addr, error = %e, "connection broke; reconnecting");
                continue 'connect;
            }
        }
    }
}

/// Writes all of `buf` to a stream that [`Transport::send`] may also write
/// to (never at the same time: the queue's `writing` flag says who does).
async fn write_all(stream: &TcpStream, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        stream.writable().await?;
        match stream.try_write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Waits until `queue` holds a frame. False when the peer stayed idle for
/// [`PEER_IDLE_TIMEOUT`]: the queue is then marked finished.
async fn wait_ready(queue: &PeerQueue) -> bool {
    loop {
        {
            let st = lock(&queue.state);
            if !st.frames.is_empty() || st.partial.is_some() {
                return true;
            }
        }
        if tokio::time::timeout(PEER_IDLE_TIMEOUT, queue.ready.notified())
            .await
            .is_err()
        {
            let mut st = lock(&queue.state);
            if st.used {
                // Written to directly: busy, not idle.
                st.used = false;
            } else if st.frames.is_empty() && st.partial.is_none() {
                st.finished = true;
                st.stream = None;
                return false;
            }
        }
    }
}
