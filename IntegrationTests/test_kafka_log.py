"""Issue 17: Kafka's Produce, Fetch, ListOffsets and InitProducerId on Pulsar's topics, with
unchanged kafka-python and confluent-kafka clients, and the Pulsar client on the same topics.

- Keyed sends land per key in one partition, with contiguous offsets from 0; per-key order holds.
- One log for both protocols: a Kafka record reads in Pulsar as a message (key → partition key,
  headers → properties, timestamp → event time) and the other way round, on one topic.
- gzip, snappy, lz4 and zstd batches are stored and read back by both protocols.
- The idempotent producer: retries are answered with the original offset, gaps and old epochs
  are refused with Kafka's error codes.
- ListOffsets: earliest, latest and by time.
- A Fetch waits (long polling) and answers when a record arrives.
- Bad records (CRC, oversized) get Kafka's error codes and leave the connection usable.
- kill -9 after acks=all loses nothing.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
import uuid

import pulsar
import pytest

from admin_rest import call
from conftest import free_port
from test_kafka import bootstrap, raw_request, request, unique
from test_security import SecureBroker


@pytest.fixture(scope="module")
def kafka_broker(tmp_path_factory):
    kafka_port = free_port()
    broker = SecureBroker(tmp_path_factory.mktemp("kafka-log"), "\n".join([
        "messagingProtocols=kafka",
        f"kafkaListeners=PLAINTEXT://127.0.0.1:{kafka_port}",
    ]))
    broker.kafka_port = kafka_port
    broker.start()
    broker.auto_restart = True
    yield broker
    broker.close()


def partitioned(broker, partitions: int) -> str:
    name = unique("topic")
    assert call(broker, "PUT", f"/admin/v2/persistent/public/default/{name}/partitions", partitions)[0] == 204
    return name


def consume_all(broker, topic: str, expected: int, **config) -> list:
    from kafka import KafkaConsumer
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap(broker), auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=3000, **config)
    records = []
    deadline = time.time() + 30
    try:
        while len(records) < expected and time.time() < deadline:
            records.extend(consumer)
    finally:
        consumer.close()
    return records


def test_keyed_sends_land_per_key_with_contiguous_offsets(kafka_broker):
    from kafka import KafkaProducer
    topic = partitioned(kafka_broker, 3)
    producer = KafkaProducer(bootstrap_servers=bootstrap(kafka_broker), acks="all", linger_ms=5)
    keys = [f"user-{i}".encode() for i in range(8)]
    futures = [(key, n, producer.send(topic, key=key, value=f"{key.decode()}:{n}".encode()))
               for n in range(25) for key in keys]
    producer.flush(30)
    placed = [(key, n, future.get(10)) for key, n, future in futures]
    producer.close()
    by_key = {}
    by_partition = {}
    for key, n, meta in placed:
        by_key.setdefault(key, set()).add(meta.partition)
        by_partition.setdefault(meta.partition, []).append(meta.offset)
    assert all(len(partitions) == 1 for partitions in by_key.values()), by_key
    for offsets in by_partition.values():
        assert sorted(offsets) == list(range(len(offsets)))
    records = consume_all(kafka_broker, topic, len(placed))
    assert len(records) == len(placed)
    assert len({(r.partition, r.offset) for r in records}) == len(placed)  # nothing twice
    for key in keys:
        values = [r.value.decode() for r in records if r.key == key]
        assert values == [f"{key.decode()}:{n}" for n in range(25)]  # per-key order


def test_kafka_and_pulsar_share_one_log(kafka_broker):
    from confluent_kafka import Producer
    topic = unique("shared")
    producer = Producer({"bootstrap.servers": bootstrap(kafka_broker), "acks": "all"})
    delivered = []
    producer.produce(topic, key=b"order-1", value=b"from kafka", headers=[("source", b"kafka")],
                     timestamp=1_700_000_000_123, on_delivery=lambda err, msg: delivered.append((err, msg.offset())))
    producer.produce(topic, key=None, value=b"no key", on_delivery=lambda err, msg: delivered.append((err, msg.offset())))
    assert producer.flush(30) == 0
    assert delivered == [(None, 0), (None, 1)]
    client = pulsar.Client(kafka_broker.url)
    try:
        reader = client.create_reader(f"persistent://public/default/{topic}", pulsar.MessageId.earliest)
        first = reader.read_next(10_000)
        assert (first.data(), first.partition_key(), first.properties()) == (b"from kafka", "order-1", {"source": "kafka"})
        assert first.event_timestamp() == 1_700_000_000_123
        second = reader.read_next(10_000)
        assert second.data() == b"no key" and second.partition_key() == ""
        pulsar_producer = client.create_producer(f"persistent://public/default/{topic}")
        pulsar_producer.send(b"from pulsar", partition_key="order-2", properties={"source": "pulsar"},
                             event_timestamp=1_700_000_000_456)
    finally:
        client.close()
    records = consume_all(kafka_broker, topic, 3)
    assert [(r.offset, r.key, r.value) for r in records] == [
        (0, b"order-1", b"from kafka"), (1, None, b"no key"), (2, b"order-2", b"from pulsar")]
    assert records[0].headers == [("source", b"kafka")] and records[0].timestamp == 1_700_000_000_123
    assert records[2].headers == [("source", b"pulsar")] and records[2].timestamp == 1_700_000_000_456


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches(kafka_broker, codec):
    from confluent_kafka import Producer
    topic = unique(codec)
    producer = Producer({"bootstrap.servers": bootstrap(kafka_broker), "compression.type": codec, "linger.ms": 20})
    values = [f"{codec} record {i} ".encode() * 20 for i in range(200)]
    for value in values:
        producer.produce(topic, value=value)
    assert producer.flush(30) == 0
    stats = call(kafka_broker, "GET", f"/admin/v2/persistent/public/default/{topic}/stats")[1]
    assert stats["msgInCounter"] == 200
    # Stored compressed: fewer bytes than the values.
    assert stats["bytesInCounter"] < sum(len(v) for v in values) / 2
    assert [r.value for r in consume_all(kafka_broker, topic, 200)] == values
    client = pulsar.Client(kafka_broker.url)
    try:
        reader = client.create_reader(f"persistent://public/default/{topic}", pulsar.MessageId.earliest)
        assert [reader.read_next(10_000).data() for _ in values] == values
    finally:
        client.close()


def test_kafka_python_gzip_and_idempotent_default(kafka_broker):
    """kafka-python 3.0 is idempotent by default (InitProducerId) and compresses with gzip itself."""
    from kafka import KafkaProducer
    topic = unique("kp")
    producer = KafkaProducer(bootstrap_servers=bootstrap(kafka_broker), compression_type="gzip", linger_ms=10)
    futures = [producer.send(topic, value=b"gzip me " * 30) for _ in range(300)]
    producer.flush(30)
    assert sorted(f.get(10).offset for f in futures) == list(range(300))
    producer.close()
    assert len(consume_all(kafka_broker, topic, 300)) == 300


def init_producer_id(port: int) -> tuple[int, int]:
    answer = raw_request(port, request(22, 0, 1, struct.pack(">hi", -1, 60_000)))
    correlation, _throttle, error, producer_id, epoch = struct.unpack(">iihqh", answer)
    assert (correlation, error) == (1, 0)
    return producer_id, epoch


def produce_frame(topic: str, batch: bytes, correlation: int) -> bytes:
    """Produce v3, acks=-1: one topic, partition 0."""
    name = topic.encode()
    body = struct.pack(">hhi", -1, -1, 30_000) + struct.pack(">ih", 1, len(name)) + name
    body += struct.pack(">ii", 1, 0) + struct.pack(">i", len(batch)) + batch
    return request(0, 3, correlation, body)


def produce_answer(sock: socket.socket) -> tuple[int, int]:
    size = struct.unpack(">i", sock.recv(4, socket.MSG_WAITALL))[0]
    answer = sock.recv(size, socket.MSG_WAITALL)
    # correlation, 1 topic (name), 1 partition: index, error, base offset
    name_length = struct.unpack_from(">h", answer, 8)[0]
    _index, error, base_offset = struct.unpack_from(">ihq", answer, 10 + name_length + 4)
    return error, base_offset


def batch(producer_id: int, epoch: int, sequence: int, values: list[bytes]) -> bytes:
    from kafka.record.default_records import DefaultRecordBatchBuilder
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=producer_id,
                                        producer_epoch=epoch, base_sequence=sequence, batch_size=1 << 20)
    for i, value in enumerate(values):
        builder.append(i, timestamp=int(time.time() * 1000), key=None, value=value, headers=[])
    return bytes(builder.build())


def test_idempotent_producer_retries_gaps_and_epochs(kafka_broker):
    topic = unique("idem")
    assert call(kafka_broker, "PUT", f"/admin/v2/persistent/public/default/{topic}")[0] == 204
    producer_id, epoch = init_producer_id(kafka_broker.kafka_port)
    assert producer_id > 0 and epoch == 0
    assert init_producer_id(kafka_broker.kafka_port)[0] != producer_id  # ids are not reused
    with socket.create_connection(("127.0.0.1", kafka_broker.kafka_port), timeout=10) as sock:
        first = batch(producer_id, 0, 0, [b"a", b"b", b"c"])
        sock.sendall(produce_frame(topic, first, 2))
        assert produce_answer(sock) == (0, 0)
        sock.sendall(produce_frame(topic, batch(producer_id, 0, 3, [b"d"]), 3))
        assert produce_answer(sock) == (0, 3)
        # The first batch again (a retry): its original offset, nothing written.
        sock.sendall(produce_frame(topic, first, 4))
        assert produce_answer(sock) == (0, 0)
        # A gap in the sequence: OUT_OF_ORDER_SEQUENCE_NUMBER.
        sock.sendall(produce_frame(topic, batch(producer_id, 0, 9, [b"x"]), 5))
        assert produce_answer(sock)[0] == 45
        # A newer epoch starts over; the older one is then fenced: INVALID_PRODUCER_EPOCH.
        sock.sendall(produce_frame(topic, batch(producer_id, 1, 0, [b"e"]), 6))
        assert produce_answer(sock) == (0, 4)
        sock.sendall(produce_frame(topic, batch(producer_id, 0, 4, [b"late"]), 7))
        assert produce_answer(sock)[0] == 47
        # Damaged records: CORRUPT_MESSAGE, and the connection serves on.
        damaged = bytearray(batch(-1, -1, -1, [b"bad"]))
        damaged[-2] ^= 0xFF
        sock.sendall(produce_frame(topic, bytes(damaged), 8))
        assert produce_answer(sock)[0] == 2
        # Records over the message size limit: MESSAGE_TOO_LARGE.
        sock.sendall(produce_frame(topic, batch(-1, -1, -1, [b"x" * (6 * 1024 * 1024)]), 9))
        assert produce_answer(sock)[0] == 10
        # A partition that does not exist: UNKNOWN_TOPIC_OR_PARTITION.
        sock.sendall(produce_frame(unique("nowhere"), batch(-1, -1, -1, [b"y"]), 10))
        assert produce_answer(sock)[0] == 3
    stats = call(kafka_broker, "GET", f"/admin/v2/persistent/public/default/{topic}/stats")[1]
    assert stats["msgInCounter"] == 5
    assert [r.value for r in consume_all(kafka_broker, topic, 5)] == [b"a", b"b", b"c", b"d", b"e"]


def test_idempotent_producer_state_survives_kill9(kafka_broker):
    """The producers' state is rebuilt from the log: a retry after a crash is still a retry."""
    topic = unique("idem-restart")
    assert call(kafka_broker, "PUT", f"/admin/v2/persistent/public/default/{topic}")[0] == 204
    producer_id, _ = init_producer_id(kafka_broker.kafka_port)
    first = batch(producer_id, 0, 0, [b"a", b"b", b"c"])
    second = batch(producer_id, 0, 3, [b"d"])
    with socket.create_connection(("127.0.0.1", kafka_broker.kafka_port), timeout=10) as sock:
        sock.sendall(produce_frame(topic, first, 2))
        assert produce_answer(sock) == (0, 0)
        sock.sendall(produce_frame(topic, second, 3))
        assert produce_answer(sock) == (0, 3)
    kafka_broker.kill9()
    kafka_broker.restart()
    with socket.create_connection(("127.0.0.1", kafka_broker.kafka_port), timeout=10) as sock:
        # Both batches again, as a client retrying across the crash sends them: their offsets.
        sock.sendall(produce_frame(topic, first, 4))
        assert produce_answer(sock) == (0, 0)
        sock.sendall(produce_frame(topic, second, 5))
        assert produce_answer(sock) == (0, 3)
        sock.sendall(produce_frame(topic, batch(producer_id, 0, 9, [b"gap"]), 6))
        assert produce_answer(sock)[0] == 45  # OUT_OF_ORDER_SEQUENCE_NUMBER
        sock.sendall(produce_frame(topic, batch(producer_id, 0, 4, [b"e"]), 7))
        assert produce_answer(sock) == (0, 4)
        sock.sendall(produce_frame(topic, batch(producer_id, 1, 0, [b"f"]), 8))  # a newer epoch
        assert produce_answer(sock) == (0, 5)
    kafka_broker.kill9()
    kafka_broker.restart()
    with socket.create_connection(("127.0.0.1", kafka_broker.kafka_port), timeout=10) as sock:
        sock.sendall(produce_frame(topic, batch(producer_id, 0, 5, [b"late"]), 9))
        assert produce_answer(sock)[0] == 47  # INVALID_PRODUCER_EPOCH: the epoch was bumped before
    assert [r.value for r in consume_all(kafka_broker, topic, 6)] == [b"a", b"b", b"c", b"d", b"e", b"f"]


