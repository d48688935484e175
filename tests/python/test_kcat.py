"""End-to-end tests with Debian's kcat (librdkafka 2.0.2, older than most
clients in use: it negotiates older API versions than current librdkafka)."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from conftest import unique_topic

pytestmark = pytest.mark.timeout(120)


def run(kcat: str, *args: str, input: bytes | None = None, timeout: float = 60) -> str:
    result = subprocess.run([kcat, *args], input=input, capture_output=True, timeout=timeout)
    assert result.returncode == 0, f"kcat {' '.join(args)} failed ({result.returncode}):\n{result.stderr.decode(errors='replace')}"
    return result.stdout.decode()


def test_metadata_lists_broker_and_auto_created_topic(broker, kcat):
    topic = unique_topic("kcat-meta")
    run(kcat, "-b", broker.bootstrap, "-P", "-t", topic, input=b"hello\n")
    metadata = json.loads(run(kcat, "-b", broker.bootstrap, "-L", "-J", "-t", topic))
    assert [b["id"] for b in metadata["brokers"]] == [1]
    assert metadata["brokers"][0]["name"] == broker.bootstrap
    [described] = metadata["topics"]
    assert described["topic"] == topic
    assert len(described["partitions"]) == 3  # num.partitions of the test broker
    assert all(p["leader"] == 1 for p in described["partitions"])


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_keyed_produce_consume(broker, kcat, codec):
    topic = unique_topic(f"kcat-{codec}")
    lines = [f"key{i % 7}:value number {i} ".encode() + b"z" * 200 for i in range(3000)]
    run(kcat, "-b", broker.bootstrap, "-P", "-t", topic, "-p", "0", "-K:", "-z", codec, input=b"\n".join(lines) + b"\n")
    out = run(kcat, "-b", broker.bootstrap, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-f", "%o %k:%s\n")
    got = out.splitlines()
    assert got == [f"{i} {line.decode()}" for i, line in enumerate(lines)]
    if codec != "none":
        assert broker.segment_bytes(topic) < sum(map(len, lines)) // 4


def test_query_offset_by_timestamp(broker, kcat):
    topic = unique_topic("kcat-query")
    now = int(time.time() * 1000)
    # One produce call per record so that each has its own timestamp.
    for i in range(5):
        run(kcat, "-b", broker.bootstrap, "-P", "-t", topic, "-p", "0", input=f"r{i}\n".encode())
        time.sleep(0.02)
    out = run(kcat, "-b", broker.bootstrap, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-f", "%T\n")
    stamps = [int(x) for x in out.split()]
    assert len(stamps) == 5 and all(now - 60_000 < ts < now + 60_000 for ts in stamps)
    answer = run(kcat, "-b", broker.bootstrap, "-Q", "-t", f"{topic}:0:{stamps[3]}")
    assert f"offset {3}" in answer or " 3\n" in answer, answer


def test_null_key_and_empty_value(broker, kcat):
    topic = unique_topic("kcat-null")
    # -Z sends empty keys/values as NULL.
    run(kcat, "-b", broker.bootstrap, "-P", "-t", topic, "-p", "0", "-K:", "-Z", input=b":v1\nk2:\n")
    out = run(kcat, "-b", broker.bootstrap, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-f", "%K %k|%S %s\n")
    assert out.splitlines() == ["-1 |2 v1", "2 k2|-1 "]


@pytest.mark.parametrize("fallback", ["0.9.0", "0.10.0"])
@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4"])
def test_old_message_formats(broker, kcat, fallback, codec):
    """librdkafka told it talks to Kafka 0.9 (Produce v1, Fetch v1 and
    ListOffsets v0: messages of magic 0, LZ4 frames with the pre-0.10 header
    checksum) or 0.10 (Produce v2, Fetch v2: magic 1, timestamps): the
    message sets are up-converted into record batches and down-converted
    back on the way out, as Kafka 3.x does."""
    topic = unique_topic(f"kcat-old-{codec}")
    old = ["-X", "api.version.request=false", "-X", f"broker.version.fallback={fallback}"]
    lines = [f"key{i % 5}:value {i}".encode() for i in range(500)]
    run(kcat, "-b", broker.bootstrap, *old, "-P", "-t", topic, "-p", "0", "-K:", "-z", codec, input=b"\n".join(lines) + b"\n")
    out = run(kcat, "-b", broker.bootstrap, *old, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-f", "%o %k:%s %T\n")
    got = [line.rsplit(" ", 1) for line in out.splitlines()]
    assert [text for text, _ in got] == [f"{i} {line.decode()}" for i, line in enumerate(lines)]
    stamps = {int(stamp) for _, stamp in got}
    if fallback == "0.9.0":
        assert stamps <= {0, -1}, stamps  # magic 0 has no timestamps
    else:
        now = time.time() * 1000
        assert all(now - 60_000 < stamp <= now for stamp in stamps), stamps
    # And read by a current client, from the same log.
    current = run(kcat, "-b", broker.bootstrap, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-f", "%o %k:%s\n")
    assert current.splitlines() == [text for text, _ in got]
