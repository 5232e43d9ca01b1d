import CRC32C
import NIOCore
import SwiftProtobuf

/// The payload section of a SEND (from a client) or MESSAGE (to a client) frame.
///
/// `checksummedBytes` is everything the Pulsar CRC32C covers: `[u32 metadataSize][MessageMetadata][payload]`.
/// It is a slice of the socket's buffer: never copied on the way to storage. A pure value.
public struct PayloadSection: Sendable, Equatable {
    /// The checksum the sender wrote after magic 0x0e01, or nil if the frame carried no checksum.
    public var checksum: UInt32?
    /// `[u32 metadataSize][MessageMetadata][payload]`.
    public var checksummedBytes: ByteBuffer

    public init(checksum: UInt32?, checksummedBytes: ByteBuffer) {
        self.checksum = checksum
        self.checksummedBytes = checksummedBytes
    }

    /// CRC32C of `checksummedBytes`.
    public func computeChecksum() -> UInt32 {
        checksummedBytes.withUnsafeReadableBytes { CRC32C.checksum($0) }
    }

    /// True if there is no checksum or it matches the bytes.
    public var isChecksumValid: Bool {
        guard let checksum else { return true }
        return checksum == computeChecksum()
    }

    /// Decodes the `MessageMetadata` at the front of `checksummedBytes`.
    public func decodeMetadata() throws(PulsarProtocolError) -> Pulsar_Proto_MessageMetadata {
        var view = checksummedBytes
        guard let size = view.readInteger(as: UInt32.self), size <= view.readableBytes,
              let bytes = view.readBytes(length: Int(size))
        else {
            throw PulsarProtocolError(.malformedPayload, "metadata size exceeds the payload frame")
        }
        do {
            return try Pulsar_Proto_MessageMetadata(serializedBytes: bytes)
        } catch {
            throw PulsarProtocolError(.malformedPayload, "MessageMetadata does not decode: \(error)")
        }
    }
}

/// One decoded frame: a command and, for SEND/MESSAGE, its payload section. A pure value.
public struct PulsarFrame: Sendable {
    public var command: Pulsar_Proto_BaseCommand
    public var payload: PayloadSection?

    public init(command: Pulsar_Proto_BaseCommand, payload: PayloadSection? = nil) {
        self.command = command
        self.payload = payload
    }
}
