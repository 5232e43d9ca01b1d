import Foundation
import Logging
import NIOCore
import PayloadCompression
import PulsarProtocol
import Synchronization

/// How a producer sends. A pure value.
public struct ProducerOptions: Sendable {
    /// The schema the broker's registry checks and versions; nil: bytes (none sent).
    public var schema: SchemaInfo?
    /// The producer name; nil lets the broker choose a unique one.
    public var name: String?
    /// Messages per batch entry; 0 or 1 sends every message as its own entry (no batch format).
    public var batchingMaxMessages: Int = 0
    /// A batch is also sent when its body reaches this many bytes.
    public var batchingMaxBytes: Int = 128 * 1024
    /// A batch is also sent this long after its first message was added.
    public var batchingMaxPublishDelay: TimeAmount = .milliseconds(1)
    /// Messages waiting for receipts (including the open batch, and everything queued while
    /// reconnecting) before `sendAsync` fails with `producerQueueFull` — or, with `blockIfQueueFull`,
    /// waits for room. Per partition.
    public var maxPendingMessages: Int = 100_000
    /// When `maxPendingMessages` are waiting for receipts: false (the default) fails the send with
    /// `producerQueueFull`; true makes it wait for room, as the C++ client's `blockIfQueueFull`, but
    /// without blocking a thread: the message is queued (in order, behind any others waiting) and sent
    /// when receipts, errors or timeouts make room, and its completion runs then as usual. So
    /// `send` (async) simply waits longer, and `sendAsync` returns at once, also on the producer's event
    /// loop. What waits for room is bounded by the application, not here: one message per waiting `send`
    /// task; with `sendAsync`, bound the messages without a completion yourself (where the C++ client
    /// blocks the calling thread). Messages waiting for room are not yet subject to `sendTimeout`.
    public var blockIfQueueFull: Bool = false
    /// Compression of each entry's payload (the whole batch when batching).
    public var compression: CompressionType = .none
    /// Keyless messages on a partitioned topic: round robin (per batch when batching) or one partition.
    public var routingMode: PartitionRoutingMode = .roundRobin
    /// A message that has waited this long for its receipt fails with `timeout`, connected or not (the
    /// producer keeps its connection, or keeps reconnecting). As the Java/C++ clients: one timer, armed
    /// for the oldest pending entry, fails the expired ones oldest first and re-arms for the next; a
    /// receipt that arrives later for a failed message is ignored (the message may still have been
    /// stored). Counted from when the entry was handed to the connection (for a batch: when the batch
    /// was closed). Zero or negative: no send timeout.
    public var sendTimeout: TimeAmount = .seconds(30)

    public init() {}
}

/// The completion of one `sendAsync`: the stored message's id, or why it failed. Called on the
/// producer's event loop, in send order (per partition).
public typealias SendCompletion = @Sendable (Result<MessageID, PulsarClientError>) -> Void

/// A `SendCompletion` kept in a struct: a closure stored in an array or a generic container directly is
/// wrapped in a reabstraction thunk, one allocation per message (6 % of the perf client's CPU).
struct SendCallback: Sendable {
    let completion: SendCompletion
    init(_ completion: @escaping SendCompletion) { self.completion = completion }
    func callAsFunction(_ result: Result<MessageID, PulsarClientError>) { completion(result) }
}

