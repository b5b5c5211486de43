//! Finding the valid prefix of a segment's `.log` after a restart.
//!
//! Segment files are preallocated (fallocate that also extends i_size) and
//! written with O_DIRECT, so the file length says nothing about how much of it
//! holds data: the logical end is found by walking the batches from byte 0.
//!
//! [`scan_segment`] reads the file front to back in [`SCAN_CHUNK_BYTES`]
//! chunks and accepts a batch only if all of these hold:
//!
//! - its 61-byte header is present and parses (magic 2, batchLength >= 49,
//!   non-negative counts, base offset and producer fields);
//! - all `12 + batchLength` bytes lie within the file;
//! - the CRC-32C over bytes @21.. of the batch matches the stored one, computed
//!   piecewise so a batch larger than a chunk never needs more than a chunk of
//!   memory (a corrupt length can claim up to 2 GiB);
//! - its base offset is exactly the previous batch's next offset (the first
//!   must equal the segment's base offset).
//!
//! The scan stops at the first position where any of these fails, and reports
//! why ([`StopReason`]). Everything before that position is the log; the caller
//! truncates (or, for preallocated files, simply resumes appending) there,
//! rebuilds indexes and producer state from the batches handed to `on_batch`,
//! and never serves bytes past [`ScanOutcome::valid_len`].
//!
//! A header whose first 12 bytes are zero (baseOffset 0 and batchLength 0) is
//! the untouched preallocated tail, reported as [`StopReason::EndOfData`]; so
//! is a tail shorter than a header that is all zeros. A torn write into
//! preallocated space usually shows up as a CRC mismatch rather than as
//! [`StopReason::Torn`], since the space after it is zeros, not end of file.
//!
//! The file is read with positioned reads through the page cache: open it
//! without O_DIRECT for recovery (the scan happens once, at startup).

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::log::batch::{
    self, BATCH_HEADER_LEN, BatchError, BatchInfo, CRC_COVERED_FROM, LOG_OVERHEAD,
};
use crate::types::{FilePos, Offset};

/// Bytes read per system call: large enough that a 1 GiB segment is read in
/// 256 calls, small enough to stay out of the way of the shards' memory.
pub const SCAN_CHUNK_BYTES: usize = 4 << 20;

/// Why a scan stopped before the end of the file.
#[derive(Clone, Debug, PartialEq)]
pub enum StopReason {
    /// Zeros where the next header would be: preallocated, never written.
    EndOfData,
    /// The batch at `pos` runs past the end of the file.
    Torn { pos: FilePos },
    /// The batch at `pos` is malformed or fails its CRC.
    Corrupt { pos: FilePos, error: BatchError },
    /// The batch at `pos` is intact but starts before the offset after the
    /// previous batch.
    OffsetGap {
        pos: FilePos,
        expected: Offset,
        found: Offset,
    },
}

/// The valid prefix of a segment.
#[derive(Clone, Debug, PartialEq)]
pub struct ScanOutcome {
    /// End of the last valid batch: the segment's logical length.
    pub valid_len: FilePos,
    /// Offset the next appended batch gets.
    pub next_offset: Offset,
    /// `None` when the batches end exactly at the file's length.
    pub stop: Option<StopReason>,
}

/// First read of a scan. Reads double from here up to the chunk size, so a
/// scan that finds the end of the data at once (a segment reopened at its
/// recovery checkpoint, an empty one) reads kilobytes, not megabytes of
/// preallocated zeros.
const FIRST_READ_BYTES: usize = 16 << 10;

/// Sequential reader keeping a window of the file in memory.
struct ChunkReader<'f> {
    file: &'f File,
    file_len: u64,
    chunk_bytes: usize,
    /// Size of the next read: doubles up to `chunk_bytes`.
    next_read: usize,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    start: u64,
}

