//! `OffsetIndex::decode` and `TimeIndex::decode` (the `.index` and
//! `.timeindex` files read at start-up): on success the bytes round-trip
//! through `encode`, lookups agree with a linear search, truncation keeps
//! what it should, and a builder restored from both files accepts a next batch.
//!
//! Input: `mode (1) | bytes`, decoded as both kinds of index. The mode picks
//! the restored builder's index interval.
#![no_main]

use brook_engine::log::batch::BatchInfo;
use brook_engine::log::index::{IndexBuilder, OffsetIndex, TimeIndex};
use brook_engine::types::{FilePos, Offset, RelativeOffset, TimestampMs};
use fuzz_util::mode_and_rest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((mode, data)) = mode_and_rest(input) else {
        return;
    };
    let offsets = OffsetIndex::decode(data);
    if let Ok(idx) = &offsets {
        check_offset_index(data, idx);
    }
    let times = TimeIndex::decode(data);
    if let Ok(t) = &times {
        check_time_index(data, t);
    }
    if let (Ok(o), Ok(t)) = (offsets, times) {
        append_after_restore(u32::from(mode) + 1, o, t);
    }
});

fn check_offset_index(data: &[u8], idx: &OffsetIndex) {
    assert_eq!(idx.encode(), data, "offset index does not round-trip");
    assert_eq!(idx.len(), data.len() / 8);
    let e = idx.entries();
    assert!(
        e.windows(2)
            .all(|w| w[0].rel < w[1].rel && w[0].pos < w[1].pos)
    );
    assert!(e.iter().all(|x| x.pos.0 <= u64::from(u32::MAX)));
    let mut targets = vec![0, u32::MAX];
    for x in e.iter().take(64) {
        targets.extend([
            x.rel.0.saturating_sub(1),
            x.rel.0,
            x.rel.0.saturating_add(1),
        ]);
    }
    for t in targets {
        let naive = e
            .iter()
            .rev()
            .find(|x| x.rel.0 <= t)
            .map_or(FilePos(0), |x| x.pos);
        assert_eq!(idx.lookup(RelativeOffset(t)), naive, "offset lookup {t}");
    }
    if let Some(mid) = e.get(e.len() / 2) {
        let mut cut = idx.clone();
        cut.truncate_after_pos(mid.pos);
        assert_eq!(cut.entries(), &e[..e.len() / 2]);
    }
}

fn check_time_index(data: &[u8], t: &TimeIndex) {
    assert_eq!(t.encode(), data, "time index does not round-trip");
    assert_eq!(t.len(), data.len() / 12);
    let e = t.entries();
    assert!(
        e.windows(2)
            .all(|w| w[0].timestamp < w[1].timestamp && w[0].rel < w[1].rel)
    );
    assert_eq!(t.max_timestamp(), e.last().map(|x| x.timestamp));
    let mut targets = vec![i64::MIN, i64::MAX, 0];
    for x in e.iter().take(64) {
        let ts = x.timestamp.0;
        targets.extend([ts.saturating_sub(1), ts, ts.saturating_add(1)]);
    }
    for target in targets {
        let naive = e
            .iter()
            .rev()
            .find(|x| x.timestamp.0 < target)
            .map(|x| x.rel);
        assert_eq!(t.lookup(TimestampMs(target)), naive, "time lookup {target}");
    }
    if let Some(mid) = e.get(e.len() / 2) {
        let mut cut = t.clone();
        cut.truncate_from(mid.rel);
        assert_eq!(cut.entries(), &e[..e.len() / 2]);
    }
}

/// What recovery does with a sealed segment's files: wrap them in a builder,
/// then account for a batch that follows everything they index.
fn append_after_restore(interval: u32, offsets: OffsetIndex, times: TimeIndex) {
    let last_rel = [offsets.last().map(|l| l.0), times.last().map(|l| l.1)]
        .into_iter()
        .flatten()
        .max();
    let rel = last_rel.map_or(Some(0), |r| r.0.checked_add(1));
    let pos = offsets.last().map_or(Some(0), |(_, p)| p.0.checked_add(1));
    let (Some(rel), Some(pos)) = (rel, pos) else {
        return;
    };
    if pos > u64::from(u32::MAX) {
        return;
    }
    let max_ts = times.max_timestamp().map_or(0, |t| t.0.saturating_add(1));
    let mut b = IndexBuilder::from_parts(interval, offsets.clone(), times.clone());
    assert_eq!(b.max_timestamp(), times.max_timestamp());
    let base = Offset(1 << 32);
    let info = BatchInfo {
        base_offset: Offset(base.0 + u64::from(rel)),
        len: 61,
        last_offset_delta: 0,
        record_count: 1,
        first_timestamp: TimestampMs(max_ts),
        max_timestamp: TimestampMs(max_ts),
        producer: None,
        is_transactional: false,
        is_control: false,
        compression: 0,
        leader_epoch: 0,
    };
    b.on_batch(FilePos(pos), &info, base);
    assert!(b.max_timestamp() >= times.max_timestamp());
    assert!(b.offset_index().len() >= offsets.len());
}
