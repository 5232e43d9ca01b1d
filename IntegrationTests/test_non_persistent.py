"""Issue 4, non-persistent topics (`non-persistent://`): nothing is stored; a message goes to the
consumers connected when it is published, and is dropped for a consumer that has no permits."""

from __future__ import annotations

import urllib.request
import uuid

import pulsar

from prometheus_client.parser import text_string_to_metric_families

from admin_rest import admin
from helpers import RECEIVE_TIMEOUT_MS, SendTracker, assert_no_more, drain_consumer, receive_n


def np_topic(prefix: str = "np") -> str:
    return f"non-persistent://public/default/{prefix}-{uuid.uuid4().hex[:12]}"


def test_connected_consumer_receives_what_is_published(client):
    t = np_topic()
    consumer = client.subscribe(t, "sub")
    producer = client.create_producer(t)
    payloads = [b"np-%d" % i for i in range(50)]
    sent = [producer.send(p) for p in payloads]
    got = receive_n(consumer, len(payloads), ack=True)
    assert [m.data() for m in got] == payloads
    assert all(m.topic_name() == t for m in got)
    # receipts and deliveries name the same messages; a non-partitioned topic has partition -1
    assert [(m.message_id().ledger_id(), m.message_id().entry_id()) for m in got] == \
        [(s.ledger_id(), s.entry_id()) for s in sent]
    assert all(s.partition() == -1 for s in sent)
    assert_no_more(consumer)


def test_message_published_without_subscriber_is_not_delivered_later(client):
    t = np_topic()
    producer = client.create_producer(t)
    for i in range(5):
        producer.send(b"nobody-listens-%d" % i)  # accepted (receipt) but kept nowhere

    # Even from the earliest position, nothing published before the subscription exists comes back.
    consumer = client.subscribe(t, "late", initial_position=pulsar.InitialPosition.Earliest)
    assert_no_more(consumer)
    producer.send(b"after-subscribe")
    assert consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"after-subscribe"
    assert_no_more(consumer)

    # A consumer that disconnects misses what is published meanwhile, even on the same subscription.
    consumer.close()
    producer.send(b"while-away")
    consumer = client.subscribe(t, "late", initial_position=pulsar.InitialPosition.Earliest)
    assert_no_more(consumer)
    producer.send(b"back")
    assert consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"back"


def test_consumer_without_permits_gets_messages_dropped(broker, client):
    """A consumer that never receives fills its receiver queue; the broker then drops its messages
    instead of holding them, while publishing goes on and a consumer with permits gets everything."""
    t = np_topic()
    queue = 10
    n = 500
    slow = client.subscribe(t, "slow", receiver_queue_size=queue)
    fast = client.subscribe(t, "fast", receiver_queue_size=1000)  # permits for all n
    producer = client.create_producer(t, block_if_queue_full=True)
    tracker = SendTracker()
    for i in range(n):
        producer.send_async(b"%d" % i, tracker.callback_for(i))
    producer.flush()
    assert tracker.wait_for(n, 30), f"only {len(tracker.results)} of {n} send callbacks"
    assert tracker.failures() == {}, "publishing must go on when a consumer is slow"

    # The subscription with permits lost nothing.
    assert [m.data() for m in receive_n(fast, n, ack=True)] == [b"%d" % i for i in range(n)]

    # The slow one got at most what its permits allowed (the client asks for more only after the
    # application receives half of its queue); the rest was dropped, not queued on the broker.
    got = [int(m.data()) for m in drain_consumer(slow, limit=n, ack=True)]
    assert 1 <= len(got) <= 2 * queue, f"slow consumer received {len(got)} of {n} messages"
    assert got == sorted(got), "a non-persistent consumer still sees publish order"
    assert got[0] == 0, "the first messages (sent while it had permits) are the ones delivered"

    # The drops are counted: in the topic's stats and on /metrics.
    stats = admin(broker, "GET", "/admin/v2/non-persistent/" + t.split("://", 1)[1] + "/stats")
    assert stats["msgInCounter"] == n
    assert stats["msgDropCounter"] == n - len(got)
    assert stats["subscriptions"]["fast"]["msgOutCounter"] == n
    metrics = urllib.request.urlopen(broker.http_url + "/metrics", timeout=10).read().decode()
    dropped = [sample.value for family in text_string_to_metric_families(metrics) for sample in family.samples
               if sample.name == "pulsar_dropped_messages_total" and sample.labels.get("topic") == t]
    assert dropped == [n - len(got)]

    # Having received, it has permits again: new messages reach it.
    producer.send(b"fresh")
    assert slow.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"fresh"
    assert fast.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"fresh"


def test_two_subscriptions_each_get_every_message(client):
    t = np_topic()
    a = client.subscribe(t, "sub-a")
    b = client.subscribe(t, "sub-b", consumer_type=pulsar.ConsumerType.Shared)
    producer = client.create_producer(t)
    payloads = [b"both-%d" % i for i in range(30)]
    for p in payloads:
        producer.send(p)
    assert [m.data() for m in receive_n(a, len(payloads), ack=True)] == payloads
    assert [m.data() for m in receive_n(b, len(payloads), ack=True)] == payloads
    assert_no_more(a)
    assert_no_more(b)


def test_shared_subscription_splits_between_consumers(client):
    t = np_topic()
    c1 = client.subscribe(t, "shared", consumer_type=pulsar.ConsumerType.Shared, consumer_name="c1")
    c2 = client.subscribe(t, "shared", consumer_type=pulsar.ConsumerType.Shared, consumer_name="c2")
    producer = client.create_producer(t)
    n = 40
    for i in range(n):
        producer.send(b"s-%d" % i)
    got1 = [m.data() for m in drain_consumer(c1, limit=n, ack=True)]
    got2 = [m.data() for m in drain_consumer(c2, limit=n, ack=True)]
    assert sorted(got1 + got2) == sorted(b"s-%d" % i for i in range(n)), "each message to exactly one consumer"
    assert got1 and got2, "both consumers of the Shared subscription get messages"


def test_persistent_and_non_persistent_with_same_name_are_different_topics(client):
    name = f"twin-{uuid.uuid4().hex[:12]}"
    np_t, p_t = f"non-persistent://public/default/{name}", f"persistent://public/default/{name}"
    np_consumer = client.subscribe(np_t, "sub")
    p_consumer = client.subscribe(p_t, "sub")
    client.create_producer(np_t).send(b"to-np")
    client.create_producer(p_t).send(b"to-p")
    assert np_consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"to-np"
    assert p_consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"to-p"
    assert_no_more(np_consumer)
    assert_no_more(p_consumer)
