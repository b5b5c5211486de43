//! How this broker's transaction coordinator reaches partitions that other
//! brokers lead: Kafka's WriteTxnMarkers (v1) to the leader's Kafka listener,
//! as Kafka's `TransactionMarkerChannelManager` does. One idle connection per
//! broker is kept for the next transaction; a failed call drops it, and the
//! coordinator retries the partitions it did not get an answer for.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use brook_engine::cluster::NodeId;
use brook_engine::shard::txns::{MarkerRequest, MarkerResults};
use brook_engine::{EngineError, Shard, TopicPartition};
use compio::net::TcpStream;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    ApiKey, ProducerId, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::errors;
use crate::handlers::topic_name;

const VERSION: i16 = 1;
/// Markers are appended with acks=all: allow for a slow ISR.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_FRAME: usize = 1 << 20;

/// Installs the marker sender on this shard (cluster members only).
pub fn install(shard: &Rc<Shard>) {
    if shard.cluster().is_none() {
        return;
    }
    let idle: Rc<RefCell<HashMap<NodeId, TcpStream>>> = Rc::default();
    let weak = Rc::downgrade(shard);
    shard.set_marker_sender(Rc::new(move |node, req| {
        let (weak, idle) = (weak.clone(), idle.clone());
        Box::pin(async move {
            let failed = |req: &MarkerRequest, e: &str| -> MarkerResults {
                tracing::debug!(node, error = e, "cannot send transaction markers");
                (req.partitions.iter())
                    .map(|tp| (tp.clone(), Err(EngineError::NotLeaderOrFollower)))
                    .collect()
            };
            let Some(shard) = weak.upgrade() else {
                return failed(&req, "shutting down");
            };
            let Some((host, port)) = shard.broker_address(node) else {
                return failed(&req, "broker not registered");
            };
            let taken = idle.borrow_mut().remove(&node);
            let mut conn = match taken {
                Some(c) => c,
                None => match crate::broker_call::connect(&format!("{host}:{port}")).await {
                    Ok(c) => c,
                    Err(e) => return failed(&req, &e.to_string()),
                },
            };
            let client_id = StrBytes::from_static_str("brook-txn-coordinator");
            let resp: std::io::Result<WriteTxnMarkersResponse> = crate::broker_call::call(
                &mut conn,
                ApiKey::WriteTxnMarkers,
                VERSION,
                &request(&req),
                1,
                &client_id,
                MAX_FRAME,
                RESPONSE_TIMEOUT,
            )
            .await;
            match resp {
                Ok(resp) => {
                    idle.borrow_mut().insert(node, conn);
                    results(&req, resp)
                }
                Err(e) => failed(&req, &e.to_string()),
            }
        })
    }));
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
