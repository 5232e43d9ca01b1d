"""Issue 17: Kafka consumer groups (FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
OffsetCommit, OffsetFetch, DescribeGroups, ListGroups, DeleteGroups) with unchanged
confluent-kafka and kafka-python consumers.

- A group of two splits the partitions; after their commits a third member resumes with nothing
  lost or repeated, also after a kill -9 of the broker (offsets are durable).
- A member that leaves hands its partitions to the one that stays (a new generation).
- The group's committed offsets are its Pulsar subscription's position: admin stats and
  `/metrics` show the group's backlog per partition.
- Admin clients list, describe and delete groups.
"""

from __future__ import annotations

import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from admin_rest import call
from conftest import free_port
from test_kafka import bootstrap, unique
from test_security import SecureBroker


@pytest.fixture(scope="module")
def kafka_broker(tmp_path_factory):
    kafka_port = free_port()
    broker = SecureBroker(tmp_path_factory.mktemp("kafka-groups"), "\n".join([
        "messagingProtocols=kafka",
        f"kafkaListeners=PLAINTEXT://127.0.0.1:{kafka_port}",
        "groupInitialRebalanceDelayMs=1500",
        "groupMinSessionTimeoutMs=1000",
    ]))
    broker.kafka_port = kafka_port
    broker.start()
    broker.auto_restart = True
    yield broker
    broker.close()


def partitioned(broker, partitions: int) -> str:
    name = unique("grp-topic")
    assert call(broker, "PUT", f"/admin/v2/persistent/public/default/{name}/partitions", partitions)[0] == 204
    return name


def produce(broker, topic: str, values: list[bytes], keyed: bool = True) -> None:
    from confluent_kafka import Producer
    producer = Producer({"bootstrap.servers": bootstrap(broker), "acks": "all", "linger.ms": 0})
    for i, value in enumerate(values):
        producer.produce(topic, key=f"k{i % 13}".encode() if keyed else None, value=value)
    assert producer.flush(30) == 0


class GroupMember(threading.Thread):
    """A confluent-kafka consumer in a poll loop: records what it is assigned and consumes, and
    commits each message synchronously (so a rebalance repeats nothing)."""

    def __init__(self, broker, topic: str, group: str):
        super().__init__(daemon=True)
        from confluent_kafka import Consumer
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap(broker), "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
        })
        self.assigned: set[int] = set()
        self.consumed: list[tuple[int, int, bytes]] = []
        self.errors: list = []
        self.commit_errors: list = []
        self.stop = threading.Event()
        self.lock = threading.Lock()

        def on_assign(consumer, partitions):
            with self.lock:
                self.assigned = {p.partition for p in partitions}

        def on_revoke(consumer, partitions):
            with self.lock:
                self.assigned = set()

        self.consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)

    def run(self):
        from confluent_kafka import KafkaException
        try:
            while not self.stop.is_set():
                message = self.consumer.poll(0.2)
                if message is None:
                    continue
                if message.error():
                    self.errors.append(message.error())
                    continue
                with self.lock:
                    self.consumed.append((message.partition(), message.offset(), message.value()))
                try:
                    self.consumer.commit(message=message, asynchronous=False)
                except KafkaException as error:
                    # A commit refused during a rebalance or a coordinator move: the member
                    # rejoins and the record may come again (at least once), as with Kafka.
                    self.commit_errors.append(error)
        finally:
            self.consumer.close()  # LeaveGroup

    def finish(self):
        self.stop.set()
        self.join(20)
        assert not self.is_alive()


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def consume_exactly(broker, topic: str, group: str, expected: int, idle_s: float = 3.0) -> list:
    """A kafka-python member of `group` reads until `idle_s` passes without a record."""
    from kafka import KafkaConsumer
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap(broker), group_id=group, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=int(idle_s * 1000), session_timeout_ms=6000,
                             heartbeat_interval_ms=500)
    records = []
    deadline = time.time() + 45
    try:
        while time.time() < deadline:
            batch = list(consumer)
            records.extend(batch)
            if len(records) >= expected and not batch:
                break
        consumer.commit()
    finally:
        consumer.close()
    return records


def test_two_members_split_partitions_and_a_third_resumes_after_their_commits(kafka_broker):
    topic = partitioned(kafka_broker, 4)
    group = unique("group")
    first, second = GroupMember(kafka_broker, topic, group), GroupMember(kafka_broker, topic, group)
    first.start()
    second.start()
    wait_until(lambda: len(first.assigned) == 2 and len(second.assigned) == 2, 40, "both members to hold two partitions")
    assert first.assigned.isdisjoint(second.assigned)
    assert first.assigned | second.assigned == {0, 1, 2, 3}

    values = [f"m-{i}".encode() for i in range(200)]
    produce(kafka_broker, topic, values)
    wait_until(lambda: len(first.consumed) + len(second.consumed) >= 200, 40, "the group to consume 200 records")
    for member in (first, second):
        assert {partition for partition, _, _ in member.consumed} <= member.assigned
    first.finish()
    second.finish()
    consumed = [value for member in (first, second) for _, _, value in member.consumed]
    assert sorted(consumed) == sorted(values)  # nothing lost, nothing twice
    assert not first.errors and not second.errors
    assert not first.commit_errors and not second.commit_errors

    # The commits are durable: after a kill -9, a third member resumes after them.
    kafka_broker.kill9()
    kafka_broker.restart()
    later = [f"later-{i}".encode() for i in range(30)]
    produce(kafka_broker, topic, later)
    resumed = consume_exactly(kafka_broker, topic, group, expected=30)
    assert sorted(record.value for record in resumed) == sorted(later)


