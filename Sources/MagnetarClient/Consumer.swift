import Logging
import NIOCore
import PayloadCompression
import PulsarProtocol

/// How a consumer receives. A pure value.
public struct ConsumerOptions: Sendable {
    /// The schema to read with: registered on a topic nothing uses yet, else checked against the
    /// topic's; nil: bytes (none sent).
    public var schema: SchemaInfo?
    /// Permits granted up front; refilled by FLOW when half of them were handed to the application.
    /// Per partition on a partitioned topic.
    public var receiverQueueSize: Int = 1000
    public var initialPosition: InitialPosition = .latest
    /// The consumer name; nil picks a random one (kept across reconnections).
    public var name: String?
    /// How long a negatively acknowledged message waits before the broker is asked to redeliver it.
    public var negativeAckRedeliveryDelay: TimeAmount = .seconds(1)
    /// Verify each received message's CRC32C (the broker forwards the producer's checksum).
    public var verifyChecksums: Bool = true

    public init() {}
}

/// Receives from one topic on one subscription: a plain topic through one `ConsumerCore`, a
/// partitioned one through one core per partition feeding one merged `ReceiveQueue`; acknowledgements
/// go to the partition named by `MessageID.partition`.
///
/// Flow control as in the Java/C++ clients: `receiverQueueSize` permits after SUBSCRIBE, then a FLOW
/// for every half queue handed out. Acknowledgements are grouped per event-loop tick (up to 1,000 ids per
/// ACK); a message of a batch is acknowledged to the broker when every message of its entry is.
/// Thread-safe. Lifecycle: created by `PulsarClient.subscribe`, open until `close()`. When the
/// connection drops or the broker closes the consumer, each core drops its queued, not yet received
/// messages (the broker redelivers them), looks the topic up again and re-subscribes with the same
/// subscription and consumer name, with backoff; `receive` keeps waiting meanwhile.
public final class Consumer: Sendable {
    let cores: [ConsumerCore]
    let queue: ReceiveQueue
    public let topic: String
    public let subscription: String
    /// Partitions of the topic; 0 for a non-partitioned topic.
    public let partitionCount: Int
    /// The event loop that owns this consumer (all its partitions).
    public var eventLoop: any EventLoop { queue.eventLoop }

    init(cores: [ConsumerCore], queue: ReceiveQueue, topic: String, partitionCount: Int) {
        self.cores = cores
        self.queue = queue
        self.topic = topic
        self.subscription = cores[0].subscription
        self.partitionCount = partitionCount
    }

    /// The next message; waits until one arrives.
    public func receive() async throws -> Message {
        try await receive(maxMessages: 1)[0]
    }

    /// At least one and at most `maxMessages` messages: everything already queued, or the next one to
    /// arrive. One hop to the event loop per call, whatever the count (what `magnetar perf consume` uses).
    public func receive(maxMessages: Int) async throws -> [Message] {
        precondition(maxMessages > 0, "maxMessages must be positive")
        let queue = self.queue
        return try await queue.eventLoop.flatSubmit { queue.receive(maxMessages: maxMessages) }.get()
    }

    /// As `receive(maxMessages:)`, as a future completed on `eventLoop`: for tools that hold many
    /// consumers (`magnetar perf topics`) without a waiting Task per consumer.
    public func receiveFuture(maxMessages: Int) -> EventLoopFuture<[Message]> {
        precondition(maxMessages > 0, "maxMessages must be positive")
        let queue = self.queue
        return queue.eventLoop.flatSubmit { queue.receive(maxMessages: maxMessages) }
    }

    public func acknowledge(_ message: Message) { acknowledge([message.id]) }

    /// Acknowledges each id individually (grouped into one ACK per loop tick and partition).
    public func acknowledge(_ ids: [MessageID]) {
        let queue = self.queue
        queue.eventLoop.execute { for id in ids { queue.core(for: id.partition).acknowledge(id) } }
    }

