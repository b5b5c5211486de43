//! Kafka RecordBatch v2: parsing, validation and the two header rewrites the
//! broker performs.
//!
//! # Byte layout
//!
//! A batch is stored and served exactly as the producer encoded it. All integers
//! are big-endian; `@n` is the byte position inside the batch.
//!
//! ```text
//!  @0  baseOffset            i64   rewritten by the broker (not covered by the CRC)
//!  @8  batchLength           i32   bytes after this field: total size = 12 + batchLength
//! @12  partitionLeaderEpoch  i32   rewritten by the broker (not covered by the CRC)
//! @16  magic                 i8    always 2
//! @17  crc                   u32   CRC-32C (Castagnoli) of bytes @21 .. end of batch
//! @21  attributes            i16   bits 0-2 compression, bit 3 timestampType,
//!                                  bit 4 isTransactional, bit 5 isControl
//! @23  lastOffsetDelta       i32
//! @27  baseTimestamp         i64
//! @35  maxTimestamp          i64
//! @43  producerId            i64   -1: not an idempotent/transactional batch
//! @51  producerEpoch         i16
//! @53  baseSequence          i32
//! @57  recordsCount          i32
//! @61  records ...                 varint-encoded, possibly compressed as a whole
//! ```
//!
//! The smallest well-formed batch is the bare header: 61 bytes, a batchLength
//! of 49. Because the CRC starts at @21, the broker can assign offsets and stamp
//! the leader epoch without re-encoding or re-checksumming anything: a batch is
//! checked once when it arrives ([`split_incoming`]) and once more every time it
//! is read back from disk ([`validate`], and `recovery::scan_segment`).
//!
//! Kafka's `-1` sentinels stop at this module: a missing producer id becomes
//! `None` in [`BatchInfo::producer`], negative counts are errors.

use std::ops::Range;

use crate::types::{Offset, TimestampMs};

/// The 8-byte baseOffset plus the 4-byte batchLength that precede the part of
/// the batch counted by batchLength (Kafka's `LOG_OVERHEAD`).
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed v2 header; records start here.
pub const BATCH_HEADER_LEN: usize = 61;
/// The CRC-32C covers every byte from here to the end of the batch.
pub const CRC_COVERED_FROM: usize = ATTRIBUTES_AT;
/// The only record batch format Brook stores.
pub const MAGIC_V2: u8 = 2;
/// Smallest legal batchLength: a header with no records.
pub const MIN_BATCH_LENGTH: i32 = (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32;

const BASE_OFFSET_AT: usize = 0;
pub(crate) const LENGTH_AT: usize = 8;
const PARTITION_LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
pub(crate) const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
pub(crate) const RECORDS_COUNT_AT: usize = 57;

const COMPRESSION_MASK: i16 = 0b111;
pub const TRANSACTIONAL_BIT: i16 = 1 << 4;
pub const CONTROL_BIT: i16 = 1 << 5;

/// [`ProducerBatchInfo::base_sequence`] of a batch the broker writes for a
/// producer without a sequence (Kafka's `NO_SEQUENCE`, -1 on the wire):
/// transaction markers and transactional offset commits. Outside the
/// sequence space `0..=i32::MAX`; clients may not send it.
pub const NO_SEQUENCE: u32 = u32::MAX;
/// none, gzip, snappy, lz4, zstd.
const MAX_COMPRESSION_CODEC: u8 = 4;

// Each field starts where the previous one ends.
const _: () = assert!(BASE_OFFSET_AT + 8 == LENGTH_AT);
const _: () = assert!(LENGTH_AT + 4 == LOG_OVERHEAD);
const _: () = assert!(LOG_OVERHEAD == PARTITION_LEADER_EPOCH_AT);
const _: () = assert!(PARTITION_LEADER_EPOCH_AT + 4 == MAGIC_AT);
const _: () = assert!(MAGIC_AT + 1 == CRC_AT);
const _: () = assert!(CRC_AT + 4 == ATTRIBUTES_AT);
const _: () = assert!(ATTRIBUTES_AT + 2 == LAST_OFFSET_DELTA_AT);
const _: () = assert!(LAST_OFFSET_DELTA_AT + 4 == BASE_TIMESTAMP_AT);
const _: () = assert!(BASE_TIMESTAMP_AT + 8 == MAX_TIMESTAMP_AT);
const _: () = assert!(MAX_TIMESTAMP_AT + 8 == PRODUCER_ID_AT);
const _: () = assert!(PRODUCER_ID_AT + 8 == PRODUCER_EPOCH_AT);
const _: () = assert!(PRODUCER_EPOCH_AT + 2 == BASE_SEQUENCE_AT);
const _: () = assert!(BASE_SEQUENCE_AT + 4 == RECORDS_COUNT_AT);
const _: () = assert!(RECORDS_COUNT_AT + 4 == BATCH_HEADER_LEN);
const _: () = assert!(MIN_BATCH_LENGTH == 49);
// The two fields the broker rewrites must lie outside the checksummed range.
const _: () = assert!(BASE_OFFSET_AT + 8 <= CRC_COVERED_FROM);
const _: () = assert!(PARTITION_LEADER_EPOCH_AT + 4 <= CRC_COVERED_FROM);

/// Why a byte range is not an acceptable record batch.
#[non_exhaustive]
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum BatchError {
    #[error("record batch truncated: {needed} bytes needed, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("record batch magic {0}, only magic 2 is supported")]
    BadMagic(u8),
    #[error("record batch length {0} is below the minimum of 49")]
    BadLength(i32),
    #[error("record batch CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("record batch of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: u32, max: u32 },
    #[error("record batch has recordsCount {record_count} and lastOffsetDelta {last_offset_delta}")]
    BadRecordCount {
        record_count: i32,
        last_offset_delta: i32,
    },
    #[error("stored record batch has negative base offset {0}")]
    BadBaseOffset(i64),
    #[error("record batch uses unknown compression codec {0}")]
    BadCompression(u8),
    #[error(
        "record batch has producerId {producer_id} with epoch {epoch} and base sequence {base_sequence}"
    )]
    BadProducerFields {
        producer_id: i64,
        epoch: i16,
        base_sequence: i32,
    },
    #[error("clients may not produce control batches")]
    ControlBatchFromClient,
    #[error("produce request carries no record batch")]
    Empty,
    #[error("compacted topic cannot accept a record without a key")]
    NoKeyInCompactedTopic,
    #[error("records cannot be read: {0}")]
    Undecodable(String),
}