/// Publishes to one topic: a plain topic through one `ProducerCore`, a partitioned one through one
/// core per partition (`<topic>-partition-<i>`), routing each message by the hash of its key
/// (`KeyHash`, the same partition as the official C++/Python clients) or round robin.
///
/// `sendAsync` pipelines: any number of SENDs (up to `maxPendingMessages`) are in flight; receipts come
/// back in send order and complete the callbacks in that order. With batching on, messages collect into
/// one entry until `batchingMaxMessages`, `batchingMaxBytes` or `batchingMaxPublishDelay`. Sending from
/// the producer's `eventLoop` costs no thread hop (what `magnetar perf` does); from elsewhere each call
/// hops once. Thread-safe. Lifecycle: created by `PulsarClient.createProducer`, open until `close()`.
/// When its connection drops or the broker closes it (topic unloaded or moved), each partition's core
/// looks the topic up again and re-registers with backoff, then resends every message still waiting
/// for a receipt, in order, with the same sequence ids; sends made meanwhile are queued.
public final class Producer: Sendable {
    let cores: [ProducerCore]
    private let router: RouterBox
    /// The fully qualified topic (the partitioned topic's base name for a partitioned producer).
    public let topic: String
    /// The name the broker confirmed (of partition 0 for a partitioned producer).
    public let name: String
    /// Partitions of the topic; 0 for a non-partitioned topic.
    public let partitionCount: Int
    /// The event loop that owns this producer (all its partitions); callbacks run here.
    public var eventLoop: any EventLoop { cores[0].eventLoop }

    /// The round-robin router's mutable state; confined to the producer's event loop.
    final class RouterBox: @unchecked Sendable {
        var router: PartitionRouter
        init(_ router: PartitionRouter) { self.router = router }
    }

    init(cores: [ProducerCore], topic: String, partitionCount: Int, options: ProducerOptions) {
        precondition(!cores.isEmpty, "a producer has at least one core")
        self.cores = cores
        self.topic = topic
        self.name = cores[0].producerName
        self.partitionCount = partitionCount
        self.router = RouterBox(PartitionRouter(
            partitions: cores.count, mode: options.routingMode, isBatching: options.batchingMaxMessages > 1,
            batchingMaxMessages: options.batchingMaxMessages, batchingMaxBytes: options.batchingMaxBytes,
            batchingMaxPublishDelayMs: max(options.batchingMaxPublishDelay.nanoseconds / 1_000_000, 1),
            nowMs: ProducerCore.nowMsSigned()))
    }