    /// Acknowledges `message` in `transaction` and waits for the broker's answer: the subscription is
    /// added to the transaction first (once); the acknowledgement holds the message until the
    /// transaction ends (committed: acknowledged; aborted: delivered again). The whole entry is
    /// acknowledged (a batch's messages together). Fails with `transactionConflict` when the message
    /// is already acknowledged, or held by another transaction.
    public func acknowledge(_ message: Message, transaction: Transaction) async throws(PulsarClientError) {
        let queue = self.queue
        let id = message.id
        let core: ConsumerCore
        do {
            core = try await queue.eventLoop.submit { queue.core(for: id.partition) }.get()
        } catch {
            throw PulsarClientError(.alreadyClosed, "the consumer's event loop is gone: \(error)")
        }
        try await transaction.add(subscription: core.subscription, topic: core.topic)
        guard let connection = try? await core.eventLoop.submit({ core.connection }).get() else {
            throw PulsarClientError(.connectionClosed, "the consumer is reconnecting; acknowledge again")
        }
        let consumerID = core.consumerID
        let most = transaction.mostBits
        let least = transaction.leastBits
        do {
            _ = try await connection.requestFromAnyLoop(on: connection.eventLoop) { requestID in
                ClientCommands.base(.ack) {
                    $0.ack.consumerID = consumerID
                    $0.ack.ackType = .individual
                    var messageID = Pulsar_Proto_MessageIdData()
                    messageID.ledgerID = UInt64(bitPattern: id.ledgerID)
                    messageID.entryID = UInt64(bitPattern: id.entryID)
                    $0.ack.messageID = [messageID]
                    $0.ack.txnidMostBits = most
                    $0.ack.txnidLeastBits = least
                    $0.ack.requestID = requestID
                }
            }.get()
        } catch let error as PulsarClientError {
            throw error
        } catch {
            throw PulsarClientError(.connectionClosed, "\(error)")
        }
    }

    /// Acknowledges everything up to and including `id` (on `id`'s partition; not allowed on
    /// Shared/Key_Shared subscriptions).
    public func acknowledgeCumulative(_ id: MessageID) throws {
        guard cores[0].type != .shared && cores[0].type != .keyShared else {
            throw PulsarClientError(.unsupported, "cumulative acknowledgement is not allowed on \(cores[0].type) subscriptions")
        }
        let queue = self.queue
        queue.eventLoop.execute { queue.core(for: id.partition).acknowledgeCumulative(id) }
    }

    /// Asks for redelivery of `message` after `negativeAckRedeliveryDelay`.
    public func negativeAcknowledge(_ message: Message) {
        let queue = self.queue
        let id = message.id
        queue.eventLoop.execute { queue.core(for: id.partition).negativeAcknowledge(id) }
    }

    /// Moves the subscription to `position` (SEEK). The broker closes the consumer and it re-subscribes;
    /// messages queued meanwhile are dropped. After `.id(x)` the next message is the one after `x` (as in
    /// the official clients). On a partitioned topic `.earliest` and `.latest` move every partition, and
    /// `.id(x)` moves the partition `x.partition` only (as the C++ MultiTopicsConsumerImpl).
    public func seek(to position: StartMessageID) async throws {
        let targets: [ConsumerCore]
        switch position {
        case .earliest, .latest:
            targets = cores
        case .id(let id):
            if cores.count == 1 {
                targets = cores
            } else {
                guard id.partition >= 0, Int(id.partition) < cores.count else {
                    throw PulsarClientError(
                        .unsupported, "seek to \(id) on a partitioned consumer: the id names no partition of \(topic)")
                }
                targets = [cores[Int(id.partition)]]
            }
        }
        let loop = eventLoop
        try await loop.flatSubmit {
            EventLoopFuture.andAllSucceed(targets.map { $0.seek(to: position, inclusive: false) }, on: loop)
        }.get()
    }

