//! Topics as this broker applied them, and Kafka's rules for their names.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use storage::LogConfig;
use uuid::Uuid;

use crate::errors::TopicError;
use crate::internal_topics::{OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC};
use crate::partition::Partition;
use crate::topic_config;

/// Kafka's limit on topic name length.
pub(crate) const TOPIC_NAME_BYTES_MAX: usize = 249;

pub struct Topic {
    pub name: Arc<str>,
    pub topic_id: Uuid,
    /// Every partition of the topic, by index (hosted here or not).
    pub partitions: Vec<Arc<Partition>>,
    pub configs: BTreeMap<String, String>,
}

impl Topic {
    /// Applies `configs` (the topic's overrides) over `defaults` to every
    /// open log of the topic.
    pub(crate) fn apply_log_config(
        &self,
        defaults: &LogConfig,
        configs: &BTreeMap<String, String>,
    ) {
        let log_config = topic_config::log_config(defaults, configs);
        for partition in &self.partitions {
            let _ = partition.with_log(|log| log.set_config(log_config.clone()));
        }
    }

    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        usize::try_from(index)
            .ok()
            .and_then(|index| self.partitions.get(index))
    }
}

#[derive(Default)]
pub(crate) struct Topics {
    pub by_name: BTreeMap<String, Arc<Topic>>,
    pub by_id: HashMap<Uuid, Arc<Topic>>,
}

/// Topics the broker keeps for itself: clients may read but not write or delete them.
pub(crate) fn is_internal(name: &str) -> bool {
    name == OFFSETS_TOPIC || name == TRANSACTION_STATE_TOPIC
}

/// Kafka's rules: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub(crate) fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    let invalid = |reason| Err(TopicError::InvalidName(name.to_string(), reason));
    if name.is_empty() {
        return invalid("the empty string is not allowed");
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are not allowed");
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return invalid("longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return invalid("contains a character other than ASCII alphanumerics, '.', '_' and '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafkas_rules() {
        assert!(validate_topic_name("orders.v1_A-2").is_ok());
        assert!(validate_topic_name(&"a".repeat(249)).is_ok());
        for bad in ["", ".", "..", "bad/name", "space name", "ümlaut"] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_topic_name(&"a".repeat(250)).is_err());
    }
}
