//! Kafka's listener settings, read into `brook_net` listeners: `listeners`,
//! `advertised.listeners`, `listener.security.protocol.map`, and for each
//! listener its TLS (`ssl.*`) and SASL (`sasl.enabled.mechanisms`, the PLAIN
//! JAAS users, `connections.max.reauth.ms`) settings. Each setting may be
//! given for one listener as `listener.name.<name in lower case>.<setting>`,
//! which wins over the plain one, as in Kafka.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use brook_net::security::sasl::{self, SaslSettings};
use brook_net::security::tls::{ClientAuth, TlsAcceptor, TlsFiles};
use brook_net::security::{Listener, SecurityProtocol};

/// One `NAME://host:port` entry.
fn entries(s: &str) -> Result<Vec<(String, String)>, String> {
    (s.split(',').map(str::trim).filter(|l| !l.is_empty()))
        .map(|l| match l.split_once("://") {
            Some((name, addr)) if !name.is_empty() => {
                Ok((name.to_ascii_uppercase(), addr.to_string()))
            }
            _ => Err(format!("listener {l:?}: expected NAME://HOST:PORT")),
        })
        .collect()
}

fn host_port(s: &str) -> Result<(String, i32), String> {
    let (host, port) =
        (s.rsplit_once(':')).ok_or_else(|| format!("expected HOST:PORT, got {s:?}"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("bad port in {s:?}"))?;
    Ok((
        host.trim_matches(|c| c == '[' || c == ']').to_string(),
        port as i32,
    ))
}

fn resolve(s: &str) -> Result<SocketAddr, String> {
    let (host, port) = host_port(s)?;
    let host = if host.is_empty() {
        "0.0.0.0".to_string()
    } else {
        host
    };
    (host.as_str(), port as u16)
        .to_socket_addrs()
        .map_err(|e| format!("bad address {s:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("address {s:?} resolves to nothing"))
}

/// The client listeners (CONTROLLER excluded), the first being the one
/// other brokers use. `listen` and `advertise` (flags) replace the first
/// listener's addresses.
pub fn listeners(
    get: &dyn Fn(&str) -> Option<String>,
    listen: Option<String>,
    advertise: Option<String>,
) -> Result<Vec<Arc<Listener>>, String> {
    let strip = |s: &str| {
        s.split_once("://")
            .map_or(s.to_string(), |(_, a)| a.to_string())
    };
    let mut declared: Vec<(String, String)> = match get("listeners") {
        Some(l) => entries(&l)?
            .into_iter()
            .filter(|(n, _)| n != "CONTROLLER")
            .collect(),
        None => Vec::new(),
    };
    if declared.is_empty() {
        declared.push(("PLAINTEXT".into(), "127.0.0.1:9092".into()));
    }
    if let Some(l) = listen {
        declared[0].1 = strip(&l);
    }
    let mut names = std::collections::BTreeSet::new();
    for (n, _) in &declared {
        if !names.insert(n.clone()) {
            return Err(format!("listeners: {n} given twice"));
        }
    }
    let mut advertised: BTreeMap<String, String> = BTreeMap::new();
    if let Some(a) = get("advertised.listeners") {
        if a.contains("://") {
            for (n, addr) in entries(&a)? {
                advertised.insert(n, addr);
            }
        } else {
            // A bare HOST:PORT names the first listener's address.
            advertised.insert(declared[0].0.clone(), a);
        }
    }
    if let Some(a) = advertise {
        advertised.insert(declared[0].0.clone(), strip(&a));
    }
    let map: BTreeMap<String, SecurityProtocol> = match get("listener.security.protocol.map") {
        Some(m) => (m.split(',').map(str::trim).filter(|e| !e.is_empty()))
            .map(|e| {
                let (n, p) = e.split_once(':').ok_or_else(|| {
                    format!("listener.security.protocol.map: {e:?} is not NAME:PROTOCOL")
                })?;
                let proto = SecurityProtocol::parse(p).ok_or_else(|| {
                    format!("listener.security.protocol.map: unknown security protocol {p:?}")
                })?;
                Ok((n.trim().to_ascii_uppercase(), proto))
            })
            .collect::<Result<_, String>>()?,
        None => BTreeMap::new(),
    };
    let mut out = Vec::new();
    for (name, addr) in declared {
        let protocol = match map.get(&name) {
            Some(p) => *p,
            None => SecurityProtocol::parse(&name).ok_or_else(|| {
                format!("listener {name} is not in listener.security.protocol.map and is not a security protocol's name")
            })?,
        };
        let bound = resolve(&addr).map_err(|e| format!("listener {name}: {e}"))?;
        let (advertise_host, advertise_port) = match advertised.get(&name) {
            Some(a) => host_port(a)?,
            None => host_port(&addr)?,
        };
        // A listener's own setting wins over the broker-wide one.
        let prefix = format!("listener.name.{}.", name.to_ascii_lowercase());
        let setting = |k: &str| get(&format!("{prefix}{k}")).or_else(|| get(k));
        let tls = match protocol.tls() {
            true => Some(Arc::new(tls_settings(&name, &setting)?)),
            false => None,
        };
        let sasl = match protocol.sasl() {
            true => Some(Arc::new(sasl_settings(&name, &setting)?)),
            false => None,
        };
        out.push(Arc::new(Listener {
            name,
            protocol,
            addr: bound,
            advertise_host,
            advertise_port,
            tls,
            sasl,
        }));
    }
    Ok(out)
}

fn tls_settings(
    name: &str,
    setting: &dyn Fn(&str) -> Option<String>,
) -> Result<TlsAcceptor, String> {
    let ctx = |e: String| format!("listener {name}: {e}");
    for k in ["ssl.keystore.type", "ssl.truststore.type"] {
        if let Some(t) = setting(k)
            && !t.eq_ignore_ascii_case("PEM")
        {
            return Err(ctx(format!(
                "{k}={t}: Brook reads PEM files only (set {k}=PEM)"
            )));
        }
    }
    if setting("ssl.key.password").is_some_and(|p| !p.is_empty()) {
        return Err(ctx("ssl.key.password: encrypted private keys are not supported; give an unencrypted PEM key".into()));
    }
    let keystore = setting("ssl.keystore.location").ok_or_else(|| {
        ctx(
            "needs ssl.keystore.location (a PEM file with the private key and certificate chain)"
                .into(),
        )
    })?;
    let client_auth = match setting("ssl.client.auth")
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("none") => ClientAuth::None,
        Some("requested") => ClientAuth::Requested,
        Some("required") => ClientAuth::Required,
        Some(other) => {
            return Err(ctx(format!(
                "ssl.client.auth={other}: expected none, requested or required"
            )));
        }
    };
    let (mut tls12, mut tls13) = (true, true);
    if let Some(p) = setting("ssl.enabled.protocols") {
        (tls12, tls13) = (false, false);
        for v in p.split(',').map(str::trim).filter(|v| !v.is_empty()) {
            match v {
                "TLSv1.2" => tls12 = true,
                "TLSv1.3" => tls13 = true,
                other => {
                    return Err(ctx(format!(
                        "ssl.enabled.protocols: {other} is not supported (TLSv1.2, TLSv1.3)"
                    )));
                }
            }
        }
    }
    TlsAcceptor::new(TlsFiles {
        keystore: PathBuf::from(keystore),
        truststore: setting("ssl.truststore.location").map(PathBuf::from),
        client_auth,
        tls12,
        tls13,
    })
    .map_err(ctx)
}

fn sasl_settings(
    name: &str,
    setting: &dyn Fn(&str) -> Option<String>,
) -> Result<SaslSettings, String> {
    let ctx = |e: String| format!("listener {name}: {e}");
    let mechanisms: Vec<String> = setting("sasl.enabled.mechanisms")
        .unwrap_or_else(|| "SCRAM-SHA-256,SCRAM-SHA-512,PLAIN".into())
        .split(',')
        .map(|m| m.trim().to_ascii_uppercase())
        .filter(|m| !m.is_empty())
        .collect();
    for m in &mechanisms {
        if sasl::Exchange::start(m).is_none() {
            return Err(ctx(format!(
                "sasl.enabled.mechanisms: {m} is not supported (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)"
            )));
        }
    }
    if mechanisms.is_empty() {
        return Err(ctx("sasl.enabled.mechanisms is empty".into()));
    }
    let jaas = setting("plain.sasl.jaas.config").or_else(|| setting("sasl.jaas.config"));
    let plain_users = match (&jaas, mechanisms.iter().any(|m| m == sasl::PLAIN)) {
        (Some(j), true) => {
            sasl::jaas_plain_users(j).map_err(|e| ctx(format!("plain.sasl.jaas.config: {e}")))?
        }
        _ => BTreeMap::new(),
    };
    let session_lifetime = match setting("connections.max.reauth.ms") {
        Some(v) => {
            let ms: u64 = v
                .parse()
                .map_err(|_| ctx(format!("connections.max.reauth.ms: {v:?} is not a number")))?;
            (ms > 0).then(|| Duration::from_millis(ms))
        }
        None => None,
    };
    Ok(SaslSettings {
        mechanisms,
        plain_users,
        session_lifetime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| m.get(k).cloned()
    }

    #[test]
    fn names_protocols_and_advertised_addresses() {
        let get = from(&[
            (
                "listeners",
                "CLIENT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093,SASL_PLAINTEXT://127.0.0.1:9094",
            ),
            (
                "advertised.listeners",
                "CLIENT://broker1:19092,SASL_PLAINTEXT://broker1:19094",
            ),
            (
                "listener.security.protocol.map",
                "CLIENT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            ),
            (
                "listener.name.sasl_plaintext.sasl.enabled.mechanisms",
                "SCRAM-SHA-512",
            ),
            ("connections.max.reauth.ms", "60000"),
        ]);
        let l = listeners(&get, None, None).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(
            (l[0].name.as_str(), l[0].protocol),
            ("CLIENT", SecurityProtocol::Plaintext)
        );
        assert_eq!(
            (l[0].advertise_host.as_str(), l[0].advertise_port),
            ("broker1", 19092)
        );
        assert_eq!(l[1].protocol, SecurityProtocol::SaslPlaintext);
        let s = l[1].sasl.as_ref().unwrap();
        assert_eq!(s.mechanisms, ["SCRAM-SHA-512"]);
        assert_eq!(s.session_lifetime, Some(Duration::from_secs(60)));
        // Flags replace the first listener's addresses.
        let l = listeners(&get, Some("127.0.0.1:7000".into()), Some("h:7001".into())).unwrap();
        assert_eq!(l[0].addr.port(), 7000);
        assert_eq!(
            (l[0].advertise_host.as_str(), l[0].advertise_port),
            ("h", 7001)
        );
        // Nothing set: one PLAINTEXT listener.
        let l = listeners(&from(&[]), None, None).unwrap();
        assert_eq!((l[0].name.as_str(), l[0].addr.port()), ("PLAINTEXT", 9092));
    }

    #[test]
    fn bad_settings_fail_fast() {
        for (pairs, says) in [
            (
                vec![("listeners", "WEIRD://127.0.0.1:1")],
                "not a security protocol",
            ),
            (
                vec![(
                    "listeners",
                    "PLAINTEXT://127.0.0.1:1,PLAINTEXT://127.0.0.1:2",
                )],
                "given twice",
            ),
            (
                vec![("listeners", "SSL://127.0.0.1:1")],
                "ssl.keystore.location",
            ),
            (
                vec![
                    ("listeners", "SSL://127.0.0.1:1"),
                    ("ssl.keystore.type", "JKS"),
                ],
                "PEM files only",
            ),
            (
                vec![
                    ("listeners", "SASL_SSL://127.0.0.1:1"),
                    ("ssl.keystore.location", "/nonexistent.pem"),
                ],
                "/nonexistent.pem",
            ),
            (
                vec![
                    ("listeners", "SASL_PLAINTEXT://127.0.0.1:1"),
                    ("sasl.enabled.mechanisms", "GSSAPI"),
                ],
                "GSSAPI is not supported",
            ),
            (
                vec![
                    ("listeners", "A://127.0.0.1:1"),
                    ("listener.security.protocol.map", "A:TLS"),
                ],
                "unknown security protocol",
            ),
        ] {
            let e = listeners(&from(&pairs), None, None).unwrap_err();
            assert!(e.contains(says), "{pairs:?}: {e}");
        }
    }
}
