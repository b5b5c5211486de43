//! The O_DIRECT write side of a segment that still takes appends.
//!
//! **Lives on:** the partition's shard, inside its active (or just-rolled) segment.
//!
//! O_DIRECT wants the buffer address, the file position and the length of every
//! write to be whole 4 KiB blocks. The [`Writer`] keeps the *open* bytes in
//! memory: the partial block already on disk (re-written with the next flush)
//! followed by every batch appended since the last flush was taken. A flush
//! takes them as one [`PendingWrite`] that starts at a block boundary and is
//! padded with zeros to one; the partial last block stays open. So a flush of N
//! bytes writes at most N + 8 KiB, and every invariant O_DIRECT needs is
//! asserted here, in [`Writer::take_write`], and nowhere else.
//!
//! ## Memory
//! A partition that is not being written holds no write buffer: after a flush is
//! taken, the open bytes shrink to the partial block (at most 4 KiB, none when
//! the log ends on a block boundary). The first append after that borrows a
//! buffer (1 MiB or a larger power of two) from the shard's pool, and the flush
//! hands it back
//! when its write completes ([`give_back`]). The pool keeps at most its limit of
//! idle buffers ([`set_pool_limit`], Brook's `brook.write.buffer.pool.bytes`) and
//! frees the rest, so memory follows the number of partitions being written at
//! once, not the number that exist.
//!
//! ## File descriptors
//! The O_DIRECT handle is opened by the first [`Writer::reserve`], so an idle
//! partition holds no descriptor for writing.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::EngineError;
use crate::log::aligned::{AlignedBuf, BLOCK_BYTES, PaddedBuf, round_down, round_up};
use crate::types::FilePos;

/// Largest pre-allocation step for active segment files. 64 MiB keeps fallocate
/// calls to one per 64 MiB appended (under 20 per second at 1 GB/s).
pub const PREALLOC_BYTES: u64 = 64 << 20;
/// First pre-allocation step. Steps double with the file (1, 1, 2, 4, … 64 MiB),
/// so a partition that holds little data reserves little disk: a thousand idle
/// partitions hold 1 GiB, not 64.
pub const PREALLOC_MIN_BYTES: u64 = 1 << 20;

/// Smallest write buffer a shard's pool lends; larger ones are powers of two,
/// sized by what a partition appends between two flushes (a 1 MiB producer
/// batch plus the open block needs 2 MiB), and are pooled like the rest.
pub const WRITE_BUF_BYTES: usize = 1 << 20;

/// Default for the idle buffers a shard's pool keeps (`brook.write.buffer.pool.bytes`).
pub use crate::config::DEFAULT_WRITE_POOL_BYTES as DEFAULT_POOL_BYTES;

struct Pool {
    /// Idle buffers, each a power of two of at least [`WRITE_BUF_BYTES`].
    free: Vec<AlignedBuf>,
    /// Their total capacity.
    bytes: usize,
    limit_bytes: usize,
}

thread_local! {
    /// This shard's idle write buffers.
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool { free: Vec::new(), bytes: 0, limit_bytes: DEFAULT_POOL_BYTES })
    };
}

/// Sets how many bytes of idle write buffers this thread's pool keeps.
pub fn set_pool_limit(bytes: usize) {
    POOL.with_borrow_mut(|p| {
        p.limit_bytes = bytes;
        while p.bytes > bytes {
            let b = p.free.pop().expect("bytes counts the free buffers");
            p.bytes -= b.capacity();
        }
    });
}

/// Idle bytes held by this thread's pool.
pub fn pooled_bytes() -> usize {
    POOL.with_borrow(|p| p.bytes)
}

/// An empty buffer of at least `min` bytes: the largest pooled one when one is
/// large enough, else a new one of the next power of two (at least [`WRITE_BUF_BYTES`]).
fn borrow(min: usize) -> AlignedBuf {
    let pooled = POOL.with_borrow_mut(|p| {
        // The largest: a partition that appended much since its last flush
        // will likely do so again, and a buffer too small means a copy.
        let (i, _) = (p.free.iter().enumerate())
            .filter(|(_, b)| b.capacity() >= min)
            .max_by_key(|(_, b)| b.capacity())?;
        let b = p.free.swap_remove(i);
        p.bytes -= b.capacity();
        Some(b)
    });
    pooled
        .unwrap_or_else(|| AlignedBuf::with_capacity(min.max(WRITE_BUF_BYTES).next_power_of_two()))
}

