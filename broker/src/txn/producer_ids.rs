//! Producer ids, unique across the cluster: each broker takes blocks of
//! [`BLOCK_SIZE`] ids from the metadata store (a compare-and-swap on etcd,
//! or the standalone metadata file) and hands them out one by one. A block
//! is durable in the store before its first id is given, so no id is given
//! twice, even across restarts; the rest of a block dies with the broker.

use std::ops::Range;
use std::sync::Arc;

use coordinator::{CoordinatorError, MetadataStore};

/// Ids per block, as Kafka's `ProducerIdManager`.
pub(crate) const BLOCK_SIZE: i64 = 1000;

pub struct ProducerIds {
    store: Arc<dyn MetadataStore>,
    /// The ids of the current block not handed out yet. Held across the
    /// store round trip, so that one block is fetched at a time.
    block: tokio::sync::Mutex<Range<i64>>,
}

impl ProducerIds {
    pub fn new(store: Arc<dyn MetadataStore>) -> ProducerIds {
        ProducerIds {
            store,
            block: tokio::sync::Mutex::new(0..0),
        }
    }

    /// A producer id no one was given before.
    pub async fn next(&self) -> Result<i64, CoordinatorError> {
        let mut block = self.block.lock().await;
        if block.is_empty() {
            let first = self.store.allocate_producer_ids(BLOCK_SIZE).await?;
            tracing::info!(
                first,
                count = BLOCK_SIZE,
                "allocated a block of producer ids"
            );
            *block = first..first + BLOCK_SIZE;
        }
        let id = block.start;
        block.start += 1;
        Ok(id)
    }
}