    /// Moves the subscription to the first message published at or after `publishTimeMs` (ms since the
    /// epoch; SEEK with `message_publish_time`), on every partition of a partitioned topic. As
    /// `seek(to:)`: the consumer re-subscribes and messages queued meanwhile are dropped.
    public func seek(toPublishTime publishTimeMs: UInt64) async throws {
        let cores = self.cores
        let loop = eventLoop
        try await loop.flatSubmit {
            EventLoopFuture.andAllSucceed(cores.map { $0.seek(toPublishTime: publishTimeMs) }, on: loop)
        }.get()
    }

    /// Sends pending acks and closes the consumer (every partition) on the broker.
    public func close() async throws {
        let cores = self.cores
        let queue = self.queue
        try await queue.eventLoop.flatSubmit {
            EventLoopFuture.andAllSucceed(cores.map { $0.close() }, on: queue.eventLoop).always { _ in
                queue.fail(PulsarClientError(.alreadyClosed, "consumer closed"))
            }
        }.get()
    }
}

/// The messages received by one consumer (all its partitions) and not yet handed to the application,
/// and the `receive` calls waiting for one. Handing a message out returns a permit to the core of
/// its partition. Lives on the consumer's event loop.
final class ReceiveQueue: @unchecked Sendable {
    private struct Waiter {
        var promise: EventLoopPromise<[Message]>
        var maxMessages: Int
    }

    let eventLoop: any EventLoop
    /// Set once after the cores exist: one per partition in partition order, or the single core.
    var cores: [ConsumerCore] = []
    /// Starts small and grows to the receiver queue size: a process may hold many idle consumers.
    private var messages = CircularBuffer<Message>(initialCapacity: 16)
    private var waiters = CircularBuffer<Waiter>()
    private var closeError: PulsarClientError?

    init(eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    var isEmpty: Bool { messages.isEmpty }

    func core(for partition: Int32) -> ConsumerCore {
        cores.count == 1 ? cores[0] : cores[Int(max(0, min(partition, Int32(cores.count - 1))))]
    }

    func deliver(_ message: Message) {
        if let waiter = waiters.popFirst() {
            dequeued(message)
            waiter.promise.succeed([message])
        } else {
            messages.append(message)
        }
    }

    func receive(maxMessages: Int) -> EventLoopFuture<[Message]> {
        eventLoop.assertInEventLoop()
        if let closeError, messages.isEmpty { return eventLoop.makeFailedFuture(closeError) }
        guard !messages.isEmpty else {
            let promise = eventLoop.makePromise(of: [Message].self)
            waiters.append(Waiter(promise: promise, maxMessages: maxMessages))
            return promise.futureResult
        }
        let count = min(maxMessages, messages.count)
        var taken: [Message] = []
        taken.reserveCapacity(count)
        for _ in 0..<count {
            let message = messages.removeFirst()
            dequeued(message)
            taken.append(message)
        }
        return eventLoop.makeSucceededFuture(taken)
    }

    private func dequeued(_ message: Message) {
        core(for: message.id.partition).messageDequeued(message.id)
    }

    /// Drops the queued messages of one partition (its connection was lost: the broker redelivers them).
    func removeAll(partition: Int32) -> Int {
        let before = messages.count
        if cores.count == 1 {
            messages.removeAll(keepingCapacity: true)
        } else {
            messages = CircularBuffer(messages.filter { $0.id.partition != partition })
        }
        return before - messages.count
    }

    /// Fails every waiting and later `receive` (once the queue is empty) with `error`.
    func fail(_ error: PulsarClientError) {
        guard closeError == nil else { return }
        closeError = error
        while let waiter = waiters.popFirst() { waiter.promise.fail(error) }
    }
}

/// Where a reader (or a non-durable consumer) starts.
public enum StartMessageID: Sendable, Hashable {
    case earliest
    case latest
    case id(MessageID)
}

/// What a reader's `hasMessageAvailable` compares the topic's last message with before anything was
/// read (afterwards: the last message read). A pure value.
enum AvailabilityReference: Sendable, Equatable {
    /// Started at the earliest message: any message counts.
    case anyMessage
    /// Started at (or sought to) an id: a later message, or that one when inclusive.
    case after(MessageID, inclusive: Bool)
    /// Sought by publish time: a message after the subscription's mark-delete position.
    case afterMarkDeletePosition
}

/// The state of one consumer on one topic or partition: its connection, permits, grouped acks,
/// partly acknowledged batches, pending negative acks, and (for readers) where to start. Lives on
/// its consumer's event loop; its connection may be on another loop (writes hop there).
///
/// States: subscribed (`connection` set) → disconnected (queued messages dropped, re-subscription
/// scheduled with `Backoff`) → subscribed … → closed (`closeError` set, final).
final class ConsumerCore: ClientHandler, @unchecked Sendable {
    private struct EntryKey: Hashable {
        var ledgerID: Int64
        var entryID: Int64
    }

