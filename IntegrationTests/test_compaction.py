"""Issue 16, item 5: topic compaction and TableView, with the official Python client, as Apache
Pulsar documents them.

- `PUT .../compaction` compacts a topic: a reader or consumer with `is_read_compacted=True` gets the
  latest message of each key up to the compaction horizon, in log order, then everything after it;
  a null (`send(None)`) or empty value deletes its key; messages without a key are dropped. Batches
  whose messages are partly superseded are rewritten. Readers without `is_read_compacted` still see
  every message the topic keeps.
- `GET .../compaction` reports NOT_RUN / SUCCESS (Pulsar's LongRunningProcessStatus); topic stats
  show the `__compaction` subscription and `compaction` counters.
- `is_read_compacted` on a Shared subscription is refused (by the client; the broker answers
  NotAllowed to clients that ask anyway).
- The namespace `compactionThreshold` policy starts compactions by itself.
- `client.create_table_view()` loads the compacted state and follows updates and deletes live.
- Compacted state survives a kill -9; `magnetar admin topics compact | compaction-status -w` and the
  namespace threshold verbs.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pulsar
import pytest

from admin_rest import call
from conftest import magnetar_binary
from test_security import SecureBroker

RECEIVE_MS = 10_000


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    # A short monitor interval, so the threshold test need not wait a minute.
    b = SecureBroker(tmp_path_factory.mktemp("compaction"), "brokerServiceCompactionMonitorIntervalInSeconds=1")
    b.start()
    b.auto_restart = True
    yield b
    b.close()


def unique(prefix: str) -> str:
    return f"persistent://public/default/{prefix}-{uuid.uuid4().hex[:8]}"


def rest(topic: str) -> str:
    return topic.replace("persistent://", "/admin/v2/persistent/")


def compact(broker, topic: str) -> None:
    status, body = call(broker, "PUT", rest(topic) + "/compaction")
    assert status == 204, (status, body)
    wait_compacted(broker, topic)


def wait_compacted(broker, topic: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, body = call(broker, "GET", rest(topic) + "/compaction")
        assert status == 200, (status, body)
        if body["status"] == "SUCCESS":
            return body
        assert body["status"] in ("RUNNING", "NOT_RUN"), body
        assert time.monotonic() < deadline, body
        time.sleep(0.2)


def read_all(client, topic: str, compacted: bool) -> list[tuple[str, bytes]]:
    """Everything a reader from the earliest message gets: (partition key, value)."""
    reader = client.create_reader(topic, pulsar.MessageId.earliest, is_read_compacted=compacted)
    got = []
    while reader.has_message_available():
        msg = reader.read_next(RECEIVE_MS)
        got.append((msg.partition_key(), msg.data()))
    reader.close()
    return got


def publish_updates(client, topic: str, batched: bool) -> None:
    """k1 twice, k2 once, k3 then its tombstone, one keyless message, and an empty value for k4."""
    producer = client.create_producer(topic, batching_enabled=batched, batching_max_publish_delay_ms=50)
    sends = [("k1", b"k1-v1"), ("k2", b"k2-v1"), ("k1", b"k1-v2"), ("k3", b"k3-v1"), ("k4", b"k4-v1"),
             ("k3", None), (None, b"no-key"), ("k4", b"")]
    for key, value in sends:
        if batched:
            if key is None:
                producer.send_async(value, None)
            else:
                producer.send_async(value, None, partition_key=key)
        elif key is None:
            producer.send(value)
        else:
            producer.send(value, partition_key=key)
    producer.flush()
    producer.close()


@pytest.mark.parametrize("batched", [False, True], ids=["single-messages", "batches"])
def test_compacted_reader_gets_latest_value_per_key(broker, make_client, batched):
    client = make_client(broker)
    topic = unique("compact")
    publish_updates(client, topic, batched)
    assert call(broker, "GET", rest(topic) + "/compaction")[1]["status"] == "NOT_RUN"
    compact(broker, topic)
    # Latest value per key, in log order; k3 (tombstone) and k4 (empty value) deleted, no keyless one.
    assert read_all(client, topic, compacted=True) == [("k2", b"k2-v1"), ("k1", b"k1-v2")]
    # A reader that does not read compacted sees every message the topic still holds.
    assert len(read_all(client, topic, compacted=False)) == 8

    # After the horizon the log is read as usual; a second compaction folds it in.
    producer = client.create_producer(topic, batching_enabled=False)
    producer.send(b"k2-v2", partition_key="k2")
    producer.send(b"k5-v1", partition_key="k5")
    assert read_all(client, topic, compacted=True) == [
        ("k2", b"k2-v1"), ("k1", b"k1-v2"), ("k2", b"k2-v2"), ("k5", b"k5-v1")]
    compact(broker, topic)
    assert read_all(client, topic, compacted=True) == [("k1", b"k1-v2"), ("k2", b"k2-v2"), ("k5", b"k5-v1")]

    stats = call(broker, "GET", rest(topic) + "/stats")[1]
    assert "__compaction" in stats["subscriptions"]
    assert stats["subscriptions"]["__compaction"]["msgBacklog"] == 0
    assert stats["compaction"]["lastCompactionSucceedTimestamp"] > 0
    assert stats["compaction"]["lastCompactionRemovedEventCount"] >= 1


def test_compacted_consumer_and_acknowledgements(broker, make_client):
    client = make_client(broker)
    topic = unique("compact-consumer")
    # Single messages: an acknowledged message of a batch comes back with its batch until all of
    # the batch is acknowledged (no batch-index acknowledgements), as in Pulsar.
    publish_updates(client, topic, batched=False)
    compact(broker, topic)
    consumer = client.subscribe(topic, "compacted", consumer_type=pulsar.ConsumerType.Exclusive,
                                initial_position=pulsar.InitialPosition.Earliest, is_read_compacted=True)
    first = consumer.receive(RECEIVE_MS)
    assert (first.partition_key(), first.data()) == ("k2", b"k2-v1")
    consumer.acknowledge(first)
    consumer.close()
    # The acknowledgement holds: the next consumer of the subscription starts after it.
    consumer = client.subscribe(topic, "compacted", consumer_type=pulsar.ConsumerType.Exclusive,
                                is_read_compacted=True)
    second = consumer.receive(RECEIVE_MS)
    assert (second.partition_key(), second.data()) == ("k1", b"k1-v2")
    consumer.close()

    # The client refuses it before asking (the broker would answer NotAllowed: BrokerCoreTests).
    with pytest.raises(pulsar.InvalidConfiguration):
        client.subscribe(topic, "shared", consumer_type=pulsar.ConsumerType.Shared, is_read_compacted=True)


def test_table_view_follows_updates_and_deletes(broker, make_client):
    client = make_client(broker)
    topic = unique("table")
    publish_updates(client, topic, batched=False)
    compact(broker, topic)
    view = client.create_table_view(topic)
    assert len(view) == 2
    assert view.get("k1") == b"k1-v2" and view.get("k2") == b"k2-v1" and view.get("k3") is None
    seen: list[tuple[str, bytes]] = []
    view.for_each_and_listen(lambda key, value: seen.append((key, value)))
    producer = client.create_producer(topic, batching_enabled=False)
    producer.send(b"k1-v3", partition_key="k1")
    producer.send(None, partition_key="k2")
    producer.send(b"k6-v1", partition_key="k6")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (view.get("k6") == b"k6-v1" and view.get("k2") is None):
        time.sleep(0.1)
    assert view.get("k1") == b"k1-v3" and view.get("k2") is None and view.get("k6") == b"k6-v1"
    assert len(view) == 2
    assert ("k1", b"k1-v3") in seen and ("k6", b"k6-v1") in seen
    view.close()
    # A new table view over a topic whose last message is a tombstone compacted away still starts.
    producer.send(None, partition_key="k6")
    compact(broker, topic)
    again = client.create_table_view(topic)
    assert len(again) == 1 and again.get("k1") == b"k1-v3"
    again.close()


def test_compaction_threshold_policy(broker, make_client, namespace):
    client = make_client(broker)
    topic = f"persistent://{namespace}/by-threshold"
    base = f"/admin/v2/namespaces/{namespace}/compactionThreshold"
    assert call(broker, "PUT", base, 1024)[0] == 204
    assert call(broker, "GET", base)[1] == 1024
    assert call(broker, "POST", base, -5)[0] in (400, 412)
    producer = client.create_producer(topic, batching_enabled=False)
    for i in range(40):
        producer.send(f"value-{i}".encode() * 10, partition_key=f"key-{i % 4}")
    body = wait_compacted(broker, topic)
    assert body["lastError"] == ""
    assert [key for key, _ in read_all(client, topic, compacted=True)] == ["key-0", "key-1", "key-2", "key-3"]
    assert call(broker, "DELETE", base)[0] == 204
    assert call(broker, "GET", base)[1] is None


def test_compaction_survives_kill9(fresh_broker, make_client):
    client = make_client(fresh_broker)
    topic = unique("compact-restart")
    publish_updates(client, topic, batched=True)
    compact(fresh_broker, topic)
    client.close()
    fresh_broker.kill9()
    fresh_broker.start()
    client = make_client(fresh_broker)
    assert read_all(client, topic, compacted=True) == [("k2", b"k2-v1"), ("k1", b"k1-v2")]
    assert call(fresh_broker, "GET", rest(topic) + "/compaction")[1]["status"] in ("SUCCESS", "NOT_RUN")


def test_compaction_errors_and_cli(broker, make_client, namespace):
    missing = unique("missing")
    assert call(broker, "PUT", rest(missing) + "/compaction")[0] == 404
    assert call(broker, "GET", rest(missing) + "/compaction")[0] == 404

    client = make_client(broker)
    topic = f"persistent://{namespace}/by-cli"
    publish_updates(client, topic, batched=False)
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}

    def cli(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([str(magnetar_binary()), "admin", "--url", broker.http_url, *args],
                                capture_output=True, text=True, timeout=30, env=env)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    assert "not been run" in cli("topics", "compaction-status", topic).stdout
    cli("topics", "compact", topic)
    assert "success" in cli("topics", "compaction-status", topic, "--wait-complete").stdout
    assert read_all(client, topic, compacted=True) == [("k2", b"k2-v1"), ("k1", b"k1-v2")]
    cli("namespaces", "set-compaction-threshold", namespace, "--threshold", "10M")
    assert cli("namespaces", "get-compaction-threshold", namespace).stdout.strip() == str(10 * 1024 * 1024)
    cli("namespaces", "remove-compaction-threshold", namespace)


def test_partitioned_topic_compaction_and_table_view(broker, make_client):
    client = make_client(broker)
    topic = unique("compact-parts")
    assert call(broker, "PUT", rest(topic) + "/partitions", 2)[0] == 204
    producer = client.create_producer(topic, batching_enabled=False)
    for round_ in range(3):
        for key in ("a", "b", "c", "d"):
            producer.send(f"{key}-{round_}".encode(), partition_key=key)
    # Compacting the partitioned topic compacts every partition.
    assert call(broker, "PUT", rest(topic) + "/compaction")[0] == 204
    for index in range(2):
        wait_compacted(broker, f"{topic}-partition-{index}")
    kept = []
    for index in range(2):
        kept += read_all(client, f"{topic}-partition-{index}", compacted=True)
    assert sorted(kept) == [(k, f"{k}-2".encode()) for k in ("a", "b", "c", "d")]
    view = client.create_table_view(topic)
    assert {key: view.get(key) for key in ("a", "b", "c", "d")} == {k: f"{k}-2".encode() for k in ("a", "b", "c", "d")}
    view.close()
