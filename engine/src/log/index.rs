//! Sparse offset index and time index of one segment: derived files.
//!
//! # `<base>.index`: offset index
//!
//! Maps a relative offset to the byte position of a batch in `<base>.log`.
//! Each entry is 8 bytes, big-endian:
//!
//! ```text
//!  @0  relative offset  u32   batch base offset - segment base offset
//!  @4  position         u32   byte position of that batch in the .log file
//! ```
//!
//! Entries are strictly increasing in both fields. [`OffsetIndex::lookup`]
//! returns the position of the greatest entry whose relative offset is <= the
//! target; the reader scans forward from there to the batch holding the
//! target. Brook indexes a batch by its *base* offset (Kafka, for historical
//! reasons, uses the last offset), so a lookup that lands on an entry lands
//! on the right batch. A relative offset and a position of 32 bits each limit a
//! segment to 2^32 offsets and 4 GiB; the segment writer rolls before either.
//!
//! # `<base>.timeindex`: time index
//!
//! Each entry is 12 bytes, big-endian:
//!
//! ```text
//!  @0  timestamp        i64   largest batch maxTimestamp seen so far in the segment
//!  @8  relative offset  u32   base offset of the first batch that reached it
//! ```
//!
//! Timestamps and offsets are strictly increasing. An entry `(t, r)` promises
//! that every batch up to and including the one at `r` has maxTimestamp <= t.
//! See [`TimeIndex::lookup`] for how that answers "first offset at or after
//! time T" (ListOffsets).
//!
//! # Density: one entry every `index.interval.bytes`
//!
//! [`IndexBuilder`] adds an offset entry for the first batch and then for the
//! first batch that starts at least [`DEFAULT_INDEX_INTERVAL_BYTES`] = 4096
//! bytes after the last indexed one, as Kafka's `index.interval.bytes`; the
//! time index gets at most one entry per such index point, plus a last entry
//! that always holds the segment's maximum timestamp. A full 1 GiB segment
//! then has at most 2^30 / 2^12 = 262,144 entries: 2 MiB of offset index and
//! 3 MiB of time index, small enough to keep every segment's index in memory, while a
//! lookup leaves less than 4 KiB of log to scan before the wanted batch (plus
//! that batch itself). Indexing every batch instead would cost 8 + 12 bytes
//! per batch: 20 MiB per GiB of 1 KiB batches, for no fewer disk reads.
//!
//! # Source of truth and crashes
//!
//! Both files are derived state. The `.log` is the source of truth; the index
//! files are written whole when a segment is sealed (or at clean shutdown) with
//! [`write_file_atomically`] (temporary file, fsync, rename, fsync of the directory)
//! so a crash leaves either the old file or the new one, never a mix. No
//! checksum is kept: [`read_offset_index`] and [`read_time_index`] only check
//! the size and monotonicity, and return `None` if the file is missing or
//! malformed. After an unclean shutdown the active segment's indexes are
//! rebuilt by feeding `recovery::scan_segment`'s batches to an [`IndexBuilder`],
//! the same code the live writer uses, so both paths derive identical files.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::log::batch::BatchInfo;
use crate::types::{FilePos, Offset, RelativeOffset, TimestampMs};

/// Bytes per offset index entry.
pub const OFFSET_INDEX_ENTRY_LEN: usize = 8;
/// Bytes per time index entry.
pub const TIME_INDEX_ENTRY_LEN: usize = 12;
/// Kafka's `index.interval.bytes` default; see the module doc for the arithmetic.
pub const DEFAULT_INDEX_INTERVAL_BYTES: u32 = 4096;

const _: () = assert!(OFFSET_INDEX_ENTRY_LEN == 4 + 4);
const _: () = assert!(TIME_INDEX_ENTRY_LEN == 8 + 4);

/// Why an index file's bytes were rejected.
#[non_exhaustive]
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum IndexError {
    #[error("index of {len} bytes is not a multiple of the {entry_len}-byte entry")]
    BadLength { len: usize, entry_len: usize },
    #[error("index entry {entry} does not increase over the one before it")]
    NotMonotonic { entry: usize },
}