    let client: PulsarClient
    let queue: ReceiveQueue
    let eventLoop: any EventLoop
    let topic: String
    let subscription: String
    let type: SubscriptionType
    /// Unique per client, kept across connections.
    let consumerID: UInt64
    let consumerName: String
    let partition: Int32
    let options: ConsumerOptions
    /// False for readers: a non-durable subscription positioned by `start`.
    let durable: Bool
    private let logger: Logger

    private(set) var connection: ClientConnection?
    private var maxMessageSizeBytes = PulsarLimits.maxMessageSizeBytes
    private var backoff = Backoff()
    private var reconnectTimer: Scheduled<Void>?
    /// Readers: the position to (re)subscribe at; messages before it (and at it unless inclusive) are dropped.
    private(set) var start: StartMessageID?
    private(set) var startInclusive: Bool
    /// The last message handed to the application (readers resume after it when reconnecting).
    private(set) var lastDequeuedID: MessageID?
    /// Readers: what `hasMessageAvailable` compares the topic's last id with before anything was read.
    var availabilityReference: AvailabilityReference = .anyMessage
    /// A SEEK is in flight: the CLOSE_CONSUMER it causes must not move `start` to `lastDequeuedID`.
    private var isSeeking = false

    private var permitsToReturn = 0
    private var pendingAcks: [AckedMessageID] = []
    private let allocator = ByteBufferAllocator()
    private var isAckFlushScheduled = false
    /// Entries of batches with some but not all messages acknowledged: the bit of each unacked index is set.
    private var partlyAcknowledged: [EntryKey: [UInt64]] = [:]
    private var pendingNacks: Set<EntryKey> = []
    private var nackTimer: Scheduled<Void>?
    private var closeError: PulsarClientError?

    init(
        client: PulsarClient, queue: ReceiveQueue, topic: String, subscription: String, type: SubscriptionType,
        consumerID: UInt64, consumerName: String, partition: Int32, options: ConsumerOptions, durable: Bool = true,
        start: StartMessageID? = nil, startInclusive: Bool = false, logger: Logger
    ) {
        self.client = client
        self.queue = queue
        self.eventLoop = queue.eventLoop
        self.topic = topic
        self.subscription = subscription
        self.type = type
        self.consumerID = consumerID
        self.consumerName = consumerName
        self.partition = partition
        self.options = options
        self.durable = durable
        self.start = start
        self.startInclusive = startInclusive
        var logger = logger
        logger[metadataKey: "topic"] = "\(topic)"
        logger[metadataKey: "subscription"] = "\(subscription)"
        self.logger = logger
        client.track(self, id: consumerID)
    }

    // MARK: subscription and reconnection

