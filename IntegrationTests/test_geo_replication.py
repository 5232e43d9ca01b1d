"""Issue 19: geo-replication between two clusters, configured through the admin REST API only.

Two `magnetar standalone` processes are two clusters (`--cluster-name us-east` / `us-west`, each its
own data dir and metadata). Each is told about the other (`PUT /admin/v2/clusters/{other}`), the
tenant may use both (`allowedClusters`), and a namespace replicates between them
(`POST /admin/v2/namespaces/{t}/{ns}/replication`). The official Python client produces and
consumes, unchanged:

- 200 messages produced on each side reach both sides exactly once, per-origin order kept, and
  nothing comes back around;
- per-message `disable_replication=True` and `replication_clusters=[...]` keep a message local;
- the remote cluster stopped during 300 sends and restarted: everything arrives, in order;
- a partitioned topic replicates partition by partition (the remote's partitions are created);
- a schema replicates with the data (an Avro consumer on the remote decodes the records);
- topic stats `replication.<cluster>` and the `pulsar_replication_*` metrics;
- the admin API's answers: 409 / 404 / 403 / 412 as Pulsar gives them, and the CLI.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import pulsar
import pytest
from pulsar.schema import AvroSchema, Record, String, Integer

from admin_rest import call, eventually
from conftest import Broker, magnetar_binary, new_client, close_quietly

RECEIVE_MS = 15_000
QUIET_MS = 1_500


class ClusterBroker(Broker):
    """A standalone broker that is cluster `name`."""

    def __init__(self, root: Path, name: str):
        super().__init__(root / "data", root / "magnetar.log")
        self.cluster = name

    def _command(self) -> list[str]:
        return super()._command() + ["--cluster-name", self.cluster]


def ok(broker, method, path, body=None):
    status, answer = call(broker, method, path, body)
    assert 200 <= status < 300, f"{method} {path} -> {status} {answer}"
    return answer


def cluster_data(broker) -> dict:
    return {"serviceUrl": broker.http_url, "brokerServiceUrl": broker.url}


@pytest.fixture(scope="module")
def clusters(tmp_path_factory):
    """us-east and us-west, each knowing the other, `public` allowed on both."""
    east = ClusterBroker(tmp_path_factory.mktemp("us-east"), "us-east").start()
    west = ClusterBroker(tmp_path_factory.mktemp("us-west"), "us-west").start()
    east.auto_restart = west.auto_restart = True
    for here, there in ((east, west), (west, east)):
        ok(here, "PUT", f"/admin/v2/clusters/{there.cluster}", cluster_data(there))
        ok(here, "POST", "/admin/v2/tenants/public", {"adminRoles": [], "allowedClusters": ["us-east", "us-west"]})
    yield east, west
    east.close()
    west.close()


def replicated_namespace(east, west, deduplication: bool = False) -> str:
    namespace = f"public/geo-{uuid.uuid4().hex[:8]}"
    for broker in (east, west):
        ok(broker, "PUT", f"/admin/v2/namespaces/{namespace}")
        ok(broker, "POST", f"/admin/v2/namespaces/{namespace}/replication", ["us-east", "us-west"])
        if deduplication:
            ok(broker, "POST", f"/admin/v2/namespaces/{namespace}/deduplication", True)
    return namespace


def drain(consumer, expected: int, timeout_ms: int = RECEIVE_MS) -> list:
    messages = []
    deadline = time.monotonic() + timeout_ms / 1000
    while len(messages) < expected:
        left = int((deadline - time.monotonic()) * 1000)
        assert left > 0, f"got {len(messages)} of {expected} messages"
        message = consumer.receive(timeout_millis=left)
        consumer.acknowledge(message)
        messages.append(message)
    return messages


def assert_quiet(consumer, what: str) -> None:
    with pytest.raises(pulsar.Timeout):
        extra = consumer.receive(timeout_millis=QUIET_MS)
        pytest.fail(f"{what}: an extra message arrived: {extra.data()!r}")


def per_origin(messages) -> dict[str, list[int]]:
    origins: dict[str, list[int]] = {}
    for message in messages:
        origin, index = message.data().decode().split(":")
        origins.setdefault(origin, []).append(int(index))
    return origins


def test_messages_from_each_side_reach_both_once_in_order(clusters):
    east, west = clusters
    namespace = replicated_namespace(east, west)
    topic = f"persistent://{namespace}/orders"
    east_client, west_client = new_client(east.url), new_client(west.url)
    try:
        east_consumer = east_client.subscribe(topic, "audit", initial_position=pulsar.InitialPosition.Earliest)
        west_consumer = west_client.subscribe(topic, "audit", initial_position=pulsar.InitialPosition.Earliest)
        east_producer = east_client.create_producer(topic, batching_enabled=True, batching_max_messages=20)
        west_producer = west_client.create_producer(topic)
        for i in range(200):
            east_producer.send_async(f"east:{i}".encode(), None)
            west_producer.send_async(f"west:{i}".encode(), None)
        east_producer.flush()
        west_producer.flush()
        for name, consumer in (("us-east", east_consumer), ("us-west", west_consumer)):
            origins = per_origin(drain(consumer, 400))
            assert origins == {"east": list(range(200)), "west": list(range(200))}, name
            assert_quiet(consumer, name)
        # Replicated messages keep their original producer's name (Python shows it as-is).
        stats = ok(west, "GET", f"/admin/v2/persistent/{namespace}/orders/stats")
        assert stats["replication"]["us-east"]["connected"] is True
        assert "pulsar.repl.us-west" not in stats["subscriptions"]
        assert any(p["producerName"] == "pulsar.repl.us-east-->us-west" for p in stats["publishers"])
    finally:
        close_quietly(east_client)
        close_quietly(west_client)


def test_per_message_replication_choices(clusters):
    east, west = clusters
    namespace = replicated_namespace(east, west)
    topic = f"persistent://{namespace}/choices"
    east_client, west_client = new_client(east.url), new_client(west.url)
    try:
        west_consumer = west_client.subscribe(topic, "s", initial_position=pulsar.InitialPosition.Earliest)
        east_consumer = east_client.subscribe(topic, "s", initial_position=pulsar.InitialPosition.Earliest)
        producer = east_client.create_producer(topic)
        producer.send(b"local-only", disable_replication=True)
        producer.send(b"east-only", replication_clusters=["us-east"])
        producer.send(b"to-west", replication_clusters=["us-west"])
        producer.send(b"everywhere")
        got_west = [m.data() for m in drain(west_consumer, 2)]
        assert got_west == [b"to-west", b"everywhere"]
        assert_quiet(west_consumer, "us-west")
        got_east = [m.data() for m in drain(east_consumer, 4)]
        assert got_east == [b"local-only", b"east-only", b"to-west", b"everywhere"]
    finally:
        close_quietly(east_client)
        close_quietly(west_client)


def test_remote_down_builds_a_backlog_then_catches_up_in_order(clusters):
    east, west = clusters
    namespace = replicated_namespace(east, west, deduplication=True)
    topic = f"persistent://{namespace}/outage"
    path = f"/admin/v2/persistent/{namespace}/outage"
    east_client = new_client(east.url)
    west_client = new_client(west.url)
    try:
        # The remote's subscription exists before the outage (durable: it survives the restart).
        west_client.subscribe(topic, "s", initial_position=pulsar.InitialPosition.Earliest).close()
        close_quietly(west_client)
        producer = east_client.create_producer(topic)
        for i in range(100):
            producer.send_async(f"east:{i}".encode(), None)
        west.stop()
        for i in range(100, 300):
            producer.send_async(f"east:{i}".encode(), None)
        producer.flush()
        # Local publishing is not slowed: every send has its receipt while the remote is down.
        stats = eventually(lambda: (s := ok(east, "GET", f"{path}/stats"))["replication"]["us-west"]["connected"] is False and s,
                           timeout_s=15, what="the replicator to see the remote down")
        backlog = stats["replication"]["us-west"]["replicationBacklog"]
        assert backlog > 0, stats["replication"]
        west.start()
        west_client = new_client(west.url)
        consumer = west_client.subscribe(topic, "s", initial_position=pulsar.InitialPosition.Earliest)
        indexes = per_origin(drain(consumer, 300, timeout_ms=60_000))["east"]
        assert indexes == list(range(300))
        assert_quiet(consumer, "us-west after catching up")
        eventually(lambda: ok(east, "GET", f"{path}/stats")["replication"]["us-west"]["replicationBacklog"] == 0,
                   timeout_s=15, what="the replication backlog to drain")
    finally:
        close_quietly(east_client)
        close_quietly(west_client)


def test_partitioned_topic_replicates_partition_by_partition(clusters):
    east, west = clusters
    namespace = replicated_namespace(east, west)
    name = "parted"
    ok(east, "PUT", f"/admin/v2/persistent/{namespace}/{name}/partitions", 3)
    topic = f"persistent://{namespace}/{name}"
    east_client, west_client = new_client(east.url), new_client(west.url)
    try:
        producer = east_client.create_producer(topic)
        for i in range(30):
            producer.send(f"east:{i}".encode(), partition_key=f"k{i % 5}")
        # The remote's partitioned topic is made by the replicators, with the same partitions.
        eventually(lambda: ok(west, "GET", f"/admin/v2/persistent/{namespace}/{name}/partitions")["partitions"] == 3,
                   timeout_s=15, what="the remote partitioned topic")
        consumer = west_client.subscribe(topic, "s", initial_position=pulsar.InitialPosition.Earliest)
        messages = drain(consumer, 30)
        assert sorted(per_origin(messages)["east"]) == list(range(30))
        # Per key (one partition each) the order is kept.
        by_key: dict[str, list[int]] = {}
        for message in messages:
            by_key.setdefault(message.partition_key(), []).append(int(message.data().decode().split(":")[1]))
        for key, indexes in by_key.items():
            assert indexes == sorted(indexes), key
        assert_quiet(consumer, "us-west")
    finally:
        close_quietly(east_client)
        close_quietly(west_client)


def subscription_backlog(broker, path: str, subscription: str) -> int:
    stats = ok(broker, "GET", f"{path}/stats")
    return stats["subscriptions"].get(subscription, {}).get("msgBacklog", 1 << 30)


def test_replicated_subscription_resumes_on_the_other_cluster(clusters):
    east, west = clusters
    namespace = replicated_namespace(east, west)
    topic = f"persistent://{namespace}/failover"
    path = f"/admin/v2/persistent/{namespace}/failover"
    east_client, west_client = new_client(east.url), new_client(west.url)
    try:
        east_consumer = east_client.subscribe(
            topic, "app", replicate_subscription_state_enabled=True, initial_position=pulsar.InitialPosition.Earliest)
        west_client.subscribe(
            topic, "app", replicate_subscription_state_enabled=True, initial_position=pulsar.InitialPosition.Earliest).close()
        producer = east_client.create_producer(topic)
        for i in range(100):
            producer.send_async(f"east:{i}".encode(), None)
        producer.flush()
        assert per_origin(drain(east_consumer, 100))["east"] == list(range(100))
        # The snapshots move the subscription in us-west too (only markers may be left after it).
        eventually(lambda: subscription_backlog(west, path, "app") <= 10, timeout_s=30,
                   what="the replicated subscription to move in us-west")
        # The application fails over to us-west: it does not read the topic again.
        west_consumer = west_client.subscribe(topic, "app", replicate_subscription_state_enabled=True)
        assert_quiet(west_consumer, "us-west after the failover")
        producer.send(b"east:100")
        assert [m.data() for m in drain(west_consumer, 1)] == [b"east:100"]
        # Markers are never delivered, in either cluster.
        assert [m.data() for m in drain(east_consumer, 1)] == [b"east:100"]
        assert_quiet(east_consumer, "us-east")
    finally:
        close_quietly(east_client)
        close_quietly(west_client)


class Reading(Record):
    sensor = String()
    value = Integer()


def test_schema_replicates_with_the_data(clusters):
    east, west = clusters
    namespace = replicated_namespace(east, west)
    topic = f"persistent://{namespace}/readings"
    east_client, west_client = new_client(east.url), new_client(west.url)
    try:
        producer = east_client.create_producer(topic, schema=AvroSchema(Reading))
        consumer = west_client.subscribe(topic, "s", schema=AvroSchema(Reading),
                                         initial_position=pulsar.InitialPosition.Earliest)
        for i in range(10):
            producer.send(Reading(sensor=f"s{i}", value=i))
        values = [m.value() for m in drain(consumer, 10)]
        assert [(v.sensor, v.value) for v in values] == [(f"s{i}", i) for i in range(10)]
        schema = ok(west, "GET", f"/admin/v2/schemas/{namespace}/readings/schema")
        assert schema["type"] == "AVRO"
    finally:
        close_quietly(east_client)
        close_quietly(west_client)


def test_topic_level_replication_clusters_and_metrics(clusters):
    east, west = clusters
    namespace = f"public/geo-{uuid.uuid4().hex[:8]}"
    for broker in (east, west):
        ok(broker, "PUT", f"/admin/v2/namespaces/{namespace}")
    topic = f"persistent://{namespace}/one"
    path = f"/admin/v2/persistent/{namespace}/one"
    east_client, west_client = new_client(east.url), new_client(west.url)
    try:
        west_consumer = west_client.subscribe(topic, "s", initial_position=pulsar.InitialPosition.Earliest)
        producer = east_client.create_producer(topic)
        producer.send(b"before")
        # The namespace is not replicated: only the topic is, by its own policy.
        assert ok(east, "GET", f"{path}/replication") is None
        ok(east, "POST", f"{path}/replication", ["us-east", "us-west"])
        assert ok(east, "GET", f"{path}/replication") == ["us-east", "us-west"]
        producer.send(b"after")
        assert [m.data() for m in drain(west_consumer, 1)] == [b"after"]
        assert_quiet(west_consumer, "us-west")
        metrics = eventually(
            lambda: (text := call(east, "GET", "/metrics")[1]) and 'remote_cluster="us-west"' in text and text,
            timeout_s=10, what="replication metrics")
        for metric in ("pulsar_replication_backlog", "pulsar_replication_rate_out", "pulsar_replication_delay_in_seconds"):
            assert any(line.startswith(metric + "{") and topic in line for line in metrics.splitlines()), metric
        # Removing the topic's policy stops replicating (the namespace's applies: none).
        ok(east, "DELETE", f"{path}/replication")
        eventually(lambda: "us-west" not in ok(east, "GET", f"{path}/stats")["replication"], timeout_s=10,
                   what="the replicator to go")
        producer.send(b"local again")
        assert_quiet(west_consumer, "us-west after the policy was removed")
    finally:
        close_quietly(east_client)
        close_quietly(west_client)


def test_admin_answers_like_pulsar(clusters):
    east, west = clusters
    status, listed = call(east, "GET", "/admin/v2/clusters")
    assert status == 200 and set(listed) >= {"us-east", "us-west"}
    assert call(east, "GET", "/admin/v2/clusters/us-east")[1]["brokerServiceUrl"] == east.url
    status, answer = call(east, "PUT", "/admin/v2/clusters/us-west", cluster_data(west))
    assert status == 409, answer
    assert call(east, "GET", "/admin/v2/clusters/nowhere")[0] == 404
    status, answer = call(east, "PUT", "/admin/v2/clusters/bad", {"serviceUrl": "ftp://x:1"})
    assert status == 400 and "service url" in answer["reason"], answer
    namespace = f"public/geo-{uuid.uuid4().hex[:8]}"
    ok(east, "PUT", f"/admin/v2/namespaces/{namespace}")
    assert ok(east, "GET", f"/admin/v2/namespaces/{namespace}/replication") == ["us-east"]
    status, answer = call(east, "POST", f"/admin/v2/namespaces/{namespace}/replication", ["us-east", "nowhere"])
    assert status == 403 and "Invalid cluster id" in answer["reason"], answer
    assert call(east, "POST", f"/admin/v2/namespaces/{namespace}/replication", [])[0] == 412
    ok(east, "PUT", "/admin/v2/clusters/eu-central", {"serviceUrl": "http://127.0.0.1:1", "brokerServiceUrl": "pulsar://127.0.0.1:1"})
    status, answer = call(east, "POST", f"/admin/v2/namespaces/{namespace}/replication", ["us-east", "eu-central"])
    assert status == 403 and "not in the list of allowed clusters" in answer["reason"], answer
    ok(east, "POST", f"/admin/v2/namespaces/{namespace}/replication", ["us-east", "us-west"])
    assert call(east, "DELETE", "/admin/v2/clusters/us-west")[0] == 412
    assert call(east, "DELETE", "/admin/v2/clusters/us-east")[0] == 412
    ok(east, "DELETE", "/admin/v2/clusters/eu-central")
    assert call(east, "GET", "/admin/v2/clusters/eu-central")[0] == 404
    # Clients may not take a replicator's subscription name.
    client = new_client(east.url)
    try:
        with pytest.raises(Exception):
            client.subscribe(f"persistent://{namespace}/x", "pulsar.repl.us-west")
    finally:
        close_quietly(client)


def test_cli_clusters_and_namespace_clusters(clusters):
    east, west = clusters
    binary = str(magnetar_binary())

    def admin(*args: str) -> str:
        done = subprocess.run([binary, "admin", *args, "--url", east.http_url],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    admin("clusters", "create", "ap-south", "--service-url", "http://127.0.0.1:2", "--broker-url", "pulsar://127.0.0.1:2")
    assert "ap-south" in admin("clusters", "list").split()
    assert "pulsar://127.0.0.1:2" in admin("clusters", "get", "ap-south")
    admin("clusters", "update", "ap-south", "--service-url", "http://127.0.0.1:3", "--broker-url", "pulsar://127.0.0.1:3")
    assert "pulsar://127.0.0.1:3" in admin("clusters", "get", "ap-south")
    admin("clusters", "delete", "ap-south")
    assert "ap-south" not in admin("clusters", "list").split()
    namespace = f"public/geo-{uuid.uuid4().hex[:8]}"
    admin("namespaces", "create", namespace)
    admin("namespaces", "set-clusters", namespace, "--clusters", "us-east,us-west")
    assert admin("namespaces", "get-clusters", namespace).split() == ["us-east", "us-west"]


def test_replicating_to_a_cluster_with_authentication(tmp_path):
    """The remote cluster authenticates and authorizes; the replicators present the token of
    `brokerClientAuthenticationPlugin` / `brokerClientAuthenticationParameters`."""
    import jwt
    from test_security import SecureBroker

    key_path = tmp_path / "secret.key"
    subprocess.run([str(magnetar_binary()), "tokens", "create-secret-key", "--output", str(key_path)], check=True, timeout=60)
    admin_token = jwt.encode({"sub": "admin"}, key_path.read_bytes(), algorithm="HS256")
    (tmp_path / "west").mkdir()
    (tmp_path / "east").mkdir()
    west = SecureBroker(tmp_path / "west", "\n".join([
        "clusterName=us-west",
        "authenticationEnabled=true",
        "authenticationProviders=org.apache.pulsar.broker.authentication.AuthenticationProviderToken",
        f"tokenSecretKey=file://{key_path}",
        "authorizationEnabled=true",
        "superUserRoles=admin",
    ]))
    east = SecureBroker(tmp_path / "east", "\n".join([
        "clusterName=us-east",
        "brokerClientAuthenticationPlugin=org.apache.pulsar.client.impl.auth.AuthenticationToken",
        f"brokerClientAuthenticationParameters=token:{admin_token}",
    ]))
    west.start()
    east.start()
    east_client = west_client = None
    try:
        def secured_ok(method, path, body=None):
            status, answer = call(west, method, path, body, admin_token)
            assert 200 <= status < 300, f"{method} {path} -> {status} {answer}"

        ok(east, "PUT", "/admin/v2/clusters/us-west", cluster_data(west))
        secured_ok("PUT", "/admin/v2/clusters/us-east", cluster_data(east))
        ok(east, "POST", "/admin/v2/tenants/public", {"adminRoles": [], "allowedClusters": ["us-east", "us-west"]})
        secured_ok("POST", "/admin/v2/tenants/public", {"adminRoles": [], "allowedClusters": ["us-east", "us-west"]})
        namespace = f"public/geo-{uuid.uuid4().hex[:8]}"
        ok(east, "PUT", f"/admin/v2/namespaces/{namespace}")
        ok(east, "POST", f"/admin/v2/namespaces/{namespace}/replication", ["us-east", "us-west"])
        secured_ok("PUT", f"/admin/v2/namespaces/{namespace}")
        secured_ok("POST", f"/admin/v2/namespaces/{namespace}/replication", ["us-east", "us-west"])
        topic = f"persistent://{namespace}/secure"
        west_client = pulsar.Client(west.url, authentication=pulsar.AuthenticationToken(admin_token),
                                    operation_timeout_seconds=10, connection_timeout_ms=5000)
        consumer = west_client.subscribe(topic, "s", initial_position=pulsar.InitialPosition.Earliest)
        east_client = new_client(east.url)
        producer = east_client.create_producer(topic)
        for i in range(20):
            producer.send(f"east:{i}".encode())
        assert per_origin(drain(consumer, 20))["east"] == list(range(20))
    finally:
        for c in (east_client, west_client):
            if c is not None:
                close_quietly(c)
        east.close()
        west.close()