/// `offset - segment_base` if it fits a relative offset, else `None` (the
/// segment must roll before `offset` is appended).
pub fn relative_offset(segment_base: Offset, offset: Offset) -> Option<RelativeOffset> {
    let delta = offset.0.checked_sub(segment_base.0)?;
    u32::try_from(delta).ok().map(RelativeOffset)
}

fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes.try_into().expect("4-byte slice"))
}

fn be_i64(bytes: &[u8]) -> i64 {
    i64::from_be_bytes(bytes.try_into().expect("8-byte slice"))
}

fn check_entry_len(bytes: &[u8], entry_len: usize) -> Result<(), IndexError> {
    if !bytes.len().is_multiple_of(entry_len) {
        return Err(IndexError::BadLength {
            len: bytes.len(),
            entry_len,
        });
    }
    Ok(())
}

/// One offset index entry, in memory.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct OffsetIndexEntry {
    pub rel: RelativeOffset,
    /// Always < 2^32: it is stored as a u32.
    pub pos: FilePos,
}

impl OffsetIndexEntry {
    fn follows(&self, prev: &OffsetIndexEntry) -> bool {
        self.rel > prev.rel && self.pos > prev.pos
    }
}

/// The sparse offset index of one segment; see the module doc.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<OffsetIndexEntry>,
}

impl OffsetIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an entry; both fields must exceed the last entry's.
    pub fn append(&mut self, rel: RelativeOffset, pos: FilePos) {
        assert!(
            pos.0 <= u64::from(u32::MAX),
            "offset index: position {pos:?} exceeds 4 GiB"
        );
        let entry = OffsetIndexEntry { rel, pos };
        if let Some(last) = self.entries.last() {
            assert!(
                entry.follows(last),
                "offset index: {entry:?} appended after {last:?}"
            );
        }
        self.entries.push(entry);
    }

    /// Position of the greatest entry with `rel <= target`, or the start of
    /// the segment if there is none. Scan forward from here.
    pub fn lookup(&self, target: RelativeOffset) -> FilePos {
        let after = self.entries.partition_point(|e| e.rel <= target);
        after
            .checked_sub(1)
            .map_or(FilePos(0), |i| self.entries[i].pos)
    }

    /// Drops the entries at or beyond `pos` (the log was truncated to `pos` bytes).
    pub fn truncate_after_pos(&mut self, pos: FilePos) {
        let keep = self.entries.partition_point(|e| e.pos < pos);
        self.entries.truncate(keep);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The last entry as (relative offset, position).
    pub fn last(&self) -> Option<(RelativeOffset, FilePos)> {
        self.entries.last().map(|e| (e.rel, e.pos))
    }

    pub fn entries(&self) -> &[OffsetIndexEntry] {
        &self.entries
    }

    /// The `.index` file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_INDEX_ENTRY_LEN);
        for e in &self.entries {
            let pos = u32::try_from(e.pos.0).expect("append keeps positions < 2^32");
            out.extend_from_slice(&e.rel.0.to_be_bytes());
            out.extend_from_slice(&pos.to_be_bytes());
        }
        out
    }

    /// Parses a `.index` file's bytes, rejecting bad sizes and disorder.
    pub fn decode(bytes: &[u8]) -> Result<Self, IndexError> {
        check_entry_len(bytes, OFFSET_INDEX_ENTRY_LEN)?;
        let mut entries: Vec<OffsetIndexEntry> = Vec::with_capacity(bytes.len() / 8);
        for (i, chunk) in bytes.chunks_exact(OFFSET_INDEX_ENTRY_LEN).enumerate() {
            let entry = OffsetIndexEntry {
                rel: RelativeOffset(be_u32(&chunk[..4])),
                pos: FilePos(u64::from(be_u32(&chunk[4..]))),
            };
            if entries.last().is_some_and(|last| !entry.follows(last)) {
                return Err(IndexError::NotMonotonic { entry: i });
            }
            entries.push(entry);
        }
        Ok(OffsetIndex { entries })
    }
}

