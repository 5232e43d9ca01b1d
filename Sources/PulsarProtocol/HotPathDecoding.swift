import NIOCore

// Hand decoders for the two commands a client receives once per message (SEND_RECEIPT and
// MESSAGE), so a client's receive path builds no SwiftProtobuf `BaseCommand` per message. Like
// `SendCommandFields.decodeCommon`, each reads only the shape the brokers send and returns nil for
// anything else (extra or unknown fields, chunked ids, malformed bytes): the frame decoder then
// lets SwiftProtobuf decode the command and report errors. `HotPathDecodingTests` checks them
// against SwiftProtobuf.

/// A `MessageIdData` without chunk ids or ack sets: what receipts and deliveries carry. A pure value.
public struct MessageIDFields: Sendable, Equatable {
    public var ledgerID: UInt64
    public var entryID: UInt64
    /// nil when the field was absent (protobuf default -1).
    public var partition: Int32?
    /// nil when the field was absent (protobuf default -1).
    public var batchIndex: Int32?
    public var batchSize: Int32?

    public init(ledgerID: UInt64, entryID: UInt64, partition: Int32? = nil, batchIndex: Int32? = nil, batchSize: Int32? = nil) {
        self.ledgerID = ledgerID
        self.entryID = entryID
        self.partition = partition
        self.batchIndex = batchIndex
        self.batchSize = batchSize
    }

    /// The protobuf message (for code that wants one; allocates).
    public var protobuf: Pulsar_Proto_MessageIdData {
        var id = Pulsar_Proto_MessageIdData()
        id.ledgerID = ledgerID
        id.entryID = entryID
        if let partition { id.partition = partition }
        if let batchIndex { id.batchIndex = batchIndex }
        if let batchSize { id.batchSize = batchSize }
        return id
    }

    static func decode(_ bytes: ByteBuffer) -> MessageIDFields? {
        var reader = ProtobufReader(bytes)
        var ledgerID: UInt64?
        var entryID: UInt64?
        var id = MessageIDFields(ledgerID: 0, entryID: 0)
        while !reader.isAtEnd {
            guard let (field, wireType) = try? reader.readTag(), wireType == 0, let value = try? reader.readVarint() else {
                return nil
            }
            switch field {
            case 1: ledgerID = value
            case 2: entryID = value
            case 3: id.partition = Int32(truncatingIfNeeded: value)
            case 4: id.batchIndex = Int32(truncatingIfNeeded: value)
            case 6: id.batchSize = Int32(truncatingIfNeeded: value)
            default: return nil
            }
        }
        guard let ledgerID, let entryID else { return nil }
        id.ledgerID = ledgerID
        id.entryID = entryID
        return id
    }
}

/// What a producer needs of a `CommandSendReceipt`. A pure value.
public struct SendReceiptFields: Sendable, Equatable {
    public var producerID: UInt64
    public var sequenceID: UInt64
    public var messageID: MessageIDFields?
    public var highestSequenceID: UInt64?

    /// Reads `BaseCommand{type: SEND_RECEIPT, send_receipt: {...}}`; nil for any other shape.
    static func decodeCommon(_ command: ByteBuffer) -> SendReceiptFields? {
        guard let body = HandDecodedCommand.body(of: command, type: 7, field: 7) else { return nil }
        var reader = ProtobufReader(body)
        var producerID: UInt64?
        var sequenceID: UInt64?
        var messageID: MessageIDFields?
        var highestSequenceID: UInt64?
        while !reader.isAtEnd {
            guard let (field, wireType) = try? reader.readTag() else { return nil }
            switch (field, wireType) {
            case (1, 0): producerID = try? reader.readVarint()
            case (2, 0): sequenceID = try? reader.readVarint()
            case (3, 2):
                guard let bytes = try? reader.readLengthDelimited(), let id = MessageIDFields.decode(bytes) else { return nil }
                messageID = id
            case (4, 0):
                guard let value = try? reader.readVarint() else { return nil }
                highestSequenceID = value
            default: return nil
            }
        }
        guard let producerID, let sequenceID else { return nil }
        return SendReceiptFields(
            producerID: producerID, sequenceID: sequenceID, messageID: messageID, highestSequenceID: highestSequenceID)
    }

