//! A partition's log start offset when it lies inside its first segment
//! (Kafka's `log-start-offset-checkpoint`, one small file per partition).
//!
//! Retention moves the log start by deleting whole segments, so the first
//! segment's base offset says where the log starts. DeleteRecords (and a
//! follower following its leader's log start) moves it to any offset: the
//! records before it are gone for every reader although their segment stays
//! until the log start passes its end. That offset is kept in
//! `log-start-offset` in the partition's directory, written atomically
//! (temporary file, fsync, rename, directory fsync) before DeleteRecords is
//! answered, and read when the partition opens. A value below the first
//! segment's base is stale (retention passed it) and a value past the log end
//! (a crash cut the log) is clamped to it.
//!
//! Format (text, so that an operator can read it): `0\n<offset>\n`.

use std::path::{Path, PathBuf};

use crate::types::Offset;

const FILE: &str = "log-start-offset";
const VERSION: &str = "0";

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

pub fn encode(start: Offset) -> String {
    format!("{VERSION}\n{}\n", start.0)
}

/// The stored offset, if the file exists and reads; a damaged file is
/// logged and ignored (the log then starts at its first segment, which only
/// shows records DeleteRecords had hidden: nothing is lost).
pub fn load(dir: &Path) -> Option<Offset> {
    load_file(&path(dir))
}

/// An offset stored in this file's format at `p` (also the log cleaner's
/// `cleaner-offset`).
pub fn load_file(p: &Path) -> Option<Offset> {
    let text = match std::fs::read_to_string(p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %p.display(), error = %e, "cannot read the stored offset; ignored");
            return None;
        }
    };
    let decoded = decode(&text);
    if decoded.is_none() {
        tracing::warn!(path = %p.display(), "damaged offset file; ignored");
    }
    decoded
}

fn decode(text: &str) -> Option<Offset> {
    let mut lines = text.lines();
    if lines.next()? != VERSION {
        return None;
    }
    let offset = lines.next()?.trim().parse::<u64>().ok()?;
    lines.next().is_none().then_some(Offset(offset))
}

/// Stores `start` durably (blocking: call it off the reactor).
pub fn store(dir: &Path, start: Offset) -> std::io::Result<()> {
    store_file(&path(dir), start)
}

/// Stores `offset` durably at `p` in this file's format (blocking).
pub fn store_file(p: &Path, offset: Offset) -> std::io::Result<()> {
    crate::log::index::write_file_atomically(p, encode(offset).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), None);
        store(dir.path(), Offset(12345)).unwrap();
        assert_eq!(load(dir.path()), Some(Offset(12345)));
        for bad in ["", "0\n", "1\n5\n", "0\nx\n", "0\n5\n6\n"] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
