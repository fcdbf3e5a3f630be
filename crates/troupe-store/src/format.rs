//! The on-disk formats: encoding and pure decoding of WAL segments, snapshot
//! files and the meta file. Nothing here touches the file system, so every
//! decoder can be fed arbitrary bytes (property tests, fuzzing) and answers
//! with a [`DecodeError`], never a panic.
//!
//! All integers are little-endian. Checksums are CRC32C (Castagnoli).
//!
//! ```text
//! segment  := seg_header, record*
//! seg_header := magic "TSWL", version:u32, first_index:u64, crc:u32      (20 bytes)
//!               crc = crc32c(magic, version, first_index)
//! record   := crc:u32, len:u32, index:u64, payload (len bytes)          (16 + len bytes)
//!               crc = crc32c(len, index, payload)
//! snapshot := magic "TSSN", version:u32, index:u64, len:u64, data, crc:u32
//!               crc = crc32c(everything before it)
//! meta     := magic "TSMT", version:u32, len:u32, data, crc:u32
//!               crc = crc32c(everything before it)
//! ```

use thiserror::Error;

/// Version of every file format in this module. A file of another version is
/// refused with [`DecodeError::Version`] rather than guessed at.
pub const FORMAT_VERSION: u32 = 1;

/// First bytes of a WAL segment file.
pub const SEGMENT_MAGIC: [u8; 4] = *b"TSWL";
/// First bytes of a snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"TSSN";
/// First bytes of the meta file.
pub const META_MAGIC: [u8; 4] = *b"TSMT";

/// Bytes of a segment's file header (magic, version, first index, checksum).
pub const SEGMENT_HEADER_LEN: usize = 20;
/// Bytes of a record's header (checksum, length, index).
pub const RECORD_HEADER_LEN: usize = 16;
/// Bytes of a snapshot file's header (magic, version, index, length).
pub const SNAPSHOT_HEADER_LEN: usize = 24;
/// Bytes of the meta file's header (magic, version, length).
pub const META_HEADER_LEN: usize = 12;
/// Bytes of the checksum trailer of snapshot and meta files.
pub const TRAILER_LEN: usize = 4;

/// The largest payload of one WAL record. The coordination service's entries
/// are requests of a few KiB (etcd caps them at 1.5 MiB); 64 MiB leaves room
/// while bounding what a corrupt length field can make recovery look at.
pub const RECORD_PAYLOAD_MAX: usize = 64 << 20;

/// The largest meta blob. The meta file holds a small "hard state"; 1 MiB is
/// generous and keeps `save_meta` a single small write.
pub const META_BYTES_MAX: usize = 1 << 20;

/// Why a byte slice is not a valid store file or record. Every variant names
/// the byte offset (from the start of the file) where decoding stopped.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The bytes end before a header or payload is complete.
    #[error(
        "truncated at byte offset {offset}: needed {needed} more bytes, only {available} remain"
    )]
    Truncated {
        /// Where the incomplete item starts.
        offset: u64,
        /// Bytes the item needs from `offset`.
        needed: u64,
        /// Bytes present from `offset` to the end.
        available: u64,
    },
    /// The file does not start with the expected magic bytes.
    #[error(
        "bad magic at byte offset {offset}: expected \"{}\", found \"{}\" (not a store file of this kind)",
        expected.escape_ascii(),
        found.escape_ascii()
    )]
    Magic {
        /// Always 0: the magic opens the file.
        offset: u64,
        /// The magic this kind of file must start with.
        expected: [u8; 4],
        /// What the file starts with.
        found: [u8; 4],
    },
    /// The file was written by another format version.
    #[error("unsupported format version {found} at byte offset {offset} (this build reads version {FORMAT_VERSION})")]
    Version {
        /// Offset of the version field.
        offset: u64,
        /// The version the file declares.
        found: u32,
    },
    /// A stored checksum does not match the bytes it covers.
    #[error("checksum mismatch at byte offset {offset}: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// Start of the item whose checksum failed.
        offset: u64,
        /// The checksum found in the file.
        stored: u32,
        /// The checksum of the bytes as they are.
        computed: u32,
    },
    /// A length field exceeds its limit.
    #[error("length {len} at byte offset {offset} exceeds the limit of {max} bytes")]
    Length {
        /// Start of the item whose length is too large.
        offset: u64,
        /// The declared length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A record (or header) carries an index other than the one its position requires.
    #[error("index {found} at byte offset {offset} where index {expected} was expected")]
    Index {
        /// Start of the record or header.
        offset: u64,
        /// The index its position requires.
        expected: u64,
        /// The index it carries.
        found: u64,
    },
    /// Bytes follow the end of a file that must end at its checksum.
    #[error(
        "{extra} unexpected bytes after the end of the file's content at byte offset {offset}"
    )]
    Trailing {
        /// Where the content should have ended.
        offset: u64,
        /// How many bytes follow.
        extra: u64,
    },
}

