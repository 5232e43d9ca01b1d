"""Issue 12, fault 9: a corrupted entry must neither stall its subscription nor vanish.

The broker is stopped gracefully, one entry's payload is damaged on disk (one byte of it flipped
in every file that holds it: the entry log, and the journal if it is still there), and the broker
is started again. Dispatch then reads that entry a few times, gives up on it and goes on: a
consumer and a reader from the earliest get every other message; the bad entry is reported (admin
`internalStats` `unreadableEntries`, the `pulsar_ml_unreadable_entries` metric) and stays in the
backlog until the operator skips it. Before the fix, delivery stopped at the bad entry.
"""

from __future__ import annotations

from pathlib import Path

import pulsar
from prometheus_client.parser import text_string_to_metric_families

from admin_rest import admin, eventually, topic_path
from conftest import _NO_PROXY, close_quietly
from helpers import assert_no_more, read_n, receive_n

COUNT = 300
BAD = 150
# Unique in the data directory: found to damage exactly that entry.
MARKER = b"CORRUPT-ME-150"
SUBSCRIPTION = "after-corruption"


def payload(i: int) -> bytes:
    return MARKER if i == BAD else b"message-%03d" % i


def flip_marker_bytes(data_dir: Path) -> list[Path]:
    """Flips one byte inside MARKER in every file that holds it; returns those files."""
    damaged = []
    for path in sorted(data_dir.rglob("*")):
        if not path.is_file():
            continue
        data = bytearray(path.read_bytes())
        index = data.find(MARKER)
        if index < 0:
            continue
        while index >= 0:
            data[index + 8] ^= 0x20  # "CORRUPT-ME-150" -> "CORRUPT-mE-150"
            index = data.find(MARKER, index + 1)
        path.write_bytes(bytes(data))
        damaged.append(path)
    return damaged


def test_corrupted_entry_is_reported_skippable_and_does_not_stall_delivery(fresh_broker, make_client, topic):
    t = topic()
    path = f"/admin/v2/{topic_path(t)}"
    client = make_client(fresh_broker)
    producer = client.create_producer(t, batching_enabled=False)
    ids = [producer.send(payload(i)) for i in range(COUNT)]
    bad_entry = f"{ids[BAD].ledger_id()}:{ids[BAD].entry_id()}"
    close_quietly(client)
    fresh_broker.stop()

    damaged = flip_marker_bytes(fresh_broker.data_dir)
    assert any(p.name.startswith("entrylog-") for p in damaged), f"marker not found in an entry log: {damaged}"
    fresh_broker.start()

    expected = [payload(i) for i in range(COUNT) if i != BAD]
    client2 = make_client(fresh_broker)
    consumer = client2.subscribe(t, SUBSCRIPTION, initial_position=pulsar.InitialPosition.Earliest)
    got = receive_n(consumer, COUNT - 1, ack=True)
    assert [m.data() for m in got] == expected
    assert_no_more(consumer)
    reader = client2.create_reader(t, pulsar.MessageId.earliest)
    assert [m.data() for m in read_n(reader, COUNT - 1)] == expected

    # Reported, with its position.
    internal = admin(fresh_broker, "GET", f"{path}/internalStats")
    assert internal["unreadableEntries"] == [bad_entry]
    with _NO_PROXY.open(fresh_broker.http_url + "/metrics", timeout=10) as response:
        metrics = text_string_to_metric_families(response.read().decode())
    unreadable = [sample.value for family in metrics for sample in family.samples
                  if sample.name == "pulsar_ml_unreadable_entries" and sample.labels.get("topic") == t]
    assert unreadable == [1]

    # Not vanished: everything else acknowledged, it is the backlog of one...
    def backlog() -> int:
        return admin(fresh_broker, "GET", f"{path}/stats")["subscriptions"][SUBSCRIPTION]["msgBacklog"]

    eventually(lambda: backlog() == 1, timeout_s=10, what="a backlog of exactly the bad entry")
    # ... until the operator skips it (which does not need to read it).
    admin(fresh_broker, "POST", f"{path}/subscription/{SUBSCRIPTION}/skip/1")
    eventually(lambda: backlog() == 0, timeout_s=10, what="an empty backlog after the skip")

    # The topic keeps working after it.
    producer2 = client2.create_producer(t, batching_enabled=False)
    producer2.send(b"after-skip")
    assert consumer.receive(timeout_millis=10_000).data() == b"after-skip"
