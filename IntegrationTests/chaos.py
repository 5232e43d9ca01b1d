"""Fault-history checker (issue 12): a bounded, seeded, randomized workload against a standalone
broker or a LocalCluster while a nemesis injects faults; every client operation goes into a history
that a checker verifies afterwards. Jepsen's idea, our own code. docs/RELIABILITY.md has the rules.

    run_chaos(target, seed, fault_seconds, workdir) -> summary dict (summary["violations"] is a list)

- Targets: `StandaloneTarget(Broker)` (kill -9 / SIGSTOP+SIGCONT / graceful restart of the broker,
  and, as root, a full disk: the data directory is on a tmpfs the `diskfull` fault fills)
  and `ClusterTarget(LocalCluster)` (the same on either broker, any storage node and etcd).
  One fault at a time; every fault is healed before the next one starts.
- Workload (one thread per worker, each with its own client and its own `random.Random`):
  producers with sync sends on an ordered topic (4 keys), deduplicating producers (fixed
  producer_name, explicit sequence ids, retried until receipted) on a topic of a namespace with
  deduplication on, consumers on Exclusive / Failover / Shared / Key_Shared subscriptions (ack,
  negative ack, leave unacked, close, reopen, seek to earliest), readers (from earliest or from a
  receipted message id).
- After the fault phase: everything is healed, the workers stop and close, then every subscription
  is drained by a final consumer and every topic is read from the earliest position (bounded: the
  liveness bound), and the checker runs over the history.

The seed fixes the fault schedule (kinds, targets, times, hold times) and every worker's sequence of
random decisions (per loop iteration); the interleaving with real time is not replayed.

Run as a program: see scripts/chaos (this module's `main`).
"""

from __future__ import annotations

import argparse
import bisect
import collections
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pulsar  # noqa: E402

from conftest import _NO_PROXY, Broker, BrokerStartError  # noqa: E402

# ------------------------------------------------------------------------------------------------
# parameters
# ------------------------------------------------------------------------------------------------

KEYS = ["k0", "k1", "k2", "k3"]
ORDERED_PRODUCERS = 3
DEDUP_PRODUCERS = 2
SEND_TIMEOUT_MS = 10_000
CLIENT_OPERATION_TIMEOUT_S = 10
# The tmpfs a standalone run's data directory lives on (allocated only as used; the `diskfull`
# fault fills it for a few seconds).
STANDALONE_DISK_SIZE = "1g"
RECEIVE_POLL_MS = 100
NACK_DELAY_MS = 500
# Upper bound on loop iterations of any worker (each loop also has the phase deadline).
MAX_ITERATIONS = 2_000_000
# After the faults stop: every subscription drained and every topic read within this bound.
LIVENESS_BOUND_S = 60.0
# An acknowledgement is "committed" by a later successful close() of its consumer (connected both
# right after the ack and right before the close) only if no fault was in progress between the two,
# from 1 s before a fault to this long after it (in a cluster, a takeover comes after the session
# TTL and a resumed zombie closes its topics after SIGCONT: a fault moves connections for a while).
DISTURBANCE_S = {"standalone": 3.0, "cluster": 10.0}
# A seek's effect on a subscription is taken to last until this long after the seek returned.
SEEK_GRACE_S = 5.0
# Diagnostics: a topic without a receipt this long during the fault phase has its stats saved.
STALL_S = 15.0
# Receive events of different threads are recorded with this much uncertainty.
CLOCK_SLACK_S = 0.5

SUB_TYPES = {
    "Exclusive": pulsar.ConsumerType.Exclusive,
    "Shared": pulsar.ConsumerType.Shared,
    "Failover": pulsar.ConsumerType.Failover,
    "KeyShared": pulsar.ConsumerType.KeyShared,
}
ORDERED_TYPES = ("Exclusive", "Failover", "KeyShared")


def mid_tuple(message_id) -> tuple[int, int, int, int]:
    return (message_id.ledger_id(), message_id.entry_id(), message_id.partition(), message_id.batch_index())


def is_dup_receipt(message_id) -> bool:
    return message_id.ledger_id() in (-1, 2**64 - 1) and message_id.entry_id() in (-1, 2**64 - 1)


def encode_payload(value: str, key: str) -> bytes:
    return f"v={value};k={key}".encode()


def decode_payload(data: bytes) -> tuple[str | None, str | None]:
    try:
        fields = dict(part.split("=", 1) for part in data.decode().split(";"))
        return fields.get("v"), fields.get("k")
    except (ValueError, UnicodeDecodeError):
        return None, None


def value_parts(value: str) -> tuple[str, int]:
    proc, n = value.rsplit(":", 1)
    return proc, int(n)


# ------------------------------------------------------------------------------------------------
# history
# ------------------------------------------------------------------------------------------------

class History:
    """Append-only list of events (dicts). `t` is seconds since the run started (monotonic)."""

    def __init__(self):
        self.t0 = time.monotonic()
        self.wall0 = time.time()
        self.lock = threading.Lock()
        self.events: list[dict] = []
        self.counts: collections.Counter = collections.Counter()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def add(self, **event) -> dict:
        with self.lock:
            event["t"] = round(time.monotonic() - self.t0, 6)
            event["i"] = len(self.events)
            self.events.append(event)
            self.counts[(event["op"], event.get("type", "ok"))] += 1
        return event

    def count(self, op: str, type_: str = "ok") -> int:
        with self.lock:
            return self.counts[(op, type_)]

    def dump(self, path: Path) -> None:
        with open(path, "w") as f:
            for e in self.events:
                f.write(json.dumps(e, separators=(",", ":")) + "\n")


# ------------------------------------------------------------------------------------------------
# targets
# ------------------------------------------------------------------------------------------------