/// Idempotent-producer fields of a batch whose producerId is not -1.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProducerBatchInfo {
    /// Non-negative on the wire (an i64 >= 0).
    pub producer_id: u64,
    /// Non-negative on the wire (an i16 >= 0).
    pub epoch: u16,
    /// Non-negative on the wire (an i32 >= 0); wraps from i32::MAX to 0.
    pub base_sequence: u32,
}

/// What the engine needs to know about one batch, read from its header.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BatchInfo {
    pub base_offset: Offset,
    /// Total bytes, including the 12-byte baseOffset + batchLength prefix.
    pub len: u32,
    pub last_offset_delta: u32,
    pub record_count: u32,
    /// baseTimestamp: the first record's timestamp.
    pub first_timestamp: TimestampMs,
    pub max_timestamp: TimestampMs,
    pub producer: Option<ProducerBatchInfo>,
    pub is_transactional: bool,
    pub is_control: bool,
    /// 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub compression: u8,
    /// partitionLeaderEpoch: as read (a client's is meaningless); the leader
    /// sets its own before the batch is stored.
    pub leader_epoch: i32,
}

impl BatchInfo {
    /// Offset of the batch's last record.
    pub fn last_offset(&self) -> Offset {
        self.base_offset.next(u64::from(self.last_offset_delta))
    }

    /// Offset the batch after this one must start at.
    pub fn next_offset(&self) -> Offset {
        self.last_offset().next(1)
    }

    /// The same batch once the broker has assigned it `base_offset`.
    pub fn with_base_offset(self, base_offset: Offset) -> BatchInfo {
        BatchInfo {
            base_offset,
            ..self
        }
    }
}

fn read_array<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    buf[at..at + N]
        .try_into()
        .expect("slice of exactly N bytes")
}

fn read_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(read_array(buf, at))
}

fn read_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(read_array(buf, at))
}

