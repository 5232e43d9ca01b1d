"""Issue 2: readers (earliest, latest, a message id, inclusive or not), has_message_available(),
consumer.seek(message id / timestamp), reader.seek(), get_last_message_id().

Start/seek semantics of the 3.13.0 client (C++ 4.2.0, ConsumerImpl): the broker delivers from the
given id *inclusive*; the client then drops the entry at that id unless start_message_id_inclusive=True.
So for a consumer or reader with the default (exclusive) setting, seek(id_k) / start at id_k yields
message k+1 first, and with start_message_id_inclusive=True message k.
"""

from __future__ import annotations

import pulsar
import pytest

from helpers import (
    RECEIVE_TIMEOUT_MS, SendTracker, assert_no_more, assert_reader_no_more, drain_reader, entry_of, mid,
    read_n, receive_n, wait_until_clock_passes,
)


def _fill(client, t: str, n: int, prefix: bytes = b"m") -> list:
    producer = client.create_producer(t)
    return [producer.send(prefix + b"%d" % i) for i in range(n)]


def test_reader_from_earliest(client, topic):
    t = topic()
    ids = _fill(client, t, 5)
    reader = client.create_reader(t, pulsar.MessageId.earliest)
    got = read_n(reader, 5)
    assert [m.data() for m in got] == [b"m%d" % i for i in range(5)]
    assert [mid(m.message_id()) for m in got] == [mid(i) for i in ids]
    assert not reader.has_message_available()


def test_reader_from_latest_sees_only_later_messages(client, topic):
    t = topic()
    _fill(client, t, 3, b"old")
    reader = client.create_reader(t, pulsar.MessageId.latest)
    assert not reader.has_message_available(), "nothing was published after the reader started"
    producer = client.create_producer(t)
    producer.send(b"new0")
    producer.send(b"new1")
    assert reader.has_message_available()
    assert [m.data() for m in read_n(reader, 2)] == [b"new0", b"new1"]
    assert not reader.has_message_available()


@pytest.mark.parametrize("inclusive", [False, True], ids=["exclusive", "inclusive"])
def test_reader_from_message_id(client, topic, inclusive):
    t = topic()
    ids = _fill(client, t, 5)
    reader = client.create_reader(t, ids[2], start_message_id_inclusive=inclusive)
    expected = [b"m2", b"m3", b"m4"] if inclusive else [b"m3", b"m4"]
    assert drain_reader(reader) == expected
    assert_reader_no_more(reader)


def test_reader_from_message_id_in_a_batch(client, topic):
    """Start inside a batch entry: the broker delivers the whole entry, the client skips the rest."""
    t = topic()
    producer = client.create_producer(t, batching_enabled=True, batching_max_messages=4,
                                      batching_max_publish_delay_ms=60_000)
    tracker = SendTracker()
    for i in range(8):
        producer.send_async(b"b%d" % i, tracker.callback_for(i))
    producer.flush()
    assert tracker.wait_for(8, 30) and tracker.failures() == {}
    ids = tracker.ok_ids()
    assert ids[1].batch_index() == 1
    reader = client.create_reader(t, ids[1], start_message_id_inclusive=True)
    assert drain_reader(reader) == [b"b%d" % i for i in range(1, 8)]