def test_a_member_that_leaves_hands_its_partitions_over(kafka_broker):
    topic = partitioned(kafka_broker, 3)
    group = unique("group")
    stays, leaves = GroupMember(kafka_broker, topic, group), GroupMember(kafka_broker, topic, group)
    stays.start()
    leaves.start()
    wait_until(lambda: stays.assigned and leaves.assigned and len(stays.assigned | leaves.assigned) == 3, 40,
               "the partitions to be split")
    leaves.finish()  # LeaveGroup: the group rebalances without waiting for a session timeout
    wait_until(lambda: stays.assigned == {0, 1, 2}, 30, "the remaining member to hold every partition")
    values = [f"v-{i}".encode() for i in range(30)]
    produce(kafka_broker, topic, values)
    wait_until(lambda: len(stays.consumed) >= 30, 30, "the remaining member to consume")
    stays.finish()
    assert sorted(value for _, _, value in stays.consumed) == sorted(values)


def samples(broker) -> dict[str, list]:
    status, body = call(broker, "GET", "/metrics")
    assert status == 200
    families = {}
    for family in text_string_to_metric_families(body):
        families.setdefault(family.name, []).extend(family.samples)
    return families


def test_committed_offsets_show_as_the_groups_backlog(kafka_broker):
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata
    topic = partitioned(kafka_broker, 2)
    group = unique("group")
    produce(kafka_broker, topic, [f"a-{i}".encode() for i in range(20)])
    records = consume_exactly(kafka_broker, topic, group, expected=20)
    assert len(records) == 20

    def backlog(partition: int) -> int:
        status, stats = call(kafka_broker, "GET", f"/admin/v2/persistent/public/default/{topic}-partition-{partition}/stats")
        assert status == 200
        return stats["subscriptions"][group]["msgBacklog"]

    assert backlog(0) == 0 and backlog(1) == 0
    # Five more records, one batch each, on partition 0: the group's backlog there is five.
    from confluent_kafka import Producer
    producer = Producer({"bootstrap.servers": bootstrap(kafka_broker), "acks": "all", "linger.ms": 0})
    for i in range(5):
        producer.produce(topic, value=f"b-{i}".encode(), partition=0)
        producer.flush(10)
    assert backlog(0) == 5 and backlog(1) == 0
    labels = {"topic": f"persistent://public/default/{topic}-partition-0", "subscription": group}
    values = [s.value for s in samples(kafka_broker).get("pulsar_subscription_back_log", [])
              if all(s.labels.get(k) == v for k, v in labels.items())]
    assert values == [5]

    # OffsetFetch returns what was committed; a commit from outside the group (generation -1)
    # moves the backlog too.
    consumer = KafkaConsumer(bootstrap_servers=bootstrap(kafka_broker), group_id=group, enable_auto_commit=False)
    try:
        partition0 = TopicPartition(topic, 0)
        committed = consumer.committed(partition0)
        assert committed is not None and committed > 0
        consumer.assign([partition0])
        end = consumer.end_offsets([partition0])[partition0]
        consumer.commit({partition0: OffsetAndMetadata(end - 2, "two left", -1)})
        assert consumer.committed(partition0) == end - 2
        assert backlog(0) == 2
    finally:
        consumer.close()


def test_admin_lists_describes_and_deletes_groups(kafka_broker):
    from confluent_kafka.admin import AdminClient
    topic = partitioned(kafka_broker, 2)
    group = unique("group")
    member = GroupMember(kafka_broker, topic, group)
    member.start()
    wait_until(lambda: member.assigned == {0, 1}, 40, "the member to be assigned")
    admin = AdminClient({"bootstrap.servers": bootstrap(kafka_broker)})

    listed = admin.list_consumer_groups().result(20)
    assert group in {g.group_id for g in listed.valid}
    described = admin.describe_consumer_groups([group])[group].result(20)
    assert described.group_id == group
    assert str(described.state).endswith("STABLE")
    assert len(described.members) == 1
    assert {tp.partition for tp in described.members[0].assignment.topic_partitions} == {0, 1}

    # A group with members cannot be deleted; once its member has left it can.
    from confluent_kafka.error import KafkaException
    with pytest.raises(KafkaException):
        admin.delete_consumer_groups([group])[group].result(20)
    produce(kafka_broker, topic, [f"d-{i}".encode() for i in range(6)])

    def subscriptions(partition: int) -> set:
        status, stats = call(kafka_broker, "GET", f"/admin/v2/persistent/public/default/{topic}-partition-{partition}/stats")
        assert status == 200
        return set(stats["subscriptions"])

    # The member's commits made the group's subscription on its partitions; deleting the group
    # deletes them with its offsets.
    wait_until(lambda: len(member.consumed) >= 6, 30, "the member to consume and commit")
    committed = {p for p, _, _ in member.consumed}
    assert committed and all(group in subscriptions(p) for p in committed)
    member.finish()
    admin.delete_consumer_groups([group])[group].result(20)
    assert group not in {g.group_id for g in admin.list_consumer_groups().result(20).valid}
    assert all(group not in subscriptions(p) for p in (0, 1))
