//! What metrics cost: produce throughput and broker CPU per GB against a
//! broker with its metrics listener on (counting, and scraped every
//! second) and one with it off (`metrics.listener=`, which turns the
//! counting off too), in alternating rounds of the same run.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use client::Security;
use e2e::{free_port, BrokerProcess};

use crate::procstat::CpuMeter;
use crate::{Args, Report, GB, MB};

/// One scrape of `/metrics` at `address`: the body's length.
fn scrape(address: &str) -> anyhow::Result<usize> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    anyhow::ensure!(
        response.starts_with(b"HTTP/1.1 200"),
        "GET /metrics did not answer 200"
    );
    Ok(response.len())
}

pub(crate) fn metrics_phases(
    args: &Args,
    runtime: &tokio::runtime::Runtime,
    report: &mut Report,
) -> anyhow::Result<()> {
    crate::phase("metrics");
    let metrics_address = format!("127.0.0.1:{}", free_port());
    let on_setting = format!("metrics.listener=http://{metrics_address}");
    let common = [
        "num.partitions=1",
        "log.retention.bytes=1073741824",
        "log.segment.bytes=134217728",
    ];
    let with = BrokerProcess::start(&[&common[..], &[on_setting.as_str()]].concat());
    let without = BrokerProcess::start(&[&common[..], &["metrics.listener="]].concat());
    scrape(&metrics_address).context("the metrics listener does not answer")?;
    let duration = Duration::from_secs(args.duration.min(20));
    let rounds = if args.quick { 1 } else { 3 };

    report.line("## Metrics: produce with the metrics listener on (scraped every second) and off");
    report.line("");
    report.line(format!(
        "kbench's protocol-level producer (acks=1, five requests in flight) on one connection; {rounds} alternating rounds of {} s per workload and broker.",
        duration.as_secs()
    ));
    report.line("");
    report.line("| round | records × bytes per request | metrics | produce MB/s | requests/s | broker CPU s/GB | scrapes |");
    report.line("|---|---|---|---:|---:|---:|---:|");
    // Per workload: [off, on] sums of MB/s and CPU s/GB.
    let mut totals = [[(0.0f64, 0.0f64); 2]; 2];
    for round in 1..=rounds {
        for (workload, (batch_records, record_bytes)) in
            [(256usize, 1024usize), (16, 100)].into_iter().enumerate()
        {
            for (on, broker) in [(false, &without), (true, &with)] {
                let address = broker.bootstrap();
                let pid = broker.pid().context("broker pid")?;
                let topic = format!("metrics-{round}-{workload}-{on}");
                crate::procstat::wait_for_writeback(64 * crate::MIB, Duration::from_secs(60));
                runtime.block_on(crate::load::create_topic(&address, &topic, 1, 1))?;
                let stop = Arc::new(AtomicBool::new(false));
                let scraper = on.then(|| {
                    let stop = stop.clone();
                    let address = metrics_address.clone();
                    std::thread::spawn(move || {
                        let mut scrapes = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            if scrape(&address).is_ok() {
                                scrapes += 1;
                            }
                            std::thread::sleep(Duration::from_secs(1));
                        }
                        scrapes
                    })
                });
                let cpu = CpuMeter::start(pid);
                let produced = runtime.block_on(crate::txn::produce_over(
                    &address,
                    &Security::plaintext(),
                    &topic,
                    1,
                    false,
                    batch_records,
                    record_bytes,
                    duration,
                ))?;
                let (broker_cpu, _) = cpu.read();
                stop.store(true, Ordering::Relaxed);
                let scrapes = scraper
                    .map(|thread| thread.join().unwrap_or(0))
                    .unwrap_or(0);
                let rate = produced.bytes as f64 / produced.seconds / MB;
                let cpu_per_gb = broker_cpu / (produced.bytes as f64 / GB);
                let requests = produced.records as f64 / batch_records as f64 / produced.seconds;
                report.line(format!(
                    "| {round} | {batch_records} × {record_bytes} B | {} | {rate:.1} | {requests:.0} | {cpu_per_gb:.2} | {scrapes} |",
                    if on { "on" } else { "off" },
                ));
                let slot = &mut totals[workload][usize::from(on)];
                slot.0 += rate;
                slot.1 += cpu_per_gb;
            }
        }
    }
    report.line("");
    for (workload, label) in ["256 × 1 KiB", "16 × 100 B"].into_iter().enumerate() {
        let [off, on] = totals[workload];
        report.line(format!(
            "{label} per request, metrics on against off, means over the rounds: produce {:.3}×, broker CPU per GB {:.3}×.",
            on.0 / off.0,
            on.1 / off.1,
        ));
        report.line("");
    }
    drop(with);
    drop(without);
    Ok(())
}
