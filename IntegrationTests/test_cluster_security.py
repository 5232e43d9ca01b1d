"""Issue 14, inside a cluster: storage nodes with `authenticationEnabled` accept only brokers that
present a token (`brokerClientAuthenticationPlugin` / `brokerClientAuthenticationParameters`)
whose role is one of the node's `superUserRoles`; storage nodes with `tlsCertificatePath` speak
only TLS, and with `tlsClientAuthentication=true` want a trusted client certificate, which the
broker presents with `brokerClientTlsEnabled` / `bookkeeperTLS*`.

- A secured cluster (etcd, 2 storage nodes with TLS, mTLS and token auth; 1 broker, token auth on
  its binary protocol too) stores and serves messages for the official client.
- Spoken to directly (over TLS, with a trusted certificate), a storage node answers a request
  without credentials, a wrong-key token or a valid token of a role that is not a broker's with
  `unauthenticated` (status 7) and closes the connection; its log names the reason and never the
  token. Plain text, no client certificate, or one from another CA: the connection is closed.
- A broker without credentials, without TLS, or that does not trust the nodes' CA cannot write:
  producing fails, nothing is stored.

The storage protocol is ours (docs/STORAGE_PROTOCOL.md); the raw frames here are its layout.
"""

from __future__ import annotations

import socket
import ssl
import struct
import subprocess
import uuid
from pathlib import Path

import jwt
import pulsar
import pytest

from cluster import LocalCluster
from conftest import close_quietly, magnetar_binary
from pki import PKI, make_pki

TOKEN_PROVIDER = "org.apache.pulsar.broker.authentication.AuthenticationProviderToken"
TOKEN_PLUGIN = "org.apache.pulsar.client.impl.auth.AuthenticationToken"
UNAUTHENTICATED = 7


class Keys:
    def __init__(self, root: Path, pki: PKI):
        root.mkdir(parents=True, exist_ok=True)
        self.pki = pki
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
            f"tlsCertificatePath={pki.cert('broker')}",
            f"tlsKeyStore={pki.key('broker')}",
            "tlsKeyStoreType=PEM",
            f"tlsTrustStore={pki.ca}",
            "tlsClientAuthentication=true",
        ]) + "\n")

    def token(self, role: str) -> str:
        return jwt.encode({"sub": role}, self.key, algorithm="HS256")

    def broker_conf(self, root: Path, credentials: bool = True, tls: bool = True, trust: Path | None = None) -> Path:
        lines = [
            "authenticationEnabled=true",
            f"authenticationProviders={TOKEN_PROVIDER}",
            f"tokenSecretKey=file://{self.key_path}",
            "superUserRoles=broker,admin",
        ]
        if credentials:
            lines += [f"brokerClientAuthenticationPlugin={TOKEN_PLUGIN}",
                      f"brokerClientAuthenticationParameters=file://{self.broker_token_path}"]
        if tls:
            lines += ["brokerClientTlsEnabled=true",
                      f"bookkeeperTLSTrustCertsFilePath={trust or self.pki.ca}",
                      "bookkeeperTLSClientAuthentication=true",
                      f"bookkeeperTLSCertificateFilePath={self.pki.cert('alice')}",
                      f"bookkeeperTLSKeyFilePath={self.pki.key('alice')}"]
        path = root / f"broker-{credentials}-{tls}-{trust is not None}.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def tls_context(self, certificate: str | None = "alice") -> ssl.SSLContext:
        """A client context trusting the test CA, presenting `certificate` (None: no certificate)."""
        context = ssl.create_default_context(cafile=str(self.pki.ca))
        context.check_hostname = False
        if certificate is not None:
            context.load_cert_chain(str(self.pki.cert(certificate)), str(self.pki.key(certificate)))
        return context

    def connect(self, port: int, certificate: str | None = "alice") -> ssl.SSLSocket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        return self.tls_context(certificate).wrap_socket(sock)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("cluster-pki"))


@pytest.fixture(scope="module")
def secured(tmp_path_factory, pki):
    root = tmp_path_factory.mktemp("cluster-security")
    keys = Keys(root / "keys", pki)
    cluster = LocalCluster(root, storage_nodes=2, brokers=1,
                           storage_args=["--config", str(keys.storage_conf)],
                           broker_args=["--config", str(keys.broker_conf(root / "keys"))], storage_metrics=True)
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
        assert '"tls": true' in log or "tls=true" in log, log[-2000:]
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
    with keys.connect(node.port) as sock:
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
    with keys.connect(cluster.storage[1].port) as sock:
        sock.sendall(authenticate_frame(keys.token("broker")))
        assert read_answer(sock) == (0x88, 1, 0, b"broker")
        sock.sendall(frame(3, 2, struct.pack(">q", 987_654_321)))  # a ledger nobody wrote
        kind, request_id, status, _ = read_answer(sock)
        assert (kind, request_id, status) == (0x83, 2, 2)  # notFound: served, not refused