    /// Sends one message and waits for its receipt.
    public func send(
        _ payload: ByteBuffer, key: String? = nil, properties: [String: String] = [:], eventTimeMs: UInt64? = nil
    ) async throws(PulsarClientError) -> MessageID {
        let message = OutgoingMessage(payload: payload, key: key, properties: properties, eventTimeMs: eventTimeMs)
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<MessageID, PulsarClientError>, Never>) in
            sendAsync(message) { continuation.resume(returning: $0) }
        }
        return try result.get()
    }

    /// Sends one message in `transaction` and waits for its receipt: the partition it goes to is
    /// added to the transaction first (once), the message is never batched, and consumers see it
    /// only once the transaction commits.
    public func send(
        _ payload: ByteBuffer, key: String? = nil, properties: [String: String] = [:], transaction: Transaction
    ) async throws(PulsarClientError) -> MessageID {
        var message = OutgoingMessage(payload: payload, key: key, properties: properties)
        message.transaction = (transaction.mostBits, transaction.leastBits)
        let cores = self.cores
        let router = self.router
        let index: Int
        if cores.count == 1 {
            index = 0
        } else {
            let size = payload.readableBytes
            do {
                index = try await eventLoop.submit {
                    router.router.partition(key: key, sizeBytes: size, nowMs: ProducerCore.nowMsSigned())
                }.get()
            } catch {
                throw PulsarClientError(.alreadyClosed, "the producer's event loop is gone: \(error)")
            }
        }
        let core = cores[index]
        try await transaction.add(partition: core.topic)
        let sent = message
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<MessageID, PulsarClientError>, Never>) in
            Self.onLoop(core.eventLoop) { core.send(sent) { continuation.resume(returning: $0) } }
        }
        return try result.get()
    }

    /// Queues one message; `completion` runs on `eventLoop` when the receipt (or an error) arrives.
    public func sendAsync(_ payload: ByteBuffer, completion: @escaping SendCompletion) {
        sendAsync(OutgoingMessage(payload: payload), completion: completion)
    }

    /// Queues one message with its key, properties and event time.
    public func sendAsync(_ message: OutgoingMessage, completion: @escaping SendCompletion) {
        if cores.count == 1 {
            let core = cores[0]
            if core.eventLoop.inEventLoop {
                core.send(message, completion: completion)
            } else {
                core.eventLoop.execute { core.send(message, completion: completion) }
            }
            return
        }
        if eventLoop.inEventLoop {
            route(message, completion: completion)
        } else {
            eventLoop.execute { self.route(message, completion: completion) }
        }
    }

    private func route(_ message: OutgoingMessage, completion: @escaping SendCompletion) {
        let partition = router.router.partition(
            key: message.key, sizeBytes: message.payload.readableBytes, nowMs: ProducerCore.nowMsSigned())
        cores[partition].send(message, completion: completion)
    }

    /// Forwards one stored entry as it is (a geo-replicator's send): `serializedMetadata` is the
    /// entry's `MessageMetadata` (keeping its producer name, sequence id and batch count; deduplication
    /// on the receiving broker uses those), `body` its payload. Only for a non-partitioned producer;
    /// `completion` runs on `eventLoop`. Resent after reconnections like any other send.
    public func sendEntryAsync(
        serializedMetadata: ByteBuffer, body: ByteBuffer, numMessages: Int32?, completion: @escaping SendCompletion
    ) {
        precondition(cores.count == 1, "sendEntryAsync forwards to one partition")
        let core = cores[0]
        Self.onLoop(core.eventLoop) {
            core.sendEntry(serializedMetadata: serializedMetadata, body: body, numMessages: numMessages, completion: completion)
        }
    }

    /// Whether every partition's producer is registered on a live connection now (false while one reconnects).
    public var isConnected: Bool { cores.allSatisfy { $0.isConnected.load(ordering: .relaxed) } }

    /// The schema version the broker gave the first partition's producer (PRODUCER_SUCCESS), nil
    /// without a schema. Read on `eventLoop`.
    public var schemaVersion: [UInt8]? {
        eventLoop.assertInEventLoop()
        return cores[0].schemaVersionBytes
    }

    /// Sends the open batches now (no-op without batching).
    public func flushBatch() {
        let cores = self.cores
        Self.onLoop(eventLoop) { for core in cores { core.flushBatch() } }
    }

    /// Sends the open batches and waits until every message sent so far has its receipt or error.
    public func flush() async throws {
        let cores = self.cores
        try await eventLoop.flatSubmit {
            for core in cores { core.flushBatch() }
            return EventLoopFuture.andAllSucceed(cores.map { $0.waitForReceipts() }, on: cores[0].eventLoop)
        }.get()
    }

    /// Messages waiting for receipts, including open batches. Exact only on `eventLoop`.
    public var pendingMessageCount: Int {
        eventLoop.assertInEventLoop()
        return cores.reduce(0) { $0 + $1.pendingMessageCount }
    }

    /// Sends the open batches, waits for outstanding receipts, then closes the producer on the broker.
    public func close() async throws {
        let cores = self.cores
        try await eventLoop.flatSubmit {
            EventLoopFuture.andAllSucceed(cores.map { $0.close() }, on: cores[0].eventLoop)
        }.get()
    }

    private static func onLoop(_ loop: any EventLoop, _ body: @escaping @Sendable () -> Void) {
        if loop.inEventLoop { body() } else { loop.execute(body) }
    }
}

/// The state of one producer on one topic or partition: sequence ids, the open batch, the sends
/// awaiting receipts (with their frames, for resending), and the connection it is registered on.
/// Lives on its own event loop (the loop of the connection it was created on); its connection may
/// later be on another loop, so writes go through `writeFromAnyLoop`. Every method must run on
/// `eventLoop`.
///
/// States: registered (`connection` set) → disconnected (`connection` nil, a reconnection scheduled
/// with `Backoff`) → registered again … → closed (`closeError` set, final).
final class ProducerCore: ClientHandler, @unchecked Sendable {
    let client: PulsarClient
    let eventLoop: any EventLoop
    let topic: String
    /// Unique per client, so it stays the same on every connection (frames are resent unchanged).
    let producerID: UInt64
    let options: ProducerOptions
    /// The partition reported in message ids (-1: not partitioned).
    let partition: Int32
    var producerName = ""
    /// PRODUCER_SUCCESS's `schema_version`, stamped on every message; nil without a schema.
    var schemaVersionBytes: [UInt8]?
    private let logger: Logger
    private let allocator = ByteBufferAllocator()

