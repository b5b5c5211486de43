//! The quorum's durable state: Raft entries, the hard state (term, vote,
//! commit) and the latest snapshot of the cluster image, in one append-only file
//! (`__brook/quorum.log`), kept in memory as well (metadata is small).
//!
//! Each record is `[len u32][crc32c u32][kind u8][payload]`. Entries appended
//! at index i replace any held from i on, as Raft asks. A torn or corrupt record
//! ends the file: it and everything after it were never acknowledged (a member
//! answers or votes only after the fsync that covers its state). A snapshot
//! record restarts the file's contents, which is how the log is compacted: the
//! file is rewritten as snapshot + hard state + the entries after it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::{BufMut, BytesMut};
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, Storage};

use super::codec::{self, Reader};
use crate::error::EngineError;

const ENTRIES: u8 = 1;
const HARD_STATE: u8 = 2;
const SNAPSHOT: u8 = 3;
const HEADER: usize = 9;
/// Larger than any record Brook writes (a snapshot of 100,000 partitions' metadata is ~20 MiB).
const MAX_RECORD: usize = 256 << 20;

pub fn path(data_dir: &Path) -> PathBuf {
    crate::meta::data_dir::meta_dir(data_dir).join("quorum.log")
}

/// What [`QuorumStore::open`] found on disk.
pub struct Recovered {
    pub store: QuorumStore,
    /// Bytes of the file that were torn or corrupt and have been cut off.
    pub discarded: u64,
}

/// Raft's storage for the metadata quorum: [`MemStorage`] for the entries,
/// plus the snapshot with its data (MemStorage keeps only its metadata) and the
/// file everything is written to.
pub struct QuorumStore {
    mem: MemStorage,
    snapshot: Snapshot,
    file: Option<File>,
    path: PathBuf,
}

fn record(kind: u8, payload: &[u8], out: &mut BytesMut) {
    out.put_u32_le(payload.len() as u32 + 1);
    let mut crc = crc32c::crc32c(&[kind]);
    crc = crc32c::crc32c_append(crc, payload);
    out.put_u32_le(crc);
    out.put_u8(kind);
    out.put_slice(payload);
}

