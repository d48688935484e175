//! What `/metrics` serves: the broker's counters ([`crate::metrics`]) and
//! the gauges computed when scraped, from the metadata snapshot, the logs'
//! high watermarks and the group coordinator's committed offsets; and the
//! HTTP listener that serves them ([`http`]).

pub(crate) mod http;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::broker::Broker;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LagLabels {
    consumergroup: String,
    topic: String,
    partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupTopicLabels {
    consumergroup: String,
    topic: String,
}

/// Everything, as the OpenMetrics text Prometheus scrapes: the counters,
/// and the gauges computed now from `broker`'s state.
pub(crate) fn scrape(broker: &Broker) -> String {
    let mut registry = Registry::default();
    let snapshot = broker.metadata();
    broker
        .metrics
        .register(&mut registry, |topic| snapshot.topic(topic).is_some());
    let replicas = replica_gauges(broker, &snapshot);
    for (name, help, value) in replicas {
        let gauge = Gauge::<i64>::default();
        gauge.set(value);
        registry.register(name, help, gauge);
    }
    let unclean = Counter::<u64>::default();
    unclean.inc_by(broker.store().unclean_leader_elections());
    registry.register(
        "kafka_controller_controllerstats_uncleanleaderelections",
        "Unclean leader elections this broker made as controller",
        unclean,
    );

    let (lag, lag_sum) = consumer_lag(broker);
    registry.register(
        "kafka_consumergroup_lag",
        "Records between a group's committed offset and the high watermark, per partition",
        lag,
    );
    registry.register(
        "kafka_consumergroup_lag_sum",
        "A group's lag summed over a topic's partitions",
        lag_sum,
    );

    let mut text = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        tracing::warn!(%error, "encoding the metrics failed");
    }
    text
}

/// The replica manager's, controller's and log manager's gauges.
fn replica_gauges(
    broker: &Broker,
    snapshot: &coordinator::ClusterMetadata,
) -> Vec<(&'static str, &'static str, i64)> {
    let me = broker.config.node_id;
    let default_min_isr = broker.config.replication.min_insync_replicas;
    let (mut partitions, mut leaders, mut under_replicated) = (0, 0, 0);
    let (mut under_min_isr, mut at_min_isr, mut offline) = (0, 0, 0);
    for topic in snapshot.topics.values() {
        let min_isr = topic
            .configs
            .get("min.insync.replicas")
            .and_then(|value| value.parse::<usize>().ok())
            .unwrap_or(default_min_isr);
        for partition in &topic.partitions {
            if partition.leader == coordinator::NO_LEADER {
                offline += 1;
            }
            if partition.replicas.contains(&me) {
                partitions += 1;
            }
            if partition.leader != me {
                continue;
            }
            leaders += 1;
            let isr = partition.isr.len();
            if isr < partition.replicas.len() {
                under_replicated += 1;
            }
            if isr < min_isr {
                under_min_isr += 1;
            } else if isr == min_isr {
                at_min_isr += 1;
            }
        }
    }
    let controller = snapshot.controller_id() == Some(me);
    vec![
        (
            "kafka_server_replicamanager_partitioncount",
            "Partitions with a replica on this broker",
            partitions,
        ),
        (
            "kafka_server_replicamanager_leadercount",
            "Partitions this broker leads",
            leaders,
        ),
        (
            "kafka_server_replicamanager_underreplicatedpartitions",
            "Partitions this broker leads whose ISR is smaller than their replica set",
            under_replicated,
        ),
        (
            "kafka_server_replicamanager_underminisrpartitioncount",
            "Partitions this broker leads whose ISR is below min.insync.replicas",
            under_min_isr,
        ),
        (
            "kafka_server_replicamanager_atminisrpartitioncount",
            "Partitions this broker leads whose ISR is exactly min.insync.replicas",
            at_min_isr,
        ),
        (
            "kafka_controller_kafkacontroller_activecontrollercount",
            "1 on the active controller, 0 elsewhere",
            i64::from(controller),
        ),
        (
            "kafka_controller_kafkacontroller_offlinepartitionscount",
            "Partitions without a leader (reported by the active controller)",
            if controller { offline } else { 0 },
        ),
        (
            "kafka_log_logmanager_offlinelogdirectorycount",
            "Log directories offline",
            0,
        ),
    ]
}

/// kafka_exporter's consumer lag, for the groups this broker coordinates:
/// per partition, the high watermark of this broker's replica of it
/// (leader or follower) minus the committed offset; partitions without a
/// replica here are left out. Summed per group and topic.
fn consumer_lag(
    broker: &Broker,
) -> (
    Family<LagLabels, Gauge<i64>>,
    Family<GroupTopicLabels, Gauge<i64>>,
) {
    let lag = Family::<LagLabels, Gauge<i64>>::default();
    let sums = Family::<GroupTopicLabels, Gauge<i64>>::default();
    for (group, topic, partition, committed) in broker.groups.committed_offsets() {
        let Some(high_watermark) = broker
            .topic(&topic)
            .and_then(|t| t.partition(partition).cloned())
            .and_then(|p| p.with_log(|log| log.high_watermark()).ok())
        else {
            continue;
        };
        let behind = (high_watermark - committed).max(0);
        lag.get_or_create(&LagLabels {
            consumergroup: group.clone(),
            topic: topic.clone(),
            partition: partition.to_string(),
        })
        .set(behind);
        sums.get_or_create(&GroupTopicLabels {
            consumergroup: group,
            topic,
        })
        .inc_by(behind);
    }
    (lag, sums)
}
