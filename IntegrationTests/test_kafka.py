"""Issue 17 (first part): the Kafka endpoint (`messagingProtocols=kafka`, KoP's `kafkaListeners`,
`kafkaTenant` / `kafkaNamespace`) with unchanged kafka-python and confluent-kafka clients.

- ApiVersions: kafka-python and librdkafka negotiate (an unsupported ApiVersions version gets
  UNSUPPORTED_VERSION and the ranges, and the client retries).
- Metadata: the Kafka namespace's topics, a partitioned topic with its partitions, a
  non-partitioned one as a one-partition topic, `tenant/ns/t` for another namespace; a missing
  topic is created when the client and the namespace allow it, else UNKNOWN_TOPIC_OR_PARTITION.
- A malformed or oversized request closes only its connection; the broker serves on.
"""

from __future__ import annotations

import socket
import struct
import uuid

import pytest

from admin_rest import call
from conftest import free_port
from test_security import SecureBroker


@pytest.fixture(scope="module")
def kafka_broker(tmp_path_factory):
    kafka_port = free_port()
    broker = SecureBroker(tmp_path_factory.mktemp("kafka"), "\n".join([
        "messagingProtocols=kafka",
        f"kafkaListeners=PLAINTEXT://127.0.0.1:{kafka_port}",
        "kafkaTenant=public",
        "kafkaNamespace=default",
    ]))
    broker.kafka_port = kafka_port
    broker.start()
    broker.auto_restart = True
    yield broker
    broker.close()


def bootstrap(broker) -> str:
    return f"127.0.0.1:{broker.kafka_port}"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def namespace(kafka_broker):
    name = f"public/ns-{uuid.uuid4().hex[:8]}"
    assert call(kafka_broker, "PUT", f"/admin/v2/namespaces/{name}")[0] == 204
    return name


def test_confluent_kafka_lists_topics_and_partitions(kafka_broker):
    from confluent_kafka.admin import AdminClient
    partitioned = unique("orders")
    plain = unique("plain")
    assert call(kafka_broker, "PUT", f"/admin/v2/persistent/public/default/{partitioned}/partitions", 3)[0] == 204
    assert call(kafka_broker, "PUT", f"/admin/v2/persistent/public/default/{plain}")[0] == 204
    admin = AdminClient({"bootstrap.servers": bootstrap(kafka_broker)})
    metadata = admin.list_topics(timeout=10)
    assert partitioned in metadata.topics and plain in metadata.topics, sorted(metadata.topics)
    assert sorted(metadata.topics[partitioned].partitions) == [0, 1, 2]
    assert sorted(metadata.topics[plain].partitions) == [0]
    [broker] = metadata.brokers.values()
    assert (broker.host, broker.port) == ("127.0.0.1", kafka_broker.kafka_port)
    assert metadata.cluster_id == "standalone"
    # One topic by name; partition leaders are this broker.
    one = admin.list_topics(topic=partitioned, timeout=10).topics[partitioned]
    assert one.error is None and all(p.leader == broker.id for p in one.partitions.values())


def test_kafka_python_metadata_and_auto_creation(kafka_broker, namespace):
    from kafka import KafkaAdminClient
    existing = unique("existing")
    assert call(kafka_broker, "PUT", f"/admin/v2/persistent/public/default/{existing}")[0] == 204
    admin = KafkaAdminClient(bootstrap_servers=bootstrap(kafka_broker), request_timeout_ms=10_000)
    try:
        assert existing in admin.list_topics()
        [described] = admin.describe_topics([existing])
        assert described["error_code"] == 0 and [p["partition_index"] for p in described["partitions"]] == [0]
    finally:
        admin.close()
    # A topic of another namespace, by its tenant/ns/topic name.
    other = f"{namespace}/elsewhere"
    assert call(kafka_broker, "PUT", f"/admin/v2/persistent/{other}/partitions", 2)[0] == 204
    from confluent_kafka.admin import AdminClient
    found = AdminClient({"bootstrap.servers": bootstrap(kafka_broker)}).list_topics(topic=other, timeout=10).topics[other]
    assert found.error is None and sorted(found.partitions) == [0, 1]
    # Auto-creation (asked for, and the namespace allows it): the topic exists afterwards, for Pulsar too.
    created = unique("created")
    creating = AdminClient({"bootstrap.servers": bootstrap(kafka_broker), "allow.auto.create.topics": True})
    topic = creating.list_topics(topic=created, timeout=10).topics[created]
    assert topic.error is None and sorted(topic.partitions) == [0]
    assert call(kafka_broker, "GET", f"/admin/v2/persistent/public/default/{created}/stats")[0] == 200


