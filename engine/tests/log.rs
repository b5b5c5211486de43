//! The log end to end, below the wire protocol: append, group-commit flush, read
//! from the cache and from disk, roll, retention, restart and torn-tail recovery,
//! idempotent producers. Each test runs on a compio runtime like a shard does.

use std::path::Path;
use std::time::SystemTime;

use brook_engine::log::batch::{ProducerBatchInfo, build_batch, parse_header};
use brook_engine::log::partition::{
    Appended, FetchedData, Isolation, Partition, PartitionCell, PartitionRef, run_flusher,
};
use brook_engine::{EngineError, Offset, TopicConfig, TopicPartition};

fn tp() -> TopicPartition {
    TopicPartition {
        topic: "t".into(),
        partition: 0,
    }
}

fn open(dir: &Path, config: TopicConfig) -> (PartitionRef, compio::runtime::JoinHandle<()>) {
    let p = Partition::open(dir, tp(), config, 64 << 10).expect("open partition");
    let cell = PartitionCell::new(p);
    let flusher = compio::runtime::spawn(run_flusher(cell.clone()));
    (cell, flusher)
}

async fn close(cell: PartitionRef, flusher: compio::runtime::JoinHandle<()>) {
    cell.state.borrow_mut().begin_close();
    cell.flush_event.notify();
    flusher.await.expect("flusher finishes");
}

fn record(i: u64) -> (Vec<u8>, Vec<u8>) {
    (
        format!("key-{i}").into_bytes(),
        format!("value-{i}-{}", "x".repeat((i % 50) as usize)).into_bytes(),
    )
}

/// A batch of `n` records numbered from `first`.
fn batch(first: u64, n: u64, ts: i64, producer: Option<ProducerBatchInfo>) -> Vec<u8> {
    let recs: Vec<(Vec<u8>, Vec<u8>)> = (first..first + n).map(record).collect();
    let kv: Vec<brook_engine::log::batch::KeyValue<'_>> = recs
        .iter()
        .map(|(k, v)| (Some(&k[..]), Some(&v[..])))
        .collect();
    build_batch(Offset(0), &kv, ts, producer)
}

async fn append_durable(cell: &PartitionRef, bytes: &[u8]) -> Result<Appended, EngineError> {
    let appended = cell.state.borrow_mut().append(
        &bytes::Bytes::copy_from_slice(bytes),
        brook_engine::TimestampMs::now(),
    )?;
    cell.flush_event.notify();
    let end = match appended {
        Appended::New { end_offset, .. } => end_offset,
        Appended::Duplicate { base_offset } => base_offset.next(1),
    };
    let rx = cell.state.borrow_mut().wait_durable(end);
    rx.await.expect("flusher alive")?;
    Ok(appended)
}

async fn read(
    cell: &PartitionRef,
    offset: Offset,
    max_bytes: usize,
) -> Result<FetchedData, EngineError> {
    brook_engine::log::partition::fetch(cell, offset, max_bytes, Isolation::ReadUncommitted).await
}

/// Base offsets and record counts of the batches in `bytes`, checking each one's CRC.
fn batches_in(bytes: &[u8]) -> Vec<(u64, u32)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let info = brook_engine::log::batch::validate(&bytes[pos..]).expect("valid stored batch");
        out.push((info.base_offset.0, info.record_count));
        pos += info.len as usize;
    }
    out
}

/// Reads everything from `from` to the high watermark, batch by batch.
async fn read_all(cell: &PartitionRef, from: Offset) -> Vec<(u64, u32)> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let d = read(cell, next, 32 << 10).await.expect("read");
        if d.records.is_empty() {
            return out;
        }
        for (base, n) in batches_in(&d.records) {
            if base + n as u64 > next.0 {
                out.push((base, n));
                next = Offset(base + n as u64);
            }
        }
    }
}

fn run<F: std::future::Future<Output = ()>>(f: F) {
    compio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(f);
}

