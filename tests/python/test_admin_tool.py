"""`kbroker admin`: topics and consumer groups from the command line, with
the figures checked against what real clients produced and committed."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from clients import Record, create_topic, produce_all, producer
from conftest import broker_binary, unique_topic

pytestmark = pytest.mark.timeout(120)


def admin(broker, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(broker_binary()), "admin", "--bootstrap-server", broker.bootstrap, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert result.returncode == 0, f"admin {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def admin_json(broker, *args: str, check: bool = True):
    result = admin(broker, "--json", *args, check=check)
    return json.loads(result.stdout), result.returncode


def test_topics_create_list_describe_delete(broker):
    topic = unique_topic("adm")
    created, _ = admin_json(broker, "topics", "create", topic, "--partitions", "4", "--config", "retention.ms=3600000")
    assert created["error"] == "NONE" and created["partitions"] == 4

    listed, _ = admin_json(broker, "topics", "list")
    assert {"topic": topic, "partitions": 4, "internal": False} in listed

    [described], _ = admin_json(broker, "topics", "describe", topic)
    assert described["topic_id"] == created["topic_id"]
    assert [p["partition"] for p in described["partitions"]] == [0, 1, 2, 3]
    assert all(p["leader"] == 1 and p["isr"] == [1] for p in described["partitions"])
    text = admin(broker, "topics", "describe", topic).stdout
    assert text.startswith(f"TOPIC {topic}") and "PARTITION  LEADER  EPOCH  REPLICAS  ISR" in text

    again, code = admin_json(broker, "topics", "create", topic, check=False)
    assert code == 1 and again["error"] == "TopicAlreadyExists"
    bad, code = admin_json(broker, "topics", "create", "bad/name", check=False)
    assert code == 1 and bad["error"] == "InvalidTopicException"

    deleted, _ = admin_json(broker, "topics", "delete", topic)
    assert deleted == [{"name": topic, "error": "NONE"}]
    missing, code = admin_json(broker, "topics", "describe", topic, check=False)
    assert code == 1 and missing[0]["error"] == "UnknownTopicOrPartition"


def test_group_lag_is_produced_minus_committed(broker_factory):
    broker = broker_factory("group.initial.rebalance.delay.ms=0")
    topic = unique_topic("lag")
    create_topic(broker.bootstrap, topic, 3)
    produced = {0: 500, 1: 300, 2: 200}
    records = [Record(None, b"x", partition=p) for p, n in produced.items() for _ in range(n)]
    assert not produce_all(producer(broker.bootstrap), topic, records).failed

    group = unique_topic("lag-group")
    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    deadline = time.monotonic() + 30
    while len(consumer.assignment()) < 3:
        consumer.poll(0.1)
        assert time.monotonic() < deadline, "no assignment"
    committed = {0: 120, 1: 300, 2: 0}
    consumer.commit(offsets=[TopicPartition(topic, p, o, f"m{p}") for p, o in committed.items()], asynchronous=False)
    member_id = consumer.memberid()

    [described], _ = admin_json(broker, "groups", "describe", group)
    assert described["state"] == "Stable"
    assert (described["protocol_type"], described["protocol"]) == ("consumer", "range")
    [member] = described["members"]
    assert member["member_id"] == member_id and member["client_host"] == "/127.0.0.1"
    assert sorted(a["partition"] for a in member["assignment"]) == [0, 1, 2]
    offsets = {o["partition"]: o for o in described["offsets"]}
    for p in range(3):
        assert offsets[p]["committed"] == committed[p]
        assert offsets[p]["end"] == produced[p]
        assert offsets[p]["lag"] == produced[p] - committed[p]
        # confluent-kafka sends the metadata string with its C terminator.
        assert offsets[p]["metadata"].rstrip("\x00") == f"m{p}"
        assert offsets[p]["member"] == member_id
    text = admin(broker, "groups", "describe", group).stdout
    assert "COMMITTED  END  LAG" in text
    assert [line.split()[:5] for line in text.splitlines() if line.startswith(topic)] == [
        [topic, str(p), str(committed[p]), str(produced[p]), str(produced[p] - committed[p])] for p in range(3)
    ]

    # Several groups in one OffsetFetch (v8): each gets its own offsets.
    both, _ = admin_json(broker, "groups", "describe", group, "never-used")
    assert [g["group"] for g in both] == [group, "never-used"]
    assert len(both[0]["offsets"]) == 3
    assert (both[1]["state"], both[1]["offsets"]) == ("Dead", [])

    listed, _ = admin_json(broker, "groups", "list")
    assert {"group": group, "state": "Stable", "protocol_type": "consumer"} in listed
    busy, code = admin_json(broker, "groups", "delete", group, check=False)
    assert code == 1 and busy == [{"name": group, "error": "NonEmptyGroup"}]

    consumer.close()
    [after], _ = admin_json(broker, "groups", "describe", group)
    assert after["state"] == "Empty" and after["members"] == []
    assert {o["partition"]: o["lag"] for o in after["offsets"]} == {p: produced[p] - committed[p] for p in range(3)}
    deleted, _ = admin_json(broker, "groups", "delete", group)
    assert deleted == [{"name": group, "error": "NONE"}]
    gone, code = admin_json(broker, "groups", "delete", group, check=False)
    assert code == 1 and gone == [{"name": group, "error": "GroupIdNotFound"}]


def test_unreachable_broker_is_an_error_not_a_panic(tmp_path):
    result = subprocess.run(
        [str(broker_binary()), "admin", "--bootstrap-server", "127.0.0.1:1", "topics", "list"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: connecting to 127.0.0.1:1")


def test_configs_alter_and_delete_records(broker):
    topic = unique_topic("adm-cfg")
    admin(broker, "topics", "create", topic, "--partitions", "1", "--config", "segment.bytes=2097152")
    assert not produce_all(producer(broker.bootstrap), topic, [Record(None, b"x", partition=0)] * 10).failed

    admin(broker, "topics", "alter", topic, "--set", "retention.ms=5000", "--delete", "segment.bytes")
    configs = {c["name"]: c for c in admin_json(broker, "configs", "describe", "--topic", topic)[0]}
    assert (configs["retention.ms"]["value"], configs["retention.ms"]["source"]) == ("5000", "TOPIC")
    assert (configs["segment.bytes"]["value"], configs["segment.bytes"]["source"]) == ("1073741824", "DEFAULT")
    refused, code = admin_json(broker, "topics", "alter", topic, "--set", "retention.ms=soon", check=False)
    assert code == 1 and refused["error"] == "InvalidConfig"

    broker_configs = {c["name"]: c for c in admin_json(broker, "configs", "describe", "--broker", "1")[0]}
    assert broker_configs["num.partitions"]["value"] == "3"  # the test broker's override
    assert broker_configs["num.partitions"]["source"] == "STATIC_BROKER"

    deleted, _ = admin_json(broker, "topics", "delete-records", topic, "--partition", "0", "--before", "4")
    assert (deleted["error"], deleted["low_watermark"]) == ("NONE", 4)
    too_far, code = admin_json(broker, "topics", "delete-records", topic, "--partition", "0", "--before", "11", check=False)
    assert code == 1 and too_far["error"] == "OffsetOutOfRange"
    everything, _ = admin_json(broker, "topics", "delete-records", topic, "--partition", "0", "--before", "-1")
    assert everything["low_watermark"] == 10
