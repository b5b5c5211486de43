//! One segment of a partition's log: `<base>.log` plus its derived indexes.
//!
//! ## `<base>.log` — source of truth
//! Kafka RecordBatch v2 bytes, back to back, exactly as producers sent them except
//! for the base offset (bytes 0..8) and partition leader epoch (bytes 12..16), which
//! the broker rewrites and which the batch CRC-32C does not cover. The file name is
//! the segment's base offset, zero-padded to 20 digits, as in Kafka.
//!
//! The active segment is pre-sized with `fallocate` in steps that double up to
//! [`PREALLOC_BYTES`](crate::log::writer::PREALLOC_BYTES) (extending `i_size`), because ext4 hands O_DIRECT writes
//! that extend a file to io-wq kernel workers off the shard's core. So the file is longer than its data:
//! the logical end is tracked in memory and, after a crash, found again by scanning
//! batch headers until the first zero, torn or corrupt batch (see `recovery`).
//! A sealed segment is truncated to its logical size and fsynced when it is rolled,
//! on a blocking thread ([`SealJob`]) so that a roll never stalls the shard.
//!
//! ## Writes
//! All writes are O_DIRECT, 4 KiB-aligned in position, address and length, through
//! the segment's [`Writer`] (see `writer` for the partial block and the buffers).
//!
//! ## Indexes — derived
//! `<base>.index` and `<base>.timeindex` are written when the segment is sealed and
//! trusted on start-up only if they decode cleanly; otherwise they are rebuilt by
//! scanning the log. The active segment's indexes live only in memory and are always
//! rebuilt by the recovery scan.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use compio::buf::IntoInner;
use compio::io::{AsyncReadAt, AsyncReadAtExt};

use crate::error::EngineError;
use crate::log::aligned::{BLOCK_BYTES, ReadBuf, round_down, round_up};
use crate::log::batch::{self, BATCH_HEADER_LEN, BatchInfo};
use crate::log::index::IndexBuilder;
use crate::log::writer::{Writer, to_compio};
use crate::types::{FilePos, Offset, RelativeOffset, TimestampMs};

/// Bytes a disk read fetches beyond the caller's `max_bytes`, so that the batch the
/// sparse index points before (at most `index.interval.bytes` = 4 KiB earlier) and a
/// typical batch boundary fit in one read.
const READ_SLACK_BYTES: usize = 16 << 10;

pub fn log_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{:020}.log", base.0))
}

pub fn index_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{:020}.index", base.0))
}

pub fn time_index_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{:020}.timeindex", base.0))
}

/// One segment: its place in the log, its indexes and its read handle.
pub struct Segment {
    pub base: Offset,
    /// Offset after the last batch in this segment.
    pub next_offset: Offset,
    /// Logical bytes of batches in the segment (appended, maybe not yet written).
    pub size: u64,
    /// Bytes whose write has completed.
    pub written: u64,
    pub index: IndexBuilder,
    pub max_timestamp: Option<TimestampMs>,
    /// When the first batch was appended in this process (drives `segment.ms`).
    pub opened_at: Instant,
    /// Buffered (page cache) read handle, for fetches the batch cache cannot
    /// serve; opened on first use, so a partition nobody reads from holds no
    /// descriptor for it.
    reader: std::cell::OnceCell<compio::fs::File>,
    /// O_DIRECT read handle for large reads, opened on first use; `None` inside
    /// when the file system refuses O_DIRECT.
    direct: std::cell::OnceCell<Option<compio::fs::File>>,
    pub dir: PathBuf,
    pub writer: Option<Writer>,
    /// The sealed segment's files are final: log truncated to `size` and
    /// fsynced, indexes written. Retention deletes only sealed segments, so it
    /// never races the seal running off the reactor ([`SealJob`]).
    pub sealed: bool,
}

/// The blocking part of sealing a segment: about five fsyncs (the log, then each
/// index's temporary file and directory), so it runs on a blocking thread
/// (`compio::runtime::spawn_blocking`), never on the shard's reactor.
pub struct SealJob {
    log: PathBuf,
    size: u64,
    index: (PathBuf, Vec<u8>),
    time_index: (PathBuf, Vec<u8>),
}

