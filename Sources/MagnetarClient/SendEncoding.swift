import CRC32C
import NIOCore
import PayloadCompression
import PulsarProtocol

/// Hand-written protobuf encoding of the few messages on the publish hot path: `BaseCommand{SEND}`,
/// `MessageMetadata` and `SingleMessageMetadata` (varints from `ProtobufWire`, PulsarProtocol). SwiftProtobuf
/// allocates a storage object per message; these write straight into the frame buffer. Unit tests decode the
/// output with SwiftProtobuf (`SendEncodingTests`), so the two cannot drift apart. Pure functions.
/// What the application sends: the payload and its optional per-message fields (`partition_key`,
/// `properties`, `event_time` of `MessageMetadata`, or of `SingleMessageMetadata` inside a batch). A pure value.
public struct OutgoingMessage: Sendable {
    public var payload: ByteBuffer
    /// Routes the message on a partitioned topic (hash of the key) and on Key_Shared subscriptions.
    public var key: String?
    public var properties: [String: String]
    /// Application event time, ms since the epoch.
    public var eventTimeMs: UInt64?

    /// The transaction the message is sent in (`Producer.send(_:transaction:)`): never batched.
    var transaction: (mostBits: UInt64, leastBits: UInt64)?

    public init(payload: ByteBuffer, key: String? = nil, properties: [String: String] = [:], eventTimeMs: UInt64? = nil) {
        self.payload = payload
        self.key = key
        self.properties = properties
        self.eventTimeMs = eventTimeMs
    }
}

/// Sizes and writers for the length-delimited protobuf fields shared by both metadata messages. Pure.
enum MetadataFields {
    static func stringFieldSize(_ value: String) -> Int {
        let count = value.utf8.count
        return 1 + ProtobufWire.varintSize(UInt64(count)) + count
    }

    static func writeString(_ value: String, field: Int, into buffer: inout ByteBuffer) {
        buffer.writeInteger(ProtobufWire.tag(field, wireType: ProtobufWire.lengthDelimited))
        ProtobufWire.writeVarint(UInt64(value.utf8.count), into: &buffer)
        buffer.writeString(value)
    }

    /// `KeyValue{key=1, value=2}` body size.
    static func keyValueSize(_ key: String, _ value: String) -> Int { stringFieldSize(key) + stringFieldSize(value) }

    /// Bytes of the repeated `KeyValue` field (sorted by key so the encoding is deterministic).
    static func propertiesSize(_ properties: [(String, String)]) -> Int {
        properties.reduce(0) { total, pair in
            let body = keyValueSize(pair.0, pair.1)
            return total + 1 + ProtobufWire.varintSize(UInt64(body)) + body
        }
    }

    static func writeProperties(_ properties: [(String, String)], field: Int, into buffer: inout ByteBuffer) {
        for (key, value) in properties {
            buffer.writeInteger(ProtobufWire.tag(field, wireType: ProtobufWire.lengthDelimited))
            ProtobufWire.writeVarint(UInt64(keyValueSize(key, value)), into: &buffer)
            writeString(key, field: 1, into: &buffer)
            writeString(value, field: 2, into: &buffer)
        }
    }

    static func sorted(_ properties: [String: String]) -> [(String, String)] {
        properties.isEmpty ? [] : properties.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }
}

/// The metadata of one SEND entry (an unbatched message or a whole batch). A pure value.
struct SendMetadata: Sendable {
    var producerName: String
    var sequenceID: Int64
    var publishTimeMs: UInt64
    /// Set for a batch (even of one message): `num_messages_in_batch`.
    var numMessagesInBatch: Int32?
    var properties: [(String, String)] = []
    var partitionKey: String?
    var compression: CompressionType = .none
    /// Set with `compression`: the payload's size before compression.
    var uncompressedSizeBytes: Int = 0
    var eventTimeMs: UInt64?
    /// The producer's schema version (PRODUCER_SUCCESS's bytes), `schema_version` = 16.
    var schemaVersion: [UInt8]?

    /// Field 16's tag, a two-byte varint (16 << 3 | length-delimited).
    static let schemaVersionTag: UInt64 = 16 << 3 | 2

