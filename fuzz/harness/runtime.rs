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
