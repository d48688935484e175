//! How long other groups wait while a large `__consumer_offsets` partition
//! loads (a failover makes a broker load every partition it now leads).
//!
//!     cargo run --release -p broker --example offsets_load_stall -- [commits] [offsets-per-commit]
//!
//! Writes `commits` × `offsets-per-commit` offset commits (default 1,000 ×
//! 1,000: a million records) for one group, then unloads and reloads its
//! partition on a blocking thread while this thread fetches the committed
//! offsets of a group on another partition in a loop, and prints the load's
//! duration, the longest and median fetch during it, and the peak RSS. A measurement, not a
//! test: it asserts nothing about time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::broker::Broker;
use broker::config::BrokerConfig;
use broker::group::{CommitOffset, CommitRequest};
use broker::internal_topics::{partition_for, OFFSETS_TOPIC};

const PARTITIONS: i32 = 4;

fn commit(group: &str, offsets: impl Iterator<Item = (String, i32, i64)>) -> CommitRequest {
    CommitRequest {
        group_id: group.to_string(),
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
        offsets: offsets
            .map(|(topic, partition, offset)| CommitOffset {
                topic,
                partition,
                offset,
                leader_epoch: 0,
                metadata: String::new(),
            })
            .collect(),
        producer: None,
    }
}

/// Two group ids on different partitions of `__consumer_offsets`.
fn groups() -> (String, String) {
    let big = "big-group".to_string();
    let small = (0..)
        .map(|i| format!("small-group-{i}"))
        .find(|id| partition_for(id, PARTITIONS) != partition_for(&big, PARTITIONS))
        .expect("some id hashes elsewhere");
    (big, small)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let commits: usize = args.next().map_or(Ok(1000), |a| a.parse())?;
    let per_commit: usize = args.next().map_or(Ok(1000), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let properties = BTreeMap::from([
        ("log.dirs".to_string(), dir.path().display().to_string()),
        (
            "offsets.topic.num.partitions".to_string(),
            PARTITIONS.to_string(),
        ),
        (
            "offsets.topic.replication.factor".to_string(),
            "1".to_string(),
        ),
    ]);
    let config = BrokerConfig::from_properties(properties)?;
    let store = coordinator::StandaloneStore::open(&config.log_dir, config.registration())?;
    let broker = Arc::new(Broker::open(config, Arc::new(store))?);
    broker.ensure_offsets_topic().await?;
    let (big, small) = groups();
    let written = Instant::now();
    for round in 0..commits {
        let offsets = (0..per_commit).map(|i| {
            (
                format!("topic-{}", i % 100),
                (i / 100) as i32,
                (round * per_commit + i) as i64,
            )
        });
        let codes = broker.groups.commit(commit(&big, offsets), 0).await;
        anyhow::ensure!(codes.iter().all(Result::is_ok), "commit refused: {codes:?}");
    }
    let codes = broker
        .groups
        .commit(commit(&small, std::iter::once(("t".to_string(), 0, 1))), 0)
        .await;
    anyhow::ensure!(codes == [Ok(())], "commit refused: {codes:?}");
    println!(
        "wrote {} offset commits of {big} in {:.1} s",
        commits * per_commit,
        written.elapsed().as_secs_f64()
    );

    let index = partition_for(&big, PARTITIONS);
    let partition = broker
        .topic(OFFSETS_TOPIC)
        .and_then(|topic| topic.partition(index).cloned())
        .expect("offsets partition");
    for run in 1..=3 {
        broker.groups.unload_partition(index);
        let loading = {
            let broker = broker.clone();
            let partition = partition.clone();
            tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                broker.groups.load_partition(&partition, Instant::now(), 0);
                started.elapsed()
            })
        };
        let mut fetches: Vec<Duration> = Vec::new();
        while !loading.is_finished() {
            let started = Instant::now();
            let fetched = broker.groups.fetch_offsets(&small, None, false);
            fetches.push(started.elapsed());
            std::hint::black_box(fetched);
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let load = loading.await?;
        fetches.sort();
        let median = fetches.get(fetches.len() / 2).copied().unwrap_or_default();
        let longest = fetches.last().copied().unwrap_or_default();
        println!(
            "run {run}: load {:.0} ms; {} fetches of {small} meanwhile: longest {:.3} ms, median {:.3} ms",
            load.as_secs_f64() * 1e3,
            fetches.len(),
            longest.as_secs_f64() * 1e3,
            median.as_secs_f64() * 1e3
        );
    }
    let peak = std::fs::read_to_string("/proc/self/status")?
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .map(|line| line.trim_start_matches("VmHWM:").trim().to_string())
        .unwrap_or_default();
    println!("peak RSS of the process: {peak}");
    Ok(())
}
