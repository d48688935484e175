"""Malformed and hostile bytes on the wire, sent over raw TCP.

Each bad input must get the answer Apache Kafka gives: an error code in a
normal response, or the connection closed (with a log line saying why).
Either way the broker stays up and keeps serving other connections.
Requests are encoded by hand here, so the bytes are exactly the ones meant.
"""

from __future__ import annotations

import random
import socket
import threading
import time

import pytest

import wire
from conftest import Broker, unique_topic
from wire import (
    API_VERSIONS,
    BATCH_CRC_AT,
    CREATE_TOPICS,
    EMPTY_TAGS,
    FETCH,
    METADATA,
    PRODUCE,
    SOCKET_TIMEOUT_S,
    Reader,
    array,
    broker_log,
    compact_string,
    frame,
    int8,
    int16,
    int32,
    is_flexible,
    list_offsets,
    produce,
    record_batch,
    request_frame,
    string,
    uvarint,
)

pytestmark = pytest.mark.timeout(60)

LOG_WAIT_S = 2.0
RSS_GROWTH_MAX_BYTES = 50 * 1024 * 1024
MIB = 1024 * 1024

# Error codes.
NONE = 0
CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_TOPIC_EXCEPTION = 17
UNSUPPORTED_VERSION = 35

# ListOffsets timestamps.
LATEST = -1
EARLIEST = -2

CLIENT_ID = "bad-input-test"


# ---------------------------------------------------------------------------
# Connections


class Connection(wire.Connection):
    """A raw connection whose requests carry this file's client id."""

    client_id = CLIENT_ID


def assert_logged_close(broker: Broker, peer: str, reason: str) -> None:
    """The broker logged that it closed the connection from `peer`, and why."""
    deadline = time.monotonic() + LOG_WAIT_S
    while True:
        lines = [
            line
            for line in broker_log(broker).splitlines()
            if f"peer={peer}" in line and "closing connection" in line
        ]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert lines, f"no 'closing connection' log line for peer {peer}"
    assert reason in lines[-1], f"log line does not mention {reason!r}: {lines[-1]}"


# ---------------------------------------------------------------------------
# Requests


def api_versions(conn: Connection, version: int) -> tuple[int, dict[int, tuple[int, int]]]:
    """ApiVersions v0 or v3: the error code and {api key: (min, max)}."""
    flexible = is_flexible(API_VERSIONS, version)
    body = compact_string("kbroker-tests") + compact_string("1.0") + EMPTY_TAGS if flexible else b""
    return parse_api_versions(conn.call(API_VERSIONS, version, body), version)


def parse_api_versions(reader: Reader, version: int) -> tuple[int, dict[int, tuple[int, int]]]:
    flexible = is_flexible(API_VERSIONS, version)
    error_code = reader.int16()

    def api() -> tuple[int, int, int]:
        entry = (reader.int16(), reader.int16(), reader.int16())
        if flexible:
            reader.tags()
        return entry

    entries = reader.compact_array(api) if flexible else reader.array(api)
    if version >= 1:
        reader.int32()  # throttle time
    if flexible:
        reader.tags()
    reader.assert_end()
    return error_code, {key: (low, high) for key, low, high in entries}


def assert_serving(broker: Broker) -> None:
    """The broker is running and answers ApiVersions on a new connection."""
    broker.assert_alive()
    with Connection(broker) as conn:
        error_code, apis = api_versions(conn, 3)
    assert error_code == NONE
    assert PRODUCE in apis


def create_topics(conn: Connection, names: list[str], partitions: int = 3) -> dict[str, int]:
    """CreateTopics v4: {name: error code}."""
    topics = [
        string(name) + int32(partitions) + int16(1) + array([]) + array([])  # no assignments, no configs
        for name in names
    ]
    reader = conn.call(CREATE_TOPICS, 4, array(topics) + int32(10_000) + int8(0))
    reader.int32()  # throttle time

    def result() -> tuple[str, int]:
        name, error_code = reader.string(), reader.int16()
        reader.string()  # error message
        return name, error_code

    results = dict(reader.array(result))
    reader.assert_end()
    return results


def list_offset(conn: Connection, topic: str, partition: int, timestamp: int) -> int:
    """ListOffsets v1: the offset for `timestamp` (LATEST, EARLIEST) in one partition."""
    error_code, offset = list_offsets(conn, topic, partition, timestamp)
    assert error_code == NONE
    return offset


