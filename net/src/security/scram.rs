//! The server side of SCRAM (RFC 5802; SCRAM-SHA-256 and -512, RFC 7677), as
//! Kafka speaks it inside SaslAuthenticate.
//!
//! Two client messages: client-first (`n,,n=user,r=nonce`) answered with
//! server-first (`r=nonce+ours,s=salt,i=iterations`), then client-final
//! (`c=biws,r=nonce,p=proof`) answered with server-final (`v=signature`). The
//! proof is checked against the stored `StoredKey`; the password never reaches
//! the broker. A user without a credential gets a server-first made up from
//! a salt derived from its name, and fails at the proof like a wrong
//! password, so the answer does not say which part was wrong.
//!
//! The parsers take untrusted bytes and are fuzzed (`net/fuzz`, `sasl`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use brook_engine::meta::scram::{ScramCredential, ScramMechanism};
use ring::{digest, hmac, pbkdf2};

/// Why an exchange failed. The text goes to the broker's log, never to the
/// client (which gets one message for every failure).
#[derive(Debug, PartialEq, Eq)]
pub struct ScramError(pub String);

fn err<T>(why: impl Into<String>) -> Result<T, ScramError> {
    Err(ScramError(why.into()))
}

fn algorithms(m: ScramMechanism) -> (hmac::Algorithm, &'static digest::Algorithm) {
    match m {
        ScramMechanism::Sha256 => (hmac::HMAC_SHA256, &digest::SHA256),
        ScramMechanism::Sha512 => (hmac::HMAC_SHA512, &digest::SHA512),
    }
}

fn hmac(m: ScramMechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    let k = hmac::Key::new(algorithms(m).0, key);
    hmac::sign(&k, data).as_ref().to_vec()
}

