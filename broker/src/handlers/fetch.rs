//! Fetch: whole batches from each partition, long polling until `min_bytes`
//! are there or `max_wait_ms` has passed.
//!
//! Fetch v0-v3 get the record batches down-converted into message sets.
//!
//! Fetch sessions (KIP-227) are not kept: every response carries session id
//! 0, which tells clients to keep sending full (sessionless) fetches.
//!
//! A follower at the leader's tail gets the batches from memory, in pieces
//! (see [`storage::tail`]): the response carries stand-ins for them, and
//! the [`Splice`]s that go with it are written in their place.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint,
    PartitionData,
};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, ProducerId};
use protocol::chunked::{self, Splice};
use tokio::time::Instant;

use super::{cluster_allows, RequestContext};
use crate::authorizer::{Operation, ResourceType};
use storage::StorageError;

use crate::broker::Broker;
use crate::errors::{self, code};
use crate::topics::Topic;

/// Fetch v4+ returns record batches; before, message sets (v0/v1).
const RECORD_BATCH_VERSION_MIN: i16 = 4;
/// Fetch v2-v3 return messages of magic 1 (with timestamps).
const MAGIC_1_VERSION_MIN: i16 = 2;
/// Fetch v13+ names topics by id instead of by name.
const TOPIC_ID_VERSION_MIN: i16 = 13;
/// Fetch v15+ names a follower in `replica_state`, with its broker epoch.
const REPLICA_STATE_VERSION_MIN: i16 = 15;
/// READ_COMMITTED in `isolation_level`.
const READ_COMMITTED: i8 = 1;
/// Longest a fetch may wait, whatever the client asks.
pub(super) const FETCH_WAIT_MS_MAX: u64 = 60_000;

pub(super) async fn handle(
    broker: &Broker,
    request: FetchRequest,
    version: i16,
    origin: RequestContext<'_>,
) -> (FetchResponse, Vec<Splice>) {
    let denied = denied_topics(broker, &request, version, origin);
    let (response, splices) = long_poll(broker, &request, version, &denied).await;
    if broker.metrics.enabled()
        && matches!(
            Reader::of(broker, &request, version),
            Reader::Consumer { .. }
        )
    {
        count_bytes_out(broker, &request, &response, version);
    }
    (
        with_node_endpoints(broker, response, origin.listener),
        splices,
    )
}

/// The response and the splices of its record set stand-ins.
type Answer = (FetchResponse, Vec<Splice>);

/// The record bytes a consumer is sent, per topic (`bytesout`).
fn count_bytes_out(
    broker: &Broker,
    request: &FetchRequest,
    response: &FetchResponse,
    version: i16,
) {
    for (fetch_topic, topic) in request.topics.iter().zip(&response.responses) {
        let bytes: usize = topic
            .partitions
            .iter()
            .map(|partition| partition.records.as_ref().map_or(0, Bytes::len))
            .sum();
        if bytes == 0 {
            continue;
        }
        if version >= TOPIC_ID_VERSION_MIN {
            if let Some(topic) = broker.topic_by_id(fetch_topic.topic_id) {
                broker.metrics.consumed(&topic.name, bytes as u64);
            }
        } else {
            broker.metrics.consumed(&fetch_topic.topic.0, bytes as u64);
        }
    }
}