def test_confluent_idempotent_producer(kafka_broker):
    from confluent_kafka import Producer
    topic = partitioned(kafka_broker, 2)
    producer = Producer({"bootstrap.servers": bootstrap(kafka_broker), "enable.idempotence": True, "linger.ms": 2})
    offsets = []
    for i in range(2000):
        producer.produce(topic, key=str(i % 10).encode(), value=b"v" * 100,
                         on_delivery=lambda err, msg: offsets.append((err, msg.partition(), msg.offset())))
        if i % 500 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    assert [o for o in offsets if o[0] is not None] == []
    for partition in (0, 1):
        mine = sorted(o[2] for o in offsets if o[1] == partition)
        assert mine == list(range(len(mine)))


def test_list_offsets_earliest_latest_and_by_time(kafka_broker):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    topic = unique("times")
    producer = KafkaProducer(bootstrap_servers=bootstrap(kafka_broker), acks="all")
    for i in range(5):
        producer.send(topic, value=b"early %d" % i)
    producer.flush(30)
    time.sleep(0.05)
    cutoff = int(time.time() * 1000)
    time.sleep(0.05)
    for i in range(3):
        producer.send(topic, value=b"late %d" % i)
    producer.flush(30)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap(kafka_broker), enable_auto_commit=False)
    try:
        partition = TopicPartition(topic, 0)
        assert consumer.beginning_offsets([partition]) == {partition: 0}
        assert consumer.end_offsets([partition]) == {partition: 8}
        found = consumer.offsets_for_times({partition: cutoff})[partition]
        assert found.offset == 5 and found.timestamp >= cutoff
        assert consumer.offsets_for_times({partition: int(time.time() * 1000) + 60_000})[partition] is None
        # Seek by time, then read from there.
        consumer.assign([partition])
        consumer.seek(partition, found.offset)
        got = consumer.poll(timeout_ms=5000, max_records=10).get(partition, [])
        assert [r.value for r in got] == [b"late 0", b"late 1", b"late 2"]
    finally:
        consumer.close()


