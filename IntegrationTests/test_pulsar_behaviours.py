"""Issue 16: Pulsar behaviours an existing application relies on, each checked with the official
Python client as Apache Pulsar documents it.

- Regex subscriptions honour `regex_subscription_mode`: PersistentOnly, NonPersistentOnly,
  AllTopics (GET_TOPICS_OF_NAMESPACE's mode, with the list's hash); WATCH_TOPIC_LIST (raw protocol)
  gives the matching topics and then their creations and deletions.
- Topic stats in Pulsar's shapes: rates that move, publishers and consumers with their own rates,
  addresses and connection times, redelivery rates, lastExpireTimestamp; topic epochs survive a kill -9.
- Producer access modes: a second Exclusive producer (or a Shared one beside it) gets
  `ProducerBusy`; WaitForExclusive waits until the exclusive producer closes; ExclusiveWithFencing
  fences the holder (`ProducerFenced`); on persistent and non-persistent topics.
- Advertised listeners: LOOKUP with `advertised_listener_name` answers that listener's address, an
  unknown name fails the lookup; the client's `listener_name` follows it.
- A namespace policy (deduplication) applies at once to a topic created right after it is set.
- An `http://` service URL: lookups (partitioned metadata with `checkAllowAutoCreation`, the
  `/lookup/v2/topic` answer) of topics that do not exist yet, produce and consume end to end,
  partitioned topics too.
"""

from __future__ import annotations

import re
import time
import uuid

import pulsar
import pytest

from admin_rest import call

RECEIVE_MS = 10_000


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("mode, expected", [
    (pulsar.RegexSubscriptionMode.PersistentOnly, {"p"}),
    (pulsar.RegexSubscriptionMode.NonPersistentOnly, {"np"}),
    (pulsar.RegexSubscriptionMode.AllTopics, {"p", "np"}),
], ids=["persistent-only", "non-persistent-only", "all-topics"])
def test_regex_subscription_modes(broker, make_client, namespace, mode, expected):
    client = make_client(broker)
    persistent = f"persistent://{namespace}/orders-p"
    non_persistent = f"non-persistent://{namespace}/orders-np"
    # Both topics exist before the pattern consumer subscribes (the non-persistent one is loaded
    # by its own consumer, as Pulsar lists the non-persistent topics brokers serve).
    keep = client.subscribe(non_persistent, "keep")
    client.create_producer(persistent).send(b"warm-up")
    consumer = client.subscribe(re.compile(f"{namespace.split('/')[0]}/{namespace.split('/')[1]}/orders-.*"), "pattern",
                                regex_subscription_mode=mode, pattern_auto_discovery_period=1)
    producers = {"p": client.create_producer(persistent), "np": client.create_producer(non_persistent)}
    got: set[str] = set()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and got != expected:
        for kind, producer in producers.items():
            producer.send(kind.encode())
        try:
            msg = consumer.receive(1000)
            got.add(msg.data().decode())
            consumer.acknowledge(msg)
        except pulsar.Timeout:
            pass
    assert got == expected
    keep.close()


def test_http_service_url_reaches_new_topics(broker, make_client):
    client = pulsar.Client(broker.http_url, operation_timeout_seconds=15)
    try:
        topic = f"persistent://public/default/{unique('over-http')}"
        consumer = client.subscribe(topic, "sub")
        client.create_producer(topic).send(b"via http lookup")
        assert consumer.receive(RECEIVE_MS).data() == b"via http lookup"
        # A partitioned topic, looked up partition by partition over HTTP.
        partitioned = f"persistent://public/default/{unique('http-parts')}"
        assert call(broker, "PUT", partitioned.replace("persistent://", "/admin/v2/persistent/") + "/partitions", 3)[0] == 204
        parts_consumer = client.subscribe(partitioned, "sub")
        producer = client.create_producer(partitioned)
        for i in range(6):
            producer.send(f"m{i}".encode())
        assert sorted(parts_consumer.receive(RECEIVE_MS).data() for _ in range(6)) == [f"m{i}".encode() for i in range(6)]
    finally:
        client.close()
    # The REST answers an http:// client reads.
    fresh = unique("never-used")
    status, answer = call(broker, "GET", f"/admin/v2/persistent/public/default/{fresh}/partitions?checkAllowAutoCreation=true")
    assert (status, answer) == (200, {"partitions": 0})
    status, answer = call(broker, "GET", f"/admin/v2/persistent/public/default/{fresh}/partitions")
    assert status == 404, answer
    status, answer = call(broker, "GET", f"/lookup/v2/topic/persistent/public/default/{fresh}")
    assert status == 200 and answer["brokerUrl"].startswith("pulsar://"), answer


