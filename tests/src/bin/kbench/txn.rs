//! Transactions measured at the protocol: a minimal transactional producer
//! on one connection (FindCoordinator, InitProducerId, then per
//! transaction AddPartitionsToTxn, one Produce with a transactional batch
//! per partition, EndTxn), so that the figure is the broker's and not a
//! client library's timers (librdkafka 2.12 waits up to 100 ms before
//! registering a transaction's partitions when nothing else wakes it).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::BytesMut;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, EndTxnRequest, FindCoordinatorRequest, InitProducerIdRequest,
    ProduceRequest, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use client::Client;

use crate::load::Transactions;

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

/// One record batch (v2, uncompressed) of `count` records holding
/// `payload`, sequences from `first_sequence` (-1: no producer).
fn encode_batch(
    producer_id: i64,
    producer_epoch: i16,
    first_sequence: i32,
    count: usize,
    transactional: bool,
    payload: &bytes::Bytes,
) -> anyhow::Result<BytesMut> {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: first_sequence + i as i32,
            timestamp: 0,
            key: None,
            value: Some(payload.clone()),
            headers: Default::default(),
        })
        .collect();
    let mut batch = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut batch,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )?;
    Ok(batch)
}

/// One transaction after the other for `duration`, each writing
/// `records_per_partition` records of 100 B to each of `partitions`
/// partitions of `topic` and committing. A single broker (it coordinates
/// every transactional id and leads every partition).
pub(crate) async fn run(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    records_per_partition: usize,
    duration: Duration,
) -> anyhow::Result<Transactions> {
    let mut client = Client::connect(bootstrap).await?;
    let transactional_id = format!("kbench-raw-{topic}");
    let found = client
        .call(
            FindCoordinatorRequest::default()
                .with_key(text(&transactional_id))
                .with_key_type(1),
            3,
        )
        .await?;
    if found.error_code != 0 {
        bail!("FindCoordinator: error {}", found.error_code);
    }
    let init = client
        .call(
            InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(text(&transactional_id))))
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
            4,
        )
        .await?;
    if init.error_code != 0 {
        bail!("InitProducerId: error {}", init.error_code);
    }
    let (producer_id, epoch) = (init.producer_id.0, init.producer_epoch);
    let mut sequences = vec![0i32; partitions as usize];
    let payload = bytes::Bytes::from(vec![b'x'; 100]);
    let started = Instant::now();
    let mut commits = 0u64;
    while started.elapsed() < duration {
        let added = client
            .call(
                AddPartitionsToTxnRequest::default()
                    .with_v3_and_below_transactional_id(TransactionalId(text(&transactional_id)))
                    .with_v3_and_below_producer_id(ProducerId(producer_id))
                    .with_v3_and_below_producer_epoch(epoch)
                    .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                        .with_name(TopicName(text(topic)))
                        .with_partitions((0..partitions).collect())]),
                3,
            )
            .await?;
        for result in added
            .results_by_topic_v3_and_below
            .iter()
            .flat_map(|t| &t.results_by_partition)
        {
            if result.partition_error_code != 0 {
                bail!("AddPartitionsToTxn: error {}", result.partition_error_code);
            }
        }
        let mut data = Vec::with_capacity(partitions as usize);
        for (partition, sequence) in sequences.iter_mut().enumerate() {
            let batch = encode_batch(
                producer_id,
                epoch,
                *sequence,
                records_per_partition,
                true,
                &payload,
            )?;
            *sequence += records_per_partition as i32;
            data.push(
                PartitionProduceData::default()
                    .with_index(partition as i32)
                    .with_records(Some(batch.freeze())),
            );
        }
        let produced = client
            .call(
                ProduceRequest::default()
                    .with_transactional_id(Some(TransactionalId(text(&transactional_id))))
                    .with_acks(-1)
                    .with_timeout_ms(30_000)
                    .with_topic_data(vec![TopicProduceData::default()
                        .with_name(TopicName(text(topic)))
                        .with_partition_data(data)]),
                9,
            )
            .await?;
        for partition in produced
            .responses
            .iter()
            .flat_map(|t| &t.partition_responses)
        {
            if partition.error_code != 0 {
                bail!(
                    "Produce to partition {}: error {}",
                    partition.index,
                    partition.error_code
                );
            }
        }
        let ended = client
            .call(
                EndTxnRequest::default()
                    .with_transactional_id(TransactionalId(text(&transactional_id)))
                    .with_producer_id(ProducerId(producer_id))
                    .with_producer_epoch(epoch)
                    .with_committed(true),
                3,
            )
            .await
            .context("EndTxn")?;
        if ended.error_code != 0 {
            bail!("EndTxn: error {}", ended.error_code);
        }
        commits += 1;
    }
    Ok(Transactions {
        commits,
        records: commits * partitions as u64 * records_per_partition as u64,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What a protocol-level produce phase did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Produced {
    pub records: u64,
    pub bytes: u64,
    pub seconds: f64,
}

/// A protocol-level producer on one connection for `duration`: Produce v9
/// with `acks` (-1: all), batches of `batch_records` records of
/// `record_bytes` bytes to partition 0 of `topic`, five requests in flight
/// (the most an idempotent producer may have). With `idempotent`, it takes
/// a producer id first and numbers its batches; otherwise the batches carry
/// none. Both variants do the same client work per batch (a header
/// rewritten and its CRC computed again), so the difference is the
/// broker's.
pub(crate) async fn produce(
    bootstrap: &str,
    topic: &str,
    acks: i16,
    idempotent: bool,
    batch_records: usize,
    record_bytes: usize,
    duration: Duration,
) -> anyhow::Result<Produced> {
    produce_over(
        bootstrap,
        &client::Security::plaintext(),
        topic,
        acks,
        idempotent,
        batch_records,
        record_bytes,
        duration,
    )
    .await
}

/// [`produce`] over `security` (TLS, SASL).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn produce_over(
    bootstrap: &str,
    security: &client::Security,
    topic: &str,
    acks: i16,
    idempotent: bool,
    batch_records: usize,
    record_bytes: usize,
    duration: Duration,
) -> anyhow::Result<Produced> {
    use protocol::batch::{compute_crc, BASE_SEQUENCE_AT, CRC_AT};
    const IN_FLIGHT: usize = 5;
    let mut client = Client::connect_with(bootstrap, "kbench-produce", security).await?;
    let (producer_id, epoch) = if idempotent {
        let init = client
            .call(
                InitProducerIdRequest::default()
                    .with_transactional_id(None)
                    .with_transaction_timeout_ms(60_000)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
                4,
            )
            .await?;
        if init.error_code != 0 {
            bail!("InitProducerId: error {}", init.error_code);
        }
        (init.producer_id.0, init.producer_epoch)
    } else {
        (-1, -1)
    };
    let payload = bytes::Bytes::from(vec![b'x'; record_bytes]);
    let first_sequence = if idempotent { 0 } else { -1 };
    let template = encode_batch(
        producer_id,
        epoch,
        first_sequence,
        batch_records,
        false,
        &payload,
    )?;
    let mut sequence = 0i32;
    let mut next_batch = || {
        let mut batch = template.clone();
        let base = if idempotent { sequence } else { -1 };
        sequence = sequence.wrapping_add(batch_records as i32);
        batch[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&base.to_be_bytes());
        let crc = compute_crc(&batch);
        batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        batch.freeze()
    };
    let request = |batch: bytes::Bytes| {
        ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(text(topic)))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch))])])
    };
    let mut in_flight = std::collections::VecDeque::new();
    let mut acknowledged = 0u64;
    let started = Instant::now();
    loop {
        let sending = started.elapsed() < duration;
        if sending && in_flight.len() < IN_FLIGHT {
            in_flight.push_back(client.send(request(next_batch()), 9).await?);
            continue;
        }
        let Some(correlation_id) = in_flight.pop_front() else {
            break;
        };
        let response = client.receive::<ProduceRequest>(correlation_id, 9).await?;
        for partition in response
            .responses
            .iter()
            .flat_map(|t| &t.partition_responses)
        {
            if partition.error_code != 0 {
                bail!("Produce: error {}", partition.error_code);
            }
        }
        acknowledged += batch_records as u64;
    }
    Ok(Produced {
        records: acknowledged,
        bytes: acknowledged * record_bytes as u64,
        seconds: started.elapsed().as_secs_f64(),
    })
}