impl DecodeError {
    /// The byte offset in the file where the problem was found.
    pub fn offset(&self) -> u64 {
        match *self {
            DecodeError::Truncated { offset, .. }
            | DecodeError::Magic { offset, .. }
            | DecodeError::Version { offset, .. }
            | DecodeError::Checksum { offset, .. }
            | DecodeError::Length { offset, .. }
            | DecodeError::Index { offset, .. }
            | DecodeError::Trailing { offset, .. } => offset,
        }
    }
}

/// One record found in a segment; `data` borrows from the decoded bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Byte offset of the record's header in the segment file.
    pub offset: u64,
    /// The log index the record carries.
    pub index: u64,
    /// The payload.
    pub data: &'a [u8],
}

/// How the bytes of a segment end after its last valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentEnd {
    /// The last valid record ends exactly at the end of the bytes.
    Clean,
    /// An incomplete or invalid record at `offset`, and no valid record after
    /// it: what an interrupted write leaves. In the last segment this tail may
    /// be cut; anywhere else it is corruption.
    Torn {
        /// Where the bad bytes start (the end of the last valid record).
        offset: u64,
        /// What is wrong with the record at `offset`.
        error: DecodeError,
    },
    /// Nothing but zero bytes from `offset` to the end: room the writer
    /// reserved ahead of its records (see `Store::sync`), or a write of
    /// which nothing reached the disk. In the last segment this is where the
    /// next record goes; anywhere else it is corruption (a segment is cut to
    /// its records before the next one is created).
    Preallocated {
        /// Where the zero bytes start (the end of the last valid record).
        offset: u64,
    },
    /// A bad record followed by a valid one (`valid_at`), or a valid record
    /// with the wrong index: damage to data that was once written whole.
    Corrupt {
        /// Where the bad record starts.
        offset: u64,
        /// What is wrong with it.
        error: DecodeError,
        /// Offset of a valid record found after the bad one, if that is why
        /// this is not a torn tail.
        valid_at: Option<u64>,
    },
}

/// The result of decoding a whole segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedSegment<'a> {
    /// The first index, from the segment's header.
    pub first_index: u64,
    /// The valid records before the first problem, with contiguous indices
    /// starting at `first_index`.
    pub records: Vec<RecordRef<'a>>,
    /// Bytes from the file's start to the end of the last valid record (the
    /// header's length if there is none): where a torn tail would be cut.
    pub valid_len: u64,
    /// What follows `valid_len`.
    pub end: SegmentEnd,
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

fn truncated(offset: usize, needed: usize, bytes: &[u8]) -> DecodeError {
    DecodeError::Truncated {
        offset: offset as u64,
        needed: needed as u64,
        available: bytes.len().saturating_sub(offset) as u64,
    }
}

/// Checks magic and version at the start of `bytes`, which must hold at least
/// `header_len` bytes.
fn check_magic_version(bytes: &[u8], magic: [u8; 4], header_len: usize) -> Result<(), DecodeError> {
    if bytes.len() < header_len {
        return Err(truncated(0, header_len, bytes));
    }
    let mut found = [0u8; 4];
    found.copy_from_slice(&bytes[..4]);
    if found != magic {
        return Err(DecodeError::Magic {
            offset: 0,
            expected: magic,
            found,
        });
    }
    let version = u32_at(bytes, 4).ok_or_else(|| truncated(0, header_len, bytes))?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::Version {
            offset: 4,
            found: version,
        });
    }
    Ok(())
}

