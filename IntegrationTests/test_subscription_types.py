"""Issue 3: subscription types (Exclusive, Shared, Failover), cumulative acks, flow control.

Written to Apache Pulsar's behaviour as described in the issue and in
shared/pulsar-protocol-notes.md §5: ConsumerBusy for a second Exclusive consumer or a different type on
a subscription with connected consumers; Shared splits messages over consumers with permits and hands a
closing consumer's unacknowledged messages to the others; Failover has one active consumer (priority,
then name) and the standby continues from the first unacknowledged message; the broker never sends more
than the permits, so a consumer that does not receive blocks nobody else.
"""

from __future__ import annotations

import pulsar
import pytest

from consumer_threads import ConsumerThread, Recorder, stop_all
from helpers import (
    QUIET_MS, RECEIVE_TIMEOUT_MS, SendTracker, assert_no_more, drain_consumer, receive_n,
)

CT = pulsar.ConsumerType


def _send(client, t: str, payloads: list[bytes], **producer_kwargs) -> None:
    producer = client.create_producer(t, block_if_queue_full=True, **producer_kwargs)
    tracker = SendTracker()
    for i, p in enumerate(payloads):
        producer.send_async(p, tracker.callback_for(i))
    producer.flush()
    assert tracker.wait_for(len(payloads), 60), f"only {len(tracker.results)} send callbacks"
    assert tracker.failures() == {}
    producer.close()


# ------------------------------------------------------------------------------------------------
# Exclusive and type conflicts
# ------------------------------------------------------------------------------------------------

def test_exclusive_second_consumer_is_refused(client, make_client, broker, topic):
    t = topic()
    first = client.subscribe(t, "excl", consumer_type=CT.Exclusive)
    with pytest.raises(pulsar.ConsumerBusy):
        client.subscribe(t, "excl", consumer_type=CT.Exclusive)
    # also from another connection
    with pytest.raises(pulsar.ConsumerBusy):
        make_client(broker).subscribe(t, "excl", consumer_type=CT.Exclusive)

    # the refusal did not disturb the first consumer ...
    producer = client.create_producer(t)
    producer.send(b"still mine")
    msg = first.receive(timeout_millis=RECEIVE_TIMEOUT_MS)
    assert msg.data() == b"still mine"
    first.acknowledge(msg)
    # ... and once it is gone, a new Exclusive consumer is accepted
    first.close()
    second = client.subscribe(t, "excl", consumer_type=CT.Exclusive)
    producer.send(b"next")
    assert second.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"next"


@pytest.mark.parametrize("existing,attempt", [
    (CT.Exclusive, CT.Shared),
    (CT.Shared, CT.Exclusive),
    (CT.Shared, CT.Failover),
    (CT.Failover, CT.Shared),
    (CT.Shared, CT.KeyShared),
    (CT.KeyShared, CT.Shared),
], ids=lambda c: str(c).split(".")[-1])
def test_different_type_on_subscription_with_connected_consumer_is_refused(client, topic, existing, attempt):
    t = topic()
    holder = client.subscribe(t, "typed", consumer_type=existing)
    with pytest.raises(pulsar.ConsumerBusy):
        client.subscribe(t, "typed", consumer_type=attempt)
    # the existing consumer still works
    client.create_producer(t).send(b"x")
    msg = holder.receive(timeout_millis=RECEIVE_TIMEOUT_MS)
    assert msg.data() == b"x"
    holder.acknowledge(msg)
    # with no consumer connected, the subscription may change its type (as in Apache Pulsar)
    holder.close()
    client.subscribe(t, "typed", consumer_type=attempt)


# ------------------------------------------------------------------------------------------------
# Shared
# ------------------------------------------------------------------------------------------------

