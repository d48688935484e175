"""The metrics listener (`metrics.listener`): `/metrics` in the OpenMetrics
text format, parsed as Prometheus parses it (the prometheus_client
parser), with the names the Prometheus JMX exporter gives Kafka's MBeans;
`/health` and `/ready`. Counters move by exactly what was produced and
consumed; under-replicated partitions rise when a follower dies and return
to 0; exactly one broker reports itself the active controller, through a
controller failover; consumer lag is the high watermark minus the
committed offset."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from conftest import broker_binary, free_port, unique_topic
from test_replication import create, states, wait_full_isr

pytestmark = pytest.mark.timeout(180)


def scrape(broker) -> dict[tuple[str, tuple], float]:
    """Every sample of `broker`'s /metrics: (name, sorted labels) → value."""
    with urllib.request.urlopen(broker.metrics_url + "/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_counters_move_by_what_was_produced_and_consumed(broker_factory):
    broker = broker_factory()
    assert status(broker.metrics_url + "/health") == 200
    assert status(broker.metrics_url + "/ready") == 200
    assert status(broker.metrics_url + "/nothing") == 404
    topic = unique_topic("metrics")
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    producer.produce(topic, b"warm-up")  # creates the topic
    assert producer.flush(30) == 0
    before = scrape(broker)

    count = 250
    for i in range(count):
        producer.produce(topic, value=b"m%05d" % i, partition=i % 3)
    assert producer.flush(30) == 0
    after = scrape(broker)
    messages = "kafka_server_brokertopicmetrics_messagesin_total"
    assert value(after, messages, topic=topic) - value(before, messages, topic=topic) == count
    assert value(after, messages) - value(before, messages) == count
    bytes_in = "kafka_server_brokertopicmetrics_bytesin_total"
    # Each record is at least its 6-byte value.
    assert value(after, bytes_in, topic=topic) - value(before, bytes_in, topic=topic) > count * 6
    produce_requests = "kafka_network_requestmetrics_requests_total"
    assert value(after, produce_requests, request="Produce") > value(before, produce_requests, request="Produce")
    assert value(after, "kafka_network_requestmetrics_totaltimems_count", request="Produce") == \
        value(after, produce_requests, request="Produce")

    # A group reads everything and commits partition 0 at 40, the others
    # at their ends (83 records each, and the warm-up record in one).
    group = unique_topic("metrics-group")
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
    seen = 0
    deadline = time.monotonic() + 30
    while seen < count + 1 and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            seen += 1
    assert seen == count + 1
    consumer.commit(offsets=[TopicPartition(topic, 0, 40), TopicPartition(topic, 1, 83),
                             TopicPartition(topic, 2, 83)], asynchronous=False)
    consumer.close()
    consumed = scrape(broker)
    bytes_out = "kafka_server_brokertopicmetrics_bytesout_total"
    # Everything was read once: as many bytes out as in.
    assert value(consumed, bytes_out, topic=topic) == value(consumed, bytes_in, topic=topic)
    lags = {p: value(consumed, "kafka_consumergroup_lag", consumergroup=group, topic=topic, partition=str(p))
            for p in range(3)}
    # 84 records in partition 0, 83 in 1 and 2, and the warm-up one in
    # any of them: committed 40, 83, 83.
    assert sorted(lags.values()) in ([0, 0, 45], [0, 1, 44]), lags
    assert value(consumed, "kafka_consumergroup_lag_sum", consumergroup=group, topic=topic) == sum(lags.values())
    # Standalone: one broker, every partition led here, the controller.
    assert value(consumed, "kafka_controller_kafkacontroller_activecontrollercount") == 1
    assert value(consumed, "kafka_server_replicamanager_leadercount") == \
        value(consumed, "kafka_server_replicamanager_partitioncount") > 0
    assert value(consumed, "kafka_server_replicamanager_underreplicatedpartitions") == 0
    assert ("kafka_log_logmanager_offlinelogdirectorycount", ()) in consumed


def test_under_replicated_partitions_and_one_active_controller_across_failover(cluster_factory):
    cluster = cluster_factory(3, "default.replication.factor=3", "replica.lag.time.max.ms=2000")
    topic = unique_topic("metrics-urp")
    create(cluster, topic, 6)
    wait_full_isr(cluster, topic)

    def controllers(brokers) -> list[int]:
        return [node for node, b in brokers if value(scrape(b), "kafka_controller_kafkacontroller_activecontrollercount") == 1]

    def urp(broker) -> float:
        return value(scrape(broker), "kafka_server_replicamanager_underreplicatedpartitions")

    def live():
        return [(n, b) for n, b in cluster.brokers.items() if b.is_running()]

    cluster.wait_until("exactly one active controller", lambda: len(controllers(live())) == 1, 30)
    assert all(urp(b) == 0 for _, b in live())

    # A follower dies: the leaders of its partitions report them under-replicated.
    controller = controllers(live())[0]
    victim_id = next(n for n in cluster.brokers if n != controller)
    cluster.brokers[victim_id].kill9()
    cluster.wait_until("under-replicated partitions reported",
                       lambda: sum(urp(b) for _, b in live()) == 6, 30)
    cluster.brokers[victim_id].start()
    wait_full_isr(cluster, topic, timeout=60)
    cluster.wait_until("under-replicated partitions back to 0",
                       lambda: sum(urp(b) for _, b in live()) == 0, 30)
    assert sum(value(scrape(b), "kafka_server_replicamanager_isrexpands_total") for _, b in live()) > 0
    # (The dead follower was dropped from the ISR by the controller; the
    # restarted one rejoined through its leaders' expansions.)

    # The controller dies: another takes over, and only it says so.
    cluster.brokers[controller].kill9()
    cluster.wait_until("a new active controller",
                       lambda: (c := controllers(live())) and c != [controller] and len(c) == 1, 30)
    cluster.brokers[controller].start()
    cluster.wait_for_brokers(set(cluster.brokers), timeout=60)
    cluster.wait_until("still exactly one active controller", lambda: len(controllers(live())) == 1, 30)
    assert status(cluster.brokers[controller].metrics_url + "/ready") == 200


def test_a_follower_that_lags_shrinks_the_isr_and_counts_it(cluster_factory):
    cluster = cluster_factory(3, "default.replication.factor=3", "replica.lag.time.max.ms=1000",
                              "broker.session.timeout.ms=10000")
    topic = unique_topic("metrics-shrink")
    create(cluster, topic, 1)
    wait_full_isr(cluster, topic)
    leader_id = states(cluster, topic)[0][0]
    leader = cluster.brokers[leader_id]
    follower = next(b for n, b in cluster.brokers.items() if n != leader_id)
    shrinks = value(scrape(leader), "kafka_server_replicamanager_isrshrinks_total")
    follower.pause()
    try:
        producer = Producer({"bootstrap.servers": leader.bootstrap, "acks": "1"})
        delivered = []
        producer.produce(topic, b"x", partition=0, on_delivery=lambda err, msg: delivered.append(err))
        assert producer.flush(10) == 0 and delivered == [None], delivered
        cluster.wait_until("the lagging follower out of the ISR",
                           lambda: value(scrape(leader), "kafka_server_replicamanager_isrshrinks_total") > shrinks, 20)
        assert value(scrape(leader), "kafka_server_replicamanager_underreplicatedpartitions") == 1
    finally:
        follower.resume()
    wait_full_isr(cluster, topic)
    assert value(scrape(leader), "kafka_server_replicamanager_isrexpands_total") >= 1


@pytest.mark.parametrize("setting, said", [
    ("metrics.listener=https://127.0.0.1:1", "give http://host:port"),
    ("metrics.listener=http://127.0.0.1", "lacks :PORT"),
])
def test_a_bad_metrics_listener_stops_the_broker(tmp_path, setting, said):
    done = subprocess.run(
        [str(broker_binary()), "--override", f"log.dirs={tmp_path / uuid.uuid4().hex}",
         "--override", f"listeners=PLAINTEXT://127.0.0.1:{free_port()}", "--override", setting],
        capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert said in done.stdout + done.stderr


def test_an_empty_metrics_listener_turns_it_off_and_a_taken_port_is_named(broker_factory, tmp_path):
    broker = broker_factory("metrics.listener=")
    try:
        urllib.request.urlopen(broker.metrics_url + "/health", timeout=3)
        pytest.fail("the metrics listener answered although it is off")
    except urllib.error.URLError:
        pass
    # Another broker's metrics port: the broker stops, naming the setting.
    other = broker_factory()
    done = subprocess.run(
        [str(broker_binary()), "--override", f"log.dirs={tmp_path / 'taken'}",
         "--override", f"listeners=PLAINTEXT://127.0.0.1:{free_port()}",
         "--override", f"metrics.listener={other.metrics_url}"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "metrics.listener" in done.stdout + done.stderr
