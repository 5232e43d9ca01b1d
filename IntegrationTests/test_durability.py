"""Issue 2, durability: after kill -9 and a restart on the same data dir, every message that got a
receipt is there, every acknowledged message stays acknowledged, and subscriptions resume.

Each test has its own broker (`fresh_broker`). Clients of the killed broker are closed before the
restart, so they cannot resend anything into the restarted broker.
"""

from __future__ import annotations

import pulsar
import pytest

from conftest import close_quietly
from helpers import (
    RECEIVE_TIMEOUT_MS, SendTracker, assert_no_more, drain_consumer, entry_of, receive_n,
)


@pytest.mark.parametrize("batching", [False, True], ids=["single", "batched"])
def test_kill9_during_produce_keeps_every_receipted_message(fresh_broker, make_client, topic, batching):
    """Kill -9 while sends are in flight. Every message whose receipt arrived must survive; what
    survives is a gap-free prefix of what was sent, with nothing corrupted."""
    t = topic()
    client = make_client(fresh_broker)
    producer = client.create_producer(
        t, block_if_queue_full=True, send_timeout_millis=5_000, max_pending_messages=500,
        batching_enabled=batching, batching_max_messages=50, batching_max_publish_delay_ms=5)
    tracker = SendTracker()
    target_receipts = 2_000
    limit = 50_000
    sent = 0
    killed = False
    while sent < limit:
        producer.send_async(b"%08d" % sent, tracker.callback_for(sent))
        sent += 1
        if tracker.ok_count >= target_receipts:
            fresh_broker.kill9()  # sends are still in flight right now
            killed = True
            break
    assert killed, f"only {tracker.ok_count} receipts after {sent} sends"
    close_quietly(client)  # fails what is pending; no resend into the restarted broker
    receipted = sorted(tracker.ok_ids())
    assert len(receipted) >= target_receipts

    fresh_broker.restart()
    client2 = make_client(fresh_broker)
    consumer = client2.subscribe(t, "after-crash", initial_position=pulsar.InitialPosition.Earliest)
    got = drain_consumer(consumer, limit=sent, quiet_ms=3_000)
    seqs = []
    for m in got:
        data = m.data()
        assert len(data) == 8 and data.isdigit(), f"corrupted message {data[:40]!r}"
        seqs.append(int(data))
    assert seqs == list(range(len(seqs))), "survivors are not a gap-free, duplicate-free prefix"
    missing = sorted(set(receipted) - set(seqs))
    assert not missing, f"{len(missing)} receipted messages lost, first {missing[:10]}"

    # the restarted broker keeps appending after what survived, with larger ids
    producer2 = client2.create_producer(t)
    new_id = producer2.send(b"after-restart")
    assert entry_of(new_id) > max(entry_of(m.message_id()) for m in got)
    assert consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"after-restart"


def test_sync_sends_survive_kill9(fresh_broker, make_client, topic):
    t = topic()
    client = make_client(fresh_broker)
    producer = client.create_producer(t)
    payloads = [b"sync-%d" % i for i in range(50)]
    for p in payloads:
        producer.send(p)
    fresh_broker.kill9()
    close_quietly(client)
    fresh_broker.restart()

    client2 = make_client(fresh_broker)
    reader = client2.create_reader(t, pulsar.MessageId.earliest)
    got = []
    while reader.has_message_available():
        got.append(reader.read_next(timeout_millis=RECEIVE_TIMEOUT_MS).data())
        assert len(got) <= len(payloads)
    assert got == payloads


@pytest.mark.parametrize("mode", ["individual", "cumulative"])
def test_acknowledged_messages_not_redelivered_after_kill9(fresh_broker, make_client, topic, mode):
    t = topic()
    client = make_client(fresh_broker)
    producer = client.create_producer(t)
    consumer = client.subscribe(t, "sub", initial_position=pulsar.InitialPosition.Earliest)
    for i in range(20):
        producer.send(b"a%d" % i)
    got = receive_n(consumer, 20)
    if mode == "individual":
        for m in got[:12]:
            consumer.acknowledge(m)
    else:
        consumer.acknowledge_cumulative(got[11])
    consumer.close()  # the client flushes its grouped acks before CLOSE_CONSUMER
    fresh_broker.kill9()
    close_quietly(client)
    fresh_broker.restart()

    client2 = make_client(fresh_broker)
    consumer = client2.subscribe(t, "sub", initial_position=pulsar.InitialPosition.Earliest)
    assert [m.data() for m in receive_n(consumer, 8)] == [b"a%d" % i for i in range(12, 20)]
    assert_no_more(consumer)