@pytest.mark.parametrize("start", ["earliest", "latest"])
def test_has_message_available_on_empty_topic(client, topic, start):
    t = topic()
    start_id = pulsar.MessageId.earliest if start == "earliest" else pulsar.MessageId.latest
    reader = client.create_reader(t, start_id)
    assert not reader.has_message_available()
    client.create_producer(t).send(b"first")
    assert reader.has_message_available()
    assert reader.read_next(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"first"
    assert not reader.has_message_available()


def test_readers_do_not_disturb_each_other_or_subscriptions(client, topic):
    t = topic()
    consumer = client.subscribe(t, "durable", initial_position=pulsar.InitialPosition.Earliest)
    _fill(client, t, 4)
    r1 = client.create_reader(t, pulsar.MessageId.earliest)
    r2 = client.create_reader(t, pulsar.MessageId.earliest)
    assert drain_reader(r1) == [b"m0", b"m1", b"m2", b"m3"]
    assert drain_reader(r2) == [b"m0", b"m1", b"m2", b"m3"]
    r1.close()
    assert [m.data() for m in receive_n(consumer, 4)] == [b"m0", b"m1", b"m2", b"m3"]


@pytest.mark.parametrize("inclusive", [False, True], ids=["exclusive", "inclusive"])
def test_consumer_seek_message_id_redelivers_from_there(client, topic, inclusive):
    t = topic()
    ids = _fill(client, t, 10)
    consumer = client.subscribe(t, "sub", initial_position=pulsar.InitialPosition.Earliest,
                                start_message_id_inclusive=inclusive)
    receive_n(consumer, 10, ack=True)
    assert_no_more(consumer)

    consumer.seek(ids[3])
    first = 3 if inclusive else 4
    got = receive_n(consumer, 10 - first, ack=True)
    assert [m.data() for m in got] == [b"m%d" % i for i in range(first, 10)]
    assert_no_more(consumer)


def test_consumer_seek_earliest_replays_everything(client, topic):
    t = topic()
    _fill(client, t, 5)
    consumer = client.subscribe(t, "sub", initial_position=pulsar.InitialPosition.Earliest)
    receive_n(consumer, 5, ack=True)
    consumer.seek(pulsar.MessageId.earliest)
    assert [m.data() for m in receive_n(consumer, 5)] == [b"m%d" % i for i in range(5)]


def test_seek_position_survives_consumer_reopen(client, topic):
    """A seek moves the durable subscription's cursor, not just this consumer's view."""
    t = topic()
    ids = _fill(client, t, 6)
    consumer = client.subscribe(t, "sub", initial_position=pulsar.InitialPosition.Earliest,
                                start_message_id_inclusive=True)
    receive_n(consumer, 6, ack=True)
    consumer.seek(ids[2])
    assert consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"m2"  # not acked
    consumer.close()
    consumer = client.subscribe(t, "sub")
    assert [m.data() for m in receive_n(consumer, 4)] == [b"m2", b"m3", b"m4", b"m5"]


def test_consumer_seek_timestamp(client, topic):
    t = topic()
    consumer = client.subscribe(t, "sub", initial_position=pulsar.InitialPosition.Earliest)
    producer = client.create_producer(t)
    for i in range(5):
        producer.send(b"a%d" % i)
    first_batch = receive_n(consumer, 5, ack=True)
    # publish_time is set by the client clock: make sure the next messages are published later
    boundary = max(m.publish_timestamp() for m in first_batch) + 1
    wait_until_clock_passes(boundary)
    for i in range(5):
        producer.send(b"b%d" % i)
    second_batch = receive_n(consumer, 5, ack=True)
    assert min(m.publish_timestamp() for m in second_batch) >= boundary

    consumer.seek(boundary)
    assert [m.data() for m in receive_n(consumer, 5, ack=True)] == [b"b%d" % i for i in range(5)]
    assert_no_more(consumer)

    consumer.seek(0)  # before everything
    assert [m.data() for m in receive_n(consumer, 10)] == (
        [b"a%d" % i for i in range(5)] + [b"b%d" % i for i in range(5)])


def test_reader_seek(client, topic):
    t = topic()
    ids = _fill(client, t, 5)
    reader = client.create_reader(t, pulsar.MessageId.earliest)
    assert [m.data() for m in read_n(reader, 5)] == [b"m%d" % i for i in range(5)]
    assert not reader.has_message_available()

    reader.seek(pulsar.MessageId.earliest)
    assert drain_reader(reader) == [b"m%d" % i for i in range(5)]

    reader.seek(ids[1])  # exclusive by default: continues after m1
    assert drain_reader(reader) == [b"m2", b"m3", b"m4"]


def test_reader_seek_timestamp(client, topic):
    t = topic()
    producer = client.create_producer(t)
    producer.send(b"early")
    reader = client.create_reader(t, pulsar.MessageId.earliest)
    early = reader.read_next(timeout_millis=RECEIVE_TIMEOUT_MS)
    boundary = early.publish_timestamp() + 1
    wait_until_clock_passes(boundary)
    producer.send(b"late0")
    producer.send(b"late1")
    reader.seek(boundary)
    assert [m.data() for m in read_n(reader, 2)] == [b"late0", b"late1"]
    assert_reader_no_more(reader)


def test_get_last_message_id(client, topic):
    t = topic()
    consumer = client.subscribe(t, "sub")
    ids = _fill(client, t, 3)
    last = consumer.get_last_message_id()
    assert (last.ledger_id(), last.entry_id(), last.batch_index()) == (
        ids[-1].ledger_id(), ids[-1].entry_id(), ids[-1].batch_index())

    # after a batch of 3, the last id points into the batch at index 2
    producer = client.create_producer(t, batching_enabled=True, batching_max_messages=3,
                                      batching_max_publish_delay_ms=60_000)
    tracker = SendTracker()
    for i in range(3):
        producer.send_async(b"b%d" % i, tracker.callback_for(i))
    producer.flush()
    assert tracker.wait_for(3, 30) and tracker.failures() == {}
    batch_last = tracker.ok_ids()[2]
    last = consumer.get_last_message_id()
    assert entry_of(last) == entry_of(batch_last)
    assert last.batch_index() == 2
