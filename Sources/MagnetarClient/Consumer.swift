import Logging
import NIOCore
import PulsarProtocol

/// How a consumer receives. A pure value.
public struct ConsumerOptions: Sendable {
    /// Permits granted up front; refilled by FLOW when half of them were handed to the application.
    public var receiverQueueSize: Int = 1000
    public var initialPosition: InitialPosition = .latest
    /// The consumer name; nil picks a random one.
    public var name: String?
    /// How long a negatively acknowledged message waits before the broker is asked to redeliver it.
    public var negativeAckRedeliveryDelay: TimeAmount = .seconds(1)
    /// Verify each received message's CRC32C (the broker forwards the producer's checksum).
    public var verifyChecksums: Bool = true

    public init() {}
}

/// Receives from one topic (one partition) on one subscription.
///
/// Flow control as in the Java/C++ clients: `receiverQueueSize` permits after SUBSCRIBE, then a FLOW
/// for every half queue handed out. Acknowledgements are grouped per event-loop tick (up to 1,000 ids per
/// ACK); a message of a batch is acknowledged to the broker when every message of its entry is.
/// Thread-safe. Lifecycle: created by `PulsarClient.subscribe`, open until `close()` or until its
/// connection drops (then `receive` throws; no reconnect yet).
public final class Consumer: Sendable {
    let core: ConsumerCore
    public let topic: String
    public let subscription: String
    /// The event loop that owns this consumer.
    public var eventLoop: any EventLoop { core.eventLoop }

    init(core: ConsumerCore) {
        self.core = core
        self.topic = core.topic
        self.subscription = core.subscription
    }

    /// The next message; waits until one arrives.
    public func receive() async throws -> Message {
        try await receive(maxMessages: 1)[0]
    }

    /// At least one and at most `maxMessages` messages: everything already queued, or the next one to
    /// arrive. One hop to the event loop per call, whatever the count (what `magnetar perf consume` uses).
    public func receive(maxMessages: Int) async throws -> [Message] {
        precondition(maxMessages > 0, "maxMessages must be positive")
        let core = self.core
        return try await core.eventLoop.flatSubmit { core.receive(maxMessages: maxMessages) }.get()
    }

    /// As `receive(maxMessages:)`, as a future completed on `eventLoop`: for tools that hold many
    /// consumers (`magnetar perf topics`) without a waiting Task per consumer.
    public func receiveFuture(maxMessages: Int) -> EventLoopFuture<[Message]> {
        precondition(maxMessages > 0, "maxMessages must be positive")
        let core = self.core
        return core.eventLoop.flatSubmit { core.receive(maxMessages: maxMessages) }
    }

    public func acknowledge(_ message: Message) { acknowledge([message.id]) }

    /// Acknowledges each id individually (grouped into one ACK per loop tick).
    public func acknowledge(_ ids: [MessageID]) {
        let core = self.core
        core.eventLoop.execute { for id in ids { core.acknowledge(id) } }
    }

    /// Acknowledges everything up to and including `id` (not allowed on Shared/Key_Shared subscriptions).
    public func acknowledgeCumulative(_ id: MessageID) throws {
        guard core.type != .shared && core.type != .keyShared else {
            throw PulsarClientError(.unsupported, "cumulative acknowledgement is not allowed on \(core.type) subscriptions")
        }
        let core = self.core
        core.eventLoop.execute { core.acknowledgeCumulative(id) }
    }

    /// Asks for redelivery of `message` after `negativeAckRedeliveryDelay`.
    public func negativeAcknowledge(_ message: Message) {
        let core = self.core
        let id = message.id
        core.eventLoop.execute { core.negativeAcknowledge(id) }
    }

    /// Sends pending acks and closes the consumer on the broker.
    public func close() async throws {
        let core = self.core
        try await core.eventLoop.flatSubmit { core.close() }.get()
    }
}

/// The state of one consumer: the received queue, waiting receivers, permits, grouped acks, partly
/// acknowledged batches and pending negative acks. Lives on its connection's event loop.
final class ConsumerCore: @unchecked Sendable {
    private struct EntryKey: Hashable {
        var ledgerID: Int64
        var entryID: Int64
    }

    private struct Waiter {
        var promise: EventLoopPromise<[Message]>
        var maxMessages: Int
    }

    let connection: ClientConnection
    let eventLoop: any EventLoop
    let topic: String
    let subscription: String
    let type: SubscriptionType
    let consumerID: UInt64
    let partition: Int32
    let options: ConsumerOptions
    private let logger: Logger

