//! The transaction calls between brokers, on the other broker's Kafka
//! listener as Kafka makes them:
//! - the coordinator's markers for partitions other brokers lead
//!   (WriteTxnMarkers v1, Kafka's `TransactionMarkerChannelManager`);
//! - a partition leader's check of a transactional batch with a coordinator
//!   on another broker (AddPartitionsToTxn v5, Kafka's
//!   `AddPartitionsToTxnManager`, KIP-890).
//!
//! One idle connection per broker is kept for the next call; a failed call
//! drops it, and the caller retries (markers) or answers a retriable error.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::Duration;

use brook_engine::cluster::NodeId;
use brook_engine::shard::txns::{MarkerRequest, MarkerResults, TxnPartitionRequest};
use brook_engine::{EngineError, Shard, TopicPartition};
use compio::net::TcpStream;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, ProducerId, TransactionalId,
    WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

use crate::errors;
use crate::handlers::topic_name;

const MARKERS_VERSION: i16 = 1;
const ADD_PARTITIONS_VERSION: i16 = 5;
/// Markers are appended with acks=all: allow for a slow ISR.
const MARKERS_TIMEOUT: Duration = Duration::from_secs(30);
/// A check waits at most for the coordinator to append its state.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_FRAME: usize = 1 << 20;

/// Idle connections to other brokers, one per broker.
#[derive(Clone)]
struct Calls {
    shard: Weak<Shard>,
    idle: Rc<RefCell<HashMap<NodeId, TcpStream>>>,
}

