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

    @Test func expiredOpsLeaveFromTheHeadAndTheirLateReceiptsAreStale() {
        var pending = Pending()
        let start = NIODeadline.uptimeNanoseconds(1_000)
        var first = op(0, 0, [1])
        first.deadline = start + .seconds(1)
        var batch = op(1, 3, [2, 3, 4])
        batch.deadline = start + .seconds(2)
        var last = op(4, 4, [5])
        last.deadline = start + .seconds(3)
        pending.append(first)
        pending.append(batch)
        pending.append(last)
        #expect(pending.oldestDeadline == start + .seconds(1))
        #expect(pending.removeExpired(now: start).isEmpty)
        #expect(pending.removeExpired(now: start + .seconds(2)).map(\.firstSequenceID) == [0, 1])
        #expect(pending.messageCount == 1)
        #expect(pending.oldestDeadline == start + .seconds(3))
        // The broker may still store the expired ones: their receipts are ignored, not violations.
        guard case .stale = pending.receiptReceived(sequenceID: 0) else { Issue.record("expired op's receipt"); return }
        guard case .stale = pending.receiptReceived(sequenceID: 3) else { Issue.record("expired batch's receipt"); return }
        guard case .completed(let completed) = pending.receiptReceived(sequenceID: 4) else { Issue.record("head"); return }
        #expect(completed.firstSequenceID == 4)
        // Nothing pending, and a receipt for an abandoned op: still stale.
        guard case .stale = pending.receiptReceived(sequenceID: 2) else { Issue.record("stale on empty"); return }
        guard case .unexpected(nil) = pending.receiptReceived(sequenceID: 5) else { Issue.record("ahead on empty"); return }
    }

    // MARK: through a connection

    private final class Results: @unchecked Sendable {
        var values: [Result<MessageID, PulsarClientError>] = []
    }

    /// A producer registered on `connection` as if PRODUCER_SUCCESS had arrived.
    private func makeProducer(
        _ connection: ClientConnection, partition: Int32, options: ProducerOptions, lastSequenceID: Int64
    ) throws -> ProducerCore {
        let client = try PulsarClient(url: "pulsar://127.0.0.1:1", eventLoopGroup: connection.eventLoop)
        let producer = ProducerCore(
            client: client, eventLoop: connection.eventLoop, topic: "persistent://public/default/t", producerID: client.makeHandlerID() + 7,
            partition: partition, options: options, logger: Logger(label: "test"))
        connection.attach(producer: producer)
        try producer.registered(on: connection, producerName: "p", lastSequenceID: lastSequenceID, maxMessageSizeBytes: 5_242_880)
        return producer
    }

    private func connectedChannel() throws -> (EmbeddedChannel, ClientConnection) {
        let channel = EmbeddedChannel()
        let connection = ClientConnection(
            eventLoop: channel.eventLoop, remoteAddress: "embedded", operationTimeout: .seconds(30),
            logger: Logger(label: "test"))
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
        let producer = try makeProducer(connection, partition: -1, options: ProducerOptions(), lastSequenceID: -1)
        let results = Results()
        for index in 0..<3 {
            producer.send(OutgoingMessage(payload: ByteBuffer(string: "m\(index)"))) { results.values.append($0) }
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
        let producer = try makeProducer(connection, partition: 2, options: options, lastSequenceID: 9)
        let results = Results()
        for index in 0..<3 { producer.send(OutgoingMessage(payload: ByteBuffer(string: "m\(index)"))) { results.values.append($0) } }
        let frame = try readFrame(channel)
        #expect(frame.command.send.sequenceID == 10)
        #expect(frame.command.send.numMessages == 3)
        try channel.writeInbound(receipt(producerID: producer.producerID, sequenceID: 10, entryID: 5))
        let ids = results.values.compactMap { try? $0.get() }
        #expect(ids.map(\.batchIndex) == [0, 1, 2])
        #expect(ids.allSatisfy { $0.ledgerID == 9 && $0.entryID == 5 && $0.partition == 2 && $0.batchSize == 3 })
    }

    @Test func receiptAheadOfTheHeadClosesTheConnectionAndKeepsPendingForResend() throws {
        let (channel, connection) = try connectedChannel()
        let producer = try makeProducer(connection, partition: -1, options: ProducerOptions(), lastSequenceID: -1)
        let results = Results()
        for index in 0..<2 { producer.send(OutgoingMessage(payload: ByteBuffer(string: "m\(index)"))) { results.values.append($0) } }
        try channel.writeInbound(receipt(producerID: producer.producerID, sequenceID: 1, entryID: 0))
        channel.embeddedEventLoop.run()
        #expect(connection.isClosed)
        #expect(results.values.isEmpty, "nothing fails: the producer reconnects and resends")
        #expect(producer.pendingMessageCount == 2)
        #expect(producer.connection == nil)
        producer.shutDown(PulsarClientError(.alreadyClosed, "test over"))
        #expect(results.values.count == 2)
    }

    @Test func reRegisteringResendsPendingFramesInOrderWithTheirSequenceIDs() throws {
        let (firstChannel, first) = try connectedChannel()
        var options = ProducerOptions()
        options.batchingMaxMessages = 2
        options.compression = .lz4
        let producer = try makeProducer(first, partition: -1, options: options, lastSequenceID: 41)
        let results = Results()
        for index in 0..<5 {
            producer.send(OutgoingMessage(payload: ByteBuffer(string: "m\(index)"), key: "k\(index)")) { results.values.append($0) }
        }
        producer.flushBatch()
        let sent = try (0..<3).map { _ in try readFrame(firstChannel).command.send.sequenceID }
        #expect(sent == [42, 44, 46])
        try firstChannel.writeInbound(receipt(producerID: producer.producerID, sequenceID: 42, entryID: 1))
        #expect(results.values.count == 2)
        // The broker closes the producer (topic unloaded): nothing fails, two batches wait for resending.
        var close = Pulsar_Proto_BaseCommand()
        close.type = .closeProducer
        close.closeProducer.producerID = producer.producerID
        close.closeProducer.requestID = 0
        try firstChannel.writeInbound(PulsarFrameEncoder.encodeCommand(close))
        #expect(producer.connection == nil)
        #expect(producer.pendingMessageCount == 3)
        producer.send(OutgoingMessage(payload: ByteBuffer(string: "queued"))) { results.values.append($0) }  // while away
        producer.flushBatch()
        let (secondChannel, second) = try connectedChannel()
        second.attach(producer: producer)
        try producer.registered(on: second, producerName: "p", lastSequenceID: 42, maxMessageSizeBytes: 5_242_880)
        let resent = try (0..<3).map { _ in try readFrame(secondChannel) }
        #expect(resent.map(\.command.send.sequenceID) == [44, 46, 47])
        #expect(resent.allSatisfy { $0.command.send.producerID == producer.producerID && $0.payload?.isChecksumValid == true })
        let metadata = try #require(try resent[0].payload?.decodeMetadata())
        #expect(metadata.compression == .lz4 && metadata.numMessagesInBatch == 2)
        for (sequenceID, entryID) in [(44, 2), (46, 3), (47, 4)] {
            try secondChannel.writeInbound(receipt(producerID: producer.producerID, sequenceID: UInt64(sequenceID), entryID: UInt64(entryID)))
        }
        let ids = results.values.compactMap { try? $0.get() }
        #expect(ids.map(\.entryID) == [1, 1, 2, 2, 3, 4])
        #expect(producer.pendingMessageCount == 0)
    }

    @Test func pingIsAnsweredWithPong() throws {
        let (channel, _) = try connectedChannel()
        var ping = Pulsar_Proto_BaseCommand()
        ping.type = .ping
        ping.ping = Pulsar_Proto_CommandPing()
        try channel.writeInbound(PulsarFrameEncoder.encodeCommand(ping))
        #expect(try readCommand(channel).type == .pong)
    }

    private final class FlushDone: @unchecked Sendable {
        var value = false
    }

    private func failureCodes(_ results: Results) -> [PulsarClientError.Code?] {
        results.values.map { result in
            if case .failure(let error) = result { return error.code }
            return nil
        }
    }

    private func noMoreFrames(_ channel: EmbeddedChannel) throws -> Bool {
        channel.embeddedEventLoop.run()
        return try channel.readOutbound(as: ByteBuffer.self) == nil
    }

    @Test func sendTimeoutFailsExpiredMessagesWhileConnectedAndKeepsTheConnection() throws {
        let (channel, connection) = try connectedChannel()
        var options = ProducerOptions()
        options.sendTimeout = .seconds(5)
        let producer = try makeProducer(connection, partition: -1, options: options, lastSequenceID: -1)
        let results = Results()
        let loop = channel.embeddedEventLoop
        producer.send(OutgoingMessage(payload: ByteBuffer(string: "m0"))) { results.values.append($0) }
        loop.advanceTime(by: .seconds(2))
        producer.send(OutgoingMessage(payload: ByteBuffer(string: "m1"))) { results.values.append($0) }
        loop.advanceTime(by: .milliseconds(2_999))
        #expect(results.values.isEmpty)
        loop.advanceTime(by: .milliseconds(1))  // m0 has waited 5 s; m1 only 3 s
        #expect(failureCodes(results) == [.timeout])
        #expect(producer.pendingMessageCount == 1)
        // m0's receipt comes late: ignored; m1's completes m1; the connection stays open.
        try channel.writeInbound(receipt(producerID: producer.producerID, sequenceID: 0, entryID: 10))
        try channel.writeInbound(receipt(producerID: producer.producerID, sequenceID: 1, entryID: 11))
        #expect(!connection.isClosed)
        #expect(results.values.count == 2 && (try? results.values[1].get())?.entryID == 11)
        // Idle, the timer is not armed; the next message gets its full 5 s.
        loop.advanceTime(by: .seconds(60))
        producer.send(OutgoingMessage(payload: ByteBuffer(string: "m2"))) { results.values.append($0) }
        loop.advanceTime(by: .milliseconds(4_999))
        #expect(results.values.count == 2)
        loop.advanceTime(by: .milliseconds(1))
        #expect(failureCodes(results) == [.timeout, nil, .timeout])
        producer.shutDown(PulsarClientError(.alreadyClosed, "test over"))
    }

    @Test func sendTimeoutAlsoRunsWhileDisconnectedAndZeroDisablesIt() throws {
        let (_, connection) = try connectedChannel()
        var options = ProducerOptions()
        // Shorter than the first reconnection delay (100 ms), which would try a real lookup.
        options.sendTimeout = .milliseconds(50)
        let producer = try makeProducer(connection, partition: -1, options: options, lastSequenceID: -1)
        let results = Results()
        producer.connectionLost(connection, error: PulsarClientError(.connectionClosed, "test"))
        producer.send(OutgoingMessage(payload: ByteBuffer(string: "queued"))) { results.values.append($0) }
        (connection.eventLoop as! EmbeddedEventLoop).advanceTime(by: .milliseconds(50))
        #expect(failureCodes(results) == [.timeout])
        producer.shutDown(PulsarClientError(.alreadyClosed, "test over"))

        let (_, other) = try connectedChannel()
        options.sendTimeout = .zero
        let patient = try makeProducer(other, partition: -1, options: options, lastSequenceID: -1)
        let none = Results()
        patient.send(OutgoingMessage(payload: ByteBuffer(string: "m"))) { none.values.append($0) }
        (other.eventLoop as! EmbeddedEventLoop).advanceTime(by: .hours(1))
        #expect(none.values.isEmpty)
        patient.shutDown(PulsarClientError(.alreadyClosed, "test over"))
    }

    @Test func fullQueueFailsOrWaitsForRoomInOrder() throws {
        let (channel, connection) = try connectedChannel()
        var options = ProducerOptions()
        options.maxPendingMessages = 2
        let failing = try makeProducer(connection, partition: -1, options: options, lastSequenceID: -1)
        let refused = Results()
        for index in 0..<3 { failing.send(OutgoingMessage(payload: ByteBuffer(string: "f\(index)"))) { refused.values.append($0) } }
        #expect(failureCodes(refused) == [.producerQueueFull])
        failing.shutDown(PulsarClientError(.alreadyClosed, "test over"))
        channel.embeddedEventLoop.run()
        while try channel.readOutbound(as: ByteBuffer.self) != nil {}

        options.blockIfQueueFull = true
        let producer = try makeProducer(connection, partition: -1, options: options, lastSequenceID: -1)
        let results = Results()
        for index in 0..<4 { producer.send(OutgoingMessage(payload: ByteBuffer(string: "m\(index)"))) { results.values.append($0) } }
        #expect(results.values.isEmpty)
        #expect(try readFrame(channel).command.send.sequenceID == 0)
        #expect(try readFrame(channel).command.send.sequenceID == 1)
        #expect(try noMoreFrames(channel), "m2 and m3 wait for room")
        let flushed = producer.waitForReceipts()
        let flushDone = FlushDone()
        flushed.whenSuccess { flushDone.value = true }
        try channel.writeInbound(receipt(producerID: producer.producerID, sequenceID: 0, entryID: 0))
        #expect(try readFrame(channel).command.send.sequenceID == 2)
        #expect(try noMoreFrames(channel))
        // A send now queues behind those waiting, even though the queue has room after the next receipt.
        producer.send(OutgoingMessage(payload: ByteBuffer(string: "m5"))) { results.values.append($0) }
        try channel.writeInbound(receipt(producerID: producer.producerID, sequenceID: 1, entryID: 1))
        #expect(try readFrame(channel).command.send.sequenceID == 3)
        for sequenceID in 2...3 {
            try channel.writeInbound(receipt(producerID: producer.producerID, sequenceID: UInt64(sequenceID), entryID: UInt64(sequenceID)))
        }
        #expect(!flushDone.value, "flush waits for m5 too")
        #expect(try readFrame(channel).command.send.sequenceID == 4)
        try channel.writeInbound(receipt(producerID: producer.producerID, sequenceID: 4, entryID: 4))
        #expect(flushDone.value)
        #expect(results.values.compactMap { try? $0.get().entryID } == [0, 1, 2, 3, 4])
        producer.shutDown(PulsarClientError(.alreadyClosed, "test over"))
    }

    @Test func waitingForRoomFailsWhenTheProducerCloses() throws {
        let (_, connection) = try connectedChannel()
        var options = ProducerOptions()
        options.maxPendingMessages = 1
        options.blockIfQueueFull = true
        let producer = try makeProducer(connection, partition: -1, options: options, lastSequenceID: -1)
        let results = Results()
        for index in 0..<2 { producer.send(OutgoingMessage(payload: ByteBuffer(string: "m\(index)"))) { results.values.append($0) } }
        #expect(results.values.isEmpty)
        producer.shutDown(PulsarClientError(.alreadyClosed, "closed"))
        #expect(failureCodes(results) == [.alreadyClosed, .alreadyClosed])
    }
}