def test_shared_three_consumers_one_closed_midway_loses_nothing(client, topic):
    """3 Shared consumers x 3,000 messages, received concurrently. Consumer `c0` stops after 300
    messages, leaves its last 5 received messages unacknowledged, and closes: everything it had not
    acknowledged (the 5, plus whatever sat in its receive queue) goes to the others. Every message is
    acknowledged by someone; only c0's 5 unacknowledged messages may be received twice."""
    t = topic()
    n = 3_000
    ack_before_close = 300
    leave_unacked = 5
    consumers = [client.subscribe(t, "workers", consumer_type=CT.Shared, consumer_name=f"c{k}")
                 for k in range(3)]
    rec = Recorder()

    def closer(thread: ConsumerThread, msg) -> bool:
        k = len(thread.received)
        if k > ack_before_close + leave_unacked:
            raise AssertionError("closer received after deciding to stop")  # cannot happen
        if k == ack_before_close + leave_unacked:
            thread.request_stop()
        return k <= ack_before_close

    threads = [ConsumerThread(consumers[0], "c0", rec, handler=closer)]
    threads += [ConsumerThread(consumers[k], f"c{k}", rec) for k in (1, 2)]
    for th in threads:
        th.start()
    try:
        payloads = [b"%05d" % i for i in range(n)]
        _send(client, t, payloads)
        all_acked = rec.wait(lambda: len(rec.acked) >= n, 60, threads)
        # let late duplicates (if any) arrive before judging
        threads[0].join(10)
        rec.wait(lambda: False, QUIET_MS / 1000, threads)
    finally:
        stop_all(threads)

    c0 = threads[0]
    assert c0.closed.is_set(), (
        f"c0 received only {len(c0.received)} messages: the Shared dispatch did not spread 3,000 "
        f"messages over 3 consumers")
    assert len(c0.unacked) == leave_unacked
    acked = set(rec.acked)
    missing = sorted(set(payloads) - acked)
    assert all_acked and not missing, f"{len(missing)} messages never acknowledged, first {missing[:10]}"
    assert acked == set(payloads)

    counts: dict[bytes, int] = {}
    for _, data, _ in rec.snapshot():
        counts[data] = counts.get(data, 0) + 1
    duplicates = {p for p, c in counts.items() if c > 1}
    assert duplicates <= set(c0.unacked), (
        f"received twice although acknowledged: {sorted(duplicates - set(c0.unacked))[:10]}")
    # c0's unacknowledged messages were delivered to (and acknowledged by) the others
    others = set(threads[1].acked) | set(threads[2].acked)
    assert set(c0.unacked) <= others
    # c0's acknowledged messages were not delivered again
    assert not (set(c0.acked) & others)
    # both remaining consumers took part
    assert threads[1].acked and threads[2].acked


def test_shared_round_robin_reaches_both_consumers(client, topic):
    t = topic()
    a = client.subscribe(t, "rr", consumer_type=CT.Shared, receiver_queue_size=5, consumer_name="a")
    b = client.subscribe(t, "rr", consumer_type=CT.Shared, receiver_queue_size=5, consumer_name="b")
    payloads = [b"rr-%d" % i for i in range(60)]
    _send(client, t, payloads)
    got = {"a": [], "b": []}
    idle_rounds = 0
    while len(got["a"]) + len(got["b"]) < len(payloads) and idle_rounds < 40:
        progressed = False
        for name, c in (("a", a), ("b", b)):
            try:
                m = c.receive(timeout_millis=250)
            except pulsar.Timeout:
                continue
            c.acknowledge(m)
            got[name].append(m.data())
            progressed = True
        idle_rounds = 0 if progressed else idle_rounds + 1
    assert sorted(got["a"] + got["b"]) == sorted(payloads)
    assert len(got["a"] + got["b"]) == len(payloads), "a message was delivered twice"
    assert got["a"] and got["b"], f"one consumer got everything: a={len(got['a'])} b={len(got['b'])}"
    # each consumer sees its share in publish order
    for name in "ab":
        assert got[name] == sorted(got[name], key=payloads.index)


