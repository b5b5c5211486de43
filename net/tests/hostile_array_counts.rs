//! Regression tests for the frames fuzzing found that aborted the broker: an
//! array count off the wire that kafka-protocol 0.18 turns into
//! `Vec::with_capacity(count)` (`net/fuzz/seeds/request_frame/crash-oom-*`).
//! With [`BrookAlloc`] installed, as the `brook` binary installs it, each
//! decodes to an error instead.
use std::path::PathBuf;

use brook_net::alloc::{BrookAlloc, LARGE};
use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, FetchRequest, ListOffsetsRequest, MetadataRequest, ProduceRequest, RequestHeader,
};
use kafka_protocol::protocol::Decodable;

#[global_allocator]
static ALLOC: BrookAlloc = BrookAlloc;

fn seed(name: &str) -> Bytes {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds/request_frame")
        .join(name);
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// Decodes the header and body the way `dispatch` does; returns the body error.
fn body_error<T: Decodable>(mut frame: Bytes) -> String {
    let key = ApiKey::try_from(i16::from_be_bytes([frame[0], frame[1]])).unwrap();
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    RequestHeader::decode(&mut frame, key.request_header_version(version)).unwrap();
    match T::decode(&mut frame, version) {
        Ok(_) => panic!("{key:?} v{version}: a frame with a lying array count decoded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn metadata_v0_claiming_2_pow_31_topics_is_an_error() {
    let err = body_error::<MetadataRequest>(seed("crash-oom-array-len-metadata-v0.bin"));
    assert!(!err.is_empty());
}

#[test]
fn list_offsets_claiming_2_pow_31_partitions_is_an_error() {
    let err = body_error::<ListOffsetsRequest>(seed("crash-oom-array-len-list-offsets.bin"));
    assert!(!err.is_empty());
}

/// The same lie in a flexible version: a compact array, count up to 2^32 − 1.
#[test]
fn metadata_v9_compact_count_is_an_error() {
    // Header v2 (client id "c", no tags), then topics with varint count u32::MAX.
    let mut f = vec![0, 3, 0, 9, 0, 0, 0, 1, 0, 1, b'c', 0];
    f.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    body_error::<MetadataRequest>(Bytes::from(f));
}

/// The same lie in the two hottest APIs.
#[test]
fn produce_topic_count_is_an_error() {
    // Produce v7: transactional id null, acks -1, timeout 30000, topics i32::MAX.
    let mut f = vec![
        0, 0, 0, 7, 0, 0, 0, 1, 0, 1, b'c', 0xff, 0xff, 0xff, 0xff, 0, 0,
    ];
    f.extend_from_slice(&[0, 0, 0x75, 0x30, 0x7f, 0xff, 0xff, 0xff]);
    body_error::<ProduceRequest>(Bytes::from(f));
}

#[test]
fn fetch_topic_count_is_an_error() {
    // Fetch v4: replica id, max wait, min bytes, max bytes, isolation, topics
    // i32::MAX.
    let mut f = vec![0, 1, 0, 4, 0, 0, 0, 1, 0, 1, b'c'];
    f.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0, 1, 0xf4, 0, 0, 0, 1]);
    f.extend_from_slice(&[0, 0x10, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff]);
    body_error::<FetchRequest>(Bytes::from(f));
}

/// Blocks move between the system allocator and mappings on realloc, with
/// their contents.
#[test]
fn realloc_across_the_threshold_keeps_contents() {
    let mut v: Vec<u8> = Vec::with_capacity(16);
    v.extend_from_slice(b"brook");
    v.reserve_exact(LARGE);
    assert!(v.capacity() >= LARGE);
    assert_eq!(&v[..], b"brook");
    v.shrink_to(64);
    assert!(v.capacity() < LARGE);
    assert_eq!(&v[..], b"brook");
    let zeroed = vec![0u64; LARGE / 8 + 1];
    assert!(zeroed.iter().step_by(1 << 20).all(|&x| x == 0));
}
