"""Consumers that receive concurrently, one thread each (for the issue 3 subscription tests).

`Recorder` keeps one global, lock-ordered log of receive events `(consumer name, payload,
redelivery_count)`. A thread records a message *before* it acknowledges it, so for two consumers the
log order respects the broker's causality: a message the broker only dispatches after an earlier one
was acknowledged is always recorded after that earlier one.

Each `ConsumerThread` owns its consumer: only that thread receives, acknowledges and closes it.
pulsar-client releases the GIL while blocked in receive(), so the threads really run concurrently.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import pulsar

POLL_MS = 100


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.events: list[tuple[str, bytes, int]] = []  # (consumer, payload, redelivery_count)
        self.acked: dict[bytes, int] = {}  # payload -> number of acknowledgements

    def record(self, consumer: str, msg) -> None:
        with self.lock:
            self.events.append((consumer, msg.data(), msg.redelivery_count()))
            self.changed.notify_all()

    def record_ack(self, payload: bytes) -> None:
        with self.lock:
            self.acked[payload] = self.acked.get(payload, 0) + 1
            self.changed.notify_all()

    def received_count(self) -> int:
        with self.lock:
            return len(self.events)

    def distinct_acked(self) -> int:
        with self.lock:
            return len(self.acked)

    def wait(self, predicate: Callable[[], bool], timeout_s: float,
             threads: list["ConsumerThread"] = ()) -> bool:
        """Wait until predicate() (called under the lock) holds; give up early if a thread failed."""
        deadline = time.monotonic() + timeout_s
        with self.lock:
            while not predicate():
                if any(t.error is not None for t in threads):
                    return False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.changed.wait(min(remaining, 0.2))
            return True

    def snapshot(self) -> list[tuple[str, bytes, int]]:
        with self.lock:
            return list(self.events)


class ConsumerThread(threading.Thread):
    """Receive/record/ack loop for one consumer.

    `handler(thread, msg) -> bool`: called after the message was recorded; return True to acknowledge it
    (the default handler always acknowledges). It may call `thread.request_stop()`. On stop the thread
    closes its consumer (which flushes pending acknowledgements) unless `close_on_stop=False`.
    """

    def __init__(self, consumer, name: str, recorder: Recorder,
                 handler: Callable[["ConsumerThread", object], bool] | None = None,
                 per_message_delay_s: float = 0.0, close_on_stop: bool = True):
        super().__init__(name=f"consumer-{name}", daemon=True)
        self.consumer = consumer
        self.cname = name
        self.recorder = recorder
        self.handler = handler
        self.per_message_delay_s = per_message_delay_s
        self.close_on_stop = close_on_stop
        self.stop_requested = threading.Event()
        self.closed = threading.Event()
        self.error: BaseException | None = None
        self.received: list[bytes] = []
        self.acked: list[bytes] = []
        self.unacked: list[bytes] = []  # received but deliberately not acknowledged

    def request_stop(self) -> None:
        self.stop_requested.set()

    def run(self) -> None:
        try:
            while not self.stop_requested.is_set():
                try:
                    msg = self.consumer.receive(timeout_millis=POLL_MS)
                except pulsar.Timeout:
                    continue
                self.recorder.record(self.cname, msg)
                self.received.append(msg.data())
                if self.per_message_delay_s:
                    time.sleep(self.per_message_delay_s)
                ack = True if self.handler is None else self.handler(self, msg)
                if ack:
                    self.consumer.acknowledge(msg)
                    self.acked.append(msg.data())
                    self.recorder.record_ack(msg.data())
                else:
                    self.unacked.append(msg.data())
            if self.close_on_stop:
                self.consumer.close()
                self.closed.set()
        except BaseException as e:  # reported by stop_all / check
            self.error = e
            with self.recorder.lock:
                self.recorder.changed.notify_all()

    def check(self) -> None:
        if self.error is not None:
            raise AssertionError(f"consumer thread {self.cname} failed: {self.error!r}") from self.error


def stop_all(threads: list[ConsumerThread], timeout_s: float = 20.0) -> None:
    """Stop every thread, wait for them (bounded), and re-raise the first thread error."""
    for t in threads:
        t.request_stop()
    deadline = time.monotonic() + timeout_s
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = [t.cname for t in threads if t.is_alive()]
    for t in threads:
        t.check()
    assert not alive, f"consumer threads did not stop: {alive}"
