//! Replication between brokers. Followers fetching from their leader come
//! with the replication issue; until then every partition has exactly one
//! replica, its leader, which is therefore its whole ISR.

use coordinator::CoordinatorError;

use crate::state::TopicError;

/// The most replicas a partition may have while followers do not fetch.
pub const REPLICATION_FACTOR_MAX: i16 = 1;

/// Refuses replicas that would not receive data: a follower that never
/// fetches would be elected with an empty log after a failover.
pub fn check_replication_factor(replication_factor: i16) -> Result<(), TopicError> {
    if replication_factor > REPLICATION_FACTOR_MAX {
        return Err(TopicError::Metadata(
            CoordinatorError::InvalidReplicationFactor(format!(
                "Replication factor {replication_factor} is not supported yet: partitions are not replicated between brokers in this version; use 1"
            )),
        ));
    }
    Ok(())
}
