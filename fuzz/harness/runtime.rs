//! What the `group_config` and `frame_reader` fuzz targets run; the replay
//! test `crates/troupe/tests/fuzz_corpus.rs` includes this file.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use troupe::{Group, GroupConfig, GroupHandle};

/// The group the frame reader target talks to; seeds carry its hash.
pub const GROUP: &str = "fuzz";

/// Parses `data` as a group configuration file; what parses also gives an
/// engine configuration that is checked and, if valid, starts an engine.
pub fn group_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = GroupConfig::from_toml(text) else {
        return;
    };
    let ec = cfg.engine_config("127.0.0.1:1");
    if ec.validate().is_ok() {
        let me = troupe::MemberId {
            node: 1,
            incarnation: 1,
        };
        let _ = troupe::core::Engine::new(ec, me, troupe::core::Time::ZERO, 1);
    }
}

/// A member of [`GROUP`] on 127.0.0.1, started once per process.
pub struct Member {
    /// Runs the member.
    pub rt: tokio::runtime::Runtime,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its handle.
    pub handle: GroupHandle,
}

/// The member, started on first use.
pub fn member() -> &'static Member {
    static MEMBER: OnceLock<Member> = OnceLock::new();
    MEMBER.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let (addr, handle) = rt.block_on(async {
            let g = Group::builder(GROUP)
                .listen("127.0.0.1:0")
                .node_id(1)
                .stateless()
                .start()
                .await
                .expect("the member starts");
            let addr = g.local_addr();
            let (handle, mut events) = g.split();
            tokio::spawn(async move { while events.recv().await.is_some() {} });
            (addr, handle)
        });
        Member { rt, addr, handle }
    })
}

/// The runtime's frame reader is private to `transport.rs` (an async
/// function over a `TcpStream`), so this target goes through the smallest
/// surface it has: one inbound connection to a live member. It writes
/// `data` as the byte stream of the connection, half-closes it, and waits
/// until the member closes its end (after an error or at the end of the
/// stream). A panic in the reader task or the driver aborts the fuzzer
/// (libfuzzer-sys installs an aborting panic hook); afterwards the member
/// must still be in its view.
pub fn frame_reader(data: &[u8]) {
    let m = member();
    m.rt.block_on(async {
        let Ok(mut s) = TcpStream::connect(m.addr).await else {
            return;
        };
        // Close with a reset: thousands of connections a second would
        // otherwise fill the ephemeral ports with TIME_WAIT sockets.
        #[allow(deprecated)]
        let _ = s.set_linger(Some(Duration::ZERO));
        let _ = s.write_all(data).await;
        let _ = s.shutdown().await;
        let mut buf = [0u8; 1024];
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    });
    assert!(m.handle.view().is_some(), "the member left its view");
}

/// Largest frame the `frame_cut` target allows.
pub const CUT_FRAME_BYTES_MAX: usize = 4096;

/// The transport's frame cutting ([`troupe::cut_frames`]) without sockets:
/// the first byte of `data` is a chunk size (0 means all at once), the rest
/// is a connection's byte stream, fed in chunks of that size as reads
/// would deliver it. Whatever the bytes and their chunking, cutting must
/// lose, change and invent nothing (the frames cut, framed again, followed
/// by what is left, are exactly the bytes fed), must keep every frame
/// within the limit, must keep a connection to one node, and must stop at
/// the first refusal, after which the frames let through are still the
/// start of the stream.
pub fn frame_cut(data: &[u8]) {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = if chunk == 0 {
        stream.len().max(1)
    } else {
        usize::from(chunk)
    };
    let group = troupe::core::group_hash(GROUP);
    let mut buf = bytes::BytesMut::new();
    let mut pinned = None;
    let mut frames = Vec::new();
    let mut fed = 0;
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        fed += piece.len();
        let r = troupe::cut_frames(
            &mut buf,
            CUT_FRAME_BYTES_MAX,
            group,
            &mut pinned,
            &mut frames,
        );
        let mut again = Vec::with_capacity(fed);
        for f in &frames {
            assert!(!f.is_empty() && f.len() <= CUT_FRAME_BYTES_MAX);
            let reader = troupe::core::wire::DatagramReader::new(f.clone())
                .expect("a frame that was let through has a header");
            assert_eq!(reader.group(), group);
            assert_eq!(Some(reader.from().node), pinned);
            again.extend_from_slice(&(f.len() as u32).to_le_bytes());
            again.extend_from_slice(f);
        }
        if r.is_err() {
            // The connection is closed: what was let through before the
            // refusal must still be exactly the start of the stream.
            assert!(stream.starts_with(&again), "cutting changed the stream");
            return;
        }
        again.extend_from_slice(&buf);
        assert_eq!(again, &stream[..fed], "cutting changed the stream");
    }
}