    private(set) var connection: ClientConnection? {
        didSet { isConnected.store(connection != nil, ordering: .relaxed) }
    }
    /// `connection != nil`, readable from any thread.
    let isConnected = Atomic<Bool>(false)
    private var maxMessageSizeBytes = PulsarLimits.maxMessageSizeBytes
    private var hasRegistered = false
    private var backoff = Backoff()
    private var reconnectTimer: Scheduled<Void>?
    /// Armed for the oldest pending op's deadline while anything waits for a receipt (`sendTimeout`).
    private var sendTimeoutTimer: Scheduled<Void>?

    private var nextSequenceID: Int64 = 0
    private var pending = PendingSends<SendCallback>()
    private var batch: MessageBatch?
    private var batchCompletions: [SendCallback] = []
    private var batchTimer: Scheduled<Void>?
    /// `blockIfQueueFull`: sends waiting for room below `maxPendingMessages`, in send order. Bounded by
    /// the application (see `ProducerOptions.blockIfQueueFull`).
    private var waitingForRoom = CircularBuffer<(message: OutgoingMessage, completion: SendCallback)>()
    private var drainWaiters: [EventLoopPromise<Void>] = []
    private var closeError: PulsarClientError?

    init(
        client: PulsarClient, eventLoop: any EventLoop, topic: String, producerID: UInt64, partition: Int32,
        options: ProducerOptions, logger: Logger
    ) {
        self.client = client
        self.eventLoop = eventLoop
        self.topic = topic
        self.producerID = producerID
        self.partition = partition
        self.options = options
        var logger = logger
        logger[metadataKey: "topic"] = "\(topic)"
        logger[metadataKey: "producer.id"] = "\(producerID)"
        self.logger = logger
        client.track(self, id: producerID)
    }

    var isBatching: Bool { options.batchingMaxMessages > 1 }
    var pendingMessageCount: Int { pending.messageCount + (batch?.count ?? 0) }

    // MARK: registration and reconnection

    /// PRODUCER on `connection` (the name the broker gave us the first time, so deduplication and
    /// `lastSequenceID` carry over); on success the producer is registered there.
    func register(on connection: ClientConnection) -> EventLoopFuture<Void> {
        eventLoop.assertInEventLoop()
        let name = hasRegistered ? producerName : options.name
        let userProvided = options.name != nil
        let topic = self.topic
        let producerID = self.producerID
        let schema = options.schema
        return connection.eventLoop.flatSubmit {
            connection.attach(producer: self)
            return connection.request {
                ClientCommands.producer(
                    topic: topic, producerID: producerID, requestID: $0, name: name, userProvidedName: userProvided,
                    schema: schema)
            }.map { ($0.producerSuccess, connection.maxMessageSizeBytes) }
            .flatMapErrorThrowing { error in
                connection.detachProducer(producerID)
                if (error as? PulsarClientError)?.code == .timeout {
                    // The broker may have created it after all: undo that before the next attempt (as the C++ client).
                    _ = connection.request { ClientCommands.closeProducer(producerID: producerID, requestID: $0) }
                }
                throw error
            }
        }.hop(to: eventLoop).flatMapThrowing { success, maxMessageSize in
            self.schemaVersionBytes = success.schemaVersion.isEmpty ? nil : Array(success.schemaVersion)
            try self.registered(
                on: connection, producerName: success.producerName,
                lastSequenceID: success.hasLastSequenceID ? success.lastSequenceID : -1, maxMessageSizeBytes: maxMessageSize)
        }
    }

