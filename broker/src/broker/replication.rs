//! The broker-wide loops of replication: the leader's ISR changes, sent
//! to the metadata store, and the high-watermark checkpoints. What the
//! leader decides per partition is `crate::partition::leader`'s.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coordinator::IsrChange;

use super::Broker;

/// Shrinks and expands the ISR of the partitions this broker leads, every
/// `period`, until shutdown.
pub async fn maintain_isr(broker: Arc<Broker>, shutdown: tokio_util::sync::CancellationToken) {
    let lag_max = Duration::from_millis(broker.config.replication.replica_lag_time_max_ms);
    let period = (lag_max / 2).clamp(Duration::from_millis(50), Duration::from_millis(500));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let now = Instant::now();
        for partition in broker.hosted_partitions() {
            let wanted = partition.lead(|log, state| {
                partition
                    .wanted_isr(log, state, lag_max, now)
                    .map(|(isr, joining)| (isr, joining, state.clone()))
            });
            let Ok(Some((isr, joining_epochs, state))) = wanted else {
                continue;
            };
            let change = IsrChange {
                topic: partition.topic.to_string(),
                topic_id: partition.topic_id,
                partition: partition.index,
                leader_epoch: state.leader_epoch,
                partition_epoch: state.partition_epoch,
                isr: isr.clone(),
                joining_epochs,
            };
            match broker.store().alter_isr(change).await {
                Ok(_) => {
                    tracing::info!(topic = %partition.topic, partition = partition.index, from = ?state.isr, to = ?isr, "ISR changed");
                    broker.metrics.isr_changed(&state.isr, &isr);
                    broker.wait_applied();
                }
                Err(error) => {
                    tracing::info!(topic = %partition.topic, partition = partition.index, %error, "ISR change refused");
                }
            }
            partition.isr_change_done();
        }
    }
}

/// Writes down the high watermark of each replicated partition whose
/// watermark moved, every `period`, until shutdown.
pub async fn checkpoint_high_watermarks(
    broker: Arc<Broker>,
    period: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut written: HashMap<(Arc<str>, i32), i64> = HashMap::new();
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let broker = broker.clone();
        let pass = std::mem::take(&mut written);
        let done = tokio::task::spawn_blocking(move || {
            let mut written = pass;
            for partition in broker.hosted_partitions() {
                let key = (partition.topic.clone(), partition.index);
                let replicated = partition.state().replicas.len() > 1;
                // Read under the log's lock, written without it: the fsyncs
                // must not stall appends and fetches of the partition.
                let Ok((dir, high_watermark)) =
                    partition.with_log(|log| (log.dir().to_path_buf(), log.high_watermark()))
                else {
                    continue;
                };
                if !replicated || written.get(&key) == Some(&high_watermark) {
                    continue;
                }
                match storage::checkpoint::write_offset(
                    &dir,
                    storage::checkpoint::HIGH_WATERMARK_FILE,
                    high_watermark,
                ) {
                    Ok(()) => {
                        written.insert(key, high_watermark);
                    }
                    Err(error) => tracing::warn!(topic = %partition.topic, partition = partition.index, %error, "checkpointing the high watermark failed"),
                }
            }
            written
        })
        .await;
        if let Ok(done) = done {
            written = done;
        }
    }
}
