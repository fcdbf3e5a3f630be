//! Hostile connections to a member's port: a peer that sends a frame a byte
//! a second, and a flood of connections. Each is closed, memory stays
//! bounded, the group goes on, and the log says what happened (and not a
//! line per flooding connection).

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use troupe::{Group, Ordering};

mod common;

/// Every test finishes well within this, or fails.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);

/// Everything the members of this test binary log, without colours.
fn log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .try_init();
        buf
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_text() -> String {
    String::from_utf8_lossy(&log().lock().unwrap_or_else(|e| e.into_inner())).to_string()
}

/// Two members of `name`, both in the view.
async fn pair(name: &str) -> (Group, Group) {
    let mut gs = common::group_with(2, || {
        common::member(name)
            .suspect_timeout(Duration::from_millis(1000))
            .flush_timeout(Duration::from_millis(1000))
            .stateless()
    })
    .await;
    let b = gs.pop().expect("two members");
    let a = gs.pop().expect("two members");
    (a, b)
}

/// `b` sends `n` Safe messages; `a` delivers them all.
async fn still_delivers(a: &mut Group, b: &Group, n: usize) {
    for k in 0..n {
        b.send(Ordering::Safe, format!("m{k}")).await.expect("send");
    }
    common::deliveries(a, n).await;
}

/// A datagram header of `group` from node 4242: a valid (empty) datagram.
fn valid_frame(group: &str) -> Vec<u8> {
    let mut d = bytes::BytesMut::new();
    troupe::core::wire::encode_header(
        &mut d,
        troupe::core::group_hash(group),
        troupe::MemberId::new(4242, 1),
        troupe::ViewId::default(),
    );
    let mut f = (d.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(&d);
    f
}

/// Waits until the member closes `s` (EOF or an error); how long it took.
async fn closed(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        match timeout(limit.saturating_sub(start.elapsed()), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

/// The log lines that name `addr`.
fn lines_about(addr: &str) -> Vec<String> {
    log_text()
        .lines()
        .filter(|l| l.contains(&format!("peer={addr}")))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_a_byte_a_second_is_closed_and_the_group_goes_on() {
    log();
    timeout(TEST_TIMEOUT, async {
        let (mut a, b) = pair("t-slow").await;
        let addr = a.local_addr();
        // One that sends nothing whole: a header, a byte a second.
        let mut silent = TcpStream::connect(addr).await.expect("connect");
        let silent_addr = silent.local_addr().expect("addr").to_string();
        // One that sends a valid datagram, then starts another frame and
        // drips it.
        let mut slow = TcpStream::connect(addr).await.expect("connect");
        let slow_addr = slow.local_addr().expect("addr").to_string();
        slow.write_all(&valid_frame("t-slow")).await.expect("write");
        let frame = valid_frame("t-slow");
        let drip = async {
            for (i, byte) in frame.iter().enumerate() {
                for s in [&mut silent, &mut slow] {
                    // A write to a closed connection fails: that is the point.
                    let _ = s.write_all(&[*byte]).await;
                }
                if i + 1 < frame.len() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let group = still_delivers(&mut a, &b, 50);
        tokio::join!(drip, group);
        // Neither sent a whole frame in time (the frame has more bytes than
        // the timeouts have seconds); both are closed, and the group still
        // delivers.
        assert!(frame.len() > 12, "the drip must outlast the timeouts");
        assert!(closed(&mut silent, Duration::from_secs(20)).await.is_some());
        assert!(closed(&mut slow, Duration::from_secs(20)).await.is_some());
        still_delivers(&mut a, &b, 50).await;
        let silent_log = lines_about(&silent_addr).join("\n");
        assert!(silent_log.contains("no valid frame within"), "{silent_log}");
        let slow_log = lines_about(&slow_addr).join("\n");
        assert!(
            slow_log.contains("a frame did not arrive whole within"),
            "{slow_log}"
        );
    })
    .await
    .expect("test timed out");
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connections_is_shed_and_the_group_goes_on() {
    log();
    timeout(TEST_TIMEOUT, async {
        let (mut a, b) = pair("t-flood").await;
        still_delivers(&mut a, &b, 10).await;
        let addr = a.local_addr();
        let before = rss_kib();
        let start = Instant::now();
        // 500 connections that send nothing, and 100 that send half a
        // frame of garbage, while the group works.
        const FLOOD: usize = 600;
        let flood = async {
            let mut conns = Vec::with_capacity(FLOOD);
            for i in 0..FLOOD {
                let Ok(mut s) = TcpStream::connect(addr).await else {
                    continue;
                };
                if i % 6 == 0 {
                    let _ = s.write_all(&[200, 0, 0, 0, 9, 9, 9]).await;
                }
                conns.push(s);
            }
            conns
        };
        let (mut conns, ()) = tokio::join!(flood, still_delivers(&mut a, &b, 200));
        let during = rss_kib();
        // All but the newest few dozen are closed at once to make room for
        // newer ones; the rest within the first-frame timeout.
        let mut shut = 0;
        for s in conns.iter_mut() {
            if closed(s, Duration::from_secs(15)).await.is_some() {
                shut += 1;
            }
        }
        assert_eq!(shut, conns.len(), "flooding connections left open");
        assert!(conns.len() > FLOOD / 2, "the flood did not connect");
        still_delivers(&mut a, &b, 200).await;
        // Memory: a few MiB for the flood, not a read buffer per connection.
        let grew_kib = during.saturating_sub(before);
        assert!(
            grew_kib < 32 << 10,
            "resident memory grew by {grew_kib} KiB during the flood"
        );
        // The log says what happened, without a line per connection.
        let secs = start.elapsed().as_secs() + 1;
        let log = log_text();
        let evicted = log
            .matches("too many connections that have sent no valid frame")
            .count();
        assert!(evicted > 0, "no eviction logged");
        let refusals = log
            .lines()
            .filter(|l| l.contains("inbound connection") && l.contains("WARN"))
            .count() as u64;
        assert!(
            refusals <= 20 * (secs + 1),
            "{refusals} refusal lines in {secs} s: the log is not rate-limited"
        );
        assert!(
            log.contains("more inbound connections were refused than logged"),
            "the lines not logged are not counted"
        );
        drop(conns);
    })
    .await
    .expect("test timed out");
}
