//! Opening a partition directory after a clean stop or a crash.
//!
//! A sealed segment's `.index`/`.timeindex` files are written after its log was
//! truncated to size and fsynced, so they are trusted when they decode; if either
//! is missing or damaged the segment is scanned and the indexes rebuilt. A rolled
//! segment whose seal had not finished (it runs off the reactor, and later
//! segments may hold acknowledged batches by then) scans to preallocated zeros at
//! exactly the next segment's base: it is complete, and its seal is finished here. The last (active)
//! segment is always scanned batch by batch with CRC checks: the scan stops at the
//! first zero (pre-allocated), torn, corrupt or out-of-sequence batch, and the file
//! is truncated there. Under the default flush policy nothing below that point was
//! ever acknowledged-but-unsynced, so no acknowledged batch is lost.
//!
//! A compacted log has offset gaps (the cleaner removes records but never
//! renumbers), so a batch may start past the offset after the previous one;
//! only a batch that starts before it is out of sequence.
//!
//! A damaged *sealed* segment is handled as Kafka does: the log is truncated at the
//! damage and every later segment is deleted, so offsets stay dense.
//!
//! With a sound recovery checkpoint (see `checkpoint`) only what follows its
//! point is read: earlier segments open from their index files, the point's
//! segment resumes its indexes and producer state from the checkpoint and is
//! scanned from the point on, later segments are scanned whole (and their
//! producer state replayed). Without one, every segment's producer state would
//! have to be read; Brook then replays the last sealed segment and the active
//! one, which covers every producer that wrote recently.

use std::path::Path;

use crate::error::EngineError;
use crate::log::batch::{BATCH_HEADER_LEN, BatchInfo, Marker, parse_header};
use crate::log::checkpoint::Checkpoint;
use crate::log::index::DEFAULT_INDEX_INTERVAL_BYTES;
use crate::log::index::{IndexBuilder, read_offset_index, read_time_index};
use crate::log::producer::ProducerStateTable;
use crate::log::recovery::{ScanOutcome, StopReason, scan_segment_from};
use crate::log::segment::{Segment, index_path, log_path, time_index_path};
use crate::types::{FilePos, Offset, TimestampMs, TopicPartition};

/// Base offsets of the `.log` files in `dir`, ascending. Removes leftover temp files.
fn segment_bases(dir: &Path) -> Result<Vec<Offset>, EngineError> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".tmp") {
            let _ = std::fs::remove_file(dir.join(name.as_ref()));
        } else if let Some(stem) = name.strip_suffix(".log")
            && let Ok(base) = stem.parse::<u64>()
        {
            bases.push(Offset(base));
        }
    }
    bases.sort();
    Ok(bases)
}

/// What a scan of one segment found.
struct Scanned {
    outcome: ScanOutcome,
    index: IndexBuilder,
    max_timestamp: Option<TimestampMs>,
    file_len: u64,
}

/// Scans segment `base` from its start, or from the checkpoint's point when
/// the checkpoint is in this segment (resuming its indexes).
fn scan(
    dir: &Path,
    base: Offset,
    from: Option<&Checkpoint>,
    producers: &mut ProducerStateTable,
) -> Result<Scanned, EngineError> {
    let file = std::fs::File::open(log_path(dir, base))?;
    let file_len = file.metadata()?.len();
    let (start, mut index) = match from {
        Some(c) => ((c.pos, c.next_offset), c.index.clone()),
        None => (
            (FilePos(0), base),
            IndexBuilder::new(DEFAULT_INDEX_INTERVAL_BYTES),
        ),
    };
    let mut max_timestamp = index.max_timestamp();
    let outcome = scan_segment_from(&file, file_len, start, |pos, info| {
        index.on_batch(pos, info, base);
        if max_timestamp.is_none_or(|m| info.max_timestamp > m) {
            max_timestamp = Some(info.max_timestamp);
        }
        producers.rebuild_from(info, marker_at(&file, pos, info));
    })?;
    Ok(Scanned {
        outcome,
        index,
        max_timestamp,
        file_len,
    })
}

