//! What cluster metadata holds for security: SCRAM credentials (never a
//! password) and ACLs. Pure data; the broker's `sasl` and `authorizer`
//! give it meaning.

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// One user's SCRAM credential for one mechanism (RFC 5802): what verifies
/// a client's proof, as Kafka keeps it. Its `Debug` shows no key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    #[serde(with = "base64_bytes")]
    pub salt: Vec<u8>,
    pub iterations: i32,
    /// H(ClientKey).
    #[serde(with = "base64_bytes")]
    pub stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key").
    #[serde(with = "base64_bytes")]
    pub server_key: Vec<u8>,
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// AlterUserScramCredentials' change of one (user, mechanism): a new
/// credential, or `None` to delete it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramChange {
    pub user: String,
    /// Kafka's name: `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    pub credential: Option<ScramCredential>,
}

/// Applies `changes` to a credential map of
/// [`crate::ClusterMetadata::scram_credentials`].
pub fn apply_scram_changes(
    credentials: &mut BTreeMap<String, BTreeMap<String, ScramCredential>>,
    changes: Vec<ScramChange>,
) {
    for change in changes {
        match change.credential {
            Some(credential) => {
                credentials
                    .entry(change.user)
                    .or_default()
                    .insert(change.mechanism, credential);
            }
            None => {
                if let Some(mechanisms) = credentials.get_mut(&change.user) {
                    mechanisms.remove(&change.mechanism);
                    if mechanisms.is_empty() {
                        credentials.remove(&change.user);
                    }
                }
            }
        }
    }
}

/// One ACL, in Kafka's wire codes (stable across versions): who
/// (`principal`, from `host`) may or may not (`permission_type`) do
/// `operation` on the resources `resource_name` matches by `pattern_type`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    /// 2 TOPIC, 3 GROUP, 4 CLUSTER, 5 TRANSACTIONAL_ID, 6 DELEGATION_TOKEN, 7 USER.
    pub resource_type: i8,
    pub resource_name: String,
    /// 3 LITERAL, 4 PREFIXED.
    pub pattern_type: i8,
    /// `User:<name>` or `User:*`.
    pub principal: String,
    /// `*` or an address.
    pub host: String,
    /// 2 ALL, 3 READ, 4 WRITE, ... (Kafka's AclOperation codes).
    pub operation: i8,
    /// 2 DENY, 3 ALLOW.
    pub permission_type: i8,
}

/// Bytes as base64 text in JSON (etcd values and the standalone metadata
/// file stay readable).
mod base64_bytes {
    use super::{Engine, STANDARD};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_round_trips_through_json_and_debug_shows_no_key() {
        let credential = ScramCredential {
            salt: b"salt".to_vec(),
            iterations: 4096,
            stored_key: vec![1; 32],
            server_key: vec![2; 32],
        };
        let json = serde_json::to_string(&credential).unwrap();
        assert!(json.contains("\"salt\":\"c2FsdA==\""), "{json}");
        assert_eq!(
            serde_json::from_str::<ScramCredential>(&json).unwrap(),
            credential
        );
        assert_eq!(
            format!("{credential:?}"),
            "ScramCredential { iterations: 4096, .. }"
        );
    }
}
