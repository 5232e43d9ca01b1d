"""Small helpers shared by the integration tests (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import threading
import time

import pulsar

# How long to wait for a message that must arrive.
RECEIVE_TIMEOUT_MS = 10_000
# How long to wait before concluding that no (further) message is coming. A negative check can only
# be a bounded wait; every such check in the suite is paired with a positive check that passes.
QUIET_MS = 1_500


def mid(message_id) -> tuple[int, int, int, int]:
    """(ledger, entry, partition, batch_index) of a _pulsar.MessageId (which is not hashable)."""
    return (message_id.ledger_id(), message_id.entry_id(), message_id.partition(), message_id.batch_index())


def entry_of(message_id) -> tuple[int, int]:
    return (message_id.ledger_id(), message_id.entry_id())


def receive_n(consumer, n: int, timeout_ms: int = RECEIVE_TIMEOUT_MS, ack: bool = False) -> list:
    """Receive exactly n messages (each within timeout_ms). Fails with how many arrived."""
    out = []
    for i in range(n):
        try:
            msg = consumer.receive(timeout_millis=timeout_ms)
        except pulsar.Timeout:
            raise AssertionError(
                f"only {i} of {n} messages received; got {[m.data()[:40] for m in out][-5:]} last") from None
        if ack:
            consumer.acknowledge(msg)
        out.append(msg)
    return out


def read_n(reader, n: int, timeout_ms: int = RECEIVE_TIMEOUT_MS) -> list:
    out = []
    for i in range(n):
        try:
            out.append(reader.read_next(timeout_millis=timeout_ms))
        except pulsar.Timeout:
            raise AssertionError(f"reader got only {i} of {n} messages") from None
    return out


def assert_no_more(consumer, quiet_ms: int = QUIET_MS) -> None:
    """Assert that no further message arrives within quiet_ms."""
    try:
        msg = consumer.receive(timeout_millis=quiet_ms)
    except pulsar.Timeout:
        return
    raise AssertionError(f"unexpected extra message {msg.data()[:60]!r} id={mid(msg.message_id())}")


def assert_reader_no_more(reader, quiet_ms: int = QUIET_MS) -> None:
    try:
        msg = reader.read_next(timeout_millis=quiet_ms)
    except pulsar.Timeout:
        return
    raise AssertionError(f"unexpected extra message {msg.data()[:60]!r} id={mid(msg.message_id())}")


def drain_reader(reader, limit: int = 100_000, timeout_ms: int = RECEIVE_TIMEOUT_MS) -> list[bytes]:
    """The issue's loop: while has_message_available(): read_next(). Bounded by `limit`."""
    out = []
    while reader.has_message_available():
        if len(out) >= limit:
            raise AssertionError(f"has_message_available() still True after {limit} messages")
        out.append(reader.read_next(timeout_millis=timeout_ms).data())
    return out


def drain_consumer(consumer, limit: int, quiet_ms: int = QUIET_MS, ack: bool = False) -> list:
    """Receive until nothing arrives for quiet_ms; fails if more than `limit` arrive."""
    out = []
    while True:
        try:
            msg = consumer.receive(timeout_millis=quiet_ms)
        except pulsar.Timeout:
            return out
        if ack:
            consumer.acknowledge(msg)
        out.append(msg)
        if len(out) > limit:
            raise AssertionError(f"more than {limit} messages received")


class SendTracker:
    """Collects send_async callbacks: tracker.callback_for(i) -> callback recording (i, result, id)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.results: dict[int, tuple] = {}
        self.ok_count = 0
        self.done = threading.Condition(self.lock)

    def callback_for(self, i: int):
        def callback(res, msg_id):
            # Must never raise: an exception here terminates the process.
            try:
                with self.lock:
                    self.results[i] = (res, msg_id)
                    if res == pulsar.Result.Ok:
                        self.ok_count += 1
                    self.done.notify_all()
            except BaseException:  # pragma: no cover
                pass
        return callback

    def wait_for(self, count: int, timeout_s: float) -> bool:
        """Wait until `count` callbacks (any result) have arrived."""
        deadline = time.monotonic() + timeout_s
        with self.lock:
            while len(self.results) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.done.wait(remaining)
            return True

    def wait_for_ok(self, count: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self.lock:
            while self.ok_count < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.done.wait(remaining)
            return True

    def failures(self) -> dict[int, object]:
        with self.lock:
            return {i: r for i, (r, _) in self.results.items() if r != pulsar.Result.Ok}

    def ok_ids(self) -> dict[int, object]:
        with self.lock:
            return {i: m for i, (r, m) in self.results.items() if r == pulsar.Result.Ok}


def now_ms() -> int:
    return int(time.time() * 1000)


def wait_until_clock_passes(ts_ms: int, timeout_s: float = 5.0) -> None:
    """Block until the wall clock (ms) is at least ts_ms. Used to separate publish times, not to assert."""
    deadline = time.monotonic() + timeout_s
    while now_ms() < ts_ms:
        if time.monotonic() > deadline:
            raise AssertionError("wall clock did not advance")
        time.sleep(0.002)