fn read_i64(buf: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(read_array(buf, at))
}

/// The CRC stored in a batch header (`header` holds at least @17..@21).
pub fn stored_crc(header: &[u8]) -> u32 {
    u32::from_be_bytes(read_array(header, CRC_AT))
}

fn need(buf: &[u8], needed: usize) -> Result<(), BatchError> {
    if buf.len() < needed {
        return Err(BatchError::Truncated {
            needed,
            available: buf.len(),
        });
    }
    Ok(())
}

/// Magic first: it sits at @16 in every message format, so an old v0/v1
/// message is reported as such rather than as garbage.
fn check_magic_and_length(buf: &[u8]) -> Result<u32, BatchError> {
    need(buf, MAGIC_AT + 1)?;
    let magic = buf[MAGIC_AT];
    if magic != MAGIC_V2 {
        return Err(BatchError::BadMagic(magic));
    }
    need(buf, BATCH_HEADER_LEN)?;
    let length = read_i32(buf, LENGTH_AT);
    if length < MIN_BATCH_LENGTH {
        return Err(BatchError::BadLength(length));
    }
    let length = u32::try_from(length).expect("length checked >= 49");
    Ok(length + LOG_OVERHEAD as u32)
}

fn counts(buf: &[u8]) -> Result<(u32, u32), BatchError> {
    let record_count = read_i32(buf, RECORDS_COUNT_AT);
    let last_offset_delta = read_i32(buf, LAST_OFFSET_DELTA_AT);
    match (
        u32::try_from(record_count),
        u32::try_from(last_offset_delta),
    ) {
        (Ok(count), Ok(delta)) => Ok((count, delta)),
        _ => Err(BatchError::BadRecordCount {
            record_count,
            last_offset_delta,
        }),
    }
}

fn producer(buf: &[u8]) -> Result<Option<ProducerBatchInfo>, BatchError> {
    let producer_id = read_i64(buf, PRODUCER_ID_AT);
    let epoch = read_i16(buf, PRODUCER_EPOCH_AT);
    let base_sequence = read_i32(buf, BASE_SEQUENCE_AT);
    if producer_id == -1 {
        return Ok(None);
    }
    // Kafka writes markers and coordinator batches with NO_SEQUENCE.
    let attributes = read_i16(buf, ATTRIBUTES_AT);
    if base_sequence == -1
        && attributes & TRANSACTIONAL_BIT != 0
        && let (Ok(producer_id), Ok(epoch)) = (u64::try_from(producer_id), u16::try_from(epoch))
    {
        return Ok(Some(ProducerBatchInfo {
            producer_id,
            epoch,
            base_sequence: NO_SEQUENCE,
        }));
    }
    match (
        u64::try_from(producer_id),
        u16::try_from(epoch),
        u32::try_from(base_sequence),
    ) {
        (Ok(producer_id), Ok(epoch), Ok(base_sequence)) => Ok(Some(ProducerBatchInfo {
            producer_id,
            epoch,
            base_sequence,
        })),
        _ => Err(BatchError::BadProducerFields {
            producer_id,
            epoch,
            base_sequence,
        }),
    }
}

fn compression(attributes: i16) -> Result<u8, BatchError> {
    let codec = u8::try_from(attributes & COMPRESSION_MASK).expect("3-bit field");
    if codec > MAX_COMPRESSION_CODEC {
        return Err(BatchError::BadCompression(codec));
    }
    Ok(codec)
}

fn parse_with_base(buf: &[u8], base_offset: Offset) -> Result<BatchInfo, BatchError> {
    let len = check_magic_and_length(buf)?;
    let (record_count, last_offset_delta) = counts(buf)?;
    let attributes = read_i16(buf, ATTRIBUTES_AT);
    Ok(BatchInfo {
        base_offset,
        len,
        last_offset_delta,
        record_count,
        first_timestamp: TimestampMs(read_i64(buf, BASE_TIMESTAMP_AT)),
        max_timestamp: TimestampMs(read_i64(buf, MAX_TIMESTAMP_AT)),
        producer: producer(buf)?,
        is_transactional: attributes & TRANSACTIONAL_BIT != 0,
        is_control: attributes & CONTROL_BIT != 0,
        compression: compression(attributes)?,
        leader_epoch: read_i32(buf, PARTITION_LEADER_EPOCH_AT),
    })
}

