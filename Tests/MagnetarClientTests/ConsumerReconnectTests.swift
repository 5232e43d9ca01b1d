import Logging
import NIOCore
import PayloadCompression
import NIOEmbedded
import PulsarProtocol
import Testing

@testable import MagnetarClient

/// A consumer core between EmbeddedChannels: permits, reader start filtering, decompression of a
/// producer-encoded batch, and what happens on CLOSE_CONSUMER and re-subscription.
@Suite struct ConsumerReconnectTests {
    private func connectedChannel() throws -> (EmbeddedChannel, ClientConnection) {
        let channel = EmbeddedChannel()
        let connection = ClientConnection(
            eventLoop: channel.eventLoop, remoteAddress: "embedded", operationTimeout: .seconds(30), logger: Logger(label: "test"))
        try channel.pipeline.syncOperations.addHandler(connection)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 6650)).wait()
        _ = try readCommand(channel)  // CONNECT
        var connected = Pulsar_Proto_BaseCommand()
        connected.type = .connected
        connected.connected.serverVersion = "test"
        connected.connected.protocolVersion = 20
        try channel.writeInbound(PulsarFrameEncoder.encodeCommand(connected))
        return (channel, connection)
    }

    private func readCommand(_ channel: EmbeddedChannel) throws -> Pulsar_Proto_BaseCommand {
        channel.embeddedEventLoop.run()
        var buffer = try #require(try channel.readOutbound(as: ByteBuffer.self))
        var decoder = PulsarFrameDecoder()
        return try #require(try decoder.decode(buffer: &buffer)).command
    }

    /// A MESSAGE frame carrying what a producer would SEND: the payload section of `sendFrame`.
    private func messageFrame(consumerID: UInt64, entryID: UInt64, sendFrame: ByteBuffer) throws -> ByteBuffer {
        var buffer = sendFrame
        var decoder = PulsarFrameDecoder()
        let send = try #require(try decoder.decode(buffer: &buffer))
        var command = Pulsar_Proto_BaseCommand()
        command.type = .message
        command.message.consumerID = consumerID
        command.message.messageID.ledgerID = 9
        command.message.messageID.entryID = entryID
        return PulsarFrameEncoder.encodePayloadFrame(command, payload: try #require(send.payload))
    }

    @Test func readerFiltersDecompressesAndResumesAfterTheLastReturnedMessage() throws {
        let (firstChannel, first) = try connectedChannel()
        let client = try PulsarClient(url: "pulsar://127.0.0.1:1", eventLoopGroup: first.eventLoop)
        let queue = ReceiveQueue(eventLoop: first.eventLoop)
        let core = ConsumerCore(
            client: client, queue: queue, topic: "persistent://public/default/t", subscription: "reader-1", type: .exclusive,
            consumerID: 5, consumerName: "reader-1", partition: -1, options: ConsumerOptions(), durable: false,
            start: .id(MessageID(ledgerID: 9, entryID: 1, batchIndex: 1)), startInclusive: false, logger: Logger(label: "test"))
        queue.cores = [core]
        first.attach(consumer: core)
        try core.subscribed(on: first, maxMessageSizeBytes: 5_242_880)
        let flow = try readCommand(firstChannel)
        #expect(flow.type == .flow && flow.flow.consumerID == 5 && flow.flow.messagePermits == 1000)

        // Entry (9,1): a zlib-compressed batch of three with keys; the start is (9,1,1), exclusive.
        var batch = MessageBatch(firstSequenceID: 0, allocator: ByteBufferAllocator(), capacity: 256)
        for index in 0..<3 {
            batch.append(OutgoingMessage(payload: ByteBuffer(string: "b\(index)"), key: "k\(index)", properties: ["i": "\(index)"]))
        }
        let batchFrame = batch.encode(producerID: 1, producerName: "p", publishTimeMs: 1, compression: .zlib, allocator: ByteBufferAllocator())
        try firstChannel.writeInbound(messageFrame(consumerID: 5, entryID: 1, sendFrame: batchFrame))
        // Entry (9,2): one plain message.
        let single = SendFrameEncoder.encode(
            producerID: 1, metadata: SendMetadata(producerName: "p", sequenceID: 3, publishTimeMs: 1, numMessagesInBatch: nil),
            body: ByteBuffer(string: "s"), allocator: ByteBufferAllocator())
        try firstChannel.writeInbound(messageFrame(consumerID: 5, entryID: 2, sendFrame: single))

        let received = try queue.receive(maxMessages: 1).wait()
        #expect(received.map { String(buffer: $0.payload) } == ["b2"], "b0 and b1 are at or before the start")
        #expect(received[0].partitionKey == "k2" && received[0].properties == ["i": "2"])
        #expect(received[0].id == MessageID(ledgerID: 9, entryID: 1, batchIndex: 2))
        #expect(!queue.isEmpty, "(9,2) waits in the queue")

        // The broker closes the consumer (topic unloaded): the queued message is dropped, and the
        // reader will re-subscribe after the last message it returned.
        var close = Pulsar_Proto_BaseCommand()
        close.type = .closeConsumer
        close.closeConsumer.consumerID = 5
        close.closeConsumer.requestID = 0
        try firstChannel.writeInbound(PulsarFrameEncoder.encodeCommand(close))
        #expect(core.connection == nil)
        #expect(queue.isEmpty)
        #expect(core.start == .id(MessageID(ledgerID: 9, entryID: 1, batchIndex: 2)))
        #expect(!core.startInclusive)

        // Re-subscribed on another connection: permits are granted again.
        let (secondChannel, second) = try connectedChannel()
        second.attach(consumer: core)
        try core.subscribed(on: second, maxMessageSizeBytes: 5_242_880)
        let again = try readCommand(secondChannel)
        #expect(again.type == .flow && again.flow.messagePermits == 1000)
        try secondChannel.writeInbound(messageFrame(consumerID: 5, entryID: 1, sendFrame: batchFrame))
        try secondChannel.writeInbound(messageFrame(consumerID: 5, entryID: 2, sendFrame: single))
        let resumed = try queue.receive(maxMessages: 10).wait()
        #expect(resumed.map { String(buffer: $0.payload) } == ["s"], "the redelivered batch is skipped up to (9,1,2)")
        core.shutDown(PulsarClientError(.alreadyClosed, "test over"))
    }

    @Test func oversizedUncompressedSizeIsDiscardedWithAValidationError() throws {
        let (channel, connection) = try connectedChannel()
        let client = try PulsarClient(url: "pulsar://127.0.0.1:1", eventLoopGroup: connection.eventLoop)
        let queue = ReceiveQueue(eventLoop: connection.eventLoop)
        let core = ConsumerCore(
            client: client, queue: queue, topic: "t", subscription: "s", type: .shared, consumerID: 6, consumerName: "c",
            partition: -1, options: ConsumerOptions(), logger: Logger(label: "test"))
        queue.cores = [core]
        connection.attach(consumer: core)
        try core.subscribed(on: connection, maxMessageSizeBytes: 1024)
        _ = try readCommand(channel)  // FLOW
        var metadata = SendMetadata(producerName: "p", sequenceID: 0, publishTimeMs: 1, numMessagesInBatch: nil)
        metadata.compression = .lz4
        metadata.uncompressedSizeBytes = 1 << 30  // a lie, far over the limit
        let frame = SendFrameEncoder.encode(
            producerID: 1, metadata: metadata,
            body: PayloadCodec.compress(ByteBuffer(string: "tiny"), type: .lz4, allocator: ByteBufferAllocator()),
            allocator: ByteBufferAllocator())
        try channel.writeInbound(messageFrame(consumerID: 6, entryID: 0, sendFrame: frame))
        let ack = try readCommand(channel)
        #expect(ack.type == .ack && ack.ack.validationError == .decompressionError)
        #expect(queue.isEmpty)
        core.shutDown(PulsarClientError(.alreadyClosed, "test over"))
    }

    @Test func acknowledgementsGoOutAsOneHandWrittenAckPerTick() throws {
        let (channel, connection) = try connectedChannel()
        let client = try PulsarClient(url: "pulsar://127.0.0.1:1", eventLoopGroup: connection.eventLoop)
        let queue = ReceiveQueue(eventLoop: connection.eventLoop)
        let core = ConsumerCore(
            client: client, queue: queue, topic: "t", subscription: "s", type: .exclusive, consumerID: 8, consumerName: "c",
            partition: -1, options: ConsumerOptions(), logger: Logger(label: "test"))
        queue.cores = [core]
        connection.attach(consumer: core)
        try core.subscribed(on: connection, maxMessageSizeBytes: 5_242_880)
        _ = try readCommand(channel)  // FLOW
        core.acknowledge(MessageID(ledgerID: 3, entryID: 1))
        core.acknowledge(MessageID(ledgerID: 3, entryID: 2, batchIndex: 0, batchSize: 2))  // half a batch: held
        core.acknowledge(MessageID(ledgerID: 3, entryID: 2, batchIndex: 1, batchSize: 2))
        let ack = try readCommand(channel)
        #expect(ack.type == .ack && ack.ack.consumerID == 8 && ack.ack.ackType == .individual)
        #expect(ack.ack.messageID.map { [$0.ledgerID, $0.entryID] } == [[3, 1], [3, 2]])
        #expect(ack.ack.messageID.allSatisfy { !$0.hasPartition && !$0.hasBatchIndex })
        core.acknowledgeCumulative(MessageID(ledgerID: 3, entryID: 9))
        let cumulative = try readCommand(channel)
        #expect(cumulative.ack.ackType == .cumulative && cumulative.ack.messageID.map(\.entryID) == [9])
        core.shutDown(PulsarClientError(.alreadyClosed, "test over"))
    }

    @Test func readerSeekByPublishTimeResubscribesWithoutAStartPosition() throws {
        let (firstChannel, first) = try connectedChannel()
        let client = try PulsarClient(url: "pulsar://127.0.0.1:1", eventLoopGroup: first.eventLoop)
        let queue = ReceiveQueue(eventLoop: first.eventLoop)
        let core = ConsumerCore(
            client: client, queue: queue, topic: "persistent://public/default/t", subscription: "reader-2", type: .exclusive,
            consumerID: 7, consumerName: "reader-2", partition: -1, options: ConsumerOptions(), durable: false,
            start: .id(MessageID(ledgerID: 9, entryID: 4)), startInclusive: false, logger: Logger(label: "test"))
        queue.cores = [core]
        first.attach(consumer: core)
        try core.subscribed(on: first, maxMessageSizeBytes: 5_242_880)
        _ = try readCommand(firstChannel)  // FLOW

        let sought = core.seek(toPublishTime: 1_700_000_000_000)
        let seek = try readCommand(firstChannel)
        #expect(seek.type == .seek && seek.seek.consumerID == 7)
        #expect(seek.seek.hasMessagePublishTime && seek.seek.messagePublishTime == 1_700_000_000_000)
        #expect(!seek.seek.hasMessageID)
        // The broker closes the consumer, then answers the SEEK.
        var close = Pulsar_Proto_BaseCommand()
        close.type = .closeConsumer
        close.closeConsumer.consumerID = 7
        close.closeConsumer.requestID = 0
        try firstChannel.writeInbound(PulsarFrameEncoder.encodeCommand(close))
        var success = Pulsar_Proto_BaseCommand()
        success.type = .success
        success.success.requestID = seek.seek.requestID
        try firstChannel.writeInbound(PulsarFrameEncoder.encodeCommand(success))
        firstChannel.embeddedEventLoop.run()
        try sought.wait()
        #expect(core.connection == nil)
        #expect(core.start == nil, "no start id: the broker kept the subscription where the seek put it")
        #expect(core.availabilityReference == .afterMarkDeletePosition)

        let (secondChannel, second) = try connectedChannel()
        _ = core.register(on: second)
        let subscribe = try readCommand(secondChannel)
        #expect(subscribe.type == .subscribe && !subscribe.subscribe.durable)
        #expect(!subscribe.subscribe.hasStartMessageID)
        core.shutDown(PulsarClientError(.alreadyClosed, "test over"))
    }
}
