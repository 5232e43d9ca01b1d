"""Issue 4, partitioned topics: created and grown through the admin REST API (Pulsar's
`/admin/v2/persistent/{tenant}/{ns}/{topic}/partitions`), routed by the client (custom router,
round robin, keyed, single partition), consumed through one subscription per partition.

Each partition `T-partition-i` is an ordinary topic; message ids carry the partition index.
"""

from __future__ import annotations

import time
from collections import defaultdict

import pulsar
import pytest

from admin_rest import (
    admin, create_namespace, create_partitioned_topic, eventually, get_partitioned_metadata, set_namespace_policy,
    unique_topic_in, update_partitioned_topic,
)
from helpers import RECEIVE_TIMEOUT_MS, assert_no_more, drain_consumer, receive_n

# pulsar-client 3.13.0 (C++ 4.2.0) re-reads partition metadata every 60 s (partitionsUpdateInterval);
# Python has no setting for it.
PARTITIONS_UPDATE_INTERVAL_S = 60


def partitioned(broker, topic, n: int) -> str:
    t = topic()
    create_partitioned_topic(broker, t, n)
    return t


def partition_of_topic_name(base: str, name: str) -> int:
    prefix = base + "-partition-"
    assert name.startswith(prefix), f"{name!r} is not a partition of {base!r}"
    return int(name[len(prefix):])


def check_partition_fields(base: str, msg) -> int:
    """The partition a received message came from; its topic name and message id must agree."""
    index = partition_of_topic_name(base, msg.topic_name())
    assert msg.message_id().partition() == index, \
        f"message id partition {msg.message_id().partition()} but topic {msg.topic_name()}"
    return index


def test_create_partitioned_topic_and_list_partitions(broker, client, topic):
    t = partitioned(broker, topic, 3)
    assert client.get_topic_partitions(t) == [f"{t}-partition-{i}" for i in range(3)]
    meta = get_partitioned_metadata(broker, t)
    assert isinstance(meta, dict) and meta.get("partitions") == 3, meta
    # a non-partitioned topic lists itself
    plain = topic("plain")
    assert client.get_topic_partitions(plain) == [plain]


def test_custom_router_decides_the_partition(broker, client, topic):
    t = partitioned(broker, topic, 3)
    consumer = client.subscribe(t, "sub", initial_position=pulsar.InitialPosition.Earliest)
    # route by the number in the key: "7" -> 7 % 3
    producer = client.create_producer(
        t, batching_enabled=False,
        message_router=lambda msg, num_partitions: int(msg.partition_key()) % num_partitions)
    n = 30
    sent = {}
    for i in range(n):
        msg_id = producer.send(b"m-%d" % i, partition_key=str(i))
        assert msg_id.partition() == i % 3, f"message {i}: receipt says partition {msg_id.partition()}"
        sent[i] = msg_id

    got = receive_n(consumer, n, ack=True)
    per_partition = defaultdict(list)
    for msg in got:
        i = int(msg.data().split(b"-")[1])
        index = check_partition_fields(t, msg)
        assert index == i % 3, f"message {i} arrived from partition {index}, the router said {i % 3}"
        assert msg.partition_key() == str(i)
        assert (msg.message_id().ledger_id(), msg.message_id().entry_id()) == \
            (sent[i].ledger_id(), sent[i].entry_id())
        per_partition[index].append(i)
    assert sorted(i for ids in per_partition.values() for i in ids) == list(range(n)), "every message once"
    for index, ids in per_partition.items():
        assert ids == sorted(ids), f"partition {index} out of order: {ids}"
    assert_no_more(consumer)

    # partitioned-stats: the sum over the partitions and each partition's own counters.
    path = "/admin/v2/persistent/" + t.split("://", 1)[1] + "/partitioned-stats"
    stats = eventually(lambda: (s := admin(broker, "GET", path)) and s["msgInCounter"] == n and s,
                       timeout_s=10, what="partitioned stats count every message")
    assert stats["metadata"]["partitions"] == 3
    assert sorted(stats["partitions"]) == [f"{t}-partition-{i}" for i in range(3)]
    assert [stats["partitions"][f"{t}-partition-{i}"]["msgInCounter"] for i in range(3)] == [10, 10, 10]
    assert stats["subscriptions"]["sub"]["msgBacklog"] == 0


def test_round_robin_spreads_over_all_partitions(broker, client, topic):
    t = partitioned(broker, topic, 3)
    consumer = client.subscribe(t, "sub", initial_position=pulsar.InitialPosition.Earliest)
    producer = client.create_producer(
        t, batching_enabled=False, message_routing_mode=pulsar.PartitionsRoutingMode.RoundRobinDistribution)
    n = 30
    parts = [producer.send(b"rr-%d" % i).partition() for i in range(n)]
    # without batching the client moves to the next partition for every message
    assert all((b - a) % 3 == 1 for a, b in zip(parts, parts[1:])), parts
    counts = {p: parts.count(p) for p in set(parts)}
    assert counts == {0: 10, 1: 10, 2: 10}, counts

    got = receive_n(consumer, n, ack=True)
    assert sorted(m.data() for m in got) == sorted(b"rr-%d" % i for i in range(n))
    assert {check_partition_fields(t, m) for m in got} == {0, 1, 2}
    assert_no_more(consumer)


