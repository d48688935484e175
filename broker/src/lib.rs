//! The Kafka-compatible broker.
//!
//! Layout:
//! - `main.rs` (binary `kbroker`): command line → [`config::BrokerConfig`] → [`server::run`].
//! - [`admin`]: `kbroker admin`, the admin tool (a Kafka client of its own).
//! - [`config`]: Kafka property names and defaults, properties file, overrides.
//! - [`server`]: listeners, connection limit, periodic log tasks, shutdown.
//! - [`connection`]: framing, in-order handling, response queue per client.
//! - [`handlers`]: one module per Kafka API; `handlers::handle` dispatches.
//! - [`state`]: topics, partitions, this broker's replicas and their logs;
//!   topic administration through the metadata store.
//! - [`cluster_view`]: applies each cluster metadata snapshot to the
//!   partitions (replicas opened and removed, leadership, configs).
//! - [`data_dir`]: the data directory's lock, identity and layout.
//! - [`replication`]: the leader's side of replication (follower progress,
//!   high watermark, ISR changes, acks=all); [`replica_fetcher`]: the
//!   follower's (fetching from leaders, truncating by leader epoch).
//! - [`group`]: the group coordinator and committed offsets (`__consumer_offsets`).
//! - [`topic_config`]: topic-level configs, validation, log configs.
//! - [`errors`]: the one mapping from internal errors to Kafka error codes.

pub mod admin;
pub mod clock;
pub mod cluster_view;
pub mod config;
pub mod connection;
pub mod data_dir;
pub mod errors;
pub mod group;
pub mod handlers;
pub mod peers;
pub mod replica_fetcher;
pub mod replication;
pub mod server;
pub mod state;
pub mod topic_config;
pub mod txn;