/// One time index entry, in memory.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TimeIndexEntry {
    pub timestamp: TimestampMs,
    pub rel: RelativeOffset,
}

impl TimeIndexEntry {
    fn follows(&self, prev: &TimeIndexEntry) -> bool {
        self.timestamp > prev.timestamp && self.rel > prev.rel
    }
}

/// The sparse time index of one segment; see the module doc.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<TimeIndexEntry>,
}

impl TimeIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `(timestamp, rel)` if `timestamp` exceeds the last entry's,
    /// and says whether it did. `rel` must then exceed the last entry's too.
    pub fn maybe_append(&mut self, timestamp: TimestampMs, rel: RelativeOffset) -> bool {
        let entry = TimeIndexEntry { timestamp, rel };
        match self.entries.last() {
            Some(last) if timestamp <= last.timestamp => false,
            Some(last) => {
                assert!(
                    entry.follows(last),
                    "time index: {entry:?} appended after {last:?}"
                );
                self.entries.push(entry);
                true
            }
            None => {
                self.entries.push(entry);
                true
            }
        }
    }

    /// Where to start a forward scan for the first batch whose maxTimestamp
    /// is at least `target`: the relative offset of the greatest entry with timestamp
    /// strictly below `target`. Every batch up to and including that one has
    /// maxTimestamp < `target`, so nothing before it can match; the match, if
    /// the segment has one, is at or after it. `None` means no entry is below
    /// `target`: scan from the first batch of the segment.
    ///
    /// Whether the segment holds a match at all is answered by comparing
    /// `target` with the segment's maximum timestamp, [`TimeIndex::max_timestamp`].
    pub fn lookup(&self, target: TimestampMs) -> Option<RelativeOffset> {
        let below = self.entries.partition_point(|e| e.timestamp < target);
        below.checked_sub(1).map(|i| self.entries[i].rel)
    }

    /// Timestamp of the last entry: for an index built by [`IndexBuilder`],
    /// the largest maxTimestamp of any batch in the segment.
    pub fn max_timestamp(&self) -> Option<TimestampMs> {
        self.entries.last().map(|e| e.timestamp)
    }

    /// Drops the entries pointing at `rel` or later (the log was truncated there).
    pub fn truncate_from(&mut self, rel: RelativeOffset) {
        let keep = self.entries.partition_point(|e| e.rel < rel);
        self.entries.truncate(keep);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The last entry as (timestamp, relative offset).
    pub fn last(&self) -> Option<(TimestampMs, RelativeOffset)> {
        self.entries.last().map(|e| (e.timestamp, e.rel))
    }

    /// Replaces the last entry by a later maximum (see [`IndexBuilder`]).
    fn replace_last(&mut self, entry: TimeIndexEntry) {
        let len = self.entries.len();
        assert!(len > 0, "time index: no entry to replace by {entry:?}");
        if let Some(prev) = len.checked_sub(2).map(|i| self.entries[i]) {
            assert!(
                entry.follows(&prev),
                "time index: {entry:?} replaces the entry after {prev:?}"
            );
        }
        let last = &mut self.entries[len - 1];
        assert!(
            entry.follows(last),
            "time index: {entry:?} replaces a later {last:?}"
        );
        *last = entry;
    }

    pub fn entries(&self) -> &[TimeIndexEntry] {
        &self.entries
    }

    /// The `.timeindex` file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * TIME_INDEX_ENTRY_LEN);
        for e in &self.entries {
            out.extend_from_slice(&e.timestamp.0.to_be_bytes());
            out.extend_from_slice(&e.rel.0.to_be_bytes());
        }
        out
    }

    /// Parses a `.timeindex` file's bytes, rejecting bad sizes and disorder.
    pub fn decode(bytes: &[u8]) -> Result<Self, IndexError> {
        check_entry_len(bytes, TIME_INDEX_ENTRY_LEN)?;
        let mut entries: Vec<TimeIndexEntry> = Vec::with_capacity(bytes.len() / 12);
        for (i, chunk) in bytes.chunks_exact(TIME_INDEX_ENTRY_LEN).enumerate() {
            let entry = TimeIndexEntry {
                timestamp: TimestampMs(be_i64(&chunk[..8])),
                rel: RelativeOffset(be_u32(&chunk[8..])),
            };
            if entries.last().is_some_and(|last| !entry.follows(last)) {
                return Err(IndexError::NotMonotonic { entry: i });
            }
            entries.push(entry);
        }
        Ok(TimeIndex { entries })
    }
}

