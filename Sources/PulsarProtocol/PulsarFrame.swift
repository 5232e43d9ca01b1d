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
///
/// The per-message commands (SEND on a broker, SEND_RECEIPT and MESSAGE on a client) are read by
/// hand when they have their usual shape: `send` / `receipt` / `message` hold their fields and
/// no SwiftProtobuf message is built; `command` rebuilds one on demand.
public struct PulsarFrame: Sendable {
    /// The decoded command, or for a hand-decoded one a shared command with only its type (see `command`).
    private var storedCommand: Pulsar_Proto_BaseCommand
    public var payload: PayloadSection?
    /// For a SEND: its fields (the hot path reads these, never `command.send`).
    public let send: SendCommandFields?
    /// For a hand-decoded SEND_RECEIPT: its fields (nil for other frames and unusual receipts).
    public let receipt: SendReceiptFields?
    /// For a hand-decoded MESSAGE: its fields (nil for other frames and unusual deliveries).
    public let message: MessageCommandFields?
    private let isHandDecoded: Bool

    public init(command: Pulsar_Proto_BaseCommand, payload: PayloadSection? = nil) {
        storedCommand = command
        isHandDecoded = false
        self.payload = payload
        send = command.type == .send ? SendCommandFields(command.send) : nil
        receipt = nil
        message = nil
    }

    /// A SEND whose command the decoder read by hand.
    init(send: SendCommandFields, payload: PayloadSection?) {
        storedCommand = Self.sendCommand
        isHandDecoded = true
        self.payload = payload
        self.send = send
        receipt = nil
        message = nil
    }

    /// A SEND_RECEIPT whose command the decoder read by hand.
    init(receipt: SendReceiptFields) {
        storedCommand = Self.sendReceiptCommand
        isHandDecoded = true
        payload = nil
        send = nil
        self.receipt = receipt
        message = nil
    }

    /// A MESSAGE whose command the decoder read by hand.
    init(message: MessageCommandFields, payload: PayloadSection?) {
        storedCommand = Self.messageCommand
        isHandDecoded = true
        self.payload = payload
        send = nil
        receipt = nil
        self.message = message
    }

    /// The command's type, without building anything.
    public var type: Pulsar_Proto_BaseCommand.TypeEnum { storedCommand.type }

    /// The whole command. For a hand-decoded one it is rebuilt from its fields on each call (tests,
    /// tools, rare paths); hot paths use `type` and `send` / `receipt` / `message` instead.
    public var command: Pulsar_Proto_BaseCommand {
        guard isHandDecoded else { return storedCommand }
        var command = storedCommand
        if let send {
            command.send.producerID = send.producerID
            command.send.sequenceID = send.sequenceID
            if let numMessages = send.numMessages { command.send.numMessages = numMessages }
            if let highest = send.highestSequenceID { command.send.highestSequenceID = highest }
            if send.isChunk { command.send.isChunk = true }
        }
        receipt?.apply(to: &command)
        message?.apply(to: &command)
        return command
    }

    private static func shared(_ type: Pulsar_Proto_BaseCommand.TypeEnum) -> Pulsar_Proto_BaseCommand {
        var command = Pulsar_Proto_BaseCommand()
        command.type = type
        return command
    }
    /// The commands of hand-decoded frames (shared storage: no allocation per frame).
    static let sendCommand = shared(.send)
    static let sendReceiptCommand = shared(.sendReceipt)
    static let messageCommand = shared(.message)
}

/// What the broker uses of a `CommandSend`. A pure value.
public struct SendCommandFields: Sendable, Equatable {
    public var producerID: UInt64
    public var sequenceID: UInt64
    public var numMessages: Int32?
    public var highestSequenceID: UInt64?
    public var isChunk = false
    /// `txnid_most_bits` / `txnid_least_bits`: the SEND is part of a transaction (decoded by SwiftProtobuf).
    public var transactionMostBits: UInt64?
    public var transactionLeastBits: UInt64?

    public init(producerID: UInt64, sequenceID: UInt64, numMessages: Int32? = nil, highestSequenceID: UInt64? = nil) {
        self.producerID = producerID
        self.sequenceID = sequenceID
        self.numMessages = numMessages
        self.highestSequenceID = highestSequenceID
    }

    public init(_ send: Pulsar_Proto_CommandSend) {
        self.init(
            producerID: send.producerID, sequenceID: send.sequenceID,
            numMessages: send.hasNumMessages ? send.numMessages : nil,
            highestSequenceID: send.hasHighestSequenceID ? send.highestSequenceID : nil)
        isChunk = send.hasIsChunk && send.isChunk
        if send.hasTxnidLeastBits || send.hasTxnidMostBits {
            transactionMostBits = send.txnidMostBits
            transactionLeastBits = send.txnidLeastBits
        }
    }

    /// Reads `BaseCommand{type: SEND, send: {producer_id, sequence_id, num_messages?,
    /// highest_sequence_id?, is_chunk?, marker: false}}` — what clients send for every message —
    /// by hand. Nil for anything else (transactions, markers, message ids, extra fields, malformed
    /// bytes): SwiftProtobuf then decodes the command and reports errors.
    static func decodeCommon(_ command: ByteBuffer) -> SendCommandFields? {
        var reader = ProtobufReader(command)
        guard let (typeField, typeWire) = try? reader.readTag(), typeField == 1, typeWire == 0,
              (try? reader.readVarint()) == 6,
              let (sendField, sendWire) = try? reader.readTag(), sendField == 6, sendWire == 2,
              let body = try? reader.readLengthDelimited(), reader.isAtEnd
        else { return nil }
        var send = ProtobufReader(body)
        var producerID: UInt64?
        var sequenceID: UInt64?
        var fields = SendCommandFields(producerID: 0, sequenceID: 0)
        while !send.isAtEnd {
            guard let (field, wireType) = try? send.readTag(), wireType == 0, let value = try? send.readVarint() else {
                return nil
            }
            switch field {
            case 1: producerID = value
            case 2: sequenceID = value
            case 3: fields.numMessages = Int32(truncatingIfNeeded: value)
            case 6: fields.highestSequenceID = value
            case 7: fields.isChunk = value != 0
            case 8 where value == 0: break
            default: return nil
            }
        }
        guard let producerID, let sequenceID else { return nil }
        fields.producerID = producerID
        fields.sequenceID = sequenceID
        return fields
    }
}
