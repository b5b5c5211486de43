//! The routing table: every Kafka API Brook serves, its versions and its handler,
//! in one list. ApiVersions answers from it and `dispatch` routes by it, so an API
//! cannot be listed without a handler or handled without being listed.
//!
//! The ranges are Kafka 3.0's for these APIs (OffsetCommit from v2 and OffsetFetch
//! from v1: the codec does not carry the 0.8-era versions), so that clients which infer the
//! broker's release from the advertised ranges (kafka-python does: ListOffsets v7
//! means 3.0) pick a release whose behaviour Brook implements. Two deliberate
//! differences, as Kafka 4 does: Produce is listed from v0 — librdkafka before
//! 2.11.1 (Debian's kcat) enables gzip/snappy/lz4 only when it sees Produce v0 —
//! but v0–2 (message format v0/v1) are refused; Fetch starts at v4, the first
//! version that carries RecordBatch v2.
//!
//! Newer versions are listed where a client needs them and they change nothing
//! kafka-python's release guess reads beyond what Brook does (it keys on
//! ListOffsets, Fetch, Produce 8, 9, 11 and 13, and JoinGroup; Produce 11
//! makes it guess 3.8, which changes nothing it does against Brook): Produce
//! v10 (KIP-951 leader hints, the same request as v9) and v11–12 (KIP-890:
//! TRANSACTION_ABORTABLE, and v12 is transaction version 2's, whose leader
//! adds the partition to the transaction; v13 names topics by id and is not
//! listed), Metadata v12–13 (topics by id, as `Admin.describeTopics` by ids
//! needs), ListGroups v5 (the group type filter of `Admin.listGroups`), and the
//! admin APIs added since (DescribeConfigs, DescribeCluster, CreatePartitions,
//! DescribeTopicPartitions) at
//! Kafka 4's ranges, as is OffsetForLeaderEpoch (2–4: consumers check for
//! truncation with it after a leader change). The transaction APIs are listed
//! up to transaction version 2's (ApiVersions finalizes `transaction.version`
//! 2, so 4.x clients use it): InitProducerId 0–5, AddPartitionsToTxn 0–5
//! (4+ are from partition leaders), EndTxn 0–5 and TxnOffsetCommit 0–5,
//! WriteTxnMarkers 1. UnregisterBroker 0 is Kafka 4's (`kafka-cluster
//! unregister`). SaslHandshake is listed from v1 (v0's raw tokens are gone
//! in Kafka 4 too), SaslAuthenticate to v2 (KIP-368 session lifetimes from
//! v1), Describe/AlterUserScramCredentials at v0.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ProduceRequest, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::handlers::{self, ClientInfo};
use crate::security::Session;
use crate::server::ShardServer;

pub type ResponseFuture = Pin<Box<dyn Future<Output = Option<Bytes>>>>;

/// What the connection does with a request.
pub enum Dispatched {
    /// Queue this; its output is the encoded response frame.
    Respond(ResponseFuture),
    /// Run this; the client expects no answer (Produce with acks=0).
    NoResponse(Pin<Box<dyn Future<Output = Option<Bytes>>>>),
    /// Queue this, then close the connection once it is written (a failed
    /// authentication).
    RespondThenClose(ResponseFuture),
    /// The protocol gives no way to answer: close the connection.
    Close(String),
}

/// A request whose header has been read, on its way to its handler.
pub struct Request {
    pub key: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub client: ClientInfo,
    pub session: Rc<Session>,
    pub peer: std::net::SocketAddr,
}

impl Request {
    /// The body, as the kafka-protocol type of this API and version.
    fn decode<T: Decodable>(&self, frame: &mut Bytes) -> Result<T, String> {
        T::decode(frame, self.version)
            .map_err(|e| format!("malformed {:?} v{} request: {e}", self.key, self.version))
    }

    /// Answers with whatever `fut` produces, encoded at this version.
    fn respond<R, F>(&self, fut: F) -> Dispatched
    where
        R: Encodable,
        F: Future<Output = R> + 'static,
    {
        let (key, version, correlation_id) = (self.key, self.version, self.correlation_id);
        Dispatched::Respond(Box::pin(async move {
            let resp = fut.await;
            encode_response(key, version, correlation_id, &resp)
        }))
    }
}

