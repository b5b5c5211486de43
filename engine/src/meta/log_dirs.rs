//! The broker's log directories (Kafka's `log.dirs`, JBOD): where each
//! partition lives, where a new one goes, and which directories have failed.
//!
//! **Lives on:** `EngineShared`, seen by every shard; a mutex touched when a
//! partition is opened, created, deleted or described, never by produce or fetch.
//!
//! Each directory is locked by the broker (`__brook/lock`) and carries an
//! identity (`__brook/dir_id`, written on first use). The first directory also
//! keeps the broker's metadata, including `__brook/log_dirs.json`: every
//! directory the broker has used, by path and identity. At start-up a known
//! directory that is missing from the configuration, cannot be locked or read,
//! or has lost its identity (an empty mount point where a disk used to be) is
//! *failed*: it is skipped with a log line, and so that nothing is ever
//! recreated empty while its data may come back, a partition of the catalog
//! that is found in no healthy directory stays offline as long as any
//! directory has failed. A directory also fails at run time when a write,
//! fsync or open in it reports a disk error (EIO, EROFS): every partition in
//! it goes offline with KAFKA_STORAGE_ERROR, and the other directories keep
//! serving.
//!
//! A new partition goes to the healthy directory with the fewest partitions,
//! as Kafka places them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::EngineError;
use crate::meta::catalog::validate_topic_name;
use crate::meta::data_dir::{DataDir, meta_dir};
use crate::types::TopicPartition;

/// One configured or known directory.
struct LogDir {
    path: PathBuf,
    /// Why it is unusable, once it is.
    failed: Option<String>,
    /// The lock, held while the broker runs (absent for a failed directory).
    _lock: Option<DataDir>,
}

struct State {
    dirs: Vec<LogDir>,
    /// Which directory (index into `dirs`) holds each partition found or placed.
    placement: HashMap<TopicPartition, usize>,
}

/// A failed directory, as DescribeLogDirs and the logs report it.
#[derive(Clone, Debug)]
pub struct DirStatus {
    pub path: PathBuf,
    pub failed: Option<String>,
    pub partitions: Vec<TopicPartition>,
}

pub struct LogDirs {
    state: Mutex<State>,
}

/// Suffix of a partition's copy being moved into a directory (AlterReplicaLogDirs).
pub const FUTURE_SUFFIX: &str = ".future";

