"""Issue 3: Key_Shared subscriptions (auto-split and sticky).

Spec (Apache Pulsar, shared/pulsar-protocol-notes.md §5.2): the sticky key is the ordering key, else the
partition key; its hash is Murmur3_32(key bytes, seed 0) & 0x7fffffff, then % 65536. Every key goes to
one consumer at a time; per-key order holds while consumers join and leave (a newly joined consumer gets
no new message of a key before that key's earlier messages are acknowledged); overlapping sticky ranges
are refused with ConsumerAssignError; a consumer that does not receive stalls only its own keys.
"""

from __future__ import annotations

import random
import struct

import pulsar
import pytest

from consumer_threads import ConsumerThread, Recorder, stop_all
from helpers import QUIET_MS, SendTracker, assert_no_more, drain_consumer

CT = pulsar.ConsumerType
HASH_RANGE = 65536


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """Standard MurmurHash3 x86 32-bit (what Apache Pulsar's Murmur3_32Hash uses, via Guava)."""
    c1, c2 = 0xCC9E2D51, 0x1B873593
    h = seed & 0xFFFFFFFF
    n = len(data)
    rounded = n - (n % 4)
    for i in range(0, rounded, 4):
        k = struct.unpack_from("<I", data, i)[0]
        k = (k * c1) & 0xFFFFFFFF
        k = ((k << 15) | (k >> 17)) & 0xFFFFFFFF
        k = (k * c2) & 0xFFFFFFFF
        h ^= k
        h = ((h << 13) | (h >> 19)) & 0xFFFFFFFF
        h = (h * 5 + 0xE6546B64) & 0xFFFFFFFF
    k = 0
    tail = n & 3
    if tail == 3:
        k ^= data[rounded + 2] << 16
    if tail >= 2:
        k ^= data[rounded + 1] << 8
    if tail >= 1:
        k ^= data[rounded]
        k = (k * c1) & 0xFFFFFFFF
        k = ((k << 15) | (k >> 17)) & 0xFFFFFFFF
        k = (k * c2) & 0xFFFFFFFF
        h ^= k
    h ^= n
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    return h


def sticky_slot(key: str) -> int:
    return (murmur3_32(key.encode()) & 0x7FFFFFFF) % HASH_RANGE


def test_murmur3_reference_values():
    """Self-check of the test's hash against published MurmurHash3_x86_32 values."""
    assert murmur3_32(b"") == 0
    assert murmur3_32(b"", 1) == 0x514E28B7
    assert murmur3_32(b"hello") == 0x248BFA47
    assert murmur3_32(b"Hello, world!", 1234) == 0xFAF6CDB3
    assert murmur3_32(b"The quick brown fox jumps over the lazy dog") == 0x2E4FF723


def _key_of(payload: bytes) -> str:
    return payload.split(b":")[0].decode()


def _seq_of(payload: bytes) -> int:
    return int(payload.split(b":")[1])


def _send_keyed(client, t: str, keys: list[str], per_key: int, shuffle_seed: int = 7,
                **producer_kwargs) -> list[bytes]:
    """per_key messages for every key, interleaved in a random (seeded) order. Payload 'key:seq'."""
    order = [k for k in keys for _ in range(per_key)]
    random.Random(shuffle_seed).shuffle(order)
    next_seq = {k: 0 for k in keys}
    producer = client.create_producer(t, block_if_queue_full=True, **producer_kwargs)
    tracker = SendTracker()
    payloads = []
    for i, k in enumerate(order):
        p = f"{k}:{next_seq[k]}".encode()
        next_seq[k] += 1
        payloads.append(p)
        producer.send_async(p, tracker.callback_for(i), partition_key=k)
    producer.flush()
    assert tracker.wait_for(len(order), 60), f"only {len(tracker.results)} send callbacks"
    assert tracker.failures() == {}
    producer.close()
    return payloads


def _key_shared(client, t: str, sub: str, name: str, policy=None, **kwargs):
    return client.subscribe(t, sub, consumer_type=CT.KeyShared, consumer_name=name,
                            key_shared_policy=policy, **kwargs)


def _sticky(*ranges):
    return pulsar.ConsumerKeySharedPolicy(key_shared_mode=pulsar.KeySharedMode.Sticky,
                                          sticky_ranges=list(ranges))


def _assert_first_deliveries_in_order(events, keys, per_key):
    """For each key, the sequence numbers in the order of their first delivery are 0..per_key-1."""
    first: dict[str, list[int]] = {k: [] for k in keys}
    seen = set()
    for _, data, _ in events:
        if data in seen:
            continue
        seen.add(data)
        first[_key_of(data)].append(_seq_of(data))
    for k in keys:
        s = first[k]
        assert s == sorted(s), f"key {k}: first deliveries out of order: {s}"
        assert s == list(range(per_key)), f"key {k}: {per_key - len(s)} messages never delivered"


