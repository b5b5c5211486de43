//! SASL on a listener: the mechanisms it offers (PLAIN, SCRAM-SHA-256,
//! SCRAM-SHA-512), one exchange per connection, and KIP-368's session
//! lifetime.
//!
//! PLAIN checks the users of the listener's JAAS configuration (Kafka's
//! `user_<name>="<password>"` entries of `PlainLoginModule`), which is also
//! how a cluster's first administrator is bootstrapped; SCRAM checks the
//! credentials stored with AlterUserScramCredentials (`meta::scram`).

use std::collections::BTreeMap;
use std::time::Duration;

use brook_engine::meta::scram::{ScramCredentials, ScramMechanism};

use super::scram::ScramServer;

pub const PLAIN: &str = "PLAIN";

/// A listener's SASL settings.
#[derive(Clone)]
pub struct SaslSettings {
    /// `sasl.enabled.mechanisms`, in the order offered.
    pub mechanisms: Vec<String>,
    /// PLAIN's users and passwords (from `plain.sasl.jaas.config`).
    pub plain_users: BTreeMap<String, String>,
    /// `connections.max.reauth.ms`: how long an authentication lasts
    /// (KIP-368); none when unset or 0.
    pub session_lifetime: Option<Duration>,
}

/// Without the passwords.
impl std::fmt::Debug for SaslSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslSettings")
            .field("mechanisms", &self.mechanisms)
            .field("plain_users", &self.plain_users.keys().collect::<Vec<_>>())
            .field("session_lifetime", &self.session_lifetime)
            .finish()
    }
}

impl SaslSettings {
    pub fn offers(&self, mechanism: &str) -> bool {
        self.mechanisms.iter().any(|m| m == mechanism)
    }
}

/// The `user_<name>="<password>"` entries of a JAAS `PlainLoginModule`
/// line, as Kafka's `PlainServerCallbackHandler` reads them.
pub fn jaas_plain_users(jaas: &str) -> Result<BTreeMap<String, String>, String> {
    if !jaas.contains("PlainLoginModule") {
        return Err("a PLAIN JAAS configuration must name org.apache.kafka.common.security.plain.PlainLoginModule".into());
    }
    let mut users = BTreeMap::new();
    let mut rest = jaas;
    while let Some(i) = rest.find("user_") {
        rest = &rest[i + 5..];
        let Some((name, after)) = rest.split_once('=') else {
            return Err("user_ entry without a value".into());
        };
        let after = after.trim_start();
        let Some(quoted) = after.strip_prefix('"') else {
            return Err(format!("user_{name}: the password must be quoted"));
        };
        let Some(end) = quoted.find('"') else {
            return Err(format!("user_{name}: unterminated password"));
        };
        users.insert(name.trim().to_string(), quoted[..end].to_string());
        rest = &quoted[end + 1..];
    }
    Ok(users)
}

/// The step of an exchange.
pub enum Step {
    /// Send these bytes and wait for the client's next token.
    Challenge(Vec<u8>),
    /// Authenticated as this user; send these bytes (SCRAM's server-final).
    Done { user: String, response: Vec<u8> },
    /// Authentication failed; the reason is for the log only.
    Failed(String),
}

/// One authentication in progress.
pub enum Exchange {
    Plain,
    Scram(Box<ScramServer>),
}

impl Exchange {
    /// The exchange for an offered mechanism.
    pub fn start(mechanism: &str) -> Option<Exchange> {
        if mechanism == PLAIN {
            return Some(Exchange::Plain);
        }
        ScramMechanism::from_name(mechanism).map(|m| Exchange::Scram(Box::new(ScramServer::new(m))))
    }

    pub fn mechanism(&self) -> &'static str {
        match self {
            Exchange::Plain => PLAIN,
            Exchange::Scram(s) => s.mechanism().name(),
        }
    }

    /// Takes the client's next token. `secret` makes up salts for unknown
    /// SCRAM users; `nonce` is fresh randomness for a server-first.
    pub fn step(
        &mut self,
        token: &[u8],
        settings: &SaslSettings,
        scram: &ScramCredentials,
        secret: &[u8],
        nonce: &[u8; 24],
    ) -> (Step, bool) {
        match self {
            Exchange::Plain => (plain(token, &settings.plain_users), true),
            Exchange::Scram(s) if s.awaits_first() => {
                let m = s.mechanism();
                match s.client_first(token, |u| scram.get(u, m).cloned(), secret, nonce) {
                    Ok((_, out)) => (Step::Challenge(out), false),
                    Err(e) => (Step::Failed(e.0), true),
                }
            }
            Exchange::Scram(s) => match s.client_final(token) {
                Ok((user, response)) => (Step::Done { user, response }, true),
                Err(e) => (Step::Failed(e.0), true),
            },
        }
    }
}

/// PLAIN (RFC 4616): `authzid NUL authcid NUL passwd`.
pub fn plain(token: &[u8], users: &BTreeMap<String, String>) -> Step {
    let mut parts = token.split(|b| *b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Step::Failed("malformed PLAIN token".into());
    };
    let (Ok(authzid), Ok(user)) = (std::str::from_utf8(authzid), std::str::from_utf8(user)) else {
        return Step::Failed("PLAIN names are not UTF-8".into());
    };
    if user.is_empty() {
        return Step::Failed("empty PLAIN user name".into());
    }
    if !authzid.is_empty() && authzid != user {
        return Step::Failed("authorization id differs from the user name".into());
    }
    // Compare with a stand-in when the user is unknown, so both take as long.
    let (expected, known) = match users.get(user) {
        Some(p) => (p.as_bytes(), true),
        None => (&b"\x00 no such user \x00"[..], false),
    };
    let equal = expected.len() == password.len()
        && (expected.iter().zip(password)).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0;
    if equal && known {
        Step::Done {
            user: user.to_string(),
            response: Vec::new(),
        }
    } else {
        Step::Failed("invalid PLAIN user name or password".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jaas_users_are_read_as_kafka_reads_them() {
        let jaas = r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-secret" user_admin="admin-secret" user_alice = "a;b c";"#;
        let users = jaas_plain_users(jaas).unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users["admin"], "admin-secret");
        assert_eq!(users["alice"], "a;b c");
        assert!(jaas_plain_users("ScramLoginModule required;").is_err());
        assert!(jaas_plain_users("PlainLoginModule required user_x=unquoted;").is_err());
        assert!(jaas_plain_users("PlainLoginModule required user_x=\"open;").is_err());
    }

    #[test]
    fn plain_accepts_the_password_and_nothing_else() {
        let users = BTreeMap::from([("alice".to_string(), "pw".to_string())]);
        assert!(
            matches!(plain(b"\0alice\0pw", &users), Step::Done { user, .. } if user == "alice")
        );
        assert!(matches!(
            plain(b"alice\0alice\0pw", &users),
            Step::Done { .. }
        ));
        for bad in [
            &b"\0alice\0pW"[..],
            b"\0alice\0pw\0",
            b"\0bob\0pw",
            b"bob\0alice\0pw",
            b"\0\0pw",
            b"alice",
            b"",
            b"\0\xff\0pw",
        ] {
            assert!(matches!(plain(bad, &users), Step::Failed(_)), "{bad:?}");
        }
    }
}
