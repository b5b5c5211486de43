//! The high-watermark checkpoint of a replicated broker (Kafka's
//! `replication-offset-checkpoint`): one small text file per shard per log
//! directory, `high-watermark-checkpoint.shard<N>`, listing each replicated
//! partition's high watermark with its topic id. Written every checkpoint
//! interval and at a clean stop (temporary file, fsync, rename), read when the
//! shard opens, so that a restarted broker serves what was committed before
//! it stopped at once instead of relearning it from its peers.
//!
//! A value is used only for the topic id it was written for (a topic deleted
//! and created again starts afresh) and never above the log end or below the
//! log start. Committed records are never truncated (a diverged follower cuts
//! above its high watermark), so a checkpointed high watermark stays valid;
//! it is only read at open, never after a truncation within a run.
//!
//! Format (text, so that an operator can read it):
//! ```text
//! 0
//! <count>
//! <topic> <partition> <high watermark> <topic id, 32 hex digits>
//! ```

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::types::TopicPartition;

const VERSION: &str = "0";
const PREFIX: &str = "high-watermark-checkpoint.shard";

/// A checkpointed high watermark and the topic id it belongs to.
pub type Entry = ([u8; 16], u64);

pub fn path(log_dir: &Path, shard: usize) -> PathBuf {
    log_dir.join(format!("{PREFIX}{shard}"))
}

pub fn encode(entries: &[(TopicPartition, [u8; 16], u64)]) -> String {
    let mut out = format!("{VERSION}\n{}\n", entries.len());
    for (tp, id, hw) in entries {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        out.push_str(&format!("{} {} {hw} {hex}\n", tp.topic, tp.partition));
    }
    out
}

/// The entries of a checkpoint file's text; `None` when it is not one
/// (then nothing in it is trusted).
pub fn decode(text: &str) -> Option<HashMap<TopicPartition, Entry>> {
    let mut lines = text.lines();
    if lines.next()? != VERSION {
        return None;
    }
    let count: usize = lines.next()?.parse().ok()?;
    let mut out = HashMap::new();
    for line in lines.by_ref().take(count) {
        let mut f = line.split(' ');
        let (topic, partition, hw, hex) = (f.next()?, f.next()?, f.next()?, f.next()?);
        if f.next().is_some() || topic.is_empty() || hex.len() != 32 {
            return None;
        }
        let mut id = [0u8; 16];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        let tp = TopicPartition {
            topic: topic.to_string(),
            partition: partition.parse().ok()?,
        };
        out.insert(tp, (id, hw.parse().ok()?));
    }
    (out.len() == count && lines.next().is_none()).then_some(out)
}

/// This shard's checkpoints in every log directory (a missing or damaged
/// file is no checkpoint).
pub fn load(log_dirs: &[PathBuf], shard: usize) -> HashMap<TopicPartition, Entry> {
    let mut out = HashMap::new();
    for dir in log_dirs {
        let p = path(dir, shard);
        match std::fs::read_to_string(&p) {
            Ok(text) => match decode(&text) {
                Some(entries) => out.extend(entries),
                None => {
                    tracing::warn!(file = %p.display(), "high-watermark checkpoint unreadable; relearning those high watermarks")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %p.display(), error = %e, "cannot read the high-watermark checkpoint")
            }
        }
    }
    out
}

/// Replaces the checkpoint at `path` with `text` durably (blocking).
pub fn store(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let tp = |t: &str, p| TopicPartition {
            topic: t.into(),
            partition: p,
        };
        let entries = vec![(tp("a.b-c", 0), [7u8; 16], 42), (tp("x", 3), [0xab; 16], 0)];
        let text = encode(&entries);
        let back = decode(&text).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[&tp("a.b-c", 0)], ([7u8; 16], 42));
        assert_eq!(back[&tp("x", 3)], ([0xab; 16], 0));
        for n in 0..text.len() - 1 {
            assert!(decode(&text[..n]).is_none(), "prefix of {n} bytes");
        }
        assert!(decode(&text.replace("42", "4x2")).is_none());
        assert!(decode(&format!("{text}extra\n")).is_none());
        assert!(decode("1\n0\n").is_none(), "unknown version");
        assert_eq!(decode("0\n0\n").unwrap().len(), 0);
    }
}
