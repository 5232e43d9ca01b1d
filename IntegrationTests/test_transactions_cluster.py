"""Issue 20 in a cluster (etcd + 3 storage nodes + 2 brokers with Kafka listeners and
`transactionCoordinatorEnabled=true`): the transaction coordinator runs on the broker that owns
`transaction_coordinator_assign-partition-0`; transactions end on the other broker's topics through
END_TXN_ON_PARTITION; when the coordinator's broker is killed (-9) mid-transaction the other one
takes the coordinator over, and consume-transform-produce still delivers each input exactly once.
"""

from __future__ import annotations

import time

import pulsar
import pytest

from admin_rest import call
from cluster import LocalCluster
from conftest import free_port
from test_kafka import unique
from test_transactions import consumer, read_all

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402


@pytest.fixture
def txn_cluster(tmp_path, monkeypatch):
    ports = [free_port(), free_port()]
    configs = []
    for i, port in enumerate(ports):
        path = tmp_path / f"broker-{i}.conf"
        path.write_text("\n".join([
            "messagingProtocols=kafka",
            f"kafkaListeners=PLAINTEXT://127.0.0.1:{port}",
            "groupInitialRebalanceDelayMs=0",
            "groupMinSessionTimeoutMs=1000",
            "transactionCoordinatorEnabled=true",
        ]) + "\n")
        configs.append(path)
    cluster = LocalCluster(tmp_path, broker_args_for=lambda i: ["--config", str(configs[i])])
    cluster.kafka_ports = ports
    cluster.start()
    import test_transactions
    servers = ",".join(f"127.0.0.1:{p}" for p in ports)
    monkeypatch.setattr(test_transactions, "bootstrap", lambda broker: servers)
    yield cluster
    cluster.close()


def coordinator_broker(cluster, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for broker in cluster.brokers:
            if broker.is_running():
                status, _ = call(broker, "GET", "/admin/v3/transactions/coordinatorStats")
                if status == 200:
                    return broker
        time.sleep(0.5)
    raise AssertionError("no broker runs the transaction coordinator")


def test_exactly_once_across_brokers_and_a_coordinator_failover(txn_cluster):
    servers = ",".join(f"127.0.0.1:{p}" for p in txn_cluster.kafka_ports)
    admin = AdminClient({"bootstrap.servers": servers})
    source, sink, group, transactional_id = unique("ctx-in"), unique("ctx-out"), unique("ctx-group"), unique("ctx-id")
    for topic in (source, sink):
        admin.create_topics([NewTopic(topic, num_partitions=8, replication_factor=1)])[topic].result(30)
    # Where the partitions' bundles land is the cluster's choice: on the broker without the
    # coordinator, their markers go there by END_TXN_ON_PARTITION (and the group's offsets are
    # recorded for the coordinator when the group's broker is the other one).
    leaders = {p.leader for p in admin.list_topics(sink, timeout=20).topics[sink].partitions.values()}
    assert leaders and -1 not in leaders
    inputs = [f"c-{i}" for i in range(80)]
    plain = Producer({"bootstrap.servers": servers, "acks": "all"})
    for i, value in enumerate(inputs):
        plain.produce(source, key=f"k{i}".encode(), value=value.encode())
    assert plain.flush(30) == 0
    victim = coordinator_broker(txn_cluster)

    def process(limit: int | None, kill_after_first: bool) -> int:
        c = consumer(None, group, **{"bootstrap.servers": servers})
        p = Producer({"bootstrap.servers": servers, "transactional.id": transactional_id,
                      "transaction.timeout.ms": 60_000})
        p.init_transactions(60)
        c.subscribe([source])
        done = 0
        deadline = time.monotonic() + 120
        try:
            while (limit is None or done < limit) and time.monotonic() < deadline:
                messages = [m for m in c.consume(num_messages=10, timeout=1.0) if not m.error()]
                if not messages:
                    if limit is None and done > 0 and committed_total() >= len(inputs):
                        break
                    continue
                p.begin_transaction()
                for m in messages:
                    p.produce(sink, key=m.key(), value=m.value().decode().upper().encode())
                if kill_after_first and done > 0:
                    # Mid-transaction: its results are sent, nothing is committed; the coordinator dies.
                    assert p.flush(30) == 0
                    victim.kill9()
                    return done
                p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 60)
                p.commit_transaction(60)
                done += len(messages)
        finally:
            c.close()
        return done

    def committed_total() -> int:
        c = consumer(None, group, **{"bootstrap.servers": servers})
        try:
            offsets = c.committed([TopicPartition(source, i) for i in range(8)], 10)
            return sum(max(tp.offset, 0) for tp in offsets)
        finally:
            c.close()

    first = process(limit=None, kill_after_first=True)
    assert first > 0
    # The survivor takes the coordinator over; a restarted application fences the old producer's
    # open transaction (aborted as a whole) and finishes the work.
    survivor = coordinator_broker(txn_cluster, timeout=60)
    assert survivor is not victim
    process(limit=None, kill_after_first=False)
    out = read_all(None, sink, "read_committed", expect=len(inputs), limit_s=60)
    assert sorted(out) == sorted(v.upper() for v in inputs)
    # A Pulsar consumer agrees (the cluster's service URL, partitioned sink).
    client = pulsar.Client(txn_cluster.service_url)
    try:
        reader_consumer = client.subscribe(f"persistent://public/default/{sink}", "check",
                                           initial_position=pulsar.InitialPosition.Earliest)
        seen = []
        while True:
            try:
                message = reader_consumer.receive(timeout_millis=3000)
            except pulsar.Timeout:
                break
            reader_consumer.acknowledge(message)
            seen.append(message.data().decode())
        assert sorted(seen) == sorted(out)
    finally:
        client.close()


def test_pulsar_transaction_through_the_swift_client_in_a_cluster(txn_cluster):
    from test_transactions import receive_all, send_inputs, transact
    coordinator_broker(txn_cluster)
    source = f"persistent://public/default/{unique('cptx-in')}"
    sink = f"persistent://public/default/{unique('cptx-out')}"
    client = pulsar.Client(txn_cluster.service_url)
    try:
        out = client.subscribe(sink, "out", initial_position=pulsar.InitialPosition.Earliest)
        client.subscribe(source, "in", consumer_type=pulsar.ConsumerType.Shared,
                         initial_position=pulsar.InitialPosition.Earliest).close()
        values = send_inputs(client, source, 5)

        class Cluster:
            url = txn_cluster.service_url
        lines = transact(Cluster, "--input", source, "-s", "in", "--output", sink, "-n", "5", "--end", "commit")
        assert lines[-1] == "committed"
        assert receive_all(out, 5) == [v.upper() for v in values]
        again = client.subscribe(source, "in", consumer_type=pulsar.ConsumerType.Shared)
        with pytest.raises(pulsar.Timeout):
            again.receive(timeout_millis=1500)
    finally:
        client.close()
