//! Reading the records of a v2 batch: the batches the broker writes itself
//! (`__consumer_offsets`, uncompressed), and, for the log cleaner alone,
//! client batches (decompressed with `compression`) and their rebuilding
//! from the records the cleaner keeps. Nothing on the produce or fetch path
//! decodes a client's records.
//!
//! Record layout (varints are zigzag LEB128): length, attributes i8,
//! timestampDelta, offsetDelta, keyLength (-1 = null), key, valueLength, value,
//! headerCount, headers.

use std::ops::Range;

use crate::log::batch::{
    BATCH_HEADER_LEN, BatchError, BatchInfo, CRC_AT, CRC_COVERED_FROM, LENGTH_AT, LOG_OVERHEAD,
    RECORDS_COUNT_AT,
};
use crate::log::compression::CodecError;
use crate::types::Offset;

/// One record, borrowing from the batch.
#[derive(Debug, PartialEq)]
pub struct RecordView<'a> {
    pub offset: Offset,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

fn varlong(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let (mut z, mut shift) = (0u64, 0u32);
    loop {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        z |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some((z >> 1) as i64 ^ -((z & 1) as i64));
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

fn field<'a>(buf: &'a [u8], pos: &mut usize) -> Option<Option<&'a [u8]>> {
    let len = varlong(buf, pos)?;
    if len < 0 {
        return Some(None);
    }
    let end = pos.checked_add(usize::try_from(len).ok()?)?;
    let f = buf.get(*pos..end)?;
    *pos = end;
    Some(Some(f))
}

/// The records of a validated, uncompressed batch.
pub fn uncompressed_records<'a>(
    batch: &'a [u8],
    info: &BatchInfo,
) -> Result<Vec<RecordView<'a>>, BatchError> {
    if info.compression != 0 {
        return Err(BatchError::BadCompression(info.compression));
    }
    let end = info.len as usize;
    if batch.len() < end {
        return Err(BatchError::Truncated {
            needed: end,
            available: batch.len(),
        });
    }
    let body = &batch[BATCH_HEADER_LEN..end];
    Ok(record_spans(body, info)?
        .into_iter()
        .map(|r| RecordView {
            offset: r.offset,
            key: r.key.map(|k| &body[k]),
            value: r.value.map(|v| &body[v]),
        })
        .collect())
}

/// Where one record lies in a batch's (decompressed) records section.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordSpan {
    pub offset: Offset,
    pub key: Option<Range<usize>>,
    pub value: Option<Range<usize>>,
    /// The whole record, its length prefix included: records keep their
    /// offset and timestamp deltas, so a batch with the same header can be
    /// rebuilt from any subset of them.
    pub raw: Range<usize>,
}

/// The records of `body`, the (decompressed) records section of the batch
/// `info` describes; exactly `info.record_count` of them.
pub fn record_spans(body: &[u8], info: &BatchInfo) -> Result<Vec<RecordSpan>, BatchError> {
    let bad = || BatchError::BadLength(info.len as i32);
    let end = body.len();
    let mut pos = 0;
    // The count comes from the bytes: never trust it for an allocation (a record
    // takes at least 7 bytes, so the section's length bounds how many there can be).
    let mut out = Vec::with_capacity((info.record_count as usize).min(end / 7));
    while pos < end {
        let start = pos;
        let len = varlong(body, &mut pos).ok_or_else(bad)?;
        let rec_end = pos
            .checked_add(usize::try_from(len).map_err(|_| bad())?)
            .ok_or_else(bad)?;
        if rec_end > end {
            return Err(bad());
        }
        let rec = &body[..rec_end];
        let mut p = pos + 1; // attributes
        varlong(rec, &mut p).ok_or_else(bad)?; // timestamp delta
        let delta = varlong(rec, &mut p).ok_or_else(bad)?;
        let key = span(rec, &mut p).ok_or_else(bad)?;
        let value = span(rec, &mut p).ok_or_else(bad)?;
        let offset = Offset(info.base_offset.0 + u64::try_from(delta).map_err(|_| bad())?);
        out.push(RecordSpan {
            offset,
            key,
            value,
            raw: start..rec_end,
        });
        pos = rec_end;
    }
    if out.len() != info.record_count as usize {
        return Err(BatchError::BadRecordCount {
            record_count: info.record_count as i32,
            last_offset_delta: info.last_offset_delta as i32,
        });
    }
    Ok(out)
}

/// A length-prefixed field's range (`None` for null).
fn span(buf: &[u8], pos: &mut usize) -> Option<Option<Range<usize>>> {
    let f = field(buf, pos)?;
    Some(f.map(|f| *pos - f.len()..*pos))
}

/// The records section of a validated batch, decompressed (at most `limit`
/// bytes of it).
pub fn records_section(
    batch: &[u8],
    info: &BatchInfo,
    limit: usize,
) -> Result<Vec<u8>, CodecError> {
    let section = &batch[BATCH_HEADER_LEN..info.len as usize];
    crate::log::compression::decompress(info.compression, section, limit)
}

/// The batch `batch` rebuilt to hold only the records `raw` (each a whole
/// record from its records section, in offset order), compressed with the
/// batch's own codec. Every header field stays — base offset, last offset
/// delta, timestamps, producer fields, attributes — except the length, the
/// record count and the CRC, so offsets and the producer's sequence range
/// are preserved.
pub fn rebuild_batch(batch: &[u8], info: &BatchInfo, raw: &[&[u8]]) -> Result<Vec<u8>, CodecError> {
    let plain: Vec<u8> = raw.concat();
    let records = crate::log::compression::compress(info.compression, &plain)?;
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + records.len());
    out.extend_from_slice(&batch[..BATCH_HEADER_LEN]);
    out.extend_from_slice(&records);
    let length = (out.len() - LOG_OVERHEAD) as i32;
    out[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&length.to_be_bytes());
    out[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].copy_from_slice(&(raw.len() as i32).to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_COVERED_FROM..]);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{build_batch, validate};

    #[test]
    fn reads_back_what_build_batch_wrote() {
        let b = build_batch(
            Offset(40),
            &[
                (Some(b"k1"), Some(b"v1")),
                (None, None),
                (Some(b""), Some(b"v3")),
            ],
            5,
            None,
        );
        let info = validate(&b).unwrap();
        let recs = uncompressed_records(&b, &info).unwrap();
        assert_eq!(
            recs,
            vec![
                RecordView {
                    offset: Offset(40),
                    key: Some(b"k1"),
                    value: Some(b"v1")
                },
                RecordView {
                    offset: Offset(41),
                    key: None,
                    value: None
                },
                RecordView {
                    offset: Offset(42),
                    key: Some(b""),
                    value: Some(b"v3")
                },
            ]
        );
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        let b = build_batch(Offset(0), &[(Some(b"key"), Some(b"value"))], 5, None);
        let info = validate(&b).unwrap();
        for cut in 0..b.len() {
            assert!(
                uncompressed_records(&b[..cut], &info).is_err(),
                "a batch cut to {cut} of {} bytes read as complete",
                b.len()
            );
        }
        assert_eq!(uncompressed_records(&b, &info).unwrap().len(), 1);
        // A batch whose header claims more records than its bytes hold.
        let short = BatchInfo {
            record_count: 2,
            ..info
        };
        assert!(uncompressed_records(&b, &short).is_err());
    }
}
