//! The SASL tokens a client sends before it is authenticated: PLAIN's
//! `authzid NUL user NUL password`, SCRAM's client-first and client-final,
//! and the JAAS line a PLAIN listener's users are read from.
//!
//! Invariants: nothing panics; PLAIN authenticates only the one user and
//! password it knows; a SCRAM exchange driven by arbitrary client-first and
//! client-final messages never authenticates (the fuzzer cannot forge a
//! proof), and a parsed client-first's user, nonce and bare message are
//! consistent with its bytes.
//!
//! Input: a selector byte, then the token(s) (two tokens are split at the
//! first 0xff byte).
#![no_main]

use std::collections::BTreeMap;

use brook_engine::meta::scram::{ScramCredential, ScramMechanism};
use brook_net::security::sasl::{self, Step};
use brook_net::security::scram::{self, ScramServer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match sel % 4 {
        0 => {
            let users = BTreeMap::from([("alice".to_string(), "pw".to_string())]);
            if let Step::Done { user, .. } = sasl::plain(rest, &users) {
                assert_eq!(user, "alice");
                assert!(rest.ends_with(b"\0alice\0pw"), "PLAIN accepted {rest:?}");
            }
        }
        1 => {
            if let Ok(first) = scram::parse_client_first(rest) {
                let text = std::str::from_utf8(rest).expect("parsed as UTF-8");
                assert!(text.ends_with(&first.bare));
                assert!(text.starts_with(&first.gs2_header));
                assert!(!first.user.is_empty() && !first.nonce.is_empty());
            }
            let _ = scram::parse_client_final(rest);
        }
        2 => {
            let (a, b) = match rest.iter().position(|&x| x == 0xff) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            let m = if a.len() % 2 == 0 { ScramMechanism::Sha256 } else { ScramMechanism::Sha512 };
            let cred = ScramCredential {
                salt: b"salt".to_vec(),
                iterations: 4096,
                stored_key: vec![7; 32],
                server_key: vec![9; 32],
            };
            let mut s = ScramServer::new(m);
            let known = a.len() % 3 == 0;
            if s.client_first(a, |_| known.then(|| cred.clone()), b"secret", &[1; scram::NONCE_BYTES]).is_ok() {
                assert!(s.client_final(b).is_err(), "a forged SCRAM proof was accepted");
            }
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(rest) {
                let _ = sasl::jaas_plain_users(text);
            }
        }
    }
});
