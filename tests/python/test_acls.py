"""ACLs: `authorizer.class.name` turns on the built-in authorizer,
`super.users` pass everything, `allow.everyone.if.no.acl.found` opens
resources no ACL names. CreateAcls, DescribeAcls and DeleteAcls with
Kafka's validation and filter semantics (confluent-kafka's admin API);
SECURITY_DISABLED without an authorizer; ACLs kept across restarts and
shared by every broker of a cluster; deleting one ACL of a resource leaves
the others enforced (CVE-2024-27309); an allowed principal succeeds and a
denied one gets Kafka's error code over Produce, Fetch (a claimed replica id
included: CVE-2018-1288), Metadata, the group and offset APIs,
transactions (CVE-2018-17196), topic and config administration, SCRAM
credentials and the ACL APIs themselves, with librdkafka and kafka-python."""

from __future__ import annotations

import re
import socket
import struct
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType,
                                   AdminClient, ConfigResource, NewTopic, ResourcePatternType,
                                   ResourceType, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialUpsertion)

import wire
from conftest import free_port
from test_sasl import (SASL_AUTHENTICATE, SASL_HANDSHAKE, closed, connect, read_response, request)

pytestmark = pytest.mark.timeout(180)

ALICE = "alice-" + uuid.uuid4().hex[:10]
BOB = "bob-" + uuid.uuid4().hex[:10]
ADMIN = "admin-" + uuid.uuid4().hex[:10]
JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
        f'username="admin" password="{ADMIN}" user_admin="{ADMIN}" user_alice="{ALICE}" user_bob="{BOB}";')
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
PASSWORDS = {"admin": ADMIN, "alice": ALICE, "bob": BOB}

TOPIC_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED, CLUSTER_AUTHORIZATION_FAILED = 29, 30, 31
TRANSACTIONAL_ID_AUTHORIZATION_FAILED, SECURITY_DISABLED, INVALID_REQUEST = 53, 54, 42


def secured(*extra: str, authorizer: bool = True) -> list[str]:
    """A PLAINTEXT listener on {port} (User:ANONYMOUS) and SASL_PLAINTEXT
    with PLAIN users admin, alice and bob on {ssl_port}."""
    overrides = [
        "listeners=PLAINTEXT://{host}:{port},SASL_PLAINTEXT://{host}:{ssl_port}",
        "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256",
        f"listener.name.sasl_plaintext.plain.sasl.jaas.config={JAAS}",
        "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "super.users=User:admin",
        *extra,
    ]
    if authorizer:
        overrides.append(f"authorizer.class.name={AUTHORIZER}")
    return overrides


def config(broker, user: str) -> dict:
    return {"bootstrap.servers": f"{broker.host}:{broker.ssl_port}", "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN", "sasl.username": user, "sasl.password": PASSWORDS[user]}


def admin_as(broker, user: str) -> AdminClient:
    return AdminClient(config(broker, user))


def allow(principal: str, operation: AclOperation, resource: ResourceType = ResourceType.TOPIC,
          name: str = "*", pattern: ResourcePatternType = ResourcePatternType.LITERAL,
          permission: AclPermissionType = AclPermissionType.ALLOW) -> AclBinding:
    return AclBinding(resource, name, pattern, principal, "*", operation, permission)


def create(admin: AdminClient, *bindings: AclBinding) -> None:
    for future in admin.create_acls(list(bindings)).values():
        future.result(timeout=30)


def kafka_code(future) -> int:
    with pytest.raises(KafkaException) as failed:
        future.result(timeout=30)
    return failed.value.args[0].code()


def everything(restype=ResourceType.ANY) -> AclBindingFilter:
    return AclBindingFilter(restype, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                            AclPermissionType.ANY)


def produce(config_: dict, topic: str, count: int = 3, **extra) -> list:
    """Delivery errors of `count` records."""
    errors = []
    producer = Producer({**config_, "message.timeout.ms": 10000, **extra})
    for i in range(count):
        producer.produce(topic, value=b"v%d" % i, on_delivery=lambda err, _: errors.append(err))
    producer.flush(20)
    return errors