def test_shared_consumer_not_receiving_holds_only_its_permits(client, topic):
    """A Shared consumer with receiver_queue_size=5 that never calls receive() is sent at most 5
    messages (its permits); the other consumer gets all the rest, then those once the idle one closes."""
    t = topic()
    idle = client.subscribe(t, "permits", consumer_type=CT.Shared, receiver_queue_size=5, consumer_name="idle")
    busy = client.subscribe(t, "permits", consumer_type=CT.Shared, consumer_name="busy")
    payloads = [b"p-%03d" % i for i in range(200)]
    _send(client, t, payloads)
    first = [m.data() for m in drain_consumer(busy, limit=len(payloads), ack=True)]
    assert len(first) >= len(payloads) - 5, (
        f"busy got {len(first)} of {len(payloads)}: the idle consumer was sent more than its 5 permits")
    idle.close()
    rest = [m.data() for m in receive_n(busy, len(payloads) - len(first), ack=True)]
    assert sorted(first + rest) == payloads
    assert_no_more(busy)


# ------------------------------------------------------------------------------------------------
# Failover
# ------------------------------------------------------------------------------------------------

def test_failover_standby_continues_from_first_unacked(client, topic):
    t = topic()
    # "b" subscribes first; "a" sorts first by name (same priority), so "a" becomes the active one
    b = client.subscribe(t, "fo", consumer_type=CT.Failover, consumer_name="b")
    a = client.subscribe(t, "fo", consumer_type=CT.Failover, consumer_name="a")
    payloads = [b"f%d" % i for i in range(10)]
    _send(client, t, payloads)

    got = receive_n(a, 10)
    assert [m.data() for m in got] == payloads
    assert_no_more(b)  # the standby gets nothing while "a" is active

    acked = {0, 1, 2, 3, 5}  # 5 is an individual ack beyond the first unacknowledged message (4)
    for i in sorted(acked):
        a.acknowledge(got[i])
    a.close()  # flushes the acks; "b" takes over

    expected = [payloads[i] for i in range(10) if i not in acked]
    assert [m.data() for m in receive_n(b, len(expected), ack=True)] == expected
    assert_no_more(b)
    # new messages go to "b" now
    _send(client, t, [b"after"])
    assert b.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"after"


# ------------------------------------------------------------------------------------------------
# Cumulative acks
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ctype", [CT.Exclusive, CT.Failover], ids=["Exclusive", "Failover"])
def test_cumulative_ack_then_reconnect_redelivers_the_rest(client, topic, ctype):
    t = topic()
    consumer = client.subscribe(t, "cumul", consumer_type=ctype)
    payloads = [b"c%d" % i for i in range(1, 11)]
    _send(client, t, payloads)
    got = receive_n(consumer, 10)
    assert [m.data() for m in got] == payloads
    consumer.acknowledge_cumulative(got[4])  # the 5th: c1..c5 acknowledged
    consumer.close()

    consumer = client.subscribe(t, "cumul", consumer_type=ctype)
    assert [m.data() for m in receive_n(consumer, 5)] == payloads[5:]
    assert_no_more(consumer)


@pytest.mark.parametrize("ctype", [CT.Shared, CT.KeyShared], ids=["Shared", "KeyShared"])
def test_cumulative_ack_not_allowed_on_shared(client, topic, ctype):
    t = topic()
    consumer = client.subscribe(t, "no-cumul", consumer_type=ctype)
    _send(client, t, [b"one", b"two"])
    m1, m2 = receive_n(consumer, 2)
    with pytest.raises(pulsar.CumulativeAcknowledgementNotAllowedError):
        consumer.acknowledge_cumulative(m2)
    # nothing was acknowledged by the refused call: a new consumer gets both again
    consumer.close()
    consumer = client.subscribe(t, "no-cumul", consumer_type=ctype)
    assert sorted(m.data() for m in receive_n(consumer, 2)) == [b"one", b"two"]


# ------------------------------------------------------------------------------------------------
# Flow control across subscriptions
# ------------------------------------------------------------------------------------------------

def test_stalled_consumer_does_not_block_other_subscription(client, topic):
    t = topic()
    stalled = client.subscribe(t, "stalled", receiver_queue_size=10)
    live = client.subscribe(t, "live")
    payloads = [b"fc-%03d" % i for i in range(300)]
    _send(client, t, payloads)
    assert [m.data() for m in receive_n(live, len(payloads), ack=True)] == payloads
    assert_no_more(live)
    # the stalled subscription lost nothing: it receives everything once it starts
    assert [m.data() for m in receive_n(stalled, len(payloads), ack=True)] == payloads
    assert_no_more(stalled)
