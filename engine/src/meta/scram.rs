//! SCRAM credentials (RFC 5802, SCRAM-SHA-256 and SCRAM-SHA-512): what the
//! broker keeps to authenticate a user without keeping the password.
//!
//! For each user and mechanism: the salt, the iteration count, `StoredKey`
//! (H(HMAC(SaltedPassword, "Client Key"))) and `ServerKey`
//! (HMAC(SaltedPassword, "Server Key")). AlterUserScramCredentials sends the
//! salted password; the protocol layer derives the two keys, and only they are
//! stored. A cluster keeps the credentials in the metadata quorum (an
//! `AlterScramCredentials` record), as Kafka does; a single broker in
//! `<data-dir>/__brook/scram-credentials.json` (temp file, fsync, rename),
//! before the change is answered.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::EngineError;

/// A SCRAM mechanism, by Kafka's wire number (`ScramMechanism`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// Kafka's `ScramMechanism` type byte (1 and 2; 0 is UNKNOWN).
    pub fn from_wire(t: i8) -> Option<ScramMechanism> {
        match t {
            1 => Some(ScramMechanism::Sha256),
            2 => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    pub fn wire(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    /// The SASL mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<ScramMechanism> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Kafka's bounds on the iteration count (`ScramMechanism.minIterations`
    /// and the 16384 ceiling of `AlterUserScramCredentials`).
    pub const MIN_ITERATIONS: u32 = 4096;
    pub const MAX_ITERATIONS: u32 = 16384;
}

/// One user's credential for one mechanism.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

/// One change of AlterUserScramCredentials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScramChange {
    Upsert {
        user: String,
        mechanism: ScramMechanism,
        credential: ScramCredential,
    },
    Delete {
        user: String,
        mechanism: ScramMechanism,
    },
}

impl ScramChange {
    pub fn user(&self) -> &str {
        match self {
            ScramChange::Upsert { user, .. } | ScramChange::Delete { user, .. } => user,
        }
    }
}

/// Every user's SCRAM credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredentials {
    pub users: BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>,
}

impl ScramCredentials {
    pub fn get(&self, user: &str, mechanism: ScramMechanism) -> Option<&ScramCredential> {
        self.users.get(user)?.get(&mechanism)
    }

    /// `change`, checked: deleting a credential that does not exist is
    /// RESOURCE_NOT_FOUND, as in Kafka.
    pub fn check(&self, change: &ScramChange) -> Result<(), EngineError> {
        match change {
            ScramChange::Upsert { credential, .. } => {
                let n = credential.iterations;
                if !(ScramMechanism::MIN_ITERATIONS..=ScramMechanism::MAX_ITERATIONS).contains(&n) {
                    return Err(EngineError::UnacceptableCredential(format!(
                        "Iterations {n} must be between {} and {}",
                        ScramMechanism::MIN_ITERATIONS,
                        ScramMechanism::MAX_ITERATIONS
                    )));
                }
                if credential.salt.is_empty() {
                    return Err(EngineError::UnacceptableCredential("empty salt".into()));
                }
                Ok(())
            }
            ScramChange::Delete { user, mechanism } => match self.get(user, *mechanism) {
                Some(_) => Ok(()),
                None => Err(EngineError::ResourceNotFound(format!(
                    "Attempt to delete a user credential that does not exist: {user} {}",
                    mechanism.name()
                ))),
            },
        }
    }

    /// `self` with `changes` applied (each already checked).
    pub fn changed(&self, changes: &[ScramChange]) -> ScramCredentials {
        let mut next = self.clone();
        for c in changes {
            match c {
                ScramChange::Upsert {
                    user,
                    mechanism,
                    credential,
                } => {
                    (next.users.entry(user.clone()).or_default())
                        .insert(*mechanism, credential.clone());
                }
                ScramChange::Delete { user, mechanism } => {
                    if let Some(m) = next.users.get_mut(user) {
                        m.remove(mechanism);
                        if m.is_empty() {
                            next.users.remove(user);
                        }
                    }
                }
            }
        }
        next
    }

    fn path(data_dir: &Path) -> std::path::PathBuf {
        crate::meta::data_dir::scram_credentials_path(data_dir)
    }

    pub fn load(data_dir: &Path) -> Result<ScramCredentials, EngineError> {
        crate::meta::json_file::load(&Self::path(data_dir))
    }

    pub fn store(&self, data_dir: &Path) -> Result<(), EngineError> {
        crate::meta::json_file::store(&Self::path(data_dir), self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(iterations: u32) -> ScramCredential {
        ScramCredential {
            salt: vec![1, 2, 3],
            iterations,
            stored_key: vec![4; 32],
            server_key: vec![5; 32],
        }
    }

    #[test]
    fn upsert_delete_and_refusals() {
        let empty = ScramCredentials::default();
        let up = |user: &str, m, n| ScramChange::Upsert {
            user: user.into(),
            mechanism: m,
            credential: cred(n),
        };
        assert!(matches!(
            empty.check(&up("a", ScramMechanism::Sha256, 1000)),
            Err(EngineError::UnacceptableCredential(_))
        ));
        let del = ScramChange::Delete {
            user: "a".into(),
            mechanism: ScramMechanism::Sha512,
        };
        assert!(matches!(
            empty.check(&del),
            Err(EngineError::ResourceNotFound(_))
        ));
        let one = empty.changed(&[
            up("a", ScramMechanism::Sha256, 4096),
            up("a", ScramMechanism::Sha512, 8192),
        ]);
        assert_eq!(
            one.get("a", ScramMechanism::Sha512).unwrap().iterations,
            8192
        );
        one.check(&del).unwrap();
        let two = one.changed(std::slice::from_ref(&del));
        assert!(two.get("a", ScramMechanism::Sha512).is_none());
        assert!(two.get("a", ScramMechanism::Sha256).is_some());
        let gone = two.changed(&[ScramChange::Delete {
            user: "a".into(),
            mechanism: ScramMechanism::Sha256,
        }]);
        assert!(gone.users.is_empty());
    }

    #[test]
    fn stored_and_loaded() {
        let dir = std::env::temp_dir().join(format!("brook-scram-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("__brook")).unwrap();
        assert_eq!(
            ScramCredentials::load(&dir).unwrap(),
            ScramCredentials::default()
        );
        let c = ScramCredentials::default().changed(&[ScramChange::Upsert {
            user: "admin".into(),
            mechanism: ScramMechanism::Sha512,
            credential: cred(4096),
        }]);
        c.store(&dir).unwrap();
        assert_eq!(ScramCredentials::load(&dir).unwrap(), c);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
