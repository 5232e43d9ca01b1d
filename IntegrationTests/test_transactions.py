"""Issue 20: transactions. Exactly-once consume-transform-produce through confluent-kafka's
transactional API (`init_transactions`, `begin_transaction`, `send_offsets_to_transaction`,
`commit_transaction` / `abort_transaction`) and `isolation.level=read_committed`; zombie fencing;
kill -9 of the broker mid-transaction; and Pulsar consumers (the Python client) that never see an
uncommitted or aborted message on the same topics.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request

import pulsar
import pytest

from admin_rest import call
from conftest import free_port, magnetar_binary
from test_kafka import bootstrap, unique
from test_security import SecureBroker

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition  # noqa: E402


@pytest.fixture(scope="module")
def kafka_broker(tmp_path_factory):
    broker = make_broker(tmp_path_factory.mktemp("transactions"))
    broker.start()
    yield broker
    broker.close()


def make_broker(root):
    kafka_port = free_port()
    broker = SecureBroker(root, "\n".join([
        "messagingProtocols=kafka",
        f"kafkaListeners=PLAINTEXT://127.0.0.1:{kafka_port}",
        "groupInitialRebalanceDelayMs=0",
    ]))
    broker.kafka_port = kafka_port
    return broker


def producer(broker, transactional_id: str | None = None, **extra) -> Producer:
    config = {"bootstrap.servers": bootstrap(broker), "linger.ms": 5}
    if transactional_id:
        config["transactional.id"] = transactional_id
        config["transaction.timeout.ms"] = 60_000
    config.update(extra)
    return Producer(config)


def consumer(broker, group: str, isolation: str = "read_committed", **extra) -> Consumer:
    config = {
        "bootstrap.servers": bootstrap(broker), "group.id": group, "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "isolation.level": isolation, "session.timeout.ms": 6000,
    }
    config.update(extra)
    return Consumer(config)


def produce_plain(broker, topic: str, values: list[str]) -> None:
    p = producer(broker)
    for value in values:
        p.produce(topic, value=value.encode())
    assert p.flush(30) == 0


def read_all(broker, topic: str, isolation: str, expect: int | None = None, idle_s: float = 3.0, limit_s: float = 30.0) -> list[str]:
    """Everything a fresh group reads from `topic` until nothing came for `idle_s` (or `expect` came)."""
    c = consumer(broker, unique("reader"), isolation)
    c.subscribe([topic])
    values: list[str] = []
    deadline = time.monotonic() + limit_s
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            message = c.poll(0.5)
            if message is None:
                if time.monotonic() - last > idle_s and (expect is None or len(values) >= expect):
                    break
                continue
            if message.error():
                continue
            values.append(message.value().decode())
            last = time.monotonic()
    finally:
        c.close()
    return values


def transform_all(broker, source: str, sink: str, group: str, transactional_id: str, count: int,
                  abort_first: bool = False, batch: int = 10) -> int:
    """The seed's loop: consume a batch, produce its results, send the consumer's offsets in the
    transaction, commit. With `abort_first` the first batch's transaction is aborted and the
    consumer rewinds to the committed offsets, so that batch is processed again."""
    c = consumer(broker, group)
    p = producer(broker, transactional_id)
    p.init_transactions(30)
    c.subscribe([source])
    processed = 0
    aborted = not abort_first
    transactions = 0
    deadline = time.monotonic() + 90
    try:
        while processed < count and time.monotonic() < deadline:
            messages = c.consume(num_messages=batch, timeout=1.0)
            messages = [m for m in messages if not m.error()]
            if not messages:
                continue
            p.begin_transaction()
            for m in messages:
                p.produce(sink, key=m.key(), value=m.value().decode().upper().encode())
            p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 30)
            if not aborted:
                assert p.flush(30) == 0  # the aborted results are in the log, not just in the client
                p.abort_transaction(30)
                aborted = True
                # Reprocess from what the group committed.
                committed = c.committed(c.assignment(), 10)
                for tp in committed:
                    c.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else 0))
                continue
            p.commit_transaction(30)
            transactions += 1
            processed += len(messages)
    finally:
        c.close()
    assert processed == count, f"processed {processed} of {count}"
    return transactions


def test_consume_transform_produce_commits_each_input_exactly_once(kafka_broker):
    source, sink, group = unique("tx-in"), unique("tx-out"), unique("tx-group")
    inputs = [f"m-{i}" for i in range(60)]
    produce_plain(kafka_broker, source, inputs)
    transactions = transform_all(kafka_broker, source, sink, group, unique("tx-id"), len(inputs))
    assert transactions >= 2
    out = read_all(kafka_broker, sink, "read_committed", expect=len(inputs))
    assert sorted(out) == sorted(v.upper() for v in inputs)
    # The group's offsets were committed with the transactions.
    c = consumer(kafka_broker, group)
    try:
        committed = c.committed([TopicPartition(source, 0)], 10)
        assert committed[0].offset == len(inputs)
    finally:
        c.close()


def test_an_aborted_batch_is_never_visible_to_read_committed_and_is_reprocessed(kafka_broker):
    source, sink = unique("abort-in"), unique("abort-out")
    inputs = [f"a-{i}" for i in range(30)]
    produce_plain(kafka_broker, source, inputs)
    transform_all(kafka_broker, source, sink, unique("abort-group"), unique("abort-id"), len(inputs), abort_first=True)
    committed = read_all(kafka_broker, sink, "read_committed", expect=len(inputs))
    assert sorted(committed) == sorted(v.upper() for v in inputs)
    # read_uncommitted sees the aborted copies too, as in Kafka.
    everything = read_all(kafka_broker, sink, "read_uncommitted", expect=len(inputs) + 1)
    assert len(everything) > len(inputs)
    assert set(everything) == set(committed)


def test_read_committed_waits_for_the_commit_and_pulsar_consumers_never_see_open_or_aborted(kafka_broker):
    topic = unique("tx-visibility")
    p = producer(kafka_broker, unique("vis-id"))
    p.init_transactions(30)
    client = pulsar.Client(kafka_broker.url)
    try:
        pulsar_consumer = client.subscribe(f"persistent://public/default/{topic}", "pulsar-sub",
                                           initial_position=pulsar.InitialPosition.Earliest)
        p.begin_transaction()
        for i in range(5):
            p.produce(topic, value=f"aborted-{i}".encode())
        p.flush(30)
        with pytest.raises(pulsar.Timeout):
            pulsar_consumer.receive(timeout_millis=1500)
        assert read_all(kafka_broker, topic, "read_committed", idle_s=1.5, limit_s=10) == []
        p.abort_transaction(30)

        p.begin_transaction()
        for i in range(5):
            p.produce(topic, value=f"open-{i}".encode())
        p.flush(30)
        # Not committed yet: neither protocol delivers it.
        with pytest.raises(pulsar.Timeout):
            pulsar_consumer.receive(timeout_millis=1500)
        p.commit_transaction(30)
        received = [pulsar_consumer.receive(timeout_millis=10_000).data().decode() for _ in range(5)]
        assert received == [f"open-{i}" for i in range(5)]
        with pytest.raises(pulsar.Timeout):
            pulsar_consumer.receive(timeout_millis=1000)
        assert read_all(kafka_broker, topic, "read_committed", expect=5) == [f"open-{i}" for i in range(5)]
    finally:
        client.close()


def test_a_zombie_producer_with_an_old_epoch_is_fenced(kafka_broker):
    topic, transactional_id = unique("zombie"), unique("zombie-id")
    old = producer(kafka_broker, transactional_id)
    old.init_transactions(30)
    old.begin_transaction()
    old.produce(topic, value=b"from-the-zombie")
    old.flush(30)
    new = producer(kafka_broker, transactional_id)
    new.init_transactions(30)  # bumps the epoch and aborts what the old one left open
    with pytest.raises(KafkaException) as raised:
        old.commit_transaction(30)
    assert raised.value.args[0].fatal() or not raised.value.args[0].retriable()
    new.begin_transaction()
    new.produce(topic, value=b"from-the-new-one")
    new.commit_transaction(30)
    assert read_all(kafka_broker, topic, "read_committed", expect=1) == ["from-the-new-one"]


def test_kill9_mid_transaction_aborts_it_as_a_whole(tmp_path):
    broker = make_broker(tmp_path)
    broker.start()
    try:
        source, sink, group, transactional_id = unique("k9-in"), unique("k9-out"), unique("k9-group"), unique("k9-id")
        inputs = [f"k-{i}" for i in range(40)]
        produce_plain(broker, source, inputs)
        # A transaction left open by the crash: half the results produced, nothing committed.
        p = producer(broker, transactional_id)
        p.init_transactions(30)
        p.begin_transaction()
        for value in inputs[:20]:
            p.produce(sink, value=value.upper().encode())
        assert p.flush(30) == 0
        broker.kill9()
        broker.restart()
        # The restarted application: a new producer with the same id fences and aborts it, then
        # processes everything.
        transform_all(broker, source, sink, group, transactional_id, len(inputs))
        out = read_all(broker, sink, "read_committed", expect=len(inputs))
        assert sorted(out) == sorted(v.upper() for v in inputs)
        # Durable across another restart: the aborted half stays invisible.
        broker.stop()
        broker.start()
        again = read_all(broker, sink, "read_committed", expect=len(inputs))
        assert sorted(again) == sorted(out)
        client = pulsar.Client(broker.url)
        try:
            reader = client.create_reader(f"persistent://public/default/{sink}", pulsar.MessageId.earliest)
            seen = []
            while True:
                try:
                    seen.append(reader.read_next(timeout_millis=2000).data().decode())
                except pulsar.Timeout:
                    break
            assert sorted(seen) == sorted(out)
        finally:
            client.close()
    finally:
        broker.close()


# Pulsar's transaction protocol, through the Swift client (`magnetar client transact`): the official
# Python client 3.13 has no transaction API, so its consumers check what the transactions did.

def transact(broker, *args: str, timeout: float = 60) -> list[str]:
    cmd = [str(magnetar_binary()), "client", "transact", *args, "--url", broker.url, "--log-level", "warning"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def pulsar_topics(prefix: str) -> tuple[str, str]:
    return f"persistent://public/default/{unique(prefix + '-in')}", f"persistent://public/default/{unique(prefix + '-out')}"


def send_inputs(client, topic: str, count: int) -> list[str]:
    producer = client.create_producer(topic, batching_enabled=False)
    values = [f"p-{i}" for i in range(count)]
    for value in values:
        producer.send(value.encode())
    producer.close()
    return values


def receive_all(consumer, count: int, timeout_ms: int = 10_000) -> list[str]:
    values = []
    for _ in range(count):
        message = consumer.receive(timeout_millis=timeout_ms)
        consumer.acknowledge(message)
        values.append(message.data().decode())
    return values


def test_pulsar_transaction_commit_publishes_and_acknowledges_as_one(kafka_broker):
    source, sink = pulsar_topics("ptx")
    client = pulsar.Client(kafka_broker.url)
    try:
        out = client.subscribe(sink, "out", initial_position=pulsar.InitialPosition.Earliest)
        client.subscribe(source, "in", consumer_type=pulsar.ConsumerType.Shared,
                         initial_position=pulsar.InitialPosition.Earliest).close()
        values = send_inputs(client, source, 5)
        lines = transact(kafka_broker, "--input", source, "-s", "in", "--output", sink, "-n", "5", "--end", "commit")
        assert lines[0].startswith("txn\t(0,") and lines[-1] == "committed"
        assert receive_all(out, 5) == [v.upper() for v in values]
        # The inputs were acknowledged with the commit: the subscription has nothing left.
        again = client.subscribe(source, "in", consumer_type=pulsar.ConsumerType.Shared)
        with pytest.raises(pulsar.Timeout):
            again.receive(timeout_millis=1500)
        status, stats = call(kafka_broker, "GET", "/admin/v2/" + source.replace("://", "/") + "/stats")
        assert status == 200 and stats["subscriptions"]["in"]["msgBacklog"] == 0
    finally:
        client.close()


def test_pulsar_transaction_abort_hides_its_messages_and_redelivers_its_acknowledged_ones(kafka_broker):
    source, sink = pulsar_topics("ptx-abort")
    client = pulsar.Client(kafka_broker.url)
    try:
        out = client.subscribe(sink, "out", initial_position=pulsar.InitialPosition.Earliest)
        client.subscribe(source, "in", consumer_type=pulsar.ConsumerType.Shared,
                         initial_position=pulsar.InitialPosition.Earliest).close()
        values = send_inputs(client, source, 4)
        lines = transact(kafka_broker, "--input", source, "-s", "in", "--output", sink, "-n", "4", "--end", "abort",
                         "--check-conflict")
        assert lines[-1] == "aborted"
        assert "conflict\ttransactionConflict" in lines
        with pytest.raises(pulsar.Timeout):
            out.receive(timeout_millis=1500)
        # The aborted acknowledgements: the inputs come again.
        again = client.subscribe(source, "in", consumer_type=pulsar.ConsumerType.Shared)
        assert sorted(receive_all(again, 4)) == sorted(values)
        # A later message on the output is not held behind the aborted transaction.
        client.create_producer(sink).send(b"after")
        assert out.receive(timeout_millis=10_000).data() == b"after"
    finally:
        client.close()


def test_pulsar_transaction_left_open_times_out_and_aborts(kafka_broker):
    source, sink = pulsar_topics("ptx-timeout")
    client = pulsar.Client(kafka_broker.url)
    try:
        out = client.subscribe(sink, "out", initial_position=pulsar.InitialPosition.Earliest)
        client.subscribe(source, "in", consumer_type=pulsar.ConsumerType.Shared,
                         initial_position=pulsar.InitialPosition.Earliest).close()
        values = send_inputs(client, source, 3)
        lines = transact(kafka_broker, "--input", source, "-s", "in", "--output", sink, "-n", "3", "--end", "leave",
                         "--timeout-ms", "3000")
        assert lines[-1] == "open"
        txn = lines[0].split("\t")[1].strip("()").split(",")
        # The admin API shows it: its metadata, among the slow ones, in the buffer and pending acks.
        status, metadata = call(kafka_broker, "GET", f"/admin/v3/transactions/transactionMetadata/{txn[0]}/{txn[1]}")
        assert status == 200 and metadata["status"] == "OPEN"
        assert sink in metadata["producedPartitions"] and "in" in metadata["ackedPartitions"][source]
        status, slow = call(kafka_broker, "GET", "/admin/v2/transactions/slowTransactions/0")
        assert status == 200 and metadata["txnId"] in slow
        sink_path = sink.removeprefix("persistent://")
        status, buffer = call(kafka_broker, "GET", f"/admin/v3/transactions/transactionBufferStats/{sink_path}")
        assert status == 200 and buffer["ongoingTxnSize"] == 1 and buffer["maxReadPosition"]
        status, pending = call(kafka_broker, "GET", f"/admin/v3/transactions/pendingAckStats/{source.removeprefix('persistent://')}/in")
        assert status == 200 and pending["ongoingTxnSize"] == 1 and len(pending["pendingAcks"][metadata["txnId"]]) == 3
        # Published after the open transaction's first message: held back until it ends.
        client.create_producer(sink).send(b"behind-the-transaction")
        with pytest.raises(pulsar.Timeout):
            out.receive(timeout_millis=1000)
        # The time-out aborts it: its messages never come, the one behind it does.
        assert out.receive(timeout_millis=15_000).data() == b"behind-the-transaction"
        with pytest.raises(pulsar.Timeout):
            out.receive(timeout_millis=1000)
        again = client.subscribe(source, "in", consumer_type=pulsar.ConsumerType.Shared)
        assert sorted(receive_all(again, 3)) == sorted(values)
        status, stats = call(kafka_broker, "GET", "/admin/v3/transactions/coordinatorStats")
        assert status == 200 and stats["0"]["timeoutCount"] >= 1
        status, _ = call(kafka_broker, "GET", f"/admin/v3/transactions/transactionMetadata/{txn[0]}/{txn[1]}")
        assert status == 404
        metrics = urllib.request.urlopen(f"{kafka_broker.http_url}/metrics", timeout=10).read().decode()
        timed_out = [line for line in metrics.splitlines() if line.startswith("pulsar_txn_timeout_total")]
        assert timed_out and float(timed_out[0].split()[-1]) >= 1
    finally:
        client.close()


def test_pulsar_transaction_survives_kill9_and_still_times_out(tmp_path):
    broker = make_broker(tmp_path)
    broker.start()
    try:
        source, sink = pulsar_topics("ptx-k9")
        client = pulsar.Client(broker.url)
        out = client.subscribe(sink, "out", initial_position=pulsar.InitialPosition.Earliest)
        client.subscribe(source, "in", consumer_type=pulsar.ConsumerType.Shared,
                         initial_position=pulsar.InitialPosition.Earliest).close()
        values = send_inputs(client, source, 3)
        lines = transact(broker, "--input", source, "-s", "in", "--output", sink, "-n", "3", "--end", "leave",
                         "--timeout-ms", "8000")
        assert lines[-1] == "open"
        client.create_producer(sink).send(b"behind")
        client.close()
        broker.kill9()
        broker.restart()
        client = pulsar.Client(broker.url)
        try:
            out = client.subscribe(sink, "out")
            inputs = client.subscribe(source, "in", consumer_type=pulsar.ConsumerType.Shared)
            # Still open after the restart: its messages and what came after are held back, its
            # acknowledged inputs are not delivered again.
            with pytest.raises(pulsar.Timeout):
                out.receive(timeout_millis=1000)
            with pytest.raises(pulsar.Timeout):
                inputs.receive(timeout_millis=500)
            # The recovered coordinator times it out: aborted as a whole.
            assert out.receive(timeout_millis=20_000).data() == b"behind"
            with pytest.raises(pulsar.Timeout):
                out.receive(timeout_millis=1000)
            assert sorted(receive_all(inputs, 3, timeout_ms=20_000)) == sorted(values)
        finally:
            client.close()
    finally:
        broker.close()


def test_kafka_python_transactional_producer_commits_and_aborts(kafka_broker):
    from kafka import KafkaProducer
    topic = unique("kp-tx")
    source, group = unique("kp-tx-in"), unique("kp-tx-group")
    produce_plain(kafka_broker, source, ["x"])
    p = KafkaProducer(bootstrap_servers=bootstrap(kafka_broker), transactional_id=unique("kp-id"))
    try:
        p.init_transactions()
        p.begin_transaction()
        for i in range(3):
            p.send(topic, value=f"kept-{i}".encode())
        from kafka.structs import OffsetAndMetadata
        from kafka.structs import TopicPartition as KafkaTopicPartition
        p.send_offsets_to_transaction({KafkaTopicPartition(source, 0): OffsetAndMetadata(1, "", -1)}, group)
        p.commit_transaction()
        p.begin_transaction()
        for i in range(2):
            p.send(topic, value=f"dropped-{i}".encode())
        p.flush()
        p.abort_transaction()
    finally:
        p.close()
    assert read_all(kafka_broker, topic, "read_committed", expect=3) == [f"kept-{i}" for i in range(3)]
    c = consumer(kafka_broker, group)
    try:
        assert c.committed([TopicPartition(source, 0)], 10)[0].offset == 1
    finally:
        c.close()


def test_aiokafka_transactional_producer_commits_and_aborts(kafka_broker):
    import asyncio

    from aiokafka import AIOKafkaProducer
    topic = unique("aio-tx")

    async def run():
        p = AIOKafkaProducer(bootstrap_servers=bootstrap(kafka_broker), transactional_id=unique("aio-id"))
        await p.start()
        try:
            async with p.transaction():
                for i in range(3):
                    await p.send_and_wait(topic, f"kept-{i}".encode())
            await p.begin_transaction()
            await p.send_and_wait(topic, b"dropped")
            await p.abort_transaction()
        finally:
            await p.stop()

    asyncio.run(run())
    assert read_all(kafka_broker, topic, "read_committed", expect=3) == [f"kept-{i}" for i in range(3)]


def test_clients_find_the_coordinator_through_the_assign_topic(kafka_broker):
    # The Java client's discovery: the assign topic's partitions are the coordinators; partition 0 is here.
    client = pulsar.Client(kafka_broker.url)
    try:
        assert client.get_topic_partitions("persistent://pulsar/system/transaction_coordinator_assign") == [
            "persistent://pulsar/system/transaction_coordinator_assign-partition-0"]
    finally:
        client.close()
