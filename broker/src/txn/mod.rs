//! Idempotent and transactional producers, the broker's side: producer ids
//! (`producer_ids`). The per-partition producer state (sequences, epochs,
//! open transactions) lives with each log, in `storage::producer`.

pub mod producer_ids;

pub use producer_ids::ProducerIds;