/// Encodes a segment file header for a segment whose first record is `first_index`.
pub fn encode_segment_header(first_index: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..4].copy_from_slice(&SEGMENT_MAGIC);
    h[4..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&first_index.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..16]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Decodes a segment file header and returns the segment's first index.
pub fn decode_segment_header(bytes: &[u8]) -> Result<u64, DecodeError> {
    check_magic_version(bytes, SEGMENT_MAGIC, SEGMENT_HEADER_LEN)?;
    let first_index = u64_at(bytes, 8).ok_or_else(|| truncated(0, SEGMENT_HEADER_LEN, bytes))?;
    let stored = u32_at(bytes, 16).ok_or_else(|| truncated(0, SEGMENT_HEADER_LEN, bytes))?;
    let computed = crc32c::crc32c(&bytes[0..16]);
    if stored != computed {
        return Err(DecodeError::Checksum {
            offset: 0,
            stored,
            computed,
        });
    }
    if first_index == 0 {
        // Log indices start at 1; 0 means "nothing" everywhere in the API.
        return Err(DecodeError::Index {
            offset: 8,
            expected: 1,
            found: 0,
        });
    }
    Ok(first_index)
}

/// Appends one encoded record to `out`. The caller bounds `data.len()` by
/// [`RECORD_PAYLOAD_MAX`].
pub fn encode_record(out: &mut Vec<u8>, index: u64, data: &[u8]) {
    debug_assert!(data.len() <= RECORD_PAYLOAD_MAX);
    let len = data.len() as u32;
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(data);
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes the record whose header starts at `offset`: its index, its
/// payload, and the offset just after it.
pub fn decode_record(bytes: &[u8], offset: usize) -> Result<(u64, &[u8], usize), DecodeError> {
    let avail = bytes.len().saturating_sub(offset);
    if avail < RECORD_HEADER_LEN {
        return Err(truncated(offset, RECORD_HEADER_LEN, bytes));
    }
    let stored =
        u32_at(bytes, offset).ok_or_else(|| truncated(offset, RECORD_HEADER_LEN, bytes))?;
    let len = u32_at(bytes, offset + 4)
        .ok_or_else(|| truncated(offset, RECORD_HEADER_LEN, bytes))? as usize;
    let index =
        u64_at(bytes, offset + 8).ok_or_else(|| truncated(offset, RECORD_HEADER_LEN, bytes))?;
    if len > RECORD_PAYLOAD_MAX {
        return Err(DecodeError::Length {
            offset: offset as u64,
            len: len as u64,
            max: RECORD_PAYLOAD_MAX as u64,
        });
    }
    let total = RECORD_HEADER_LEN + len;
    if avail < total {
        return Err(truncated(offset, total, bytes));
    }
    let end = offset + total;
    let computed = crc32c::crc32c(&bytes[offset + 4..end]);
    if stored != computed {
        return Err(DecodeError::Checksum {
            offset: offset as u64,
            stored,
            computed,
        });
    }
    Ok((index, &bytes[offset + RECORD_HEADER_LEN..end], end))
}

/// Looks for a valid record at any byte offset `>= from` whose index is at
/// least `min_index`, and returns the first such offset.
///
/// This is what tells a torn tail (garbage after the last good record, left by
/// an interrupted write) from corruption in the middle of a log (a bad record
/// with good ones after it). Each candidate's index must also be reachable from
/// `min_index` given the bytes between (`bad_offset` is where the bad record
/// started): every record takes at least [`RECORD_HEADER_LEN`] bytes. That
/// filter rejects almost every offset of random or zeroed garbage before a
/// checksum is computed, which keeps the scan linear in practice.
pub fn find_valid_record(
    bytes: &[u8],
    bad_offset: usize,
    from: usize,
    min_index: u64,
) -> Option<u64> {
    let last_start = bytes.len().checked_sub(RECORD_HEADER_LEN)?;
    let mut at = from;
    while at <= last_start {
        if let Some(index) = u64_at(bytes, at + 8) {
            let reach = (at.saturating_sub(bad_offset) / RECORD_HEADER_LEN) as u64 + 1;
            if index >= min_index && index - min_index <= reach && decode_record(bytes, at).is_ok()
            {
                return Some(at as u64);
            }
        }
        at += 1;
    }
    None
}

/// Decodes a whole segment file. A header problem is an `Err`; problems after
/// the header are reported in [`DecodedSegment::end`] with the records before
/// them, because the caller decides (by the segment's position in the log)
/// whether a bad end is a torn tail to cut or corruption to refuse.
pub fn decode_segment(bytes: &[u8]) -> Result<DecodedSegment<'_>, DecodeError> {
    let first_index = decode_segment_header(bytes)?;
    let mut records = Vec::new();
    let mut offset = SEGMENT_HEADER_LEN;
    let mut expected = first_index;
    let end = loop {
        if offset == bytes.len() {
            break SegmentEnd::Clean;
        }
        match decode_record(bytes, offset) {
            Ok((index, data, next)) => {
                if index != expected {
                    // A checksum-valid record cannot come from a torn write.
                    break SegmentEnd::Corrupt {
                        offset: offset as u64,
                        error: DecodeError::Index {
                            offset: offset as u64,
                            expected,
                            found: index,
                        },
                        valid_at: None,
                    };
                }
                records.push(RecordRef {
                    offset: offset as u64,
                    index,
                    data,
                });
                offset = next;
                match expected.checked_add(1) {
                    Some(e) => expected = e,
                    None => {
                        break SegmentEnd::Corrupt {
                            offset: offset as u64,
                            error: DecodeError::Index {
                                offset: offset as u64,
                                expected: u64::MAX,
                                found: index,
                            },
                            valid_at: None,
                        }
                    }
                }
            }
            Err(_) if bytes[offset..].iter().all(|b| *b == 0) => {
                break SegmentEnd::Preallocated {
                    offset: offset as u64,
                };
            }
            Err(error) => {
                break match find_valid_record(bytes, offset, offset + 1, expected) {
                    Some(valid_at) => SegmentEnd::Corrupt {
                        offset: offset as u64,
                        error,
                        valid_at: Some(valid_at),
                    },
                    None => SegmentEnd::Torn {
                        offset: offset as u64,
                        error,
                    },
                };
            }
        }
    };
    let valid_len = match &end {
        SegmentEnd::Clean => bytes.len() as u64,
        SegmentEnd::Torn { offset, .. }
        | SegmentEnd::Preallocated { offset }
        | SegmentEnd::Corrupt { offset, .. } => *offset,
    };
    Ok(DecodedSegment {
        first_index,
        records,
        valid_len,
        end,
    })
}

