"""The admin REST API (/admin/v2, Pulsar's paths and JSON shapes), the `magnetar admin` CLI and
/metrics, against the real binary."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pulsar
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import magnetar_binary
from helpers import receive_n

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Reply:
    def __init__(self, status: int, body: bytes, headers):
        self.status = status
        self.body = body
        self.headers = headers

    def json(self):
        return json.loads(self.body) if self.body else None

    @property
    def reason(self) -> str:
        return self.json()["reason"]


def api(broker, method: str, path: str, body=None, raw: bytes | None = None) -> Reply:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(broker.http_url + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _NO_PROXY.open(request, timeout=10) as response:
            return Reply(response.status, response.read(), response.headers)
    except urllib.error.HTTPError as e:
        return Reply(e.code, e.read(), e.headers)


def expect_error(reply: Reply, status: int, reason_part: str) -> None:
    assert reply.status == status, (reply.status, reply.body)
    assert reply.headers.get("Content-Type", "").startswith("application/json")
    assert reason_part in reply.reason, reply.reason


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------------------------------------
# tenants and namespaces
# ------------------------------------------------------------------------------------------------

def test_tenants(broker):
    assert api(broker, "GET", "/admin/v2/tenants").json().count("public") == 1
    tenant = unique("acme")
    info = {"adminRoles": ["ops"], "allowedClusters": ["standalone"]}
    assert api(broker, "PUT", f"/admin/v2/tenants/{tenant}", info).status == 204
    expect_error(api(broker, "PUT", f"/admin/v2/tenants/{tenant}", info), 409, "Tenant already exists")
    assert tenant in api(broker, "GET", "/admin/v2/tenants").json()
    assert api(broker, "GET", f"/admin/v2/tenants/{tenant}").json() == info
    assert api(broker, "POST", f"/admin/v2/tenants/{tenant}", {"adminRoles": [], "allowedClusters": []}).status == 204
    assert api(broker, "GET", f"/admin/v2/tenants/{tenant}").json() == {"adminRoles": [], "allowedClusters": []}

    expect_error(api(broker, "GET", "/admin/v2/tenants/no-such-tenant"), 404, "Tenant does not exist")
    expect_error(api(broker, "DELETE", "/admin/v2/tenants/no-such-tenant"), 404, "Tenant does not exist")
    expect_error(api(broker, "PUT", f"/admin/v2/tenants/{unique('t')}", raw=b"{not json"), 400, "Invalid JSON")
    expect_error(api(broker, "PUT", "/admin/v2/tenants/bad%20name", info), 400, "Invalid tenant name")

    assert api(broker, "PUT", f"/admin/v2/namespaces/{tenant}/ns").status == 204
    expect_error(api(broker, "DELETE", f"/admin/v2/tenants/{tenant}"), 412, "still has active namespaces")
    assert api(broker, "DELETE", f"/admin/v2/namespaces/{tenant}/ns").status == 204
    assert api(broker, "DELETE", f"/admin/v2/tenants/{tenant}").status == 204
    assert tenant not in api(broker, "GET", "/admin/v2/tenants").json()


def test_namespaces_and_policies(broker):
    tenant = unique("pol")
    assert api(broker, "PUT", f"/admin/v2/tenants/{tenant}", {}).status == 204
    ns = f"{tenant}/ns1"
    base = f"/admin/v2/namespaces/{ns}"
    expect_error(api(broker, "PUT", f"/admin/v2/namespaces/{unique('nobody')}/ns"), 404, "Tenant does not exist")
    expect_error(api(broker, "GET", f"/admin/v2/namespaces/{tenant}/missing"), 404, "Namespace does not exist")
    assert api(broker, "PUT", base).status == 204
    expect_error(api(broker, "PUT", base), 409, "Namespace already exists")
    assert api(broker, "GET", f"/admin/v2/namespaces/{tenant}").json() == [ns]
    assert "public/default" in api(broker, "GET", "/admin/v2/namespaces/public").json()

    policies = api(broker, "GET", base).json()
    assert policies["retention_policies"] is None and policies["backlog_quota_map"] == {}
    assert policies["schema_compatibility_strategy"] == "UNDEFINED"

    retention = {"retentionTimeInMinutes": 60, "retentionSizeInMB": 100}
    assert api(broker, "POST", f"{base}/retention", retention).status == 204
    assert api(broker, "GET", f"{base}/retention").json() == retention
    assert api(broker, "POST", f"{base}/messageTTL", 120).status == 204
    assert api(broker, "GET", f"{base}/messageTTL").json() == 120
    quota = {"limitSize": 10485760, "limitTime": -1, "policy": "producer_exception"}
    assert api(broker, "POST", f"{base}/backlogQuota", quota).status == 204
    assert api(broker, "GET", f"{base}/backlogQuotaMap").json() == {"destination_storage": quota}
    auto = {"allowAutoTopicCreation": True, "topicType": "partitioned", "defaultNumPartitions": 3}
    assert api(broker, "POST", f"{base}/autoTopicCreation", auto).status == 204
    assert api(broker, "POST", f"{base}/deduplication", True).status == 204
    assert api(broker, "PUT", f"{base}/schemaCompatibilityStrategy", "FULL").status == 204
    policies = api(broker, "GET", base).json()
    assert policies["retention_policies"] == retention
    assert policies["message_ttl_in_seconds"] == 120
    assert policies["backlog_quota_map"] == {"destination_storage": quota}
    assert policies["autoTopicCreationOverride"] == auto
    assert policies["deduplicationEnabled"] is True
    assert policies["schema_compatibility_strategy"] == "FULL"

    assert api(broker, "DELETE", f"{base}/messageTTL").status == 204
    assert api(broker, "DELETE", f"{base}/backlogQuota").status == 204
    policies = api(broker, "GET", base).json()
    assert policies["message_ttl_in_seconds"] is None and policies["backlog_quota_map"] == {}

    # Bad input: 400 with a reason, and nothing changed.
    expect_error(api(broker, "POST", f"{base}/retention", raw=b"{\"retentionTimeInMinutes\": "), 400, "Invalid JSON")
    expect_error(api(broker, "POST", f"{base}/messageTTL", -5), 400, "message TTL")
    expect_error(api(broker, "POST", f"{base}/backlogQuota", {"limitSize": 1, "policy": "drop_it"}), 400, "Invalid JSON")
    expect_error(api(broker, "POST", f"{base}/backlogQuota?backlogQuotaType=weird", quota), 400, "backlogQuotaType")
    expect_error(api(broker, "POST", f"{base}/autoTopicCreation", {"allowAutoTopicCreation": True, "topicType": "partitioned"}),
                 400, "defaultNumPartitions")
    expect_error(api(broker, "PUT", f"{base}/schemaCompatibilityStrategy", "SOMETIMES"), 400, "schema compatibility")
    expect_error(api(broker, "POST", f"{base}/messageTTL"), 400, "empty")
    expect_error(api(broker, "POST", f"{base}/messageTTL", raw=b"1" * 100_000), 413, "larger than")
    assert api(broker, "GET", base).json()["retention_policies"] == retention

    assert api(broker, "PUT", f"/admin/v2/persistent/{ns}/t1").status == 204
    expect_error(api(broker, "DELETE", base), 412, "non empty namespace")
    assert api(broker, "DELETE", f"/admin/v2/persistent/{ns}/t1").status == 204
    assert api(broker, "DELETE", base).status == 204
    expect_error(api(broker, "DELETE", base), 404, "Namespace does not exist")


# ------------------------------------------------------------------------------------------------
# topics
# ------------------------------------------------------------------------------------------------

def test_topics_and_partitions(broker):
    ns_path = "/admin/v2/persistent/public/default"
    name = unique("adm-topic")
    assert api(broker, "PUT", f"{ns_path}/{name}").status == 204
    expect_error(api(broker, "PUT", f"{ns_path}/{name}"), 409, "already exists")
    assert f"persistent://public/default/{name}" in api(broker, "GET", ns_path).json()
    assert api(broker, "GET", f"{ns_path}/{name}/partitions").json() == {"partitions": 0}

    part = unique("adm-part")
    assert api(broker, "PUT", f"{ns_path}/{part}/partitions", 2).status == 204
    expect_error(api(broker, "PUT", f"{ns_path}/{part}/partitions", 2), 409, "already exists")
    expect_error(api(broker, "PUT", f"{ns_path}/{unique('x')}/partitions", raw=b"abc"), 400, "Invalid JSON")
    expect_error(api(broker, "PUT", f"{ns_path}/{unique('x')}/partitions", 0), 400, "partitions")
    assert api(broker, "GET", f"{ns_path}/{part}/partitions").json() == {"partitions": 2}
    expect_error(api(broker, "POST", f"{ns_path}/{part}/partitions", 1), 409, "can only be increased")
    assert api(broker, "POST", f"{ns_path}/{part}/partitions", 4).status == 204
    assert api(broker, "GET", f"{ns_path}/{part}/partitions").json() == {"partitions": 4}
    assert f"persistent://public/default/{part}" in api(broker, "GET", f"{ns_path}/partitioned").json()
    listed = api(broker, "GET", ns_path).json()
    assert all(f"persistent://public/default/{part}-partition-{i}" in listed for i in range(4))
    expect_error(api(broker, "POST", f"{ns_path}/{unique('none')}/partitions", 3), 404, "Partitioned topic does not exist")

    expect_error(api(broker, "GET", f"{ns_path}/{unique('none')}/stats"), 404, "Topic not found")
    expect_error(api(broker, "GET", f"/admin/v2/persistent/public/{unique('nons')}/x/stats"), 404, "Namespace does not exist")
    expect_error(api(broker, "GET", f"/admin/v2/persistent/nobody-{uuid.uuid4().hex[:6]}/ns"), 404, "does not exist")

    assert api(broker, "DELETE", f"{ns_path}/{part}/partitions").status == 204
    expect_error(api(broker, "GET", f"{ns_path}/{part}/partitions"), 404, "Topic not found")
    assert api(broker, "DELETE", f"{ns_path}/{name}").status == 204
    expect_error(api(broker, "DELETE", f"{ns_path}/{name}"), 404, "Topic not found")
    assert f"persistent://public/default/{name}" not in api(broker, "GET", ns_path).json()


def test_subscription_operations_with_traffic(broker, client, topic):
    full = topic("adm-subs")
    path = "/admin/v2/persistent/public/default/" + full.rsplit("/", 1)[1]
    producer = client.create_producer(full, batching_enabled=False)
    ids = [producer.send(f"m-{i}".encode(), properties={"k": str(i)}) for i in range(5)]

    assert api(broker, "PUT", f"{path}/subscription/ops", {"ledgerId": -1, "entryId": -1}).status == 204
    expect_error(api(broker, "PUT", f"{path}/subscription/ops"), 409, "Subscription already exists")
    assert api(broker, "PUT", f"{path}/subscription/tail").status == 204  # default: latest
    assert api(broker, "GET", f"{path}/subscriptions").json() == ["ops", "tail"]

    stats = api(broker, "GET", f"{path}/stats").json()
    assert stats["msgInCounter"] == 5 and stats["bytesInCounter"] > 0 and stats["storageSize"] > 0
    assert [p["producerName"] for p in stats["publishers"]] == [producer.producer_name()]
    assert stats["subscriptions"]["ops"]["msgBacklog"] == 5
    assert stats["subscriptions"]["tail"]["msgBacklog"] == 0

    peek = api(broker, "GET", f"{path}/subscription/ops/position/1")
    assert peek.status == 200 and peek.body == b"m-0"
    assert peek.headers["X-Pulsar-Message-ID"].startswith(f"{ids[0].ledger_id()}:{ids[0].entry_id()}")
    assert peek.headers["X-Pulsar-PROPERTY-k"] == "0"
    assert api(broker, "GET", f"{path}/subscription/ops/position/2").body == b"m-1"
    expect_error(api(broker, "GET", f"{path}/subscription/ops/position/9"), 404, "Message not found")
    expect_error(api(broker, "GET", f"{path}/subscription/ops/position/x"), 400, "not a number")
    expect_error(api(broker, "GET", f"{path}/subscription/nope/position/1"), 404, "Subscription not found")

    def backlog(sub="ops"):
        return api(broker, "GET", f"{path}/stats").json()["subscriptions"][sub]["msgBacklog"]

    assert api(broker, "POST", f"{path}/subscription/ops/skip/2").status == 204
    assert backlog() == 3
    assert api(broker, "GET", f"{path}/subscription/ops/position/1").body == b"m-2"
    assert api(broker, "POST", f"{path}/subscription/ops/expireMessages/3600").status == 204
    assert backlog() == 3  # nothing is an hour old
    assert api(broker, "POST", f"{path}/subscription/ops/expireMessages/0").status == 204
    assert backlog() == 0
    assert api(broker, "POST", f"{path}/subscription/ops/resetcursor/0").status == 204
    assert backlog() == 5
    target = {"ledgerId": ids[3].ledger_id(), "entryId": ids[3].entry_id()}
    assert api(broker, "POST", f"{path}/subscription/ops/resetcursor", target).status == 204
    assert backlog() == 2
    expect_error(api(broker, "POST", f"{path}/subscription/ops/resetcursor", raw=b"[]"), 400, "Invalid JSON")

    internal = api(broker, "GET", f"{path}/internalStats").json()
    assert internal["numberOfEntries"] == 5
    assert {"ledgerId", "entries", "size"} <= set(internal["ledgers"][0])
    assert internal["cursors"]["ops"]["markDeletePosition"] == f"{ids[2].ledger_id()}:{ids[2].entry_id()}"

    consumer = client.subscribe(full, "ops", consumer_name="c-ops")
    assert [m.data() for m in receive_n(consumer, 2)] == [b"m-3", b"m-4"]
    sub = api(broker, "GET", f"{path}/stats").json()["subscriptions"]["ops"]
    assert sub["type"] == "Exclusive" and sub["unackedMessages"] == 2
    assert [c["consumerName"] for c in sub["consumers"]] == ["c-ops"]
    expect_error(api(broker, "DELETE", f"{path}/subscription/ops"), 412, "active connected consumers")
    expect_error(api(broker, "DELETE", f"{path}"), 412, "active producers")
    assert api(broker, "DELETE", f"{path}/subscription/tail").status == 204
    expect_error(api(broker, "DELETE", f"{path}/subscription/tail"), 404, "Subscription not found")
    consumer.close()
    producer.close()


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------

def cli(broker, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    result = subprocess.run(
        [str(magnetar_binary()), "admin", "--url", broker.http_url, *args],
        capture_output=True, text=True, timeout=30, env=env)
    if check:
        assert result.returncode == 0, (args, result.returncode, result.stdout, result.stderr)
    return result


def test_cli(broker, client, topic):
    assert "public" in cli(broker, "tenants", "list").stdout.split()
    assert "public" in json.loads(cli(broker, "tenants", "list", "--output", "json").stdout)

    tenant = unique("cli")
    cli(broker, "tenants", "create", tenant)
    failed = cli(broker, "tenants", "create", tenant, check=False)
    assert failed.returncode != 0 and "409" in failed.stderr and "Tenant already exists" in failed.stderr
    failed = cli(broker, "tenants", "get", "no-such-tenant", check=False)
    assert failed.returncode != 0 and "Tenant does not exist" in failed.stderr

    ns = f"{tenant}/apps"
    cli(broker, "namespaces", "create", ns)
    assert cli(broker, "namespaces", "list", tenant).stdout.split() == [ns]
    cli(broker, "namespaces", "set-retention", ns, "--time", "2h", "--size", "1G")
    cli(broker, "namespaces", "set-message-ttl", ns, "--messageTTL", "90")
    cli(broker, "namespaces", "set-backlog-quota", ns, "--limit", "10M", "--policy", "producer_request_hold")
    cli(broker, "namespaces", "set-auto-topic-creation", ns, "--enable", "--type", "partitioned", "--num-partitions", "2")
    cli(broker, "namespaces", "set-deduplication", ns, "--enable")
    cli(broker, "namespaces", "set-schema-compatibility-strategy", ns, "--compatibility", "BACKWARD")
    policies = json.loads(cli(broker, "namespaces", "policies", ns, "-o", "json").stdout)
    assert policies["retention_policies"] == {"retentionTimeInMinutes": 120, "retentionSizeInMB": 1024}
    assert policies["message_ttl_in_seconds"] == 90
    assert policies["backlog_quota_map"]["destination_storage"]["limitSize"] == 10 * 1024 * 1024
    assert policies["autoTopicCreationOverride"]["defaultNumPartitions"] == 2
    assert policies["deduplicationEnabled"] is True
    assert policies["schema_compatibility_strategy"] == "BACKWARD"
    text = cli(broker, "namespaces", "policies", ns).stdout
    assert "message_ttl_in_seconds" in text and "90" in text

    cli(broker, "topics", "create-partitioned-topic", f"persistent://{ns}/orders", "-p", "2")
    cli(broker, "topics", "update-partitioned-topic", f"persistent://{ns}/orders", "-p", "3")
    meta = json.loads(cli(broker, "topics", "get-partitioned-topic-metadata", f"{ns}/orders", "-o", "json").stdout)
    assert meta == {"partitions": 3}
    failed = cli(broker, "topics", "update-partitioned-topic", f"{ns}/orders", "-p", "1", check=False)
    assert failed.returncode != 0 and "can only be increased" in failed.stderr

    full = topic("adm-cli")
    producer = client.create_producer(full, batching_enabled=False)
    for i in range(3):
        producer.send(f"cli-{i}".encode())
    cli(broker, "topics", "create-subscription", full, "-s", "audit", "-m", "earliest")
    assert cli(broker, "topics", "subscriptions", full).stdout.split() == ["audit"]
    table = cli(broker, "topics", "stats", full).stdout
    assert "msgInCounter" in table and "SUBSCRIPTION" in table and "audit" in table
    stats = json.loads(cli(broker, "topics", "stats", full, "--output", "json").stdout)
    assert stats["subscriptions"]["audit"]["msgBacklog"] == 3
    peeked = cli(broker, "topics", "peek-messages", full, "-s", "audit", "-n", "2").stdout
    assert "cli-0" in peeked and "cli-1" in peeked and "Message ID" in peeked
    cli(broker, "topics", "skip", full, "-s", "audit", "-n", "1")
    cli(broker, "topics", "reset-cursor", full, "-s", "audit", "--time", "1h")
    cli(broker, "topics", "expire-messages", full, "-s", "audit", "--expireTime", "0")
    assert json.loads(cli(broker, "topics", "stats", full, "-o", "json").stdout)["subscriptions"]["audit"]["msgBacklog"] == 0
    internal = json.loads(cli(broker, "topics", "stats-internal", full, "-o", "json").stdout)
    assert internal["numberOfEntries"] == 3
    cli(broker, "topics", "unsubscribe", full, "-s", "audit")
    producer.close()

    failed = cli(broker, "namespaces", "delete", ns, check=False)
    assert failed.returncode != 0 and "non empty namespace" in failed.stderr
    cli(broker, "topics", "delete-partitioned-topic", f"{ns}/orders")
    cli(broker, "namespaces", "delete", ns)
    cli(broker, "tenants", "delete", tenant)

    unreachable = subprocess.run(
        [str(magnetar_binary()), "admin", "--url", "http://127.0.0.1:1", "tenants", "list"],
        capture_output=True, text=True, timeout=30)
    assert unreachable.returncode != 0 and "cannot reach" in unreachable.stderr


# ------------------------------------------------------------------------------------------------
# /metrics
# ------------------------------------------------------------------------------------------------

def samples(broker) -> dict[str, list]:
    reply = api(broker, "GET", "/metrics")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/plain")
    families = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        families.setdefault(family.name, []).extend(family.samples)
    return families


def value(families, name: str, **labels) -> float:
    matches = [s.value for s in families.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, (name, labels, families.get(name))
    return matches[0]


def test_metrics(broker, client, topic):
    full = topic("adm-metrics")
    producer = client.create_producer(full, batching_enabled=False)
    consumer = client.subscribe(full, "metrics-sub", consumer_type=pulsar.ConsumerType.Shared)
    for i in range(7):
        producer.send(f"x-{i}".encode())
    for message in receive_n(consumer, 3):
        consumer.acknowledge(message)

    labels = {"cluster": "standalone", "namespace": "public/default", "topic": full}
    # The client sends acknowledgements in groups (every 100 ms): wait until the broker has them.
    deadline = time.monotonic() + 10
    while True:
        families = samples(broker)
        if value(families, "pulsar_msg_backlog", **labels) == 4 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert value(families, "pulsar_in_messages_total", **labels) == 7
    assert value(families, "pulsar_in_bytes_total", **labels) > 0
    assert value(families, "pulsar_storage_size", **labels) > 0
    assert value(families, "pulsar_producers_count", **labels) == 1
    assert value(families, "pulsar_consumers_count", **labels) == 1
    assert value(families, "pulsar_out_messages_total", **labels) >= 3
    assert value(families, "pulsar_msg_backlog", **labels) == 4
    assert value(families, "pulsar_subscription_back_log", subscription="metrics-sub", **labels) == 4
    assert value(families, "pulsar_topics_count", cluster="standalone", namespace="public/default") >= 1
    # Latency histograms: publish (SEND → durable), journal write and fdatasync per group commit.
    for histogram in ("pulsar_broker_publish_latency", "bookie_journal_write_latency", "bookie_journal_sync_latency"):
        counts = [s.value for s in families.get(histogram, []) if s.name == histogram + "_count"]
        assert counts and counts[0] >= 7, (histogram, families.get(histogram))

    # The series Pulsar's Grafana dashboards read (issue 16, item 8), with Pulsar's names and labels.
    for name in ("pulsar_rate_in", "pulsar_rate_out", "pulsar_throughput_in", "pulsar_throughput_out",
                 "pulsar_storage_size", "pulsar_storage_backlog_size", "pulsar_msg_backlog",
                 "pulsar_producers_count", "pulsar_consumers_count",
                 "pulsar_storage_write_latency_le_0_5", "pulsar_storage_write_latency_le_1000",
                 "pulsar_storage_write_latency_overflow", "pulsar_storage_write_latency_count",
                 "pulsar_storage_write_latency_sum", "pulsar_entry_size_le_128", "pulsar_entry_size_le_1_mb",
                 "pulsar_entry_size_count", "pulsar_entry_size_sum",
                 "pulsar_entry_size_le_overflow"):
        value(families, name, **labels)
    for name in ("pulsar_subscription_msg_rate_out", "pulsar_subscription_back_log"):
        value(families, name, subscription="metrics-sub", **labels)
    # The dashboard shipped in dashboards/ reads only series the broker serves.
    import json as _json
    import re as _re
    from pathlib import Path as _Path
    dashboard = (_Path(__file__).resolve().parent.parent / "dashboards" / "magnetar-topics.json").read_text()
    _json.loads(dashboard)
    for name in set(_re.findall(r"pulsar_[a-z0-9_]+", dashboard)):
        assert name in families, f"the dashboard reads {name}, which /metrics does not serve"
    # Every entry here is small: all in the first size bucket; every write in some latency bucket.
    assert value(families, "pulsar_entry_size_le_128", **labels) == 7
    latency_buckets = [n for n in families if n.startswith("pulsar_storage_write_latency_le_")] + ["pulsar_storage_write_latency_overflow"]
    assert sum(value(families, n, **labels) for n in latency_buckets) == 7
    assert value(families, "pulsar_storage_write_latency_count", **labels) == 7
    assert value(families, "pulsar_storage_write_latency_sum", **labels) > 0
    # Rates move under load: published since the previous scrape, per second.
    for i in range(20):
        producer.send(f"more-{i}".encode())
    time.sleep(0.5)
    assert value(samples(broker), "pulsar_rate_in", **labels) > 0

    # Deleted topics leave /metrics.
    consumer.close()
    producer.close()
    assert api(broker, "DELETE", "/admin/v2/persistent/public/default/" + full.rsplit("/", 1)[1]).status == 204
    families = samples(broker)
    assert not [s for s in families.get("pulsar_in_messages_total", []) if s.labels.get("topic") == full]
