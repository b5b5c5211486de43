//! RecordBatch v2, written and read without per-record allocation.
//!
//! Layout (Kafka's `DefaultRecordBatch`), 61 bytes of header:
//!
//! ```text
//! base_offset i64 | batch_length i32 | partition_leader_epoch i32 | magic i8 (=2)
//! | crc u32 (CRC-32C of everything after it) | attributes i16 | last_offset_delta i32
//! | first_timestamp i64 | max_timestamp i64 | producer_id i64 | producer_epoch i16
//! | base_sequence i32 | record_count i32 | records…
//! ```
//!
//! A record is `length varint | attributes i8 | timestamp_delta varlong |
//! offset_delta varint | key_length varint | key | value_length varint | value |
//! header_count varint`. brook-bench puts its send timestamp (µs since the Unix
//! epoch, big-endian) in the first 8 bytes of every value of at least 8 bytes,
//! so the consumer can measure end-to-end latency reading only those 8 bytes.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};

use crate::error::BenchError;
use crate::workload::Codec;

pub const HEADER_BYTES: usize = 61;
/// The most a record adds besides its key and value bytes: length (varint, up to
/// 5 bytes for any record under 256 MiB), attributes (1), timestamp delta
/// (varlong, 10), offset delta (5), key length (5), value length (5), header
/// count (1).
const RECORD_OVERHEAD_MAX: usize = 5 + 1 + 10 + 5 + 5 + 5 + 1;
/// Offset of the CRC-covered part (attributes onwards).
const CRC_START: usize = 21;
/// Bytes of the send timestamp at the start of each value.
pub const STAMP_BYTES: usize = 8;
const _: () = assert!(CRC_START == 8 + 4 + 4 + 1 + 4);
const _: () = assert!(HEADER_BYTES == CRC_START + 2 + 4 + 8 + 8 + 8 + 2 + 4 + 4);

/// The records of one partition's open batch, encoded as they are appended.
#[derive(Default)]
pub struct BatchBuilder {
    records: Vec<u8>,
    count: i32,
    first_timestamp_ms: i64,
    max_timestamp_ms: i64,
    /// Payload bytes (keys + values) appended.
    pub payload_bytes: u64,
}

impl BatchBuilder {
    pub fn with_capacity(bytes: usize) -> Self {
        BatchBuilder {
            records: Vec::with_capacity(bytes),
            ..Default::default()
        }
    }

    /// Whether a record with this key and value still fits in a batch of at most
    /// `batch_size` bytes, header included, as Kafka's batch.size bounds it. An
    /// empty batch takes any record, so one larger than `batch_size` is still sent.
    pub fn has_room(&self, key_len: usize, value_len: usize, batch_size: usize) -> bool {
        self.count == 0
            || HEADER_BYTES + self.records.len() + key_len + value_len + RECORD_OVERHEAD_MAX
                <= batch_size
    }

