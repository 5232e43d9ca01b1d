"""Issue 14: token authentication and authorization, driven with the official Python client.

One broker with `authenticationEnabled` + `authorizationEnabled` (an HS256 secret key made by
`magnetar tokens create-secret-key`, super-user `admin`) serves the module. Tokens come from
`magnetar tokens create` and from PyJWT (as any Pulsar deployment makes them).
- A good token produces and consumes; a missing, wrong-key or expired one is refused (the C++
  client retries a refused CONNECT until its operation timeout: `pulsar.Timeout`, known upstream).
- Grants: produce and consume separately granted, denied (`pulsar.AuthorizationError` at once) and
  revoked; a tenant admin grants, a plain role cannot grant itself; topic-level grants.
- Admin REST: 401 without / with a bad token, 403 for the wrong role, 200 for the right one.
- Expiry on a live connection: AUTH_CHALLENGE answered with a fresh token keeps it; a connection
  whose token expired and cannot be refreshed is closed.
- A second broker with an RS256 key pair (`tokens create-key-pair`, tokenPublicKey).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import time
import uuid
from pathlib import Path

import jwt
import pulsar
import pytest

from admin_rest import call, eventually
from conftest import Broker, close_quietly, magnetar_binary

AUTH_TIMEOUT_S = 3  # operation timeout of clients expected to be refused


def tokens(*args: str) -> str:
    out = subprocess.run([str(magnetar_binary()), "tokens", *args], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode().strip()


class SecureBroker(Broker):
    """`magnetar standalone --config <file>` with the security keys."""

    def __init__(self, root: Path, security: str):
        super().__init__(root / "data", root / "magnetar.log")
        self.config_path = root / "standalone.conf"
        self.config_path.write_text(
            f"brokerServicePort={self.port}\nwebServicePort={self.http_port}\nbindAddress=127.0.0.1\n"
            f"advertisedAddress=127.0.0.1\n{security}\n")

    def _command(self) -> list[str]:
        return [str(self.binary), "standalone", "--config", str(self.config_path), "--data-dir", str(self.data_dir)]


class Secured:
    def __init__(self, root: Path):
        self.key_path = root / "secret.key"
        subprocess.run([str(magnetar_binary()), "tokens", "create-secret-key", "--output", str(self.key_path)],
                       check=True, timeout=60)
        self.key = self.key_path.read_bytes()
        self.broker = SecureBroker(root, "\n".join([
            "authenticationEnabled=true",
            "authenticationProviders=org.apache.pulsar.broker.authentication.AuthenticationProviderToken",
            f"tokenSecretKey=file://{self.key_path}",
            "authorizationEnabled=true",
            "superUserRoles=admin,other-super",
            "authenticationRefreshCheckSeconds=1",
        ]))
        self.admin_token = self.token("admin")

    def token(self, role: str, expires_in: float | None = None) -> str:
        """A token made as any Pulsar deployment would (PyJWT, HS256, sub + exp)."""
        claims: dict = {"sub": role}
        if expires_in is not None:
            claims["exp"] = int(time.time() + expires_in)
        return jwt.encode(claims, self.key, algorithm="HS256")

    def client(self, token: str | None, timeout: int = 10) -> pulsar.Client:
        kwargs = {"authentication": pulsar.AuthenticationToken(token)} if token is not None else {}
        return pulsar.Client(self.broker.url, operation_timeout_seconds=timeout, connection_timeout_ms=5000, **kwargs)

    def rest(self, method: str, path: str, token: str | None, body=None) -> tuple[int, object]:
        return call(self.broker, method, path, body, token)

    def admin(self, method: str, path: str, body=None, token: str | None = None):
        status, answer = self.rest(method, path, token or self.admin_token, body)
        assert 200 <= status < 300, f"{method} {path}: {status} {answer}"
        return answer


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    s = Secured(tmp_path_factory.mktemp("secure"))
    s.broker.start()
    s.broker.auto_restart = True
    yield s
    s.broker.close()


def until_allowed(action, timeout_s: float = 15.0):
    """action() once a grant has reached the broker (grants are read through a one-second cache)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return action()
        except pulsar.AuthorizationError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def new_tenant(secured: Secured, admins: list[str]) -> str:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    secured.admin("PUT", f"/admin/v2/tenants/{tenant}", {"adminRoles": admins, "allowedClusters": ["standalone"]})
    secured.admin("PUT", f"/admin/v2/namespaces/{tenant}/ns")
    return tenant


# -- authentication ------------------------------------------------------------------------------

