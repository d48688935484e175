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
//! What is scraped, and the HTTP side (`/metrics`, `/health`, `/ready`),
//! are `crate::exporter`'s; this module has no view of the broker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use parking_lot::RwLock;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Request time buckets, in milliseconds.
const TIME_BUCKETS_MS: [f64; 15] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
    30000.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    request: &'static str,
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

    /// Whether anything is counted (a metrics listener is configured).
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
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

impl Metrics {
    /// Registers every counter into `registry`, a fresh one per scrape;
    /// the counters of topics for which `exists` is false are dropped.
    pub(crate) fn register(&self, registry: &mut Registry, exists: impl Fn(&str) -> bool) {
        let m = self;
        // Cluster-wide (no label) and per topic (`topic`), in one family each,
        // as the JMX exporter gives them; topics deleted since are dropped.
        m.topics.write().retain(|name, _| exists(name));
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
    }
}
