//! Reading a segment for Fetch and ListOffsets, without holding the partition:
//! buffered reads through the page cache for small ranges, O_DIRECT reads into
//! aligned buffers (sliced by the response without a copy) for catch-up
//! consumers, with one range of read-ahead per partition, and the timestamp
//! search behind ListOffsets.

use bytes::Bytes;
use compio::buf::IntoInner;
use compio::io::{AsyncReadAt, AsyncReadAtExt};

use crate::error::EngineError;
use crate::log::aligned::{BLOCK_BYTES, ReadBuf, round_down, round_up};
use crate::log::batch::{self, BATCH_HEADER_LEN};
use crate::types::{FilePos, Offset, TimestampMs};

/// Bytes a disk read fetches beyond the caller's `max_bytes`, so that the batch the
/// sparse index points before (at most `index.interval.bytes` = 4 KiB earlier) and a
/// typical batch boundary fit in one read.
const READ_SLACK_BYTES: usize = 16 << 10;

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
    /// The next segment's base, if it holds visible offsets: a read that
    /// finds nothing here (a compacted segment's last records are gone) goes
    /// on there.
    pub next_segment: Option<Offset>,
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
