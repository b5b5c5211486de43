//! The request path below the handlers, as `dispatch::dispatch` runs it on a
//! frame body (the bytes after the 4-byte length): api key, version and
//! correlation id; the version check against `routes::find`; the request
//! header at `ApiKey::request_header_version`; then the body with the
//! kafka-protocol type of that API, for every API in `routes::APIS`.
//!
//! Invariants: nothing panics; a decoded header agrees with the raw prefix;
//! a decoded header and body of a non-flexible version re-encode to
//! `compute_size` bytes that decode back to the same value; the records of a decoded Produce go through
//! `batch::split_incoming` as the partition's append does.
//!
//! Input: one frame body, exactly as a client sends it after the length.
#![no_main]

use std::fmt::Debug;

use brook_net::handlers::api_versions;
use brook_net::routes::{self, PRODUCE_MIN_DECODABLE, encode_response};
use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable};
use libfuzzer_sys::fuzz_target;

/// conn.rs closes the connection on a frame shorter than this (api key,
/// version, correlation id) before `dispatch` reads those 8 bytes.
const MIN_FRAME_BYTES: usize = 8;

fuzz_target!(|frame: &[u8]| {
    if frame.len() < MIN_FRAME_BYTES {
        return;
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(key) = ApiKey::try_from(raw_key) else {
        return;
    };
    let Some(api) = routes::find(key) else {
        return;
    };
    assert_eq!(api.key, key);
    if version < api.min || version > api.max {
        if key == ApiKey::ApiVersions {
            unsupported_api_versions(correlation_id);
        }
        return;
    }
    if key == ApiKey::Produce && version < PRODUCE_MIN_DECODABLE {
        return;
    }
    let mut buf = Bytes::copy_from_slice(frame);
    let header_version = key.request_header_version(version);
    // Request header v2 and up go with the flexible versions of the body.
    let flexible = header_version >= 2;
    let Some(header) = round_trip::<RequestHeader>(&mut buf, header_version, flexible) else {
        return;
    };
    assert_eq!(header.request_api_key, raw_key);
    assert_eq!(header.request_api_version, version);
    assert_eq!(header.correlation_id, correlation_id);
    decode_body(key, version, flexible, &mut buf);
});

/// Decodes a `T` from `buf`. For a non-flexible version, also checks that it
/// re-encodes to bytes that decode to the same value.
///
/// Flexible versions (tagged fields) are only decoded: kafka-protocol 0.18
/// re-encodes some decoded flexible requests into bytes it cannot decode
/// (unknown tagged fields with repeated or over-long tags; see
/// seeds/request_frame/regress-*-tagged-roundtrip.bin) and gets `compute_size`
/// wrong for others (regress-fetch-v12-compute-size-mismatch.bin). Brook never
/// encodes a request and uses `compute_size` only as a capacity hint, so
/// neither matters to it, and neither may fail this target.
fn round_trip<T>(buf: &mut Bytes, version: i16, flexible: bool) -> Option<T>
where
    T: Decodable + Encodable + PartialEq + Debug,
{
    let value = T::decode(buf, version).ok()?;
    if flexible {
        return Some(value);
    }
    let size = value
        .compute_size(version)
        .unwrap_or_else(|e| panic!("compute_size of a decoded value: {e}\n{value:?}"));
    let mut out = BytesMut::with_capacity(size);
    value
        .encode(&mut out, version)
        .unwrap_or_else(|e| panic!("re-encoding a decoded value: {e}\n{value:?}"));
    assert_eq!(out.len(), size, "compute_size disagrees with encode");
    let mut encoded = out.freeze();
    let again = T::decode(&mut encoded, version).expect("decoding a re-encoded value");
    assert_eq!(
        encoded.remaining(),
        0,
        "re-encoded value has bytes left over"
    );
    assert_eq!(again, value, "value does not survive a round trip");
    Some(value)
}

fn decode_body(key: ApiKey, v: i16, flexible: bool, buf: &mut Bytes) {
    match key {
        ApiKey::Produce => {
            if let Some(req) = round_trip::<ProduceRequest>(buf, v, flexible) {
                split_produce_records(&req);
            }
        }
        ApiKey::Fetch => drop(round_trip::<FetchRequest>(buf, v, flexible)),
        ApiKey::ListOffsets => drop(round_trip::<ListOffsetsRequest>(buf, v, flexible)),
        ApiKey::Metadata => drop(round_trip::<MetadataRequest>(buf, v, flexible)),
        ApiKey::ApiVersions => drop(round_trip::<ApiVersionsRequest>(buf, v, flexible)),
        ApiKey::CreateTopics => drop(round_trip::<CreateTopicsRequest>(buf, v, flexible)),
        ApiKey::DeleteTopics => drop(round_trip::<DeleteTopicsRequest>(buf, v, flexible)),
        ApiKey::InitProducerId => drop(round_trip::<InitProducerIdRequest>(buf, v, flexible)),
        ApiKey::FindCoordinator => drop(round_trip::<FindCoordinatorRequest>(buf, v, flexible)),
        ApiKey::JoinGroup => drop(round_trip::<JoinGroupRequest>(buf, v, flexible)),
        ApiKey::SyncGroup => drop(round_trip::<SyncGroupRequest>(buf, v, flexible)),
        ApiKey::Heartbeat => drop(round_trip::<HeartbeatRequest>(buf, v, flexible)),
        ApiKey::LeaveGroup => drop(round_trip::<LeaveGroupRequest>(buf, v, flexible)),
        ApiKey::OffsetCommit => drop(round_trip::<OffsetCommitRequest>(buf, v, flexible)),
        ApiKey::OffsetFetch => drop(round_trip::<OffsetFetchRequest>(buf, v, flexible)),
        ApiKey::ListGroups => drop(round_trip::<ListGroupsRequest>(buf, v, flexible)),
        ApiKey::DescribeGroups => drop(round_trip::<DescribeGroupsRequest>(buf, v, flexible)),
        ApiKey::DeleteGroups => drop(round_trip::<DeleteGroupsRequest>(buf, v, flexible)),
        ApiKey::OffsetDelete => drop(round_trip::<OffsetDeleteRequest>(buf, v, flexible)),
        ApiKey::DescribeClientQuotas => {
            drop(round_trip::<DescribeClientQuotasRequest>(buf, v, flexible))
        }
        ApiKey::AlterClientQuotas => drop(round_trip::<AlterClientQuotasRequest>(buf, v, flexible)),
        ApiKey::DescribeConfigs => drop(round_trip::<DescribeConfigsRequest>(buf, v, flexible)),
        ApiKey::AlterConfigs => drop(round_trip::<AlterConfigsRequest>(buf, v, flexible)),
        ApiKey::IncrementalAlterConfigs => {
            drop(round_trip::<IncrementalAlterConfigsRequest>(buf, v, flexible))
        }
        ApiKey::DeleteRecords => drop(round_trip::<DeleteRecordsRequest>(buf, v, flexible)),
        ApiKey::ElectLeaders => drop(round_trip::<ElectLeadersRequest>(buf, v, flexible)),
        ApiKey::AlterPartitionReassignments => {
            drop(round_trip::<AlterPartitionReassignmentsRequest>(buf, v, flexible))
        }
        ApiKey::ListPartitionReassignments => {
            drop(round_trip::<ListPartitionReassignmentsRequest>(buf, v, flexible))
        }
        ApiKey::DescribeCluster => drop(round_trip::<DescribeClusterRequest>(buf, v, flexible)),
        ApiKey::DescribeLogDirs => drop(round_trip::<DescribeLogDirsRequest>(buf, v, flexible)),
        ApiKey::AlterReplicaLogDirs => {
            drop(round_trip::<AlterReplicaLogDirsRequest>(buf, v, flexible))
        }
        ApiKey::CreatePartitions => drop(round_trip::<CreatePartitionsRequest>(buf, v, flexible)),
        ApiKey::DescribeTopicPartitions => {
            drop(round_trip::<DescribeTopicPartitionsRequest>(buf, v, flexible))
        }
        ApiKey::OffsetForLeaderEpoch => {
            drop(round_trip::<OffsetForLeaderEpochRequest>(buf, v, flexible))
        }
        ApiKey::AddPartitionsToTxn => drop(round_trip::<AddPartitionsToTxnRequest>(buf, v, flexible)),
        ApiKey::AddOffsetsToTxn => drop(round_trip::<AddOffsetsToTxnRequest>(buf, v, flexible)),
        ApiKey::EndTxn => drop(round_trip::<EndTxnRequest>(buf, v, flexible)),
        ApiKey::WriteTxnMarkers => drop(round_trip::<WriteTxnMarkersRequest>(buf, v, flexible)),
        ApiKey::TxnOffsetCommit => drop(round_trip::<TxnOffsetCommitRequest>(buf, v, flexible)),
        ApiKey::DescribeTransactions => {
            drop(round_trip::<DescribeTransactionsRequest>(buf, v, flexible))
        }
        ApiKey::ListTransactions => drop(round_trip::<ListTransactionsRequest>(buf, v, flexible)),
        ApiKey::UnregisterBroker => drop(round_trip::<UnregisterBrokerRequest>(buf, v, flexible)),
        ApiKey::SaslHandshake => drop(round_trip::<SaslHandshakeRequest>(buf, v, flexible)),
        ApiKey::SaslAuthenticate => drop(round_trip::<SaslAuthenticateRequest>(buf, v, flexible)),
        ApiKey::DescribeUserScramCredentials => {
            drop(round_trip::<DescribeUserScramCredentialsRequest>(buf, v, flexible))
        }
        ApiKey::DescribeAcls => drop(round_trip::<DescribeAclsRequest>(buf, v, flexible)),
        ApiKey::CreateAcls => drop(round_trip::<CreateAclsRequest>(buf, v, flexible)),
        ApiKey::DeleteAcls => drop(round_trip::<DeleteAclsRequest>(buf, v, flexible)),
        ApiKey::AlterUserScramCredentials => {
            drop(round_trip::<AlterUserScramCredentialsRequest>(buf, v, flexible))
        }
        other => panic!("{other:?} is in routes::APIS but not in this fuzz target"),
    }
}

/// What `Partition::append` does with each partition's `records` field.
fn split_produce_records(req: &ProduceRequest) {
    for t in &req.topic_data {
        for p in &t.partition_data {
            let Some(records) = &p.records else { continue };
            if let Ok(batches) = brook_engine::log::batch::split_incoming(records, 1 << 20) {
                let covered: usize = batches.iter().map(|(r, _)| r.len()).sum();
                assert_eq!(covered, records.len());
            }
        }
    }
}

/// The answer to an ApiVersions request at a version Brook does not speak:
/// a v0 response any client can read.
fn unsupported_api_versions(correlation_id: i32) {
    let resp = api_versions::unsupported_version(routes::api_versions());
    let frame = encode_response(ApiKey::ApiVersions, 0, correlation_id, &resp)
        .expect("the unsupported-version answer encodes");
    let mut body = frame.slice(4..);
    assert_eq!(
        i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize,
        body.len()
    );
    let header = ResponseHeader::decode(&mut body, 0).expect("response header decodes");
    assert_eq!(header.correlation_id, correlation_id);
    let decoded = ApiVersionsResponse::decode(&mut body, 0).expect("response decodes");
    assert_eq!(decoded.error_code, resp.error_code);
}