/// Tries to open a sealed segment from its index files alone.
fn open_from_indexes(
    dir: &Path,
    base: Offset,
    next_base: Offset,
) -> Result<Option<Segment>, EngineError> {
    let (Some(oi), Some(ti)) = (
        read_offset_index(&index_path(dir, base)),
        read_time_index(&time_index_path(dir, base)),
    ) else {
        return Ok(None);
    };
    let size = std::fs::metadata(log_path(dir, base))?.len();
    if oi.last().is_some_and(|(_, pos)| pos.0 >= size) {
        return Ok(None);
    }
    let max_ts = ti.max_timestamp();
    let index = IndexBuilder::from_parts(DEFAULT_INDEX_INTERVAL_BYTES, oi, ti);
    Ok(Some(Segment::open_sealed(
        dir, base, size, index, next_base, max_ts,
    )?))
}

fn remove_segment_files(dir: &Path, base: Offset) {
    for p in crate::log::segment::files(dir, base) {
        let _ = std::fs::remove_file(p);
    }
}

/// The transaction marker of the control batch at `pos` (read from the file:
/// markers are rare and small); `None` for any other batch.
fn marker_at(file: &std::fs::File, pos: FilePos, info: &BatchInfo) -> Option<Marker> {
    if !info.is_control {
        return None;
    }
    let mut buf = vec![0u8; info.len as usize];
    std::os::unix::fs::FileExt::read_exact_at(file, &mut buf, pos.0).ok()?;
    crate::log::batch::read_marker(&buf, info)
}

/// Replays the batch headers of a sealed segment from `from` on into the
/// producer table, so an idempotent producer whose last batches sit before a
/// roll is still known after a restart.
fn replay_producers(
    dir: &Path,
    base: Offset,
    (from, size): (u64, u64),
    producers: &mut ProducerStateTable,
) -> Result<(), EngineError> {
    const CHUNK: usize = 4 << 20;
    let file = std::fs::File::open(log_path(dir, base))?;
    let mut pos = from;
    let mut buf = vec![0u8; CHUNK];
    while pos + BATCH_HEADER_LEN as u64 <= size {
        let n = ((size - pos) as usize).min(CHUNK);
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf[..n], pos)?;
        let mut p = 0usize;
        while p + BATCH_HEADER_LEN <= n {
            let info = parse_header(&buf[p..n]).map_err(EngineError::CorruptBatch)?;
            let at = FilePos(pos + p as u64);
            producers.rebuild_from(&info, marker_at(&file, at, &info));
            p += info.len as usize;
        }
        pos += p as u64;
    }
    Ok(())
}

/// Whether a checkpoint can be used with the segments on disk.
fn usable(dir: &Path, bases: &[Offset], c: &Checkpoint) -> bool {
    bases.contains(&c.segment)
        && c.next_offset >= c.segment
        && std::fs::metadata(log_path(dir, c.segment)).is_ok_and(|m| m.len() >= c.pos.0)
}

/// A partition's log as opened.
pub struct Recovered {
    /// Oldest first; the last one is ready for appends.
    pub segments: Vec<Segment>,
    /// The clean-stop checkpoint the log was reopened at, marked not clean:
    /// it must replace the clean one on disk before anything is written.
    pub reopened_clean: Option<Checkpoint>,
    /// The offset the checkpoint on disk (if any) describes.
    pub checkpointed_end: Option<Offset>,
    /// Bytes of batches read to open the log (scans and producer replays).
    pub read_bytes: u64,
}

