//! Brook's own binary form of the Raft types that cross the network or reach
//! disk: messages between quorum members, log entries, the hard state and
//! snapshots.
//!
//! raft-rs's types are protobuf 2 structs, but peer bytes are never handed to
//! protobuf's parser (RUSTSEC-2024-0437: unbounded recursion on hostile input).
//! This codec is flat: fixed-width little-endian integers, length-prefixed byte
//! strings and counts, every count bounded by the bytes that remain before
//! anything is allocated, and no nesting deeper than message → snapshot.

use bytes::{BufMut, Bytes, BytesMut};
use raft::eraftpb::{
    ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot, SnapshotMetadata,
};

/// Why bytes could not be decoded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed quorum data: {0}")]
pub struct DecodeError(pub &'static str);

type Result<T> = std::result::Result<T, DecodeError>;

/// A cursor over bytes that refuses to read past their end.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.buf.len() {
            return Err(DecodeError("truncated"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    pub fn bytes(&mut self) -> Result<Bytes> {
        let n = self.u32()? as usize;
        Ok(Bytes::copy_from_slice(self.take(n)?))
    }

    /// A count of items each at least `min_item` bytes long: refused when the
    /// rest of the input could not hold that many.
    pub fn count(&mut self, min_item: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item.max(1)) > self.buf.len() {
            return Err(DecodeError("count larger than the data"));
        }
        Ok(n)
    }

    pub fn finish(self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError("trailing bytes"))
        }
    }
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_u32_le(b.len() as u32);
    out.put_slice(b);
}

fn put_ids(out: &mut BytesMut, ids: &[u64]) {
    out.put_u32_le(ids.len() as u32);
    for id in ids {
        out.put_u64_le(*id);
    }
}

fn ids(r: &mut Reader) -> Result<Vec<u64>> {
    let n = r.count(8)?;
    (0..n).map(|_| r.u64()).collect()
}

const MIN_ENTRY: usize = 1 + 8 + 8 + 4 + 4 + 1;

pub fn put_entry(out: &mut BytesMut, e: &Entry) {
    out.put_u8(e.entry_type as u8);
    out.put_u64_le(e.term);
    out.put_u64_le(e.index);
    put_bytes(out, &e.data);
    put_bytes(out, &e.context);
    out.put_u8(e.sync_log as u8);
}

pub fn entry(r: &mut Reader) -> Result<Entry> {
    let entry_type = match r.u8()? {
        0 => EntryType::EntryNormal,
        1 => EntryType::EntryConfChange,
        2 => EntryType::EntryConfChangeV2,
        _ => return Err(DecodeError("entry type")),
    };
    Ok(Entry {
        entry_type,
        term: r.u64()?,
        index: r.u64()?,
        data: r.bytes()?,
        context: r.bytes()?,
        sync_log: r.u8()? != 0,
        ..Default::default()
    })
}

pub fn put_entries(out: &mut BytesMut, entries: &[Entry]) {
    out.put_u32_le(entries.len() as u32);
    for e in entries {
        put_entry(out, e);
    }
}

pub fn entries(r: &mut Reader) -> Result<Vec<Entry>> {
    let n = r.count(MIN_ENTRY)?;
    (0..n).map(|_| entry(r)).collect()
}

pub fn put_hard_state(out: &mut BytesMut, hs: &HardState) {
    out.put_u64_le(hs.term);
    out.put_u64_le(hs.vote);
    out.put_u64_le(hs.commit);
}

pub fn hard_state(r: &mut Reader) -> Result<HardState> {
    Ok(HardState {
        term: r.u64()?,
        vote: r.u64()?,
        commit: r.u64()?,
        ..Default::default()
    })
}

pub fn put_conf_state(out: &mut BytesMut, cs: &ConfState) {
    put_ids(out, &cs.voters);
    put_ids(out, &cs.learners);
    put_ids(out, &cs.voters_outgoing);
    put_ids(out, &cs.learners_next);
    out.put_u8(cs.auto_leave as u8);
}

pub fn conf_state(r: &mut Reader) -> Result<ConfState> {
    Ok(ConfState {
        voters: ids(r)?,
        learners: ids(r)?,
        voters_outgoing: ids(r)?,
        learners_next: ids(r)?,
        auto_leave: r.u8()? != 0,
        ..Default::default()
    })
}

pub fn put_snapshot(out: &mut BytesMut, s: &Snapshot) {
    put_bytes(out, &s.data);
    let meta = s.get_metadata();
    put_conf_state(out, meta.get_conf_state());
    out.put_u64_le(meta.index);
    out.put_u64_le(meta.term);
}