impl QuorumStore {
    /// Opens (or creates) the store of a member whose voters are `voters`.
    pub fn open(data_dir: &Path, voters: Vec<u64>) -> Result<Recovered, EngineError> {
        let path = path(data_dir);
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let conf = ConfState::from((voters, vec![]));
        let mut store = QuorumStore {
            mem: MemStorage::new_with_conf_state(conf.clone()),
            snapshot: Snapshot::default(),
            file: None,
            path: path.clone(),
        };
        let mut pos = 0;
        while bytes.len() - pos >= HEADER {
            let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap());
            if len == 0 || len > MAX_RECORD || pos + 8 + len > bytes.len() {
                break;
            }
            let body = &bytes[pos + 8..pos + 8 + len];
            if crc32c::crc32c(body) != crc {
                break;
            }
            if store.replay(body[0], &body[1..], &conf).is_err() {
                break;
            }
            pos += 8 + len;
        }
        let discarded = (bytes.len() - pos) as u64;
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if discarded > 0 {
            file.set_len(pos as u64)?;
            file.sync_all()?;
        }
        store.file = Some(file);
        Ok(Recovered { store, discarded })
    }

    fn replay(&mut self, kind: u8, payload: &[u8], conf: &ConfState) -> Result<(), EngineError> {
        let bad = |e: codec::DecodeError| EngineError::Storage(e.to_string());
        let mut r = Reader::new(payload);
        match kind {
            ENTRIES => {
                let entries = codec::entries(&mut r).map_err(bad)?;
                self.append_mem(&entries)?;
            }
            HARD_STATE => {
                let hs = codec::hard_state(&mut r).map_err(bad)?;
                self.mem.wl().set_hardstate(hs);
            }
            SNAPSHOT => {
                let mut snap = codec::snapshot(&mut r).map_err(bad)?;
                // The voters are the configured ones, whatever an old file says.
                snap.mut_metadata().set_conf_state(conf.clone());
                self.install_mem(snap)?;
            }
            _ => return Err(EngineError::Storage("unknown quorum record".into())),
        }
        r.finish().map_err(bad)
    }

    fn append_mem(&mut self, entries: &[Entry]) -> Result<(), EngineError> {
        if entries.is_empty() {
            return Ok(());
        }
        let first = self.mem.first_index().unwrap_or(1);
        // Entries the snapshot already covers are skipped.
        let keep: Vec<Entry> = (entries.iter())
            .filter(|e| e.index >= first)
            .cloned()
            .collect();
        if keep.is_empty() {
            return Ok(());
        }
        (self.mem.wl().append(&keep)).map_err(|e| EngineError::Storage(format!("raft log: {e}")))
    }

    fn install_mem(&mut self, snap: Snapshot) -> Result<(), EngineError> {
        let index = snap.get_metadata().index;
        let term = snap.get_metadata().term;
        let mut mem = self.mem.wl();
        // Keep the hard state's term and vote; its commit is at least the snapshot.
        let mut hs = mem.hard_state().clone();
        mem.apply_snapshot(snap.clone())
            .map_err(|e| EngineError::Storage(format!("raft snapshot: {e}")))?;
        hs.commit = hs.commit.max(index);
        hs.term = hs.term.max(term);
        mem.set_hardstate(hs);
        drop(mem);
        self.snapshot = snap;
        Ok(())
    }

    pub fn hard_state(&self) -> HardState {
        self.mem.rl().hard_state().clone()
    }

    /// The snapshot held (empty data before the first one).
    pub fn latest_snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Committed entries after the snapshot, up to the hard state's commit: what
    /// a restarting member applies before it hears from anyone.
    pub fn committed_entries(&self) -> Result<Vec<Entry>, EngineError> {
        let first = self.mem.first_index().unwrap_or(1);
        let commit = self.hard_state().commit;
        if commit < first {
            return Ok(Vec::new());
        }
        (self.mem)
            .entries(first, commit + 1, None, GetEntriesContext::empty(false))
            .map_err(|e| EngineError::Storage(format!("raft log: {e}")))
    }

    /// Takes `entries`, a new hard state and/or a snapshot received from the
    /// leader into memory, and returns the bytes that make them durable; the
    /// caller writes them with [`write_durably`] (off the reactor) before it
    /// sends anything that depends on them.
    pub fn stage(
        &mut self,
        snapshot: Option<Snapshot>,
        entries: &[Entry],
        hs: Option<&HardState>,
    ) -> Result<BytesMut, EngineError> {
        let mut out = BytesMut::new();
        if let Some(snap) = snapshot {
            let mut p = BytesMut::new();
            codec::put_snapshot(&mut p, &snap);
            record(SNAPSHOT, &p, &mut out);
            self.install_mem(snap)?;
        }
        if !entries.is_empty() {
            let mut p = BytesMut::new();
            codec::put_entries(&mut p, entries);
            record(ENTRIES, &p, &mut out);
            self.append_mem(entries)?;
        }
        if let Some(hs) = hs {
            let mut p = BytesMut::new();
            codec::put_hard_state(&mut p, hs);
            record(HARD_STATE, &p, &mut out);
            self.mem.wl().set_hardstate(hs.clone());
        }
        Ok(out)
    }

    /// A handle to write staged bytes with, from another thread.
    pub fn writer(&self) -> Result<File, EngineError> {
        Ok(self
            .file
            .as_ref()
            .ok_or_else(|| EngineError::Storage("quorum log not open".into()))?
            .try_clone()?)
    }

    /// Compacts the log: keeps the image at `index` (applied, so committed) as
    /// the snapshot and drops the entries it covers, in memory and on disk
    /// (the file is rewritten and renamed over the old one).
    pub fn compact(&mut self, index: u64, data: bytes::Bytes) -> Result<(), EngineError> {
        let term = self
            .mem
            .term(index)
            .map_err(|e| EngineError::Storage(format!("raft log: {e}")))?;
        let conf = self
            .mem
            .initial_state()
            .map(|s| s.conf_state)
            .unwrap_or_default();
        let snap = Snapshot {
            data,
            metadata: Some(SnapshotMetadata {
                conf_state: Some(conf).into(),
                index,
                term,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let last = self.mem.last_index().unwrap_or(index);
        let rest = if last > index {
            (self.mem)
                .entries(index + 1, last + 1, None, GetEntriesContext::empty(false))
                .map_err(|e| EngineError::Storage(format!("raft log: {e}")))?
        } else {
            Vec::new()
        };
        let hs = self.hard_state();
        let mut out = BytesMut::new();
        let mut p = BytesMut::new();
        codec::put_snapshot(&mut p, &snap);
        record(SNAPSHOT, &p, &mut out);
        p.clear();
        codec::put_hard_state(&mut p, &hs);
        record(HARD_STATE, &p, &mut out);
        if !rest.is_empty() {
            p.clear();
            codec::put_entries(&mut p, &rest);
            record(ENTRIES, &p, &mut out);
        }
        let tmp = self.path.with_extension("log.tmp");
        crate::log::index::write_file_atomically(&tmp, &out)?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = Some(OpenOptions::new().append(true).open(&self.path)?);
        self.mem
            .wl()
            .compact(index + 1)
            .map_err(|e| EngineError::Storage(format!("raft log: {e}")))?;
        self.snapshot = snap;
        Ok(())
    }

    pub fn first_index(&self) -> u64 {
        self.mem.first_index().unwrap_or(1)
    }
}

/// Appends staged bytes and syncs them. On failure (a full disk, an I/O
/// error) the file is cut back to where it was, so that the same bytes can
/// be written again later without leaving a torn record in the middle.
pub fn write_durably(mut file: File, bytes: &[u8]) -> std::io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let before = file.metadata()?.len();
    let written = file.write_all(bytes).and_then(|_| file.sync_data());
    if written.is_err() {
        let _ = file.set_len(before);
    }
    written
}

impl Storage for QuorumStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.mem.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }

    /// The image snapshot, with its data (MemStorage's would carry none).
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot.get_metadata().index < request_index {
            return Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn entry(index: u64, term: u64, data: &'static [u8]) -> Entry {
        Entry {
            index,
            term,
            data: Bytes::from_static(data),
            ..Default::default()
        }
    }

    fn persist(store: &mut QuorumStore, entries: &[Entry], hs: Option<&HardState>) {
        let bytes = store.stage(None, entries, hs).unwrap();
        write_durably(store.writer().unwrap(), &bytes).unwrap();
    }

    #[test]
    fn entries_and_hard_state_survive_a_restart_and_overwrites_apply() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(crate::meta::data_dir::meta_dir(dir.path())).unwrap();
        let mut s = QuorumStore::open(dir.path(), vec![1, 2, 3]).unwrap().store;
        persist(
            &mut s,
            &[entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")],
            None,
        );
        // A new leader's entries replace index 3 on.
        let hs = HardState {
            term: 2,
            vote: 2,
            commit: 3,
            ..Default::default()
        };
        persist(&mut s, &[entry(3, 2, b"C")], Some(&hs));
        drop(s);
        let r = QuorumStore::open(dir.path(), vec![1, 2, 3]).unwrap();
        assert_eq!(r.discarded, 0);
        assert_eq!(r.store.hard_state(), hs);
        let got: Vec<(u64, u64)> = (r.store.committed_entries().unwrap().iter())
            .map(|e| (e.index, e.term))
            .collect();
        assert_eq!(got, [(1, 1), (2, 1), (3, 2)]);
    }

    #[test]
    fn a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(crate::meta::data_dir::meta_dir(dir.path())).unwrap();
        let mut s = QuorumStore::open(dir.path(), vec![1]).unwrap().store;
        persist(&mut s, &[entry(1, 1, b"a")], None);
        persist(&mut s, &[entry(2, 1, b"b")], None);
        drop(s);
        let p = path(dir.path());
        let len = std::fs::metadata(&p).unwrap().len();
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len - 3).unwrap();
        let r = QuorumStore::open(dir.path(), vec![1]).unwrap();
        assert!(r.discarded > 0);
        assert_eq!(r.store.mem.last_index().unwrap(), 1);
    }

    #[test]
    fn compaction_keeps_the_snapshot_and_later_entries() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(crate::meta::data_dir::meta_dir(dir.path())).unwrap();
        let mut s = QuorumStore::open(dir.path(), vec![1]).unwrap().store;
        let hs = HardState {
            term: 1,
            vote: 1,
            commit: 3,
            ..Default::default()
        };
        persist(
            &mut s,
            &[entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")],
            Some(&hs),
        );
        s.compact(2, Bytes::from_static(b"image@2")).unwrap();
        drop(s);
        let r = QuorumStore::open(dir.path(), vec![1]).unwrap().store;
        assert_eq!(r.latest_snapshot().get_data(), b"image@2");
        assert_eq!(r.first_index(), 3);
        let after: Vec<u64> = (r.committed_entries().unwrap().iter())
            .map(|e| e.index)
            .collect();
        assert_eq!(after, [3]);
        assert!(r.snapshot(2, 0).is_ok());
    }
}
