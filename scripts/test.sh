#!/usr/bin/env bash
# Magnetar's one test command. Run from anywhere on a fresh Debian 12 machine (as root, or with sudo):
#
#   bash scripts/test.sh [extra pytest arguments, e.g. -k reader -x]
#
# 1. installs the Debian packages it needs (only those missing; apt-get update first),
# 2. swift build, 3. creates .venv (python3 -m venv) with IntegrationTests/requirements.txt
#    (pulsar-client==3.13.0, pytest, moto, ...), 4. swift test (Swift unit tests; the S3 driver's
#    against moto's S3 server, started from the venv),
# 5. runs the pytest integration suite against the freshly built binary (MAGNETAR_BIN), its files
#    spread over MAGNETAR_PYTEST_WORKERS (2) processes.
# Safe to re-run: an existing, working .venv is reused. Exits non-zero if any step fails.
#
# 6. fuzzes every reader of untrusted input for a bounded minute each (scripts/fuzz; libFuzzer),
#    with the binary built in the background, at the lowest priority, since step 2.
#
# Environment knobs: MAGNETAR_SKIP_SWIFT_TEST=1 skips step 4, MAGNETAR_SKIP_FUZZ=1 step 6 (quick
# local loops only); MAGNETAR_PYTEST_TIMEOUT / MAGNETAR_SWIFT_TEST_TIMEOUT / MAGNETAR_FUZZ_TIMEOUT
# (seconds) bound the test runs; MAGNETAR_FUZZ_SECONDS (45) is each fuzz target's time.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT="$(pwd)"