/// Parses the 61-byte header of a *stored* batch (base offset must be >= 0).
/// Does not look at the records or the CRC; see [`validate`].
pub fn parse_header(buf: &[u8]) -> Result<BatchInfo, BatchError> {
    need(buf, BATCH_HEADER_LEN)?;
    let raw = read_i64(buf, BASE_OFFSET_AT);
    let base = u64::try_from(raw).map_err(|_| BatchError::BadBaseOffset(raw))?;
    parse_with_base(buf, Offset(base))
}

/// Parses the header of a batch arriving in a Produce request. The client's
/// base offset is meaningless (the broker assigns it), so the returned
/// `base_offset` is `Offset(0)` until the caller applies
/// [`BatchInfo::with_base_offset`] together with [`set_base_offset`].
pub fn parse_incoming(buf: &[u8]) -> Result<BatchInfo, BatchError> {
    parse_with_base(buf, Offset(0))
}

/// Checks that `buf` holds the whole batch `info` describes and that its CRC matches.
fn check_body(buf: &[u8], info: &BatchInfo) -> Result<(), BatchError> {
    let len = info.len as usize;
    need(buf, len)?;
    let stored = stored_crc(buf);
    let computed = crc32c::crc32c(&buf[CRC_COVERED_FROM..len]);
    if stored != computed {
        return Err(BatchError::CrcMismatch { stored, computed });
    }
    Ok(())
}

/// Fully checks the stored batch at the start of `buf` (which may continue
/// past it): header, magic, length, counts, whole batch present, CRC-32C.
pub fn validate(buf: &[u8]) -> Result<BatchInfo, BatchError> {
    let info = parse_header(buf)?;
    check_body(buf, &info)?;
    Ok(info)
}

/// Producer-side rules on top of [`validate`]: at least one record, offsets
/// dense inside the batch, no control batches.
fn validate_incoming(buf: &[u8], max_batch_bytes: u32) -> Result<BatchInfo, BatchError> {
    let info = parse_incoming(buf)?;
    if info.len > max_batch_bytes {
        return Err(BatchError::TooLarge {
            len: info.len,
            max: max_batch_bytes,
        });
    }
    check_body(buf, &info)?;
    if info.record_count == 0 || info.last_offset_delta != info.record_count - 1 {
        return Err(BatchError::BadRecordCount {
            record_count: info.record_count as i32,
            last_offset_delta: info.last_offset_delta as i32,
        });
    }
    if info.is_control {
        return Err(BatchError::ControlBatchFromClient);
    }
    Ok(info)
}

/// Splits the `records` field of a Produce request into its batches. Every
/// batch must be whole, magic 2, CRC-correct, hold `record_count >= 1` records
/// with `last_offset_delta == record_count - 1`, and be at most
/// `max_batch_bytes` long. Base offsets in the result are `Offset(0)`
/// placeholders (see [`parse_incoming`]).
pub fn split_incoming(
    records: &[u8],
    max_batch_bytes: u32,
) -> Result<Vec<(Range<usize>, BatchInfo)>, BatchError> {
    if records.is_empty() {
        return Err(BatchError::Empty);
    }
    let mut batches = Vec::new();
    let mut start = 0;
    while start < records.len() {
        let info = validate_incoming(&records[start..], max_batch_bytes)?;
        let end = start + info.len as usize;
        batches.push((start..end, info));
        start = end;
    }
    Ok(batches)
}

/// Whether any batch of a Produce payload has the transactional bit set. Lenient:
/// it reads headers only and stops at the first that does not parse (validation
/// of the payload happens later, on the partition's shard). Kafka checks this for
/// the whole request before anything else (`RequestUtils.hasTransactionalRecords`).
pub fn any_transactional(records: &[u8]) -> bool {
    let mut rest = records;
    while let Ok(len) = check_magic_and_length(rest) {
        if read_i16(rest, ATTRIBUTES_AT) & TRANSACTIONAL_BIT != 0 {
            return true;
        }
        match rest.get(len as usize..) {
            Some(next) => rest = next,
            None => return false,
        }
    }
    false
}

