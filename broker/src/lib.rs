//! The Kafka-compatible broker.
//!
//! Layout, lowest layer first (a module imports only its own layer or
//! lower ones, and a child reaches its parent only for shared types;
//! `scripts/module-graph.py broker/src` checks both):
//! - [`clock`], [`errors`] (the broker's error types and the one mapping to
//!   Kafka error codes), [`config`] (Kafka property names and defaults,
//!   properties file, overrides), [`topic_config`] (topic-level configs,
//!   validation, log configs), [`principal`], [`authorizer`] (ACLs: who may
//!   do what).
//! - [`partition`]: one partition as this broker sees it — its applied
//!   state, its log where hosted, [`partition::Partition::lead`], the
//!   leader's side of replication; [`topics`]: topics and their name rules;
//!   [`internal_topics`]: what `__consumer_offsets` and `__transaction_state`
//!   share.
//! - [`data_dir`]: the data directory's lock, identity and layout;
//!   [`peers`]: requests to other brokers.
//! - [`group`]: the group coordinator and committed offsets; [`txn`]:
//!   producer ids and the transaction coordinator; [`replica_fetcher`]: the
//!   follower's side of replication.
//! - [`broker`]: the root aggregate ([`broker::Broker`]) with the loops over
//!   all of it: applying cluster metadata (`cluster_view`), the ISR and
//!   checkpoint loops (`replication`), transaction markers (`txn_markers`).
//! - [`handlers`]: one module per Kafka API (or family); `handlers::handle`
//!   dispatches.
//! - [`connection`]: framing, in-order handling, response queue per client.
//! - [`server`]: listeners, connection limit, periodic tasks, shutdown;
//!   [`format`]: `kbroker format --add-scram` (credentials before the
//!   first start).
//! - `main.rs` (binary `kbroker`): command line → [`config::BrokerConfig`]
//!   → [`server::run`]; `kbroker admin ...` is one call into the `admin`
//!   crate.

pub(crate) mod authorizer;
pub mod broker;
pub(crate) mod clock;
pub mod config;
pub(crate) mod connection;
pub(crate) mod data_dir;
pub(crate) mod errors;
pub(crate) mod exporter;
pub mod format;
pub mod group;
pub(crate) mod handlers;
pub mod internal_topics;
pub(crate) mod metrics;
pub(crate) mod partition;
pub(crate) mod peers;
pub(crate) mod principal;
pub(crate) mod replica_fetcher;
pub(crate) mod sasl;
pub mod server;
pub(crate) mod tls;
pub(crate) mod topic_config;
pub(crate) mod topics;
pub(crate) mod txn;
