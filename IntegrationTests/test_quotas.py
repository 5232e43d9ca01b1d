"""Issue 14: tenant quotas, driven with the official Python client, the REST API and the CLI.

One broker with `maxNamespacesPerTenant=3` (a `--config` key) serves the module.
- Namespace `publishRate`: a producer is throttled (its connection is not read while the topic's
  rate is in debt), measured over a few seconds with generous bounds; nothing is dropped.
- Namespace `dispatchRate`: a backlog reaches the consumer no faster than the rate.
- `maxTopicsPerNamespace` (namespace policy): the next topic is refused (`NotAllowedError` for a
  client creating it, 412 on REST, partitions counted); `maxNamespacesPerTenant`: 412.
- The CLI verbs set, show and remove the quotas; a tenant admin may read but not raise them.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pulsar
import pytest

from admin_rest import call as admin
from admin_rest import eventually
from conftest import close_quietly, magnetar_binary
from test_security import SecureBroker

RATE = 50  # messages per second in the throttling tests
MESSAGES = 250  # (250 - 50 burst) / 50 per s = 4 s at least


@pytest.fixture(scope="module")
def quota_broker(tmp_path_factory):
    broker = SecureBroker(tmp_path_factory.mktemp("quotas"), "maxNamespacesPerTenant=3")
    broker.start()
    broker.auto_restart = True
    yield broker
    broker.close()


def ok(broker, method: str, path: str, body=None):
    status, answer = admin(broker, method, path, body)
    assert 200 <= status < 300, f"{method} {path}: {status} {answer}"
    return answer


def new_namespace(broker) -> str:
    tenant = f"q-{uuid.uuid4().hex[:8]}"
    ok(broker, "PUT", f"/admin/v2/tenants/{tenant}", {"adminRoles": [], "allowedClusters": ["standalone"]})
    ok(broker, "PUT", f"/admin/v2/namespaces/{tenant}/ns")
    return f"{tenant}/ns"


def client_for(broker) -> pulsar.Client:
    return pulsar.Client(broker.url, operation_timeout_seconds=10, connection_timeout_ms=5000)


def until_policy_applies(check, timeout_s: float = 10.0):
    """Policies reach loaded topics at the next policy pass (about a second)."""
    eventually(check, timeout_s=timeout_s)


def test_publish_rate_throttles_producers_without_dropping(quota_broker):
    namespace = new_namespace(quota_broker)
    ok(quota_broker, "POST", f"/admin/v2/namespaces/{namespace}/publishRate",
       {"publishThrottlingRateInMsg": RATE, "publishThrottlingRateInByte": -1})
    assert ok(quota_broker, "GET", f"/admin/v2/namespaces/{namespace}/publishRate")["publishThrottlingRateInMsg"] == RATE
    topic = f"persistent://{namespace}/throttled"
    client = client_for(quota_broker)
    try:
        consumer = client.subscribe(topic, "s")
        producer = client.create_producer(topic, batching_enabled=False, send_timeout_millis=60_000)
        time.sleep(2)  # the policy pass configures the loaded topic's limiter
        started = time.monotonic()
        for i in range(MESSAGES):
            producer.send(f"m{i}".encode())
        elapsed = time.monotonic() - started
        # At 50/s with a one-second burst, 250 sends take about 4 s; unthrottled they take well under 1 s.
        assert elapsed >= 0.6 * (MESSAGES - RATE) / RATE, f"{MESSAGES} sends took {elapsed:.2f}s: not throttled"
        assert elapsed < 60, f"{MESSAGES} sends took {elapsed:.2f}s"
        received = [consumer.receive(10_000).data() for _ in range(MESSAGES)]
        assert received == [f"m{i}".encode() for i in range(MESSAGES)]
        metrics = subprocess.run(["curl", "-s", f"{quota_broker.http_url}/metrics"], capture_output=True, text=True,
                                 timeout=30).stdout
        assert "magnetar_publish_rate_throttled_total" in metrics
    finally:
        close_quietly(client)
    # Removed: the next burst is not throttled.
    ok(quota_broker, "DELETE", f"/admin/v2/namespaces/{namespace}/publishRate")
    assert ok(quota_broker, "GET", f"/admin/v2/namespaces/{namespace}/publishRate") is None


def test_dispatch_rate_paces_consumers(quota_broker):
    namespace = new_namespace(quota_broker)
    topic = f"persistent://{namespace}/paced"
    client = client_for(quota_broker)
    try:
        consumer = client.subscribe(topic, "s", receiver_queue_size=1000)
        producer = client.create_producer(topic, batching_enabled=False)
        ok(quota_broker, "POST", f"/admin/v2/namespaces/{namespace}/dispatchRate",
           {"dispatchThrottlingRateInMsg": RATE, "dispatchThrottlingRateInByte": -1, "ratePeriodInSecond": 1,
            "relativeToPublishRate": False})
        time.sleep(2)
        for i in range(MESSAGES):
            producer.send_async(f"d{i}".encode(), None)
        producer.flush()
        started = time.monotonic()
        received = [consumer.receive(30_000).data() for _ in range(MESSAGES)]
        elapsed = time.monotonic() - started
        assert received == [f"d{i}".encode() for i in range(MESSAGES)]
        assert elapsed >= 0.6 * (MESSAGES - 2 * RATE) / RATE, f"{MESSAGES} messages arrived in {elapsed:.2f}s: not paced"
        assert elapsed < 60
    finally:
        close_quietly(client)


def test_max_topics_per_namespace(quota_broker):
    namespace = new_namespace(quota_broker)
    ok(quota_broker, "POST", f"/admin/v2/namespaces/{namespace}/maxTopicsPerNamespace", 3)
    assert ok(quota_broker, "GET", f"/admin/v2/namespaces/{namespace}/maxTopicsPerNamespace") == 3
    # A partitioned topic of 2 partitions counts 2.
    ok(quota_broker, "PUT", f"/admin/v2/persistent/{namespace}/parted/partitions", 2)
    status, answer = admin(quota_broker, "PUT", f"/admin/v2/persistent/{namespace}/too-many/partitions", 2)
    assert status == 412 and "Exceed maximum number of topics" in answer["reason"]
    client = client_for(quota_broker)
    try:
        client.create_producer(f"persistent://{namespace}/third").send(b"x")
        with pytest.raises(pulsar.NotAllowedError):
            client.create_producer(f"persistent://{namespace}/fourth")
        # Existing topics keep working.
        client.create_producer(f"persistent://{namespace}/third").send(b"y")
    finally:
        close_quietly(client)
    status, answer = admin(quota_broker, "PUT", f"/admin/v2/persistent/{namespace}/fifth")
    assert status == 412, answer
    # Raised: there is room again (once the policy cache has the new value, within seconds).
    ok(quota_broker, "POST", f"/admin/v2/namespaces/{namespace}/maxTopicsPerNamespace", 4)
    eventually(lambda: admin(quota_broker, "PUT", f"/admin/v2/persistent/{namespace}/fifth")[0] == 204, timeout_s=10)


def test_max_namespaces_per_tenant(quota_broker):
    tenant = f"q-{uuid.uuid4().hex[:8]}"
    ok(quota_broker, "PUT", f"/admin/v2/tenants/{tenant}", {"adminRoles": [], "allowedClusters": ["standalone"]})
    for i in range(3):
        ok(quota_broker, "PUT", f"/admin/v2/namespaces/{tenant}/ns{i}")
    status, answer = admin(quota_broker, "PUT", f"/admin/v2/namespaces/{tenant}/ns3")
    assert status == 412 and "maximum number of namespace" in answer["reason"]


def test_quota_cli_verbs(quota_broker):
    namespace = new_namespace(quota_broker)

    def cli(*args: str) -> subprocess.CompletedProcess:
        out = subprocess.run([str(magnetar_binary()), "admin", "--url", quota_broker.http_url, *args],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out

    cli("namespaces", "set-publish-rate", namespace, "--msg-publish-rate", "100", "--byte-publish-rate", "1048576")
    shown = json.loads(cli("namespaces", "get-publish-rate", namespace, "-o", "json").stdout)
    assert shown == {"publishThrottlingRateInMsg": 100, "publishThrottlingRateInByte": 1048576}
    cli("namespaces", "set-dispatch-rate", namespace, "--msg-dispatch-rate", "200", "--dispatch-rate-period", "2")
    shown = json.loads(cli("namespaces", "get-dispatch-rate", namespace, "-o", "json").stdout)
    assert shown["dispatchThrottlingRateInMsg"] == 200 and shown["ratePeriodInSecond"] == 2
    cli("namespaces", "set-max-topics-per-namespace", namespace, "-t", "7")
    assert cli("namespaces", "get-max-topics-per-namespace", namespace).stdout.strip() == "7"
    for verb in ("remove-publish-rate", "remove-dispatch-rate", "remove-max-topics-per-namespace"):
        cli("namespaces", verb, namespace)
    policies = ok(quota_broker, "GET", f"/admin/v2/namespaces/{namespace}")
    assert policies["publishMaxMessageRate"] is None and policies["topicDispatchRate"] is None
    assert policies["max_topics_per_namespace"] is None
    # Bad values are a 400 with a reason.
    status, answer = admin(quota_broker, "POST", f"/admin/v2/namespaces/{namespace}/dispatchRate",
                           {"dispatchThrottlingRateInMsg": 5, "ratePeriodInSecond": 0})
    assert status == 400 and "ratePeriodInSecond" in answer["reason"]
