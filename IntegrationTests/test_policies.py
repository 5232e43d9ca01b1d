"""Issue 4, namespace policies set through the admin REST API (Pulsar's `/admin/v2/namespaces/...`)
and enforced by the broker: auto topic creation, producer/consumer limits, message TTL, retention,
deduplication, backlog quota. Each test makes its own namespace in the tenant `magnetar-it`.

The broker applies policies about once a second, so every effect is waited for with a bounded poll
(`eventually`), never a fixed sleep; a negative check is bounded and paired with a positive one.
"""

from __future__ import annotations

import time
import uuid

import pulsar
import pytest

from admin_rest import (
    AdminError, admin, create_namespace, create_partitioned_topic, create_tenant, eventually,
    is_duplicate_receipt, set_namespace_policy, topic_path, unique_topic_in,
)
from conftest import Broker, close_quietly
from helpers import RECEIVE_TIMEOUT_MS, assert_no_more, drain_consumer, receive_n

TENANT = "magnetar-it"


def new_namespace(broker, prefix: str = "ns") -> str:
    create_tenant(broker, TENANT)
    return create_namespace(broker, TENANT, prefix)


def close_if_open(thing) -> None:
    try:
        thing.close()
    except Exception:  # a producer the broker closed may refuse to close cleanly; not the point here
        pass


# ------------------------------------------------------------------------------------------------
# a broker with small ledgers, for retention (which deletes whole closed ledgers only)
# ------------------------------------------------------------------------------------------------

