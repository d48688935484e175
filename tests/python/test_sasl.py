"""SASL listeners with PLAIN: SASL_PLAINTEXT and SASL_SSL, users from the
listener's JAAS config exactly as Kafka writes it; wrong passwords and
unknown users get the same SASL_AUTHENTICATION_FAILED; before
authentication a connection may send only ApiVersions and SaslHandshake
(then SaslAuthenticate) in frames of at most sasl.server.max.receive.size,
anything else closes it (raw sockets check the gate); SaslHandshake v0's raw
tokens work; a broker whose SASL settings cannot work refuses to start."""

from __future__ import annotations

import socket
import struct
import subprocess
import time
import uuid

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

import wire
from conftest import broker_binary, free_port, unique_topic
from test_tls import certs, client_config as tls_config, round_trip  # noqa: F401  (certs is a fixture)

pytestmark = pytest.mark.timeout(120)

ALICE_PASSWORD = "alice-" + uuid.uuid4().hex[:12]
JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
        f'username="admin" password="admin-secret" user_admin="admin-secret" user_alice="{ALICE_PASSWORD}";')

SASL_HANDSHAKE, SASL_AUTHENTICATE, API_VERSIONS, METADATA = 17, 36, 18, 3
UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED = 33, 58


def sasl_broker(broker_factory, *overrides: str, protocol: str = "SASL_PLAINTEXT"):
    """A broker with a PLAINTEXT listener and a SASL one; returns (broker, SASL address)."""
    port = free_port()
    broker = broker_factory(
        f"listeners=PLAINTEXT://127.0.0.1:{{port}},{protocol}://127.0.0.1:{port}",
        "sasl.enabled.mechanisms=PLAIN",
        f"listener.name.{protocol.lower()}.plain.sasl.jaas.config={JAAS}",
        *overrides,
    )
    return broker, f"127.0.0.1:{port}"


def plain_config(address: str, user: str = "alice", password: str = ALICE_PASSWORD) -> dict:
    return {"bootstrap.servers": address, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN", "sasl.username": user, "sasl.password": password}


def refused(config: dict) -> str:
    """Fails to get metadata over `config`; returns what librdkafka said
    (its error callback reports the broker's authentication error)."""
    said = []
    admin = AdminClient({**config, "socket.timeout.ms": 3000, "error_cb": lambda error: said.append(str(error))})
    with pytest.raises(KafkaException) as failed:
        admin.list_topics(timeout=5)
    admin.poll(1)
    return " ".join([str(failed.value), *said])


def test_sasl_plaintext_with_plain_serves_librdkafka_kcat_and_kafka_python(broker_factory, kcat):
    broker, address = sasl_broker(broker_factory)
    topic = unique_topic("sasl")
    assert round_trip(plain_config(address), topic, 10) == [b"tls-%04d" % i for i in range(10)]

    listed = subprocess.run(
        [kcat, "-b", address, "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=PLAIN",
         "-X", "sasl.username=alice", "-X", f"sasl.password={ALICE_PASSWORD}", "-L", "-t", topic],
        capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    assert topic in listed.stdout

    from kafka import KafkaConsumer, KafkaProducer
    producer = KafkaProducer(bootstrap_servers=address, security_protocol="SASL_PLAINTEXT",
                             sasl_mechanism="PLAIN", sasl_plain_username="alice",
                             sasl_plain_password=ALICE_PASSWORD)
    producer.send(topic, b"from-kafka-python").get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=address, security_protocol="SASL_PLAINTEXT",
                             sasl_mechanism="PLAIN", sasl_plain_username="alice",
                             sasl_plain_password=ALICE_PASSWORD, auto_offset_reset="earliest",
                             consumer_timeout_ms=5000)
    assert b"from-kafka-python" in [record.value for record in consumer]
    consumer.close()
    printed = [line for line in broker.log_text().splitlines() if not line.startswith("==== start")]
    assert any("SASL authenticated" in line and "User:alice" in line for line in printed)
    assert not any(ALICE_PASSWORD in line for line in printed)


def test_a_wrong_password_and_an_unknown_user_fail_alike(broker_factory):
    broker, address = sasl_broker(broker_factory)
    wrong = refused(plain_config(address, password="not-" + ALICE_PASSWORD))
    unknown = refused(plain_config(address, user="mallory"))
    assert "Authentication failed" in wrong and "Authentication failed" in unknown, (wrong, unknown)
    assert "not-" + ALICE_PASSWORD not in broker.log_text().split("==== start")[-1].split("\n", 1)[1]


def test_sasl_ssl_with_plain(broker_factory, certs):  # noqa: F811
    _, address = sasl_broker(
        broker_factory, "ssl.keystore.type=PEM", f"ssl.keystore.location={certs / 'keystore.pem'}",
        protocol="SASL_SSL")
    config = {**tls_config(address, certs), "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
              "sasl.username": "alice", "sasl.password": ALICE_PASSWORD}
    assert round_trip(config, unique_topic("sasl-ssl"), 5) == [b"tls-%04d" % i for i in range(5)]
    refused({**config, "sasl.password": "wrong"})


def request(api_key: int, version: int, correlation_id: int, body: bytes) -> bytes:
    return wire.request_frame(api_key, version, correlation_id, body, "sasl-test")


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"connection closed after {len(data)} of {size} bytes"
        data += chunk
    return data


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """(correlation id, body) of a response with header v0."""
    (size,) = struct.unpack(">i", read_exactly(sock, 4))
    data = read_exactly(sock, size)
    return struct.unpack(">i", data[:4])[0], data[4:]


def connect(address: str) -> socket.socket:
    host, port = address.split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    return sock


def closed(sock: socket.socket) -> bool:
    """Whether the broker closed the connection (within 5 s)."""
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, socket.timeout):
        return True