    /// PRODUCER_SUCCESS arrived on `connection` (the producer is attached there): start using it and
    /// resend every message still waiting for a receipt.
    func registered(
        on connection: ClientConnection, producerName: String, lastSequenceID: Int64, maxMessageSizeBytes: Int
    ) throws {
        eventLoop.assertInEventLoop()
        if closeError != nil {
            // Closed while PRODUCER was in flight: undo it on the broker.
            connection.detachProducer(producerID)
            let producerID = self.producerID
            _ = connection.requestFromAnyLoop(on: eventLoop) { ClientCommands.closeProducer(producerID: producerID, requestID: $0) }
            throw closeError!
        }
        guard !connection.isClosed else {
            throw PulsarClientError(.connectionClosed, "connection closed while the producer registered")
        }
        self.connection = connection
        self.maxMessageSizeBytes = maxMessageSizeBytes
        self.producerName = producerName
        if !hasRegistered {
            hasRegistered = true
            nextSequenceID = lastSequenceID + 1
        } else {
            logger.info("client.producer.reconnected", metadata: [
                "producer.name": "\(producerName)", "resent.messages": "\(pending.messageCount)",
            ])
        }
        backoff.reset()
        // Resend what still waits for a receipt, in order (ProducerImpl::resendMessages).
        pending.forEach { connection.writeFromAnyLoop($0.frame) }
    }

    /// The connection dropped or the broker closed this producer: reconnect unless closed.
    func connectionLost(_ lost: ClientConnection, error: PulsarClientError) {
        eventLoop.assertInEventLoop()
        guard closeError == nil, connection === lost else { return }
        connection = nil
        if client.isClosed {
            shutDown(PulsarClientError(.alreadyClosed, "the client was closed"))
            return
        }
        logger.info("client.producer.disconnected", metadata: ["error": "\(error)"])
        scheduleReconnect()
    }

    /// Arms the send timeout for the oldest pending op, unless disabled or already armed.
    private func armSendTimeout() {
        guard options.sendTimeout.nanoseconds > 0, sendTimeoutTimer == nil, closeError == nil,
            let deadline = pending.oldestDeadline
        else { return }
        sendTimeoutTimer = eventLoop.scheduleTask(deadline: deadline) { [self] in
            sendTimeoutTimer = nil
            sendTimeoutExpired()
        }
    }

    /// Fails the ops whose deadline has passed, oldest first (ProducerImpl::handleSendTimeout), then
    /// re-arms for the new oldest one.
    private func sendTimeoutExpired() {
        guard closeError == nil else { return }
        let expired = pending.removeExpired(now: eventLoop.now)
        if !expired.isEmpty {
            let count = expired.reduce(0) { $0 + $1.messageCount }
            logger.info("client.producer.send-timeout", metadata: [
                "failed.messages": "\(count)", "connected": "\(connection != nil)",
            ])
            let error = PulsarClientError(
                .timeout, "no receipt within the send timeout of \(options.sendTimeout)" + (connection == nil ? " (reconnecting)" : ""))
            for op in expired { op.completions.forEach { completion, _ in completion(.failure(error)) } }
        }
        roomMade()
        armSendTimeout()
    }

    private func scheduleReconnect() {
        guard closeError == nil, reconnectTimer == nil else { return }
        let delay = backoff.nextDelay()
        logger.debug("client.producer.reconnect-scheduled", metadata: ["delay.ms": "\(delay.nanoseconds / 1_000_000)"])
        reconnectTimer = eventLoop.scheduleTask(in: delay) { [self] in
            reconnectTimer = nil
            reconnect()
        }
    }