/// Hi(password, salt, i): PBKDF2 with the mechanism's HMAC.
pub fn salted_password(
    m: ScramMechanism,
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Vec<u8> {
    let alg = match m {
        ScramMechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
        ScramMechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
    };
    let mut out = vec![0u8; algorithms(m).1.output_len()];
    let n = std::num::NonZeroU32::new(iterations.max(1)).expect("at least 1");
    pbkdf2::derive(alg, n, salt, password, &mut out);
    out
}

/// What is stored for a salted password: `StoredKey` and `ServerKey`.
pub fn credential(
    m: ScramMechanism,
    salted: &[u8],
    salt: &[u8],
    iterations: u32,
) -> ScramCredential {
    let client_key = hmac(m, salted, b"Client Key");
    ScramCredential {
        salt: salt.to_vec(),
        iterations,
        stored_key: digest::digest(algorithms(m).1, &client_key)
            .as_ref()
            .to_vec(),
        server_key: hmac(m, salted, b"Server Key"),
    }
}

/// Equal in time that depends only on the lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `saslname` of RFC 5802: `=2C` is `,` and `=3D` is `=`; any other `=` is an error.
fn unescape_name(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return err("bad escape in user name"),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The client-first message, parsed.
#[derive(Debug, PartialEq, Eq)]
pub struct ClientFirst {
    /// The GS2 header (`n,,` or `n,a=user,`), echoed base64 in client-final.
    pub gs2_header: String,
    pub user: String,
    pub nonce: String,
    /// The message without its GS2 header: part of AuthMessage.
    pub bare: String,
}

pub fn parse_client_first(msg: &[u8]) -> Result<ClientFirst, ScramError> {
    let Ok(s) = std::str::from_utf8(msg) else {
        return err("client-first is not UTF-8");
    };
    // gs2-cbind-flag "," [authzid] "," then the bare message.
    let mut parts = s.splitn(3, ',');
    let (Some(flag), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next()) else {
        return err("client-first has no GS2 header");
    };
    match flag {
        "n" | "y" => {}
        f if f.starts_with("p=") => return err("channel binding is not supported"),
        _ => return err("bad GS2 channel-binding flag"),
    }
    let authzid = match authzid {
        "" => None,
        a => match a.strip_prefix("a=") {
            Some(a) => Some(unescape_name(a)?),
            None => return err("bad GS2 authzid"),
        },
    };
    let mut attrs = bare.split(',');
    if bare.starts_with("m=") {
        return err("mandatory extensions are not supported");
    }
    let user = match attrs.next().and_then(|a| a.strip_prefix("n=")) {
        Some(u) => unescape_name(u)?,
        None => return err("client-first has no user name"),
    };
    let nonce = match attrs.next().and_then(|a| a.strip_prefix("r=")) {
        Some(r) if !r.is_empty() && r.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',') => {
            r.to_string()
        }
        _ => return err("client-first has no valid nonce"),
    };
    // Kafka's extensions follow (`tokenauth=true` for delegation tokens,
    // which Brook does not issue).
    for ext in attrs {
        let Some((k, v)) = ext.split_once('=') else {
            return err("malformed extension");
        };
        if k == "tokenauth" && v.eq_ignore_ascii_case("true") {
            return err("delegation tokens are not supported");
        }
    }
    if user.is_empty() {
        return err("empty user name");
    }
    if authzid.as_ref().is_some_and(|a| *a != user) {
        return err("authorization id differs from the user name");
    }
    Ok(ClientFirst {
        gs2_header: format!("{flag},{authzid},", authzid = parts_authzid(s)),
        user,
        nonce,
        bare: bare.to_string(),
    })
}

/// The raw authzid field of a client-first whose header was already checked.
fn parts_authzid(s: &str) -> &str {
    s.split(',').nth(1).unwrap_or("")
}

/// The client-final message, parsed.
#[derive(Debug, PartialEq, Eq)]
pub struct ClientFinal {
    pub channel_binding: Vec<u8>,
    pub nonce: String,
    pub proof: Vec<u8>,
    /// Everything before `,p=`: part of AuthMessage.
    pub without_proof: String,
}

pub fn parse_client_final(msg: &[u8]) -> Result<ClientFinal, ScramError> {
    let Ok(s) = std::str::from_utf8(msg) else {
        return err("client-final is not UTF-8");
    };
    let Some(at) = s.rfind(",p=") else {
        return err("client-final has no proof");
    };
    let (without_proof, proof) = (&s[..at], &s[at + 3..]);
    let mut attrs = without_proof.split(',');
    let channel_binding = match attrs.next().and_then(|a| a.strip_prefix("c=")) {
        Some(c) => B64.decode(c).or(err("channel binding is not base64"))?,
        None => return err("client-final has no channel binding"),
    };
    let nonce = match attrs.next().and_then(|a| a.strip_prefix("r=")) {
        Some(r) => r.to_string(),
        None => return err("client-final has no nonce"),
    };
    Ok(ClientFinal {
        channel_binding,
        nonce,
        proof: B64.decode(proof).or(err("proof is not base64"))?,
        without_proof: without_proof.to_string(),
    })
}

/// Where an exchange stands.
enum State {
    First,
    Final(Box<Final>),
    Over,
}

/// What client-final is checked against.
struct Final {
    first: ClientFirst,
    server_first: String,
    nonce: String,
    credential: Option<ScramCredential>,
}

/// One SCRAM exchange on one connection.
pub struct ScramServer {
    mechanism: ScramMechanism,
    state: State,
}

/// Bytes of our part of the nonce, before base64.
pub const NONCE_BYTES: usize = 24;

impl ScramServer {
    pub fn new(mechanism: ScramMechanism) -> ScramServer {
        ScramServer {
            mechanism,
            state: State::First,
        }
    }

    pub fn mechanism(&self) -> ScramMechanism {
        self.mechanism
    }

    /// Whether client-first is the next message.
    pub fn awaits_first(&self) -> bool {
        matches!(self.state, State::First)
    }

    /// Answers client-first with server-first. `credential` is the user's
    /// stored credential, if it has one; `secret` (the broker's, random per
    /// start) makes up the salt of a user that has none.
    pub fn client_first(
        &mut self,
        msg: &[u8],
        credential: impl FnOnce(&str) -> Option<ScramCredential>,
        secret: &[u8],
        our_nonce: &[u8; NONCE_BYTES],
    ) -> Result<(String, Vec<u8>), ScramError> {
        if !matches!(self.state, State::First) {
            return err("client-first out of order");
        }
        self.state = State::Over;
        let first = parse_client_first(msg)?;
        let credential = credential(&first.user);
        let (salt, iterations) = match &credential {
            Some(c) => (c.salt.clone(), c.iterations),
            None => {
                let m = self.mechanism;
                (
                    hmac(m, secret, first.user.as_bytes()),
                    ScramMechanism::MIN_ITERATIONS,
                )
            }
        };
        let nonce = format!("{}{}", first.nonce, B64.encode(our_nonce));
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(&salt));
        let user = first.user.clone();
        let out = server_first.clone().into_bytes();
        self.state = State::Final(Box::new(Final {
            first,
            server_first,
            nonce,
            credential,
        }));
        Ok((user, out))
    }

    /// Checks client-final's proof and answers with server-final; `Ok`
    /// carries the authenticated user name.
    pub fn client_final(&mut self, msg: &[u8]) -> Result<(String, Vec<u8>), ScramError> {
        let State::Final(f) = std::mem::replace(&mut self.state, State::Over) else {
            return err("client-final out of order");
        };
        let Final {
            first,
            server_first,
            nonce,
            credential,
        } = *f;
        let last = parse_client_final(msg)?;
        if last.channel_binding != first.gs2_header.as_bytes() {
            return err("channel binding does not match the GS2 header");
        }
        if !same(last.nonce.as_bytes(), nonce.as_bytes()) {
            return err("nonce does not match");
        }
        let Some(cred) = credential else {
            return err("no credential for the user");
        };
        let auth_message = format!("{},{},{}", first.bare, server_first, last.without_proof);
        let Some(server_signature) = verify(self.mechanism, &cred, &auth_message, &last.proof)
        else {
            return err("proof does not match");
        };
        let out = format!("v={}", B64.encode(server_signature)).into_bytes();
        Ok((first.user, out))
    }
}

