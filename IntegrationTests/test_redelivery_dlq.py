"""Issue 3: negative acks, ack timeout, dead-letter topics, batch-index acks, delayed delivery.

The client implements nack delays, ack timeouts and the DLQ decision itself (protocol notes §5.4); the
broker must redeliver on REDELIVER_UNACKNOWLEDGED_MESSAGES with redelivery_count raised exactly once per
requested redelivery (not on a consumer's close), accept the DLQ producer (and create its
initial_subscription_name), honour ack_set batch-index acks, and hold deliver_at messages for
Shared/Key_Shared subscriptions until they are due, durably.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pulsar
import pytest

from conftest import close_quietly
from helpers import (
    RECEIVE_TIMEOUT_MS, SendTracker, assert_no_more, entry_of, now_ms, receive_n,
)

CT = pulsar.ConsumerType
NACK_DELAY_MS = 200


# ------------------------------------------------------------------------------------------------
# negative acks and dead letters
# ------------------------------------------------------------------------------------------------

def test_dead_letter_after_max_redeliveries(client, topic):
    """The issue's snippet: Shared, max_redeliver_count=3. A message that is always nacked is delivered
    exactly 4 times (redelivery_count 0, 1, 2, 3), then lands on the DLQ topic; the original
    subscription does not see it again. A good message next to it is processed normally."""
    t = topic("orders")
    dlq = t + "-dlq"
    # subscribe to the DLQ first, so that its subscription sees the dead letter whatever its position
    dlq_consumer = client.subscribe(dlq, "dlq-check", initial_position=pulsar.InitialPosition.Earliest)
    consumer = client.subscribe(
        t, subscription_name="order-processor", consumer_type=CT.Shared,
        dead_letter_policy=pulsar.ConsumerDeadLetterPolicy(max_redeliver_count=3, dead_letter_topic=dlq),
        negative_ack_redelivery_delay_ms=NACK_DELAY_MS)
    producer = client.create_producer(t)
    producer.send(b"poison", properties={"kind": "bad"}, partition_key="order-7")
    producer.send(b"good")

    poison_counts = []
    good = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            msg = consumer.receive(timeout_millis=3000)
        except pulsar.Timeout:
            break  # quiet: after the DLQ hand-off nothing more comes
        if msg.data() == b"good":
            good += 1
            consumer.acknowledge(msg)
        else:
            assert msg.data() == b"poison"
            poison_counts.append(msg.redelivery_count())
            consumer.negative_acknowledge(msg)
    assert good == 1
    assert poison_counts == [0, 1, 2, 3], f"deliveries of the poison message: {poison_counts}"

    dead = dlq_consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS)
    assert dead.data() == b"poison"
    assert dead.properties().get("kind") == "bad"
    assert dead.properties().get("REAL_TOPIC") == t
    assert "ORIGIN_MESSAGE_ID" in dead.properties()
    assert dead.partition_key() == "order-7"
    dlq_consumer.acknowledge(dead)
    assert_no_more(dlq_consumer)
    # the client acknowledged the original after the hand-off: a new consumer does not get it
    consumer.close()
    again = client.subscribe(t, "order-processor", consumer_type=CT.Shared)
    assert_no_more(again)


def test_dead_letter_initial_subscription_name(client, topic):
    """With initial_subscription_name the DLQ producer creates that subscription before the first dead
    letter, so subscribing to it afterwards (default position Latest) still finds the message."""
    t = topic()
    dlq = t + "-DLQ"
    consumer = client.subscribe(
        t, "proc", consumer_type=CT.Shared,
        dead_letter_policy=pulsar.ConsumerDeadLetterPolicy(
            max_redeliver_count=1, dead_letter_topic=dlq, initial_subscription_name="dlq-init"),
        negative_ack_redelivery_delay_ms=NACK_DELAY_MS)
    client.create_producer(t).send(b"doomed")
    counts = []
    for _ in range(2):
        msg = consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS)
        assert msg.data() == b"doomed"
        counts.append(msg.redelivery_count())
        consumer.negative_acknowledge(msg)
    assert counts == [0, 1]
    assert_no_more(consumer, quiet_ms=2000)  # handed to the DLQ, not redelivered again

    late = client.subscribe(dlq, "dlq-init")  # InitialPosition.Latest: only an existing sub has it
    dead = late.receive(timeout_millis=RECEIVE_TIMEOUT_MS)
    assert dead.data() == b"doomed"
    assert dead.properties().get("REAL_TOPIC") == t


def test_negative_ack_shared_redelivers_only_the_nacked_message(client, topic):
    t = topic()
    consumer = client.subscribe(t, "nack-shared", consumer_type=CT.Shared,
                                negative_ack_redelivery_delay_ms=NACK_DELAY_MS)
    producer = client.create_producer(t)
    for i in range(5):
        producer.send(b"n%d" % i)
    got = receive_n(consumer, 5)
    for m in got:
        if m.data() == b"n2":
            consumer.negative_acknowledge(m)
        else:
            consumer.acknowledge(m)
    again = consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS)
    assert again.data() == b"n2"
    assert again.redelivery_count() == 1
    consumer.acknowledge(again)
    assert_no_more(consumer)


def test_negative_ack_exclusive_redelivers_with_count_zero(client, topic):
    """Exclusive consumers ask for 'redeliver everything unacknowledged'. The nacked message comes back
    each time with redelivery_count 0: Apache Pulsar's single-active-consumer dispatchers (Exclusive,
    Failover) track no redelivery counts (issue 16, item 9), only Shared and Key_Shared do."""
    t = topic()
    consumer = client.subscribe(t, "nack-excl", consumer_type=CT.Exclusive,
                                negative_ack_redelivery_delay_ms=NACK_DELAY_MS)
    producer = client.create_producer(t)
    producer.send(b"again and again")
    counts = []
    for _ in range(3):
        msg = consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS)
        assert msg.data() == b"again and again"
        counts.append(msg.redelivery_count())
        consumer.negative_acknowledge(msg)
    msg = consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS)
    assert msg.data() == b"again and again"
    counts.append(msg.redelivery_count())
    consumer.acknowledge(msg)
    assert counts == [0, 0, 0, 0], f"redelivery counts {counts}"
    producer.send(b"next")
    assert consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"next"


def test_consumer_close_does_not_raise_redelivery_count(client, topic):
    """Messages handed over because a Shared consumer closed were not *requested* for redelivery: their
    redelivery_count stays 0 (otherwise the client's DLQ logic would fire early)."""
    t = topic()
    first = client.subscribe(t, "handover", consumer_type=CT.Shared, consumer_name="first")
    producer = client.create_producer(t)
    for i in range(5):
        producer.send(b"h%d" % i)
    got = receive_n(first, 5)  # all five went to the only consumer; none acknowledged
    assert [m.data() for m in got] == [b"h%d" % i for i in range(5)]
    second = client.subscribe(t, "handover", consumer_type=CT.Shared, consumer_name="second")
    first.close()
    again = receive_n(second, 5, ack=True)
    assert sorted(m.data() for m in again) == [b"h%d" % i for i in range(5)]
    assert [m.redelivery_count() for m in again] == [0] * 5


# ------------------------------------------------------------------------------------------------
# ack timeout
# ------------------------------------------------------------------------------------------------

def test_ack_timeout_redelivers_unacked_message(client, topic):
    t = topic()
    consumer = client.subscribe(t, "ack-timeout", consumer_type=CT.Shared,
                                unacked_messages_timeout_ms=10_000)
    producer = client.create_producer(t)
    producer.send(b"acked")
    producer.send(b"forgotten")
    for m in receive_n(consumer, 2):
        if m.data() == b"acked":
            consumer.acknowledge(m)
    # the client's ack-timeout tracker asks for it again after ~10 s
    back = consumer.receive(timeout_millis=30_000)
    assert back.data() == b"forgotten"
    assert back.redelivery_count() == 1
    consumer.acknowledge(back)
    assert_no_more(consumer, quiet_ms=2000)


# ------------------------------------------------------------------------------------------------
# batch-index acknowledgements
# ------------------------------------------------------------------------------------------------

def _send_one_batch(client, t: str, payloads: list[bytes]) -> list:
    producer = client.create_producer(t, batching_enabled=True, batching_max_messages=len(payloads),
                                      batching_max_publish_delay_ms=60_000)
    tracker = SendTracker()
    for i, p in enumerate(payloads):
        producer.send_async(p, tracker.callback_for(i))
    producer.flush()
    assert tracker.wait_for(len(payloads), 30)
    assert tracker.failures() == {}
    ids = [tracker.ok_ids()[i] for i in range(len(payloads))]
    assert len({entry_of(m) for m in ids}) == 1, "expected the messages in one batch entry"
    producer.close()
    return ids


def test_batch_index_acks_redeliver_only_unacked_indexes(client, topic):
    t = topic()
    consumer = client.subscribe(t, "bia", batch_index_ack_enabled=True)
    payloads = [b"b%d" % i for i in range(5)]
    _send_one_batch(client, t, payloads)
    got = receive_n(consumer, 5)
    assert [m.data() for m in got] == payloads
    for i in (0, 1, 3):
        consumer.acknowledge(got[i])
    consumer.close()  # flushes the acks

    consumer = client.subscribe(t, "bia", batch_index_ack_enabled=True)
    assert [m.data() for m in receive_n(consumer, 2)] == [b"b2", b"b4"]
    assert_no_more(consumer)


def test_batch_index_acks_completing_a_batch_acks_the_entry(client, topic):
    t = topic()
    consumer = client.subscribe(t, "bia-all", batch_index_ack_enabled=True)
    payloads = [b"c%d" % i for i in range(4)]
    _send_one_batch(client, t, payloads)
    got = receive_n(consumer, 4)
    for i in (2, 0):
        consumer.acknowledge(got[i])
    consumer.close()
    consumer = client.subscribe(t, "bia-all", batch_index_ack_enabled=True)
    rest = receive_n(consumer, 2)
    assert [m.data() for m in rest] == [b"c1", b"c3"]
    for m in rest:
        consumer.acknowledge(m)
    consumer.close()
    consumer = client.subscribe(t, "bia-all", batch_index_ack_enabled=True)
    assert_no_more(consumer)


# ------------------------------------------------------------------------------------------------
# delayed delivery
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ctype", [CT.Shared, CT.KeyShared], ids=["Shared", "KeyShared"])
def test_delayed_delivery_held_until_due(client, topic, ctype):
    t = topic()
    consumer = client.subscribe(t, "delayed", consumer_type=ctype)
    producer = client.create_producer(t)
    sent_at = now_ms()
    producer.send(b"later", deliver_after=timedelta(seconds=3), partition_key="k")
    producer.send(b"now", partition_key="k2")

    first = consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS)
    assert first.data() == b"now"
    consumer.acknowledge(first)
    # not before it is due (the quiet window ends well before the 3 s are up) ...
    quiet = min(1000, sent_at + 3000 - 500 - now_ms())
    if quiet > 100:
        with pytest.raises(pulsar.Timeout):
            consumer.receive(timeout_millis=quiet)
    # ... and then it arrives
    late = consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS)
    assert late.data() == b"later"
    assert now_ms() >= sent_at + 3000 - 100, "delivered before its deliver_after time"
    consumer.acknowledge(late)
    assert_no_more(consumer)


