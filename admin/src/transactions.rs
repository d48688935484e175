//! `kbroker admin transactions list|describe` and `kbroker admin producers
//! describe`: the transaction coordinators' view (ListTransactions on every
//! broker, DescribeTransactions on each id's coordinator) and the partition
//! leaders' (DescribeProducers: the idempotent and transactional producers
//! each partition knows, with their open transaction).

use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeTransactionsRequest, ListTransactionsRequest, TransactionalId,
};
use serde_json::json;

use super::routing::Brokers;
use super::{error_name, string, table, topic_name, Output};

const LIST_TRANSACTIONS_VERSION: i16 = 0;
const DESCRIBE_TRANSACTIONS_VERSION: i16 = 0;
const DESCRIBE_PRODUCERS_VERSION: i16 = 0;

pub(super) async fn list(brokers: &mut Brokers) -> anyhow::Result<Output> {
    let mut listed = Vec::new();
    for node in brokers.node_ids().await? {
        let response = brokers
            .node(node)
            .await?
            .call(
                ListTransactionsRequest::default(),
                LIST_TRANSACTIONS_VERSION,
            )
            .await?;
        if response.error_code != 0 {
            anyhow::bail!(
                "ListTransactions at broker {node} failed: {}",
                error_name(response.error_code)
            );
        }
        listed.extend(response.transaction_states.into_iter().map(|state| {
            (
                state.transactional_id.0.to_string(),
                state.producer_id.0,
                state.transaction_state.to_string(),
                node,
            )
        }));
    }
    listed.sort();
    let rows: Vec<Vec<String>> = listed
        .iter()
        .map(|(id, producer, state, node)| {
            vec![
                id.clone(),
                producer.to_string(),
                state.clone(),
                node.to_string(),
            ]
        })
        .collect();
    Ok(Output {
        text: table(
            &["TRANSACTIONAL ID", "PRODUCER ID", "STATE", "COORDINATOR"],
            &rows,
        ),
        json: json!(listed
            .iter()
            .map(|(id, producer, state, node)| json!({
                "transactional_id": id, "producer_id": producer, "state": state, "coordinator": node
            }))
            .collect::<Vec<_>>()),
        failed: false,
    })
}

pub(super) async fn describe(brokers: &mut Brokers, ids: &[String]) -> anyhow::Result<Output> {
    let mut rows = Vec::new();
    let mut described = Vec::new();
    let mut failed = false;
    for id in ids {
        let response = brokers
            .transaction_coordinator(id)
            .await?
            .call(
                DescribeTransactionsRequest::default()
                    .with_transactional_ids(vec![TransactionalId(string(id))]),
                DESCRIBE_TRANSACTIONS_VERSION,
            )
            .await?;
        for state in response.transaction_states {
            failed |= state.error_code != 0;
            let partitions: Vec<String> = state
                .topics
                .iter()
                .flat_map(|topic| {
                    topic
                        .partitions
                        .iter()
                        .map(move |p| format!("{}-{p}", topic.topic.0))
                })
                .collect();
            rows.push(vec![
                state.transactional_id.0.to_string(),
                error_name(state.error_code),
                state.transaction_state.to_string(),
                state.producer_id.0.to_string(),
                state.producer_epoch.to_string(),
                state.transaction_timeout_ms.to_string(),
                state.transaction_start_time_ms.to_string(),
                partitions.join(","),
            ]);
            described.push(json!({
                "transactional_id": state.transactional_id.0.to_string(),
                "error": error_name(state.error_code),
                "state": state.transaction_state.to_string(),
                "producer_id": state.producer_id.0,
                "producer_epoch": state.producer_epoch,
                "timeout_ms": state.transaction_timeout_ms,
                "start_time_ms": state.transaction_start_time_ms,
                "partitions": partitions,
            }));
        }
    }
    Ok(Output {
        text: table(
            &[
                "TRANSACTIONAL ID",
                "ERROR",
                "STATE",
                "PRODUCER ID",
                "EPOCH",
                "TIMEOUT MS",
                "STARTED MS",
                "PARTITIONS",
            ],
            &rows,
        ),
        json: json!(described),
        failed,
    })
}

pub(super) async fn describe_producers(
    brokers: &mut Brokers,
    topic: &str,
    partitions: &[i32],
) -> anyhow::Result<Output> {
    let partitions = if partitions.is_empty() {
        brokers.partitions(topic).await?
    } else {
        partitions.to_vec()
    };
    let mut rows = Vec::new();
    let mut described = Vec::new();
    let mut failed = false;
    for partition in partitions {
        let response = brokers
            .leader(topic, partition)
            .await?
            .call(
                DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
                    .with_name(topic_name(topic))
                    .with_partition_indexes(vec![partition])]),
                DESCRIBE_PRODUCERS_VERSION,
            )
            .await?;
        for answer in response.topics.iter().flat_map(|t| &t.partitions) {
            if answer.error_code != 0 {
                failed = true;
                rows.push(vec![
                    partition.to_string(),
                    error_name(answer.error_code),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                ]);
                continue;
            }
            for producer in &answer.active_producers {
                rows.push(vec![
                    partition.to_string(),
                    producer.producer_id.0.to_string(),
                    producer.producer_epoch.to_string(),
                    producer.last_sequence.to_string(),
                    producer.last_timestamp.to_string(),
                    producer.current_txn_start_offset.to_string(),
                ]);
                described.push(json!({
                    "partition": partition,
                    "producer_id": producer.producer_id.0,
                    "epoch": producer.producer_epoch,
                    "last_sequence": producer.last_sequence,
                    "last_timestamp": producer.last_timestamp,
                    "coordinator_epoch": producer.coordinator_epoch,
                    "current_txn_start_offset": producer.current_txn_start_offset,
                }));
            }
        }
    }
    Ok(Output {
        text: table(
            &[
                "PARTITION",
                "PRODUCER ID",
                "EPOCH",
                "LAST SEQUENCE",
                "LAST TIMESTAMP",
                "OPEN TXN FROM",
            ],
            &rows,
        ),
        json: json!(described),
        failed,
    })
}