/// The server signature when `proof` proves knowledge of the password
/// behind `cred` for `auth_message`.
fn verify(
    m: ScramMechanism,
    cred: &ScramCredential,
    auth_message: &str,
    proof: &[u8],
) -> Option<Vec<u8>> {
    let signature = hmac(m, &cred.stored_key, auth_message.as_bytes());
    if proof.len() != signature.len() {
        return None;
    }
    let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
    let stored = digest::digest(algorithms(m).1, &client_key);
    same(stored.as_ref(), &cred.stored_key)
        .then(|| hmac(m, &cred.server_key, auth_message.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client side of RFC 5802, written from the RFC, to drive the server.
    fn client_final(
        m: ScramMechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> String {
        let attrs: std::collections::HashMap<_, _> =
            (server_first.split(',')).map(|a| a.split_at(2)).collect();
        let salt = B64.decode(attrs["s="]).unwrap();
        let i: u32 = attrs["i="].parse().unwrap();
        let salted = salted_password(m, password.as_bytes(), &salt, i);
        let client_key = hmac(m, &salted, b"Client Key");
        let stored = digest::digest(algorithms(m).1, &client_key);
        let without_proof = format!("c=biws,r={}", attrs["r="]);
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let sig = hmac(m, stored.as_ref(), auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    /// RFC 7677's SCRAM-SHA-256 example: user "user", password "pencil".
    #[test]
    fn rfc7677_known_answer() {
        let m = ScramMechanism::Sha256;
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let cred = credential(m, &salted_password(m, b"pencil", &salt, 4096), &salt, 4096);
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let auth = format!(
            "n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r={nonce}"
        );
        let proof = B64
            .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        let v = verify(m, &cred, &auth, &proof).expect("the RFC's proof");
        assert_eq!(
            B64.encode(v),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        let mut wrong = proof.clone();
        wrong[0] ^= 1;
        assert!(verify(m, &cred, &auth, &wrong).is_none());
    }

    #[test]
    fn both_mechanisms_accept_the_password_and_nothing_else() {
        for m in ScramMechanism::ALL {
            let salt = b"salt-of-alice";
            let cred = credential(m, &salted_password(m, b"s3cret", salt, 4096), salt, 4096);
            for (password, ok) in [("s3cret", true), ("s3cret ", false), ("", false)] {
                let mut s = ScramServer::new(m);
                let (_, sf) = (s.client_first(
                    b"n,,n=alice,r=abc",
                    |_| Some(cred.clone()),
                    b"k",
                    &[7; NONCE_BYTES],
                ))
                .unwrap();
                let cf = client_final(
                    m,
                    password,
                    "n=alice,r=abc",
                    std::str::from_utf8(&sf).unwrap(),
                );
                assert_eq!(
                    s.client_final(cf.as_bytes()).is_ok(),
                    ok,
                    "{m:?} {password:?}"
                );
            }
        }
    }

    #[test]
    fn an_unknown_user_looks_like_a_known_one_until_the_proof() {
        let m = ScramMechanism::Sha512;
        let mut s = ScramServer::new(m);
        let (_, sf) = s
            .client_first(b"n,,n=nobody,r=abc", |_| None, b"secret", &[1; NONCE_BYTES])
            .unwrap();
        let sf = String::from_utf8(sf).unwrap();
        assert!(sf.contains(",s=") && sf.ends_with(",i=4096"));
        // The same made-up salt every time, so it cannot be told from a stored one.
        let mut again = ScramServer::new(m);
        let (_, sf2) = again
            .client_first(b"n,,n=nobody,r=abc", |_| None, b"secret", &[1; NONCE_BYTES])
            .unwrap();
        assert_eq!(sf, String::from_utf8(sf2).unwrap());
        let cf = client_final(m, "anything", "n=nobody,r=abc", &sf);
        assert_eq!(
            s.client_final(cf.as_bytes()).unwrap_err().0,
            "no credential for the user"
        );
    }

    #[test]
    fn malformed_messages_are_errors() {
        for bad in [
            &b""[..],
            b"n",
            b"x,,n=a,r=b",
            b"p=tls-unique,,n=a,r=b",
            b"n,,r=b",
            b"n,,n=a",
            b"n,,n=a=,r=b",
            b"n,,n=,r=b",
            b"n,a=b,n=a,r=x",
            b"n,,n=a,r=b,tokenauth=true",
            b"n,,m=x,n=a,r=b",
            b"\xff\xfe",
        ] {
            assert!(
                parse_client_first(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            parse_client_first(b"n,,n=a=2Cb=3Dc,r=x").unwrap().user,
            "a,b=c"
        );
        assert_eq!(
            parse_client_first(b"n,a=u,n=u,r=x").unwrap().gs2_header,
            "n,a=u,"
        );
        for bad in [
            &b"c=biws,r=x"[..],
            b"c=!!,r=x,p=AA==",
            b"r=x,p=AA==",
            b"c=biws,p=AA==",
        ] {
            assert!(
                parse_client_final(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Out of order.
        let mut s = ScramServer::new(ScramMechanism::Sha256);
        assert!(s.client_final(b"c=biws,r=x,p=AA==").is_err());
    }
}