impl SealJob {
    /// Truncates the log to its logical size, fsyncs it and writes the indexes.
    pub fn run(self) -> Result<(), EngineError> {
        let f = std::fs::OpenOptions::new().write(true).open(&self.log)?;
        f.set_len(self.size)?;
        f.sync_all()?;
        crate::log::index::write_file_atomically(&self.index.0, &self.index.1)?;
        crate::log::index::write_file_atomically(&self.time_index.0, &self.time_index.1)?;
        Ok(())
    }
}

/// Opens the buffered read handle used by fetches that miss the batch cache.
/// Consumers read segments front to back, so ask the kernel for sequential
/// readahead (twice the default window).
fn open_reader(path: &Path) -> Result<std::fs::File, EngineError> {
    let f = std::fs::File::open(path)?;
    // SAFETY: plain syscall on an fd we own; the advice is only a hint.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
    Ok(f)
}

impl Segment {
    /// Creates a new, empty active segment at `base`.
    pub fn create(
        dir: &Path,
        base: Offset,
        index_interval_bytes: u32,
    ) -> Result<Segment, EngineError> {
        let path = log_path(dir, base);
        // The directory entry is made durable by the partition's next sync
        // (`Partition::take_flush_job`), before anything in it is acknowledged:
        // an fsync of the directory here would stall the shard at every roll.
        std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)?;
        Self::open_active(
            dir,
            base,
            FilePos(0),
            IndexBuilder::new(index_interval_bytes),
            base,
            None,
        )
    }

    /// Opens a segment that will take appends, whose valid bytes end at `valid_len`.
    pub fn open_active(
        dir: &Path,
        base: Offset,
        valid_len: FilePos,
        index: IndexBuilder,
        next_offset: Offset,
        max_timestamp: Option<TimestampMs>,
    ) -> Result<Segment, EngineError> {
        let path = log_path(dir, base);
        let allocated = std::fs::metadata(&path)?.len();
        let open_start = round_down(valid_len.0);
        let mut tail = vec![0u8; (valid_len.0 - open_start) as usize];
        if !tail.is_empty() {
            let f = std::fs::File::open(&path)?;
            std::os::unix::fs::FileExt::read_exact_at(&f, &mut tail, open_start)?;
        }
        let writer = Writer::new(&path, valid_len, &tail, allocated);
        Ok(Segment {
            base,
            next_offset,
            size: valid_len.0,
            written: valid_len.0,
            index,
            max_timestamp,
            opened_at: Instant::now(),
            reader: Default::default(),
            direct: Default::default(),
            dir: dir.to_path_buf(),
            writer: Some(writer),
            sealed: false,
        })
    }

    /// Opens a sealed (read-only) segment.
    pub fn open_sealed(
        dir: &Path,
        base: Offset,
        size: u64,
        index: IndexBuilder,
        next_offset: Offset,
        max_timestamp: Option<TimestampMs>,
    ) -> Result<Segment, EngineError> {
        Ok(Segment {
            base,
            next_offset,
            size,
            written: size,
            index,
            max_timestamp,
            opened_at: Instant::now(),
            reader: Default::default(),
            direct: Default::default(),
            dir: dir.to_path_buf(),
            writer: None,
            sealed: true,
        })
    }

    /// Makes sure `extra` more bytes (rounded to whole blocks) fit in allocated space.
    pub fn reserve(&mut self, extra: u64) -> Result<(), EngineError> {
        self.writer
            .as_mut()
            .expect("reserve on a segment without a writer")
            .reserve(extra)
    }

    /// Appends one batch as the client sent it, rewriting its base offset to
    /// `info.base_offset` and its partition leader epoch to 0 in the copy — the
    /// one copy a produced byte gets.
    pub fn append(&mut self, bytes: &[u8], info: &BatchInfo) {
        let w = self
            .writer
            .as_mut()
            .expect("append to a segment without a writer");
        assert_eq!(
            w.end().0,
            self.size,
            "segment {} open buffer out of step with its size",
            self.base
        );
        assert_eq!(
            info.base_offset, self.next_offset,
            "segment {} offsets must be contiguous",
            self.base
        );
        let stored = w.append(bytes);
        batch::set_base_offset(stored, info.base_offset);
        batch::set_partition_leader_epoch(stored, 0);
        self.index.on_batch(FilePos(self.size), info, self.base);
        self.size += bytes.len() as u64;
        self.next_offset = info.next_offset();
        if self.max_timestamp.is_none_or(|m| info.max_timestamp > m) {
            self.max_timestamp = Some(info.max_timestamp);
        }
    }

    /// Ends the segment's write side and returns the blocking rest of sealing
    /// (truncate, fsync, index files), to run off the shard's thread. Called
    /// once the segment's last write has completed; [`Segment::sealed`] is set
    /// when the job has succeeded.
    pub fn begin_seal(&mut self) -> SealJob {
        assert_eq!(
            self.written, self.size,
            "sealing segment {} with unwritten bytes",
            self.base
        );
        assert!(!self.sealed, "sealing segment {} twice", self.base);
        let w = self.writer.take().expect("sealing a segment twice");
        drop(w);
        SealJob {
            log: log_path(&self.dir, self.base),
            size: self.size,
            index: (
                index_path(&self.dir, self.base),
                self.index.offset_index().encode(),
            ),
            time_index: (
                time_index_path(&self.dir, self.base),
                self.index.time_index().encode(),
            ),
        }
    }

    pub fn remove_files(&self) {
        for p in [
            log_path(&self.dir, self.base),
            index_path(&self.dir, self.base),
            time_index_path(&self.dir, self.base),
        ] {
            if let Err(e) = std::fs::remove_file(&p)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %p.display(), error = %e, "could not remove segment file");
            }
        }
    }

    /// The buffered read handle, opened on first use.
    pub fn reader(&self) -> Result<compio::fs::File, EngineError> {
        if let Some(f) = self.reader.get() {
            return Ok(f.clone());
        }
        let f = to_compio(open_reader(&log_path(&self.dir, self.base))?);
        Ok(self.reader.get_or_init(|| f).clone())
    }

    /// The O_DIRECT read handle, opened on first use (`None` if refused).
    pub fn direct_reader(&self) -> Option<compio::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        self.direct
            .get_or_init(|| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(log_path(&self.dir, self.base))
                    .ok()
                    .map(to_compio)
            })
            .clone()
    }

    /// File position from which to scan forward for `offset`.
    pub fn position_for(&self, offset: Offset) -> FilePos {
        let rel = offset.0.saturating_sub(self.base.0).min(u32::MAX as u64) as u32;
        self.index.offset_index().lookup(RelativeOffset(rel))
    }
}