def test_a_good_token_produces_and_consumes(secured, clients):
    client = secured.client(secured.admin_token)
    clients.append(client)
    topic = f"persistent://public/default/auth-{uuid.uuid4().hex[:8]}"
    consumer = client.subscribe(topic, "s")
    producer = client.create_producer(topic)
    producer.send(b"hello")
    assert consumer.receive(10_000).data() == b"hello"


def test_a_token_from_magnetar_tokens_create_works(secured, clients):
    token = tokens("create", "--secret-key", f"file://{secured.key_path}", "--subject", "other-super", "--expiry-time", "1h")
    shown = tokens("show", "-i", token)
    assert '"sub":"other-super"' in shown.replace(" ", "")
    assert "role: other-super" in tokens("validate", "-i", token, "--secret-key", f"file://{secured.key_path}")
    client = secured.client(token)
    clients.append(client)
    producer = client.create_producer(f"persistent://public/default/cli-{uuid.uuid4().hex[:8]}")
    producer.send(b"x")


@pytest.mark.parametrize("case", ["missing", "wrong-key", "expired", "garbage"])
def test_bad_credentials_are_refused(secured, clients, case):
    token = {
        "missing": None,
        "wrong-key": jwt.encode({"sub": "admin"}, b"k" * 32, algorithm="HS256"),
        "expired": secured.token("admin", expires_in=-60),
        "garbage": "not-a-jwt",
    }[case]
    offset = secured.broker.log_size()
    client = secured.client(token, timeout=AUTH_TIMEOUT_S)
    clients.append(client)
    started = time.monotonic()
    with pytest.raises((pulsar.Timeout, pulsar.AuthenticationError, pulsar.ConnectError)):
        client.create_producer(f"persistent://public/default/refused-{case}")
    assert time.monotonic() - started < AUTH_TIMEOUT_S + 10
    log = secured.broker.log_since(offset)
    assert "connection.authentication-failed" in log
    # The token never reaches the log.
    if token:
        assert token not in log


# -- admin REST ----------------------------------------------------------------------------------

def test_admin_rest_401_403_200(secured):
    assert secured.rest("GET", "/admin/v2/tenants", None)[0] == 401
    status, body = secured.rest("GET", "/admin/v2/tenants", "bad.token.here")
    assert status == 401 and "reason" in body
    status, body = secured.rest("GET", "/admin/v2/tenants", secured.token("alice"))
    assert status == 403 and "not authorized" in body["reason"]
    status, body = secured.rest("GET", "/admin/v2/tenants", secured.admin_token)
    assert status == 200 and "public" in body
    # /health and /metrics stay anonymous (authenticateMetricsEndpoint=false).
    assert secured.rest("GET", "/health", None)[0] == 200
    assert secured.rest("GET", "/metrics", None)[0] == 200


def test_tenant_admin_grants_and_a_plain_role_cannot_grant_itself(secured):
    tenant = new_tenant(secured, ["ops"])
    ops = secured.token("ops")
    path = f"/admin/v2/namespaces/{tenant}/ns/permissions"
    status, body = secured.rest("POST", f"{path}/bob", secured.token("bob"), ["produce"])
    assert status == 403, body
    assert secured.rest("POST", f"{path}/bob", ops, ["produce", "consume"])[0] == 204
    status, body = secured.rest("GET", path, ops)
    assert status == 200 and sorted(body["bob"]) == ["consume", "produce"]
    # A tenant admin of another tenant has no say here.
    other = new_tenant(secured, ["ops2"])
    assert secured.rest("POST", f"/admin/v2/namespaces/{tenant}/ns/permissions/x", secured.token("ops2"), ["consume"])[0] == 403
    assert secured.rest("DELETE", f"{path}/bob", ops)[0] == 204
    assert "bob" not in secured.rest("GET", path, ops)[1]
    # Only super-users create tenants.
    assert secured.rest("PUT", f"/admin/v2/tenants/{other}-x", ops, {"adminRoles": ["ops"], "allowedClusters": []})[0] == 403


# -- authorization on the binary protocol --------------------------------------------------------