step() { echo; echo "==> $* ($(date -u +%H:%M:%S))"; }
die() { echo "test.sh: error: $*" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive

# ------------------------------------------------------------------------------------------------
step "Checking system packages"
# ------------------------------------------------------------------------------------------------
# Swift toolchain: expected at /opt/swift on our machines; put it on PATH if it is not there yet.
if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then
    export PATH="/opt/swift/usr/bin:$PATH"
fi
command -v swift >/dev/null 2>&1 || die "swift not found (expected on PATH or in /opt/swift/usr/bin)"

# etcd-server: the metadata tests start their own etcd on loopback (skipped, with a message, without it).
# openssl: the TLS tests make their CA and certificates with it.
APT_WANTED=(pkg-config zlib1g-dev libzstd-dev liblz4-dev libsnappy-dev curl etcd-server openssl)
missing=()
for pkg in "${APT_WANTED[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if ! command -v python3 >/dev/null 2>&1; then
    missing+=(python3 python3-venv)
# `python3 -m venv` needs venv + ensurepip; Debian's own python3 ships ensurepip in python3-venv.
elif ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    missing+=(python3-venv)
fi

if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    SUDO=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "need root or sudo to install: ${missing[*]}"
        SUDO=(sudo)
    fi
    "${SUDO[@]}" apt-get update -q
    # RUNLEVEL=1: do not start packaged services (etcd-server would otherwise start on :2379).
    "${SUDO[@]}" env RUNLEVEL=1 apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    echo "all present: ${APT_WANTED[*]} python3-venv"
fi

# ------------------------------------------------------------------------------------------------
step "swift build"
# ------------------------------------------------------------------------------------------------
swift build
BIN_DIR="$(swift build --show-bin-path)"
MAGNETAR_BIN="$BIN_DIR/magnetar"
[ -x "$MAGNETAR_BIN" ] || die "swift build did not produce $MAGNETAR_BIN"
echo "binary: $MAGNETAR_BIN"

# The fuzz binary (a second build, with sanitizers) is built now, in the background at the lowest
# CPU and I/O priority: the tests below leave most of the CPU idle, and they keep their priority.
FUZZ_BUILD_PID=""
if [ "${MAGNETAR_SKIP_FUZZ:-0}" != "1" ]; then
    mkdir -p .build-fuzz
    LOW_PRIORITY=(nice -n 19)
    if ionice -c3 true 2>/dev/null; then LOW_PRIORITY+=(ionice -c3); fi
    setsid "${LOW_PRIORITY[@]}" bash scripts/fuzz --build-only >.build-fuzz/build.log 2>&1 </dev/null &
    FUZZ_BUILD_PID=$!
    trap '[ -z "$FUZZ_BUILD_PID" ] || kill -- "-$FUZZ_BUILD_PID" 2>/dev/null || true' EXIT
    echo "building the fuzz binary in the background at low priority (log: .build-fuzz/build.log)"
fi

# ------------------------------------------------------------------------------------------------
step "Python venv for the tests (.venv)"
# ------------------------------------------------------------------------------------------------
VENV="$REPO_ROOT/.venv"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    echo "reusing $VENV ($("$VENV/bin/python" --version))"
else
    echo "creating $VENV with $(python3 --version) at $(command -v python3)"
    python3 -m venv --clear "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check -r IntegrationTests/requirements.txt
"$VENV/bin/python" -c 'import pulsar, pytest; print("pulsar-client", pulsar.__version__, "/ pytest", pytest.__version__)'

# ------------------------------------------------------------------------------------------------
if [ "${MAGNETAR_SKIP_SWIFT_TEST:-0}" = "1" ]; then
    step "swift test: skipped (MAGNETAR_SKIP_SWIFT_TEST=1)"
else
    step "swift test (unit tests; the S3 driver's against moto's S3 server)"
    # A real S3-compatible server for the S3 object store's tests (moto's server mode, from the venv).
    S3_PORT=$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$VENV/bin/python" -m moto.server -H 127.0.0.1 -p "$S3_PORT" >"$REPO_ROOT/.build/moto.log" 2>&1 &
    MOTO_PID=$!
    for _ in $(seq 100); do
        curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/" && break
        sleep 0.1
    done
    MAGNETAR_TEST_S3_ENDPOINT="http://127.0.0.1:$S3_PORT" \
        timeout --kill-after=30 "${MAGNETAR_SWIFT_TEST_TIMEOUT:-1800}" swift test || { kill "$MOTO_PID"; exit 1; }
    kill "$MOTO_PID" 2>/dev/null || true
fi

# ------------------------------------------------------------------------------------------------
step "Integration tests (pytest, pulsar-client against $MAGNETAR_BIN)"
# ------------------------------------------------------------------------------------------------
export MAGNETAR_BIN
# Files run side by side in MAGNETAR_PYTEST_WORKERS processes (pytest-xdist; a file's tests stay in
# one process, so the brokers a file shares are not shared across processes).
WORKERS="${MAGNETAR_PYTEST_WORKERS:-2}"
XDIST=()
if [ "$WORKERS" -gt 1 ]; then XDIST=(-n "$WORKERS" --dist loadfile); fi
timeout --kill-after=30 "${MAGNETAR_PYTEST_TIMEOUT:-2700}" \
    "$VENV/bin/pytest" -q -rfE --durations=15 "${XDIST[@]}" IntegrationTests "$@"

# ------------------------------------------------------------------------------------------------
if [ "${MAGNETAR_SKIP_FUZZ:-0}" = "1" ]; then
    step "Fuzzing: skipped (MAGNETAR_SKIP_FUZZ=1)"
else
    step "Fuzzing (libFuzzer + AddressSanitizer, ${MAGNETAR_FUZZ_SECONDS:-45} s per target, 2 at a time)"
    echo "waiting for the fuzz binary's build"
    if ! timeout "${MAGNETAR_FUZZ_TIMEOUT:-1800}" tail --pid="$FUZZ_BUILD_PID" -f /dev/null || ! wait "$FUZZ_BUILD_PID"; then
        cat .build-fuzz/build.log >&2
        die "the fuzz binary did not build"
    fi
    FUZZ_BUILD_PID=""
    timeout --kill-after=30 "${MAGNETAR_FUZZ_TIMEOUT:-1800}" \
        bash scripts/fuzz --no-build --seconds "${MAGNETAR_FUZZ_SECONDS:-45}" --jobs 2
fi

step "All tests passed"