impl Request {
    /// Answers a SASL step: late after a failure, and closing when it says so.
    fn answer<R: Encodable + 'static>(&self, a: handlers::sasl::Answer<R>) -> Dispatched {
        let handlers::sasl::Answer {
            response,
            close,
            delay,
        } = a;
        let d = self.respond(async move {
            if let Some(d) = delay {
                compio::time::sleep(d).await;
            }
            response
        });
        match (d, close) {
            (Dispatched::Respond(fut), true) => Dispatched::RespondThenClose(fut),
            (d, _) => d,
        }
    }
}

/// Encodes a response frame: size, header, body.
pub fn encode_response<R: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    resp: &R,
) -> Option<Bytes> {
    let header_version = key.response_header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let mut buf = BytesMut::with_capacity(64 + resp.compute_size(version).unwrap_or(0));
    buf.put_i32(0);
    let encoded = header
        .encode(&mut buf, header_version)
        .and_then(|_| resp.encode(&mut buf, version));
    if let Err(e) = encoded {
        tracing::error!(?key, version, error = %e, "could not encode response");
        return None;
    }
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Some(buf.freeze())
}

/// Decodes the body and starts its handler. `Err` closes the connection.
pub type Route = fn(&Rc<ShardServer>, Request, &mut Bytes) -> Result<Dispatched, String>;

/// One served API: its versions (the ApiVersions row) and its route.
pub struct Api {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
    pub route: Route,
}

/// Lowest Produce version Brook decodes: v3 is the first with RecordBatch v2.
pub const PRODUCE_MIN_DECODABLE: i16 = 3;

/// Produce with acks=0 gets no response: the appends still run in read order.
fn produce(s: &Rc<ShardServer>, r: Request, f: &mut Bytes) -> Result<Dispatched, String> {
    let req: ProduceRequest = r.decode(f)?;
    let acks_zero = req.acks == 0;
    let fut = handlers::produce::handle(s, req, r.version, &r.client);
    Ok(if acks_zero {
        Dispatched::NoResponse(Box::pin(async move {
            fut.await;
            None
        }))
    } else {
        r.respond(fut)
    })
}

macro_rules! apis {
    ($( $key:ident $min:literal ..= $max:literal => |$s:ident, $r:ident, $f:ident| $route:expr ),* $(,)?) => {
        /// Every API Brook serves, in ApiVersions order.
        pub const APIS: &[Api] = &[
            $( Api {
                key: ApiKey::$key,
                min: $min,
                max: $max,
                route: |$s: &Rc<ShardServer>, $r: Request, $f: &mut Bytes| $route,
            } ),*
        ];
    };
}

