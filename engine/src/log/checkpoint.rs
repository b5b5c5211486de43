//! A partition's recovery checkpoint: a point up to which its log is known to be
//! durable, with everything needed to reopen the log there without reading what
//! came before it (Kafka's recovery-point-offset-checkpoint and producer
//! `.snapshot` files, in one file per partition).
//!
//! ## `recovery-checkpoint` in the partition's directory
//! Written atomically (temporary file, fsync, rename, directory fsync) by the
//! partition's flusher, off the reactor:
//! - every `log.flush.offset.checkpoint.interval.ms` while the partition takes
//!   writes, for a state captured when a flush that syncs was taken, and written
//!   only once that flush has succeeded, so the point is always durable;
//! - when the partition is closed at a clean stop, for its final state. That
//!   checkpoint is the clean-shutdown marker: the restart reopens the log at its
//!   very end and scans nothing.
//!
//! It holds the point (the segment's base offset, the file position and offset
//! of the next batch), that segment's offset and time index up to the point
//! with the index builder's state, and the producer-state table there. On
//! start-up (`log_open`) segments before the point's segment open from their
//! index files, the point's segment resumes its indexes from here and is
//! scanned from the point on, and later segments are scanned whole: a crash
//! restart reads what was written since the last checkpoint, not the log.
//!
//! The file ends with a CRC-32C of everything before it; a file that is missing,
//! damaged or refers to a segment that no longer exists is ignored (logged), and
//! the partition is recovered the long way, from its segments alone.
//!
//! A checkpoint written at a clean stop says so (`clean`): then nothing was
//! written past its point, the bytes after it are the segment's preallocated
//! zeros, and the restart need not truncate the file there. The first write
//! after such a restart replaces it with the same point marked not clean
//! before any data is written (`Partition`'s flusher).
//!
//! Layout (big-endian): magic `BRCK`, version 1, clean u8, segment base u64, position u64,
//! next offset u64, index interval u32, bytes since last index entry u64,
//! max-so-far (flag u8, timestamp i64, relative offset u32), time tail fixed u8,
//! next position (flag u8, u64), offset index (length u32, bytes), time index
//! (length u32, bytes), producers (count u32; each: id u64, epoch u16, batches
//! u8; each batch: first seq u32, last seq u32, base offset u64, last offset
//! u64), then (version 2) open transactions (count u32; each: producer id u64,
//! first offset u64) and aborted transactions (count u32; each: producer id
//! u64, first offset u64, marker offset u64), then (version 3) the
//! transaction coordinator epochs of the last markers (count u32; each:
//! producer id u64, coordinator epoch i32), CRC-32C u32. Version 1 and 2 files
//! are still read (no transactions; no coordinator epochs, so the next marker
//! of each producer is not checked against one).

use std::path::{Path, PathBuf};

use crate::log::index::{IndexBuilder, OffsetIndex, ResumeState, TimeIndex, TimeIndexEntry};
use crate::log::producer::{AbortedTxn, BatchMetadata, ProducerStateTable};
use crate::types::{FilePos, Offset, RelativeOffset, TimestampMs};

/// The checkpoint's file name inside a partition directory.
pub const FILE_NAME: &str = "recovery-checkpoint";

const MAGIC: &[u8; 4] = b"BRCK";
const VERSION: u8 = 3;