    /// SUBSCRIBE on `connection`; on success the core is registered there and grants its permits.
    func register(on connection: ClientConnection) -> EventLoopFuture<Void> {
        eventLoop.assertInEventLoop()
        let (topic, subscription, type, consumerID, consumerName) = (self.topic, self.subscription, self.type, consumerID, consumerName)
        let (initialPosition, durable, schema) = (options.initialPosition, self.durable, options.schema)
        let startID: MessageID?
        switch start {
        case .none: startID = nil
        case .earliest: startID = MessageID(ledgerID: -1, entryID: -1)
        case .latest: startID = MessageID(ledgerID: Int64.max, entryID: Int64.max)
        case .id(let id): startID = id
        }
        return connection.eventLoop.flatSubmit {
            connection.attach(consumer: self)
            return connection.request {
                ClientCommands.subscribe(
                    topic: topic, subscription: subscription, type: type, consumerID: consumerID, requestID: $0,
                    consumerName: consumerName, initialPosition: initialPosition, durable: durable, startMessageID: startID,
                    schema: schema)
            }.map { _ in connection.maxMessageSizeBytes }
            .flatMapErrorThrowing { error in
                connection.detachConsumer(consumerID)
                if (error as? PulsarClientError)?.code == .timeout {
                    // The broker may have subscribed it after all: undo that before the next attempt (as the C++ client).
                    _ = connection.request { ClientCommands.closeConsumer(consumerID: consumerID, requestID: $0) }
                }
                throw error
            }
        }.hop(to: eventLoop).flatMapThrowing { maxMessageSize in
            try self.subscribed(on: connection, maxMessageSizeBytes: maxMessageSize)
        }
    }

    /// SUCCESS for SUBSCRIBE arrived on `connection` (the core is attached there): use it, grant permits, send held acks.
    func subscribed(on connection: ClientConnection, maxMessageSizeBytes: Int) throws {
        if closeError != nil {
            connection.detachConsumer(consumerID)
            let consumerID = self.consumerID
            _ = connection.requestFromAnyLoop(on: eventLoop) { ClientCommands.closeConsumer(consumerID: consumerID, requestID: $0) }
            throw closeError!
        }
        guard !connection.isClosed else {
            throw PulsarClientError(.connectionClosed, "connection closed while the consumer subscribed")
        }
        self.connection = connection
        self.maxMessageSizeBytes = maxMessageSizeBytes
        backoff.reset()
        permitsToReturn = 0
        connection.writeCommandFromAnyLoop(ClientCommands.flow(consumerID: consumerID, permits: UInt32(options.receiverQueueSize)))
        flushAcks()
    }

    func connectionLost(_ lost: ClientConnection, error: PulsarClientError) {
        eventLoop.assertInEventLoop()
        guard closeError == nil, connection === lost else { return }
        connection = nil
        // As the C++ client: what was received but not handed out is dropped; the broker redelivers
        // it (durable) or we resubscribe after the last message handed out (reader).
        let dropped = queue.removeAll(partition: partition)
        if !durable, !isSeeking, let lastDequeuedID {
            start = .id(lastDequeuedID)
            startInclusive = false
        }
        if client.isClosed {
            shutDown(PulsarClientError(.alreadyClosed, "the client was closed"))
            return
        }
        logger.info("client.consumer.disconnected", metadata: ["error": "\(error)", "dropped.messages": "\(dropped)"])
        scheduleReconnect()
    }

    private func scheduleReconnect() {
        guard closeError == nil, reconnectTimer == nil else { return }
        let delay = backoff.nextDelay()
        reconnectTimer = eventLoop.scheduleTask(in: delay) { [self] in
            reconnectTimer = nil
            reconnect()
        }
    }

    private func reconnect() {
        guard closeError == nil, connection == nil else { return }
        client.lookupFuture(topic: topic, on: eventLoop).flatMap { connection in
            self.register(on: connection)
        }.whenComplete { [self] result in
            switch result {
            case .success:
                logger.info("client.consumer.reconnected")
            case .failure(let error):
                guard closeError == nil else { return }
                let clientError = error as? PulsarClientError ?? PulsarClientError(.connectionFailed, "\(error)")
                if client.isClosed {
                    shutDown(PulsarClientError(.alreadyClosed, "the client was closed"))
                } else if clientError.isFatalForRegistration {
                    logger.warning("client.consumer.reconnect-refused", metadata: ["error": "\(clientError)"])
                    shutDown(clientError)
                } else {
                    scheduleReconnect()
                }
            }
        }
    }

