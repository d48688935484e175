"""SSL listeners: TLS with PEM material as Kafka configures it (KIP-651),
client certificates (ssl.client.auth), encrypted keys (ssl.key.password),
per-listener settings (listener.name.<l>.ssl.*), and a broker that refuses
to start, naming the property and the file, when its TLS material is
missing or wrong. Certificates are made for each test with the openssl
command line (no private key is committed)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from conftest import broker_binary, free_port, unique_topic
from tlsfiles import broker_keystore, ca, openssl, signed

pytestmark = pytest.mark.timeout(120)

KEY_PASSWORD = "keystore-secret-" + uuid.uuid4().hex[:8]


@pytest.fixture
def certs(tmp_path) -> Path:
    """A CA, a server certificate for 127.0.0.1/localhost with its keystore
    (key and chain in one PEM file, plain and with an encrypted key), a
    client certificate from the CA and one from a CA the broker does not
    trust."""
    d = tmp_path / "certs"
    d.mkdir()
    broker_keystore(d)
    ca(d, "other-ca")
    signed(d, "client", "/O=kbroker tests/CN=alice", "ca")  # RFC 2253: CN=alice,O=kbroker tests
    signed(d, "stranger", "/CN=mallory", "other-ca")
    openssl("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", "server.key", "-out", "server-encrypted.key",
            "-passout", f"pass:{KEY_PASSWORD}", cwd=d)
    (d / "keystore-encrypted.pem").write_text(
        (d / "server-encrypted.key").read_text() + (d / "server.pem").read_text())
    return d


def ssl_broker(broker_factory, certs: Path, *overrides: str):
    """A broker with a PLAINTEXT listener and an SSL one; returns (broker, SSL address)."""
    ssl_port = free_port()
    broker = broker_factory(
        f"listeners=PLAINTEXT://127.0.0.1:{{port}},SSL://127.0.0.1:{ssl_port}",
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={certs / 'keystore.pem'}",
        *overrides,
    )
    return broker, f"127.0.0.1:{ssl_port}"


def client_config(address: str, certs: Path, certificate: str | None = None) -> dict:
    config = {
        "bootstrap.servers": address,
        "security.protocol": "SSL",
        "ssl.ca.location": str(certs / "ca.pem"),
    }
    if certificate:
        config["ssl.certificate.location"] = str(certs / f"{certificate}.pem")
        config["ssl.key.location"] = str(certs / f"{certificate}.key")
    return config


def round_trip(config: dict, topic: str, count: int = 20) -> list[bytes]:
    """Produces `count` records and reads them back over `config`'s connection."""
    producer = Producer({**config, "acks": "all", "message.timeout.ms": 20000})
    failures = []
    for i in range(count):
        producer.produce(topic, value=b"tls-%04d" % i, on_delivery=lambda err, _: err and failures.append(err))
    assert producer.flush(30) == 0, "records left unsent"
    assert not failures, failures
    consumer = Consumer({**config, "group.id": "g-" + topic, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    seen = []
    try:
        for _ in range(300):
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                seen.append(message.value())
            if len(seen) >= count:
                break
    finally:
        consumer.close()
    return sorted(seen)


def metadata_fails(config: dict) -> str:
    """The error librdkafka reports when it cannot get metadata."""
    admin = AdminClient({**config, "socket.timeout.ms": 3000})
    with pytest.raises(KafkaException) as failed:
        admin.list_topics(timeout=5)
    return str(failed.value)


def test_an_ssl_listener_serves_librdkafka_kcat_and_kafka_python(broker_factory, certs, kcat):
    broker, address = ssl_broker(broker_factory, certs)
    topic = unique_topic("tls")
    seen = round_trip(client_config(address, certs), topic)
    assert seen == [b"tls-%04d" % i for i in range(20)]

    # Metadata over SSL names the SSL listener's address.
    metadata = AdminClient(client_config(address, certs)).list_topics(timeout=10)
    assert {f"{b.host}:{b.port}" for b in metadata.brokers.values()} == {address}

    produced = subprocess.run(
        [kcat, "-P", "-b", address, "-X", "security.protocol=SSL", "-X", f"ssl.ca.location={certs / 'ca.pem'}",
         "-t", topic], input=b"from-kcat\n", capture_output=True, timeout=30)
    assert produced.returncode == 0, produced.stderr
    consumed = subprocess.run(
        [kcat, "-C", "-b", address, "-X", "security.protocol=SSL", "-X", f"ssl.ca.location={certs / 'ca.pem'}",
         "-t", topic, "-o", "beginning", "-e", "-q"], capture_output=True, timeout=30)
    assert consumed.returncode == 0, consumed.stderr
    assert b"from-kcat" in consumed.stdout.splitlines()

    from kafka import KafkaConsumer, KafkaProducer
    producer = KafkaProducer(bootstrap_servers=address, security_protocol="SSL", ssl_cafile=str(certs / "ca.pem"))
    producer.send(topic, b"from-kafka-python").get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=address, security_protocol="SSL",
                             ssl_cafile=str(certs / "ca.pem"), auto_offset_reset="earliest",
                             consumer_timeout_ms=5000)
    values = [record.value for record in consumer]
    consumer.close()
    assert b"from-kafka-python" in values and b"from-kcat" in values

    # A plaintext client on the SSL port gets no Kafka answer.
    metadata_fails({"bootstrap.servers": address})
    # The PLAINTEXT listener serves as before.
    assert round_trip({"bootstrap.servers": broker.bootstrap}, unique_topic("plain"), 5) == [
        b"tls-%04d" % i for i in range(5)]


def test_a_client_certificate_is_required_and_checked_against_the_truststore(broker_factory, certs):
    broker, address = ssl_broker(
        broker_factory, certs, "ssl.client.auth=required", "ssl.truststore.type=PEM",
        f"ssl.truststore.location={certs / 'ca.pem'}")
    topic = unique_topic("mtls")
    assert round_trip(client_config(address, certs, certificate="client"), topic, 10) == [
        b"tls-%04d" % i for i in range(10)]
    metadata_fails(client_config(address, certs))
    metadata_fails(client_config(address, certs, certificate="stranger"))
    log = broker.log_text()
    assert "TLS handshake failed" in log


def test_requested_client_authentication_lets_clients_without_a_certificate_in(broker_factory, certs):
    _, address = ssl_broker(
        broker_factory, certs, "ssl.client.auth=requested", "ssl.truststore.type=PEM",
        f"ssl.truststore.location={certs / 'ca.pem'}")
    assert len(round_trip(client_config(address, certs), unique_topic("requested"), 3)) == 3
    assert len(round_trip(client_config(address, certs, certificate="client"), unique_topic("requested"), 3)) == 3


def test_an_encrypted_key_is_read_with_ssl_key_password_and_never_shown(broker_factory, certs):
    broker, address = ssl_broker(
        broker_factory, certs, f"ssl.keystore.location={certs / 'keystore-encrypted.pem'}",
        f"ssl.key.password={KEY_PASSWORD}")
    assert len(round_trip(client_config(address, certs), unique_topic("encrypted"), 3)) == 3
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    resource = ConfigResource(ConfigResource.Type.BROKER, "1")
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    password = configs["ssl.key.password"]
    assert password.is_sensitive and password.value is None
    assert configs["ssl.keystore.location"].value == str(certs / "keystore-encrypted.pem")
    # What the broker printed (the test harness logs the command line).
    printed = [line for line in broker.log_text().splitlines() if not line.startswith("==== start")]
    assert not any(KEY_PASSWORD in line for line in printed)


def test_listener_name_settings_apply_to_their_listener_only(broker_factory, certs):
    ssl_port, internal_port = free_port(), free_port()
    broker = broker_factory(
        f"listeners=PLAINTEXT://127.0.0.1:{{port}},SSL://127.0.0.1:{ssl_port},SECURE://127.0.0.1:{internal_port}",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SSL:SSL,SECURE:SSL",
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={certs / 'keystore.pem'}",
        "listener.name.secure.ssl.client.auth=required",
        "listener.name.secure.ssl.truststore.type=PEM",
        f"listener.name.secure.ssl.truststore.location={certs / 'ca.pem'}",
    )
    assert len(round_trip(client_config(f"127.0.0.1:{ssl_port}", certs), unique_topic("open"), 3)) == 3
    secure = f"127.0.0.1:{internal_port}"
    metadata_fails(client_config(secure, certs))
    assert len(round_trip(client_config(secure, certs, certificate="client"), unique_topic("secure"), 3)) == 3
    assert broker.is_running()


STORE_PASSWORD = "store-secret-" + uuid.uuid4().hex[:8]


def pkcs12_stores(certs: Path, legacy: bool) -> tuple[Path, Path]:
    """The broker's keystore and the CA truststore as PKCS#12 files made by
    openssl: modern (PBES2 AES-256, HMAC-SHA-256 as keytool writes since
    JDK 12) or legacy (3DES and a SHA-1 MAC, as older keytools wrote)."""
    suffix = "-legacy" if legacy else ""
    algorithms = ["-certpbe", "PBE-SHA1-3DES", "-keypbe", "PBE-SHA1-3DES", "-macalg", "sha1"] if legacy else []
    keystore, truststore = certs / f"keystore{suffix}.p12", certs / f"truststore{suffix}.p12"
    openssl("pkcs12", "-export", "-in", "server.pem", "-inkey", "server.key", "-certfile", "ca.pem",
            "-name", "broker", "-out", keystore.name, "-passout", f"pass:{STORE_PASSWORD}", *algorithms, cwd=certs)
    openssl("pkcs12", "-export", "-nokeys", "-in", "ca.pem", "-out", truststore.name,
            "-passout", f"pass:{STORE_PASSWORD}", *algorithms, cwd=certs)
    return keystore, truststore


@pytest.mark.parametrize("legacy", [False, True], ids=["pbes2-aes", "legacy-3des"])
def test_pkcs12_keystore_and_truststore_serve_tls_and_check_client_certificates(broker_factory, certs, legacy):
    """ssl.keystore.type=PKCS12 and ssl.truststore.type=PKCS12, opened with
    ssl.keystore.password and ssl.truststore.password: clients get the
    store's certificate, client certificates are checked against the
    truststore's CA, the passwords are never shown."""
    keystore, truststore = pkcs12_stores(certs, legacy)
    ssl_port = free_port()
    broker = broker_factory(
        f"listeners=PLAINTEXT://127.0.0.1:{{port}},SSL://127.0.0.1:{ssl_port}",
        "ssl.keystore.type=PKCS12", f"ssl.keystore.location={keystore}", f"ssl.keystore.password={STORE_PASSWORD}",
        "ssl.truststore.type=PKCS12", f"ssl.truststore.location={truststore}",
        f"ssl.truststore.password={STORE_PASSWORD}", "ssl.client.auth=required",
    )
    address = f"127.0.0.1:{ssl_port}"
    assert len(round_trip(client_config(address, certs, certificate="client"), unique_topic("p12"), 3)) == 3
    # Without a client certificate, or with one from a CA the truststore
    # does not hold: refused.
    metadata_fails(client_config(address, certs))
    metadata_fails(client_config(address, certs, certificate="stranger"))
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    resource = ConfigResource(ConfigResource.Type.BROKER, "1")
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    for key in ("ssl.keystore.password", "ssl.truststore.password"):
        assert configs[key].is_sensitive and configs[key].value is None
    printed = [line for line in broker.log_text().splitlines() if not line.startswith("==== start")]
    assert not any(STORE_PASSWORD in line for line in printed)


def refused_start(tmp_path: Path, *overrides: str) -> str:
    """Starts the broker expecting it to refuse; returns what it printed."""
    data = tmp_path / f"refused-{uuid.uuid4().hex[:6]}"
    command = [str(broker_binary()), "--override", f"log.dirs={data}",
               "--override", f"listeners=PLAINTEXT://127.0.0.1:{free_port()},SSL://127.0.0.1:{free_port()}"]
    for override in overrides:
        command += ["--override", override]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0, f"the broker started:\n{done.stdout}{done.stderr}"
    return done.stdout + done.stderr


@pytest.mark.parametrize("case", ["missing-file", "jks", "no-keystore", "wrong-password", "no-password",
                                  "key-of-another-certificate", "not-a-certificate",
                                  "pkcs12-wrong-password", "pkcs12-no-password", "pkcs12-not-pkcs12"])
def test_bad_tls_material_stops_the_broker_naming_the_property_and_the_file(tmp_path, certs, case):
    keystore = certs / "keystore.pem"
    if case == "missing-file":
        missing = certs / "nowhere.pem"
        said = refused_start(tmp_path, "ssl.keystore.type=PEM", f"ssl.keystore.location={missing}")
        assert "ssl.keystore.location" in said and str(missing) in said
    elif case == "jks":
        said = refused_start(tmp_path, f"ssl.keystore.location={keystore}")
        assert "ssl.keystore.type=JKS" in said and "PEM" in said and "PKCS12" in said
    elif case == "no-keystore":
        said = refused_start(tmp_path)
        assert "ssl.keystore.location" in said
    elif case in ("wrong-password", "no-password"):
        encrypted = certs / "keystore-encrypted.pem"
        extra = ["ssl.key.password=not-the-password"] if case == "wrong-password" else []
        said = refused_start(tmp_path, "ssl.keystore.type=PEM", f"ssl.keystore.location={encrypted}", *extra)
        assert "ssl.key.password" in said and str(encrypted) in said
        assert "not-the-password" not in said and KEY_PASSWORD not in said
    elif case == "key-of-another-certificate":
        mismatched = certs / "mismatched.pem"
        mismatched.write_text((certs / "client.key").read_text() + (certs / "server.pem").read_text())
        said = refused_start(tmp_path, "ssl.keystore.type=PEM", f"ssl.keystore.location={mismatched}")
        assert str(mismatched) in said and "does not fit" in said
    elif case == "not-a-certificate":
        garbage = certs / "garbage.pem"
        garbage.write_text((certs / "server.key").read_text())
        said = refused_start(tmp_path, "ssl.keystore.type=PEM", f"ssl.keystore.location={garbage}")
        assert str(garbage) in said and "no certificate" in said
    elif case.startswith("pkcs12-"):
        store, _ = pkcs12_stores(certs, legacy=False)
        if case == "pkcs12-not-pkcs12":
            store = keystore
        password = [] if case == "pkcs12-no-password" else [
            f"ssl.keystore.password={'not-the-password' if case == 'pkcs12-wrong-password' else STORE_PASSWORD}"]
        said = refused_start(tmp_path, "ssl.keystore.type=PKCS12", f"ssl.keystore.location={store}", *password)
        assert "ssl.keystore.password" in said
        if case != "pkcs12-no-password":
            assert str(store) in said and "not a PKCS#12 store that its password opens" in said
        assert "not-the-password" not in said and STORE_PASSWORD not in said


def test_certificates_replaced_on_disk_are_used_without_a_restart(broker_factory, certs):
    """The keystore file is replaced in place by one from another CA: new
    connections get the new certificate, one already open goes on; a
    replacement that does not load is logged and the last good one stays."""
    keystore = certs / "live-keystore.pem"
    keystore.write_text((certs / "keystore.pem").read_text())
    broker, address = ssl_broker(broker_factory, certs, f"ssl.keystore.location={keystore}")
    topic = unique_topic("reload")
    old = Producer({**client_config(address, certs), "acks": "all"})
    old.produce(topic, b"before")
    assert old.flush(30) == 0

    # A new certificate for the broker, from a CA the old clients do not trust.
    signed(certs, "server2", "/CN=localhost", "other-ca", san="IP:127.0.0.1,DNS:localhost")
    replacement = (certs / "server2.key").read_text() + (certs / "server2.pem").read_text()
    temporary = certs / "live-keystore.pem.tmp"
    temporary.write_text(replacement)
    temporary.replace(keystore)
    new_ca = {**client_config(address, certs), "ssl.ca.location": str(certs / "other-ca.pem")}
    assert round_trip(new_ca, unique_topic("reloaded"), 3) == [b"tls-%04d" % i for i in range(3)]
    metadata_fails(client_config(address, certs))
    # The connection opened before the change still works.
    old.produce(topic, b"after")
    assert old.flush(30) == 0
    assert "TLS material changed on disk: new connections use it" in broker.log_text()

    # A broken replacement: logged, the last good material stays.
    temporary.write_text("not PEM at all\n")
    temporary.replace(keystore)
    assert round_trip(new_ca, unique_topic("kept"), 3) == [b"tls-%04d" % i for i in range(3)]
    assert "does not load: keeping the previous one" in broker.log_text()
    assert broker.is_running()


def test_a_client_certificate_gives_the_principal_by_the_mapping_rules(broker_factory, certs):
    ssl_port, strict_port = free_port(), free_port()
    trust = ["ssl.client.auth=required", "ssl.truststore.type=PEM", f"ssl.truststore.location={certs / 'ca.pem'}"]
    broker = broker_factory(
        f"listeners=PLAINTEXT://127.0.0.1:{{port}},SSL://127.0.0.1:{ssl_port},STRICT://127.0.0.1:{strict_port}",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SSL:SSL,STRICT:SSL",
        "ssl.keystore.type=PEM", f"ssl.keystore.location={certs / 'keystore.pem'}", *trust,
        # A pattern with commas, as Kafka's documentation writes it.
        "ssl.principal.mapping.rules=RULE:^CN=([^,]+),.*$/$1/U,DEFAULT",
        "listener.name.strict.ssl.principal.mapping.rules=RULE:^CN=bob,.*$/bob/",
    )
    broker.env["RUST_LOG"] = "info,broker::connection=debug"
    broker.restart()
    assert len(round_trip(client_config(f"127.0.0.1:{ssl_port}", certs, certificate="client"),
                          unique_topic("principal"), 2)) == 2
    assert "User:ALICE" in broker.log_text()
    # No rule of the STRICT listener applies to alice: no principal, no connection.
    metadata_fails(client_config(f"127.0.0.1:{strict_port}", certs, certificate="client"))
    assert "no ssl.principal.mapping.rules rule applies" in broker.log_text()


def test_brokers_replicate_to_each_other_over_tls(cluster_factory, certs):
    """A cluster whose inter-broker listener is SSL (with client
    certificates required): followers fetch from leaders and the
    transaction coordinator writes markers over TLS."""
    from test_replication import create, wait_full_isr
    cluster = cluster_factory(
        3,
        "listeners=PLAINTEXT://{host}:{port},SSL://{host}:{ssl_port}",
        "inter.broker.listener.name=SSL",
        "default.replication.factor=3",
        "ssl.keystore.type=PEM", f"ssl.keystore.location={certs / 'keystore.pem'}",
        "ssl.client.auth=required", "ssl.truststore.type=PEM", f"ssl.truststore.location={certs / 'ca.pem'}",
    )
    topic = unique_topic("tls-replicated")
    create(cluster, topic, 3)
    wait_full_isr(cluster, topic)
    ssl_bootstrap = ",".join(f"{b.host}:{b.ssl_port}" for b in cluster.brokers.values())
    config = {**client_config(ssl_bootstrap, certs, certificate="client")}
    assert round_trip(config, topic, 30) == [b"tls-%04d" % i for i in range(30)]
    wait_full_isr(cluster, topic)
    for broker in cluster.brokers.values():
        assert "fetching from the leader" in broker.log_text()
        assert "TLS handshake failed" not in broker.log_text()

    from confluent_kafka import Producer as TxnProducer
    producer = TxnProducer({**config, "transactional.id": "tls-" + topic})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"in-a-transaction")
    producer.commit_transaction(30)


