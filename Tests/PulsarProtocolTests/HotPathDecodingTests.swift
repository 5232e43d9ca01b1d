import NIOCore
import SwiftProtobuf
import Testing

@testable import PulsarProtocol

/// SEND_RECEIPT and MESSAGE read by hand give what SwiftProtobuf gives; unusual shapes fall back
/// to SwiftProtobuf with the same result.
@Suite struct HotPathDecodingTests {
    private func frame(_ command: Pulsar_Proto_BaseCommand, payload: ByteBuffer? = nil) throws -> PulsarFrame {
        var bytes: ByteBuffer
        if let payload {
            bytes = PulsarFrameEncoder.encodePayloadFrame(command, payload: PayloadSection(checksum: nil, checksummedBytes: payload))
        } else {
            bytes = PulsarFrameEncoder.encodeCommand(command)
        }
        var decoder = PulsarFrameDecoder()
        let decoded = try #require(try decoder.decode(buffer: &bytes))
        #expect(bytes.readableBytes == 0)
        return decoded
    }

    @Test func receiptsAreReadByHandAndMatchSwiftProtobuf() throws {
        var command = Pulsar_Proto_BaseCommand()
        command.type = .sendReceipt
        command.sendReceipt.producerID = 9
        command.sendReceipt.sequenceID = 1 << 33
        command.sendReceipt.messageID.ledgerID = 17
        command.sendReceipt.messageID.entryID = 0
        command.sendReceipt.messageID.partition = -1
        let decoded = try frame(command)
        #expect(decoded.type == .sendReceipt)
        #expect(decoded.receipt == SendReceiptFields(
            producerID: 9, sequenceID: 1 << 33, messageID: MessageIDFields(ledgerID: 17, entryID: 0, partition: -1)))
        #expect(decoded.command == command)

        var withHighest = command
        withHighest.sendReceipt.highestSequenceID = (1 << 33) + 99
        withHighest.sendReceipt.messageID.batchIndex = 3
        withHighest.sendReceipt.messageID.partition = 2
        let second = try frame(withHighest)
        #expect(second.receipt?.highestSequenceID == (1 << 33) + 99)
        #expect(second.receipt?.messageID == MessageIDFields(ledgerID: 17, entryID: 0, partition: 2, batchIndex: 3))
        #expect(second.command == withHighest)

        // A chunked message id is not the usual shape: SwiftProtobuf decodes it.
        var chunked = command
        chunked.sendReceipt.messageID.firstChunkMessageID.ledgerID = 1
        chunked.sendReceipt.messageID.firstChunkMessageID.entryID = 2
        let third = try frame(chunked)
        #expect(third.receipt == nil)
        #expect(third.command == chunked)
    }

    @Test func deliveriesAreReadByHandAndMatchSwiftProtobuf() throws {
        var command = Pulsar_Proto_BaseCommand()
        command.type = .message
        command.message.consumerID = 4
        command.message.messageID.ledgerID = 123_456
        command.message.messageID.entryID = 789
        command.message.messageID.partition = 5
        let payload = try PulsarFrameEncoder.checksummedBytes(metadata: {
            var metadata = Pulsar_Proto_MessageMetadata()
            metadata.producerName = "p"
            metadata.sequenceID = 1
            metadata.publishTime = 2
            return metadata
        }(), payload: ByteBuffer(string: "body"))
        for (redeliveryCount, ackSet, epoch) in [(UInt32(0), [Int64](), UInt64?.none), (2, [-1, 0x7f], 7)] {
            var variant = command
            if redeliveryCount > 0 { variant.message.redeliveryCount = redeliveryCount }
            variant.message.ackSet = ackSet
            if let epoch { variant.message.consumerEpoch = epoch }
            let decoded = try frame(variant, payload: payload)
            #expect(decoded.type == .message)
            #expect(decoded.message == MessageCommandFields(
                consumerID: 4, messageID: MessageIDFields(ledgerID: 123_456, entryID: 789, partition: 5),
                redeliveryCount: redeliveryCount > 0 ? redeliveryCount : nil, ackSet: ackSet, consumerEpoch: epoch))
            #expect(decoded.command == variant)
            #expect(decoded.payload?.checksummedBytes == payload)
        }
    }

    @Test func truncatedOrOddCommandsAreNotReadByHand() {
        // type MESSAGE with no body, a receipt without sequence id, random tails.
        #expect(MessageCommandFields.decodeCommon(ByteBuffer(bytes: [0x08, 0x09])) == nil)
        #expect(SendReceiptFields.decodeCommon(ByteBuffer(bytes: [0x08, 0x07, 0x3a, 0x02, 0x08, 0x01])) == nil)
        #expect(SendReceiptFields.decodeCommon(ByteBuffer(bytes: [0x08, 0x07, 0x3a, 0x05, 0x08, 0x01, 0x10])) == nil)
        var random = SystemRandomNumberGenerator()
        for _ in 0..<2_000 {
            let count = Int.random(in: 0..<24, using: &random)
            var bytes: [UInt8] = [0x08, Bool.random(using: &random) ? 0x07 : 0x09]
            bytes += (0..<count).map { _ in UInt8.random(in: 0...255, using: &random) }
            _ = SendReceiptFields.decodeCommon(ByteBuffer(bytes: bytes))
            _ = MessageCommandFields.decodeCommon(ByteBuffer(bytes: bytes))
        }
    }
}
