"""Issue 6: `magnetar client produce|consume|read` (MagnetarClient) against the real broker, checked
against the official pulsar-client 3.13.0 in both directions: every compression codec, batching,
keys and properties, partitioned topics (keys land on the partition the official client picks),
readers, a producer that keeps going while its topic is unloaded and the broker restarts, the send
timeout and blockIfQueueFull, a first creation that retries until the broker is up, and seeks by
publish time (also on every partition of a partitioned consumer).

The tool prints one line per receipt on stdout, `ledger:entry:partition:batchIndex<TAB>index`, and
one line per received message, `id<TAB>key<TAB>payload`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time

import pulsar
import pytest

from admin_rest import admin, create_partitioned_topic, topic_path
from conftest import magnetar_binary
from helpers import now_ms, receive_n, wait_until_clock_passes

TOOL_TIMEOUT_S = 60
CODECS = {
    "none": pulsar.CompressionType.NONE,
    "lz4": pulsar.CompressionType.LZ4,
    "zlib": pulsar.CompressionType.ZLib,
    "zstd": pulsar.CompressionType.ZSTD,
    "snappy": pulsar.CompressionType.SNAPPY,
}


def tool(broker, *args: str, timeout: float = TOOL_TIMEOUT_S) -> list[str]:
    cmd = [str(magnetar_binary()), "client", *args, "--url", broker.url, "--log-level", "warning"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc.stdout.splitlines()


def received(lines: list[str]) -> list[tuple[str, str, str]]:
    """(id, key, payload) of each `magnetar client consume|read` line."""
    return [tuple(line.split("\t", 2)) for line in lines]


@pytest.mark.parametrize("batch", [0, 5])
@pytest.mark.parametrize("codec", list(CODECS))
def test_swift_producer_each_codec_to_python(broker, client, topic, codec, batch):
    t = topic("codec")
    consumer = client.subscribe(t, "py", initial_position=pulsar.InitialPosition.Earliest)
    payload = "payload-%d-" + "abc" * 50  # compressible
    # A long batch delay: batches close on their size (5) only, and the last one on the final flush,
    # however slowly a loaded machine runs the sends (the default 10 ms could close one early).
    lines = tool(broker, "produce", t, "-m", payload, "-n", "12", "--key", "key-%d", "-p", "origin=swift",
                 "--compression", codec, "--batch", str(batch), "--batch-delay-ms", "10000")
    assert len(lines) == 12
    ids = [line.split("\t")[0] for line in lines]
    assert all(i.split(":")[3] == ("-1" if batch == 0 else str(n % 5)) for n, i in enumerate(ids)), ids
    messages = receive_n(consumer, 12)
    assert [m.data().decode() for m in messages] == [payload.replace("%d", str(i)) for i in range(12)]
    assert [m.partition_key() for m in messages] == [f"key-{i}" for i in range(12)]
    assert all(m.properties() == {"origin": "swift"} for m in messages)


@pytest.mark.parametrize("codec", list(CODECS))
def test_python_compressed_batches_to_swift_consume(broker, client, topic, codec):
    t = topic("pyc")
    # Create the subscription first, then publish batched and compressed.
    tool(broker, "consume", t, "-s", "swift", "-n", "1", "--timeout", "0.2")
    producer = client.create_producer(t, compression_type=CODECS[codec], batching_enabled=True,
                                      batching_max_messages=8, batching_max_publish_delay_ms=50)
    expected = [f"py-{i}-" + "xyz" * 40 for i in range(20)]
    for i, text in enumerate(expected):
        producer.send_async(text.encode(), None, partition_key=f"k{i}")
    producer.flush()
    lines = received(tool(broker, "consume", t, "-s", "swift", "-n", "20", "--timeout", "10"))
    assert [payload for _, _, payload in lines] == expected
    assert [key for _, key, _ in lines] == [f"k{i}" for i in range(20)]
    assert any(message_id.split(":")[3] != "-1" for message_id, _, _ in lines), "batched entries"


def test_partitioned_keys_land_where_the_official_client_puts_them(broker, client, topic):
    swift_topic, python_topic = topic("swift-part"), topic("py-part")
    create_partitioned_topic(broker, swift_topic, 5)
    create_partitioned_topic(broker, python_topic, 5)
    keys = [f"key-{i}" for i in range(40)]

    py_producer = client.create_producer(python_topic, batching_enabled=False)
    python_partition = {k: py_producer.send(b"x", partition_key=k).partition() for k in keys}
    assert len(set(python_partition.values())) > 1

    lines = tool(broker, "produce", swift_topic, "-m", "v-%d", "-n", "40", "--key", "key-%d")
    swift_partition = {f"key-{int(index)}": int(message_id.split(":")[2])
                       for message_id, index in (line.split("\t") for line in lines)}
    assert swift_partition == python_partition

    # Each partition, read by the official client, holds exactly the keys routed to it.
    for p in range(5):
        consumer = client.subscribe(f"{swift_topic}-partition-{p}", "check",
                                    initial_position=pulsar.InitialPosition.Earliest)
        want = sorted(k for k in keys if python_partition[k] == p)
        got = receive_n(consumer, len(want)) if want else []
        assert sorted(m.partition_key() for m in got) == want
        consumer.close()

    # The Swift consumer of the partitioned topic merges every partition.
    merged = received(tool(broker, "consume", swift_topic, "-s", "merged", "--earliest", "-n", "40", "--timeout", "10"))
    assert sorted(payload for _, _, payload in merged) == sorted(f"v-{i}" for i in range(40))
    assert {int(message_id.split(":")[2]) for message_id, _, _ in merged} == set(python_partition.values())


def test_keyless_round_robin_spreads_over_partitions(broker, client, topic):
    t = topic("rr")
    create_partitioned_topic(broker, t, 3)
    lines = tool(broker, "produce", t, "-m", "m-%d", "-n", "9")
    assert sorted(int(line.split("\t")[0].split(":")[2]) for line in lines) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_reader_reads_everything_from_earliest_and_from_an_id(broker, client, topic):
    t = topic("reader")
    producer = client.create_producer(t, batching_enabled=True, batching_max_messages=4,
                                      batching_max_publish_delay_ms=20)
    for i in range(10):
        producer.send_async(f"r-{i}".encode(), None)
    producer.flush()
    plain = client.create_producer(t, batching_enabled=False)
    ids = [plain.send(f"s-{i}".encode()) for i in range(3)]
    everything = [f"r-{i}" for i in range(10)] + ["s-0", "s-1", "s-2"]

    lines = received(tool(broker, "read", t, "--start", "earliest"))
    assert [payload for _, _, payload in lines] == everything

    start = f"{ids[0].ledger_id()}:{ids[0].entry_id()}"
    assert [p for _, _, p in received(tool(broker, "read", t, "--start", start))] == ["s-1", "s-2"]
    assert [p for _, _, p in received(tool(broker, "read", t, "--start", start, "--inclusive"))] == ["s-0", "s-1", "s-2"]
    assert received(tool(broker, "read", t, "--start", "latest")) == []


def test_producer_survives_unload_and_broker_restart(fresh_broker, make_client, topic):
    t = topic("reconnect")
    total = 3000
    cmd = [str(magnetar_binary()), "client", "produce", t, "-m", "msg-%d", "-n", str(total), "--rate", "600",
           "--url", fresh_broker.url, "--log-level", "info"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: dict[str, str] = {}
    readers = [threading.Thread(target=lambda name=name, stream=stream: out.__setitem__(name, stream.read()))
               for name, stream in (("stdout", proc.stdout), ("stderr", proc.stderr))]
    for r in readers:
        r.start()
    try:
        time.sleep(1.0)
        admin(fresh_broker, "PUT", f"/admin/v2/{topic_path(t)}/unload")  # CLOSE_PRODUCER: re-lookup, re-register
        time.sleep(1.0)
        fresh_broker.restart()  # the connection drops: reconnect with backoff, resend what was pending
        proc.wait(timeout=TOOL_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
        for r in readers:
            r.join()
    assert proc.returncode == 0, f"exit {proc.returncode}\nstderr:\n{out['stderr'][-4000:]}"
    receipted = {int(line.split("\t")[1]) for line in out["stdout"].splitlines()}
    assert receipted == set(range(total)), "every message got a receipt"
    assert "client.producer.reconnected" in out["stderr"]

    consumer = make_client(fresh_broker).subscribe(t, "after", initial_position=pulsar.InitialPosition.Earliest,
                                                   receiver_queue_size=5000)
    seen = set()
    while True:
        try:
            seen.add(consumer.receive(timeout_millis=2000).data().decode())
        except pulsar.Timeout:
            break
    assert {f"msg-{i}" for i in receipted} <= seen


def test_consumer_survives_unload(broker, client, topic):
    t = topic("consumer-reconnect")
    tool(broker, "consume", t, "-s", "sub", "-n", "1", "--timeout", "0.2")  # create the subscription
    producer = client.create_producer(t, batching_enabled=False)
    cmd = [str(magnetar_binary()), "client", "consume", t, "-s", "sub", "-n", "60", "--timeout", "20",
           "--url", broker.url, "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for i in range(30):
        producer.send(f"c-{i}".encode())
    time.sleep(0.5)
    admin(broker, "PUT", f"/admin/v2/{topic_path(t)}/unload")
    producer = client.create_producer(t, batching_enabled=False)
    for i in range(30, 60):
        producer.send(f"c-{i}".encode())
    stdout, stderr = proc.communicate(timeout=TOOL_TIMEOUT_S)
    assert proc.returncode == 0, stderr[-3000:]
    payloads = [payload for _, _, payload in received(stdout.splitlines())]
    assert set(payloads) == {f"c-{i}" for i in range(60)}


def test_consume_with_seek(broker, client, topic):
    t = topic("seek")
    tool(broker, "consume", t, "-s", "sub", "-n", "1", "--timeout", "0.2")
    producer = client.create_producer(t, batching_enabled=False)
    ids = [producer.send(f"s-{i}".encode()) for i in range(5)]
    first = received(tool(broker, "consume", t, "-s", "sub", "-n", "5", "--timeout", "10"))
    assert [p for _, _, p in first] == [f"s-{i}" for i in range(5)]
    # Everything is acknowledged; seeking back re-delivers.
    again = received(tool(broker, "consume", t, "-s", "sub", "-n", "5", "--timeout", "10", "--seek", "earliest"))
    assert [p for _, _, p in again] == [f"s-{i}" for i in range(5)]
    after = f"{ids[2].ledger_id()}:{ids[2].entry_id()}"
    tail = received(tool(broker, "consume", t, "-s", "sub", "-n", "2", "--timeout", "10", "--seek", after))
    assert [p for _, _, p in tail] == ["s-3", "s-4"]


def test_producer_follows_its_topic_to_another_broker(tmp_path, make_client):
    """Cluster mode: the owner broker is killed mid-stream; the topic moves to the survivor (after the
    owner's session expires) and the Swift producer re-looks it up there and resends what was pending."""
    from cluster import LocalCluster

    cluster = LocalCluster(tmp_path)
    cluster.start()
    try:
        t = f"persistent://public/default/swift-move-{time.monotonic_ns() % 10**9}"
        python = make_client(cluster.service_url)
        python.subscribe(t, "sub").close()  # create the topic and the subscription
        owner = cluster.owner(t)
        total = 2000
        cmd = [str(magnetar_binary()), "client", "produce", t, "-m", "%d", "-n", str(total), "--rate", "400",
               "--url", cluster.service_url, "--log-level", "info"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        owner.kill9()
        stdout, stderr = proc.communicate(timeout=90)
        assert proc.returncode == 0, f"exit {proc.returncode}\nstderr:\n{stderr[-4000:]}"
        receipted = {int(line.split("\t")[1]) for line in stdout.splitlines()}
        assert receipted == set(range(total))
        survivor = next(b for b in cluster.brokers if b is not owner)
        assert cluster.owner(t, via=survivor) is survivor
        consumer = python.subscribe(t, "sub", receiver_queue_size=5000)
        seen = set()
        while True:
            try:
                seen.add(int(consumer.receive(timeout_millis=3000).data()))
            except pulsar.Timeout:
                break
        assert receipted <= seen
    finally:
        cluster.close()


def test_reader_resumes_after_an_unload_without_duplicates(broker, client, topic):
    t = topic("reader-unload")
    producer = client.create_producer(t, batching_enabled=False)
    for i in range(5):
        producer.send(f"u-{i}".encode())
    cmd = [str(magnetar_binary()), "client", "read", t, "--start", "earliest", "-n", "8", "--timeout", "15",
           "--url", broker.url, "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # it has read u-0..u-4 and waits
    admin(broker, "PUT", f"/admin/v2/{topic_path(t)}/unload")  # CLOSE_CONSUMER: re-subscribe after u-4
    producer = client.create_producer(t, batching_enabled=False)
    for i in range(5, 8):
        producer.send(f"u-{i}".encode())
    stdout, stderr = proc.communicate(timeout=TOOL_TIMEOUT_S)
    assert proc.returncode == 0, stderr[-3000:]
    assert [p for _, _, p in received(stdout.splitlines())] == [f"u-{i}" for i in range(8)]


def _indices(lines: list[str]) -> list[int]:
    """The message index of each `produce` receipt line."""
    return [int(line.split("\t")[1]) for line in lines]


def test_send_timeout_while_connected_fails_only_what_waited_too_long(fresh_broker, topic):
    """The broker is frozen (SIGSTOP): the connection stays open but no receipt comes. Messages
    waiting longer than --send-timeout-ms fail with `timeout`, without a reconnection; once the broker
    runs again the late receipts of those are ignored and the later messages succeed."""
    t = topic("send-timeout")
    cmd = [str(magnetar_binary()), "client", "produce", t, "-m", "st-%d", "-n", "12", "--rate", "2",
           "--send-timeout-ms", "1500", "--url", fresh_broker.url, "--log-level", "info"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid = fresh_broker.proc.pid
    try:
        first = proc.stdout.readline()  # the receipt of message 0: the producer is registered
        assert _indices([first]) == [0], first
        os.kill(pid, signal.SIGSTOP)
        time.sleep(3.5)
    finally:
        os.kill(pid, signal.SIGCONT)
    rest, stderr = proc.communicate(timeout=TOOL_TIMEOUT_S)
    assert proc.returncode == 1, stderr[-3000:]
    receipted = {0, *_indices(rest.splitlines())}
    failed = {int(m.group(1)) for m in re.finditer(r"message (\d+) failed: timeout", stderr)}
    assert failed, stderr[-3000:]
    assert not receipted & failed and receipted | failed == set(range(12)), (receipted, failed)
    assert 11 in receipted, "the producer kept its connection and goes on"
    assert "client.producer.send-timeout" in stderr
    assert "client.producer.disconnected" not in stderr and "protocol-violation" not in stderr


def test_block_if_queue_full_waits_for_room(broker, client, topic):
    t = topic("block")
    consumer = client.subscribe(t, "py", initial_position=pulsar.InitialPosition.Earliest)
    lines = tool(broker, "produce", t, "-m", "b-%d", "-n", "300", "--max-pending-messages", "1", "--block-if-queue-full")
    assert _indices(lines) == list(range(300)), "every message, in order"
    assert [m.data().decode() for m in receive_n(consumer, 300)] == [f"b-{i}" for i in range(300)]


def test_full_queue_fails_sends_without_block_if_queue_full(broker, topic):
    t = topic("queue-full")
    cmd = [str(magnetar_binary()), "client", "produce", t, "-m", "f-%d", "-n", "2000", "--max-pending-messages", "1",
           "--url", broker.url, "--log-level", "warning"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    assert proc.returncode == 1
    receipted = set(_indices(proc.stdout.splitlines()))
    refused = {int(m.group(1)) for m in re.finditer(r"message (\d+) failed: producerQueueFull", proc.stderr)}
    assert refused and 0 in receipted
    assert not receipted & refused and receipted | refused == set(range(2000))


def test_producer_and_consumer_created_before_the_broker_is_up(fresh_broker, topic):
    """The first createProducer/subscribe retries a refused connection until the broker is there."""
    t = topic("early")
    fresh_broker.stop()
    base = ["--url", fresh_broker.url, "--log-level", "warning"]
    consume = subprocess.Popen([str(magnetar_binary()), "client", "consume", t, "-s", "early", "--earliest", "-n", "3",
                                "--timeout", "30", *base], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    produce = subprocess.Popen([str(magnetar_binary()), "client", "produce", t, "-m", "e-%d", "-n", "3", *base],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)  # both are retrying (connection refused)
        assert produce.poll() is None and consume.poll() is None
        fresh_broker.start()
        out, err = produce.communicate(timeout=TOOL_TIMEOUT_S)
        assert produce.returncode == 0, err[-3000:]
        assert _indices(out.splitlines()) == [0, 1, 2]
        out, err = consume.communicate(timeout=TOOL_TIMEOUT_S)
        assert consume.returncode == 0, err[-3000:]
        assert [p for _, _, p in received(out.splitlines())] == ["e-0", "e-1", "e-2"]
    finally:
        for proc in (produce, consume):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_exclusive_consumer_busy_fails_without_retrying(broker, client, topic):
    t = topic("busy")
    holder = client.subscribe(t, "sub", consumer_type=pulsar.ConsumerType.Exclusive)
    cmd = [str(magnetar_binary()), "client", "consume", t, "-s", "sub", "-n", "1", "--timeout", "1",
           "--url", broker.url, "--log-level", "warning"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    assert proc.returncode != 0
    assert "consumerBusy" in proc.stderr and "gave up after" not in proc.stderr, proc.stderr[-3000:]
    holder.close()


def _publish_around_a_boundary(client, t: str, count: int, keys: bool = False) -> int:
    """Publishes early-0..early-<count-1>, then late-…: returns a publish time (ms) between the two."""
    probe = client.subscribe(t, "probe", initial_position=pulsar.InitialPosition.Earliest)
    producer = client.create_producer(t, batching_enabled=False)
    for i in range(count):
        producer.send(f"early-{i}".encode(), partition_key=f"k{i}" if keys else None)
    boundary = max(m.publish_timestamp() for m in receive_n(probe, count)) + 1
    probe.close()
    wait_until_clock_passes(boundary)
    for i in range(count):
        producer.send(f"late-{i}".encode(), partition_key=f"k{i}" if keys else None)
    producer.close()
    return boundary


def test_seek_by_publish_time_consumer_and_reader(broker, client, topic):
    t = topic("seek-time")
    tool(broker, "consume", t, "-s", "sub", "-n", "1", "--timeout", "0.2")  # the subscription, at the end
    boundary = _publish_around_a_boundary(client, t, 4)
    late = [f"late-{i}" for i in range(4)]
    everything = [f"early-{i}" for i in range(4)] + late

    got = received(tool(broker, "consume", t, "-s", "sub", "-n", "0", "--timeout", "2", "--seek-time", str(boundary)))
    assert [p for _, _, p in got] == late
    # Everything is acknowledged now; a time before the first message moves back to the start.
    again = received(tool(broker, "consume", t, "-s", "sub", "-n", "0", "--timeout", "2", "--seek-time", "0"))
    assert [p for _, _, p in again] == everything

    # Readers stop when caught up (hasMessageAvailable after the seek).
    read = received(tool(broker, "read", t, "--start", "latest", "--seek-time", str(boundary)))
    assert [p for _, _, p in read] == late
    assert received(tool(broker, "read", t, "--start", "earliest", "--seek-time", str(now_ms() + 3_600_000))) == []


def test_partitioned_consumer_seeks_every_partition(broker, client, topic):
    t = topic("seek-part")
    create_partitioned_topic(broker, t, 3)
    tool(broker, "consume", t, "-s", "sub", "-n", "1", "--timeout", "0.2")
    boundary = _publish_around_a_boundary(client, t, 9, keys=True)

    late = received(tool(broker, "consume", t, "-s", "sub", "-n", "0", "--timeout", "2", "--seek-time", str(boundary)))
    assert sorted(p for _, _, p in late) == sorted(f"late-{i}" for i in range(9))
    assert len({message_id.split(":")[2] for message_id, _, _ in late}) > 1, "from several partitions"
    everything = received(tool(broker, "consume", t, "-s", "sub", "-n", "0", "--timeout", "2", "--seek", "earliest"))
    assert sorted(p for _, _, p in everything) == sorted([f"early-{i}" for i in range(9)] + [f"late-{i}" for i in range(9)])
