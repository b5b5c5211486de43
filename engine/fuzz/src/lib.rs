//! Helpers shared by the engine's fuzz targets.
//!
//! Most targets take a one-byte *mode* before the bytes under test, so that a
//! seed file is `mode ++ bytes` and the fuzzer can flip modes cheaply. Random
//! bytes almost never carry a correct CRC-32C, which would stop every input at
//! the checksum; the "fix" modes recompute CRCs (and, optionally, lengths) so
//! the fuzzer also explores what lies behind the checksum.

/// Byte positions of the RecordBatch v2 header (see `brook_engine::log::batch`).
pub const LENGTH_AT: usize = 8;
pub const MAGIC_AT: usize = 16;
pub const CRC_AT: usize = 17;
pub const CRC_FROM: usize = 21;
pub const HEADER_LEN: usize = 61;
pub const LOG_OVERHEAD: usize = 12;

pub fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

pub fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// Sets the batch at `buf[0..]` to end exactly at `buf.len()`.
pub fn fit_length(buf: &mut [u8]) {
    if buf.len() >= HEADER_LEN {
        let len = i32::try_from(buf.len() - LOG_OVERHEAD).unwrap_or(i32::MAX);
        buf[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&len.to_be_bytes());
    }
}

/// Recomputes the CRC of the batch at the front of `buf`, whose total length
/// (12 + batchLength) is `len` bytes.
pub fn fix_crc(buf: &mut [u8], len: usize) {
    let crc = crc32c::crc32c(&buf[CRC_FROM..len]);
    buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Walks `buf` as a sequence of batches, recomputing each one's CRC. With
/// `fit`, a batch whose length runs past the end is shortened to fit, and the
/// walk stops at the first header that is too short or has a bad length.
pub fn fix_batches(buf: &mut [u8], fit: bool) {
    let mut pos = 0usize;
    while buf.len() - pos >= HEADER_LEN {
        let rest = &mut buf[pos..];
        let length = be_i32(rest, LENGTH_AT);
        if length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
            return;
        }
        let mut len = LOG_OVERHEAD + length as usize;
        if len > rest.len() {
            if !fit {
                return;
            }
            fit_length(rest);
            len = rest.len();
        }
        fix_crc(rest, len);
        pos += len;
    }
}

/// Splits a fuzz input into its mode byte and the rest.
pub fn mode_and_rest(input: &[u8]) -> Option<(u8, &[u8])> {
    input.split_first().map(|(m, r)| (*m, r))
}
