import Foundation
import NIOCore
import PulsarProtocol
import Testing

@testable import MagnetarClient

/// The hand-written SEND encoding, checked by decoding it with the broker's decoder and SwiftProtobuf.
@Suite struct SendEncodingTests {
    private func decodeOne(_ frame: ByteBuffer) throws -> PulsarFrame {
        var buffer = frame
        var decoder = PulsarFrameDecoder()
        let decoded = try #require(try decoder.decode(buffer: &buffer))
        #expect(buffer.readableBytes == 0, "the frame is consumed exactly")
        return decoded
    }

    @Test func unbatchedSendRoundTrips() throws {
        let metadata = SendMetadata(producerName: "p-1", sequenceID: 300, publishTimeMs: 1_700_000_000_123, numMessagesInBatch: nil)
        let frame = SendFrameEncoder.encode(
            producerID: 7, metadata: metadata, body: ByteBuffer(string: "hello"), allocator: ByteBufferAllocator())
        let decoded = try decodeOne(frame)
        #expect(decoded.command.type == .send)
        #expect(decoded.command.send.producerID == 7)
        #expect(decoded.command.send.sequenceID == 300)
        #expect(!decoded.command.send.hasNumMessages)
        let payload = try #require(decoded.payload)
        #expect(payload.checksum != nil)
        #expect(payload.isChecksumValid)
        let decodedMetadata = try payload.decodeMetadata()
        #expect(decodedMetadata.producerName == "p-1")
        #expect(decodedMetadata.sequenceID == 300)
        #expect(decodedMetadata.publishTime == 1_700_000_000_123)
        #expect(!decodedMetadata.hasNumMessagesInBatch)
        var body = payload.checksummedBytes
        body.moveReaderIndex(forwardBy: 4 + Int(body.getInteger(at: body.readerIndex, as: UInt32.self)!))
        #expect(body.readString(length: body.readableBytes) == "hello")
    }

    @Test func schemaVersionIsField16() throws {
        var metadata = SendMetadata(producerName: "typed", sequenceID: 1, publishTimeMs: 2, numMessagesInBatch: nil)
        metadata.schemaVersion = [0, 0, 0, 0, 0, 0, 0, 3]
        let frame = SendFrameEncoder.encode(producerID: 1, metadata: metadata, body: ByteBuffer(string: "{}"), allocator: ByteBufferAllocator())
        let payload = try #require(try decodeOne(frame).payload)
        #expect(payload.isChecksumValid)
        let decoded = try payload.decodeMetadata()
        #expect(decoded.schemaVersion == Data([0, 0, 0, 0, 0, 0, 0, 3]))
        // The hand decoder of the receive path reads it too.
        let fields = try SendMetadataFields.parse(payload.checksummedBytes, consumerFields: true)
        #expect(fields.schemaVersion == [0, 0, 0, 0, 0, 0, 0, 3])
        #expect(SchemaInfo.version(fields.schemaVersion!) == 3)
    }

    @Test func varintsOfEveryWidth() {
        for value: UInt64 in [0, 1, 127, 128, 16_383, 16_384, UInt64(UInt32.max), UInt64.max] {
            var buffer = ByteBuffer()
            ProtobufWire.writeVarint(value, into: &buffer)
            #expect(buffer.readableBytes == ProtobufWire.varintSize(value))
            #expect(BatchPayload.readVarint(&buffer) == value)
        }
    }

    @Test func batchHasNumMessagesAndSingleMessageMetadata() throws {
        var batch = MessageBatch(firstSequenceID: 41, allocator: ByteBufferAllocator(), capacity: 64)
        let payloads = ["a", String(repeating: "b", count: 200), ""]
        for payload in payloads { batch.append(ByteBuffer(string: payload)) }
        #expect(batch.count == 3)
        #expect(batch.lastSequenceID == 43)
        let frame = batch.encode(producerID: 1, producerName: "batcher", publishTimeMs: 5, allocator: ByteBufferAllocator())
        let decoded = try decodeOne(frame)
        #expect(decoded.command.send.sequenceID == 41)
        #expect(decoded.command.send.numMessages == 3)
        let payload = try #require(decoded.payload)
        #expect(payload.isChecksumValid)
        let metadata = try payload.decodeMetadata()
        #expect(metadata.numMessagesInBatch == 3)
        #expect(metadata.sequenceID == 41)

        // The body, read the way every Pulsar client reads it: [u32 size][SingleMessageMetadata][payload].
        var body = payload.checksummedBytes
        body.moveReaderIndex(forwardBy: 4 + Int(body.getInteger(at: body.readerIndex, as: UInt32.self)!))
        var walk = body
        for (index, expected) in payloads.enumerated() {
            let sizeField = walk.readInteger(as: UInt32.self)
            let size = Int(try #require(sizeField))
            let bytes = walk.readBytes(length: size)
            let single = try Pulsar_Proto_SingleMessageMetadata(serializedBytes: try #require(bytes))
            #expect(single.payloadSize == Int32(expected.utf8.count))
            #expect(single.sequenceID == UInt64(41 + index))
            #expect(walk.readString(length: Int(single.payloadSize)) == expected)
        }
        #expect(walk.readableBytes == 0)

        // And our own splitter agrees.
        let singles = try BatchPayload.split(body, count: 3)
        #expect(singles.map { String(buffer: $0.payload) } == payloads)
        #expect(singles.map(\.sequenceID) == [41, 42, 43])
    }

    @Test func splitRejectsTruncatedBatches() {
        var body = ByteBuffer()
        body.writeInteger(UInt32(100))
        #expect(throws: BatchPayload.Failure.self) { try BatchPayload.split(body, count: 1) }
    }
}
