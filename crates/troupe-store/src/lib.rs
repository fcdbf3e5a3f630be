//! Durable storage for troupe services: a checksummed write-ahead log with
//! group commit, snapshots that compact it, a small "meta" blob, and recovery
//! that cuts a torn tail but refuses to open over any other damage.
//!
//! The API is synchronous and uses `std::fs`; a service runs it on a thread of
//! its own. [`Store::append`] buffers entries in memory, [`Store::sync`] writes
//! all of them and fsyncs once (group commit), [`Store::save_snapshot`] makes a
//! snapshot durable and deletes what it covers, [`Store::reset`] replaces the
//! whole state by another member's snapshot, and [`Store::open`] gives back
//! everything that was made durable, as a [`Recovered`].
//!
//! ```
//! use troupe_store::{Store, StoreOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let (mut store, recovered) = Store::open(dir.path(), StoreOptions::default())?;
//! assert!(recovered.entries.is_empty());
//! store.append(1, b"put a=1")?;
//! store.append(2, b"put b=2")?;
//! store.sync()?; // one write, one fsync for both
//! store.save_snapshot(1, b"{a:1}")?;
//! drop(store);
//!
//! let (store, recovered) = Store::open(dir.path(), StoreOptions::default())?;
//! assert_eq!(recovered.snapshot.map(|s| s.index), Some(1));
//! assert_eq!(recovered.entries.len(), 1);
//! assert_eq!(recovered.entries[0].data, b"put b=2");
//! assert_eq!(store.last_index(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Durability contract
//!
//! With [`FsyncPolicy::Always`] (the default):
//!
//! - once [`Store::sync`] returns `Ok`, every entry appended before it survives
//!   a process kill (`kill -9`), a kernel crash and a power loss, on a disk that
//!   honours flushes. Entries appended but not synced may or may not survive; if
//!   a partial write survives, recovery cuts it off.
//! - [`Store::save_snapshot`], [`Store::reset`] and [`Store::save_meta`] are
//!   atomic (a crash leaves the old state or the new one, never a mix) and
//!   durable on return.
//!
//! With [`FsyncPolicy::Never`] the same operations only hand the bytes to the
//! operating system (`write()` and `rename()`, no fsync): they survive the
//! process being killed, because the kernel holds them, but not a kernel crash
//! or a power loss, after which recent entries may be missing and recovery may
//! even refuse to open (for example, if the kernel wrote a later block of a
//! segment but not an earlier one). [`Store::synced_index`] then means "written
//! to the OS". Use it for tests, benchmarks, or members that rely on other
//! replicas for durability.
//!
//! An I/O error during `sync` or `reset` poisons the store
//! ([`StoreError::Poisoned`]): after a failed fsync the kernel may have dropped
//! the dirty pages, so retrying could claim durability that does not exist.
//! Reopening recovers exactly what is on disk.
//!
//! # Recovery
//!
//! [`Store::open`] checks everything before it changes anything:
//!
//! 1. A `RESET` file means a [`Store::reset`] was interrupted after its snapshot
//!    was durable: the reset is finished first.
//! 2. The newest snapshot is decoded and its checksum verified. If it is
//!    damaged, recovery falls back to the previous one if one exists (the
//!    damaged file is renamed `*.corrupt` and the fallback is logged); if none
//!    does, it refuses with [`StoreError::Corrupt`]. (Older snapshots only exist
//!    briefly: `save_snapshot` deletes them once the new one is durable.)
//! 3. Every segment is decoded in index order. A *torn tail* — an incomplete or
//!    invalid record at the end of the **last** segment, with no valid record
//!    at any byte offset after it — is what an interrupted write leaves, was
//!    never acknowledged by `sync`, and is cut: the file is truncated at the end
//!    of its last valid record (a last segment whose own header is incomplete is
//!    removed), [`Recovered::tail_cut`] says where and why, and
//!    `tracing::warn!` logs it. A damaged last record therefore looks like a
//!    torn tail and is cut too; it cannot be told apart from one.
//! 4. Anything else refuses to open with [`StoreError::Corrupt`] naming the file
//!    and byte offset: a bad record followed by a valid one, a bad record in a
//!    segment that is not the last, a record or segment with the wrong index, a
//!    gap between segments, a log that does not reach back to the snapshot or
//!    does not reach up to it, a damaged meta file. Nothing is dropped silently.
//!
//! Zero bytes after the last record of the last segment are not a tail to
//! cut: they are room the store reserved for later records (see below), and
//! the next record is written over them. Zero bytes after the records of any
//! other segment refuse to open: a segment is cut to its records before the
//! next one is created.
//!
//! Segments that hold only entries the snapshot covers (left when a crash
//! interrupted the deletions after `save_snapshot`) are deleted without being
//! read. Leftover `*.tmp` files (writes interrupted before their rename) are
//! deleted. Files the store does not own are ignored.
//!
//! Why a bad record in a segment other than the last is never a torn write:
//! when a `sync` crosses a roll-over, it fsyncs the segment it leaves before it
//! creates the next one, so a newer segment exists only once the older one is
//! complete on disk. The same reasoning cannot hold within the last segment: if
//! a power loss in the middle of a `sync` persisted a later block of the batch
//! but not an earlier one, recovery sees a bad record followed by a valid one
//! and refuses to open, although nothing there was acknowledged. Recovery
//! cannot tell that from damage to acknowledged data, and refusing is the safe
//! side.
//!
//! # Files and formats
//!
//! A store directory holds:
//!
//! | file | content |
//! |---|---|
//! | `LOCK` | `flock`ed exclusively while a [`Store`] is open; holds the owner's pid |
//! | `wal-<first index, 20 digits>.log` | a WAL segment |
//! | `snap-<index, 20 digits>.snap` | a snapshot |
//! | `meta` | the blob of the last [`Store::save_meta`] |
//! | `RESET` | a snapshot whose reset is under way (only between crash and open) |
//! | `*.tmp` | a file being written before its atomic rename |
//!
//! All integers are little-endian; checksums are CRC32C.
//!
//! ```text
//! segment    := seg_header, record*
//! seg_header := magic "TSWL", version:u32 = 1, first_index:u64, crc:u32       (20 bytes)
//!                 crc = crc32c(magic, version, first_index)
//! record     := crc:u32, len:u32, index:u64, payload                         (16 + len bytes)
//!                 crc = crc32c(len, index, payload); len <= 64 MiB
//! snapshot   := magic "TSSN", version:u32 = 1, index:u64, len:u64, data, crc:u32
//! meta       := magic "TSMT", version:u32 = 1, len:u32, data, crc:u32
//!                 crc = crc32c(everything before it)
//! ```
//!
//! Records in a segment have contiguous indices starting at the header's
//! `first_index`, which matches the file name; each segment starts where the
//! previous one ended. A segment rolls over when the next record would take it
//! past [`StoreOptions::segment_bytes`].
//!
//! The last segment is followed by zero bytes reserved for later records, up
//! to 4 MiB ahead and never past `segment_bytes`; when the records reach them,
//! `sync` reserves more. A sync that only overwrites reserved bytes need not
//! write the file's inode (its size is unchanged), which makes an
//! `fdatasync` of a few KiB one I/O rather than two. When a segment rolls
//! over, it is cut back to its records. The checksum covers the length and the
//! index as well as the payload, so a record can neither be misframed nor
//! misplaced without detection.
//!
//! The decoders ([`decode_segment`], [`decode_snapshot`], [`decode_meta`]) are
//! pure functions over byte slices that return a [`DecodeError`] on any input
//! they cannot accept, and never panic.

#![warn(missing_docs)]

mod error;
pub mod format;
mod store;

pub use error::StoreError;
pub use format::{
    decode_meta, decode_segment, decode_snapshot, DecodeError, DecodedSegment, RecordRef,
    SegmentEnd,
};
pub use store::{
    segment_file_name, snapshot_file_name, Entry, FsyncPolicy, Recovered, Snapshot, Store,
    StoreOptions, StoreSizes, TailCut, CORRUPT_SUFFIX, LOCK_FILE, META_FILE, RESET_FILE,
    SEGMENT_BYTES_MIN, TMP_SUFFIX,
};