/// The producer of the first transactional batch of `records`, if any.
pub fn transactional_producer(records: &[u8]) -> Option<ProducerBatchInfo> {
    let mut rest = records;
    while let Ok(info) = parse_header(rest) {
        if info.is_transactional && !info.is_control {
            return info.producer;
        }
        rest = rest.get(info.len as usize..)?;
    }
    None
}

/// The offset after the last batch whose header `records` (stored batches,
/// the last possibly cut short) holds; `None` when it holds no header.
pub fn end_offset(records: &[u8]) -> Option<Offset> {
    let mut rest = records;
    let mut end = None;
    while let Ok(info) = parse_header(rest) {
        end = Some(info.next_offset());
        match rest.get(info.len as usize..) {
            Some(next) => rest = next,
            None => break,
        }
    }
    end
}

/// Stamps the broker-assigned base offset (outside the CRC).
pub fn set_base_offset(buf: &mut [u8], o: Offset) {
    assert!(
        buf.len() >= BATCH_HEADER_LEN,
        "set_base_offset on a {}-byte buffer, not a batch",
        buf.len()
    );
    let raw = i64::try_from(o.0).unwrap_or_else(|_| panic!("offset {o} exceeds i64::MAX"));
    buf[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&raw.to_be_bytes());
}

/// Stamps the leader epoch under which the batch was appended (outside the CRC).
pub fn set_partition_leader_epoch(buf: &mut [u8], epoch: i32) {
    assert!(
        buf.len() >= BATCH_HEADER_LEN,
        "set_partition_leader_epoch on a {}-byte buffer, not a batch",
        buf.len()
    );
    let at = PARTITION_LEADER_EPOCH_AT;
    buf[at..at + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Appends `v` as a zigzag LEB128 varint, as Kafka's `ByteUtils.writeVarlong`.
fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_bytes_field(out: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        None => put_varlong(out, -1),
        Some(bytes) => {
            put_varlong(out, bytes.len() as i64);
            out.extend_from_slice(bytes);
        }
    }
}

fn encode_record(out: &mut Vec<u8>, offset_delta: usize, key: Option<&[u8]>, value: Option<&[u8]>) {
    let mut body = vec![0u8]; // attributes
    put_varlong(&mut body, 0); // timestampDelta
    put_varlong(&mut body, offset_delta as i64);
    put_bytes_field(&mut body, key);
    put_bytes_field(&mut body, value);
    put_varlong(&mut body, 0); // header count
    put_varlong(out, body.len() as i64);
    out.extend_from_slice(&body);
}

fn producer_fields(producer: Option<ProducerBatchInfo>) -> (i64, i16, i32) {
    match producer {
        None => (-1, -1, -1),
        Some(p) if p.base_sequence == NO_SEQUENCE => (p.producer_id as i64, p.epoch as i16, -1),
        Some(p) => (p.producer_id as i64, p.epoch as i16, p.base_sequence as i32),
    }
}

/// A transaction marker: the end of producer's transaction in one partition.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    pub commit: bool,
    /// The epoch of the transaction coordinator that wrote it.
    pub coordinator_epoch: i32,
}

/// A control batch holding one end-transaction marker, as Kafka's
/// `EndTransactionMarker`: key `i16 version 0 | i16 type (0 abort, 1 commit)`,
/// value `i16 version 0 | i32 coordinator epoch`, sequence NO_SEQUENCE.
pub fn build_marker(
    base: Offset,
    producer_id: u64,
    epoch: u16,
    marker: Marker,
    timestamp_ms: i64,
) -> Vec<u8> {
    let mut key = 0i16.to_be_bytes().to_vec();
    key.extend_from_slice(&i16::from(marker.commit).to_be_bytes());
    let mut value = 0i16.to_be_bytes().to_vec();
    value.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
    let producer = ProducerBatchInfo {
        producer_id,
        epoch,
        base_sequence: NO_SEQUENCE,
    };
    build_batch_with(
        base,
        &[(Some(&key), Some(&value))],
        timestamp_ms,
        Some(producer),
        TRANSACTIONAL_BIT | CONTROL_BIT,
    )
}

