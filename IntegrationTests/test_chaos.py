"""Issue 12, the fault-history checker in CI (chaos.py; rules in docs/RELIABILITY.md).

- `test_checker_*`: the checker itself on small hand-written histories (no broker): each rule fires
  on a history that breaks it and stays quiet on the legitimate look-alikes (redelivery of unacked
  messages, after a seek or a fault; duplicates without deduplication; no order on Shared).
- `test_chaos_standalone` / `test_chaos_cluster`: a seeded randomized workload for
  MAGNETAR_CHAOS_SECONDS (default 40) of faults against a standalone broker (kill -9, SIGSTOP,
  restart and, as root, a full disk: its data directory is on a tmpfs), then against a local
  cluster (etcd + 3 storage nodes + 2 brokers), each followed by a drain; asserts 0 violations and
  prints a summary. The seed is random unless MAGNETAR_CHAOS_SEED is set; a failure prints it and
  the command that replays the same fault schedule (`scripts/chaos --seed ...`).

Bounds: every worker loop has the phase deadline and an iteration cap, the drain has the liveness
bound (45 s here), and conftest's per-test watchdog (MAGNETAR_TEST_TIMEOUT, 180 s) is the hard
limit: a test refuses to start if its fault phase cannot fit in it.
"""

from __future__ import annotations

import os
import random
import shutil

import pytest

import conftest
from chaos import (
    STANDALONE_DISK_SIZE, DiskFiller, LoopbackBroker, StandaloneTarget, ClusterTarget, TopicSpec, check,
    format_violations, mount_tmpfs, run_chaos, short_summary, unmount,
)

FAULT_SECONDS = float(os.environ.get("MAGNETAR_CHAOS_SECONDS", "40"))
LIVENESS_BOUND_S = 45.0
# Setup, the last fault's hold, stopping the workers, the drain and the teardown, at most.
OVERHEAD_S = {"standalone": 95.0, "cluster": 110.0}


def chaos_seed() -> int:
    env = os.environ.get("MAGNETAR_CHAOS_SEED")
    return int(env) if env else random.SystemRandom().randrange(1, 2**31)


def require_time(target: str) -> None:
    needed = FAULT_SECONDS + OVERHEAD_S[target]
    if needed > conftest.TEST_TIMEOUT_S:
        pytest.fail(f"MAGNETAR_CHAOS_SECONDS={FAULT_SECONDS:.0f} needs up to {needed:.0f}s: raise "
                    f"MAGNETAR_TEST_TIMEOUT (now {conftest.TEST_TIMEOUT_S:.0f}s)", pytrace=False)


def report(capsys, summary: dict) -> None:
    with capsys.disabled():
        print("\n" + short_summary(summary))
        print(f"  history: {summary['history']}")
    assert not summary["violations"], (
        f"{len(summary['violations'])} violations, seed {summary['seed']}:\n" + format_violations(summary))


# ------------------------------------------------------------------------------------------------
# the runs
# ------------------------------------------------------------------------------------------------

@pytest.fixture
def loopback_broker(tmp_path):
    """The standalone broker, its data directory on a tmpfs the `diskfull` fault can fill (as root;
    otherwise on the test's directory, without disk faults)."""
    disk_root = tmp_path / "disk"
    mounted = mount_tmpfs(disk_root, STANDALONE_DISK_SIZE)
    b = LoopbackBroker((disk_root if mounted else tmp_path) / "data", tmp_path / "magnetar.log")
    b.disk = DiskFiller(disk_root) if mounted else None
    try:
        b.start()
        yield b
        b.close()
    finally:
        if mounted:
            unmount(disk_root)


@pytest.fixture
def chaos_cluster(tmp_path):
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed (apt-get install etcd-server)")
    from cluster import LocalCluster
    c = LocalCluster(tmp_path / "cluster")
    c.start()
    yield c
    c.close()


def test_chaos_standalone(loopback_broker, tmp_path, capsys):
    require_time("standalone")
    summary = run_chaos(StandaloneTarget(loopback_broker, loopback_broker.disk), chaos_seed(), FAULT_SECONDS, tmp_path / "chaos",
                        log=lambda line: None, liveness_bound_s=LIVENESS_BOUND_S)
    report(capsys, summary)


def test_chaos_cluster(chaos_cluster, tmp_path, capsys):
    require_time("cluster")
    summary = run_chaos(ClusterTarget(chaos_cluster), chaos_seed(), FAULT_SECONDS, tmp_path / "chaos",
                        log=lambda line: None, liveness_bound_s=LIVENESS_BOUND_S)
    report(capsys, summary)


# ------------------------------------------------------------------------------------------------
# the checker on hand-written histories
# ------------------------------------------------------------------------------------------------

