//! Records of the `__consumer_offsets` topic, in Kafka's own formats, so that
//! committed offsets are written through the same log (and durability policy) as
//! user data and can be rebuilt from it on start-up.
//!
//! Offset commit key (version 1), big-endian, strings as i16 length + UTF-8:
//! `i16 version=1 | string group | string topic | i32 partition`.
//! Offset commit value (version 3):
//! `i16 version=3 | i64 offset | i32 leader epoch (-1 none) | string metadata | i64 commit timestamp`.
//! A null value is a tombstone (the offset was deleted with its group).
//! Group metadata key (version 2): `i16 version=2 | string group`.
//! Group metadata value (version 3): `string protocol type | i32 generation |
//! nullable string protocol | nullable string leader | i64 state timestamp |
//! i32 count, then per member: string member id | nullable string instance id |
//! string client id | string client host | i32 rebalance timeout ms | i32
//! session timeout ms | bytes subscription | bytes assignment` (bytes: i32
//! length + data). Written when a group becomes Stable or Empty, and replayed,
//! so a coordinator that restarts or moves keeps its groups' members and
//! generation: they go on heartbeating without a rebalance.

use std::collections::HashMap;
use std::path::Path;

use crate::coord::group::{CommittedOffset, Group};
use crate::log::batch::{self, BatchInfo};
use crate::log::records::uncompressed_records;
use crate::types::{Offset, TopicPartition};

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = i16::try_from(s.len()).unwrap_or(i16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..len as usize]);
}

pub fn offset_key(group: &str, tp: &TopicPartition) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + group.len() + tp.topic.len());
    k.extend_from_slice(&1i16.to_be_bytes());
    put_str(&mut k, group);
    put_str(&mut k, &tp.topic);
    k.extend_from_slice(&(tp.partition as i32).to_be_bytes());
    k
}

/// The committed offset -1 ("none"), as Kafka writes it.
const NO_OFFSET: i64 = -1;

pub fn offset_value(c: &CommittedOffset) -> Vec<u8> {
    let mut v = Vec::with_capacity(24 + c.metadata.len());
    v.extend_from_slice(&3i16.to_be_bytes());
    let offset = c.offset.map_or(NO_OFFSET, |o| o.0 as i64);
    v.extend_from_slice(&offset.to_be_bytes());
    v.extend_from_slice(&c.leader_epoch.unwrap_or(-1).to_be_bytes());
    put_str(&mut v, &c.metadata);
    v.extend_from_slice(&c.commit_timestamp_ms.to_be_bytes());
    v
}

/// A group's membership as its metadata record stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct Membership {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: Vec<StoredMember>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StoredMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Vec<u8>,
    pub assignment: Vec<u8>,
}

pub fn group_key(group: &str) -> Vec<u8> {
    let mut k = 2i16.to_be_bytes().to_vec();
    put_str(&mut k, group);
    k
}

fn put_nullable_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_str(out, s),
        None => out.extend_from_slice(&(-1i16).to_be_bytes()),
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as i32).to_be_bytes());
    out.extend_from_slice(b);
}

pub fn membership_value(m: &Membership, now_ms: i64) -> Vec<u8> {
    let mut v = 3i16.to_be_bytes().to_vec();
    put_str(&mut v, &m.protocol_type);
    v.extend_from_slice(&m.generation.to_be_bytes());
    put_nullable_str(&mut v, m.protocol.as_deref());
    put_nullable_str(&mut v, m.leader.as_deref());
    v.extend_from_slice(&now_ms.to_be_bytes());
    v.extend_from_slice(&(m.members.len() as i32).to_be_bytes());
    for x in &m.members {
        put_str(&mut v, &x.id);
        put_nullable_str(&mut v, x.instance_id.as_deref());
        put_str(&mut v, &x.client_id);
        put_str(&mut v, &x.client_host);
        v.extend_from_slice(&x.rebalance_timeout_ms.to_be_bytes());
        v.extend_from_slice(&x.session_timeout_ms.to_be_bytes());
        put_bytes(&mut v, &x.subscription);
        put_bytes(&mut v, &x.assignment);
    }
    v
}

/// The group's metadata record as one batch (`None`: a tombstone).
pub fn membership_batch(group: &str, m: Option<&Membership>, now_ms: i64) -> Vec<u8> {
    encode(
        &[(group_key(group), m.map(|m| membership_value(m, now_ms)))],
        now_ms,
    )
}