    // MARK: receiving

    func messageReceived(_ command: MessageCommandFields, payload: PayloadSection?, from source: ClientConnection) {
        guard closeError == nil, source === connection else { return }
        guard let payload else {
            logger.info("client.consumer.message-without-payload")
            return
        }
        let entryID = MessageID(command.messageID)
        if options.verifyChecksums, !payload.isChecksumValid {
            // As the C++ client: drop it and tell the broker (it counts as acknowledged), return its permit.
            logger.warning("client.consumer.checksum-mismatch", metadata: ["message.id": "\(entryID)"])
            discard(entryID, validationError: .checksumMismatch, permits: 1)
            return
        }
        let metadata: SendMetadataFields
        do {
            // Read by hand: no SwiftProtobuf `MessageMetadata` (and its storage copy) per message.
            metadata = try SendMetadataFields.parse(payload.checksummedBytes, consumerFields: true)
        } catch {
            logger.warning("client.consumer.corrupt-metadata", metadata: ["message.id": "\(entryID)", "error": "\(error)"])
            returnPermits(1)
            return
        }
        var body = payload.checksummedBytes
        body.moveReaderIndex(forwardBy: 4 + Int(body.getInteger(at: body.readerIndex, as: UInt32.self)!))
        let count = metadata.numMessagesInBatch.map { Int(max($0, 1)) } ?? 1
        if metadata.compression != 0 {
            do {
                guard let type = CompressionType(rawValue: Int(metadata.compression)) else {
                    throw PulsarClientError(.corruptMessage, "unknown compression type \(metadata.compression)")
                }
                body = try PayloadCodec.decompress(
                    body, type: type, uncompressedSize: Int(metadata.uncompressedSize), maxSizeBytes: maxMessageSizeBytes,
                    allocator: ByteBufferAllocator())
            } catch {
                logger.warning("client.consumer.decompression-failed", metadata: ["message.id": "\(entryID)", "error": "\(error)"])
                discard(entryID, validationError: .decompressionError, permits: count)
                return
            }
        }
        let properties = metadata.properties.isEmpty
            ? [:] : Dictionary(metadata.properties.map { ($0.key, $0.value) }, uniquingKeysWith: { _, last in last })
        let base = Message(
            id: MessageID(
                ledgerID: entryID.ledgerID, entryID: entryID.entryID, partition: partition, batchIndex: -1, batchSize: 1),
            payload: body, producerName: metadata.producerName, sequenceID: Int64(bitPattern: metadata.sequenceID),
            publishTimeMs: metadata.publishTime, eventTimeMs: metadata.eventTime == 0 ? nil : metadata.eventTime,
            partitionKey: metadata.partitionKey, properties: properties,
            redeliveryCount: command.redeliveryCount ?? 0,
            schemaVersion: metadata.schemaVersion.flatMap { SchemaInfo.version($0) })
        guard metadata.numMessagesInBatch != nil else {
            if isBeforeStart(base.id) { returnPermits(1) } else { queue.deliver(base) }
            return
        }
        let singles: [BatchPayload.Single]
        do {
            singles = try BatchPayload.split(body, count: count)
        } catch {
            logger.warning("client.consumer.corrupt-batch", metadata: ["message.id": "\(entryID)", "error": "\(error)"])
            discard(entryID, validationError: .batchDeSerializeError, permits: count)
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
            if !single.properties.isEmpty { message.properties = single.properties }
            if isBeforeStart(message.id) { returnPermits(1) } else { queue.deliver(message) }
        }
    }