# ---------------------------------------------------------------------------
# Bad inputs that must close the connection: (bytes to send, reason logged).

# A valid ApiVersions v0 header, for frames whose size prefix is the problem.
HEADER_V1_PREFIX = int16(API_VERSIONS) + int16(0) + int32(1) + string("x")

NEGATIVE_SIZE = (int32(-1) + HEADER_V1_PREFIX, "negative frame size")
HUGE_SIZE = (int32(0x7FFFFFFF) + HEADER_V1_PREFIX, "exceeds socket.request.max.bytes")
GARBAGE = (frame(int16(0x7FFF) + random.Random(20).randbytes(18)), "unknown or unimplemented api key 32767")
UNKNOWN_API_KEY = (request_frame(9999, 0, 1, b"", CLIENT_ID), "unknown or unimplemented api key 9999")
METADATA_HUGE_ARRAY = (request_frame(METADATA, 1, 1, int32(0x7FFFFFFF), CLIENT_ID), "malformed Metadata v1")


def send_expecting_close(broker: Broker, data: bytes, reason: str, shut_write: bool = False) -> None:
    """Sends `data` on a new connection; the broker must close it and log `reason`."""
    with Connection(broker) as conn:
        conn.send_raw(data)
        if shut_write:
            conn.sock.shutdown(socket.SHUT_WR)
        conn.assert_closed()
        assert_logged_close(broker, conn.peer, reason)


# ---------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize("version", [0, 3])
def test_api_versions_sanity(broker, version):
    with Connection(broker) as conn:
        error_code, apis = api_versions(conn, version)
    assert error_code == NONE
    assert PRODUCE in apis and FETCH in apis
    assert apis[API_VERSIONS] == (0, 3)
    assert_serving(broker)


def test_negative_frame_size_closes(broker):
    send_expecting_close(broker, *NEGATIVE_SIZE)
    assert_serving(broker)


@pytest.mark.parametrize(
    "size", [0x7FFFFFFF, 200 * MIB, 100 * MIB + 1], ids=["i32-max", "200MiB", "max-request-bytes+1"]
)
def test_huge_frame_size_closes_without_waiting_or_allocating(broker, size):
    rss_before = broker.rss_bytes()
    send_expecting_close(broker, int32(size) + HEADER_V1_PREFIX, "exceeds socket.request.max.bytes")
    assert broker.rss_bytes() - rss_before < RSS_GROWTH_MAX_BYTES
    assert_serving(broker)


def test_garbage_frame_closes(broker):
    send_expecting_close(broker, *GARBAGE)
    assert_serving(broker)


def test_truncated_frame_closes(broker):
    # A 10-byte header (null client id) of the 100 bytes announced, then end of stream.
    header = int16(METADATA) + int16(1) + int32(1) + string(None)
    send_expecting_close(broker, int32(100) + header, "10 of 100 bytes", shut_write=True)
    assert_serving(broker)


@pytest.mark.parametrize("api_key", [9999, 4], ids=["unknown", "unimplemented-LeaderAndIsr"])
def test_unknown_api_key_closes(broker, api_key):
    send_expecting_close(broker, request_frame(api_key, 0, 1, b"", CLIENT_ID), f"api key {api_key}")
    assert_serving(broker)


def test_api_versions_unsupported_version_answers_v0_with_error(broker):
    """KIP-511: an ApiVersions version the broker does not know is answered
    with UNSUPPORTED_VERSION in a v0 body that lists the ApiVersions range, so
    the client can retry with a version both sides know."""
    with Connection(broker) as conn:
        conn.send_raw(request_frame(API_VERSIONS, 99, 42, EMPTY_TAGS, CLIENT_ID))
        error_code, apis = parse_api_versions(conn.receive(42, flexible_header=False), 0)
        assert error_code == UNSUPPORTED_VERSION
        assert apis[API_VERSIONS] == (0, 3)
        # The connection stays usable for the retry.
        assert api_versions(conn, 3)[0] == NONE
    assert_serving(broker)


def test_unsupported_metadata_version_closes(broker):
    data = request_frame(METADATA, 99, 1, EMPTY_TAGS, CLIENT_ID)
    send_expecting_close(broker, data, "unsupported version 99 of Metadata")
    assert_serving(broker)


