//! How throughput and memory change with the number of partitions (through
//! librdkafka, keyed records spread over all of them) and of connections
//! (many raw Kafka-protocol connections, each with one Produce in flight:
//! librdkafka's threads per instance would make a thousand producers a test
//! of this machine's scheduler, not of the broker).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::{Bytes, BytesMut};
use client::Client;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// One uncompressed batch of `count` records of `value_bytes` bytes.
pub(crate) fn batch(count: usize, value_bytes: usize) -> anyhow::Result<Bytes> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // kafka_protocol's encoder starts a new batch whenever
            // offset - sequence changes: keep it constant for one batch.
            sequence: i as i32 - 1,
            timestamp: now,
            key: None,
            value: Some(Bytes::from(vec![b'v'; value_bytes])),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )?;
    let batch = buf.freeze();
    anyhow::ensure!(
        protocol::batch::count_batches(&batch) == Ok(1),
        "the records did not encode as one batch"
    );
    Ok(batch)
}

/// What `connections` connections produced together.
pub(crate) struct ConnectionLoad {
    pub connections: usize,
    pub records: u64,
    pub seconds: f64,
}

/// Opens `connections` connections, then has each send Produce requests
/// (acks=1, one batch of `batch_records` records to partition
/// `i % partitions`) one at a time for `duration`.
pub(crate) async fn connections(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    connections: usize,
    batch: Bytes,
    batch_records: u64,
    duration: Duration,
) -> anyhow::Result<ConnectionLoad> {
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(Client::connect(bootstrap).await?);
    }
    let records = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        let request = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(i as i32 % partitions)
                    .with_records(Some(batch.clone()))])]);
        let (records, stop) = (records.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let response = client.call(request.clone(), 7).await?;
                for topic in &response.responses {
                    for partition in &topic.partition_responses {
                        if partition.error_code != 0 {
                            bail!("produce failed with error {}", partition.error_code);
                        }
                    }
                }
                records.fetch_add(batch_records, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    Ok(ConnectionLoad {
        connections,
        records: records.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
    })
}
