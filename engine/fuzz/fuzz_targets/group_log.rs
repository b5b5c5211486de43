//! `__consumer_offsets` records: `group_log::decode_offset_record` and
//! `decode_membership_record` on an arbitrary key/value split, and `group_log::replay_partition` over a whole
//! `.log` file (what start-up does to rebuild committed offsets).
//!
//! Input: `mode (1) | split (u16 BE) | bytes`.
//! mode bit 0: the value is null (a tombstone); bit 1: instead of decoding one
//! record, write the bytes as a `.log` file and replay it; bit 2 (replay):
//! recompute every batch's CRC; bit 3 (replay): shorten a batch that runs past
//! the end; bit 4: the same for `__transaction_state` records
//! (`coord::txn::decode_key` / `decode_value`, `txn::replay_partition`).
#![no_main]

use std::collections::HashMap;

use brook_engine::coord::group_log::{
    decode_membership_record, decode_offset_record, group_key, membership_value, offset_key,
    offset_value, replay_partition,
};
use brook_engine::coord::txn;
use fuzz_util::fix_batches;
use libfuzzer_sys::fuzz_target;

thread_local! {
    static DIR: tempfile::TempDir = tempfile::tempdir().expect("temp dir");
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 3 {
        return;
    }
    let mode = input[0];
    let split = usize::from(u16::from_be_bytes([input[1], input[2]]));
    let data = &input[3..];
    if mode & 2 != 0 {
        replay(data, mode);
        return;
    }
    let split = split.min(data.len());
    if mode & 16 != 0 {
        let (key, value) = data.split_at(split);
        let Some(id) = txn::decode_key(key) else {
            return;
        };
        assert_eq!(txn::key(&id), key[..4 + id.len()]);
        if let Some(m) = txn::decode_value(id.clone(), value) {
            // What the coordinator writes for this state decodes to it again.
            assert_eq!(txn::decode_value(id, &txn::value(&m)), Some(m));
        }
        return;
    }
    let (key, value) = data.split_at(split);
    let value = (mode & 1 == 0).then_some(value);
    if let Some((group, m)) = decode_membership_record(key, value) {
        // A group metadata record (key version 2): what the coordinator
        // writes for that membership decodes to it again.
        assert_eq!(m.is_none(), value.is_none());
        if let Some(m) = m {
            let v = membership_value(&m, 0);
            assert_eq!(
                decode_membership_record(&group_key(&group), Some(&v)),
                Some((group, Some(m)))
            );
        }
        return;
    }
    let Some((group, tp, committed)) = decode_offset_record(key, value) else {
        return;
    };
    assert!(matches!(i16::from_be_bytes([key[0], key[1]]), 0 | 1));
    assert!(group.len() + tp.topic.len() + 10 <= key.len());
    assert!(tp.partition <= i32::MAX as u32);
    assert_eq!(committed.is_none(), value.is_none());
    // What the broker writes for this record decodes to the same record.
    let key2 = offset_key(&group, &tp);
    let value2 = committed.as_ref().map(offset_value);
    let again = decode_offset_record(&key2, value2.as_deref());
    assert_eq!(
        again,
        Some((group, tp, committed)),
        "offset record does not round-trip"
    );
});

fn replay(data: &[u8], mode: u8) {
    let mut bytes = data.to_vec();
    if mode & 4 != 0 {
        fix_batches(&mut bytes, mode & 8 != 0);
    }
    DIR.with(|dir| {
        let path = dir.path().join("00000000000000000000.log");
        std::fs::write(&path, &bytes).unwrap();
        if mode & 16 != 0 {
            let mut txns = HashMap::new();
            let applied = txn::replay_partition(dir.path(), &mut txns).expect("replay reads the file");
            assert!(txns.len() <= applied && applied <= bytes.len());
            return;
        }
        let mut groups = HashMap::new();
        let applied = replay_partition(dir.path(), &mut groups).expect("replay reads the file");
        // Each applied record takes at least a 61-byte batch header share plus
        // a key of 8 bytes; a generous bound that still catches runaway counts.
        assert!(
            applied <= bytes.len(),
            "{applied} records from {} bytes",
            bytes.len()
        );
        for g in groups.values() {
            assert!(g.offsets.len() <= applied);
        }
    });
}