/// The topics the request may not read: a consumer needs READ on each, a
/// follower (a replica id) CLUSTER_ACTION on the cluster, or it reads
/// none (a claimed replica id is not trusted: CVE-2018-1288).
fn denied_topics(
    broker: &Broker,
    request: &FetchRequest,
    version: i16,
    origin: RequestContext<'_>,
) -> HashSet<String> {
    if !broker.authorizer.enabled() {
        return HashSet::new();
    }
    let metadata = broker.metadata();
    let names = request.topics.iter().filter_map(|fetch_topic| {
        if version >= TOPIC_ID_VERSION_MIN {
            metadata
                .topic_by_id(fetch_topic.topic_id)
                .map(|topic| topic.name.clone())
        } else {
            Some(fetch_topic.topic.0.to_string())
        }
    });
    let who = origin.who(ApiKey::Fetch);
    if matches!(
        Reader::of(broker, request, version),
        Reader::Follower { .. }
    ) {
        if cluster_allows(broker, origin, ApiKey::Fetch, Operation::ClusterAction) {
            return HashSet::new();
        }
        return names.collect();
    }
    names
        .filter(|name| {
            !broker
                .authorizer
                .authorize(&who, Operation::Read, ResourceType::Topic, name)
        })
        .collect()
}

async fn long_poll(
    broker: &Broker,
    request: &FetchRequest,
    version: i16,
    denied: &HashSet<String>,
) -> Answer {
    let wait_ms = u64::try_from(request.max_wait_ms)
        .unwrap_or(0)
        .min(FETCH_WAIT_MS_MAX);
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let mut appends = broker.subscribe_appends();
    loop {
        // Mark the current appends seen before reading, so none is missed
        // between this read and the wait below.
        appends.borrow_and_update();
        let (answer, bytes, failed) = read_once(broker, request, version, denied);
        if bytes >= min_bytes.max(1) || failed || Instant::now() >= deadline {
            return answer;
        }
        tokio::select! {
            changed = appends.changed() => if changed.is_err() { return answer },
            _ = tokio::time::sleep_until(deadline) => return read_once(broker, request, version, denied).0,
        }
    }
}

/// One pass over the requested partitions: the response (with its
/// splices), the record bytes in it, and whether any partition failed
/// (which ends long polling).
fn read_once(
    broker: &Broker,
    request: &FetchRequest,
    version: i16,
    denied: &HashSet<String>,
) -> (Answer, usize, bool) {
    let mut remaining = usize::try_from(request.max_bytes)
        .ok()
        .filter(|&max| max > 0)
        .unwrap_or(usize::MAX)
        .min(broker.config.fetch_max_bytes);
    let mut total = 0usize;
    let mut failed = false;
    let reader = Reader::of(broker, request, version);
    // In the order the partitions are encoded: the order they are read.
    let mut splices = Vec::new();
    let can_splice = version >= RECORD_BATCH_VERSION_MIN;
    let responses = request
        .topics
        .iter()
        .map(|fetch_topic| {
            let (topic, missing) = match resolve_topic(broker, fetch_topic, version) {
                (Some(topic), _) if denied.contains(&*topic.name) => {
                    (None, code(ResponseError::TopicAuthorizationFailed))
                }
                (None, _) if denied.contains(fetch_topic.topic.0.as_str()) => {
                    (None, code(ResponseError::TopicAuthorizationFailed))
                }
                resolved => resolved,
            };
            let partitions = fetch_topic
                .partitions
                .iter()
                .map(|fetch_partition| {
                    let data = match &topic {
                        None => PartitionData::default()
                            .with_partition_index(fetch_partition.partition)
                            .with_error_code(missing)
                            .with_high_watermark(-1),
                        Some(topic) => {
                            // KIP-74: the first batch of the first partition with data is
                            // returned whole even if it is larger than the limits.
                            let min_one = total == 0;
                            let (data, pieces) = read_partition(
                                broker,
                                topic,
                                fetch_partition,
                                remaining,
                                min_one,
                                reader,
                            );
                            match pieces {
                                Some(pieces) if can_splice => {
                                    let (records, splice) = Splice::new(pieces);
                                    splices.extend(splice);
                                    data.with_records(Some(records))
                                }
                                Some(pieces) => data.with_records(Some(chunked::join(&pieces))),
                                None => data,
                            }
                        }
                    };
                    let data = if version < RECORD_BATCH_VERSION_MIN {
                        down_convert(data, version)
                    } else {
                        data
                    };
                    let size = data.records.as_ref().map_or(0, Bytes::len);
                    total += size;
                    remaining = remaining.saturating_sub(size);
                    // An error, or a follower told where it diverges, is answered at once.
                    failed |= data.error_code != errors::NONE
                        || data.diverging_epoch != EpochEndOffset::default();
                    data
                })
                .collect();
            FetchableTopicResponse::default()
                .with_topic(fetch_topic.topic.clone())
                .with_topic_id(fetch_topic.topic_id)
                .with_partitions(partitions)
        })
        .collect();
    (
        (FetchResponse::default().with_responses(responses), splices),
        total,
        failed,
    )
}

