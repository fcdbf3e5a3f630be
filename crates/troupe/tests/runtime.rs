//! The runtime over real sockets on 127.0.0.1, several members in one process.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;
use troupe::{Event, Ordering, Replicated, StateMachine};

mod common;
use common::{deliveries, group_of, member};

/// Every test finishes well within this, or fails.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_deliver_total_order_messages_in_one_order() {
    timeout(TEST_TIMEOUT, async {
        let mut gs = group_of("t-total", 3).await;
        for (i, g) in gs.iter().enumerate() {
            let h = g.handle();
            tokio::spawn(async move {
                for k in 0..50u32 {
                    h.send(Ordering::Total, format!("{i}-{k}"))
                        .await
                        .expect("send");
                }
            });
        }
        let mut orders = Vec::new();
        for g in gs.iter_mut() {
            orders.push(deliveries(g, 150).await);
        }
        assert_eq!(orders[0], orders[1]);
        assert_eq!(orders[0], orders[2]);
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_oversized_frames_and_impostors_are_closed_and_the_group_goes_on() {
    timeout(TEST_TIMEOUT, async {
        let mut gs = group_of("t-garbage", 2).await;
        let addr = gs[0].local_addr();
        // Bytes that are not a datagram.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(&[5, 0, 0, 0, 1, 2, 3, 4, 5]).await.unwrap();
        // A length far over the limit.
        let mut s2 = tokio::net::TcpStream::connect(addr).await.unwrap();
        s2.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
        // An empty frame.
        let mut s3 = tokio::net::TcpStream::connect(addr).await.unwrap();
        s3.write_all(&[0, 0, 0, 0]).await.unwrap();
        // Well-formed headers, first for one node, then claiming another.
        let mut s4 = tokio::net::TcpStream::connect(addr).await.unwrap();
        let group = troupe::core::group_hash("t-garbage");
        for node in [111, 222] {
            let mut d = bytes::BytesMut::new();
            let from = troupe::MemberId::new(node, 1);
            troupe::core::wire::encode_header(&mut d, group, from, troupe::ViewId::default());
            s4.write_all(&(d.len() as u32).to_le_bytes()).await.unwrap();
            s4.write_all(&d).await.unwrap();
        }
        // Each of them is closed by the member.
        for s in [&mut s, &mut s2, &mut s3, &mut s4] {
            let mut buf = [0u8; 16];
            let n = timeout(Duration::from_secs(5), s.read(&mut buf)).await;
            assert!(
                matches!(n, Ok(Ok(0)) | Ok(Err(_))),
                "connection not closed: {n:?}"
            );
        }
        gs[1]
            .send(Ordering::Safe, "still here")
            .await
            .expect("send");
        assert_eq!(
            deliveries(&mut gs[0], 1).await,
            vec![b"still here".to_vec()]
        );
    })
    .await
    .expect("test timed out");
}

#[derive(Default)]
struct Counter(u64);

impl StateMachine for Counter {
    fn apply(&mut self, cmd: &[u8]) -> Vec<u8> {
        self.0 += u64::from(cmd.first().copied().unwrap_or(0));
        self.0.to_le_bytes().to_vec()
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.to_le_bytes().to_vec()
    }
    fn restore(&mut self, s: &[u8]) {
        self.0 = s.try_into().map(u64::from_le_bytes).unwrap_or(0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_counter_answers_execute_and_a_joiner_gets_the_state() {
    timeout(TEST_TIMEOUT, async {
        let a = member("t-repl").start().await.unwrap();
        let contact = a.local_addr().to_string();
        let a = Replicated::new(a, Counter::default(), Ordering::Total).unwrap();
        for _ in 0..10 {
            a.execute([3u8]).await.unwrap();
        }
        assert_eq!(a.read(|c| c.0), 30);
        let b = member("t-repl").join([contact]).start().await.unwrap();
        let b = Replicated::new(b, Counter::default(), Ordering::Safe).unwrap();
        let out = b.execute([1u8]).await.unwrap();
        assert_eq!(out, 31u64.to_le_bytes().to_vec());
        // a applies it too.
        while a.read(|c| c.0) != 31 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_gathers_a_reply_from_every_member() {
    timeout(TEST_TIMEOUT, async {
        let gs = group_of("t-query", 3).await;
        let mut handles = Vec::new();
        for g in gs {
            let (h, mut events) = g.split();
            let responder = h.clone();
            tokio::spawn(async move {
                while let Some(ev) = events.recv().await {
                    if let Event::Query { id, payload, .. } = ev {
                        let answer = format!(
                            "{} saw {}",
                            responder.me(),
                            String::from_utf8_lossy(&payload)
                        );
                        let _ = responder.reply(id, answer).await;
                    }
                }
            });
            handles.push(h);
        }
        let r = handles[0]
            .query(Ordering::Total, troupe::QueryQuorum::All, "ping")
            .await
            .expect("query");
        assert_eq!(r.replies.len(), 3, "replies: {:?}", r.replies);
        assert!(r
            .replies
            .iter()
            .all(|(m, b)| *b == format!("{m} saw ping").into_bytes()));
        let r = handles[1]
            .query(Ordering::Fifo, troupe::QueryQuorum::Majority, "pong")
            .await
            .expect("query");
        assert!(r.replies.len() >= 2);
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_send_window_makes_send_wait_instead_of_failing() {
    timeout(TEST_TIMEOUT, async {
        let a = member("t-window")
            .stateless()
            .window_msgs_max(2)
            .start()
            .await
            .unwrap();
        let contact = a.local_addr().to_string();
        let mut b = member("t-window")
            .stateless()
            .join([contact])
            .start()
            .await
            .unwrap();
        let h = a.handle();
        let sender = tokio::spawn(async move {
            for k in 0..300u32 {
                h.send(Ordering::Safe, k.to_le_bytes().to_vec())
                    .await
                    .expect("send waits, never fails");
            }
        });
        let got = deliveries(&mut b, 300).await;
        let expected: Vec<Vec<u8>> = (0..300u32).map(|k| k.to_le_bytes().to_vec()).collect();
        assert_eq!(got, expected);
        sender.await.unwrap();
        drop(a);
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "current_thread")]
async fn try_send_queues_in_order_and_hands_back_what_does_not_fit() {
    timeout(TEST_TIMEOUT, async {
        let mut gs = group_of("t-try-send", 2).await;
        let h = gs[0].handle();
        // On one thread the driver cannot run between these calls: the
        // command queue fills, and what does not fit comes back.
        let mut queued = 0u32;
        let mut back = None;
        for k in 0..5_000u32 {
            match h.try_send(Ordering::Fifo, bytes::Bytes::from(k.to_string())) {
                Ok(()) => queued += 1,
                Err(troupe::TrySendError::Full(p)) => {
                    back = Some(p);
                    break;
                }
                Err(e) => panic!("try_send: {e}"),
            }
        }
        assert!(queued > 0 && queued < 5_000, "queued {queued}");
        assert_eq!(back.as_deref(), Some(queued.to_string().as_bytes()));
        // Everything queued is delivered, in order, at the other member.
        let got = deliveries(&mut gs[1], queued as usize).await;
        let want: Vec<Vec<u8>> = (0..queued).map(|k| k.to_string().into_bytes()).collect();
        assert_eq!(got, want);
        // And the queue has room again.
        h.try_send(Ordering::Fifo, bytes::Bytes::from_static(b"again"))
            .expect("room after the driver ran");
        assert_eq!(deliveries(&mut gs[1], 1).await, vec![b"again".to_vec()]);
    })
    .await
    .expect("test timed out");
}

/// Reads events of `g` until its view has exactly `n` members; returns the
/// payloads delivered meanwhile.
async fn until_view_size(g: &mut troupe::Group, n: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    while g.view().map_or(0, |v| v.members.len()) != n {
        if let Ok(Some(Event::Deliver(d))) = timeout(Duration::from_millis(100), g.recv()).await {
            got.push(d.payload.to_vec());
        }
    }
    got
}

/// The transport's fault injection makes a real partition: the two members
/// that still reach each other exclude the third and go on delivering; the
/// third delivers nothing of theirs; once healed it learns it was excluded,
/// and rejoins as a new incarnation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_injected_by_the_transport_excludes_the_minority_until_it_rejoins() {
    timeout(TEST_TIMEOUT, async {
        let mut gs = group_of("t-partition", 3).await;
        let addr = |g: &troupe::Group| g.local_addr().to_string();
        let (a0, a1, a2) = (addr(&gs[0]), addr(&gs[1]), addr(&gs[2]));
        let block = |addrs: Vec<String>| troupe::Faults {
            block: addrs,
            ..troupe::Faults::none()
        };
        gs[0].faults().set(block(vec![a2.clone()])).expect("valid");
        gs[1].faults().set(block(vec![a2.clone()])).expect("valid");
        gs[2].faults().set(block(vec![a0, a1])).expect("valid");
        let old = gs[2].me();

        until_view_size(&mut gs[0], 2).await;
        until_view_size(&mut gs[1], 2).await;
        gs[0]
            .send(Ordering::Safe, "majority")
            .await
            .expect("the majority sends");
        assert_eq!(deliveries(&mut gs[1], 1).await, vec![b"majority".to_vec()]);
        assert!(gs[0].faults().dropped() > 0 && gs[2].faults().dropped() > 0);

        // The minority delivers nothing of the majority's while cut off.
        let mut minority = Vec::new();
        while let Ok(Some(ev)) = timeout(Duration::from_millis(500), gs[2].recv()).await {
            minority.push(ev);
        }
        assert!(
            !minority.iter().any(|e| matches!(e, Event::Deliver(_))),
            "the cut-off member delivered: {minority:?}"
        );

        for g in &gs {
            g.faults().clear();
        }
        let excluded = timeout(Duration::from_secs(20), async {
            loop {
                match gs[2].recv().await {
                    Some(Event::Exited(r)) => break Some(r),
                    Some(Event::Deliver(d)) => panic!("delivered after the heal: {d:?}"),
                    Some(_) => {}
                    None => break None,
                }
            }
        })
        .await
        .expect("the healed member learns it was excluded");
        assert_eq!(excluded, Some(troupe::ExitReason::Excluded));
        let new = gs[2].rejoin().await.expect("rejoins");
        assert_ne!(new, old);
        for g in gs.iter_mut() {
            until_view_size(g, 3).await;
        }
    })
    .await
    .expect("test timed out");
}

/// A delay injected by the transport holds every datagram back at least
/// that long (a lower bound only: the machine may add more), and the group
/// keeps working through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_delay_holds_datagrams_back_and_the_group_goes_on() {
    timeout(TEST_TIMEOUT, async {
        let mut gs = group_of("t-delay", 2).await;
        let delay = Duration::from_millis(150);
        gs[0]
            .faults()
            .set(troupe::Faults {
                delay_ms: 150,
                jitter_ms: 20,
                ..troupe::Faults::none()
            })
            .expect("valid");
        for k in 0..3 {
            let t = std::time::Instant::now();
            gs[0]
                .send(Ordering::Fifo, format!("late {k}"))
                .await
                .expect("send");
            assert_eq!(
                deliveries(&mut gs[1], 1).await,
                vec![format!("late {k}").into_bytes()]
            );
            let took = t.elapsed();
            assert!(took >= delay, "delivered after {took:?}, under the delay");
        }
        gs[0].faults().clear();
        gs[1].send(Ordering::Total, "prompt").await.expect("send");
        assert_eq!(
            deliveries(&mut gs[0], 4).await.last(),
            Some(&b"prompt".to_vec())
        );
    })
    .await
    .expect("test timed out");
}
