//! `kbroker admin`: everyday administration over the Kafka protocol —
//! topics (list, describe, create, alter configs, delete, delete records),
//! configs (describe a topic's or a broker's), consumer groups (list,
//! describe with committed offsets and lag, delete), the cluster (brokers,
//! controller), leader elections, transactions (list, describe) and the
//! producers partitions know. Output is a table for people, or JSON
//! with `--json` for scripts. It talks to any broker that speaks Kafka's
//! protocol, this one or Apache Kafka, and sends each request where Kafka
//! wants it: group requests to the group's coordinator, partition requests
//! to the partition's leader, elections to the controller.

mod acls;
mod routing;
mod security;
mod transactions;

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, CreateTopicsRequest, DeleteGroupsRequest, DeleteRecordsRequest,
    DeleteTopicsRequest, DescribeConfigsRequest, DescribeGroupsRequest, GroupId,
    IncrementalAlterConfigsRequest, ListGroupsRequest, ListOffsetsRequest, MetadataRequest,
    OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use serde_json::{json, Value};

use client::Client;

/// The client id the admin tool names itself with.
const CLIENT_ID: &str = "kbroker-admin";
use routing::Brokers;

const METADATA_VERSION: i16 = 12;
const CREATE_TOPICS_VERSION: i16 = 7;
const DELETE_TOPICS_VERSION: i16 = 6;
const LIST_GROUPS_VERSION: i16 = 4;
const DESCRIBE_GROUPS_VERSION: i16 = 5;
const OFFSET_FETCH_VERSION: i16 = 8;
const LIST_OFFSETS_VERSION: i16 = 7;
const DELETE_GROUPS_VERSION: i16 = 2;
const DESCRIBE_CONFIGS_VERSION: i16 = 4;
const INCREMENTAL_ALTER_CONFIGS_VERSION: i16 = 1;
const DELETE_RECORDS_VERSION: i16 = 2;
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
/// ListOffsets' timestamp for "the log end offset".
const LATEST_TIMESTAMP: i64 = -1;
const REQUEST_TIMEOUT_MS: i32 = 30_000;