# ------------------------------------------------------------------------------------------------

def test_key_shared_consumers_join_and_leave_keep_per_key_order(client, topic):
    """40 keys x 100 = 4,000 messages. Start 2 consumers, add a 3rd after ~1,000 deliveries, close the
    1st after ~2,500. Every message is acknowledged at least once, and for each key the first
    deliveries come in publish order."""
    t = topic()
    keys = [f"key-{i:02d}" for i in range(40)]
    per_key = 100
    total = len(keys) * per_key
    rec = Recorder()
    # Small queues, so that most dispatching happens after the consumers change; a little work per
    # message, so that the change happens while keys have messages in flight.
    opts = dict(receiver_queue_size=50)
    threads = [ConsumerThread(_key_shared(client, t, "ks", f"c{i}", **opts), f"c{i}", rec,
                              per_message_delay_s=0.001) for i in (1, 2)]
    for th in threads:
        th.start()
    try:
        _send_keyed(client, t, keys, per_key)  # batching off (the default)
        assert rec.wait(lambda: len(rec.acked) >= 1000, 60, threads), (
            f"only {rec.distinct_acked()} acknowledged before the 3rd consumer joins")
        c3 = ConsumerThread(_key_shared(client, t, "ks", "c3", **opts), "c3", rec, per_message_delay_s=0.001)
        c3.start()
        threads.append(c3)
        assert rec.wait(lambda: len(rec.acked) >= 2500, 60, threads), (
            f"only {rec.distinct_acked()} acknowledged before the 1st consumer leaves")
        threads[0].request_stop()  # closes c1, possibly with messages in its queue
        threads[0].join(20)
        threads[0].check()
        assert rec.wait(lambda: len(rec.acked) >= total, 60, threads), (
            f"only {rec.distinct_acked()} of {total} messages acknowledged")
        rec.wait(lambda: False, QUIET_MS / 1000, threads)  # let late duplicates show up
    finally:
        stop_all(threads)

    events = rec.snapshot()
    _assert_first_deliveries_in_order(events, keys, per_key)
    assert len(rec.acked) == total
    assert threads[2].received, "the consumer that joined got nothing"


def test_key_shared_each_key_goes_to_one_consumer(client, topic):
    t = topic()
    keys = [f"k{i}" for i in range(40)]
    a = _key_shared(client, t, "split", "a")
    b = _key_shared(client, t, "split", "b")
    payloads = _send_keyed(client, t, keys, 20)
    got_a = [m.data() for m in drain_consumer(a, limit=len(payloads), ack=True)]
    got_b = [m.data() for m in drain_consumer(b, limit=len(payloads), ack=True)]
    keys_a = {_key_of(p) for p in got_a}
    keys_b = {_key_of(p) for p in got_b}
    assert not keys_a & keys_b, f"keys delivered to both consumers: {sorted(keys_a & keys_b)}"
    assert keys_a and keys_b, "one consumer got every key"
    assert sorted(got_a + got_b) == sorted(payloads)
    for got in (got_a, got_b):
        for k in {_key_of(p) for p in got}:
            seqs = [_seq_of(p) for p in got if _key_of(p) == k]
            assert seqs == list(range(20)), f"key {k}: {seqs}"


def test_key_shared_ordering_key_takes_precedence(client, topic):
    """The sticky key is the ordering key when one is set: messages with one ordering key and many
    different partition keys all go to one consumer, in order."""
    t = topic()
    a = _key_shared(client, t, "ok", "a")
    b = _key_shared(client, t, "ok", "b")
    producer = client.create_producer(t)
    for i in range(30):
        producer.send(b"o:%d" % i, partition_key=f"pk-{i}", ordering_key="the-one")
    got_a = [m.data() for m in drain_consumer(a, limit=30, ack=True)]
    got_b = [m.data() for m in drain_consumer(b, limit=30, ack=True)]
    assert sorted([got_a, got_b], key=len) == [[], [b"o:%d" % i for i in range(30)]]


def test_key_shared_sticky_ranges_split_keys_and_overlap_is_refused(client, topic):
    t = topic()
    keys = [f"sticky-{i}" for i in range(40)]
    low = {k for k in keys if sticky_slot(k) <= 32767}
    assert low and low != set(keys), "test keys should fall in both halves"
    a = _key_shared(client, t, "sticky", "low", _sticky((0, 32767)))
    b = _key_shared(client, t, "sticky", "high", _sticky((32768, 65535)))
    with pytest.raises(pulsar.ConsumerAssignError):
        _key_shared(client, t, "sticky", "overlap", _sticky((16000, 40000)))
    with pytest.raises(pulsar.ConsumerAssignError):
        _key_shared(client, t, "sticky", "overlap-edge", _sticky((32767, 32767)))

    payloads = _send_keyed(client, t, keys, 10)
    got_a = [m.data() for m in drain_consumer(a, limit=len(payloads), ack=True)]
    got_b = [m.data() for m in drain_consumer(b, limit=len(payloads), ack=True)]
    assert {_key_of(p) for p in got_a} == low
    assert {_key_of(p) for p in got_b} == set(keys) - low
    assert sorted(got_a + got_b) == sorted(payloads)
    for got in (got_a, got_b):
        for k in {_key_of(p) for p in got}:
            assert [_seq_of(p) for p in got if _key_of(p) == k] == list(range(10))


