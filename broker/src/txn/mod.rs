//! Idempotent and transactional producers, the broker's side: producer ids
//! (`producer_ids`), the transaction coordinator (`coordinator`) with its
//! `__transaction_state` records (`log`). The writing of transaction
//! markers to the partitions of a transaction needs the whole broker and
//! is `crate::broker::txn_markers`. The
//! per-partition producer state (sequences, epochs, open transactions, the
//! last stable offset) lives with each log, in `storage::producer`.

pub(crate) mod coordinator;
pub(crate) mod log;
pub(crate) mod producer_ids;

pub(crate) use coordinator::TransactionCoordinator;
pub(crate) use producer_ids::ProducerIds;
