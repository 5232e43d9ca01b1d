import CRC32C
import NIOCore
import PulsarProtocol

/// Hand-written protobuf encoding of the few messages on the publish hot path: `BaseCommand{SEND}`,
/// `MessageMetadata` and `SingleMessageMetadata` (varints from `ProtobufWire`, PulsarProtocol). SwiftProtobuf
/// allocates a storage object per message; these write straight into the frame buffer. Unit tests decode the
/// output with SwiftProtobuf (`SendEncodingTests`), so the two cannot drift apart. Pure functions.
/// The metadata of one SEND entry (an unbatched message or a whole batch). A pure value.
struct SendMetadata: Sendable {
    var producerName: String
    var sequenceID: Int64
    var publishTimeMs: UInt64
    /// Set for a batch (even of one message): `num_messages_in_batch`.
    var numMessagesInBatch: Int32?

    private var producerNameUTF8Count: Int { producerName.utf8.count }

    /// Bytes of the serialized `MessageMetadata`.
    var encodedSize: Int {
        var size = 1 + ProtobufWire.varintSize(UInt64(producerNameUTF8Count)) + producerNameUTF8Count
        size += 1 + ProtobufWire.varintSize(UInt64(bitPattern: sequenceID))
        size += 1 + ProtobufWire.varintSize(publishTimeMs)
        if let numMessagesInBatch {
            size += 1 + ProtobufWire.varintSize(UInt64(bitPattern: Int64(numMessagesInBatch)))
        }
        return size
    }

    /// Writes `MessageMetadata{producer_name=1, sequence_id=2, publish_time=3, num_messages_in_batch=11}`.
    func write(into buffer: inout ByteBuffer) {
        buffer.writeInteger(ProtobufWire.tag(1, wireType: ProtobufWire.lengthDelimited))
        ProtobufWire.writeVarint(UInt64(producerNameUTF8Count), into: &buffer)
        buffer.writeString(producerName)
        buffer.writeInteger(ProtobufWire.tag(2, wireType: ProtobufWire.varint))
        ProtobufWire.writeVarint(UInt64(bitPattern: sequenceID), into: &buffer)
        buffer.writeInteger(ProtobufWire.tag(3, wireType: ProtobufWire.varint))
        ProtobufWire.writeVarint(publishTimeMs, into: &buffer)
        if let numMessagesInBatch {
            buffer.writeInteger(ProtobufWire.tag(11, wireType: ProtobufWire.varint))
            ProtobufWire.writeVarint(UInt64(bitPattern: Int64(numMessagesInBatch)), into: &buffer)
        }
    }
}

/// Builds whole SEND frames (notes §2.1):
/// `[u32 totalSize][u32 cmdSize][BaseCommand{SEND}][u16 0x0e01][u32 crc32c][u32 metadataSize][MessageMetadata][body]`,
/// where the CRC32C covers everything from `metadataSize` to the end. One buffer per frame; the body
/// is copied once into it. Pure functions.
enum SendFrameEncoder {
    /// Bytes of `CommandSend{producer_id=1, sequence_id=2, num_messages=3?}`.
    static func sendCommandSize(producerID: UInt64, sequenceID: Int64, numMessages: Int32?) -> Int {
        var size = 1 + ProtobufWire.varintSize(producerID) + 1 + ProtobufWire.varintSize(UInt64(bitPattern: sequenceID))
        if let numMessages { size += 1 + ProtobufWire.varintSize(UInt64(bitPattern: Int64(numMessages))) }
        return size
    }

    static func encode(
        producerID: UInt64, metadata: SendMetadata, body: ByteBuffer, allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        let sequenceID = metadata.sequenceID
        let numMessages = metadata.numMessagesInBatch
        let sendSize = sendCommandSize(producerID: producerID, sequenceID: sequenceID, numMessages: numMessages)
        // BaseCommand{type=1: SEND(6), send=6: CommandSend}
        let commandSize = 2 + 1 + ProtobufWire.varintSize(UInt64(sendSize)) + sendSize
        let metadataSize = metadata.encodedSize
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
        buffer.writeInteger(PulsarLimits.checksumMagic)
        let checksumIndex = buffer.writerIndex
        buffer.writeInteger(UInt32(0))  // checksum, filled in below
        let checksummedStart = buffer.writerIndex
        buffer.writeInteger(UInt32(metadataSize))
        metadata.write(into: &buffer)
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
        let sequenceID = UInt64(bitPattern: firstSequenceID + Int64(count))
        let payloadSize = UInt64(payload.readableBytes)
        let singleSize = 1 + ProtobufWire.varintSize(payloadSize) + 1 + ProtobufWire.varintSize(sequenceID)
        body.writeInteger(UInt32(singleSize))
        body.writeInteger(ProtobufWire.tag(3, wireType: ProtobufWire.varint))
        ProtobufWire.writeVarint(payloadSize, into: &body)
        body.writeInteger(ProtobufWire.tag(8, wireType: ProtobufWire.varint))
        ProtobufWire.writeVarint(sequenceID, into: &body)
        body.writeImmutableBuffer(payload)
        count += 1
    }

    /// The SEND frame carrying this batch.
    func encode(producerID: UInt64, producerName: String, publishTimeMs: UInt64, allocator: ByteBufferAllocator) -> ByteBuffer {
        let metadata = SendMetadata(
            producerName: producerName, sequenceID: firstSequenceID, publishTimeMs: publishTimeMs,
            numMessagesInBatch: Int32(count))
        return SendFrameEncoder.encode(producerID: producerID, metadata: metadata, body: body, allocator: allocator)
    }
}