def http(url: str, method: str, path: str, body=None, timeout: float = 10.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with _NO_PROXY.open(req, timeout=timeout) as resp:
        raw = resp.read().decode(errors="replace")
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.strip()


class Target:
    name = "target"
    processes: list = []

    @property
    def service_url(self) -> str:
        raise NotImplementedError

    def http_urls(self) -> list[str]:
        raise NotImplementedError

    def admin(self, method: str, path: str, body=None):
        """An admin call through any broker that answers (retried for a while)."""
        last = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for url in self.http_urls():
                try:
                    return http(url, method, path, body)
                except urllib.error.HTTPError as e:
                    if e.code == 409:  # already exists
                        return None
                    last = e
                except OSError as e:
                    last = e
            time.sleep(0.5)
        raise RuntimeError(f"admin {method} {path} failed: {last}")

    def fault_menu(self) -> list[tuple[str, object, float, tuple[float, float]]]:
        """(kind, process, weight, hold range in seconds)."""
        raise NotImplementedError

    def gap(self, rng: random.Random) -> float:
        """Time between two faults: mostly short, sometimes a calm stretch (in which acknowledgements
        can be committed, see DISTURBANCE_S)."""
        return rng.uniform(3.0, 8.0) if rng.random() < 0.7 else rng.uniform(12.0, 20.0)

    def wait_healthy(self, timeout: float) -> None:
        raise NotImplementedError


class LoopbackBroker(Broker):
    """conftest's Broker listening on 127.0.0.1 only, with small ledgers (rolls during the run)."""

    def _command(self) -> list[str]:
        return super()._command() + ["--bind-address", "127.0.0.1", "--max-entries-per-ledger", "1000"]


class DiskFiller:
    """The `diskfull` fault: fills the file system of a broker's data directory (a tmpfs the run
    mounted for it, never the machine's disk) for the hold time, then frees it. While it is full,
    sends must fail fast and reads go on; afterwards writing resumes by itself."""

    name = "disk"

    def __init__(self, directory: Path):
        self.directory = directory
        self.filler = directory / "chaos-filler"

    def fill(self) -> None:
        free = os.statvfs(self.directory)
        room = free.f_bavail * free.f_frsize
        with open(self.filler, "wb", buffering=0) as f:
            if room > (1 << 20):
                try:
                    os.posix_fallocate(f.fileno(), 0, room - (1 << 16))
                    f.seek(0, os.SEEK_END)
                except OSError:
                    pass
            for chunk_size in (1 << 16, 4096, 1):
                chunk = b"\0" * chunk_size
                try:
                    while f.write(chunk):
                        pass
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise

    def free(self) -> None:
        try:
            self.filler.unlink()
        except FileNotFoundError:
            pass


def mount_tmpfs(mount_point: Path, size: str) -> bool:
    """Mounts a tmpfs of `size` at `mount_point` (root only); False if that is not possible here."""
    mount_point.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    return result.returncode == 0


def unmount(mount_point: Path) -> None:
    if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


class StandaloneTarget(Target):
    name = "standalone"

    def __init__(self, broker: Broker, disk: DiskFiller | None = None):
        self.broker = broker
        self.broker.name = "broker"
        self.processes = [broker]
        self.disk = disk

    @property
    def service_url(self) -> str:
        return self.broker.url

    def http_urls(self) -> list[str]:
        return [self.broker.http_url]

    def fault_menu(self):
        b = self.broker
        menu = [("kill9", b, 4.0, (0.2, 3.0)), ("stop", b, 3.0, (0.5, 4.0)), ("restart", b, 2.0, (0.0, 1.0))]
        if self.disk is not None:
            menu.append(("diskfull", self.disk, 1.5, (1.0, 5.0)))
        return menu

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.broker.is_running() and http(self.broker.http_url, "GET", "/health") == "ok":
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError("standalone broker not healthy")


class ClusterTarget(Target):
    name = "cluster"

    def __init__(self, cluster):
        self.cluster = cluster
        self.processes = cluster.processes

    @property
    def service_url(self) -> str:
        return self.cluster.service_url

    def http_urls(self) -> list[str]:
        return [b.http_url for b in self.cluster.brokers if b.is_running()]

    def fault_menu(self):
        menu = []
        for b in self.cluster.brokers:
            menu += [("kill9", b, 1.2, (0.5, 5.0)), ("stop", b, 1.0, (1.0, 6.0)), ("restart", b, 0.6, (0.0, 1.0))]
        for s in self.cluster.storage:
            menu += [("kill9", s, 0.5, (0.5, 5.0)), ("stop", s, 0.4, (0.5, 4.0)), ("restart", s, 0.3, (0.0, 1.0))]
        e = self.cluster.etcd
        menu += [("kill9", e, 0.6, (0.5, 3.0)), ("stop", e, 0.6, (0.5, 3.0)), ("restart", e, 0.4, (0.0, 1.0))]
        return menu

    def gap(self, rng: random.Random) -> float:
        return rng.uniform(4.0, 9.0) if rng.random() < 0.7 else rng.uniform(15.0, 25.0)

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self.cluster.wait_storage_registered(len(self.cluster.storage), timeout=timeout)
        while time.monotonic() < deadline:
            try:
                if all(b.is_running() and http(b.http_url, "GET", "/health") == "ok" for b in self.cluster.brokers):
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError("cluster not healthy")


# ------------------------------------------------------------------------------------------------
# nemesis
# ------------------------------------------------------------------------------------------------

def plan_faults(target: Target, rng: random.Random, duration: float) -> list[dict]:
    """The whole fault schedule, decided up front from the seed."""
    menu = target.fault_menu()
    weights = [w for _, _, w, _ in menu]
    plan = []
    at = rng.uniform(2.0, 5.0)
    while at < duration:
        kind, proc, _, (lo, hi) = rng.choices(menu, weights)[0]
        hold = round(rng.uniform(lo, hi), 2)
        plan.append({"at": round(at, 2), "kind": kind, "target": proc.name, "hold": hold})
        at += hold + target.gap(rng)
    return plan


class Nemesis:
    """Runs the fault plan on the calling thread. It must be the main (long-lived) thread: the
    processes it restarts get `setpriv --pdeathsig KILL`, which fires when the *thread* that started
    them ends."""

    def __init__(self, target: Target, plan: list[dict], history: History, hard_deadline: float, tick=None):
        self.target = target
        self.plan = plan
        self.history = history
        self.hard_deadline = hard_deadline  # monotonic: no fault starts after it
        self.tick = tick or (lambda: None)
        self.by_name = {p.name: p for p in target.processes}
        disk = getattr(target, "disk", None)
        if disk is not None:
            self.by_name[disk.name] = disk
        self.faults = collections.Counter()
        self.current: str | None = None

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.2))
            self.tick()

    def _sleep_until(self, t: float) -> None:
        while True:
            left = t - self.history.now()
            if left <= 0 or time.monotonic() >= self.hard_deadline:
                return
            time.sleep(min(left, 0.2))
            self.check_crashes()
            self.tick()

    def check_crashes(self) -> None:
        for p in self.target.processes:
            code = p.crashed()
            if code is not None:
                self.history.add(proc="nemesis", op="anomaly", kind="crash", target=p.name, code=code,
                                 log_tail=p.log_tail(4000))
                p.expected_running = False
                self._start(p)

    def _start(self, p) -> bool:
        for attempt in range(5):
            if p.is_running():
                return True
            try:
                p.start()
                return True
            except BrokerStartError as e:
                self.history.add(proc="nemesis", op="start-retry", target=p.name, attempt=attempt,
                                 err=str(e)[:2000])
                self._sleep(1.0)
        self.history.add(proc="nemesis", op="anomaly", kind="restart-failed", target=p.name,
                         log_tail=p.log_tail(4000))
        return False

    def run(self) -> None:
        """The plan, then wait for the end of the phase; everything is healed on the way out."""
        try:
            for f in self.plan:
                self._sleep_until(f["at"])
                if time.monotonic() >= self.hard_deadline:
                    break
                self.inject(f)
            self._sleep_until(float("inf"))
        except BaseException:
            self.history.add(proc="nemesis", op="harness-error", err=traceback.format_exc())
        finally:
            self.heal_all()

    def inject(self, f: dict) -> None:
        p = self.by_name[f["target"]]
        kind, hold = f["kind"], f["hold"]
        self.current = f"{kind} {p.name}"
        self.history.add(proc="nemesis", op="fault", type="invoke", kind=kind, target=p.name, hold=hold)
        self.faults[f"{kind} {p.name.split('-')[0]}"] += 1
        ok = True
        if kind == "kill9":
            p.kill9()
            self._sleep(hold)
            ok = self._start(p)
        elif kind == "diskfull":
            try:
                p.fill()
                self._sleep(hold)
            finally:
                p.free()
        elif kind == "stop":
            p.proc.send_signal(signal.SIGSTOP)
            try:
                self._sleep(hold)
            finally:
                p.proc.send_signal(signal.SIGCONT)
        elif kind == "restart":
            try:
                p.stop()
            except AssertionError as e:  # did not exit within the stop timeout: it was killed
                self.history.add(proc="nemesis", op="anomaly", kind="graceful-stop-timeout", target=p.name,
                                 err=str(e), log_tail=p.log_tail(4000))
            self._sleep(hold)
            ok = self._start(p)
        self.history.add(proc="nemesis", op="fault", type="ok" if ok else "info", kind=kind, target=p.name)
        self.current = None

    def heal_all(self) -> None:
        disk = getattr(self.target, "disk", None)
        if disk is not None:
            disk.free()
        for p in self.target.processes:
            try:
                if p.is_running():
                    p.proc.send_signal(signal.SIGCONT)
                else:
                    self._start(p)
            except Exception:
                self.history.add(proc="nemesis", op="harness-error", err=traceback.format_exc())


# ------------------------------------------------------------------------------------------------
# workload
# ------------------------------------------------------------------------------------------------

class TopicSpec:
    def __init__(self, tag: str, topic: str, dedup: bool, subs: dict[str, str]):
        self.tag = tag
        self.topic = topic
        self.dedup = dedup
        self.subs = subs  # subscription name -> type name

    def as_dict(self) -> dict:
        return {"tag": self.tag, "topic": self.topic, "dedup": self.dedup, "subs": self.subs}


class RunContext:
    def __init__(self, seed, history: History, target: Target, workdir: Path, deadline: float):
        self.seed = seed
        self.history = history
        self.target = target
        self.workdir = workdir
        self.deadline = deadline  # monotonic: the end of the fault phase
        self.stop = threading.Event()
        self.receipted: dict[str, list] = collections.defaultdict(list)  # topic -> [(value, MessageId)]
        self.receipted_lock = threading.Lock()
        self.last_receipt: dict[str, float] = {}
        self.client_count = 0
        self.client_lock = threading.Lock()

    def client(self, name: str) -> pulsar.Client:
        with self.client_lock:
            self.client_count += 1
            n = self.client_count
        # (The C++ client keeps the first logger of the process: one file for the whole run.)
        return pulsar.Client(
            self.target.service_url,
            operation_timeout_seconds=CLIENT_OPERATION_TIMEOUT_S,
            connection_timeout_ms=5000,
            logger=pulsar.FileLogger(pulsar.LoggerLevel.Info, str(self.workdir / "pulsar-client.log")),
        )

    def note_receipt(self, topic: str, value: str, message_id) -> None:
        with self.receipted_lock:
            self.receipted[topic].append((value, message_id))
            self.last_receipt[topic] = time.monotonic()


def close_quietly(thing) -> None:
    try:
        thing.close()
    except Exception:
        pass