/// Returns a buffer that a flush has written: pooled when it is one of the
/// pool's sizes and the pool has room, freed otherwise.
pub fn give_back(mut buf: AlignedBuf) {
    let cap = buf.capacity();
    if cap < WRITE_BUF_BYTES || !cap.is_power_of_two() {
        return;
    }
    buf.clear();
    POOL.with_borrow_mut(|p| {
        if p.bytes + cap <= p.limit_bytes {
            p.bytes += cap;
            p.free.push(buf);
        }
    });
}

/// One O_DIRECT write a flush must issue.
pub struct PendingWrite {
    pub file: compio::fs::File,
    pub buf: PaddedBuf,
    /// Block-aligned file position of `buf[0]`.
    pub pos: FilePos,
    /// Logical end of the segment's data once this write completes.
    pub end: FilePos,
}

pub struct Writer {
    path: PathBuf,
    /// The O_DIRECT handle, opened by the first [`Writer::reserve`].
    file: Option<compio::fs::File>,
    /// Bytes from file position `open_start`: the partial block already on
    /// disk, then batches appended since the last flush was taken.
    open: AlignedBuf,
    /// Block-aligned file position of `open[0]`.
    open_start: FilePos,
    /// Position up to which bytes have been handed to a flush.
    taken_to: FilePos,
    /// Bytes reserved with fallocate (the file's i_size).
    allocated: u64,
}

impl Writer {
    /// The writer of the segment file at `path`, whose data ends at `valid_len`;
    /// `tail` is the data of the partial last block (`valid_len` rounded down to
    /// a block, up to `valid_len`), and `allocated` the file's length.
    pub fn new(path: &Path, valid_len: FilePos, tail: &[u8], allocated: u64) -> Writer {
        let open_start = FilePos(round_down(valid_len.0));
        assert_eq!(
            open_start.0 + tail.len() as u64,
            valid_len.0,
            "tail of {} must run from the last block boundary to the data's end",
            path.display()
        );
        let mut open = AlignedBuf::empty();
        open.extend_from_slice(tail);
        Writer {
            path: path.to_path_buf(),
            file: None,
            open,
            open_start,
            taken_to: valid_len,
            allocated,
        }
    }

    /// Where the next appended byte goes: the segment's logical length.
    pub fn end(&self) -> FilePos {
        FilePos(self.open_start.0 + self.open.len() as u64)
    }

    /// Whether appended bytes wait for a flush.
    pub fn has_untaken(&self) -> bool {
        self.end() > self.taken_to
    }

    /// The O_DIRECT handle (opened here on first use).
    fn file(&mut self) -> Result<&compio::fs::File, EngineError> {
        if self.file.is_none() {
            self.file = Some(to_compio(open_direct(&self.path)?));
        }
        Ok(self.file.as_ref().expect("just opened"))
    }

    /// The handle to fdatasync, if anything was ever written through this writer.
    pub fn sync_handle(&self) -> Option<compio::fs::File> {
        self.file.clone()
    }

    /// Makes sure `extra` more bytes (rounded to whole blocks) fit in
    /// reserved space, so that writing them cannot fail for want of it.
    pub fn reserve(&mut self, extra: u64) -> Result<(), EngineError> {
        self.ensure_allocated(round_up(self.end().0 + extra))
    }

