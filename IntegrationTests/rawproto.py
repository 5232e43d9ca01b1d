"""Tiny hand-written encoder/decoder for the Pulsar binary protocol, for raw-socket tests.

Only what test_bad_input.py needs. Field numbers come from PulsarApi.proto (proto2, package
pulsar.proto); see also ../shared/pulsar-protocol-notes.md §2.1.

Frames (all integers big-endian):
  simple:  [u32 totalSize][u32 cmdSize][BaseCommand]                 totalSize = 4 + cmdSize
  payload: [u32 totalSize][u32 cmdSize][BaseCommand]
           [u16 0x0e01][u32 crc32c][u32 metaSize][MessageMetadata][payload]
           crc32c covers metaSize + metadata + payload.

BaseCommand: field 1 = type (enum); the sub-message for a command sits in the field whose number
equals the type value for every command used here (CONNECT=2 -> field 2, PING=18 -> field 18, ...).
"""

from __future__ import annotations

import socket
import struct
import time

# BaseCommand.Type values (PulsarApi.proto). Note SEND_RECEIPT=7 and SEND_ERROR=8.
CONNECT = 2
CONNECTED = 3
SUBSCRIBE = 4
PRODUCER = 5
SEND = 6
SEND_RECEIPT = 7
SEND_ERROR = 8
MESSAGE = 9
SUCCESS = 13
ERROR = 14
CLOSE_PRODUCER = 15
CLOSE_CONSUMER = 16
PRODUCER_SUCCESS = 17
PING = 18
PONG = 19

# ServerError values
SERVER_ERROR_CHECKSUM = 9

PROTOCOL_VERSION = 20
CLIENT_VERSION = "magnetar-integration-tests"

# The exact bytes from the notes: PING = type 18 with an empty `ping` sub-message (field 18).
PING_FRAME = bytes.fromhex("00000009" "00000005" "0812" "920100")
PONG_FRAME = bytes.fromhex("00000009" "00000005" "0813" "9a0100")

MAGIC_CRC32C = 0x0E01


# --------------------------------------------------------------------------------------------
# protobuf wire format (only varint = wire type 0 and length-delimited = wire type 2 are written)
# --------------------------------------------------------------------------------------------