def test_fetch_waits_for_new_records(kafka_broker):
    """A consumer at the end of the log long-polls; a record produced meanwhile reaches it."""
    from confluent_kafka import Consumer, Producer
    topic = unique("poll")
    producer = Producer({"bootstrap.servers": bootstrap(kafka_broker)})
    producer.produce(topic, value=b"first")
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": bootstrap(kafka_broker), "group.id": unique("g"),
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "fetch.wait.max.ms": 5000})
    consumer.assign([__import__("confluent_kafka").TopicPartition(topic, 0, 0)])
    try:
        first = consumer.poll(15)
        assert first is not None and first.value() == b"first"
        threading.Timer(1.0, lambda: (producer.produce(topic, value=b"second"), producer.flush(10))).start()
        second = None
        deadline = time.time() + 20
        while second is None and time.time() < deadline:
            second = consumer.poll(1)
        assert second is not None and second.value() == b"second" and second.offset() == 1
    finally:
        consumer.close()


def test_fetch_out_of_range_offset(kafka_broker):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    topic = unique("range")
    producer = KafkaProducer(bootstrap_servers=bootstrap(kafka_broker), acks="all")
    producer.send(topic, value=b"only")
    producer.flush(30)
    producer.close()
    # auto_offset_reset=earliest: an offset past the end is answered OFFSET_OUT_OF_RANGE and reset.
    consumer = KafkaConsumer(bootstrap_servers=bootstrap(kafka_broker), enable_auto_commit=False,
                             auto_offset_reset="earliest")
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        consumer.seek(partition, 50)
        records = []
        deadline = time.time() + 15
        while not records and time.time() < deadline:
            records = consumer.poll(timeout_ms=1000).get(partition, [])
        assert [(r.offset, r.value) for r in records] == [(0, b"only")]
    finally:
        consumer.close()


def test_kill9_after_acks_all_loses_nothing(kafka_broker):
    from confluent_kafka import Producer
    topic = partitioned(kafka_broker, 2)
    producer = Producer({"bootstrap.servers": bootstrap(kafka_broker), "acks": "all", "linger.ms": 1})
    acked = []
    for i in range(500):
        producer.produce(topic, key=str(i).encode(), value=b"durable %d" % i,
                         on_delivery=lambda err, msg: err is None and acked.append(msg.value()))
    assert producer.flush(30) == 0
    assert len(acked) == 500
    kafka_broker.kill9()
    kafka_broker.restart()
    records = consume_all(kafka_broker, topic, 500)
    assert sorted(r.value for r in records) == sorted(acked)
    # Offsets continue after the restart.
    delivered = []
    producer = Producer({"bootstrap.servers": bootstrap(kafka_broker), "acks": "all"})
    producer.produce(topic, key=b"after", value=b"after", partition=0,
                     on_delivery=lambda err, msg: delivered.append((err, msg.offset())))
    assert producer.flush(30) == 0
    before = sum(1 for r in records if r.partition == 0)
    assert delivered == [(None, before)]
