//! librdkafka (current release, through the `rdkafka` crate) against kbroker.

use std::collections::HashMap;
use std::time::Duration;

use e2e::BrokerProcess;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(30);

fn producer(broker: &BrokerProcess, extra: &[(&str, &str)]) -> FutureProducer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "5");
    for (key, value) in extra {
        config.set(*key, *value);
    }
    config.create().expect("producer")
}

fn consumer(broker: &BrokerProcess, topic: &str, partitions: i32) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "e2e-assign-only")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).expect("assign");
    consumer
}

async fn create_topic(broker: &BrokerProcess, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("admin");
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create_topics");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}

#[derive(Debug, Clone, PartialEq)]
struct Sent {
    key: Vec<u8>,
    value: Vec<u8>,
    header: Vec<u8>,
    timestamp: i64,
}

/// Consumes until `count` records arrived (or the timeout passes).
fn consume(consumer: &BaseConsumer, count: usize) -> Vec<(i32, i64, Sent)> {
    let mut received = Vec::new();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while received.len() < count && std::time::Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.expect("consume error");
        let header = message.headers().and_then(|h| {
            h.get_as::<[u8]>(0)
                .ok()
                .and_then(|h| h.value.map(<[u8]>::to_vec))
        });
        received.push((
            message.partition(),
            message.offset(),
            Sent {
                key: message.key().unwrap_or_default().to_vec(),
                value: message.payload().unwrap_or_default().to_vec(),
                header: header.unwrap_or_default(),
                timestamp: message.timestamp().to_millis().unwrap_or(-1),
            },
        ));
    }
    received
}

async fn round_trip(compression: &str) {
    let broker = BrokerProcess::start(&[]);
    let topic = format!("round-trip-{compression}");
    create_topic(&broker, &topic, 3).await;
    let producer = producer(
        &broker,
        &[("compression.type", compression), ("acks", "all")],
    );
    let base_timestamp = 1_700_000_000_000i64;
    let mut sent = Vec::new();
    let mut deliveries = Vec::new();
    for i in 0..3000usize {
        let record = Sent {
            key: format!("key-{}", i % 17).into_bytes(),
            value: format!("value-{i}-{}", "x".repeat(i % 300)).into_bytes(),
            header: format!("h{i}").into_bytes(),
            timestamp: base_timestamp + i as i64,
        };
        let future = producer.send_result(
            FutureRecord::to(&topic)
                .key(&record.key)
                .payload(&record.value)
                .timestamp(record.timestamp)
                .headers(OwnedHeaders::new().insert(Header {
                    key: "h",
                    value: Some(&record.header),
                })),
        );
        deliveries.push(future.expect("queue full"));
        sent.push(record);
    }
    let mut partition_of_key: HashMap<Vec<u8>, i32> = HashMap::new();
    for (delivery, record) in deliveries.into_iter().zip(&sent) {
        let partition = delivery
            .await
            .expect("canceled")
            .expect("delivery failed")
            .partition;
        let previous = partition_of_key.insert(record.key.clone(), partition);
        assert!(
            previous.is_none() || previous == Some(partition),
            "a key moved partitions"
        );
    }

    let consumer = consumer(&broker, &topic, 3);
    let received = consume(&consumer, sent.len());
    assert_eq!(received.len(), sent.len(), "records received");
    // Per partition: offsets 0, 1, 2, ... and records in the order sent.
    for partition in 0..3 {
        let got: Vec<&(i32, i64, Sent)> = received
            .iter()
            .filter(|(p, _, _)| *p == partition)
            .collect();
        let offsets: Vec<i64> = got.iter().map(|(_, offset, _)| *offset).collect();
        assert_eq!(
            offsets,
            (0..got.len() as i64).collect::<Vec<_>>(),
            "partition {partition} offsets"
        );
        let expected: Vec<&Sent> = sent
            .iter()
            .filter(|r| partition_of_key[&r.key] == partition)
            .collect();
        let got: Vec<&Sent> = got.iter().map(|(_, _, record)| record).collect();
        assert_eq!(got, expected, "partition {partition} contents");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn round_trip_uncompressed() {
    round_trip("none").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn round_trip_gzip() {
    round_trip("gzip").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn round_trip_snappy() {
    round_trip("snappy").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn round_trip_lz4() {
    round_trip("lz4").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn round_trip_zstd() {
    round_trip("zstd").await;
}

/// A consumer already waiting at the end of the log gets new records as
/// soon as they are produced (the fetch long-poll is woken by the append).
#[tokio::test(flavor = "multi_thread")]
async fn waiting_consumer_sees_new_records() {
    let broker = BrokerProcess::start(&["num.partitions=1"]);
    let topic = "long-poll";
    create_topic(&broker, topic, 1).await;
    let consumer = consumer(&broker, topic, 1);
    assert!(consume(&consumer, 1).len() <= 1);
    let producer = producer(&broker, &[]);
    for i in 0..10 {
        producer
            .send(
                FutureRecord::to(topic)
                    .key("k")
                    .payload(&format!("late-{i}")),
                TIMEOUT,
            )
            .await
            .expect("delivery");
    }
    let received = consume(&consumer, 10);
    let values: Vec<Vec<u8>> = received
        .into_iter()
        .map(|(_, _, record)| record.value)
        .collect();
    let expected: Vec<Vec<u8>> = (0..10).map(|i| format!("late-{i}").into_bytes()).collect();
    assert_eq!(values, expected);
}

/// Metadata for an unknown topic creates it with num.partitions partitions
/// when the client allows it (librdkafka consumers do not by default), and
/// the broker's advertised address is the listener.
#[tokio::test(flavor = "multi_thread")]
async fn metadata_auto_creates_topics_when_allowed() {
    let broker = BrokerProcess::start(&["num.partitions=4"]);
    let client = |allow: &str| -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap())
            .set("allow.auto.create.topics", allow)
            .create()
            .expect("client")
    };
    let metadata = client("false")
        .fetch_metadata(Some("not-created"), TIMEOUT)
        .expect("metadata");
    assert_eq!(
        metadata.topics()[0].error(),
        Some(rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
    );

    let metadata = client("true")
        .fetch_metadata(Some("auto-created"), TIMEOUT)
        .expect("metadata");
    let topic = &metadata.topics()[0];
    assert_eq!(topic.name(), "auto-created");
    assert!(topic.error().is_none(), "{:?}", topic.error());
    assert_eq!(topic.partitions().len(), 4);
    assert_eq!(metadata.brokers().len(), 1);
    assert_eq!(metadata.brokers()[0].port() as u16, broker.port);

    let all = client("false")
        .fetch_metadata(None, TIMEOUT)
        .expect("metadata");
    let names: Vec<&str> = all
        .topics()
        .iter()
        .map(rdkafka::metadata::MetadataTopic::name)
        .collect();
    assert_eq!(names, ["auto-created"]);
}
