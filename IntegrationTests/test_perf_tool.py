"""`magnetar perf` (the Swift client MagnetarClient inside) against the real broker.

The perf tool runs as a process; its JSON summary must count every message, and the official
pulsar-client must then read what the Swift client wrote: that proves the Swift client's SEND and
batch format (notes §2.1, §4.4). No timing assertions.
"""

from __future__ import annotations

import json
import subprocess

import pulsar

from conftest import magnetar_binary

PERF_TIMEOUT_S = 120


def run_perf(broker, mode: str, *args: str) -> dict:
    cmd = [str(magnetar_binary()), "perf", mode, "--url", broker.url, "--json", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PERF_TIMEOUT_S)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON summary on stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1])


def test_perf_produce_consume_e2e_and_python_reads_it(broker, client, topic):
    name = topic("perf")

    produced = run_perf(broker, "produce", "--topic", name, "--messages", "20000", "--size", "100", "--batch", "100")
    assert produced["messages_sent"] == 20000
    assert produced["messages_acked"] == 20000
    assert produced["send_errors"] == 0
    assert produced["publish_latency_ms"]["count"] == 20000

    consumed = run_perf(
        broker, "consume", "--topic", name, "--subscription", "perf-sub", "--initial-position", "earliest",
        "--messages", "20000")
    assert consumed["messages_received"] == 20000

    # The official client reads all of it, batch by batch, with the payload size we sent.
    consumer = client.subscribe(name, "python-reader", initial_position=pulsar.InitialPosition.Earliest,
                                receiver_queue_size=5000)
    count = 0
    batched = 0
    while count < 20000:
        msg = consumer.receive(timeout_millis=10_000)
        assert len(msg.data()) == 100
        if msg.message_id().batch_index() >= 0:
            batched += 1
        count += 1
        consumer.acknowledge(msg)
    assert batched == 20000
    try:
        extra = consumer.receive(timeout_millis=500)
        raise AssertionError(f"unexpected extra message {extra.message_id()}")
    except pulsar.Timeout:
        pass

    e2e = run_perf(broker, "e2e", "--topic", topic("perf-e2e"), "--messages", "3000", "--size", "64", "--batch", "10")
    assert e2e["messages_sent"] == 3000
    assert e2e["messages_acked"] == 3000
    assert e2e["messages_received"] == 3000
    assert e2e["end_to_end_latency_ms"]["count"] == 3000


def test_perf_produce_with_compression_is_readable_by_python(broker, client, topic):
    name = topic("perf-zstd")
    produced = run_perf(broker, "produce", "--topic", name, "--messages", "2000", "--size", "200", "--batch", "50",
                        "--compression", "zstd")
    assert produced["messages_acked"] == 2000
    consumer = client.subscribe(name, "python-reader", initial_position=pulsar.InitialPosition.Earliest,
                                receiver_queue_size=2000)
    for _ in range(2000):
        msg = consumer.receive(timeout_millis=10_000)
        assert len(msg.data()) == 200
        consumer.acknowledge(msg)


def test_perf_topics_one_producer_and_consumer_per_topic(broker, topic):
    """`perf topics` (what bench/scale-topics drives): every topic gets a producer and a consumer, and
    everything sent over all of them is acked and received."""
    prefix = topic("perf-topics", full=False)
    cmd = [str(magnetar_binary()), "perf", "topics", "--url", broker.url, "--topics", "30", "--topic-prefix", prefix,
           "--connections", "2", "--concurrency", "8", "--rate", "300", "--checkpoints", "10", "--hold", "0.5",
           "--duration", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PERF_TIMEOUT_S)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [(e["event"], e["topics"]) for e in events] == [("checkpoint", 10), ("created", 30), ("summary", 30)]
    summary = events[-1]
    assert summary["creation_errors"] == 0 and summary["send_errors"] == 0
    assert summary["sent"] > 0
    assert summary["acked"] == summary["sent"]
    assert summary["received"] == summary["acked"]
