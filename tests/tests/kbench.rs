//! The benchmark keeps working: `kbench --quick` against the debug broker
//! runs every phase (produce, consume, latency, partitions, connections) to
//! the end, and so do the cluster phases. Its figures are not checked here
//! (a debug build on a shared machine); BENCHMARKS.md has those of a
//! release build.

use std::process::Command;

/// Runs kbench with `args` against the debug broker; its report.
fn run_kbench(args: &[&str]) -> String {
    let out = tempfile::tempdir().unwrap();
    let report_path = out.path().join("report.md");
    let output = Command::new(env!("CARGO_BIN_EXE_kbench"))
        .args(args)
        .arg("--broker-bin")
        .arg(e2e::broker_binary())
        .arg("--out")
        .arg(&report_path)
        .output()
        .expect("running kbench");
    assert!(
        output.status.success(),
        "kbench failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read_to_string(&report_path).unwrap()
}

#[test]
fn kbench_quick_runs_every_phase() {
    let report = run_kbench(&["--quick"]);
    for section in [
        "## The machine's limits",
        "## Produce",
        "## Transactions",
        "## Consume",
        "## End-to-end latency",
        "## Memory",
        "## Partitions",
        "## Connections",
        "## Metrics",
    ] {
        assert!(report.contains(section), "no {section:?} in:\n{report}");
    }
    // Every produce row has a rate: acks 1, all and idempotent for both
    // record sizes.
    let produce_rows = report
        .lines()
        .filter(|line| line.starts_with("| 1024 B |") || line.starts_with("| 100 B |"))
        .count();
    assert_eq!(produce_rows, 6, "{report}");
    // Transactions were committed by both producers, with 1 and 10 partitions.
    let transaction_rows = report
        .lines()
        .filter(|line| line.starts_with("| protocol |") || line.starts_with("| librdkafka |"))
        .count();
    assert_eq!(transaction_rows, 4, "{report}");
    // Metrics on and off, both workloads, each scraped while on.
    let metrics_rows: Vec<&str> = report
        .lines()
        .filter(|line| {
            line.starts_with("| 1 | 256 × 1024 B |") || line.starts_with("| 1 | 16 × 100 B |")
        })
        .collect();
    assert_eq!(metrics_rows.len(), 4, "{report}");
    assert!(
        metrics_rows
            .iter()
            .filter(|row| row.contains("| on |"))
            .all(|row| !row.ends_with("| 0 |")),
        "the broker with metrics on was never scraped:\n{report}"
    );
}

/// `kbench --cluster-only --quick`: the cluster phases (a standalone
/// broker's acks=1 figures, then three brokers on their own etcd with RF=3:
/// throughput with librdkafka and protocol-level producers, latency with
/// acks=all, failovers) run to the end.
#[test]
fn kbench_cluster_phases_run() {
    let report = run_kbench(&["--quick", "--cluster-only"]);
    for needle in [
        "## Cluster: 3 brokers",
        "| RF=3 | all |",
        "| single broker | 1, protocol-level |",
        "| RF=3 | all, protocol-level |",
        "| RF=3 | all, idempotent, protocol-level |",
        "RF=3, acks=all (linger.ms=0",
        "Failover (",
    ] {
        assert!(report.contains(needle), "no {needle:?} in:\n{report}");
    }
}

/// `kbench --security-only --quick`: SASL_SSL against PLAINTEXT (produce
/// and fetch over TLS 1.3 with SCRAM-SHA-512) and SCRAM handshakes run to
/// the end.
#[test]
fn kbench_security_phases_run() {
    let report = run_kbench(&["--quick", "--security-only", "--duration", "2"]);
    for needle in [
        "## Security: SASL_SSL",
        "| 1 | PLAINTEXT |",
        "| 1 | SASL_SSL |",
        "SASL_SSL against PLAINTEXT, means over the rounds",
        "SCRAM-SHA-512 handshakes",
    ] {
        assert!(report.contains(needle), "no {needle:?} in:\n{report}");
    }
}
