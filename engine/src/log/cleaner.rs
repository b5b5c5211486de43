//! The log cleaner: compaction of `cleanup.policy=compact` partitions, as
//! Kafka's `LogCleaner` does it.
//!
//! ## A pass
//! The *cleanable* log is the sealed segments from the log's first up to the
//! first segment that is not: still being written or sealed, not wholly below
//! the high watermark and the last stable offset, or holding a record younger
//! than `min.compaction.lag.ms`. Its *dirty* part starts at the first offset
//! the last pass did not cover (`cleaner-offset`, one small file per
//! partition). A partition is cleaned when dirty bytes / cleanable bytes
//! reaches `min.cleanable.dirty.ratio`, or when a dirty segment is older than
//! `max.compaction.lag.ms`.
//!
//! A pass ([`run`], on a thread of its own: it never runs on the shard's
//! reactor) reads the dirty segments into a map key → offset of the key's
//! last record (records of aborted transactions do not count), as far as
//! `log.cleaner.dedupe.buffer.size` allows. It then rewrites every cleanable
//! segment up to the map's end, in groups of consecutive segments that
//! together fit `segment.bytes`, each into one segment at the group's base:
//! - a record whose key has a later record in the map is dropped;
//! - a tombstone (null value) is dropped once its batch's timestamp is
//!   `delete.retention.ms` old;
//! - records without a key are kept;
//! - batches of aborted transactions are dropped, transaction markers kept;
//! - a batch keeps its header (base offset, last offset delta, timestamps,
//!   producer fields), only its records, count and CRC change; it is
//!   written in its own codec; a batch left with no record is dropped.
//!
//! Offsets are never changed, so the cleaned log has gaps: readers and
//! followers skip them (a fetch that lands past a segment's last batch goes
//! on to the next segment).
//!
//! ## Crash safety (Kafka's `.cleaned` / `.swap` protocol)
//! Each group is written to `<base>.log.cleaned` (and its indexes to
//! `.index.cleaned`, `.timeindex.cleaned`), fsynced, then renamed: the
//! indexes to `.swap` first, the log to `.log.swap` last — the commit point,
//! made durable by a directory fsync. Then the group's old segment files are
//! deleted and the swap files renamed into place. On open
//! ([`recover_swaps`]), `.cleaned` files and index swaps without a log swap
//! are deleted (the pass never committed: the old segments are intact), and
//! a `.log.swap` completes its swap: the segments it covers (from its base up
//! to its last offset) are deleted and it is renamed into place. A reader
//! therefore sees either the old segments or the whole cleaned one, never a
//! half-cleaned segment.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::EngineError;
use crate::log::batch::{self, BATCH_HEADER_LEN, BatchInfo};
use crate::log::index::{DEFAULT_INDEX_INTERVAL_BYTES, IndexBuilder};
use crate::log::producer::AbortedTxn;
use crate::log::records;
use crate::log::segment::{files, log_path};
use crate::types::{FilePos, Offset, TimestampMs};

const OFFSET_FILE: &str = "cleaner-offset";

/// Held while a pass swaps a cleaned segment in, and by whoever reads a
/// partition's segment files by name outside its `Partition` (the group and
/// transaction coordinators' replay): they never see a swap half done.
pub static SWAP_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
/// A batch whose records decompress to more than this is kept as it is.
const MAX_RECORDS_BYTES: usize = 256 << 20;
/// What one key costs in the map besides its bytes (the entry, the
/// allocation, the table's spare room).
const MAP_ENTRY_OVERHEAD: usize = 64;

/// The first offset a pass has not covered yet, if stored (the format of
/// `log_start`'s file).
pub fn load_first_dirty(dir: &Path) -> Option<Offset> {
    crate::log::log_start::load_file(&dir.join(OFFSET_FILE))
}

fn store_first_dirty(dir: &Path, at: Offset) -> std::io::Result<()> {
    crate::log::log_start::store_file(&dir.join(OFFSET_FILE), at)
}

/// One cleanable sealed segment, as the pass sees it.
#[derive(Clone, Debug)]
pub struct SegmentFile {
    pub base: Offset,
    pub size: u64,
    /// The next segment's base: this one holds offsets below it.
    pub end: Offset,
}

/// Everything a pass needs, copied out of the partition on its shard.
#[derive(Clone, Debug)]
pub struct CleanPlan {
    pub dir: PathBuf,
    /// The cleanable segments, oldest first.
    pub segments: Vec<SegmentFile>,
    pub first_dirty: Offset,
    /// Aborted transactions whose records lie in the cleanable log.
    pub aborted: Vec<AbortedTxn>,
    pub now_ms: i64,
    pub delete_retention_ms: u64,
    pub segment_bytes: u64,
    pub map_budget: usize,
    pub io_limit: Option<u64>,
    /// Set when the partition closes: the pass stops at the next batch.
    pub stop: Arc<AtomicBool>,
}

