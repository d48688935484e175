"""A small toolkit for hand-made Kafka requests over a raw TCP socket.

Tests that need exact bytes on the wire (malformed input, error cases a real
client seldom provokes) encode requests with the functions here, send them on
a `Connection`, and decode the answer with a `Reader`. Only the primitive types
and framing live here; each test file encodes the requests it needs.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import crc32c

if TYPE_CHECKING:
    from conftest import Broker

SOCKET_TIMEOUT_S = 10.0
# A broker that rejects a request closes at once; it must not wait for more bytes.
CLOSE_TIMEOUT_S = 5.0

# Api keys.
PRODUCE = 0
FETCH = 1
LIST_OFFSETS = 2
METADATA = 3
OFFSET_COMMIT = 8
OFFSET_FETCH = 9
FIND_COORDINATOR = 10
JOIN_GROUP = 11
HEARTBEAT = 12
LEAVE_GROUP = 13
SYNC_GROUP = 14
DESCRIBE_GROUPS = 15
LIST_GROUPS = 16
API_VERSIONS = 18
CREATE_TOPICS = 19
DELETE_GROUPS = 42
INIT_PRODUCER_ID = 22
ADD_PARTITIONS_TO_TXN = 24
END_TXN = 26
OFFSET_DELETE = 47
DESCRIBE_PRODUCERS = 61
DESCRIBE_TOPIC_PARTITIONS = 75

# The first version of each API with a flexible (tagged-field) encoding.
# APIs not listed here (OffsetDelete, unknown keys) are never flexible.
FLEXIBLE_FROM = {
    PRODUCE: 9,
    FETCH: 12,
    LIST_OFFSETS: 6,
    METADATA: 9,
    OFFSET_COMMIT: 8,
    OFFSET_FETCH: 6,
    FIND_COORDINATOR: 3,
    JOIN_GROUP: 6,
    HEARTBEAT: 4,
    LEAVE_GROUP: 4,
    SYNC_GROUP: 4,
    DESCRIBE_GROUPS: 5,
    LIST_GROUPS: 3,
    API_VERSIONS: 3,
    CREATE_TOPICS: 5,
    DELETE_GROUPS: 2,
    INIT_PRODUCER_ID: 2,
    ADD_PARTITIONS_TO_TXN: 3,
    END_TXN: 3,
    DESCRIBE_PRODUCERS: 0,
    DESCRIBE_TOPIC_PARTITIONS: 0,
}

# An empty tagged-field section.
EMPTY_TAGS = b"\x00"


def is_flexible(api_key: int, version: int) -> bool:
    return version >= FLEXIBLE_FROM.get(api_key, 1 << 15)


def has_flexible_response_header(api_key: int, version: int) -> bool:
    """Response header v1 (with tagged fields)? The ApiVersions response header
    is always v0, so that any client can read it."""
    return api_key != API_VERSIONS and is_flexible(api_key, version)


# ---------------------------------------------------------------------------
# Encoding


def int8(value: int) -> bytes:
    return struct.pack(">b", value)


def int16(value: int) -> bytes:
    return struct.pack(">h", value)


def int32(value: int) -> bytes:
    return struct.pack(">i", value)


def int64(value: int) -> bytes:
    return struct.pack(">q", value)


def uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def varint(value: int) -> bytes:
    """Zigzag-encoded signed varint (record fields)."""
    return uvarint((value << 1) ^ (value >> 63))


def string(value: str | None) -> bytes:
    """STRING, or NULLABLE_STRING when `value` is None."""
    if value is None:
        return int16(-1)
    data = value.encode()
    return int16(len(data)) + data


def compact_string(value: str | None) -> bytes:
    if value is None:
        return uvarint(0)
    data = value.encode()
    return uvarint(len(data) + 1) + data


def nbytes(value: bytes | None) -> bytes:
    """BYTES, or NULLABLE_BYTES when `value` is None."""
    if value is None:
        return int32(-1)
    return int32(len(value)) + value


def compact_bytes(data: bytes) -> bytes:
    return uvarint(len(data) + 1) + data


def array(items: list[bytes]) -> bytes:
    """An ARRAY of already encoded items."""
    return int32(len(items)) + b"".join(items)


def compact_array(items: list[bytes]) -> bytes:
    return uvarint(len(items) + 1) + b"".join(items)


def frame(body: bytes) -> bytes:
    """Prefixes `body` with its size, as every request and response is."""
    return int32(len(body)) + body


def request_frame(api_key: int, version: int, correlation_id: int, body: bytes, client_id: str | None) -> bytes:
    """Request header v1, or v2 (with tagged fields) for flexible versions, then `body`."""
    header = int16(api_key) + int16(version) + int32(correlation_id) + string(client_id)
    if is_flexible(api_key, version):
        header += EMPTY_TAGS
    return frame(header + body)


def record_batch(
    key: bytes,
    value: bytes,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    transactional: bool = False,
    count: int = 1,
) -> bytes:
    """A RecordBatch v2 (magic 2) of `count` uncompressed records with this
    key and value; not idempotent unless given a producer id, epoch and
    base sequence."""
    timestamp = int(time.time() * 1000)
    records = b""
    for delta in range(count):
        record = (
            int8(0)  # attributes
            + varint(0)  # timestamp delta
            + varint(delta)  # offset delta
            + varint(len(key)) + key
            + varint(len(value)) + value
            + varint(0)  # headers
        )
        records += varint(len(record)) + record
    crc_covered = (
        int16(0x10 if transactional else 0)  # attributes: no compression, create time
        + int32(count - 1)  # last offset delta
        + int64(timestamp)  # base timestamp
        + int64(timestamp)  # max timestamp
        + int64(producer_id) + int16(producer_epoch) + int32(base_sequence)
        + int32(count)  # record count
        + records
    )
    after_length = int32(-1) + int8(2) + struct.pack(">I", crc32c.crc32c(crc_covered)) + crc_covered
    return int64(0) + int32(len(after_length)) + after_length


# Offset of the CRC in a RecordBatch: base offset, length, leader epoch, magic.
BATCH_CRC_AT = 8 + 4 + 4 + 1


# ---------------------------------------------------------------------------
# Decoding


class Reader:
    """Reads Kafka's primitive types from a response body; reading past its
    end fails the test."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, size: int) -> bytes:
        assert self.pos + size <= len(self.data), f"response truncated at byte {self.pos} (+{size})"
        chunk = self.data[self.pos:self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: str) -> int:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def int8(self) -> int:
        return self.unpack(">b")

    def int16(self) -> int:
        return self.unpack(">h")

    def int32(self) -> int:
        return self.unpack(">i")

    def int64(self) -> int:
        return self.unpack(">q")

    def uvarint(self) -> int:
        value = shift = 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    def string(self) -> str | None:
        size = self.int16()
        return None if size < 0 else self.take(size).decode()

    def compact_string(self) -> str | None:
        size = self.uvarint() - 1
        return None if size < 0 else self.take(size).decode()

    def bytes(self) -> bytes | None:
        size = self.int32()
        return None if size < 0 else self.take(size)

    def array(self, item: Callable[[], object]) -> list:
        """Calls `item` once per element; a null array reads as empty."""
        count = self.int32()
        return [] if count < 0 else [item() for _ in range(count)]

    def compact_array(self, item: Callable[[], object]) -> list:
        count = self.uvarint() - 1
        return [] if count < 0 else [item() for _ in range(count)]

    def tags(self) -> None:
        """Skips a tagged-field section."""
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            self.take(self.uvarint())

    def assert_end(self) -> None:
        assert self.pos == len(self.data), f"{len(self.data) - self.pos} unexpected trailing bytes"