/// Fetch before v4 returns message sets: v0-v1 of magic 0, v2-v3 of
/// magic 1, converted from the log's record batches (a copy; Kafka 3.x
/// converts too).
fn down_convert(mut data: PartitionData, version: i16) -> PartitionData {
    let magic = if version < MAGIC_1_VERSION_MIN { 0 } else { 1 };
    data.records = data
        .records
        .map(|records| protocol::legacy::down_convert(&records, magic));
    data
}

/// The topic of a fetch, by id (v13+) or name, and the error for its
/// partitions if this broker has it not: a topic the cluster has but this
/// broker has not applied yet is NOT_LEADER_OR_FOLLOWER.
fn resolve_topic(
    broker: &Broker,
    fetch_topic: &FetchTopic,
    version: i16,
) -> (Option<std::sync::Arc<Topic>>, i16) {
    let metadata = broker.metadata();
    if version >= TOPIC_ID_VERSION_MIN {
        let missing = if metadata.topic_by_id(fetch_topic.topic_id).is_some() {
            code(ResponseError::NotLeaderOrFollower)
        } else {
            code(ResponseError::UnknownTopicId)
        };
        (broker.topic_by_id(fetch_topic.topic_id), missing)
    } else {
        let name = fetch_topic.topic.0.as_str();
        let missing = if metadata.topic(name).is_some() {
            code(ResponseError::NotLeaderOrFollower)
        } else {
            code(ResponseError::UnknownTopicOrPartition)
        };
        (broker.topic(name), missing)
    }
}

/// Who fetches: a consumer, or a follower (a replica fetch, `replica_id` ≥ 0).
#[derive(Debug, Clone, Copy)]
enum Reader {
    Consumer {
        read_committed: bool,
    },
    Follower {
        replica_id: i32,
        broker_epoch: i64,
        /// The follower's session as this leader knows it (None: not alive).
        registered: Option<i64>,
    },
}

impl Reader {
    fn of(broker: &Broker, request: &FetchRequest, version: i16) -> Reader {
        let (replica_id, broker_epoch) = if version >= REPLICA_STATE_VERSION_MIN {
            (
                request.replica_state.replica_id.0,
                request.replica_state.replica_epoch,
            )
        } else {
            (request.replica_id.0, -1)
        };
        if replica_id >= 0 {
            Reader::Follower {
                replica_id,
                broker_epoch,
                registered: broker.metadata().brokers.get(&replica_id).map(|b| b.epoch),
            }
        } else {
            Reader::Consumer {
                read_committed: request.isolation_level == READ_COMMITTED,
            }
        }
    }
}

/// What a follower has of the partition: its `fetch_offset`, or less when
/// it says, in our own tagged field, that the records before are still
/// being appended (see [`protocol::extensions::WRITTEN_END_TAG`]). A
/// value that is not an int64 counts as nothing written (-1).
fn written_end(request: &FetchPartition) -> i64 {
    let Some(value) = request
        .unknown_tagged_fields
        .get(&protocol::extensions::WRITTEN_END_TAG)
    else {
        return request.fetch_offset;
    };
    match <[u8; 8]>::try_from(value.as_ref()) {
        Ok(value) => i64::from_be_bytes(value).min(request.fetch_offset),
        Err(_) => {
            tracing::warn!(
                bytes = value.len(),
                "a follower's written end is not an int64: counting nothing written"
            );
            -1
        }
    }
}