/// What a disk read of one segment needs; cloned out of the partition so the
/// partition is not borrowed across the read.
pub struct DiskRead {
    pub file: compio::fs::File,
    /// The O_DIRECT handle, when the read is large enough to bypass the page
    /// cache (see [`DIRECT_READ_MIN_BYTES`]).
    pub direct: Option<compio::fs::File>,
    /// The partition's read-ahead, used with `direct`.
    pub ahead: std::rc::Rc<ReadAhead>,
    /// Base offset of the segment being read.
    pub seg_base: Offset,
    pub start: FilePos,
    /// Readable bytes end here (completed writes, below the high watermark).
    pub end: FilePos,
    pub from_offset: Offset,
    /// Batches at or after this offset are not visible yet.
    pub visible_end: Offset,
    pub max_bytes: usize,
}

async fn read_at(file: &compio::fs::File, pos: u64, len: usize) -> Result<Vec<u8>, EngineError> {
    let buf = Vec::with_capacity(len);
    let compio::BufResult(res, buf) = file.read_exact_at(buf, pos).await;
    res?;
    Ok(buf)
}

/// Reads of at least this many bytes go around the page cache when they can.
///
/// A catch-up consumer's multi-MiB fetches through the page cache cost the
/// broker a page insertion and a copy per 4 KiB, which on a 2-core machine
/// capped a 10 GB backlog read at the buffered-read ceiling (~40% of the
/// disk's O_DIRECT read bandwidth). Tailing consumers are served by the batch
/// cache, and small reads still use (and share) the page cache.
pub const DIRECT_READ_MIN_BYTES: usize = 256 << 10;