/// The marker in a whole, validated control batch; `None` for any other batch
/// or a control record that is not an end-transaction marker.
pub fn read_marker(batch: &[u8], info: &BatchInfo) -> Option<Marker> {
    if !info.is_control {
        return None;
    }
    let rec = crate::log::records::uncompressed_records(batch, info).ok()?;
    let (key, value) = (rec.first()?.key?, rec.first()?.value);
    let kind = i16::from_be_bytes(key.get(2..4)?.try_into().ok()?);
    let coordinator_epoch = value
        .and_then(|v| v.get(2..6))
        .map_or(0, |v| i32::from_be_bytes(v.try_into().expect("4 bytes")));
    match kind {
        0 | 1 => Some(Marker {
            commit: kind == 1,
            coordinator_epoch,
        }),
        _ => None,
    }
}

/// A record's key and value for [`build_batch`]; `None` is a null field.
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Encodes a real, uncompressed, CRC-correct v2 batch whose records all carry
/// `timestamp_ms`. The broker builds batches only for its internal topics
/// (`__consumer_offsets`); tests use it too.
pub fn build_batch(
    base: Offset,
    records: &[KeyValue<'_>],
    timestamp_ms: i64,
    producer: Option<ProducerBatchInfo>,
) -> Vec<u8> {
    build_batch_with(base, records, timestamp_ms, producer, 0)
}

/// [`build_batch`] with the given attributes (transactional, control).
pub fn build_batch_with(
    base: Offset,
    records: &[KeyValue<'_>],
    timestamp_ms: i64,
    producer: Option<ProducerBatchInfo>,
    attributes: i16,
) -> Vec<u8> {
    assert!(
        !records.is_empty(),
        "a produced batch holds at least one record"
    );
    let mut body = Vec::new();
    for (delta, (key, value)) in records.iter().enumerate() {
        encode_record(&mut body, delta, *key, *value);
    }
    let (pid, epoch, seq) = producer_fields(producer);
    let count = i32::try_from(records.len()).expect("record count fits i32");
    let length =
        i32::try_from(BATCH_HEADER_LEN - LOG_OVERHEAD + body.len()).expect("batch < 2 GiB");
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + body.len());
    out.extend_from_slice(
        &i64::try_from(base.0)
            .expect("offset fits i64")
            .to_be_bytes(),
    );
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes()); // partitionLeaderEpoch
    out.push(MAGIC_V2);
    out.extend_from_slice(&[0; 4]); // crc, filled in below
    out.extend_from_slice(&attributes.to_be_bytes());
    out.extend_from_slice(&(count - 1).to_be_bytes());
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&body);
    let crc = crc32c::crc32c(&out[CRC_COVERED_FROM..]);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Rec = (Option<Vec<u8>>, Option<Vec<u8>>);

    fn as_refs(records: &[Rec]) -> Vec<KeyValue<'_>> {
        records
            .iter()
            .map(|(k, v)| (k.as_deref(), v.as_deref()))
            .collect()
    }

    fn one_batch(base: u64) -> Vec<u8> {
        build_batch(Offset(base), &[(Some(b"k"), Some(b"v"))], 1_000, None)
    }

    /// Rewrites an i32 header field and fixes the CRC so only that field is wrong.
    fn with_field(mut b: Vec<u8>, at: usize, v: i32) -> Vec<u8> {
        b[at..at + 4].copy_from_slice(&v.to_be_bytes());
        let crc = crc32c::crc32c(&b[CRC_COVERED_FROM..]);
        b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn get_varlong(buf: &[u8], pos: &mut usize) -> i64 {
        let (mut z, mut shift) = (0u64, 0);
        loop {
            let byte = buf[*pos];
            *pos += 1;
            z |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return (z >> 1) as i64 ^ -((z & 1) as i64);
            }
            shift += 7;
        }
    }

    fn get_field(buf: &[u8], pos: &mut usize) -> Option<Vec<u8>> {
        let len = get_varlong(buf, pos);
        let len = usize::try_from(len).ok()?;
        let field = buf[*pos..*pos + len].to_vec();
        *pos += len;
        Some(field)
    }

    /// Test-only decoder of uncompressed records, to check build_batch's encoding.
    fn decode_records(batch: &[u8]) -> Vec<Rec> {
        let mut pos = BATCH_HEADER_LEN;
        let mut out = Vec::new();
        while pos < batch.len() {
            let len = get_varlong(batch, &mut pos) as usize;
            let end = pos + len;
            pos += 1; // attributes
            assert_eq!(get_varlong(batch, &mut pos), 0, "timestamp delta");
            assert_eq!(
                get_varlong(batch, &mut pos),
                out.len() as i64,
                "offset delta"
            );
            let key = get_field(batch, &mut pos);
            let value = get_field(batch, &mut pos);
            assert_eq!(get_varlong(batch, &mut pos), 0, "header count");
            assert_eq!(pos, end, "record length");
            out.push((key, value));
        }
        out
    }

    #[test]
    fn header_fields_of_a_built_batch() {
        let p = ProducerBatchInfo {
            producer_id: 7,
            epoch: 3,
            base_sequence: 11,
        };
        let b = build_batch(
            Offset(42),
            &[(None, Some(b"a")), (Some(b"k"), None)],
            5,
            Some(p),
        );
        let info = validate(&b).unwrap();
        assert_eq!(info.base_offset, Offset(42));
        assert_eq!(info.len as usize, b.len());
        assert_eq!(info.record_count, 2);
        assert_eq!(info.last_offset(), Offset(43));
        assert_eq!(info.next_offset(), Offset(44));
        assert_eq!(info.producer, Some(p));
        assert_eq!(
            (info.first_timestamp, info.max_timestamp),
            (TimestampMs(5), TimestampMs(5))
        );
        assert!(!info.is_control && !info.is_transactional);
        assert_eq!(info.compression, 0);
    }

    #[test]
    fn rewrites_are_outside_the_crc() {
        let mut b = one_batch(0);
        set_base_offset(&mut b, Offset(1 << 40));
        set_partition_leader_epoch(&mut b, 9);
        assert_eq!(validate(&b).unwrap().base_offset, Offset(1 << 40));
        assert_eq!(read_i32(&b, PARTITION_LEADER_EPOCH_AT), 9);
    }

    #[test]
    fn rejects_bad_magic_length_and_truncation() {
        let mut b = one_batch(0);
        assert!(matches!(
            validate(&b[..60]),
            Err(BatchError::Truncated { .. })
        ));
        assert!(matches!(
            validate(&b[..b.len() - 1]),
            Err(BatchError::Truncated { .. })
        ));
        b[MAGIC_AT] = 1;
        assert_eq!(validate(&b), Err(BatchError::BadMagic(1)));
        let b = with_field(one_batch(0), LENGTH_AT, 48);
        assert_eq!(validate(&b), Err(BatchError::BadLength(48)));
    }

    #[test]
    fn stored_batch_with_negative_base_offset_is_rejected_but_incoming_is_not() {
        let mut b = one_batch(0);
        b[..8].copy_from_slice(&(-5i64).to_be_bytes());
        assert_eq!(validate(&b), Err(BatchError::BadBaseOffset(-5)));
        assert_eq!(split_incoming(&b, 1 << 20).unwrap().len(), 1);
    }

    #[test]
    fn negative_counts_are_rejected() {
        let b = with_field(one_batch(0), RECORDS_COUNT_AT, -1);
        assert!(matches!(
            validate(&b),
            Err(BatchError::BadRecordCount { .. })
        ));
        let b = with_field(one_batch(0), LAST_OFFSET_DELTA_AT, -1);
        assert!(matches!(
            validate(&b),
            Err(BatchError::BadRecordCount { .. })
        ));
    }

    #[test]
    fn negative_producer_epoch_is_rejected() {
        let p = ProducerBatchInfo {
            producer_id: 1,
            epoch: 0,
            base_sequence: 0,
        };
        let mut b = build_batch(Offset(0), &[(None, None)], 0, Some(p));
        b[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2].copy_from_slice(&(-1i16).to_be_bytes());
        assert!(matches!(
            parse_header(&b),
            Err(BatchError::BadProducerFields { .. })
        ));
    }

    #[test]
    fn split_incoming_rules() {
        assert_eq!(split_incoming(&[], 100), Err(BatchError::Empty));
        let b = one_batch(0);
        let len = b.len() as u32;
        assert_eq!(
            split_incoming(&b, len - 1),
            Err(BatchError::TooLarge { len, max: len - 1 })
        );
        let b = with_field(one_batch(0), LAST_OFFSET_DELTA_AT, 3);
        assert!(matches!(
            split_incoming(&b, 1 << 20),
            Err(BatchError::BadRecordCount { .. })
        ));
        let b = with_field(one_batch(0), RECORDS_COUNT_AT, 0);
        assert!(matches!(
            split_incoming(&b, 1 << 20),
            Err(BatchError::BadRecordCount { .. })
        ));
        let mut b = one_batch(0);
        b.push(0);
        assert!(matches!(
            split_incoming(&b, 1 << 20),
            Err(BatchError::Truncated { .. })
        ));
    }

    #[test]
    fn any_transactional_reads_every_header() {
        let plain = one_batch(0);
        let mut txn = one_batch(0);
        txn[ATTRIBUTES_AT + 1] |= TRANSACTIONAL_BIT as u8;
        assert!(!any_transactional(&plain));
        assert!(any_transactional(&[plain.clone(), txn.clone()].concat()));
        assert!(!any_transactional(&[plain.clone(), plain].concat()));
        assert!(!any_transactional(&txn[..20]));
        assert!(!any_transactional(&[]));
    }

    #[test]
    fn control_batches_from_clients_are_rejected() {
        let mut b = one_batch(0);
        b[ATTRIBUTES_AT + 1] |= CONTROL_BIT as u8;
        let crc = crc32c::crc32c(&b[CRC_COVERED_FROM..]);
        b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(validate(&b).unwrap().is_control);
        assert_eq!(
            split_incoming(&b, 1 << 20),
            Err(BatchError::ControlBatchFromClient)
        );
    }

    fn records_strategy() -> impl Strategy<Value = Vec<Rec>> {
        let field = proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200));
        proptest::collection::vec((field.clone(), field), 1..20)
    }

    fn producer_strategy() -> impl Strategy<Value = Option<ProducerBatchInfo>> {
        proptest::option::of(
            (
                0..=i64::MAX as u64,
                0..=i16::MAX as u16,
                0..=i32::MAX as u32,
            )
                .prop_map(|(producer_id, epoch, base_sequence)| ProducerBatchInfo {
                    producer_id,
                    epoch,
                    base_sequence,
                }),
        )
    }

    proptest! {
        #[test]
        fn build_then_validate_round_trips(
            base in 0..=(i64::MAX as u64 / 2),
            records in records_strategy(),
            ts in any::<i64>(),
            producer in producer_strategy(),
        ) {
            let b = build_batch(Offset(base), &as_refs(&records), ts, producer);
            let info = validate(&b).unwrap();
            prop_assert_eq!(info.base_offset, Offset(base));
            prop_assert_eq!(info.len as usize, b.len());
            prop_assert_eq!(info.record_count as usize, records.len());
            prop_assert_eq!(info.last_offset_delta as usize, records.len() - 1);
            prop_assert_eq!(info.max_timestamp, TimestampMs(ts));
            prop_assert_eq!(info.producer, producer);
            prop_assert_eq!(decode_records(&b), records);
        }

        #[test]
        fn any_single_byte_corruption_from_the_magic_on_is_detected(
            records in records_strategy(),
            at in any::<prop::sample::Index>(),
            xor in 1..=255u8,
        ) {
            let mut b = build_batch(Offset(0), &as_refs(&records), 0, None);
            let at = MAGIC_AT + at.index(b.len() - MAGIC_AT);
            b[at] ^= xor;
            prop_assert!(validate(&b).is_err());
        }

        #[test]
        fn split_incoming_finds_every_batch(
            batches in proptest::collection::vec(records_strategy(), 1..6),
        ) {
            let built: Vec<Vec<u8>> = batches
                .iter()
                .map(|r| build_batch(Offset(0), &as_refs(r), 0, None))
                .collect();
            let all = built.concat();
            let split = split_incoming(&all, u32::MAX).unwrap();
            prop_assert_eq!(split.len(), built.len());
            for ((range, info), b) in split.iter().zip(&built) {
                prop_assert_eq!(&all[range.clone()], &b[..]);
                prop_assert_eq!(info.len as usize, b.len());
            }
        }
    }
}
