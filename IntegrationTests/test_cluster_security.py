"""Issue 14, inside a cluster: storage nodes with `authenticationEnabled` accept only brokers that
present a token (`brokerClientAuthenticationPlugin` / `brokerClientAuthenticationParameters`)
whose role is one of the node's `superUserRoles`.

- A secured cluster (etcd, 2 storage nodes, 1 broker; token auth on the broker's binary protocol
  too) stores and serves messages for the official client.
- Spoken to directly, a storage node answers a request without credentials, a wrong-key token or
  a valid token of a role that is not a broker's with `unauthenticated` (status 7) and closes the
  connection; its log names the reason and never the token.
- A broker without credentials cannot write to such nodes: producing fails, nothing is stored.

The storage protocol is ours (docs/STORAGE_PROTOCOL.md); the raw frames here are its layout.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import uuid
from pathlib import Path

import jwt
import pulsar
import pytest

from cluster import LocalCluster
from conftest import close_quietly, magnetar_binary

TOKEN_PROVIDER = "org.apache.pulsar.broker.authentication.AuthenticationProviderToken"
TOKEN_PLUGIN = "org.apache.pulsar.client.impl.auth.AuthenticationToken"
UNAUTHENTICATED = 7


class Keys:
    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self.key_path = root / "secret.key"
        subprocess.run([str(magnetar_binary()), "tokens", "create-secret-key", "--output", str(self.key_path)],
                       check=True, timeout=60)
        self.key = self.key_path.read_bytes()
        self.broker_token_path = root / "broker.token"
        self.broker_token_path.write_text(self.token("broker") + "\n")
        self.storage_conf = root / "bookkeeper.conf"
        self.storage_conf.write_text("\n".join([
            "authenticationEnabled=true",
            f"authenticationProviders={TOKEN_PROVIDER}",
            f"tokenSecretKey=file://{self.key_path}",
            "superUserRoles=broker",
        ]) + "\n")

    def token(self, role: str) -> str:
        return jwt.encode({"sub": role}, self.key, algorithm="HS256")

    def broker_conf(self, root: Path, with_credentials: bool) -> Path:
        lines = [
            "authenticationEnabled=true",
            f"authenticationProviders={TOKEN_PROVIDER}",
            f"tokenSecretKey=file://{self.key_path}",
            "superUserRoles=broker,admin",
        ]
        if with_credentials:
            lines += [f"brokerClientAuthenticationPlugin={TOKEN_PLUGIN}",
                      f"brokerClientAuthenticationParameters=file://{self.broker_token_path}"]
        path = root / ("broker.conf" if with_credentials else "broker-no-credentials.conf")
        path.write_text("\n".join(lines) + "\n")
        return path


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster-security")
    keys = Keys(root / "keys")
    cluster = LocalCluster(root, storage_nodes=2, brokers=1,
                           storage_args=["--config", str(keys.storage_conf)],
                           broker_args=["--config", str(keys.broker_conf(root / "keys", with_credentials=True))])
    cluster.start()
    yield keys, cluster
    cluster.close()


def client_for(cluster: LocalCluster, token: str, timeout_s: int = 30) -> pulsar.Client:
    return pulsar.Client(cluster.service_url, authentication=pulsar.AuthenticationToken(token),
                         operation_timeout_seconds=timeout_s)


def test_secured_cluster_stores_and_serves(secured):
    keys, cluster = secured
    topic = f"persistent://public/default/secured-{uuid.uuid4().hex[:8]}"
    client = client_for(cluster, keys.token("admin"))
    try:
        consumer = client.subscribe(topic, "sub")
        producer = client.create_producer(topic)
        for i in range(50):
            producer.send(f"m-{i}".encode())
        received = []
        for _ in range(50):
            msg = consumer.receive(10_000)
            received.append(msg.data().decode())
            consumer.acknowledge(msg)
        assert received == [f"m-{i}" for i in range(50)]
    finally:
        close_quietly(client)
    broker_log = cluster.brokers[0].log_tail(64 * 1024)
    assert keys.token("broker") not in broker_log
    for node in cluster.storage:
        log = node.log_tail(64 * 1024)
        assert "storage-server.authenticated" in log, log[-2000:]
        assert keys.token("broker") not in log


def frame(kind: int, request_id: int, body: bytes) -> bytes:
    return struct.pack(">IBQ", 1 + 8 + len(body), kind, request_id) + body


def read_answer(sock: socket.socket) -> tuple[int, int, int, bytes]:
    """(type, request id, status, rest) of the next frame."""
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, f"connection closed after {len(data)} of {n} bytes"
            data += chunk
        return data
    (length,) = struct.unpack(">I", exactly(4))
    body = exactly(length)
    kind, request_id, status = struct.unpack(">BQB", body[:10])
    return kind, request_id, status, body[10:]


def assert_closed(sock: socket.socket) -> None:
    sock.settimeout(5)
    assert sock.recv(1) == b"", "the node kept the connection open"


def authenticate_frame(token: str, request_id: int = 1) -> bytes:
    method = b"token"
    return frame(8, request_id, struct.pack(">H", len(method)) + method + token.encode())


@pytest.mark.parametrize("case", ["no-credentials", "wrong-key", "not-a-broker"])
def test_storage_node_refuses_other_clients(secured, case):
    keys, cluster = secured
    node = cluster.storage[0]
    offset = node.log_size()
    wrong_key_token = jwt.encode({"sub": "broker"}, b"another-key-of-32-bytes-or-more!!", algorithm="HS256")
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
        if case == "no-credentials":
            sock.sendall(frame(3, 5, struct.pack(">q", 1)))  # readLastAddConfirmed(ledger 1)
            kind, request_id, status, text = read_answer(sock)
            assert (kind, request_id, status) == (0x83, 5, UNAUTHENTICATED)
            assert b"authentication required" in text
        else:
            token = wrong_key_token if case == "wrong-key" else keys.token("app")
            sock.sendall(authenticate_frame(token))
            kind, request_id, status, text = read_answer(sock)
            assert (kind, request_id, status) == (0x88, 1, UNAUTHENTICATED)
            assert text == b"Failed to authenticate"
            log = node.log_since(offset)
            assert "storage-server.authentication-refused" in log
            assert token not in log
            if case == "not-a-broker":
                assert "not one of the storage node's superUserRoles" in log
        assert_closed(sock)


def test_storage_node_serves_a_broker_token(secured):
    keys, cluster = secured
    with socket.create_connection(("127.0.0.1", cluster.storage[1].port), timeout=10) as sock:
        sock.sendall(authenticate_frame(keys.token("broker")))
        assert read_answer(sock) == (0x88, 1, 0, b"broker")
        sock.sendall(frame(3, 2, struct.pack(">q", 987_654_321)))  # a ledger nobody wrote
        kind, request_id, status, _ = read_answer(sock)
        assert (kind, request_id, status) == (0x83, 2, 2)  # notFound: served, not refused


def test_broker_without_credentials_cannot_write(tmp_path):
    keys = Keys(tmp_path / "keys")
    cluster = LocalCluster(tmp_path, storage_nodes=2, brokers=1,
                           storage_args=["--config", str(keys.storage_conf)],
                           broker_args=["--config", str(keys.broker_conf(tmp_path / "keys", with_credentials=False))])
    cluster.start()
    try:
        client = client_for(cluster, keys.token("admin"), timeout_s=5)
        try:
            with pytest.raises(Exception):
                producer = client.create_producer(f"persistent://public/default/open-{uuid.uuid4().hex[:8]}")
                producer.send(b"must not be stored")
        finally:
            close_quietly(client)
        broker_log = cluster.brokers[0].log_tail(64 * 1024)
        assert "authentication required" in broker_log, broker_log[-3000:]
        for node in cluster.storage:
            assert "storage-server.authenticated" not in node.log_tail(64 * 1024)
    finally:
        cluster.close()
