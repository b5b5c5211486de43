//! SaslHandshake and SaslAuthenticate: a connection on a SASL listener
//! authenticates before anything but ApiVersions is served
//! (`Session::admits`), and re-authenticates within its session lifetime
//! (KIP-368). Both run in the connection's read order, synchronously, so the
//! request after a successful SaslAuthenticate already sees the principal.
//!
//! Any failure is answered alike — SASL_AUTHENTICATION_FAILED, Kafka's
//! message, after `FAILED_AUTHENTICATION_DELAY` — and closes the connection;
//! the reason goes to the log with the peer, never the password.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::security::sasl::{Exchange, Step};
use crate::security::{self, Session};
use crate::server::ShardServer;

/// The answer, and whether the connection closes after it.
pub struct Answer<R> {
    pub response: R,
    pub close: bool,
    /// Answer this late (a failed authentication).
    pub delay: Option<std::time::Duration>,
}

pub fn handshake(session: &Session, req: SaslHandshakeRequest) -> Answer<SaslHandshakeResponse> {
    let Some(settings) = session.listener.sasl.as_ref() else {
        return Answer {
            response: SaslHandshakeResponse::default()
                .with_error_code(ResponseError::IllegalSaslState.code()),
            close: false,
            delay: None,
        };
    };
    let offered = settings
        .mechanisms
        .iter()
        .map(|m| StrBytes::from_string(m.clone()))
        .collect();
    let resp = SaslHandshakeResponse::default().with_mechanisms(offered);
    let exchange = (settings.offers(&req.mechanism))
        .then(|| Exchange::start(&req.mechanism))
        .flatten();
    let Some(exchange) = exchange else {
        tracing::info!(listener = %session.listener.name, mechanism = %req.mechanism.as_str(), "SASL mechanism not enabled; closing");
        return Answer {
            response: resp.with_error_code(ResponseError::UnsupportedSaslMechanism.code()),
            close: true,
            delay: None,
        };
    };
    match session.begin(exchange) {
        Ok(()) => Answer {
            response: resp,
            close: false,
            delay: None,
        },
        Err(why) => {
            tracing::info!(listener = %session.listener.name, "{why}; closing");
            Answer {
                response: resp.with_error_code(ResponseError::IllegalSaslState.code()),
                close: true,
                delay: None,
            }
        }
    }
}

pub fn authenticate(
    srv: &ShardServer,
    session: &Session,
    peer: std::net::SocketAddr,
    req: SaslAuthenticateRequest,
) -> Answer<SaslAuthenticateResponse> {
    let illegal = |msg: &str, close| Answer {
        response: SaslAuthenticateResponse::default()
            .with_error_code(ResponseError::IllegalSaslState.code())
            .with_error_message(Some(StrBytes::from_string(msg.to_string()))),
        close,
        delay: None,
    };
    let Some(settings) = session.listener.sasl.clone() else {
        return illegal(
            "SaslAuthenticate request received on a listener without SASL",
            false,
        );
    };
    let mut slot = session.exchange();
    let Some(exchange) = slot.as_mut() else {
        return illegal(
            "SaslAuthenticate request without a SaslHandshake first",
            true,
        );
    };
    let mechanism = exchange.mechanism();
    let scram = srv.shard.catalog().scram.clone();
    let nonce = security::random();
    let (step, over) = exchange.step(
        &req.auth_bytes,
        &settings,
        &scram,
        security::broker_secret(),
        &nonce,
    );
    if over {
        *slot = None;
    }
    drop(slot);
    let failed = |why: String| {
        tracing::info!(%peer, listener = %session.listener.name, mechanism, "failed authentication: {why}");
        crate::metrics::record_failed_authentication();
        Answer {
            response: SaslAuthenticateResponse::default()
                .with_error_code(ResponseError::SaslAuthenticationFailed.code())
                .with_error_message(Some(StrBytes::from_string(format!(
                    "Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
                )))),
            close: true,
            delay: Some(security::FAILED_AUTHENTICATION_DELAY),
        }
    };
    match step {
        Step::Challenge(bytes) => Answer {
            response: SaslAuthenticateResponse::default().with_auth_bytes(bytes.into()),
            close: false,
            delay: None,
        },
        Step::Failed(why) => failed(why),
        Step::Done { user, response } => match session.authenticated_as(&user) {
            Ok(lifetime_ms) => {
                tracing::debug!(%peer, listener = %session.listener.name, mechanism, %user, "authenticated");
                Answer {
                    response: SaslAuthenticateResponse::default()
                        .with_auth_bytes(response.into())
                        .with_session_lifetime_ms(lifetime_ms),
                    close: false,
                    delay: None,
                }
            }
            Err(why) => failed(why),
        },
    }
}
