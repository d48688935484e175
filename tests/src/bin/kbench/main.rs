//! `kbench`: kbroker's benchmark. Starts a broker (the release binary by
//! default) on a fresh data directory, measures the machine's own limits
//! (loopback TCP, sequential disk writes), then drives the broker with
//! librdkafka: produce throughput, consume throughput, end-to-end latency at
//! a fixed rate, and (with `--scale`) partitions and connections. Prints a
//! Markdown report; see BENCHMARKS.md.
//!
//! ```sh
//! cargo build --release -p broker -p e2e
//! target/release/kbench                 # about 5 minutes
//! target/release/kbench --scale         # plus partitions and connections
//! ```

mod cluster;
mod load;
mod machine;
mod metrics;
mod procstat;
mod scale;
mod security;
mod txn;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use e2e::BrokerProcess;
use procstat::{CpuMeter, PeakRss};

const MB: f64 = 1_000_000.0;
const MIB: u64 = 1 << 20;
const GB: f64 = 1_000_000_000.0;

#[derive(Parser, Debug)]
#[command(
    about = "kbroker's benchmark: throughput, latency and scale against the machine's limits"
)]
struct Args {
    /// The broker binary (default: target/release/kbroker, or KBROKER_BIN).
    #[arg(long)]
    broker_bin: Option<PathBuf>,
    /// Seconds of each produce phase.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 30)]
    latency_duration: u64,
    /// Offered rate of the latency phase, records/s.
    #[arg(long, default_value_t = 10_000.0)]
    latency_rate: f64,
    /// Also measure 1, 100, 1,000 and 10,000 partitions and 1, 100 and
    /// 1,000 connections.
    #[arg(long)]
    scale: bool,
    /// Seconds of each scale step.
    #[arg(long, default_value_t = 10)]
    scale_duration: u64,
    /// The most MiB the buffered disk probe writes (it stops after
    /// --duration seconds otherwise); the fdatasync probe writes an eighth.
    #[arg(long, default_value_t = 8192)]
    disk_mib: u64,
    /// The broker's `log.retention.bytes`: bounds the disk a run uses (each
    /// produce phase has its own topic).
    #[arg(long, default_value_t = 2048)]
    retention_mib: u64,
    /// A smoke run: a few seconds per phase, small scale steps.
    #[arg(long)]
    quick: bool,
    /// Also measure a 3-broker cluster on loopback (RF=3, acks=all) against
    /// one broker (acks=1), its latency, and failover time.
    #[arg(long)]
    cluster: bool,
    /// Only the cluster measurements (implies --cluster).
    #[arg(long)]
    cluster_only: bool,
    /// Also measure SASL_SSL (TLS 1.3, SCRAM-SHA-512) against PLAINTEXT
    /// and SCRAM handshakes per second.
    #[arg(long)]
    security: bool,
    /// Only the security measurements (implies --security).
    #[arg(long)]
    security_only: bool,
    /// Also measure produce with the metrics listener on (scraped every
    /// second) against off, in alternating rounds.
    #[arg(long)]
    metrics: bool,
    /// Only the metrics measurements (implies --metrics).
    #[arg(long)]
    metrics_only: bool,
    /// Also write the report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

struct Report {
    text: String,
}

/// A phase starts: one line on stderr (the report goes to stdout), with
/// the wall-clock time, so that a profiler or an observer can pick a
/// phase's window out of a long run.
pub fn phase(name: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    eprintln!("kbench: {:.3} {name}", now.as_secs_f64());
}

impl Report {
    fn line(&mut self, line: impl AsRef<str>) {
        println!("{}", line.as_ref());
        self.text.push_str(line.as_ref());
        self.text.push('\n');
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.duration = args.duration.min(3);
        args.latency_duration = args.latency_duration.min(3);
        args.scale_duration = args.scale_duration.min(2);
        args.disk_mib = args.disk_mib.min(64);
        args.retention_mib = args.retention_mib.min(256);
    }
    let broker_bin = args
        .broker_bin
        .clone()
        .or_else(|| std::env::var_os("KBROKER_BIN").map(PathBuf::from))
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/kbroker")
        });
    anyhow::ensure!(
        broker_bin.exists(),
        "broker binary {} not found: run `cargo build --release -p broker` (or pass --broker-bin)",
        broker_bin.display()
    );
    // BrokerProcess reads both.
    std::env::set_var("KBROKER_BIN", &broker_bin);
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "warn");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut report = Report {
        text: String::new(),
    };
    run(&args, &broker_bin, &runtime, &mut report)?;
    if let Some(out) = &args.out {
        std::fs::write(out, &report.text).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

fn run(
    args: &Args,
    broker_bin: &std::path::Path,
    runtime: &tokio::runtime::Runtime,
    report: &mut Report,
) -> anyhow::Result<()> {
    let duration = Duration::from_secs(args.duration);
    report.line("# kbench");
    report.line("");
    report.line(format!("- machine: {}", machine_description()));
    report.line(format!("- broker: {}", broker_bin.display()));
    report.line(format!(
        "- produce phases {} s each, latency phase {} s{}",
        args.duration,
        args.latency_duration,
        if args.quick { " (--quick)" } else { "" }
    ));
    report.line("");
    if args.cluster_only {
        return cluster::cluster_phases(args, runtime, report);
    }
    if args.security_only {
        return security::security_phases(args, runtime, report);
    }
    if args.metrics_only {
        return metrics::metrics_phases(args, runtime, report);
    }

    let retention = format!("log.retention.bytes={}", args.retention_mib * MIB);
    let segment = format!(
        "log.segment.bytes={}",
        (args.retention_mib * MIB / 8).max(MIB)
    );
    let broker = BrokerProcess::start(&[
        "num.partitions=1",
        &retention,
        &segment,
        "log.retention.check.interval.ms=1000",
    ]);
    let pid = broker.pid().context("broker pid")?;
    std::thread::sleep(Duration::from_secs(1));
    let idle_rss = procstat::rss_bytes(&pid.to_string());
    let bootstrap = broker.bootstrap();

    // Latency first, on a quiet machine (before the disk probes too, whose
    // writeback can linger; and after what an earlier run left to write
    // back); again after the throughput phases.
    procstat::wait_for_writeback(16 * MIB, Duration::from_secs(60));
    let quiet = latency_row(
        args,
        runtime,
        &bootstrap,
        "latency-quiet",
        "first, on a quiet machine",
    )?;

    // The machine's limits, on the disk that holds the broker's data.
    let scratch = tempfile::tempdir()?;
    let tcp = machine::loopback_tcp(Duration::from_secs(if args.quick { 1 } else { 5 }))?;
    // Buffered: as long as a produce phase (the broker's writes go through
    // the same page cache), up to --disk-mib.
    let disk = machine::disk_write(scratch.path(), duration, args.disk_mib * MIB, None)?;
    let disk_bandwidth = disk.bytes_per_second;
    let synced_mib = (args.disk_mib / 8).max(16);
    let disk_synced = machine::disk_write(scratch.path(), duration, synced_mib * MIB, Some(MIB))?;
    report.line("## The machine's limits");
    report.line("");
    report.line("| limit | MB/s | CPU s/GB |");
    report.line("|---|---:|---:|");
    report.line(format!("| loopback TCP, one stream | {:.0} | |", tcp / MB));
    report.line(format!(
        "| sequential write, buffered, fsync at the end (≤ {} s, ≤ {} MiB) | {:.0} | {:.2} |",
        args.duration,
        args.disk_mib,
        disk.bytes_per_second / MB,
        disk.cpu_seconds_per_gb
    ));
    report.line(format!(
        "| sequential write, fdatasync per MiB (≤ {} MiB) | {:.0} | {:.2} |",
        synced_mib,
        disk_synced.bytes_per_second / MB,
        disk_synced.cpu_seconds_per_gb
    ));
    report.line("");
    drop(scratch);

    report.line("## Produce (librdkafka, one partition, linger.ms=5, no compression)");
    report.line("");
    report.line("| records | acks | records/s | MB/s | of disk (buffered) | of loopback TCP | broker CPU s/GB | kbench CPU s/GB | broker peak RSS MiB |");
    report.line("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut consume = None;
    let mut plain_and_idempotent = Vec::new();
    for (record_bytes, acks) in [
        (1024, "1"),
        (1024, "all"),
        (1024, "idempotent"),
        (100, "1"),
        (100, "all"),
        (100, "idempotent"),
    ] {
        let topic = format!("produce-{record_bytes}-{acks}");
        runtime.block_on(load::create_topic(&bootstrap, &topic, 1, 1))?;
        let cpu = CpuMeter::start(pid);
        let peak = PeakRss::start(pid);
        let produced = load::produce(&bootstrap, &topic, record_bytes, acks, false, duration)?;
        let (broker_cpu, own_cpu) = cpu.read();
        let peak = peak.finish();
        let gb = produced.bytes as f64 / GB;
        report.line(format!(
            "| {record_bytes} B | {acks} | {:.0} | {:.1} | {:.0}% | {:.0}% | {:.2} | {:.2} | {:.0} |",
            produced.records_per_second(),
            produced.bytes_per_second() / MB,
            100.0 * produced.bytes_per_second() / disk_bandwidth,
            100.0 * produced.bytes_per_second() / tcp,
            broker_cpu / gb,
            own_cpu / gb,
            peak as f64 / MIB as f64,
        ));
        if acks != "1" {
            plain_and_idempotent.push((record_bytes, acks, produced.records_per_second()));
        }
        if record_bytes == 1024 && acks == "1" {
            // Read it back now, while it is in the page cache (later
            // phases' writes would push it out on a small machine), once
            // the kernel has written back what the phase left dirty (its
            // flusher threads would compete for the two cores).
            procstat::wait_for_writeback(64 * MIB, Duration::from_secs(60));
            let cpu = CpuMeter::start(pid);
            let consumed = load::consume_all(&bootstrap, &topic)?;
            consume = Some((produced, consumed, cpu.read()));
        }
    }
    report.line("");
    for pair in plain_and_idempotent.chunks(2) {
        if let [(record_bytes, _, plain), (_, _, idempotent)] = pair {
            report.line(format!(
                "librdkafka, idempotent against plain acks=all at {record_bytes} B: {:.2}×",
                idempotent / plain
            ));
        }
    }
    report.line("");
    idempotence_table(runtime, report, &bootstrap, pid, duration)?;

    transactions_table(runtime, report, &bootstrap, pid, duration)?;

    let (produced, consumed, (broker_cpu, own_cpu)) = consume.expect("the 1 KiB acks=1 phase ran");
    let gb = consumed.bytes as f64 / GB;
    report.line("## Consume from the start of a topic (page cache)");
    report.line("");
    report.line("| records | records/s | MB/s | of produce rate | of loopback TCP | broker CPU s/GB | kbench CPU s/GB |");
    report.line("|---|---:|---:|---:|---:|---:|---:|");
    report.line(format!(
        "| {} × 1 KiB | {:.0} | {:.1} | {:.2}× | {:.0}% | {:.2} | {:.2} |",
        consumed.records,
        consumed.records_per_second(),
        consumed.bytes_per_second() / MB,
        consumed.records_per_second() / produced.records_per_second(),
        100.0 * consumed.bytes_per_second() / tcp,
        broker_cpu / gb,
        own_cpu / gb,
    ));
    report.line("");

    let after_load = latency_row(
        args,
        runtime,
        &bootstrap,
        "latency-after",
        "after the phases above",
    )?;
    report.line(format!(
        "## End-to-end latency at {:.0} records/s × 1 KiB (acks=1, linger.ms=0; from intended send time to receipt)",
        args.latency_rate
    ));
    report.line("");
    report.line(
        "| when | dirty page cache at start MiB | received | p50 ms | p99 ms | p99.9 ms | max ms |",
    );
    report.line("|---|---:|---:|---:|---:|---:|---:|");
    report.line(quiet);
    report.line(after_load);
    report.line("");

    report.line("## Memory");
    report.line("");
    report.line(format!(
        "- idle RSS after start: {:.1} MiB",
        idle_rss as f64 / MIB as f64
    ));
    report.line(format!(
        "- RSS after the phases above: {:.1} MiB",
        procstat::rss_bytes(&pid.to_string()) as f64 / MIB as f64
    ));
    report.line("");

    if args.scale || args.quick {
        scale_phases(args, &bootstrap, pid, runtime, report)?;
    }
    drop(broker);
    if args.security {
        security::security_phases(args, runtime, report)?;
    }
    if args.metrics || args.quick {
        metrics::metrics_phases(args, runtime, report)?;
    }
    if args.cluster {
        cluster::cluster_phases(args, runtime, report)?;
    }
    Ok(())
}

fn scale_phases(
    args: &Args,
    bootstrap: &str,
    pid: u32,
    runtime: &tokio::runtime::Runtime,
    report: &mut Report,
) -> anyhow::Result<()> {
    let duration = Duration::from_secs(args.scale_duration);
    let partition_steps: &[i32] = if args.quick {
        &[1, 100]
    } else {
        &[1, 100, 1_000, 10_000]
    };
    report.line("## Partitions (100 B records, keyed, acks=1, librdkafka)");
    report.line("");
    report.line(
        "| partitions | create s | records/s | MB/s | broker RSS after MiB | broker peak RSS MiB |",
    );
    report.line("|---:|---:|---:|---:|---:|---:|");
    for &partitions in partition_steps {
        let topic = format!("scale-partitions-{partitions}");
        let started = std::time::Instant::now();
        runtime.block_on(load::create_topic(bootstrap, &topic, partitions, 1))?;
        let create_s = started.elapsed().as_secs_f64();
        let peak = PeakRss::start(pid);
        let produced = load::produce(bootstrap, &topic, 100, "1", true, duration)?;
        let peak = peak.finish();
        report.line(format!(
            "| {partitions} | {create_s:.1} | {:.0} | {:.1} | {:.0} | {:.0} |",
            produced.records_per_second(),
            produced.bytes_per_second() / MB,
            procstat::rss_bytes(&pid.to_string()) as f64 / MIB as f64,
            peak as f64 / MIB as f64,
        ));
    }
    report.line("");

    let connection_steps: &[usize] = if args.quick {
        &[1, 100]
    } else {
        &[1, 100, 1_000]
    };
    report.line("## Connections (raw Produce v7, acks=1, one request in flight each, 10 × 100 B per request)");
    report.line("");
    report.line("| connections | records/s | broker peak RSS MiB | broker CPU s |");
    report.line("|---:|---:|---:|---:|");
    let topic = "scale-connections";
    let partitions = 16;
    runtime.block_on(load::create_topic(bootstrap, topic, partitions, 1))?;
    let batch = scale::batch(10, 100)?;
    for &connections in connection_steps {
        let cpu = CpuMeter::start(pid);
        let peak = PeakRss::start(pid);
        let load = runtime.block_on(scale::connections(
            bootstrap,
            topic,
            partitions,
            connections,
            batch.clone(),
            10,
            duration,
        ))?;
        let (broker_cpu, _) = cpu.read();
        let peak = peak.finish();
        report.line(format!(
            "| {} | {:.0} | {:.0} | {:.1} |",
            load.connections,
            load.records as f64 / load.seconds,
            peak as f64 / MIB as f64,
            broker_cpu,
        ));
    }
    report.line("");
    Ok(())
}

/// One latency phase on a new topic: its row of the latency table.
fn latency_row(
    args: &Args,
    runtime: &tokio::runtime::Runtime,
    bootstrap: &str,
    topic: &str,
    when: &str,
) -> anyhow::Result<String> {
    runtime.block_on(load::create_topic(bootstrap, topic, 1, 1))?;
    let dirty = procstat::dirty_bytes();
    let latency = load::latency(
        bootstrap,
        topic,
        1024,
        args.latency_rate,
        Duration::from_secs(args.latency_duration),
        Duration::from_secs(1),
        "1",
    )?;
    let h = &latency.histogram;
    let ms = |micros: u64| micros as f64 / 1000.0;
    Ok(format!(
        "| {when} | {:.0} | {} of {} | {:.2} | {:.2} | {:.2} | {:.2} |",
        dirty as f64 / MIB as f64,
        latency.received,
        latency.sent,
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
    ))
}

fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .next()
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let mut text = String::new();
    let _ = write!(
        text,
        "{cores} cores ({cpu}), {:.1} GiB memory, kernel {}",
        memory as f64 / (1 << 20) as f64,
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    text
}

/// Transactions back to back from one producer, with 1 and 10 partitions
/// in each (10 records of 100 B per partition): commits/s, from a minimal
/// protocol-level producer (the broker's figure) and from librdkafka (what
/// an application sees; librdkafka 2.12 adds up to 100 ms per transaction
/// of its own, see txn.rs).
pub(crate) fn transactions_table(
    runtime: &tokio::runtime::Runtime,
    report: &mut Report,
    bootstrap: &str,
    pid: u32,
    duration: Duration,
) -> anyhow::Result<()> {
    report.line("## Transactions (one producer, transactions back to back, 10 × 100 B records per partition per transaction)");
    report.line("");
    report.line("| producer | partitions per transaction | commits/s | records/s | ms per transaction | broker CPU ms per commit |");
    report.line("|---|---:|---:|---:|---:|---:|");
    for partitions in [1, 10] {
        let topic = format!("transactions-{partitions}");
        runtime.block_on(load::create_topic(bootstrap, &topic, partitions, 1))?;
        for client in ["protocol", "librdkafka"] {
            let cpu = CpuMeter::start(pid);
            let done = if client == "protocol" {
                runtime.block_on(txn::run(bootstrap, &topic, partitions, 10, duration))?
            } else {
                load::transactions(bootstrap, &topic, partitions, 10, duration)?
            };
            let (commits, records, seconds) = (done.commits, done.records, done.seconds);
            let (broker_cpu, _) = cpu.read();
            report.line(format!(
                "| {client} | {partitions} | {:.0} | {:.0} | {:.2} | {:.2} |",
                commits as f64 / seconds,
                records as f64 / seconds,
                1000.0 * seconds / commits.max(1) as f64,
                1000.0 * broker_cpu / commits.max(1) as f64,
            ));
        }
    }
    report.line("");
    Ok(())
}

/// The broker's cost of idempotence, without a client library's: a
/// protocol-level producer (five requests in flight, acks=all, 100 × 1 KiB
/// per batch) with and without a producer id and sequence numbers.
fn idempotence_table(
    runtime: &tokio::runtime::Runtime,
    report: &mut Report,
    bootstrap: &str,
    pid: u32,
    duration: Duration,
) -> anyhow::Result<()> {
    report.line("Protocol-level producer, one partition, acks=all, 5 requests in flight, 100 × 1 KiB per batch:");
    report.line("");
    report.line("| batches | records/s | MB/s | broker CPU s/GB | of plain |");
    report.line("|---|---:|---:|---:|---:|");
    let mut plain_rate = None;
    for idempotent in [false, true] {
        let topic = format!(
            "raw-produce-{}",
            if idempotent { "idempotent" } else { "plain" }
        );
        runtime.block_on(load::create_topic(bootstrap, &topic, 1, 1))?;
        let cpu = CpuMeter::start(pid);
        let done = runtime.block_on(txn::produce(
            bootstrap, &topic, -1, idempotent, 100, 1024, duration,
        ))?;
        let (broker_cpu, _) = cpu.read();
        let rate = done.records as f64 / done.seconds;
        let plain = *plain_rate.get_or_insert(rate);
        report.line(format!(
            "| {} | {:.0} | {:.1} | {:.2} | {:.2}× |",
            if idempotent { "idempotent" } else { "plain" },
            rate,
            done.bytes as f64 / done.seconds / MB,
            broker_cpu / (done.bytes as f64 / GB),
            rate / plain,
        ));
    }
    report.line("");
    Ok(())
}