/// Encodes a snapshot file holding `data` taken at `index`.
pub fn encode_snapshot(index: u64, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_LEN + data.len() + TRAILER_LEN);
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(data);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Checks a declared content length against what the file holds, then the
/// trailing checksum, and returns the content's range.
fn framed_content(
    bytes: &[u8],
    header_len: usize,
    len: u64,
    max: u64,
) -> Result<std::ops::Range<usize>, DecodeError> {
    if len > max {
        return Err(DecodeError::Length {
            offset: 0,
            len,
            max,
        });
    }
    let body = bytes.len() - header_len;
    // `len` fits usize here: it is at most `max`, itself at most usize::MAX.
    let need = (len as usize).saturating_add(TRAILER_LEN);
    if body < need {
        return Err(truncated(0, header_len.saturating_add(need), bytes));
    }
    let end = header_len + len as usize;
    if body > need {
        return Err(DecodeError::Trailing {
            offset: (end + TRAILER_LEN) as u64,
            extra: (body - need) as u64,
        });
    }
    let stored = u32_at(bytes, end).ok_or_else(|| truncated(0, end + TRAILER_LEN, bytes))?;
    let computed = crc32c::crc32c(&bytes[..end]);
    if stored != computed {
        return Err(DecodeError::Checksum {
            offset: end as u64,
            stored,
            computed,
        });
    }
    Ok(header_len..end)
}

