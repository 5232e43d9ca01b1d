"""A Magnetar cluster on loopback for the fault tests: etcd + storage nodes + brokers, each a real
process that a test can kill -9, SIGSTOP/SIGCONT or restart (same ports, same data).

Each process is a `conftest.Broker` underneath (start/stop/kill9/log capture/watchdog/pdeathsig),
with its own command line and readiness check. Brokers take a short session TTL so that takeovers
happen within seconds.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import time
import urllib.request
from pathlib import Path

from conftest import _NO_PROXY, Broker, BrokerStartError, free_port

SESSION_TTL_S = 3


class ClusterProcess(Broker):
    """One process of the cluster; `args` builds its command line (without the binary)."""

    def __init__(self, name: str, root: Path, args, binary: Path | None = None, http: bool = False):
        super().__init__(root / name, root / f"{name}.log", binary)
        self.name = name
        self.args = args
        self.http = http

    def _command(self) -> list[str]:
        return [str(self.binary)] + self.args(self)

    def _wait_ready(self, timeout: float) -> None:
        if self.http:
            return super()._wait_ready(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise BrokerStartError(f"{self.name} exited with code {code}\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise BrokerStartError(f"{self.name} did not listen on {self.port} within {timeout}s\n{self.log_tail()}")

    def sigstop(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def sigcont(self) -> None:
        self.proc.send_signal(signal.SIGCONT)


class LocalCluster:
    def __init__(self, root: Path, storage_nodes: int = 3, brokers: int = 2, auditor_grace_s: int = 3,
                 storage_args: list[str] = (), broker_args: list[str] = (), storage_metrics: bool = False,
                 broker_args_for=None):
        """`storage_args` / `broker_args`: more arguments for every storage node / broker (e.g. --config).
        `broker_args_for(i)`: more arguments for broker i alone (its own --config file).
        `storage_metrics`: each storage node serves /metrics on its `http_port`."""
        self.root = root
        etcd = shutil.which("etcd")
        if etcd is None:
            raise BrokerStartError("etcd is not installed (apt-get install etcd-server)")
        peer_port = free_port()
        self.etcd = ClusterProcess("etcd", root, lambda p: [
            "--name", "magnetar-test", "--data-dir", str(p.data_dir / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{p.port}", "--advertise-client-urls", f"http://127.0.0.1:{p.port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"magnetar-test=http://127.0.0.1:{peer_port}",
        ], binary=Path(etcd))
        self.metadata_url = f"etcd://127.0.0.1:{self.etcd.port}/magnetar"
        self.storage = [
            ClusterProcess(f"storage-{i}", root, lambda p: [
                "storage", "--data-dir", str(p.data_dir), "--bind-address", "127.0.0.1", "--port", str(p.port),
                "--advertised-address", "127.0.0.1", "--metadata", self.metadata_url, *storage_args,
                *(["--metrics-port", str(p.http_port)] if storage_metrics else []),
            ])
            for i in range(storage_nodes)
        ]
        self.brokers = [
            ClusterProcess(f"broker-{i}", root, lambda p, i=i: [
                "broker", "--metadata", self.metadata_url, "--bind-address", "127.0.0.1",
                "--advertised-address", "127.0.0.1", "--port", str(p.port), "--http-port", str(p.http_port),
                "--session-ttl-seconds", str(SESSION_TTL_S), "--replication-grace-seconds", str(auditor_grace_s),
                "--replication-check-seconds", "1",
                # Small ledgers: some roll (close) while a storage node is down, for the auditor to repair.
                "--max-entries-per-ledger", "1000", *broker_args,
                *(broker_args_for(i) if broker_args_for else []),
            ], http=True)
            for i in range(brokers)
        ]

    @property
    def processes(self) -> list[ClusterProcess]:
        return [self.etcd] + self.storage + self.brokers

    @property
    def service_url(self) -> str:
        return "pulsar://" + ",".join(f"127.0.0.1:{b.port}" for b in self.brokers)

    def start(self) -> "LocalCluster":
        try:
            self.etcd.start()
            for node in self.storage:
                node.start()
            self.wait_storage_registered(len(self.storage))
            for broker in self.brokers:
                broker.start()
        except BaseException:
            # Callers enter their try/finally only after start(): stop what did start, not leak it.
            try:
                self.close()
            except AssertionError:
                pass
            raise
        return self

    def close(self) -> None:
        errors = []
        for p in reversed(self.processes):
            try:
                if p.is_running():
                    p.sigcont()
                p.close()
            except AssertionError as e:
                errors.append(f"{p.name}: {e}")
        if errors:
            raise AssertionError("; ".join(errors))

    # -- admin --------------------------------------------------------------------------------
    def get(self, path: str, broker: ClusterProcess | None = None):
        b = broker or next(b for b in self.brokers if b.is_running())
        with _NO_PROXY.open(b.http_url + path, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    def post(self, path: str, body, broker: ClusterProcess | None = None) -> int:
        b = broker or next(b for b in self.brokers if b.is_running())
        req = urllib.request.Request(b.http_url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with _NO_PROXY.open(req, timeout=30) as resp:
            return resp.status

    def put(self, path: str, broker: ClusterProcess | None = None) -> int:
        b = broker or next(b for b in self.brokers if b.is_running())
        req = urllib.request.Request(b.http_url + path, method="PUT")
        with _NO_PROXY.open(req, timeout=30) as resp:
            return resp.status

    def replication_status(self) -> dict:
        """The re-replication auditor's report, from the broker that leads the audits."""
        reports = [self.get("/admin/v2/replication/status", b) for b in self.brokers if b.is_running()]
        leaders = [r for r in reports if r["isLeader"]]
        return leaders[0] if leaders else {"isLeader": False, "auditsCompleted": 0, "underReplicatedLedgers": -1}

    def owner(self, topic: str, via: ClusterProcess | None = None) -> ClusterProcess:
        """The broker process serving `topic` (taking it on `via` if nobody serves it yet)."""
        path = topic.replace("://", "/")
        data = self.get(f"/lookup/v2/topic/{path}", via)
        for b in self.brokers:
            if data["brokerUrl"] == b.url:
                return b
        raise AssertionError(f"lookup answered an unknown broker: {data}")

    def wait_storage_registered(self, count: int, timeout: float = 20) -> None:
        """Until `count` storage nodes are registered in etcd (asked through etcd's JSON gateway)."""
        import base64
        prefix = b"/magnetar/storage-nodes/"
        end = prefix[:-1] + bytes([prefix[-1] + 1])
        body = json.dumps({"key": base64.b64encode(prefix).decode(), "range_end": base64.b64encode(end).decode(),
                           "keys_only": True}).encode()
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{self.etcd.port}/v3/kv/range", data=body, method="POST")
                with _NO_PROXY.open(req, timeout=5) as resp:
                    seen = len(json.loads(resp.read()).get("kvs", []))
                if seen >= count:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"only {seen} of {count} storage nodes registered within {timeout}s")