class Worker(threading.Thread):
    def __init__(self, ctx: RunContext, name: str):
        super().__init__(name=f"chaos-{name}", daemon=True)
        self.ctx = ctx
        self.wname = name
        self.h = ctx.history
        self.rng = random.Random(f"{ctx.seed}/{name}")
        self.iterations = 0
        self.error: str | None = None

    def running(self) -> bool:
        return (not self.ctx.stop.is_set() and time.monotonic() < self.ctx.deadline
                and self.iterations < MAX_ITERATIONS)

    def run(self):
        try:
            self.body()
        except BaseException:
            self.error = traceback.format_exc()
            self.h.add(proc=self.wname, op="harness-error", err=self.error)

    def body(self):
        raise NotImplementedError


class ProducerWorker(Worker):
    """Sync sends (one message in flight), a key per message, batching off."""

    def __init__(self, ctx, name, spec: TopicSpec):
        super().__init__(ctx, name)
        self.spec = spec

    def open(self, client):
        self.h.add(proc=self.wname, op="producer-open", type="invoke", topic=self.spec.topic)
        try:
            p = client.create_producer(self.spec.topic, send_timeout_millis=SEND_TIMEOUT_MS,
                                       batching_enabled=False, block_if_queue_full=True)
        except Exception as e:
            self.h.add(proc=self.wname, op="producer-open", type="info", err=repr(e)[:300])
            return None
        self.h.add(proc=self.wname, op="producer-open", type="ok", producer_name=p.producer_name())
        return p

    def body(self):
        client = self.ctx.client(self.wname)
        producer = None
        n = 0
        try:
            while self.running():
                self.iterations += 1
                key = self.rng.choice(KEYS)
                r_reopen = self.rng.random()
                pause = self.rng.uniform(0.005, 0.04)
                if producer is None:
                    producer = self.open(client)
                    if producer is None:
                        time.sleep(0.5)
                        continue
                n += 1
                value = f"{self.wname}:{n}"
                self.h.add(proc=self.wname, op="send", type="invoke", topic=self.spec.topic, value=value, key=key)
                try:
                    message_id = producer.send(encode_payload(value, key), partition_key=key)
                except Exception as e:
                    self.h.add(proc=self.wname, op="send", type="info", topic=self.spec.topic, value=value,
                               key=key, err=repr(e)[:300])
                    close_quietly(producer)
                    producer = None
                    continue
                self.h.add(proc=self.wname, op="send", type="ok", topic=self.spec.topic, value=value, key=key,
                           id=mid_tuple(message_id), dup=is_dup_receipt(message_id))
                if not is_dup_receipt(message_id):
                    self.ctx.note_receipt(self.spec.topic, value, message_id)
                if r_reopen < 0.01:
                    close_quietly(producer)
                    producer = None
                time.sleep(pause)
        finally:
            if producer is not None:
                close_quietly(producer)
            close_quietly(client)


class DedupProducerWorker(Worker):
    """A fixed producer_name and explicit sequence ids 1, 2, 3...: a value is retried (same sequence
    id, same payload) until it is receipted, so with deduplication each value is stored once."""

    def __init__(self, ctx, name, spec: TopicSpec, producer_name: str):
        super().__init__(ctx, name)
        self.spec = spec
        self.producer_name = producer_name

    def body(self):
        client = self.ctx.client(self.wname)
        producer = None
        n = 1
        key = self.rng.choice(KEYS)
        consecutive_failures = 0
        try:
            while self.running():
                self.iterations += 1
                next_key = self.rng.choice(KEYS)
                pause = self.rng.uniform(0.005, 0.05)
                value = f"{self.wname}:{n}"
                if producer is None:
                    self.h.add(proc=self.wname, op="producer-open", type="invoke", topic=self.spec.topic)
                    try:
                        producer = client.create_producer(
                            self.spec.topic, producer_name=self.producer_name, send_timeout_millis=SEND_TIMEOUT_MS,
                            batching_enabled=False, block_if_queue_full=True)
                    except Exception as e:
                        self.h.add(proc=self.wname, op="producer-open", type="info", err=repr(e)[:300])
                        producer = None
                        consecutive_failures += 1
                        if consecutive_failures >= 5:  # e.g. ProducerBusy from a connection that is gone
                            close_quietly(client)
                            client = self.ctx.client(self.wname)
                            consecutive_failures = 0
                        time.sleep(0.5)
                        continue
                    last = producer.last_sequence_id()
                    self.h.add(proc=self.wname, op="producer-open", type="ok", producer_name=self.producer_name,
                               last_sequence_id=last, expected=[n - 1, n])
                    if last == n:
                        # An earlier attempt of this value was persisted after all.
                        self.h.add(proc=self.wname, op="send", type="ok", topic=self.spec.topic, value=value,
                                   key=key, seq=n, id=None, dup=True, via="last_sequence_id")
                        n += 1
                        key = next_key
                        continue
                self.h.add(proc=self.wname, op="send", type="invoke", topic=self.spec.topic, value=value, key=key, seq=n)
                try:
                    message_id = producer.send(encode_payload(value, key), partition_key=key, sequence_id=n)
                except Exception as e:
                    self.h.add(proc=self.wname, op="send", type="info", topic=self.spec.topic, value=value, key=key,
                               seq=n, err=repr(e)[:300])
                    close_quietly(producer)
                    producer = None
                    consecutive_failures += 1
                    time.sleep(0.2)
                    continue
                consecutive_failures = 0
                dup = is_dup_receipt(message_id)
                self.h.add(proc=self.wname, op="send", type="ok", topic=self.spec.topic, value=value, key=key, seq=n,
                           id=None if dup else mid_tuple(message_id), dup=dup)
                if not dup:
                    self.ctx.note_receipt(self.spec.topic, value, message_id)
                n += 1
                key = next_key
                time.sleep(pause)
        finally:
            if producer is not None:
                close_quietly(producer)
            close_quietly(client)


class Session:
    def __init__(self, name: str, consumer):
        self.name = name
        self.consumer = consumer


class ConsumerWorker(Worker):
    """One subscription; `slots` consumers of it at a time (Exclusive: 1), each opened, used and
    closed again at random. A message received is acknowledged (85 %), negatively acknowledged (7 %)
    or left unacknowledged (8 %)."""

    def __init__(self, ctx, name, spec: TopicSpec, sub: str, sub_type: str, slots: int, seek_times: list[float]):
        super().__init__(ctx, name)
        self.spec = spec
        self.sub = sub
        self.sub_type = sub_type
        self.slots = slots
        self.seek_times = list(seek_times)  # seconds since the run started
        self.sessions_opened = 0

    def open(self, client, queue_size: int) -> Session | None:
        self.sessions_opened += 1
        name = f"{self.sub}#{self.sessions_opened}"
        self.h.add(proc=name, op="subscribe", type="invoke", topic=self.spec.topic, sub=self.sub,
                   sub_type=self.sub_type, queue=queue_size)
        try:
            c = client.subscribe(self.spec.topic, self.sub, consumer_type=SUB_TYPES[self.sub_type],
                                 receiver_queue_size=queue_size, consumer_name=name,
                                 negative_ack_redelivery_delay_ms=NACK_DELAY_MS,
                                 initial_position=pulsar.InitialPosition.Earliest)
        except Exception as e:
            self.h.add(proc=name, op="subscribe", type="info", topic=self.spec.topic, sub=self.sub, err=repr(e)[:300])
            return None
        self.h.add(proc=name, op="subscribe", type="ok", topic=self.spec.topic, sub=self.sub)
        return Session(name, c)

    def close(self, s: Session) -> bool:
        try:
            connected = s.consumer.is_connected()
        except Exception:
            connected = False
        self.h.add(proc=s.name, op="close", type="invoke", sub=self.sub, connected=connected)
        try:
            s.consumer.close()
        except Exception as e:
            self.h.add(proc=s.name, op="close", type="info", sub=self.sub, err=repr(e)[:300])
            return False
        self.h.add(proc=s.name, op="close", type="ok", sub=self.sub)
        return True

    def seek(self, s: Session) -> None:
        self.h.add(proc=s.name, op="seek", type="invoke", sub=self.sub, to="earliest")
        try:
            s.consumer.seek(pulsar.MessageId.earliest)
        except Exception as e:
            self.h.add(proc=s.name, op="seek", type="info", sub=self.sub, err=repr(e)[:300])
            return
        self.h.add(proc=s.name, op="seek", type="ok", sub=self.sub)

    def receive(self, s: Session, timeout_ms: int):
        try:
            msg = s.consumer.receive(timeout_millis=timeout_ms)
        except pulsar.Timeout:
            return None
        except Exception as e:
            self.h.add(proc=s.name, op="receive-error", sub=self.sub, err=repr(e)[:300])
            return False
        value, key = decode_payload(msg.data())
        self.h.add(proc=s.name, op="recv", sub=self.sub, topic=self.spec.topic, value=value, key=key,
                   msg_key=msg.partition_key(), id=mid_tuple(msg.message_id()), redelivery=msg.redelivery_count())
        return msg

    def body(self):
        client = self.ctx.client(self.wname)
        sessions: list[Session | None] = [None] * self.slots
        failed_opens = 0
        try:
            while self.running():
                self.iterations += 1
                slot = self.rng.randrange(self.slots)
                r = self.rng.random()
                k = self.rng.randint(1, 20)
                choices = [self.rng.random() for _ in range(20)]
                queue_size = self.rng.choice([5, 20, 100])
                s = sessions[slot]
                if s is None:
                    if r < 0.7:
                        sessions[slot] = self.open(client, queue_size)
                        if sessions[slot] is None:
                            failed_opens += 1
                            if failed_opens >= 5:  # a consumer we could not close may still hold the subscription
                                for other in sessions:
                                    if other is not None:
                                        self.close(other)
                                sessions = [None] * self.slots
                                close_quietly(client)
                                client = self.ctx.client(self.wname)
                                failed_opens = 0
                            time.sleep(0.3)
                        else:
                            failed_opens = 0
                    else:
                        time.sleep(0.05)
                    continue
                if self.seek_times and self.h.now() >= self.seek_times[0]:
                    self.seek_times.pop(0)
                    self.seek(s)
                    continue
                if r < 0.03:
                    self.close(s)
                    sessions[slot] = None
                    continue
                for j in range(k):
                    msg = self.receive(s, RECEIVE_POLL_MS)
                    if msg is None:
                        break
                    if msg is False:
                        self.close(s)
                        sessions[slot] = None
                        break
                    c = choices[j]
                    rid = mid_tuple(msg.message_id())
                    value, _ = decode_payload(msg.data())
                    if c < 0.85:
                        try:
                            s.consumer.acknowledge(msg)
                            self.h.add(proc=s.name, op="ack", sub=self.sub, id=rid, value=value,
                                       connected=s.consumer.is_connected())
                        except Exception as e:
                            self.h.add(proc=s.name, op="ack", type="info", sub=self.sub, id=rid, value=value,
                                       err=repr(e)[:200])
                    elif c < 0.92:
                        try:
                            s.consumer.negative_acknowledge(msg)
                            self.h.add(proc=s.name, op="nack", sub=self.sub, id=rid, value=value)
                        except Exception as e:
                            self.h.add(proc=s.name, op="nack", type="info", sub=self.sub, id=rid, value=value,
                                       err=repr(e)[:200])
        finally:
            for s in sessions:
                if s is not None:
                    self.close(s)
            close_quietly(client)