/// Decodes a snapshot file: its index and data.
pub fn decode_snapshot(bytes: &[u8]) -> Result<(u64, &[u8]), DecodeError> {
    check_magic_version(bytes, SNAPSHOT_MAGIC, SNAPSHOT_HEADER_LEN)?;
    let index = u64_at(bytes, 8).ok_or_else(|| truncated(0, SNAPSHOT_HEADER_LEN, bytes))?;
    let len = u64_at(bytes, 16).ok_or_else(|| truncated(0, SNAPSHOT_HEADER_LEN, bytes))?;
    let range = framed_content(bytes, SNAPSHOT_HEADER_LEN, len, usize::MAX as u64)?;
    Ok((index, &bytes[range]))
}

/// Encodes the meta file holding `meta` (at most [`META_BYTES_MAX`] bytes).
pub fn encode_meta(meta: &[u8]) -> Vec<u8> {
    debug_assert!(meta.len() <= META_BYTES_MAX);
    let mut out = Vec::with_capacity(META_HEADER_LEN + meta.len() + TRAILER_LEN);
    out.extend_from_slice(&META_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(meta);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes the meta file and returns the blob.
pub fn decode_meta(bytes: &[u8]) -> Result<&[u8], DecodeError> {
    check_magic_version(bytes, META_MAGIC, META_HEADER_LEN)?;
    let len = u32_at(bytes, 8).ok_or_else(|| truncated(0, META_HEADER_LEN, bytes))?;
    let range = framed_content(
        bytes,
        META_HEADER_LEN,
        u64::from(len),
        META_BYTES_MAX as u64,
    )?;
    Ok(&bytes[range])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(first: u64, payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = encode_segment_header(first).to_vec();
        for (i, p) in payloads.iter().enumerate() {
            encode_record(&mut out, first + i as u64, p);
        }
        out
    }

    #[test]
    fn segment_round_trips() {
        let bytes = segment(7, &[b"a", b"", b"ccc"]);
        let d = decode_segment(&bytes).expect("valid");
        assert_eq!(d.first_index, 7);
        assert_eq!(d.end, SegmentEnd::Clean);
        let got: Vec<_> = d.records.iter().map(|r| (r.index, r.data)).collect();
        assert_eq!(got, vec![(7, &b"a"[..]), (8, &b""[..]), (9, &b"ccc"[..])]);
    }

    #[test]
    fn zeroed_tail_is_preallocated_room_not_corrupt() {
        let mut bytes = segment(1, &[b"hello"]);
        let good = bytes.len() as u64;
        bytes.extend_from_slice(&[0u8; 4096]);
        let d = decode_segment(&bytes).expect("header ok");
        assert_eq!(d.records.len(), 1);
        assert_eq!(d.valid_len, good);
        assert_eq!(d.end, SegmentEnd::Preallocated { offset: good });
        // One stray byte in the zeros makes it a torn tail again.
        bytes[good as usize + 100] = 1;
        let d = decode_segment(&bytes).expect("header ok");
        assert!(matches!(d.end, SegmentEnd::Torn { offset, .. } if offset == good));
    }

    #[test]
    fn bad_record_before_a_good_one_is_corrupt() {
        let mut bytes = segment(1, &[b"one", b"two", b"three"]);
        let second = SEGMENT_HEADER_LEN + RECORD_HEADER_LEN + 3;
        bytes[second + RECORD_HEADER_LEN] ^= 0x40;
        let d = decode_segment(&bytes).expect("header ok");
        assert_eq!(d.records.len(), 1);
        match d.end {
            SegmentEnd::Corrupt {
                offset, valid_at, ..
            } => {
                assert_eq!(offset, second as u64);
                assert!(valid_at.is_some());
            }
            other => panic!("expected corrupt, got {other:?}"),
        }
    }

    #[test]
    fn snapshot_and_meta_round_trip() {
        let s = encode_snapshot(42, b"state");
        assert_eq!(decode_snapshot(&s), Ok((42, &b"state"[..])));
        let m = encode_meta(b"hard");
        assert_eq!(decode_meta(&m), Ok(&b"hard"[..]));
        let mut bad = s.clone();
        bad[SNAPSHOT_HEADER_LEN] ^= 1;
        assert!(matches!(
            decode_snapshot(&bad),
            Err(DecodeError::Checksum { .. })
        ));
    }
}
