import Logging
import NIOCore
import NIOEmbedded
import PulsarProtocol
import Testing

@testable import MagnetarClient

/// Receipt matching: first on the pure `PendingSends`, then through a producer on a connection in an
/// `EmbeddedChannel` fed with broker frames.
@Suite struct ReceiptMatchingTests {
    private typealias Pending = PendingSends<Int>

    private func op(_ first: Int64, _ last: Int64, _ tags: [Int]) -> Pending.Op {
        Pending.Op(firstSequenceID: first, lastSequenceID: last, isBatch: tags.count > 1, completions: tags.count == 1 ? .one(tags[0]) : .many(tags))
    }

    @Test func receiptsCompleteTheHeadInOrder() {
        var pending = Pending()
        pending.append(op(0, 0, [10]))
        pending.append(op(1, 3, [11, 12, 13]))
        pending.append(op(4, 4, [14]))
        #expect(pending.messageCount == 5)
        guard case .completed(let first) = pending.receiptReceived(sequenceID: 0) else { Issue.record("head not completed"); return }
        #expect(first.firstSequenceID == 0)
        // Any id within the batch's range completes the batch.
        guard case .completed(let batch) = pending.receiptReceived(sequenceID: 2) else { Issue.record("batch not completed"); return }
        var tags: [Int] = []
        batch.completions.forEach { tag, index in tags.append(tag * 100 + index) }
        #expect(tags == [1100, 1201, 1302])
        #expect(pending.messageCount == 1)
    }

    @Test func staleAndSkippingReceipts() {
        var pending = Pending()
        pending.append(op(5, 5, [1]))
        pending.append(op(6, 6, [2]))
        guard case .stale = pending.receiptReceived(sequenceID: 4) else { Issue.record("older id must be ignored"); return }
        guard case .unexpected(let expected) = pending.receiptReceived(sequenceID: 6) else {
            Issue.record("a receipt ahead of the head is a protocol violation")
            return
        }
        #expect(expected == 5...5)
        #expect(pending.opCount == 2)
        var empty = Pending()
        guard case .unexpected(nil) = empty.receiptReceived(sequenceID: 0) else { Issue.record("nothing pending"); return }
    }

    @Test func sendErrorRemovesOnlyTheNamedHead() {
        var pending = Pending()
        pending.append(op(0, 1, [1, 2]))
        pending.append(op(2, 2, [3]))
        #expect(pending.removeHead(ifContains: 2) == nil)
        #expect(pending.removeHead(ifContains: 1)?.firstSequenceID == 0)
        #expect(pending.removeAll().map(\.firstSequenceID) == [2])
        #expect(pending.isEmpty && pending.messageCount == 0)
    }

    // MARK: through a connection

    private final class Results: @unchecked Sendable {
        var values: [Result<MessageID, PulsarClientError>] = []
    }