    /// Bytes of the serialized `MessageMetadata`.
    var encodedSize: Int {
        var size = MetadataFields.stringFieldSize(producerName)
        size += 1 + ProtobufWire.varintSize(UInt64(bitPattern: sequenceID))
        size += 1 + ProtobufWire.varintSize(publishTimeMs)
        size += MetadataFields.propertiesSize(properties)
        if let partitionKey { size += MetadataFields.stringFieldSize(partitionKey) }
        if compression != .none {
            size += 1 + ProtobufWire.varintSize(UInt64(compression.rawValue))
            size += 1 + ProtobufWire.varintSize(UInt64(uncompressedSizeBytes))
        }
        if let numMessagesInBatch {
            size += 1 + ProtobufWire.varintSize(UInt64(bitPattern: Int64(numMessagesInBatch)))
        }
        if let eventTimeMs { size += 1 + ProtobufWire.varintSize(eventTimeMs) }
        if let schemaVersion {
            size += ProtobufWire.varintSize(Self.schemaVersionTag) + ProtobufWire.varintSize(UInt64(schemaVersion.count)) + schemaVersion.count
        }
        return size
    }

    /// Writes `MessageMetadata{producer_name=1, sequence_id=2, publish_time=3, properties=4, partition_key=6,
    /// compression=8, uncompressed_size=9, num_messages_in_batch=11, event_time=12, schema_version=16}`.
    func write(into buffer: inout ByteBuffer) {
        MetadataFields.writeString(producerName, field: 1, into: &buffer)
        buffer.writeInteger(ProtobufWire.tag(2, wireType: ProtobufWire.varint))
        ProtobufWire.writeVarint(UInt64(bitPattern: sequenceID), into: &buffer)
        buffer.writeInteger(ProtobufWire.tag(3, wireType: ProtobufWire.varint))
        ProtobufWire.writeVarint(publishTimeMs, into: &buffer)
        MetadataFields.writeProperties(properties, field: 4, into: &buffer)
        if let partitionKey { MetadataFields.writeString(partitionKey, field: 6, into: &buffer) }
        if compression != .none {
            buffer.writeInteger(ProtobufWire.tag(8, wireType: ProtobufWire.varint))
            ProtobufWire.writeVarint(UInt64(compression.rawValue), into: &buffer)
            buffer.writeInteger(ProtobufWire.tag(9, wireType: ProtobufWire.varint))
            ProtobufWire.writeVarint(UInt64(uncompressedSizeBytes), into: &buffer)
        }
        if let numMessagesInBatch {
            buffer.writeInteger(ProtobufWire.tag(11, wireType: ProtobufWire.varint))
            ProtobufWire.writeVarint(UInt64(bitPattern: Int64(numMessagesInBatch)), into: &buffer)
        }
        if let eventTimeMs {
            buffer.writeInteger(ProtobufWire.tag(12, wireType: ProtobufWire.varint))
            ProtobufWire.writeVarint(eventTimeMs, into: &buffer)
        }
        if let schemaVersion {
            ProtobufWire.writeVarint(Self.schemaVersionTag, into: &buffer)
            ProtobufWire.writeVarint(UInt64(schemaVersion.count), into: &buffer)
            buffer.writeBytes(schemaVersion)
        }
    }
}

/// Builds whole SEND frames (notes §2.1):
/// `[u32 totalSize][u32 cmdSize][BaseCommand{SEND}][u16 0x0e01][u32 crc32c][u32 metadataSize][MessageMetadata][body]`,
/// where the CRC32C covers everything from `metadataSize` to the end. One buffer per frame; the body
/// is copied once into it. Pure functions.
enum SendFrameEncoder {
    /// Bytes of `CommandSend{producer_id=1, sequence_id=2, num_messages=3?, txnid_least_bits=4?, txnid_most_bits=5?}`.
    static func sendCommandSize(
        producerID: UInt64, sequenceID: Int64, numMessages: Int32?, transaction: (mostBits: UInt64, leastBits: UInt64)? = nil
    ) -> Int {
        var size = 1 + ProtobufWire.varintSize(producerID) + 1 + ProtobufWire.varintSize(UInt64(bitPattern: sequenceID))
        if let numMessages { size += 1 + ProtobufWire.varintSize(UInt64(bitPattern: Int64(numMessages))) }
        if let transaction {
            size += 2 + ProtobufWire.varintSize(transaction.leastBits) + ProtobufWire.varintSize(transaction.mostBits)
        }
        return size
    }

