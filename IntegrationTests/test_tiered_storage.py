"""Issue 18: tiered storage — closed ledgers offloaded to an S3-compatible bucket (moto's server
mode, a real HTTP S3 server) or to a directory, and read back without the client noticing.

- `PUT .../offload` (by `magnetar admin topics offload -s 0`) offloads the closed ledgers;
  `offload-status -w` follows it; internalStats lists them `offloaded: true`; the objects are in
  the bucket; topic stats and metrics report the offloaded size.
- With `managedLedgerOffloadDeletionLagMs=0` the local copies go at once, so after a kill -9 and
  a restart a reader from the earliest gets every message, in order, from the tier, and a seek to
  an old publish time lands on the right message.
- The namespace `offloadThreshold` (0: as soon as a ledger closes) offloads by itself, to a
  filesystem tier; retention deletes the offloaded objects too.
- The tier stopping while a consumer reads: the consumer waits (the broker logs retried read
  errors and stays up), and gets everything once the tier is back.
- A corrupted object is detected (checksums), never delivered.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import boto3
import pulsar
import pytest

from admin_rest import call, eventually
from conftest import _NO_PROXY, free_port, magnetar_binary
from helpers import drain_reader, read_n, receive_n
from test_security import SecureBroker

RECEIVE_MS = 10_000
ENTRIES_PER_LEDGER = 5

# moto accepts any credentials; the broker signs with these (SigV4), as it would for AWS.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "magnetar-test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "magnetar-test-secret")


class TcpGate:
    """A TCP forwarder in front of the S3 server that can be shut (listener and every connection
    closed: the broker sees a server that went away) and opened again on the same port."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self.listener: socket.socket | None = None
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()

    def open(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def shut(self) -> None:
        with self.lock:
            listener, self.listener = self.listener, None
            connections, self.connections = self.connections, []
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            connection.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self.connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server, behind a gate the tests can shut."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            with _NO_PROXY.open(f"http://127.0.0.1:{port}/moto-api/", timeout=2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto's S3 server did not start")
            time.sleep(0.2)
    gate = TcpGate(port)
    gate.open()
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1")
    yield gate, client
    gate.shut()
    proc.terminate()
    proc.wait(10)
    log.close()


def new_bucket(s3client) -> str:
    name = f"offload-{uuid.uuid4().hex[:10]}"
    s3client.create_bucket(Bucket=name)
    return name


def s3_broker(root: Path, gate: TcpGate, bucket: str, extra: str = "") -> SecureBroker:
    return SecureBroker(root, "\n".join([
        f"managedLedgerMaxEntriesPerLedger={ENTRIES_PER_LEDGER}",
        "managedLedgerOffloadDriver=aws-s3",
        f"s3ManagedLedgerOffloadBucket={bucket}",
        "s3ManagedLedgerOffloadRegion=us-east-1",
        f"s3ManagedLedgerOffloadServiceEndpoint=http://127.0.0.1:{gate.port}",
        # Small blocks: a ledger is several blocks, read by ranged GETs.
        "s3ManagedLedgerOffloadMaxBlockSizeInBytes=1024",
        "managedLedgerOffloadDeletionLagMs=0",
        extra,
    ]))


def fs_broker(root: Path, tier: Path, *extra: str) -> SecureBroker:
    return SecureBroker(root, "\n".join([
        f"managedLedgerMaxEntriesPerLedger={ENTRIES_PER_LEDGER}",
        "managedLedgerOffloadDriver=filesystem",
        f"fileSystemURI=file://{tier}",
        *extra,
    ]))


def rest(topic: str) -> str:
    return topic.replace("persistent://", "/admin/v2/persistent/")


def admin_cli(broker, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(magnetar_binary()), "admin", "--url", broker.http_url, *args],
                          capture_output=True, text=True, timeout=120)


def internal_ledgers(broker, topic: str) -> list[dict]:
    status, stats = call(broker, "GET", rest(topic) + "/internalStats")
    assert status == 200, (status, stats)
    return stats["ledgers"]


