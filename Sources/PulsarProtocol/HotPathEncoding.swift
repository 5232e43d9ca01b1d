import NIOCore

/// Protobuf wire primitives for the hand-written encoders of hot-path commands (the broker's
/// SEND_RECEIPT, the Swift client's SEND). Pure functions.
public enum ProtobufWire {
    public static func varintSize(_ value: UInt64) -> Int {
        var value = value
        var size = 1
        while value >= 0x80 {
            value >>= 7
            size += 1
        }
        return size
    }

    public static func writeVarint(_ value: UInt64, into buffer: inout ByteBuffer) {
        // One reservation and one access for the whole varint (at most 10 bytes), not one per byte.
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 10) { bytes in
            var value = value
            var count = 0
            while value >= 0x80 {
                bytes[count] = UInt8(truncatingIfNeeded: value) | 0x80
                value >>= 7
                count += 1
            }
            bytes[count] = UInt8(value)
            return count + 1
        }
    }

    /// Tag byte of a field with number < 16.
    public static func tag(_ field: Int, wireType: Int) -> UInt8 { UInt8(field << 3 | wireType) }
    public static let varint = 0
    public static let lengthDelimited = 2

    /// Size of `BaseCommand{type, <field>: <bodySize bytes>}` (field number < 16).
    public static func commandSize(type: UInt64, bodySize: Int) -> Int {
        1 + varintSize(type) + 1 + varintSize(UInt64(bodySize)) + bodySize
    }

    /// Size of `MessageIdData{ledgerId, entryId, partition}` (int32 partition sign-extended, as protobuf does).
    static func messageIDSize(ledgerID: Int64, entryID: Int64, partition: Int32) -> Int {
        1 + varintSize(UInt64(bitPattern: ledgerID)) + 1 + varintSize(UInt64(bitPattern: entryID))
            + 1 + varintSize(UInt64(bitPattern: Int64(partition)))
    }
}

/// The SEND_RECEIPT frame, encoded by hand: one per published entry, so SwiftProtobuf's storage
/// objects and copy-on-write copies of `BaseCommand` stay off the publish path. Produces exactly the
/// bytes SwiftProtobuf writes for the same command (`HotPathEncodingTests` decodes and compares).
/// Pure functions.
public enum SendReceiptEncoder {
    /// `BaseCommand.type` SEND_RECEIPT, and the field number of `BaseCommand.send_receipt`.
    static let sendReceiptType: UInt64 = 7
    static let sendReceiptField = 7

    /// Appends `[u32 totalSize][u32 commandSize][BaseCommand{type: SEND_RECEIPT, send_receipt: {producer_id,
    /// sequence_id, message_id: {ledgerId, entryId, partition}}}]`.
    public static func write(
        producerID: UInt64, sequenceID: UInt64, ledgerID: Int64, entryID: Int64, partition: Int32, into buffer: inout ByteBuffer
    ) {
        let messageIDSize = ProtobufWire.messageIDSize(ledgerID: ledgerID, entryID: entryID, partition: partition)
        let receiptSize = 1 + ProtobufWire.varintSize(producerID) + 1 + ProtobufWire.varintSize(sequenceID)
            + 1 + ProtobufWire.varintSize(UInt64(messageIDSize)) + messageIDSize
        let commandSize = ProtobufWire.commandSize(type: sendReceiptType, bodySize: receiptSize)
        // One reservation and one exclusive access for the whole frame (receipts are the hottest write).
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 8 + commandSize) { bytes in
            var out = RawWireWriter(bytes: bytes)
            out.commandPrelude(
                frameSize: 4 + commandSize, commandSize: commandSize, type: sendReceiptType, field: sendReceiptField,
                bodySize: receiptSize)
            out.byte(ProtobufWire.tag(1, wireType: ProtobufWire.varint))
            out.varint(producerID)
            out.byte(ProtobufWire.tag(2, wireType: ProtobufWire.varint))
            out.varint(sequenceID)
            out.messageID(field: 3, size: messageIDSize, ledgerID: ledgerID, entryID: entryID, partition: partition)
            precondition(out.offset == 8 + commandSize, "receipt size miscomputed")
            return out.offset
        }
    }
}

