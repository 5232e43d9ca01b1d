"""Issue 3: subscription state survives kill -9: the mark-delete position, individual acks beyond it,
and batch-index acks. No acknowledged message is delivered again after the restart.

Each test has its own broker (`fresh_broker`). The consumer is closed before the kill, so that the
client has sent its (grouped) acknowledgements; the client is closed before the restart.
"""

from __future__ import annotations

import pulsar
import pytest

from conftest import close_quietly
from helpers import SendTracker, assert_no_more, entry_of, receive_n

CT = pulsar.ConsumerType


@pytest.mark.parametrize("ctype", [CT.Exclusive, CT.Shared], ids=["Exclusive", "Shared"])
def test_individual_acks_beyond_mark_delete_survive_kill9(fresh_broker, make_client, topic, ctype):
    t = topic()
    client = make_client(fresh_broker)
    consumer = client.subscribe(t, "holes", consumer_type=ctype)
    producer = client.create_producer(t)
    payloads = [b"d%02d" % i for i in range(20)]
    for p in payloads:
        producer.send(p)
    got = receive_n(consumer, 20)
    assert [m.data() for m in got] == payloads
    for i in range(0, 20, 2):  # every other: the mark-delete stops at d00, the rest are holes
        consumer.acknowledge(got[i])
    consumer.close()
    fresh_broker.kill9()
    close_quietly(client)
    fresh_broker.restart()

    client2 = make_client(fresh_broker)
    consumer = client2.subscribe(t, "holes", consumer_type=ctype)
    back = [m.data() for m in receive_n(consumer, 10)]
    assert back == payloads[1::2]
    assert_no_more(consumer)


def test_cumulative_and_individual_acks_survive_kill9(fresh_broker, make_client, topic):
    t = topic()
    client = make_client(fresh_broker)
    consumer = client.subscribe(t, "mixed")
    producer = client.create_producer(t)
    payloads = [b"x%02d" % i for i in range(12)]
    for p in payloads:
        producer.send(p)
    got = receive_n(consumer, 12)
    consumer.acknowledge_cumulative(got[4])  # x00..x04
    consumer.acknowledge(got[6])
    consumer.acknowledge(got[7])
    consumer.acknowledge(got[10])
    consumer.close()
    fresh_broker.kill9()
    close_quietly(client)
    fresh_broker.restart()

    client2 = make_client(fresh_broker)
    consumer = client2.subscribe(t, "mixed")
    expected = [payloads[i] for i in (5, 8, 9, 11)]
    assert [m.data() for m in receive_n(consumer, len(expected))] == expected
    assert_no_more(consumer)
    # and the restarted subscription keeps working for new messages
    client2.create_producer(t).send(b"fresh")
    assert consumer.receive(timeout_millis=10_000).data() == b"fresh"


def test_batch_index_acks_survive_kill9(fresh_broker, make_client, topic):
    t = topic()
    client = make_client(fresh_broker)
    consumer = client.subscribe(t, "bia", batch_index_ack_enabled=True)
    producer = client.create_producer(t, batching_enabled=True, batching_max_messages=10,
                                      batching_max_publish_delay_ms=60_000)
    payloads = [b"b%d" % i for i in range(10)]
    tracker = SendTracker()
    for i, p in enumerate(payloads):
        producer.send_async(p, tracker.callback_for(i))
    producer.flush()
    assert tracker.wait_for(10, 30) and tracker.failures() == {}
    assert len({entry_of(m) for m in tracker.ok_ids().values()}) == 1, "expected one batch entry"
    got = receive_n(consumer, 10)
    for i in range(0, 10, 2):
        consumer.acknowledge(got[i])
    consumer.close()
    fresh_broker.kill9()
    close_quietly(client)
    fresh_broker.restart()

    client2 = make_client(fresh_broker)
    consumer = client2.subscribe(t, "bia", batch_index_ack_enabled=True)
    assert [m.data() for m in receive_n(consumer, 5)] == payloads[1::2]
    assert_no_more(consumer)