/// One cleaned segment that replaced the segments `replaced` on disk.
#[derive(Debug)]
pub struct CleanedGroup {
    pub base: Offset,
    pub replaced: Vec<Offset>,
    /// The next segment's base.
    pub end: Offset,
    pub size: u64,
    pub index: IndexBuilder,
    pub max_timestamp: Option<TimestampMs>,
}

/// What a pass did.
#[derive(Debug, Default)]
pub struct CleanOutcome {
    /// Committed groups, in log order.
    pub groups: Vec<CleanedGroup>,
    /// The first dirty offset from now on (unchanged when the pass stopped
    /// early).
    pub first_dirty: Option<Offset>,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_removed: u64,
}

/// Keeps a pass under `log.cleaner.io.max.bytes.per.second`.
struct Throttle {
    limit: Option<u64>,
    started: Instant,
    bytes: u64,
}

impl Throttle {
    fn new(limit: Option<u64>) -> Self {
        Throttle {
            limit,
            started: Instant::now(),
            bytes: 0,
        }
    }

    fn add(&mut self, n: usize) {
        self.bytes += n as u64;
        if let Some(limit) = self.limit.filter(|l| *l > 0) {
            let due = Duration::from_secs_f64(self.bytes as f64 / limit as f64);
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
}

/// Calls `f` with every batch of segment file `path` (`size` bytes), each
/// validated (structure and CRC).
fn for_each_batch(
    path: &Path,
    size: u64,
    throttle: &mut Throttle,
    stop: &AtomicBool,
    mut f: impl FnMut(&[u8], &BatchInfo) -> Result<(), EngineError>,
) -> Result<bool, EngineError> {
    let mut r = BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut pos = 0u64;
    let mut buf = Vec::new();
    while pos + BATCH_HEADER_LEN as u64 <= size {
        if stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        buf.resize(BATCH_HEADER_LEN, 0);
        r.read_exact(&mut buf)?;
        let head = batch::parse_header(&buf).map_err(EngineError::CorruptBatch)?;
        buf.resize(head.len as usize, 0);
        r.read_exact(&mut buf[BATCH_HEADER_LEN..])?;
        let info = batch::validate(&buf).map_err(EngineError::CorruptBatch)?;
        f(&buf, &info)?;
        throttle.add(buf.len());
        pos += u64::from(info.len);
    }
    Ok(true)
}

fn in_aborted(aborted: &[AbortedTxn], info: &BatchInfo) -> bool {
    let Some(p) = info
        .producer
        .filter(|_| info.is_transactional && !info.is_control)
    else {
        return false;
    };
    aborted.iter().any(|a| {
        a.producer_id == p.producer_id
            && a.first_offset <= info.base_offset
            && info.base_offset < a.last_offset
    })
}

/// The key map: key → offset of its last record in the dirty section.
struct KeyMap {
    offsets: HashMap<Vec<u8>, Offset>,
    bytes: usize,
}

impl KeyMap {
    fn add_batch(&mut self, bytes: &[u8], info: &BatchInfo) -> Result<(), EngineError> {
        let body = records::records_section(bytes, info, MAX_RECORDS_BYTES).map_err(|e| {
            EngineError::Storage(format!("cannot read batch {}: {e}", info.base_offset))
        })?;
        let spans = records::record_spans(&body, info).map_err(EngineError::CorruptBatch)?;
        for s in spans {
            let Some(k) = s.key else { continue };
            let key = &body[k];
            match self.offsets.get_mut(key) {
                Some(o) => *o = s.offset,
                None => {
                    self.bytes += key.len() + MAP_ENTRY_OVERHEAD;
                    self.offsets.insert(key.to_vec(), s.offset);
                }
            }
        }
        Ok(())
    }
}

/// Builds the key map over the dirty segments, as far as the budget allows
/// (at least one segment). Returns the map and the offset it covers up to.
fn build_map(
    plan: &CleanPlan,
    throttle: &mut Throttle,
    out: &mut CleanOutcome,
) -> Result<Option<(KeyMap, Offset)>, EngineError> {
    let mut map = KeyMap {
        offsets: HashMap::new(),
        bytes: 0,
    };
    let mut end = None;
    for s in plan.segments.iter().filter(|s| s.end > plan.first_dirty) {
        if end.is_some() && map.bytes >= plan.map_budget {
            break;
        }
        let done = for_each_batch(
            &log_path(&plan.dir, s.base),
            s.size,
            throttle,
            &plan.stop,
            |bytes, info| {
                if info.is_control
                    || info.next_offset() <= plan.first_dirty
                    || in_aborted(&plan.aborted, info)
                {
                    return Ok(());
                }
                map.add_batch(bytes, info)
            },
        )?;
        if !done {
            return Ok(None);
        }
        out.bytes_read += s.size;
        end = Some(s.end);
    }
    Ok(end.map(|e| (map, e)))
}

/// What a batch becomes in the cleaned log.
enum Kept<'a> {
    Whole(&'a [u8]),
    Rebuilt(Vec<u8>),
    Nothing,
}

fn clean_batch<'a>(
    plan: &CleanPlan,
    map: &KeyMap,
    bytes: &'a [u8],
    info: &BatchInfo,
    removed: &mut u64,
) -> Kept<'a> {
    if info.is_control {
        return Kept::Whole(bytes);
    }
    if in_aborted(&plan.aborted, info) {
        *removed += u64::from(info.record_count);
        return Kept::Nothing;
    }
    let (body, spans) = match records::records_section(bytes, info, MAX_RECORDS_BYTES)
        .map_err(|e| e.to_string())
        .and_then(|b| {
            let spans = records::record_spans(&b, info).map_err(|e| e.to_string())?;
            Ok((b, spans))
        }) {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(batch = %info.base_offset, error = %e, "cannot read a batch's records; kept as it is");
            return Kept::Whole(bytes);
        }
    };
    let horizon = plan
        .now_ms
        .saturating_sub(plan.delete_retention_ms.min(i64::MAX as u64) as i64);
    let expired_tombstones = info.max_timestamp.0 < horizon;
    let keep: Vec<&[u8]> = spans
        .iter()
        .filter(|s| {
            let Some(k) = &s.key else { return true };
            let superseded = map
                .offsets
                .get(&body[k.clone()])
                .is_some_and(|o| *o > s.offset);
            !(superseded || s.value.is_none() && expired_tombstones)
        })
        .map(|s| &body[s.raw.clone()])
        .collect();
    *removed += (spans.len() - keep.len()) as u64;
    if keep.len() == spans.len() {
        return Kept::Whole(bytes);
    }
    if keep.is_empty() {
        return Kept::Nothing;
    }
    match records::rebuild_batch(bytes, info, &keep) {
        Ok(b) => Kept::Rebuilt(b),
        Err(e) => {
            tracing::warn!(batch = %info.base_offset, error = %e, "cannot rebuild a batch; kept as it is");
            Kept::Whole(bytes)
        }
    }
}

