use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::log::batch::{Marker, ProducerBatchInfo, TRANSACTIONAL_BIT, build_batch_with};
use crate::log::producer::ProducerStateTable;
use crate::types::TopicPartition;

/// One input record: its key (index into a few keys), value (`None`: a
/// tombstone) and its batch's timestamp.
#[derive(Clone, Debug)]
struct Rec {
    offset: u64,
    key: Option<u8>,
    value: Option<Vec<u8>>,
    ts: i64,
}

/// A record as read back: offset, key, value.
type Read = (u64, Option<Vec<u8>>, Option<Vec<u8>>);
/// Segments of batches (codec, records).
type Segs = Vec<Vec<(u8, Vec<Rec>)>>;
type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

/// `batch` (uncompressed, from `build_batch`) compressed with `codec`.
fn compressed(batch: Vec<u8>, codec: u8) -> Vec<u8> {
    if codec == 0 {
        return batch;
    }
    let info = batch::validate(&batch).unwrap();
    let body = batch[BATCH_HEADER_LEN..].to_vec();
    let spans = records::record_spans(&body, &info).unwrap();
    let raws: Vec<&[u8]> = spans.iter().map(|s| &body[s.raw.clone()]).collect();
    let mut header = batch.clone();
    header[22] |= codec; // attributes, low byte: the codec
    let info = BatchInfo {
        compression: codec,
        ..info
    };
    let out = records::rebuild_batch(&header, &info, &raws).unwrap();
    assert_eq!(batch::validate(&out).unwrap().compression, codec);
    out
}

/// Writes `segments` (each a list of batches, each a list of records) as
/// segment files, plus an empty active segment after them. Returns the
/// cleanable segments.
fn write_log(dir: &Path, segments: &Segs) -> Vec<SegmentFile> {
    let mut out = Vec::new();
    let mut next = 0u64;
    for seg in segments {
        let base = Offset(next);
        let mut bytes = Vec::new();
        for (codec, recs) in seg {
            let kv: Vec<KeyValue> = recs
                .iter()
                .map(|r| (r.key.map(|k| vec![b'k', k]), r.value.clone()))
                .collect();
            let refs: Vec<_> = kv
                .iter()
                .map(|(k, v)| (k.as_deref(), v.as_deref()))
                .collect();
            let b = batch::build_batch(Offset(next), &refs, recs[0].ts, None);
            bytes.extend(compressed(b, *codec));
            next += recs.len() as u64;
        }
        std::fs::write(log_path(dir, base), &bytes).unwrap();
        out.push(SegmentFile {
            base,
            size: bytes.len() as u64,
            end: Offset(next),
        });
    }
    std::fs::write(log_path(dir, Offset(next)), b"").unwrap();
    out
}

/// Every record in the partition directory, in file order, after opening it
/// as the broker does (which completes or undoes an interrupted swap).
fn read_log(dir: &Path) -> (Vec<Read>, Offset) {
    let tp = TopicPartition {
        topic: "t".into(),
        partition: 0,
    };
    let mut producers = ProducerStateTable::new();
    let rec = crate::log::open::recover_partition(dir, &tp, &mut producers).unwrap();
    let end = rec.segments.last().unwrap().next_offset;
    let mut out = Vec::new();
    let never = AtomicBool::new(false);
    for s in &rec.segments {
        let mut t = Throttle::new(None);
        for_each_batch(&log_path(dir, s.base), s.size, &mut t, &never, |b, info| {
            if info.is_control {
                return Ok(());
            }
            let body = records::records_section(b, info, 1 << 20).unwrap();
            for r in records::record_spans(&body, info).unwrap() {
                let f = |x: Option<std::ops::Range<usize>>| x.map(|x| body[x].to_vec());
                out.push((r.offset.0, f(r.key), f(r.value)));
            }
            Ok(())
        })
        .unwrap();
    }
    (out, end)
}

fn got_len(dir: &Path) -> u64 {
    read_log(dir).0.len() as u64
}

fn plan(dir: &Path, segments: Vec<SegmentFile>, now_ms: i64, retention: u64) -> CleanPlan {
    CleanPlan {
        dir: dir.to_path_buf(),
        segments,
        first_dirty: Offset(0),
        aborted: Vec::new(),
        now_ms,
        delete_retention_ms: retention,
        segment_bytes: 1 << 30,
        map_budget: 1 << 20,
        io_limit: None,
        stop: Arc::new(AtomicBool::new(false)),
    }
}

