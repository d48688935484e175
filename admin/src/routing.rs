//! Where the admin tool sends a request in a cluster: the brokers, found
//! through the bootstrap broker's Metadata, each connected on first use;
//! group requests to the group's coordinator, partition requests to the
//! partition's leader, elections to the controller. Also the cluster
//! commands (`cluster describe`, `leaders elect`).

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::{
    DescribeClusterRequest, ElectLeadersRequest, FindCoordinatorRequest, MetadataRequest,
    MetadataResponse, TopicName,
};
use serde_json::json;

use super::{error_name, string, table, Output, METADATA_VERSION, REQUEST_TIMEOUT_MS};
use client::Client;

/// FindCoordinator's key types.
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;
const FIND_COORDINATOR_VERSION: i16 = 3;
const DESCRIBE_CLUSTER_VERSION: i16 = 1;
const ELECT_LEADERS_VERSION: i16 = 2;
/// ElectLeaders answers NOT_CONTROLLER when the controller moved meanwhile.
const NOT_CONTROLLER: i16 = 41;
const ELECTION_ATTEMPTS: usize = 3;

pub(super) struct Brokers {
    bootstrap: Client,
    /// From the bootstrap broker's Metadata, once asked.
    metadata: Option<MetadataResponse>,
    open: BTreeMap<i32, Client>,
    /// How every connection is made (`--command-config`).
    security: client::Security,
}

impl Brokers {
    pub(crate) fn new(bootstrap: Client, security: client::Security) -> Brokers {
        Brokers {
            bootstrap,
            metadata: None,
            open: BTreeMap::new(),
            security,
        }
    }

    pub(crate) fn bootstrap(&mut self) -> &mut Client {
        &mut self.bootstrap
    }

    /// The cluster's brokers, topics and controller (asked once; `refresh` asks again).
    async fn metadata(&mut self, refresh: bool) -> anyhow::Result<&MetadataResponse> {
        if refresh || self.metadata.is_none() {
            let metadata = self
                .bootstrap
                .call(
                    MetadataRequest::default().with_topics(None),
                    METADATA_VERSION,
                )
                .await?;
            self.metadata = Some(metadata);
        }
        Ok(self.metadata.as_ref().expect("just set"))
    }

    pub(crate) async fn node_ids(&mut self) -> anyhow::Result<Vec<i32>> {
        Ok(self
            .metadata(false)
            .await?
            .brokers
            .iter()
            .map(|b| b.node_id.0)
            .collect())
    }

    /// A connection to broker `node_id`.
    pub(crate) async fn node(&mut self, node_id: i32) -> anyhow::Result<&mut Client> {
        if !self.open.contains_key(&node_id) {
            let metadata = self.metadata(false).await?;
            let broker = metadata
                .brokers
                .iter()
                .find(|b| b.node_id.0 == node_id)
                .with_context(|| format!("broker {node_id} is not alive in the cluster"))?;
            let address = format!("{}:{}", broker.host, broker.port);
            let client = Client::connect_with(&address, super::CLIENT_ID, &self.security).await?;
            self.open.insert(node_id, client);
        }
        Ok(self.open.get_mut(&node_id).expect("just opened"))
    }

    /// The partition indexes of `topic`.
    pub(crate) async fn partitions(&mut self, topic: &str) -> anyhow::Result<Vec<i32>> {
        let metadata = self.metadata(false).await?;
        let found = metadata
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
            .with_context(|| format!("no topic {topic}"))?;
        let mut indexes: Vec<i32> = found.partitions.iter().map(|p| p.partition_index).collect();
        indexes.sort_unstable();
        Ok(indexes)
    }

