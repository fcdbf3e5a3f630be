//! The network model does what the nemesis asks of it.

use bytes::Bytes;
use troupe_core::{MemberId, Time};
use troupe_sim::net::{NetConfig, Network};

fn dg() -> Bytes {
    Bytes::from_static(b"datagram")
}

/// Sends `n` datagrams `from -> to` and counts those that arrive.
fn arrivals(net: &mut Network, from: usize, to: usize, n: usize) -> usize {
    for _ in 0..n {
        net.send(Time::ZERO, from, to, MemberId::UNKNOWN, dg());
    }
    let mut got = 0;
    while let Some(d) = net.pop(Time::MAX) {
        assert_eq!((d.from, d.to), (from, to));
        got += 1;
    }
    got
}

#[test]
fn loss_rate_is_roughly_honoured() {
    let cfg = NetConfig {
        loss_ppm: 200_000,
        ..NetConfig::default()
    };
    let mut net = Network::new(2, cfg, 1);
    let got = arrivals(&mut net, 0, 1, 10_000);
    assert!(
        (7_600..=8_400).contains(&got),
        "{got} of 10000 arrived at 20% loss"
    );
    assert_eq!(net.stats().lost as usize, 10_000 - got);
}

#[test]
fn extra_loss_applies_to_its_link_only_and_is_removed() {
    let mut net = Network::new(3, NetConfig::default(), 2);
    net.add_loss(0, 1, 500_000);
    let hit = arrivals(&mut net, 0, 1, 4_000);
    assert!((1_700..=2_300).contains(&hit), "{hit} of 4000 at 50% loss");
    assert_eq!(arrivals(&mut net, 1, 0, 1_000), 1_000);
    assert_eq!(arrivals(&mut net, 0, 2, 1_000), 1_000);
    net.remove_loss(0, 1, 500_000);
    assert_eq!(arrivals(&mut net, 0, 1, 1_000), 1_000);
}

#[test]
fn duplication_delivers_extra_copies() {
    let cfg = NetConfig {
        dup_ppm: 100_000,
        ..NetConfig::default()
    };
    let mut net = Network::new(2, cfg, 3);
    let got = arrivals(&mut net, 0, 1, 10_000);
    assert!(
        (10_800..=11_200).contains(&got),
        "{got} copies of 10000 at 10% duplication"
    );
}

#[test]
fn symmetric_partition_blocks_both_ways_until_healed() {
    let mut net = Network::new(5, NetConfig::default(), 4);
    net.partition(&[0, 1], &[2, 3, 4]);
    assert_eq!(arrivals(&mut net, 0, 3, 10), 0);
    assert_eq!(arrivals(&mut net, 4, 1, 10), 0);
    assert_eq!(arrivals(&mut net, 0, 1, 10), 10, "same side");
    assert_eq!(arrivals(&mut net, 2, 4, 10), 10, "same side");
    net.heal_partition(&[0, 1], &[2, 3, 4]);
    assert_eq!(arrivals(&mut net, 0, 3, 10), 10);
    assert_eq!(arrivals(&mut net, 4, 1, 10), 10);
}

#[test]
fn one_way_partition_blocks_one_direction() {
    let mut net = Network::new(2, NetConfig::default(), 5);
    net.block(0, 1);
    assert_eq!(arrivals(&mut net, 0, 1, 10), 0);
    assert_eq!(arrivals(&mut net, 1, 0, 10), 10);
    assert!(net.is_blocked(0, 1) && !net.is_blocked(1, 0));
}

#[test]
fn overlapping_blocks_open_only_when_the_last_ends() {
    let mut net = Network::new(2, NetConfig::default(), 6);
    net.block(0, 1);
    net.block(0, 1);
    net.unblock(0, 1);
    assert_eq!(arrivals(&mut net, 0, 1, 5), 0);
    net.unblock(0, 1);
    assert_eq!(arrivals(&mut net, 0, 1, 5), 5);
}

#[test]
fn jitter_reorders_and_arrivals_come_in_time_order() {
    let mut net = Network::new(2, NetConfig::default(), 7);
    for i in 0u32..200 {
        net.send(
            Time(u64::from(i) * 10_000),
            0,
            1,
            MemberId::UNKNOWN,
            Bytes::copy_from_slice(&i.to_le_bytes()),
        );
    }
    let mut last = Time::ZERO;
    let mut order = Vec::new();
    while let Some(d) = net.pop(Time::MAX) {
        assert!(d.at >= last, "arrivals in time order");
        last = d.at;
        order.push(u32::from_le_bytes(d.bytes[..4].try_into().unwrap()));
    }
    assert_eq!(order.len(), 200);
    assert!(
        order.windows(2).any(|w| w[0] > w[1]),
        "some datagrams overtake others"
    );
}

#[test]
fn pop_waits_for_the_arrival_time() {
    let mut net = Network::new(2, NetConfig::default(), 8);
    net.send(Time(1_000), 0, 1, MemberId::new(1, 1), dg());
    let at = net.next_arrival().expect("in flight");
    assert!(at > Time(1_000));
    assert!(net.pop(Time(at.as_nanos() - 1)).is_none());
    let d = net.pop(at).expect("due");
    assert_eq!(d.dest, MemberId::new(1, 1));
}

#[test]
fn same_seed_same_latencies() {
    let times = |seed| {
        let mut net = Network::new(3, NetConfig::default(), seed);
        for i in 0..50 {
            net.send(
                Time(i * 1000),
                (i % 3) as usize,
                ((i + 1) % 3) as usize,
                MemberId::UNKNOWN,
                dg(),
            );
        }
        std::iter::from_fn(|| net.pop(Time::MAX).map(|d| d.at)).collect::<Vec<_>>()
    };
    assert_eq!(times(9), times(9));
    assert_ne!(times(9), times(10));
}