/// Administer topics and consumer groups of a Kafka-compatible cluster.
#[derive(Debug, Parser)]
#[command(name = "kbroker admin")]
pub struct Arguments {
    /// host:port of a broker.
    #[arg(long, default_value = "localhost:9092", global = true)]
    bootstrap_server: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Kafka client properties for the connections (security.protocol,
    /// sasl.mechanism, sasl.jaas.config, ssl.truststore.location, ...).
    #[arg(long, global = true, value_name = "FILE")]
    command_config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Topics: list, describe, create, delete.
    #[command(subcommand)]
    Topics(TopicCommand),
    /// Consumer groups: list, describe (members, offsets, lag), delete.
    #[command(subcommand)]
    Groups(GroupCommand),
    /// Configs of a topic or a broker.
    #[command(subcommand)]
    Configs(ConfigCommand),
    /// The cluster: its id, brokers (with racks) and controller.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Leader elections (sent to the controller).
    #[command(subcommand)]
    Leaders(LeaderCommand),
    /// Transactions as their coordinators know them: list, describe.
    #[command(subcommand)]
    Transactions(TransactionCommand),
    /// Idempotent and transactional producers as partition leaders know them.
    #[command(subcommand)]
    Producers(ProducerCommand),
    /// ACLs: list, create, delete (as kafka-acls).
    #[command(subcommand)]
    Acls(acls::AclCommand),
    /// Users' SCRAM credentials: list, set-scram, delete-scram.
    #[command(subcommand)]
    Users(acls::UserCommand),
}

#[derive(Debug, Subcommand)]
enum TransactionCommand {
    List,
    Describe {
        #[arg(required = true)]
        transactional_ids: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ProducerCommand {
    /// The producers of a topic's partitions (all, or `--partition`).
    Describe {
        topic: String,
        #[arg(long)]
        partition: Vec<i32>,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    Describe,
}

#[derive(Debug, Subcommand)]
enum LeaderCommand {
    /// Elect leaders: `preferred` moves leadership back to each
    /// partition's first replica; `unclean` gives a partition whose ISR is
    /// all dead a leader from its other live replicas (records may be lost).
    Elect {
        #[arg(long = "type", value_enum, default_value_t = ElectionKind::Preferred)]
        kind: ElectionKind,
        /// A topic (all partitions of every topic when none is given).
        #[arg(long)]
        topic: Option<String>,
        /// A partition of `--topic` (repeatable; all of it when none).
        #[arg(long, requires = "topic")]
        partition: Vec<i32>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ElectionKind {
    Preferred,
    Unclean,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Every config with its value and source.
    Describe {
        #[arg(long, conflicts_with = "broker", required_unless_present = "broker")]
        topic: Option<String>,
        #[arg(long)]
        broker: Option<i32>,
    },
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    List,
    Describe {
        #[arg(required = true)]
        topics: Vec<String>,
    },
    Create {
        topic: String,
        #[arg(long, default_value_t = -1)]
        partitions: i32,
        #[arg(long, default_value_t = -1)]
        replication_factor: i16,
        /// A topic config `key=value` (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    Delete {
        #[arg(required = true)]
        topics: Vec<String>,
    },
    /// Change topic configs: `--set key=value`, `--delete key` (repeatable).
    Alter {
        topic: String,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
    /// Delete a partition's records before an offset (-1: all there are).
    DeleteRecords {
        topic: String,
        #[arg(long)]
        partition: i32,
        #[arg(long, allow_negative_numbers = true)]
        before: i64,
    },
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    List,
    Describe {
        #[arg(required = true)]
        groups: Vec<String>,
    },
    Delete {
        #[arg(required = true)]
        groups: Vec<String>,
    },
}

/// Runs the admin tool with `args` (the words after `admin`); exits 1
/// with a message on stderr when anything failed.
pub fn main(args: impl IntoIterator<Item = String>) -> ! {
    let arguments = Arguments::parse_from(std::iter::once("kbroker admin".to_string()).chain(args));
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(arguments)));
    match result {
        Ok(()) => std::process::exit(0),
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::exit(1)
        }
    }
}

async fn run(arguments: Arguments) -> anyhow::Result<()> {
    let security = match &arguments.command_config {
        Some(path) => security::from_file(path)?,
        None => client::Security::plaintext(),
    };
    let mut brokers = Brokers::new(
        Client::connect_with(&arguments.bootstrap_server, CLIENT_ID, &security).await?,
        security,
    );
    let client = brokers.bootstrap();
    let output = match arguments.command {
        Command::Topics(TopicCommand::List) => list_topics(client).await?,
        Command::Topics(TopicCommand::Describe { topics }) => {
            describe_topics(client, &topics).await?
        }
        Command::Topics(TopicCommand::Create {
            topic,
            partitions,
            replication_factor,
            configs,
        }) => create_topic(client, topic, partitions, replication_factor, &configs).await?,
        Command::Topics(TopicCommand::Delete { topics }) => delete_topics(client, &topics).await?,
        Command::Topics(TopicCommand::Alter { topic, set, delete }) => {
            alter_topic(client, topic, &set, &delete).await?
        }
        Command::Topics(TopicCommand::DeleteRecords {
            topic,
            partition,
            before,
        }) => {
            let leader = brokers.leader(&topic, partition).await?;
            delete_records(leader, topic, partition, before).await?
        }
        Command::Configs(ConfigCommand::Describe { topic, broker }) => match (topic, broker) {
            (Some(topic), _) => describe_configs(client, (RESOURCE_TOPIC, topic)).await?,
            // A broker describes its own configs.
            (None, Some(broker)) => {
                let node = brokers.node(broker).await?;
                describe_configs(node, (RESOURCE_BROKER, broker.to_string())).await?
            }
            (None, None) => bail!("--topic or --broker is required"),
        },
        Command::Groups(GroupCommand::List) => list_groups(&mut brokers).await?,
        Command::Groups(GroupCommand::Describe { groups }) => {
            describe_groups(&mut brokers, &groups).await?
        }
        Command::Groups(GroupCommand::Delete { groups }) => {
            delete_groups(&mut brokers, &groups).await?
        }
        Command::Cluster(ClusterCommand::Describe) => routing::describe_cluster(client).await?,
        Command::Transactions(TransactionCommand::List) => transactions::list(&mut brokers).await?,
        Command::Transactions(TransactionCommand::Describe { transactional_ids }) => {
            transactions::describe(&mut brokers, &transactional_ids).await?
        }
        Command::Producers(ProducerCommand::Describe { topic, partition }) => {
            transactions::describe_producers(&mut brokers, &topic, &partition).await?
        }
        Command::Acls(command) => acls::run(client, command).await?,
        Command::Users(command) => acls::users(client, command).await?,
        Command::Leaders(LeaderCommand::Elect {
            kind,
            topic,
            partition,
        }) => {
            let election = match kind {
                ElectionKind::Preferred => 0,
                ElectionKind::Unclean => 1,
            };
            routing::elect_leaders(&mut brokers, election, topic, partition).await?
        }
    };
    if arguments.json {
        println!("{}", serde_json::to_string_pretty(&output.json)?);
    } else {
        print!("{}", output.text);
    }
    if output.failed {
        bail!("some operations failed (see above)");
    }
    Ok(())
}

/// What a command prints, both ways, and whether any part of it failed.
struct Output {
    text: String,
    json: Value,
    failed: bool,
}

/// A Kafka error code as its name (`NONE` for 0).
fn error_name(code: i16) -> String {
    if code == 0 {
        return "NONE".to_string();
    }
    match ResponseError::try_from_code(code) {
        Some(error) => format!("{error:?}"),
        None => format!("error {code}"),
    }
}

/// Left-aligned columns separated by two spaces.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        text.trim_end().to_string() + "\n"
    };
    let mut text = line(header.to_vec());
    for row in rows {
        text.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    text
}

fn topic_name(name: &str) -> TopicName {
    TopicName(string(name))
}

fn string(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

// ------------------------------------------------------------------ topics

async fn list_topics(client: &mut Client) -> anyhow::Result<Output> {
    let metadata = client
        .call(
            MetadataRequest::default().with_topics(None),
            METADATA_VERSION,
        )
        .await?;
    let mut topics: Vec<(String, usize, bool)> = metadata
        .topics
        .iter()
        .filter_map(|t| {
            t.name
                .as_ref()
                .map(|n| (n.0.to_string(), t.partitions.len(), t.is_internal))
        })
        .collect();
    topics.sort();
    let rows: Vec<Vec<String>> = topics
        .iter()
        .map(|(name, partitions, internal)| {
            vec![
                name.clone(),
                partitions.to_string(),
                if *internal { "yes" } else { "" }.to_string(),
            ]
        })
        .collect();
    Ok(Output {
        text: table(&["TOPIC", "PARTITIONS", "INTERNAL"], &rows),
        json: json!(topics
            .iter()
            .map(|(name, partitions, internal)| json!({"topic": name, "partitions": partitions, "internal": internal}))
            .collect::<Vec<_>>()),
        failed: false,
    })
}

async fn describe_topics(client: &mut Client, names: &[String]) -> anyhow::Result<Output> {
    let request = MetadataRequest::default()
        .with_topics(Some(
            names
                .iter()
                .map(|n| MetadataRequestTopic::default().with_name(Some(TopicName(string(n)))))
                .collect(),
        ))
        .with_allow_auto_topic_creation(false);
    let metadata = client.call(request, METADATA_VERSION).await?;
    let mut text = String::new();
    let mut described = Vec::new();
    let mut failed = false;
    for topic in &metadata.topics {
        let name = topic
            .name
            .as_ref()
            .map(|n| n.0.to_string())
            .unwrap_or_default();
        if topic.error_code != 0 {
            failed = true;
            text.push_str(&format!("{name}: {}\n", error_name(topic.error_code)));
            described.push(json!({"topic": name, "error": error_name(topic.error_code)}));
            continue;
        }
        text.push_str(&format!(
            "TOPIC {name}  id {}  partitions {}{}\n",
            topic.topic_id,
            topic.partitions.len(),
            if topic.is_internal { "  internal" } else { "" }
        ));
        let mut partitions: Vec<_> = topic.partitions.iter().collect();
        partitions.sort_by_key(|p| p.partition_index);
        let ids = |nodes: &[kafka_protocol::messages::BrokerId]| {
            nodes
                .iter()
                .map(|n| n.0.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let rows: Vec<Vec<String>> = partitions
            .iter()
            .map(|p| {
                vec![
                    p.partition_index.to_string(),
                    p.leader_id.0.to_string(),
                    p.leader_epoch.to_string(),
                    ids(&p.replica_nodes),
                    ids(&p.isr_nodes),
                ]
            })
            .collect();
        text.push_str(&table(
            &["PARTITION", "LEADER", "EPOCH", "REPLICAS", "ISR"],
            &rows,
        ));
        described.push(json!({
            "topic": name,
            "topic_id": topic.topic_id.to_string(),
            "internal": topic.is_internal,
            "partitions": partitions.iter().map(|p| json!({
                "partition": p.partition_index,
                "leader": p.leader_id.0,
                "leader_epoch": p.leader_epoch,
                "replicas": p.replica_nodes.iter().map(|n| n.0).collect::<Vec<_>>(),
                "isr": p.isr_nodes.iter().map(|n| n.0).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }));
    }
    Ok(Output {
        text,
        json: Value::Array(described),
        failed,
    })
}

async fn create_topic(
    client: &mut Client,
    name: String,
    partitions: i32,
    replication_factor: i16,
    configs: &[String],
) -> anyhow::Result<Output> {
    let configs = configs
        .iter()
        .map(|item| {
            let (key, value) = item
                .split_once('=')
                .with_context(|| format!("--config {item:?} is not key=value"))?;
            Ok(CreatableTopicConfig::default()
                .with_name(string(key))
                .with_value(Some(string(value))))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(string(&name)))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)
            .with_configs(configs)])
        .with_timeout_ms(REQUEST_TIMEOUT_MS);
    let response = client.call(request, CREATE_TOPICS_VERSION).await?;
    let result = response
        .topics
        .first()
        .context("CreateTopics answered no topic")?;
    let error = error_name(result.error_code);
    let message = result.error_message.as_deref().unwrap_or("").to_string();
    Ok(Output {
        text: if result.error_code == 0 {
            format!(
                "created {name}: {} partitions, id {}\n",
                result.num_partitions, result.topic_id
            )
        } else {
            format!("{name}: {error} {message}\n")
        },
        json: json!({
            "topic": name,
            "error": error,
            "message": message,
            "topic_id": result.topic_id.to_string(),
            "partitions": result.num_partitions,
        }),
        failed: result.error_code != 0,
    })
}

async fn delete_topics(client: &mut Client, names: &[String]) -> anyhow::Result<Output> {
    let request = DeleteTopicsRequest::default()
        .with_topics(
            names
                .iter()
                .map(|n| DeleteTopicState::default().with_name(Some(TopicName(string(n)))))
                .collect(),
        )
        .with_timeout_ms(REQUEST_TIMEOUT_MS);
    let response = client.call(request, DELETE_TOPICS_VERSION).await?;
    let results: Vec<(String, i16)> = response
        .responses
        .iter()
        .map(|r| {
            (
                r.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
                r.error_code,
            )
        })
        .collect();
    outcome_list("deleted", &results)
}

/// "deleted x" / "y: ERROR" lines for per-name results.
fn outcome_list(verb: &str, results: &[(String, i16)]) -> anyhow::Result<Output> {
    let text = results
        .iter()
        .map(|(name, code)| match code {
            0 => format!("{verb} {name}\n"),
            code => format!("{name}: {}\n", error_name(*code)),
        })
        .collect();
    Ok(Output {
        text,
        json: json!(results
            .iter()
            .map(|(name, code)| json!({"name": name, "error": error_name(*code)}))
            .collect::<Vec<_>>()),
        failed: results.iter().any(|(_, code)| *code != 0),
    })
}

// ------------------------------------------------------------------ groups

/// Every broker lists the groups it coordinates: all of them are asked.
async fn list_groups(brokers: &mut Brokers) -> anyhow::Result<Output> {
    let mut groups: Vec<(String, String, String)> = Vec::new();
    for node in brokers.node_ids().await? {
        let response = brokers
            .node(node)
            .await?
            .call(ListGroupsRequest::default(), LIST_GROUPS_VERSION)
            .await?;
        if response.error_code != 0 {
            bail!(
                "ListGroups at broker {node} failed: {}",
                error_name(response.error_code)
            );
        }
        groups.extend(response.groups.iter().map(|g| {
            (
                g.group_id.0.to_string(),
                g.group_state.to_string(),
                g.protocol_type.to_string(),
            )
        }));
    }
    groups.sort();
    groups.dedup();
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|(id, state, kind)| vec![id.clone(), state.clone(), kind.clone()])
        .collect();
    Ok(Output {
        text: table(&["GROUP", "STATE", "PROTOCOL TYPE"], &rows),
        json: json!(groups
            .iter()
            .map(|(id, state, kind)| json!({"group": id, "state": state, "protocol_type": kind}))
            .collect::<Vec<_>>()),
        failed: false,
    })
}

/// The partitions of a `consumer` protocol assignment.
fn decode_assignment(assignment: &Bytes) -> Vec<(String, i32)> {
    if assignment.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([assignment[0], assignment[1]]);
    let mut body = assignment.slice(2..);
    match ConsumerProtocolAssignment::decode(&mut body, version.clamp(0, 3)) {
        Ok(decoded) => decoded
            .assigned_partitions
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), *p)))
            .collect(),
        Err(_) => Vec::new(),
    }
}

struct PartitionLag {
    member: String,
    committed: Option<(i64, String)>,
    end: Option<i64>,
}

async fn describe_groups(brokers: &mut Brokers, groups: &[String]) -> anyhow::Result<Output> {
    let mut described = kafka_protocol::messages::DescribeGroupsResponse::default();
    let mut fetched = kafka_protocol::messages::OffsetFetchResponse::default();
    // Each group from its coordinator.
    for group in groups {
        let coordinator = brokers.coordinator(group).await?;
        let answer = coordinator
            .call(
                DescribeGroupsRequest::default().with_groups(vec![GroupId(string(group))]),
                DESCRIBE_GROUPS_VERSION,
            )
            .await?;
        described.groups.extend(answer.groups);
        let answer = coordinator
            .call(
                OffsetFetchRequest::default().with_groups(vec![
                    // No topic list: every committed offset of the group.
                    OffsetFetchRequestGroup::default()
                        .with_group_id(GroupId(string(group)))
                        .with_topics(None),
                ]),
                OFFSET_FETCH_VERSION,
            )
            .await?;
        fetched.groups.extend(answer.groups);
    }
    let mut text = String::new();
    let mut out = Vec::new();
    let mut failed = false;
    for group in &described.groups {
        let id = group.group_id.0.to_string();
        if group.error_code != 0 {
            failed = true;
            text.push_str(&format!("{id}: {}\n", error_name(group.error_code)));
            out.push(json!({"group": id, "error": error_name(group.error_code)}));
            continue;
        }
        // (topic, partition) → what we know of it.
        let mut partitions: BTreeMap<(String, i32), PartitionLag> = BTreeMap::new();
        let mut members = Vec::new();
        for member in &group.members {
            let assigned = if group.protocol_type.as_str() == "consumer" {
                decode_assignment(&member.member_assignment)
            } else {
                Vec::new()
            };
            for place in &assigned {
                partitions
                    .entry(place.clone())
                    .or_insert_with(|| PartitionLag {
                        member: String::new(),
                        committed: None,
                        end: None,
                    })
                    .member = member.member_id.to_string();
            }
            members.push((member, assigned));
        }
        if let Some(fetched) = fetched.groups.iter().find(|g| g.group_id.0.as_str() == id) {
            for topic in &fetched.topics {
                for p in &topic.partitions {
                    if p.committed_offset < 0 {
                        continue;
                    }
                    partitions
                        .entry((topic.name.0.to_string(), p.partition_index))
                        .or_insert_with(|| PartitionLag {
                            member: String::new(),
                            committed: None,
                            end: None,
                        })
                        .committed = Some((
                        p.committed_offset,
                        p.metadata.as_deref().unwrap_or("").to_string(),
                    ));
                }
            }
        }
        let ends = end_offsets(brokers, partitions.keys()).await?;
        for (place, lag) in partitions.iter_mut() {
            lag.end = ends.get(place).copied();
        }

        let protocol = match (group.protocol_type.as_str(), group.protocol_data.as_str()) {
            ("", _) => "-".to_string(),
            (kind, "") => kind.to_string(),
            (kind, name) => format!("{kind}/{name}"),
        };
        text.push_str(&format!(
            "GROUP {id}  state {}  protocol {protocol}  members {}\n",
            group.group_state,
            group.members.len()
        ));
        if !members.is_empty() {
            let rows: Vec<Vec<String>> = members
                .iter()
                .map(|(m, assigned)| {
                    vec![
                        m.member_id.to_string(),
                        m.group_instance_id.as_deref().unwrap_or("").to_string(),
                        m.client_id.to_string(),
                        m.client_host.to_string(),
                        assigned
                            .iter()
                            .map(|(t, p)| format!("{t}-{p}"))
                            .collect::<Vec<_>>()
                            .join(","),
                    ]
                })
                .collect();
            text.push_str(&table(
                &["MEMBER", "INSTANCE", "CLIENT", "HOST", "ASSIGNMENT"],
                &rows,
            ));
        }
        let lag_of = |lag: &PartitionLag| match (lag.committed.as_ref(), lag.end) {
            (Some((committed, _)), Some(end)) => Some((end - committed).max(0)),
            _ => None,
        };
        let dash = |value: Option<i64>| value.map_or("-".to_string(), |v| v.to_string());
        let rows: Vec<Vec<String>> = partitions
            .iter()
            .map(|((topic, partition), lag)| {
                vec![
                    topic.clone(),
                    partition.to_string(),
                    dash(lag.committed.as_ref().map(|c| c.0)),
                    dash(lag.end),
                    dash(lag_of(lag)),
                    if lag.member.is_empty() {
                        "-".into()
                    } else {
                        lag.member.clone()
                    },
                ]
            })
            .collect();
        if !rows.is_empty() {
            text.push_str(&table(
                &["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "MEMBER"],
                &rows,
            ));
        }
        out.push(json!({
            "group": id,
            "state": group.group_state.to_string(),
            "protocol_type": group.protocol_type.to_string(),
            "protocol": group.protocol_data.to_string(),
            "members": members.iter().map(|(m, assigned)| json!({
                "member_id": m.member_id.to_string(),
                "group_instance_id": m.group_instance_id.as_ref().map(std::string::ToString::to_string),
                "client_id": m.client_id.to_string(),
                "client_host": m.client_host.to_string(),
                "assignment": assigned.iter().map(|(t, p)| json!({"topic": t, "partition": p})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "offsets": partitions.iter().map(|((topic, partition), lag)| json!({
                "topic": topic,
                "partition": partition,
                "committed": lag.committed.as_ref().map(|c| c.0),
                "metadata": lag.committed.as_ref().map(|c| c.1.clone()),
                "end": lag.end,
                "lag": lag_of(lag),
                "member": (!lag.member.is_empty()).then(|| lag.member.clone()),
            })).collect::<Vec<_>>(),
        }));
    }
    Ok(Output {
        text,
        json: Value::Array(out),
        failed,
    })
}

/// Log end offsets of `partitions` (those whose leader answers), each
/// asked of its leader.
async fn end_offsets<'a>(
    brokers: &mut Brokers,
    partitions: impl Iterator<Item = &'a (String, i32)>,
) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    let mut by_leader: BTreeMap<i32, BTreeMap<String, Vec<i32>>> = BTreeMap::new();
    for (topic, partition) in partitions {
        if let Some(leader) = brokers.leader_id(topic, *partition).await? {
            by_leader
                .entry(leader)
                .or_default()
                .entry(topic.clone())
                .or_default()
                .push(*partition);
        }
    }
    let mut ends = BTreeMap::new();
    for (leader, by_topic) in by_leader {
        let request = ListOffsetsRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_topics(
                by_topic
                    .iter()
                    .map(|(topic, partitions)| {
                        ListOffsetsTopic::default()
                            .with_name(TopicName(string(topic)))
                            .with_partitions(
                                partitions
                                    .iter()
                                    .map(|p| {
                                        ListOffsetsPartition::default()
                                            .with_partition_index(*p)
                                            .with_timestamp(LATEST_TIMESTAMP)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let response = brokers
            .node(leader)
            .await?
            .call(request, LIST_OFFSETS_VERSION)
            .await?;
        for topic in &response.topics {
            for p in &topic.partitions {
                if p.error_code == 0 {
                    ends.insert((topic.name.0.to_string(), p.partition_index), p.offset);
                }
            }
        }
    }
    Ok(ends)
}

async fn delete_groups(brokers: &mut Brokers, groups: &[String]) -> anyhow::Result<Output> {
    let mut results: Vec<(String, i16)> = Vec::new();
    for group in groups {
        let response = brokers
            .coordinator(group)
            .await?
            .call(
                DeleteGroupsRequest::default().with_groups_names(vec![GroupId(string(group))]),
                DELETE_GROUPS_VERSION,
            )
            .await?;
        results.extend(
            response
                .results
                .iter()
                .map(|r| (r.group_id.0.to_string(), r.error_code)),
        );
    }
    outcome_list("deleted", &results)
}

// ----------------------------------------------------------------- configs

/// Kafka's names of DescribeConfigs' config sources.
fn source_name(source: i8) -> &'static str {
    match source {
        1 => "TOPIC",
        2 => "DYNAMIC_BROKER",
        3 => "DYNAMIC_DEFAULT_BROKER",
        4 => "STATIC_BROKER",
        5 => "DEFAULT",
        _ => "UNKNOWN",
    }
}

async fn describe_configs(
    client: &mut Client,
    (kind, name): (i8, String),
) -> anyhow::Result<Output> {
    let response = client
        .call(
            DescribeConfigsRequest::default().with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(kind)
                    .with_resource_name(string(&name))
                    .with_configuration_keys(None),
            ]),
            DESCRIBE_CONFIGS_VERSION,
        )
        .await?;
    let result = response
        .results
        .first()
        .context("DescribeConfigs answered nothing")?;
    if result.error_code != 0 {
        let message = result.error_message.as_deref().unwrap_or("").to_string();
        return Ok(Output {
            text: format!("{name}: {} {message}\n", error_name(result.error_code)),
            json: json!({"name": name, "error": error_name(result.error_code), "message": message}),
            failed: true,
        });
    }
    let rows: Vec<Vec<String>> = result
        .configs
        .iter()
        .map(|c| {
            vec![
                c.name.to_string(),
                c.value.as_deref().unwrap_or("").to_string(),
                source_name(c.config_source).to_string(),
                if c.read_only { "yes" } else { "" }.to_string(),
            ]
        })
        .collect();
    Ok(Output {
        text: table(&["CONFIG", "VALUE", "SOURCE", "READ-ONLY"], &rows),
        json: json!(result
            .configs
            .iter()
            .map(|c| json!({
                "name": c.name.to_string(),
                "value": c.value.as_ref().map(std::string::ToString::to_string),
                "source": source_name(c.config_source),
                "read_only": c.read_only,
                "sensitive": c.is_sensitive,
            }))
            .collect::<Vec<_>>()),
        failed: false,
    })
}

async fn alter_topic(
    client: &mut Client,
    topic: String,
    set: &[String],
    delete: &[String],
) -> anyhow::Result<Output> {
    let mut configs = Vec::new();
    for item in set {
        let (key, value) = item
            .split_once('=')
            .with_context(|| format!("--set {item:?} is not key=value"))?;
        configs.push(
            AlterableConfig::default()
                .with_name(string(key))
                .with_config_operation(OP_SET)
                .with_value(Some(string(value))),
        );
    }
    for key in delete {
        configs.push(
            AlterableConfig::default()
                .with_name(string(key))
                .with_config_operation(OP_DELETE)
                .with_value(None),
        );
    }
    if configs.is_empty() {
        bail!("nothing to change: give --set key=value or --delete key");
    }
    let response = client
        .call(
            IncrementalAlterConfigsRequest::default().with_resources(vec![
                AlterConfigsResource::default()
                    .with_resource_type(RESOURCE_TOPIC)
                    .with_resource_name(string(&topic))
                    .with_configs(configs),
            ]),
            INCREMENTAL_ALTER_CONFIGS_VERSION,
        )
        .await?;
    let result = response
        .responses
        .first()
        .context("IncrementalAlterConfigs answered nothing")?;
    let message = result.error_message.as_deref().unwrap_or("").to_string();
    Ok(Output {
        text: if result.error_code == 0 {
            format!("altered {topic}\n")
        } else {
            format!("{topic}: {} {message}\n", error_name(result.error_code))
        },
        json: json!({"topic": topic, "error": error_name(result.error_code), "message": message}),
        failed: result.error_code != 0,
    })
}

async fn delete_records(
    client: &mut Client,
    topic: String,
    partition: i32,
    before: i64,
) -> anyhow::Result<Output> {
    let response = client
        .call(
            DeleteRecordsRequest::default()
                .with_topics(vec![DeleteRecordsTopic::default()
                    .with_name(TopicName(string(&topic)))
                    .with_partitions(vec![DeleteRecordsPartition::default()
                        .with_partition_index(partition)
                        .with_offset(before)])])
                .with_timeout_ms(REQUEST_TIMEOUT_MS),
            DELETE_RECORDS_VERSION,
        )
        .await?;
    let result = response
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .context("DeleteRecords answered nothing")?;
    Ok(Output {
        text: if result.error_code == 0 {
            format!(
                "{topic}-{partition}: records before {} deleted\n",
                result.low_watermark
            )
        } else {
            format!("{topic}-{partition}: {}\n", error_name(result.error_code))
        },
        json: json!({
            "topic": topic,
            "partition": partition,
            "error": error_name(result.error_code),
            "low_watermark": result.low_watermark,
        }),
        failed: result.error_code != 0,
    })
}