    pub fn count(&self) -> i32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends one record whose value is `stamp_us` (first 8 bytes, when the
    /// value is at least that long) followed by filler from `payload`.
    pub fn append(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value_len: usize,
        stamp_us: u64,
        payload: &[u8],
    ) {
        if self.count == 0 {
            self.first_timestamp_ms = timestamp_ms;
            self.max_timestamp_ms = timestamp_ms;
        }
        self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
        let ts_delta = timestamp_ms - self.first_timestamp_ms;
        let key_len = key.map_or(-1, |k| k.len() as i64);
        let body_len = 1
            + varlong_len(ts_delta)
            + varlong_len(self.count as i64)
            + varlong_len(key_len)
            + key.map_or(0, <[u8]>::len)
            + varlong_len(value_len as i64)
            + value_len
            + 1;
        let r = &mut self.records;
        r.reserve(body_len + 5);
        put_varlong(r, body_len as i64);
        r.push(0);
        put_varlong(r, ts_delta);
        put_varlong(r, self.count as i64);
        put_varlong(r, key_len);
        if let Some(k) = key {
            r.extend_from_slice(k);
        }
        put_varlong(r, value_len as i64);
        if value_len >= STAMP_BYTES {
            r.extend_from_slice(&stamp_us.to_be_bytes());
            r.extend_from_slice(&payload[..value_len - STAMP_BYTES]);
        } else {
            r.extend_from_slice(&payload[..value_len]);
        }
        r.push(0);
        self.count += 1;
        self.payload_bytes += (value_len + key.map_or(0, <[u8]>::len)) as u64;
    }

    /// Writes the finished batch (header, CRC, records compressed with `codec`)
    /// to `out` and resets the builder for the next batch.
    pub fn finish(&mut self, codec: Codec, out: &mut BytesMut) -> Result<Bytes, BenchError> {
        assert!(self.count > 0, "finishing an empty batch");
        out.reserve(HEADER_BYTES + self.records.len());
        let start = out.len();
        out.put_i64(0); // base offset: the broker assigns it
        out.put_i32(0); // batch length, filled below
        out.put_i32(-1); // partition leader epoch
        out.put_i8(2); // magic
        out.put_u32(0); // crc, filled below
        out.put_i16(codec.attribute());
        out.put_i32(self.count - 1);
        out.put_i64(self.first_timestamp_ms);
        out.put_i64(self.max_timestamp_ms);
        out.put_i64(-1); // producer id: not idempotent
        out.put_i16(-1);
        out.put_i32(-1);
        out.put_i32(self.count);
        let recs = &self.records;
        let copy = |tmp: &mut BytesMut| {
            tmp.extend_from_slice(recs);
            Ok(())
        };
        let compressed = match codec {
            Codec::None => {
                out.extend_from_slice(recs);
                Ok(())
            }
            Codec::Gzip => Gzip::compress(out, copy),
            Codec::Snappy => Snappy::compress(out, copy),
            Codec::Lz4 => Lz4::compress(out, copy),
            Codec::Zstd => Zstd::compress(out, copy),
        };
        compressed.map_err(|e| BenchError::Protocol(format!("{codec:?} compression: {e}")))?;
        let batch_len = (out.len() - start - 12) as i32;
        out[start + 8..start + 12].copy_from_slice(&batch_len.to_be_bytes());
        let crc = crc32c::crc32c(&out[start + CRC_START..]);
        out[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
        self.records.clear();
        self.count = 0;
        self.payload_bytes = 0;
        Ok(out.split().freeze().slice(start..))
    }
}

/// What one batch says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchInfo {
    pub base_offset: i64,
    pub last_offset_delta: i32,
    pub record_count: i32,
    pub codec_attribute: i16,
    /// Whole batch, header included.
    pub wire_bytes: usize,
    pub control: bool,
}

impl BatchInfo {
    pub fn next_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64 + 1
    }
}

/// Per-record view the consumer needs: offset and the value's length and stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordView {
    pub offset: i64,
    pub key_bytes: usize,
    pub value_bytes: usize,
    /// First 8 bytes of the value, if it has them.
    pub stamp_us: Option<u64>,
}

/// Walks the batches of a fetched `records` field. A truncated batch at the end
/// (the broker cut at max bytes) ends the walk. Checks every CRC.
pub fn walk_batches(
    data: &Bytes,
    mut on_batch: impl FnMut(BatchInfo, &[u8]) -> Result<(), BenchError>,
) -> Result<(), BenchError> {
    let mut pos = 0;
    while data.len() - pos >= HEADER_BYTES {
        let b = &data[pos..];
        let batch_len = i32::from_be_bytes(b[8..12].try_into().unwrap());
        if batch_len < (HEADER_BYTES - 12) as i32 {
            return Err(BenchError::Protocol(format!("batch length {batch_len}")));
        }
        let total = 12 + batch_len as usize;
        if b.len() < total {
            break;
        }
        if b[16] != 2 {
            return Err(BenchError::Protocol(format!(
                "record batch magic {}",
                b[16]
            )));
        }
        let crc = u32::from_be_bytes(b[17..21].try_into().unwrap());
        if crc != crc32c::crc32c(&b[CRC_START..total]) {
            return Err(BenchError::Protocol("record batch CRC mismatch".into()));
        }
        let attributes = i16::from_be_bytes(b[21..23].try_into().unwrap());
        let info = BatchInfo {
            base_offset: i64::from_be_bytes(b[0..8].try_into().unwrap()),
            last_offset_delta: i32::from_be_bytes(b[23..27].try_into().unwrap()),
            record_count: i32::from_be_bytes(b[57..61].try_into().unwrap()),
            codec_attribute: attributes & 7,
            wire_bytes: total,
            control: attributes & (1 << 5) != 0,
        };
        on_batch(info, &b[HEADER_BYTES..total])?;
        pos += total;
    }
    Ok(())
}