def varint(value: int) -> bytes:
    """Unsigned LEB128. Negative numbers are written as 64-bit two's complement, like protobuf."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3 | 0) + varint(value)


def field_bytes(number: int, data: bytes | str) -> bytes:
    if isinstance(data, str):
        data = data.encode()
    return varint(number << 3 | 2) + varint(len(data)) + data


def base_command(cmd_type: int, sub_message: bytes | None) -> bytes:
    """BaseCommand{type, <sub-message in field number == type>}. sub_message=None omits it."""
    out = field_varint(1, cmd_type)
    if sub_message is not None:
        out += field_bytes(cmd_type, sub_message)
    return out


def decode_fields(data: bytes) -> dict[int, list]:
    """Decode one protobuf message into {field_number: [values]}.

    Varints give ints, length-delimited fields give bytes (decode nested messages by calling this
    again), fixed64/fixed32 give ints. Raises ValueError on malformed input.
    """
    fields: dict[int, list] = {}
    pos = 0
    n = len(data)

    def read_varint() -> int:
        nonlocal pos
        shift = 0
        result = 0
        while True:
            if pos >= n:
                raise ValueError("truncated varint")
            b = data[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")

    while pos < n:
        key = read_varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            value = read_varint()
        elif wire == 2:
            length = read_varint()
            if pos + length > n:
                raise ValueError("truncated length-delimited field")
            value = data[pos:pos + length]
            pos += length
        elif wire == 1:
            if pos + 8 > n:
                raise ValueError("truncated fixed64")
            value = struct.unpack_from("<Q", data, pos)[0]
            pos += 8
        elif wire == 5:
            if pos + 4 > n:
                raise ValueError("truncated fixed32")
            value = struct.unpack_from("<I", data, pos)[0]
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def signed64(value: int) -> int:
    """uint64 on the wire -> int64 (the broker writes -1 as 2^64-1)."""
    return value - (1 << 64) if value >= 1 << 63 else value


# --------------------------------------------------------------------------------------------
# CRC32C (Castagnoli, reflected polynomial 0x82F63B78); crc32c(b"123456789") == 0xE3069283
# --------------------------------------------------------------------------------------------

def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# --------------------------------------------------------------------------------------------
# frames and commands
# --------------------------------------------------------------------------------------------

def simple_frame(command: bytes) -> bytes:
    return struct.pack(">II", 4 + len(command), len(command)) + command


def payload_frame(command: bytes, metadata: bytes, payload: bytes, checksum: int | None = None) -> bytes:
    """SEND frame with magic 0x0e01 and CRC32C. Pass `checksum` to force a (wrong) value."""
    meta_and_payload = struct.pack(">I", len(metadata)) + metadata + payload
    if checksum is None:
        checksum = crc32c(meta_and_payload)
    body = struct.pack(">I", len(command)) + command + struct.pack(">HI", MAGIC_CRC32C, checksum) + meta_and_payload
    return struct.pack(">I", len(body)) + body


def connect_command(client_version: str = CLIENT_VERSION, protocol_version: int = PROTOCOL_VERSION) -> bytes:
    # CommandConnect{client_version (1, required string), protocol_version (4, int32)}
    return base_command(CONNECT, field_bytes(1, client_version) + field_varint(4, protocol_version))


def producer_command(topic: str, producer_id: int, request_id: int) -> bytes:
    # CommandProducer{topic (1), producer_id (2), request_id (3)} -- all required
    return base_command(PRODUCER, field_bytes(1, topic) + field_varint(2, producer_id) + field_varint(3, request_id))


def send_command(producer_id: int, sequence_id: int) -> bytes:
    # CommandSend{producer_id (1), sequence_id (2)} -- both required
    return base_command(SEND, field_varint(1, producer_id) + field_varint(2, sequence_id))


def message_metadata(producer_name: str, sequence_id: int, publish_time_ms: int) -> bytes:
    # MessageMetadata{producer_name (1), sequence_id (2), publish_time (3)} -- all required
    return field_bytes(1, producer_name) + field_varint(2, sequence_id) + field_varint(3, publish_time_ms)


# --------------------------------------------------------------------------------------------
# a raw connection
# --------------------------------------------------------------------------------------------

class Closed(Exception):
    """The peer closed the connection (EOF or reset)."""


class Frame:
    """A decoded broker frame: .type, .fields (the sub-message's fields), .raw (whole frame)."""

    def __init__(self, cmd_type: int, fields: dict[int, list], raw: bytes):
        self.type = cmd_type
        self.fields = fields
        self.raw = raw

    def first(self, number: int, default=None):
        return self.fields.get(number, [default])[0]

    def __repr__(self) -> str:
        return f"Frame(type={self.type}, fields={self.fields!r})"


class RawConnection:
    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RawConnection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise Closed(str(e)) from e

    def _recv_exact(self, n: int, deadline: float) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"timed out waiting for {n - len(buf)} more bytes")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(n - len(buf))
            except socket.timeout as e:
                raise TimeoutError(f"timed out waiting for {n - len(buf)} more bytes") from e
            except (ConnectionResetError, ConnectionAbortedError) as e:
                raise Closed(str(e)) from e
            if not chunk:
                raise Closed("EOF")
            buf += chunk
        return bytes(buf)

    def read_frame(self, timeout: float = 10.0) -> Frame:
        """Read one frame. Raises Closed, TimeoutError, or ValueError for a malformed frame."""
        deadline = time.monotonic() + timeout
        (total,) = struct.unpack(">I", self._recv_exact(4, deadline))
        if total < 4 or total > 64 * 1024 * 1024:
            raise ValueError(f"implausible frame size {total}")
        body = self._recv_exact(total, deadline)
        (cmd_size,) = struct.unpack_from(">I", body, 0)
        if cmd_size > total - 4:
            raise ValueError(f"command size {cmd_size} exceeds frame size {total}")
        base = decode_fields(body[4:4 + cmd_size])
        cmd_type = base.get(1, [None])[0]
        sub = base.get(cmd_type, [b""])[0] if cmd_type is not None else b""
        return Frame(cmd_type, decode_fields(sub) if isinstance(sub, bytes) else {}, struct.pack(">I", total) + body)

    def read_command(self, timeout: float = 10.0) -> Frame:
        """Read the next frame that is not a broker PING (PINGs are answered with PONG)."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.read_frame(max(0.0, deadline - time.monotonic()))
            if frame.type == PING:
                self.send(PONG_FRAME)
                continue
            return frame

    def handshake(self, timeout: float = 10.0) -> Frame:
        """CONNECT -> CONNECTED; returns the CONNECTED frame."""
        self.send(simple_frame(connect_command()))
        frame = self.read_command(timeout)
        if frame.type != CONNECTED:
            raise AssertionError(f"expected CONNECTED (3), got {frame!r}")
        return frame

    def ping_pong(self, timeout: float = 10.0) -> Frame:
        """Send PING, expect PONG back (proves this connection is alive and served)."""
        self.send(PING_FRAME)
        frame = self.read_command(timeout)
        if frame.type != PONG:
            raise AssertionError(f"expected PONG (19), got {frame!r}")
        return frame

    def expect_closed(self, timeout: float = 10.0, allow_error: bool = True) -> list[Frame]:
        """Wait until the broker closes this connection. ERROR frames before the close are allowed
        (when allow_error); any other command fails. Returns the frames seen before the close."""
        deadline = time.monotonic() + timeout
        seen: list[Frame] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"connection not closed within {timeout}s; frames seen: {seen!r}")
            try:
                frame = self.read_command(remaining)
            except Closed:
                return seen
            except TimeoutError:
                continue  # loop re-checks the deadline and fails with a clear message
            except ValueError as e:
                raise AssertionError(f"broker sent a malformed frame: {e}") from e
            if frame.type == ERROR and allow_error:
                seen.append(frame)
                continue
            raise AssertionError(f"expected the connection to be closed, got {frame!r}")

    def expect_closed_or_error(self, timeout: float = 10.0) -> str:
        """The connection is closed, or the broker answers ERROR / SEND_ERROR. Returns 'closed' or 'error'."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"neither closed nor answered with an error within {timeout}s")
            try:
                frame = self.read_command(remaining)
            except Closed:
                return "closed"
            except TimeoutError:
                continue
            except ValueError as e:
                raise AssertionError(f"broker sent a malformed frame: {e}") from e
            if frame.type in (ERROR, SEND_ERROR):
                return "error"
            raise AssertionError(f"expected close or ERROR, got {frame!r}")