class _BrokerWithArgs(Broker):
    """conftest's Broker with extra `magnetar standalone` options."""

    def __init__(self, *args, extra_args: list[str] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.extra_args = list(extra_args)

    def _command(self) -> list[str]:
        return super()._command() + self.extra_args


@pytest.fixture(scope="module")
def small_ledger_broker(tmp_path_factory):
    """A broker whose topics roll their ledger every 10 entries."""
    tmp = tmp_path_factory.mktemp("magnetar-small-ledgers")
    b = _BrokerWithArgs(tmp / "data", tmp / "magnetar.log", extra_args=["--max-entries-per-ledger", "10"])
    b.start()
    b.auto_restart = True
    yield b
    b.close()


def read_all(client, t: str, quiet_ms: int = 1000) -> list[bytes]:
    """Everything still stored in `t`, read by a (non-durable) reader from the earliest position."""
    reader = client.create_reader(t, pulsar.MessageId.earliest)
    out = []
    try:
        while True:
            try:
                out.append(reader.read_next(timeout_millis=quiet_ms).data())
            except pulsar.Timeout:
                return out
            assert len(out) <= 100_000
    finally:
        reader.close()


# ------------------------------------------------------------------------------------------------
# namespaces and auto topic creation
# ------------------------------------------------------------------------------------------------

def test_topic_in_missing_namespace_is_refused(client):
    t = f"persistent://public/no-such-ns-{uuid.uuid4().hex[:8]}/t"
    with pytest.raises(pulsar.TopicNotFound):
        client.create_producer(t)
    with pytest.raises(pulsar.TopicNotFound):
        client.subscribe(t, "sub")
    # the default namespace exists from the start
    client.create_producer(f"persistent://public/default/exists-{uuid.uuid4().hex[:8]}").send(b"ok")


def test_auto_topic_creation_off(broker, client):
    ns = new_namespace(broker, "noauto")
    existing = unique_topic_in(ns, "existing")
    consumer = client.subscribe(existing, "sub", initial_position=pulsar.InitialPosition.Earliest)
    client.create_producer(existing).send(b"before")  # creates the topic while creation is allowed

    set_namespace_policy(broker, ns, "autoTopicCreation", {"allowAutoTopicCreation": False})

    def new_topic_refused():
        try:
            producer = client.create_producer(unique_topic_in(ns, "new"))  # a new name every time
        except pulsar.TopicNotFound:
            return True
        producer.close()
        return False

    eventually(new_topic_refused, what="a producer on a new topic refused with TopicNotFound")
    with pytest.raises(pulsar.TopicNotFound):
        client.subscribe(unique_topic_in(ns, "new-sub"), "sub")

    # the existing topic keeps working
    client.create_producer(existing).send(b"after")
    assert [m.data() for m in receive_n(consumer, 2, ack=True)] == [b"before", b"after"]

    # a topic created through the admin API is usable even though auto-creation is off
    made = unique_topic_in(ns, "admin-made")
    create_partitioned_topic(broker, made, 2)
    made_consumer = client.subscribe(made, "sub", initial_position=pulsar.InitialPosition.Earliest)
    client.create_producer(made).send(b"admin-made")
    assert made_consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"admin-made"


# ------------------------------------------------------------------------------------------------
# producer / consumer limits
# ------------------------------------------------------------------------------------------------

def test_max_producers_per_topic(broker, client):
    ns = new_namespace(broker, "maxprod")
    set_namespace_policy(broker, ns, "maxProducersPerTopic", 1)
    t = unique_topic_in(ns)
    consumer = client.subscribe(t, "sub", initial_position=pulsar.InitialPosition.Earliest)
    first = client.create_producer(t)

    def second_refused():
        try:
            extra = client.create_producer(t)
        except pulsar.ProducerBusy:
            return True
        extra.close()
        return False

    eventually(second_refused, what="a second producer refused with ProducerBusy")
    first.send(b"from-first")  # the one allowed producer is unaffected
    assert consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"from-first"

    # the limit counts live producers: once the first closes, another may come
    first.close()
    client.create_producer(t).send(b"from-replacement")
    assert consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"from-replacement"


def test_max_consumers_per_topic(broker, client):
    ns = new_namespace(broker, "maxcons")
    set_namespace_policy(broker, ns, "maxConsumersPerTopic", 2)
    t = unique_topic_in(ns)
    c1 = client.subscribe(t, "sub-1")
    c2 = client.subscribe(t, "sub-2", consumer_type=pulsar.ConsumerType.Shared)

    def third_refused():
        try:
            extra = client.subscribe(t, "sub-3")
        except pulsar.ConsumerBusy:
            return True
        extra.close()
        return False

    eventually(third_refused, what="a third consumer refused with ConsumerBusy")
    # also on a subscription that already has a consumer: the limit is per topic
    with pytest.raises(pulsar.ConsumerBusy):
        client.subscribe(t, "sub-2", consumer_type=pulsar.ConsumerType.Shared)

    client.create_producer(t).send(b"x")
    assert c1.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"x"
    assert c2.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"x"

    c1.close()
    c3 = client.subscribe(t, "sub-3", initial_position=pulsar.InitialPosition.Earliest)
    assert c3.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"x"


# ------------------------------------------------------------------------------------------------
# message TTL
# ------------------------------------------------------------------------------------------------

def test_message_ttl_expires_old_backlog(broker, client):
    ns = new_namespace(broker, "ttl")
    ttl_s = 2
    set_namespace_policy(broker, ns, "messageTTL", ttl_s)
    t = unique_topic_in(ns, "ttl")
    control = f"persistent://public/default/ttl-control-{uuid.uuid4().hex[:12]}"  # no TTL there
    for topic_name in (t, control):
        client.subscribe(topic_name, "sub", initial_position=pulsar.InitialPosition.Earliest).close()

    producer = client.create_producer(t)
    control_producer = client.create_producer(control)
    for i in range(10):
        producer.send(b"old-%d" % i)
        control_producer.send(b"old-%d" % i)
    published = time.monotonic()

    # Reconnect until the backlog is gone (not before the TTL has passed): messages that are still
    # there come back to every new consumer of the subscription, since none is acknowledged.
    def backlog_expired():
        consumer = client.subscribe(t, "sub")
        try:
            msg = consumer.receive(timeout_millis=1500)
        except pulsar.Timeout:
            return True
        finally:
            consumer.close()
        assert msg.data().startswith(b"old-"), msg.data()
        return False

    eventually(backlog_expired, timeout_s=20, interval_s=0.5, what="the subscription's old backlog expired")
    assert time.monotonic() - published >= ttl_s - 0.5, "messages expired before their TTL"

    # In a namespace without TTL the same backlog is still there (so the TTL is what removed it).
    control_consumer = client.subscribe(control, "sub")
    assert [m.data() for m in receive_n(control_consumer, 10, ack=True)] == [b"old-%d" % i for i in range(10)]

    # New messages still arrive.
    consumer = client.subscribe(t, "sub")
    producer.send(b"new")
    msg = consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS)
    assert msg.data() == b"new"
    consumer.acknowledge(msg)
    assert_no_more(consumer)


# ------------------------------------------------------------------------------------------------
# retention
# ------------------------------------------------------------------------------------------------

