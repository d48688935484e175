//! Idempotent and transactional producers, the broker's side: producer ids
//! (`producer_ids`), the transaction coordinator (`coordinator`) with its
//! `__transaction_state` records (`log`). The writing of transaction
//! markers to the partitions of a transaction needs the whole broker and
//! is `crate::broker::txn_markers`. The
//! per-partition producer state (sequences, epochs, open transactions, the
//! last stable offset) lives with each log, in `storage::producer`.

pub mod coordinator;
pub mod log;
pub mod producer_ids;

pub use coordinator::TransactionCoordinator;
pub use producer_ids::ProducerIds;