def test_listener_tls_material_changes_through_incremental_alter_configs(broker_factory, certs):
    """KIP-226: `listener.name.ssl.ssl.keystore.location` set on broker 1
    through IncrementalAlterConfigs serves new connections a certificate
    from another CA; a keystore that does not load is refused with
    INVALID_CONFIG and the last good one stays; the cluster-wide default
    level is refused as Kafka refuses it; Kerberos settings are accepted
    and described although nothing here uses them."""
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource
    broker, address = ssl_broker(broker_factory, certs)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})

    def alter(resource_name: str, name: str, value: str):
        resource = ConfigResource(ConfigResource.Type.BROKER, resource_name, incremental_configs=[
            ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)])
        return admin.incremental_alter_configs([resource])[resource]

    signed(certs, "server3", "/CN=localhost", "other-ca", san="IP:127.0.0.1,DNS:localhost")
    other = certs / "other-keystore.pem"
    other.write_text((certs / "server3.key").read_text() + (certs / "server3.pem").read_text())
    alter("1", "listener.name.ssl.ssl.keystore.location", str(other)).result(timeout=30)
    new_ca = {**client_config(address, certs), "ssl.ca.location": str(certs / "other-ca.pem")}
    assert round_trip(new_ca, unique_topic("dynamic"), 3) == [b"tls-%04d" % i for i in range(3)]
    metadata_fails(client_config(address, certs))
    assert "TLS settings changed by dynamic config" in broker.log_text()

    with pytest.raises(KafkaException) as refused:
        alter("1", "listener.name.ssl.ssl.keystore.location", str(certs / "missing.pem")).result(timeout=30)
    assert refused.value.args[0].code() == 40, refused.value  # INVALID_CONFIG
    assert "missing.pem" in str(refused.value)
    assert round_trip(new_ca, unique_topic("kept"), 3) == [b"tls-%04d" % i for i in range(3)]

    # At the cluster-wide default level (resource ""), as Kafka: refused.
    # (confluent-kafka does not send an empty broker name: a raw
    # IncrementalAlterConfigs v0.)
    import socket
    import struct
    import wire
    from test_sasl import read_response
    body = (wire.array([struct.pack(">b", 4) + wire.string("") + wire.array([
        wire.string("listener.name.ssl.ssl.keystore.location") + struct.pack(">b", 0) + wire.string(str(other))])])
        + struct.pack(">b", 0))
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as sock:
        sock.sendall(wire.request_frame(44, 0, 9, body, "tls-test"))
        _, response = read_response(sock)
    # throttle_time_ms, [error_code, ...]
    assert struct.unpack(">h", response[8:10])[0] == 42  # INVALID_REQUEST

    alter("1", "sasl.kerberos.service.name", "kafka").result(timeout=30)
    resource = ConfigResource(ConfigResource.Type.BROKER, "1")
    described = admin.describe_configs([resource])[resource].result(timeout=30)
    assert described["sasl.kerberos.service.name"].value == "kafka"
    assert described["listener.name.ssl.ssl.keystore.location"].value == str(other)

    # Kept across a restart: the dynamic keystore serves again.
    broker.stop()
    broker.start()
    assert round_trip(new_ca, unique_topic("restarted"), 3) == [b"tls-%04d" % i for i in range(3)]