def test_delayed_delivery_deliver_at(client, topic):
    t = topic()
    consumer = client.subscribe(t, "delayed-at", consumer_type=CT.Shared)
    producer = client.create_producer(t)
    due = now_ms() + 2500
    producer.send(b"at", deliver_at=due)
    producer.send(b"plain")
    assert consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"plain"
    msg = consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS)
    assert msg.data() == b"at"
    assert now_ms() >= due - 100


def test_delayed_message_survives_kill9(fresh_broker, make_client, topic):
    t = topic()
    client = make_client(fresh_broker)
    consumer = client.subscribe(t, "delayed-durable", consumer_type=CT.Shared)
    producer = client.create_producer(t)
    sent_at = now_ms()
    producer.send(b"survivor", deliver_after=timedelta(seconds=4))
    producer.send(b"immediate")
    msg = consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS)
    assert msg.data() == b"immediate"
    consumer.acknowledge(msg)
    consumer.close()  # flushes the ack
    fresh_broker.kill9()
    close_quietly(client)
    fresh_broker.restart()

    client2 = make_client(fresh_broker)
    consumer = client2.subscribe(t, "delayed-durable", consumer_type=CT.Shared)
    msg = consumer.receive(timeout_millis=15_000)
    assert msg.data() == b"survivor"
    assert now_ms() >= sent_at + 4000 - 100, "delivered before its deliver_after time"
    consumer.acknowledge(msg)
    assert_no_more(consumer)  # the acknowledged "immediate" does not come back either
