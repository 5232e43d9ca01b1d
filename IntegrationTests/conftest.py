"""Fixtures for the Magnetar integration tests: the real `magnetar` binary driven by pulsar-client 3.13.0.

- `Broker`: starts `magnetar standalone` on free loopback ports with its own data dir, waits until
  GET /health answers `ok` and the binary port accepts TCP, and can stop (SIGTERM), kill -9 and
  restart on the same data dir and ports. Its stdout+stderr go to `<tmp>/magnetar.log`; the part
  written during a failing test is attached to that test's report.
- fixtures: `broker` (one per test module), `fresh_broker` (one per test, for tests that kill or
  restart it), `client` (on `broker`), `make_client` (a client for any broker), `topic`
  (a unique topic name factory: tests share a broker).

The binary is $MAGNETAR_BIN, else <repo>/.build/debug/magnetar.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pulsar
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

STARTUP_TIMEOUT_S = float(os.environ.get("MAGNETAR_STARTUP_TIMEOUT", "30"))
STOP_TIMEOUT_S = float(os.environ.get("MAGNETAR_STOP_TIMEOUT", "20"))
# Per-test limit (see _Watchdog): a hung test gets its stacks printed and its brokers killed instead
# of hanging CI. Generous: the slowest test sends 10,000 messages.
TEST_TIMEOUT_S = float(os.environ.get("MAGNETAR_TEST_TIMEOUT", "180"))
# Pulsar client operation timeout (create producer/consumer, seek, close...): keeps failures quick.
CLIENT_OPERATION_TIMEOUT_S = 10
LOG_TAIL_BYTES = 64 * 1024


def magnetar_binary() -> Path:
    env = os.environ.get("MAGNETAR_BIN")
    return Path(env) if env else REPO_ROOT / ".build" / "debug" / "magnetar"


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A currently free loopback TCP port for a server the test starts.

    Chosen below the kernel's ephemeral range: a port the kernel hands out (bind to port 0) can be
    taken by any outgoing connection before the server binds it ("Address already in use" while
    many clients connect), a port below that range only by another server."""
    low, _ = _ephemeral_range()
    start, end = _worker_port_range(max(1024, low - 12000), low)
    for _ in range(100):
        port = random.randrange(start, end)
        # Never the same port twice in a run: a cluster picks all its ports before any process
        # binds one, so a free port alone could go to two of them.
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_HANDED_OUT: set[int] = set()