def test_a_policy_applies_at_once(broker, make_client, namespace):
    """Deduplication switched on by REST applies to a topic created right after: duplicates of
    sequence ids 1 and 2 are dropped, and a reconnecting producer learns the last one persisted."""
    client = make_client(broker)
    # A topic of the namespace loaded first: the broker has read (and cached) its policies.
    client.create_producer(f"persistent://{namespace}/{unique('warm')}").send(b"x")
    assert call(broker, "POST", f"/admin/v2/namespaces/{namespace}/deduplication", True)[0] == 204
    topic = f"persistent://{namespace}/{unique('dedup-now')}"
    consumer = client.subscribe(topic, "sub")
    producer = client.create_producer(topic, producer_name="once")
    for sequence_id in (1, 2, 1, 2, 3):
        producer.send(f"s{sequence_id}".encode(), sequence_id=sequence_id)
    got = [consumer.receive(RECEIVE_MS).data() for _ in range(3)]
    assert got == [b"s1", b"s2", b"s3"]
    with pytest.raises(pulsar.Timeout):
        consumer.receive(500)
    producer.close()
    again = client.create_producer(topic, producer_name="once")
    assert again.last_sequence_id() == 3


@pytest.mark.parametrize("domain", ["persistent", "non-persistent"])
def test_producer_access_modes(broker, make_client, domain):
    import threading
    client = make_client(broker)
    topic = f"{domain}://public/default/{unique('access')}"
    PAM = pulsar.ProducerAccessMode
    first = client.create_producer(topic, producer_name="first", access_mode=PAM.Exclusive)
    with pytest.raises(pulsar.ProducerBusy):
        client.create_producer(topic, producer_name="second", access_mode=PAM.Exclusive)
    with pytest.raises(pulsar.ProducerBusy):
        client.create_producer(topic, producer_name="shared")  # Shared beside an exclusive one
    first.send(b"from first")

    # WaitForExclusive waits its turn: it gets the topic once the exclusive producer closes.
    waited: dict = {}

    def wait_for_it():
        try:
            waited["producer"] = client.create_producer(topic, producer_name="waiter", access_mode=PAM.WaitForExclusive)
        except Exception as e:  # pragma: no cover - reported below
            waited["error"] = e
    thread = threading.Thread(target=wait_for_it)
    thread.start()
    time.sleep(1.0)
    assert thread.is_alive(), "WaitForExclusive did not wait while another producer is exclusive"
    first.close()
    thread.join(20)
    assert "producer" in waited, waited
    waited["producer"].send(b"from waiter")

    # ExclusiveWithFencing takes the topic: the holder is fenced and cannot send any more.
    fencer = client.create_producer(topic, producer_name="fencer", access_mode=PAM.ExclusiveWithFencing)
    fencer.send(b"from fencer")
    with pytest.raises((pulsar.ProducerFenced, pulsar.AlreadyClosed)) as fenced:
        for _ in range(3):
            waited["producer"].send(b"after fencing")
    print("fenced producer's error:", type(fenced.value).__name__)
    if domain == "non-persistent":
        return  # nothing is kept to read back
    reader = client.create_reader(topic, pulsar.MessageId.earliest)
    seen = []
    while reader.has_message_available():
        seen.append(reader.read_next(5000).data())
    assert seen == [b"from first", b"from waiter", b"from fencer"]


def test_topic_epoch_survives_restart(fresh_broker, make_client):
    client = make_client(fresh_broker)
    name = unique("epoch")
    topic = f"persistent://public/default/{name}"
    stats_path = f"/admin/v2/persistent/public/default/{name}/stats"
    PAM = pulsar.ProducerAccessMode
    client.create_producer(topic, producer_name="one", access_mode=PAM.Exclusive).close()
    assert call(fresh_broker, "GET", stats_path)[1]["topicEpoch"] == 1
    producer = client.create_producer(topic, producer_name="two", access_mode=PAM.Exclusive)
    producer.send(b"x")
    assert call(fresh_broker, "GET", stats_path)[1]["topicEpoch"] == 2
    fresh_broker.kill9()
    fresh_broker.start()
    # The holder reconnects with its epoch and keeps it (the broker did not start over at 0) ...
    producer.send(b"after the restart")
    assert call(fresh_broker, "GET", stats_path)[1]["topicEpoch"] == 2
    # ... and the next exclusive producer raises it.
    producer.close()
    again = make_client(fresh_broker).create_producer(topic, producer_name="three", access_mode=PAM.Exclusive)
    again.send(b"y")
    assert call(fresh_broker, "GET", stats_path)[1]["topicEpoch"] == 3


