"""Issue 2, basic flows: the issue's snippet, short names, fan-out, 10k in order, durable resume,
unsubscribe, message fields."""

from __future__ import annotations

import pulsar
import pytest

from helpers import (
    RECEIVE_TIMEOUT_MS, SendTracker, assert_no_more, drain_reader, entry_of, mid, now_ms, receive_n,
)


def test_issue_snippet(client):
    """The exact program from issue 2 (same topic), with its observable results asserted."""
    producer = client.create_producer("persistent://public/default/events")
    producer.send(b"hello from python")
    consumer = client.subscribe("persistent://public/default/events", "my-sub",
                                initial_position=pulsar.InitialPosition.Earliest)
    msg = consumer.receive(timeout_millis=5000)
    consumer.acknowledge(msg)
    assert msg.data() == b"hello from python"
    assert msg.topic_name() == "persistent://public/default/events"

    reader = client.create_reader("persistent://public/default/events", pulsar.MessageId.earliest)
    printed = []
    while reader.has_message_available():
        printed.append(reader.read_next(timeout_millis=1000).data())
        assert len(printed) < 100, "has_message_available() never turns False"
    assert printed == [b"hello from python"]


def test_send_returns_the_id_the_consumer_sees(client, topic):
    t = topic()
    consumer = client.subscribe(t, "sub")
    producer = client.create_producer(t)
    sent = [producer.send(f"m{i}".encode()) for i in range(5)]
    got = receive_n(consumer, 5, ack=True)
    assert [m.data() for m in got] == [f"m{i}".encode() for i in range(5)]
    assert [mid(m.message_id()) for m in got] == [mid(s) for s in sent]
    # non-partitioned topic, no batching
    assert all(s.partition() == -1 and s.batch_index() == -1 for s in sent)
    # ids grow in send order
    assert [entry_of(s) for s in sent] == sorted(set(entry_of(s) for s in sent))


@pytest.mark.parametrize("form", ["short", "tenant/namespace/topic"])
def test_short_topic_names_resolve_to_public_default(client, topic, form):
    name = topic("my-topic", full=False)
    full = f"persistent://public/default/{name}"
    given = name if form == "short" else f"public/default/{name}"

    # produce on the short form, consume on the full form ...
    consumer_full = client.subscribe(full, "sub-full", initial_position=pulsar.InitialPosition.Earliest)
    client.create_producer(given).send(b"via short name")
    msg = consumer_full.receive(timeout_millis=RECEIVE_TIMEOUT_MS)
    assert msg.data() == b"via short name"
    assert msg.topic_name() == full

    # ... and the other way round: both names are one topic
    consumer_short = client.subscribe(given, "sub-short", initial_position=pulsar.InitialPosition.Earliest)
    client.create_producer(full).send(b"via full name")
    got = [m.data() for m in receive_n(consumer_short, 2)]
    assert got == [b"via short name", b"via full name"]


def test_each_subscription_gets_every_message(client, topic):
    t = topic()
    subs = [client.subscribe(t, f"sub-{k}") for k in "abc"]
    producer = client.create_producer(t)
    payloads = [f"fan-{i}".encode() for i in range(20)]
    for p in payloads:
        producer.send(p)
    # a subscription acknowledging does not take messages from the others
    for consumer in subs:
        got = receive_n(consumer, len(payloads), ack=True)
        assert [m.data() for m in got] == payloads
    for consumer in subs:
        assert_no_more(consumer)


def test_ten_thousand_messages_in_order(client, topic):
    t = topic()
    n = 10_000
    consumer = client.subscribe(t, "sub")
    producer = client.create_producer(t, block_if_queue_full=True)
    tracker = SendTracker()
    for i in range(n):
        producer.send_async(b"%d" % i, tracker.callback_for(i))
    producer.flush()
    assert tracker.wait_for(n, 60), f"only {len(tracker.results)} callbacks"
    assert tracker.failures() == {}
    ids = tracker.ok_ids()
    # receipts give strictly increasing ids in send order
    entries = [entry_of(ids[i]) for i in range(n)]
    assert all(a < b for a, b in zip(entries, entries[1:])), "message ids not increasing in send order"

    last = None
    for i in range(n):
        try:
            msg = consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS)
        except pulsar.Timeout:
            raise AssertionError(f"only {i} of {n} messages received") from None
        assert msg.data() == b"%d" % i, f"message {i} out of order: got {msg.data()!r}"
        assert entry_of(msg.message_id()) == entries[i]
        last = msg
    consumer.acknowledge_cumulative(last)
    assert_no_more(consumer)


def test_reopened_subscription_resumes_after_acked_messages(client, topic):
    t = topic()
    producer = client.create_producer(t)
    consumer = client.subscribe(t, "durable", initial_position=pulsar.InitialPosition.Earliest)
    for i in range(10):
        producer.send(b"r%d" % i)
    got = receive_n(consumer, 10)
    acked = {0, 1, 2, 3, 6}
    for i in sorted(acked):
        consumer.acknowledge(got[i])
    consumer.close()  # flushes the grouped acks

    consumer = client.subscribe(t, "durable", initial_position=pulsar.InitialPosition.Earliest)
    redelivered = [m.data() for m in receive_n(consumer, 5)]
    assert redelivered == [b"r%d" % i for i in range(10) if i not in acked]
    assert_no_more(consumer)