apis! {
    Produce 0..=12 => |s, r, f| produce(s, r, f),
    Fetch 4..=12 => |s, r, f| {
        let client = r.client.clone();
        Ok(r.respond(handlers::fetch::handle(s.clone(), r.decode(f)?, client)))
    },
    ListOffsets 1..=7 => |s, r, f| Ok(r.respond(handlers::list_offsets::handle(s.clone(), r.decode(f)?, r.version, r.client.clone()))),
    Metadata 0..=13 => |s, r, f| Ok(r.respond(handlers::metadata::handle(s.clone(), r.decode(f)?, r.version, r.client.clone()))),
    ApiVersions 0..=3 => |_s, r, f| Ok(r.respond(handlers::api_versions::handle(r.decode(f)?, api_versions()))),
    CreateTopics 2..=7 => |s, r, f| Ok(r.respond(handlers::create_topics::handle(s.clone(), r.decode(f)?, r.version, r.client.clone()))),
    DeleteTopics 1..=6 => |s, r, f| Ok(r.respond(handlers::delete_topics::handle(s.clone(), r.decode(f)?, r.version, r.client.clone()))),
    InitProducerId 0..=5 => |s, r, f| Ok(r.respond(handlers::init_producer_id::handle(s.clone(), r.decode(f)?, r.version, r.client.clone()))),
    FindCoordinator 0..=4 => |s, r, f| Ok(r.respond(handlers::find_coordinator::handle(s.clone(), r.decode(f)?, r.version, r.client.clone()))),
    JoinGroup 0..=7 => |s, r, f| {
        let req = r.decode(f)?;
        let client = r.client.clone();
        Ok(r.respond(handlers::join_group::handle(s.clone(), req, r.version, client)))
    },
    SyncGroup 0..=5 => |s, r, f| Ok(r.respond(handlers::sync_group::handle(s.clone(), r.decode(f)?, r.version, r.client.clone()))),
    Heartbeat 0..=4 => |s, r, f| Ok(r.respond(handlers::heartbeat::handle(s.clone(), r.decode(f)?, r.client.clone()))),
    LeaveGroup 0..=4 => |s, r, f| Ok(r.respond(handlers::leave_group::handle(s.clone(), r.decode(f)?, r.version, r.client.clone()))),
    OffsetCommit 2..=8 => |s, r, f| Ok(r.respond(handlers::offset_commit::handle(s.clone(), r.decode(f)?, r.client.clone()))),
    OffsetFetch 1..=8 => |s, r, f| Ok(r.respond(handlers::offset_fetch::handle(s.clone(), r.decode(f)?, r.version, r.client.clone()))),
    ListGroups 0..=5 => |s, r, f| Ok(r.respond(handlers::list_groups::handle(s.clone(), r.decode(f)?, r.version, r.client.clone()))),
    DescribeGroups 0..=5 => |s, r, f| Ok(r.respond(handlers::describe_groups::handle(s.clone(), r.decode(f)?, r.version, r.client.clone()))),
    OffsetDelete 0..=0 => |s, r, f| Ok(r.respond(handlers::offset_delete::handle(s.clone(), r.decode(f)?, r.client.clone()))),
    DeleteGroups 0..=2 => |s, r, f| Ok(r.respond(handlers::delete_groups::handle(s.clone(), r.decode(f)?, r.client.clone()))),
    DescribeClientQuotas 0..=1 => |s, r, f| Ok(r.respond(handlers::client_quotas::describe(s.clone(), r.decode(f)?, r.client.clone()))),
    AlterClientQuotas 0..=1 => |s, r, f| Ok(r.respond(handlers::client_quotas::alter(s.clone(), r.decode(f)?, r.client.clone()))),
    AlterPartitionReassignments 0..=1 => |s, r, f| Ok(r.respond(handlers::reassignments::alter(s.clone(), r.decode(f)?, r.version, r.client.clone()))),
    ListPartitionReassignments 0..=0 => |s, r, f| Ok(r.respond(handlers::reassignments::list(s.clone(), r.decode(f)?, r.client.clone()))),
    ElectLeaders 0..=2 => |s, r, f| Ok(r.respond(handlers::elect_leaders::handle(s.clone(), r.decode(f)?, r.version, r.client.clone()))),
    DeleteRecords 0..=2 => |s, r, f| Ok(r.respond(handlers::delete_records::handle(s.clone(), r.decode(f)?, r.client.clone()))),
    AlterConfigs 0..=2 => |s, r, f| Ok(r.respond(handlers::alter_configs::alter(s.clone(), r.decode(f)?, r.client.clone()))),
    IncrementalAlterConfigs 0..=1 => |s, r, f| Ok(r.respond(handlers::alter_configs::incremental(s.clone(), r.decode(f)?, r.client.clone()))),
    DescribeConfigs 1..=4 => |s, r, f| Ok(r.respond(handlers::describe_configs::handle(s.clone(), r.decode(f)?, r.version, r.client.clone()))),
    DescribeCluster 0..=2 => |s, r, f| Ok(r.respond(handlers::describe_cluster::handle(s.clone(), r.decode(f)?, r.client.listener))),
    AlterReplicaLogDirs 1..=2 => |s, r, f| Ok(r.respond(handlers::alter_replica_log_dirs::handle(s.clone(), r.decode(f)?, r.client.clone()))),
    DescribeLogDirs 1..=4 => |s, r, f| Ok(r.respond(handlers::describe_log_dirs::handle(s.clone(), r.decode(f)?, r.client.clone()))),
    CreatePartitions 0..=3 => |s, r, f| Ok(r.respond(handlers::create_partitions::handle(s.clone(), r.decode(f)?, r.client.clone()))),
    DescribeTopicPartitions 0..=0 => |s, r, f| Ok(r.respond(handlers::describe_topic_partitions::handle(s.clone(), r.decode(f)?, r.client.clone()))),
    OffsetForLeaderEpoch 2..=4 => |s, r, f| Ok(r.respond(handlers::offset_for_leader_epoch::handle(s.clone(), r.decode(f)?, r.client.clone()))),
    AddPartitionsToTxn 0..=5 => |s, r, f| Ok(r.respond(handlers::txn::add_partitions(s.clone(), r.decode(f)?, r.version, r.client.clone()))),
    AddOffsetsToTxn 0..=4 => |s, r, f| Ok(r.respond(handlers::txn::add_offsets(s.clone(), r.decode(f)?, r.version, r.client.clone()))),
    EndTxn 0..=5 => |s, r, f| Ok(r.respond(handlers::txn::end_txn(s.clone(), r.decode(f)?, r.version, r.client.clone()))),
    WriteTxnMarkers 1..=1 => |s, r, f| Ok(r.respond(handlers::txn::write_markers(s.clone(), r.decode(f)?, r.client.clone()))),
    TxnOffsetCommit 0..=5 => |s, r, f| Ok(r.respond(handlers::txn::txn_offset_commit(s.clone(), r.decode(f)?, r.version, r.client.clone()))),
    DescribeTransactions 0..=0 => |s, r, f| Ok(r.respond(handlers::txn::describe(s.clone(), r.decode(f)?, r.client.clone()))),
    ListTransactions 0..=1 => |s, r, f| Ok(r.respond(handlers::txn::list(s.clone(), r.decode(f)?, r.client.clone()))),
    UnregisterBroker 0..=0 => |s, r, f| Ok(r.respond(handlers::unregister_broker::handle(s.clone(), r.decode(f)?, r.client.clone()))),
    SaslHandshake 1..=1 => |_s, r, f| Ok(r.answer(handlers::sasl::handshake(&r.session, r.decode(f)?))),
    SaslAuthenticate 0..=2 => |s, r, f| Ok(r.answer(handlers::sasl::authenticate(s, &r.session, r.peer, r.decode(f)?))),
    DescribeUserScramCredentials 0..=0 => |s, r, f| Ok(r.respond(handlers::scram_credentials::describe(s.clone(), r.decode(f)?, r.client.clone()))),
    AlterUserScramCredentials 0..=0 => |s, r, f| Ok(r.respond(handlers::scram_credentials::alter(s.clone(), r.decode(f)?, r.client.clone()))),
    DescribeAcls 1..=3 => |s, r, f| Ok(r.respond(handlers::acls::describe(s.clone(), r.decode(f)?, r.client.clone()))),
    CreateAcls 1..=3 => |s, r, f| Ok(r.respond(handlers::acls::create(s.clone(), r.decode(f)?, r.client.clone()))),
    DeleteAcls 1..=3 => |s, r, f| Ok(r.respond(handlers::acls::delete(s.clone(), r.decode(f)?, r.client.clone()))),
}

