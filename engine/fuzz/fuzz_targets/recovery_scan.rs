//! `recovery::scan_segment` over an arbitrary `.log` file: the valid prefix
//! it reports lies within the file, every batch it hands out validates and
//! follows the one before (offsets ascend, with a compacted log's gaps), and the result agrees with a naive in-memory walk.
//!
//! Input: `mode (1) | file bytes`. mode bit 0: recompute every batch's CRC;
//! bit 1: also shorten a batch that runs past the end; bit 2: take the
//! segment's base offset from the first batch instead of 0; bits 3-7: scan a
//! second time ignoring the last `mode >> 3` bytes of the file.
#![no_main]

use std::cell::RefCell;
use std::fs::File;
use std::os::unix::fs::FileExt;

use brook_engine::log::batch::{self, BatchInfo};
use brook_engine::log::recovery::{ScanOutcome, StopReason, scan_segment};
use brook_engine::types::{FilePos, Offset};
use fuzz_util::{be_i64, fix_batches, mode_and_rest};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static FILE: RefCell<File> = RefCell::new(tempfile::tempfile().expect("temp file"));
}

fuzz_target!(|input: &[u8]| {
    let Some((mode, rest)) = mode_and_rest(input) else {
        return;
    };
    let mut data = rest.to_vec();
    if mode & 1 != 0 {
        fix_batches(&mut data, mode & 2 != 0);
    }
    let base = if mode & 4 != 0 && data.len() >= 8 {
        Offset(u64::try_from(be_i64(&data, 0)).unwrap_or(0))
    } else {
        Offset(0)
    };
    FILE.with(|f| {
        let f = f.borrow();
        f.set_len(0).unwrap();
        f.write_all_at(&data, 0).unwrap();
        check_scan(&f, &data, data.len(), base);
        let ignored = usize::from(mode >> 3);
        if ignored > 0 {
            check_scan(&f, &data, data.len().saturating_sub(ignored), base);
        }
    });
});

fn check_scan(file: &File, data: &[u8], file_len: usize, base: Offset) {
    let data = &data[..file_len];
    let mut seen: Vec<(FilePos, BatchInfo)> = Vec::new();
    let out = scan_segment(file, file_len as u64, base, |pos, info| {
        seen.push((pos, *info))
    })
    .expect("scan of an in-bounds file length must not fail on I/O");
    let valid_len = out.valid_len.0 as usize;
    assert!(
        valid_len <= file_len,
        "valid_len {valid_len} past the file's {file_len}"
    );
    let (mut pos, mut next) = (0usize, base);
    for (at, info) in &seen {
        assert_eq!(at.0 as usize, pos, "reported batches are not contiguous");
        let len = info.len as usize;
        assert!(pos + len <= valid_len);
        let bytes = &data[pos..pos + len];
        assert_eq!(
            batch::validate(bytes),
            Ok(*info),
            "reported batch does not validate"
        );
        // A compacted log's forward gaps are valid; going back is not.
        assert!(info.base_offset >= next, "reported batch goes back in offsets");
        pos += len;
        next = info.next_offset();
    }
    assert_eq!(pos, valid_len, "valid_len is not the end of the last batch");
    assert_eq!(out.next_offset, next);
    check_stop(&out, data);
    assert_eq!(naive(data, base), (out.valid_len, out.next_offset));
}

fn check_stop(out: &ScanOutcome, data: &[u8]) {
    let valid_len = out.valid_len;
    match &out.stop {
        None => assert_eq!(
            valid_len.0 as usize,
            data.len(),
            "stopped early without a reason"
        ),
        Some(StopReason::EndOfData) => {
            let rest = &data[valid_len.0 as usize..];
            assert!(rest[..rest.len().min(12)].iter().all(|&b| b == 0));
        }
        Some(StopReason::Torn { pos })
        | Some(StopReason::Corrupt { pos, .. })
        | Some(StopReason::OffsetGap { pos, .. }) => assert_eq!(*pos, valid_len),
    }
    if out.stop.is_some() {
        assert!(
            (valid_len.0 as usize) < data.len(),
            "a stop reason at the end of the file"
        );
    }
}

/// The valid prefix by the simplest possible walk: validate batch after batch.
fn naive(data: &[u8], base: Offset) -> (FilePos, Offset) {
    let (mut pos, mut next) = (0usize, base);
    while let Ok(info) = batch::validate(&data[pos..]) {
        if info.base_offset < next {
            break;
        }
        pos += info.len as usize;
        next = info.next_offset();
    }
    (FilePos(pos as u64), next)
}