def test_individual_acks_beyond_first_unacked_survive_kill9(fresh_broker, make_client, topic):
    """Ack every other message (so the acked set has holes), kill -9, restart: exactly the
    unacked ones come back."""
    t = topic()
    client = make_client(fresh_broker)
    producer = client.create_producer(t)
    consumer = client.subscribe(t, "holes", initial_position=pulsar.InitialPosition.Earliest)
    for i in range(30):
        producer.send(b"h%d" % i)
    got = receive_n(consumer, 30)
    for i in range(0, 30, 2):
        consumer.acknowledge(got[i])
    consumer.close()
    fresh_broker.kill9()
    close_quietly(client)
    fresh_broker.restart()

    client2 = make_client(fresh_broker)
    consumer = client2.subscribe(t, "holes", initial_position=pulsar.InitialPosition.Earliest)
    assert [m.data() for m in receive_n(consumer, 15)] == [b"h%d" % i for i in range(1, 30, 2)]
    assert_no_more(consumer)


def test_subscription_position_survives_kill9(fresh_broker, make_client, topic):
    """A durable subscription created at Latest keeps its place across a crash: messages published
    after the restart are delivered to it (a new Latest subscription would miss none of them either,
    so the old messages are what tells the two apart)."""
    t = topic()
    client = make_client(fresh_broker)
    producer = client.create_producer(t)
    producer.send(b"before-sub")
    consumer = client.subscribe(t, "kept", initial_position=pulsar.InitialPosition.Latest)
    producer.send(b"for-kept-0")
    producer.send(b"for-kept-1")
    consumer.close()  # nothing acknowledged
    fresh_broker.kill9()
    close_quietly(client)
    fresh_broker.restart()

    client2 = make_client(fresh_broker)
    # Earliest is ignored for an existing subscription: it resumes where it was.
    consumer = client2.subscribe(t, "kept", initial_position=pulsar.InitialPosition.Earliest)
    assert [m.data() for m in receive_n(consumer, 2)] == [b"for-kept-0", b"for-kept-1"]
    assert_no_more(consumer)


def test_graceful_stop_and_restart(fresh_broker, make_client, topic):
    t = topic()
    client = make_client(fresh_broker)
    producer = client.create_producer(t)
    consumer = client.subscribe(t, "sub", initial_position=pulsar.InitialPosition.Earliest)
    for i in range(10):
        producer.send(b"g%d" % i)
    for m in receive_n(consumer, 4):
        consumer.acknowledge(m)
    consumer.close()
    close_quietly(client)
    assert fresh_broker.stop() == 0, "SIGTERM should stop the broker cleanly (exit code 0)"
    fresh_broker.start()

    client2 = make_client(fresh_broker)
    consumer = client2.subscribe(t, "sub")
    assert [m.data() for m in receive_n(consumer, 6)] == [b"g%d" % i for i in range(4, 10)]
    reader = client2.create_reader(t, pulsar.MessageId.earliest)
    assert [reader.read_next(timeout_millis=RECEIVE_TIMEOUT_MS).data() for _ in range(10)] == [
        b"g%d" % i for i in range(10)]


def test_client_reconnects_after_broker_restart(fresh_broker, make_client, topic):
    """A producer and a consumer that stay open across kill -9 + restart carry on: the client
    reconnects by itself (lookup, PRODUCER and SUBSCRIBE again) to the broker on the same port."""
    t = topic()
    client = make_client(fresh_broker)
    producer = client.create_producer(t, send_timeout_millis=30_000)
    consumer = client.subscribe(t, "live", initial_position=pulsar.InitialPosition.Earliest)
    producer.send(b"one")
    m = consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS)
    assert m.data() == b"one"
    consumer.acknowledge(m)
    fresh_broker.kill9()
    fresh_broker.restart()
    # send_async + a bounded wait: a blocking send() can hang far beyond send_timeout_millis when
    # the broker keeps answering SEND_ERROR (the client reconnects and resends in a loop)
    tracker = SendTracker()
    producer.send_async(b"two", tracker.callback_for(0))
    assert tracker.wait_for(1, 45), "no receipt for a message sent after the restart"
    assert tracker.failures() == {}
    got = consumer.receive(timeout_millis=30_000)
    if got.data() == b"one":  # the ack may not have reached the broker before the kill: allowed
        consumer.acknowledge(got)
        got = consumer.receive(timeout_millis=30_000)
    assert got.data() == b"two"