def test_key_shared_sticky_free_range_accepted_after_owner_leaves(client, topic):
    t = topic()
    a = _key_shared(client, t, "sticky2", "a", _sticky((0, 32767)))
    b = _key_shared(client, t, "sticky2", "b", _sticky((32768, 65535)))
    b.close()
    # the range is free again
    b2 = _key_shared(client, t, "sticky2", "b2", _sticky((40000, 65535)))
    keys = [f"free-{i}" for i in range(40)]
    payloads = _send_keyed(client, t, keys, 3)
    got_a = [m.data() for m in drain_consumer(a, limit=len(payloads), ack=True)]
    got_b2 = [m.data() for m in drain_consumer(b2, limit=len(payloads), ack=True)]
    assert {_key_of(p) for p in got_a} == {k for k in keys if sticky_slot(k) <= 32767}
    assert {_key_of(p) for p in got_b2} == {k for k in keys if sticky_slot(k) >= 40000}


@pytest.mark.parametrize("mode", ["auto_split", "sticky"])
def test_key_shared_idle_consumer_stalls_only_its_own_keys(client, topic, mode):
    """Consumer `idle` (receiver_queue_size=5) never calls receive(). The other consumer still receives
    every message of every key it owns; after `idle` closes (auto-split) or a replacement takes its
    range (sticky), everything is delivered, per key in order."""
    t = topic()
    keys = [f"ns-{i}" for i in range(40)]
    per_key = 10
    if mode == "sticky":
        idle = _key_shared(client, t, "ns", "idle", _sticky((0, 32767)), receiver_queue_size=5)
        live = _key_shared(client, t, "ns", "live", _sticky((32768, 65535)))
    else:
        idle = _key_shared(client, t, "ns", "idle", receiver_queue_size=5)
        live = _key_shared(client, t, "ns", "live")
    payloads = _send_keyed(client, t, keys, per_key)

    got = [m.data() for m in drain_consumer(live, limit=len(payloads), quiet_ms=3000, ack=True)]
    live_keys = {_key_of(p) for p in got}
    assert live_keys, "the live consumer received nothing: dispatch stalled behind the idle consumer"
    for k in live_keys:
        seqs = [_seq_of(p) for p in got if _key_of(p) == k]
        assert seqs == list(range(per_key)), f"key {k}: live consumer got {seqs}"
    if mode == "sticky":
        assert live_keys == {k for k in keys if sticky_slot(k) >= 32768}

    idle.close()
    if mode == "sticky":
        taker = _key_shared(client, t, "ns", "taker", _sticky((0, 32767)))
        rest = [m.data() for m in drain_consumer(taker, limit=len(payloads), ack=True)]
        assert {_key_of(p) for p in rest} == set(keys) - live_keys
        assert_no_more(live)
    else:
        rest = [m.data() for m in drain_consumer(live, limit=len(payloads), ack=True)]
    assert sorted(got + rest) == sorted(payloads)
    for k in {_key_of(p) for p in rest}:
        assert [_seq_of(p) for p in rest if _key_of(p) == k] == list(range(per_key))


def test_key_shared_key_based_batching(client, topic):
    """KeyBased batching puts one key per batch entry: keys still go to one consumer each, in order."""
    t = topic()
    keys = [f"kb-{i}" for i in range(20)]
    a = _key_shared(client, t, "kb", "a")
    b = _key_shared(client, t, "kb", "b")
    payloads = _send_keyed(client, t, keys, 25, batching_enabled=True,
                           batching_type=pulsar.BatchingType.KeyBased, batching_max_messages=10,
                           batching_max_publish_delay_ms=20)
    got_a = [m.data() for m in drain_consumer(a, limit=len(payloads), ack=True)]
    got_b = [m.data() for m in drain_consumer(b, limit=len(payloads), ack=True)]
    assert not {_key_of(p) for p in got_a} & {_key_of(p) for p in got_b}
    assert sorted(got_a + got_b) == sorted(payloads)
    for got in (got_a, got_b):
        for k in {_key_of(p) for p in got}:
            assert [_seq_of(p) for p in got if _key_of(p) == k] == list(range(25))
