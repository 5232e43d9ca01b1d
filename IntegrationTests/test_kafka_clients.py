"""Issue 17: topic administration over Kafka's protocol (CreateTopics, CreatePartitions,
DeleteTopics, DescribeConfigs) with kafka-python's and confluent-kafka's admin clients, aiokafka
producing and consuming in a group, and a Faust worker whose agent consumes a topic into a
table (Faust creates its own topics and joins a group).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pulsar
import pytest

from admin_rest import call
from conftest import free_port
from test_kafka import bootstrap, unique
from test_security import SecureBroker

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def kafka_broker(tmp_path_factory):
    kafka_port = free_port()
    broker = SecureBroker(tmp_path_factory.mktemp("kafka-clients"), "\n".join([
        "messagingProtocols=kafka",
        f"kafkaListeners=PLAINTEXT://127.0.0.1:{kafka_port}",
        "groupInitialRebalanceDelayMs=500",
    ]))
    broker.kafka_port = kafka_port
    broker.start()
    broker.auto_restart = True
    yield broker
    broker.close()


def partitions_of(broker, topic: str):
    status, body = call(broker, "GET", f"/admin/v2/persistent/public/default/{topic}/partitions")
    return status, body


def test_kafka_python_admin_creates_grows_describes_and_deletes_topics(kafka_broker):
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewPartitions, NewTopic
    from kafka.errors import InvalidPartitionsError, TopicAlreadyExistsError
    admin = KafkaAdminClient(bootstrap_servers=bootstrap(kafka_broker))
    topic = unique("admin-topic")
    try:
        admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        assert partitions_of(kafka_broker, topic) == (200, {"partitions": 3})
        assert topic in admin.list_topics()
        with pytest.raises(TopicAlreadyExistsError):
            admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])

        admin.create_partitions({topic: NewPartitions(total_count=5)})
        assert partitions_of(kafka_broker, topic) == (200, {"partitions": 5})
        with pytest.raises(InvalidPartitionsError):
            admin.create_partitions({topic: NewPartitions(total_count=2)})

        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")
        configs = described["topic"][topic]
        assert configs["cleanup.policy"]["value"] == "delete"
        assert int(configs["max.message.bytes"]["value"]) > 0

        admin.delete_topics([topic])
        assert partitions_of(kafka_broker, topic)[0] == 404
    finally:
        admin.close()


def test_confluent_admin_creates_a_topic_a_pulsar_consumer_reads(kafka_broker):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap(kafka_broker)})
    topic = unique("confluent-topic")
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(20)
    # One partition: a one-partition partitioned topic, as KoP creates it.
    assert partitions_of(kafka_broker, topic) == (200, {"partitions": 1})
    client = pulsar.Client(kafka_broker.url)
    try:
        consumer = client.subscribe(f"persistent://public/default/{topic}", "reader",
                                    initial_position=pulsar.InitialPosition.Earliest)
        producer = Producer({"bootstrap.servers": bootstrap(kafka_broker), "acks": "all"})
        producer.produce(topic, key=b"k", value=b"from confluent")
        assert producer.flush(20) == 0
        message = consumer.receive(10_000)
        assert message.data() == b"from confluent" and message.partition_key() == "k"
    finally:
        client.close()
    futures = admin.delete_topics([topic])
    futures[topic].result(20)


def test_aiokafka_produces_and_a_group_consumes_and_commits(kafka_broker):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    topic = unique("aio-topic")
    assert call(kafka_broker, "PUT", f"/admin/v2/persistent/public/default/{topic}/partitions", 2)[0] == 204
    group = unique("aio-group")

    async def scenario():
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap(kafka_broker), acks="all", enable_idempotence=True)
        await producer.start()
        try:
            sent = []
            for i in range(40):
                meta = await producer.send_and_wait(topic, key=f"key-{i % 4}".encode(), value=f"v-{i}".encode())
                sent.append((meta.partition, meta.offset))
        finally:
            await producer.stop()
        # Per key one partition; offsets per partition contiguous from 0.
        for partition in (0, 1):
            offsets = sorted(offset for p, offset in sent if p == partition)
            assert offsets == list(range(len(offsets)))

        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap(kafka_broker), group_id=group,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            received = []
            deadline = time.monotonic() + 30
            while len(received) < 40 and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    received.extend(records)
            await consumer.commit()
            committed = {p: await consumer.committed(TopicPartition(topic, p)) for p in (0, 1)}
        finally:
            await consumer.stop()
        assert sorted(r.value for r in received) == sorted(f"v-{i}".encode() for i in range(40))
        assert sum(committed.values()) == 40
        # Per key, the order sent.
        by_key = {}
        for record in received:
            by_key.setdefault(record.key, []).append(int(record.value.decode().split("-")[1]))
        assert all(values == sorted(values) for values in by_key.values())

    asyncio.run(asyncio.wait_for(scenario(), 90))


def test_faust_worker_consumes_a_topic_into_a_table(kafka_broker, tmp_path):
    from kafka import KafkaProducer
    topic = unique("faust-source")
    app_id = unique("faust-app")
    assert call(kafka_broker, "PUT", f"/admin/v2/persistent/public/default/{topic}/partitions", 2)[0] == 204
    producer = KafkaProducer(bootstrap_servers=bootstrap(kafka_broker), acks="all")
    for i in range(20):
        producer.send(topic, key=f"user-{i % 3}".encode(), value=f"event-{i}".encode())
    producer.flush(20)
    producer.close()

    out = tmp_path / "faust.out"
    env = dict(os.environ, FAUST_APP_ID=app_id, KAFKA_BOOTSTRAP=bootstrap(kafka_broker), FAUST_TOPIC=topic,
               FAUST_OUT=str(out))
    log = open(tmp_path / "faust.log", "w")
    worker = subprocess.Popen([sys.executable, str(HERE / "faust_app.py"), "worker", "-l", "info", "--without-web"],
                              cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        lines = []
        while time.monotonic() < deadline and len(lines) < 20:
            assert worker.poll() is None, (tmp_path / "faust.log").read_text()[-3000:]
            lines = out.read_text().splitlines() if out.exists() else []
            time.sleep(0.5)
        assert len(lines) == 20, (tmp_path / "faust.log").read_text()[-3000:]
        # Every event once; the table counted per key.
        assert sorted(line.split()[1] for line in lines) == sorted(f"event-{i}" for i in range(20))
        final = {}
        for line in lines:
            key, _, count = line.split()
            final[key] = max(final.get(key, 0), int(count))
        assert final == {"user-0": 7, "user-1": 7, "user-2": 6}
        # Faust created its table's changelog topic and joined a group named after the app.
        status, topics = call(kafka_broker, "GET", "/admin/v2/persistent/public/default/partitioned")
        assert status == 200
        assert any(f"{app_id}-counts-changelog" in name for name in topics), topics
        from confluent_kafka.admin import AdminClient
        admin = AdminClient({"bootstrap.servers": bootstrap(kafka_broker)})
        groups = admin.list_consumer_groups().result(20)
        assert app_id in {g.group_id for g in groups.valid}, (groups.valid, groups.errors)
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)
        log.close()