def test_retention_deletes_consumed_ledgers(small_ledger_broker, make_client):
    b = small_ledger_broker
    client = make_client(b)
    ns_trim = new_namespace(b, "ret0")
    set_namespace_policy(b, ns_trim, "retention", {"retentionTimeInMinutes": 0, "retentionSizeInMB": 0})
    ns_keep = new_namespace(b, "ret60")
    set_namespace_policy(b, ns_keep, "retention", {"retentionTimeInMinutes": 60, "retentionSizeInMB": -1})

    n = 100
    topics = {"trim": unique_topic_in(ns_trim, "ret"), "keep": unique_topic_in(ns_keep, "ret")}
    for t in topics.values():
        consumer = client.subscribe(t, "sub", initial_position=pulsar.InitialPosition.Earliest)
        producer = client.create_producer(t, batching_enabled=False)
        for i in range(n):
            producer.send(b"%d" % i)
        # consume and acknowledge everything
        got = receive_n(consumer, n)
        consumer.acknowledge_cumulative(got[-1])
        consumer.close()  # the acknowledgement is durable once close returns

    # 0/0: the closed ledgers the subscription has passed are deleted; only the tail is left
    def trimmed():
        left = read_all(client, topics["trim"])
        assert len(left) <= 20, f"{len(left)} of {n} messages still stored"
        return True

    eventually(trimmed, timeout_s=20, interval_s=0.5, what="consumed ledgers deleted under retention 0/0")
    left = [int(p) for p in read_all(client, topics["trim"])]
    assert left == list(range(n - len(left), n)), f"what is left must be the newest messages: {left}"

    # 60 minutes: the same consumed data stays (checked after a few more policy passes)
    time.sleep(3)
    assert read_all(client, topics["keep"]) == [b"%d" % i for i in range(n)], "retention 60 min must keep it"


def test_retention_internal_stats_ledgers_shrink(small_ledger_broker, make_client):
    b = small_ledger_broker
    client = make_client(b)
    ns = new_namespace(b, "retstats")
    set_namespace_policy(b, ns, "retention", {"retentionTimeInMinutes": 0, "retentionSizeInMB": 0})
    t = unique_topic_in(ns, "ret")
    path = f"/admin/v2/{topic_path(t)}/internalStats"
    consumer = client.subscribe(t, "sub", initial_position=pulsar.InitialPosition.Earliest)
    producer = client.create_producer(t, batching_enabled=False)
    for i in range(100):
        producer.send(b"%d" % i)

    try:
        before = admin(b, "GET", path)
    except AdminError as e:
        if e.status == 404:
            pytest.skip(f"GET {path} answered 404: internalStats not implemented")
        raise
    assert isinstance(before, dict) and isinstance(before.get("ledgers"), list), before
    assert len(before["ledgers"]) >= 10, f"100 entries at 10 per ledger: {before['ledgers']}"
    if "numberOfEntries" in before:
        assert before["numberOfEntries"] == 100

    got = receive_n(consumer, 100)
    consumer.acknowledge_cumulative(got[-1])

    def shrunk():
        stats = admin(b, "GET", path)
        assert len(stats["ledgers"]) <= 2, f"{len(stats['ledgers'])} ledgers left"
        if "numberOfEntries" in stats:
            assert stats["numberOfEntries"] <= 20, stats["numberOfEntries"]
        return True

    eventually(shrunk, timeout_s=20, interval_s=0.5, what="internalStats ledgers shrink after consumption")


# ------------------------------------------------------------------------------------------------
# deduplication
# ------------------------------------------------------------------------------------------------

def enable_deduplication(broker, client, ns: str) -> None:
    """Turn deduplication on and wait until it is in force (a repeated sequence id is dropped)."""
    set_namespace_policy(broker, ns, "deduplication", True)
    probe = client.create_producer(unique_topic_in(ns, "dedup-probe"), producer_name=f"probe-{uuid.uuid4().hex[:8]}")
    # (sequence_id=0 would be ignored: pulsar 3.13.0 sets it only when truthy)
    eventually(lambda: is_duplicate_receipt(probe.send(b"probe", sequence_id=1000)),
               what="deduplication in force (a repeated sequence id answered with id -1:-1)")
    probe.close()


def send_with_ids(producer, ids) -> dict[int, object]:
    """Send b"m-<i>" with sequence id i. pulsar 3.13.0 passes `sequence_id` only when truthy, so
    i = 0 takes the producer's own next id, which is 0 for a name the broker has not seen."""
    return {i: producer.send(b"m-%d" % i, sequence_id=i) for i in ids}


def test_deduplication_after_producer_restart(broker, client):
    ns = new_namespace(broker, "dedup")
    enable_deduplication(broker, client, ns)
    t = unique_topic_in(ns, "dedup")
    name = f"dedup-producer-{uuid.uuid4().hex[:8]}"
    consumer = client.subscribe(t, "sub", initial_position=pulsar.InitialPosition.Earliest)

    first = client.create_producer(t, producer_name=name)
    assert first.last_sequence_id() == -1
    receipts = send_with_ids(first, range(10))
    assert not any(is_duplicate_receipt(r) for r in receipts.values())
    first.close()  # as if the application crashed after seq 9 and restarted

    second = client.create_producer(t, producer_name=name)
    assert second.last_sequence_id() == 9, "the broker reports the last persisted sequence id"
    resent = send_with_ids(second, range(5, 15))
    assert [i for i, r in resent.items() if is_duplicate_receipt(r)] == list(range(5, 10))

    got = receive_n(consumer, 15, ack=True)
    assert [m.data() for m in got] == [b"m-%d" % i for i in range(15)], "each of 0..14 exactly once, in order"
    assert all(m.producer_name() == name for m in got)
    assert_no_more(consumer)
    assert second.last_sequence_id() == 14


