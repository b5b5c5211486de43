//! TLS on a listener (rustls; TLS 1.2 and 1.3), and the encrypted side of a
//! connection.
//!
//! The certificate chain and key come from PEM files (Kafka's
//! `ssl.keystore.type=PEM`: `ssl.keystore.location` holds the key and the
//! chain), the trusted client CAs from a PEM bundle
//! (`ssl.truststore.location`). `ssl.client.auth` is `none`, `requested` or
//! `required`. The files are checked for changes at most once a second as
//! connections arrive, and a changed file takes effect for the next
//! connection: certificates are renewed without a restart. A file that no
//! longer reads keeps the previous configuration, with an error in the log.
//!
//! A connection's rustls state is shared by its read and write sides
//! (`Rc<RefCell<…>>`, borrowed only between awaits, never across one): the
//! read side feeds ciphertext in and takes plaintext out, the write side
//! puts a response in and sends the records rustls makes of it.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use compio::io::{AsyncRead, AsyncWriteExt};
use compio::net::TcpStream;
use rustls::ServerConnection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// `ssl.client.auth`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Requested,
    Required,
}

/// What a listener's TLS is made of (files are read by [`TlsAcceptor`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the private key and the certificate chain, leaf first.
    pub keystore: PathBuf,
    /// PEM: the CAs client certificates must chain to.
    pub truststore: Option<PathBuf>,
    pub client_auth: ClientAuth,
    /// `ssl.enabled.protocols`: TLSv1.2, TLSv1.3 or both.
    pub tls12: bool,
    pub tls13: bool,
}

struct Loaded {
    config: Arc<rustls::ServerConfig>,
    stamps: Vec<Option<SystemTime>>,
    checked: Instant,
}

/// A listener's TLS configuration, reloaded when its files change.
pub struct TlsAcceptor {
    files: TlsFiles,
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("files", &self.files)
            .finish()
    }
}

const RECHECK: Duration = Duration::from_secs(1);

impl TlsAcceptor {
    /// Reads the files now: a broker with a bad certificate does not start.
    pub fn new(files: TlsFiles) -> Result<TlsAcceptor, String> {
        let stamps = stamps(&files);
        let config = build(&files)?;
        Ok(TlsAcceptor {
            files,
            loaded: Mutex::new(Loaded {
                config,
                stamps,
                checked: Instant::now(),
            }),
        })
    }

    /// The configuration for a new connection.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        let mut l = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if l.checked.elapsed() >= RECHECK {
            l.checked = Instant::now();
            let now = stamps(&self.files);
            if now != l.stamps {
                l.stamps = now;
                match build(&self.files) {
                    Ok(c) => {
                        tracing::info!(keystore = %self.files.keystore.display(), "TLS files changed: reloaded");
                        l.config = c;
                    }
                    Err(e) => tracing::error!(
                        "TLS files changed but do not load ({e}); keeping the previous ones"
                    ),
                }
            }
        }
        l.config.clone()
    }
}

fn stamps(f: &TlsFiles) -> Vec<Option<SystemTime>> {
    std::iter::once(&f.keystore)
        .chain(&f.truststore)
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

fn build(f: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, String> {
    let ks = f.keystore.display();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&f.keystore)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("ssl.keystore.location {ks}: {e}"))?;
    if chain.is_empty() {
        return Err(format!("ssl.keystore.location {ks}: no certificate"));
    }
    let key = PrivateKeyDer::from_pem_file(&f.keystore)
        .map_err(|e| format!("ssl.keystore.location {ks}: no usable private key ({e}); an unencrypted PKCS#8, PKCS#1 or SEC1 key is needed"))?;
    // ring builds without a C toolchain beyond cc (aws-lc-rs needs cmake);
    // rustls marks it deprecated because it lacks post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        f.tls12.then_some(&rustls::version::TLS12),
        f.tls13.then_some(&rustls::version::TLS13),
    ]
    .into_iter()
    .flatten()
    .collect();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("ssl.enabled.protocols: {e}"))?;
    let builder = match (f.client_auth, &f.truststore) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (_, None) => {
            return Err("ssl.client.auth needs ssl.truststore.location (the CAs client certificates chain to)".into());
        }
        (auth, Some(ts)) => {
            let mut roots = rustls::RootCertStore::empty();
            let cas = CertificateDer::pem_file_iter(ts)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("ssl.truststore.location {}: {e}", ts.display()))?;
            for ca in cas {
                roots
                    .add(ca)
                    .map_err(|e| format!("ssl.truststore.location {}: {e}", ts.display()))?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let v = match auth {
                ClientAuth::Requested => v.allow_unauthenticated(),
                _ => v,
            };
            builder.with_client_cert_verifier(
                v.build()
                    .map_err(|e| format!("ssl.truststore.location: {e}"))?,
            )
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("ssl.keystore.location {ks}: {e}"))?;
    Ok(Arc::new(config))
}