fn decode_membership(value: &[u8]) -> Option<Membership> {
    let mut r = Reader(value, 0);
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return None;
    }
    let protocol_type = r.string()?;
    let generation = r.i32()?;
    let protocol = r.nullable_string()?;
    let leader = r.nullable_string()?;
    if version >= 2 {
        r.i64()?;
    }
    let count = usize::try_from(r.i32()?).ok()?;
    let mut members = Vec::with_capacity(count.min(value.len() / 16));
    for _ in 0..count {
        let id = r.string()?;
        let instance_id = if version >= 3 {
            r.nullable_string()?
        } else {
            None
        };
        let client_id = r.string()?;
        let client_host = r.string()?;
        let rebalance_timeout_ms = if version >= 1 { r.i32()? } else { -1 };
        let session_timeout_ms = r.i32()?;
        let subscription = r.bytes()?.to_vec();
        let assignment = r.bytes()?.to_vec();
        members.push(StoredMember {
            id,
            instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Some(Membership {
        protocol_type,
        generation,
        protocol,
        leader,
        members,
    })
}

/// A group metadata record: the group and its membership (`None`: a
/// tombstone). `None` for any other record.
pub fn decode_membership_record(
    key: &[u8],
    value: Option<&[u8]>,
) -> Option<(String, Option<Membership>)> {
    let mut k = Reader(key, 0);
    if k.i16()? != 2 {
        return None;
    }
    let group = k.string()?;
    match value {
        None => Some((group, None)),
        Some(v) => Some((group, Some(decode_membership(v)?))),
    }
}

/// Big-endian reads of Kafka's record fields (strings as i16 length + UTF-8),
/// each `None` past the end.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8], pub(crate) usize);

impl Reader<'_> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.0.get(self.1..self.1.checked_add(n)?)?;
        self.1 += n;
        Some(s)
    }
    pub(crate) fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    pub(crate) fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    pub(crate) fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    pub(crate) fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.i16()?).ok()?;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
    /// A string whose length -1 means null: `Some(None)`.
    pub(crate) fn nullable_string(&mut self) -> Option<Option<String>> {
        let len = self.i16()?;
        if len < 0 {
            return Some(None);
        }
        let s = self.take(len as usize)?;
        Some(Some(String::from_utf8(s.to_vec()).ok()?))
    }
    pub(crate) fn bytes(&mut self) -> Option<&[u8]> {
        let len = usize::try_from(self.i32()?).ok()?;
        self.take(len)
    }
}

/// A decoded offset commit record: `None` value for a tombstone.
pub type OffsetRecord = (String, TopicPartition, Option<CommittedOffset>);

pub fn decode_offset_record(key: &[u8], value: Option<&[u8]>) -> Option<OffsetRecord> {
    let mut k = Reader(key, 0);
    if !matches!(k.i16()?, 0 | 1) {
        return None;
    }
    let group = k.string()?;
    let topic = k.string()?;
    let partition = u32::try_from(k.i32()?).ok()?;
    let tp = TopicPartition { topic, partition };
    let Some(value) = value else {
        return Some((group, tp, None));
    };
    let mut v = Reader(value, 0);
    let version = v.i16()?;
    let offset = match v.i64()? {
        NO_OFFSET => None,
        raw => Some(Offset(u64::try_from(raw).ok()?)),
    };
    let leader_epoch = if version >= 3 {
        Some(v.i32()?).filter(|e| *e >= 0)
    } else {
        None
    };
    let metadata = v.string()?;
    let commit_timestamp_ms = v.i64()?;
    Some((
        group,
        tp,
        Some(CommittedOffset {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp_ms,
        }),
    ))
}

/// Encodes commits as one uncompressed batch ready to append.
pub fn commit_batch(
    group: &str,
    commits: &[(TopicPartition, CommittedOffset)],
    now_ms: i64,
) -> Vec<u8> {
    encode(&commit_records(group, commits), now_ms)
}

fn commit_records(
    group: &str,
    commits: &[(TopicPartition, CommittedOffset)],
) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    commits
        .iter()
        .map(|(tp, c)| (offset_key(group, tp), Some(offset_value(c))))
        .collect()
}

/// Encodes tombstones for the given offsets as one batch; with
/// `whole_group`, the group's metadata record's too (a deleted group).
pub fn tombstone_batch(
    group: &str,
    tps: &[TopicPartition],
    whole_group: bool,
    now_ms: i64,
) -> Vec<u8> {
    let mut kvs: Vec<(Vec<u8>, Option<Vec<u8>>)> =
        tps.iter().map(|tp| (offset_key(group, tp), None)).collect();
    if whole_group {
        kvs.push((group_key(group), None));
    }
    encode(&kvs, now_ms)
}

fn encode(kvs: &[(Vec<u8>, Option<Vec<u8>>)], now_ms: i64) -> Vec<u8> {
    let refs: Vec<batch::KeyValue<'_>> = kvs
        .iter()
        .map(|(k, v)| (Some(&k[..]), v.as_deref()))
        .collect();
    batch::build_batch(Offset(0), &refs, now_ms, None)
}

