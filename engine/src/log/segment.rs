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

use crate::error::EngineError;
use crate::log::aligned::round_down;
use crate::log::batch::{self, BatchInfo};
use crate::log::index::IndexBuilder;
use crate::log::writer::{Writer, to_compio};
use crate::types::{FilePos, Offset, RelativeOffset, TimestampMs};

pub fn log_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{:020}.log", base.0))
}

pub fn index_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{:020}.index", base.0))
}

pub fn time_index_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{:020}.timeindex", base.0))
}

/// The files of segment `base`: its log, offset index and time index.
pub fn files(dir: &Path, base: Offset) -> [PathBuf; 3] {
    [
        log_path(dir, base),
        index_path(dir, base),
        time_index_path(dir, base),
    ]
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

    /// Gives up the segment's open read handles for the caller to close. A
    /// replaced segment's files are already unlinked, so the last close frees
    /// their blocks and drops their cached pages, which for a compacted log
    /// can be hundreds of megabytes: the handles are closed here, and the
    /// duplicates returned (`Send`, unlike compio's) hold the files until the
    /// caller closes them off the reactor.
    pub fn release_read_handles(&mut self) -> Vec<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        let direct = self.direct.take().flatten();
        let handles: Vec<compio::fs::File> = self.reader.take().into_iter().chain(direct).collect();
        (handles.iter())
            .filter_map(|f| f.as_fd().try_clone_to_owned().ok())
            .collect()
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
        // A follower copying a compacted log sees its gaps (see `cleaner`).
        assert!(
            info.base_offset >= self.next_offset,
            "segment {} offsets must ascend: batch {} after {}",
            self.base,
            info.base_offset,
            self.next_offset
        );
        let stored = w.append(bytes);
        batch::set_base_offset(stored, info.base_offset);
        batch::set_partition_leader_epoch(stored, info.leader_epoch);
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

    /// Deletes the segment's files (retention, DeleteRecords) on a thread of
    /// its own: the unlink, and the close of the last handle, free the
    /// file's blocks and cached pages, which can take the event loop
    /// hundreds of milliseconds (see `release_read_handles`). The base is
    /// below the log start, so no segment is created again at it.
    pub fn delete(mut self) {
        let handles = self.release_read_handles();
        let paths = files(&self.dir, self.base);
        let remove = move || {
            for p in &paths {
                if let Err(e) = std::fs::remove_file(p)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(path = %p.display(), error = %e, "could not remove segment file");
                }
            }
            drop(handles);
        };
        let spawned = std::thread::Builder::new()
            .name("brook-delete".into())
            .spawn(remove);
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a thread to delete a segment; deleting it here");
            // The closure moved into the failed spawn is gone with it:
            // delete again from the paths, here.
            for p in files(&self.dir, self.base) {
                let _ = std::fs::remove_file(p);
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
