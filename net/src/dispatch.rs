//! Request header parsing, version checks and routing to the per-API handlers.
//!
//! Handlers are plain functions that do their synchronous work (for Produce: the
//! appends) before returning the future that completes the response; `dispatch`
//! is called in the connection's read order, so appends keep that order.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::handlers;
use crate::server::ShardServer;
use crate::versions::{self, PRODUCE_MIN_DECODABLE};

pub type ResponseFuture = Pin<Box<dyn Future<Output = Option<Bytes>>>>;

/// What the connection does with a request.
pub enum Dispatched {
    /// Queue this; its output is the encoded response frame.
    Respond(ResponseFuture),
    /// Run this; the client expects no answer (Produce with acks=0).
    NoResponse(Pin<Box<dyn Future<Output = Option<Bytes>>>>),
    /// The protocol gives no way to answer: close the connection.
    Close(String),
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

fn decode<T: Decodable>(frame: &mut Bytes, key: ApiKey, version: i16) -> Result<T, String> {
    T::decode(frame, version).map_err(|e| format!("malformed {key:?} v{version} request: {e}"))
}

fn respond<R, F>(key: ApiKey, version: i16, correlation_id: i32, fut: F) -> Dispatched
where
    R: Encodable,
    F: Future<Output = R> + 'static,
{
    Dispatched::Respond(Box::pin(async move {
        let resp = fut.await;
        encode_response(key, version, correlation_id, &resp)
    }))
}

pub fn dispatch(srv: &Rc<ShardServer>, peer: std::net::SocketAddr, mut frame: Bytes) -> Dispatched {
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(key) = ApiKey::try_from(raw_key) else {
        return Dispatched::Close(format!("unknown api key {raw_key}"));
    };
    let Some(range) = versions::range_of(key) else {
        return Dispatched::Close(format!("unsupported api {key:?}"));
    };
    if version < range.min || version > range.max {
        if key == ApiKey::ApiVersions {
            let resp = handlers::api_versions::unsupported_version();
            return Dispatched::Respond(Box::pin(async move {
                encode_response(key, 0, correlation_id, &resp)
            }));
        }
        return Dispatched::Close(format!(
            "{key:?} v{version} is outside the supported {}..={}",
            range.min, range.max
        ));
    }
    if key == ApiKey::Produce && version < PRODUCE_MIN_DECODABLE {
        return Dispatched::Close(format!(
            "Produce v{version} (message format v0/v1) is not supported"
        ));
    }
    let header = match RequestHeader::decode(&mut frame, key.request_header_version(version)) {
        Ok(h) => h,
        Err(e) => {
            return Dispatched::Close(format!("malformed {key:?} v{version} request header: {e}"));
        }
    };
    tracing::trace!(?key, version, correlation_id, client_id = ?header.client_id, "request");
    let client = handlers::ClientInfo {
        client_id: header
            .client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        host: format!("/{}", peer.ip()),
    };
    match route(srv, client, key, version, correlation_id, &mut frame) {
        Ok(d) => d,
        Err(why) => Dispatched::Close(why),
    }
}

fn route(
    srv: &Rc<ShardServer>,
    client: handlers::ClientInfo,
    key: ApiKey,
    v: i16,
    cid: i32,
    frame: &mut Bytes,
) -> Result<Dispatched, String> {
    use handlers::*;
    let s = srv.clone();
    Ok(match key {
        ApiKey::ApiVersions => respond(key, v, cid, api_versions::handle(decode(frame, key, v)?)),
        ApiKey::Metadata => respond(key, v, cid, metadata::handle(s, decode(frame, key, v)?, v)),
        ApiKey::Produce => {
            let req: kafka_protocol::messages::ProduceRequest = decode(frame, key, v)?;
            if req.acks == 0 {
                let fut = produce::handle(&s, req, &client);
                Dispatched::NoResponse(Box::pin(async move {
                    fut.await;
                    None
                }))
            } else {
                respond(key, v, cid, produce::handle(&s, req, &client))
            }
        }
        ApiKey::Fetch => respond(
            key,
            v,
            cid,
            fetch::handle(s, decode(frame, key, v)?, client.client_id.clone()),
        ),
        ApiKey::ListOffsets => respond(
            key,
            v,
            cid,
            list_offsets::handle(s, decode(frame, key, v)?, v),
        ),
        ApiKey::CreateTopics => respond(
            key,
            v,
            cid,
            create_topics::handle(s, decode(frame, key, v)?, v),
        ),
        ApiKey::DeleteTopics => respond(
            key,
            v,
            cid,
            delete_topics::handle(s, decode(frame, key, v)?, v),
        ),
        ApiKey::InitProducerId => respond(
            key,
            v,
            cid,
            init_producer_id::handle(s, decode(frame, key, v)?),
        ),
        ApiKey::FindCoordinator => respond(
            key,
            v,
            cid,
            find_coordinator::handle(s, decode(frame, key, v)?, v),
        ),
        ApiKey::JoinGroup => respond(
            key,
            v,
            cid,
            join_group::handle(s, decode(frame, key, v)?, v, client),
        ),
        ApiKey::SyncGroup => respond(
            key,
            v,
            cid,
            sync_group::handle(s, decode(frame, key, v)?, v),
        ),
        ApiKey::Heartbeat => respond(key, v, cid, heartbeat::handle(s, decode(frame, key, v)?)),
        ApiKey::LeaveGroup => respond(
            key,
            v,
            cid,
            leave_group::handle(s, decode(frame, key, v)?, v),
        ),
        ApiKey::OffsetCommit => respond(
            key,
            v,
            cid,
            offset_commit::handle(s, decode(frame, key, v)?),
        ),
        ApiKey::OffsetFetch => respond(
            key,
            v,
            cid,
            offset_fetch::handle(s, decode(frame, key, v)?, v),
        ),
        ApiKey::ListGroups => respond(
            key,
            v,
            cid,
            list_groups::handle(s, decode(frame, key, v)?, v),
        ),
        ApiKey::DescribeGroups => respond(
            key,
            v,
            cid,
            describe_groups::handle(s, decode(frame, key, v)?, v),
        ),
        ApiKey::DescribeClientQuotas => respond(
            key,
            v,
            cid,
            client_quotas::describe(s, decode(frame, key, v)?),
        ),
        ApiKey::AlterClientQuotas => {
            respond(key, v, cid, client_quotas::alter(s, decode(frame, key, v)?))
        }
        ApiKey::DeleteGroups => respond(
            key,
            v,
            cid,
            delete_groups::handle(s, decode(frame, key, v)?),
        ),
        ApiKey::DescribeConfigs => respond(
            key,
            v,
            cid,
            describe_configs::handle(s, decode(frame, key, v)?, v),
        ),
        ApiKey::DescribeCluster => respond(
            key,
            v,
            cid,
            describe_cluster::handle(s, decode(frame, key, v)?),
        ),
        ApiKey::CreatePartitions => respond(
            key,
            v,
            cid,
            create_partitions::handle(s, decode(frame, key, v)?),
        ),
        other => return Err(format!("no handler for {other:?}")),
    })
}