class ReaderWorker(Worker):
    """Readers from the earliest position or from a receipted message id, reading a bounded number."""

    def __init__(self, ctx, name, spec: TopicSpec):
        super().__init__(ctx, name)
        self.spec = spec
        self.opened = 0

    def body(self):
        client = self.ctx.client(self.wname)
        try:
            while self.running():
                self.iterations += 1
                r_start = self.rng.random()
                fraction = self.rng.random()
                budget = self.rng.randint(20, 400)
                pause = self.rng.uniform(0.2, 1.5)
                start, start_value, start_id = pulsar.MessageId.earliest, None, None
                if r_start >= 0.5:
                    with self.ctx.receipted_lock:
                        known = self.ctx.receipted[self.spec.topic]
                        if known:
                            start_value, start = known[min(len(known) - 1, int(fraction * len(known)))]
                            start_id = mid_tuple(start)
                self.opened += 1
                name = f"{self.wname}#{self.opened}"
                self.h.add(proc=name, op="reader-open", type="invoke", topic=self.spec.topic,
                           start="earliest" if start_id is None else "id", start_value=start_value, start_id=start_id)
                try:
                    reader = client.create_reader(self.spec.topic, start, receiver_queue_size=50)
                except Exception as e:
                    self.h.add(proc=name, op="reader-open", type="info", topic=self.spec.topic, err=repr(e)[:300])
                    time.sleep(0.5)
                    continue
                self.h.add(proc=name, op="reader-open", type="ok", topic=self.spec.topic)
                timeouts = 0
                read = 0
                while read < budget and timeouts < 2 and self.running():
                    try:
                        msg = reader.read_next(timeout_millis=500)
                    except pulsar.Timeout:
                        timeouts += 1
                        continue
                    except Exception as e:
                        self.h.add(proc=name, op="read-error", err=repr(e)[:300])
                        break
                    read += 1
                    value, key = decode_payload(msg.data())
                    self.h.add(proc=name, op="read", topic=self.spec.topic, value=value, key=key,
                               id=mid_tuple(msg.message_id()))
                close_quietly(reader)
                self.h.add(proc=name, op="reader-close", topic=self.spec.topic)
                time.sleep(pause)
        finally:
            close_quietly(client)


# ------------------------------------------------------------------------------------------------
# final phase: drain every subscription, read every topic
# ------------------------------------------------------------------------------------------------

def drain_subscription(ctx: RunContext, spec: TopicSpec, sub: str, sub_type: str, deadline: float) -> dict:
    """One consumer of the subscription receives (and acknowledges) until every receipted value has
    been delivered on this subscription at some time and every message id delivered earlier without
    an acknowledgement has come again; then 1 s more. Bounded by `deadline` (monotonic)."""
    h = ctx.history
    with h.lock:
        events = list(h.events)
    receipted = {e["value"] for e in events if e["op"] == "send" and e.get("type") == "ok" and e["topic"] == spec.topic}
    seen_values = {e["value"] for e in events if e["op"] == "recv" and e["sub"] == sub}
    acked_ids = {tuple(e["id"]) for e in events if e["op"] == "ack" and e["sub"] == sub}
    owed_ids = {tuple(e["id"]) for e in events if e["op"] == "recv" and e["sub"] == sub} - acked_ids
    missing_values = receipted - seen_values
    client = ctx.client(f"drain-{sub}")
    name = f"{sub}#drain"
    consumer = None
    received = 0
    try:
        while consumer is None and time.monotonic() < deadline:
            h.add(proc=name, op="subscribe", type="invoke", topic=spec.topic, sub=sub, sub_type=sub_type, drain=True)
            try:
                consumer = client.subscribe(spec.topic, sub, consumer_type=SUB_TYPES[sub_type], consumer_name=name,
                                            receiver_queue_size=1000, initial_position=pulsar.InitialPosition.Earliest)
                h.add(proc=name, op="subscribe", type="ok", topic=spec.topic, sub=sub)
            except Exception as e:
                h.add(proc=name, op="subscribe", type="info", topic=spec.topic, sub=sub, err=repr(e)[:300])
                time.sleep(1.0)
        quiet_until = None
        while consumer is not None and time.monotonic() < deadline:
            if not missing_values and not owed_ids and quiet_until is None:
                quiet_until = time.monotonic() + 1.0
            if quiet_until is not None and time.monotonic() >= quiet_until:
                break
            try:
                msg = consumer.receive(timeout_millis=200)
            except pulsar.Timeout:
                continue
            except Exception as e:
                h.add(proc=name, op="receive-error", sub=sub, err=repr(e)[:300])
                time.sleep(0.2)
                continue
            value, key = decode_payload(msg.data())
            rid = mid_tuple(msg.message_id())
            h.add(proc=name, op="recv", sub=sub, topic=spec.topic, value=value, key=key, msg_key=msg.partition_key(),
                  id=rid, redelivery=msg.redelivery_count())
            received += 1
            missing_values.discard(value)
            owed_ids.discard(rid)
            consumer.acknowledge(msg)
            h.add(proc=name, op="ack", sub=sub, id=rid, value=value, connected=consumer.is_connected())
        if consumer is not None:
            h.add(proc=name, op="close", type="invoke", sub=sub, connected=consumer.is_connected())
            try:
                consumer.close()
                h.add(proc=name, op="close", type="ok", sub=sub)
            except Exception as e:
                h.add(proc=name, op="close", type="info", sub=sub, err=repr(e)[:300])
    finally:
        close_quietly(client)
    return {"sub": sub, "received": received, "missing_values": len(missing_values), "owed_ids": len(owed_ids)}