def refused_handshake(keys: Keys, port: int, certificate: str | None) -> bool:
    """True if the node ends a TLS connection presenting `certificate` without serving it. Under
    TLS 1.3 the client's handshake completes before the node checks the certificate: the refusal
    then arrives as an alert, or the end of the connection, at the first read."""
    try:
        with keys.connect(port, certificate) as sock:
            sock.sendall(authenticate_frame(keys.token("broker")))
            sock.settimeout(5)
            return sock.recv(64) == b""
    except (ssl.SSLError, ConnectionError):
        return True


@pytest.mark.parametrize("certificate", [None, "mallory"], ids=["no-certificate", "untrusted-ca"])
def test_storage_node_wants_a_trusted_client_certificate(secured, certificate):
    keys, cluster = secured
    assert refused_handshake(keys, cluster.storage[0].port, certificate)
    # The node still serves a good client.
    with keys.connect(cluster.storage[0].port) as sock:
        sock.sendall(authenticate_frame(keys.token("broker")))
        assert read_answer(sock) == (0x88, 1, 0, b"broker")


def test_plain_text_on_a_tls_node_closes_that_connection(secured):
    keys, cluster = secured
    node = cluster.storage[0]
    offset = node.log_size()
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
        sock.sendall(authenticate_frame(keys.token("broker")))
        data = b""
        try:
            while chunk := sock.recv(4096):
                data += chunk
        except ConnectionError:
            pass
    # At most a TLS alert record (content type 21), never a storage-protocol answer.
    assert data == b"" or data[0] == 0x15, data[:32]
    assert "storage-server.connection-error" in node.log_since(offset)
    with keys.connect(node.port) as sock:
        sock.sendall(authenticate_frame(keys.token("broker")))
        assert read_answer(sock) == (0x88, 1, 0, b"broker")


@pytest.mark.parametrize("case", ["no-credentials", "no-tls", "untrusted-nodes"])
def test_broker_that_cannot_reach_secured_nodes_does_not_write(tmp_path, pki, case):
    keys = Keys(tmp_path / "keys", pki)
    conf = keys.broker_conf(tmp_path / "keys", credentials=case != "no-credentials", tls=case != "no-tls",
                            trust=pki.other_ca if case == "untrusted-nodes" else None)
    cluster = LocalCluster(tmp_path, storage_nodes=1, brokers=1,
                           storage_args=["--config", str(keys.storage_conf)], broker_args=["--config", str(conf)])
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
        expected = {"no-credentials": "authentication required", "no-tls": "storage node",
                    "untrusted-nodes": "TLS handshake with storage node"}[case]
        assert expected in broker_log, broker_log[-3000:]
        node_log = cluster.storage[0].log_tail(64 * 1024)
        assert "storage-server.authenticated" not in node_log
        if case != "no-credentials":
            assert "storage-server.connection-error" in node_log, node_log[-3000:]
    finally:
        cluster.close()


def test_storage_nodes_serve_bookie_metrics(secured):
    """Each storage node's /metrics (plain HTTP beside its TLS storage port) has BookKeeper's
    `bookie_*` series, and they count the entries a broker wrote."""
    import urllib.request
    from prometheus_client.parser import text_string_to_metric_families
    keys, cluster = secured
    topic = f"persistent://public/default/bookie-metrics-{uuid.uuid4().hex[:8]}"
    client = client_for(cluster, keys.token("admin"))
    try:
        producer = client.create_producer(topic)
        for i in range(10):
            producer.send(f"m-{i}".encode())
    finally:
        close_quietly(client)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    added = 0
    for node in cluster.storage:
        with opener.open(f"http://127.0.0.1:{node.http_port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        for name in ("bookie_SERVER_STATUS", "bookie_ledgers_count", "bookie_WRITE_BYTES", "bookie_ADD_ENTRY_count",
                     "bookie_READ_BYTES", "bookie_READ_ENTRY_count", "bookie_entries_count", "bookie_ledger_writable_dirs"):
            assert name in families, (name, sorted(families))
        assert families["bookie_SERVER_STATUS"].samples[0].value == 1
        assert families["bookie_ledger_writable_dirs"].samples[0].value == 1
        assert families["bookie_entries_count"].samples[0].value > 0
        added += families["bookie_ADD_ENTRY_count"].samples[0].value
    assert added >= 10  # every entry is on the ack quorum's nodes
