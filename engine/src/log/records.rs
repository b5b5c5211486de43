//! Reading the records of an *uncompressed* v2 batch — what the broker needs for
//! the batches it writes itself (`__consumer_offsets`). Client batches are never
//! decoded by the engine.
//!
//! Record layout (varints are zigzag LEB128): length, attributes i8,
//! timestampDelta, offsetDelta, keyLength (-1 = null), key, valueLength, value,
//! headerCount, headers.

use crate::log::batch::{BATCH_HEADER_LEN, BatchError, BatchInfo};
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
    let bad = || BatchError::BadLength(info.len as i32);
    let mut pos = BATCH_HEADER_LEN;
    // The count comes from the bytes: never trust it for an allocation (a record
    // takes at least 7 bytes, so the batch's length bounds how many there can be).
    let mut out = Vec::with_capacity((info.record_count as usize).min(end / 7));
    while pos < end {
        let len = varlong(batch, &mut pos).ok_or_else(bad)?;
        let rec_end = pos
            .checked_add(usize::try_from(len).map_err(|_| bad())?)
            .ok_or_else(bad)?;
        if rec_end > end {
            return Err(bad());
        }
        let body = &batch[..rec_end];
        let mut p = pos + 1; // attributes
        varlong(body, &mut p).ok_or_else(bad)?; // timestamp delta
        let delta = varlong(body, &mut p).ok_or_else(bad)?;
        let key = field(body, &mut p).ok_or_else(bad)?;
        let value = field(body, &mut p).ok_or_else(bad)?;
        let offset = Offset(info.base_offset.0 + u64::try_from(delta).map_err(|_| bad())?);
        out.push(RecordView { offset, key, value });
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