/// A durable point of a partition's log and its state there.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// Base offset of the segment the point is in.
    pub segment: Offset,
    /// File position of the next batch in that segment.
    pub pos: FilePos,
    /// Offset of the next batch.
    pub next_offset: Offset,
    /// The segment's indexes up to `pos`.
    pub index: IndexBuilder,
    pub producers: ProducerStateTable,
    /// Written at a clean stop: nothing was written after the point.
    pub clean: bool,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let offsets = self.index.offset_index().encode();
        let times = self.index.time_index().encode();
        let mut out = Vec::with_capacity(96 + offsets.len() + times.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(u8::from(self.clean));
        out.extend_from_slice(&self.segment.0.to_be_bytes());
        out.extend_from_slice(&self.pos.0.to_be_bytes());
        out.extend_from_slice(&self.next_offset.0.to_be_bytes());
        out.extend_from_slice(&self.index.interval_bytes().to_be_bytes());
        let st = self.index.resume_state();
        out.extend_from_slice(&st.bytes_since_last_entry.to_be_bytes());
        match st.max_so_far {
            Some(m) => {
                out.push(1);
                out.extend_from_slice(&m.timestamp.0.to_be_bytes());
                out.extend_from_slice(&m.rel.0.to_be_bytes());
            }
            None => out.extend_from_slice(&[0; 13]),
        }
        out.push(u8::from(st.time_tail_fixed));
        out.push(u8::from(st.next_pos.is_some()));
        out.extend_from_slice(&st.next_pos.map_or(0, |p| p.0).to_be_bytes());
        for part in [&offsets, &times] {
            let len = u32::try_from(part.len()).expect("a segment's index is under 4 GiB");
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(part);
        }
        let producers: Vec<_> = self.producers.iter().collect();
        out.extend_from_slice(&(producers.len() as u32).to_be_bytes());
        for (id, entry) in producers {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&entry.epoch().to_be_bytes());
            out.push(entry.batches().len() as u8);
            for b in entry.batches() {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.base_offset.0.to_be_bytes());
                out.extend_from_slice(&b.last_offset.0.to_be_bytes());
            }
        }
        let ongoing: Vec<_> = self.producers.ongoing().collect();
        out.extend_from_slice(&(ongoing.len() as u32).to_be_bytes());
        for (id, first) in ongoing {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&first.0.to_be_bytes());
        }
        let aborted = self.producers.aborted();
        out.extend_from_slice(&(aborted.len() as u32).to_be_bytes());
        for a in aborted {
            out.extend_from_slice(&a.producer_id.to_be_bytes());
            out.extend_from_slice(&a.first_offset.0.to_be_bytes());
            out.extend_from_slice(&a.last_offset.0.to_be_bytes());
        }
        let epochs: Vec<_> = self.producers.coordinator_epochs().collect();
        out.extend_from_slice(&(epochs.len() as u32).to_be_bytes());
        for (id, epoch) in epochs {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&epoch.to_be_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parses a checkpoint, or says what is wrong with the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
        let body_len = bytes
            .len()
            .checked_sub(4)
            .ok_or("shorter than its checksum")?;
        let (body, crc) = bytes.split_at(body_len);
        let stored = u32::from_be_bytes(crc.try_into().expect("4 bytes"));
        if crc32c::crc32c(body) != stored {
            return Err("checksum mismatch".into());
        }
        let mut r = Input(body);
        if r.take(4)? != MAGIC {
            return Err("not a recovery checkpoint".into());
        }
        let version = r.u8()?;
        if !(1..=VERSION).contains(&version) {
            return Err(format!("recovery checkpoint version {version}"));
        }
        let clean = r.u8()? == 1;
        let segment = Offset(r.u64()?);
        let pos = FilePos(r.u64()?);
        let next_offset = Offset(r.u64()?);
        let interval = r.u32()?;
        if interval == 0 {
            return Err("index interval 0".into());
        }
        let bytes_since_last_entry = r.u64()?;
        let has_max = r.u8()? == 1;
        let (ts, rel) = (r.u64()? as i64, r.u32()?);
        let max_so_far = has_max.then_some(TimeIndexEntry {
            timestamp: TimestampMs(ts),
            rel: RelativeOffset(rel),
        });
        let time_tail_fixed = r.u8()? == 1;
        let has_next = r.u8()? == 1;
        let next = r.u64()?;
        let next_pos = has_next.then_some(FilePos(next));
        let len = r.u32()? as usize;
        let offsets = OffsetIndex::decode(r.take(len)?).map_err(|e| e.to_string())?;
        let len = r.u32()? as usize;
        let times = TimeIndex::decode(r.take(len)?).map_err(|e| e.to_string())?;
        let index = IndexBuilder::resume(
            interval,
            offsets,
            times,
            ResumeState {
                bytes_since_last_entry,
                max_so_far,
                time_tail_fixed,
                next_pos,
            },
        );
        let mut producers = ProducerStateTable::new();
        for _ in 0..r.u32()? {
            let id = r.u64()?;
            let epoch = r.u16()?;
            let mut batches = Vec::new();
            for _ in 0..r.u8()? {
                batches.push(BatchMetadata {
                    first_seq: r.u32()?,
                    last_seq: r.u32()?,
                    base_offset: Offset(r.u64()?),
                    last_offset: Offset(r.u64()?),
                });
            }
            producers.restore(id, epoch, &batches);
        }
        if version >= 2 {
            let mut ongoing = Vec::new();
            for _ in 0..r.u32()? {
                ongoing.push((r.u64()?, Offset(r.u64()?)));
            }
            let mut aborted = Vec::new();
            for _ in 0..r.u32()? {
                aborted.push(AbortedTxn {
                    producer_id: r.u64()?,
                    first_offset: Offset(r.u64()?),
                    last_offset: Offset(r.u64()?),
                });
            }
            producers.restore_transactions(ongoing, aborted);
        }
        if version >= 3 {
            let mut epochs = Vec::new();
            for _ in 0..r.u32()? {
                epochs.push((r.u64()?, r.u32()? as i32));
            }
            producers.restore_coordinator_epochs(epochs);
        }
        if !r.0.is_empty() {
            return Err(format!("{} bytes after the producers", r.0.len()));
        }
        Ok(Checkpoint {
            segment,
            pos,
            next_offset,
            index,
            producers,
            clean,
        })
    }

    /// The checkpoint in partition directory `dir`, if there is a sound one.
    pub fn read(dir: &Path) -> Option<Checkpoint> {
        let bytes = match std::fs::read(path(dir)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read the recovery checkpoint; recovering from the segments");
                return None;
            }
        };
        match Checkpoint::decode(&bytes) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "damaged recovery checkpoint ignored; recovering from the segments");
                None
            }
        }
    }

    /// Writes the checkpoint durably and atomically (blocking: run it off the reactor).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        crate::log::index::write_file_atomically(&path(dir), &self.encode())
    }
}