    /// Reserves space up to at least `end`, extending i_size, in steps as
    /// large as the file so far (between [`PREALLOC_MIN_BYTES`] and
    /// [`PREALLOC_BYTES`]); when the disk cannot fit a whole step, just what
    /// `end` needs.
    fn ensure_allocated(&mut self, end: u64) -> Result<(), EngineError> {
        if end <= self.allocated {
            return Ok(());
        }
        let unit = self.allocated.clamp(PREALLOC_MIN_BYTES, PREALLOC_BYTES);
        let step = round_up(end).div_ceil(unit) * unit;
        let fd = self.file()?.as_raw_fd();
        let fallocate = |len: u64| {
            // SAFETY: plain syscall on an fd we own.
            let rc = unsafe { libc::fallocate(fd, 0, 0, len as libc::off_t) };
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        };
        let started = Instant::now();
        let target = match fallocate(step) {
            Ok(()) => step,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                fallocate(round_up(end))?;
                round_up(end)
            }
            Err(e) => return Err(e.into()),
        };
        self.allocated = target;
        let took = started.elapsed();
        if took.as_millis() >= 10 {
            tracing::debug!(?took, bytes = target, "slow fallocate");
        }
        Ok(())
    }

    /// Appends `bytes` to the open buffer (borrowing a pooled buffer when the
    /// open one is too small) and returns the stored copy, for the caller to
    /// rewrite the fields the broker owns.
    pub fn append(&mut self, bytes: &[u8]) -> &mut [u8] {
        let needed = self.open.len() + bytes.len();
        if needed > self.open.capacity() {
            let mut bigger = borrow(needed);
            bigger.extend_from_slice(self.open.as_slice());
            give_back(std::mem::replace(&mut self.open, bigger));
        }
        self.open.extend_from_slice(bytes);
        self.open.last_mut(bytes.len())
    }

    /// Takes every appended byte not yet handed to a flush as one write, and
    /// keeps the partial last block open for the next one. `None` when there
    /// is nothing to write.
    pub fn take_write(&mut self) -> Result<Option<PendingWrite>, EngineError> {
        if !self.has_untaken() {
            return Ok(None);
        }
        let end = self.end();
        let file = self.file()?.clone();
        // The write covers whole blocks from `open_start`: it must lie in
        // reserved space (a write into reserved space cannot fail for want of it).
        self.ensure_allocated(round_up(end.0))?;
        let tail_start = FilePos(round_down(end.0));
        let full = std::mem::replace(&mut self.open, AlignedBuf::empty());
        self.open
            .extend_from_slice(&full.as_slice()[(tail_start.0 - self.open_start.0) as usize..]);
        let pos = std::mem::replace(&mut self.open_start, tail_start);
        self.taken_to = end;
        let write = PendingWrite {
            file,
            buf: full.into_padded(),
            pos,
            end,
        };
        let len = compio::buf::IoBuf::as_init(&write.buf).len() as u64;
        assert!(
            pos.0.is_multiple_of(BLOCK_BYTES as u64)
                && len.is_multiple_of(BLOCK_BYTES as u64)
                && pos.0 + len >= end.0
                && pos.0 + len <= self.allocated,
            "O_DIRECT write of {len} bytes at {} (data to {}, reserved {}) in {}",
            pos.0,
            end.0,
            self.allocated,
            self.path.display()
        );
        Ok(Some(write))
    }
}

pub(crate) fn to_compio(f: std::fs::File) -> compio::fs::File {
    // SAFETY: we own the fd and hand it over exactly once.
    unsafe { compio::fs::File::from_raw_fd(f.into_raw_fd()) }
}