fn with_suffix(p: PathBuf, suffix: &str) -> PathBuf {
    let mut s = p.into_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn remove_if_there(p: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes the cleaned form of `group` into `.cleaned` files. `None` when
/// the pass was stopped.
fn write_group(
    plan: &CleanPlan,
    map: &KeyMap,
    group: &[SegmentFile],
    throttle: &mut Throttle,
    out: &mut CleanOutcome,
) -> Result<Option<CleanedGroup>, EngineError> {
    let base = group[0].base;
    let [log, idx, tidx] = files(&plan.dir, base).map(|p| with_suffix(p, ".cleaned"));
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&log)?);
    let mut index = IndexBuilder::new(DEFAULT_INDEX_INTERVAL_BYTES);
    let (mut size, mut max_timestamp) = (0u64, None::<TimestampMs>);
    for s in group {
        let done = for_each_batch(
            &log_path(&plan.dir, s.base),
            s.size,
            throttle,
            &plan.stop,
            |bytes, info| {
                let kept = clean_batch(plan, map, bytes, info, &mut out.records_removed);
                let (bytes, info) = match &kept {
                    Kept::Nothing => return Ok(()),
                    Kept::Whole(b) => (*b, *info),
                    Kept::Rebuilt(b) => (
                        b.as_slice(),
                        batch::validate(b).map_err(EngineError::CorruptBatch)?,
                    ),
                };
                w.write_all(bytes)?;
                index.on_batch(FilePos(size), &info, base);
                size += bytes.len() as u64;
                if max_timestamp.is_none_or(|m| info.max_timestamp > m) {
                    max_timestamp = Some(info.max_timestamp);
                }
                Ok(())
            },
        )?;
        if !done {
            drop(w);
            for p in [&log, &idx, &tidx] {
                let _ = std::fs::remove_file(p);
            }
            return Ok(None);
        }
        out.bytes_read += s.size;
    }
    let f = w.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    for (p, bytes) in [
        (&idx, index.offset_index().encode()),
        (&tidx, index.time_index().encode()),
    ] {
        let mut f = std::fs::File::create(p)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    throttle.add(size as usize);
    out.bytes_written += size;
    Ok(Some(CleanedGroup {
        base,
        replaced: group.iter().map(|s| s.base).collect(),
        end: group.last().expect("a group has a segment").end,
        size,
        index,
        max_timestamp,
    }))
}

/// The steps that put a written group in place, in order; the third
/// (the log's rename to `.swap`, made durable by the fourth) commits it.
/// Each is a separate step so a test can crash between any two.
pub fn commit_steps(dir: &Path, g: &CleanedGroup) -> Vec<Box<dyn FnOnce() -> std::io::Result<()>>> {
    let [log, idx, tidx] = files(dir, g.base);
    let cleaned = |p: &PathBuf| with_suffix(p.clone(), ".cleaned");
    let swap = |p: &PathBuf| with_suffix(p.clone(), ".swap");
    let mut steps: Vec<Box<dyn FnOnce() -> std::io::Result<()>>> = Vec::new();
    for p in [&idx, &tidx, &log] {
        let (from, to) = (cleaned(p), swap(p));
        steps.push(Box::new(move || std::fs::rename(from, to)));
    }
    let d = dir.to_path_buf();
    steps.push(Box::new(move || sync_dir(&d)));
    for &old in &g.replaced {
        for p in files(dir, old) {
            steps.push(Box::new(move || remove_if_there(&p)));
        }
    }
    for p in [idx, tidx, log] {
        let from = swap(&p);
        steps.push(Box::new(move || std::fs::rename(from, p)));
    }
    let d = dir.to_path_buf();
    steps.push(Box::new(move || sync_dir(&d)));
    steps
}

/// Groups of consecutive segments, each at most `segment.bytes` together
/// and spanning offsets a segment's relative index can hold.
fn groups(segments: &[SegmentFile], max_bytes: u64) -> Vec<&[SegmentFile]> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < segments.len() {
        let mut end = start + 1;
        let mut bytes = segments[start].size;
        while let Some(next) = segments.get(end) {
            let span = next.end.0 - segments[start].base.0;
            if bytes + next.size > max_bytes || span > i32::MAX as u64 {
                break;
            }
            bytes += next.size;
            end += 1;
        }
        out.push(&segments[start..end]);
        start = end;
    }
    out
}