def test_produce_to_invalid_partition_is_unknown_topic_or_partition(broker):
    topic = unique_topic("bad-partition")
    batch = record_batch(b"key", b"value")
    with Connection(broker) as conn:
        assert create_topics(conn, [topic]) == {topic: NONE}
        results = produce(conn, topic, {-1: batch, 3: batch, 0: batch})
        assert results[-1] == (UNKNOWN_TOPIC_OR_PARTITION, -1)
        assert results[3] == (UNKNOWN_TOPIC_OR_PARTITION, -1)
        assert results[0] == (NONE, 0)
    assert_serving(broker)


def test_create_topics_with_invalid_names(broker):
    invalid = ["bad/name", ".", "..", "", "a" * 250, "space name"]
    valid = unique_topic("valid")
    with Connection(broker) as conn:
        results = create_topics(conn, invalid + [valid])
    assert results == {**{name: INVALID_TOPIC_EXCEPTION for name in invalid}, valid: NONE}
    assert_serving(broker)


def test_produce_with_bad_crc_is_corrupt_message(broker):
    topic = unique_topic("bad-crc")
    corrupted = bytearray(record_batch(b"key", b"corrupted"))
    corrupted[BATCH_CRC_AT] ^= 0x01
    with Connection(broker) as conn:
        assert create_topics(conn, [topic], partitions=1) == {topic: NONE}
        assert produce(conn, topic, {0: bytes(corrupted)}) == {0: (CORRUPT_MESSAGE, -1)}
        # The same connection goes on working, and only the valid batch is stored.
        assert produce(conn, topic, {0: record_batch(b"key", b"valid")}) == {0: (NONE, 0)}
        assert list_offset(conn, topic, 0, EARLIEST) == 0
        assert list_offset(conn, topic, 0, LATEST) == 1
    assert_serving(broker)


def test_huge_array_count_closes_without_allocating(broker):
    rss_before = broker.rss_bytes()
    send_expecting_close(broker, *METADATA_HUGE_ARRAY)
    assert broker.rss_bytes() - rss_before < RSS_GROWTH_MAX_BYTES
    assert_serving(broker)


@pytest.mark.parametrize(
    "length",
    [
        uvarint(0x7FFFFFFF),  # 2^31 - 2 topics
        uvarint(0xFFFFFFFF),  # Kafka reads -2 (null), then nothing follows
        b"\xff\xff\xff\xff\xff\x01",  # longer than the 5 bytes a varint may take
    ],
    ids=["2^31-1", "2^32-1", "overlong"],
)
def test_huge_compact_array_length_closes(broker, length):
    send_expecting_close(broker, request_frame(METADATA, 9, 1, length, CLIENT_ID), "malformed Metadata v9")
    assert_serving(broker)


def test_bad_connections_do_not_disturb_a_good_one(broker):
    bad_inputs = [NEGATIVE_SIZE, HUGE_SIZE, GARBAGE, UNKNOWN_API_KEY, METADATA_HUGE_ARRAY]
    bad_count = 20
    failures: list[str] = []
    bad_done = threading.Event()

    def bad(index: int) -> None:
        data, _ = bad_inputs[index % len(bad_inputs)]
        try:
            with Connection(broker) as conn:
                conn.send_raw(data)
                conn.assert_closed()
        except Exception as error:
            failures.append(f"bad connection {index}: {error!r}")

    answered = 0

    def good() -> None:
        nonlocal answered
        try:
            with Connection(broker) as conn:
                # Keeps asking while the bad connections come and go, then a few more.
                while not bad_done.is_set() or answered < 50:
                    assert api_versions(conn, 3)[0] == NONE
                    answered += 1
        except Exception as error:
            failures.append(f"good connection after {answered} answers: {error!r}")

    good_thread = threading.Thread(target=good)
    good_thread.start()
    bad_threads = [threading.Thread(target=bad, args=(i,)) for i in range(bad_count)]
    for thread in bad_threads:
        thread.start()
    for thread in bad_threads:
        thread.join(SOCKET_TIMEOUT_S)
    bad_done.set()
    good_thread.join(SOCKET_TIMEOUT_S)
    assert not any(thread.is_alive() for thread in bad_threads + [good_thread]), "a connection thread hung"
    assert not failures, failures
    assert answered >= 50
    assert_serving(broker)