def test_acl_apis_without_an_authorizer_answer_security_disabled(broker_factory):
    broker = broker_factory(*secured(authorizer=False))
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = admin.create_acls([allow("User:alice", AclOperation.READ)])
    assert kafka_code(next(iter(futures.values()))) == SECURITY_DISABLED
    # DescribeAcls v1 on a raw socket (librdkafka does not surface its
    # top-level error: it returns an empty list).
    with connect(broker.bootstrap) as sock:
        body = struct.pack(">bhbhhbb", 1, -1, 1, -1, -1, 1, 1)
        sock.sendall(request(29, 1, 7, body))
        _, response = read_response(sock)
        assert struct.unpack(">ih", response[:6])[1] == SECURITY_DISABLED
    # Without an authorizer everything is allowed, to everyone.
    assert produce(config(broker, "bob"), "open") == [None] * 3


def test_acls_are_created_described_and_deleted_with_kafka_s_semantics(broker_factory):
    broker = broker_factory(*secured())
    admin = admin_as(broker, "admin")
    create(admin,
           allow("User:alice", AclOperation.READ, name="orders"),
           allow("User:bob", AclOperation.READ, name="orders"),
           allow("User:alice", AclOperation.WRITE, name="pay", pattern=ResourcePatternType.PREFIXED),
           allow("User:*", AclOperation.DESCRIBE),
           allow("User:alice", AclOperation.READ, ResourceType.GROUP, "g1"))
    # Creating one again is no error and adds nothing.
    create(admin, allow("User:alice", AclOperation.READ, name="orders"))
    assert len(admin.describe_acls(everything()).result(timeout=30)) == 5

    def described(restype, name, pattern) -> set:
        found = admin.describe_acls(AclBindingFilter(restype, name, pattern, None, None, AclOperation.ANY,
                                                     AclPermissionType.ANY)).result(timeout=30)
        return {(b.name, b.principal, b.operation) for b in found}

    # MATCH: every ACL that applies to the topic `payments`.
    assert described(ResourceType.TOPIC, "payments", ResourcePatternType.MATCH) == {
        ("pay", "User:alice", AclOperation.WRITE), ("*", "User:*", AclOperation.DESCRIBE)}
    # LITERAL and PREFIXED match the pattern itself; ANY either.
    assert described(ResourceType.TOPIC, "pay", ResourcePatternType.LITERAL) == set()
    assert described(ResourceType.TOPIC, "pay", ResourcePatternType.PREFIXED) == {
        ("pay", "User:alice", AclOperation.WRITE)}
    assert described(ResourceType.GROUP, None, ResourcePatternType.ANY) == {("g1", "User:alice", AclOperation.READ)}

    # Invalid ACLs: INVALID_REQUEST, the valid ones of the request created.
    futures = admin.create_acls([
        allow("User:alice", AclOperation.ALTER, ResourceType.BROKER, "not-kafka-cluster"),
        allow("alice", AclOperation.READ, name="t"),
        allow("User:carol", AclOperation.READ, name="t"),
    ])
    codes = [kafka_code(f) if i < 2 else f.result(timeout=30) for i, f in enumerate(futures.values())]
    assert codes == [INVALID_REQUEST, INVALID_REQUEST, None]

    # Deleting alice's READ on `orders` leaves bob's (CVE-2024-27309).
    deleted = admin.delete_acls([AclBindingFilter(ResourceType.TOPIC, "orders", ResourcePatternType.LITERAL,
                                                  "User:alice", None, AclOperation.ANY,
                                                  AclPermissionType.ANY)])
    assert [(b.name, b.principal) for b in next(iter(deleted.values())).result(timeout=30)] == [
        ("orders", "User:alice")]
    assert described(ResourceType.TOPIC, "orders", ResourcePatternType.LITERAL) == {
        ("orders", "User:bob", AclOperation.READ)}

    # Kept across a restart.
    before = len(admin.describe_acls(everything()).result(timeout=30))
    broker.stop()
    broker.start()
    admin = admin_as(broker, "admin")
    assert len(admin.describe_acls(everything()).result(timeout=30)) == before