# ---------------------------------------------------------------------------
# Connections


class Connection:
    """One TCP connection to the broker. Requests carry `client_id`: set it
    per connection, or per test file in a subclass."""

    client_id: str | None = "kbroker-tests"

    def __init__(self, broker: Broker, client_id: str | None = None):
        self.sock = socket.create_connection((broker.host, broker.port), timeout=SOCKET_TIMEOUT_S)
        if client_id is not None:
            self.client_id = client_id
        self.correlation_id = 0

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_) -> None:
        self.sock.close()

    @property
    def peer(self) -> str:
        """Our address as the broker sees (and logs) it."""
        host, port = self.sock.getsockname()
        return f"{host}:{port}"

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, api_key: int, version: int, body: bytes) -> int:
        """Sends a request without waiting for its answer: its correlation id."""
        self.correlation_id += 1
        self.send_raw(request_frame(api_key, version, self.correlation_id, body, self.client_id))
        return self.correlation_id

    def recv_exact(self, size: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < size:
            chunk = self.sock.recv(size - len(chunks))
            assert chunk, f"connection closed after {len(chunks)} of {size} bytes"
            chunks += chunk
        return bytes(chunks)

    def receive(self, correlation_id: int, flexible_header: bool = False) -> Reader:
        """Reads the next response, which must answer `correlation_id`: a
        reader positioned at its body."""
        (size,) = struct.unpack(">i", self.recv_exact(4))
        reader = Reader(self.recv_exact(size))
        assert reader.int32() == correlation_id
        if flexible_header:
            reader.tags()
        return reader

    def call(self, api_key: int, version: int, body: bytes) -> Reader:
        """Sends a request and returns a reader positioned at the response body."""
        correlation_id = self.send(api_key, version, body)
        return self.receive(correlation_id, has_flexible_response_header(api_key, version))

    def assert_closed(self) -> None:
        """The broker closes the connection without sending anything."""
        self.sock.settimeout(CLOSE_TIMEOUT_S)
        try:
            data = self.sock.recv(4096)
        except ConnectionResetError:
            return
        except socket.timeout:
            raise AssertionError(f"the broker kept the connection open for {CLOSE_TIMEOUT_S} s") from None
        assert data == b"", f"expected the connection to be closed, got {data[:64]!r}"


# ---------------------------------------------------------------------------
# Requests several test files send


def produce(
    conn: Connection, topic: str, batches: dict[int, bytes], transactional_id: str | None = None
) -> dict[int, tuple[int, int]]:
    """Produce v9 (flexible), acks=-1: {partition: (error code, base offset)}."""
    partitions = [int32(index) + compact_bytes(data) + EMPTY_TAGS for index, data in batches.items()]
    topic_data = compact_string(topic) + compact_array(partitions) + EMPTY_TAGS
    body = compact_string(transactional_id) + int16(-1) + int32(10_000) + compact_array([topic_data]) + EMPTY_TAGS
    reader = conn.call(PRODUCE, 9, body)

    def partition() -> tuple[int, tuple[int, int]]:
        index, error_code, base_offset = reader.int32(), reader.int16(), reader.int64()
        reader.int64()  # log append time
        reader.int64()  # log start offset
        # Record errors: batch index, message, tagged fields.
        reader.compact_array(lambda: (reader.int32(), reader.compact_string(), reader.tags()))
        reader.compact_string()  # error message
        reader.tags()
        return index, (error_code, base_offset)

    def topic_response() -> list[tuple[int, tuple[int, int]]]:
        assert reader.compact_string() == topic
        partitions = reader.compact_array(partition)
        reader.tags()
        return partitions

    (results,) = reader.compact_array(topic_response)
    reader.int32()  # throttle time
    reader.tags()
    reader.assert_end()
    return dict(results)


def list_offsets(conn: Connection, topic: str, partition: int, timestamp: int) -> tuple[int, int]:
    """ListOffsets v1 as a consumer sends it (replica id -1): (error code,
    offset) for `timestamp` (-1 latest, -2 earliest) in one partition."""
    partitions = [int32(partition) + int64(timestamp)]
    reader = conn.call(LIST_OFFSETS, 1, int32(-1) + array([string(topic) + array(partitions)]))
    assert reader.int32() == 1 and reader.string() == topic
    assert reader.int32() == 1 and reader.int32() == partition
    error_code = reader.int16()
    reader.int64()  # timestamp
    offset = reader.int64()
    reader.assert_end()
    return error_code, offset


# ---------------------------------------------------------------------------
# Broker log

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def broker_log(broker: Broker) -> str:
    """The broker's log so far, without terminal colour codes."""
    return ANSI_ESCAPE.sub("", broker.log_text())
