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

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

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
}

impl ConnCtl {
    /// Closes the connection (its reader stops at its next step).
    pub fn close(&self) {
        self.closed.store(true, AtomicOrdering::Relaxed);
        self.close.notify_one();
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
}

/// The frames waiting for one peer.
#[derive(Default)]
struct QueueState {
    frames: VecDeque<Bytes>,
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
}

impl Transport {
    /// Starts accepting on `listener`; frames go to `inbound_tx`. `local_addr`
    /// is this member's advertised address: datagrams to it loop back.
    pub fn start(
        listener: TcpListener,
        local_addr: Bytes,
        limits: Limits,
        inbound_tx: mpsc::Sender<Inbound>,
    ) -> Transport {
        let stats = Arc::new(TransportStats::default());
        let accept_task = tokio::spawn(accept_loop(
            listener,
            limits,
            inbound_tx.clone(),
            stats.clone(),
        ));
        Transport {
            local_addr,
            limits,
            peers: HashMap::new(),
            inbound_tx,
            accept_task,
            stats,
            bad_addr_logged: false,
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
            ));
            if let Some(old) = self.peers.insert(addr.clone(), Peer { queue, task }) {
                old.task.abort();
            }
        }
        let Some(peer) = self.peers.get(addr) else {
            return;
        };
        let mut st = lock(&peer.queue.state);
        if st.frames.is_empty() && st.partial.is_none() && !st.writing {
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
        st.frames.push_back(bytes);
        self.stats
            .queued_frames
            .fetch_add(1, AtomicOrdering::Relaxed);
        while st.frames.len() > self.limits.queue_frames_max
            || st.bytes > self.limits.queue_bytes_max
        {
            let Some(old) = st.frames.pop_front() else {
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
) {
    // Dropping the set (when this task is aborted) aborts every reader.
    let mut readers = JoinSet::new();
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
            warn!(%peer, max = INBOUND_CONNECTIONS_MAX, "too many inbound connections; refusing one");
            continue;
        }
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let ctl = Arc::new(ConnCtl {
            id: next_id,
            peer,
            close: Notify::new(),
            closed: AtomicBool::new(false),
        });
        debug!(conn = ctl.id, %peer, "inbound connection");
        readers.spawn(read_frames(stream, ctl, limits, tx.clone(), stats.clone()));
    }
}

/// Why a reader stopped.
enum ReadEnd {
    Eof,
    Closed,
    Io(std::io::Error),
    Oversized(usize),
    Empty,
    DriverGone,
    /// The header does not decode.
    Garbage(troupe_core::DecodeError),
    /// The header names another group.
    OtherGroup(u64),
    /// The connection spoke for one node, then claimed to be another.
    Impostor {
        node: u64,
        claimed: troupe_core::MemberId,
    },
}

async fn read_frames(
    stream: TcpStream,
    ctl: Arc<ConnCtl>,
    limits: Limits,
    tx: mpsc::Sender<Inbound>,
    stats: Arc<TransportStats>,
) {
    let max = limits.frame_bytes_max;
    let end = read_frames_inner(stream, &ctl, limits, &tx).await;
    if !matches!(end, ReadEnd::Eof | ReadEnd::Io(_) | ReadEnd::DriverGone) {
        stats
            .refused_connections
            .fetch_add(1, AtomicOrdering::Relaxed);
    }
    match end {
        ReadEnd::Eof => {
            debug!(conn = ctl.id, peer = %ctl.peer, "inbound connection closed by peer")
        }
        ReadEnd::Io(e) => {
            debug!(conn = ctl.id, peer = %ctl.peer, error = %e, "inbound connection broke")
        }
        ReadEnd::DriverGone => {}
        ReadEnd::Closed => {
            warn!(conn = ctl.id, peer = %ctl.peer, "inbound connection closed: it sent a datagram that does not decode");
        }
        ReadEnd::Oversized(n) => {
            warn!(conn = ctl.id, peer = %ctl.peer, len = n, max, "inbound connection closed: frame over the size limit");
        }
        ReadEnd::Empty => {
            warn!(conn = ctl.id, peer = %ctl.peer, "inbound connection closed: empty frame");
        }
        ReadEnd::Garbage(e) => {
            warn!(conn = ctl.id, peer = %ctl.peer, error = %e, "inbound connection closed: not a troupe datagram");
        }
        ReadEnd::OtherGroup(g) => {
            warn!(conn = ctl.id, peer = %ctl.peer, group_hash = g, "inbound connection closed: datagram of another group");
        }
        ReadEnd::Impostor { node, claimed } => {
            warn!(conn = ctl.id, peer = %ctl.peer, node, %claimed, "inbound connection closed: it spoke for one member, then claimed to be another");
        }
    }
}

async fn read_frames_inner(
    mut stream: TcpStream,
    ctl: &Arc<ConnCtl>,
    limits: Limits,
    tx: &mpsc::Sender<Inbound>,
) -> ReadEnd {
    let max = limits.frame_bytes_max;
    let mut buf = BytesMut::with_capacity(READ_BUFFER_BYTES);
    // The node this connection speaks for, from its first datagram: a peer
    // sends its own datagrams on its own connection, so a connection that
    // changes node is lying about one of them. (A node that rejoins as a new
    // incarnation keeps its node number and its connections.)
    let mut pinned: Option<u64> = None;
    loop {
        if ctl.closed.load(AtomicOrdering::Relaxed) {
            return ReadEnd::Closed;
        }
        // Cut every whole frame out of what has arrived.
        let mut frames = Vec::new();
        while buf.len() >= FRAME_HEADER_BYTES {
            let mut header = [0u8; FRAME_HEADER_BYTES];
            header.copy_from_slice(&buf[..FRAME_HEADER_BYTES]);
            let len = u32::from_le_bytes(header) as usize;
            if len > max {
                return ReadEnd::Oversized(len);
            }
            if len == 0 {
                return ReadEnd::Empty;
            }
            if buf.len() < FRAME_HEADER_BYTES + len {
                // Room for the rest of this frame (and a full read beyond).
                buf.reserve(FRAME_HEADER_BYTES + len - buf.len());
                break;
            }
            let _ = buf.split_to(FRAME_HEADER_BYTES);
            let bytes = buf.split_to(len).freeze();
            // Only the header is read here (the engine decodes the rest).
            let (group, from) = match troupe_core::wire::DatagramReader::new(bytes.clone()) {
                Ok(h) => (h.group(), h.from()),
                Err(e) => return ReadEnd::Garbage(e),
            };
            if group != limits.group {
                return ReadEnd::OtherGroup(group);
            }
            match pinned {
                None => pinned = Some(from.node),
                Some(node) if node != from.node => {
                    return ReadEnd::Impostor {
                        node,
                        claimed: from,
                    }
                }
                Some(_) => {}
            }
            frames.push(bytes);
        }
        if !frames.is_empty() {
            let item = Inbound {
                frames,
                conn: Some(ctl.clone()),
            };
            tokio::select! {
                r = tx.send(item) => if r.is_err() { return ReadEnd::DriverGone },
                _ = ctl.close.notified() => return ReadEnd::Closed,
            }
        }
        if buf.capacity() - buf.len() < READ_ROOM_MIN {
            // The frames cut above keep the old allocation alive until the
            // engine lets go of them; the partial frame moves to a new one.
            buf.reserve(READ_BUFFER_BYTES);
        }
        tokio::select! {
            r = stream.read_buf(&mut buf) => match r {
                Ok(0) => return ReadEnd::Eof,
                Ok(_) => {}
                Err(e) => return ReadEnd::Io(e),
            },
            _ = ctl.close.notified() => return ReadEnd::Closed,
        }
    }
}

/// Writes the frames queued for one peer, (re)connecting as needed, until
/// the peer has been idle for [`PEER_IDLE_TIMEOUT`].
async fn peer_writer(addr: String, queue: Arc<PeerQueue>, stats: Arc<TransportStats>) {
    let mut backoff = RECONNECT_BACKOFF_MIN;
    let mut batch: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut logged_down = false;
    'connect: loop {
        if !wait_ready(&queue).await {
            return;
        }
        let stream =
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr.as_str())).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    if !logged_down {
                        debug!(peer = %addr, error = %e, "cannot connect; retrying with back-off");
                        logged_down = true;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                    continue;
                }
                Err(_) => {
                    debug!(peer = %addr, "connection attempt timed out");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                    continue;
                }
            };
        let _ = stream.set_nodelay(true);
        if logged_down {
            info!(peer = %addr, "connected again");
        } else {
            debug!(peer = %addr, "connected");
        }
        logged_down = false;
        backoff = RECONNECT_BACKOFF_MIN;
        let stream = Arc::new(stream);
        lock(&queue.state).stream = Some(stream.clone());
        loop {
            if !wait_ready(&queue).await {
                return;
            }
            // Coalesce everything queued (up to a batch) into one write.
            batch.clear();
            {
                let mut st = lock(&queue.state);
                if let Some(p) = st.partial.take() {
                    batch.extend_from_slice(&p);
                }
                while let Some(f) = st.frames.front() {
                    if !batch.is_empty()
                        && batch.len() + FRAME_HEADER_BYTES + f.len() > BATCH_BYTES_MAX
                    {
                        break;
                    }
                    let Some(f) = st.frames.pop_front() else {
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
                continue;
            }
            let r = write_all(&stream, &batch).await;
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