impl<'f> ChunkReader<'f> {
    fn new(file: &'f File, file_len: u64, chunk_bytes: usize, start: u64) -> Self {
        assert!(chunk_bytes > 0, "scan chunk must be at least one byte");
        ChunkReader {
            file,
            file_len,
            chunk_bytes,
            next_read: FIRST_READ_BYTES.min(chunk_bytes),
            buf: Vec::new(),
            start,
        }
    }

    /// Bytes `[pos, pos + len)`, which must lie within the file and must not
    /// start before the previous window (the scan only moves forward).
    fn window(&mut self, pos: u64, len: usize) -> std::io::Result<&[u8]> {
        assert!(
            pos >= self.start && pos + len as u64 <= self.file_len,
            "scan read [{pos}, +{len}) outside [{}, {})",
            self.start,
            self.file_len
        );
        if pos + len as u64 > self.start + self.buf.len() as u64 {
            self.refill(pos, len)?;
        }
        let at = (pos - self.start) as usize;
        Ok(&self.buf[at..at + len])
    }

    /// Keeps the bytes from `pos` on and reads at least up to `pos + len`.
    fn refill(&mut self, pos: u64, len: usize) -> std::io::Result<()> {
        let keep_from = ((pos - self.start) as usize).min(self.buf.len());
        self.buf.drain(..keep_from);
        self.start += keep_from as u64;
        let have = self.buf.len();
        let want_end = (pos + len.max(self.next_read) as u64).min(self.file_len);
        self.next_read = (self.next_read * 2).min(self.chunk_bytes);
        let want = (want_end - self.start) as usize;
        self.buf.resize(want, 0);
        self.file
            .read_exact_at(&mut self.buf[have..], self.start + have as u64)
    }
}

/// Walks the batches of a segment whose first offset is `base`, calling
/// `on_batch` with the position and header of each valid batch, in order,
/// and returns where the valid data ends. See the module doc for the checks.
/// `file_len` is the file's size (or less, to ignore a tail); reading past the
/// real end of the file is an I/O error (`UnexpectedEof`).
pub fn scan_segment(
    file: &File,
    file_len: u64,
    base: Offset,
    on_batch: impl FnMut(FilePos, &BatchInfo),
) -> std::io::Result<ScanOutcome> {
    scan_with_chunk(
        file,
        file_len,
        (FilePos(0), base),
        SCAN_CHUNK_BYTES,
        on_batch,
    )
}

/// [`scan_segment`] from a known batch boundary on: `from` is the position
/// and offset of the next batch, as a recovery checkpoint recorded them.
pub fn scan_segment_from(
    file: &File,
    file_len: u64,
    from: (FilePos, Offset),
    on_batch: impl FnMut(FilePos, &BatchInfo),
) -> std::io::Result<ScanOutcome> {
    scan_with_chunk(file, file_len, from, SCAN_CHUNK_BYTES, on_batch)
}

fn scan_with_chunk(
    file: &File,
    file_len: u64,
    (start, first_offset): (FilePos, Offset),
    chunk_bytes: usize,
    mut on_batch: impl FnMut(FilePos, &BatchInfo),
) -> std::io::Result<ScanOutcome> {
    assert!(
        start.0 <= file_len,
        "scan from {} past the file's end {file_len}",
        start.0
    );
    let mut reader = ChunkReader::new(file, file_len, chunk_bytes, start.0);
    let (mut pos, mut next_offset) = (start.0, first_offset);
    let stop = loop {
        if pos == file_len {
            break None;
        }
        match next_batch(&mut reader, pos, next_offset)? {
            Ok(info) => {
                on_batch(FilePos(pos), &info);
                pos += u64::from(info.len);
                next_offset = info.next_offset();
            }
            Err(reason) => break Some(reason),
        }
    };
    Ok(ScanOutcome {
        valid_len: FilePos(pos),
        next_offset,
        stop,
    })
}

