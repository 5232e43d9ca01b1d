"""Issue 17 in a cluster (etcd + 3 storage nodes + 2 brokers, each with a Kafka listener):
Metadata lists both brokers and each partition's leader is the owner of its bundle;
FindCoordinator names the broker owning the group's bundle; when a broker is killed (-9), its
partitions and groups move to the survivor and a consumer group carries on: every record a
producer got acks=all for is consumed.
"""

from __future__ import annotations

import time

import pytest

from admin_rest import call
from cluster import LocalCluster
from conftest import free_port
from test_kafka import unique
from test_kafka_groups import GroupMember, wait_until


@pytest.fixture
def kafka_cluster(tmp_path):
    ports = [free_port(), free_port()]
    configs = []
    for i, port in enumerate(ports):
        path = tmp_path / f"broker-{i}.conf"
        path.write_text("\n".join([
            "messagingProtocols=kafka",
            f"kafkaListeners=PLAINTEXT://127.0.0.1:{port}",
            "groupInitialRebalanceDelayMs=500",
            "groupMinSessionTimeoutMs=1000",
        ]) + "\n")
        configs.append(path)
    cluster = LocalCluster(tmp_path, broker_args_for=lambda i: ["--config", str(configs[i])])
    cluster.kafka_ports = ports
    cluster.start()
    yield cluster
    cluster.close()


def test_consumer_group_carries_on_through_a_broker_failover(kafka_cluster, monkeypatch):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    import test_kafka_groups
    servers = ",".join(f"127.0.0.1:{port}" for port in kafka_cluster.kafka_ports)
    monkeypatch.setattr(test_kafka_groups, "bootstrap", lambda broker: servers)

    admin = AdminClient({"bootstrap.servers": servers})
    topic = unique("cluster-topic")
    admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])[topic].result(30)
    metadata = admin.list_topics(topic, timeout=20)
    assert len(metadata.brokers) == 2
    node_ids = set(metadata.brokers)
    leaders = {p.leader for p in metadata.topics[topic].partitions.values()}
    assert leaders <= node_ids and -1 not in leaders

    group = unique("cluster-group")
    member = GroupMember(None, topic, group)
    member.start()
    wait_until(lambda: member.assigned == {0, 1, 2, 3}, 60, "the member to be assigned every partition")

    # The member's commits show as the group's subscription on every partition it consumed, on
    # whichever broker serves it (the coordinator moves it on its own partitions, each other broker
    # on its own from the stored offsets).
    warm = Producer({"bootstrap.servers": servers, "acks": "all", "linger.ms": 0})
    for i in range(16):
        warm.produce(topic, key=f"w{i}".encode(), value=f"w-{i}".encode())
    assert warm.flush(30) == 0
    wait_until(lambda: len(member.consumed) >= 16, 60, "the member to consume and commit the first records")
    consumed_partitions = {p for p, _, _ in list(member.consumed)}

    def group_backlog(partition: int):
        for broker in kafka_cluster.brokers:
            status, stats = call(broker, "GET", f"/admin/v2/persistent/public/default/{topic}-partition-{partition}/stats")
            if status == 200 and group in stats.get("subscriptions", {}):
                return stats["subscriptions"][group]["msgBacklog"]
        return None

    wait_until(lambda: all(group_backlog(p) == 0 for p in consumed_partitions), 60,
               "the group's subscription on every partition it consumed")

    delivered = []
    failed = []

    def on_delivery(error, message):
        (failed if error else delivered).append(None if error else message.value())

    producer = Producer({"bootstrap.servers": servers, "acks": "all", "linger.ms": 5, "message.timeout.ms": 90_000,
                         "enable.idempotence": True})
    total = 400
    # The group's coordinator is the broker to kill: the group and its partitions move together.
    coordinator = admin.describe_consumer_groups([group])[group].result(20).coordinator
    victim = next(b for b, port in zip(kafka_cluster.brokers, kafka_cluster.kafka_ports) if port == coordinator.port)
    for i in range(total):
        producer.produce(topic, key=f"k{i % 17}".encode(), value=f"r-{i}".encode(), on_delivery=on_delivery)
        producer.poll(0)
        if i == total // 4:
            assert producer.flush(30) == 0
            victim.kill9()
        time.sleep(0.005)
    assert producer.flush(120) == 0
    assert not failed, f"{len(failed)} records failed"
    assert len(delivered) == total

    wanted = set(delivered)
    wait_until(lambda: wanted <= {value for _, _, value in list(member.consumed)}, 120,
               "the group to consume every acknowledged record")
    member.finish()
    # The survivor now leads every partition.
    metadata = admin.list_topics(topic, timeout=20)
    assert len(metadata.brokers) == 1
    (survivor,) = metadata.brokers
    assert {p.leader for p in metadata.topics[topic].partitions.values()} == {survivor}