/// `len` bytes at `pos` with O_DIRECT: the covering whole blocks are read into an
/// aligned buffer and the wanted range is sliced out, without a copy. A read
/// that stops short (end of file) yields what was there.
async fn read_direct(file: &compio::fs::File, pos: u64, len: usize) -> Result<Bytes, EngineError> {
    let start = round_down(pos);
    let end = round_up(pos + len as u64);
    let want = (end - start) as usize;
    let mut buf = ReadBuf::with_capacity(want);
    let mut filled = 0usize;
    while filled < want {
        let compio::BufResult(res, slice) = file
            .read_at(
                compio::buf::IoBuf::slice(buf, filled..),
                start + filled as u64,
            )
            .await;
        buf = slice.into_inner();
        let n = res?;
        filled += n;
        if n == 0 || !filled.is_multiple_of(BLOCK_BYTES) {
            break; // end of file
        }
    }
    let skip = (pos - start) as usize;
    let got = filled.saturating_sub(skip).min(len);
    Ok(Bytes::from_owner(buf).slice(skip..skip + got))
}

/// Bytes a shard may hold in read-ahead buffers at once, over all its partitions.
pub const READ_AHEAD_BUDGET_BYTES: usize = 64 << 20;

thread_local! {
    /// Read-ahead bytes held on this shard's thread (see [`READ_AHEAD_BUDGET_BYTES`]).
    static READ_AHEAD_HELD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A partition's read-ahead for a catch-up consumer. O_DIRECT reads get no
/// kernel readahead, so a consumer with one fetch in flight would leave the disk
/// idle while each response is sent and decoded. After a large direct read, the
/// next range is read in the background; the fetch that continues exactly where
/// the last one ended takes it. At most one range per partition, and at most
/// [`READ_AHEAD_BUDGET_BYTES`] per shard.
#[derive(Default)]
pub struct ReadAhead {
    slot: std::cell::RefCell<Option<AheadRange>>,
}

struct AheadRange {
    seg_base: Offset,
    /// File position of the range, and the offset of the first batch there.
    pos: u64,
    offset: Offset,
    rx: futures::channel::oneshot::Receiver<Result<Bytes, EngineError>>,
    _held: Held,
}

/// Bytes counted against the shard's read-ahead budget until dropped.
struct Held(usize);

impl Held {
    fn take(n: usize) -> Option<Held> {
        READ_AHEAD_HELD.with(|h| {
            (h.get() + n <= READ_AHEAD_BUDGET_BYTES).then(|| {
                h.set(h.get() + n);
                Held(n)
            })
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        READ_AHEAD_HELD.with(|h| h.set(h.get() - self.0));
    }
}

impl ReadAhead {
    /// The range read ahead for a fetch of `offset` in segment `seg_base`, if the
    /// fetch continues exactly where the last one ended.
    fn take(&self, seg_base: Offset, offset: Offset) -> Option<AheadRange> {
        let mut slot = self.slot.borrow_mut();
        let hit = slot
            .as_ref()
            .is_some_and(|a| a.seg_base == seg_base && a.offset == offset);
        if hit { slot.take() } else { None }
    }

    /// Starts reading `len` bytes at `pos` (holding the batch at `offset`).
    fn start(
        &self,
        file: compio::fs::File,
        seg_base: Offset,
        pos: u64,
        offset: Offset,
        len: usize,
    ) {
        // Drop a stale range first so its bytes go back to the budget.
        self.slot.borrow_mut().take();
        let Some(held) = Held::take(len) else { return };
        let (tx, rx) = futures::channel::oneshot::channel();
        compio::runtime::spawn(async move {
            let _ = tx.send(read_direct(&file, pos, len).await);
        })
        .detach();
        *self.slot.borrow_mut() = Some(AheadRange {
            seg_base,
            pos,
            offset,
            rx,
            _held: held,
        });
    }
}

/// `len` bytes at `pos` (fewer only at the end of the file for O_DIRECT).
async fn read_range(r: &DiskRead, pos: u64, len: usize) -> Result<Bytes, EngineError> {
    match &r.direct {
        Some(f) if len >= DIRECT_READ_MIN_BYTES => read_direct(f, pos, len).await,
        _ => Ok(Bytes::from(read_at(&r.file, pos, len).await?)),
    }
}

/// Reads whole batches that hold offsets >= `from_offset`, at most `max_bytes` of
/// them (but always the first whole batch, as Kafka does from Fetch v3 on).
pub async fn read_batches(r: DiskRead) -> Result<Bytes, EngineError> {
    let avail = (r.end.0 - r.start.0) as usize;
    let len = avail.min(r.max_bytes.saturating_add(READ_SLACK_BYTES));
    let (buf_pos, buf) = match r.ahead.take(r.seg_base, r.from_offset) {
        Some(a) => match a.rx.await {
            Ok(Ok(bytes)) => (a.pos, bytes),
            // The read-ahead failed or was dropped: read again, and report
            // a real error from there.
            _ => (r.start.0, read_range(&r, r.start.0, len).await?),
        },
        None => (r.start.0, read_range(&r, r.start.0, len).await?),
    };
    let (records, next_pos, next_offset) = batches_from(&r, buf_pos, buf).await?;
    if let (Some(direct), Some(next_offset)) = (&r.direct, next_offset) {
        let left = r.end.0.saturating_sub(next_pos) as usize;
        if left >= DIRECT_READ_MIN_BYTES {
            r.ahead.start(
                direct.clone(),
                r.seg_base,
                next_pos,
                next_offset,
                left.min(len),
            );
        }
    }
    Ok(records)
}

/// The batches of `buf` (read at file position `buf_pos`) that `r` asks for,
/// the file position after them and the offset that follows them (`None` when
/// nothing was returned).
async fn batches_from(
    r: &DiskRead,
    buf_pos: u64,
    buf: Bytes,
) -> Result<(Bytes, u64, Option<Offset>), EngineError> {
    let mut pos = 0usize;
    let mut first: Option<usize> = None;
    let mut end = 0usize;
    let mut next = None;
    while pos + BATCH_HEADER_LEN <= buf.len() {
        let info = batch::parse_header(&buf[pos..]).map_err(EngineError::CorruptBatch)?;
        let blen = info.len as usize;
        if info.base_offset >= r.visible_end {
            break;
        }
        if info.next_offset() <= r.from_offset {
            pos += blen;
            continue;
        }
        match first {
            None => {
                if pos + blen > buf.len() {
                    // The first batch is larger than what we read: fetch exactly it.
                    let at = buf_pos + pos as u64;
                    let whole = read_range(r, at, blen).await?;
                    return Ok((whole, at + blen as u64, Some(info.next_offset())));
                }
                first = Some(pos);
            }
            Some(f) if pos + blen - f > r.max_bytes || pos + blen > buf.len() => break,
            Some(_) => {}
        }
        pos += blen;
        end = pos;
        next = Some(info.next_offset());
    }
    Ok(match first {
        Some(f) => (buf.slice(f..end), buf_pos + end as u64, next),
        None => (Bytes::new(), buf_pos, None),
    })
}

/// The first batch whose max timestamp reaches a ListOffsets target.
#[derive(Clone, Debug)]
pub struct TimestampHit {
    pub base_offset: Offset,
    pub max_timestamp: TimestampMs,
    /// The whole stored batch, so the caller can find the exact record
    /// (records may be compressed; decoding them is the protocol layer's job).
    pub batch: Bytes,
}

/// Reads batch headers from `start` on and returns the first batch whose max
/// timestamp is at least `target`.
pub async fn find_timestamp(
    file: &compio::fs::File,
    start: FilePos,
    end: FilePos,
    target: TimestampMs,
) -> Result<Option<TimestampHit>, EngineError> {
    let mut pos = start.0;
    while pos + BATCH_HEADER_LEN as u64 <= end.0 {
        let chunk = ((end.0 - pos) as usize).min(1 << 20);
        let buf = read_at(file, pos, chunk).await?;
        let mut p = 0usize;
        while p + BATCH_HEADER_LEN <= buf.len() {
            let info = batch::parse_header(&buf[p..]).map_err(EngineError::CorruptBatch)?;
            if info.max_timestamp >= target {
                let len = info.len as usize;
                let batch = if p + len <= buf.len() {
                    Bytes::from(buf).slice(p..p + len)
                } else {
                    Bytes::from(read_at(file, pos + p as u64, len).await?)
                };
                return Ok(Some(TimestampHit {
                    base_offset: info.base_offset,
                    max_timestamp: info.max_timestamp,
                    batch,
                }));
            }
            p += info.len as usize;
        }
        pos += p as u64;
    }
    Ok(None)
}