    public init(producerID: UInt64, sequenceID: UInt64, messageID: MessageIDFields?, highestSequenceID: UInt64? = nil) {
        self.producerID = producerID
        self.sequenceID = sequenceID
        self.messageID = messageID
        self.highestSequenceID = highestSequenceID
    }

    func apply(to command: inout Pulsar_Proto_BaseCommand) {
        command.sendReceipt.producerID = producerID
        command.sendReceipt.sequenceID = sequenceID
        if let messageID { command.sendReceipt.messageID = messageID.protobuf }
        if let highestSequenceID { command.sendReceipt.highestSequenceID = highestSequenceID }
    }
}

/// What a consumer needs of a `CommandMessage`. A pure value.
public struct MessageCommandFields: Sendable, Equatable {
    public var consumerID: UInt64
    public var messageID: MessageIDFields
    /// nil when the field was absent (protobuf default 0).
    public var redeliveryCount: UInt32?
    /// Bitset of the batch slots still to deliver (empty: all).
    public var ackSet: [Int64] = []
    public var consumerEpoch: UInt64?

    public init(consumerID: UInt64, messageID: MessageIDFields, redeliveryCount: UInt32? = nil, ackSet: [Int64] = [], consumerEpoch: UInt64? = nil) {
        self.consumerID = consumerID
        self.messageID = messageID
        self.redeliveryCount = redeliveryCount
        self.ackSet = ackSet
        self.consumerEpoch = consumerEpoch
    }

    /// Reads `BaseCommand{type: MESSAGE, message: {...}}`; nil for any other shape.
    static func decodeCommon(_ command: ByteBuffer) -> MessageCommandFields? {
        guard let body = HandDecodedCommand.body(of: command, type: 9, field: 9) else { return nil }
        var reader = ProtobufReader(body)
        var consumerID: UInt64?
        var messageID: MessageIDFields?
        var fields = MessageCommandFields(consumerID: 0, messageID: MessageIDFields(ledgerID: 0, entryID: 0))
        while !reader.isAtEnd {
            guard let (field, wireType) = try? reader.readTag() else { return nil }
            switch (field, wireType) {
            case (1, 0): consumerID = try? reader.readVarint()
            case (2, 2):
                guard let bytes = try? reader.readLengthDelimited(), let id = MessageIDFields.decode(bytes) else { return nil }
                messageID = id
            case (3, 0):
                guard let value = try? reader.readVarint() else { return nil }
                fields.redeliveryCount = UInt32(truncatingIfNeeded: value)
            case (4, 0):
                guard let value = try? reader.readVarint() else { return nil }
                fields.ackSet.append(Int64(bitPattern: value))
            case (4, 2):
                guard var packed = (try? reader.readLengthDelimited()).map(ProtobufReader.init) else { return nil }
                while !packed.isAtEnd {
                    guard let value = try? packed.readVarint() else { return nil }
                    fields.ackSet.append(Int64(bitPattern: value))
                }
            case (5, 0):
                guard let value = try? reader.readVarint() else { return nil }
                fields.consumerEpoch = value
            default: return nil
            }
        }
        guard let consumerID, let messageID else { return nil }
        fields.consumerID = consumerID
        fields.messageID = messageID
        return fields
    }

    func apply(to command: inout Pulsar_Proto_BaseCommand) {
        command.message.consumerID = consumerID
        command.message.messageID = messageID.protobuf
        if let redeliveryCount { command.message.redeliveryCount = redeliveryCount }
        command.message.ackSet = ackSet
        if let consumerEpoch { command.message.consumerEpoch = consumerEpoch }
    }
}

enum HandDecodedCommand {
    /// The bytes of field `field` of `BaseCommand{type: type, <field>: {...}}`, if the command is
    /// exactly that (type first, then the one sub-message).
    static func body(of command: ByteBuffer, type: UInt64, field: UInt64) -> ByteBuffer? {
        var reader = ProtobufReader(command)
        guard let (typeField, typeWire) = try? reader.readTag(), typeField == 1, typeWire == 0,
              (try? reader.readVarint()) == type,
              let (bodyField, bodyWire) = try? reader.readTag(), bodyField == field, bodyWire == 2,
              let body = try? reader.readLengthDelimited(), reader.isAtEnd
        else { return nil }
        return body
    }
}