/// Big-endian reads from a byte slice, each failing cleanly at its end.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{self, build_batch};

    fn sample() -> Checkpoint {
        let mut index = IndexBuilder::new(100);
        let mut producers = ProducerStateTable::new();
        let mut pos = 0u64;
        let mut offset = 40u64;
        for (i, ts) in [5i64, 9, 7, 12].into_iter().enumerate() {
            let producer = (i % 2 == 0).then_some(batch::ProducerBatchInfo {
                producer_id: 7,
                epoch: 3,
                base_sequence: i as u32,
            });
            let b = build_batch(Offset(offset), &[(None, Some(b"value"))], ts, producer);
            let info = batch::validate(&b).unwrap();
            index.on_batch(FilePos(pos), &info, Offset(40));
            producers.rebuild_from(&info, None);
            pos += u64::from(info.len);
            offset = info.next_offset().0;
        }
        let aborted = AbortedTxn {
            producer_id: 9,
            first_offset: Offset(20),
            last_offset: Offset(30),
        };
        producers.restore_transactions([(7, Offset(41)), (11, Offset(42))], vec![aborted]);
        producers.restore_coordinator_epochs([(7, 6)]);
        Checkpoint {
            segment: Offset(40),
            pos: FilePos(pos),
            next_offset: Offset(offset),
            index,
            producers,
            clean: true,
        }
    }

    #[test]
    fn round_trips_and_resumes_the_index_builder() {
        let c = sample();
        let d = Checkpoint::decode(&c.encode()).unwrap();
        let open = |t: &ProducerStateTable| {
            let mut v: Vec<_> = t.ongoing().collect();
            v.sort();
            v
        };
        assert_eq!(open(&d.producers), vec![(7, Offset(41)), (11, Offset(42))]);
        assert_eq!(d.producers.aborted(), c.producers.aborted());
        assert_eq!(d.producers.first_unstable(), Some(Offset(41)));
        assert_eq!(
            (d.segment, d.pos, d.next_offset, d.clean),
            (c.segment, c.pos, c.next_offset, true)
        );
        assert_eq!(d.index.offset_index(), c.index.offset_index());
        assert_eq!(d.index.time_index(), c.index.time_index());
        assert_eq!(d.index.resume_state(), c.index.resume_state());
        assert_eq!(d.producers.get(7), c.producers.get(7));
        assert_eq!(d.producers.get(7).unwrap().coordinator_epoch(), 6);
        assert_eq!(d.producers.len(), 1);
        assert_eq!(d.producers.get(7).unwrap().batches().len(), 2);
    }

    #[test]
    fn any_damage_is_refused() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            assert!(Checkpoint::decode(&bad).is_err(), "flip at byte {i}");
        }
        for n in 0..bytes.len() {
            assert!(Checkpoint::decode(&bytes[..n]).is_err(), "cut at {n}");
        }
    }

    #[test]
    fn written_and_read_back_from_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Checkpoint::read(dir.path()).is_none(), "none yet");
        sample().write(dir.path()).unwrap();
        let back = Checkpoint::read(dir.path()).expect("a checkpoint");
        assert_eq!(back.next_offset, sample().next_offset);
        std::fs::write(path(dir.path()), b"garbage").unwrap();
        assert!(Checkpoint::read(dir.path()).is_none(), "damaged: ignored");
    }
}