    /// Readers: the broker starts at the entry of the start id, inclusive; drop what comes before the
    /// start (and the start itself unless inclusive), as the C++ client does.
    private func isBeforeStart(_ id: MessageID) -> Bool {
        guard case .id(let start) = start else { return false }
        if (id.ledgerID, id.entryID) != (start.ledgerID, start.entryID) {
            return (id.ledgerID, id.entryID) < (start.ledgerID, start.entryID)
        }
        if start.batchIndex < 0 || id.batchIndex < 0 { return !startInclusive }
        return id.batchIndex < start.batchIndex || (id.batchIndex == start.batchIndex && !startInclusive)
    }

    /// Acknowledges a message that cannot be delivered, with the reason, and returns its permits.
    private func discard(_ id: MessageID, validationError: Pulsar_Proto_CommandAck.ValidationError, permits: Int) {
        connection?.writeFromAnyLoop(AckFrameEncoder.encode(
            consumerID: consumerID, cumulative: false, ids: [AckedMessageID(entryOf: id)], validationError: validationError,
            allocator: allocator))
        returnPermits(permits)
    }

    /// The queue handed `id` to the application.
    func messageDequeued(_ id: MessageID) {
        lastDequeuedID = id
        returnPermits(1)
    }

    /// Counts messages handed to the application; FLOW when half the queue is used up.
    private func returnPermits(_ count: Int) {
        permitsToReturn += count
        if permitsToReturn >= max(options.receiverQueueSize / 2, 1) {
            connection?.writeCommandFromAnyLoop(ClientCommands.flow(consumerID: consumerID, permits: UInt32(permitsToReturn)))
            permitsToReturn = 0
        }
    }

    // MARK: acknowledgements

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
        pendingAcks.append(AckedMessageID(entryOf: id))
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

    /// Sends the grouped acks (kept while disconnected: sent after re-subscribing).
    func flushAcks() {
        guard !pendingAcks.isEmpty, closeError == nil, let connection else { return }
        connection.writeFromAnyLoop(AckFrameEncoder.encode(
            consumerID: consumerID, cumulative: false, ids: pendingAcks, allocator: allocator))
        pendingAcks.removeAll(keepingCapacity: true)
    }

    func acknowledgeCumulative(_ id: MessageID) {
        flushAcks()
        var target = id
        // A partly consumed batch: acknowledge up to the entry before it (notes §5.4).
        if id.batchIndex >= 0, id.batchIndex < id.batchSize - 1 { target.entryID -= 1 }
        partlyAcknowledged = partlyAcknowledged.filter { ($0.key.ledgerID, $0.key.entryID) > (target.ledgerID, target.entryID) }
        connection?.writeFromAnyLoop(AckFrameEncoder.encode(
            consumerID: consumerID, cumulative: true, ids: [AckedMessageID(entryOf: target)], allocator: allocator))
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
            connection?.writeCommandFromAnyLoop(ClientCommands.redeliver(consumerID: consumerID, ids: ids))
        }
    }

    // MARK: readers

    /// GET_LAST_MESSAGE_ID: the id of the topic's last message (entryID -1 when there is none).
    func lastMessageID() -> EventLoopFuture<MessageID> { lastMessageIDs().map(\.last) }

    /// GET_LAST_MESSAGE_ID: the topic's last message id and, when the broker tells it, the
    /// subscription's mark-delete position.
    func lastMessageIDs() -> EventLoopFuture<(last: MessageID, markDelete: MessageID?)> {
        guard let connection else {
            return eventLoop.makeFailedFuture(PulsarClientError(.connectionClosed, "not connected (reconnecting)"))
        }
        let consumerID = self.consumerID
        let partition = self.partition
        return connection.requestFromAnyLoop(on: eventLoop) {
            ClientCommands.getLastMessageID(consumerID: consumerID, requestID: $0)
        }.map { response in
            let data = response.getLastMessageIDResponse.lastMessageID
            var id = MessageID(data, batchIndex: data.hasBatchIndex ? data.batchIndex : -1)
            id.partition = partition
            var markDelete: MessageID?
            if response.getLastMessageIDResponse.hasConsumerMarkDeletePosition {
                markDelete = MessageID(response.getLastMessageIDResponse.consumerMarkDeletePosition)
                markDelete?.partition = partition
            }
            return (id, markDelete)
        }
    }

