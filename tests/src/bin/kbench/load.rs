//! Load through librdkafka (the `rdkafka` crate): produce as fast as the
//! broker acknowledges, consume a topic from its start, and end-to-end
//! latency at a fixed offered rate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

pub(crate) async fn create_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    replication: i32,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(300)));
    let results = admin
        .create_topics(
            &[NewTopic::new(
                topic,
                partitions,
                TopicReplication::Fixed(replication),
            )],
            &options,
        )
        .await?;
    for result in results {
        if let Err((topic, code)) = result {
            bail!("creating {topic}: {code}");
        }
    }
    Ok(())
}

/// Counts delivery reports.
#[derive(Default)]
pub(crate) struct Deliveries {
    acked: AtomicU64,
    failed: AtomicU64,
}

#[derive(Clone, Default)]
pub(crate) struct Counting(Arc<Deliveries>);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.acked.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.0.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// A producer with `acks` "0", "1", "all", or "idempotent" (acks=all with
/// `enable.idempotence`).
pub(crate) fn producer(
    bootstrap: &str,
    acks: &str,
    linger_ms: u32,
) -> anyhow::Result<(ThreadedProducer<Counting>, Counting)> {
    let context = Counting::default();
    let (acks, idempotent) = match acks {
        "idempotent" => ("all", true),
        acks => (acks, false),
    };
    let producer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", acks)
        .set("linger.ms", linger_ms.to_string())
        .set("batch.size", "1000000")
        .set("batch.num.messages", "100000")
        .set("queue.buffering.max.messages", "2000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("compression.type", "none")
        .set("enable.idempotence", idempotent.to_string())
        .create_with_context(context.clone())?;
    Ok((producer, context))
}

/// What a produce phase did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Produced {
    pub records: u64,
    pub bytes: u64,
    pub seconds: f64,
}

impl Produced {
    pub(crate) fn records_per_second(&self) -> f64 {
        self.records as f64 / self.seconds
    }
    pub(crate) fn bytes_per_second(&self) -> f64 {
        self.bytes as f64 / self.seconds
    }
}

/// Produces `record_bytes`-byte values (keys: a counter, if `keyed`) to
/// `topic` for `duration`, as fast as librdkafka's queue takes them, then
/// waits for every delivery report. Counts acknowledged records only, over
/// the time to the last acknowledgement.
pub(crate) fn produce(
    bootstrap: &str,
    topic: &str,
    record_bytes: usize,
    acks: &str,
    keyed: bool,
    duration: Duration,
) -> anyhow::Result<Produced> {
    produce_while(bootstrap, topic, record_bytes, acks, keyed, |_, started| {
        started.elapsed() < duration
    })
}

/// [`produce`] of `count` records (rounded up to a multiple of 1,024).
pub(crate) fn produce_records(
    bootstrap: &str,
    topic: &str,
    record_bytes: usize,
    acks: &str,
    count: u64,
) -> anyhow::Result<Produced> {
    produce_while(bootstrap, topic, record_bytes, acks, false, |sent, _| {
        sent < count
    })
}

fn produce_while(
    bootstrap: &str,
    topic: &str,
    record_bytes: usize,
    acks: &str,
    keyed: bool,
    more: impl Fn(u64, Instant) -> bool,
) -> anyhow::Result<Produced> {
    let (producer, deliveries) = producer(bootstrap, acks, 5)?;
    let payload: Vec<u8> = (0..record_bytes).map(|i| b'a' + (i % 26) as u8).collect();
    let started = Instant::now();
    let mut sent = 0u64;
    while !sent.is_multiple_of(1024) || more(sent, started) {
        let key = sent.to_be_bytes();
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).payload(&payload);
        if keyed {
            record = record.key(&key);
        }
        match producer.send(record) {
            Ok(()) => sent += 1,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                std::thread::sleep(Duration::from_micros(200));
            }
            Err((error, _)) => bail!("produce: {error}"),
        }
    }
    producer
        .flush(Timeout::After(Duration::from_secs(120)))
        .context("flushing the producer")?;
    let seconds = started.elapsed().as_secs_f64();
    let acked = deliveries.0.acked.load(Ordering::Relaxed);
    let failed = deliveries.0.failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} of {sent} records failed");
    }
    Ok(Produced {
        records: acked,
        bytes: acked * record_bytes as u64,
        seconds,
    })
}

fn consumer(bootstrap: &str) -> anyhow::Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "kbench")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .set("fetch.message.max.bytes", "1048576")
        .set("queued.max.messages.kbytes", "262144")
        .create()?)
}

