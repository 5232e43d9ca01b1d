"""Issue 12, robustness: input a client or an operator can send must never crash the broker, and
stored data written from such input must not crash it after a restart either. Each test here is the
regression test of one fault found under attack (numbered as in the issue); each failed (a crash,
a trap, a lost or hidden message) before its fix.

Raw frames come from rawproto.py (hand-written protobuf, documented field numbers).
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request

import pulsar
import pytest

import rawproto as rp
from admin_rest import AdminError, admin, create_namespace, create_tenant, set_namespace_policy, topic_path
from conftest import _NO_PROXY, close_quietly
from helpers import RECEIVE_TIMEOUT_MS, assert_no_more, drain_reader, receive_n

HOST = "127.0.0.1"
TENANT = "robustness"

# MessageMetadata field numbers (PulsarApi.proto)
NUM_CHUNKS_FROM_MSG = 27
TOTAL_CHUNK_MSG_SIZE = 28
CHUNK_ID = 29
UUID = 26

# BaseCommand types of transactions and authentication (PulsarApi.proto)
AUTH_RESPONSE = 37
NEW_TXN = 50
TC_CLIENT_CONNECT_REQUEST = 62
SERVER_ERROR_NOT_ALLOWED = 22
SERVER_ERROR_AUTHENTICATION = 3


def _connected(broker) -> rp.RawConnection:
    conn = rp.RawConnection(HOST, broker.port)
    conn.handshake()
    return conn


def _raw_producer(conn: rp.RawConnection, t: str, producer_id: int = 0, request_id: int = 1) -> str:
    conn.send(rp.simple_frame(rp.producer_command(t, producer_id, request_id)))
    ok = conn.read_command()
    assert ok.type == rp.PRODUCER_SUCCESS, ok
    return ok.first(2).decode()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _assert_broker_serves(client, topic) -> None:
    t = topic("still-serving")
    consumer = client.subscribe(t, "sub")
    client.create_producer(t).send(b"still alive")
    assert consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"still alive"
    consumer.close()


# ------------------------------------------------------------------------------------------------
# 1. sequence id overflow
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("batching", [False, True], ids=["single", "batched"])
def test_sequence_id_at_int64_max_is_stored(broker, client, topic, batching):
    t = topic()
    consumer = client.subscribe(t, "sub")
    producer = client.create_producer(t, batching_enabled=batching, batching_max_publish_delay_ms=1)
    producer.send(b"x", sequence_id=2**63 - 1)
    msg = consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS)
    assert msg.data() == b"x"
    consumer.acknowledge(msg)
    _assert_broker_serves(client, topic)


def test_raw_send_with_huge_sequence_and_batch_count(broker, client, topic):
    """sequence_id = 2^64 - 1 and num_messages_in_batch = INT32_MAX: receipted, nothing traps."""
    t = topic()
    with _connected(broker) as conn:
        name = _raw_producer(conn, t)
        meta = rp.message_metadata(name, 2**64 - 1, _now_ms()) + rp.field_varint(11, 2**31 - 1)
        conn.send(rp.payload_frame(rp.send_command(0, 2**64 - 1), meta, b"big"))
        receipt = conn.read_command()
        assert receipt.type in (rp.SEND_RECEIPT, rp.SEND_ERROR), receipt
        conn.ping_pong()
    _assert_broker_serves(client, topic)


# ------------------------------------------------------------------------------------------------
# 2. chunk fields
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk_id,num_chunks", [(0, -2**31), (2**31 - 1, 2**31 - 1), (-2**31, 1), (5, 0)])
def test_send_with_extreme_chunk_fields(broker, client, topic, chunk_id, num_chunks):
    t = topic()
    with _connected(broker) as conn:
        name = _raw_producer(conn, t)
        meta = (rp.message_metadata(name, 0, _now_ms()) + rp.field_bytes(UUID, "u-1")
                + rp.field_varint(NUM_CHUNKS_FROM_MSG, num_chunks) + rp.field_varint(TOTAL_CHUNK_MSG_SIZE, 3)
                + rp.field_varint(CHUNK_ID, chunk_id))
        conn.send(rp.payload_frame(rp.send_command(0, 0), meta, b"abc"))
        answer = conn.read_command()
        assert answer.type in (rp.SEND_RECEIPT, rp.SEND_ERROR), answer
        conn.ping_pong()
    _assert_broker_serves(client, topic)


# ------------------------------------------------------------------------------------------------
# 3. policy values out of range are refused at the REST edge
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("policy,body", [
    ("messageTTL", 10**17),
    ("retention", {"retentionTimeInMinutes": 10**15, "retentionSizeInMB": 10}),
    ("retention", {"retentionTimeInMinutes": 10, "retentionSizeInMB": 10**13}),
    ("backlogQuota", {"limitSize": -1, "limitTime": 10**17, "policy": "producer_request_hold"}),
], ids=["ttl", "retention-time", "retention-size", "backlog-time"])
def test_policy_out_of_range_is_refused_and_nothing_crashes(broker, client, topic, policy, body):
    create_tenant(broker, TENANT)
    namespace = create_namespace(broker, TENANT, "range")
    query = "?backlogQuotaType=message_age" if policy == "backlogQuota" else ""
    with pytest.raises(AdminError) as refused:
        set_namespace_policy(broker, namespace, policy, body, query)
    assert refused.value.status == 400, refused.value
    assert "reason" in refused.value.body
    # The namespace still works, with a topic loaded and the policy pass running over it.
    t = f"persistent://{namespace}/after-refusal"
    consumer = client.subscribe(t, "sub")
    client.create_producer(t).send(b"ok")
    assert consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"ok"
    time.sleep(1.5)  # at least one policy pass over the loaded topic
    _assert_broker_serves(client, topic)


def test_largest_accepted_policies_do_not_trap_the_policy_pass(fresh_broker, make_client, topic):
    """The largest values the REST API accepts, set together, then a restart with the topic loaded."""
    create_tenant(fresh_broker, TENANT)
    namespace = create_namespace(fresh_broker, TENANT, "max")
    hundred_years_s = 100 * 365 * 86_400
    set_namespace_policy(fresh_broker, namespace, "messageTTL", hundred_years_s)
    set_namespace_policy(fresh_broker, namespace, "retention",
                         {"retentionTimeInMinutes": 100 * 365 * 24 * 60, "retentionSizeInMB": 1 << 40})
    set_namespace_policy(fresh_broker, namespace, "backlogQuota",
                         {"limitSize": 2**63 - 1, "limitTime": hundred_years_s, "policy": "consumer_backlog_eviction"},
                         "?backlogQuotaType=message_age")
    t = f"persistent://{namespace}/max-policies"
    client = make_client(fresh_broker)
    consumer = client.subscribe(t, "sub")
    client.create_producer(t).send(b"kept")
    time.sleep(1.5)
    assert consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"kept"
    close_quietly(client)
    fresh_broker.restart()
    client = make_client(fresh_broker)
    consumer = client.subscribe(t, "sub")
    assert consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"kept"
    time.sleep(1.5)
    assert fresh_broker.is_running()


# ------------------------------------------------------------------------------------------------
# 4. a publish time of 2^63 with a time backlog quota, before and after a restart
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("publish_time", [2**63, 2**64 - 1], ids=["2^63", "2^64-1"])
def test_extreme_publish_time_with_time_quota_survives_restart(fresh_broker, make_client, topic, publish_time):
    create_tenant(fresh_broker, TENANT)
    namespace = create_namespace(fresh_broker, TENANT, "ptime")
    set_namespace_policy(fresh_broker, namespace, "backlogQuota",
                         {"limitSize": -1, "limitTime": 60, "policy": "consumer_backlog_eviction"},
                         "?backlogQuotaType=message_age")
    set_namespace_policy(fresh_broker, namespace, "messageTTL", 3600)
    t = f"persistent://{namespace}/future"
    client = make_client(fresh_broker)
    consumer = client.subscribe(t, "sub", initial_position=pulsar.InitialPosition.Earliest)
    with _connected(fresh_broker) as conn:
        name = _raw_producer(conn, t)
        conn.send(rp.payload_frame(rp.send_command(0, 0), rp.message_metadata(name, 0, publish_time), b"future"))
        receipt = conn.read_command()
        assert receipt.type == rp.SEND_RECEIPT, receipt
    assert consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"future"
    time.sleep(2)  # policy passes over the stored entry
    assert fresh_broker.is_running()
    close_quietly(client)
    fresh_broker.restart()
    client = make_client(fresh_broker)
    consumer = client.subscribe(t, "sub")  # loads the topic: its oldest entry is the one above
    time.sleep(2)
    client.create_producer(t).send(b"after-restart")
    got = [consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() for _ in range(2)]
    assert got[-1] == b"after-restart"


# ------------------------------------------------------------------------------------------------
# 5. topic names with '/' (and other characters Pulsar refuses) cannot reach metadata keys
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("local", ["a/b", "..", "nul\x00byte", "new\nline"], ids=["slash", "dotdot", "nul", "newline"])
def test_bad_local_topic_names_are_refused(broker, client, local):
    with _connected(broker) as conn:
        conn.send(rp.simple_frame(rp.producer_command(f"persistent://public/default/{local}", 0, 1)))
        answer = conn.read_command()
        assert answer.type == rp.ERROR, answer
        assert answer.first(2) == 17  # ServerError.InvalidTopicName
        conn.ping_pong()


def test_subscriptions_do_not_leak_between_topics(broker, client, topic):
    parent = topic("parent")
    with pytest.raises(Exception):
        client.subscribe(parent + "/child", "s")
    consumer = client.subscribe(parent, "own")
    subs = admin(broker, "GET", f"/admin/v2/{topic_path(parent)}/subscriptions")
    assert subs == ["own"]
    consumer.close()


# ------------------------------------------------------------------------------------------------
# 6. acknowledgements beyond the last entry are ignored
# ------------------------------------------------------------------------------------------------

def test_acks_ahead_of_the_log_do_not_hide_later_messages(broker, client, topic):
    t = topic()
    producer = client.create_producer(t, batching_enabled=False)
    consumer = client.subscribe(t, "sub", consumer_type=pulsar.ConsumerType.Shared)
    for i in range(3):
        producer.send(b"m-%d" % i)
    first = receive_n(consumer, 3)
    for m in first:
        consumer.acknowledge(m)
    last = first[-1].message_id()
    # ids 3..6 of the same ledger do not exist yet
    for entry in range(last.entry_id() + 1, last.entry_id() + 5):
        consumer.acknowledge(pulsar.MessageId(last.partition(), last.ledger_id(), entry, -1))
    time.sleep(0.5)  # the client groups acks for up to 100 ms
    for i in range(3, 10):
        producer.send(b"m-%d" % i)
    got = [m.data() for m in receive_n(consumer, 7)]
    assert got == [b"m-%d" % i for i in range(3, 10)]


def test_cumulative_ack_ahead_of_the_log_is_ignored(broker, client, make_client, topic):
    t = topic()
    producer = client.create_producer(t, batching_enabled=False)
    consumer = client.subscribe(t, "sub")
    producer.send(b"m-0")
    first = consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS)
    last = first.message_id()
    consumer.acknowledge_cumulative(pulsar.MessageId(last.partition(), last.ledger_id(), last.entry_id() + 100, -1))
    consumer.close()  # the ack reaches the broker before CLOSE_CONSUMER is answered
    for i in range(1, 4):
        producer.send(b"m-%d" % i)
    # Another client on the same subscription: the official client itself drops messages at or
    # before its own cumulative ack, so the broker's state is seen from a fresh one.
    consumer = make_client(broker).subscribe(t, "sub")
    got = [m.data() for m in receive_n(consumer, 4)]
    assert got == [b"m-0", b"m-1", b"m-2", b"m-3"]


# ------------------------------------------------------------------------------------------------
# 11. a reader from the earliest after a crash and a subscription's catch-up
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("restart", ["kill9", "sigterm"])
def test_reader_from_earliest_after_restart_and_catch_up(fresh_broker, make_client, topic, restart):
    t = topic()
    client = make_client(fresh_broker)
    producer = client.create_producer(t, batching_enabled=False)
    consumer = client.subscribe(t, "sub", initial_position=pulsar.InitialPosition.Earliest)
    payloads = [b"m-%03d" % i for i in range(500)]
    for i in range(0, len(payloads), 100):
        for p in payloads[i:i + 100]:
            producer.send_async(p, None)
        producer.flush()
    for m in receive_n(consumer, 200):
        consumer.acknowledge(m)
    consumer.close()
    if restart == "kill9":
        fresh_broker.kill9()
    else:
        assert fresh_broker.stop() == 0
    close_quietly(client)
    fresh_broker.start()

    client = make_client(fresh_broker)
    consumer = client.subscribe(t, "sub")
    rest = receive_n(consumer, 300)
    assert [m.data() for m in rest] == payloads[200:]
    consumer.acknowledge_cumulative(rest[-1])
    consumer.close()
    time.sleep(3)  # several policy passes, each of which would have trimmed
    reader = client.create_reader(t, pulsar.MessageId.earliest)
    assert reader.has_message_available()
    got = drain_reader(reader, limit=len(payloads))
    assert got == payloads, f"{len(got)} of {len(payloads)} messages readable after the catch-up"


# ------------------------------------------------------------------------------------------------
# smaller: HTTP methods, protocol version, transaction and auth commands
# ------------------------------------------------------------------------------------------------

def _http(broker, method: str, path: str) -> tuple[int, str, str]:
    request = urllib.request.Request(broker.http_url + path, method=method)
    try:
        with _NO_PROXY.open(request, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode(errors="replace")


@pytest.mark.parametrize("method", ["PATCH", "TRACE", "OPTIONS"])
def test_unsupported_http_methods_answer_405_with_json(broker, method):
    status, content_type, body = _http(broker, method, "/admin/v2/tenants")
    assert status == 405, (status, body)
    assert "json" in content_type and "reason" in body


@pytest.mark.parametrize("request_bytes", [
    b"BREW /admin/v2/tenants HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /admin/v2/tenants HTTP/9.9.9\r\nHost: x\r\n\r\n",
    b"GET /admin/v2/tenants HTTP/1.1\r\nBad Header Without Colon\r\n\r\n",
], ids=["unknown-method", "bad-version", "bad-header"])
def test_a_request_the_http_parser_rejects_gets_400_with_a_json_reason(broker, request_bytes):
    with socket.create_connection(("127.0.0.1", broker.http_port), timeout=10) as sock:
        sock.sendall(request_bytes)
        answer = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break  # the broker closes the connection after the answer
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer
    assert b"application/json" in head.lower(), answer
    assert "malformed HTTP request" in json.loads(body)["reason"], body
    # The broker goes on serving.
    assert _http(broker, "GET", "/admin/v2/tenants")[0] == 200


def test_negative_protocol_version_is_not_echoed(broker):
    with rp.RawConnection(HOST, broker.port) as conn:
        conn.send(rp.simple_frame(rp.connect_command(protocol_version=-5)))
        connected = conn.read_command()
        assert connected.type == rp.CONNECTED, connected
        assert connected.first(2) == 0


@pytest.mark.parametrize("command", [NEW_TXN, TC_CLIENT_CONNECT_REQUEST], ids=["new-txn", "tc-connect"])
def test_transaction_commands_are_answered_in_kind(broker, command):
    # Field numbers: NEW_TXN {request_id 1, txn_ttl_millis 2, tc_id 3} → NEW_TXN_RESPONSE {.., error 4};
    # TC_CLIENT_CONNECT_REQUEST {request_id 1, tc_id 2} → its response {request_id 1, error 2}.
    tc_field, error_field = (3, 4) if command == NEW_TXN else (2, 2)
    with _connected(broker) as conn:
        conn.send(rp.simple_frame(rp.base_command(command, rp.field_varint(1, 42) + rp.field_varint(2, 0))))
        answer = conn.read_command()
        assert answer.type == command + 1, answer
        assert answer.first(1) == 42 and error_field not in answer.fields
        # A coordinator this broker does not run: TransactionCoordinatorNotFound (20), the connection stays.
        conn.send(rp.simple_frame(rp.base_command(command, rp.field_varint(1, 43) + rp.field_varint(tc_field, 7))))
        answer = conn.read_command()
        assert answer.type == command + 1, answer
        assert answer.first(1) == 43 and answer.first(error_field) == 20
        conn.ping_pong()


def test_auth_response_gets_an_error(broker):
    with _connected(broker) as conn:
        conn.send(rp.simple_frame(rp.base_command(AUTH_RESPONSE, rp.field_bytes(1, "x"))))
        answer = conn.read_command()
        assert answer.type == rp.ERROR, answer
        assert answer.first(2) == SERVER_ERROR_AUTHENTICATION
        conn.ping_pong()