def test_produce_and_consume_permissions_are_granted_denied_and_revoked(secured, clients):
    tenant = new_tenant(secured, ["owner"])
    topic = f"persistent://{tenant}/ns/grants"
    secured.admin("PUT", f"/admin/v2/persistent/{tenant}/ns/grants")
    client = secured.client(secured.token("carol"))
    clients.append(client)

    started = time.monotonic()
    with pytest.raises(pulsar.AuthorizationError):
        client.create_producer(topic)
    with pytest.raises(pulsar.AuthorizationError):
        client.subscribe(topic, "s")
    assert time.monotonic() - started < 8, "denials must come at once, not after a timeout"

    secured.admin("POST", f"/admin/v2/namespaces/{tenant}/ns/permissions/carol", ["produce"])
    producer = until_allowed(lambda: client.create_producer(topic))
    producer.send(b"granted")
    with pytest.raises(pulsar.AuthorizationError):
        client.subscribe(topic, "s")

    secured.admin("POST", f"/admin/v2/namespaces/{tenant}/ns/permissions/carol", ["produce", "consume"])
    consumer = until_allowed(lambda: client.subscribe(topic, "s", initial_position=pulsar.InitialPosition.Earliest))
    assert consumer.receive(10_000).data() == b"granted"
    reader = client.create_reader(topic, pulsar.MessageId.earliest)
    assert reader.read_next(10_000).data() == b"granted"

    secured.admin("DELETE", f"/admin/v2/namespaces/{tenant}/ns/permissions/carol")
    fresh = secured.client(secured.token("carol"))
    clients.append(fresh)

    def denied():
        try:
            p = fresh.create_producer(topic)
        except pulsar.AuthorizationError:
            return True
        p.close()
        raise AssertionError("still allowed")
    eventually(denied)


def test_topic_level_grants_and_tenant_admins(secured, clients):
    tenant = new_tenant(secured, ["owner"])
    allowed = f"persistent://{tenant}/ns/open"
    closed = f"persistent://{tenant}/ns/closed"
    secured.admin("POST", f"/admin/v2/persistent/{tenant}/ns/open/permissions/dave", ["produce"], token=secured.token("owner"))
    assert secured.admin("GET", f"/admin/v2/persistent/{tenant}/ns/open/permissions")["dave"] == ["produce"]
    client = secured.client(secured.token("dave"))
    clients.append(client)
    until_allowed(lambda: client.create_producer(allowed)).send(b"1")
    with pytest.raises(pulsar.AuthorizationError):
        client.create_producer(closed)
    # Revoking a namespace-level grant that is not there on the topic: 412.
    status, _ = secured.rest("DELETE", f"/admin/v2/persistent/{tenant}/ns/closed/permissions/dave", secured.admin_token)
    assert status == 412
    # The tenant's admin produces and consumes on every topic of it.
    owner = secured.client(secured.token("owner"))
    clients.append(owner)
    owner.subscribe(closed, "s")
    owner.create_producer(closed).send(b"2")


def test_partitioned_topic_grants_cover_partitions(secured, clients):
    tenant = new_tenant(secured, ["owner"])
    secured.admin("PUT", f"/admin/v2/persistent/{tenant}/ns/parts/partitions", 3)
    secured.admin("POST", f"/admin/v2/persistent/{tenant}/ns/parts/permissions/erin", ["produce", "consume"])
    client = secured.client(secured.token("erin"))
    clients.append(client)
    topic = f"persistent://{tenant}/ns/parts"
    consumer = until_allowed(lambda: client.subscribe(topic, "s"))
    producer = client.create_producer(topic)
    for i in range(6):
        producer.send(f"m{i}".encode(), partition_key=str(i))
    assert sorted(consumer.receive(10_000).data() for _ in range(6)) == [f"m{i}".encode() for i in range(6)]


# -- expiry on a live connection -----------------------------------------------------------------

def test_a_refreshed_token_keeps_the_connection(secured, clients):
    issued: list[str] = []

    def supplier() -> str:
        token = secured.token("admin", expires_in=3)
        issued.append(token)
        return token

    offset = secured.broker.log_size()
    client = pulsar.Client(secured.broker.url, authentication=pulsar.AuthenticationToken(supplier),
                           operation_timeout_seconds=10)
    clients.append(client)
    topic = f"persistent://public/default/refresh-{uuid.uuid4().hex[:8]}"
    consumer = client.subscribe(topic, "s")
    producer = client.create_producer(topic)
    for i in range(8):  # ~8 s: the 3 s tokens expire twice over
        producer.send(f"r{i}".encode())
        time.sleep(1)
    assert [consumer.receive(10_000).data() for _ in range(8)] == [f"r{i}".encode() for i in range(8)]
    assert len(issued) >= 2, "the client was never asked for a fresh token"
    log = secured.broker.log_since(offset)
    assert "connection.authentication-refresh-failed" not in log
    assert "connection.authentication-expired" not in log


