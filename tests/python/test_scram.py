"""SASL/SCRAM-SHA-256 and SCRAM-SHA-512: credentials made through
AlterUserScramCredentials (confluent-kafka's admin API) or written before
the first start by `kbroker format --add-scram` (standalone and into etcd)
authenticate librdkafka, kcat and kafka-python; wrong passwords, unknown
users and the wrong mechanism fail alike; Describe/AlterUserScramCredentials
answer with Kafka's error codes; a credential made on one broker of a
cluster lets a client in on another within seconds; the raw exchange of a
v0 handshake works, and malformed SCRAM messages (bad nonce, replayed
client-final, broken base64, huge fields) are refused without a hang."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import struct
import subprocess
import time
import uuid

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialDeletion, UserScramCredentialUpsertion)

import wire
from conftest import broker_binary, unique_topic
from test_sasl import (SASL_AUTHENTICATE, SASL_AUTHENTICATION_FAILED, SASL_HANDSHAKE, METADATA, closed,
                       connect, read_exactly, read_response, refused, request)
from test_tls import round_trip

pytestmark = pytest.mark.timeout(180)

ALICE = "alice-" + uuid.uuid4().hex[:12]
BOB = "bob-" + uuid.uuid4().hex[:12]
JAAS_PLAIN = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
              'username="admin" password="admin-secret" user_admin="admin-secret";')
JAAS_SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
RESOURCE_NOT_FOUND, DUPLICATE_RESOURCE, UNACCEPTABLE_CREDENTIAL = 91, 92, 93


def scram_overrides(listener_port: str = "{ssl_port}") -> list[str]:
    """A PLAINTEXT listener on {port} and a SASL_PLAINTEXT one with SCRAM
    (and PLAIN for an admin) on `listener_port`."""
    return [
        f"listeners=PLAINTEXT://{{host}}:{{port}},SASL_PLAINTEXT://{{host}}:{listener_port}",
        "sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN",
        f"listener.name.sasl_plaintext.plain.sasl.jaas.config={JAAS_PLAIN}",
        f"listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config={JAAS_SCRAM}",
        f"listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={JAAS_SCRAM}",
    ]


def scram_config(address: str, user: str, password: str, mechanism: str = "SCRAM-SHA-256") -> dict:
    return {"bootstrap.servers": address, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password}


def admin_over_plain(address: str) -> AdminClient:
    return AdminClient({**scram_config(address, "admin", "admin-secret", "PLAIN")})


def upsert(admin: AdminClient, user: str, password: str, mechanism=ScramMechanism.SCRAM_SHA_256,
           iterations: int = 4096):
    futures = admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion(user, ScramCredentialInfo(mechanism, iterations), password.encode())])
    return futures[user].result(timeout=30)


def error_code(future) -> int:
    with pytest.raises(KafkaException) as failed:
        future.result(timeout=30)
    return failed.value.args[0].code()


def test_scram_credentials_from_the_admin_api_authenticate_librdkafka_kcat_and_kafka_python(
        broker_factory, kcat):
    broker = broker_factory(*scram_overrides())
    address = f"127.0.0.1:{broker.ssl_port}"
    admin = admin_over_plain(address)
    upsert(admin, "alice", ALICE)
    upsert(admin, "bob", BOB, ScramMechanism.SCRAM_SHA_512, iterations=8192)

    described = admin.describe_user_scram_credentials().result(timeout=30)
    assert {user: [(info.mechanism, info.iterations) for info in description.scram_credential_infos]
            for user, description in described.items()} == {
        "alice": [(ScramMechanism.SCRAM_SHA_256, 4096)], "bob": [(ScramMechanism.SCRAM_SHA_512, 8192)]}

    topic = unique_topic("scram")
    assert round_trip(scram_config(address, "alice", ALICE), topic, 10) == [b"tls-%04d" % i for i in range(10)]

    listed = subprocess.run(
        [kcat, "-b", address, "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=SCRAM-SHA-512",
         "-X", "sasl.username=bob", "-X", f"sasl.password={BOB}", "-L", "-t", topic],
        capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    assert topic in listed.stdout

    from kafka import KafkaConsumer, KafkaProducer
    producer = KafkaProducer(bootstrap_servers=address, security_protocol="SASL_PLAINTEXT",
                             sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="bob",
                             sasl_plain_password=BOB)
    producer.send(topic, b"from-kafka-python").get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=address, security_protocol="SASL_PLAINTEXT",
                             sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="alice",
                             sasl_plain_password=ALICE, auto_offset_reset="earliest",
                             consumer_timeout_ms=5000)
    assert b"from-kafka-python" in [record.value for record in consumer]
    consumer.close()

    # A wrong password, an unknown user and a mechanism the user has no
    # credential for all fail the same way.
    for config in (scram_config(address, "alice", "not-" + ALICE),
                   scram_config(address, "mallory", ALICE),
                   scram_config(address, "alice", ALICE, "SCRAM-SHA-512")):
        said = refused(config)
        assert "Authentication failed" in said, said

    printed = broker.log_text()
    assert any("SASL authenticated" in line and "User:bob" in line and "SCRAM-SHA-512" in line
               for line in printed.splitlines())
    for secret in (ALICE, BOB):
        assert secret not in printed


def test_user_scram_credential_apis_answer_with_kafka_s_errors(broker_factory):
    broker = broker_factory(*scram_overrides())
    address = f"127.0.0.1:{broker.ssl_port}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096)
    futures = admin.alter_user_scram_credentials([
        UserScramCredentialUpsertion("few", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 100), b"x"),
        UserScramCredentialUpsertion("many", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 20000), b"x"),
        UserScramCredentialDeletion("ghost", ScramMechanism.SCRAM_SHA_256),
        UserScramCredentialUpsertion("twice", info, b"x"),
        UserScramCredentialDeletion("twice", ScramMechanism.SCRAM_SHA_256),
        UserScramCredentialUpsertion("alice", info, ALICE.encode()),
    ])
    assert error_code(futures["few"]) == UNACCEPTABLE_CREDENTIAL
    assert error_code(futures["many"]) == UNACCEPTABLE_CREDENTIAL
    assert error_code(futures["ghost"]) == RESOURCE_NOT_FOUND
    assert error_code(futures["twice"]) == DUPLICATE_RESOURCE
    futures["alice"].result(timeout=30)

    described = admin.describe_user_scram_credentials(["alice", "nobody"])
    assert [i.iterations for i in described["alice"].result(timeout=30).scram_credential_infos] == [4096]
    assert error_code(described["nobody"]) == RESOURCE_NOT_FOUND
    assert set(admin.describe_user_scram_credentials().result(timeout=30)) == {"alice"}

    # The credentials survive a restart (they are in the metadata file) ...
    broker.stop()
    broker.start()
    round_trip(scram_config(address, "alice", ALICE), unique_topic("scram-restart"), 2)
    # ... and once deleted, the user is refused on new connections.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.alter_user_scram_credentials(
        [UserScramCredentialDeletion("alice", ScramMechanism.SCRAM_SHA_256)])["alice"].result(timeout=30)
    assert admin.describe_user_scram_credentials().result(timeout=30) == {}
    assert "Authentication failed" in refused(scram_config(address, "alice", ALICE))


def test_kbroker_format_add_scram_writes_credentials_before_the_first_start(broker_factory, tmp_path):
    data = tmp_path / "formatted"
    formatted = subprocess.run(
        [str(broker_binary()), "format", "--override", f"log.dirs={data}",
         "--add-scram", f"SCRAM-SHA-256=[name=alice,password={ALICE}]",
         "--add-scram", f"SCRAM-SHA-512=[name=bob,password={BOB},iterations=8192]"],
        capture_output=True, text=True, timeout=60)
    assert formatted.returncode == 0, formatted.stderr
    assert ALICE not in formatted.stdout + formatted.stderr
    written = [path for path in data.rglob("*") if path.is_file()]
    assert written, "format wrote nothing"
    assert not any(ALICE.encode() in path.read_bytes() for path in written), "a password is on disk"
    broker = broker_factory(*scram_overrides(), f"log.dirs={data}")
    address = f"127.0.0.1:{broker.ssl_port}"
    round_trip(scram_config(address, "alice", ALICE), unique_topic("formatted"), 2)
    round_trip(scram_config(address, "bob", BOB, "SCRAM-SHA-512"), unique_topic("formatted"), 2)

    bad = subprocess.run([str(broker_binary()), "format", "--override", f"log.dirs={data}",
                          "--add-scram", "SCRAM-SHA-256=[name=carol,password=hunter2,iterations=12]"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "iterations" in bad.stderr, bad.stderr
    assert "hunter2" not in bad.stdout + bad.stderr


def test_in_a_cluster_credentials_go_through_etcd_to_every_broker(cluster_factory, etcd):
    # Written into etcd before the cluster starts.
    prefix = f"/kbroker-test/{uuid.uuid4().hex[:12]}"
    formatted = subprocess.run(
        [str(broker_binary()), "format", "--override", f"etcd.endpoints={etcd.endpoint}",
         "--override", f"etcd.prefix={prefix}", "--add-scram", f"SCRAM-SHA-256=[name=alice,password={ALICE}]"],
        capture_output=True, text=True, timeout=60)
    assert formatted.returncode == 0, formatted.stderr
    cluster = cluster_factory(2, *scram_overrides())
    # The cluster has a prefix of its own; the formatted one is checked
    # with a broker started on it below. Here: made on broker 1 through the
    # admin API, used on broker 2.
    one, two = cluster.brokers[1], cluster.brokers[2]
    admin = AdminClient({"bootstrap.servers": one.bootstrap})
    upsert(admin, "bob", BOB, ScramMechanism.SCRAM_SHA_512)
    deadline = time.monotonic() + 10
    config = {**scram_config(f"{two.host}:{two.ssl_port}", "bob", BOB, "SCRAM-SHA-512"),
              "socket.timeout.ms": 3000}
    while True:
        probe = AdminClient(config)
        try:
            probe.list_topics(timeout=3)
            break
        except KafkaException:
            assert time.monotonic() < deadline, "broker 2 did not learn bob's credential within 10 s"
    # The formatted prefix: a broker of a cluster on it takes alice in.
    from conftest import Broker
    workdir = cluster.brokers[1].workdir.parent / "formatted"
    workdir.mkdir()
    formatted_broker = Broker(workdir, ["node.id=7", f"etcd.endpoints={etcd.endpoint}",
                                        f"etcd.prefix={prefix}", *scram_overrides()])
    formatted_broker.start()
    try:
        round_trip(scram_config(f"127.0.0.1:{formatted_broker.ssl_port}", "alice", ALICE),
                   unique_topic("etcd-formatted"), 2)
    finally:
        formatted_broker.kill9()


# -- the exchange on raw sockets ---------------------------------------------

def salted(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)


def client_final(server_first: bytes, client_first_bare: str, password: str,
                 nonce: str | None = None) -> tuple[bytes, bytes]:
    """(client-final, expected server-final) for SCRAM-SHA-256."""
    fields = dict(field.split("=", 1) for field in server_first.decode().split(","))
    nonce = nonce or fields["r"]
    salted_password = salted(password, base64.b64decode(fields["s"]), int(fields["i"]))
    client_key = hmac.digest(salted_password, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    without_proof = f"c=biws,r={nonce}"
    auth_message = f"{client_first_bare},{server_first.decode()},{without_proof}".encode()
    signature = hmac.digest(stored_key, auth_message, "sha256")
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    server_key = hmac.digest(salted_password, b"Server Key", "sha256")
    expected = b"v=" + base64.b64encode(hmac.digest(server_key, auth_message, "sha256"))
    return f"{without_proof},p={base64.b64encode(proof).decode()}".encode(), expected


def authenticate(sock: socket.socket, correlation_id: int, token: bytes) -> tuple[int, bytes]:
    """SaslAuthenticate v0: (error code, auth bytes)."""
    sock.sendall(request(SASL_AUTHENTICATE, 0, correlation_id, struct.pack(">i", len(token)) + token))
    _, body = read_response(sock)
    error = struct.unpack(">h", body[:2])[0]
    message_length = struct.unpack(">h", body[2:4])[0]
    rest = body[4 + max(message_length, 0):]
    (size,) = struct.unpack(">i", rest[:4])
    return error, rest[4:4 + size]


def handshake(sock: socket.socket, version: int = 1) -> None:
    sock.sendall(request(SASL_HANDSHAKE, version, 1, wire.string("SCRAM-SHA-256")))
    _, body = read_response(sock)
    assert struct.unpack(">h", body[:2])[0] == 0


def test_scram_on_raw_sockets_v0_and_v1_and_malformed_messages(broker_factory):
    broker = broker_factory(*scram_overrides())
    address = f"127.0.0.1:{broker.ssl_port}"
    upsert(AdminClient({"bootstrap.servers": broker.bootstrap}), "alice", ALICE)
    bare = "n=alice,r=" + base64.b64encode(os.urandom(18)).decode()

    # v1: SaslAuthenticate carries the messages; server-final proves the server knows the key.
    with connect(address) as sock:
        handshake(sock)
        error, server_first = authenticate(sock, 2, ("n,," + bare).encode())
        assert error == 0 and server_first.startswith(b"r=" + bare.split("r=")[1].encode())
        final, expected = client_final(server_first, bare, ALICE)
        assert authenticate(sock, 3, final) == (0, expected)
        sock.sendall(request(METADATA, 1, 4, struct.pack(">i", -1)))
        assert read_response(sock)[0] == 4
        # A replayed client-final on an authenticated connection is out of place.
        assert authenticate(sock, 5, final)[0] == 34  # ILLEGAL_SASL_STATE

    # v0: the same messages raw, size-prefixed.
    with connect(address) as sock:
        handshake(sock, version=0)
        first = ("n,," + bare).encode()
        sock.sendall(struct.pack(">i", len(first)) + first)
        (size,) = struct.unpack(">i", read_exactly(sock, 4))
        server_first = read_exactly(sock, size)
        final, expected = client_final(server_first, bare, ALICE)
        sock.sendall(struct.pack(">i", len(final)) + final)
        (size,) = struct.unpack(">i", read_exactly(sock, 4))
        assert read_exactly(sock, size) == expected
        sock.sendall(request(METADATA, 1, 2, struct.pack(">i", -1)))
        assert read_response(sock)[0] == 2

    # A client-final replayed on a new connection: its nonce is not this server's.
    with connect(address) as sock:
        handshake(sock)
        error, _ = authenticate(sock, 2, ("n,," + bare).encode())
        assert error == 0
        assert authenticate(sock, 3, final)[0] == SASL_AUTHENTICATION_FAILED
        assert closed(sock)

    def refused_at(step: int, message: bytes) -> None:
        with connect(address) as sock:
            handshake(sock)
            if step == 2:
                error, server_first = authenticate(sock, 2, ("n,," + bare).encode())
                assert error == 0
                message = message.replace(b"{nonce}", server_first.split(b",")[0][2:])
            started = time.monotonic()
            assert authenticate(sock, 3, message)[0] == SASL_AUTHENTICATION_FAILED, message[:80]
            assert time.monotonic() - started < 5
            assert closed(sock)

    # Malformed client-first messages.
    for message in [b"", b"garbage", b"p=tls-unique,,n=alice,r=abc", b"n,a=bob,n=alice,r=abc",
                    b"n,,n=alice", b"n,,n=" + b"y=" * 200_000 + b",r=abc",
                    b"\xff\xfe\xfd"]:
        refused_at(1, message)
    # A huge (but well-formed) nonce is answered, within the frame limit,
    # and a bogus proof then fails.
    with connect(address) as sock:
        handshake(sock)
        error, server_first = authenticate(sock, 2, b"n,,n=alice,r=" + b"x" * 400_000)
        assert error == 0 and server_first.startswith(b"r=" + b"x" * 400_000)
        nonce = server_first.split(b",")[0][2:]
        assert authenticate(sock, 3, b"c=biws,r=" + nonce + b",p=AAAA")[0] == SASL_AUTHENTICATION_FAILED
        assert closed(sock)
    # Malformed client-final messages.
    good_final, _ = client_final(b"r=placeholder,s=AAAA,i=4096", bare, ALICE)
    proof = good_final.rsplit(b",p=", 1)[1]
    for message in [b"c=biws,r={nonce}", b"c=biws,r={nonce},p=!!!not-base64!!!",
                    b"c=biws,r={nonce},p=AAAA", b"c=biws,r={nonce}x,p=" + proof,
                    b"c=eSws,r={nonce},p=" + proof, b"c=biws,r={nonce},p=" + b"A" * 400_000,
                    b"c=biws,r={nonce},p=" + proof]:
        refused_at(2, message)
    assert broker.is_running()