def test_keyed_messages_stick_to_one_partition(broker, client, topic):
    t = partitioned(broker, topic, 3)
    consumer = client.subscribe(t, "sub", initial_position=pulsar.InitialPosition.Earliest)
    producer = client.create_producer(t, batching_enabled=False)  # default mode: keys are hashed
    keys = [f"key-{k}" for k in range(12)]
    partition_of_key = defaultdict(set)
    for round_ in range(5):
        for key in keys:
            partition_of_key[key].add(producer.send(f"{key}:{round_}".encode(), partition_key=key).partition())
    assert all(len(p) == 1 for p in partition_of_key.values()), dict(partition_of_key)

    got = receive_n(consumer, len(keys) * 5, ack=True)
    seen = defaultdict(list)
    for msg in got:
        key, round_ = msg.data().decode().split(":")
        assert msg.partition_key() == key
        assert check_partition_fields(t, msg) in partition_of_key[key]
        seen[key].append(int(round_))
    assert all(seen[key] == list(range(5)) for key in keys), "per-key order kept"
    assert_no_more(consumer)


def test_use_single_partition(broker, client, topic):
    t = partitioned(broker, topic, 3)
    consumer = client.subscribe(t, "sub", initial_position=pulsar.InitialPosition.Earliest)
    producer = client.create_producer(
        t, batching_enabled=False, message_routing_mode=pulsar.PartitionsRoutingMode.UseSinglePartition)
    parts = {producer.send(b"single-%d" % i).partition() for i in range(20)}
    assert len(parts) == 1 and parts <= {0, 1, 2}, parts
    got = receive_n(consumer, 20, ack=True)
    assert [m.data() for m in got] == [b"single-%d" % i for i in range(20)], "one partition: total order"
    assert {check_partition_fields(t, m) for m in got} == parts
    assert_no_more(consumer)


def test_shared_subscription_on_partitioned_topic_gets_everything(broker, client, topic):
    t = partitioned(broker, topic, 3)
    c1 = client.subscribe(t, "shared", consumer_type=pulsar.ConsumerType.Shared, consumer_name="c1")
    c2 = client.subscribe(t, "shared", consumer_type=pulsar.ConsumerType.Shared, consumer_name="c2")
    producer = client.create_producer(t, batching_enabled=False)
    n = 90
    for i in range(n):
        producer.send(b"sh-%d" % i)
    got1 = drain_consumer(c1, limit=n, ack=True)
    got2 = drain_consumer(c2, limit=n, ack=True)
    payloads = sorted(m.data() for m in got1 + got2)
    assert payloads == sorted(b"sh-%d" % i for i in range(n)), "each message exactly once across the two"
    assert got1 and got2, "both Shared consumers get messages"
    assert {check_partition_fields(t, m) for m in got1 + got2} == {0, 1, 2}


def test_subscriptions_are_per_partition_and_durable(broker, client, topic):
    """A partitioned subscription is one subscription per partition: acks stick per partition."""
    t = partitioned(broker, topic, 3)
    consumer = client.subscribe(t, "durable", initial_position=pulsar.InitialPosition.Earliest)
    producer = client.create_producer(t, batching_enabled=False)
    for i in range(12):
        producer.send(b"d-%d" % i)
    got = receive_n(consumer, 12)
    acked = [m for m in got if check_partition_fields(t, m) != 1]
    for m in acked:
        consumer.acknowledge(m)
    consumer.close()
    consumer = client.subscribe(t, "durable", initial_position=pulsar.InitialPosition.Earliest)
    again = receive_n(consumer, 12 - len(acked), ack=True)
    assert {check_partition_fields(t, m) for m in again} == {1}, "only partition 1's unacked messages come back"
    assert_no_more(consumer)


def test_raise_partitions_then_new_producer_and_consumer_use_them(broker, client, topic):
    t = partitioned(broker, topic, 3)
    consumer = client.subscribe(t, "sub", initial_position=pulsar.InitialPosition.Earliest)
    producer = client.create_producer(t, batching_enabled=False)
    for i in range(6):
        producer.send(b"before-%d" % i)
    assert len(receive_n(consumer, 6, ack=True)) == 6
    consumer.close()
    producer.close()

    update_partitioned_topic(broker, t, 5)
    assert get_partitioned_metadata(broker, t).get("partitions") == 5
    assert client.get_topic_partitions(t) == [f"{t}-partition-{i}" for i in range(5)]

    consumer = client.subscribe(t, "sub", initial_position=pulsar.InitialPosition.Earliest)
    producer = client.create_producer(
        t, batching_enabled=False, message_routing_mode=pulsar.PartitionsRoutingMode.RoundRobinDistribution)
    parts = [producer.send(b"after-%d" % i).partition() for i in range(10)]
    assert sorted(parts) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4], parts
    got = receive_n(consumer, 10, ack=True)
    assert sorted(m.data() for m in got) == sorted(b"after-%d" % i for i in range(10)), \
        "old partitions' consumed messages must not come back; new ones must all arrive"
    assert {check_partition_fields(t, m) for m in got} == {0, 1, 2, 3, 4}
    assert_no_more(consumer)


