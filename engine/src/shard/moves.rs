//! Moving a partition to another log directory (Kafka's AlterReplicaLogDirs).
//!
//! The move runs on the partition's owner, in the background, in two phases:
//! 1. while the partition serves, its sealed segments (immutable) are copied
//!    into `<target>/<topic>-<partition>.future/` and fsynced;
//! 2. the partition is closed (its last flush and a clean-stop checkpoint), the
//!    rest of its files are copied, files that retention deleted meanwhile are
//!    dropped from the copy, the copy is fsynced and renamed into place, the
//!    placement is updated, the old directory is removed and the partition is
//!    reopened from its new home, scanning nothing.
//!
//! Only phase 2 pauses the partition (requests meanwhile get
//! UNKNOWN_TOPIC_OR_PARTITION, which clients retry): about the time to copy its
//! active segment. A failure before the rename leaves the partition where it was
//! and reopens it there; a stop during a move leaves a `.future` directory that
//! the next start removes (`LogDirs::open`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::{Shard, shard_of};
use crate::error::EngineError;
use crate::log::partition::{Partition, blocking};
use crate::meta::log_dirs::FUTURE_SUFFIX;
use crate::types::TopicPartition;

/// Copies `files` (file names under `src`) into `dst` and fsyncs each copy.
fn copy_files(src: &Path, dst: &Path, files: &[String]) -> std::io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for name in files {
        let to = dst.join(name);
        match std::fs::copy(src.join(name), &to) {
            Ok(_) => std::fs::File::open(&to)?.sync_all()?,
            // Deleted by retention since it was listed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn names_in(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_file() {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(out)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl Shard {
    /// AlterReplicaLogDirs for one partition: checks the target and starts the
    /// move on the partition's owner; answers once the move is accepted.
    pub async fn move_partition(
        self: &Rc<Self>,
        tp: TopicPartition,
        target: PathBuf,
    ) -> Result<(), EngineError> {
        let root = self.shared.log_dirs.healthy_root(&target)?;
        let owner = shard_of(&tp, self.shards());
        self.invoke_on(owner, move |s| async move { s.start_move(tp, root) })
            .await?
    }

    fn start_move(self: &Rc<Self>, tp: TopicPartition, to: PathBuf) -> Result<(), EngineError> {
        let cell = self.partition(&tp)?;
        let from = self.shared.log_dirs.locate(&tp, false)?;
        if from == to || !self.moving.borrow_mut().insert(tp.clone()) {
            return Ok(()); // already there, or already on its way
        }
        drop(cell);
        let me = self.clone();
        compio::runtime::spawn(async move {
            let res = me.move_now(&tp, &from, &to).await;
            me.moving.borrow_mut().remove(&tp);
            match res {
                Ok(()) => {
                    tracing::info!(partition = %tp, from = %from.display(), to = %to.display(), "moved partition")
                }
                Err(e) => {
                    tracing::error!(partition = %tp, to = %to.display(), error = %e, "partition move failed; it stays where it was")
                }
            }
        })
        .detach();
        Ok(())
    }

    async fn move_now(
        &self,
        tp: &TopicPartition,
        from: &Path,
        to: &Path,
    ) -> Result<(), EngineError> {
        // No cleaner pass may rewrite the sealed segments while they are
        // copied: it would swap files between the two phases.
        let paused = self.partition(tp)?;
        paused.stop_cleaner(true).await;
        let res = self.copy_and_switch(tp, from, to).await;
        paused.resume_cleaner();
        res
    }

    async fn copy_and_switch(
        &self,
        tp: &TopicPartition,
        from: &Path,
        to: &Path,
    ) -> Result<(), EngineError> {
        let src = Partition::dir_for(from, tp);
        let future = to.join(format!("{tp}{FUTURE_SUFFIX}"));
        let dst = Partition::dir_for(to, tp);
        // Phase 1: the sealed segments, while the partition serves.
        let sealed: Vec<String> = {
            let cell = self.partition(tp)?;
            let p = cell.state.borrow();
            (p.sealed_files().iter())
                .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect()
        };
        {
            let (src, future, sealed) = (src.clone(), future.clone(), sealed.clone());
            blocking(move || {
                let _ = std::fs::remove_dir_all(&future);
                copy_files(&src, &future, &sealed)
            })
            .await?;
        }
        // Phase 2: closed, the rest.
        let meta = self
            .catalog()
            .topics
            .get(&tp.topic)
            .cloned()
            .ok_or(EngineError::UnknownTopicOrPartition)?;
        self.close_partition(tp).await;
        let copied = {
            let (src, future, dst, to) =
                (src.clone(), future.clone(), dst.clone(), to.to_path_buf());
            blocking(move || {
                let now = names_in(&src)?;
                let done: HashSet<&String> = sealed.iter().collect();
                let rest: Vec<String> = now.iter().filter(|n| !done.contains(n)).cloned().collect();
                copy_files(&src, &future, &rest)?;
                let keep: HashSet<&String> = now.iter().collect();
                for n in names_in(&future)? {
                    if !keep.contains(&n) {
                        std::fs::remove_file(future.join(&n))?;
                    }
                }
                sync_dir(&future)?;
                std::fs::rename(&future, &dst)?;
                sync_dir(&to)
            })
            .await
        };
        if let Err(e) = copied {
            let future = future.clone();
            let _ = blocking(move || std::fs::remove_dir_all(&future)).await;
            self.open_partition(&meta, tp.partition, false)?;
            return Err(e);
        }
        self.shared.log_dirs.moved(tp, to);
        let (src, from) = (src.clone(), from.to_path_buf());
        if let Err(e) = blocking(move || {
            std::fs::remove_dir_all(&src)?;
            sync_dir(&from)
        })
        .await
        {
            tracing::warn!(partition = %tp, error = %e, "moved, but the old copy could not be removed");
        }
        self.open_partition(&meta, tp.partition, false)
    }
}