    private func reconnect() {
        guard closeError == nil, connection == nil else { return }
        client.lookupFuture(topic: topic, on: eventLoop).flatMap { connection in
            self.register(on: connection)
        }.whenFailure { [self] error in
            guard closeError == nil else { return }
            let clientError = error as? PulsarClientError ?? PulsarClientError(.connectionFailed, "\(error)")
            if client.isClosed {
                shutDown(PulsarClientError(.alreadyClosed, "the client was closed"))
            } else if clientError.isFatalForRegistration {
                logger.warning("client.producer.reconnect-refused", metadata: ["error": "\(clientError)"])
                shutDown(clientError)
            } else {
                logger.debug("client.producer.reconnect-failed", metadata: ["error": "\(clientError)"])
                scheduleReconnect()
            }
        }
    }

    // MARK: sending

    func send(_ message: OutgoingMessage, completion: @escaping SendCompletion) {
        eventLoop.assertInEventLoop()
        if let closeError {
            completion(.failure(closeError))
            return
        }
        guard waitingForRoom.isEmpty, pendingMessageCount < options.maxPendingMessages else {
            // No point in waiting for the batch timer (as the C++ client).
            flushBatch()
            guard options.blockIfQueueFull else {
                completion(.failure(PulsarClientError(
                    .producerQueueFull, "\(options.maxPendingMessages) messages are already waiting for receipts")))
                return
            }
            waitingForRoom.append((message, SendCallback(completion)))
            return
        }
        enqueue(message, completion: SendCallback(completion))
    }

    /// One stored entry, forwarded with its own metadata (`Producer.sendEntryAsync`); no batching,
    /// no compression (the body is sent as it is stored).
    func sendEntry(serializedMetadata: ByteBuffer, body: ByteBuffer, numMessages: Int32?, completion: @escaping SendCompletion) {
        eventLoop.assertInEventLoop()
        if let closeError {
            completion(.failure(closeError))
            return
        }
        guard pendingMessageCount < options.maxPendingMessages else {
            completion(.failure(PulsarClientError(
                .producerQueueFull, "\(options.maxPendingMessages) messages are already waiting for receipts")))
            return
        }
        guard serializedMetadata.readableBytes + body.readableBytes <= maxMessageSizeBytes else {
            completion(.failure(PulsarClientError(
                .messageTooBig, "\(body.readableBytes) bytes exceed the broker's limit of \(maxMessageSizeBytes)")))
            return
        }
        let sequenceID = nextSequenceID
        nextSequenceID += 1
        let frame = SendFrameEncoder.encode(
            producerID: producerID, sequenceID: sequenceID, numMessages: numMessages, serializedMetadata: serializedMetadata,
            body: body, allocator: allocator)
        appendPending(.init(
            firstSequenceID: sequenceID, lastSequenceID: sequenceID, isBatch: false, completions: .one(SendCallback(completion)),
            frame: frame))
        connection?.writeFromAnyLoop(frame)
    }

    /// Receipts, errors or timeouts removed pending ops: move what waits for room in, in order.
    private func roomMade() {
        guard !waitingForRoom.isEmpty else {
            completeDrainWaitersIfIdle()
            return
        }
        while closeError == nil, pendingMessageCount < options.maxPendingMessages, let next = waitingForRoom.popFirst() {
            enqueue(next.message, completion: next.completion)
        }
        // `flush()` waits for these too: do not leave them in an open batch.
        if !drainWaiters.isEmpty { flushBatch() }
        completeDrainWaitersIfIdle()
    }