/// A group metadata record replayed: the group takes that membership (a
/// tombstone leaves it empty, or forgets it if nothing else is left).
fn restore(groups: &mut HashMap<String, Group>, group: String, m: Option<Membership>) {
    let g = groups
        .entry(group.clone())
        .or_insert_with(|| Group::new(group.clone()));
    g.restore_membership(m, std::time::Instant::now());
    if g.is_empty_of_everything() {
        groups.remove(&group);
    }
}

fn apply(groups: &mut HashMap<String, Group>, rec: OffsetRecord) {
    let (group, tp, value) = rec;
    match value {
        Some(c) => {
            groups
                .entry(group.clone())
                .or_insert_with(|| Group::new(group))
                .offsets
                .insert(tp, c);
        }
        None => {
            if let Some(g) = groups.get_mut(&group) {
                g.offsets.remove(&tp);
                if g.is_empty_of_everything() {
                    groups.remove(&group);
                }
            }
        }
    }
}

/// Calls `f` with every valid batch of a partition directory, oldest first
/// (already recovered, so every batch up to the first invalid one is good);
/// returns the sum of what `f` returned.
pub fn for_each_batch(
    dir: &Path,
    mut f: impl FnMut(&[u8], &BatchInfo) -> usize,
) -> std::io::Result<usize> {
    // A cleaner pass must not swap segments under the listing.
    let _no_swap = crate::log::cleaner::SWAP_LOCK
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let mut logs: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    let mut applied = 0;
    for path in logs {
        let bytes = std::fs::read(&path)?;
        let mut pos = 0;
        while pos < bytes.len() {
            let Ok(info) = batch::validate(&bytes[pos..]) else {
                break;
            };
            applied += f(&bytes[pos..pos + info.len as usize], &info);
            pos += info.len as usize;
        }
    }
    Ok(applied)
}

/// Rebuilds committed offsets from one `__consumer_offsets` partition directory.
/// Transactional commits (TxnOffsetCommit) are held per producer until their
/// marker: a commit marker applies them, an abort drops them; those still
/// undecided at the end are left pending in their groups.
pub fn replay_partition(dir: &Path, groups: &mut HashMap<String, Group>) -> std::io::Result<usize> {
    let mut pending: HashMap<u64, Vec<OffsetRecord>> = HashMap::new();
    let n = for_each_batch(dir, |bytes, info| {
        replay_batch(bytes, info, groups, &mut pending)
    })?;
    for (producer_id, recs) in pending {
        for (group, tp, value) in recs {
            if let Some(c) = value {
                groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(group))
                    .txn_offsets
                    .entry(producer_id)
                    .or_default()
                    .insert(tp, c);
            }
        }
    }
    Ok(n)
}

fn replay_batch(
    bytes: &[u8],
    info: &BatchInfo,
    groups: &mut HashMap<String, Group>,
    pending: &mut HashMap<u64, Vec<OffsetRecord>>,
) -> usize {
    let txn_producer = info
        .producer
        .filter(|_| info.is_transactional)
        .map(|p| p.producer_id);
    if let Some(marker) = batch::read_marker(bytes, info) {
        let recs = txn_producer.and_then(|p| pending.remove(&p));
        if marker.commit {
            for rec in recs.into_iter().flatten() {
                apply(groups, rec);
            }
        }
        return 1;
    }
    let Ok(records) = uncompressed_records(bytes, info) else {
        return 0;
    };
    let mut n = 0;
    for r in records {
        if let Some(key) = r.key
            && let Some((group, m)) = decode_membership_record(key, r.value)
        {
            restore(groups, group, m);
            n += 1;
            continue;
        }
        if let Some(key) = r.key
            && let Some(rec) = decode_offset_record(key, r.value)
        {
            match txn_producer {
                Some(p) => pending.entry(p).or_default().push(rec),
                None => apply(groups, rec),
            }
            n += 1;
        }
    }
    n
}