def _worker_port_range(low: int, high: int) -> tuple[int, int]:
    """This pytest-xdist worker's own slice of [low, high): workers run side by side, and each one
    remembers only the ports it handed out itself."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ...
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not worker.startswith("gw") or count <= 1:
        return low, high
    index = int(worker[2:]) % count
    width = (high - low) // count
    return low + index * width, low + (index + 1) * width


# Loopback HTTP must not go through an http_proxy from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class BrokerStartError(RuntimeError):
    pass


class Broker:
    """One `magnetar standalone` process; restartable on the same data dir and ports."""

    _all: list["Broker"] = []  # live instances, for attaching logs to failing tests

    def __init__(self, data_dir: Path, log_path: Path, binary: Path | None = None):
        self.binary = Path(binary or magnetar_binary())
        self.data_dir = Path(data_dir)
        self.log_path = Path(log_path)
        self.port = free_port()
        self.http_port = free_port()
        while self.http_port == self.port:
            self.http_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        # True between start() and a deliberate stop()/kill9(): an exit meanwhile is a crash.
        self.expected_running = False
        # Module-scoped brokers are started again before the next test if a test left them dead.
        self.auto_restart = False
        Broker._all.append(self)

    # -- addresses -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"pulsar://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    # -- lifecycle ---------------------------------------------------------------------------
    def _command(self) -> list[str]:
        cmd = [
            str(self.binary), "standalone",
            "--data-dir", str(self.data_dir),
            "--port", str(self.port),
            "--http-port", str(self.http_port),
            "--advertised-address", "127.0.0.1",
        ]
        # If pytest dies (e.g. the per-test watchdog fires), the kernel kills the broker too.
        setpriv = shutil.which("setpriv")
        if setpriv and _setpriv_has_pdeathsig(setpriv):
            cmd = [setpriv, "--pdeathsig", "KILL", "--"] + cmd
        return cmd

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> "Broker":
        if self.is_running():
            raise BrokerStartError("broker already running")
        if not self.binary.exists():
            raise BrokerStartError(
                f"magnetar binary not found at {self.binary}; run `swift build` or set MAGNETAR_BIN")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== test harness: start #{self.starts}: {' '.join(self._command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self._command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=str(self.data_dir.parent))
        try:
            self._wait_ready(timeout)
        except Exception:
            self._hard_kill()
            raise
        self.expected_running = True
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_problem = "nothing tried yet"
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise BrokerStartError(
                    f"magnetar exited with code {code} during startup\n--- log tail ---\n{self.log_tail()}")
            try:
                with _NO_PROXY.open(self.http_url + "/health", timeout=2) as resp:
                    body = resp.read().decode(errors="replace").strip()
                    if resp.status != 200 or body != "ok":
                        last_problem = f"/health answered {resp.status} {body!r}"
                        raise OSError(last_problem)
                with socket.create_connection(("127.0.0.1", self.port), timeout=2):
                    pass
                return
            except (OSError, urllib.error.URLError) as e:
                last_problem = f"{type(e).__name__}: {e}"
            time.sleep(0.1)
        raise BrokerStartError(
            f"magnetar not ready within {timeout}s (last: {last_problem})\n--- log tail ---\n{self.log_tail()}")

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM and wait. Returns the exit code. Raises if it does not exit in time (it is then killed)."""
        self.expected_running = False
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._hard_kill()
                raise AssertionError(f"magnetar did not exit within {timeout}s of SIGTERM (killed)")
        return self.proc.returncode

    def kill9(self) -> None:
        """SIGKILL: no chance to flush anything."""
        self.expected_running = False
        if self.is_running():
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(STOP_TIMEOUT_S)

    def _hard_kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass

    def restart(self, timeout: float = STARTUP_TIMEOUT_S) -> "Broker":
        """Start again with the same data dir and ports (graceful stop first if it is running)."""
        if self.is_running():
            self.stop()
        return self.start(timeout)

    def crashed(self) -> int | None:
        """The exit code if the broker exited while it was expected to run, else None."""
        if self.expected_running and self.proc is not None and self.proc.poll() is not None:
            return self.proc.returncode
        return None

    def close(self) -> None:
        """Fixture teardown: stop gracefully; raise if the broker crashed or hangs on SIGTERM."""
        code = self.crashed()
        try:
            if self.is_running():
                self.stop()
        finally:
            self.expected_running = False
            self._hard_kill()
            if self in Broker._all:
                Broker._all.remove(self)
        if code is not None:
            raise AssertionError(f"magnetar exited unexpectedly with code {code}; see the log")

    # -- logs --------------------------------------------------------------------------------
    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, offset: int, limit: int = LOG_TAIL_BYTES) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                end = f.tell()
                start = max(offset, end - limit)
                f.seek(start)
                text = f.read().decode(errors="replace")
                return (f"[... {start - offset} bytes cut ...]\n" if start > offset else "") + text
        except FileNotFoundError:
            return "(no log file)"

    def log_tail(self, limit: int = 8 * 1024) -> str:
        return self.log_since(0, limit)


_SETPRIV_OK: dict[str, bool] = {}


def _setpriv_has_pdeathsig(path: str) -> bool:
    if path not in _SETPRIV_OK:
        try:
            out = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=5).stdout
            _SETPRIV_OK[path] = "--pdeathsig" in out
        except (OSError, subprocess.SubprocessError):
            _SETPRIV_OK[path] = False
    return _SETPRIV_OK[path]


# ------------------------------------------------------------------------------------------------
# failure reports: attach the broker log written during the test; per-test watchdog
# ------------------------------------------------------------------------------------------------

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item._magnetar_log_offsets = {id(b): b.log_size() for b in Broker._all}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        offsets = getattr(item, "_magnetar_log_offsets", {})
        for b in list(Broker._all):
            text = b.log_since(offsets.get(id(b), 0))
            report.sections.append(
                (f"magnetar log ({b.log_path}, port {b.port}) during {report.when}", text))


class _Watchdog:
    """Per-test time limit without killing pytest first.

    At TEST_TIMEOUT_S: print every thread's stack to the real stderr and SIGKILL the brokers, so a
    client call blocked on them fails and the test fails with a normal report. If the test is still
    running HARD_EXIT_GRACE_S later, exit pytest (status 3) rather than hang CI.
    """

    HARD_EXIT_GRACE_S = 120.0

    def __init__(self, config, name: str):
        self.capman = config.pluginmanager.getplugin("capturemanager")
        self.name = name
        self.fired = False
        self.timers = [threading.Timer(TEST_TIMEOUT_S, self._expire),
                       threading.Timer(TEST_TIMEOUT_S + self.HARD_EXIT_GRACE_S, self._hard_exit)]
        for t in self.timers:
            t.daemon = True
            t.start()

    def cancel(self) -> None:
        for t in self.timers:
            t.cancel()

    def _print(self, banner: str) -> None:
        def dump():
            sys.stderr.write(f"\n\n!!!!! {banner}\n")
            sys.stderr.flush()
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
            sys.stderr.flush()
        try:
            if self.capman is not None:
                with self.capman.global_and_fixture_disabled():
                    dump()
            else:
                dump()
        except Exception:
            pass

    def _expire(self) -> None:
        self.fired = True
        self._print(f"{self.name} still running after {TEST_TIMEOUT_S:.0f}s: stacks below; "
                    f"killing its brokers so that it fails")
        for b in list(Broker._all):
            try:
                b.expected_running = False
                b._hard_kill()
            except Exception:
                pass

    def _hard_exit(self) -> None:
        self._print(f"{self.name} still running {self.HARD_EXIT_GRACE_S:.0f}s after its brokers were "
                    f"killed: ending pytest")
        for b in list(Broker._all):
            try:
                b._hard_kill()
            except Exception:
                pass
        os._exit(3)