def test_running_producer_and_consumer_pick_up_new_partitions(broker, client, topic):
    """The client re-reads partition metadata every 60 s: a producer and a consumer that stay open
    across `update-partitioned-topic` start using the new partitions (this test takes ~60 s)."""
    t = partitioned(broker, topic, 3)
    consumer = client.subscribe(t, "live", initial_position=pulsar.InitialPosition.Earliest)
    producer = client.create_producer(
        t, batching_enabled=False, message_routing_mode=pulsar.PartitionsRoutingMode.RoundRobinDistribution)
    sent: dict[bytes, int] = {}
    for i in range(6):
        payload = b"live-%d" % i
        sent[payload] = producer.send(payload).partition()
    assert set(sent.values()) == {0, 1, 2}

    update_partitioned_topic(broker, t, 5)
    deadline = time.monotonic() + PARTITIONS_UPDATE_INTERVAL_S + 30
    i = len(sent)
    while not {3, 4} <= set(sent.values()):
        assert time.monotonic() < deadline, \
            f"the running producer never used partitions 3 and 4: {sorted(set(sent.values()))}"
        payload = b"live-%d" % i
        sent[payload] = producer.send(payload).partition()
        i += 1
        time.sleep(0.5)
    # a few more, so the last messages go to all five partitions
    for _ in range(5):
        payload = b"live-%d" % i
        sent[payload] = producer.send(payload).partition()
        i += 1

    # The running consumer subscribes to the new partitions on its own metadata refresh.
    received: dict[bytes, int] = {}
    while len(received) < len(sent):
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        assert remaining_ms > 0, \
            f"the running consumer got {len(received)} of {len(sent)}; missing partitions " \
            f"{sorted({p for m, p in sent.items() if m not in received})}"
        try:
            msg = consumer.receive(timeout_millis=min(remaining_ms, RECEIVE_TIMEOUT_MS))
        except pulsar.Timeout:
            continue
        consumer.acknowledge(msg)
        assert msg.data() not in received, f"duplicate {msg.data()!r}"
        received[msg.data()] = check_partition_fields(t, msg)
    assert received == sent, "each message arrives from the partition its receipt named"
    assert set(received.values()) == {0, 1, 2, 3, 4}
    assert_no_more(consumer)


def test_namespace_auto_creates_partitioned_topics(broker, client):
    namespace = create_namespace(broker, "public", "autopart")
    set_namespace_policy(broker, namespace, "autoTopicCreation",
                         {"allowAutoTopicCreation": True, "topicType": "partitioned", "defaultNumPartitions": 3})

    # The policy reaches the broker within about a second; each probe uses a new topic name.
    def new_topic_is_partitioned():
        candidate = unique_topic_in(namespace, "auto")
        return candidate if len(client.get_topic_partitions(candidate)) == 3 else None

    t = eventually(new_topic_is_partitioned, what="auto-created topics get 3 partitions")
    assert client.get_topic_partitions(t) == [f"{t}-partition-{i}" for i in range(3)]

    # A topic first used by a producer is created partitioned too, and works end to end.
    t2 = unique_topic_in(namespace, "auto-produce")
    producer = client.create_producer(
        t2, batching_enabled=False, message_routing_mode=pulsar.PartitionsRoutingMode.RoundRobinDistribution)
    consumer = client.subscribe(t2, "sub", initial_position=pulsar.InitialPosition.Earliest)
    parts = [producer.send(b"a-%d" % i).partition() for i in range(9)]
    assert sorted(parts) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    got = receive_n(consumer, 9, ack=True)
    assert {check_partition_fields(t2, m) for m in got} == {0, 1, 2}
    assert get_partitioned_metadata(broker, t2).get("partitions") == 3
    assert_no_more(consumer)


@pytest.mark.parametrize("n", [1, 16])
def test_partition_counts(broker, client, topic, n):
    t = partitioned(broker, topic, n)
    assert len(client.get_topic_partitions(t)) == n
    consumer = client.subscribe(t, "sub", initial_position=pulsar.InitialPosition.Earliest)
    producer = client.create_producer(
        t, batching_enabled=False, message_routing_mode=pulsar.PartitionsRoutingMode.RoundRobinDistribution)
    for i in range(2 * n):
        producer.send(b"c-%d" % i)
    got = receive_n(consumer, 2 * n, ack=True)
    assert {check_partition_fields(t, m) for m in got} == set(range(n))
    assert_no_more(consumer)