def test_unsubscribe_then_latest_resubscribe_sees_no_old_messages(client, topic):
    t = topic()
    producer = client.create_producer(t)
    consumer = client.subscribe(t, "gone", initial_position=pulsar.InitialPosition.Earliest)
    for i in range(5):
        producer.send(b"old-%d" % i)
    receive_n(consumer, 5)  # received, deliberately not acknowledged
    consumer.unsubscribe()

    # Had the subscription survived, its 5 unacked messages would be redelivered now.
    consumer = client.subscribe(t, "gone", initial_position=pulsar.InitialPosition.Latest)
    assert_no_more(consumer)
    producer.send(b"new")
    assert consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"new"
    assert_no_more(consumer)


def test_unsubscribe_then_earliest_resubscribe_starts_over(client, topic):
    t = topic()
    producer = client.create_producer(t)
    consumer = client.subscribe(t, "again", initial_position=pulsar.InitialPosition.Earliest)
    for i in range(3):
        producer.send(b"x%d" % i)
    receive_n(consumer, 3, ack=True)
    consumer.unsubscribe()
    # all were acked on the old subscription; a new Earliest one sees them all again
    consumer = client.subscribe(t, "again", initial_position=pulsar.InitialPosition.Earliest)
    assert [m.data() for m in receive_n(consumer, 3)] == [b"x0", b"x1", b"x2"]


def test_properties_keys_and_timestamps_round_trip(client, topic):
    t = topic()
    consumer = client.subscribe(t, "sub")
    producer = client.create_producer(t, producer_name=f"named-{t[-12:]}")
    before = now_ms()
    producer.send(b"with fields",
                  properties={"color": "blue", "empty": "", "unicode-\u00e9": "\u2713 ok"},
                  partition_key="pk-1", ordering_key="ok-1", event_timestamp=1_700_000_000_123)
    producer.send(b"plain")
    after = now_ms()

    m1, m2 = receive_n(consumer, 2)
    assert m1.data() == b"with fields"
    assert m1.properties() == {"color": "blue", "empty": "", "unicode-\u00e9": "\u2713 ok"}
    assert m1.partition_key() == "pk-1"
    assert m1.ordering_key() == "ok-1"
    assert m1.event_timestamp() == 1_700_000_000_123
    assert before - 1000 <= m1.publish_timestamp() <= after + 1000  # set by the client, kept by the broker
    assert m1.producer_name() == producer.producer_name() == f"named-{t[-12:]}"
    assert m1.redelivery_count() == 0

    assert m2.data() == b"plain"
    assert m2.properties() == {}
    assert m2.partition_key() == ""
    assert m2.event_timestamp() == 0


def test_generated_producer_name_is_unique_and_in_metadata(client, topic):
    t = topic()
    consumer = client.subscribe(t, "sub")
    p1 = client.create_producer(t)
    p2 = client.create_producer(t)
    assert p1.producer_name() and p2.producer_name()
    assert p1.producer_name() != p2.producer_name()
    p1.send(b"1")
    p2.send(b"2")
    m1, m2 = receive_n(consumer, 2)
    assert (m1.producer_name(), m2.producer_name()) == (p1.producer_name(), p2.producer_name())


def test_null_value_and_empty_payload(client, topic):
    t = topic()
    consumer = client.subscribe(t, "sub")
    producer = client.create_producer(t)
    producer.send(None, partition_key="tombstone")
    producer.send(b"")
    producer.send(b"after")
    tomb, empty, after = receive_n(consumer, 3)
    assert tomb.has_null_value()
    assert tomb.partition_key() == "tombstone"
    assert not empty.has_null_value()
    assert empty.data() == b""
    assert after.data() == b"after"


def test_more_sends_in_flight_than_the_connection_admits(client, topic):
    """5,000 sends in flight on one connection (the broker pauses reading at 1,000 and resumes
    at 500): every one gets its receipt, in order, and nothing is lost."""
    t = topic()
    producer = client.create_producer(t, batching_enabled=False, max_pending_messages=5_000, block_if_queue_full=True)
    consumer = client.subscribe(t, "backpressure", initial_position=pulsar.InitialPosition.Earliest)
    results = []
    for i in range(5_000):
        producer.send_async(b"%d" % i, lambda res, msg_id: results.append((res, msg_id)))
    producer.flush()
    assert len(results) == 5_000
    assert all(res == pulsar.Result.Ok for res, _ in results)
    entries = [(m.ledger_id(), m.entry_id()) for _, m in results]
    assert entries == sorted(entries)
    got = [int(consumer.receive(timeout_millis=10_000).data()) for _ in range(5_000)]
    assert got == list(range(5_000))