def final_read(ctx: RunContext, spec: TopicSpec, deadline: float) -> dict:
    """A reader from the earliest position until has_message_available() is false and every
    receipted value was read (bounded by `deadline`)."""
    h = ctx.history
    with h.lock:
        receipted = {e["value"] for e in h.events
                     if e["op"] == "send" and e.get("type") == "ok" and e["topic"] == spec.topic}
    client = ctx.client(f"final-reader-{spec.tag}")
    name = f"final-reader-{spec.tag}"
    read = 0
    try:
        reader = None
        while reader is None and time.monotonic() < deadline:
            h.add(proc=name, op="reader-open", type="invoke", topic=spec.topic, start="earliest", final=True)
            try:
                reader = client.create_reader(spec.topic, pulsar.MessageId.earliest, receiver_queue_size=1000)
                h.add(proc=name, op="reader-open", type="ok", topic=spec.topic)
            except Exception as e:
                h.add(proc=name, op="reader-open", type="info", topic=spec.topic, err=repr(e)[:300])
                time.sleep(1.0)
        while reader is not None and time.monotonic() < deadline:
            try:
                if not receipted and not reader.has_message_available():
                    break
                msg = reader.read_next(timeout_millis=1000)
            except pulsar.Timeout:
                continue
            except Exception as e:
                h.add(proc=name, op="read-error", err=repr(e)[:300])
                time.sleep(0.2)
                continue
            value, key = decode_payload(msg.data())
            h.add(proc=name, op="read", topic=spec.topic, value=value, key=key, id=mid_tuple(msg.message_id()))
            read += 1
            receipted.discard(value)
        if reader is not None:
            close_quietly(reader)
            h.add(proc=name, op="reader-close", topic=spec.topic)
    finally:
        close_quietly(client)
    return {"topic": spec.tag, "read": read, "missing_values": len(receipted)}


# ------------------------------------------------------------------------------------------------
# checker
# ------------------------------------------------------------------------------------------------

class SendInfo:
    __slots__ = ("value", "topic", "proc", "n", "key", "first_invoke", "first_ok", "events")

    def __init__(self, value, topic, key):
        self.value = value
        self.topic = topic
        self.proc, self.n = value_parts(value)
        self.key = key
        self.first_invoke = None
        self.first_ok = None
        self.events = []


def _excerpt(events: list[dict], limit: int = 12) -> list[dict]:
    out = []
    for e in events[:limit]:
        e = {k: v for k, v in e.items() if k != "log_tail"}
        out.append(e)
    return out