def test_watch_topic_list(broker, make_client, namespace):
    """WATCH_TOPIC_LIST, as the Java client sends it when CONNECTED says `supports_topic_watchers`
    (the C++ client behind Python polls GET_TOPICS_OF_NAMESPACE instead): spoken raw here."""
    import rawproto as rp
    WATCH, SUCCESS, UPDATE, CLOSE = 64, 65, 66, 67
    client = make_client(broker)
    first = f"persistent://{namespace}/orders-a"
    client.create_producer(first).close()
    with rp.RawConnection("127.0.0.1", broker.port) as conn:
        connected = conn.handshake()
        flags = rp.decode_fields(connected.first(4))
        assert flags.get(4) == [1], flags  # supports_topic_watchers
        watch = (rp.field_varint(1, 1) + rp.field_varint(2, 7) + rp.field_bytes(3, namespace)
                 + rp.field_bytes(4, f"persistent://{namespace}/orders-.*"))
        conn.send(rp.simple_frame(rp.base_command(WATCH, watch)))
        success = conn.read_command()
        assert success.type == SUCCESS, success
        assert success.first(2) == 7 and [t.decode() for t in success.fields.get(3, [])] == [first]
        hash_before = success.first(4)

        def next_update() -> tuple[list[str], list[str], bytes]:
            update = conn.read_command(timeout=15)
            assert update.type == UPDATE, update
            assert update.first(1) == 7
            return ([t.decode() for t in update.fields.get(2, [])], [t.decode() for t in update.fields.get(3, [])],
                    update.first(4))

        client.create_producer(f"persistent://{namespace}/orders-b").close()
        client.create_producer(f"persistent://{namespace}/unrelated").close()
        created, deleted, hash_after = next_update()
        assert created == [f"persistent://{namespace}/orders-b"] and deleted == [] and hash_after != hash_before
        assert call(broker, "DELETE", first.replace("persistent://", "/admin/v2/persistent/"))[0] == 204
        created, deleted, _ = next_update()
        assert created == [] and deleted == [first]

        # Closed: no more updates.
        conn.send(rp.simple_frame(rp.base_command(CLOSE, rp.field_varint(1, 2) + rp.field_varint(2, 7))))
        client.create_producer(f"persistent://{namespace}/orders-c").close()
        with pytest.raises(TimeoutError):
            conn.read_command(timeout=3)
        # A bad pattern is an error for that request only.
        bad = (rp.field_varint(1, 3) + rp.field_varint(2, 8) + rp.field_bytes(3, namespace)
               + rp.field_bytes(4, f"persistent://{namespace}/orders-(["))
        conn.send(rp.simple_frame(rp.base_command(WATCH, bad)))
        error = conn.read_command()
        assert error.type == rp.ERROR and error.first(1) == 3, error
        conn.ping_pong()


@pytest.fixture(scope="module")
def listener_broker(tmp_path_factory):
    from test_security import SecureBroker
    broker = SecureBroker(tmp_path_factory.mktemp("listeners"), "")
    broker.config_path.write_text(broker.config_path.read_text() + "\n".join([
        f"advertisedListeners=internal:pulsar://127.0.0.1:{broker.port},external:pulsar://localhost:{broker.port}",
        "internalListenerName=internal",
    ]) + "\n")
    broker.start()
    yield broker
    broker.close()


def raw_lookup(port: int, topic: str, listener: str | None) -> dict:
    import rawproto
    body = rawproto.field_bytes(1, topic) + rawproto.field_varint(2, 1)
    if listener is not None:
        body += rawproto.field_bytes(7, listener)
    with rawproto.RawConnection("127.0.0.1", port) as conn:
        conn.handshake()
        conn.send(rawproto.simple_frame(rawproto.base_command(23, body)))
        frame = conn.read_command()
    assert frame.type == 24, frame
    return {"url": frame.first(1), "response": frame.first(3), "error": frame.first(6), "message": frame.first(7)}


def test_advertised_listeners_answer_the_named_listener(listener_broker, make_client):
    topic = f"persistent://public/default/{unique('listeners')}"
    port = listener_broker.port
    assert raw_lookup(port, topic, None)["url"] in (f"pulsar://127.0.0.1:{port}", f"pulsar://127.0.0.1:{port}".encode())
    external = raw_lookup(port, topic, "external")
    assert external["url"] in (f"pulsar://localhost:{port}", f"pulsar://localhost:{port}".encode()), external
    unknown = raw_lookup(port, topic, "nope")
    assert unknown["response"] == 2, unknown  # Failed
    # The official client with listener_name follows the external listener's address.
    client = pulsar.Client(listener_broker.url, listener_name="external", operation_timeout_seconds=10)
    try:
        consumer = client.subscribe(topic, "sub")
        client.create_producer(topic).send(b"through the external listener")
        assert consumer.receive(RECEIVE_MS).data() == b"through the external listener"
    finally:
        client.close()
    refused = pulsar.Client(listener_broker.url, listener_name="nope", operation_timeout_seconds=3)
    try:
        with pytest.raises(Exception):
            refused.create_producer(topic)
    finally:
        refused.close()


