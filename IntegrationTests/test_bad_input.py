"""Issue 2, bad input on raw sockets: each bad client gets an error or a closed connection, for that
connection only; the broker keeps serving everyone else and stores nothing corrupted.

Encoders/decoders: rawproto.py (hand-written protobuf, documented field numbers).
"""

from __future__ import annotations

import struct
import time

import pulsar
import pytest

import rawproto as rp
from helpers import RECEIVE_TIMEOUT_MS, assert_no_more

HOST = "127.0.0.1"


def _connected(broker) -> rp.RawConnection:
    conn = rp.RawConnection(HOST, broker.port)
    conn.handshake()
    return conn


def _assert_broker_serves(client, topic) -> None:
    """A normal client still produces and consumes."""
    t = topic("still-serving")
    consumer = client.subscribe(t, "sub")
    client.create_producer(t).send(b"still alive")
    assert consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"still alive"


# ------------------------------------------------------------------------------------------------
# well-formed exchanges first: they show the raw encoders are right, so the failures below mean
# what they say
# ------------------------------------------------------------------------------------------------

def test_connect_then_ping_pong(broker):
    with rp.RawConnection(HOST, broker.port) as conn:
        connected = conn.handshake()
        server_version = connected.first(1)
        assert server_version, "CONNECTED.server_version is required and must not be empty"
        assert connected.first(2) == rp.PROTOCOL_VERSION  # min(client 20, server 20)
        assert connected.first(3) == 5 * 1024 * 1024  # max_message_size
        conn.send(rp.PING_FRAME)
        pong = conn.read_command()
        assert pong.type == rp.PONG
        assert pong.raw == rp.PONG_FRAME
        conn.ping_pong()  # and again: the connection stays usable


def test_raw_producer_send_gets_receipt(broker, client, topic):
    t = topic()
    consumer = client.subscribe(t, "sub")
    with _connected(broker) as conn:
        name = _raw_producer(conn, t)
        conn.send(rp.payload_frame(rp.send_command(0, 0), rp.message_metadata(name, 0, _now_ms()), b"raw hello"))
        receipt = conn.read_command()
        assert receipt.type == rp.SEND_RECEIPT, receipt
        assert (receipt.first(1), receipt.first(2)) == (0, 0)
        message_id = rp.decode_fields(receipt.first(3))
        assert 1 in message_id and 2 in message_id  # ledgerId, entryId
    msg = consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS)
    assert msg.data() == b"raw hello"
    assert (msg.message_id().ledger_id(), msg.message_id().entry_id()) == (
        rp.signed64(message_id[1][0]), rp.signed64(message_id[2][0]))


def _raw_producer(conn: rp.RawConnection, t: str, producer_id: int = 0, request_id: int = 1) -> str:
    conn.send(rp.simple_frame(rp.producer_command(t, producer_id, request_id)))
    ok = conn.read_command()
    assert ok.type == rp.PRODUCER_SUCCESS, ok
    assert ok.first(1) == request_id
    name = ok.first(2)
    assert name, "PRODUCER_SUCCESS.producer_name is required"
    return name.decode()


def _now_ms() -> int:
    return int(time.time() * 1000)


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------

GARBAGE = {
    # "GET " read as a size is 0x47455420 (~1.2 GB): over the limit
    "http-request": b"GET /admin/v2/clusters HTTP/1.1\r\nHost: localhost\r\n\r\n",
    # size 16, then a command size larger than the frame
    "cmd-size-exceeds-frame": struct.pack(">II", 16, 0xFFFFFFF0) + b"\xAB" * 12,
    # a complete frame whose command is not protobuf (0xFF.. is a never-ending varint key)
    "not-protobuf": struct.pack(">II", 12, 8) + b"\xFF" * 8,
    # a frame too small to hold a command size
    "empty-frame": struct.pack(">I", 0) + b"\x00" * 8,
    # pseudo-random bytes starting with a huge size
    "random": bytes((i * 167 + 91) % 256 for i in range(512)),
}


@pytest.mark.parametrize("name", list(GARBAGE))
def test_garbage_before_connect(broker, client, topic, name):
    bystander = _connected(broker)  # another client's connection, open before the garbage
    try:
        with rp.RawConnection(HOST, broker.port) as conn:
            try:
                conn.send(GARBAGE[name])
            except rp.Closed:
                pass  # closed before we even finished writing: fine
            conn.expect_closed_or_error(timeout=10)
        bystander.ping_pong()
    finally:
        bystander.close()
    _assert_broker_serves(client, topic)


@pytest.mark.parametrize("size", [0x7FFFFFFF, 0xFFFFFFFF, 6 * 1024 * 1024],
                         ids=["2GiB", "4GiB", "6MiB"])