/// The batch at `pos` if it is valid and starts at `expected`, else why not.
fn next_batch(
    reader: &mut ChunkReader<'_>,
    pos: u64,
    expected: Offset,
) -> std::io::Result<Result<BatchInfo, StopReason>> {
    let info = match read_header(reader, pos)? {
        Ok(info) => info,
        Err(reason) => return Ok(Err(reason)),
    };
    let at = FilePos(pos);
    if pos + u64::from(info.len) > reader.file_len {
        return Ok(Err(StopReason::Torn { pos: at }));
    }
    if let Err(error) = check_crc(reader, pos, &info)? {
        return Ok(Err(StopReason::Corrupt { pos: at, error }));
    }
    // Forward gaps are a compacted log's (see `cleaner`); going back is not.
    if info.base_offset < expected {
        let (found, pos) = (info.base_offset, at);
        return Ok(Err(StopReason::OffsetGap {
            pos,
            expected,
            found,
        }));
    }
    Ok(Ok(info))
}

/// Parses the header at `pos`, telling preallocated zeros and a torn tail
/// apart from corruption.
fn read_header(
    reader: &mut ChunkReader<'_>,
    pos: u64,
) -> std::io::Result<Result<BatchInfo, StopReason>> {
    let remaining = reader.file_len - pos;
    let len = BATCH_HEADER_LEN.min(usize::try_from(remaining).unwrap_or(usize::MAX));
    let header = reader.window(pos, len)?;
    // baseOffset 0 with batchLength 0, or a short all-zero tail.
    if header[..LOG_OVERHEAD.min(len)].iter().all(|&b| b == 0) {
        return Ok(Err(StopReason::EndOfData));
    }
    if len < BATCH_HEADER_LEN {
        return Ok(Err(StopReason::Torn { pos: FilePos(pos) }));
    }
    Ok(
        batch::parse_header(header).map_err(|error| StopReason::Corrupt {
            pos: FilePos(pos),
            error,
        }),
    )
}

