//! Who is on the other end of a connection: the listeners' security
//! protocols (Kafka's PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL), TLS
//! (`tls`), SASL (`sasl`, `scram`) and each connection's [`Session`]: its
//! listener, its principal and where its authentication stands.
//!
//! A principal is named as Kafka names it: `User:ANONYMOUS` on PLAINTEXT
//! and on SSL without a client certificate, `User:<subject DN>` with one,
//! `User:<name>` after SASL.

pub mod authz;
pub mod sasl;
pub mod scram;
pub mod tls;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use kafka_protocol::messages::ApiKey;

use sasl::{Exchange, SaslSettings};
use tls::TlsAcceptor;

/// Kafka's `SecurityProtocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(s: &str) -> Option<SecurityProtocol> {
        Some(match s.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => SecurityProtocol::Plaintext,
            "SSL" => SecurityProtocol::Ssl,
            "SASL_PLAINTEXT" => SecurityProtocol::SaslPlaintext,
            "SASL_SSL" => SecurityProtocol::SaslSsl,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Kafka's id (DescribeCluster and registration records carry it).
    pub fn id(self) -> i16 {
        match self {
            SecurityProtocol::Plaintext => 0,
            SecurityProtocol::Ssl => 1,
            SecurityProtocol::SaslPlaintext => 2,
            SecurityProtocol::SaslSsl => 3,
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// One listener: its name, protocol, addresses and security settings.
#[derive(Clone, Debug)]
pub struct Listener {
    pub name: String,
    pub protocol: SecurityProtocol,
    pub addr: SocketAddr,
    pub advertise_host: String,
    pub advertise_port: i32,
    pub tls: Option<Arc<TlsAcceptor>>,
    pub sasl: Option<Arc<SaslSettings>>,
}

impl Listener {
    pub fn plaintext(addr: SocketAddr, advertise_host: String, advertise_port: i32) -> Listener {
        Listener {
            name: "PLAINTEXT".into(),
            protocol: SecurityProtocol::Plaintext,
            addr,
            advertise_host,
            advertise_port,
            tls: None,
            sasl: None,
        }
    }
}

pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// How long a connection that must authenticate may take to do it, and
/// the largest frame it may send before (Kafka's `sasl.server.max.receive.size`).
pub const AUTHENTICATION_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_UNAUTHENTICATED_FRAME: usize = 512 << 10;

/// Kafka's `connection.failed.authentication.delay.ms` default: a failed
/// authentication is answered this late, whatever failed.
pub const FAILED_AUTHENTICATION_DELAY: Duration = Duration::from_millis(100);

/// One connection's identity and authentication.
pub struct Session {
    pub listener: Arc<Listener>,
    pub listener_index: usize,
    principal: RefCell<Arc<str>>,
    authenticated: Cell<bool>,
    expires: Cell<Option<Instant>>,
    exchange: RefCell<Option<Exchange>>,
    opened: Instant,
}

impl Session {
    pub fn new(listener: Arc<Listener>, listener_index: usize) -> Session {
        let needs_sasl = listener.protocol.sasl();
        Session {
            listener,
            listener_index,
            principal: RefCell::new(Arc::from(ANONYMOUS)),
            authenticated: Cell::new(!needs_sasl),
            expires: Cell::new(None),
            exchange: RefCell::new(None),
            opened: Instant::now(),
        }
    }

    pub fn principal(&self) -> Arc<str> {
        self.principal.borrow().clone()
    }

    pub fn set_principal(&self, p: String) {
        *self.principal.borrow_mut() = Arc::from(p);
    }

    pub fn authenticated(&self) -> bool {
        self.authenticated.get()
    }

    /// When a connection that has not authenticated must be closed.
    pub fn authentication_deadline(&self) -> Option<Instant> {
        (!self.authenticated.get()).then(|| self.opened + AUTHENTICATION_TIMEOUT)
    }

    /// The largest frame this connection may send now.
    pub fn max_frame(&self, configured: usize) -> usize {
        match self.authenticated.get() {
            true => configured,
            false => configured.min(MAX_UNAUTHENTICATED_FRAME),
        }
    }

    /// Whether a request of `key` may be served now; `Err` says why the
    /// connection closes instead (Kafka closes it too).
    pub fn admits(&self, key: ApiKey) -> Result<(), String> {
        if matches!(
            key,
            ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
        ) {
            return Ok(());
        }
        if !self.authenticated.get() {
            return Err(format!("{key:?} request before SASL authentication"));
        }
        if self.expires.get().is_some_and(|e| Instant::now() >= e) {
            return Err(
                "SASL session expired (connections.max.reauth.ms) without re-authentication".into(),
            );
        }
        Ok(())
    }

    /// Starts an exchange (SaslHandshake). `Err` is the error code's reason.
    pub fn begin(&self, exchange: Exchange) -> Result<(), &'static str> {
        let mut x = self.exchange.borrow_mut();
        if x.is_some() {
            return Err("a SASL exchange is already in progress");
        }
        *x = Some(exchange);
        Ok(())
    }

    pub fn exchange(&self) -> std::cell::RefMut<'_, Option<Exchange>> {
        self.exchange.borrow_mut()
    }

    /// The exchange ended well for `user`: returns the session lifetime
    /// (ms, 0 for none), or `Err` when a re-authentication names another
    /// principal (Kafka refuses that).
    pub fn authenticated_as(&self, user: &str) -> Result<i64, String> {
        let principal = format!("User:{user}");
        if self.authenticated.get() && *self.principal.borrow().as_ref() != principal {
            return Err("re-authentication may not change the principal".into());
        }
        self.set_principal(principal);
        self.authenticated.set(true);
        let lifetime = self.listener.sasl.as_ref().and_then(|s| s.session_lifetime);
        self.expires.set(lifetime.map(|l| Instant::now() + l));
        Ok(lifetime.map_or(0, |l| l.as_millis() as i64))
    }
}

/// This broker's secret for made-up SCRAM salts (random per start).
pub fn broker_secret() -> &'static [u8; 32] {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    SECRET.get_or_init(random)
}

/// Bytes from the system's random source.
pub fn random<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut out = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .expect("the system random source");
    out
}