def test_before_authentication_only_api_versions_and_the_handshake_are_answered(broker_factory):
    _, address = sasl_broker(broker_factory)
    # ApiVersions is answered; Metadata then closes the connection unanswered.
    with connect(address) as sock:
        sock.sendall(request(API_VERSIONS, 0, 1, b""))
        _, body = read_response(sock)
        assert struct.unpack(">h", body[:2])[0] == 0
        sock.sendall(request(METADATA, 1, 2, struct.pack(">i", -1)))
        assert closed(sock), "Metadata before authentication was answered"
    # A frame larger than sasl.server.max.receive.size closes it before it is read.
    with connect(address) as sock:
        sock.sendall(struct.pack(">i", 524288 + 1) + b"\0" * 1024)
        assert closed(sock)
    # An unknown mechanism: UNSUPPORTED_SASL_MECHANISM with the enabled ones, then a close.
    with connect(address) as sock:
        sock.sendall(request(SASL_HANDSHAKE, 1, 3, wire.string("SCRAM-SHA-512")))
        _, body = read_response(sock)
        error, count = struct.unpack(">hi", body[:6])
        assert error == UNSUPPORTED_SASL_MECHANISM and count == 1
        assert body[6:] == wire.string("PLAIN")
        assert closed(sock)
    # After a v1 handshake, anything but SaslAuthenticate closes the connection.
    with connect(address) as sock:
        sock.sendall(request(SASL_HANDSHAKE, 1, 4, wire.string("PLAIN")))
        _, body = read_response(sock)
        assert struct.unpack(">h", body[:2])[0] == 0
        sock.sendall(request(API_VERSIONS, 0, 5, b""))
        assert closed(sock)
    # A wrong password: SASL_AUTHENTICATION_FAILED, then a close.
    with connect(address) as sock:
        sock.sendall(request(SASL_HANDSHAKE, 1, 6, wire.string("PLAIN")))
        read_response(sock)
        token = b"\0alice\0wrong"
        sock.sendall(request(SASL_AUTHENTICATE, 0, 7, struct.pack(">i", len(token)) + token))
        _, body = read_response(sock)
        assert struct.unpack(">h", body[:2])[0] == SASL_AUTHENTICATION_FAILED
        assert closed(sock)
    # Authenticated: every request is served; another handshake is out of place.
    with connect(address) as sock:
        sock.sendall(request(SASL_HANDSHAKE, 1, 8, wire.string("PLAIN")))
        read_response(sock)
        token = b"\0alice\0" + ALICE_PASSWORD.encode()
        sock.sendall(request(SASL_AUTHENTICATE, 0, 9, struct.pack(">i", len(token)) + token))
        _, body = read_response(sock)
        assert struct.unpack(">h", body[:2])[0] == 0
        sock.sendall(request(METADATA, 1, 10, struct.pack(">i", -1)))
        correlation_id, _ = read_response(sock)
        assert correlation_id == 10


def test_a_v0_handshake_takes_the_raw_plain_token(broker_factory):
    _, address = sasl_broker(broker_factory)
    with connect(address) as sock:
        sock.sendall(request(SASL_HANDSHAKE, 0, 1, wire.string("PLAIN")))
        _, body = read_response(sock)
        assert struct.unpack(">h", body[:2])[0] == 0
        token = b"\0alice\0" + ALICE_PASSWORD.encode()
        sock.sendall(struct.pack(">i", len(token)) + token)
        assert read_exactly(sock, 4) == b"\0\0\0\0", "the empty server token"
        sock.sendall(request(METADATA, 1, 2, struct.pack(">i", -1)))
        correlation_id, _ = read_response(sock)
        assert correlation_id == 2
    with connect(address) as sock:
        sock.sendall(request(SASL_HANDSHAKE, 0, 1, wire.string("PLAIN")))
        read_response(sock)
        token = b"\0alice\0wrong"
        sock.sendall(struct.pack(">i", len(token)) + token)
        assert closed(sock)