#[test]
fn offsets_are_dense_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let (cell, flusher) = open(dir.path(), TopicConfig::default());
        for i in 0..200u64 {
            let a = append_durable(&cell, &batch(i * 3, 3, 1_000 + i as i64, None))
                .await
                .unwrap();
            assert_eq!(
                a,
                Appended::New {
                    base_offset: Offset(i * 3),
                    end_offset: Offset(i * 3 + 3)
                }
            );
        }
        let from_cache = read_all(&cell, Offset(0)).await;
        assert_eq!(from_cache, (0..200).map(|i| (i * 3, 3)).collect::<Vec<_>>());
        close(cell, flusher).await;

        let (cell, flusher) = open(dir.path(), TopicConfig::default());
        assert_eq!(cell.state.borrow().log_end, Offset(600));
        let from_disk = read_all(&cell, Offset(0)).await;
        assert_eq!(
            from_disk, from_cache,
            "disk returns what the cache returned"
        );
        // Mid-batch offsets return the batch that holds them.
        let d = read(&cell, Offset(301), 1).await.unwrap();
        assert_eq!(batches_in(&d.records)[0], (300, 3));
        let a = append_durable(&cell, &batch(0, 2, 5_000, None))
            .await
            .unwrap();
        assert_eq!(
            a,
            Appended::New {
                base_offset: Offset(600),
                end_offset: Offset(602)
            }
        );
        close(cell, flusher).await;
    });
}

#[test]
fn segments_roll_and_retention_moves_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let small = TopicConfig {
        segment_bytes: 8 << 10,
        retention_bytes: Some(32 << 10),
        ..TopicConfig::default()
    };
    run(async {
        let (cell, flusher) = open(dir.path(), small.clone());
        for i in 0..300u64 {
            append_durable(&cell, &batch(i * 2, 2, 10 + i as i64, None))
                .await
                .unwrap();
        }
        let logs = std::fs::read_dir(dir.path().join("t-0"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".log")
            });
        assert!(
            logs.count() > 5,
            "300 batches of ~150 bytes roll 8 KiB segments"
        );
        close(cell, flusher).await;

        // Restart: sealed segments load from their index files; reads go to disk.
        let (cell, flusher) = open(dir.path(), small);
        assert_eq!(read_all(&cell, Offset(0)).await.len(), 300);
        let deleted = cell.state.borrow_mut().apply_retention(SystemTime::now());
        assert!(deleted > 0);
        let start = cell.state.borrow().log_start;
        assert!(start > Offset(0));
        match read(&cell, Offset(0), 1024).await {
            Err(EngineError::OffsetOutOfRange { log_start, .. }) => assert_eq!(log_start, start),
            other => panic!("expected OffsetOutOfRange, got {other:?}"),
        }
        let rest = read_all(&cell, start).await;
        assert_eq!(rest.first().unwrap().0, start.0);
        assert_eq!(rest.last().unwrap(), &(598, 2));
        close(cell, flusher).await;
    });
}

/// A stop after a roll but before the rolled segment's seal finished (the seal
/// runs off the reactor, after later batches may be acknowledged): the rolled
/// segment still has preallocated zeros after its last batch and no index files.
/// Reopening must keep every segment and finish the seal, not treat the zeros as
/// damage and delete the later segments.
#[test]
fn unfinished_seal_is_finished_at_open_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let small = TopicConfig {
        segment_bytes: 8 << 10,
        ..TopicConfig::default()
    };
    run(async {
        let (cell, flusher) = open(dir.path(), small.clone());
        for i in 0..200u64 {
            append_durable(&cell, &batch(i * 2, 2, 10 + i as i64, None))
                .await
                .unwrap();
        }
        close(cell, flusher).await;
        // Undo the seal of every rolled segment: zeros after the data, no indexes.
        let part = dir.path().join("t-0");
        let mut logs: Vec<_> = std::fs::read_dir(&part)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        logs.sort();
        assert!(logs.len() > 3, "expected several segments, got {logs:?}");
        let mut sizes = Vec::new();
        for log in &logs[..logs.len() - 1] {
            let f = std::fs::OpenOptions::new().write(true).open(log).unwrap();
            let size = f.metadata().unwrap().len();
            sizes.push(size);
            f.set_len(size + (64 << 10)).unwrap();
            std::fs::remove_file(log.with_extension("index")).unwrap();
            std::fs::remove_file(log.with_extension("timeindex")).unwrap();
        }
        let (cell, flusher) = open(dir.path(), small);
        let all = read_all(&cell, Offset(0)).await;
        assert_eq!(all.len(), 200);
        assert_eq!(all.last().unwrap(), &(398, 2));
        for (log, size) in logs.iter().zip(&sizes) {
            assert_eq!(
                std::fs::metadata(log).unwrap().len(),
                *size,
                "{log:?} not truncated back"
            );
            assert!(
                log.with_extension("index").exists(),
                "{log:?} has no index again"
            );
        }
        close(cell, flusher).await;
    });
}