/// Derives both indexes from the stream of batches appended to a segment.
/// The live writer and recovery both feed it, so they build identical indexes.
///
/// At every index point (see the module doc) the offset index gains an entry
/// and the time index is brought up to the maximum timestamp so far. Between
/// index points, a batch that raises the maximum updates one *tail* entry of
/// the time index in place instead of adding entries, so the time index always
/// ends with the segment's maximum (what Kafka adds only when it rolls a
/// segment) and still holds at most one entry per index point plus one.
#[derive(Clone, Debug)]
pub struct IndexBuilder {
    interval_bytes: u32,
    offsets: OffsetIndex,
    times: TimeIndex,
    /// Bytes appended since the last offset index entry was added.
    bytes_since_last_entry: u64,
    /// Largest maxTimestamp so far and the first batch that reached it.
    max_so_far: Option<TimeIndexEntry>,
    /// Whether the time index's last entry was taken at an index point (and
    /// stays) or may still be replaced by a larger maximum.
    time_tail_fixed: bool,
    /// Where the next batch must start; `None` for a builder restored with
    /// [`IndexBuilder::from_parts`], which does not know the log's length.
    next_pos: Option<FilePos>,
}

/// An [`IndexBuilder`]'s position between batches (see [`IndexBuilder::resume_state`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumeState {
    pub bytes_since_last_entry: u64,
    pub max_so_far: Option<TimeIndexEntry>,
    pub time_tail_fixed: bool,
    pub next_pos: Option<FilePos>,
}

impl Default for IndexBuilder {
    fn default() -> Self {
        Self::new(DEFAULT_INDEX_INTERVAL_BYTES)
    }
}

impl IndexBuilder {
    /// A builder for an empty segment, indexing every `interval_bytes`.
    pub fn new(interval_bytes: u32) -> Self {
        assert!(
            interval_bytes > 0,
            "index interval must be at least one byte"
        );
        IndexBuilder {
            interval_bytes,
            offsets: OffsetIndex::new(),
            times: TimeIndex::new(),
            bytes_since_last_entry: 0,
            max_so_far: None,
            time_tail_fixed: true,
            next_pos: Some(FilePos(0)),
        }
    }

    /// Wraps indexes read back from a sealed segment's files. Appending to it
    /// is possible but starts a fresh interval and skips the contiguity check.
    pub fn from_parts(interval_bytes: u32, offsets: OffsetIndex, times: TimeIndex) -> Self {
        let max_so_far = times.entries().last().copied();
        IndexBuilder {
            offsets,
            times,
            max_so_far,
            next_pos: None,
            ..Self::new(interval_bytes)
        }
    }

    /// Bytes of log between offset index entries.
    pub fn interval_bytes(&self) -> u32 {
        self.interval_bytes
    }

    /// Where this builder stands, beyond its two indexes: what a recovery
    /// checkpoint stores to resume it with [`IndexBuilder::resume`].
    pub fn resume_state(&self) -> ResumeState {
        ResumeState {
            bytes_since_last_entry: self.bytes_since_last_entry,
            max_so_far: self.max_so_far,
            time_tail_fixed: self.time_tail_fixed,
            next_pos: self.next_pos,
        }
    }

    /// A builder exactly as the one `state` was taken from, indexes included.
    pub fn resume(
        interval_bytes: u32,
        offsets: OffsetIndex,
        times: TimeIndex,
        state: ResumeState,
    ) -> Self {
        IndexBuilder {
            offsets,
            times,
            bytes_since_last_entry: state.bytes_since_last_entry,
            max_so_far: state.max_so_far,
            time_tail_fixed: state.time_tail_fixed,
            next_pos: state.next_pos,
            ..Self::new(interval_bytes)
        }
    }

