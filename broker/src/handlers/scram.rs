//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554):
//! SCRAM credentials in the cluster metadata, where every broker's SASL
//! listeners find them. The client sends SaltedPassword, never the
//! password; the store keeps StoredKey and ServerKey, never either.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, ApiKey,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;

use coordinator::ScramChange;

use super::{cluster_allows, RequestContext};
use crate::authorizer::Operation;
use crate::broker::Broker;
use crate::config::Mechanism;
use crate::errors::{code, coordinator_error};
use crate::sasl::scram::{Hashes, ITERATIONS_MAX, ITERATIONS_MIN};

/// Kafka's ScramMechanism codes.
fn mechanism_of(code: i8) -> Option<Mechanism> {
    match code {
        1 => Some(Mechanism::ScramSha256),
        2 => Some(Mechanism::ScramSha512),
        _ => None,
    }
}

fn mechanism_code(name: &str) -> i8 {
    match Mechanism::from_name(name) {
        Some(Mechanism::ScramSha256) => 1,
        Some(Mechanism::ScramSha512) => 2,
        _ => 0,
    }
}

pub(super) fn describe(
    broker: &Broker,
    request: &DescribeUserScramCredentialsRequest,
    origin: RequestContext<'_>,
) -> DescribeUserScramCredentialsResponse {
    if !cluster_allows(
        broker,
        origin,
        ApiKey::DescribeUserScramCredentials,
        Operation::Describe,
    ) {
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(code(ResponseError::ClusterAuthorizationFailed))
            .with_error_message(Some(StrBytes::from_static_str(
                "Cluster authorization failed.",
            )));
    }
    let metadata = broker.store.snapshot();
    let credentials = &metadata.scram_credentials;
    let info = |user: &str| -> Vec<CredentialInfo> {
        credentials.get(user).map_or_else(Vec::new, |mechanisms| {
            mechanisms
                .iter()
                .map(|(mechanism, credential)| {
                    CredentialInfo::default()
                        .with_mechanism(mechanism_code(mechanism))
                        .with_iterations(credential.iterations)
                })
                .collect()
        })
    };
    let results = match request.users.as_deref() {
        None | Some([]) => credentials
            .keys()
            .map(|user| {
                DescribeUserScramCredentialsResult::default()
                    .with_user(StrBytes::from_string(user.clone()))
                    .with_credential_infos(info(user))
            })
            .collect(),
        Some(users) => {
            let mut seen = BTreeMap::new();
            for user in users {
                *seen.entry(user.name.as_str()).or_insert(0) += 1;
            }
            seen.into_iter()
                .map(|(user, count)| {
                    let result = DescribeUserScramCredentialsResult::default()
                        .with_user(StrBytes::from_string(user.to_string()));
                    let error = if count > 1 {
                        Some((ResponseError::DuplicateResource, format!("Cannot describe SCRAM credentials for the same user twice in a single request: {user}")))
                    } else if !credentials.contains_key(user) {
                        Some((ResponseError::ResourceNotFound, format!("Attempt to describe a user credential that does not exist: {user}")))
                    } else {
                        None
                    };
                    match error {
                        Some((error, message)) => result
                            .with_error_code(code(error))
                            .with_error_message(Some(StrBytes::from_string(message))),
                        None => result.with_credential_infos(info(user)),
                    }
                })
                .collect()
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

pub(super) async fn alter(
    broker: &Broker,
    request: AlterUserScramCredentialsRequest,
    origin: RequestContext<'_>,
) -> AlterUserScramCredentialsResponse {
    if !cluster_allows(
        broker,
        origin,
        ApiKey::AlterUserScramCredentials,
        Operation::Alter,
    ) {
        let users: BTreeSet<&str> = request
            .deletions
            .iter()
            .map(|d| d.name.as_str())
            .chain(request.upsertions.iter().map(|u| u.name.as_str()))
            .collect();
        let results = users
            .into_iter()
            .map(|user| {
                AlterUserScramCredentialsResult::default()
                    .with_user(StrBytes::from_string(user.to_string()))
                    .with_error_code(code(ResponseError::ClusterAuthorizationFailed))
            })
            .collect();
        return AlterUserScramCredentialsResponse::default().with_results(results);
    }
    let metadata = broker.store.snapshot();
    // Every (user, mechanism) altered, to find those altered twice.
    let mut pairs: BTreeMap<(&str, i8), usize> = BTreeMap::new();
    for (name, mechanism) in request
        .deletions
        .iter()
        .map(|d| (&d.name, d.mechanism))
        .chain(request.upsertions.iter().map(|u| (&u.name, u.mechanism)))
    {
        *pairs.entry((name.as_str(), mechanism)).or_default() += 1;
    }
    // The first error of each user fails all its alterations.
    let mut errors: BTreeMap<String, (ResponseError, String)> = BTreeMap::new();
    let mut fail = |user: &str, error: ResponseError, message: &str| {
        errors
            .entry(user.to_string())
            .or_insert_with(|| (error, message.to_string()));
    };
    let mut users = BTreeSet::new();
    let mut changes = Vec::new();
    for deletion in &request.deletions {
        let user = deletion.name.as_str();
        users.insert(user.to_string());
        if let Some(message) = common_error(user, deletion.mechanism, &pairs) {
            fail(user, message.0, message.1);
            continue;
        }
        let Some(mechanism) = mechanism_of(deletion.mechanism) else {
            fail(
                user,
                ResponseError::UnsupportedSaslMechanism,
                "Unknown SCRAM mechanism",
            );
            continue;
        };
        let exists = metadata
            .scram_credentials
            .get(user)
            .is_some_and(|m| m.contains_key(mechanism.name()));
        if !exists {
            fail(
                user,
                ResponseError::ResourceNotFound,
                "Attempt to delete a user credential that does not exist",
            );
            continue;
        }
        changes.push(ScramChange {
            user: user.to_string(),
            mechanism: mechanism.name().to_string(),
            credential: None,
        });
    }
    for upsertion in &request.upsertions {
        let user = upsertion.name.as_str();
        users.insert(user.to_string());
        if let Some(message) = common_error(user, upsertion.mechanism, &pairs) {
            fail(user, message.0, message.1);
            continue;
        }
        let Some(mechanism) = mechanism_of(upsertion.mechanism) else {
            fail(
                user,
                ResponseError::UnsupportedSaslMechanism,
                "Unknown SCRAM mechanism",
            );
            continue;
        };
        let iterations = upsertion.iterations;
        let refusal = if iterations < ITERATIONS_MIN {
            Some("Too few iterations")
        } else if iterations > ITERATIONS_MAX {
            Some("Too many iterations")
        } else if upsertion.salt.is_empty() || upsertion.salted_password.is_empty() {
            Some("Salt and salted password must not be empty")
        } else {
            None
        };
        if let Some(message) = refusal {
            fail(user, ResponseError::UnacceptableCredential, message);
            continue;
        }
        let hashes = Hashes::of(mechanism).expect("a SCRAM mechanism");
        changes.push(ScramChange {
            user: user.to_string(),
            mechanism: mechanism.name().to_string(),
            credential: Some(hashes.credential(
                upsertion.salt.to_vec(),
                iterations,
                &upsertion.salted_password,
            )),
        });
    }
    changes.retain(|change| !errors.contains_key(&change.user));
    let applied = if changes.is_empty() {
        Ok(())
    } else {
        broker.store.alter_scram_credentials(changes).await
    };
    let results = users
        .into_iter()
        .map(|user| {
            let result = AlterUserScramCredentialsResult::default()
                .with_user(StrBytes::from_string(user.clone()));
            let error = match (errors.get(&user), &applied) {
                (Some((error, message)), _) => Some((code(*error), message.clone())),
                (None, Err(error)) => Some((code(coordinator_error(error)), error.to_string())),
                (None, Ok(())) => None,
            };
            match error {
                Some((error_code, message)) => result
                    .with_error_code(error_code)
                    .with_error_message(Some(StrBytes::from_string(message))),
                None => result,
            }
        })
        .collect();
    AlterUserScramCredentialsResponse::default().with_results(results)
}

/// What refuses an alteration whatever it is.
fn common_error(
    user: &str,
    mechanism: i8,
    pairs: &BTreeMap<(&str, i8), usize>,
) -> Option<(ResponseError, &'static str)> {
    if user.is_empty() {
        return Some((
            ResponseError::UnacceptableCredential,
            "Username must not be empty",
        ));
    }
    if pairs.get(&(user, mechanism)).copied().unwrap_or(0) > 1 {
        return Some((
            ResponseError::DuplicateResource,
            "A user credential cannot be altered twice in the same request",
        ));
    }
    None
}
