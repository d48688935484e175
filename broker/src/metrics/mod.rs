//! Prometheus metrics, named as the Prometheus JMX exporter's lowercase
//! Kafka rules name Kafka's MBeans (`kafka_server_brokertopicmetrics_*`,
//! `kafka_server_replicamanager_*`, `kafka_controller_*`,
//! `kafka_network_requestmetrics_*`), plus consumer lag as kafka_exporter
//! names it (`kafka_consumergroup_lag`), so that the usual Kafka dashboards
//! and alert rules work unchanged.
//!
//! Counters are atomics bumped where things happen: per request (its API's
//! count and times) and per produced or fetched partition (messages and
//! bytes of its topic), never per record. Gauges are computed when scraped,
//! from the metadata snapshot and the logs: nothing is added to the append
//! path. Series are per API, per topic and per consumer-group partition;
//! none per partition of the broker's own state.
//!
//! The HTTP side (`/metrics`, `/health`, `/ready`) is [`http`].

pub(crate) mod http;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use parking_lot::RwLock;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::broker::Broker;

/// Request time buckets, in milliseconds.
const TIME_BUCKETS_MS: [f64; 15] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
    30000.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    request: &'static str,
}

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

/// One topic's traffic through this broker.
#[derive(Debug, Default)]
pub(crate) struct TopicCounters {
    messages_in: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
}

/// Every counter of the broker, and whether it is ready to serve.
#[derive(Debug)]
pub(crate) struct Metrics {
    requests: Family<RequestLabels, Counter>,
    total_time: Family<RequestLabels, Histogram>,
    queue_time: Family<RequestLabels, Histogram>,
    send_time: Family<RequestLabels, Histogram>,
    messages_in: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    topics: RwLock<HashMap<Arc<str>, Arc<TopicCounters>>>,
    isr_shrinks: Counter,
    isr_expands: Counter,
    /// Registered in the cluster and serving its listeners (`/ready`).
    ready: AtomicBool,
    /// Counting at all: only with a metrics listener (`metrics.listener`
    /// empty turns off the counting too, and so measures what it costs).
    enabled: bool,
}

fn time_histogram() -> Histogram {
    Histogram::new(TIME_BUCKETS_MS)
}

impl Metrics {
    pub(crate) fn new(enabled: bool) -> Self {
        Metrics {
            requests: Family::default(),
            total_time: Family::new_with_constructor(time_histogram),
            queue_time: Family::new_with_constructor(time_histogram),
            send_time: Family::new_with_constructor(time_histogram),
            messages_in: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            topics: RwLock::default(),
            isr_shrinks: Counter::default(),
            isr_expands: Counter::default(),
            ready: AtomicBool::new(false),
            enabled,
        }
    }
}

/// When one request came and was taken up: its times are recorded once its
/// response is written ([`Metrics::request_done`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestTiming {
    pub api: ApiKey,
    /// Its last byte was read.
    pub received: tokio::time::Instant,
    /// Its handler started.
    pub started: tokio::time::Instant,
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Kafka's name of an API (`Produce`, `Fetch`, `ListOffsets`, ...), as the
/// `request` label of its MBeans.
fn api_name(api: ApiKey) -> &'static str {
    static NAMES: OnceLock<HashMap<i16, &'static str>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        (0..=1000)
            .filter_map(|key| ApiKey::try_from(key).ok().map(|api| (key, api)))
            .map(|(key, api)| {
                let name: &'static str = Box::leak(format!("{api:?}").into_boxed_str());
                (key, name)
            })
            .collect()
    });
    names.get(&(api as i16)).copied().unwrap_or("Unknown")
}