pub fn snapshot(r: &mut Reader) -> Result<Snapshot> {
    let data = r.bytes()?;
    let conf_state = conf_state(r)?;
    let metadata = SnapshotMetadata {
        conf_state: Some(conf_state).into(),
        index: r.u64()?,
        term: r.u64()?,
        ..Default::default()
    };
    Ok(Snapshot {
        data,
        metadata: Some(metadata).into(),
        ..Default::default()
    })
}

fn message_type(v: u8) -> Result<MessageType> {
    use MessageType::*;
    Ok(match v {
        0 => MsgHup,
        1 => MsgBeat,
        2 => MsgPropose,
        3 => MsgAppend,
        4 => MsgAppendResponse,
        5 => MsgRequestVote,
        6 => MsgRequestVoteResponse,
        7 => MsgSnapshot,
        8 => MsgHeartbeat,
        9 => MsgHeartbeatResponse,
        10 => MsgUnreachable,
        11 => MsgSnapStatus,
        12 => MsgCheckQuorum,
        13 => MsgTransferLeader,
        14 => MsgTimeoutNow,
        15 => MsgReadIndex,
        16 => MsgReadIndexResp,
        17 => MsgRequestPreVote,
        18 => MsgRequestPreVoteResponse,
        _ => return Err(DecodeError("message type")),
    })
}

/// One Raft message, as sent to a peer.
pub fn encode_message(m: &Message) -> BytesMut {
    let mut out = BytesMut::with_capacity(128);
    out.put_u8(m.msg_type as u8);
    for v in [m.to, m.from, m.term, m.log_term, m.index] {
        out.put_u64_le(v);
    }
    put_entries(&mut out, &m.entries);
    out.put_u64_le(m.commit);
    out.put_u64_le(m.commit_term);
    match m.snapshot.as_ref() {
        Some(s) => {
            out.put_u8(1);
            put_snapshot(&mut out, s);
        }
        None => out.put_u8(0),
    }
    out.put_u64_le(m.request_snapshot);
    out.put_u8(m.reject as u8);
    out.put_u64_le(m.reject_hint);
    put_bytes(&mut out, &m.context);
    out.put_u64_le(m.deprecated_priority);
    out.put_i64_le(m.priority);
    out
}

pub fn decode_message(buf: &[u8]) -> Result<Message> {
    let mut r = Reader::new(buf);
    let mut m = Message {
        msg_type: message_type(r.u8()?)?,
        to: r.u64()?,
        from: r.u64()?,
        term: r.u64()?,
        log_term: r.u64()?,
        index: r.u64()?,
        ..Default::default()
    };
    m.entries = entries(&mut r)?.into();
    m.commit = r.u64()?;
    m.commit_term = r.u64()?;
    m.snapshot = match r.u8()? {
        0 => None,
        1 => Some(snapshot(&mut r)?),
        _ => return Err(DecodeError("snapshot flag")),
    }
    .into();
    m.request_snapshot = r.u64()?;
    m.reject = r.u8()? != 0;
    m.reject_hint = r.u64()?;
    m.context = r.bytes()?;
    m.deprecated_priority = r.u64()?;
    m.priority = r.u64()? as i64;
    r.finish()?;
    Ok(m)
}

/// What travels on a connection to a controller listener: Raft messages
/// between voters, and the exchanges of a broker-only node (an observer),
/// which takes the committed metadata log from a voter instead of voting.
#[derive(Clone, Debug, PartialEq)]
pub enum PeerFrame {
    /// Voter to voter.
    Raft(Message),
    /// Observer to voter: "I have applied up to `applied`; send what follows"
    /// (long-polled). Also the observer's liveness heartbeat.
    Fetch { node: i32, applied: u64 },
    /// Observer to voter: one encoded `Proposal` to hand to Raft.
    Propose { data: Bytes },
    /// Voter to observer: committed entries following the fetched index, and
    /// the active controller as the voter knows it (-1: none).
    Entries { leader: i32, entries: Vec<Entry> },
    /// Voter to observer: the voter's whole image (its entries after the
    /// fetched index are compacted away).
    Image { leader: i32, image: Bytes },
}

const RAFT: u8 = 0;
const FETCH: u8 = 1;
const PROPOSE: u8 = 2;
const ENTRIES: u8 = 3;
const IMAGE: u8 = 4;

