//! The data directory's layout, in one place, and the broker's hold on it.
//!
//! ```text
//! <data-dir>/
//!   __brook/lock               flock'ed (exclusive) by the running broker
//!   __brook/cluster_id         created once: 32 hex digits
//!   __brook/topics.json        the catalog (`catalog`)
//!   __brook/quotas.json        client quotas (`quota`)
//!   __brook/producer_id_block  end of the last reserved block of producer ids (`shard`)
//!   <topic>-<partition>/       one partition's segments (`partition`, `segment`)
//! ```
//!
//! `__brook` cannot be a topic name prefix (`catalog::validate_topic_name`), so
//! the metadata directory never collides with a partition's.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::EngineError;

/// The directory of the broker's own metadata files.
pub fn meta_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("__brook")
}

pub fn catalog_path(data_dir: &Path) -> PathBuf {
    meta_dir(data_dir).join("topics.json")
}

pub fn broker_configs_path(data_dir: &Path) -> PathBuf {
    meta_dir(data_dir).join("broker-configs.json")
}

pub fn acls_path(data_dir: &Path) -> PathBuf {
    meta_dir(data_dir).join("acls.json")
}

pub fn scram_credentials_path(data_dir: &Path) -> PathBuf {
    meta_dir(data_dir).join("scram-credentials.json")
}

pub fn quotas_path(data_dir: &Path) -> PathBuf {
    meta_dir(data_dir).join("quotas.json")
}

pub fn producer_id_block_path(data_dir: &Path) -> PathBuf {
    meta_dir(data_dir).join("producer_id_block")
}

/// How long a broker waits for the lock: one killed just before may still hold
/// it for a moment while it exits.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// A data directory this process holds exclusively, until dropped.
pub struct DataDir {
    path: PathBuf,
    _lock: std::fs::File,
}

impl DataDir {
    /// Creates the directory if needed and takes its lock: two brokers must never
    /// write the same log. Waits up to [`LOCK_WAIT`] for a previous holder.
    pub fn lock(path: &Path) -> Result<DataDir, EngineError> {
        use std::os::fd::AsRawFd;
        let meta = meta_dir(path);
        std::fs::create_dir_all(&meta)?;
        let lock_path = meta.join("lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            // SAFETY: plain syscall on an fd we own.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(DataDir {
                    path: path.to_path_buf(),
                    _lock: f,
                });
            }
            if Instant::now() >= deadline {
                return Err(EngineError::Storage(format!(
                    "{} is in use by another broker",
                    path.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The cluster id, created (and fsynced) on first use.
    pub fn cluster_id(&self) -> Result<String, EngineError> {
        let path = meta_dir(&self.path).join("cluster_id");
        if let Ok(id) = std::fs::read_to_string(&path) {
            return Ok(id.trim().to_string());
        }
        let id = crate::ids::random_hex_id();
        let mut f = std::fs::File::create(&path)?;
        writeln!(f, "{id}")?;
        f.sync_all()?;
        Ok(id)
    }
}