    /// Adds one message to the open batch or sends it as its own entry.
    private func enqueue(_ message: OutgoingMessage, completion: SendCallback) {
        let payload = message.payload
        guard payload.readableBytes <= maxMessageSizeBytes else {
            completion(.failure(PulsarClientError(
                .messageTooBig, "\(payload.readableBytes) bytes exceed the broker's limit of \(maxMessageSizeBytes)")))
            return
        }
        // A transaction's message goes alone, after the open batch.
        if message.transaction != nil { flushBatch() }
        let sequenceID = nextSequenceID
        nextSequenceID += 1
        guard isBatching, message.transaction == nil else {
            var metadata = SendMetadata(
                producerName: producerName, sequenceID: sequenceID, publishTimeMs: Self.nowMs(), numMessagesInBatch: nil,
                properties: MetadataFields.sorted(message.properties), partitionKey: message.key, eventTimeMs: message.eventTimeMs,
                schemaVersion: schemaVersionBytes)
            var body = payload
            if options.compression != .none {
                metadata.compression = options.compression
                metadata.uncompressedSizeBytes = payload.readableBytes
                body = PayloadCodec.compress(payload, type: options.compression, allocator: allocator)
            }
            let frame = SendFrameEncoder.encode(
                producerID: producerID, metadata: metadata, body: body, transaction: message.transaction, allocator: allocator)
            appendPending(.init(
                firstSequenceID: sequenceID, lastSequenceID: sequenceID, isBatch: false, completions: .one(completion), frame: frame))
            connection?.writeFromAnyLoop(frame)
            return
        }
        if batch == nil {
            let capacity = min(options.batchingMaxBytes, options.batchingMaxMessages * (payload.readableBytes + 16)) + 64
            batch = MessageBatch(firstSequenceID: sequenceID, allocator: allocator, capacity: capacity)
            batchCompletions.reserveCapacity(options.batchingMaxMessages)
            batchTimer = eventLoop.scheduleTask(in: options.batchingMaxPublishDelay) { [self] in
                batchTimer = nil
                flushBatch()
            }
        }
        batch!.append(message)
        batchCompletions.append(completion)
        if batch!.count >= options.batchingMaxMessages || batch!.sizeBytes >= options.batchingMaxBytes {
            flushBatch()
        }
    }

    func flushBatch() {
        eventLoop.assertInEventLoop()
        batchTimer?.cancel()
        batchTimer = nil
        guard let batch, batch.count > 0 else { return }
        self.batch = nil
        let completions = batchCompletions
        batchCompletions = []
        let frame = batch.encode(
            producerID: producerID, producerName: producerName, publishTimeMs: Self.nowMs(), compression: options.compression,
            schemaVersion: schemaVersionBytes, allocator: allocator)
        appendPending(.init(
            firstSequenceID: batch.firstSequenceID, lastSequenceID: batch.lastSequenceID, isBatch: true,
            completions: .many(completions), frame: frame))
        connection?.writeFromAnyLoop(frame)
    }

    /// Queues an op for its receipt, with its send-timeout deadline.
    private func appendPending(_ op: PendingSends<SendCallback>.Op) {
        var op = op
        if options.sendTimeout.nanoseconds > 0 {
            op.deadline = eventLoop.now + options.sendTimeout
        }
        pending.append(op)
        if sendTimeoutTimer == nil { armSendTimeout() }
    }

    func receiptReceived(sequenceID: UInt64, messageID: Pulsar_Proto_MessageIdData) {
        receiptReceived(sequenceID: sequenceID, messageID: MessageID(messageID))
    }

    func receiptReceived(sequenceID: UInt64, messageID: MessageID) {
        switch pending.receiptReceived(sequenceID: Int64(bitPattern: sequenceID)) {
        case .completed(let op):
            var id = messageID
            id.partition = partition
            let count = Int32(op.messageCount)
            op.completions.forEach { completion, index in
                if op.isBatch {
                    id.batchIndex = Int32(index)
                    id.batchSize = count
                }
                completion(.success(id))
            }
            roomMade()
        case .stale:
            break
        case .unexpected(let expected):
            connection?.failFromAnyLoop(
                connection: "receipt for sequence id \(sequenceID) while \(expected.map { "\($0)" } ?? "nothing") was pending")
        }
    }

    /// SEND_ERROR fails the op it names (the broker answers in order, so that is the head).
    func sendErrorReceived(sequenceID: UInt64, error: PulsarClientError) {
        logger.info("client.producer.send-error", metadata: ["error": "\(error)"])
        guard let op = pending.removeHead(ifContains: Int64(bitPattern: sequenceID)) else { return }
        op.completions.forEach { completion, _ in completion(.failure(error)) }
        roomMade()
    }