ORD = "persistent://public/chaos-t/ordered"
DD = "persistent://public/chaos-dedup-t/dedup"
TOPICS = [TopicSpec("ord", ORD, False, {"excl": "Exclusive", "sh": "Shared"}),
          TopicSpec("dd", DD, True, {"dd": "Exclusive"})]


class Hist:
    """A history built by hand: every event 10 ms after the previous one (or `at`)."""

    def __init__(self):
        self.events: list[dict] = []
        self.t = 0.0
        self.ids = {}

    def ev(self, at=None, **e) -> dict:
        self.t = at if at is not None else self.t + 0.01
        e["t"] = self.t
        e["i"] = len(self.events)
        self.events.append(e)
        return e

    def id_of(self, value, copy=0):
        return self.ids.setdefault((value, copy), [1, len(self.ids), -1, -1])

    def send(self, value, topic=ORD, key="k0", ok=True):
        self.ev(proc=value.split(":")[0], op="send", type="invoke", topic=topic, value=value, key=key)
        if ok:
            self.ev(proc=value.split(":")[0], op="send", type="ok", topic=topic, value=value, key=key,
                    id=self.id_of(value), dup=False)

    def subscribe(self, proc, sub, topic=ORD, drain=False):
        self.ev(proc=proc, op="subscribe", type="invoke", topic=topic, sub=sub, drain=drain)
        self.ev(proc=proc, op="subscribe", type="ok", topic=topic, sub=sub)

    def recv(self, proc, sub, value, topic=ORD, key="k0", copy=0):
        self.ev(proc=proc, op="recv", sub=sub, topic=topic, value=value, key=key, msg_key=key,
                id=self.id_of(value, copy), redelivery=0)

    def ack(self, proc, sub, value, copy=0, connected=True):
        self.ev(proc=proc, op="ack", sub=sub, id=self.id_of(value, copy), value=value, connected=connected)

    def close(self, proc, sub, connected=True, ok=True):
        self.ev(proc=proc, op="close", type="invoke", sub=sub, connected=connected)
        self.ev(proc=proc, op="close", type="ok" if ok else "info", sub=sub)

    def consume(self, proc, sub, values, topic=ORD, ack=True):
        self.subscribe(proc, sub, topic)
        for v in values:
            self.recv(proc, sub, v, topic)
            if ack:
                self.ack(proc, sub, v)
        self.close(proc, sub)

    def read_all(self, proc, topic, values):
        self.ev(proc=proc, op="reader-open", type="invoke", topic=topic, start="earliest", final=True)
        for v in values:
            self.ev(proc=proc, op="read", topic=topic, value=v, key="k0", id=self.id_of(v))

    def finish(self, excl=True, sh=True, dd=True, reads=True):
        """Drains that see nothing new and final readers that see every receipted value once."""
        for sub, topic, on in (("excl", ORD, excl), ("sh", ORD, sh), ("dd", DD, dd)):
            if on:
                self.subscribe(f"{sub}#drain", sub, topic, drain=True)
                self.close(f"{sub}#drain", sub)
        if reads:
            for topic, tag in ((ORD, "ord"), (DD, "dd")):
                values = [e["value"] for e in self.events if e["op"] == "send" and e["type"] == "ok"
                          and e["topic"] == topic]
                self.read_all(f"final-reader-{tag}", topic, list(dict.fromkeys(values)))
        return self.events


def rules(events, disturbance_s=3.0) -> list[str]:
    violations, _ = check(events, TOPICS, disturbance_s)
    return sorted({v["rule"] for v in violations})


def base(h: Hist, n=3):
    for i in range(1, n + 1):
        h.send(f"p0:{i}")
    h.send("d0:1", topic=DD)


def test_checker_clean_history_passes():
    h = Hist()
    base(h)
    h.consume("excl#1", "excl", ["p0:1", "p0:2", "p0:3"])
    h.consume("sh#1", "sh", ["p0:2", "p0:1", "p0:3"])  # Shared: any order
    h.consume("dd#1", "dd", ["d0:1"], topic=DD)
    assert rules(h.finish()) == []


def test_checker_loss():
    h = Hist()
    base(h)
    h.consume("excl#1", "excl", ["p0:1", "p0:3"])
    h.consume("sh#1", "sh", ["p0:1", "p0:2", "p0:3"])
    h.consume("dd#1", "dd", ["d0:1"], topic=DD)
    assert rules(h.finish()) == ["lost"]


