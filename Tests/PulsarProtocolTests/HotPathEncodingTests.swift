import Foundation
import NIOCore
import SwiftProtobuf
import Testing

@testable import PulsarProtocol

@Suite struct HotPathEncodingTests {
    /// The hand-written SEND_RECEIPT is byte for byte what SwiftProtobuf writes, for small, large and
    /// negative values (partition -1 of a non-partitioned topic is sign-extended).
    @Test(arguments: [
        (UInt64(0), UInt64(0), Int64(0), Int64(0), Int32(-1)),
        (1, 127, 128, 16_383, 0),
        (UInt64.max, UInt64.max >> 1, Int64.max, 50_000, 7),
        (42, 1_000_000, 3, -1, Int32.max),
    ])
    func sendReceiptMatchesSwiftProtobuf(values: (UInt64, UInt64, Int64, Int64, Int32)) throws {
        let (producerID, sequenceID, ledgerID, entryID, partition) = values
        var command = Pulsar_Proto_BaseCommand()
        command.type = .sendReceipt
        command.sendReceipt.producerID = producerID
        command.sendReceipt.sequenceID = sequenceID
        command.sendReceipt.messageID.ledgerID = UInt64(bitPattern: ledgerID)
        command.sendReceipt.messageID.entryID = UInt64(bitPattern: entryID)
        command.sendReceipt.messageID.partition = partition
        let expected = PulsarFrameEncoder.encodeCommand(command)
        var written = ByteBuffer()
        SendReceiptEncoder.write(
            producerID: producerID, sequenceID: sequenceID, ledgerID: ledgerID, entryID: entryID, partition: partition,
            into: &written)
        #expect(written == expected)
    }

    @Test func varintSizesMatchWrittenBytes() {
        for value: UInt64 in [0, 1, 127, 128, 300, 16_383, 16_384, 1 << 35, UInt64.max] {
            var buffer = ByteBuffer()
            ProtobufWire.writeVarint(value, into: &buffer)
            #expect(buffer.readableBytes == ProtobufWire.varintSize(value))
        }
    }
}

@Suite struct SendMetadataFieldsTests {
    private func section(_ metadata: Pulsar_Proto_MessageMetadata) throws -> ByteBuffer {
        try PulsarFrameEncoder.checksummedBytes(metadata: metadata, payload: ByteBuffer(string: "payload"))
    }

    /// The hand decoder reads what SwiftProtobuf reads, with and without optional fields, and
    /// skips the fields it does not need (properties, compression, event time, uuid...).
    @Test func matchesSwiftProtobuf() throws {
        var full = Pulsar_Proto_MessageMetadata()
        full.producerName = "standalone-0-7"
        full.sequenceID = 1_234_567
        full.publishTime = 1_790_000_000_123
        full.partitionKey = "user-42"
        full.orderingKey = Data([0, 1, 2, 255])
        full.numMessagesInBatch = 1_000
        full.deliverAtTime = -5
        full.numChunksFromMsg = 3
        full.chunkID = 1
        var property = Pulsar_Proto_KeyValue()
        property.key = "k"
        property.value = "v"
        full.properties = [property]
        full.compression = .zstd
        full.uncompressedSize = 99
        full.eventTime = 17
        var minimal = Pulsar_Proto_MessageMetadata()
        minimal.producerName = "p"
        minimal.sequenceID = 0
        minimal.publishTime = 1
        for metadata in [full, minimal] {
            let fields = try SendMetadataFields.parse(try section(metadata))
            let decoded = try PayloadSection(checksum: nil, checksummedBytes: try section(metadata)).decodeMetadata()
            #expect(fields.producerName == decoded.producerName)
            #expect(fields.sequenceID == decoded.sequenceID)
            #expect(fields.publishTime == decoded.publishTime)
            #expect(fields.partitionKey == (decoded.hasPartitionKey ? decoded.partitionKey : nil))
            #expect(fields.orderingKey == (decoded.hasOrderingKey ? [UInt8](decoded.orderingKey) : nil))
            #expect(fields.numMessagesInBatch == (decoded.hasNumMessagesInBatch ? decoded.numMessagesInBatch : nil))
            #expect(fields.deliverAtTime == (decoded.hasDeliverAtTime ? decoded.deliverAtTime : nil))
            #expect(fields.numChunksFromMsg == (decoded.hasNumChunksFromMsg ? decoded.numChunksFromMsg : nil))
            #expect(fields.chunkID == (decoded.hasChunkID ? decoded.chunkID : nil))
            // The broker does not read what only consumers need.
            #expect(fields.properties.isEmpty && fields.compression == 0 && fields.eventTime == 0)

            // A client's receive path reads those too, as SwiftProtobuf does.
            let consumer = try SendMetadataFields.parse(try section(metadata), consumerFields: true)
            #expect(consumer.properties == decoded.properties.map { SendMetadataFields.Property(key: $0.key, value: $0.value) })
            #expect(consumer.compression == Int32(decoded.compression.rawValue))
            #expect(consumer.uncompressedSize == decoded.uncompressedSize)
            #expect(consumer.eventTime == decoded.eventTime)
            #expect(consumer.producerName == fields.producerName && consumer.sequenceID == fields.sequenceID)
            #expect(consumer.partitionKey == fields.partitionKey && consumer.numMessagesInBatch == fields.numMessagesInBatch)
        }
    }