/// Opens every segment of a partition.
pub fn recover_partition(
    dir: &Path,
    tp: &TopicPartition,
    producers: &mut ProducerStateTable,
) -> Result<Recovered, EngineError> {
    crate::log::cleaner::recover_swaps(dir)?;
    let bases = segment_bases(dir)?;
    if bases.is_empty() {
        return Ok(Recovered {
            segments: vec![Segment::create(
                dir,
                Offset(0),
                DEFAULT_INDEX_INTERVAL_BYTES,
            )?],
            reopened_clean: None,
            checkpointed_end: None,
            read_bytes: 0,
        });
    }
    let checkpoint = Checkpoint::read(dir).filter(|c| {
        let ok = usable(dir, &bases, c);
        if !ok {
            tracing::warn!(partition = %tp, segment = %c.segment, "recovery checkpoint does not match the segments; recovering from the segments");
        }
        ok
    });
    if let Some(c) = &checkpoint {
        *producers = c.producers.clone();
    }
    let mut read_bytes = 0;
    match open_segments(
        dir,
        tp,
        &bases,
        checkpoint.as_ref(),
        producers,
        &mut read_bytes,
    )? {
        Some(segments) => {
            let end = segments.last().expect("at least one segment").next_offset;
            let reopened_clean = checkpoint
                .as_ref()
                .filter(|c| c.clean && c.next_offset == end)
                .map(|c| Checkpoint {
                    clean: false,
                    ..c.clone()
                });
            Ok(Recovered {
                segments,
                reopened_clean,
                checkpointed_end: checkpoint.map(|c| c.next_offset),
                read_bytes,
            })
        }
        None => {
            // A segment before the checkpoint was damaged: the log now ends
            // there, so the checkpoint describes a log that no longer exists.
            let _ = std::fs::remove_file(crate::log::checkpoint::path(dir));
            *producers = ProducerStateTable::new();
            let bases = segment_bases(dir)?;
            let segments = open_segments(dir, tp, &bases, None, producers, &mut read_bytes)?
                .expect("without a checkpoint the segments always open");
            Ok(Recovered {
                segments,
                reopened_clean: None,
                checkpointed_end: None,
                read_bytes,
            })
        }
    }
}

/// Opens the segments `bases` (ascending, at least one), using `checkpoint`
/// when given. `None` when a segment before the checkpoint was damaged (the
/// log was truncated there and the caller must start again without it).
fn open_segments(
    dir: &Path,
    tp: &TopicPartition,
    bases: &[Offset],
    checkpoint: Option<&Checkpoint>,
    producers: &mut ProducerStateTable,
    read_bytes: &mut u64,
) -> Result<Option<Vec<Segment>>, EngineError> {
    let mut segments = Vec::with_capacity(bases.len());
    // Producer state before the checkpoint is in the checkpoint: batches read
    // there (a segment whose indexes must be rebuilt) go to a scratch table.
    let mut scratch = ProducerStateTable::new();
    for (i, &base) in bases.iter().enumerate() {
        let next_base = bases.get(i + 1).copied();
        let before = checkpoint.is_some_and(|c| base < c.segment);
        let at = checkpoint.filter(|c| c.segment == base);
        if let Some(nb) = next_base
            && let Some(seg) = open_from_indexes(dir, base, nb)?
        {
            let replay_from = match checkpoint {
                None => (i + 2 == bases.len()).then_some(0),
                Some(_) if before => None,
                Some(c) => Some(if at.is_some() { c.pos.0 } else { 0 }),
            };
            if let Some(from) = replay_from {
                replay_producers(dir, base, (from, seg.size), producers)?;
                *read_bytes += seg.size.saturating_sub(from);
            }
            segments.push(seg);
            continue;
        }
        let table = if before {
            &mut scratch
        } else {
            &mut *producers
        };
        let s = scan(dir, base, at, table)?;
        *read_bytes += s.outcome.valid_len.0 - at.map_or(0, |c| c.pos.0);
        // Complete: every batch up to the next segment's base, then the end of the
        // file or preallocated zeros. Zeros mean the roll's seal (truncate, fsync,
        // indexes: `SealJob`, off the reactor, possibly after later batches were
        // acknowledged) did not finish before the stop; finish it now.
        // A cleaned segment (see `cleaner`) may end before the next base: it
        // was written whole, fsynced and renamed into place, so it ends
        // exactly at its file's end.
        let complete = match next_base {
            Some(nb) if s.outcome.next_offset == nb => {
                s.outcome.valid_len.0 == s.file_len
                    || matches!(s.outcome.stop, Some(StopReason::EndOfData))
            }
            Some(nb) => {
                s.outcome.next_offset < nb
                    && s.outcome.valid_len.0 == s.file_len
                    && s.outcome.stop.is_none()
            }
            None => false,
        };
        if next_base.is_some() && complete {
            if s.outcome.valid_len.0 != s.file_len {
                tracing::info!(partition = %tp, segment = %base, "finishing the seal of a rolled segment");
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(log_path(dir, base))?;
                f.set_len(s.outcome.valid_len.0)?;
                f.sync_all()?;
            }
            let mut seg = Segment::open_sealed(
                dir,
                base,
                s.outcome.valid_len.0,
                s.index,
                s.outcome.next_offset,
                s.max_timestamp,
            )?;
            seg.writer = None;
            crate::log::index::write_file_atomically(
                &index_path(dir, base),
                &seg.index.offset_index().encode(),
            )?;
            crate::log::index::write_file_atomically(
                &time_index_path(dir, base),
                &seg.index.time_index().encode(),
            )?;
            segments.push(seg);
            continue;
        }
        if before {
            // Truncated below the checkpoint: reopen without it.
            truncate_at_damage(dir, tp, bases, i, &s)?;
            return Ok(None);
        }
        // After a clean stop the log ends exactly at the checkpoint and only
        // preallocated zeros follow: nothing to cut.
        let clean_end = at.is_some_and(|c| {
            c.clean
                && s.outcome.valid_len == c.pos
                && matches!(s.outcome.stop, None | Some(StopReason::EndOfData))
        });
        if !clean_end {
            truncate_at_damage(dir, tp, bases, i, &s)?;
        }
        let valid = FilePos(s.outcome.valid_len.0);
        segments.push(Segment::open_active(
            dir,
            base,
            valid,
            s.index,
            s.outcome.next_offset,
            s.max_timestamp,
        )?);
        return Ok(Some(segments));
    }
    unreachable!("the last segment always returns from the loop")
}