/// Transactional offset commits of `producer_id` as one batch (Kafka writes
/// them with the producer's id and epoch, no sequence, transactional).
pub fn txn_commit_batch(
    group: &str,
    commits: &[(TopicPartition, CommittedOffset)],
    producer_id: u64,
    epoch: u16,
    now_ms: i64,
) -> Vec<u8> {
    let kvs = commit_records(group, commits);
    let refs: Vec<batch::KeyValue<'_>> = kvs
        .iter()
        .map(|(k, v)| (Some(&k[..]), v.as_deref()))
        .collect();
    let producer = batch::ProducerBatchInfo {
        producer_id,
        epoch,
        base_sequence: batch::NO_SEQUENCE,
    };
    batch::build_batch_with(
        Offset(0),
        &refs,
        now_ms,
        Some(producer),
        batch::TRANSACTIONAL_BIT,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_minus_one_round_trips_as_none() {
        let tp = TopicPartition {
            topic: "orders".into(),
            partition: 0,
        };
        let c = CommittedOffset {
            offset: None,
            leader_epoch: None,
            metadata: String::new(),
            commit_timestamp_ms: 9,
        };
        let value = offset_value(&c);
        assert_eq!(&value[2..10], &(-1i64).to_be_bytes());
        let (_, _, v) = decode_offset_record(&offset_key("g", &tp), Some(&value)).unwrap();
        assert_eq!(v, Some(c));
    }

    #[test]
    fn commit_records_round_trip_and_replay() {
        let tp = TopicPartition {
            topic: "orders".into(),
            partition: 7,
        };
        let c = CommittedOffset {
            offset: Some(Offset(42)),
            leader_epoch: None,
            metadata: "m".into(),
            commit_timestamp_ms: 9,
        };
        let (g, t, v) =
            decode_offset_record(&offset_key("g1", &tp), Some(&offset_value(&c))).unwrap();
        assert_eq!((g.as_str(), &t, v.as_ref()), ("g1", &tp, Some(&c)));

        let dir = tempfile::tempdir().unwrap();
        let mut b1 = commit_batch("g1", &[(tp.clone(), c.clone())], 9);
        let info1 = batch::validate(&b1).unwrap();
        batch::set_base_offset(&mut b1, Offset(0));
        let mut b2 = tombstone_batch("g1", std::slice::from_ref(&tp), false, 10);
        batch::set_base_offset(&mut b2, info1.next_offset());
        let mut file = b1.clone();
        file.extend_from_slice(&b2);
        // Preallocated space after the last batch reads as zeros.
        file.extend_from_slice(&[0u8; 100]);
        // The commit alone, then the commit and its tombstone.
        let mut groups = HashMap::new();
        std::fs::write(dir.path().join("00000000000000000000.log"), &b1).unwrap();
        assert_eq!(replay_partition(dir.path(), &mut groups).unwrap(), 1);
        assert_eq!(groups["g1"].offsets[&tp], c);
        let mut groups = HashMap::new();
        std::fs::write(dir.path().join("00000000000000000000.log"), &file).unwrap();
        assert_eq!(replay_partition(dir.path(), &mut groups).unwrap(), 2);
        assert!(
            !groups.contains_key("g1"),
            "the tombstone removed the only offset"
        );
    }

    #[test]
    fn group_partition_matches_kafka() {
        // Java: "abc".hashCode() == 96354, 96354 % 50 == 4; "" hashes to 0.
        assert_eq!(crate::coord::group::offsets_partition_of("abc"), 4);
        assert_eq!(crate::coord::group::offsets_partition_of(""), 0);
        // Negative hash codes are made positive first: "polygenelubricants" hashes
        // to i32::MIN, which Kafka's Utils.abs maps to 0.
        assert_eq!(
            crate::coord::group::offsets_partition_of("polygenelubricants"),
            0
        );
    }

    #[test]
    fn a_stored_membership_is_replayed_and_a_tombstone_forgets_it() {
        let m = Membership {
            protocol_type: "consumer".into(),
            generation: 7,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            members: vec![StoredMember {
                id: "m1".into(),
                instance_id: None,
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
                subscription: b"sub".to_vec(),
                assignment: b"asg".to_vec(),
            }],
        };
        let b = membership_batch("g", Some(&m), 5);
        let info = batch::validate(&b).unwrap();
        let recs = uncompressed_records(&b, &info).unwrap();
        assert_eq!(
            decode_membership_record(recs[0].key.unwrap(), recs[0].value),
            Some(("g".to_string(), Some(m.clone())))
        );
        let mut groups = HashMap::new();
        let mut pending = HashMap::new();
        replay_batch(&b, &info, &mut groups, &mut pending);
        let g = &groups["g"];
        assert_eq!(
            (g.state, g.generation, g.persisted),
            (crate::coord::group::GroupState::Stable, 7, Some((7, true)))
        );
        assert_eq!(g.members["m1"].assignment.as_ref(), b"asg");
        assert_eq!(g.members["m1"].metadata_for("range").as_ref(), b"sub");
        // Nothing changed: nothing to store again.
        assert!(g.membership_to_store().is_none());
        let t = tombstone_batch("g", &[], true, 6);
        replay_batch(&t, &batch::validate(&t).unwrap(), &mut groups, &mut pending);
        assert!(groups.is_empty(), "a group with nothing left is forgotten");
    }
}
