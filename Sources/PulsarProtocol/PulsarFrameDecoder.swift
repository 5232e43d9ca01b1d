import NIOCore
import SwiftProtobuf

/// Splits a byte stream into Pulsar frames.
///
/// Layout (big-endian): `[u32 totalSize][u32 commandSize][BaseCommand]` and, for payload commands,
/// `[u16 0x0e01][u32 crc32c]? [u32 metadataSize][MessageMetadata][payload]` (an optional
/// `[u16 0x0e02][u32 size][BrokerEntryMetadata]` may come first; it is skipped).
///
/// A frame whose `totalSize` exceeds `maxFrameSizeBytes` is refused from the length field alone,
/// before any of it is buffered. Every malformed frame throws a `PulsarProtocolError`; the decoder
/// never traps on bytes from the network. Owned by one channel (single-threaded).
public struct PulsarFrameDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = PulsarFrame

    public let maxFrameSizeBytes: Int

    public init(maxFrameSizeBytes: Int = PulsarLimits.maxFrameSizeBytes) {
        self.maxFrameSizeBytes = maxFrameSizeBytes
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> PulsarFrame? {
        guard let totalSize = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else {
            return nil
        }
        guard totalSize <= UInt32(maxFrameSizeBytes) else {
            throw PulsarProtocolError(
                .frameTooLarge, "frame of \(totalSize) bytes exceeds the limit of \(maxFrameSizeBytes) bytes")
        }
        guard totalSize >= 4 else {
            throw PulsarProtocolError(.frameTooSmall, "frame of \(totalSize) bytes has no room for a command size")
        }
        guard buffer.readableBytes >= 4 + Int(totalSize) else {
            return nil
        }
        buffer.moveReaderIndex(forwardBy: 4)
        let frame = buffer.readSlice(length: Int(totalSize))!
        return try Self.decodeFrame(frame)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> PulsarFrame? {
        try decode(buffer: &buffer)
    }

    /// Decodes one frame body (everything after `totalSize`).
    static func decodeFrame(_ body: ByteBuffer) throws(PulsarProtocolError) -> PulsarFrame {
        var frame = body
        let commandSize = Int(frame.readInteger(as: UInt32.self)!)
        guard commandSize > 0, commandSize <= frame.readableBytes,
              commandSize <= PulsarLimits.maxCommandSizeBytes
        else {
            throw PulsarProtocolError(
                .commandSizeInvalid,
                "command size \(commandSize) does not fit in a frame of \(body.readableBytes) bytes")
        }
        let command: Pulsar_Proto_BaseCommand
        var send: SendCommandFields?
        var message: MessageCommandFields?
        let commandBytes = frame.getSlice(at: frame.readerIndex, length: commandSize)!
        if let fast = SendCommandFields.decodeCommon(commandBytes) {
            // The hot path: a plain SEND, read by hand.
            frame.moveReaderIndex(forwardBy: commandSize)
            command = PulsarFrame.sendCommand
            send = fast
        } else if frame.readableBytes == commandSize, let receipt = SendReceiptFields.decodeCommon(commandBytes) {
            // A client's hot path: receipts and deliveries, read by hand.
            return PulsarFrame(receipt: receipt)
        } else if let fast = MessageCommandFields.decodeCommon(commandBytes) {
            frame.moveReaderIndex(forwardBy: commandSize)
            command = PulsarFrame.messageCommand
            message = fast
        } else {
          do {
            command = try frame.readWithUnsafeReadableBytes { pointer in
                let bytes = UnsafeRawBufferPointer(rebasing: pointer[0..<commandSize])
                return (commandSize, try Pulsar_Proto_BaseCommand(serializedBytes: Array(bytes)))
            }
          } catch {
            throw PulsarProtocolError(.malformedCommand, "BaseCommand does not decode: \(error)")
          }
        }
        guard command.hasType else {
            throw PulsarProtocolError(.missingCommandType, "BaseCommand has no type")
        }
        guard frame.readableBytes > 0 else {
            if let send { return PulsarFrame(send: send, payload: nil) }
            if let message { return PulsarFrame(message: message, payload: nil) }
            return PulsarFrame(command: command)
        }
        // Payload section.
        if frame.getInteger(at: frame.readerIndex, as: UInt16.self) == PulsarLimits.brokerEntryMetadataMagic {
            frame.moveReaderIndex(forwardBy: 2)
            guard let size = frame.readInteger(as: UInt32.self), Int(size) <= frame.readableBytes else {
                throw PulsarProtocolError(.malformedPayload, "broker entry metadata exceeds the frame")
            }
            frame.moveReaderIndex(forwardBy: Int(size))
        }
        var checksum: UInt32?
        if frame.getInteger(at: frame.readerIndex, as: UInt16.self) == PulsarLimits.checksumMagic {
            frame.moveReaderIndex(forwardBy: 2)
            guard let value = frame.readInteger(as: UInt32.self) else {
                throw PulsarProtocolError(.malformedPayload, "checksum magic without a checksum")
            }
            checksum = value
        }
        guard let metadataSize = frame.getInteger(at: frame.readerIndex, as: UInt32.self),
              Int(metadataSize) <= frame.readableBytes - 4
        else {
            throw PulsarProtocolError(.malformedPayload, "metadata size exceeds the payload frame")
        }
        let payload = PayloadSection(checksum: checksum, checksummedBytes: frame)
        if let send { return PulsarFrame(send: send, payload: payload) }
        if let message { return PulsarFrame(message: message, payload: payload) }
        return PulsarFrame(command: command, payload: payload)
    }
}