def test_checker_unacked_message_must_come_back():
    h = Hist()
    base(h)
    h.consume("excl#1", "excl", ["p0:1", "p0:2", "p0:3"], ack=False)
    h.consume("sh#1", "sh", ["p0:1", "p0:2", "p0:3"])
    h.consume("dd#1", "dd", ["d0:1"], topic=DD)
    assert rules(h.finish()) == ["lost-unacked"]
    # ... and a redelivery of it (unacknowledged, so allowed) settles it
    h = Hist()
    base(h)
    h.consume("excl#1", "excl", ["p0:1", "p0:2", "p0:3"], ack=False)
    h.consume("excl#2", "excl", ["p0:1", "p0:2", "p0:3"])
    h.consume("sh#1", "sh", ["p0:1", "p0:2", "p0:3"])
    h.consume("dd#1", "dd", ["d0:1"], topic=DD)
    assert rules(h.finish()) == []


def redelivery_history(between=None, ack_connected=True, close_connected=True):
    h = Hist()
    base(h)
    h.consume("sh#1", "sh", ["p0:1", "p0:2", "p0:3"])
    h.consume("dd#1", "dd", ["d0:1"], topic=DD)
    h.subscribe("excl#1", "excl")
    for v in ("p0:1", "p0:2", "p0:3"):
        h.recv("excl#1", "excl", v)
        h.ack("excl#1", "excl", v, connected=ack_connected)
    h.close("excl#1", "excl", connected=close_connected)
    if between:
        between(h)
    h.t += 20
    h.consume("excl#2", "excl", ["p0:2"])  # acknowledged and committed before: must not come again
    return h.finish()


def test_checker_redelivery_after_committed_ack():
    assert rules(redelivery_history()) == ["redelivered-after-ack"]


def test_checker_redelivery_excused_by_seek_fault_or_disconnect():
    def seek(h):
        h.ev(proc="excl#9", op="seek", type="invoke", sub="excl", to="earliest")
        h.ev(proc="excl#9", op="seek", type="ok", sub="excl")

    def fault_right_after_ack(h):
        # a fault that started 0.5 s after the close: within its 1 s lead the ack is not committed
        h.ev(at=h.t + 0.5, proc="nemesis", op="fault", type="invoke", kind="kill9", target="broker")
        h.ev(proc="nemesis", op="fault", type="ok", kind="kill9", target="broker")

    assert rules(redelivery_history(between=seek)) == []
    assert rules(redelivery_history(between=fault_right_after_ack)) == []
    assert rules(redelivery_history(ack_connected=False)) == []
    assert rules(redelivery_history(close_connected=False)) == []


def order_history(sub: str, earlier_elsewhere: bool):
    h = Hist()
    base(h)
    other = "sh" if sub == "excl" else "excl"
    h.consume(f"{other}#1", other, ["p0:1", "p0:2", "p0:3"])
    h.consume("dd#1", "dd", ["d0:1"], topic=DD)
    if earlier_elsewhere:
        h.consume(f"{sub}#0", sub, ["p0:2"], ack=False)
    h.consume(f"{sub}#1", sub, ["p0:1", "p0:3", "p0:2"])
    return h.finish()


def test_checker_order():
    assert rules(order_history("excl", earlier_elsewhere=False)) == ["order"]
    # p0:2 was delivered (and not acknowledged) before: its redelivery may come late
    assert rules(order_history("excl", earlier_elsewhere=True)) == []
    # Shared: no order
    assert rules(order_history("sh", earlier_elsewhere=False)) == []


def test_checker_duplicates_only_with_deduplication():
    h = Hist()
    base(h)
    h.send("d0:2", topic=DD)
    h.consume("excl#1", "excl", ["p0:1", "p0:2", "p0:3"])
    h.subscribe("excl#2", "excl")
    h.recv("excl#2", "excl", "p0:3", copy=1)  # a second copy (resent): allowed without deduplication
    h.ack("excl#2", "excl", "p0:3", copy=1)
    h.close("excl#2", "excl")
    h.consume("sh#1", "sh", ["p0:1", "p0:2", "p0:3"])
    h.subscribe("dd#1", "dd", topic=DD)
    for v, copy in (("d0:1", 0), ("d0:2", 0), ("d0:2", 1)):
        h.recv("dd#1", "dd", v, topic=DD, copy=copy)
        h.ack("dd#1", "dd", v, copy=copy)
    h.close("dd#1", "dd")
    assert rules(h.finish()) == ["duplicate"]


def test_checker_reader_gap():
    h = Hist()
    base(h)
    h.consume("excl#1", "excl", ["p0:1", "p0:2", "p0:3"])
    h.consume("sh#1", "sh", ["p0:1", "p0:2", "p0:3"])
    h.consume("dd#1", "dd", ["d0:1"], topic=DD)
    events = h.finish(reads=False)
    # p0:2 was receipted before p0:3 was sent: a reader from the start cannot return p0:3 first
    h.read_all("final-reader-ord", ORD, ["p0:1", "p0:3", "p0:2"])
    h.read_all("final-reader-dd", DD, ["d0:1"])
    assert rules(events) == ["reader-gap"]