def test_an_expired_token_that_is_not_refreshed_closes_the_connection(secured, clients):
    offset = secured.broker.log_size()
    client = secured.client(secured.token("admin", expires_in=2))
    clients.append(client)
    client.create_producer(f"persistent://public/default/expiring-{uuid.uuid4().hex[:8]}")

    def closed():
        log = secured.broker.log_since(offset)
        assert "connection.authentication-refresh-failed" in log or "connection.authentication-expired" in log
        return True
    eventually(closed, timeout_s=15)


# -- a public-key broker -------------------------------------------------------------------------

def test_rs256_key_pair_broker(tmp_path, clients):
    private, public = tmp_path / "private.der", tmp_path / "public.der"
    tokens("create-key-pair", "--output-private-key", str(private), "--output-public-key", str(public))
    broker = SecureBroker(tmp_path, "\n".join([
        "authenticationEnabled=true",
        "authenticationProviders=org.apache.pulsar.broker.authentication.AuthenticationProviderToken",
        f"tokenPublicKey=file://{public}",
    ]))
    broker.start()
    try:
        token = tokens("create", "--private-key", f"file://{private}", "--subject", "svc")
        client = pulsar.Client(broker.url, authentication=pulsar.AuthenticationToken(token), operation_timeout_seconds=10)
        clients.append(client)
        client.create_producer("persistent://public/default/rs256").send(b"ok")
        # A token signed by PyJWT with the same private key (as Pulsar's own tooling would make it).
        from cryptography.hazmat.primitives.serialization import load_der_private_key
        key = load_der_private_key(private.read_bytes(), password=None)
        other = pulsar.Client(broker.url, authentication=pulsar.AuthenticationToken(
            jwt.encode({"sub": "svc2"}, key, algorithm="RS256")), operation_timeout_seconds=10)
        clients.append(other)
        other.create_producer("persistent://public/default/rs256").send(b"ok2")
        # An HS256 token forged with the public key as its secret is refused.
        # (PyJWT itself refuses to make one, so it is signed by hand.)
        def b64(raw: bytes) -> str:
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        signing_input = b64(b'{"alg":"HS256"}') + "." + b64(b'{"sub":"svc"}')
        signature = hmac.new(public.read_bytes(), signing_input.encode(), hashlib.sha256).digest()
        forged = pulsar.Client(broker.url, authentication=pulsar.AuthenticationToken(f"{signing_input}.{b64(signature)}"),
                               operation_timeout_seconds=AUTH_TIMEOUT_S)
        clients.append(forged)
        with pytest.raises((pulsar.Timeout, pulsar.AuthenticationError, pulsar.ConnectError)):
            forged.create_producer("persistent://public/default/rs256")
    finally:
        broker.close()


# -- the CLI -------------------------------------------------------------------------------------

def test_admin_cli_grants_with_a_token(secured, tmp_path):
    tenant = new_tenant(secured, ["owner"])
    token_file = tmp_path / "owner.token"
    token_file.write_text(secured.token("owner") + "\n")

    def admin_cli(*args: str, token_args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([str(magnetar_binary()), "admin", "--url", secured.broker.http_url, *args, *token_args],
                              capture_output=True, text=True, timeout=60)

    with_token = ["--auth-token-file", str(token_file)]
    out = admin_cli("namespaces", "grant-permission", f"{tenant}/ns", "--role", "frank", "--actions", "produce,consume",
                    token_args=with_token)
    assert out.returncode == 0, out.stderr
    out = admin_cli("namespaces", "permissions", f"{tenant}/ns", "-o", "json", token_args=with_token)
    assert out.returncode == 0, out.stderr
    assert sorted(json.loads(out.stdout)["frank"]) == ["consume", "produce"]
    out = admin_cli("namespaces", "permissions", f"{tenant}/ns", token_args=[])
    assert out.returncode != 0 and "401" in out.stderr
    out = admin_cli("namespaces", "revoke-permission", f"{tenant}/ns", "--role", "frank",
                    token_args=["--auth-token", secured.token("frank")])
    assert out.returncode != 0 and "403" in out.stderr
    out = admin_cli("topics", "grant-permission", f"persistent://{tenant}/ns/x", "--role", "gina", "--actions", "consume",
                    token_args=with_token)
    assert out.returncode == 0, out.stderr
    assert secured.admin("GET", f"/admin/v2/persistent/{tenant}/ns/x/permissions")["gina"] == ["consume"]
    # magnetar client with a token.
    out = subprocess.run([str(magnetar_binary()), "client", "produce", f"persistent://{tenant}/ns/x", "-m", "hi",
                          "--url", secured.broker.url, "--auth-token", secured.admin_token],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