    /// Accounts for the batch `info` appended at `pos` of the segment whose
    /// base offset is `segment_base`. Batches must come in log order.
    pub fn on_batch(&mut self, pos: FilePos, info: &BatchInfo, segment_base: Offset) {
        if let Some(expected) = self.next_pos {
            assert_eq!(
                pos, expected,
                "index builder: batch {info:?} is not contiguous"
            );
        }
        let rel = relative_offset(segment_base, info.base_offset).unwrap_or_else(|| {
            panic!(
                "index builder: offset {} outside segment {segment_base}",
                info.base_offset
            )
        });
        if self.raise_max(info.max_timestamp, rel) {
            self.update_time_tail();
        }
        if self.offsets.is_empty() || self.bytes_since_last_entry >= u64::from(self.interval_bytes)
        {
            self.offsets.append(rel, pos);
            self.time_tail_fixed = true;
            self.bytes_since_last_entry = 0;
        }
        self.bytes_since_last_entry += u64::from(info.len);
        self.next_pos = Some(FilePos(pos.0 + u64::from(info.len)));
    }

    /// Records a new maximum; says whether `timestamp` was one.
    fn raise_max(&mut self, timestamp: TimestampMs, rel: RelativeOffset) -> bool {
        let raised = self.max_so_far.is_none_or(|m| timestamp > m.timestamp);
        if raised {
            self.max_so_far = Some(TimeIndexEntry { timestamp, rel });
        }
        raised
    }

    fn update_time_tail(&mut self) {
        let max = self.max_so_far.expect("called after raise_max");
        if self.time_tail_fixed {
            let appended = self.times.maybe_append(max.timestamp, max.rel);
            assert!(
                appended,
                "time index: new maximum {max:?} not above its last entry"
            );
            self.time_tail_fixed = false;
        } else {
            self.times.replace_last(max);
        }
    }

    pub fn offset_index(&self) -> &OffsetIndex {
        &self.offsets
    }

    pub fn time_index(&self) -> &TimeIndex {
        &self.times
    }

    /// The largest maxTimestamp of any batch seen (equal to the time index's).
    pub fn max_timestamp(&self) -> Option<TimestampMs> {
        self.max_so_far.map(|m| m.timestamp)
    }

    /// Where the next batch will start, if known: the segment's logical length.
    pub fn next_pos(&self) -> Option<FilePos> {
        self.next_pos
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .expect("index path names a file")
        .to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// Writes `bytes` to `path` durably and atomically: a temporary file, fsync,
/// rename, fsync of the directory. Readers see the old or the new file, whole.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    sync_parent_dir(path)
}

fn read_index<T>(path: &Path, decode: fn(&[u8]) -> Result<T, IndexError>) -> Option<T> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "unreadable index, will rebuild");
            return None;
        }
    };
    decode(&bytes)
        .inspect_err(
            |e| tracing::warn!(path = %path.display(), error = %e, "corrupt index, will rebuild"),
        )
        .ok()
}

/// The offset index stored at `path`; `None` if missing or malformed (rebuild it).
pub fn read_offset_index(path: &Path) -> Option<OffsetIndex> {
    read_index(path, OffsetIndex::decode)
}