    /// Starts small and grows to the receiver queue size: a process may hold many idle consumers.
    private var queue = CircularBuffer<Message>(initialCapacity: 16)
    private var waiters = CircularBuffer<Waiter>()
    private var permitsToReturn = 0
    private var pendingAcks: [Pulsar_Proto_MessageIdData] = []
    private var isAckFlushScheduled = false
    /// Entries of batches with some but not all messages acknowledged: the bit of each unacked index is set.
    private var partlyAcknowledged: [EntryKey: [UInt64]] = [:]
    private var pendingNacks: Set<EntryKey> = []
    private var nackTimer: Scheduled<Void>?
    private var closeError: PulsarClientError?

    init(
        connection: ClientConnection, topic: String, subscription: String, type: SubscriptionType, consumerID: UInt64,
        partition: Int32, options: ConsumerOptions, logger: Logger
    ) {
        self.connection = connection
        self.eventLoop = connection.eventLoop
        self.topic = topic
        self.subscription = subscription
        self.type = type
        self.consumerID = consumerID
        self.partition = partition
        self.options = options
        var logger = logger
        logger[metadataKey: "topic"] = "\(topic)"
        logger[metadataKey: "subscription"] = "\(subscription)"
        self.logger = logger
    }

    /// After SUBSCRIBE succeeded: grant the first permits.
    func start() {
        connection.writeCommand(ClientCommands.flow(consumerID: consumerID, permits: UInt32(options.receiverQueueSize)))
    }

    func messageReceived(_ command: Pulsar_Proto_CommandMessage, payload: PayloadSection?) {
        guard closeError == nil else { return }
        guard let payload else {
            logger.info("client.consumer.message-without-payload")
            return
        }
        let entryID = MessageID(command.messageID)
        if options.verifyChecksums, !payload.isChecksumValid {
            // As the C++ client: drop it and tell the broker (it counts as acknowledged), return its permit.
            logger.warning("client.consumer.checksum-mismatch", metadata: ["message.id": "\(entryID)"])
            var ack = ClientCommands.ack(consumerID: consumerID, cumulative: false, ids: [entryID.entryData])
            ack.ack.validationError = .checksumMismatch
            connection.writeCommand(ack)
            returnPermits(1)
            return
        }
        let metadata: Pulsar_Proto_MessageMetadata
        do {
            metadata = try payload.decodeMetadata()
        } catch {
            logger.warning("client.consumer.corrupt-metadata", metadata: ["message.id": "\(entryID)", "error": "\(error)"])
            returnPermits(1)
            return
        }
        var body = payload.checksummedBytes
        body.moveReaderIndex(forwardBy: 4 + Int(body.getInteger(at: body.readerIndex, as: UInt32.self)!))
        let properties = metadata.properties.isEmpty
            ? [:] : Dictionary(metadata.properties.map { ($0.key, $0.value) }, uniquingKeysWith: { _, last in last })
        let base = Message(
            id: MessageID(
                ledgerID: entryID.ledgerID, entryID: entryID.entryID, partition: partition, batchIndex: -1, batchSize: 1),
            payload: body, producerName: metadata.producerName, sequenceID: Int64(bitPattern: metadata.sequenceID),
            publishTimeMs: metadata.publishTime, eventTimeMs: metadata.eventTime == 0 ? nil : metadata.eventTime,
            partitionKey: metadata.hasPartitionKey ? metadata.partitionKey : nil, properties: properties,
            redeliveryCount: command.redeliveryCount)
        guard metadata.hasNumMessagesInBatch else {
            deliver(base)
            return
        }
        let count = Int(max(metadata.numMessagesInBatch, 1))
        let singles: [BatchPayload.Single]
        do {
            singles = try BatchPayload.split(body, count: count)
        } catch {
            logger.warning("client.consumer.corrupt-batch", metadata: ["message.id": "\(entryID)", "error": "\(error)"])
            returnPermits(count)
            return
        }
        for (index, single) in singles.enumerated() {
            var message = base
            message.id.batchIndex = Int32(index)
            message.id.batchSize = Int32(count)
            message.payload = single.payload
            message.sequenceID = single.sequenceID ?? base.sequenceID + Int64(index)
            if let eventTime = single.eventTimeMs, eventTime != 0 { message.eventTimeMs = eventTime }
            if let key = single.partitionKey { message.partitionKey = key }
            deliver(message)
        }
    }

    private func deliver(_ message: Message) {
        if let waiter = waiters.popFirst() {
            waiter.promise.succeed([message])
            returnPermits(1)
        } else {
            queue.append(message)
        }
    }

