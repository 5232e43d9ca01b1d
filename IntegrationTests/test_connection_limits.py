"""Issue 12, faults 7 and 8: connections cannot exhaust the broker.

7. Connections that never send CONNECT are closed after `keepAliveIntervalSeconds`; silent ones get a
   PING and are closed when they do not answer; `brokerMaxConnections` / `brokerMaxConnectionsPerIp`
   are enforced; at the process's file-descriptor limit a reserve keeps the admin API answering.
8. A client that stops reading does not make the broker buffer for it: dispatch to it pauses while
   its socket is full (and resumes when it reads), and requests it sends while its replies pile up
   are not read.

Each broker here is this module's own, with short intervals and small limits.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import pulsar
import pytest

import rawproto as rp
from conftest import _NO_PROXY, Broker, close_quietly, new_client
from helpers import RECEIVE_TIMEOUT_MS

HOST = "127.0.0.1"
KEEP_ALIVE_S = 2
FLOW = 11


class _BrokerWith(Broker):
    """conftest's Broker with extra options, optionally under a file-descriptor limit."""

    def __init__(self, *args, extra_args=(), nofile: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.extra_args = list(extra_args)
        self.nofile = nofile

    def _command(self) -> list[str]:
        cmd = super()._command() + self.extra_args
        if self.nofile:
            cmd = ["prlimit", f"--nofile={self.nofile}:{self.nofile}", "--"] + cmd
        return cmd

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")


def _start(tmp_path_factory, name: str, **kwargs) -> _BrokerWith:
    tmp = tmp_path_factory.mktemp(name)
    b = _BrokerWith(tmp / "data", tmp / "magnetar.log", **kwargs)
    b.start()
    b.auto_restart = True
    return b


@pytest.fixture(scope="module")
def keepalive_broker(tmp_path_factory):
    b = _start(tmp_path_factory, "keepalive", extra_args=[
        "--keep-alive-interval-seconds", str(KEEP_ALIVE_S), "--broker-max-connections-per-ip", "30"])
    yield b
    b.close()


def _health(broker) -> bool:
    with _NO_PROXY.open(broker.http_url + "/health", timeout=5) as resp:
        return resp.status == 200


def _wait_closed(sock: socket.socket, timeout: float) -> bool:
    """True once the peer closed `sock` (EOF or reset) within `timeout`; PINGs are read and ignored."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, ConnectionAbortedError):
            return True
        if not data:
            return True
    return False


# ------------------------------------------------------------------------------------------------
# 7. connection exhaustion
# ------------------------------------------------------------------------------------------------

def test_connections_without_connect_are_closed(keepalive_broker):
    socks = [socket.create_connection((HOST, keepalive_broker.port), timeout=5) for _ in range(20)]
    try:
        for s in socks:
            assert _wait_closed(s, timeout=4 * KEEP_ALIVE_S), "a connection without CONNECT stayed open"
    finally:
        for s in socks:
            s.close()


def test_silent_connection_is_pinged_then_closed(keepalive_broker):
    with rp.RawConnection(HOST, keepalive_broker.port) as conn:
        conn.handshake()
        frame = conn.read_frame(timeout=3 * KEEP_ALIVE_S)  # read, not answered
        assert frame.type == rp.PING, frame
        assert _wait_closed(conn.sock, timeout=3 * KEEP_ALIVE_S), "an unanswered PING did not close the connection"


def test_connection_that_answers_pings_stays_open(keepalive_broker):
    with rp.RawConnection(HOST, keepalive_broker.port) as conn:
        conn.handshake()
        deadline = time.monotonic() + 3 * KEEP_ALIVE_S
        pings = 0
        while time.monotonic() < deadline:
            try:
                frame = conn.read_frame(timeout=max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                break
            assert frame.type == rp.PING, frame
            pings += 1
            conn.send(rp.PONG_FRAME)
        assert pings >= 1
        conn.ping_pong()  # still served


def test_connections_per_ip_are_limited(keepalive_broker):
    conns = []
    try:
        for _ in range(30):
            conn = rp.RawConnection(HOST, keepalive_broker.port)
            conn.handshake()
            conns.append(conn)
        extra = socket.create_connection((HOST, keepalive_broker.port), timeout=5)
        try:
            assert _wait_closed(extra, timeout=5), "the connection past brokerMaxConnectionsPerIp was kept"
        finally:
            extra.close()
        assert _health(keepalive_broker)
    finally:
        for conn in conns:
            conn.close()
    # the slots come back: a client connects again
    client = new_client(keepalive_broker.url)
    try:
        t = f"persistent://public/default/per-ip-{os.getpid()}-{time.monotonic_ns()}"
        consumer = client.subscribe(t, "s")
        client.create_producer(t).send(b"back")
        assert consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"back"
    finally:
        close_quietly(client)


def test_file_descriptor_limit_keeps_a_reserve_for_the_admin_api(tmp_path_factory):
    """Under a limit of 400 file descriptors, 300 raw connections: those past the cap are refused,
    /health still answers, and a good client gets in once they are gone."""
    b = _start(tmp_path_factory, "nofile", nofile=400)
    socks = []
    try:
        for _ in range(300):
            try:
                socks.append(socket.create_connection((HOST, b.port), timeout=5))
            except OSError:
                break
        time.sleep(0.5)
        assert _health(b), "the admin API stopped answering at the connection cap"
        closed = sum(1 for s in socks[-40:] if _wait_closed(s, timeout=0.2))
        assert closed > 0, "no connection was refused under a 400 file-descriptor limit"
        for s in socks:
            s.close()
        socks = []
        client = new_client(b.url)
        try:
            t = f"persistent://public/default/nofile-{time.monotonic_ns()}"
            consumer = client.subscribe(t, "s")
            client.create_producer(t).send(b"in")
            assert consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"in"
        finally:
            close_quietly(client)
    finally:
        for s in socks:
            s.close()
        b.close()


# ------------------------------------------------------------------------------------------------
# 8. clients that stop reading
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def plain_broker(tmp_path_factory):
    b = _start(tmp_path_factory, "backpressure")
    yield b
    b.close()


def _subscribe_raw(conn: rp.RawConnection, t: str, consumer_id: int = 1, request_id: int = 1) -> None:
    sub = (rp.field_bytes(1, t) + rp.field_bytes(2, "slow") + rp.field_varint(3, 1)  # Shared
           + rp.field_varint(4, consumer_id) + rp.field_varint(5, request_id) + rp.field_varint(13, 1))  # Earliest
    conn.send(rp.simple_frame(rp.base_command(rp.SUBSCRIBE, sub)))
    ok = conn.read_command()
    assert ok.type == rp.SUCCESS, ok
    conn.send(rp.simple_frame(rp.base_command(FLOW, rp.field_varint(1, consumer_id) + rp.field_varint(2, 1_000_000))))


def test_consumer_that_does_not_read_is_not_buffered_for(plain_broker):
    """A consumer with 1e6 permits that reads nothing while 60 MiB are published: the broker's memory
    does not grow by the backlog; once the consumer reads, it gets every message."""
    t = f"persistent://public/default/slow-reader-{time.monotonic_ns()}"
    count, size = 600, 100 * 1024
    client = new_client(plain_broker.url)
    try:
        producer = client.create_producer(t, batching_enabled=False)
        producer.send(b"warm-up")
        conn = rp.RawConnection(HOST, plain_broker.port, timeout=30)
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        conn.handshake()
        _subscribe_raw(conn, t)
        time.sleep(0.5)
        before = plain_broker.rss_bytes()
        payload = os.urandom(size)
        for i in range(count):
            producer.send_async(payload, None)
            if i % 100 == 99:
                producer.flush()
        producer.flush()
        time.sleep(1.0)
        grown = plain_broker.rss_bytes() - before
        assert grown < 40 * 1024 * 1024, f"broker RSS grew by {grown / 2**20:.0f} MiB for a consumer that reads nothing"
        received = 0
        deadline = time.monotonic() + 60
        while received < count + 1 and time.monotonic() < deadline:
            frame = conn.read_command(timeout=30)
            if frame.type == rp.MESSAGE:
                received += 1
        assert received == count + 1, f"{received} of {count + 1} delivered once the consumer read"
        conn.close()
    finally:
        close_quietly(client)


def test_pings_never_read_stop_being_read(plain_broker):
    """1.9 M PINGs (25 MB) whose PONGs are never read: the broker stops reading this connection (our
    send blocks), its memory stays flat, and everyone else is served."""
    conn = rp.RawConnection(HOST, plain_broker.port, timeout=30)
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    conn.handshake()
    before = plain_broker.rss_bytes()
    chunk = rp.PING_FRAME * 10_000
    sent = 0
    blocked = False
    conn.sock.settimeout(3)
    try:
        while sent < 1_900_000:
            conn.sock.sendall(chunk)
            sent += 10_000
    except socket.timeout:
        blocked = True
    except (BrokenPipeError, ConnectionResetError):
        blocked = True  # closed for not reading: also bounded
    grown = plain_broker.rss_bytes() - before
    assert blocked, "the broker read 1.9 M PINGs while their PONGs piled up"
    assert grown < 40 * 1024 * 1024, f"broker RSS grew by {grown / 2**20:.0f} MiB"
    conn.close()
    client = new_client(plain_broker.url)
    try:
        t = f"persistent://public/default/after-pings-{time.monotonic_ns()}"
        consumer = client.subscribe(t, "s")
        client.create_producer(t).send(b"served")
        assert consumer.receive(timeout_millis=RECEIVE_TIMEOUT_MS).data() == b"served"
    finally:
        close_quietly(client)