/// Writes wire bytes into memory reserved beforehand for exactly what is written (the caller
/// computed the size). Multi-byte integers are big-endian, as in Pulsar's frame header.
public struct RawWireWriter {
    public let bytes: UnsafeMutableRawBufferPointer
    public private(set) var offset = 0

    public init(bytes: UnsafeMutableRawBufferPointer) { self.bytes = bytes }

    public mutating func byte(_ value: UInt8) {
        precondition(offset < bytes.count)
        bytes[offset] = value
        offset += 1
    }

    public mutating func uint32(_ value: UInt32) {
        precondition(offset + 4 <= bytes.count)
        bytes.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt32.self)
        offset += 4
    }

    public mutating func varint(_ value: UInt64) {
        var value = value
        while value >= 0x80 {
            byte(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        byte(UInt8(value))
    }

    /// `[u32 frameSize][u32 commandSize]`, then `BaseCommand`'s `type` and the tag and length of the
    /// command's own field (`field`, `bodySize` bytes follow): the start of every hand-written frame.
    /// `commandSize` is `ProtobufWire.commandSize(type:bodySize:)`; `frameSize` counts from after itself.
    public mutating func commandPrelude(frameSize: Int, commandSize: Int, type: UInt64, field: Int, bodySize: Int) {
        uint32(UInt32(frameSize))
        uint32(UInt32(commandSize))
        byte(ProtobufWire.tag(1, wireType: ProtobufWire.varint))
        varint(type)
        byte(ProtobufWire.tag(field, wireType: ProtobufWire.lengthDelimited))
        varint(UInt64(bodySize))
    }

    public mutating func uint16(_ value: UInt16) {
        precondition(offset + 2 <= bytes.count)
        bytes.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
        offset += 2
    }

    /// `MessageIdData{ledgerId, entryId, partition}` as length-delimited field `field`; `size` is
    /// `ProtobufWire.messageIDSize` of the same values.
    mutating func messageID(field: Int, size: Int, ledgerID: Int64, entryID: Int64, partition: Int32) {
        byte(ProtobufWire.tag(field, wireType: ProtobufWire.lengthDelimited))
        varint(UInt64(size))
        byte(ProtobufWire.tag(1, wireType: ProtobufWire.varint))
        varint(UInt64(bitPattern: ledgerID))
        byte(ProtobufWire.tag(2, wireType: ProtobufWire.varint))
        varint(UInt64(bitPattern: entryID))
        byte(ProtobufWire.tag(3, wireType: ProtobufWire.varint))
        varint(UInt64(bitPattern: Int64(partition)))
    }
}

/// A forward-only protobuf wire reader over a byte slice, for the hand-written decoders of the
/// hot path. Every read checks bounds; malformed input throws, never traps.
struct ProtobufReader {
    private var buffer: ByteBuffer

    init(_ buffer: ByteBuffer) { self.buffer = buffer }

    var isAtEnd: Bool { buffer.readableBytes == 0 }

    mutating func readVarint() throws(PulsarProtocolError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while shift < 70 {
            guard let byte = buffer.readInteger(as: UInt8.self) else {
                throw PulsarProtocolError(.malformedPayload, "truncated varint in MessageMetadata")
            }
            result |= UInt64(byte & 0x7f) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
        }
        throw PulsarProtocolError(.malformedPayload, "varint longer than 10 bytes in MessageMetadata")
    }

    /// The next field's number and wire type, nil at the end.
    mutating func readTag() throws(PulsarProtocolError) -> (field: UInt64, wireType: UInt64)? {
        guard !isAtEnd else { return nil }
        let key = try readVarint()
        return (key >> 3, key & 7)
    }

    mutating func readLengthDelimited() throws(PulsarProtocolError) -> ByteBuffer {
        let length = try readVarint()
        guard length <= UInt64(buffer.readableBytes), let slice = buffer.readSlice(length: Int(length)) else {
            throw PulsarProtocolError(.malformedPayload, "length-delimited field exceeds MessageMetadata")
        }
        return slice
    }

    /// Skips a field of `wireType` whose value is not needed.
    mutating func skip(wireType: UInt64) throws(PulsarProtocolError) {
        switch wireType {
        case 0: _ = try readVarint()
        case 1: try skipBytes(8)
        case 2: _ = try readLengthDelimited()
        case 5: try skipBytes(4)
        default: throw PulsarProtocolError(.malformedPayload, "unsupported wire type \(wireType) in MessageMetadata")
        }
    }

    private mutating func skipBytes(_ count: Int) throws(PulsarProtocolError) {
        guard buffer.readableBytes >= count else {
            throw PulsarProtocolError(.malformedPayload, "truncated fixed-size field in MessageMetadata")
        }
        buffer.moveReaderIndex(forwardBy: count)
    }
}

/// The fields of a SEND's `MessageMetadata` the broker needs to store the entry, decoded by hand
/// (no SwiftProtobuf message, no copy of the bytes); every other field is skipped. Matches
/// SwiftProtobuf's decoding of those fields (`HotPathEncodingTests`). A pure value.
public struct SendMetadataFields: Sendable, Equatable {
    public var producerName = ""
    public var sequenceID: UInt64 = 0
    public var publishTime: UInt64 = 0
    public var partitionKey: String?
    public var orderingKey: [UInt8]?
    public var numMessagesInBatch: Int32?
    public var deliverAtTime: Int64?
    public var numChunksFromMsg: Int32?
    public var chunkID: Int32?
    /// `replicated_from` (5) is set: a geo-replicator forwarded it, under the original producer's
    /// name and sequence id.
    public var isReplicated = false
    /// `marker_type` (20) is set: a broker's marker (geo-replication snapshots), not a message.
    public var isMarker = false
    // Read only with `consumerFields: true` (a client's receive path; the broker needs none of them).
    public var properties: [Property] = []
    /// `CompressionType` raw value (0 = NONE).
    public var compression: Int32 = 0
    public var uncompressedSize: UInt32 = 0
    /// 0 = not set.
    public var eventTime: UInt64 = 0
    /// The writer's schema version bytes (`schema_version` = 16); nil: none.
    public var schemaVersion: [UInt8]?

    /// Whether a SEND with these chunk fields carries a chunk before its message's last one
    /// (`chunk_id < num_chunks_from_msg - 1`), computed so that no value from the network can
    /// overflow. Without a chunk id it is no chunk at all.
    public static func isNonFinalChunk(chunkID: Int32?, numChunks: Int32?) -> Bool {
        guard let chunkID else { return false }
        return Int64(chunkID) < Int64(numChunks ?? 0) - 1
    }

    public struct Property: Sendable, Equatable {
        public var key: String
        public var value: String
    }

    public init() {}

    /// Parses the metadata at the front of a payload section's `[u32 size][MessageMetadata][payload]`.
    /// Throws like `PayloadSection.decodeMetadata` does: a size beyond the section, a malformed field,
    /// or a missing required field (producer_name, sequence_id, publish_time).
    public static func parse(
        _ checksummedBytes: ByteBuffer, consumerFields: Bool = false
    ) throws(PulsarProtocolError) -> SendMetadataFields {
        var view = checksummedBytes
        guard let size = view.readInteger(as: UInt32.self), size <= view.readableBytes,
              let metadata = view.readSlice(length: Int(size))
        else {
            throw PulsarProtocolError(.malformedPayload, "metadata size exceeds the payload frame")
        }
        var reader = ProtobufReader(metadata)
        var fields = SendMetadataFields()
        var seen: (name: Bool, sequence: Bool, time: Bool) = (false, false, false)
        while let (field, wireType) = try reader.readTag() {
            switch (field, wireType) {
            case (1, 2):
                fields.producerName = String(buffer: try reader.readLengthDelimited())
                seen.name = true
            case (2, 0):
                fields.sequenceID = try reader.readVarint()
                seen.sequence = true
            case (3, 0):
                fields.publishTime = try reader.readVarint()
                seen.time = true
            case (6, 2):
                fields.partitionKey = String(buffer: try reader.readLengthDelimited())
            case (5, 2):
                _ = try reader.readLengthDelimited()
                fields.isReplicated = true
            case (20, 0):
                _ = try reader.readVarint()
                fields.isMarker = true
            case (11, 0):
                fields.numMessagesInBatch = Int32(truncatingIfNeeded: try reader.readVarint())
            case (18, 2):
                var key = try reader.readLengthDelimited()
                fields.orderingKey = key.readBytes(length: key.readableBytes) ?? []
            case (19, 0):
                fields.deliverAtTime = Int64(bitPattern: try reader.readVarint())
            case (27, 0):
                fields.numChunksFromMsg = Int32(truncatingIfNeeded: try reader.readVarint())
            case (29, 0):
                fields.chunkID = Int32(truncatingIfNeeded: try reader.readVarint())
            case (4, 2) where consumerFields:
                var pair = ProtobufReader(try reader.readLengthDelimited())
                var key: String?
                var value: String?
                while let (pairField, pairWire) = try pair.readTag() {
                    switch (pairField, pairWire) {
                    case (1, 2): key = String(buffer: try pair.readLengthDelimited())
                    case (2, 2): value = String(buffer: try pair.readLengthDelimited())
                    default: try pair.skip(wireType: pairWire)
                    }
                }
                guard let key, let value else {
                    throw PulsarProtocolError(.malformedPayload, "MessageMetadata property misses its key or value")
                }
                fields.properties.append(Property(key: key, value: value))
            case (8, 0) where consumerFields:
                fields.compression = Int32(truncatingIfNeeded: try reader.readVarint())
            case (9, 0) where consumerFields:
                fields.uncompressedSize = UInt32(truncatingIfNeeded: try reader.readVarint())
            case (12, 0) where consumerFields:
                fields.eventTime = try reader.readVarint()
            case (16, 2) where consumerFields:
                fields.schemaVersion = Array(try reader.readLengthDelimited().readableBytesView)
            case (0, _):
                throw PulsarProtocolError(.malformedPayload, "field number 0 in MessageMetadata")
            default:
                try reader.skip(wireType: wireType)
            }
        }
        guard seen.name, seen.sequence, seen.time else {
            throw PulsarProtocolError(.malformedPayload, "MessageMetadata misses a required field (producer_name, sequence_id or publish_time)")
        }
        return fields
    }
}

/// The head of a MESSAGE frame (one per delivered entry), encoded by hand: size, `BaseCommand{type:
/// MESSAGE, message: {consumer_id, message_id: {ledgerId, entryId, partition}, redelivery_count?,
/// ack_set*}}`, magic and checksum. The same bytes as `PulsarFrameEncoder.writePayloadFrameHead`
/// with the SwiftProtobuf command (`HotPathEncodingTests`). Pure functions.
public enum MessageHeadEncoder {
    static let messageType: UInt64 = 9
    static let messageField = 9

    public static func write(
        consumerID: UInt64, ledgerID: Int64, entryID: Int64, partition: Int32, redeliveryCount: UInt32, ackSet: [Int64]?,
        checksum: UInt32, checksummedBytesCount: Int, into buffer: inout ByteBuffer
    ) {
        let messageIDSize = ProtobufWire.messageIDSize(ledgerID: ledgerID, entryID: entryID, partition: partition)
        var messageSize = 1 + ProtobufWire.varintSize(consumerID) + 1 + ProtobufWire.varintSize(UInt64(messageIDSize)) + messageIDSize
        if redeliveryCount > 0 { messageSize += 1 + ProtobufWire.varintSize(UInt64(redeliveryCount)) }
        for word in ackSet ?? [] { messageSize += 1 + ProtobufWire.varintSize(UInt64(bitPattern: word)) }
        let commandSize = ProtobufWire.commandSize(type: messageType, bodySize: messageSize)
        // One reservation and one exclusive access for the whole head (one per delivered entry).
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 14 + commandSize) { bytes in
            var out = RawWireWriter(bytes: bytes)
            out.commandPrelude(
                frameSize: 4 + commandSize + 2 + 4 + checksummedBytesCount, commandSize: commandSize, type: messageType,
                field: messageField, bodySize: messageSize)
            out.byte(ProtobufWire.tag(1, wireType: ProtobufWire.varint))
            out.varint(consumerID)
            out.messageID(field: 2, size: messageIDSize, ledgerID: ledgerID, entryID: entryID, partition: partition)
            if redeliveryCount > 0 {
                out.byte(ProtobufWire.tag(3, wireType: ProtobufWire.varint))
                out.varint(UInt64(redeliveryCount))
            }
            for word in ackSet ?? [] {
                out.byte(ProtobufWire.tag(4, wireType: ProtobufWire.varint))
                out.varint(UInt64(bitPattern: word))
            }
            out.uint16(PulsarLimits.checksumMagic)
            out.uint32(checksum)
            precondition(out.offset == 14 + commandSize, "message head size miscomputed")
            return out.offset
        }
    }
}