/// Opens the O_DIRECT handle, falling back to buffered writes (with a warning) on
/// file systems that refuse O_DIRECT, such as tmpfs.
fn open_direct(path: &Path) -> Result<std::fs::File, EngineError> {
    use std::os::unix::fs::OpenOptionsExt;
    let direct = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path);
    match direct {
        Ok(f) => Ok(f),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            tracing::warn!(path = %path.display(), "O_DIRECT refused by this file system; using buffered writes");
            Ok(std::fs::OpenOptions::new().write(true).open(path)?)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use compio::buf::IoBuf;

    fn writer_at(dir: &Path, valid: &[u8]) -> Writer {
        let path = dir.join("seg.log");
        std::fs::write(&path, valid).unwrap();
        let start = round_down(valid.len() as u64) as usize;
        Writer::new(
            &path,
            FilePos(valid.len() as u64),
            &valid[start..],
            valid.len() as u64,
        )
    }

    #[test]
    fn writes_whole_blocks_and_keeps_the_partial_one_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer_at(dir.path(), &[1u8; 5000]);
        assert_eq!(w.end(), FilePos(5000));
        assert!(w.take_write().unwrap().is_none(), "nothing appended yet");
        w.reserve(100).unwrap();
        w.append(&[2u8; 100]).copy_from_slice(&[3u8; 100]);
        let write = w.take_write().unwrap().expect("a write");
        assert_eq!(write.pos, FilePos(4096), "starts at the partial block");
        assert_eq!(write.end, FilePos(5100));
        let bytes = write.buf.as_init();
        assert_eq!(bytes.len(), 4096, "padded to one block");
        assert!(bytes[..904].iter().all(|&b| b == 1), "the tail re-written");
        assert!(bytes[904..1004].iter().all(|&b| b == 3), "the stored copy");
        assert!(bytes[1004..].iter().all(|&b| b == 0), "zero padding");
        // The partial block stays open, in a buffer of its own size.
        assert_eq!(w.end(), FilePos(5100));
        assert_eq!(w.open.len(), 1004);
        assert!(w.open.capacity() <= WRITE_BUF_BYTES);
    }

    #[test]
    fn an_idle_writer_holds_no_buffer_and_no_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer_at(dir.path(), &[7u8; 8192]);
        assert_eq!(w.open.capacity(), 0, "block-aligned end: nothing open");
        assert!(
            w.sync_handle().is_none(),
            "no O_DIRECT handle before a write"
        );
        let mut w = writer_at(dir.path(), &[7u8; 8200]);
        assert_eq!(w.open.len(), 8);
        w.reserve(4096).unwrap();
        w.append(&[9u8; 4096]);
        let write = w.take_write().unwrap().unwrap();
        assert_eq!(write.buf.as_init().len(), 8192, "two blocks");
        assert_eq!(w.open.len(), 8, "8200 + 4096 ends 8 bytes into a block");
        give_back(write.buf.into_inner());
    }

    #[test]
    fn borrowed_buffers_go_back_to_the_pool_up_to_its_limit() {
        set_pool_limit(2 * WRITE_BUF_BYTES);
        for _ in 0..5 {
            give_back(AlignedBuf::with_capacity(WRITE_BUF_BYTES));
        }
        assert_eq!(pooled_bytes(), 2 * WRITE_BUF_BYTES);
        give_back(AlignedBuf::with_capacity(4096));
        assert_eq!(pooled_bytes(), 2 * WRITE_BUF_BYTES, "odd sizes are freed");
        let b = borrow(10);
        assert_eq!(b.capacity(), WRITE_BUF_BYTES);
        assert_eq!(pooled_bytes(), WRITE_BUF_BYTES);
        assert_eq!(borrow(WRITE_BUF_BYTES + 1).capacity(), 2 * WRITE_BUF_BYTES);
        give_back(AlignedBuf::with_capacity(2 * WRITE_BUF_BYTES));
        assert_eq!(pooled_bytes(), WRITE_BUF_BYTES, "no room for 2 MiB more");
        give_back(b);
        set_pool_limit(4 * WRITE_BUF_BYTES);
        give_back(AlignedBuf::with_capacity(2 * WRITE_BUF_BYTES));
        assert_eq!(pooled_bytes(), 4 * WRITE_BUF_BYTES);
        assert_eq!(
            borrow(WRITE_BUF_BYTES + 1).capacity(),
            2 * WRITE_BUF_BYTES,
            "the pooled 2 MiB one"
        );
        assert_eq!(pooled_bytes(), 2 * WRITE_BUF_BYTES);
        set_pool_limit(0);
        assert_eq!(pooled_bytes(), 0);
        set_pool_limit(DEFAULT_POOL_BYTES);
    }

    #[test]
    fn reserving_grows_in_steps() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer_at(dir.path(), &[]);
        w.reserve(10).unwrap();
        assert_eq!(w.allocated, PREALLOC_MIN_BYTES);
        let len = std::fs::metadata(dir.path().join("seg.log")).unwrap().len();
        assert_eq!(len, PREALLOC_MIN_BYTES, "i_size extended");
        w.reserve(PREALLOC_MIN_BYTES + 1).unwrap();
        assert_eq!(w.allocated, 2 * PREALLOC_MIN_BYTES);
    }
}