/// What the leader reads for one partition of a fetch.
enum Read {
    Records {
        /// In pieces to send one after another.
        records: Result<Vec<Bytes>, StorageError>,
        high_watermark: i64,
        last_stable_offset: i64,
        log_start_offset: i64,
        /// For read_committed: the aborted transactions among what was read.
        aborted: Option<Vec<storage::producer::AbortedTxn>>,
    },
    /// The follower's log diverges from the leader's after this epoch's end.
    Diverging {
        epoch: i32,
        end_offset: i64,
    },
    Refused(i16),
}

fn read_partition(
    broker: &Broker,
    topic: &Topic,
    request: &FetchPartition,
    limit: usize,
    min_one: bool,
    reader: Reader,
) -> (PartitionData, Option<Vec<Bytes>>) {
    let data = PartitionData::default().with_partition_index(request.partition);
    let Some(partition) = topic.partition(request.partition) else {
        let data = data
            .with_error_code(code(ResponseError::UnknownTopicOrPartition))
            .with_high_watermark(-1);
        return (data, None);
    };
    let epoch_error =
        errors::leader_epoch_code(request.current_leader_epoch, partition.leader_epoch());
    if epoch_error != errors::NONE {
        return (
            data.with_error_code(epoch_error).with_high_watermark(-1),
            None,
        );
    }
    let limit = limit.min(usize::try_from(request.partition_max_bytes).unwrap_or(0));
    let result = partition.lead(|log, state| match reader {
        Reader::Consumer { read_committed } => {
            let high_watermark = log.high_watermark();
            let last_stable_offset = log.last_stable_offset();
            // read_committed reads up to the last stable offset, and is told
            // which transactions below it were aborted (all that overlap
            // what it may read: a superset of what this answer holds).
            let (max_offset, aborted) = if read_committed {
                let aborted = log
                    .producers()
                    .aborted_between(request.fetch_offset, last_stable_offset);
                (last_stable_offset, Some(aborted))
            } else {
                (high_watermark, None)
            };
            Read::Records {
                records: log
                    .read(request.fetch_offset, limit, max_offset, min_one)
                    .map(|records| vec![records]),
                high_watermark,
                last_stable_offset,
                log_start_offset: log.log_start_offset(),
                aborted,
            }
        }
        Reader::Follower {
            replica_id,
            broker_epoch,
            registered,
        } => {
            if !state.replicas.contains(&replica_id) {
                return Read::Refused(code(ResponseError::NotLeaderOrFollower));
            }
            // A follower must be alive in this leader's view, in the session
            // it names (KIP-903): a zombie of an earlier session neither
            // moves the high watermark nor rejoins the ISR.
            let Some(registered) = registered else {
                return Read::Refused(code(ResponseError::NotLeaderOrFollower));
            };
            if broker_epoch >= 0 && registered != broker_epoch {
                return Read::Refused(code(ResponseError::StaleBrokerEpoch));
            }
            if let Some((epoch, end_offset)) =
                diverging(log, request.last_fetched_epoch, request.fetch_offset)
            {
                return Read::Diverging { epoch, end_offset };
            }
            partition.record_follower_fetch(
                log,
                state,
                replica_id,
                registered,
                (request.fetch_offset, written_end(request)),
                std::time::Instant::now(),
            );
            let log_end_offset = log.log_end_offset();
            Read::Records {
                records: log.read_for_replica(request.fetch_offset, limit, log_end_offset, min_one),
                high_watermark: log.high_watermark(),
                last_stable_offset: log.last_stable_offset(),
                log_start_offset: log.log_start_offset(),
                aborted: None,
            }
        }
    });
    let read = match result {
        Ok(read) => read,
        Err(not_leader) => {
            let data = data
                .with_error_code(errors::not_leader_code(&not_leader))
                .with_high_watermark(-1)
                .with_current_leader(current_leader(broker, &topic.name, request.partition));
            return (data, None);
        }
    };
    let (records, high_watermark, last_stable_offset, log_start_offset, aborted) = match read {
        Read::Records {
            records,
            high_watermark,
            last_stable_offset,
            log_start_offset,
            aborted,
        } => (
            records,
            high_watermark,
            last_stable_offset,
            log_start_offset,
            aborted,
        ),
        Read::Diverging { epoch, end_offset } => {
            let data = data
                .with_high_watermark(-1)
                .with_diverging_epoch(
                    EpochEndOffset::default()
                        .with_epoch(epoch)
                        .with_end_offset(end_offset),
                )
                .with_records(Some(Bytes::new()));
            return (data, None);
        }
        Read::Refused(error_code) => {
            return (
                data.with_error_code(error_code).with_high_watermark(-1),
                None,
            )
        }
    };
    // Null unless read_committed, as Kafka sends it.
    let aborted = aborted.map(|aborted| {
        aborted
            .into_iter()
            .map(|txn| {
                AbortedTransaction::default()
                    .with_producer_id(ProducerId(txn.producer_id))
                    .with_first_offset(txn.first_offset)
            })
            .collect()
    });
    let data = data
        .with_high_watermark(high_watermark)
        .with_last_stable_offset(last_stable_offset)
        .with_log_start_offset(log_start_offset)
        .with_aborted_transactions(aborted);
    match records {
        Ok(pieces) => (data, Some(pieces)),
        Err(error) => {
            tracing::debug!(topic = %topic.name, partition = request.partition, %error, "fetch failed");
            let data = data
                .with_error_code(errors::storage_error_code(&error))
                .with_records(Some(Bytes::new()));
            (data, None)
        }
    }
}