impl Metrics {
    pub(crate) fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub(crate) fn set_not_ready(&self) {
        self.ready.store(false, Ordering::Release);
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// A request answered: its count, its time in total (from its last
    /// byte read to its response written), before its handler took it up,
    /// and writing its response (`sent`: when writing began).
    pub(crate) fn request_done(&self, timing: RequestTiming, sent: Option<tokio::time::Instant>) {
        if !self.enabled {
            return;
        }
        let labels = RequestLabels {
            request: api_name(timing.api),
        };
        let now = tokio::time::Instant::now();
        self.requests.get_or_create(&labels).inc();
        self.total_time
            .get_or_create(&labels)
            .observe(millis(now - timing.received));
        self.queue_time
            .get_or_create(&labels)
            .observe(millis(timing.started - timing.received));
        if let Some(sent) = sent {
            self.send_time
                .get_or_create(&labels)
                .observe(millis(now - sent));
        }
    }

    fn topic(&self, name: &str) -> Arc<TopicCounters> {
        if let Some(counters) = self.topics.read().get(name) {
            return counters.clone();
        }
        self.topics
            .write()
            .entry(Arc::from(name))
            .or_default()
            .clone()
    }

    /// A batch of `messages` records, `bytes` long, appended to `topic` by
    /// a producer.
    pub(crate) fn produced(&self, topic: &str, messages: u64, bytes: u64) {
        if !self.enabled {
            return;
        }
        self.messages_in.inc_by(messages);
        self.bytes_in.inc_by(bytes);
        let counters = self.topic(topic);
        counters.messages_in.inc_by(messages);
        counters.bytes_in.inc_by(bytes);
    }

    /// Record bytes of `topic` sent to a consumer.
    pub(crate) fn consumed(&self, topic: &str, bytes: u64) {
        if bytes == 0 || !self.enabled {
            return;
        }
        self.bytes_out.inc_by(bytes);
        self.topic(topic).bytes_out.inc_by(bytes);
    }

    /// The leader changed a partition's ISR from `from` to `to`.
    pub(crate) fn isr_changed(&self, from: &[i32], to: &[i32]) {
        if !self.enabled {
            return;
        }
        if to.iter().any(|replica| !from.contains(replica)) {
            self.isr_expands.inc();
        }
        if from.iter().any(|replica| !to.contains(replica)) {
            self.isr_shrinks.inc();
        }
    }
}

/// Which of a topic's counters.
type OfTopic = fn(&TopicCounters) -> &Counter;

/// Everything, as the OpenMetrics text Prometheus scrapes: the counters,
/// and the gauges computed now from `broker`'s state.
pub(crate) fn scrape(broker: &Broker) -> String {
    let m = &broker.metrics;
    let mut registry = Registry::default();
    // Cluster-wide (no label) and per topic (`topic`), in one family each,
    // as the JMX exporter gives them; topics deleted since are dropped.
    let snapshot = broker.metadata();
    m.topics
        .write()
        .retain(|name, _| snapshot.topic(name).is_some());
    let topics: Vec<(Arc<str>, Arc<TopicCounters>)> = m
        .topics
        .read()
        .iter()
        .map(|(name, counters)| (name.clone(), counters.clone()))
        .collect();
    let traffic: [(&str, &str, &Counter, OfTopic); 3] = [
        (
            "kafka_server_brokertopicmetrics_messagesin",
            "Records appended by producers to this broker's partitions",
            &m.messages_in,
            |c| &c.messages_in,
        ),
        (
            "kafka_server_brokertopicmetrics_bytesin",
            "Record bytes appended by producers",
            &m.bytes_in,
            |c| &c.bytes_in,
        ),
        (
            "kafka_server_brokertopicmetrics_bytesout",
            "Record bytes sent to consumers",
            &m.bytes_out,
            |c| &c.bytes_out,
        ),
    ];
    for (name, help, total, of_topic) in traffic {
        let family = Family::<Vec<(String, String)>, Counter>::default();
        family.get_or_create(&Vec::new()).inc_by(total.get());
        for (topic, counters) in &topics {
            family
                .get_or_create(&vec![("topic".to_string(), topic.to_string())])
                .inc_by(of_topic(counters).get());
        }
        registry.register(name, help, family);
    }

    registry.register(
        "kafka_network_requestmetrics_requests",
        "Requests answered, per API",
        m.requests.clone(),
    );
    registry.register(
        "kafka_network_requestmetrics_totaltimems",
        "Milliseconds from a request's last byte read to its response written",
        m.total_time.clone(),
    );
    registry.register(
        "kafka_network_requestmetrics_requestqueuetimems",
        "Milliseconds from a request's last byte read to its handler starting",
        m.queue_time.clone(),
    );
    registry.register(
        "kafka_network_requestmetrics_responsesendtimems",
        "Milliseconds writing a response to the socket",
        m.send_time.clone(),
    );
    registry.register(
        "kafka_server_replicamanager_isrshrinks",
        "ISR shrinks by this broker as leader",
        m.isr_shrinks.clone(),
    );
    registry.register(
        "kafka_server_replicamanager_isrexpands",
        "ISR expansions by this broker as leader",
        m.isr_expands.clone(),
    );

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