@pytest.mark.parametrize("after_connect", [False, True], ids=["before-connect", "after-connect"])
def test_oversized_frame_refused_before_buffering(broker, client, topic, size, after_connect):
    """Only the size field (and a few bytes) is sent: a broker that waited to buffer the body would
    never answer, so a prompt close proves it refused the frame from its header."""
    bystander = _connected(broker)
    try:
        conn = _connected(broker) if after_connect else rp.RawConnection(HOST, broker.port)
        with conn:
            conn.send(struct.pack(">II", size, 8) + b"\x08\x12\x92\x01\x00")
            conn.expect_closed(timeout=5)
        bystander.ping_pong()
    finally:
        bystander.close()
    _assert_broker_serves(client, topic)


def _cmd(raw_command: bytes) -> bytes:
    return rp.simple_frame(raw_command)


MALFORMED = {
    # type PRODUCER; its sub-message (field 5) claims 50 bytes, the frame holds 3
    "truncated-submessage": _cmd(rp.field_varint(1, rp.PRODUCER) + rp.varint(5 << 3 | 2) + rp.varint(50) + b"abc"),
    # PRODUCER without its required topic
    "missing-required-field": _cmd(rp.base_command(rp.PRODUCER, rp.field_varint(2, 7) + rp.field_varint(3, 99))),
    # BaseCommand without its required type
    "missing-type": _cmd(rp.field_bytes(18, b"")),
    # a command type this protocol does not have
    "unknown-command-type": _cmd(rp.field_varint(1, 999)),
    # a valid protobuf that is a command the broker never accepts from a client
    "server-only-command": _cmd(rp.base_command(rp.CONNECTED, rp.field_bytes(1, "fake-server"))),
    # command size says 3 bytes but the protobuf inside is cut in the middle of a varint
    "cut-varint": struct.pack(">II", 7, 3) + b"\x08\x92\x81",
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_command_after_connect(broker, client, topic, name):
    bystander = _connected(broker)
    try:
        with _connected(broker) as conn:
            conn.send(MALFORMED[name])
            conn.expect_closed_or_error(timeout=10)
        bystander.ping_pong()
    finally:
        bystander.close()
    _assert_broker_serves(client, topic)


def test_command_before_connect_is_refused(broker):
    """Only CONNECT is valid on a new connection."""
    with rp.RawConnection(HOST, broker.port) as conn:
        conn.send(rp.simple_frame(rp.producer_command("persistent://public/default/nope", 0, 1)))
        conn.expect_closed_or_error(timeout=10)


def test_send_with_bad_checksum(broker, client, topic):
    t = topic()
    reader = client.create_reader(t, pulsar.MessageId.earliest)
    with _connected(broker) as conn:
        name = _raw_producer(conn, t)

        # 1. wrong CRC32C -> SEND_ERROR{ChecksumError}, the connection stays usable
        meta = rp.message_metadata(name, 0, _now_ms())
        good_crc = rp.crc32c(struct.pack(">I", len(meta)) + meta + b"corrupted!")
        conn.send(rp.payload_frame(rp.send_command(0, 0), meta, b"corrupted!", checksum=good_crc ^ 0x5A5A5A5A))
        err = conn.read_command()
        assert err.type == rp.SEND_ERROR, f"expected SEND_ERROR (8), got {err!r}"
        assert (err.first(1), err.first(2)) == (0, 0)  # producer_id, sequence_id
        assert err.first(3) == rp.SERVER_ERROR_CHECKSUM
        assert err.first(4) is not None  # message is a required field

        # 2. same producer, correct checksum -> stored
        meta = rp.message_metadata(name, 1, _now_ms())
        conn.send(rp.payload_frame(rp.send_command(0, 1), meta, b"intact"))
        receipt = conn.read_command()
        assert receipt.type == rp.SEND_RECEIPT, receipt
        assert receipt.first(2) == 1

        # 3. payload bytes flipped after the checksum was computed (bit rot in transit)
        meta = rp.message_metadata(name, 2, _now_ms())
        frame = bytearray(rp.payload_frame(rp.send_command(0, 2), meta, b"flipped-payload"))
        frame[-1] ^= 0x01
        conn.send(bytes(frame))
        err = conn.read_command()
        assert err.type == rp.SEND_ERROR and err.first(3) == rp.SERVER_ERROR_CHECKSUM, err

    # only the intact message was stored
    assert reader.read_next(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"intact"
    assert not reader.has_message_available()
    consumer = client.subscribe(t, "check", initial_position=pulsar.InitialPosition.Earliest)
    assert consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"intact"
    assert_no_more(consumer)


def test_many_bad_connections_do_not_hurt_a_live_client(broker, client, topic):
    """A producer/consumer pair keeps working while bad connections come and go."""
    t = topic()
    consumer = client.subscribe(t, "sub")
    producer = client.create_producer(t)
    for i, payload in enumerate(list(GARBAGE.values()) * 4):
        with rp.RawConnection(HOST, broker.port) as conn:
            try:
                conn.send(payload)
            except rp.Closed:
                pass
            conn.expect_closed_or_error(timeout=10)
        producer.send(b"ok-%d" % i)
        assert consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"ok-%d" % i