/// The served API for `key`, if any.
pub fn find(key: ApiKey) -> Option<&'static Api> {
    APIS.iter().find(|a| a.key == key)
}

/// The ApiVersions rows.
pub fn api_versions() -> Vec<ApiVersion> {
    APIS.iter()
        .map(|a| {
            ApiVersion::default()
                .with_api_key(a.key as i16)
                .with_min_version(a.min)
                .with_max_version(a.max)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Message;

    #[test]
    fn every_listed_version_is_decodable_by_the_codec() {
        use kafka_protocol::messages::*;
        let codec = |k: ApiKey| match k {
            ApiKey::Produce => ProduceRequest::VERSIONS,
            ApiKey::Fetch => FetchRequest::VERSIONS,
            ApiKey::ListOffsets => ListOffsetsRequest::VERSIONS,
            ApiKey::Metadata => MetadataRequest::VERSIONS,
            ApiKey::ApiVersions => ApiVersionsRequest::VERSIONS,
            ApiKey::CreateTopics => CreateTopicsRequest::VERSIONS,
            ApiKey::DeleteTopics => DeleteTopicsRequest::VERSIONS,
            ApiKey::InitProducerId => InitProducerIdRequest::VERSIONS,
            ApiKey::FindCoordinator => FindCoordinatorRequest::VERSIONS,
            ApiKey::JoinGroup => JoinGroupRequest::VERSIONS,
            ApiKey::SyncGroup => SyncGroupRequest::VERSIONS,
            ApiKey::Heartbeat => HeartbeatRequest::VERSIONS,
            ApiKey::LeaveGroup => LeaveGroupRequest::VERSIONS,
            ApiKey::OffsetCommit => OffsetCommitRequest::VERSIONS,
            ApiKey::OffsetFetch => OffsetFetchRequest::VERSIONS,
            ApiKey::ListGroups => ListGroupsRequest::VERSIONS,
            ApiKey::DescribeGroups => DescribeGroupsRequest::VERSIONS,
            ApiKey::DeleteGroups => DeleteGroupsRequest::VERSIONS,
            ApiKey::OffsetDelete => OffsetDeleteRequest::VERSIONS,
            ApiKey::DescribeClientQuotas => DescribeClientQuotasRequest::VERSIONS,
            ApiKey::AlterClientQuotas => AlterClientQuotasRequest::VERSIONS,
            ApiKey::DescribeConfigs => DescribeConfigsRequest::VERSIONS,
            ApiKey::AlterConfigs => AlterConfigsRequest::VERSIONS,
            ApiKey::DeleteRecords => DeleteRecordsRequest::VERSIONS,
            ApiKey::ElectLeaders => ElectLeadersRequest::VERSIONS,
            ApiKey::AlterPartitionReassignments => AlterPartitionReassignmentsRequest::VERSIONS,
            ApiKey::ListPartitionReassignments => ListPartitionReassignmentsRequest::VERSIONS,
            ApiKey::IncrementalAlterConfigs => IncrementalAlterConfigsRequest::VERSIONS,
            ApiKey::DescribeCluster => DescribeClusterRequest::VERSIONS,
            ApiKey::DescribeLogDirs => DescribeLogDirsRequest::VERSIONS,
            ApiKey::AlterReplicaLogDirs => AlterReplicaLogDirsRequest::VERSIONS,
            ApiKey::CreatePartitions => CreatePartitionsRequest::VERSIONS,
            ApiKey::DescribeTopicPartitions => DescribeTopicPartitionsRequest::VERSIONS,
            ApiKey::OffsetForLeaderEpoch => OffsetForLeaderEpochRequest::VERSIONS,
            ApiKey::AddPartitionsToTxn => AddPartitionsToTxnRequest::VERSIONS,
            ApiKey::AddOffsetsToTxn => AddOffsetsToTxnRequest::VERSIONS,
            ApiKey::EndTxn => EndTxnRequest::VERSIONS,
            ApiKey::WriteTxnMarkers => WriteTxnMarkersRequest::VERSIONS,
            ApiKey::TxnOffsetCommit => TxnOffsetCommitRequest::VERSIONS,
            ApiKey::DescribeTransactions => DescribeTransactionsRequest::VERSIONS,
            ApiKey::ListTransactions => ListTransactionsRequest::VERSIONS,
            ApiKey::UnregisterBroker => UnregisterBrokerRequest::VERSIONS,
            ApiKey::SaslHandshake => SaslHandshakeRequest::VERSIONS,
            ApiKey::SaslAuthenticate => SaslAuthenticateRequest::VERSIONS,
            ApiKey::DescribeUserScramCredentials => DescribeUserScramCredentialsRequest::VERSIONS,
            ApiKey::AlterUserScramCredentials => AlterUserScramCredentialsRequest::VERSIONS,
            ApiKey::DescribeAcls => DescribeAclsRequest::VERSIONS,
            ApiKey::CreateAcls => CreateAclsRequest::VERSIONS,
            ApiKey::DeleteAcls => DeleteAclsRequest::VERSIONS,
            other => panic!("{other:?} listed without a codec check"),
        };
        for r in APIS {
            let v = codec(r.key);
            let min = if r.key == ApiKey::Produce {
                PRODUCE_MIN_DECODABLE
            } else {
                r.min
            };
            assert!(
                v.min <= min && r.max <= v.max,
                "{:?} {}..{} not within codec {v:?}",
                r.key,
                min,
                r.max
            );
        }
    }
}
