import NIOCore
import SwiftProtobuf

/// Writes Pulsar frames. Pure functions over a caller-owned `ByteBuffer`.
public enum PulsarFrameEncoder {
    /// Appends a simple command frame: `[u32 totalSize][u32 commandSize][BaseCommand]`.
    /// Required proto2 fields are checked: a command missing one is a programmer error, because the
    /// C++ client drops the connection on such a frame.
    public static func writeCommand(_ command: Pulsar_Proto_BaseCommand, into buffer: inout ByteBuffer) {
        let bytes: [UInt8]
        do {
            bytes = try command.serializedBytes()
        } catch {
            preconditionFailure("BaseCommand \(command.type) misses a required field: \(error)")
        }
        buffer.writeInteger(UInt32(4 + bytes.count))
        buffer.writeInteger(UInt32(bytes.count))
        buffer.writeBytes(bytes)
    }

    /// A new buffer holding one simple command frame.
    public static func encodeCommand(
        _ command: Pulsar_Proto_BaseCommand, allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 64)
        writeCommand(command, into: &buffer)
        return buffer
    }

    /// Appends the head of a payload frame: size, command, magic and checksum. The caller writes
    /// `checksummedBytesCount` bytes of `[u32 metadataSize][metadata][payload]` after it (usually as a
    /// separate slice, so the payload is never copied).
    public static func writePayloadFrameHead(
        _ command: Pulsar_Proto_BaseCommand, checksum: UInt32, checksummedBytesCount: Int, into buffer: inout ByteBuffer
    ) {
        let bytes: [UInt8]
        do {
            bytes = try command.serializedBytes()
        } catch {
            preconditionFailure("BaseCommand \(command.type) misses a required field: \(error)")
        }
        let totalSize = 4 + bytes.count + 2 + 4 + checksummedBytesCount
        buffer.writeInteger(UInt32(totalSize))
        buffer.writeInteger(UInt32(bytes.count))
        buffer.writeBytes(bytes)
        buffer.writeInteger(PulsarLimits.checksumMagic)
        buffer.writeInteger(checksum)
    }

    /// A whole payload frame in one buffer (tests and the Swift client; the broker writes head + slice).
    public static func encodePayloadFrame(
        _ command: Pulsar_Proto_BaseCommand, payload: PayloadSection, allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 64 + payload.checksummedBytes.readableBytes)
        writePayloadFrameHead(
            command, checksum: payload.checksum ?? payload.computeChecksum(),
            checksummedBytesCount: payload.checksummedBytes.readableBytes, into: &buffer)
        var bytes = payload.checksummedBytes
        buffer.writeBuffer(&bytes)
        return buffer
    }

    /// `[u32 metadataSize][metadata][payload]` for a message built locally (tests, the Swift client).
    public static func checksummedBytes(
        metadata: Pulsar_Proto_MessageMetadata, payload: ByteBuffer, allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) throws -> ByteBuffer {
        let metadataBytes: [UInt8] = try metadata.serializedBytes()
        var buffer = allocator.buffer(capacity: 4 + metadataBytes.count + payload.readableBytes)
        buffer.writeInteger(UInt32(metadataBytes.count))
        buffer.writeBytes(metadataBytes)
        var payload = payload
        buffer.writeBuffer(&payload)
        return buffer
    }
}