def check(events: list[dict], topics: list[TopicSpec], disturbance_s: float,
          liveness_bound_s: float = LIVENESS_BOUND_S) -> tuple[list[dict], dict]:
    """The rules of docs/RELIABILITY.md over a history. Returns (violations, statistics)."""
    violations: list[dict] = []
    stats: collections.Counter = collections.Counter()

    def violation(rule: str, detail: str, excerpt: list[dict], **extra):
        violations.append({"rule": rule, "detail": detail, **extra, "events": _excerpt(excerpt)})

    spec_by_topic = {s.topic: s for s in topics}
    sub_info = {}  # sub -> (spec, type)
    for s in topics:
        for sub, typ in s.subs.items():
            sub_info[sub] = (s, typ)

    sends: dict[str, SendInfo] = {}
    recvs_by_sub: dict[str, list[dict]] = collections.defaultdict(list)
    sessions: dict[str, dict] = {}  # consumer session proc -> {sub, subscribe_t, events: [...], closes: [...]}
    acks_by_sub: dict[str, list[dict]] = collections.defaultdict(list)
    seeks_by_sub: dict[str, list[list]] = collections.defaultdict(list)  # [invoke_t, end_t]
    seek_open: dict[str, list] = {}
    faults: list[list[float]] = []
    fault_open = None
    readers: dict[str, dict] = {}
    reads_by_topic: dict[str, list[dict]] = collections.defaultdict(list)
    end_of_history = events[-1]["t"] if events else 0.0

    for e in events:
        op = e["op"]
        typ = e.get("type", "ok")
        if op == "send":
            si = sends.get(e["value"])
            if si is None:
                si = sends[e["value"]] = SendInfo(e["value"], e["topic"], e["key"])
            si.events.append(e)
            if typ == "invoke" and si.first_invoke is None:
                si.first_invoke = e["t"]
            if typ == "ok":
                stats["sends_ok"] += 1
                if si.first_ok is None:
                    si.first_ok = e["t"]
            elif typ == "info":
                stats["sends_unknown"] += 1
        elif op == "subscribe":
            if typ == "invoke":
                sessions[e["proc"]] = {"sub": e["sub"], "subscribe_t": e["t"], "events": [], "closes": [],
                                       "drain": bool(e.get("drain"))}
        elif op in ("recv", "ack", "nack"):
            sess = sessions.get(e["proc"])
            if sess is not None:
                sess["events"].append(e)
            if op == "recv":
                recvs_by_sub[e["sub"]].append(e)
                stats["deliveries"] += 1
            elif op == "ack" and typ == "ok":
                acks_by_sub[e["sub"]].append(e)
                stats["acks"] += 1
            elif op == "nack":
                stats["nacks"] += 1
        elif op == "close":
            sess = sessions.get(e["proc"])
            if sess is not None:
                sess["closes"].append(e)
        elif op == "seek":
            if typ == "invoke":
                seek_open[e["proc"]] = [e["t"], None, e]
                seeks_by_sub[e["sub"]].append(seek_open[e["proc"]])
                stats["seeks"] += 1
            else:
                s = seek_open.pop(e["proc"], None)
                if s is not None:
                    # An unanswered seek may still take effect later: let it count for a while longer.
                    s[1] = e["t"] + (SEEK_GRACE_S if typ == "ok" else 30.0)
        elif op == "fault":
            if typ == "invoke":
                fault_open = [e["t"], None]
                faults.append(fault_open)
            elif fault_open is not None:
                fault_open[1] = e["t"]
                fault_open = None
        elif op == "reader-open":
            if typ == "invoke":
                readers[e["proc"]] = {"topic": e["topic"], "start": e.get("start"), "start_value": e.get("start_value"),
                                      "start_id": tuple(e["start_id"]) if e.get("start_id") else None,
                                      "reads": [], "final": bool(e.get("final")), "open": e}
        elif op == "read":
            r = readers.get(e["proc"])
            if r is not None:
                r["reads"].append(e)
            reads_by_topic[e["topic"]].append(e)
            stats["reads"] += 1
        elif op == "anomaly":
            violation(f"process-{e['kind']}", f"{e['target']}: {e['kind']} (exit code {e.get('code')})", [e],
                      log_tail=e.get("log_tail", "")[-3000:])
        elif op == "harness-error":
            violation("harness-error", f"{e['proc']}: {e['err'][-1500:]}", [e])
        elif op == "liveness":
            if typ != "ok":
                violation("liveness", f"not everything was delivered within {liveness_bound_s:.0f}s of the end of "
                          f"the faults: {e.get('detail')}", [e])
        elif op == "producer-open" and typ == "ok" and e.get("expected") is not None:
            lo, hi = e["expected"]
            last = e["last_sequence_id"]
            if not (lo <= last <= hi) and not (lo == 0 and last == -1):
                violation("dedup-last-sequence-id",
                          f"{e['proc']}: PRODUCER_SUCCESS.last_sequence_id={last}, but sequence ids up to {lo} were "
                          f"receipted and none beyond {hi} was ever sent", [e])
    for f in faults:
        if f[1] is None:
            f[1] = end_of_history
    for lst in seeks_by_sub.values():
        for s in lst:
            if s[1] is None:
                s[1] = end_of_history + 30.0

    receipted = {v: si for v, si in sends.items() if si.first_ok is not None}
    stats["values_receipted"] = len(receipted)
    stats["values_sent"] = len(sends)

    # -- integrity: every delivered message was sent, with its key, to its topic ---------------------
    for e in [x for lst in recvs_by_sub.values() for x in lst] + [x for lst in reads_by_topic.values() for x in lst]:
        si = sends.get(e["value"]) if e["value"] else None
        if si is None or si.first_invoke is None or si.first_invoke > e["t"]:
            violation("integrity", f"{e['proc']} got a message nobody sent (before then): {e['value']!r}", [e])
        elif si.topic != e["topic"] or si.key != e["key"] or ("msg_key" in e and e["msg_key"] != si.key):
            violation("integrity", f"{e['proc']} got {e['value']} with key {e.get('msg_key')!r}/{e['key']!r} "
                      f"on {e['topic']}; it was sent with key {si.key!r} to {si.topic}", [e] + si.events)

    # -- no loss: every receipted message reaches every subscription and the final reader -------------
    for sub, (spec, typ) in sub_info.items():
        got = {e["value"] for e in recvs_by_sub[sub]}
        missing = [si for v, si in receipted.items() if si.topic == spec.topic and v not in got]
        if missing:
            violation("lost", f"{len(missing)} receipted messages never delivered on subscription {sub} ({typ}), "
                      f"e.g. {[si.value for si in missing[:10]]}", [e for si in missing[:3] for e in si.events], sub=sub)
        # a message delivered and never acknowledged must come again
        acked = {tuple(a["id"]) for a in acks_by_sub[sub]}
        drained = {tuple(e["id"]) for e in recvs_by_sub[sub] if sessions.get(e["proc"], {}).get("drain")}
        owed = {}
        for e in recvs_by_sub[sub]:
            rid = tuple(e["id"])
            if rid not in acked and rid not in drained:
                owed.setdefault(rid, e)
        if owed:
            sample = list(owed.values())[:5]
            violation("lost-unacked", f"{len(owed)} messages delivered on {sub} without an acknowledgement never came "
                      f"back, e.g. {[(e['value'], e['id']) for e in sample]}", sample, sub=sub)
    for spec in topics:
        final = [r for r in readers.values() if r["final"] and r["topic"] == spec.topic]
        got = {e["value"] for r in final for e in r["reads"]}
        missing = [si for v, si in receipted.items() if si.topic == spec.topic and v not in got]
        if missing:
            violation("lost", f"{len(missing)} receipted messages not in topic {spec.tag} read from the earliest "
                      f"position at the end, e.g. {[si.value for si in missing[:10]]}",
                      [e for si in missing[:3] for e in si.events], topic=spec.tag)

    # -- deduplication: one stored copy (one message id) per value -----------------------------------
    for spec in topics:
        ids_by_value: dict[str, set] = collections.defaultdict(set)
        evs_by_value: dict[str, list] = collections.defaultdict(list)
        for sub in spec.subs:
            for e in recvs_by_sub[sub]:
                ids_by_value[e["value"]].add(tuple(e["id"]))
                evs_by_value[e["value"]].append(e)
        for e in reads_by_topic[spec.topic]:
            ids_by_value[e["value"]].add(tuple(e["id"]))
            evs_by_value[e["value"]].append(e)
        dups = {v: ids for v, ids in ids_by_value.items() if len(ids) > 1}
        stats[f"values_stored_twice_{spec.tag}"] = len(dups)
        if spec.dedup and dups:
            v = sorted(dups)[0]
            violation("duplicate", f"deduplication on, yet {len(dups)} values are stored more than once in "
                      f"{spec.tag}, e.g. {v} as {sorted(dups[v])}",
                      sends[v].events + evs_by_value[v] if v in sends else evs_by_value[v], topic=spec.tag)

    # -- no redelivery of a committed acknowledgement -------------------------------------------------
    fault_windows = sorted((a - 1.0, b + disturbance_s) for a, b in faults)

    def disturbed(t1: float, t2: float) -> bool:
        return any(a <= t2 and t1 <= b for a, b in fault_windows)

    def seek_between(sub: str, t1: float, t2: float) -> bool:
        return any(s[0] <= t2 and t1 <= s[1] for s in seeks_by_sub[sub])

    for sub in sub_info:
        committed: dict[tuple, tuple[float, float, dict, dict]] = {}  # id -> (ack t, commit t, ack event, close ok)
        for name, sess in sessions.items():
            if sess["sub"] != sub:
                continue
            closes = sess["closes"]
            inv = next((c for c in closes if c.get("type") == "invoke"), None)
            ok = next((c for c in closes if c.get("type") == "ok"), None)
            if inv is None or ok is None or not inv.get("connected"):
                continue
            for a in sess["events"]:
                if a["op"] != "ack" or a.get("type", "ok") != "ok" or a["t"] > inv["t"] or not a.get("connected"):
                    continue
                if disturbed(a["t"], ok["t"]):
                    continue
                rid = tuple(a["id"])
                if rid not in committed or committed[rid][1] > ok["t"]:
                    committed[rid] = (a["t"], ok["t"], a, ok)
        stats["committed_acks"] += len(committed)
        for e in recvs_by_sub[sub]:
            rid = tuple(e["id"])
            c = committed.get(rid)
            if c is None:
                continue
            ack_t, commit_t, ack_e, close_e = c
            sess = sessions.get(e["proc"])
            if sess is None or sess["subscribe_t"] <= commit_t:
                continue
            if seek_between(sub, ack_t, e["t"]):
                continue
            violation("redelivered-after-ack",
                      f"{e['value']} {rid} was acknowledged by {ack_e['proc']} at t={ack_t:.3f}, committed by its "
                      f"close at t={commit_t:.3f} (no fault, no seek around), and delivered again to {e['proc']} "
                      f"(subscribed at t={sess['subscribe_t']:.3f}) at t={e['t']:.3f}",
                      [ack_e, close_e, e], sub=sub)

    # -- per-key order (Exclusive / Failover: per producer; Key_Shared: per producer and key) ----------
    for sub, (spec, typ) in sub_info.items():
        if typ not in ORDERED_TYPES:
            continue
        first_t: dict[str, list[float]] = collections.defaultdict(list)
        for e in recvs_by_sub[sub]:
            first_t[e["value"]].append(e["t"])
        seek_invokes = sorted(s[0] for s in seeks_by_sub[sub])
        for name, sess in sessions.items():
            if sess["sub"] != sub:
                continue
            highest: dict[tuple, tuple[int, dict]] = {}  # (epoch, group) -> (n, recv event)
            for e in sess["events"]:
                if e["op"] != "recv":
                    continue
                si = receipted.get(e["value"])
                if si is None:
                    continue  # only receipted messages have a known place in the send order
                if seek_between(sub, e["t"], e["t"]):
                    continue  # in a seek's window: skipped
                epoch = bisect.bisect_right(seek_invokes, e["t"])
                group = (epoch, si.proc) if typ != "KeyShared" else (epoch, si.proc, si.key)
                prev = highest.get(group)
                if prev is not None and si.n < prev[0]:
                    earlier_elsewhere = any(t < e["t"] + CLOCK_SLACK_S for t in first_t[e["value"]] if t != e["t"])
                    si_prev = receipted[prev[1]["value"]]
                    if not earlier_elsewhere and si.first_ok < si_prev.first_invoke:
                        violation("order", f"{name} ({typ}) received {prev[1]['value']} and then {e['value']}, which "
                                  f"was sent before it and never delivered on {sub} before",
                                  [prev[1], e] + si.events + si_prev.events, sub=sub)
                if prev is None or si.n > prev[0]:
                    highest[group] = (si.n, e)

    # -- readers: a reader from a position reads the log in order and without gaps -------------------
    ok_sorted: dict[str, list[tuple[float, float, str]]] = collections.defaultdict(list)
    for si in receipted.values():
        ok_sorted[si.topic].append((si.first_ok, si.first_invoke, si.value))
    for lst in ok_sorted.values():
        lst.sort()
    for name, r in readers.items():
        topic = r["topic"]
        all_ok = ok_sorted[topic]
        if r["start"] == "id":
            start_si = receipted.get(r["start_value"])
            if start_si is None:
                continue
            # those sent after the start message was receipted are after it in the log
            required = [x for x in all_ok if x[1] > start_si.first_ok]
        else:
            required = all_ok
        req_ok = [x[0] for x in required]
        seen = set()
        prefix = 0  # required[:prefix] all seen
        for e in r["reads"]:
            if r["start_id"] is not None and tuple(e["id"]) == r["start_id"]:
                violation("reader-start", f"{name} started after {r['start_value']} {r['start_id']} yet returned it",
                          [r["open"], e])
            seen.add(e["value"])
            while prefix < len(required) and required[prefix][2] in seen:
                prefix += 1
            si = receipted.get(e["value"])
            if si is None:
                continue
            need = bisect.bisect_left(req_ok, si.first_invoke)  # receipted before this one was sent
            if need > prefix:
                gap = required[prefix][2]
                violation("reader-gap", f"{name} read {e['value']} before {gap}, which was receipted before "
                          f"{e['value']} was sent (start: {r['start_value'] or 'earliest'})",
                          [r["open"], e] + sends[gap].events + sends[e["value"]].events, topic=spec_by_topic[topic].tag)
                break
    return violations, dict(stats)