    func receive(maxMessages: Int) -> EventLoopFuture<[Message]> {
        if let closeError, queue.isEmpty { return eventLoop.makeFailedFuture(closeError) }
        guard !queue.isEmpty else {
            let promise = eventLoop.makePromise(of: [Message].self)
            waiters.append(Waiter(promise: promise, maxMessages: maxMessages))
            return promise.futureResult
        }
        let count = min(maxMessages, queue.count)
        var messages: [Message] = []
        messages.reserveCapacity(count)
        for _ in 0..<count { messages.append(queue.removeFirst()) }
        returnPermits(count)
        return eventLoop.makeSucceededFuture(messages)
    }

    /// Counts messages handed to the application; FLOW when half the queue is used up.
    private func returnPermits(_ count: Int) {
        permitsToReturn += count
        if permitsToReturn >= max(options.receiverQueueSize / 2, 1) {
            connection.writeCommand(ClientCommands.flow(consumerID: consumerID, permits: UInt32(permitsToReturn)))
            permitsToReturn = 0
        }
    }

    func acknowledge(_ id: MessageID) {
        let key = EntryKey(ledgerID: id.ledgerID, entryID: id.entryID)
        if id.batchIndex >= 0, id.batchSize > 1 {
            var words = partlyAcknowledged[key] ?? Self.allUnacked(count: Int(id.batchSize))
            let index = Int(id.batchIndex)
            guard index < Int(id.batchSize) else { return }
            words[index / 64] &= ~(UInt64(1) << UInt64(index % 64))
            if words.allSatisfy({ $0 == 0 }) {
                partlyAcknowledged[key] = nil
            } else {
                partlyAcknowledged[key] = words
                return
            }
        }
        pendingAcks.append(id.entryData)
        if pendingAcks.count >= 1000 { flushAcks() }
        if !isAckFlushScheduled, !pendingAcks.isEmpty {
            isAckFlushScheduled = true
            eventLoop.execute { [self] in
                isAckFlushScheduled = false
                flushAcks()
            }
        }
    }

    private static func allUnacked(count: Int) -> [UInt64] {
        var words = [UInt64](repeating: ~0, count: (count + 63) / 64)
        if count % 64 != 0 { words[words.count - 1] = (UInt64(1) << UInt64(count % 64)) - 1 }
        return words
    }

    func flushAcks() {
        guard !pendingAcks.isEmpty, closeError == nil else { return }
        connection.writeCommand(ClientCommands.ack(consumerID: consumerID, cumulative: false, ids: pendingAcks))
        pendingAcks.removeAll(keepingCapacity: true)
    }

    func acknowledgeCumulative(_ id: MessageID) {
        flushAcks()
        var target = id
        // A partly consumed batch: acknowledge up to the entry before it (notes §5.4).
        if id.batchIndex >= 0, id.batchIndex < id.batchSize - 1 { target.entryID -= 1 }
        partlyAcknowledged = partlyAcknowledged.filter { ($0.key.ledgerID, $0.key.entryID) > (target.ledgerID, target.entryID) }
        connection.writeCommand(ClientCommands.ack(consumerID: consumerID, cumulative: true, ids: [target.entryData]))
    }

    func negativeAcknowledge(_ id: MessageID) {
        pendingNacks.insert(EntryKey(ledgerID: id.ledgerID, entryID: id.entryID))
        guard nackTimer == nil else { return }
        nackTimer = eventLoop.scheduleTask(in: options.negativeAckRedeliveryDelay) { [self] in
            nackTimer = nil
            let entries = pendingNacks
            pendingNacks = []
            guard closeError == nil, !entries.isEmpty else { return }
            // Exclusive and Failover consumers always ask for everything unacked (notes §5.4).
            let ids = type == .shared || type == .keyShared
                ? entries.sorted { ($0.ledgerID, $0.entryID) < ($1.ledgerID, $1.entryID) }.map {
                    MessageID(ledgerID: $0.ledgerID, entryID: $0.entryID).entryData
                }
                : []
            connection.writeCommand(ClientCommands.redeliver(consumerID: consumerID, ids: ids))
        }
    }

    func close() -> EventLoopFuture<Void> {
        guard closeError == nil else { return eventLoop.makeSucceededVoidFuture() }
        flushAcks()
        return connection.request { ClientCommands.closeConsumer(consumerID: consumerID, requestID: $0) }
            .map { _ in }
            .always { [self] _ in
                connection.unregisterConsumer(consumerID)
                shutDown(PulsarClientError(.alreadyClosed, "consumer closed"))
            }
    }

    func shutDown(_ error: PulsarClientError) {
        guard closeError == nil else { return }
        closeError = error
        nackTimer?.cancel()
        nackTimer = nil
        while let waiter = waiters.popFirst() { waiter.promise.fail(error) }
    }
}