    /// A SEND frame around an already serialized `MessageMetadata` (a replicator forwarding a stored
    /// entry with its metadata rewritten): the CommandSend carries this producer's `sequenceID` and
    /// `numMessages`, the metadata keeps the original producer's name and sequence id.
    static func encode(
        producerID: UInt64, sequenceID: Int64, numMessages: Int32?, serializedMetadata: ByteBuffer, body: ByteBuffer,
        allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        frame(
            producerID: producerID, sequenceID: sequenceID, numMessages: numMessages, metadataSize: serializedMetadata.readableBytes,
            body: body, allocator: allocator
        ) { $0.writeImmutableBuffer(serializedMetadata) }
    }

    static func encode(
        producerID: UInt64, metadata: SendMetadata, body: ByteBuffer, transaction: (mostBits: UInt64, leastBits: UInt64)? = nil,
        allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        frame(
            producerID: producerID, sequenceID: metadata.sequenceID, numMessages: metadata.numMessagesInBatch,
            metadataSize: metadata.encodedSize, body: body, transaction: transaction, allocator: allocator
        ) { metadata.write(into: &$0) }
    }

    /// The frame, with `writeMetadata` writing exactly `metadataSize` bytes of `MessageMetadata`.
    @inline(__always)
    private static func frame(
        producerID: UInt64, sequenceID: Int64, numMessages: Int32?, metadataSize: Int, body: ByteBuffer,
        transaction: (mostBits: UInt64, leastBits: UInt64)? = nil, allocator: ByteBufferAllocator,
        writeMetadata: (inout ByteBuffer) -> Void
    ) -> ByteBuffer {
        let sendSize = sendCommandSize(producerID: producerID, sequenceID: sequenceID, numMessages: numMessages, transaction: transaction)
        // BaseCommand{type=1: SEND(6), send=6: CommandSend}
        let commandSize = 2 + 1 + ProtobufWire.varintSize(UInt64(sendSize)) + sendSize
        let checksummedSize = 4 + metadataSize + body.readableBytes
        let totalSize = 4 + commandSize + 2 + 4 + checksummedSize
        var buffer = allocator.buffer(capacity: 4 + totalSize)
        buffer.writeInteger(UInt32(totalSize))
        buffer.writeInteger(UInt32(commandSize))
        buffer.writeInteger(ProtobufWire.tag(1, wireType: ProtobufWire.varint))
        buffer.writeInteger(UInt8(Pulsar_Proto_BaseCommand.TypeEnum.send.rawValue))
        buffer.writeInteger(ProtobufWire.tag(6, wireType: ProtobufWire.lengthDelimited))
        ProtobufWire.writeVarint(UInt64(sendSize), into: &buffer)
        buffer.writeInteger(ProtobufWire.tag(1, wireType: ProtobufWire.varint))
        ProtobufWire.writeVarint(producerID, into: &buffer)
        buffer.writeInteger(ProtobufWire.tag(2, wireType: ProtobufWire.varint))
        ProtobufWire.writeVarint(UInt64(bitPattern: sequenceID), into: &buffer)
        if let numMessages {
            buffer.writeInteger(ProtobufWire.tag(3, wireType: ProtobufWire.varint))
            ProtobufWire.writeVarint(UInt64(bitPattern: Int64(numMessages)), into: &buffer)
        }
        if let transaction {
            buffer.writeInteger(ProtobufWire.tag(4, wireType: ProtobufWire.varint))
            ProtobufWire.writeVarint(transaction.leastBits, into: &buffer)
            buffer.writeInteger(ProtobufWire.tag(5, wireType: ProtobufWire.varint))
            ProtobufWire.writeVarint(transaction.mostBits, into: &buffer)
        }
        buffer.writeInteger(PulsarLimits.checksumMagic)
        let checksumIndex = buffer.writerIndex
        buffer.writeInteger(UInt32(0))  // checksum, filled in below
        let checksummedStart = buffer.writerIndex
        buffer.writeInteger(UInt32(metadataSize))
        writeMetadata(&buffer)
        buffer.writeImmutableBuffer(body)
        let checksummedOffset = checksummedStart - buffer.readerIndex
        let checksum = buffer.withUnsafeReadableBytes { bytes in
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[checksummedOffset...]))
        }
        buffer.setInteger(checksum, at: checksumIndex)
        return buffer
    }
}

