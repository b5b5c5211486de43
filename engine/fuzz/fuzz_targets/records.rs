//! `records::uncompressed_records` on a validated batch: what the broker uses
//! to read back its own `__consumer_offsets` batches; and, for any codec,
//! what the log cleaner and the compacted topics' key check do
//! (`records_section`, `record_spans`, `rebuild_batch`).
//!
//! Input: `mode (1) | batch bytes`. mode bit 0: make the batch end at the end
//! of the input and recompute its CRC (so the records, not the checksum, get
//! fuzzed); bits 4-7: also decode a prefix cut at (mode >> 4)/16 of the batch.
#![no_main]

use brook_engine::log::batch::{self, BATCH_HEADER_LEN, BatchError};
use brook_engine::log::records::{self, RecordView, uncompressed_records};
use brook_engine::types::Offset;
use fuzz_util::{HEADER_LEN, fit_length, fix_crc, mode_and_rest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((mode, rest)) = mode_and_rest(input) else {
        return;
    };
    let mut data = rest.to_vec();
    if mode & 1 != 0 && data.len() >= HEADER_LEN {
        fit_length(&mut data);
        let len = data.len();
        fix_crc(&mut data, len);
    }
    let Ok(info) = batch::validate(&data) else {
        return;
    };
    let len = info.len as usize;
    any_codec(&data[..len], &info);
    let result = uncompressed_records(&data, &info);
    // Bytes after the batch are never read.
    assert_eq!(uncompressed_records(&data[..len], &info), result);
    let cut = BATCH_HEADER_LEN + (len - BATCH_HEADER_LEN) * usize::from(mode >> 4) / 16;
    let _ = uncompressed_records(&data[..cut], &info);
    match result {
        Err(BatchError::BadCompression(c)) => assert_eq!(c, info.compression),
        Err(BatchError::BadLength(_) | BatchError::BadRecordCount { .. }) => {
            assert_eq!(info.compression, 0)
        }
        Err(e) => panic!("unexpected error {e:?}"),
        Ok(records) => {
            assert_eq!(info.compression, 0);
            check_records(&data[..len], info.base_offset, &records);
            round_trip(info.base_offset, &records);
        }
    }
});

/// What the log cleaner does with a client batch of any codec: decompress
/// (bounded), find the records, rebuild the batch from them; the rebuilt
/// batch validates and holds the same records.
fn any_codec(batch: &[u8], info: &batch::BatchInfo) {
    let Ok(body) = records::records_section(batch, info, 1 << 20) else {
        return;
    };
    assert!(body.len() <= 1 << 20);
    let Ok(spans) = records::record_spans(&body, info) else {
        return;
    };
    for s in &spans {
        assert!(s.raw.end <= body.len() && s.raw.start < s.raw.end);
        for f in [&s.key, &s.value].into_iter().flatten() {
            assert!(s.raw.start <= f.start && f.end <= s.raw.end);
        }
    }
    let raws: Vec<&[u8]> = spans.iter().map(|s| &body[s.raw.clone()]).collect();
    let Ok(rebuilt) = records::rebuild_batch(batch, info, &raws) else {
        return;
    };
    let again = batch::validate(&rebuilt).expect("a rebuilt batch validates");
    assert_eq!(again.record_count as usize, spans.len());
    let body2 = records::records_section(&rebuilt, &again, 1 << 20).expect("rebuilt batch decompresses");
    assert_eq!(body2, raws.concat());
}

/// Every key and value lies inside the batch's records section.
fn check_records(batch: &[u8], base: Offset, records: &[RecordView<'_>]) {
    let section = batch[BATCH_HEADER_LEN..].as_ptr_range();
    assert!(records.len() <= batch.len() - BATCH_HEADER_LEN);
    for r in records {
        assert!(r.offset >= base);
        for f in [r.key, r.value].into_iter().flatten() {
            let p = f.as_ptr_range();
            assert!(section.start <= p.start && p.end <= section.end);
        }
    }
}

/// Re-encoding what was read and reading it again gives the same records.
fn round_trip(base: Offset, records: &[RecordView<'_>]) {
    if records.is_empty() || base.0 > i64::MAX as u64 / 2 {
        return;
    }
    let kvs: Vec<batch::KeyValue<'_>> = records.iter().map(|r| (r.key, r.value)).collect();
    let rebuilt = batch::build_batch(base, &kvs, 0, None);
    let info = batch::validate(&rebuilt).expect("build_batch output validates");
    assert_eq!(info.record_count as usize, records.len());
    let again = uncompressed_records(&rebuilt, &info).expect("build_batch output decodes");
    assert_eq!(again.len(), records.len());
    for (i, (a, r)) in again.iter().zip(records).enumerate() {
        assert_eq!((a.key, a.value), (r.key, r.value));
        assert_eq!(a.offset, Offset(base.0 + i as u64));
    }
}