def dump_topic_stats(target: Target, topic: str, path: Path, stacks: bool = False) -> None:
    rest = topic.replace("://", "/")
    out = {}
    for url in target.http_urls():
        for what in ("stats", "internalStats"):
            try:
                out[f"{url} {what}"] = http(url, "GET", f"/admin/v2/{rest}/{what}", timeout=2.0)
            except Exception as e:
                out[f"{url} {what}"] = repr(e)
        try:
            out[f"{url} lookup"] = http(url, "GET", f"/lookup/v2/topic/{rest}", timeout=2.0)
        except Exception as e:
            out[f"{url} lookup"] = repr(e)
    # CPU use of every process over one second (a busy loop and a deadlock look different).
    def cpu_ticks(pid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            return None
    procs = [p for p in target.processes if p.is_running()]
    before = {p.name: cpu_ticks(p.proc.pid) for p in procs}
    time.sleep(1.0)
    tick_hz = os.sysconf("SC_CLK_TCK")
    out["cpu_percent_over_1s"] = {
        p.name: (None if before[p.name] is None or cpu_ticks(p.proc.pid) is None
                 else round(100.0 * (cpu_ticks(p.proc.pid) - before[p.name]) / tick_hz))
        for p in procs}
    if stacks and shutil.which("gdb"):
        for p in procs:
            if p.name.startswith("broker"):
                try:
                    r = subprocess.run(["gdb", "-p", str(p.proc.pid), "-batch", "-ex", "thread apply all bt 30"],
                                       capture_output=True, text=True, timeout=60)
                    (path.parent / f"{path.stem}-{p.name}-stacks.txt").write_text(r.stdout + r.stderr)
                except (OSError, subprocess.SubprocessError) as e:
                    out[f"{p.name} stacks"] = repr(e)
    with open(path, "w") as f:
        json.dump(out, f, indent=1, default=str)


def availability(events: list[dict], topics: list[TopicSpec]) -> dict:
    """Not a rule: per topic, the longest stretch of the fault phase without a receipt (a stall)."""
    start = next((e["t"] for e in events if e["op"] == "phase-start"), 0.0)
    end = next((e["t"] for e in events if e["op"] == "quiescence"), events[-1]["t"] if events else 0.0)
    out = {}
    for spec in topics:
        oks = [start] + [e["t"] for e in events if e["op"] == "send" and e.get("type") == "ok"
                         and e["topic"] == spec.topic and start <= e["t"] <= end] + [end]
        gap, at = max(((b - a, a) for a, b in zip(oks, oks[1:])), default=(0.0, start))
        out[spec.tag] = {"longest_gap_s": round(gap, 2), "from_t": round(at, 2), "to_t": round(at + gap, 2)}
    return out


# ------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------

def make_topics(seed, target: Target) -> list[TopicSpec]:
    tag = f"{seed}".replace("-", "m")[:16]
    ns_main = f"public/chaos-{tag}"
    ns_dedup = f"public/chaos-dedup-{tag}"
    ordered = TopicSpec("ord", f"persistent://{ns_main}/ordered", False, {
        "ord.excl": "Exclusive", "ord.fail": "Failover", "ord.ks": "KeyShared", "ord.shared": "Shared"})
    dedup = TopicSpec("dd", f"persistent://{ns_dedup}/dedup", True, {"dd.fail": "Failover", "dd.shared": "Shared"})
    return [ordered, dedup]


def setup(ctx: RunContext, topics: list[TopicSpec]) -> None:
    target, h = ctx.target, ctx.history
    for spec in topics:
        ns = spec.topic.split("://", 1)[1].rsplit("/", 1)[0]
        target.admin("PUT", f"/admin/v2/namespaces/{ns}")
        # Keep everything: the final reader reads every topic from the beginning.
        target.admin("POST", f"/admin/v2/namespaces/{ns}/retention",
                     {"retentionTimeInMinutes": -1, "retentionSizeInMB": -1})
        if spec.dedup:
            target.admin("POST", f"/admin/v2/namespaces/{ns}/deduplication", True)
    client = ctx.client("setup")
    try:
        # Every durable subscription exists before the first message is sent.
        for spec in topics:
            for sub, typ in spec.subs.items():
                name = f"{sub}#setup"
                h.add(proc=name, op="subscribe", type="invoke", topic=spec.topic, sub=sub, sub_type=typ)
                c = client.subscribe(spec.topic, sub, consumer_type=SUB_TYPES[typ], consumer_name=name,
                                     initial_position=pulsar.InitialPosition.Earliest)
                h.add(proc=name, op="subscribe", type="ok", topic=spec.topic, sub=sub)
                h.add(proc=name, op="close", type="invoke", sub=sub, connected=c.is_connected())
                c.close()
                h.add(proc=name, op="close", type="ok", sub=sub)
        # Deduplication in force (the policy reaches topics within about a second): a probe producer
        # on the deduplicated topic itself sends sequence id 1 until the repeat comes back as a duplicate.
        for spec in topics:
            if not spec.dedup:
                continue
            probe = client.create_producer(spec.topic, producer_name=f"probe-{spec.tag}", batching_enabled=False)
            value = f"probe-{spec.tag}:1"
            deadline = time.monotonic() + 20
            while True:
                h.add(proc=f"probe-{spec.tag}", op="send", type="invoke", topic=spec.topic, value=value, key="k0", seq=1)
                mid = probe.send(encode_payload(value, "k0"), partition_key="k0", sequence_id=1)
                dup = is_dup_receipt(mid)
                h.add(proc=f"probe-{spec.tag}", op="send", type="ok", topic=spec.topic, value=value, key="k0", seq=1,
                      id=None if dup else mid_tuple(mid), dup=dup)
                if dup:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("deduplication not in force within 20 s")
                time.sleep(0.5)
            probe.close()
    finally:
        close_quietly(client)


def run_chaos(target: Target, seed, fault_seconds: float, workdir: Path, log=print,
              progress_every: float = 10.0, liveness_bound_s: float = LIVENESS_BOUND_S,
              stall_stacks: bool = False) -> dict:
    """One run: setup, fault phase (workload + nemesis), final drain, check. Returns the summary."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    history = History()
    rng = random.Random(f"{seed}/{target.name}")
    plan = plan_faults(target, random.Random(rng.getrandbits(64)), fault_seconds)
    topics = make_topics(seed, target)
    started = time.monotonic()
    ctx = RunContext(seed, history, target, workdir, deadline=float("inf"))
    log(f"[{target.name}] seed={seed} fault phase {fault_seconds:.0f}s, {len(plan)} faults planned: "
        + ", ".join(f"{f['at']:.0f}s {f['kind']} {f['target']} {f['hold']}s" for f in plan[:12])
        + (" ..." if len(plan) > 12 else ""))
    history.add(proc="runner", op="run-start", target=target.name, seed=seed, wall=history.wall0,
                wall_iso=time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(history.wall0)))
    setup(ctx, topics)
    phase_start = history.now()
    history.add(proc="runner", op="phase-start")
    ctx.deadline = time.monotonic() + fault_seconds
    # Seeks to the earliest position: at seeded times, on seeded subscriptions (at least one per run).
    seek_rng = random.Random(rng.getrandbits(64))
    consumer_specs = [(spec, sub, typ) for spec in topics for sub, typ in spec.subs.items()]
    seeks: dict[str, list[float]] = {sub: [] for _, sub, _ in consumer_specs}
    n_seeks = max(1, int(fault_seconds // 40))
    for _ in range(n_seeks):
        _, sub, _ = seek_rng.choice(consumer_specs)
        seeks[sub].append(phase_start + seek_rng.uniform(0.15, 0.85) * fault_seconds)
    workers: list[Worker] = []
    ordered, dedup = topics
    for i in range(ORDERED_PRODUCERS):
        workers.append(ProducerWorker(ctx, f"p{i}", ordered))
    for i in range(DEDUP_PRODUCERS):
        workers.append(DedupProducerWorker(ctx, f"d{i}", dedup, producer_name=f"chaos-dedup-{i}"))
    for spec, sub, typ in consumer_specs:
        workers.append(ConsumerWorker(ctx, sub, spec, sub, typ, 1 if typ == "Exclusive" else 2, sorted(seeks[sub])))
    for spec in topics:
        workers.append(ReaderWorker(ctx, f"r.{spec.tag}", spec))
    # The last fault may overrun the phase by its hold time (a few seconds); none starts after it.
    nemesis = Nemesis(target, [dict(f, at=f["at"] + phase_start) for f in plan], history,
                      hard_deadline=ctx.deadline)

    def progress_line(label: str) -> str:
        return (f"[{target.name}] {label} t={time.monotonic() - started:5.0f}s "
                f"sent={history.count('send')} unknown={history.count('send', 'info')} "
                f"delivered={history.count('recv')} acks={history.count('ack')} reads={history.count('read')} "
                f"faults={history.count('fault', 'invoke')}" + (f" now: {nemesis.current}" if nemesis.current else ""))

    next_progress = [time.monotonic() + progress_every]
    stalled: set[str] = set()

    def tick():
        if time.monotonic() < next_progress[0]:
            return
        log(progress_line("progress"))
        next_progress[0] += progress_every
        # Diagnostics (not a rule): a topic without a receipt for STALL_S gets its broker-side stats saved.
        for spec in topics:
            last = ctx.last_receipt.get(spec.topic, started)
            if time.monotonic() - last < STALL_S:
                stalled.discard(spec.topic)
            elif spec.topic not in stalled:
                stalled.add(spec.topic)
                path = workdir / f"stall-{spec.tag}-{history.now():.0f}s.json"
                history.add(proc="runner", op="stall", topic=spec.topic, seconds=round(time.monotonic() - last, 1),
                            during=nemesis.current, dump=str(path))
                log(f"[{target.name}] no receipt on {spec.tag} for {time.monotonic() - last:.0f}s: stats in {path}")
                dump_topic_stats(target, spec.topic, path, stacks=stall_stacks)

    nemesis.tick = tick
    for w in workers:
        w.start()
    nemesis.run()  # on this thread, until the end of the phase; heals everything before returning
    ctx.stop.set()
    for w in workers:
        w.join(max(1.0, 30 - (time.monotonic() - ctx.deadline)))
    stuck = [w.wname for w in workers if w.is_alive()]
    if stuck:
        history.add(proc="runner", op="harness-error", err=f"workers still running 30 s after the phase: {stuck}")
    log(progress_line("faults over"))

    # -- final phase -------------------------------------------------------------------------------
    quiet_start = time.monotonic()
    history.add(proc="runner", op="quiescence")
    try:
        target.wait_healthy(30)
    except Exception as e:
        history.add(proc="runner", op="anomaly", kind="unhealthy", target=target.name, err=str(e))
    deadline = quiet_start + liveness_bound_s
    # All subscriptions and topics at once, one thread each (they start no process: see Nemesis).
    results: dict[str, dict] = {}

    def final_job(key, fn, *args):
        try:
            results[key] = fn(*args)
        except BaseException:
            history.add(proc=f"final-{key}", op="harness-error", err=traceback.format_exc())
            results[key] = {"sub": key, "topic": key, "received": 0, "read": 0, "missing_values": -1, "owed_ids": -1}

    jobs = [threading.Thread(target=final_job, args=(sub, drain_subscription, ctx, spec, sub, typ, deadline), daemon=True)
            for spec, sub, typ in consumer_specs]
    jobs += [threading.Thread(target=final_job, args=(f"read-{spec.tag}", final_read, ctx, spec, deadline), daemon=True)
             for spec in topics]
    for j in jobs:
        j.start()
    for j in jobs:
        j.join(max(1.0, deadline + 30 - time.monotonic()))
    if any(j.is_alive() for j in jobs):
        history.add(proc="runner", op="harness-error", err="final drain threads still running 30 s after the bound")
    drains = [results.get(sub, {"sub": sub, "received": 0, "missing_values": -1, "owed_ids": -1})
              for _, sub, _ in consumer_specs]
    reads = [results.get(f"read-{spec.tag}", {"topic": spec.tag, "read": 0, "missing_values": -1}) for spec in topics]
    liveness_s = time.monotonic() - quiet_start
    incomplete = [d for d in drains if d["missing_values"] or d["owed_ids"]] + [r for r in reads if r["missing_values"]]
    history.add(proc="runner", op="liveness", type="info" if incomplete else "ok", seconds=round(liveness_s, 2),
                detail=incomplete or None)
    log(f"[{target.name}] drained in {liveness_s:.1f}s: " + ", ".join(
        f"{d['sub']}={d['received']}" for d in drains) + "; final readers: " + ", ".join(
        f"{r['topic']}={r['read']}" for r in reads))

    events = history.events
    violations, stats = check(events, topics, DISTURBANCE_S[target.name], liveness_bound_s)
    history.dump(workdir / "history.jsonl")
    ops = collections.Counter()
    for (op, typ), n in history.counts.items():
        ops[f"{op}:{typ}"] += n
    summary = {
        "target": target.name,
        "seed": seed,
        "fault_seconds": fault_seconds,
        "elapsed_s": round(time.monotonic() - started, 1),
        "operations": sum(n for (op, typ), n in history.counts.items() if typ in ("ok", "info")),
        "operations_by_kind": dict(sorted(ops.items())),
        "faults": dict(sorted(nemesis.faults.items())),
        "faults_total": sum(nemesis.faults.values()),
        "fault_plan": plan,
        "stats": stats,
        "stalls": availability(events, topics),
        "liveness_s": round(liveness_s, 2),
        "drains": drains,
        "final_reads": reads,
        "violations": violations,
        "history": str(workdir / "history.jsonl"),
        "topics": [t.as_dict() for t in topics],
    }
    with open(workdir / "summary.json", "w") as f:
        json.dump(summary, f, indent=1, default=str)
    return summary


def short_summary(s: dict) -> str:
    st = s["stats"]
    return (f"[{s['target']}] seed={s['seed']}: {s['operations']} operations in {s['elapsed_s']}s, "
            f"{s['faults_total']} faults {s['faults']}, receipted={st.get('values_receipted', 0)} "
            f"unknown={st.get('sends_unknown', 0)} deliveries={st.get('deliveries', 0)} acks={st.get('acks', 0)} "
            f"committed_acks={st.get('committed_acks', 0)} nacks={st.get('nacks', 0)} seeks={st.get('seeks', 0)} "
            f"reads={st.get('reads', 0)} longest-stall="
            f"{max((x['longest_gap_s'] for x in s['stalls'].values()), default=0)}s "
            f"liveness={s['liveness_s']}s violations={len(s['violations'])}")


def format_violations(s: dict, limit: int = 5) -> str:
    lines = []
    for v in s["violations"][:limit]:
        lines.append(f"  VIOLATION {v['rule']}: {v['detail']}")
        for e in v["events"]:
            lines.append("      " + json.dumps(e, default=str))
    if len(s["violations"]) > limit:
        lines.append(f"  ... {len(s['violations']) - limit} more in {s['history'].replace('history.jsonl', 'summary.json')}")
    lines.append(f"  reproduce: scripts/chaos --seed {s['seed']} --target {s['target']} "
                 f"--minutes {s['fault_seconds'] / 60:.2f}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# command line (scripts/chaos)
# ------------------------------------------------------------------------------------------------

def run_standalone(seed, fault_seconds: float, root: Path, log=print, disk_faults: bool = True, **kw) -> dict:
    """With `disk_faults` (and root), the data directory is on a tmpfs of STANDALONE_DISK_SIZE that
    the `diskfull` fault fills; without root the run has no disk faults (logged)."""
    disk_root = root / "disk"
    mounted = disk_faults and mount_tmpfs(disk_root, STANDALONE_DISK_SIZE)
    if disk_faults and not mounted:
        log("[standalone] no diskfull faults: mounting a tmpfs needs root")
    broker = LoopbackBroker((disk_root if mounted else root) / "data", root / "magnetar.log")
    try:
        broker.start()
        target = StandaloneTarget(broker, DiskFiller(disk_root) if mounted else None)
        return run_chaos(target, seed, fault_seconds, root / "run", log=log, **kw)
    finally:
        broker.expected_running = False
        try:
            broker.close()
        except AssertionError:
            pass
        if mounted:
            unmount(disk_root)


def run_cluster(seed, fault_seconds: float, root: Path, log=print, **kw) -> dict:
    from cluster import LocalCluster
    cluster = LocalCluster(root)
    cluster.start()
    try:
        return run_chaos(ClusterTarget(cluster), seed, fault_seconds, root / "run", log=log, **kw)
    finally:
        for p in cluster.processes:
            p.expected_running = False
        try:
            cluster.close()
        except AssertionError:
            pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=3.0,
                    help="fault-phase time in total (split between the targets with --target both)")
    ap.add_argument("--seed", type=int, default=None, help="default: a random seed (printed)")
    ap.add_argument("--target", choices=["standalone", "cluster", "both"], default="both")
    ap.add_argument("--stall-stacks", action="store_true",
                    help="when a topic gets no receipt for 15 s, also save the brokers' thread stacks (gdb)")
    ap.add_argument("--workdir", default=None, help="where data, logs and histories go (default: a temp dir, kept)")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    targets = ["standalone", "cluster"] if args.target == "both" else [args.target]
    fault_seconds = args.minutes * 60 / len(targets)
    root = Path(args.workdir or tempfile.mkdtemp(prefix=f"chaos-{seed}-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"chaos: seed={seed} targets={targets} fault phase {fault_seconds:.0f}s each; files in {root}", flush=True)

    def log(line):
        print(line, flush=True)

    results = []
    for name in targets:
        run = run_standalone if name == "standalone" else run_cluster
        summary = run(seed, fault_seconds, root / name, log=log, stall_stacks=args.stall_stacks)
        log(short_summary(summary))
        if summary["violations"]:
            log(format_violations(summary))
        results.append(summary)
    total_violations = sum(len(s["violations"]) for s in results)
    final = {
        "seed": seed,
        "minutes": args.minutes,
        "workdir": str(root),
        "violations": total_violations,
        "targets": [{k: s[k] for k in ("target", "elapsed_s", "operations", "faults", "faults_total", "liveness_s",
                                      "stalls", "stats")} | {"violations": [{k: v[k] for k in ("rule", "detail")}
                                                                  for v in s["violations"]]}
                    for s in results],
    }
    print(json.dumps(final, indent=1, default=str), flush=True)
    return 1 if total_violations else 0


if __name__ == "__main__":
    sys.exit(main())