def test_topic_stats_have_pulsars_fields_and_moving_rates(broker, make_client):
    client = make_client(broker)
    name = unique("stats")
    topic = f"persistent://public/default/{name}"
    consumer = client.subscribe(topic, "stats-sub", consumer_type=pulsar.ConsumerType.Shared)
    producer = client.create_producer(topic, batching_enabled=False)
    path = f"/admin/v2/persistent/public/default/{name}/stats"
    deadline = time.monotonic() + 20
    stats = {}
    while time.monotonic() < deadline:
        for i in range(20):
            producer.send(f"m{i}".encode())
        # Half of them come back once (REDELIVER_UNACKNOWLEDGED_MESSAGES): msgRateRedeliver moves.
        for _ in range(10):
            consumer.receive(RECEIVE_MS)
        consumer.redeliver_unacknowledged_messages()
        for _ in range(20):
            consumer.acknowledge(consumer.receive(RECEIVE_MS))
        status, stats = call(broker, "GET", path)
        assert status == 200, stats
        sub = stats["subscriptions"]["stats-sub"]
        if (stats["msgRateIn"] > 0 and stats["msgRateOut"] > 0 and sub["msgRateOut"] > 0 and sub["msgRateRedeliver"] > 0
                and stats["publishers"][0]["msgRateIn"] > 0 and sub["consumers"][0]["msgRateOut"] > 0):
            break
        time.sleep(0.3)
    for field in ("msgRateIn", "msgRateOut", "msgThroughputIn", "msgThroughputOut", "averageMsgSize",
                  "msgInCounter", "bytesInCounter", "msgOutCounter", "bytesOutCounter", "storageSize", "backlogSize",
                  "publishers", "subscriptions"):
        assert field in stats, (field, sorted(stats))
    assert stats["msgRateIn"] > 0 and stats["msgThroughputIn"] > 0 and stats["msgRateOut"] > 0, stats
    assert stats["averageMsgSize"] > 0 and stats["bytesOutCounter"] > 0
    subscription = stats["subscriptions"]["stats-sub"]
    for field in ("msgRateOut", "msgThroughputOut", "msgBacklog", "msgBacklogNoDelayed", "backlogSize",
                  "unackedMessages", "type", "consumers", "nonContiguousDeletedMessagesRanges", "bytesOutCounter"):
        assert field in subscription, (field, sorted(subscription))
    assert subscription["type"] == "Shared" and subscription["msgRateOut"] > 0
    assert {"consumerName", "availablePermits", "unackedMessages", "msgOutCounter", "bytesOutCounter", "msgRateOut",
            "msgThroughputOut", "msgRateRedeliver", "address", "connectedSince"} <= set(subscription["consumers"][0])
    assert subscription["msgRateRedeliver"] > 0 and subscription["lastExpireTimestamp"] == 0
    consumer_stats = subscription["consumers"][0]
    assert consumer_stats["msgRateOut"] > 0 and consumer_stats["msgThroughputOut"] > 0
    assert consumer_stats["address"].startswith("/127.0.0.1:") and consumer_stats["connectedSince"].startswith("20")
    [publisher] = stats["publishers"]
    assert publisher["producerName"] == producer.producer_name() and publisher["accessMode"] == "Shared"
    assert publisher["msgRateIn"] > 0 and publisher["msgThroughputIn"] > 0 and publisher["averageMsgSize"] > 0
    assert publisher["address"].startswith("/127.0.0.1:") and publisher["connectedSince"].startswith("20")
    # Expiring messages (here by the admin API, as the TTL does) sets lastExpireTimestamp.
    for i in range(3):
        producer.send(f"old-{i}".encode())
    time.sleep(1.1)
    assert call(broker, "POST", f"/admin/v2/persistent/public/default/{name}/subscription/stats-sub/expireMessages/1")[0] == 204
    expired_at = call(broker, "GET", path)[1]["subscriptions"]["stats-sub"]["lastExpireTimestamp"]
    assert abs(expired_at / 1000 - time.time()) < 30, expired_at