def test_deduplication_survives_broker_restart(fresh_broker, make_client):
    client = make_client(fresh_broker)
    ns = new_namespace(fresh_broker, "dedup-restart")
    enable_deduplication(fresh_broker, client, ns)
    t = unique_topic_in(ns, "dedup")
    name = f"dedup-producer-{uuid.uuid4().hex[:8]}"
    client.subscribe(t, "sub", initial_position=pulsar.InitialPosition.Earliest).close()
    producer = client.create_producer(t, producer_name=name)
    send_with_ids(producer, range(10))
    close_quietly(client)

    fresh_broker.kill9()
    fresh_broker.restart()

    client2 = make_client(fresh_broker)
    producer = client2.create_producer(t, producer_name=name)
    assert producer.last_sequence_id() == 9, "rebuilt from the log after the restart"
    resent = send_with_ids(producer, range(5, 15))
    assert [i for i, r in resent.items() if is_duplicate_receipt(r)] == list(range(5, 10))
    consumer = client2.subscribe(t, "sub")
    got = receive_n(consumer, 15, ack=True)
    assert [m.data() for m in got] == [b"m-%d" % i for i in range(15)]
    assert_no_more(consumer)


def test_without_deduplication_resent_messages_are_duplicated(client, topic):
    """Control for the tests above: in a namespace without the policy, a resend is stored again."""
    t = topic()
    name = f"nodedup-{uuid.uuid4().hex[:8]}"
    consumer = client.subscribe(t, "sub", initial_position=pulsar.InitialPosition.Earliest)
    first = client.create_producer(t, producer_name=name)
    send_with_ids(first, range(3))
    first.close()
    second = client.create_producer(t, producer_name=name)
    assert second.last_sequence_id() == -1
    resent = send_with_ids(second, range(3))
    assert not any(is_duplicate_receipt(r) for r in resent.values())
    assert [m.data() for m in receive_n(consumer, 6, ack=True)] == [b"m-%d" % i for i in (0, 1, 2, 0, 1, 2)]


# ------------------------------------------------------------------------------------------------
# backlog quota
# ------------------------------------------------------------------------------------------------

def test_backlog_quota_producer_exception(broker, client):
    ns = new_namespace(broker, "quota")
    set_namespace_policy(broker, ns, "backlogQuota",
                         {"limitSize": 1024, "limitTime": -1, "policy": "producer_exception"},
                         query="?backlogQuotaType=destination_storage")
    t = unique_topic_in(ns, "quota")
    consumer = client.subscribe(t, "slow", initial_position=pulsar.InitialPosition.Earliest,
                                receiver_queue_size=1)
    producer = client.create_producer(t, batching_enabled=False)
    n = 20
    receipted = 0
    for i in range(n):  # up to 20 x 512 bytes: well over the 1 KiB quota
        try:
            producer.send(b"%03d" % i + b"x" * 509)
            receipted += 1
        except pulsar.ProducerBlockedQuotaExceededException:
            # The broker's once-a-second quota check fired while we were still sending: as in
            # Pulsar, it disconnects the producer at once.
            break
    assert receipted >= 3, f"only {receipted} messages (over the quota after 2) before the producer was blocked"

    def new_producer_refused():
        try:
            extra = client.create_producer(t)
        except pulsar.ProducerBlockedQuotaExceededException:
            return True
        extra.close()
        return False

    eventually(new_producer_refused, what="a new producer refused with ProducerBlockedQuotaExceededException")
    close_if_open(producer)  # the broker closed it when the quota was exceeded

    # Consuming the backlog lifts the block.
    got = drain_consumer(consumer, limit=n, ack=True)
    # Every receipted message, in order (the send that was refused may have been stored too).
    assert len(got) >= receipted
    assert [m.data()[:3] for m in got] == [b"%03d" % i for i in range(len(got))]

    def producer_allowed():
        try:
            return client.create_producer(t)
        except pulsar.ProducerBlockedQuotaExceededException:
            return None

    again = eventually(producer_allowed, what="producers allowed again once the backlog is consumed")
    again.send(b"after")
    assert consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"after"