#[test]
fn torn_tail_is_truncated_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let (cell, flusher) = open(dir.path(), TopicConfig::default());
        for i in 0..10u64 {
            append_durable(&cell, &batch(i, 1, 1, None)).await.unwrap();
        }
        close(cell, flusher).await;
    });
    // Simulate a crash mid-write: half of a new batch after the last good one.
    let log = dir.path().join("t-0").join(format!("{:020}.log", 0));
    let good_len = {
        let bytes = std::fs::read(&log).unwrap();
        let mut pos = 0;
        while pos + 61 <= bytes.len() && parse_header(&bytes[pos..]).is_ok_and(|h| h.len > 0) {
            pos += parse_header(&bytes[pos..]).unwrap().len as usize;
        }
        pos
    };
    let mut torn = batch(99, 5, 1, None);
    brook_engine::log::batch::set_base_offset(&mut torn, Offset(10));
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.truncate(good_len);
    bytes.extend_from_slice(&torn[..torn.len() / 2]);
    std::fs::write(&log, &bytes).unwrap();
    run(async {
        let (cell, flusher) = open(dir.path(), TopicConfig::default());
        assert_eq!(
            cell.state.borrow().log_end,
            Offset(10),
            "the torn batch is gone"
        );
        let a = append_durable(&cell, &batch(0, 1, 1, None)).await.unwrap();
        assert_eq!(
            a,
            Appended::New {
                base_offset: Offset(10),
                end_offset: Offset(11)
            }
        );
        assert_eq!(read_all(&cell, Offset(0)).await.len(), 11);
        close(cell, flusher).await;
    });
}

#[test]
fn idempotent_producer_dedupes_and_rejects_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let pid = |seq| {
        Some(ProducerBatchInfo {
            producer_id: 7,
            epoch: 0,
            base_sequence: seq,
        })
    };
    run(async {
        let (cell, flusher) = open(dir.path(), TopicConfig::default());
        let first = batch(0, 4, 1, pid(0));
        assert_eq!(
            append_durable(&cell, &first).await.unwrap(),
            Appended::New {
                base_offset: Offset(0),
                end_offset: Offset(4)
            }
        );
        assert_eq!(
            append_durable(&cell, &first).await.unwrap(),
            Appended::Duplicate {
                base_offset: Offset(0)
            }
        );
        let gap = batch(0, 1, 1, pid(9));
        assert!(matches!(
            append_durable(&cell, &gap).await,
            Err(EngineError::OutOfOrderSequence { .. })
        ));
        append_durable(&cell, &batch(4, 1, 1, pid(4)))
            .await
            .unwrap();
        close(cell, flusher).await;
        // The sequence state is rebuilt from the log after a restart.
        let (cell, flusher) = open(dir.path(), TopicConfig::default());
        let again = batch(4, 1, 1, pid(4));
        assert_eq!(
            append_durable(&cell, &again).await.unwrap(),
            Appended::Duplicate {
                base_offset: Offset(4)
            }
        );
        assert_eq!(cell.state.borrow().log_end, Offset(5));
        close(cell, flusher).await;
    });
}

