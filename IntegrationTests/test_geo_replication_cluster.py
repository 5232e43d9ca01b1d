"""Issue 19: geo-replication between two clusters of brokers and storage nodes (each its own etcd,
as `scripts/local-cluster` starts them with CLUSTER_NAME and other ports), the source cluster's
topic owner killed with SIGKILL while producing: the other broker takes the topic over, its
replicator carries on from the replicator cursor, and every message reaches the remote cluster
once, in order (deduplication on, as Pulsar advises for geo-replication).
"""

from __future__ import annotations

import time
import uuid

import pulsar
import pytest

from admin_rest import call
from cluster import LocalCluster
from conftest import close_quietly, new_client
from test_geo_replication import drain, per_origin, assert_quiet


def ok(broker, method, path, body=None):
    status, answer = call(broker, method, path, body)
    assert 200 <= status < 300, f"{method} {path} -> {status} {answer}"
    return answer


def test_replication_survives_the_source_owner_killed_mid_stream(tmp_path):
    east = LocalCluster(tmp_path / "east", broker_args=["--cluster-name", "us-east"]).start()
    try:
        west = LocalCluster(tmp_path / "west", brokers=1, broker_args=["--cluster-name", "us-west"]).start()
    except BaseException:
        east.close()
        raise
    east_client = west_client = None
    try:
        ok(east.brokers[0], "PUT", "/admin/v2/clusters/us-west",
           {"serviceUrl": west.brokers[0].http_url, "brokerServiceUrl": west.service_url})
        ok(west.brokers[0], "PUT", "/admin/v2/clusters/us-east",
           {"serviceUrl": east.brokers[0].http_url, "brokerServiceUrl": east.service_url})
        namespace = f"public/geo-{uuid.uuid4().hex[:8]}"
        for broker in (east.brokers[0], west.brokers[0]):
            ok(broker, "POST", "/admin/v2/tenants/public", {"adminRoles": [], "allowedClusters": ["us-east", "us-west"]})
            ok(broker, "PUT", f"/admin/v2/namespaces/{namespace}")
            ok(broker, "POST", f"/admin/v2/namespaces/{namespace}/replication", ["us-east", "us-west"])
            ok(broker, "POST", f"/admin/v2/namespaces/{namespace}/deduplication", True)
        topic = f"persistent://{namespace}/orders"
        west_client = new_client(west.service_url)
        consumer = west_client.subscribe(topic, "s", initial_position=pulsar.InitialPosition.Earliest)
        east_client = pulsar.Client(east.service_url, operation_timeout_seconds=30, connection_timeout_ms=5000)
        producer = east_client.create_producer(topic, send_timeout_millis=60_000)
        for i in range(150):
            producer.send(f"east:{i}".encode())
        owner = east.owner(topic)
        owner.kill9()
        for i in range(150, 300):
            producer.send(f"east:{i}".encode())
        indexes = per_origin(drain(consumer, 300, timeout_ms=90_000))["east"]
        assert indexes == list(range(300))
        assert_quiet(consumer, "us-west")
    finally:
        for c in (east_client, west_client):
            if c is not None:
                close_quietly(c)
        west.close()
        east.close()