def test_an_allowed_principal_succeeds_and_a_denied_one_gets_kafka_s_error(broker_factory):
    broker = broker_factory(*secured())
    admin = admin_as(broker, "admin")
    topic, other = "acl-" + uuid.uuid4().hex[:6], "acl-other-" + uuid.uuid4().hex[:6]
    for future in admin.create_topics([NewTopic(topic, 1, 1), NewTopic(other, 1, 1)]).values():
        future.result(timeout=30)
    create(admin,
           allow("User:alice", AclOperation.WRITE, name=topic),
           allow("User:alice", AclOperation.READ, name=topic),
           allow("User:alice", AclOperation.READ, ResourceType.GROUP, "alice-group"))
    alice, bob = config(broker, "alice"), config(broker, "bob")

    # Produce: WRITE on the topic.
    assert produce(alice, topic) == [None] * 3
    assert [e.code() for e in produce(bob, topic, 1)] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    assert [e.code() for e in produce(alice, other, 1)] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]

    # Fetch with a group: READ on the topic and on the group.
    consumer = Consumer({**alice, "group.id": "alice-group", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    seen = []
    deadline = time.monotonic() + 30
    while len(seen) < 3 and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            seen.append(message.value())
    consumer.commit(asynchronous=False)
    consumer.close()
    assert seen == [b"v0", b"v1", b"v2"]
    denied = Consumer({**bob, "group.id": "bob-group", "auto.offset.reset": "earliest"})
    denied.subscribe([topic])
    errors = set()
    deadline = time.monotonic() + 15
    while not errors and time.monotonic() < deadline:
        message = denied.poll(0.5)
        if message is not None and message.error() is not None:
            errors.add(message.error().code())
    denied.close()
    assert errors & {KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.TOPIC_AUTHORIZATION_FAILED}, errors

    # Metadata: a full listing leaves out what alice may not describe; a
    # named topic she may not describe fails whether it exists or not.
    listed = admin_as(broker, "alice").list_topics(timeout=10)
    assert topic in listed.topics and other not in listed.topics
    named = admin_as(broker, "alice").list_topics(topic=other, timeout=10)
    assert named.topics[other].error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

    # Transactions: WRITE on the transactional id (CVE-2018-17196).
    producer = Producer({**alice, "transactional.id": "alice-tx", "message.timeout.ms": 10000})
    with pytest.raises(KafkaException) as refused:
        producer.init_transactions(15)
    assert refused.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    create(admin, allow("User:alice", AclOperation.WRITE, ResourceType.TRANSACTIONAL_ID, "alice-tx"))
    producer = Producer({**alice, "transactional.id": "alice-tx", "message.timeout.ms": 10000})
    producer.init_transactions(15)
    producer.begin_transaction()
    producer.produce(topic, b"in-a-transaction")
    producer.commit_transaction(15)

    # Administration: topics, configs, SCRAM credentials, ACLs.
    as_alice = admin_as(broker, "alice")
    created = as_alice.create_topics([NewTopic("alice-new", 1, 1)])
    assert kafka_code(created["alice-new"]) == TOPIC_AUTHORIZATION_FAILED
    assert kafka_code(as_alice.delete_topics([topic])[topic]) == TOPIC_AUTHORIZATION_FAILED
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    assert kafka_code(as_alice.describe_configs([resource])[resource]) == TOPIC_AUTHORIZATION_FAILED
    broker_resource = ConfigResource(ConfigResource.Type.BROKER, "1")
    assert kafka_code(as_alice.describe_configs([broker_resource])[broker_resource]) == CLUSTER_AUTHORIZATION_FAILED
    scram = as_alice.alter_user_scram_credentials([UserScramCredentialUpsertion(
        "alice", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"x")])
    assert kafka_code(scram["alice"]) == CLUSTER_AUTHORIZATION_FAILED
    acl = as_alice.create_acls([allow("User:alice", AclOperation.ALL)])
    assert kafka_code(next(iter(acl.values()))) == CLUSTER_AUTHORIZATION_FAILED
    assert as_alice.describe_acls(everything()).result(timeout=30) == [], "its error is not surfaced"
    # The admin (a super user) may do all of it.
    admin.describe_configs([resource])[resource].result(timeout=30)
    groups = {g.group_id for g in as_alice.list_consumer_groups().result(timeout=30).valid}
    assert groups == {"alice-group"}, groups

    # kafka-python: the same answers.
    from kafka import KafkaProducer
    from kafka.errors import TopicAuthorizationFailedError
    python_producer = KafkaProducer(bootstrap_servers=alice["bootstrap.servers"], security_protocol="SASL_PLAINTEXT",
                                    sasl_mechanism="PLAIN", sasl_plain_username="alice",
                                    sasl_plain_password=ALICE, max_block_ms=10000)
    python_producer.send(topic, b"from-kafka-python").get(timeout=30)
    with pytest.raises(TopicAuthorizationFailedError):
        python_producer.send(other, b"denied").get(timeout=30)
    python_producer.close()

    # Every denial is logged with principal, operation, resource and API;
    # no password is.
    log = re.sub(r"\x1b\[[0-9;]*m", "", broker.log_text())
    # (librdkafka asks Metadata before it produces: bob is refused there.)
    assert any("authorization denied" in line and 'principal="User:bob"' in line and "Describe" in line
               and f"Topic:{topic}" in line and "Metadata" in line for line in log.splitlines())
    printed = "\n".join(line for line in log.splitlines() if not line.startswith("==== start"))
    for secret in (ALICE, BOB, ADMIN):
        assert secret not in printed


def authenticated(broker, user: str) -> socket.socket:
    sock = connect(f"{broker.host}:{broker.ssl_port}")
    sock.sendall(request(SASL_HANDSHAKE, 1, 1, wire.string("PLAIN")))
    read_response(sock)
    token = b"\0" + user.encode() + b"\0" + PASSWORDS[user].encode()
    sock.sendall(request(SASL_AUTHENTICATE, 0, 2, struct.pack(">i", len(token)) + token))
    _, body = read_response(sock)
    assert struct.unpack(">h", body[:2])[0] == 0
    return sock


def test_a_claimed_replica_id_needs_cluster_action(broker_factory):
    """CVE-2018-1288: a client that says it is replica 1 does not read what
    it may not read."""
    broker = broker_factory(*secured())
    admin = admin_as(broker, "admin")
    topic = "replica-" + uuid.uuid4().hex[:6]
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)
    create(admin, allow("User:alice", AclOperation.READ, name=topic))
    assert produce(config(broker, "admin"), topic) == [None] * 3

    def fetch(replica_id: int) -> int:
        body = (struct.pack(">iiiib", replica_id, 0, 1, 1 << 20, 0)
                + wire.array([wire.string(topic) + wire.array([struct.pack(">iqi", 0, 0, 1 << 20)])]))
        with authenticated(broker, "alice") as sock:
            sock.sendall(request(1, 4, 3, body))  # Fetch v4
            _, response = read_response(sock)
        # throttle, [topic: name, [partition, error_code, ...]]
        offset = 4 + 4
        (name_length,) = struct.unpack(">h", response[offset:offset + 2])
        offset += 2 + name_length + 4
        _, error = struct.unpack(">ih", response[offset:offset + 6])
        return error

    assert fetch(-1) == 0, "alice reads as a consumer"
    assert fetch(1) == TOPIC_AUTHORIZATION_FAILED, "but not as a follower"


def test_acls_made_on_one_broker_apply_on_every_broker(cluster_factory):
    cluster = cluster_factory(2, *secured("super.users=User:admin;User:ANONYMOUS"))
    one, two = cluster.brokers[1], cluster.brokers[2]
    topic = "shared-" + uuid.uuid4().hex[:6]
    admin = AdminClient({"bootstrap.servers": one.bootstrap})
    admin.create_topics([NewTopic(topic, 2, 2)])[topic].result(timeout=30)
    assert [e.code() for e in produce(config(two, "alice"), topic, 1)] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    create(admin, allow("User:alice", AclOperation.WRITE, name=topic))
    deadline = time.monotonic() + 10
    while produce(config(two, "alice"), topic, 1) != [None]:
        assert time.monotonic() < deadline, "broker 2 did not apply the ACL within 10 s"
