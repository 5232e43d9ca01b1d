import NIOCore
import PulsarProtocol
import Testing

@testable import MagnetarClient

/// The hand-written ACK frame against the SwiftProtobuf-built one: same bytes, and the same command
/// once both are decoded by the broker's frame decoder.
@Suite struct AckEncodingTests {
    private func decodeOne(_ frame: ByteBuffer) throws -> Pulsar_Proto_BaseCommand {
        var buffer = frame
        var decoder = PulsarFrameDecoder()
        let decoded = try #require(try decoder.decode(buffer: &buffer))
        #expect(buffer.readableBytes == 0, "the frame is consumed exactly")
        #expect(decoded.payload == nil)
        return decoded.command
    }

    /// The same ack built by SwiftProtobuf (`ClientCommands.ack`, what the client sent before).
    private func reference(
        consumerID: UInt64, cumulative: Bool, ids: [AckedMessageID], validationError: Pulsar_Proto_CommandAck.ValidationError?
    ) -> ByteBuffer {
        let data = ids.map { id -> Pulsar_Proto_MessageIdData in
            var data = Pulsar_Proto_MessageIdData()
            data.ledgerID = UInt64(bitPattern: id.ledgerID)
            data.entryID = UInt64(bitPattern: id.entryID)
            if let partition = id.partition { data.partition = partition }
            if let batchIndex = id.batchIndex { data.batchIndex = batchIndex }
            return data
        }
        var command = ClientCommands.ack(consumerID: consumerID, cumulative: cumulative, ids: data)
        if let validationError { command.ack.validationError = validationError }
        return PulsarFrameEncoder.encodeCommand(command)
    }

    private func check(
        consumerID: UInt64, cumulative: Bool, ids: [AckedMessageID],
        validationError: Pulsar_Proto_CommandAck.ValidationError? = nil
    ) throws {
        let handWritten = AckFrameEncoder.encode(
            consumerID: consumerID, cumulative: cumulative, ids: ids, validationError: validationError,
            allocator: ByteBufferAllocator())
        let expected = reference(consumerID: consumerID, cumulative: cumulative, ids: ids, validationError: validationError)
        #expect(handWritten == expected, "byte-identical to SwiftProtobuf's frame")
        let decoded = try decodeOne(handWritten)
        #expect(decoded == (try decodeOne(expected)))
        #expect(decoded.type == .ack)
        #expect(decoded.ack.consumerID == consumerID)
        #expect(decoded.ack.ackType == (cumulative ? .cumulative : .individual))
        #expect(decoded.ack.messageID.count == ids.count)
        for (data, id) in zip(decoded.ack.messageID, ids) {
            #expect(Int64(bitPattern: data.ledgerID) == id.ledgerID)
            #expect(Int64(bitPattern: data.entryID) == id.entryID)
            #expect(data.hasPartition == (id.partition != nil))
            #expect(data.partition == (id.partition ?? -1))
            #expect(data.batchIndex == (id.batchIndex ?? -1))
        }
        #expect(decoded.ack.hasValidationError == (validationError != nil))
    }

    @Test func individualAckOfOneEntry() throws {
        try check(consumerID: 3, cumulative: false, ids: [AckedMessageID(ledgerID: 12, entryID: 40)])
    }

    @Test func individualAckOfManyEntriesWithLargeIDs() throws {
        let ids = (0..<1000).map { AckedMessageID(ledgerID: 1 << 40 + Int64($0 / 7), entryID: Int64($0) * 1_000_003) }
        try check(consumerID: UInt64.max, cumulative: false, ids: ids)
    }

    @Test func cumulativeAck() throws {
        try check(consumerID: 0, cumulative: true, ids: [AckedMessageID(ledgerID: 0, entryID: 0)])
        try check(consumerID: 200, cumulative: true, ids: [AckedMessageID(ledgerID: 7, entryID: 129)])
    }

    @Test func partitionAndBatchIndexIncludingNegativeValues() throws {
        try check(consumerID: 9, cumulative: false, ids: [
            AckedMessageID(ledgerID: 5, entryID: 6, partition: 3, batchIndex: 17),
            AckedMessageID(ledgerID: 5, entryID: 7, partition: -1),
            AckedMessageID(ledgerID: 5, entryID: 8, batchIndex: 0),
        ])
    }

    @Test func sentinelIDsAndValidationError() throws {
        try check(consumerID: 1, cumulative: false, ids: [AckedMessageID(ledgerID: -1, entryID: -1)], validationError: .checksumMismatch)
        try check(consumerID: 1, cumulative: false, ids: [AckedMessageID(ledgerID: 2, entryID: 3)], validationError: .uncompressedSizeCorruption)
    }

    @Test func entryOfAMessageIDDropsPartitionAndBatchIndex() {
        let id = AckedMessageID(entryOf: MessageID(ledgerID: 4, entryID: 9, partition: 2, batchIndex: 5, batchSize: 10))
        #expect(id == AckedMessageID(ledgerID: 4, entryID: 9))
    }

    @Test func emptyAckStillEncodesTheRequiredFields() throws {
        try check(consumerID: 77, cumulative: false, ids: [])
    }
}