    /// A future that completes when no message waits for a receipt.
    func waitForReceipts() -> EventLoopFuture<Void> {
        if pending.isEmpty, waitingForRoom.isEmpty { return eventLoop.makeSucceededVoidFuture() }
        let promise = eventLoop.makePromise(of: Void.self)
        drainWaiters.append(promise)
        return promise.futureResult
    }

    private func completeDrainWaitersIfIdle() {
        guard pending.isEmpty, waitingForRoom.isEmpty, !drainWaiters.isEmpty else { return }
        let waiters = drainWaiters
        drainWaiters = []
        for waiter in waiters { waiter.succeed() }
    }

    private func failPending(_ error: PulsarClientError) {
        for op in pending.removeAll() {
            op.completions.forEach { completion, _ in completion(.failure(error)) }
        }
        let waiters = drainWaiters
        drainWaiters = []
        for waiter in waiters { waiter.fail(error) }
    }

    func close() -> EventLoopFuture<Void> {
        guard closeError == nil else { return eventLoop.makeSucceededVoidFuture() }
        flushBatch()
        guard connection != nil else {
            shutDown(PulsarClientError(.alreadyClosed, "producer closed while disconnected"))
            return eventLoop.makeSucceededVoidFuture()
        }
        let producerID = self.producerID
        return waitForReceipts().flatMap { [self] () -> EventLoopFuture<Void> in
            guard let connection else { return eventLoop.makeSucceededVoidFuture() }
            return connection.requestFromAnyLoop(on: eventLoop) {
                ClientCommands.closeProducer(producerID: producerID, requestID: $0)
            }.map { _ in }
        }.always { [self] _ in
            shutDown(PulsarClientError(.alreadyClosed, "producer closed"))
        }
    }

    /// Fails every pending and future send with `error`; final.
    func shutDown(_ error: PulsarClientError) {
        guard closeError == nil else { return }
        closeError = error
        client.untrack(id: producerID)
        reconnectTimer?.cancel()
        reconnectTimer = nil
        sendTimeoutTimer?.cancel()
        sendTimeoutTimer = nil
        connection?.detachProducer(producerID)
        connection = nil
        batchTimer?.cancel()
        batchTimer = nil
        if batch != nil {
            batch = nil
            let completions = batchCompletions
            batchCompletions = []
            for completion in completions { completion(.failure(error)) }
        }
        failPending(error)
        while let waiting = waitingForRoom.popFirst() { waiting.completion(.failure(error)) }
    }

    static func nowMs() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }
    static func nowMsSigned() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
}

extension PulsarClientError {
    /// Failures of a first `createProducer` / `subscribe` / `createReader` step that may pass if it is
    /// tried again: the broker not reachable yet or the connection lost, no answer in time, and the
    /// broker refusals the C++ client retries (ServiceNotReady — also a topic being unloaded or not
    /// owned yet — TooManyRequests, metadata and persistence errors). Everything else, notably
    /// authorization, topic terminated, ProducerBusy, ConsumerBusy (Exclusive), TopicNotFound and
    /// incompatible schema, fails the creation at once.
    var isRetryableForCreation: Bool {
        switch code {
        case .connectionFailed, .connectionClosed, .timeout:
            return true
        case .server:
            guard let serverError else { return false }
            return [ServerError.serviceNotReady, .tooManyRequests, .metadataError, .persistenceError].contains(serverError)
        default:
            return false
        }
    }

    /// Errors after which retrying a PRODUCER/SUBSCRIBE cannot help (the C++ client's non-retryable results).
    var isFatalForRegistration: Bool {
        guard code == .server, let serverError else { return code == .alreadyClosed || code == .invalidURL }
        return [
            ServerError.authenticationError, .authorizationError, .topicTerminatedError, .producerFenced, .invalidTopicName,
            .incompatibleSchema, .notAllowedError, .unsupportedVersionError,
        ].contains(serverError)
    }
}