def test_missing_topic_without_auto_creation(kafka_broker, namespace):
    from confluent_kafka.admin import AdminClient
    assert call(kafka_broker, "POST", f"/admin/v2/namespaces/{namespace}/autoTopicCreation",
                {"allowAutoTopicCreation": False})[0] == 204
    admin = AdminClient({"bootstrap.servers": bootstrap(kafka_broker), "allow.auto.create.topics": True})
    missing = f"{namespace}/{unique('missing')}"
    topic = admin.list_topics(topic=missing, timeout=10).topics[missing]
    assert topic.error is not None and topic.error.code() == 3  # UNKNOWN_TOPIC_OR_PARTITION
    assert call(kafka_broker, "GET", f"/admin/v2/persistent/{missing}/stats")[0] == 404


def request(api_key: int, version: int, correlation: int, body: bytes = b"") -> bytes:
    """A request frame with header v1 (client id "t")."""
    payload = struct.pack(">hhih", api_key, version, correlation, 1) + b"t" + body
    return struct.pack(">i", len(payload)) + payload


def raw_request(port: int, frame: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(frame)
        size = struct.unpack(">i", sock.recv(4, socket.MSG_WAITALL))[0]
        return sock.recv(size, socket.MSG_WAITALL)


def test_api_versions_and_bad_requests(kafka_broker):
    # ApiVersions v0: correlation id 9, client id "t": error 0 and the served ranges.
    answer = raw_request(kafka_broker.kafka_port, request(18, 0, 9))
    correlation, error, count = struct.unpack_from(">ihi", answer)
    ranges = {struct.unpack_from(">hhh", answer, 10 + 6 * i)[0]: struct.unpack_from(">hhh", answer, 10 + 6 * i)[1:]
              for i in range(count)}
    assert (correlation, error) == (9, 0) and ranges[18] == (0, 3) and ranges[3] == (0, 9)
    # An ApiVersions version from the future: UNSUPPORTED_VERSION (35) in v0, with the ranges.
    answer = raw_request(kafka_broker.kafka_port, request(18, 99, 10))
    assert struct.unpack_from(">ih", answer) == (10, 35)
    # An oversized frame and a truncated Metadata request close their connection only.
    for frame in (struct.pack(">i", 200 * 1024 * 1024) + b"x" * 16,
                  request(3, 1, 11, struct.pack(">i", 5))):
        with socket.create_connection(("127.0.0.1", kafka_broker.kafka_port), timeout=10) as sock:
            sock.sendall(frame)
            assert sock.recv(16) == b""
    answer = raw_request(kafka_broker.kafka_port, request(18, 0, 12))
    assert struct.unpack_from(">ih", answer) == (12, 0)


def test_pipelined_requests_are_answered_in_order(kafka_broker):
    """Clients pipeline: 500 requests sent at once come back in order (reading pauses at 64 in flight)."""
    with socket.create_connection(("127.0.0.1", kafka_broker.kafka_port), timeout=20) as sock:
        sock.sendall(b"".join(request(18 if i % 2 else 3, 0 if i % 2 else 1, i, b"" if i % 2 else struct.pack(">i", 0))
                              for i in range(500)))
        for i in range(500):
            size = struct.unpack(">i", sock.recv(4, socket.MSG_WAITALL))[0]
            answer = sock.recv(size, socket.MSG_WAITALL)
            assert struct.unpack_from(">i", answer)[0] == i