    private func connectedChannel() throws -> (EmbeddedChannel, ClientConnection) {
        let channel = EmbeddedChannel()
        let connection = ClientConnection(
            eventLoop: channel.eventLoop, remoteAddress: "embedded", operationTimeout: .seconds(30),
            logger: Logger(label: "test"))
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(PulsarFrameDecoder()))
        try channel.pipeline.syncOperations.addHandler(connection)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 6650)).wait()
        let connect = try readCommand(channel)
        #expect(connect.type == .connect)
        #expect(connect.connect.protocolVersion == PulsarLimits.protocolVersion)
        var connected = Pulsar_Proto_BaseCommand()
        connected.type = .connected
        connected.connected.serverVersion = "test"
        connected.connected.protocolVersion = 20
        connected.connected.maxMessageSize = 5_242_880
        try channel.writeInbound(PulsarFrameEncoder.encodeCommand(connected))
        return (channel, connection)
    }

    private func readFrame(_ channel: EmbeddedChannel) throws -> PulsarFrame {
        channel.embeddedEventLoop.run()
        var buffer = try #require(try channel.readOutbound(as: ByteBuffer.self))
        var decoder = PulsarFrameDecoder()
        return try #require(try decoder.decode(buffer: &buffer))
    }

    private func readCommand(_ channel: EmbeddedChannel) throws -> Pulsar_Proto_BaseCommand { try readFrame(channel).command }

    private func receipt(producerID: UInt64, sequenceID: UInt64, entryID: UInt64) -> ByteBuffer {
        var command = Pulsar_Proto_BaseCommand()
        command.type = .sendReceipt
        command.sendReceipt.producerID = producerID
        command.sendReceipt.sequenceID = sequenceID
        command.sendReceipt.messageID.ledgerID = 9
        command.sendReceipt.messageID.entryID = entryID
        return PulsarFrameEncoder.encodeCommand(command)
    }

    @Test func pipelinedSendsAreMatchedToReceiptsInOrder() throws {
        let (channel, connection) = try connectedChannel()
        let producer = connection.registerProducer {
            ProducerCore(connection: connection, topic: "persistent://public/default/t", producerID: $0, partition: -1,
                         options: ProducerOptions(), logger: Logger(label: "test"))
        }
        producer.ready(producerName: "p", lastSequenceID: -1)
        let results = Results()
        for index in 0..<3 {
            producer.send(ByteBuffer(string: "m\(index)")) { results.values.append($0) }
        }
        for expected in 0..<3 {
            let frame = try readFrame(channel)
            #expect(frame.command.send.sequenceID == UInt64(expected))
            #expect(frame.payload?.isChecksumValid == true)
        }
        #expect(producer.pendingMessageCount == 3)
        for sequenceID in 0..<3 {
            try channel.writeInbound(receipt(producerID: producer.producerID, sequenceID: UInt64(sequenceID), entryID: UInt64(100 + sequenceID)))
        }
        let ids = results.values.map { try? $0.get() }
        #expect(ids == [
            MessageID(ledgerID: 9, entryID: 100), MessageID(ledgerID: 9, entryID: 101), MessageID(ledgerID: 9, entryID: 102),
        ])
        #expect(producer.pendingMessageCount == 0)
    }

    @Test func batchReceiptGivesEachMessageItsBatchIndex() throws {
        let (channel, connection) = try connectedChannel()
        var options = ProducerOptions()
        options.batchingMaxMessages = 3
        let producer = connection.registerProducer {
            ProducerCore(connection: connection, topic: "t", producerID: $0, partition: 2, options: options, logger: Logger(label: "test"))
        }
        producer.ready(producerName: "p", lastSequenceID: 9)
        let results = Results()
        for index in 0..<3 { producer.send(ByteBuffer(string: "m\(index)")) { results.values.append($0) } }
        let frame = try readFrame(channel)
        #expect(frame.command.send.sequenceID == 10)
        #expect(frame.command.send.numMessages == 3)
        try channel.writeInbound(receipt(producerID: producer.producerID, sequenceID: 10, entryID: 5))
        let ids = results.values.compactMap { try? $0.get() }
        #expect(ids.map(\.batchIndex) == [0, 1, 2])
        #expect(ids.allSatisfy { $0.ledgerID == 9 && $0.entryID == 5 && $0.partition == 2 && $0.batchSize == 3 })
    }

    @Test func receiptAheadOfTheHeadClosesTheConnectionAndFailsPending() throws {
        let (channel, connection) = try connectedChannel()
        let producer = connection.registerProducer {
            ProducerCore(connection: connection, topic: "t", producerID: $0, partition: -1, options: ProducerOptions(), logger: Logger(label: "test"))
        }
        producer.ready(producerName: "p", lastSequenceID: -1)
        let results = Results()
        for index in 0..<2 { producer.send(ByteBuffer(string: "m\(index)")) { results.values.append($0) } }
        try channel.writeInbound(receipt(producerID: producer.producerID, sequenceID: 1, entryID: 0))
        channel.embeddedEventLoop.run()
        let codes = results.values.map { result -> PulsarClientError.Code? in
            if case .failure(let error) = result { return error.code }
            return nil
        }
        #expect(codes == [.protocolViolation, .protocolViolation])
        #expect(connection.isClosed)
    }

    @Test func pingIsAnsweredWithPong() throws {
        let (channel, _) = try connectedChannel()
        var ping = Pulsar_Proto_BaseCommand()
        ping.type = .ping
        ping.ping = Pulsar_Proto_CommandPing()
        try channel.writeInbound(PulsarFrameEncoder.encodeCommand(ping))
        #expect(try readCommand(channel).type == .pong)
    }
}