def test_sasl_handshakes_on_other_listeners_are_illegal(broker_factory):
    broker, _ = sasl_broker(broker_factory)
    with connect(broker.bootstrap) as sock:
        sock.sendall(request(SASL_HANDSHAKE, 1, 1, wire.string("PLAIN")))
        _, body = read_response(sock)
        assert struct.unpack(">h", body[:2])[0] == 34  # ILLEGAL_SASL_STATE
        sock.sendall(request(API_VERSIONS, 0, 2, b""))
        assert read_response(sock)[0] == 2, "the connection stays open"


@pytest.mark.parametrize("case", ["gssapi", "no-jaas", "no-users", "wrong-module"])
def test_sasl_settings_that_cannot_work_stop_the_broker(tmp_path, case):
    base = ["listeners=SASL_PLAINTEXT://127.0.0.1:%d" % free_port(), f"log.dirs={tmp_path / 'data'}"]
    extra = {
        "gssapi": [],  # Kafka's default sasl.enabled.mechanisms is GSSAPI
        "no-jaas": ["sasl.enabled.mechanisms=PLAIN"],
        "no-users": ["sasl.enabled.mechanisms=PLAIN",
                     "listener.name.sasl_plaintext.plain.sasl.jaas.config="
                     "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"a\" password=\"b\";"],
        "wrong-module": ["sasl.enabled.mechanisms=PLAIN",
                         "listener.name.sasl_plaintext.plain.sasl.jaas.config="
                         "org.apache.kafka.common.security.scram.ScramLoginModule required;"],
    }[case]
    command = [str(broker_binary())]
    for item in base + extra:
        command += ["--override", item]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    said = done.stdout + done.stderr
    assert done.returncode != 0, said
    expected = {"gssapi": "GSSAPI is not supported", "no-jaas": "plain.sasl.jaas.config is not set",
                "no-users": "names no user", "wrong-module": "PlainLoginModule"}[case]
    assert expected in said, said


def authenticate_plain(sock: socket.socket, user: str, password: str, correlation_id: int = 1) -> tuple[int, int]:
    """SaslHandshake v1 + SaslAuthenticate v1 with PLAIN: (error, session lifetime ms)."""
    sock.sendall(request(SASL_HANDSHAKE, 1, correlation_id, wire.string("PLAIN")))
    _, body = read_response(sock)
    assert struct.unpack(">h", body[:2])[0] == 0
    token = b"\0" + user.encode() + b"\0" + password.encode()
    sock.sendall(request(SASL_AUTHENTICATE, 1, correlation_id + 1, struct.pack(">i", len(token)) + token))
    _, body = read_response(sock)
    error = struct.unpack(">h", body[:2])[0]
    if error:
        return error, 0
    (message_length,) = struct.unpack(">h", body[2:4])
    rest = body[4 + max(message_length, 0):]
    (size,) = struct.unpack(">i", rest[:4])
    (lifetime,) = struct.unpack(">q", rest[4 + size:12 + size])
    return error, lifetime


def metadata_answered(sock: socket.socket, correlation_id: int) -> bool:
    sock.sendall(request(METADATA, 1, correlation_id, struct.pack(">i", -1)))
    try:
        return read_response(sock)[0] == correlation_id
    except (AssertionError, ConnectionResetError, socket.timeout):
        return False


def test_kip_368_sessions_expire_unless_the_client_authenticates_again(broker_factory):
    _, address = sasl_broker(broker_factory, "connections.max.reauth.ms=1500")
    # The lifetime is told; past it, a request closes the connection.
    with connect(address) as sock:
        assert authenticate_plain(sock, "alice", ALICE_PASSWORD) == (0, 1500)
        assert metadata_answered(sock, 10)
        time.sleep(2)
        assert not metadata_answered(sock, 11), "a request after the session expired was answered"
    # Re-authenticating in time keeps the connection.
    with connect(address) as sock:
        assert authenticate_plain(sock, "alice", ALICE_PASSWORD) == (0, 1500)
        for round_ in range(3):
            time.sleep(1)
            assert authenticate_plain(sock, "alice", ALICE_PASSWORD, 20 + 2 * round_) == (0, 1500)
            assert metadata_answered(sock, 40 + round_)
    # Re-authenticating as someone else is refused.
    with connect(address) as sock:
        assert authenticate_plain(sock, "alice", ALICE_PASSWORD)[0] == 0
        assert authenticate_plain(sock, "admin", "admin-secret", 3)[0] == SASL_AUTHENTICATION_FAILED
        assert closed(sock)


def test_librdkafka_reauthenticates_and_keeps_producing(broker_factory):
    broker, address = sasl_broker(broker_factory, "connections.max.reauth.ms=2000")
    from confluent_kafka import Producer
    errors = []
    producer = Producer({**plain_config(address), "message.timeout.ms": 10000})
    topic = unique_topic("reauth")
    deadline = time.monotonic() + 7
    sent = 0
    while time.monotonic() < deadline:
        producer.produce(topic, b"x", on_delivery=lambda err, _: errors.append(err))
        sent += 1
        producer.poll(0.2)
    assert producer.flush(20) == 0
    assert len(errors) == sent and all(error is None for error in errors), errors[:3]
    assert "session expired" not in broker.log_text()