/// The time index stored at `path`; `None` if missing or malformed (rebuild it).
pub fn read_time_index(path: &Path) -> Option<TimeIndex> {
    read_index(path, TimeIndex::decode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn info(base: u64, len: u32, max_ts: i64) -> BatchInfo {
        BatchInfo {
            base_offset: Offset(base),
            len,
            last_offset_delta: 0,
            record_count: 1,
            first_timestamp: TimestampMs(max_ts),
            max_timestamp: TimestampMs(max_ts),
            producer: None,
            is_transactional: false,
            is_control: false,
            compression: 0,
            leader_epoch: 0,
        }
    }

    /// A batch in a test segment: where it starts and what it holds.
    #[derive(Clone, Debug)]
    struct Placed {
        pos: u64,
        info: BatchInfo,
    }

    /// Lays out batches (offset count, byte length, max timestamp) from `base`.
    fn place(base: u64, specs: &[(u32, u32, i64)]) -> Vec<Placed> {
        let (mut pos, mut offset) = (0, base);
        let mut out = Vec::new();
        for &(count, len, ts) in specs {
            let mut i = info(offset, len, ts);
            i.last_offset_delta = count - 1;
            out.push(Placed { pos, info: i });
            pos += u64::from(len);
            offset += u64::from(count);
        }
        out
    }

    fn build(base: u64, batches: &[Placed], interval: u32) -> IndexBuilder {
        let mut b = IndexBuilder::new(interval);
        for p in batches {
            b.on_batch(FilePos(p.pos), &p.info, Offset(base));
        }
        b
    }

    #[test]
    fn offset_lookup_before_between_and_after_entries() {
        let mut idx = OffsetIndex::new();
        assert_eq!(idx.lookup(RelativeOffset(5)), FilePos(0));
        idx.append(RelativeOffset(10), FilePos(100));
        idx.append(RelativeOffset(20), FilePos(200));
        assert_eq!(idx.lookup(RelativeOffset(9)), FilePos(0));
        assert_eq!(idx.lookup(RelativeOffset(10)), FilePos(100));
        assert_eq!(idx.lookup(RelativeOffset(19)), FilePos(100));
        assert_eq!(idx.lookup(RelativeOffset(u32::MAX)), FilePos(200));
        idx.truncate_after_pos(FilePos(200));
        assert_eq!(idx.last(), Some((RelativeOffset(10), FilePos(100))));
    }

    #[test]
    #[should_panic(expected = "offset index")]
    fn offset_index_rejects_disorder() {
        let mut idx = OffsetIndex::new();
        idx.append(RelativeOffset(10), FilePos(100));
        idx.append(RelativeOffset(11), FilePos(100));
    }

    #[test]
    fn decode_rejects_bad_sizes_and_disorder() {
        assert!(matches!(
            OffsetIndex::decode(&[0; 9]),
            Err(IndexError::BadLength { .. })
        ));
        assert!(matches!(
            TimeIndex::decode(&[0; 8]),
            Err(IndexError::BadLength { .. })
        ));
        let mut bytes = [0u8; 16];
        bytes[3] = 2; // entry 0: rel 2, pos 0; entry 1: rel 0, pos 0
        assert_eq!(
            OffsetIndex::decode(&bytes),
            Err(IndexError::NotMonotonic { entry: 1 })
        );
        assert_eq!(
            TimeIndex::decode(&[0; 24]),
            Err(IndexError::NotMonotonic { entry: 1 })
        );
    }

    #[test]
    fn time_index_appends_only_growing_timestamps() {
        let mut t = TimeIndex::new();
        assert!(t.maybe_append(TimestampMs(10), RelativeOffset(0)));
        assert!(!t.maybe_append(TimestampMs(10), RelativeOffset(5)));
        assert!(t.maybe_append(TimestampMs(20), RelativeOffset(7)));
        assert_eq!(t.lookup(TimestampMs(10)), None);
        assert_eq!(t.lookup(TimestampMs(11)), Some(RelativeOffset(0)));
        assert_eq!(t.lookup(TimestampMs(21)), Some(RelativeOffset(7)));
        assert_eq!(t.max_timestamp(), Some(TimestampMs(20)));
        t.truncate_from(RelativeOffset(7));
        assert_eq!(t.max_timestamp(), Some(TimestampMs(10)));
    }

    #[test]
    fn builder_indexes_first_batch_then_every_interval() {
        let specs = [
            (1, 1000, 1),
            (1, 3000, 2),
            (1, 100, 3),
            (1, 100, 4),
            (1, 100, 5),
        ];
        let b = build(100, &place(100, &specs), 4096);
        let rels: Vec<_> = b.offset_index().entries().iter().map(|e| e.rel.0).collect();
        assert_eq!(rels, vec![0, 3]); // the batch at 4100 is the first >= 4096 bytes on
        assert_eq!(b.max_timestamp(), Some(TimestampMs(5)));
        assert_eq!(b.next_pos(), Some(FilePos(4300)));
        // One entry per index point, then the tail entry holding the maximum.
        let times: Vec<_> = b
            .time_index()
            .entries()
            .iter()
            .map(|e| (e.timestamp.0, e.rel.0))
            .collect();
        assert_eq!(times, vec![(1, 0), (4, 3), (5, 4)]);
    }

    #[test]
    fn index_files_round_trip_and_corrupt_files_read_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let batches = place(0, &[(3, 5000, 10), (2, 5000, 5), (1, 5000, 30)]);
        let b = build(0, &batches, 4096);
        let (offsets, times) = (b.offset_index().clone(), b.time_index().clone());
        let (op, tp) = (dir.path().join("0.index"), dir.path().join("0.timeindex"));
        assert_eq!(read_offset_index(&op), None);
        write_file_atomically(&op, &offsets.encode()).unwrap();
        write_file_atomically(&tp, &times.encode()).unwrap();
        assert_eq!(read_offset_index(&op), Some(offsets));
        assert_eq!(read_time_index(&tp), Some(times));
        write_file_atomically(&tp, &[1, 2, 3]).unwrap();
        assert_eq!(read_time_index(&tp), None);
        assert!(!tmp_path(&op).exists());
    }

    fn specs() -> impl Strategy<Value = Vec<(u32, u32, i64)>> {
        proptest::collection::vec((1..20u32, 61..3000u32, 0..1000i64), 1..200)
    }

    /// The batch holding `target`, by linear search.
    fn holding(batches: &[Placed], base: u64, target: u32) -> Option<&Placed> {
        let o = Offset(base + u64::from(target));
        batches
            .iter()
            .find(|p| p.info.base_offset <= o && o <= p.info.last_offset())
    }

    proptest! {
        #[test]
        fn offset_lookup_matches_linear_model(
            specs in specs(),
            interval in 1..10_000u32,
            target in 0..5000u32,
        ) {
            let base = 1_000;
            let batches = place(base, &specs);
            let b = build(base, &batches, interval);
            let idx = b.offset_index();
            let naive = idx.entries().iter().rev().find(|e| e.rel.0 <= target).map_or(FilePos(0), |e| e.pos);
            let got = idx.lookup(RelativeOffset(target));
            prop_assert_eq!(got, naive);
            if let Some(p) = holding(&batches, base, target) {
                prop_assert!(got.0 <= p.pos, "lookup overshoots the batch");
                prop_assert!(p.pos - got.0 < u64::from(interval), "scan longer than the interval");
            }
            let decoded = OffsetIndex::decode(&idx.encode());
            prop_assert_eq!(decoded.as_ref(), Ok(idx));
        }

        #[test]
        fn time_lookup_never_skips_the_first_match(
            specs in specs(),
            interval in 1..10_000u32,
            target in -10..1010i64,
        ) {
            let base = 0;
            let batches = place(base, &specs);
            let b = build(base, &batches, interval);
            let times = b.time_index();
            prop_assert!(times.len() <= b.offset_index().len() + 1, "time index denser than the offset index");
            let naive = times.entries().iter().rev().find(|e| e.timestamp.0 < target).map(|e| e.rel);
            let start = times.lookup(TimestampMs(target));
            prop_assert_eq!(start, naive);
            let first_match = batches.iter().find(|p| p.info.max_timestamp.0 >= target);
            let seg_max = batches.iter().map(|p| p.info.max_timestamp).max();
            prop_assert_eq!(times.max_timestamp(), seg_max);
            if let (Some(m), Some(s)) = (first_match, start) {
                prop_assert!(u64::from(s.0) <= m.info.base_offset.0, "lookup skips the match");
            }
            let decoded = TimeIndex::decode(&times.encode());
            prop_assert_eq!(decoded.as_ref(), Ok(times));
            let restored = IndexBuilder::from_parts(interval, b.offset_index().clone(), times.clone());
            prop_assert_eq!(restored.max_timestamp(), seg_max);
        }
    }
}