/// The client certificate's subject as Kafka names an SSL principal by
/// default: the distinguished name in RFC 2253 form (`CN=…,OU=…,O=…`,
/// last RDN first).
pub fn subject_name(cert: &CertificateDer<'_>) -> Option<String> {
    use x509_parser::prelude::*;
    let (_, c) = X509Certificate::from_der(cert.as_ref()).ok()?;
    let rdns: Vec<String> = (c.subject().iter_rdn())
        .map(|rdn| {
            (rdn.iter())
                .map(|a| {
                    let oid = a.attr_type();
                    let key = oid_registry()
                        .get(oid)
                        .map(|e| e.sn().to_string())
                        .unwrap_or_else(|| oid.to_id_string());
                    let key = match key.as_str() {
                        "commonName" => "CN".to_string(),
                        "organizationName" => "O".into(),
                        "organizationalUnitName" => "OU".into(),
                        "countryName" => "C".into(),
                        "localityName" => "L".into(),
                        "stateOrProvinceName" => "ST".into(),
                        "domainComponent" => "DC".into(),
                        "streetAddress" => "STREET".into(),
                        _ => key,
                    };
                    format!("{key}={}", escape_rdn(a.as_str().unwrap_or("")))
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    Some(rdns.into_iter().rev().collect::<Vec<_>>().join(","))
}

/// RFC 2253 escaping of an attribute value.
fn escape_rdn(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, ch) in v.chars().enumerate() {
        if matches!(ch, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (ch == '#' || ch == ' '))
            || (i == v.chars().count() - 1 && ch == ' ')
        {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// Most plaintext encrypted into one socket write.
const WRITE_CHUNK: usize = 256 << 10;

/// Bytes of ciphertext read from the socket at a time.
const READ_CHUNK: usize = 64 << 10;

/// One connection's TLS state, shared by its read and write sides.
#[derive(Clone)]
pub struct TlsConn(Rc<RefCell<Inner>>);

struct Inner {
    conn: ServerConnection,
    /// Decrypted bytes not yet handed to the connection.
    plain: BytesMut,
    /// The peer sent close_notify.
    closed: bool,
}

impl TlsConn {
    /// Runs the handshake on `stream` (within `limit`), then sends what
    /// rustls queued after it (TLS 1.3 session tickets). Requests the client
    /// sent right behind its last handshake message are kept for the read side.
    pub async fn accept(
        stream: &mut TcpStream,
        config: Arc<rustls::ServerConfig>,
        limit: Duration,
    ) -> Result<TlsConn, String> {
        let mut conn = ServerConnection::new(config).map_err(|e| e.to_string())?;
        // Responses are put in whole and drained at once (`write_plain`).
        conn.set_buffer_limit(None);
        let me = TlsConn(Rc::new(RefCell::new(Inner {
            conn,
            plain: BytesMut::new(),
            closed: false,
        })));
        let handshake = async {
            let mut scratch = Vec::with_capacity(READ_CHUNK);
            loop {
                me.flush(stream).await?;
                if !me.0.borrow().conn.is_handshaking() {
                    return Ok(());
                }
                scratch.clear();
                let compio::BufResult(r, b) = stream.read(scratch).await;
                scratch = b;
                match r {
                    Ok(0) => return Err("closed during the TLS handshake".to_string()),
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
                if let Err(e) = me.feed(&scratch) {
                    // Tell the client why (the alert rustls queued), then fail.
                    let _ = me.flush(stream).await;
                    return Err(e);
                }
            }
        };
        use futures::FutureExt;
        futures::select_biased! {
            r = handshake.fuse() => r?,
            _ = compio::time::sleep(limit).fuse() => return Err(format!("no TLS handshake within {limit:?}")),
        }
        Ok(me)
    }

    /// The client certificate's principal name, if the client sent one.
    pub fn peer_subject(&self) -> Option<String> {
        let i = self.0.borrow();
        subject_name(i.conn.peer_certificates()?.first()?)
    }

    /// Feeds ciphertext to rustls and keeps what it decrypts. `Err` is a
    /// TLS error (an alert is queued).
    fn feed(&self, mut data: &[u8]) -> Result<(), String> {
        let mut i = self.0.borrow_mut();
        let Inner {
            conn,
            plain,
            closed,
        } = &mut *i;
        while !data.is_empty() {
            conn.read_tls(&mut data).map_err(|e| e.to_string())?;
            let st = conn.process_new_packets().map_err(|e| e.to_string())?;
            let n = st.plaintext_bytes_to_read();
            if n > 0 {
                let start = plain.len();
                plain.resize(start + n, 0);
                conn.reader()
                    .read_exact(&mut plain[start..])
                    .map_err(|e| e.to_string())?;
            }
            *closed |= st.peer_has_closed();
        }
        Ok(())
    }

    /// Sends whatever rustls has queued.
    async fn flush(&self, stream: &mut TcpStream) -> Result<(), String> {
        let out = self.take_tls();
        if out.is_empty() {
            return Ok(());
        }
        let compio::BufResult(r, _) = stream.write_all(out).await;
        r.map_err(|e| e.to_string())
    }

    fn take_tls(&self) -> Vec<u8> {
        let mut i = self.0.borrow_mut();
        let mut out = Vec::new();
        while i.conn.wants_write() {
            if i.conn.write_tls(&mut out).is_err() {
                break;
            }
        }
        out
    }

    /// Reads from `reader` until plaintext arrives and appends it to `buf`:
    /// `Ok(0)` at the end of the stream (a close_notify or the socket's end).
    pub async fn read_plain(
        &self,
        reader: &mut TcpStream,
        mut buf: BytesMut,
    ) -> (std::io::Result<usize>, BytesMut) {
        let mut scratch = Vec::with_capacity(READ_CHUNK);
        loop {
            {
                let mut i = self.0.borrow_mut();
                if !i.plain.is_empty() {
                    let n = i.plain.len();
                    buf.extend_from_slice(&i.plain);
                    i.plain.clear();
                    return (Ok(n), buf);
                }
                if i.closed {
                    return (Ok(0), buf);
                }
            }
            scratch.clear();
            let compio::BufResult(r, b) = reader.read(scratch).await;
            scratch = b;
            match r {
                Ok(0) => return (Ok(0), buf),
                Ok(_) => {}
                Err(e) => return (Err(e), buf),
            }
            if let Err(e) = self.feed(&scratch) {
                let e = std::io::Error::new(std::io::ErrorKind::InvalidData, e);
                return (Err(e), buf);
            }
        }
    }

    /// Encrypts `response` and sends it, at most [`WRITE_CHUNK`] at a time.
    pub async fn write_plain(
        &self,
        writer: &mut TcpStream,
        response: Bytes,
    ) -> std::io::Result<()> {
        for chunk in response.chunks(WRITE_CHUNK) {
            let out = {
                self.0.borrow_mut().conn.writer().write_all(chunk)?;
                self.take_tls()
            };
            let compio::BufResult(r, _) = writer.write_all(out).await;
            r?;
        }
        Ok(())
    }

    /// Sends close_notify.
    pub async fn close(&self, writer: &mut TcpStream) {
        self.0.borrow_mut().conn.send_close_notify();
        let _ = self.flush(writer).await;
    }
}
