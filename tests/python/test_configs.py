"""DescribeConfigs, AlterConfigs and IncrementalAlterConfigs with
confluent-kafka's and kafka-python's admin clients: Kafka's names, defaults
and sources; changes that persist and take effect without a restart."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    ResourceType,
)
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource as KpConfigResource
from kafka.admin import ConfigResourceType

from clients import Record, create_topic, produce_all, producer
from conftest import unique_topic

pytestmark = pytest.mark.timeout(120)

TIMEOUT_S = 15


def describe(client: AdminClient, kind: ResourceType, name: str) -> dict:
    resource = ConfigResource(kind, name)
    return client.describe_configs([resource], request_timeout=TIMEOUT_S)[resource].result(timeout=TIMEOUT_S)


def incremental(client: AdminClient, topic: str, *entries: tuple[str, str | None, AlterConfigOpType], validate_only=False):
    resource = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[ConfigEntry(name, value, incremental_operation=op) for name, value, op in entries],
    )
    futures = client.incremental_alter_configs([resource], validate_only=validate_only, request_timeout=TIMEOUT_S)
    return futures[resource].result(timeout=TIMEOUT_S)


def test_describe_topic_configs_with_sources_and_synonyms(broker_factory):
    broker = broker_factory("log.retention.hours=2")
    topic = unique_topic("cfg")
    create_topic(broker.bootstrap, topic, 1, {"segment.bytes": "2097152"})
    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    configs = describe(client, ResourceType.TOPIC, topic)

    segment = configs["segment.bytes"]
    assert (segment.value, segment.source) == ("2097152", ConfigSource.DYNAMIC_TOPIC_CONFIG.value)
    assert not segment.is_read_only and not segment.is_sensitive and not segment.is_default
    retention = configs["retention.ms"]
    assert (retention.value, retention.source) == (str(2 * 3600 * 1000), ConfigSource.STATIC_BROKER_CONFIG.value)
    assert "log.retention.hours" in retention.synonyms
    cleanup = configs["cleanup.policy"]
    assert (cleanup.value, cleanup.source, cleanup.is_default) == ("delete", ConfigSource.DEFAULT_CONFIG.value, True)
    assert configs["max.message.bytes"].value == "1048588"
    assert configs["message.timestamp.type"].value == "CreateTime"
    assert configs["min.insync.replicas"].value == "1"

    with pytest.raises(KafkaException) as unknown:
        describe(client, ResourceType.TOPIC, unique_topic("missing"))
    assert unknown.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_describe_broker_configs(broker_factory):
    broker = broker_factory("num.partitions=7")
    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    configs = describe(client, ResourceType.BROKER, "1")
    assert (configs["num.partitions"].value, configs["num.partitions"].source) == ("7", ConfigSource.STATIC_BROKER_CONFIG.value)
    assert configs["message.max.bytes"].value == "1048588"
    assert configs["message.max.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    assert configs["num.partitions"].is_read_only
    # kafka-python (DescribeConfigs v2) sees the same.
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    [response] = kp.describe_configs([KpConfigResource(ConfigResourceType.BROKER, "1", configs={"num.partitions": None})])
    kp.close()
    [resource] = response.resources
    assert resource[0] == 0  # error code
    assert [(entry[0], entry[1]) for entry in resource[4]] == [("num.partitions", "7")]


def test_incremental_alter_configs_set_delete_append_subtract(broker):
    topic = unique_topic("alter")
    create_topic(broker.bootstrap, topic, 1, {"segment.bytes": "2097152"})
    client = AdminClient({"bootstrap.servers": broker.bootstrap})

    incremental(client, topic, ("retention.ms", "5000", AlterConfigOpType.SET), validate_only=True)
    assert describe(client, ResourceType.TOPIC, topic)["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value

    incremental(
        client,
        topic,
        ("retention.ms", "5000", AlterConfigOpType.SET),
        ("segment.bytes", None, AlterConfigOpType.DELETE),
        ("cleanup.policy", "compact", AlterConfigOpType.APPEND),
    )
    configs = describe(client, ResourceType.TOPIC, topic)
    assert (configs["retention.ms"].value, configs["retention.ms"].source) == ("5000", ConfigSource.DYNAMIC_TOPIC_CONFIG.value)
    assert configs["segment.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    assert configs["cleanup.policy"].value == "delete,compact"
    incremental(client, topic, ("cleanup.policy", "delete", AlterConfigOpType.SUBTRACT))
    assert describe(client, ResourceType.TOPIC, topic)["cleanup.policy"].value == "compact"

    for entry in (
        ("retention.ms", "1", AlterConfigOpType.APPEND),  # not a list
        ("no.such.config", "1", AlterConfigOpType.SET),
        ("retention.ms", "soon", AlterConfigOpType.SET),
        ("segment.bytes", "1", AlterConfigOpType.SET),  # below the minimum
    ):
        with pytest.raises(KafkaException) as refused:
            incremental(client, topic, ("max.message.bytes", "2000", AlterConfigOpType.SET), entry)
        assert refused.value.args[0].code() == KafkaError.INVALID_CONFIG, entry
    # Nothing of a refused request was applied.
    assert describe(client, ResourceType.TOPIC, topic)["max.message.bytes"].source == ConfigSource.DEFAULT_CONFIG.value

    broker.restart()
    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    configs = describe(client, ResourceType.TOPIC, topic)
    assert (configs["retention.ms"].value, configs["cleanup.policy"].value) == ("5000", "compact")


def test_a_changed_topic_config_applies_without_restart(broker):
    topic = unique_topic("live")
    create_topic(broker.bootstrap, topic, 1)
    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    prod = producer(broker.bootstrap, **{"linger.ms": 0})
    assert not produce_all(prod, topic, [Record(None, b"x" * 5000, partition=0)]).failed

    incremental(client, topic, ("max.message.bytes", "3000", AlterConfigOpType.SET))
    refused = produce_all(prod, topic, [Record(None, b"y" * 5000, partition=0)])
    assert [e.code() for e, _ in refused.failed] == [KafkaError.MSG_SIZE_TOO_LARGE]

    incremental(client, topic, ("max.message.bytes", None, AlterConfigOpType.DELETE))
    assert not produce_all(prod, topic, [Record(None, b"z" * 5000, partition=0)]).failed


def test_legacy_alter_configs_replaces_every_override(broker):
    topic = unique_topic("legacy")
    create_topic(broker.bootstrap, topic, 1, {"segment.bytes": "2097152", "retention.ms": "100000"})
    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.ms": "200000"})
    with pytest.warns(DeprecationWarning):  # the legacy API, on purpose
        futures = client.alter_configs([resource], request_timeout=TIMEOUT_S)
    futures[resource].result(timeout=TIMEOUT_S)
    configs = describe(client, ResourceType.TOPIC, topic)
    assert configs["retention.ms"].value == "200000"
    assert configs["segment.bytes"].source == ConfigSource.DEFAULT_CONFIG.value, "AlterConfigs drops what it does not name"

    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    kp.alter_configs([KpConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.ms": "300000"})])
    kp.close()
    assert describe(client, ResourceType.TOPIC, topic)["retention.ms"].value == "300000"


def alter_broker(client: AdminClient, name: str, *entries: tuple[str, str | None, AlterConfigOpType]):
    resource = ConfigResource(
        ResourceType.BROKER,
        name,
        incremental_configs=[ConfigEntry(key, value, incremental_operation=op) for key, value, op in entries],
    )
    return client.incremental_alter_configs([resource], request_timeout=TIMEOUT_S)[resource].result(timeout=TIMEOUT_S)


def test_dynamic_broker_configs_apply_live_and_persist(broker):
    topic = unique_topic("dyn")
    create_topic(broker.bootstrap, topic, 1)
    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    prod = producer(broker.bootstrap, **{"linger.ms": 0})

    # This broker's own dynamic config.
    alter_broker(client, "1", ("log.retention.ms", "3600000", AlterConfigOpType.SET))
    retention = describe(client, ResourceType.TOPIC, topic)["retention.ms"]
    assert (retention.value, retention.source) == ("3600000", ConfigSource.DYNAMIC_BROKER_CONFIG.value)
    broker_view = describe(client, ResourceType.BROKER, "1")["log.retention.ms"]
    assert (broker_view.value, broker_view.source, broker_view.is_read_only) == (
        "3600000",
        ConfigSource.DYNAMIC_BROKER_CONFIG.value,
        False,
    )

    # A cluster-wide default (the broker resource ""), applied to the topic's
    # log at once. confluent-kafka refuses an empty broker name locally;
    # kafka-python's AlterConfigs sends it.
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        response = kp.alter_configs([KpConfigResource(ConfigResourceType.BROKER, "", configs={"message.max.bytes": "3000"})])
    finally:
        kp.close()
    assert [r[0] for r in response.resources] == [0], response
    limit = describe(client, ResourceType.TOPIC, topic)["max.message.bytes"]
    assert (limit.value, limit.source) == ("3000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value)
    refused = produce_all(prod, topic, [Record(None, b"y" * 5000, partition=0)])
    assert [e.code() for e, _ in refused.failed] == [KafkaError.MSG_SIZE_TOO_LARGE]

    # Read-only and invalid: refused, nothing changed.
    with pytest.raises(KafkaException) as fixed:
        alter_broker(client, "1", ("num.partitions", "9", AlterConfigOpType.SET))
    assert fixed.value.args[0].code() == KafkaError.INVALID_REQUEST
    with pytest.raises(KafkaException) as invalid:
        alter_broker(client, "1", ("log.retention.ms", "soon", AlterConfigOpType.SET))
    assert invalid.value.args[0].code() == KafkaError.INVALID_CONFIG
    assert describe(client, ResourceType.TOPIC, topic)["retention.ms"].value == "3600000"

    broker.restart()
    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    assert describe(client, ResourceType.TOPIC, topic)["max.message.bytes"].value == "3000", "dynamic configs persist"
    prod = producer(broker.bootstrap, **{"linger.ms": 0})
    refused = produce_all(prod, topic, [Record(None, b"y" * 5000, partition=0)])
    assert [e.code() for e, _ in refused.failed] == [KafkaError.MSG_SIZE_TOO_LARGE]

    # AlterConfigs replaces the resource's whole set: empty removes the default.
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        response = kp.alter_configs([KpConfigResource(ConfigResourceType.BROKER, "", configs={})])
    finally:
        kp.close()
    assert [r[0] for r in response.resources] == [0], response
    assert describe(client, ResourceType.TOPIC, topic)["max.message.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    assert not produce_all(prod, topic, [Record(None, b"z" * 5000, partition=0)]).failed


def test_timestamp_bounds_refuse_old_and_future_records(broker):
    import time

    topic = unique_topic("ts-bounds")
    create_topic(
        broker.bootstrap,
        topic,
        1,
        {"message.timestamp.before.max.ms": "60000", "message.timestamp.after.max.ms": "60000"},
    )
    now = int(time.time() * 1000)
    prod = producer(broker.bootstrap, **{"linger.ms": 0})
    assert not produce_all(prod, topic, [Record(None, b"ok", timestamp=now, partition=0)]).failed
    for timestamp in (now - 3_600_000, now + 3_600_000):
        refused = produce_all(prod, topic, [Record(None, b"x", timestamp=timestamp, partition=0)])
        assert [e.code() for e, _ in refused.failed] == [KafkaError.INVALID_TIMESTAMP]
    # A topic with LogAppendTime takes any producer timestamp.
    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    incremental(client, topic, ("message.timestamp.type", "LogAppendTime", AlterConfigOpType.SET))
    assert not produce_all(prod, topic, [Record(None, b"old", timestamp=now - 3_600_000, partition=0)]).failed
