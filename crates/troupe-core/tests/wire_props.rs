//! Property tests of the wire codec: arbitrary datagrams round-trip exactly,
//! and no input (random, truncated or mutated) makes the decoder panic.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use troupe_core::wire::{
    encode_frame, encode_header, frame_len_max, Ballot, Body, Datagram, DatagramReader, Fragment,
    Frame, OrderRun, Proposal, HEADER_LEN_MAX,
};
use troupe_core::{MemberId, Ordering, QueryId, View, ViewId};

/// Integers of every varint length, with the edges overrepresented.
fn int() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(u64::MAX),
        0..128u64,
        128..(1u64 << 21),
        any::<u64>().prop_map(|x| x >> (x % 64)),
        any::<u64>(),
    ]
}

fn int32() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), Just(u32::MAX), 0..128u32, any::<u32>()]
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

fn member() -> impl Strategy<Value = MemberId> {
    (int(), int()).prop_map(|(node, incarnation)| MemberId { node, incarnation })
}

fn view_id() -> impl Strategy<Value = ViewId> {
    (int(), member()).prop_map(|(epoch, coord)| ViewId { epoch, coord })
}

fn ballot() -> impl Strategy<Value = Ballot> {
    (int(), member()).prop_map(|(round, coord)| Ballot { round, coord })
}

fn query_id() -> impl Strategy<Value = QueryId> {
    (member(), int()).prop_map(|(asker, n)| QueryId { asker, n })
}

fn view() -> impl Strategy<Value = View> {
    (view_id(), vec((member(), bytes(24)), 0..20)).prop_map(|(id, ms)| {
        let (members, addrs) = ms.into_iter().unzip();
        View { id, members, addrs }
    })
}

fn proposal() -> impl Strategy<Value = Proposal> {
    (
        view(),
        vec(int(), 0..20),
        proptest::option::of(member()),
        vec(member(), 0..20),
    )
        .prop_map(|(next, cut, provider, joiners)| Proposal {
            next,
            cut,
            provider,
            joiners,
        })
}

fn fragment() -> impl Strategy<Value = Fragment> {
    (2..=u32::MAX)
        .prop_flat_map(|count| (0..count, Just(count)))
        .prop_map(|(index, count)| Fragment { index, count })
}

fn body(payload_max: usize) -> impl Strategy<Value = Body> {
    let app = (
        prop::sample::select(&Ordering::ALL[1..]),
        proptest::option::of(fragment()),
        vec(int(), 0..20),
        proptest::option::of(int()),
        bytes(payload_max),
    )
        .prop_map(|(ordering, frag, causal, query, payload)| Body::App {
            ordering,
            frag,
            causal,
            query,
            payload,
        });
    let order =
        (int(), vec((int32(), int(), int32()), 0..20)).prop_map(|(first, runs)| Body::Order {
            first,
            runs: runs
                .into_iter()
                .map(|(origin, seq, count)| OrderRun { origin, seq, count })
                .collect(),
        });
    prop_oneof![3 => app, 1 => order]
}

/// Every frame variant, with payloads up to `payload_max` bytes.
fn frame(payload_max: usize) -> impl Strategy<Value = Frame> {
    prop_oneof![
        4 => (int32(), int(), body(payload_max)).prop_map(|(origin, seq, body)| Frame::Data { origin, seq, body }),
        1 => (int(), bytes(payload_max)).prop_map(|(useq, payload)| Frame::Unreliable { useq, payload }),
        1 => vec(int(), 0..20).prop_map(|contig| Frame::Ack { contig }),
        1 => (int32(), vec((int(), int()), 0..20)).prop_map(|(origin, ranges)| Frame::Nak { origin, ranges }),
        1 => int().prop_map(|sent| Frame::Heartbeat { sent }),
        1 => vec(member(), 0..20).prop_map(|members| Frame::Suspect { members }),
        1 => Just(Frame::Leave),
        1 => (member(), bytes(32)).prop_map(|(joiner, addr)| Frame::JoinRequest { joiner, addr }),
        1 => ballot().prop_map(|ballot| Frame::Prepare { ballot }),
        1 => (ballot(), vec(int(), 0..20), proptest::option::of((ballot(), proposal())), any::<bool>(), any::<bool>())
            .prop_map(|(ballot, contig, accepted, ready, leaving)| Frame::Promise {
                ballot,
                contig,
                accepted,
                ready,
                leaving
            }),
        1 => (ballot(), ballot()).prop_map(|(ballot, promised)| Frame::Reject { ballot, promised }),
        1 => (ballot(), proposal()).prop_map(|(ballot, proposal)| Frame::Accept { ballot, proposal }),
        1 => ballot().prop_map(|ballot| Frame::Accepted { ballot }),
        1 => proposal().prop_map(|proposal| Frame::Commit { proposal }),
        1 => (view_id(), member()).prop_map(|(view, member)| Frame::NotMember { view, member }),
        1 => (view_id(), int()).prop_map(|(view, offset)| Frame::StateRequest { view, offset }),
        1 => (view_id(), int(), int(), bytes(payload_max))
            .prop_map(|(view, offset, total_len, bytes)| Frame::StateChunk { view, offset, total_len, bytes }),
        1 => (query_id(), bytes(payload_max)).prop_map(|(query, payload)| Frame::QueryReply { query, payload }),
        1 => query_id().prop_map(|query| Frame::QueryPoll { query }),
    ]
}