/// Cuts the log at the end of segment `bases[i]`'s valid data: deletes every
/// later segment and truncates this one's file there.
fn truncate_at_damage(
    dir: &Path,
    tp: &TopicPartition,
    bases: &[Offset],
    i: usize,
    s: &Scanned,
) -> Result<(), EngineError> {
    let base = bases[i];
    if let Some(stop) = &s.outcome.stop
        && !matches!(stop, StopReason::EndOfData)
    {
        tracing::warn!(partition = %tp, segment = %base, ?stop, valid_len = s.outcome.valid_len.0, "log tail truncated during recovery");
    }
    for &later in &bases[i + 1..] {
        tracing::warn!(partition = %tp, segment = %later, "deleting segment after a damaged one");
        remove_segment_files(dir, later);
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(log_path(dir, base))?;
    f.set_len(s.outcome.valid_len.0)?;
    f.sync_all()?;
    Ok(())
}

/// Cuts a closed partition's log at `offset` (a batch boundary), as a
/// follower does when its tail diverged from its new leader's: segments from
/// `offset` on are deleted, the one holding it is cut at that batch, and the
/// recovery checkpoint and that segment's indexes go, so the next open
/// rebuilds them from what is left. Nothing is changed if the log already
/// ends at or before `offset`.
/// Empties a follower's log and makes it start at `start` (Kafka's
/// `truncateFullyAndStartAt`): its leader no longer has the offsets it would
/// fetch next (retention or DeleteRecords passed them). Every segment, the
/// recovery checkpoint and the epoch cache go; an empty segment at `start`
/// and the log start offset file are left, all durably.
pub fn restart_log_at(dir: &Path, start: Offset) -> Result<(), EngineError> {
    for base in segment_bases(dir)? {
        remove_segment_files(dir, base);
    }
    let _ = std::fs::remove_file(crate::log::checkpoint::path(dir));
    let _ = std::fs::remove_file(crate::log::replica::EpochCache::path(dir));
    std::fs::File::create(log_path(dir, start))?.sync_all()?;
    crate::log::log_start::store(dir, start)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

pub fn truncate_log(dir: &Path, offset: Offset) -> Result<(), EngineError> {
    let bases = segment_bases(dir)?;
    let _ = std::fs::remove_file(crate::log::checkpoint::path(dir));
    for &base in bases.iter().filter(|&&b| b >= offset) {
        remove_segment_files(dir, base);
    }
    if let Some(&base) = bases.iter().rev().find(|&&b| b < offset) {
        let path = log_path(dir, base);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)?;
        let len = file.metadata()?.len();
        let mut cut = None;
        scan_segment_from(&file, len, (FilePos(0), base), |pos, info| {
            if info.base_offset == offset {
                cut = Some(pos.0);
            }
        })?;
        if let Some(at) = cut {
            file.set_len(at)?;
            file.sync_all()?;
            let _ = std::fs::remove_file(index_path(dir, base));
            let _ = std::fs::remove_file(time_index_path(dir, base));
        }
    }
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}