@pytest.fixture(autouse=True)
def _broker_guard():
    """Before each test: restart a shared broker that an earlier test left dead (its crash was
    reported there). After each test: fail the test if a broker died while it ran."""
    for b in list(Broker._all):
        if b.auto_restart and not b.is_running():
            b.start()
    yield
    crashed = [(b, b.crashed()) for b in list(Broker._all) if b.crashed() is not None]
    for b, _ in crashed:
        b.expected_running = False
    if crashed:
        pytest.fail("magnetar exited unexpectedly during this test: " + ", ".join(
            f"port {b.port} exit code {code}" for b, code in crashed), pytrace=False)


@pytest.fixture(autouse=True)
def _watchdog(request):
    dog = _Watchdog(request.config, request.node.nodeid)
    yield
    dog.cancel()
    if dog.fired:
        pytest.fail(f"test exceeded MAGNETAR_TEST_TIMEOUT={TEST_TIMEOUT_S:.0f}s", pytrace=False)


# ------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------

def _new_broker(tmp_dir: Path) -> Broker:
    return Broker(tmp_dir / "data", tmp_dir / "magnetar.log")


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """One broker shared by the tests of a module: use unique topic names (`topic` fixture)."""
    b = _new_broker(tmp_path_factory.mktemp("magnetar"))
    b.start()
    b.auto_restart = True
    yield b
    b.close()


@pytest.fixture
def fresh_broker(tmp_path):
    """A broker of this test alone, on its own data dir: kill it, restart it."""
    b = _new_broker(tmp_path)
    b.start()
    yield b
    b.close()


def new_client(url: str) -> pulsar.Client:
    return pulsar.Client(
        url,
        operation_timeout_seconds=CLIENT_OPERATION_TIMEOUT_S,
        connection_timeout_ms=5000,
        # Client logs go through Python logging: pytest shows them for failing tests.
        logger=logging.getLogger("pulsar.client"),
    )


def close_quietly(client: pulsar.Client) -> None:
    try:
        client.close()
    except pulsar.AlreadyClosed:
        pass
    except Exception as e:  # closing against a dead broker may fail; that is not the test's point
        logging.getLogger("tests").info("client.close() failed: %r", e)


@pytest.fixture
def clients():
    """A list to append the test's own pulsar.Client objects to; each is closed at teardown."""
    made: list[pulsar.Client] = []
    yield made
    for c in made:
        close_quietly(c)


@pytest.fixture
def namespace(broker):
    """A namespace of its own in `public`, for tests that change its policies."""
    name = f"public/ns-{uuid.uuid4().hex[:8]}"
    request = urllib.request.Request(f"{broker.http_url}/admin/v2/namespaces/{name}", data=b"", method="PUT")
    with _NO_PROXY.open(request, timeout=10) as response:
        assert response.status == 204, response.status
    return name


@pytest.fixture
def make_client():
    """make_client(broker_or_url) -> pulsar.Client, closed at teardown."""
    clients: list[pulsar.Client] = []

    def make(target) -> pulsar.Client:
        c = new_client(target.url if isinstance(target, Broker) else target)
        clients.append(c)
        return c

    yield make
    for c in reversed(clients):
        close_quietly(c)


@pytest.fixture
def client(broker, make_client):
    return make_client(broker)


def unique_topic(prefix: str = "t", full: bool = True) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    return f"persistent://public/default/{name}" if full else name


@pytest.fixture
def topic(request):
    """topic(prefix='t', full=True) -> a new unique topic name (persistent://public/default/...)."""
    base = request.node.name.split("[")[0].removeprefix("test_")[:40].replace("_", "-")

    def make(prefix: str | None = None, full: bool = True) -> str:
        return unique_topic(prefix or base, full)

    return make