    /// SEEK: the broker repositions the subscription and closes this consumer, which re-subscribes
    /// (for a reader, at the new position).
    func seek(to position: StartMessageID, inclusive: Bool) -> EventLoopFuture<Void> {
        guard let connection else {
            return eventLoop.makeFailedFuture(PulsarClientError(.connectionClosed, "not connected (reconnecting)"))
        }
        let target: MessageID
        switch position {
        case .earliest: target = MessageID(ledgerID: -1, entryID: -1)
        case .latest: target = MessageID(ledgerID: Int64.max, entryID: Int64.max)
        case .id(let id): target = id
        }
        let reference: EventLoopFuture<AvailabilityReference>
        switch position {
        case .earliest: reference = eventLoop.makeSucceededFuture(.anyMessage)
        case .latest: reference = lastMessageID().map { .after($0, inclusive: false) }
        case .id(let id): reference = eventLoop.makeSucceededFuture(.after(id, inclusive: inclusive))
        }
        let consumerID = self.consumerID
        return reference.flatMap { [self] reference in
            isSeeking = true
            start = position
            startInclusive = inclusive
            lastDequeuedID = nil
            availabilityReference = reference
            return connection.requestFromAnyLoop(on: eventLoop) {
                ClientCommands.seek(consumerID: consumerID, requestID: $0, to: target)
            }.map { _ in }
        }.always { [self] _ in isSeeking = false }
    }

    /// SEEK by publish time: the broker moves the subscription to the first entry published at or after
    /// `publishTimeMs` and closes this consumer, which re-subscribes. A reader re-subscribes without a
    /// start position (the broker keeps a sought reader's subscription where the seek put it) and drops
    /// nothing; `hasMessageAvailable` then compares the last message with the subscription's
    /// mark-delete position (as the Java/C++ clients after a seek by timestamp).
    func seek(toPublishTime publishTimeMs: UInt64) -> EventLoopFuture<Void> {
        guard let connection else {
            return eventLoop.makeFailedFuture(PulsarClientError(.connectionClosed, "not connected (reconnecting)"))
        }
        let consumerID = self.consumerID
        isSeeking = true
        start = nil
        startInclusive = false
        lastDequeuedID = nil
        availabilityReference = .afterMarkDeletePosition
        return connection.requestFromAnyLoop(on: eventLoop) {
            ClientCommands.seek(consumerID: consumerID, requestID: $0, publishTimeMs: publishTimeMs)
        }.map { _ in }.always { [self] _ in isSeeking = false }
    }

    // MARK: closing

    func close() -> EventLoopFuture<Void> {
        guard closeError == nil else { return eventLoop.makeSucceededVoidFuture() }
        flushAcks()
        guard let connection else {
            shutDown(PulsarClientError(.alreadyClosed, "consumer closed while disconnected"))
            return eventLoop.makeSucceededVoidFuture()
        }
        let consumerID = self.consumerID
        return connection.requestFromAnyLoop(on: eventLoop) { ClientCommands.closeConsumer(consumerID: consumerID, requestID: $0) }
            .map { _ in }
            .always { [self] _ in
                shutDown(PulsarClientError(.alreadyClosed, "consumer closed"))
            }
    }

    /// Final: no more reconnections; `receive` fails once the queue is empty.
    func shutDown(_ error: PulsarClientError) {
        guard closeError == nil else { return }
        closeError = error
        client.untrack(id: consumerID)
        reconnectTimer?.cancel()
        reconnectTimer = nil
        connection?.detachConsumer(consumerID)
        connection = nil
        nackTimer?.cancel()
        nackTimer = nil
        if queue.cores.allSatisfy({ $0.closeError != nil }) { queue.fail(error) }
    }
}
