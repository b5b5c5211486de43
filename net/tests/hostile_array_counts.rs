//! Regression tests for the frames fuzzing found that aborted the broker: an
//! array count off the wire that kafka-protocol 0.18 turned into
//! `Vec::with_capacity(count)` (`net/fuzz/seeds/request_frame/crash-oom-*`).
//! The vendored codec (vendor/kafka-protocol/PATCHED.md) bounds every such
//! capacity by the bytes left in the frame. Each test decodes a lying frame
//! under an allocator that records the largest single allocation, and requires
//! both an error and no allocation beyond [`BOUND`]: with the unpatched codec
//! the first of these frames asks for 154 GB.
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, FetchRequest, ListOffsetsRequest, MetadataRequest, ProduceRequest, RequestHeader,
};
use kafka_protocol::protocol::Decodable;

/// No decode of a frame of a few dozen bytes needs a block larger than this.
const BOUND: usize = 1 << 20;

/// The system allocator, remembering the largest block asked for.
struct Largest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Largest = Largest;

fn seed(name: &str) -> Bytes {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds/request_frame")
        .join(name);
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// Decodes the header and body the way `dispatch` does; returns the body error
/// after checking that no allocation grew past [`BOUND`]. Tests run on several
/// threads, so the high-water mark covers them all: every test's frame is tiny.
fn body_error<T: Decodable>(mut frame: Bytes) -> String {
    let key = ApiKey::try_from(i16::from_be_bytes([frame[0], frame[1]])).unwrap();
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    RequestHeader::decode(&mut frame, key.request_header_version(version)).unwrap();
    let err = match T::decode(&mut frame, version) {
        Ok(_) => panic!("{key:?} v{version}: a frame with a lying array count decoded"),
        Err(e) => e.to_string(),
    };
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest <= BOUND,
        "{key:?} v{version}: an allocation of {largest} bytes for a frame of a few bytes"
    );
    err
}

#[test]
fn metadata_v0_claiming_2_pow_31_topics_is_an_error() {
    let err = body_error::<MetadataRequest>(seed("crash-oom-array-len-metadata-v0.bin"));
    assert!(err.contains("bytes"), "{err}");
}

#[test]
fn list_offsets_claiming_2_pow_31_partitions_is_an_error() {
    let err = body_error::<ListOffsetsRequest>(seed("crash-oom-array-len-list-offsets.bin"));
    assert!(err.contains("bytes"), "{err}");
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