/// Calls `f` for each record of a batch, decompressing first if needed.
pub fn for_each_record(
    info: &BatchInfo,
    body: &[u8],
    mut f: impl FnMut(RecordView),
) -> Result<(), BenchError> {
    if info.codec_attribute == 0 {
        return walk_records(info, body, &mut f);
    }
    let mut src = Bytes::copy_from_slice(body);
    let walk = |plain: &mut Bytes| Ok(walk_records(info, plain, &mut f));
    let res = match info.codec_attribute {
        1 => Gzip::decompress(&mut src, walk),
        2 => Snappy::decompress(&mut src, walk),
        3 => Lz4::decompress(&mut src, walk),
        4 => Zstd::decompress(&mut src, walk),
        c => return Err(BenchError::Protocol(format!("unknown compression {c}"))),
    };
    res.map_err(|e| BenchError::Protocol(format!("decompressing: {e}")))?
}

fn walk_records(
    info: &BatchInfo,
    mut r: &[u8],
    f: &mut impl FnMut(RecordView),
) -> Result<(), BenchError> {
    let bad = || BenchError::Protocol("malformed record".into());
    for _ in 0..info.record_count {
        let len = get_varlong(&mut r).ok_or_else(bad)? as usize;
        if len > r.len() || len == 0 {
            return Err(bad());
        }
        let (mut rec, rest) = r.split_at(len);
        r = rest;
        rec = &rec[1..]; // attributes
        get_varlong(&mut rec).ok_or_else(bad)?; // timestamp delta
        let offset_delta = get_varlong(&mut rec).ok_or_else(bad)?;
        let key_len = get_varlong(&mut rec).ok_or_else(bad)?.max(0) as usize;
        rec = rec.get(key_len..).ok_or_else(bad)?;
        let value_len = get_varlong(&mut rec).ok_or_else(bad)?;
        let value_bytes = value_len.max(0) as usize;
        let stamp_us = rec
            .get(..STAMP_BYTES)
            .filter(|_| value_bytes >= STAMP_BYTES)
            .map(|s| u64::from_be_bytes(s.try_into().unwrap()));
        f(RecordView {
            offset: info.base_offset + offset_delta,
            key_bytes: key_len,
            value_bytes,
            stamp_us,
        });
    }
    Ok(())
}