/// A request's batches go in all or none: a sequence gap or a duplicate in a
/// later batch must not leave the earlier ones in the log.
#[test]
fn idempotent_request_with_several_batches_is_all_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let pid = |seq| {
        Some(ProducerBatchInfo {
            producer_id: 9,
            epoch: 0,
            base_sequence: seq,
        })
    };
    let request = |parts: &[Vec<u8>]| parts.concat();
    run(async {
        let (cell, flusher) = open(dir.path(), TopicConfig::default());
        // Sequences 0..3 then 3..5: a valid request of two batches.
        let good = request(&[batch(0, 3, 1, pid(0)), batch(3, 2, 1, pid(3))]);
        assert_eq!(
            append_durable(&cell, &good).await.unwrap(),
            Appended::New {
                base_offset: Offset(0),
                end_offset: Offset(5)
            }
        );
        // 5..7 is next, then a gap (9): nothing of this request is appended.
        let gap = request(&[batch(5, 2, 1, pid(5)), batch(7, 1, 1, pid(9))]);
        assert!(matches!(
            append_durable(&cell, &gap).await,
            Err(EngineError::OutOfOrderSequence { .. })
        ));
        assert_eq!(cell.state.borrow().log_end, Offset(5));
        // A new batch then a duplicate of 3..5: the request is a duplicate.
        let dup = request(&[batch(5, 2, 1, pid(5)), batch(3, 2, 1, pid(3))]);
        assert_eq!(
            append_durable(&cell, &dup).await.unwrap(),
            Appended::Duplicate {
                base_offset: Offset(3)
            }
        );
        assert_eq!(cell.state.borrow().log_end, Offset(5));
        // The producer's next sequence is still 5.
        let next = request(&[batch(5, 2, 1, pid(5)), batch(7, 1, 1, pid(7))]);
        assert_eq!(
            append_durable(&cell, &next).await.unwrap(),
            Appended::New {
                base_offset: Offset(5),
                end_offset: Offset(8)
            }
        );
        assert_eq!(read_all(&cell, Offset(0)).await.len(), 4);
        close(cell, flusher).await;
    });
}

#[test]
fn bad_batches_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let cfg = TopicConfig {
            max_message_bytes: 1024,
            ..TopicConfig::default()
        };
        let (cell, flusher) = open(dir.path(), cfg);
        let mut corrupt = batch(0, 2, 1, None);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        assert!(matches!(
            append_durable(&cell, &corrupt).await,
            Err(EngineError::CorruptBatch(_))
        ));
        let big = batch(0, 40, 1, None);
        assert!(big.len() > 1024);
        assert!(matches!(
            append_durable(&cell, &big).await,
            Err(EngineError::BatchTooLarge { .. })
        ));
        assert!(append_durable(&cell, b"garbage").await.is_err());
        assert_eq!(cell.state.borrow().log_end, Offset(0));
        close(cell, flusher).await;
    });
}

#[test]
fn timestamps_find_the_first_batch_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let cfg = TopicConfig {
            segment_bytes: 4 << 10,
            ..TopicConfig::default()
        };
        let (cell, flusher) = open(dir.path(), cfg);
        for i in 0..100u64 {
            append_durable(&cell, &batch(i, 1, 10_000 + 10 * i as i64, None))
                .await
                .unwrap();
        }
        for (target, want) in [
            (0i64, Some(0u64)),
            (10_005, Some(1)),
            (10_500, Some(50)),
            (10_990, Some(99)),
            (20_000, None),
        ] {
            let cands = cell
                .state
                .borrow()
                .timestamp_candidates(brook_engine::TimestampMs(target))
                .unwrap();
            let mut found = None;
            for (file, from, to) in cands {
                if let Some(hit) = brook_engine::log::read::find_timestamp(
                    &file,
                    from,
                    to,
                    brook_engine::TimestampMs(target),
                )
                .await
                .unwrap()
                {
                    assert_eq!(
                        parse_header(&hit.batch).unwrap().base_offset,
                        hit.base_offset
                    );
                    found = Some(hit.base_offset.0);
                    break;
                }
            }
            assert_eq!(found, want, "timestamp {target}");
        }
        close(cell, flusher).await;
    });
}