pub fn encode_frame(f: &PeerFrame) -> BytesMut {
    let mut out = BytesMut::with_capacity(64);
    match f {
        PeerFrame::Raft(m) => {
            out.put_u8(RAFT);
            out.extend_from_slice(&encode_message(m));
        }
        PeerFrame::Fetch { node, applied } => {
            out.put_u8(FETCH);
            out.put_i32_le(*node);
            out.put_u64_le(*applied);
        }
        PeerFrame::Propose { data } => {
            out.put_u8(PROPOSE);
            put_bytes(&mut out, data);
        }
        PeerFrame::Entries { leader, entries } => {
            out.put_u8(ENTRIES);
            out.put_i32_le(*leader);
            put_entries(&mut out, entries);
        }
        PeerFrame::Image { leader, image } => {
            out.put_u8(IMAGE);
            out.put_i32_le(*leader);
            put_bytes(&mut out, image);
        }
    }
    out
}

pub fn decode_frame(buf: &[u8]) -> Result<PeerFrame> {
    let Some((&kind, rest)) = buf.split_first() else {
        return Err(DecodeError("truncated"));
    };
    if kind == RAFT {
        return Ok(PeerFrame::Raft(decode_message(rest)?));
    }
    let mut r = Reader::new(rest);
    let f = match kind {
        FETCH => PeerFrame::Fetch {
            node: r.u32()? as i32,
            applied: r.u64()?,
        },
        PROPOSE => PeerFrame::Propose { data: r.bytes()? },
        ENTRIES => PeerFrame::Entries {
            leader: r.u32()? as i32,
            entries: entries(&mut r)?,
        },
        IMAGE => PeerFrame::Image {
            leader: r.u32()? as i32,
            image: r.bytes()?,
        },
        _ => return Err(DecodeError("frame kind")),
    };
    r.finish()?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        let e = Entry {
            entry_type: EntryType::EntryNormal,
            term: 3,
            index: 7,
            data: Bytes::from_static(b"{\"x\":1}"),
            context: Bytes::from_static(b"ctx"),
            ..Default::default()
        };
        let snap = Snapshot {
            data: Bytes::from_static(b"image"),
            metadata: Some(SnapshotMetadata {
                conf_state: Some(ConfState {
                    voters: vec![1, 2, 3],
                    ..Default::default()
                })
                .into(),
                index: 6,
                term: 2,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        Message {
            msg_type: MessageType::MsgAppend,
            to: 2,
            from: 1,
            term: 3,
            log_term: 2,
            index: 6,
            entries: vec![e.clone(), e].into(),
            commit: 5,
            commit_term: 2,
            snapshot: Some(snap).into(),
            reject: true,
            reject_hint: 4,
            context: Bytes::from_static(b"c"),
            priority: -9,
            ..Default::default()
        }
    }

    #[test]
    fn message_round_trip() {
        let m = sample();
        assert_eq!(decode_message(&encode_message(&m)).unwrap(), m);
        let plain = Message {
            msg_type: MessageType::MsgHeartbeat,
            to: 1,
            from: 3,
            ..Default::default()
        };
        assert_eq!(decode_message(&encode_message(&plain)).unwrap(), plain);
    }

    #[test]
    fn every_truncation_and_bad_count_is_refused() {
        let bytes = encode_message(&sample());
        for n in 0..bytes.len() {
            assert!(decode_message(&bytes[..n]).is_err(), "prefix of {n} bytes");
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(decode_message(&longer), Err(DecodeError("trailing bytes")));
        // A hostile entry count is refused before anything is allocated.
        let mut hostile = bytes[..41].to_vec();
        hostile.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode_message(&hostile),
            Err(DecodeError("count larger than the data"))
        );
    }

    #[test]
    fn frames_round_trip_and_refuse_truncation() {
        let e = sample().entries[0].clone();
        let frames = [
            PeerFrame::Raft(sample()),
            PeerFrame::Fetch {
                node: 7,
                applied: 42,
            },
            PeerFrame::Propose {
                data: Bytes::from_static(b"{}"),
            },
            PeerFrame::Entries {
                leader: -1,
                entries: vec![e.clone(), e],
            },
            PeerFrame::Image {
                leader: 2,
                image: Bytes::from_static(b"{\"applied\":3}"),
            },
        ];
        for f in frames {
            let bytes = encode_frame(&f);
            assert_eq!(decode_frame(&bytes).unwrap(), f);
            for n in 0..bytes.len() {
                assert!(decode_frame(&bytes[..n]).is_err(), "{f:?}: prefix of {n}");
            }
        }
        assert_eq!(decode_frame(&[9]), Err(DecodeError("frame kind")));
    }
}