/// What compaction must leave of `input`: per key its last record, unless
/// that is a tombstone older than the horizon; every keyless record.
fn expected(input: &[Rec], horizon: i64) -> Vec<Read> {
    let mut last: BTreeMap<u8, u64> = BTreeMap::new();
    for r in input {
        if let Some(k) = r.key {
            last.insert(k, r.offset);
        }
    }
    input
        .iter()
        .filter(|r| match r.key {
            None => true,
            Some(k) => last[&k] == r.offset && !(r.value.is_none() && r.ts < horizon),
        })
        .map(|r| (r.offset, r.key.map(|k| vec![b'k', k]), r.value.clone()))
        .collect()
}

/// Segments of batches of records with keys from a small set, values or
/// tombstones, some keyless, in every codec.
type RawLog = Vec<Vec<(u8, Vec<(Option<u8>, Option<Vec<u8>>, i64)>)>>;

fn log_strategy() -> impl Strategy<Value = RawLog> {
    let rec = (
        prop_oneof![9 => (0u8..6).prop_map(Some), 1 => Just(None)],
        prop_oneof![4 => proptest::collection::vec(any::<u8>(), 0..20).prop_map(Some), 1 => Just(None)],
        0i64..10,
    );
    let batch = (0u8..=4, proptest::collection::vec(rec, 1..6));
    proptest::collection::vec(proptest::collection::vec(batch, 1..5), 1..5)
}