fn varlong_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - (z | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn get_varlong(buf: &mut &[u8]) -> Option<i64> {
    let mut z: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        z |= ((b & 0x7f) as u64) << (7 * i);
        if b < 0x80 {
            *buf = &buf[i + 1..];
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    None
}

/// Kafka's default partitioner hash (murmur2, seed 0x9747b28c).
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes(c.try_into().unwrap());
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

/// Kafka's partition for a key: `toPositive(murmur2(key)) % partitions`.
pub fn partition_for_key(key: &[u8], partitions: usize) -> usize {
    (murmur2(key) & 0x7fff_ffff) as usize % partitions
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    fn build(codec: Codec, n: usize) -> Bytes {
        let payload = vec![b'x'; 200];
        let mut b = BatchBuilder::with_capacity(1024);
        for i in 0..n {
            let key = format!("key-{i}");
            b.append(
                1_700_000_000_000 + i as i64,
                Some(key.as_bytes()),
                20 + i,
                1000 + i as u64,
                &payload,
            );
        }
        let mut out = BytesMut::new();
        b.finish(codec, &mut out).unwrap()
    }

    #[test]
    fn round_trip_through_kafka_protocol_decoder() {
        for codec in [
            Codec::None,
            Codec::Gzip,
            Codec::Snappy,
            Codec::Lz4,
            Codec::Zstd,
        ] {
            let mut bytes = build(codec, 5);
            let set =
                RecordBatchDecoder::decode(&mut bytes).unwrap_or_else(|e| panic!("{codec:?}: {e}"));
            assert_eq!(set.records.len(), 5);
            for (i, r) in set.records.iter().enumerate() {
                assert_eq!(r.offset, i as i64);
                assert_eq!(r.timestamp, 1_700_000_000_000 + i as i64);
                assert_eq!(r.key.as_deref(), Some(format!("key-{i}").as_bytes()));
                let v = r.value.as_ref().unwrap();
                assert_eq!(v.len(), 20 + i);
                assert_eq!(
                    u64::from_be_bytes(v[..8].try_into().unwrap()),
                    1000 + i as u64
                );
            }
        }
    }

    #[test]
    fn crc_is_checked_and_walk_reads_stamps() {
        for codec in [Codec::None, Codec::Lz4] {
            let bytes = build(codec, 3);
            let mut seen = Vec::new();
            walk_batches(&bytes, |info, body| {
                assert_eq!(info.record_count, 3);
                assert_eq!(info.next_offset(), 3);
                for_each_record(&info, body, |r| {
                    seen.push((r.offset, r.value_bytes, r.stamp_us))
                })
            })
            .unwrap();
            assert_eq!(
                seen,
                vec![
                    (0, 20, Some(1000)),
                    (1, 21, Some(1001)),
                    (2, 22, Some(1002))
                ]
            );
            let mut bad = BytesMut::from(&bytes[..]);
            let last = bad.len() - 1;
            bad[last] ^= 0xff;
            assert!(walk_batches(&bad.freeze(), |_, _| Ok(())).is_err());
        }
    }

    #[test]
    fn truncated_tail_is_ignored() {
        let bytes = build(Codec::None, 2);
        let mut two = BytesMut::from(&bytes[..]);
        two.extend_from_slice(&bytes[..bytes.len() - 3]);
        let mut batches = 0;
        walk_batches(&two.freeze(), |_, _| {
            batches += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(batches, 1);
    }

    /// Filled while `has_room` says so, a batch is at most `batch_size` bytes on
    /// the wire (the broker's max.message.bytes is checked against that), and
    /// within one largest record of it.
    #[test]
    fn has_room_bounds_the_finished_batch() {
        let payload = vec![b'x'; 5000];
        for (batch_size, value_len, key) in [
            (1 << 20, 1024, None),
            (1 << 20, 100, Some(&b"0123456789abcdef"[..])),
            (16 << 10, 1000, Some(&b"key-4294967295"[..])),
            (300, 1000, None),
        ] {
            let key_len = key.map_or(0, <[u8]>::len);
            let mut b = BatchBuilder::with_capacity(batch_size);
            while b.has_room(key_len, value_len, batch_size) {
                b.append(1_700_000_000_000, key, value_len, 7, &payload);
            }
            let count = b.count();
            let bytes = b.finish(Codec::None, &mut BytesMut::new()).unwrap();
            if value_len > batch_size {
                assert_eq!(count, 1, "an oversized record is sent alone");
            } else {
                assert!(bytes.len() <= batch_size, "{} > {batch_size}", bytes.len());
                assert!(bytes.len() + key_len + value_len + RECORD_OVERHEAD_MAX > batch_size);
            }
        }
    }

    #[test]
    fn varints() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            i32::MAX as i64,
            i64::MIN,
            i64::MAX,
        ] {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            assert_eq!(buf.len(), varlong_len(v), "{v}");
            let mut s = &buf[..];
            assert_eq!(get_varlong(&mut s), Some(v));
            assert!(s.is_empty());
        }
    }

    #[test]
    fn murmur2_matches_kafka() {
        // Values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
        assert_eq!(murmur2(b"abc") as i32, 479470107);
    }
}