/// A follower that last fetched a batch of `last_fetched_epoch` and now
/// asks for `fetch_offset` diverges from this leader if the leader's log
/// has that epoch end earlier, or does not have the epoch: the answer is
/// the end of the last epoch both logs can share.
fn diverging(
    log: &storage::PartitionLog,
    last_fetched_epoch: i32,
    fetch_offset: i64,
) -> Option<(i32, i64)> {
    if last_fetched_epoch < 0 {
        return None;
    }
    match log.end_offset_for_epoch(last_fetched_epoch) {
        (-1, _) => Some((-1, log.log_start_offset())),
        (epoch, end_offset) if epoch < last_fetched_epoch || end_offset < fetch_offset => {
            Some((epoch, end_offset))
        }
        _ => None,
    }
}

/// KIP-951: where the client should go instead.
fn current_leader(broker: &Broker, name: &str, index: i32) -> LeaderIdAndEpoch {
    match super::current_leader(&broker.metadata(), name, index) {
        Some((leader, epoch)) => LeaderIdAndEpoch::default()
            .with_leader_id(BrokerId(leader))
            .with_leader_epoch(epoch),
        None => LeaderIdAndEpoch::default(),
    }
}

/// KIP-951 (v16+): the endpoints of the leaders named in `current_leader`.
fn with_node_endpoints(broker: &Broker, response: FetchResponse, listener: &str) -> FetchResponse {
    let leaders: BTreeSet<i32> = response
        .responses
        .iter()
        .flat_map(|topic| topic.partitions.iter())
        .map(|partition| partition.current_leader.leader_id.0)
        .filter(|id| *id >= 0)
        .collect();
    if leaders.is_empty() {
        return response;
    }
    let endpoints = super::reachable(
        &broker.metadata(),
        leaders,
        listener,
        |id, host, port, rack| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(id))
                .with_host(host)
                .with_port(port)
                .with_rack(rack)
        },
    );
    response.with_node_endpoints(endpoints)
}
