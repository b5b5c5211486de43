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
//! A damaged *sealed* segment is handled as Kafka does: the log is truncated at the
//! damage and every later segment is deleted, so offsets stay dense.

use std::path::Path;

use crate::batch::{BATCH_HEADER_LEN, parse_header};
use crate::error::EngineError;
use crate::index::DEFAULT_INDEX_INTERVAL_BYTES;
use crate::index::{IndexBuilder, read_offset_index, read_time_index};
use crate::producer::ProducerStateTable;
use crate::recovery::{ScanOutcome, StopReason, scan_segment};
use crate::segment::{Segment, index_path, log_path, time_index_path};
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

fn scan(
    dir: &Path,
    base: Offset,
    producers: &mut ProducerStateTable,
) -> Result<Scanned, EngineError> {
    let file = std::fs::File::open(log_path(dir, base))?;
    let file_len = file.metadata()?.len();
    let mut index = IndexBuilder::new(DEFAULT_INDEX_INTERVAL_BYTES);
    let mut max_timestamp: Option<TimestampMs> = None;
    let outcome = scan_segment(&file, file_len, base, |pos, info| {
        index.on_batch(pos, info, base);
        if max_timestamp.is_none_or(|m| info.max_timestamp > m) {
            max_timestamp = Some(info.max_timestamp);
        }
        producers.rebuild_from(info);
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
    for p in [
        log_path(dir, base),
        index_path(dir, base),
        time_index_path(dir, base),
    ] {
        let _ = std::fs::remove_file(p);
    }
}

/// Replays the batch headers of a sealed segment into the producer table, so an
/// idempotent producer whose last batches sit just before a roll is still known
/// after a restart (Kafka keeps producer snapshots for this; reading one
/// segment's headers costs one sequential read of it).
fn replay_producers(
    dir: &Path,
    base: Offset,
    size: u64,
    producers: &mut ProducerStateTable,
) -> Result<(), EngineError> {
    const CHUNK: usize = 4 << 20;
    let file = std::fs::File::open(log_path(dir, base))?;
    let mut pos = 0u64;
    let mut buf = vec![0u8; CHUNK];
    while pos + BATCH_HEADER_LEN as u64 <= size {
        let n = ((size - pos) as usize).min(CHUNK);
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf[..n], pos)?;
        let mut p = 0usize;
        while p + BATCH_HEADER_LEN <= n {
            let info = parse_header(&buf[p..n]).map_err(EngineError::CorruptBatch)?;
            producers.rebuild_from(&info);
            p += info.len as usize;
        }
        pos += p as u64;
    }
    Ok(())
}

/// Opens every segment of a partition; the last one is returned ready for appends.
pub fn recover_partition(
    dir: &Path,
    tp: &TopicPartition,
    producers: &mut ProducerStateTable,
) -> Result<Vec<Segment>, EngineError> {
    let bases = segment_bases(dir)?;
    if bases.is_empty() {
        return Ok(vec![Segment::create(
            dir,
            Offset(0),
            DEFAULT_INDEX_INTERVAL_BYTES,
        )?]);
    }
    let mut segments = Vec::with_capacity(bases.len());
    for (i, &base) in bases.iter().enumerate() {
        let next_base = bases.get(i + 1).copied();
        if let Some(nb) = next_base
            && let Some(seg) = open_from_indexes(dir, base, nb)?
        {
            if i + 2 == bases.len() {
                replay_producers(dir, base, seg.size, producers)?;
            }
            segments.push(seg);
            continue;
        }
        let s = scan(dir, base, producers)?;
        // Complete: every batch up to the next segment's base, then the end of the
        // file or preallocated zeros. Zeros mean the roll's seal (truncate, fsync,
        // indexes: `SealJob`, off the reactor, possibly after later batches were
        // acknowledged) did not finish before the stop; finish it now.
        let complete = Some(s.outcome.next_offset) == next_base
            && (s.outcome.valid_len.0 == s.file_len
                || matches!(s.outcome.stop, Some(StopReason::EndOfData)));
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
            crate::index::write_file_atomically(
                &index_path(dir, base),
                &seg.index.offset_index().encode(),
            )?;
            crate::index::write_file_atomically(
                &time_index_path(dir, base),
                &seg.index.time_index().encode(),
            )?;
            segments.push(seg);
            continue;
        }
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
        let valid = FilePos(s.outcome.valid_len.0);
        segments.push(Segment::open_active(
            dir,
            base,
            valid,
            s.index,
            s.outcome.next_offset,
            s.max_timestamp,
        )?);
        return Ok(segments);
    }
    unreachable!("the last segment always returns from the loop")
}
