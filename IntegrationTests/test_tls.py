"""Issue 14: TLS, driven with the official Python client, Python's ssl module and the CLI.

A CA, the broker's certificate (SAN 127.0.0.1 / localhost) and client certificates are made by
`openssl` in the test; a second CA signs a certificate the broker must not trust.
- A broker with `brokerServicePortTls` / `webServicePortTls`: produce and consume over
  `pulsar+ssl://` (lookups answer `brokerServiceUrlTls`, which the C++ client follows), a
  partitioned topic too; HTTPS admin; a client that does not trust the broker's CA fails; a client
  certificate from an untrusted CA is refused; plain text on the TLS port closes that connection
  only; the certificate is reloaded when its files change (`tlsCertRefreshCheckDurationSec`).
- A broker with `AuthenticationProviderTls` and `tlsRequireTrustedClientCertOnConnect=true`: the
  client certificate's CN is the role (authorization by grants), a client without a certificate
  is refused.
- `magnetar admin --tls-trust-cert` over HTTPS and `magnetar client` over `pulsar+ssl://`.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from pathlib import Path

import pulsar
import pytest

from admin_rest import eventually
from conftest import close_quietly, free_port, magnetar_binary
from pki import PKI, make_pki
from test_security import SecureBroker

REFUSED_TIMEOUT_S = 3  # operation timeout of clients expected to fail


class TLSBroker(SecureBroker):
    def __init__(self, root: Path, pki: PKI, extra: str = ""):
        self.tls_port = free_port()
        self.https_port = free_port()
        # The broker reads the pair it serves from here; the reload test replaces these files.
        self.cert_path = root / "served.pem"
        self.key_path = root / "served.key"
        shutil.copy(pki.cert("broker"), self.cert_path)
        shutil.copy(pki.key("broker"), self.key_path)
        super().__init__(root, "\n".join([
            f"brokerServicePortTls={self.tls_port}",
            f"webServicePortTls={self.https_port}",
            f"tlsCertificateFilePath={self.cert_path}",
            f"tlsKeyFilePath={self.key_path}",
            f"tlsTrustCertsFilePath={pki.ca}",
            "tlsCertRefreshCheckDurationSec=1",
            extra,
        ]))

    @property
    def tls_url(self) -> str:
        return f"pulsar+ssl://127.0.0.1:{self.tls_port}"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory, pki):
    broker = TLSBroker(tmp_path_factory.mktemp("tls"), pki)
    broker.start()
    broker.auto_restart = True
    yield broker
    broker.close()


def tls_client(broker: TLSBroker, trust: Path, timeout: int = 10, **kwargs) -> pulsar.Client:
    return pulsar.Client(broker.tls_url, tls_trust_certs_file_path=str(trust), operation_timeout_seconds=timeout,
                         connection_timeout_ms=5000, **kwargs)


def https_get(url: str, ca: Path, cert: tuple[Path, Path] | None = None, token: str | None = None):
    context = ssl.create_default_context(cafile=str(ca))
    if cert:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    import urllib.request
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    with opener.open(request, timeout=10) as response:
        return response.status, json.loads(response.read().decode() or "null")


def served_certificate(port: int) -> str:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return ssl.DER_cert_to_PEM_cert(tls.getpeercert(binary_form=True))


def pem_body(pem: str) -> str:
    return "".join(line for line in pem.strip().splitlines() if not line.startswith("-----"))


# -- a TLS broker without authentication -----------------------------------------------------------

def test_produce_and_consume_over_tls(tls_broker, pki, clients):
    client = tls_client(tls_broker, pki.ca)
    clients.append(client)
    topic = f"persistent://public/default/tls-{uuid.uuid4().hex[:8]}"
    consumer = client.subscribe(topic, "s")
    producer = client.create_producer(topic)
    for i in range(10):
        producer.send(f"m{i}".encode())
    got = [consumer.receive(10_000) for _ in range(10)]
    assert [m.data() for m in got] == [f"m{i}".encode() for i in range(10)]
    for m in got:
        consumer.acknowledge(m)


def test_partitioned_topic_over_tls_follows_broker_service_url_tls(tls_broker, pki, clients):
    import urllib.request
    topic = f"tls-part-{uuid.uuid4().hex[:8]}"
    request = urllib.request.Request(f"{tls_broker.http_url}/admin/v2/persistent/public/default/{topic}/partitions",
                                     data=b"3", method="PUT", headers={"Content-Type": "application/json"})
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=10):
        pass
    client = tls_client(tls_broker, pki.ca)
    clients.append(client)
    name = f"persistent://public/default/{topic}"
    consumer = client.subscribe(name, "s")
    producer = client.create_producer(name, message_routing_mode=pulsar.PartitionsRoutingMode.RoundRobinDistribution)
    for i in range(9):
        producer.send(f"p{i}".encode())
    got = sorted(consumer.receive(10_000).data() for _ in range(9))
    assert got == sorted(f"p{i}".encode() for i in range(9))


def test_https_admin_api(tls_broker, pki):
    status, tenants = https_get(f"{tls_broker.https_url}/admin/v2/tenants", pki.ca)
    assert status == 200 and "public" in tenants
    # The CLI over HTTPS, trusting the test CA.
    out = subprocess.run([str(magnetar_binary()), "admin", "--url", tls_broker.https_url, "--tls-trust-cert", str(pki.ca),
                          "tenants", "list"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "public" in out.stdout.split()
    # Without the CA the CLI refuses the broker's certificate.
    out = subprocess.run([str(magnetar_binary()), "admin", "--url", tls_broker.https_url, "tenants", "list"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "TLS" in out.stderr


def test_cli_client_over_tls(tls_broker, pki):
    topic = f"persistent://public/default/tls-cli-{uuid.uuid4().hex[:8]}"
    common = ["--url", tls_broker.tls_url, "--tls-trust-cert", str(pki.ca)]
    out = subprocess.run([str(magnetar_binary()), "client", "produce", topic, "-m", "over-tls", "-n", "3", *common],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    out = subprocess.run([str(magnetar_binary()), "client", "read", topic, "-n", "3", *common],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("over-tls") == 3


def test_a_client_that_does_not_trust_the_broker_fails(tls_broker, pki, clients):
    client = tls_client(tls_broker, pki.other_ca, timeout=REFUSED_TIMEOUT_S)
    clients.append(client)
    with pytest.raises((pulsar.Timeout, pulsar.ConnectError)):
        client.create_producer(f"persistent://public/default/untrusted-{uuid.uuid4().hex[:8]}")


def test_a_client_certificate_from_an_untrusted_ca_is_refused(tls_broker, pki, clients):
    client = tls_client(tls_broker, pki.ca, timeout=REFUSED_TIMEOUT_S,
                        tls_certificate_file_path=str(pki.cert("mallory")), tls_private_key_file_path=str(pki.key("mallory")))
    clients.append(client)
    with pytest.raises((pulsar.Timeout, pulsar.ConnectError)):
        client.create_producer(f"persistent://public/default/mallory-{uuid.uuid4().hex[:8]}")
    # A trusted client certificate is fine on the same listener.
    good = tls_client(tls_broker, pki.ca, tls_certificate_file_path=str(pki.cert("alice")),
                      tls_private_key_file_path=str(pki.key("alice")))
    clients.append(good)
    good.create_producer(f"persistent://public/default/alice-{uuid.uuid4().hex[:8]}").send(b"ok")


def test_plain_text_on_the_tls_port_closes_only_that_connection(tls_broker, pki, clients):
    client = tls_client(tls_broker, pki.ca)
    clients.append(client)
    topic = f"persistent://public/default/tls-plain-{uuid.uuid4().hex[:8]}"
    producer = client.create_producer(topic)
    producer.send(b"before")
    # A plain-text Pulsar client (or anything else) on the TLS port: the broker closes it.
    with socket.create_connection(("127.0.0.1", tls_broker.tls_port), timeout=5) as raw:
        raw.sendall(b"\x00\x00\x00\x10\x00\x00\x00\x0cGARBAGE-NOT-TLS")
        raw.settimeout(5)
        try:
            while raw.recv(4096):
                pass  # a TLS alert, then EOF
        except ConnectionResetError:
            pass
    # The TLS connection next to it keeps working, and the broker is alive.
    producer.send(b"after")
    assert tls_broker.is_running()


def test_the_certificate_is_reloaded_when_its_files_change(tls_broker, pki):
    assert pem_body(served_certificate(tls_broker.tls_port)) == pem_body(pki.cert("broker").read_text())
    pki.issue("broker", "localhost", "ca", san=True, out="broker-renewed")
    renewed = pki.cert("broker-renewed").read_text()
    # Key first, then the certificate, as a renewal job would; the broker checks every second.
    shutil.copy(pki.key("broker-renewed"), tls_broker.key_path)
    shutil.copy(pki.cert("broker-renewed"), tls_broker.cert_path)
    eventually(lambda: pem_body(served_certificate(tls_broker.tls_port)) == pem_body(renewed), timeout_s=15)
    eventually(lambda: pem_body(served_certificate(tls_broker.https_port)) == pem_body(renewed), timeout_s=15)
    # Clients still connect (the renewed certificate chains to the same CA).
    client = tls_client(tls_broker, pki.ca)
    try:
        client.create_producer(f"persistent://public/default/renewed-{uuid.uuid4().hex[:8]}").send(b"x")
    finally:
        close_quietly(client)


# -- mutual TLS as authentication --------------------------------------------------------------------

@pytest.fixture(scope="module")
def mtls_broker(tmp_path_factory, pki):
    broker = TLSBroker(tmp_path_factory.mktemp("mtls"), pki, "\n".join([
        "authenticationEnabled=true",
        "authenticationProviders=org.apache.pulsar.broker.authentication.AuthenticationProviderTls",
        "authorizationEnabled=true",
        "superUserRoles=admin",
        "tlsRequireTrustedClientCertOnConnect=true",
    ]))
    broker.start()
    broker.auto_restart = True
    yield broker
    broker.close()


def test_the_client_certificate_common_name_is_the_role(mtls_broker, pki, clients):
    def as_role(name: str, timeout: int = 10) -> pulsar.Client:
        c = tls_client(mtls_broker, pki.ca, timeout=timeout,
                       authentication=pulsar.AuthenticationTLS(str(pki.cert(name)), str(pki.key(name))))
        clients.append(c)
        return c

    topic = f"persistent://public/default/mtls-{uuid.uuid4().hex[:8]}"
    # The super-user's certificate may do everything.
    as_role("admin").create_producer(topic).send(b"by-admin")
    # alice is authenticated but has no grant.
    with pytest.raises(pulsar.AuthorizationError):
        as_role("alice").create_producer(topic)
    # A grant on the HTTPS admin API by the CLI, authenticated by the super-user's certificate
    # (--tls-cert-file): no token needed with the TLS provider.
    out = subprocess.run([str(magnetar_binary()), "admin", "--url", mtls_broker.https_url,
                          "--tls-trust-cert", str(pki.ca), "--tls-cert-file", str(pki.cert("admin")),
                          "--tls-key-file", str(pki.key("admin")),
                          "namespaces", "grant-permission", "public/default", "--role", "alice", "--actions", "produce"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr

    def alice_produces():
        client = as_role("alice")
        try:
            client.create_producer(topic).send(b"by-alice")
            return True
        except pulsar.AuthorizationError:
            return False
    eventually(alice_produces, timeout_s=15)


def test_required_client_certificate(mtls_broker, pki, clients):
    # No certificate: the handshake fails.
    client = tls_client(mtls_broker, pki.ca, timeout=REFUSED_TIMEOUT_S)
    clients.append(client)
    with pytest.raises((pulsar.Timeout, pulsar.ConnectError)):
        client.create_producer(f"persistent://public/default/nocert-{uuid.uuid4().hex[:8]}")
    with pytest.raises(ssl.SSLError):
        https_get(f"{mtls_broker.https_url}/admin/v2/tenants", pki.ca)