/// Recomputes the CRC-32C of the batch at `pos` a chunk at a time.
fn check_crc(
    reader: &mut ChunkReader<'_>,
    pos: u64,
    info: &BatchInfo,
) -> std::io::Result<Result<(), BatchError>> {
    let stored = batch::stored_crc(reader.window(pos, BATCH_HEADER_LEN)?);
    let end = pos + u64::from(info.len);
    let (mut at, mut computed) = (pos + CRC_COVERED_FROM as u64, 0u32);
    while at < end {
        let n = (end - at).min(reader.chunk_bytes as u64) as usize;
        computed = crc32c::crc32c_append(computed, reader.window(at, n)?);
        at += n as u64;
    }
    if stored != computed {
        return Ok(Err(BatchError::CrcMismatch { stored, computed }));
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::build_batch;
    use proptest::prelude::*;
    use std::io::Write;

    const BASE: u64 = 1_000;

    /// A written batch: where it starts and what it is.
    #[derive(Clone, Debug)]
    struct Written {
        pos: u64,
        info: BatchInfo,
    }

    /// Builds contiguous batches from `(record count, value bytes)` specs.
    fn segment(specs: &[(usize, usize)]) -> (Vec<u8>, Vec<Written>) {
        let (mut bytes, mut written, mut offset) = (Vec::new(), Vec::new(), BASE);
        for &(count, value_len) in specs {
            let value = vec![0xab; value_len];
            let records = vec![(None, Some(&value[..])); count];
            let b = build_batch(Offset(offset), &records, offset as i64, None);
            let info = batch::validate(&b).unwrap();
            written.push(Written {
                pos: bytes.len() as u64,
                info,
            });
            offset = info.next_offset().0;
            bytes.extend_from_slice(&b);
        }
        (bytes, written)
    }

    fn scan(bytes: &[u8], chunk: usize) -> (ScanOutcome, Vec<(FilePos, BatchInfo)>) {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        let mut seen = Vec::new();
        let out = scan_with_chunk(
            &f,
            bytes.len() as u64,
            (FilePos(0), Offset(BASE)),
            chunk,
            |p, i| seen.push((p, *i)),
        )
        .unwrap();
        (out, seen)
    }

    /// The scan reported exactly the first `n` written batches.
    fn assert_prefix(
        out: &ScanOutcome,
        seen: &[(FilePos, BatchInfo)],
        written: &[Written],
        n: usize,
    ) {
        assert_eq!(seen.len(), n, "batches reported");
        for ((pos, info), w) in seen.iter().zip(written) {
            // The leader epoch is outside the checksum (a flip there is read
            // as it is, like Kafka's); every other field must match.
            let info = BatchInfo {
                leader_epoch: w.info.leader_epoch,
                ..*info
            };
            assert_eq!((pos.0, &info), (w.pos, &w.info));
        }
        let end = written[..n].last();
        assert_eq!(
            out.valid_len,
            FilePos(end.map_or(0, |w| w.pos + u64::from(w.info.len)))
        );
        assert_eq!(
            out.next_offset,
            end.map_or(Offset(BASE), |w| w.info.next_offset())
        );
    }

    /// Number of written batches that end at or before byte `limit`.
    fn intact_before(written: &[Written], limit: u64) -> usize {
        written
            .iter()
            .take_while(|w| w.pos + u64::from(w.info.len) <= limit)
            .count()
    }

    #[test]
    fn empty_and_zero_filled_files_hold_no_data() {
        let (out, seen) = scan(&[], 64);
        assert_eq!(
            (out.valid_len, out.next_offset, out.stop),
            (FilePos(0), Offset(BASE), None)
        );
        assert!(seen.is_empty());
        let (out, _) = scan(&[0; 4096], 64);
        assert_eq!(
            (out.valid_len, out.stop),
            (FilePos(0), Some(StopReason::EndOfData))
        );
    }

    #[test]
    fn batches_larger_than_a_chunk_are_read_whole() {
        let (mut bytes, written) = segment(&[(3, 5000), (1, 10), (2, 9000)]);
        bytes.extend_from_slice(&[0; 100]);
        let (out, seen) = scan(&bytes, 1000);
        assert_prefix(&out, &seen, &written, 3);
        assert_eq!(out.stop, Some(StopReason::EndOfData));
    }

    #[test]
    fn a_scan_from_a_checkpoint_sees_only_what_follows_it() {
        let (mut bytes, written) = segment(&[(3, 10), (1, 5000), (2, 7), (4, 100)]);
        let end = bytes.len() as u64;
        bytes.extend_from_slice(&[0u8; 64 << 10]);
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&bytes).unwrap();
        let from = &written[2];
        let mut seen = Vec::new();
        let out = scan_segment_from(
            &f,
            bytes.len() as u64,
            (FilePos(from.pos), from.info.base_offset),
            |p, i| seen.push((p.0, *i)),
        )
        .unwrap();
        let expected: Vec<_> = written[2..].iter().map(|w| (w.pos, w.info)).collect();
        assert_eq!(seen, expected);
        assert_eq!(out.valid_len, FilePos(end));
        assert_eq!(out.stop, Some(StopReason::EndOfData));
        // At the end of the data nothing is read past the first small window.
        let out = scan_segment_from(
            &f,
            bytes.len() as u64,
            (FilePos(end), out.next_offset),
            |_, _| panic!("no batch after the end"),
        )
        .unwrap();
        assert_eq!(
            (out.valid_len, out.stop),
            (FilePos(end), Some(StopReason::EndOfData))
        );
    }

    #[test]
    fn an_offset_going_back_stops_the_scan_a_gap_does_not() {
        let (mut bytes, written) = segment(&[(2, 10), (2, 10)]);
        let second = written[1].pos as usize;
        batch::set_base_offset(&mut bytes[second..], Offset(BASE + 1));
        let (out, seen) = scan(&bytes, 4096);
        assert_prefix(&out, &seen, &written, 1);
        let expected = StopReason::OffsetGap {
            pos: FilePos(written[1].pos),
            expected: Offset(BASE + 2),
            found: Offset(BASE + 1),
        };
        assert_eq!(out.stop, Some(expected));
        // A compacted log's gap: the scan goes on past it.
        batch::set_base_offset(&mut bytes[second..], Offset(BASE + 5));
        let (out, seen) = scan(&bytes, 4096);
        assert_eq!((out.stop, seen.len()), (None, 2));
        assert_eq!(out.next_offset, Offset(BASE + 7));
    }

    fn specs() -> impl Strategy<Value = Vec<(usize, usize)>> {
        proptest::collection::vec((1..5usize, 0..400usize), 1..12)
    }

    fn chunk() -> impl Strategy<Value = usize> {
        prop_oneof![Just(SCAN_CHUNK_BYTES), 1..700usize]
    }

    /// Is byte `at` inside a batch's partition leader epoch, the one field that
    /// is neither checked nor checksummed?
    fn in_leader_epoch(written: &[Written], at: u64) -> bool {
        written
            .iter()
            .any(|w| (w.pos + 12..w.pos + 16).contains(&at))
    }

    proptest! {
        #[test]
        fn truncated_file_keeps_every_whole_batch(
            specs in specs(), cut in any::<prop::sample::Index>(), chunk in chunk(),
        ) {
            let (bytes, written) = segment(&specs);
            let cut = cut.index(bytes.len() + 1);
            let (out, seen) = scan(&bytes[..cut], chunk);
            let n = intact_before(&written, cut as u64);
            assert_prefix(&out, &seen, &written, n);
            let at_boundary = out.valid_len.0 == cut as u64;
            prop_assert_eq!(out.stop.is_none(), at_boundary);
        }

        #[test]
        fn flipped_byte_truncates_at_its_batch(
            specs in specs(), at in any::<prop::sample::Index>(), xor in 1..=255u8, chunk in chunk(),
        ) {
            let (mut bytes, written) = segment(&specs);
            let at = at.index(bytes.len());
            bytes[at] ^= xor;
            let (out, seen) = scan(&bytes, chunk);
            // The base offset is not checksummed either: lowered, it stops the
            // scan at its batch; raised, it reads as a compacted log's gap and
            // the next batch, which then goes back, stops it.
            if let Some(i) = written.iter().position(|w| (w.pos..w.pos + 8).contains(&(at as u64))) {
                let p = written[i].pos as usize;
                let now = i64::from_be_bytes(bytes[p..p + 8].try_into().unwrap());
                let n = if now > written[i].info.base_offset.0 as i64 { i + 1 } else { i };
                prop_assert_eq!(seen.len(), n);
                prop_assert_eq!(out.stop.is_none(), n == written.len());
                return Ok(());
            }
            let n = if in_leader_epoch(&written, at as u64) {
                written.len()
            } else {
                written.iter().take_while(|w| w.pos + u64::from(w.info.len) <= at as u64).count()
            };
            assert_prefix(&out, &seen, &written, n);
            prop_assert_eq!(out.stop.is_none(), n == written.len());
        }

        #[test]
        fn garbage_or_zeros_after_the_end_are_ignored(
            specs in specs(),
            tail in proptest::collection::vec(any::<u8>(), 1..300),
            zeros in any::<bool>(),
            chunk in chunk(),
        ) {
            let (mut bytes, written) = segment(&specs);
            let tail = if zeros { vec![0; tail.len()] } else { tail };
            bytes.extend_from_slice(&tail);
            let (out, seen) = scan(&bytes, chunk);
            assert_prefix(&out, &seen, &written, written.len());
            prop_assert!(out.stop.is_some());
            if zeros {
                prop_assert_eq!(out.stop, Some(StopReason::EndOfData));
            }
        }
    }
}