    /// The leader of `topic`-`partition`, if it has one.
    pub(crate) async fn leader_id(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> anyhow::Result<Option<i32>> {
        let metadata = self.metadata(false).await?;
        Ok(metadata
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
            .and_then(|t| t.partitions.iter().find(|p| p.partition_index == partition))
            .map(|p| p.leader_id.0)
            .filter(|leader| *leader >= 0))
    }

    pub(crate) async fn leader(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> anyhow::Result<&mut Client> {
        let leader = self
            .leader_id(topic, partition)
            .await?
            .with_context(|| format!("{topic}-{partition} has no leader (or does not exist)"))?;
        self.node(leader).await
    }

    /// The coordinator of `group`.
    pub(crate) async fn coordinator(&mut self, group: &str) -> anyhow::Result<&mut Client> {
        self.coordinator_of(group, KEY_TYPE_GROUP).await
    }

    /// The transaction coordinator of `transactional_id`.
    pub(crate) async fn transaction_coordinator(
        &mut self,
        transactional_id: &str,
    ) -> anyhow::Result<&mut Client> {
        self.coordinator_of(transactional_id, KEY_TYPE_TRANSACTION)
            .await
    }

    async fn coordinator_of(&mut self, key: &str, key_type: i8) -> anyhow::Result<&mut Client> {
        let answer = self
            .bootstrap
            .call(
                FindCoordinatorRequest::default()
                    .with_key(string(key))
                    .with_key_type(key_type),
                FIND_COORDINATOR_VERSION,
            )
            .await?;
        if answer.error_code != 0 {
            bail!(
                "no coordinator for {key}: {}",
                error_name(answer.error_code)
            );
        }
        self.node(answer.node_id.0).await
    }

    async fn controller(&mut self, refresh: bool) -> anyhow::Result<&mut Client> {
        let controller = self.metadata(refresh).await?.controller_id.0;
        if controller < 0 {
            bail!("the cluster has no controller now");
        }
        self.node(controller).await
    }
}

pub(super) async fn describe_cluster(client: &mut Client) -> anyhow::Result<Output> {
    let answer = client
        .call(
            DescribeClusterRequest::default().with_endpoint_type(1),
            DESCRIBE_CLUSTER_VERSION,
        )
        .await?;
    if answer.error_code != 0 {
        bail!("DescribeCluster failed: {}", error_name(answer.error_code));
    }
    let controller = answer.controller_id.0;
    let rows: Vec<Vec<String>> = answer
        .brokers
        .iter()
        .map(|b| {
            vec![
                b.broker_id.0.to_string(),
                format!("{}:{}", b.host, b.port),
                b.rack.as_deref().unwrap_or("-").to_string(),
                if b.broker_id.0 == controller {
                    "yes"
                } else {
                    ""
                }
                .to_string(),
            ]
        })
        .collect();
    let mut text = format!("CLUSTER {}  controller {controller}\n", answer.cluster_id);
    text.push_str(&table(&["BROKER", "ADDRESS", "RACK", "CONTROLLER"], &rows));
    Ok(Output {
        text,
        json: json!({
            "cluster_id": answer.cluster_id.to_string(),
            "controller": controller,
            "brokers": answer.brokers.iter().map(|b| json!({
                "id": b.broker_id.0,
                "host": b.host.to_string(),
                "port": b.port,
                "rack": b.rack.as_deref(),
            })).collect::<Vec<_>>(),
        }),
        failed: false,
    })
}

/// ElectLeaders at the controller (found again if it moved meanwhile).
pub(super) async fn elect_leaders(
    brokers: &mut Brokers,
    election_type: i8,
    topic: Option<String>,
    partitions: Vec<i32>,
) -> anyhow::Result<Output> {
    let wanted = match &topic {
        None => None,
        Some(topic) => {
            let partitions = if partitions.is_empty() {
                let metadata = brokers.metadata(false).await?;
                let found = metadata
                    .topics
                    .iter()
                    .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
                    .with_context(|| format!("no topic {topic}"))?;
                found.partitions.iter().map(|p| p.partition_index).collect()
            } else {
                partitions
            };
            Some(vec![TopicPartitions::default()
                .with_topic(TopicName(string(topic)))
                .with_partitions(partitions)])
        }
    };
    let request = ElectLeadersRequest::default()
        .with_election_type(election_type)
        .with_topic_partitions(wanted)
        .with_timeout_ms(REQUEST_TIMEOUT_MS);
    let mut answer = None;
    for attempt in 0..ELECTION_ATTEMPTS {
        let controller = brokers.controller(attempt > 0).await?;
        let response = controller
            .call(request.clone(), ELECT_LEADERS_VERSION)
            .await?;
        if response.error_code != NOT_CONTROLLER {
            answer = Some(response);
            break;
        }
    }
    let answer = answer.context("the controller kept moving")?;
    if answer.error_code != 0 {
        bail!("ElectLeaders failed: {}", error_name(answer.error_code));
    }
    let mut rows = Vec::new();
    let mut results = Vec::new();
    let mut failed = false;
    for topic in &answer.replica_election_results {
        for partition in &topic.partition_result {
            // A partition already led by its preferred replica is no failure.
            failed |= partition.error_code != 0 && partition.error_code != 84;
            rows.push(vec![
                topic.topic.0.to_string(),
                partition.partition_id.to_string(),
                error_name(partition.error_code),
            ]);
            results.push(json!({
                "topic": topic.topic.0.to_string(),
                "partition": partition.partition_id,
                "error": error_name(partition.error_code),
                "message": partition.error_message.as_deref(),
            }));
        }
    }
    Ok(Output {
        text: if rows.is_empty() {
            "no election was needed\n".to_string()
        } else {
            table(&["TOPIC", "PARTITION", "RESULT"], &rows)
        },
        json: json!(results),
        failed,
    })
}
