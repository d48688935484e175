"""Brokers that authenticate to each other: a 3-broker cluster whose
inter-broker listener is SASL_PLAINTEXT with SCRAM-SHA-512 (the brokers'
own credential written into etcd by `kbroker format --add-scram` before
the first start) and ACLs on replicates RF=3 acks=all, commits a
transaction (markers between brokers) and keeps every acknowledged record
when a leader is killed; a broker whose own credential is wrong cannot
replicate. `kbroker admin --command-config` manages ACLs and SCRAM users
over SASL."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Cluster, broker_binary, unique_topic
from test_acls import AUTHORIZER

pytestmark = pytest.mark.timeout(300)

BROKER = "broker-" + uuid.uuid4().hex[:10]
ADMIN = "admin-" + uuid.uuid4().hex[:10]
PLAIN_JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
              f'username="admin" password="{ADMIN}" user_admin="{ADMIN}";')


def scram_jaas(password: str) -> str:
    return ('org.apache.kafka.common.security.scram.ScramLoginModule required '
            f'username="broker" password="{password}";')


def overrides(broker_password: str = BROKER) -> list[str]:
    return [
        "listeners=PLAINTEXT://{host}:{port},SASL_PLAINTEXT://{host}:{ssl_port}",
        "inter.broker.listener.name=SASL_PLAINTEXT",
        "sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN",
        "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
        f"listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={scram_jaas(broker_password)}",
        f"listener.name.sasl_plaintext.plain.sasl.jaas.config={PLAIN_JAAS}",
        f"authorizer.class.name={AUTHORIZER}",
        "super.users=User:broker;User:admin",
        "default.replication.factor=3",
        "min.insync.replicas=2",
        "offsets.topic.replication.factor=3",
        "transaction.state.log.replication.factor=3",
        "transaction.state.log.min.isr=2",
    ]


def admin_config(cluster: Cluster) -> dict:
    return {"bootstrap.servers": ",".join(f"{b.host}:{b.ssl_port}" for b in cluster.running()),
            "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
            "sasl.username": "admin", "sasl.password": ADMIN}


def format_etcd(etcd, prefix: str, password: str) -> None:
    formatted = subprocess.run(
        [str(broker_binary()), "format", "--override", f"etcd.endpoints={etcd.endpoint}",
         "--override", f"etcd.prefix={prefix}",
         "--add-scram", f"SCRAM-SHA-512=[name=broker,password={password}]"],
        capture_output=True, text=True, timeout=60)
    assert formatted.returncode == 0, formatted.stderr


def start_cluster(request, tmp_path, etcd, size: int, password: str = BROKER,
                  formatted_password: str = BROKER) -> Cluster:
    workdir = tmp_path / f"cluster-{uuid.uuid4().hex[:6]}"
    workdir.mkdir()
    cluster = Cluster(workdir, etcd, size, overrides(password))
    request.node._kbrokers = list(cluster.brokers.values())
    format_etcd(etcd, cluster.prefix, formatted_password)
    return cluster


@pytest.fixture
def cleanup(request):
    yield
    for broker in getattr(request.node, "_kbrokers", []):
        broker.kill9()


def isr_sizes(cluster: Cluster, topic: str) -> list[int]:
    admin = AdminClient(admin_config(cluster))
    metadata = admin.list_topics(topic=topic, timeout=10)
    return [len(p.isrs) for p in metadata.topics[topic].partitions.values()]


def test_scram_between_brokers_replicates_commits_transactions_and_fails_over(request, tmp_path, etcd, cleanup):
    (tmp_path / "c").mkdir()
    cluster = start_cluster(request, tmp_path / "c", etcd, 3)
    cluster.start()
    config = admin_config(cluster)
    topic = unique_topic("secure")
    admin = AdminClient(config)
    admin.create_topics([NewTopic(topic, 3, 3)])[topic].result(timeout=30)
    cluster.wait_until("every partition's ISR to hold 3 replicas",
                       lambda: isr_sizes(cluster, topic) == [3, 3, 3], timeout=30)

    acknowledged = []
    producer = Producer({**config, "acks": "all", "enable.idempotence": True, "message.timeout.ms": 30000})
    for i in range(300):
        producer.produce(topic, value=b"r%04d" % i,
                         on_delivery=lambda err, msg: err is None and acknowledged.append(msg.value()))
    assert producer.flush(60) == 0
    assert len(acknowledged) == 300

    # A transaction: its markers go from the coordinator to the leaders
    # over the inter-broker listener, authenticated.
    transactional = Producer({**config, "transactional.id": "secure-tx", "message.timeout.ms": 30000})
    transactional.init_transactions(30)
    transactional.begin_transaction()
    for i in range(10):
        transactional.produce(topic, value=b"tx%02d" % i)
    transactional.commit_transaction(30)

    # Kill the leader of partition 0; what was acknowledged survives.
    leader = admin.list_topics(topic=topic, timeout=10).topics[topic].partitions[0].leader
    cluster.brokers[leader].kill9()
    for i in range(300, 350):
        producer.produce(topic, value=b"r%04d" % i,
                         on_delivery=lambda err, msg: err is None and acknowledged.append(msg.value()))
    assert producer.flush(60) == 0
    consumer = Consumer({**admin_config(cluster), "group.id": "check-" + topic,
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    consumer.subscribe([topic])
    seen = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(seen) < 360:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            seen.add(message.value())
    consumer.close()
    assert set(acknowledged) <= seen, f"{len(set(acknowledged) - seen)} acknowledged records lost"
    assert {b"tx%02d" % i for i in range(10)} <= seen
    log = "".join(b.log_text() for b in cluster.brokers.values())
    printed = "\n".join(line for line in log.splitlines() if not line.startswith("==== start"))
    assert BROKER not in printed and ADMIN not in printed


def test_a_broker_with_a_wrong_credential_does_not_replicate(request, tmp_path, etcd, cleanup):
    """The credential in etcd is not the one in the brokers' JAAS config:
    followers cannot authenticate, so nothing is replicated and acks=all
    writes are not acknowledged."""
    (tmp_path / "c").mkdir()
    cluster = start_cluster(request, tmp_path / "c", etcd, 2, password="not-" + BROKER)
    cluster.start()
    config = admin_config(cluster)
    topic = unique_topic("wrong-cred")
    admin = AdminClient(config)
    admin.create_topics([NewTopic(topic, 1, 2)])[topic].result(timeout=30)
    errors = []
    producer = Producer({**config, "acks": "all", "message.timeout.ms": 8000})
    producer.produce(topic, value=b"x", on_delivery=lambda err, _: errors.append(err))
    producer.flush(20)
    assert errors and errors[0] is not None and errors[0].code() in (
        KafkaError.NOT_ENOUGH_REPLICAS, KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND, KafkaError._MSG_TIMED_OUT,
        KafkaError.REQUEST_TIMED_OUT), errors
    log = "".join(b.log_text() for b in cluster.brokers.values())
    assert "SASL authentication" in log and "authentication failed" in log.lower()


def test_admin_tool_manages_acls_and_scram_users_over_sasl(broker_factory, tmp_path):
    from test_acls import secured, PASSWORDS
    broker = broker_factory(*secured())
    properties = tmp_path / "admin.properties"
    properties.write_text(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
        "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required \\\n"
        f"    username=\"admin\" password=\"{PASSWORDS['admin']}\";\n")
    address = f"{broker.host}:{broker.ssl_port}"

    def admin(*args: str, check: bool = True):
        done = subprocess.run([str(broker_binary()), "admin", "--bootstrap-server", address,
                               "--command-config", str(properties), "--json", *args],
                              capture_output=True, text=True, timeout=60)
        if check:
            assert done.returncode == 0, done.stderr
        return done

    topic = unique_topic("admin-acl")
    admin("topics", "create", topic, "--partitions", "1")
    created = json.loads(admin("acls", "create", "--allow-principal", "User:carol", "--operation", "Write",
                               "--operation", "Describe", "--topic", topic).stdout)
    assert {(a["principal"], a["operation"]) for a in created} == {("User:carol", "Write"), ("User:carol", "Describe")}
    listed = json.loads(admin("acls", "list", "--topic", topic).stdout)
    assert len(listed) == 2
    carol = "carol-" + uuid.uuid4().hex[:8]
    admin("users", "set-scram", "carol", "--mechanism", "SCRAM-SHA-256", "--password", carol, "--iterations", "8192")
    users = json.loads(admin("users", "list").stdout)
    assert {"user": "carol", "mechanism": "SCRAM-SHA-256", "iterations": "8192"} in users
    carol_config = {"bootstrap.servers": address, "security.protocol": "SASL_PLAINTEXT",
                    "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "carol", "sasl.password": carol,
                    "message.timeout.ms": 10000}
    errors = []
    producer = Producer(carol_config)
    producer.produce(topic, b"by-carol", on_delivery=lambda err, _: errors.append(err))
    producer.flush(20)
    assert errors == [None]
    deleted = json.loads(admin("acls", "delete", "--allow-principal", "User:carol", "--operation", "Write",
                               "--topic", topic).stdout)
    assert [(a["principal"], a["operation"]) for a in deleted] == [("User:carol", "Write")]
    assert len(json.loads(admin("acls", "list", "--topic", topic).stdout)) == 1
    admin("users", "delete-scram", "carol", "--mechanism", "SCRAM-SHA-256")
    assert json.loads(admin("users", "list").stdout) == []
    # A wrong password in the properties: a clear error, no password printed.
    properties.write_text(properties.read_text().replace(PASSWORDS["admin"], "wrong-password"))
    failed = admin("acls", "list", check=False)
    assert failed.returncode != 0 and "SASL authentication" in failed.stderr, failed.stderr
    assert "wrong-password" not in failed.stderr + failed.stdout
