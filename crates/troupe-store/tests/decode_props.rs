//! Property tests for the pure decoders: no input makes them panic, valid
//! files round-trip, truncation only ever looks like a torn tail, and a
//! flipped byte is never mistaken for data.

use proptest::prelude::*;
use troupe_store::format::{
    decode_meta, decode_segment, decode_snapshot, encode_meta, encode_record,
    encode_segment_header, encode_snapshot, find_valid_record, SEGMENT_HEADER_LEN,
};
use troupe_store::SegmentEnd;

fn segment(first: u64, payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut out = encode_segment_header(first).to_vec();
    for (k, p) in payloads.iter().enumerate() {
        encode_record(&mut out, first + k as u64, p);
    }
    out
}

fn payloads() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_segment(&bytes);
        let _ = decode_snapshot(&bytes);
        let _ = decode_meta(&bytes);
        let _ = find_valid_record(&bytes, 0, 0, 0);
    }

    #[test]
    fn segment_decoder_never_panics_on_arbitrary_records(
        first in 1u64..u64::MAX,
        tail in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = encode_segment_header(first).to_vec();
        bytes.extend_from_slice(&tail);
        let d = decode_segment(&bytes).expect("valid header");
        prop_assert!(d.valid_len as usize <= bytes.len());
        for (k, r) in d.records.iter().enumerate() {
            prop_assert_eq!(r.index, first + k as u64);
        }
    }

    #[test]
    fn snapshot_and_meta_decoders_never_panic_after_a_valid_header(
        index in any::<u64>(),
        len in any::<u64>(),
        tail in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut snap = encode_snapshot(index, &[])[..24].to_vec();
        snap[16..24].copy_from_slice(&len.to_le_bytes());
        snap.extend_from_slice(&tail);
        let _ = decode_snapshot(&snap);
        let mut meta = encode_meta(&[])[..12].to_vec();
        meta[8..12].copy_from_slice(&(len as u32).to_le_bytes());
        meta.extend_from_slice(&tail);
        let _ = decode_meta(&meta);
    }

    #[test]
    fn valid_segments_round_trip(first in 1u64..1 << 40, ps in payloads()) {
        let bytes = segment(first, &ps);
        let d = decode_segment(&bytes).expect("valid");
        prop_assert_eq!(&d.end, &SegmentEnd::Clean);
        prop_assert_eq!(d.first_index, first);
        let got: Vec<Vec<u8>> = d.records.iter().map(|r| r.data.to_vec()).collect();
        prop_assert_eq!(got, ps);
    }

    #[test]
    fn a_truncated_segment_is_a_prefix_with_a_torn_tail(
        first in 1u64..1 << 40,
        ps in payloads(),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = segment(first, &ps);
        let len = SEGMENT_HEADER_LEN + cut.index(bytes.len() - SEGMENT_HEADER_LEN + 1);
        let d = decode_segment(&bytes[..len]).expect("header intact");
        prop_assert!(!matches!(d.end, SegmentEnd::Corrupt { .. }), "{:?}", d.end);
        for (r, p) in d.records.iter().zip(&ps) {
            prop_assert_eq!(r.data, p.as_slice());
        }
    }

    #[test]
    fn a_flipped_byte_is_never_taken_for_data(
        first in 1u64..1 << 40,
        ps in payloads(),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut bytes = segment(first, &ps);
        let at = at.index(bytes.len());
        bytes[at] ^= 1 << bit;
        match decode_segment(&bytes) {
            Err(_) => prop_assert!(at < SEGMENT_HEADER_LEN),
            Ok(d) => {
                prop_assert!(at >= SEGMENT_HEADER_LEN);
                prop_assert!(d.records.len() < ps.len(), "the damaged record is not returned");
                for (r, p) in d.records.iter().zip(&ps) {
                    prop_assert_eq!(r.data, p.as_slice());
                }
                // Damage before the last record has a valid record after it.
                if d.records.len() + 1 < ps.len() {
                    let is_corrupt = matches!(d.end, SegmentEnd::Corrupt { .. });
                    prop_assert!(is_corrupt, "{:?}", d.end);
                } else {
                    let is_torn = matches!(d.end, SegmentEnd::Torn { .. });
                    prop_assert!(is_torn, "{:?}", d.end);
                }
            }
        }
    }

    #[test]
    fn a_flipped_byte_in_a_snapshot_or_meta_file_is_detected(
        data in prop::collection::vec(any::<u8>(), 0..200),
        index in any::<u64>(),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let snap = encode_snapshot(index, &data);
        prop_assert_eq!(decode_snapshot(&snap), Ok((index, data.as_slice())));
        let mut bad = snap.clone();
        let i = at.index(bad.len());
        bad[i] ^= 1 << bit;
        prop_assert!(decode_snapshot(&bad).is_err());

        let meta = encode_meta(&data);
        prop_assert_eq!(decode_meta(&meta), Ok(data.as_slice()));
        let mut bad = meta.clone();
        let i = at.index(bad.len());
        bad[i] ^= 1 << bit;
        prop_assert!(decode_meta(&bad).is_err());
    }
}
