//! `kbench --cluster`: three brokers on loopback (127.0.0.1-3) on an etcd
//! of their own, RF=3, `min.insync.replicas=2`: acks=all throughput as a
//! ratio of one standalone broker's acks=1 in the same run, end-to-end
//! latency at a fixed rate with acks=all, and failover time — from a
//! leader's `kill -9` to the first acknowledgement by its successor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use e2e::{BrokerProcess, Cluster, SESSION_TIMEOUT_MS};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::util::Timeout;
use rdkafka::ClientContext;

use crate::procstat::{self, CpuMeter};
use crate::{load, phase, txn, Args, Report, MB, MIB};

/// Failovers measured per run.
const FAILOVERS: usize = 3;

/// Records of 1 KiB in a protocol-level producer's batch: about 0.9 MB, as
/// librdkafka's (`batch.size` 1,000,000), under `message.max.bytes`.
const RAW_BATCH_RECORDS: usize = 900;

pub(crate) fn cluster_phases(
    args: &Args,
    runtime: &tokio::runtime::Runtime,
    report: &mut Report,
) -> anyhow::Result<()> {
    let duration = Duration::from_secs(args.duration);
    let retention = format!("log.retention.bytes={}", args.retention_mib * MIB);
    let segment = format!(
        "log.segment.bytes={}",
        (args.retention_mib * MIB / 8).max(MIB)
    );
    let common = [
        retention.as_str(),
        segment.as_str(),
        "log.retention.check.interval.ms=1000",
    ];

    // Both throughput phases are measured in the steady state of a log at
    // its retention: each first writes its topic past `log.retention.bytes`
    // (untimed), so that retention frees old segments while the phase runs
    // and appends reuse their pages. Before that, every append takes fresh
    // memory, which on a VM that hands freed memory back to its host costs
    // a fault on the host per page: three times per byte for three
    // replicas, once for the single broker.
    let warm_up_records = (args.retention_mib * MIB + args.retention_mib * MIB / 4) / 1024;
    // The single-broker figures the cluster is compared with, in this run:
    // librdkafka's, and a protocol-level producer's (five requests in
    // flight) after it on the same topic, at its retention by then.
    let (single, single_raw) = {
        let broker = BrokerProcess::start(&[&common[..], &["num.partitions=1"]].concat());
        let bootstrap = broker.bootstrap();
        runtime.block_on(load::create_topic(&bootstrap, "single-1024-1", 1, 1))?;
        phase("single broker: warm-up");
        load::produce_records(&bootstrap, "single-1024-1", 1024, "1", warm_up_records)?;
        phase("single broker: acks=1, librdkafka");
        let single = load::produce(&bootstrap, "single-1024-1", 1024, "1", false, duration)?;
        let pid = broker.pid().context("the single broker is not running")?;
        phase("single broker: acks=1, protocol-level");
        let raw = raw_produce(
            runtime,
            &bootstrap,
            "single-1024-1",
            1,
            false,
            &[pid],
            duration,
        )?;
        (single, raw)
    };

    let mut overrides = common.to_vec();
    overrides.extend([
        "default.replication.factor=3",
        "min.insync.replicas=2",
        "offsets.topic.replication.factor=3",
    ]);
    // Experiments: broker properties for the three brokers (not the single
    // one), space-separated `name=value`, e.g. a larger
    // `replica.fetch.max.bytes`.
    let extra = std::env::var("KBENCH_CLUSTER_CONFIG").unwrap_or_default();
    overrides.extend(extra.split_whitespace());
    let mut cluster = Cluster::start(3, &overrides);
    let bootstrap = (1..=3)
        .map(|id| cluster.bootstrap(id))
        .collect::<Vec<_>>()
        .join(",");
    let pids: Vec<u32> = cluster
        .brokers
        .iter()
        .filter_map(e2e::BrokerProcess::pid)
        .collect();
    create_replicated(runtime, &bootstrap, "cluster-1024-all")?;
    phase("RF=3: warm-up");
    load::produce_records(&bootstrap, "cluster-1024-all", 1024, "all", warm_up_records)?;
    phase("RF=3: acks=all, librdkafka");
    let cpu: Vec<CpuMeter> = pids.iter().map(|pid| CpuMeter::start(*pid)).collect();
    let replicated = load::produce(&bootstrap, "cluster-1024-all", 1024, "all", false, duration)?;
    let cluster_cpu: f64 = cpu.into_iter().map(|meter| meter.read().0).sum();
    create_replicated(runtime, &bootstrap, "cluster-1024-idempotent")?;
    phase("RF=3: acks=all, idempotent, librdkafka");
    let idempotent = load::produce(
        &bootstrap,
        "cluster-1024-idempotent",
        1024,
        "idempotent",
        false,
        duration,
    )?;
    // acks=all at the protocol level, five requests in flight (the most an
    // idempotent producer may have), plain and idempotent, on the same
    // topic (at its retention). librdkafka keeps one idempotent Produce
    // request in flight per partition: it checks the messages in flight,
    // not the requests, against its limit of five (rdkafka_broker.c, 2.12;
    // librdkafka PR #4989 is open), so its idempotent row is the client's.
    let leader = cluster.bootstrap(leader_of(&bootstrap, "cluster-1024-all")?);
    let raw = [false, true]
        .into_iter()
        .map(|idempotent| {
            phase(if idempotent {
                "RF=3: acks=all, idempotent, protocol-level"
            } else {
                "RF=3: acks=all, protocol-level"
            });
            raw_produce(
                runtime,
                &leader,
                "cluster-1024-all",
                -1,
                idempotent,
                &pids,
                duration,
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    create_replicated(runtime, &bootstrap, "cluster-1024-1")?;
    phase("RF=3: acks=1, librdkafka");
    let replicated_acks_1 =
        load::produce(&bootstrap, "cluster-1024-1", 1024, "1", false, duration)?;

    report.line("## Cluster: 3 brokers on loopback, RF=3, min.insync.replicas=2 (1 KiB records, one partition)");
    report.line("");
    report.line(
        "| setup | acks | records/s | MB/s | of single-broker acks=1 | CPU s/GB (all brokers) |",
    );
    report.line("|---|---|---:|---:|---:|---:|");
    report.line(format!(
        "| single broker | 1 | {:.0} | {:.1} | 1.00× | |",
        single.records_per_second(),
        single.bytes_per_second() / MB,
    ));
    report.line(single_raw.row("single broker", "1, protocol-level", single_raw.rate()));
    for (produced, acks, cpu) in [
        (&replicated, "all", Some(cluster_cpu)),
        (&idempotent, "all, idempotent", None),
        (&replicated_acks_1, "1", None),
    ] {
        report.line(format!(
            "| RF=3 | {acks} | {:.0} | {:.1} | {:.2}× | {} |",
            produced.records_per_second(),
            produced.bytes_per_second() / MB,
            produced.records_per_second() / single.records_per_second(),
            cpu.map(|cpu| format!("{:.2}", cpu / (produced.bytes as f64 / 1e9)))
                .unwrap_or_default(),
        ));
    }
    for (raw, acks) in raw
        .iter()
        .zip(["all, protocol-level", "all, idempotent, protocol-level"])
    {
        report.line(raw.row("RF=3", acks, single_raw.rate()));
    }
    report.line("");
    report.line(format!(
        "The single-broker and RF=3 acks=all phases each first write {} MiB to their topic, untimed, so that they run with the log at its retention ({} MiB): the steady state, in which retention frees what the appends reuse. The protocol-level rows (a producer without a client library: five Produce requests in flight, {RAW_BATCH_RECORDS} × 1 KiB per batch, to the leader) write to the same topics after them, and are compared with the protocol-level single broker.",
        warm_up_records * 1024 / MIB,
        args.retention_mib,
    ));
    report.line("");

    create_replicated(runtime, &bootstrap, "cluster-latency")?;
    // As the single-broker quiet latency phase: once the kernel has written
    // back what the throughput phases left dirty (gigabytes here, three
    // brokers' copies), which otherwise stalls appends for 100-250 ms.
    procstat::wait_for_writeback(64 * MIB, Duration::from_secs(60));
    let dirty = procstat::dirty_bytes();
    phase("RF=3: latency");
    let latency = load::latency(
        &bootstrap,
        "cluster-latency",
        1024,
        args.latency_rate,
        Duration::from_secs(args.latency_duration),
        Duration::from_secs(1),
        "all",
    )?;
    let h = &latency.histogram;
    let ms = |micros: u64| micros as f64 / 1000.0;
    report.line(format!(
        "End-to-end latency at {:.0} records/s × 1 KiB, RF=3, acks=all (linger.ms=0; intended send time to receipt; {:.0} MiB of page cache dirty at the start): p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} records).",
        args.latency_rate,
        dirty as f64 / MIB as f64,
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
        latency.received,
    ));
    report.line("");

    phase("RF=3: failovers");
    let failovers = failovers(runtime, &mut cluster, &bootstrap)?;
    report.line(format!(
        "Failover (broker.session.timeout.ms={SESSION_TIMEOUT_MS}; kill -9 of the leader of a partition written at 1,000 records/s, acks=all, to the first acknowledgement after it): {} s.",
        failovers
            .iter()
            .map(|d| format!("{:.2}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    report.line("");
    Ok(())
}

/// A protocol-level produce phase and the CPU the brokers `pids` spent in
/// it.
struct RawPhase {
    done: txn::Produced,
    cpu_seconds: f64,
}

impl RawPhase {
    fn rate(&self) -> f64 {
        self.done.records as f64 / self.done.seconds
    }

    fn row(&self, setup: &str, acks: &str, single_rate: f64) -> String {
        format!(
            "| {setup} | {acks} | {:.0} | {:.1} | {:.2}× | {:.2} |",
            self.rate(),
            self.done.bytes as f64 / self.done.seconds / MB,
            self.rate() / single_rate,
            self.cpu_seconds / (self.done.bytes as f64 / 1e9),
        )
    }
}

fn raw_produce(
    runtime: &tokio::runtime::Runtime,
    leader: &str,
    topic: &str,
    acks: i16,
    idempotent: bool,
    pids: &[u32],
    duration: Duration,
) -> anyhow::Result<RawPhase> {
    let cpu: Vec<CpuMeter> = pids.iter().map(|pid| CpuMeter::start(*pid)).collect();
    let done = runtime.block_on(txn::produce(
        leader,
        topic,
        acks,
        idempotent,
        RAW_BATCH_RECORDS,
        1024,
        duration,
    ))?;
    let cpu_seconds = cpu.into_iter().map(|meter| meter.read().0).sum();
    Ok(RawPhase { done, cpu_seconds })
}

fn create_replicated(
    runtime: &tokio::runtime::Runtime,
    bootstrap: &str,
    topic: &str,
) -> anyhow::Result<()> {
    // The brokers register within a second or two of starting.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match runtime.block_on(load::create_topic(bootstrap, topic, 1, 3)) {
            Ok(()) => return Ok(()),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(500)),
            Err(error) => return Err(error.context(format!("creating {topic} with RF=3"))),
        }
    }
}

/// Times as nanoseconds since `start`: when the leader was killed, and the
/// first acknowledgement of a record sent after that (so never one the dead
/// leader answered just before it died).
struct Failover {
    start: Instant,
    killed: AtomicU64,
    first_ack_after: AtomicU64,
}

impl Failover {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

#[derive(Clone)]
struct Stamping(Arc<Failover>);

impl ClientContext for Stamping {}

impl ProducerContext for Stamping {
    /// When the record was sent.
    type DeliveryOpaque = Box<u64>;
    fn delivery(&self, result: &DeliveryResult<'_>, sent: Box<u64>) {
        if result.is_ok() && *sent >= self.0.killed.load(Ordering::Relaxed) {
            let _ = self.0.first_ack_after.compare_exchange(
                0,
                self.0.now(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }
}

/// Kills the leader of a one-partition RF=3 topic under a steady acks=all
/// load, `FAILOVERS` times (restarting it and waiting for its replica to
/// catch up in between); each time, from the kill to the first
/// acknowledgement after it.
fn failovers(
    runtime: &tokio::runtime::Runtime,
    cluster: &mut Cluster,
    bootstrap: &str,
) -> anyhow::Result<Vec<Duration>> {
    let topic = "cluster-failover";
    create_replicated(runtime, bootstrap, topic)?;
    let stamps = Stamping(Arc::new(Failover {
        start: Instant::now(),
        killed: AtomicU64::new(u64::MAX),
        first_ack_after: AtomicU64::new(0),
    }));
    let producer: ThreadedProducer<Stamping> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("message.timeout.ms", "60000")
        .set("topic.metadata.refresh.interval.ms", "250")
        .set("retry.backoff.ms", "50")
        .set("retry.backoff.max.ms", "250")
        .create_with_context(stamps.clone())?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        let producer = producer.clone();
        let clock = stamps.0.clone();
        std::thread::spawn(move || {
            let payload = vec![b'f'; 1024];
            while !stop.load(Ordering::Relaxed) {
                let record =
                    BaseRecord::<(), [u8], Box<u64>>::with_opaque_to(topic, Box::new(clock.now()))
                        .payload(&payload);
                let _ = producer.send(record);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let mut measured = Vec::new();
    for _ in 0..FAILOVERS {
        std::thread::sleep(Duration::from_secs(2));
        let leader = leader_of(bootstrap, topic)?;
        let failover = &stamps.0;
        failover.first_ack_after.store(0, Ordering::Relaxed);
        let killed = failover.now();
        failover.killed.store(killed, Ordering::Relaxed);
        cluster.broker(leader).kill9();
        let deadline = Instant::now() + Duration::from_secs(60);
        let acked = loop {
            match failover.first_ack_after.load(Ordering::Relaxed) {
                0 if Instant::now() > deadline => {
                    bail!("no acknowledgement within 60 s of killing broker {leader}")
                }
                0 => std::thread::sleep(Duration::from_millis(1)),
                acked => break acked,
            }
        };
        measured.push(Duration::from_nanos(acked - killed));
        failover.killed.store(u64::MAX, Ordering::Relaxed);
        cluster.broker(leader).restart();
        wait_in_sync(bootstrap, topic)?;
    }
    stop.store(true, Ordering::Relaxed);
    sender.join().expect("failover sender");
    producer
        .flush(Timeout::After(Duration::from_secs(60)))
        .context("flushing the failover producer")?;
    Ok(measured)
}

fn metadata_client(bootstrap: &str) -> anyhow::Result<rdkafka::consumer::BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?)
}

fn leader_of(bootstrap: &str, topic: &str) -> anyhow::Result<i32> {
    use rdkafka::consumer::Consumer;
    let client = metadata_client(bootstrap)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(metadata) = client.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            if let Some(leader) = metadata
                .topics()
                .first()
                .and_then(|t| t.partitions().first())
                .map(rdkafka::metadata::MetadataPartition::leader)
                .filter(|leader| *leader > 0)
            {
                return Ok(leader);
            }
        }
        if Instant::now() > deadline {
            bail!("{topic} has no leader");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_in_sync(bootstrap: &str, topic: &str) -> anyhow::Result<()> {
    use rdkafka::consumer::Consumer;
    let client = metadata_client(bootstrap)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(metadata) = client.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            let in_sync = metadata
                .topics()
                .first()
                .and_then(|t| t.partitions().first())
                .is_some_and(|p| p.leader() > 0 && p.isr().len() == 3);
            if in_sync {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{topic}'s replicas did not get back in sync");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