def publish(client, topic: str, count: int, size: int = 300, pause_every: int = 0) -> list[tuple[bytes, int]]:
    """`count` messages of `size` bytes, unbatched; returns (payload, publish time)."""
    producer = client.create_producer(topic, batching_enabled=False)
    sent = []
    for i in range(count):
        payload = b"m%04d-" % i + os.urandom(size // 2).hex().encode()[: size - 6]
        producer.send(payload)
        sent.append(payload)
        if pause_every and i % pause_every == pause_every - 1:
            time.sleep(0.05)
    producer.close()
    return sent


def offload_all(broker, topic: str) -> None:
    out = admin_cli(broker, "topics", "offload", "-s", "0", topic)
    assert out.returncode == 0, out.stderr
    assert "Offload triggered" in out.stdout, out.stdout
    status = admin_cli(broker, "topics", "offload-status", "-w", topic)
    assert status.returncode == 0, status.stderr
    assert "Offload was a success" in status.stdout, status.stdout


def test_s3_offload_by_rest_survives_kill9_and_reads_back_in_order_with_seek_by_time(tmp_path, s3):
    gate, s3client = s3
    bucket = new_bucket(s3client)
    broker = s3_broker(tmp_path, gate, bucket).start()
    topic = f"persistent://public/default/tier-{uuid.uuid4().hex[:8]}"
    client = pulsar.Client(broker.url, operation_timeout_seconds=30)
    try:
        # Publish times spread out, so a seek by time has something to tell apart.
        sent = publish(client, topic, 42, pause_every=3)
        ledgers = internal_ledgers(broker, topic)
        assert len(ledgers) >= 42 // ENTRIES_PER_LEDGER, ledgers
        status, body = call(broker, "GET", rest(topic) + "/offload")
        assert status == 200 and body["status"] == "NOT_RUN", body

        offload_all(broker, topic)
        status, body = call(broker, "GET", rest(topic) + "/offload")
        assert body["status"] == "SUCCESS" and body["lastError"] == "", body
        last_ledger = internal_ledgers(broker, topic)[-1]["ledgerId"]
        assert body["firstUnoffloadedMessage"]["ledgerId"] == last_ledger, body
        ledgers = internal_ledgers(broker, topic)
        closed = ledgers[:-1]
        assert closed and all(ledger["offloaded"] for ledger in closed), ledgers
        assert not ledgers[-1]["offloaded"]

        # Each offloaded ledger is a data object and an index object in the bucket.
        keys = [o["Key"] for o in s3client.list_objects_v2(Bucket=bucket).get("Contents", [])]
        for ledger in closed:
            assert any(k.endswith(f"-ledger-{ledger['ledgerId']}") for k in keys), (ledger, keys)
            assert any(k.endswith(f"-ledger-{ledger['ledgerId']}-index") for k in keys), (ledger, keys)
        status, stats = call(broker, "GET", rest(topic) + "/stats")
        offloaded_bytes = sum(ledger["size"] for ledger in closed)
        assert stats["offloadedStorageSize"] == offloaded_bytes > 0, stats
        with _NO_PROXY.open(broker.http_url + "/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert re.search(r'pulsar_storage_offloaded_size\{[^}]*topic="%s"[^}]*\} %d' % (re.escape(topic), offloaded_bytes),
                         metrics), [line for line in metrics.splitlines() if "offload" in line]
        # A second offload while none is needed succeeds at once; a bad message id is refused.
        status, body = call(broker, "PUT", rest(topic) + "/offload", {"ledgerId": 1 << 40, "entryId": 0})
        assert status == 204, (status, body)

        client.close()
        broker.kill9()
        broker.restart()
        client = pulsar.Client(broker.url, operation_timeout_seconds=30)
        ledgers = internal_ledgers(broker, topic)
        assert [ledger["ledgerId"] for ledger in ledgers if ledger["offloaded"]] == [ledger["ledgerId"] for ledger in closed]

        reader = client.create_reader(topic, pulsar.MessageId.earliest)
        got = read_n(reader, len(sent), timeout_ms=RECEIVE_MS)
        assert [m.data() for m in got] == sent
        publish_times = [m.publish_timestamp() for m in got]
        reader.close()

        # Seek by publish time to a message in an offloaded ledger.
        target = 13
        consumer = client.subscribe(topic, "seeker", initial_position=pulsar.InitialPosition.Latest)
        consumer.seek(publish_times[target])
        first = consumer.receive(RECEIVE_MS)
        expected = min(i for i, t in enumerate(publish_times) if t >= publish_times[target])
        assert first.data() == sent[expected], (first.data()[:6], sent[expected][:6])
        consumer.close()
    finally:
        client.close()
        broker.close()


def test_filesystem_offload_by_namespace_threshold_then_retention_deletes_objects(tmp_path):
    tier = tmp_path / "tier"
    tier.mkdir()
    broker = fs_broker(tmp_path, tier, "managedLedgerOffloadMaxBlockSizeInBytes=2048").start()
    client = pulsar.Client(broker.url, operation_timeout_seconds=30)
    try:
        out = admin_cli(broker, "namespaces", "create", "public/tiered")
        assert out.returncode == 0, out.stderr
        assert admin_cli(broker, "namespaces", "set-offload-threshold", "-s", "0", "public/tiered").returncode == 0
        assert admin_cli(broker, "namespaces", "set-offload-deletion-lag", "-l", "0", "public/tiered").returncode == 0
        got = admin_cli(broker, "namespaces", "get-offload-threshold", "public/tiered")
        assert got.returncode == 0 and got.stdout.strip() == "0", got
        status, lag = call(broker, "GET", "/admin/v2/namespaces/public/tiered/offloadDeletionLagMs")
        assert (status, lag) == (200, 0)

        topic = f"persistent://public/tiered/fs-{uuid.uuid4().hex[:8]}"
        consumer = client.subscribe(topic, "worker", initial_position=pulsar.InitialPosition.Earliest)
        sent = publish(client, topic, 23)

        def all_closed_offloaded():
            ledgers = internal_ledgers(broker, topic)
            closed = ledgers[:-1]
            return len(closed) >= 4 and all(ledger["offloaded"] for ledger in closed) and ledgers
        ledgers = eventually(all_closed_offloaded, timeout_s=30)
        files = sorted(p.name for p in tier.iterdir())
        for ledger in ledgers[:-1]:
            assert f"-ledger-{ledger['ledgerId']}" in " ".join(files), (ledger, files)

        # A consumer that subscribed before reads everything, the offloaded ledgers from the tier.
        got = receive_n(consumer, len(sent), timeout_ms=RECEIVE_MS, ack=True)
        assert [m.data() for m in got] == sent

        # Everything acknowledged and no retention: the offloaded ledgers are trimmed, and their
        # objects deleted from the tier.
        status, body = call(broker, "POST", "/admin/v2/namespaces/public/tiered/retention",
                            {"retentionTimeInMinutes": 0, "retentionSizeInMB": 0})
        assert status == 204, (status, body)
        offloaded_ids = [ledger["ledgerId"] for ledger in ledgers[:-1]]

        def objects_gone():
            names = " ".join(p.name for p in tier.iterdir())
            return all(f"-ledger-{i}" not in names for i in offloaded_ids)
        eventually(objects_gone, timeout_s=30)
        consumer.close()
    finally:
        client.close()
        broker.close()


def test_tier_down_while_reading_waits_then_delivers_everything(tmp_path, s3):
    gate, s3client = s3
    bucket = new_bucket(s3client)
    broker = s3_broker(tmp_path, gate, bucket).start()
    topic = f"persistent://public/default/down-{uuid.uuid4().hex[:8]}"
    client = pulsar.Client(broker.url, operation_timeout_seconds=30)
    try:
        sent = publish(client, topic, 31)
        offload_all(broker, topic)
        # Restarted, so nothing of the topic is cached in the broker: every read goes to the tier.
        client.close()
        broker.stop()
        broker.start()
        client = pulsar.Client(broker.url, operation_timeout_seconds=30)
        gate.shut()
        log_offset = broker.log_size()
        try:
            consumer = client.subscribe(topic, "patient", initial_position=pulsar.InitialPosition.Earliest)
            with pytest.raises(pulsar.Timeout):
                consumer.receive(4_000)
            assert broker.is_running()
            eventually(lambda: "tier-read-failed" in broker.log_since(log_offset), timeout_s=20)
            # Local reads are unaffected: another topic is written and read back meanwhile.
            other = f"persistent://public/default/local-{uuid.uuid4().hex[:8]}"
            local = client.subscribe(other, "local", initial_position=pulsar.InitialPosition.Earliest)
            local_sent = publish(client, other, 3)
            assert [m.data() for m in receive_n(local, 3, timeout_ms=RECEIVE_MS, ack=True)] == local_sent
            local.close()
            status, body = call(broker, "GET", rest(topic) + "/stats")
            assert status == 200, (status, body)
        finally:
            gate.open()
        got = receive_n(consumer, len(sent), timeout_ms=30_000, ack=True)
        assert [m.data() for m in got] == sent
        status, stats = call(broker, "GET", rest(topic) + "/internalStats")
        assert stats.get("unreadableEntries", []) == [], stats
        consumer.close()
    finally:
        gate.open() if gate.listener is None else None
        client.close()
        broker.close()


def test_corrupted_offloaded_object_is_detected_not_delivered(tmp_path):
    tier = tmp_path / "tier"
    tier.mkdir()
    broker = fs_broker(tmp_path, tier, "managedLedgerOffloadDeletionLagMs=0").start()
    topic = f"persistent://public/default/rot-{uuid.uuid4().hex[:8]}"
    client = pulsar.Client(broker.url, operation_timeout_seconds=30)
    try:
        sent = publish(client, topic, 12)
        offload_all(broker, topic)
        first_ledger = internal_ledgers(broker, topic)[0]["ledgerId"]
        data_object = next(p for p in tier.iterdir() if p.name.endswith(f"-ledger-{first_ledger}"))
        raw = bytearray(data_object.read_bytes())
        raw[len(raw) - 20] ^= 0xFF  # inside the last entry of the ledger's only block
        data_object.write_bytes(bytes(raw))
        client.close()
        broker.stop()
        broker.start()
        client = pulsar.Client(broker.url, operation_timeout_seconds=30)
        reader = client.create_reader(topic, pulsar.MessageId.earliest)
        got = [m.data() for m in read_n(reader, len(sent) - ENTRIES_PER_LEDGER, timeout_ms=RECEIVE_MS)]
        # The corrupted ledger's entries are reported unreadable, never delivered damaged.
        assert got == sent[ENTRIES_PER_LEDGER:]
        status, stats = call(broker, "GET", rest(topic) + "/internalStats")
        assert len(stats["unreadableEntries"]) == ENTRIES_PER_LEDGER, stats
        assert all(entry.startswith(f"{first_ledger}:") for entry in stats["unreadableEntries"])
        assert "corrupted" in broker.log_tail(64 * 1024) or "checksum" in broker.log_tail(64 * 1024)
    finally:
        client.close()
        broker.close()


def test_offload_refusals_and_a_namespace_with_its_own_tier(tmp_path):
    broker = SecureBroker(tmp_path, f"managedLedgerMaxEntriesPerLedger={ENTRIES_PER_LEDGER}").start()
    client = pulsar.Client(broker.url)
    try:
        topic = f"persistent://public/default/none-{uuid.uuid4().hex[:8]}"
        publish(client, topic, 7)
        status, body = call(broker, "PUT", rest(topic) + "/offload", {"ledgerId": 1 << 40, "entryId": 0})
        assert status == 412 and "managedLedgerOffloadDriver" in body["reason"], (status, body)
        status, body = call(broker, "POST", "/admin/v2/namespaces/public/default/offloadPolicies",
                            {"managedLedgerOffloadDriver": "tape"})
        assert status == 400 and "tape" in body["reason"], (status, body)
        status, body = call(broker, "PUT", "/admin/v2/namespaces/public/default/offloadThreshold", -5)
        assert status == 400, (status, body)
        status, body = call(broker, "GET", rest(f"persistent://public/default/missing-{uuid.uuid4().hex[:6]}") + "/offload")
        assert status == 404, (status, body)

        # A namespace with its own tier (offloadPolicies) offloads there although the broker has none.
        tier = tmp_path / "ns-tier"
        tier.mkdir()
        assert admin_cli(broker, "namespaces", "create", "public/own-tier").returncode == 0
        out = admin_cli(broker, "namespaces", "set-offload-policies", "-d", "filesystem", "--fs-uri", f"file://{tier}",
                        "--offloadAfterThreshold=-1", "--offloadDeletionLag=0", "public/own-tier")
        assert out.returncode == 0, out.stderr
        status, policies = call(broker, "GET", "/admin/v2/namespaces/public/own-tier/offloadPolicies")
        assert policies["managedLedgerOffloadDriver"] == "filesystem" and policies["fileSystemURI"] == f"file://{tier}", policies
        own = f"persistent://public/own-tier/t-{uuid.uuid4().hex[:6]}"
        sent = publish(client, own, 11)
        offload_all(broker, own)
        closed = internal_ledgers(broker, own)[:-1]
        assert closed and all(ledger["offloaded"] for ledger in closed)
        assert len(list(tier.iterdir())) == 2 * len(closed)
        reader = client.create_reader(own, pulsar.MessageId.earliest)
        assert [m.data() for m in read_n(reader, len(sent), timeout_ms=RECEIVE_MS)] == sent
        reader.close()
        assert admin_cli(broker, "namespaces", "remove-offload-policies", "public/own-tier").returncode == 0
        status, policies = call(broker, "GET", "/admin/v2/namespaces/public/own-tier/offloadPolicies")
        assert policies is None, policies
    finally:
        client.close()
        broker.close()


def test_cluster_offloads_once_by_the_owner_and_a_new_owner_reads_the_tier(tmp_path):
    from cluster import LocalCluster

    tier = tmp_path / "tier"
    tier.mkdir()
    conf = tmp_path / "offload.conf"
    conf.write_text("\n".join([
        "managedLedgerOffloadDriver=filesystem",
        f"fileSystemURI=file://{tier}",
        "managedLedgerOffloadDeletionLagMs=0",
        "managedLedgerOffloadMaxBlockSizeInBytes=2048",
    ]) + "\n")
    cluster = LocalCluster(tmp_path, broker_args=["--config", str(conf), "--max-entries-per-ledger", str(ENTRIES_PER_LEDGER)])
    cluster.start()
    client = None
    try:
        topic = f"persistent://public/default/cluster-tier-{uuid.uuid4().hex[:8]}"
        client = pulsar.Client(cluster.service_url, operation_timeout_seconds=60)
        sent = publish(client, topic, 27)
        owner = cluster.owner(topic)
        survivor = next(b for b in cluster.brokers if b is not owner)
        status, body = call(owner, "PUT", rest(topic) + "/offload", {"ledgerId": 1 << 40, "entryId": 0})
        assert status == 204, (status, body)

        def offloaded():
            status, body = call(owner, "GET", rest(topic) + "/offload")
            return body if body["status"] == "SUCCESS" else None
        eventually(offloaded, timeout_s=30)
        ledgers = internal_ledgers(owner, topic)
        closed = [ledger["ledgerId"] for ledger in ledgers[:-1]]
        assert len(closed) >= 5 and all(ledger["offloaded"] for ledger in ledgers[:-1]), ledgers
        objects = sorted(p.name for p in tier.iterdir())
        assert len(objects) == 2 * len(closed), objects  # one data and one index object each, written once

        client.close()
        client = None
        owner.kill9()
        # The survivor takes the topic over and finds the ledgers offloaded in the shared metadata;
        # their copies on the storage nodes are gone, so the reads come from the tier.
        client = pulsar.Client(cluster.service_url, operation_timeout_seconds=60)
        reader = client.create_reader(topic, pulsar.MessageId.earliest)
        got = read_n(reader, len(sent), timeout_ms=60_000)
        assert [m.data() for m in got] == sent
        assert cluster.owner(topic, via=survivor) is survivor
        ledgers = internal_ledgers(survivor, topic)
        assert [ledger["ledgerId"] for ledger in ledgers if ledger["offloaded"]] == closed, ledgers
        assert sorted(p.name for p in tier.iterdir()) == objects
    finally:
        if client is not None:
            client.close()
        cluster.close()