fn datagram(frames_max: usize, payload_max: usize) -> impl Strategy<Value = Datagram> {
    (
        any::<u64>(),
        member(),
        view_id(),
        vec(frame(payload_max), 0..=frames_max),
    )
        .prop_map(|(group, from, view, frames)| Datagram {
            group,
            from,
            view,
            frames,
        })
}

/// Decodes `bytes`; if that succeeds, re-encoding the result must decode to
/// the same datagram (the decoder accepts only what the encoder can write).
fn decode_checked(bytes: Bytes) -> Result<Datagram, troupe_core::DecodeError> {
    let d = Datagram::decode(bytes)?;
    assert_eq!(Datagram::decode(d.encode()).as_ref(), Ok(&d));
    Ok(d)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn datagrams_round_trip(d in datagram(12, 4096)) {
        let bytes = d.encode();
        prop_assert_eq!(Datagram::decode(bytes.clone()), Ok(d.clone()));

        // Building it incrementally gives the same bytes, within the bounds.
        let mut buf = BytesMut::new();
        encode_header(&mut buf, d.group, d.from, d.view);
        prop_assert!(buf.len() <= HEADER_LEN_MAX);
        for f in &d.frames {
            let before = buf.len();
            encode_frame(&mut buf, f);
            prop_assert!(buf.len() - before <= frame_len_max(f), "frame_len_max too small for {:?}", f);
        }
        prop_assert_eq!(&buf.freeze(), &bytes);

        // The streaming reader agrees.
        let r = DatagramReader::new(bytes).unwrap();
        prop_assert_eq!((r.group(), r.from(), r.view()), (d.group, d.from, d.view));
        let frames: Result<Vec<Frame>, _> = r.collect();
        prop_assert_eq!(frames, Ok(d.frames));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn arbitrary_bytes_never_panic(raw in vec(any::<u8>(), 0..2048)) {
        let _ = decode_checked(Bytes::from(raw));
    }

    /// Mostly-valid input: a real header and a (mostly) real tag, then random bytes, so that the frame
    /// decoders (not just the magic check) see the garbage.
    #[test]
    fn arbitrary_frames_never_panic(tag in 0u8..=20, raw in vec(any::<u8>(), 0..2048)) {
        let mut buf = BytesMut::new();
        encode_header(&mut buf, 1, MemberId::new(1, 1), ViewId::default());
        buf.extend_from_slice(&[tag]);
        buf.extend_from_slice(&raw);
        let _ = decode_checked(buf.freeze());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Every strict prefix decodes to an error, or (when it ends on a frame
    /// boundary) to the first frames of the original.
    #[test]
    fn prefixes_never_panic(d in datagram(8, 64)) {
        let bytes = d.encode();
        for len in 0..bytes.len() {
            if let Ok(p) = decode_checked(bytes.slice(..len)) {
                prop_assert_eq!((p.group, p.from, p.view), (d.group, d.from, d.view));
                prop_assert!(p.frames.len() < d.frames.len());
                prop_assert_eq!(&p.frames[..], &d.frames[..p.frames.len()]);
            }
        }
    }

    /// Every single-byte mutation decodes to Ok or Err, never panics.
    #[test]
    fn mutations_never_panic(d in datagram(8, 64), fill in any::<u8>()) {
        let bytes = d.encode();
        for i in 0..bytes.len() {
            let orig = bytes[i];
            for b in [fill, orig ^ 0x80, orig.wrapping_add(1), 0xff] {
                if b == orig {
                    continue;
                }
                let mut m = BytesMut::from(&bytes[..]);
                m[i] = b;
                let _ = decode_checked(m.freeze());
            }
        }
    }
}
