//! RecordBatch v2 header parsing and validation: `parse_header`,
//! `parse_incoming`, `validate`, `split_incoming` (the Produce path) and the
//! two broker rewrites outside the CRC.
//!
//! Input: `mode (1) | max_batch_bytes (u32 BE) | bytes`.
//! mode bit 0: recompute the CRC of every batch; bit 1: also shorten the
//! batchLength of a batch that runs past the end.
#![no_main]

use brook_engine::log::batch::{self, BATCH_HEADER_LEN, BatchError, BatchInfo, LOG_OVERHEAD, MAGIC_V2};
use brook_engine::types::Offset;
use fuzz_util::{CRC_FROM, be_i32, be_i64, fix_batches};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    if input.len() < 5 {
        return;
    }
    let mode = input[0];
    let max = u32::from_be_bytes(input[1..5].try_into().unwrap());
    let mut data = input[5..].to_vec();
    if mode & 1 != 0 {
        fix_batches(&mut data, mode & 2 != 0);
    }
    check_headers(&data);
    check_validate(&data, mode);
    check_split(&data, max);
});

/// Header fields read back from the raw bytes agree with what the parser says.
fn check_info(data: &[u8], info: &BatchInfo) {
    assert!(data.len() >= BATCH_HEADER_LEN);
    assert_eq!(data[16], MAGIC_V2);
    let length = be_i32(data, 8);
    assert!(length >= 49, "accepted batchLength {length}");
    assert_eq!(info.len as usize, LOG_OVERHEAD + length as usize);
    assert!(info.len as usize >= BATCH_HEADER_LEN);
    assert_eq!(i64::from(info.record_count), i64::from(be_i32(data, 57)));
    assert_eq!(
        i64::from(info.last_offset_delta),
        i64::from(be_i32(data, 23))
    );
    assert!(info.record_count <= i32::MAX as u32);
    assert!(info.last_offset_delta <= i32::MAX as u32);
    assert!(info.compression <= 4);
    assert_eq!(info.first_timestamp.0, be_i64(data, 27));
    assert_eq!(info.leader_epoch, be_i32(data, 12));
    assert_eq!(info.max_timestamp.0, be_i64(data, 35));
    let attributes = i16::from_be_bytes([data[21], data[22]]);
    assert_eq!(info.compression as i16, attributes & 0b111);
    assert_eq!(info.is_transactional, attributes & 0x10 != 0);
    assert_eq!(info.is_control, attributes & 0x20 != 0);
    match info.producer {
        None => assert_eq!(be_i64(data, 43), -1),
        Some(p) => {
            assert_eq!(p.producer_id as i64, be_i64(data, 43));
            assert!(p.producer_id <= i64::MAX as u64);
            assert!(p.epoch <= i16::MAX as u16);
            // NO_SEQUENCE (-1) only on transactional batches (markers and
            // coordinator batches); clients' are refused on append.
            assert!(
                p.base_sequence <= i32::MAX as u32
                    || (p.base_sequence == batch::NO_SEQUENCE
                        && be_i32(data, 53) == -1
                        && attributes & 0x10 != 0)
            );
        }
    }
    assert_eq!(
        info.last_offset().0,
        info.base_offset.0 + u64::from(info.last_offset_delta)
    );
    assert_eq!(info.next_offset().0, info.last_offset().0 + 1);
}

fn check_headers(data: &[u8]) {
    let stored = batch::parse_header(data);
    let incoming = batch::parse_incoming(data);
    if let Ok(info) = &stored {
        check_info(data, info);
        assert_eq!(info.base_offset.0 as i64, be_i64(data, 0));
        // The incoming parser only differs in ignoring the base offset.
        assert_eq!(incoming.as_ref(), Ok(&info.with_base_offset(Offset(0))));
    }
    if let Ok(info) = &incoming {
        check_info(data, info);
        assert_eq!(info.base_offset, Offset(0));
        let raw = be_i64(data, 0);
        if raw >= 0 {
            assert_eq!(
                stored.as_ref(),
                Ok(&info.with_base_offset(Offset(raw as u64)))
            );
        } else {
            assert_eq!(stored, Err(BatchError::BadBaseOffset(raw)));
        }
    }
    if data.len() < BATCH_HEADER_LEN {
        assert!(stored.is_err() && incoming.is_err());
    }
}

fn check_validate(data: &[u8], mode: u8) {
    let Ok(info) = batch::validate(data) else {
        return;
    };
    assert_eq!(batch::parse_header(data), Ok(info));
    let len = info.len as usize;
    assert!(data.len() >= len);
    assert_eq!(
        batch::stored_crc(data),
        crc32c::crc32c(&data[CRC_FROM..len]),
        "validate accepted a CRC mismatch"
    );
    // The batch stands alone, whatever follows it.
    assert_eq!(batch::validate(&data[..len]), Ok(info));
    // One byte short is always truncated.
    assert!(matches!(
        batch::validate(&data[..len - 1]),
        Err(BatchError::Truncated { .. })
    ));
    // The broker's rewrites sit outside the CRC: the batch stays valid.
    let mut copy = data[..len].to_vec();
    let new_base = Offset(u64::from(mode) << 40 | u64::from(info.record_count));
    batch::set_base_offset(&mut copy, new_base);
    let epoch = i32::from(mode) - 100;
    batch::set_partition_leader_epoch(&mut copy, epoch);
    let expected = BatchInfo {
        leader_epoch: epoch,
        ..info.with_base_offset(new_base)
    };
    assert_eq!(batch::validate(&copy), Ok(expected));
}

fn check_split(data: &[u8], max: u32) {
    let Ok(batches) = batch::split_incoming(data, max) else {
        return;
    };
    assert!(!batches.is_empty());
    let mut expected_start = 0;
    for (range, info) in &batches {
        assert_eq!(range.start, expected_start, "batches not contiguous");
        assert_eq!(range.len(), info.len as usize);
        assert!(
            info.len <= max,
            "batch of {} bytes over the max {max}",
            info.len
        );
        assert!(info.record_count >= 1);
        assert_eq!(info.last_offset_delta, info.record_count - 1);
        assert!(!info.is_control);
        assert_eq!(info.base_offset, Offset(0));
        let bytes = &data[range.clone()];
        assert_eq!(batch::parse_incoming(bytes).as_ref(), Ok(info));
        assert_eq!(
            batch::stored_crc(bytes),
            crc32c::crc32c(&bytes[CRC_FROM..]),
            "split_incoming accepted a CRC mismatch"
        );
        expected_start = range.end;
    }
    assert_eq!(expected_start, data.len(), "split_incoming left bytes over");
}