#[test]
fn producer_state_survives_a_roll_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pid = |seq| {
        Some(ProducerBatchInfo {
            producer_id: 9,
            epoch: 0,
            base_sequence: seq,
        })
    };
    // Every batch rolls a new segment, so the producer's last batch ends up sealed.
    let tiny = TopicConfig {
        segment_bytes: 64,
        ..TopicConfig::default()
    };
    run(async {
        let (cell, flusher) = open(dir.path(), tiny.clone());
        append_durable(&cell, &batch(0, 2, 1, pid(0)))
            .await
            .unwrap();
        append_durable(&cell, &batch(2, 2, 1, pid(2)))
            .await
            .unwrap();
        append_durable(&cell, &batch(4, 1, 1, None)).await.unwrap();
        close(cell, flusher).await;
        let (cell, flusher) = open(dir.path(), tiny);
        let retry = batch(2, 2, 1, pid(2));
        assert_eq!(
            append_durable(&cell, &retry).await.unwrap(),
            Appended::Duplicate {
                base_offset: Offset(2)
            }
        );
        assert_eq!(cell.state.borrow().log_end, Offset(5));
        close(cell, flusher).await;
    });
}

/// Large fetches bypass the page cache (O_DIRECT, `DIRECT_READ_MIN_BYTES`); they
/// return the same bytes as small buffered ones, from unaligned positions, across
/// sealed segments (truncated, so their last block is short) and the active one.
#[test]
fn large_direct_reads_match_small_buffered_reads() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let config = TopicConfig {
            segment_bytes: 1 << 20,
            ..TopicConfig::default()
        };
        let (cell, flusher) = open(dir.path(), config.clone());
        let mut next = 0u64;
        for i in 0..4_000u64 {
            let n = 1 + i % 40;
            append_durable(&cell, &batch(next, n, 1_000 + i as i64, None))
                .await
                .unwrap();
            next += n;
        }
        close(cell, flusher).await;

        // Reopened: the batch cache is empty, so every read goes to disk.
        let (cell, flusher) = open(dir.path(), config);
        let logs = std::fs::read_dir(dir.path().join("t-0"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("log".as_ref()))
            .count();
        assert!(logs >= 3, "want sealed segments, have {logs} segment files");
        let small = read_all(&cell, Offset(0)).await;
        let mut large = Vec::new();
        let mut bytes_small = Vec::new();
        let mut bytes_large = Vec::new();
        let mut at = Offset(0);
        loop {
            let d = read(
                &cell,
                at,
                brook_engine::log::read::DIRECT_READ_MIN_BYTES * 4,
            )
            .await
            .expect("large read");
            if d.records.is_empty() {
                break;
            }
            bytes_large.extend_from_slice(&d.records);
            for (base, n) in batches_in(&d.records) {
                large.push((base, n));
                at = Offset(base + n as u64);
            }
        }
        assert_eq!(large, small);
        let mut at = Offset(0);
        while at.0 < next {
            let d = read(&cell, at, 32 << 10).await.unwrap();
            bytes_small.extend_from_slice(&d.records);
            let (base, n) = *batches_in(&d.records).last().unwrap();
            at = Offset(base + n as u64);
        }
        assert_eq!(bytes_large, bytes_small);
        // From the middle of a batch in the middle of a block.
        let d = read(&cell, Offset(next / 2 + 1), 1 << 20).await.unwrap();
        let (base, n) = batches_in(&d.records)[0];
        assert!(base <= next / 2 + 1 && next / 2 + 1 < base + n as u64);
        close(cell, flusher).await;
    });
}
