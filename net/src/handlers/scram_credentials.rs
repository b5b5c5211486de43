//! DescribeUserScramCredentials and AlterUserScramCredentials
//! (`kafka-configs --entity-type users --alter --add-config
//! 'SCRAM-SHA-512=[password=…]'`): the client salts the password; the
//! broker keeps only `StoredKey` and `ServerKey` (`security::scram`), in
//! the quorum or the single broker's file (`Shard::alter_scram_credentials`).

use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;

use brook_engine::meta::acls::Operation;
use brook_engine::meta::scram::{ScramChange, ScramMechanism};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::errors;
use crate::security::scram;
use crate::server::ShardServer;

fn text(s: impl Into<String>) -> Option<StrBytes> {
    Some(StrBytes::from_string(s.into()))
}

pub async fn describe(
    srv: Rc<ShardServer>,
    req: DescribeUserScramCredentialsRequest,
    client: super::ClientInfo,
) -> DescribeUserScramCredentialsResponse {
    if !srv.allowed_on_cluster(&client, Operation::Describe) {
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    let creds = srv.shard.catalog().scram.clone();
    let infos = |user: &str| -> Vec<CredentialInfo> {
        (creds.users.get(user).into_iter().flatten())
            .map(|(m, c)| {
                CredentialInfo::default()
                    .with_mechanism(m.wire())
                    .with_iterations(c.iterations as i32)
            })
            .collect()
    };
    let results = match req.users {
        None => (creds.users.keys())
            .map(|u| {
                DescribeUserScramCredentialsResult::default()
                    .with_user(StrBytes::from_string(u.clone()))
                    .with_credential_infos(infos(u))
            })
            .collect(),
        Some(users) => {
            let mut count: BTreeMap<&str, usize> = BTreeMap::new();
            for u in &users {
                *count.entry(u.name.as_str()).or_default() += 1;
            }
            let mut seen = HashSet::new();
            (users.iter())
                .filter(|u| seen.insert(u.name.as_str()))
                .map(|u| {
                    let name = u.name.as_str();
                    let r = DescribeUserScramCredentialsResult::default().with_user(u.name.clone());
                    if count[name] > 1 {
                        r.with_error_code(ResponseError::DuplicateResource.code())
                            .with_error_message(text(format!("Cannot describe SCRAM credentials for the same user twice in a single request: {name}")))
                    } else if !creds.users.contains_key(name) {
                        r.with_error_code(ResponseError::ResourceNotFound.code())
                            .with_error_message(text(format!("Attempt to describe a user credential that does not exist: {name}")))
                    } else {
                        r.with_credential_infos(infos(name))
                    }
                })
                .collect()
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

pub async fn alter(
    srv: Rc<ShardServer>,
    req: AlterUserScramCredentialsRequest,
    client: super::ClientInfo,
) -> AlterUserScramCredentialsResponse {
    let allowed = srv.allowed_on_cluster(&client, Operation::Alter);
    // Every user named, in request order, with the first error for it.
    let mut order: Vec<String> = Vec::new();
    let mut failed: BTreeMap<String, (i16, String)> = BTreeMap::new();
    let mut pairs: BTreeMap<(String, i8), usize> = BTreeMap::new();
    let names = (req.deletions.iter().map(|d| (&d.name, d.mechanism)))
        .chain(req.upsertions.iter().map(|u| (&u.name, u.mechanism)));
    for (name, m) in names {
        if !order.contains(&name.to_string()) {
            order.push(name.to_string());
        }
        *pairs.entry((name.to_string(), m)).or_default() += 1;
    }
    if !allowed {
        for user in &order {
            fail(
                &mut failed,
                user,
                ResponseError::ClusterAuthorizationFailed.code(),
                String::new(),
            );
        }
    }
    for ((user, _), n) in &pairs {
        if *n > 1 {
            fail(
                &mut failed,
                user,
                ResponseError::DuplicateResource.code(),
                format!("A user credential cannot be altered twice in the same request: {user}"),
            );
        }
    }
    let mut changes = Vec::new();
    for d in &req.deletions {
        let user = d.name.to_string();
        match (user.is_empty(), ScramMechanism::from_wire(d.mechanism)) {
            (true, _) => fail(
                &mut failed,
                &user,
                ResponseError::UnacceptableCredential.code(),
                "Username must not be empty".into(),
            ),
            (_, None) => fail(
                &mut failed,
                &user,
                ResponseError::UnsupportedSaslMechanism.code(),
                "Unknown SCRAM mechanism".into(),
            ),
            (false, Some(mechanism)) => changes.push(ScramChange::Delete { user, mechanism }),
        }
    }
    for u in &req.upsertions {
        let user = u.name.to_string();
        match (user.is_empty(), ScramMechanism::from_wire(u.mechanism)) {
            (true, _) => fail(
                &mut failed,
                &user,
                ResponseError::UnacceptableCredential.code(),
                "Username must not be empty".into(),
            ),
            (_, None) => fail(
                &mut failed,
                &user,
                ResponseError::UnsupportedSaslMechanism.code(),
                "Unknown SCRAM mechanism".into(),
            ),
            (false, Some(_)) if u.iterations < 0 => fail(
                &mut failed,
                &user,
                ResponseError::UnacceptableCredential.code(),
                format!("Iterations {} must be between 4096 and 16384", u.iterations),
            ),
            (false, Some(_)) if u.salted_password.is_empty() => fail(
                &mut failed,
                &user,
                ResponseError::UnacceptableCredential.code(),
                "Salted password must not be empty".into(),
            ),
            (false, Some(mechanism)) => changes.push(ScramChange::Upsert {
                credential: scram::credential(
                    mechanism,
                    &u.salted_password,
                    &u.salt,
                    u.iterations as u32,
                ),
                user,
                mechanism,
            }),
        }
    }
    changes.retain(|c| !failed.contains_key(c.user()));
    let users: Vec<String> = changes.iter().map(|c| c.user().to_string()).collect();
    match srv.shard.alter_scram_credentials(changes).await {
        Ok(results) => {
            for (user, r) in users.iter().zip(results) {
                if let Err(e) = r {
                    fail(&mut failed, user, errors::code(&e), e.to_string());
                }
            }
        }
        Err(e) => {
            for user in &users {
                fail(&mut failed, user, errors::code(&e), e.to_string());
            }
        }
    }
    let results = (order.into_iter())
        .map(|user| {
            let r = AlterUserScramCredentialsResult::default()
                .with_user(StrBytes::from_string(user.clone()));
            match failed.get(&user) {
                Some((code, msg)) => r
                    .with_error_code(*code)
                    .with_error_message(text(msg.clone())),
                None => r,
            }
        })
        .collect();
    AlterUserScramCredentialsResponse::default().with_results(results)
}

/// Records the first error for `user`.
fn fail(failed: &mut BTreeMap<String, (i16, String)>, user: &str, code: i16, msg: String) {
    failed.entry(user.to_string()).or_insert((code, msg));
}