    @Test func malformedMetadataThrows() throws {
        var missingRequired = Pulsar_Proto_MessageMetadata()
        missingRequired.producerName = "p"
        let partial: [UInt8] = try missingRequired.serializedBytes(partial: true)
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(partial.count))
        buffer.writeBytes(partial)
        #expect(throws: PulsarProtocolError.self) { try SendMetadataFields.parse(buffer) }

        var oversized = ByteBuffer()
        oversized.writeInteger(UInt32(1_000))
        oversized.writeBytes([0x0a, 0x01])
        #expect(throws: PulsarProtocolError.self) { try SendMetadataFields.parse(oversized) }

        // A length-delimited field claiming more bytes than the metadata holds, and a runaway varint.
        for bad: [UInt8] in [[0x0a, 0x7f, 0x41], [0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]] {
            var buffer = ByteBuffer()
            buffer.writeInteger(UInt32(bad.count))
            buffer.writeBytes(bad)
            #expect(throws: PulsarProtocolError.self) { try SendMetadataFields.parse(buffer) }
        }
    }

    @Test func randomBytesNeverTrap() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2_000 {
            let count = Int.random(in: 0...40, using: &generator)
            let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
            var buffer = ByteBuffer()
            buffer.writeInteger(UInt32(bytes.count))
            buffer.writeBytes(bytes)
            _ = try? SendMetadataFields.parse(buffer)
        }
    }
}

@Suite struct FastSendDecodingTests {
    private func decode(_ send: Pulsar_Proto_CommandSend) throws -> PulsarFrame {
        var command = Pulsar_Proto_BaseCommand()
        command.type = .send
        command.send = send
        var metadata = Pulsar_Proto_MessageMetadata()
        metadata.producerName = "p"
        metadata.sequenceID = send.sequenceID
        metadata.publishTime = 1
        let bytes = try PulsarFrameEncoder.checksummedBytes(metadata: metadata, payload: ByteBuffer(string: "x"))
        var buffer = PulsarFrameEncoder.encodePayloadFrame(command, payload: PayloadSection(checksum: nil, checksummedBytes: bytes))
        var decoder = PulsarFrameDecoder()
        return try #require(try decoder.decode(buffer: &buffer))
    }

    /// Plain SENDs take the hand-decoded path; SENDs with transaction ids or a message id fall back
    /// to SwiftProtobuf; both report the same fields.
    @Test func sendFieldsMatchSwiftProtobuf() throws {
        var plain = Pulsar_Proto_CommandSend()
        plain.producerID = 3
        plain.sequenceID = 1 << 40
        var batch = plain
        batch.numMessages = 1_000
        batch.highestSequenceID = (1 << 40) + 999
        var transactional = plain
        transactional.txnidLeastBits = 7
        transactional.txnidMostBits = 1
        for send in [plain, batch, transactional] {
            let frame = try decode(send)
            #expect(frame.command.type == .send)
            #expect(frame.send == SendCommandFields(send))
            #expect(frame.command.send == send)
            #expect(frame.payload != nil)
        }
        #expect(SendCommandFields.decodeCommon(ByteBuffer(bytes: [0x08, 0x06, 0x32, 0x02, 0x08, 0x01])) == nil)  // no sequence_id
    }
}

@Suite struct MessageHeadEncoderTests {
    /// Byte for byte what SwiftProtobuf writes, with and without redelivery count and ack set.
    static let cases: [(UInt32, [Int64]?)] = [(0, nil), (3, [-1, 0x7f, Int64.min]), (1, [])]

    @Test(arguments: 0..<3)
    func matchesSwiftProtobuf(index: Int) {
        let (redeliveryCount, ackSet) = Self.cases[index]
        var command = Pulsar_Proto_BaseCommand()
        command.type = .message
        command.message.consumerID = 12
        command.message.messageID.ledgerID = 345
        command.message.messageID.entryID = 67_890
        command.message.messageID.partition = -1
        if redeliveryCount > 0 { command.message.redeliveryCount = redeliveryCount }
        if let ackSet { command.message.ackSet = ackSet }
        var expected = ByteBuffer()
        PulsarFrameEncoder.writePayloadFrameHead(command, checksum: 0xdead_beef, checksummedBytesCount: 1_000, into: &expected)
        var written = ByteBuffer()
        MessageHeadEncoder.write(
            consumerID: 12, ledgerID: 345, entryID: 67_890, partition: -1, redeliveryCount: redeliveryCount, ackSet: ackSet,
            checksum: 0xdead_beef, checksummedBytesCount: 1_000, into: &written)
        #expect(written == expected)
    }
}