/// Runs one pass (blocking: on the pass's own thread). On an error, what was
/// committed before it stays committed and is reported through `done`.
pub fn run(plan: CleanPlan, done: &mut CleanOutcome) -> Result<(), EngineError> {
    let mut throttle = Throttle::new(plan.io_limit);
    let Some((map, map_end)) = build_map(&plan, &mut throttle, done)? else {
        return Ok(());
    };
    let cleanable: Vec<SegmentFile> = plan
        .segments
        .iter()
        .filter(|s| s.end <= map_end)
        .cloned()
        .collect();
    for group in groups(&cleanable, plan.segment_bytes) {
        let Some(g) = write_group(&plan, &map, group, &mut throttle, done)? else {
            return Ok(());
        };
        {
            let _swapping = SWAP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            for step in commit_steps(&plan.dir, &g) {
                step()?;
            }
        }
        done.groups.push(g);
    }
    store_first_dirty(&plan.dir, map_end)?;
    done.first_dirty = Some(map_end);
    Ok(())
}

/// Finishes or undoes an interrupted pass in partition directory `dir`
/// before its segments are opened (see the module doc).
pub fn recover_swaps(dir: &Path) -> Result<(), EngineError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    let base_of = |n: &str, suffix: &str| {
        n.strip_suffix(suffix)
            .and_then(|s| s.parse::<u64>().ok())
            .map(Offset)
    };
    let log_swaps: Vec<Offset> = names
        .iter()
        .filter_map(|n| base_of(n, ".log.swap"))
        .collect();
    let mut changed = false;
    for n in &names {
        let stale_index = [".index.swap", ".timeindex.swap"]
            .iter()
            .any(|s| base_of(n, s).is_some_and(|b| !log_swaps.contains(&b)));
        if n.ends_with(".cleaned") || stale_index {
            remove_if_there(&dir.join(n))?;
            changed = true;
        }
    }
    for base in log_swaps {
        let swap = with_suffix(log_path(dir, base), ".swap");
        let f = std::fs::File::open(&swap)?;
        let size = f.metadata()?.len();
        let last = crate::log::recovery::scan_segment(&f, size, base, |_, _| {})?.next_offset;
        let covered_end = last.max(base.next(1));
        for n in &names {
            let Some(old) = base_of(n, ".log") else {
                continue;
            };
            if old >= base && old < covered_end {
                for p in files(dir, old) {
                    remove_if_there(&p)?;
                }
            }
        }
        for p in files(dir, base).into_iter().skip(1) {
            let s = with_suffix(p.clone(), ".swap");
            if s.exists() {
                std::fs::rename(s, p)?;
            }
        }
        std::fs::rename(&swap, log_path(dir, base))?;
        tracing::info!(dir = %dir.display(), segment = %base, "completed an interrupted compaction swap");
        changed = true;
    }
    if changed {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
