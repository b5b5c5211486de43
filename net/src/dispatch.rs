//! Request header parsing and version checks; the routing table in `routes`
//! takes it from there.
//!
//! Handlers are plain functions that do their synchronous work (for Produce: the
//! appends) before returning the future that completes the response; `dispatch`
//! is called in the connection's read order, so appends keep that order.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::Decodable;

use crate::handlers;
use crate::routes::{self, Dispatched, PRODUCE_MIN_DECODABLE, Request, encode_response};
use crate::security::Session;
use crate::server::ShardServer;

/// Routes one request frame, counting it for the metrics endpoint: a
/// request when its response is encoded (or its acks=0 Produce has run), a
/// bad request when the connection must close.
pub fn dispatch(
    srv: &Rc<ShardServer>,
    session: &Rc<Session>,
    peer: std::net::SocketAddr,
    frame: Bytes,
) -> Dispatched {
    let started = std::time::Instant::now();
    let bytes_in = frame.len();
    let key = ApiKey::try_from(i16::from_be_bytes([frame[0], frame[1]]));
    match (route(srv, session, peer, frame), key) {
        (Dispatched::Respond(fut), Ok(key)) => Dispatched::Respond(Box::pin(async move {
            let r = fut.await;
            if let Some(b) = &r {
                crate::metrics::record_request(key, bytes_in, b.len(), started.elapsed());
            }
            r
        })),
        (Dispatched::NoResponse(fut), Ok(key)) => Dispatched::NoResponse(Box::pin(async move {
            let r = fut.await;
            crate::metrics::record_request(key, bytes_in, 0, started.elapsed());
            r
        })),
        (Dispatched::RespondThenClose(fut), Ok(key)) => {
            Dispatched::RespondThenClose(Box::pin(async move {
                let r = fut.await;
                if let Some(b) = &r {
                    crate::metrics::record_request(key, bytes_in, b.len(), started.elapsed());
                }
                r
            }))
        }
        (Dispatched::Close(why), _) => {
            crate::metrics::record_bad_request();
            Dispatched::Close(why)
        }
        (d, _) => d,
    }
}

fn route(
    srv: &Rc<ShardServer>,
    session: &Rc<Session>,
    peer: std::net::SocketAddr,
    mut frame: Bytes,
) -> Dispatched {
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(key) = ApiKey::try_from(raw_key) else {
        return Dispatched::Close(format!("unknown api key {raw_key}"));
    };
    let Some(api) = routes::find(key) else {
        return Dispatched::Close(format!("unsupported api {key:?}"));
    };
    if let Err(why) = session.admits(key) {
        return Dispatched::Close(why);
    }
    if version < api.min || version > api.max {
        if key == ApiKey::ApiVersions {
            let resp = handlers::api_versions::unsupported_version(routes::api_versions());
            return Dispatched::Respond(Box::pin(async move {
                encode_response(key, 0, correlation_id, &resp)
            }));
        }
        return Dispatched::Close(format!(
            "{key:?} v{version} is outside the supported {}..={}",
            api.min, api.max
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
        principal: session.principal(),
        listener: session.listener_index,
    };
    let request = Request {
        key,
        version,
        correlation_id,
        client,
        session: session.clone(),
        peer,
    };
    match (api.route)(srv, request, &mut frame) {
        Ok(d) => d,
        Err(why) => Dispatched::Close(why),
    }
}