impl Calls {
    async fn call<Req, Resp>(
        &self,
        node: NodeId,
        key: ApiKey,
        version: i16,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, String>
    where
        Req: Encodable + HeaderVersion,
        Resp: Decodable + HeaderVersion,
    {
        let shard = self.shard.upgrade().ok_or("shutting down")?;
        let (host, port) = shard.broker_address(node).ok_or("broker not registered")?;
        let taken = self.idle.borrow_mut().remove(&node);
        let mut conn = match taken {
            Some(c) => c,
            None => crate::broker_call::connect(&format!("{host}:{port}"))
                .await
                .map_err(|e| e.to_string())?,
        };
        let client_id = StrBytes::from_static_str("brook-txn");
        let resp = crate::broker_call::call(
            &mut conn, key, version, req, 1, &client_id, MAX_FRAME, timeout,
        )
        .await
        .map_err(|e| e.to_string())?;
        self.idle.borrow_mut().insert(node, conn);
        Ok(resp)
    }
}

/// Installs both senders on this shard (cluster members only).
pub fn install(shard: &Rc<Shard>) {
    if shard.cluster().is_none() {
        return;
    }
    let calls = Calls {
        shard: Rc::downgrade(shard),
        idle: Rc::default(),
    };
    let markers = calls.clone();
    shard.set_marker_sender(Rc::new(move |node, req| {
        let calls = markers.clone();
        Box::pin(async move {
            let resp = (calls.call(
                node,
                ApiKey::WriteTxnMarkers,
                MARKERS_VERSION,
                &request(&req),
                MARKERS_TIMEOUT,
            ))
            .await;
            match resp {
                Ok(resp) => results(&req, resp),
                Err(e) => {
                    tracing::debug!(node, error = e, "cannot send transaction markers");
                    (req.partitions.iter())
                        .map(|tp| (tp.clone(), Err(EngineError::NotLeaderOrFollower)))
                        .collect()
                }
            }
        })
    }));
    shard.set_txn_partition_sender(Rc::new(move |node, req| {
        let calls = calls.clone();
        Box::pin(async move {
            let resp: AddPartitionsToTxnResponse = calls
                .call(
                    node,
                    ApiKey::AddPartitionsToTxn,
                    ADD_PARTITIONS_VERSION,
                    &check_request(&req),
                    CHECK_TIMEOUT,
                )
                .await
                .map_err(EngineError::TxnCoordinatorUnavailable)?;
            check_result(&req, resp)
        })
    }));
}

fn check_request(req: &TxnPartitionRequest) -> AddPartitionsToTxnRequest {
    let topic = AddPartitionsToTxnTopic::default()
        .with_name(topic_name(&req.partition.topic))
        .with_partitions(vec![req.partition.partition as i32]);
    let txn = AddPartitionsToTxnTransaction::default()
        .with_transactional_id(TransactionalId(StrBytes::from_string(
            req.transactional_id.clone(),
        )))
        .with_producer_id(ProducerId(req.producer_id))
        .with_producer_epoch(req.epoch)
        .with_verify_only(req.verify_only)
        .with_topics(vec![topic]);
    AddPartitionsToTxnRequest::default().with_transactions(vec![txn])
}

/// The coordinator's answer for the one partition asked about, as the
/// error it stands for.
fn check_result(
    req: &TxnPartitionRequest,
    resp: AddPartitionsToTxnResponse,
) -> Result<(), EngineError> {
    let code = if resp.error_code != errors::NONE {
        resp.error_code
    } else {
        (resp.results_by_transaction.iter())
            .flat_map(|t| t.topic_results.iter())
            .filter(|t| t.name.as_str() == req.partition.topic)
            .flat_map(|t| t.results_by_partition.iter())
            .find(|p| p.partition_index == req.partition.partition as i32)
            .map(|p| p.partition_error_code)
            .ok_or_else(|| {
                EngineError::TxnCoordinatorUnavailable("the answer left the partition out".into())
            })?
    };
    match ResponseError::try_from_code(code) {
        None => Ok(()),
        Some(ResponseError::ProducerFenced | ResponseError::InvalidProducerEpoch) => {
            Err(EngineError::InvalidProducerEpoch)
        }
        Some(ResponseError::InvalidProducerIdMapping) => {
            Err(EngineError::InvalidProducerIdMapping {
                given: req.producer_id,
            })
        }
        Some(e @ (ResponseError::InvalidTxnState | ResponseError::TransactionAbortable)) => Err(
            EngineError::InvalidTxnState(format!("the coordinator answered {e:?}")),
        ),
        Some(e) => Err(EngineError::TxnCoordinatorUnavailable(format!(
            "the coordinator answered {e:?}"
        ))),
    }
}

fn request(req: &MarkerRequest) -> WriteTxnMarkersRequest {
    let mut topics: Vec<WritableTxnMarkerTopic> = Vec::new();
    for tp in &req.partitions {
        let name = topic_name(&tp.topic);
        match topics.iter_mut().find(|t| t.name == name) {
            Some(t) => t.partition_indexes.push(tp.partition as i32),
            None => topics.push(
                WritableTxnMarkerTopic::default()
                    .with_name(name)
                    .with_partition_indexes(vec![tp.partition as i32]),
            ),
        }
    }
    let marker = WritableTxnMarker::default()
        .with_producer_id(ProducerId(req.producer_id as i64))
        .with_producer_epoch(req.epoch as i16)
        .with_transaction_result(req.marker.commit)
        .with_coordinator_epoch(req.marker.coordinator_epoch)
        .with_topics(topics);
    WriteTxnMarkersRequest::default().with_markers(vec![marker])
}

/// Each asked partition's outcome; one the answer leaves out is retried.
fn results(req: &MarkerRequest, resp: WriteTxnMarkersResponse) -> MarkerResults {
    let mut codes: HashMap<TopicPartition, i16> = HashMap::new();
    for m in resp.markers {
        for t in m.topics {
            for p in t.partitions {
                if let Ok(partition) = u32::try_from(p.partition_index) {
                    let tp = TopicPartition {
                        topic: t.name.to_string(),
                        partition,
                    };
                    codes.insert(tp, p.error_code);
                }
            }
        }
    }
    (req.partitions.iter())
        .map(|tp| {
            let r = match codes.get(tp) {
                Some(&errors::NONE) => Ok(()),
                Some(&c)
                    if c == kafka_protocol::error::ResponseError::UnknownTopicOrPartition
                        .code() =>
                {
                    Err(EngineError::UnknownTopicOrPartition)
                }
                Some(&c) => Err(EngineError::Storage(format!(
                    "marker refused with error {c}"
                ))),
                None => Err(EngineError::NotLeaderOrFollower),
            };
            (tp.clone(), r)
        })
        .collect()
}