/// How a directory is named in `log_dirs.json`: its path with symlinks and
/// `..` resolved when it exists, so `./data` and `/abs/data` are one directory.
fn dir_key(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

fn known_path(meta: &Path) -> PathBuf {
    meta_dir(meta).join("log_dirs.json")
}

/// `<topic>-<partition>` directory names.
fn parse_partition_dir(name: &str) -> Option<TopicPartition> {
    let (topic, p) = name.rsplit_once('-')?;
    let partition = p.parse::<u32>().ok()?;
    validate_topic_name(topic).ok()?;
    Some(TopicPartition {
        topic: topic.to_string(),
        partition,
    })
}

/// This directory's identity, written on first use (`fresh`), else read.
fn dir_id(path: &Path, fresh: bool) -> Result<Option<String>, EngineError> {
    let p = meta_dir(path).join("dir_id");
    match std::fs::read_to_string(&p) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && fresh => {
            std::fs::create_dir_all(meta_dir(path))?;
            let id = crate::ids::random_hex_id();
            crate::log::index::write_file_atomically(&p, format!("{id}\n").as_bytes())?;
            Ok(Some(id))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl LogDirs {
    /// Opens the configured directories; the first holds the metadata and must
    /// open (it is already locked by the caller, `meta_lock`).
    pub fn open(configured: &[PathBuf]) -> Result<LogDirs, EngineError> {
        let meta = configured
            .first()
            .ok_or_else(|| EngineError::Storage("no log directory configured".into()))?;
        let known: BTreeMap<String, String> = match std::fs::read(known_path(meta)) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                EngineError::Storage(format!("{}: {e}", known_path(meta).display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e.into()),
        };
        let mut dirs = Vec::new();
        let mut now_known = known.clone();
        for (i, path) in configured.iter().enumerate() {
            // Made if missing, as Kafka makes its log dirs (an absent disk
            // still leaves its mount point, and is told apart by its identity).
            let _ = std::fs::create_dir_all(path);
            let key = dir_key(path);
            let expected = known.get(&key);
            let opened = (|| -> Result<(Option<DataDir>, String), EngineError> {
                // The metadata directory is locked by the caller.
                let lock = if i == 0 {
                    None
                } else {
                    Some(DataDir::lock(path)?)
                };
                let id = dir_id(path, expected.is_none())?.ok_or_else(|| {
                    EngineError::Storage(
                        "its identity (__brook/dir_id) is gone: an empty mount point where a disk was?"
                            .into(),
                    )
                })?;
                if let Some(want) = expected
                    && *want != id
                {
                    return Err(EngineError::Storage(format!(
                        "it holds directory {id}, not {want}: another disk?"
                    )));
                }
                Ok((lock, id))
            })();
            match opened {
                Ok((lock, id)) => {
                    now_known.insert(key, id);
                    dirs.push(LogDir {
                        path: path.clone(),
                        failed: None,
                        _lock: lock,
                    });
                }
                Err(e) if i == 0 => return Err(e),
                Err(e) => {
                    tracing::error!(dir = %path.display(), error = %e, "log directory skipped: its partitions stay offline");
                    dirs.push(LogDir {
                        path: path.clone(),
                        failed: Some(e.to_string()),
                        _lock: None,
                    });
                }
            }
        }
        for (path, _) in known.iter() {
            if !configured.iter().any(|c| dir_key(c) == *path) {
                tracing::error!(dir = %path, "a log directory this broker used is no longer configured: partitions found nowhere else stay offline");
                dirs.push(LogDir {
                    path: PathBuf::from(path),
                    failed: Some("no longer in log.dirs".into()),
                    _lock: None,
                });
            }
        }
        if now_known != known {
            let text = serde_json::to_vec_pretty(&now_known).expect("a map of strings");
            crate::log::index::write_file_atomically(&known_path(meta), &text)?;
        }
        let mut placement = HashMap::new();
        for (i, d) in dirs.iter_mut().enumerate() {
            if d.failed.is_some() {
                continue;
            }
            let entries = match std::fs::read_dir(&d.path) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(dir = %d.path.display(), error = %e, "log directory unreadable: skipped");
                    d.failed = Some(e.to_string());
                    continue;
                }
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| !t.is_dir()) {
                    continue; // a checkpoint file, not a partition
                }
                let name = entry.file_name();
                if name.to_string_lossy().ends_with(FUTURE_SUFFIX) {
                    // An AlterReplicaLogDirs copy that a stop interrupted: the
                    // partition is still whole where it came from.
                    tracing::info!(dir = %entry.path().display(), "removing an unfinished partition move");
                    let _ = std::fs::remove_dir_all(entry.path());
                    continue;
                }
                let Some(tp) = parse_partition_dir(&name.to_string_lossy()) else {
                    continue;
                };
                if let Some(other) = placement.insert(tp.clone(), i) {
                    tracing::error!(partition = %tp, first = %dirs_path(configured, other), "partition found in two log directories; using the first");
                    placement.insert(tp, other);
                }
            }
        }
        Ok(LogDirs {
            state: Mutex::new(State { dirs, placement }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The log directory partition `tp` lives in (its own directory is
    /// `<that>/<topic>-<partition>`), placing it (on the healthy directory with
    /// the fewest partitions) when it is new. `create` says whether a partition
    /// found nowhere may be placed: true for CreateTopics, and at start-up only
    /// when no directory has failed (it may be on the failed one).
    pub fn locate(&self, tp: &TopicPartition, create: bool) -> Result<PathBuf, EngineError> {
        let mut st = self.lock();
        if let Some(&i) = st.placement.get(tp) {
            let d = &st.dirs[i];
            return match &d.failed {
                None => Ok(d.path.clone()),
                Some(why) => Err(EngineError::Storage(format!(
                    "partition {tp} is on failed log directory {}: {why}",
                    d.path.display()
                ))),
            };
        }
        let any_failed = st.dirs.iter().any(|d| d.failed.is_some());
        if !create && any_failed {
            return Err(EngineError::Storage(format!(
                "partition {tp} is in no healthy log directory (it may be on a failed one)"
            )));
        }
        let mut counts = vec![0usize; st.dirs.len()];
        for &i in st.placement.values() {
            counts[i] += 1;
        }
        let best = (0..st.dirs.len())
            .filter(|&i| st.dirs[i].failed.is_none())
            .min_by_key(|&i| (counts[i], i))
            .ok_or_else(|| EngineError::Storage("every log directory has failed".into()))?;
        st.placement.insert(tp.clone(), best);
        Ok(st.dirs[best].path.clone())
    }

    /// The configured, healthy log directory that `path` names (compared
    /// after resolving symlinks and `..`, as DescribeLogDirs reports them).
    pub fn healthy_root(&self, path: &Path) -> Result<PathBuf, EngineError> {
        let want = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let st = self.lock();
        let d = (st.dirs.iter())
            .find(|d| std::fs::canonicalize(&d.path).unwrap_or_else(|_| d.path.clone()) == want)
            .ok_or_else(|| EngineError::LogDirNotFound(path.display().to_string()))?;
        match &d.failed {
            None => Ok(d.path.clone()),
            Some(why) => Err(EngineError::Storage(format!(
                "log directory {} has failed: {why}",
                d.path.display()
            ))),
        }
    }

    /// Records that partition `tp` now lives in log directory `root`.
    pub fn moved(&self, tp: &TopicPartition, root: &Path) {
        let mut st = self.lock();
        if let Some(i) = st.dirs.iter().position(|d| d.path == root) {
            st.placement.insert(tp.clone(), i);
        }
    }

    /// Forgets a deleted partition.
    pub fn forget(&self, tp: &TopicPartition) {
        self.lock().placement.remove(tp);
    }

    /// Marks the directory holding `path` failed (a disk error there); returns
    /// the partitions it holds, which the caller takes offline. `None` if it
    /// had already failed or `path` is in no directory.
    pub fn fail(&self, path: &Path, why: &str) -> Option<Vec<TopicPartition>> {
        let mut st = self.lock();
        let i = st
            .dirs
            .iter()
            .position(|d| d.failed.is_none() && path.starts_with(&d.path))?;
        tracing::error!(dir = %st.dirs[i].path.display(), error = why, "log directory failed: its partitions go offline, the other directories keep serving");
        st.dirs[i].failed = Some(why.to_string());
        Some(
            st.placement
                .iter()
                .filter(|(_, d)| **d == i)
                .map(|(tp, _)| tp.clone())
                .collect(),
        )
    }

    /// Every directory with its state and partitions (DescribeLogDirs).
    pub fn describe(&self) -> Vec<DirStatus> {
        let st = self.lock();
        st.dirs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mut partitions: Vec<TopicPartition> = st
                    .placement
                    .iter()
                    .filter(|(_, at)| **at == i)
                    .map(|(tp, _)| tp.clone())
                    .collect();
                partitions.sort();
                DirStatus {
                    path: d.path.clone(),
                    failed: d.failed.clone(),
                    partitions,
                }
            })
            .collect()
    }
}

fn dirs_path(configured: &[PathBuf], i: usize) -> String {
    configured
        .get(i)
        .map_or_else(|| "?".into(), |p| p.display().to_string())
}

/// Whether an I/O error means the disk under it is failing (not a full disk,
/// not a missing descriptor): EIO, EROFS, ENODEV, ENXIO.
pub fn is_disk_failure(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO) | Some(libc::EROFS) | Some(libc::ENODEV) | Some(libc::ENXIO)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(t: &str, p: u32) -> TopicPartition {
        TopicPartition {
            topic: t.into(),
            partition: p,
        }
    }

    #[test]
    fn new_partitions_go_to_the_emptiest_directory_and_are_found_again() {
        let root = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = (0..3).map(|i| root.path().join(format!("d{i}"))).collect();
        std::fs::create_dir_all(&dirs[0]).unwrap();
        let ld = LogDirs::open(&dirs).unwrap();
        let placed: Vec<PathBuf> = (0..6)
            .map(|p| {
                let at = ld
                    .locate(&tp("a-b", p), true)
                    .unwrap()
                    .join(format!("a-b-{p}"));
                std::fs::create_dir_all(&at).unwrap();
                at
            })
            .collect();
        for (p, at) in placed.iter().enumerate() {
            assert_eq!(at, &dirs[p % 3].join(format!("a-b-{p}")));
        }
        drop(ld);
        let again = LogDirs::open(&dirs).unwrap();
        assert_eq!(
            again.locate(&tp("a-b", 4), false).unwrap().join("a-b-4"),
            placed[4]
        );
        let counts: Vec<usize> = again
            .describe()
            .iter()
            .map(|d| d.partitions.len())
            .collect();
        assert_eq!(counts, vec![2, 2, 2]);
    }

    #[test]
    fn a_lost_directory_keeps_unfound_partitions_offline() {
        let root = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = (0..2).map(|i| root.path().join(format!("d{i}"))).collect();
        let ld = LogDirs::open(&dirs).unwrap();
        let on_d1 = (0..4)
            .map(|p| ld.locate(&tp("t", p), true).unwrap().join(format!("t-{p}")))
            .find(|at| at.starts_with(&dirs[1]))
            .unwrap();
        std::fs::create_dir_all(&on_d1).unwrap();
        drop(ld);
        // the disk under d1 is gone: an empty mount point
        std::fs::remove_dir_all(&dirs[1]).unwrap();
        std::fs::create_dir_all(&dirs[1]).unwrap();
        let ld = LogDirs::open(&dirs).unwrap();
        let st = ld.describe();
        assert!(st[1].failed.is_some(), "{st:?}");
        let name = on_d1.file_name().unwrap().to_string_lossy().to_string();
        let lost = parse_partition_dir(&name).unwrap();
        assert!(ld.locate(&lost, false).is_err(), "not recreated empty");
        // a new topic still goes to the healthy directory
        assert!(
            ld.locate(&tp("new", 0), true)
                .unwrap()
                .starts_with(&dirs[0])
        );
    }

    #[test]
    fn a_failing_directory_reports_its_partitions() {
        let root = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = (0..2).map(|i| root.path().join(format!("d{i}"))).collect();
        let ld = LogDirs::open(&dirs).unwrap();
        let at: Vec<PathBuf> = (0..4)
            .map(|p| ld.locate(&tp("t", p), true).unwrap().join(format!("t-{p}")))
            .collect();
        let lost = ld.fail(&at[1], "EIO").unwrap();
        assert_eq!(lost.len(), 2);
        assert!(ld.fail(&at[1], "again").is_none(), "fails once");
        assert!(ld.locate(&lost[0], false).is_err());
        assert!(ld.locate(&tp("u", 0), true).unwrap().starts_with(&dirs[0]));
    }
}