/// Reads partition 0 of `topic` from its log start to its high watermark;
/// the time from the first poll to the last record.
pub(crate) fn consume_all(bootstrap: &str, topic: &str) -> anyhow::Result<Produced> {
    let consumer = consumer(bootstrap)?;
    let (low, high) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(30))?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Offset(low))?;
    consumer.assign(&assignment)?;
    let started = Instant::now();
    let (mut count, mut bytes) = (0u64, 0u64);
    let deadline = started + Duration::from_secs(600);
    // Up to the high watermark seen at the start. (Retention may delete the
    // oldest segments meanwhile: the consumer then resets to the new start,
    // `auto.offset.reset=earliest`, and reads fewer records; they are counted.)
    let mut next = low;
    while next < high {
        if Instant::now() > deadline {
            bail!("consumed only {count} records (up to offset {next} of {high}) in 600 s");
        }
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message?;
            count += 1;
            bytes += message.payload_len() as u64;
            next = message.offset() + 1;
        }
    }
    Ok(Produced {
        records: count,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The send-time stamp of the record sent before the clock starts.
const PRIMING_STAMP: u64 = u64::MAX;

/// End-to-end latencies in microseconds.
pub(crate) struct Latency {
    pub histogram: Histogram<u64>,
    pub received: u64,
    pub sent: u64,
}

/// Sends `rate` records/s of `record_bytes` bytes for `duration`, each
/// carrying its *intended* send time (start + i / rate), and measures, in a
/// consumer, receive time minus intended send time: a producer that falls
/// behind schedule adds its delay to the figures (no coordinated omission).
/// The first `warmup` is not recorded.
pub(crate) fn latency(
    bootstrap: &str,
    topic: &str,
    record_bytes: usize,
    rate: f64,
    duration: Duration,
    warmup: Duration,
    acks: &'static str,
) -> anyhow::Result<Latency> {
    let consumer = consumer(bootstrap)?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    // Let the consumer connect and start long-polling before the clock starts.
    let _ = consumer.poll(Duration::from_millis(1000));

    let total = (rate * duration.as_secs_f64()) as u64;
    let (ready, producer_ready) = std::sync::mpsc::sync_channel::<()>(1);
    let (starting, start_at) = std::sync::mpsc::sync_channel::<Instant>(1);
    let sender = {
        let bootstrap = bootstrap.to_string();
        let topic = topic.to_string();
        std::thread::spawn(move || -> anyhow::Result<u64> {
            let (producer, _) = producer(&bootstrap, acks, 0)?;
            // One record delivered before the clock starts: the producer has
            // the topic's metadata and its leader connection by then, so
            // that start-up is not counted as latency.
            producer
                .send(BaseRecord::<(), [u8]>::to(&topic).payload(&PRIMING_STAMP.to_le_bytes()))
                .map_err(|(error, _)| anyhow::anyhow!("produce: {error}"))?;
            producer.flush(Timeout::After(Duration::from_secs(30)))?;
            ready.send(())?;
            let start = start_at.recv()?;
            let interval = Duration::from_secs_f64(1.0 / rate);
            let mut payload = vec![b'x'; record_bytes.max(8)];
            for i in 0..total {
                let intended = start + interval.mul_f64(i as f64);
                let now = Instant::now();
                if intended > now {
                    std::thread::sleep(intended - now);
                }
                let nanos = (intended - start).as_nanos() as u64;
                payload[..8].copy_from_slice(&nanos.to_le_bytes());
                loop {
                    match producer.send(BaseRecord::<(), [u8]>::to(&topic).payload(&payload)) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                            std::thread::sleep(Duration::from_micros(100));
                        }
                        Err((error, _)) => bail!("produce: {error}"),
                    }
                }
            }
            producer.flush(Timeout::After(Duration::from_secs(60)))?;
            Ok(total)
        })
    };
    if producer_ready.recv().is_err() {
        sender.join().expect("producer thread")?;
        bail!("the latency producer stopped before it started");
    }
    let start = Instant::now();
    starting.send(start)?;

    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut received = 0u64;
    let deadline = start + duration + Duration::from_secs(60);
    while received < total && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let now = Instant::now();
        let message = message?;
        let payload = message.payload().unwrap_or_default();
        let Some(stamp) = payload.get(..8) else {
            continue;
        };
        let stamp = u64::from_le_bytes(stamp.try_into()?);
        if stamp == PRIMING_STAMP {
            continue;
        }
        received += 1;
        let intended = Duration::from_nanos(stamp);
        if intended < warmup {
            continue;
        }
        let latency = now.saturating_duration_since(start + intended);
        histogram.saturating_record(latency.as_micros().max(1) as u64);
    }
    let sent = sender.join().expect("producer thread")?;
    anyhow::ensure!(
        received == sent,
        "the latency consumer received {received} of {sent} records"
    );
    Ok(Latency {
        histogram,
        received,
        sent,
    })
}

/// What a transactions phase did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transactions {
    pub commits: u64,
    pub records: u64,
    pub seconds: f64,
}

/// One transactional producer, one transaction after the other for
/// `duration`: each writes `records_per_partition` records of 100 B to
/// each of `partitions` partitions of `topic`, then commits.
pub(crate) fn transactions(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    records_per_partition: usize,
    duration: Duration,
) -> anyhow::Result<Transactions> {
    let (producer, deliveries) = {
        let context = Counting::default();
        // A BaseProducer: its commit serves the delivery reports itself
        // (a ThreadedProducer's thread polls every 100 ms, which a commit
        // would wait for).
        let producer: rdkafka::producer::BaseProducer<Counting> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("transactional.id", format!("kbench-{topic}"))
            .set("linger.ms", "0")
            .create_with_context(context.clone())?;
        (producer, context)
    };
    producer.init_transactions(Timeout::After(Duration::from_secs(30)))?;
    let payload = [b'x'; 100];
    let started = Instant::now();
    let mut commits = 0u64;
    while started.elapsed() < duration {
        producer.begin_transaction()?;
        for partition in 0..partitions {
            for _ in 0..records_per_partition {
                producer
                    .send(
                        BaseRecord::<(), [u8]>::to(topic)
                            .partition(partition)
                            .payload(&payload),
                    )
                    .map_err(|(error, _)| anyhow::anyhow!("produce: {error}"))?;
            }
        }
        // The crate's flush serves the delivery reports as they come; left
        // to the commit, librdkafka's own flush waits in 100 ms steps.
        producer.flush(Timeout::After(Duration::from_secs(60)))?;
        producer.commit_transaction(Timeout::After(Duration::from_secs(60)))?;
        commits += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    let failed = deliveries.0.failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} transactional records failed");
    }
    Ok(Transactions {
        commits,
        records: deliveries.0.acked.load(Ordering::Relaxed),
        seconds,
    })
}