/// Numbers the generated records with their offsets (keyless tombstones
/// become values: Kafka refuses keyless records in compacted topics, and a
/// keyless null is kept like any keyless record).
fn number(raw: RawLog) -> (Segs, Vec<Rec>) {
    let mut offset = 0;
    let mut all = Vec::new();
    let segs = raw
        .into_iter()
        .map(|seg| {
            seg.into_iter()
                .map(|(codec, recs)| {
                    let ts = recs[0].2 * 1000;
                    let recs: Vec<Rec> = recs
                        .into_iter()
                        .map(|(key, value, _)| {
                            let r = Rec {
                                offset,
                                key,
                                value: value.or_else(|| key.is_none().then(Vec::new)),
                                ts,
                            };
                            offset += 1;
                            all.push(r.clone());
                            r
                        })
                        .collect();
                    (codec, recs)
                })
                .collect()
        })
        .collect();
    (segs, all)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The compacted log is the latest value per key of the input (expired
    /// tombstones gone), every record at its original offset, and the
    /// log still opens with the same end.
    #[test]
    fn compacted_log_is_latest_value_per_key(raw in log_strategy(), horizon_s in 0i64..11) {
        let (segs, input) = number(raw);
        let dir = tempfile::tempdir().unwrap();
        let files = write_log(dir.path(), &segs);
        let end = files.last().unwrap().end;
        let now_ms = 100_000;
        let retention = (now_ms - horizon_s * 1000) as u64;
        let mut done = CleanOutcome::default();
        run(plan(dir.path(), files, now_ms, retention), &mut done).unwrap();
        prop_assert_eq!(done.first_dirty, Some(end));
        let (got, log_end) = read_log(dir.path());
        prop_assert_eq!(log_end, end);
        prop_assert_eq!(got, expected(&input, horizon_s * 1000));
        prop_assert_eq!(got_len(dir.path()) + done.records_removed, input.len() as u64);
    }
}

#[test]
fn a_crash_at_any_step_of_a_swap_leaves_the_old_or_the_new_log() {
    let r = |offset, key: u8, value: &[u8]| Rec {
        offset,
        key: Some(key),
        value: Some(value.to_vec()),
        ts: 0,
    };
    let segs = vec![
        vec![
            (0, vec![r(0, 1, b"a"), r(1, 2, b"b")]),
            (2, vec![r(2, 1, b"c")]),
        ],
        vec![(3, vec![r(3, 2, b"d")]), (0, vec![r(4, 3, b"e")])],
        vec![(4, vec![r(5, 1, b"f"), r(6, 3, b"g")])],
    ];
    let input: Vec<Rec> = segs.iter().flatten().flat_map(|(_, b)| b.clone()).collect();
    let probe = tempfile::tempdir().unwrap();
    let files = write_log(probe.path(), &segs);
    let p = plan(probe.path(), files.clone(), 0, 0);
    let mut t = Throttle::new(None);
    let mut out = CleanOutcome::default();
    let (map, _) = build_map(&p, &mut t, &mut out).unwrap().unwrap();
    let g = write_group(&p, &map, &files, &mut t, &mut out)
        .unwrap()
        .unwrap();
    let steps = commit_steps(probe.path(), &g).len();
    let (old, end) = read_log(probe.path());
    assert_eq!(old.len(), input.len());
    for crash_after in 0..=steps {
        let dir = tempfile::tempdir().unwrap();
        let files = write_log(dir.path(), &segs);
        let p = plan(dir.path(), files.clone(), 0, 0);
        let mut out = CleanOutcome::default();
        let (map, _) = build_map(&p, &mut t, &mut out).unwrap().unwrap();
        let g = write_group(&p, &map, &files, &mut t, &mut out)
            .unwrap()
            .unwrap();
        for step in commit_steps(dir.path(), &g).into_iter().take(crash_after) {
            step().unwrap();
        }
        let (got, log_end) = read_log(dir.path());
        assert_eq!(log_end, end, "crash after step {crash_after}");
        let new = expected(&input, 0);
        // Before the commit point the old log, from it on the cleaned one.
        let want = if crash_after < 3 { &old } else { &new };
        assert_eq!(&got, want, "crash after step {crash_after} of {steps}");
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap"))
            .collect();
        assert!(left.is_empty(), "after step {crash_after}: {left:?}");
    }
}

#[test]
fn aborted_transactions_are_dropped_and_never_supersede() {
    let dir = tempfile::tempdir().unwrap();
    let pid = ProducerBatchInfo {
        producer_id: 7,
        epoch: 0,
        base_sequence: 0,
    };
    let mut bytes = Vec::new();
    // 0: k=committed; 1: k=aborted (transactional); 2: abort marker;
    // 3: another key.
    bytes.extend(batch::build_batch(
        Offset(0),
        &[(Some(b"k"), Some(b"kept"))],
        0,
        None,
    ));
    bytes.extend(build_batch_with(
        Offset(1),
        &[(Some(b"k"), Some(b"aborted"))],
        0,
        Some(pid),
        TRANSACTIONAL_BIT,
    ));
    let marker = Marker {
        commit: false,
        coordinator_epoch: 0,
    };
    bytes.extend(batch::build_marker(Offset(2), 7, 0, marker, 0));
    bytes.extend(batch::build_batch(
        Offset(3),
        &[(Some(b"x"), Some(b"y"))],
        0,
        None,
    ));
    std::fs::write(log_path(dir.path(), Offset(0)), &bytes).unwrap();
    std::fs::write(log_path(dir.path(), Offset(4)), b"").unwrap();
    let mut p = plan(
        dir.path(),
        vec![SegmentFile {
            base: Offset(0),
            size: bytes.len() as u64,
            end: Offset(4),
        }],
        0,
        0,
    );
    p.aborted = vec![AbortedTxn {
        producer_id: 7,
        first_offset: Offset(1),
        last_offset: Offset(2),
    }];
    let mut done = CleanOutcome::default();
    run(p, &mut done).unwrap();
    let (got, _) = read_log(dir.path());
    let kv = |o, k: &[u8], v: &[u8]| (o, Some(k.to_vec()), Some(v.to_vec()));
    assert_eq!(got, vec![kv(0, b"k", b"kept"), kv(3, b"x", b"y")]);
    // The marker stays (read_committed consumers and producers rely on it).
    let raw = std::fs::read(log_path(dir.path(), Offset(0))).unwrap();
    let infos: Vec<BatchInfo> = {
        let mut at = 0;
        let mut v = Vec::new();
        while at < raw.len() {
            let i = batch::validate(&raw[at..]).unwrap();
            at += i.len as usize;
            v.push(i);
        }
        v
    };
    assert_eq!(
        infos
            .iter()
            .map(|i| (i.base_offset.0, i.is_control))
            .collect::<Vec<_>>(),
        vec![(0, false), (2, true), (3, false)]
    );
}

#[test]
fn a_stopped_pass_commits_nothing_and_leaves_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let r = |offset| Rec {
        offset,
        key: Some(1),
        value: Some(vec![1]),
        ts: 0,
    };
    let segs = vec![vec![(0, vec![r(0)]), (0, vec![r(1)])]];
    let files = write_log(dir.path(), &segs);
    let p = plan(dir.path(), files, 0, 0);
    p.stop.store(true, Ordering::Relaxed);
    let mut done = CleanOutcome::default();
    run(p, &mut done).unwrap();
    assert!(done.groups.is_empty() && done.first_dirty.is_none());
    let (got, _) = read_log(dir.path());
    assert_eq!(got.len(), 2);
    assert_eq!(load_first_dirty(dir.path()), None);
}

#[test]
fn segments_group_up_to_the_segment_size() {
    let s = |base, size, end| SegmentFile {
        base: Offset(base),
        size,
        end: Offset(end),
    };
    let segs = [s(0, 60, 10), s(10, 30, 20), s(20, 20, 30), s(30, 100, 40)];
    let sizes: Vec<usize> = groups(&segs, 100).iter().map(|g| g.len()).collect();
    assert_eq!(sizes, vec![2, 1, 1]);
}