/// The messages of one batch being collected by a producer (notes §4.4): the body is
/// n × `[u32 singleMetadataSize][SingleMessageMetadata{payload_size=3, sequence_id=8}][payload]`.
/// Owned by one producer on its event loop; a pure value.
struct MessageBatch: Sendable {
    private(set) var firstSequenceID: Int64
    private(set) var count: Int = 0
    private(set) var body: ByteBuffer

    init(firstSequenceID: Int64, allocator: ByteBufferAllocator, capacity: Int) {
        self.firstSequenceID = firstSequenceID
        self.body = allocator.buffer(capacity: capacity)
    }

    var lastSequenceID: Int64 { firstSequenceID + Int64(count) - 1 }
    var sizeBytes: Int { body.readableBytes }

    /// Appends one message; its sequence id is `firstSequenceID + count`.
    mutating func append(_ payload: ByteBuffer) {
        append(OutgoingMessage(payload: payload))
    }

    /// Appends one message with its `SingleMessageMetadata{properties=1, partition_key=2, payload_size=3,
    /// event_time=5, sequence_id=8}`.
    mutating func append(_ message: OutgoingMessage) {
        let sequenceID = UInt64(bitPattern: firstSequenceID + Int64(count))
        let payload = message.payload
        let payloadSize = UInt64(payload.readableBytes)
        if message.key == nil, message.eventTimeMs == nil, message.properties.isEmpty {
            // The common case (and `magnetar perf`'s): only payload_size and sequence_id.
            let singleSize = 1 + ProtobufWire.varintSize(payloadSize) + 1 + ProtobufWire.varintSize(sequenceID)
            // One reservation and one exclusive access for the header (this runs once per message).
            body.writeWithUnsafeMutableBytes(minimumWritableBytes: 4 + singleSize) { bytes in
                var out = RawWireWriter(bytes: bytes)
                out.uint32(UInt32(singleSize))
                out.byte(ProtobufWire.tag(3, wireType: ProtobufWire.varint))
                out.varint(payloadSize)
                out.byte(ProtobufWire.tag(8, wireType: ProtobufWire.varint))
                out.varint(sequenceID)
                return out.offset
            }
            body.writeImmutableBuffer(payload)
            count += 1
            return
        }
        let properties = MetadataFields.sorted(message.properties)
        var singleSize = 1 + ProtobufWire.varintSize(payloadSize) + 1 + ProtobufWire.varintSize(sequenceID)
        singleSize += MetadataFields.propertiesSize(properties)
        if let key = message.key { singleSize += MetadataFields.stringFieldSize(key) }
        if let eventTime = message.eventTimeMs { singleSize += 1 + ProtobufWire.varintSize(eventTime) }
        body.writeInteger(UInt32(singleSize))
        MetadataFields.writeProperties(properties, field: 1, into: &body)
        if let key = message.key { MetadataFields.writeString(key, field: 2, into: &body) }
        body.writeInteger(ProtobufWire.tag(3, wireType: ProtobufWire.varint))
        ProtobufWire.writeVarint(payloadSize, into: &body)
        if let eventTime = message.eventTimeMs {
            body.writeInteger(ProtobufWire.tag(5, wireType: ProtobufWire.varint))
            ProtobufWire.writeVarint(eventTime, into: &body)
        }
        body.writeInteger(ProtobufWire.tag(8, wireType: ProtobufWire.varint))
        ProtobufWire.writeVarint(sequenceID, into: &body)
        body.writeImmutableBuffer(payload)
        count += 1
    }

    /// The SEND frame carrying this batch, its body compressed with `compression`.
    func encode(
        producerID: UInt64, producerName: String, publishTimeMs: UInt64, compression: CompressionType = .none,
        schemaVersion: [UInt8]? = nil, allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        var metadata = SendMetadata(
            producerName: producerName, sequenceID: firstSequenceID, publishTimeMs: publishTimeMs,
            numMessagesInBatch: Int32(count), schemaVersion: schemaVersion)
        var entryBody = body
        if compression != .none {
            metadata.compression = compression
            metadata.uncompressedSizeBytes = body.readableBytes
            entryBody = PayloadCodec.compress(body, type: compression, allocator: allocator)
        }
        return SendFrameEncoder.encode(producerID: producerID, metadata: metadata, body: entryBody, allocator: allocator)
    }
}
