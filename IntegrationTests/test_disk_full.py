"""Issue 12, fault 10: a full disk must not take the topic down.

The broker runs on a small tmpfs (mounted by the test: needs root, else the test is skipped). A
filler file takes the rest of it. Then a send fails within its send timeout (the broker answers
SEND_ERROR PersistenceError "disk full ..." at once; the C++ client reconnects and resends until
the timeout) instead of hanging, a reader still reads what was written before, and once the filler
is deleted a send succeeds again without a restart. After a restart, every acknowledged message
is there and no refused one is.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import time
from pathlib import Path

import pulsar
import pytest

from conftest import Broker
from helpers import read_n

TMPFS_SIZE = "16m"
EARLIER = 20
# Large enough that a few sends need a new tmpfs page (a write inside the file's last, partly
# used page still finds room on a "full" tmpfs).
PADDING = b"x" * 2_000
SEND_TIMEOUT_MS = 3_000
# A failing send must raise within its timeout plus this (reconnects, scheduling).
FAIL_MARGIN_S = 7.0
RESUME_TIMEOUT_S = 30.0


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(command), capture_output=True, text=True, timeout=30)


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of TMPFS_SIZE, unmounted at teardown."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = _run("mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount_point))
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}")
    try:
        yield mount_point
    finally:
        if _run("umount", str(mount_point)).returncode != 0:
            _run("umount", "-l", str(mount_point))


@pytest.fixture
def disk_broker(small_disk, tmp_path):
    """A broker whose data dir is on the small tmpfs (its log is not)."""
    b = Broker(small_disk / "data", tmp_path / "magnetar.log")
    b.start()
    yield b
    b.close()


def fill(directory: Path) -> Path:
    """Writes a file into `directory` until the file system is full."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        for chunk_size in (1 << 20, 4096, 1):
            chunk = b"\0" * chunk_size
            try:
                while True:
                    if f.write(chunk) == 0:
                        break
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
    return filler


def payload(name: str) -> bytes:
    return name.encode() + b"/" + PADDING


def name_of(data: bytes) -> str:
    return data.split(b"/", 1)[0].decode()


def test_full_disk_fails_sends_fast_keeps_reads_and_resumes_without_restart(
        disk_broker, small_disk, make_client, topic, caplog):
    t = topic()
    client = make_client(disk_broker)
    producer = client.create_producer(t, batching_enabled=False, send_timeout_millis=SEND_TIMEOUT_MS)
    acknowledged = []
    for i in range(EARLIER):
        producer.send(payload(f"early-{i}"))
        acknowledged.append(f"early-{i}")

    log_offset = disk_broker.log_size()
    filler = fill(small_disk)

    # Sends may still fit in the last pages of the files; soon one finds no room and must fail
    # within its send timeout, not hang.
    refused = []
    for i in range(50):
        name = f"full-{i}"
        started = time.monotonic()
        try:
            producer.send(payload(name))
        except pulsar.PulsarException as e:
            elapsed = time.monotonic() - started
            assert elapsed < SEND_TIMEOUT_MS / 1000 + FAIL_MARGIN_S, f"send failed only after {elapsed:.1f}s ({e!r})"
            refused.append(name)
            break
        acknowledged.append(name)
    assert refused, "every send succeeded on a full disk: the filler did not fill it"
    assert "Disk full" in disk_broker.log_since(log_offset), "the broker did not report the full disk"
    # The broker's reason reached the client (the C++ client logs a SEND_ERROR's message).
    assert any("disk full" in record.getMessage() for record in caplog.records), "no 'disk full' SEND_ERROR seen"

    # Reads of what is stored go on (another client: the producer's connection keeps reconnecting).
    reader_client = make_client(disk_broker)
    reader = reader_client.create_reader(t, pulsar.MessageId.earliest)
    assert [name_of(m.data()) for m in read_n(reader, len(acknowledged))] == acknowledged

    # Space is back: a send succeeds again, without a restart.
    filler.unlink()
    deadline = time.monotonic() + RESUME_TIMEOUT_S
    attempts = []
    while True:
        name = f"after-{len(attempts)}"
        attempts.append(name)
        try:
            producer.send(payload(name))
            break
        except pulsar.PulsarException:
            assert time.monotonic() < deadline, f"sends still fail {RESUME_TIMEOUT_S:.0f}s after space came back"
    # What follows in the log: only the last attempt for sure (an earlier one that timed out at
    # the client may still have been written), never a refused message.
    after = []
    while not after or after[-1] != attempts[-1]:
        after.append(name_of(reader.read_next(timeout_millis=10_000).data()))
    assert set(after) <= set(attempts), f"unexpected messages after the disk was freed: {after}"
    acknowledged += after

    # Nothing acknowledged is lost, nothing refused appears, after a restart too.
    client.close()
    reader_client.close()
    disk_broker.restart()
    again = make_client(disk_broker).create_reader(t, pulsar.MessageId.earliest)
    stored = [name_of(m.data()) for m in read_n(again, len(acknowledged))]
    assert stored == acknowledged
    assert not set(stored) & set(refused)
    try:
        extra = again.read_next(timeout_millis=1_500)
    except pulsar.Timeout:
        extra = None
    assert extra is None, f"unexpected message after a restart: {name_of(extra.data())}"
    logging.getLogger("tests").info("refused sends: %s, acknowledged: %d", refused, len(acknowledged))
