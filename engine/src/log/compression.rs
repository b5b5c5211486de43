//! The record-batch codecs (Kafka's `compression.type` ids 1–4), for the one
//! place the engine opens client batches: the log cleaner, which must read
//! every record's key and write back the records it keeps in the batch's own
//! codec.
//!
//! The framings are Kafka's:
//! - gzip: a gzip stream;
//! - snappy: snappy-java's stream (an 16-byte header, then blocks of a
//!   big-endian length and a raw snappy block); a batch without that header
//!   is read as one raw snappy block, as snappy-java reads it;
//! - lz4: the LZ4 frame format, written with independent blocks and no
//!   content checksum (what Kafka's `KafkaLZ4BlockOutputStream` writes);
//! - zstd: a zstd frame.

use std::io::{Read, Write};

/// Why a batch's records could not be (de)compressed.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum CodecError {
    #[error("unknown compression codec {0}")]
    Unknown(u8),
    #[error("{codec} data is corrupt: {why}")]
    Corrupt { codec: &'static str, why: String },
    #[error("records decompress to more than {limit} bytes")]
    TooLarge { limit: usize },
}

const SNAPPY_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
/// snappy-java's header: the magic, then version 1 and compatible version 1.
const SNAPPY_HEADER: [u8; 16] = *b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
/// snappy-java's default block size.
const SNAPPY_BLOCK: usize = 32 << 10;

fn name(codec: u8) -> &'static str {
    match codec {
        1 => "gzip",
        2 => "snappy",
        3 => "lz4",
        4 => "zstd",
        _ => "unknown",
    }
}

fn corrupt(codec: u8) -> impl Fn(std::io::Error) -> CodecError {
    move |e| CodecError::Corrupt {
        codec: name(codec),
        why: e.to_string(),
    }
}

/// Reads all of `r`, failing once more than `limit` bytes come out.
fn read_limited(codec: u8, r: impl Read, limit: usize) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    r.take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(corrupt(codec))?;
    if out.len() > limit {
        return Err(CodecError::TooLarge { limit });
    }
    Ok(out)
}

/// The records section `data` of a batch compressed with `codec` (0 is
/// returned as it is), at most `limit` bytes of it.
pub fn decompress(codec: u8, data: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    match codec {
        0 => Ok(data.to_vec()),
        1 => read_limited(codec, flate2::read::GzDecoder::new(data), limit),
        2 => snappy_decompress(data, limit),
        3 => {
            let d = lz4::Decoder::new(data).map_err(corrupt(codec))?;
            read_limited(codec, d, limit)
        }
        4 => {
            let d = zstd::stream::read::Decoder::new(data).map_err(corrupt(codec))?;
            read_limited(codec, d, limit)
        }
        c => Err(CodecError::Unknown(c)),
    }
}

fn snappy_decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let bad = |why: String| CodecError::Corrupt {
        codec: "snappy",
        why,
    };
    let raw = |block: &[u8], out: &mut Vec<u8>| -> Result<(), CodecError> {
        let n = snap::raw::decompress_len(block).map_err(|e| bad(e.to_string()))?;
        if out.len() + n > limit {
            return Err(CodecError::TooLarge { limit });
        }
        let at = out.len();
        out.resize(at + n, 0);
        snap::raw::Decoder::new()
            .decompress(block, &mut out[at..])
            .map_err(|e| bad(e.to_string()))?;
        Ok(())
    };
    let mut out = Vec::new();
    if !data.starts_with(SNAPPY_MAGIC) {
        raw(data, &mut out)?;
        return Ok(out);
    }
    let mut pos = SNAPPY_HEADER.len().min(data.len());
    while pos < data.len() {
        let len_bytes: [u8; 4] = data
            .get(pos..pos + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("truncated block length".into()))?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        pos += 4;
        let block = data
            .get(pos..pos.saturating_add(len))
            .ok_or_else(|| bad("truncated block".into()))?;
        raw(block, &mut out)?;
        pos += len;
    }
    Ok(out)
}

/// `data` compressed with `codec` in Kafka's framing (0 returns it as it is).
pub fn compress(codec: u8, data: &[u8]) -> Result<Vec<u8>, CodecError> {
    let io = corrupt(codec);
    match codec {
        0 => Ok(data.to_vec()),
        1 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).map_err(&io)?;
            e.finish().map_err(io)
        }
        2 => {
            let mut out = SNAPPY_HEADER.to_vec();
            let mut enc = snap::raw::Encoder::new();
            for block in data.chunks(SNAPPY_BLOCK) {
                let c = enc.compress_vec(block).map_err(|e| CodecError::Corrupt {
                    codec: "snappy",
                    why: e.to_string(),
                })?;
                out.extend_from_slice(&(c.len() as u32).to_be_bytes());
                out.extend_from_slice(&c);
            }
            Ok(out)
        }
        3 => {
            let mut e = lz4::EncoderBuilder::new()
                .block_mode(lz4::BlockMode::Independent)
                .checksum(lz4::ContentChecksum::NoChecksum)
                .build(Vec::new())
                .map_err(&io)?;
            e.write_all(data).map_err(&io)?;
            let (out, res) = e.finish();
            res.map_err(io)?;
            Ok(out)
        }
        4 => zstd::bulk::compress(data, 3).map_err(io),
        c => Err(CodecError::Unknown(c)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_be_bytes())
            .collect();
        for codec in 0..=4 {
            let c = compress(codec, &data).unwrap();
            assert_eq!(decompress(codec, &c, data.len()).unwrap(), data, "{codec}");
            assert_eq!(
                decompress(codec, &c, data.len() - 1),
                if codec == 0 {
                    Ok(data.clone())
                } else {
                    Err(CodecError::TooLarge {
                        limit: data.len() - 1,
                    })
                },
                "codec {codec} must stop at its limit"
            );
        }
        assert_eq!(compress(5, &data), Err(CodecError::Unknown(5)));
    }

    #[test]
    fn raw_snappy_is_read_too_and_garbage_is_an_error() {
        let raw = snap::raw::Encoder::new()
            .compress_vec(b"hello hello")
            .unwrap();
        assert_eq!(decompress(2, &raw, 100).unwrap(), b"hello hello");
        for codec in 1..=4 {
            assert!(
                matches!(
                    decompress(codec, b"\x82SNAPPY\x00garbage-bytes", 1 << 20),
                    Err(CodecError::Corrupt { .. })
                ),
                "codec {codec}"
            );
        }
    }
}
