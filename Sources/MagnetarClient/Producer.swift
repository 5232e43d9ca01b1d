import Foundation
import Logging
import NIOCore
import PulsarProtocol

/// How a producer sends. A pure value.
public struct ProducerOptions: Sendable {
    /// The producer name; nil lets the broker choose a unique one.
    public var name: String?
    /// Messages per batch entry; 0 or 1 sends every message as its own entry (no batch format).
    public var batchingMaxMessages: Int = 0
    /// A batch is also sent when its body reaches this many bytes.
    public var batchingMaxBytes: Int = 128 * 1024
    /// A batch is also sent this long after its first message was added.
    public var batchingMaxPublishDelay: TimeAmount = .milliseconds(1)
    /// Messages waiting for receipts (including the open batch) before `sendAsync` fails with `producerQueueFull`.
    public var maxPendingMessages: Int = 100_000

    public init() {}
}

/// The completion of one `sendAsync`: the stored message's id, or why it failed. Called on the
/// producer's event loop, in send order.
public typealias SendCompletion = @Sendable (Result<MessageID, PulsarClientError>) -> Void

/// Publishes to one topic (one partition) over one connection.
///
/// `sendAsync` pipelines: any number of SENDs (up to `maxPendingMessages`) are in flight; receipts come
/// back in send order and complete the callbacks in that order. With batching on, messages collect into
/// one entry until `batchingMaxMessages`, `batchingMaxBytes` or `batchingMaxPublishDelay`. Sending from
/// the producer's `eventLoop` costs no thread hop (what `magnetar perf` does); from elsewhere each call
/// hops once. Thread-safe. Lifecycle: created by `PulsarClient.createProducer`, open until `close()`
/// or until its connection drops (then every pending and later send fails; no reconnect yet).
public final class Producer: Sendable {
    let core: ProducerCore
    /// The fully qualified topic.
    public let topic: String
    /// The name the broker confirmed.
    public let name: String
    /// The event loop that owns this producer; callbacks run here.
    public var eventLoop: any EventLoop { core.eventLoop }

    init(core: ProducerCore, name: String) {
        self.core = core
        self.topic = core.topic
        self.name = name
    }

    /// Sends one message and waits for its receipt.
    public func send(_ payload: ByteBuffer) async throws(PulsarClientError) -> MessageID {
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<MessageID, PulsarClientError>, Never>) in
            sendAsync(payload) { continuation.resume(returning: $0) }
        }
        return try result.get()
    }

    /// Queues one message; `completion` runs on `eventLoop` when the receipt (or an error) arrives.
    public func sendAsync(_ payload: ByteBuffer, completion: @escaping SendCompletion) {
        if core.eventLoop.inEventLoop {
            core.send(payload, completion: completion)
        } else {
            let core = self.core
            core.eventLoop.execute { core.send(payload, completion: completion) }
        }
    }

    /// Sends the open batch now (no-op without batching).
    public func flushBatch() {
        let core = self.core
        core.eventLoop.execute { core.flushBatch() }
    }

    /// Sends the open batch and waits until every message sent so far has its receipt or error.
    public func flush() async throws {
        let core = self.core
        try await core.eventLoop.flatSubmit { core.flushBatch(); return core.waitForReceipts() }.get()
    }

    /// Messages waiting for receipts, including the open batch. Exact only on `eventLoop`.
    public var pendingMessageCount: Int {
        core.eventLoop.assertInEventLoop()
        return core.pendingMessageCount
    }

    /// Sends the open batch, waits for outstanding receipts, then closes the producer on the broker.
    public func close() async throws {
        let core = self.core
        try await core.eventLoop.flatSubmit { core.close() }.get()
    }
}

/// The state of one producer: sequence ids, the open batch, the sends awaiting receipts. Lives on its
/// connection's event loop; every method must run there.
final class ProducerCore: @unchecked Sendable {
    let connection: ClientConnection
    let eventLoop: any EventLoop
    let topic: String
    let producerID: UInt64
    let options: ProducerOptions
    /// The partition reported in message ids (-1: not partitioned).
    let partition: Int32
    var producerName = ""
    private let logger: Logger

    private var nextSequenceID: Int64 = 0
    private var pending = PendingSends<SendCompletion>()
    private var batch: MessageBatch?
    private var batchCompletions: [SendCompletion] = []
    private var batchTimer: Scheduled<Void>?
    private var drainWaiters: [EventLoopPromise<Void>] = []
    private var closeError: PulsarClientError?

    init(connection: ClientConnection, topic: String, producerID: UInt64, partition: Int32, options: ProducerOptions, logger: Logger) {
        self.connection = connection
        self.eventLoop = connection.eventLoop
        self.topic = topic
        self.producerID = producerID
        self.partition = partition
        self.options = options
        var logger = logger
        logger[metadataKey: "topic"] = "\(topic)"
        self.logger = logger
    }

    var isBatching: Bool { options.batchingMaxMessages > 1 }
    var pendingMessageCount: Int { pending.messageCount + (batch?.count ?? 0) }

    /// Called once PRODUCER_SUCCESS arrived: continue after the broker's last persisted sequence id.
    func ready(producerName: String, lastSequenceID: Int64) {
        self.producerName = producerName
        nextSequenceID = lastSequenceID + 1
    }

    func send(_ payload: ByteBuffer, completion: @escaping SendCompletion) {
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
        guard payload.readableBytes <= connection.maxMessageSizeBytes else {
            completion(.failure(PulsarClientError(
                .messageTooBig, "\(payload.readableBytes) bytes exceed the broker's limit of \(connection.maxMessageSizeBytes)")))
            return
        }
        let sequenceID = nextSequenceID
        nextSequenceID += 1
        guard isBatching else {
            let metadata = SendMetadata(
                producerName: producerName, sequenceID: sequenceID, publishTimeMs: Self.nowMs(), numMessagesInBatch: nil)
            let frame = SendFrameEncoder.encode(
                producerID: producerID, metadata: metadata, body: payload, allocator: connection.allocator)
            pending.append(.init(firstSequenceID: sequenceID, lastSequenceID: sequenceID, isBatch: false, completions: .one(completion)))
            connection.write(frame)
            return
        }
        if batch == nil {
            let capacity = min(options.batchingMaxBytes, options.batchingMaxMessages * (payload.readableBytes + 16)) + 64
            batch = MessageBatch(firstSequenceID: sequenceID, allocator: connection.allocator, capacity: capacity)
            batchCompletions.reserveCapacity(options.batchingMaxMessages)
            batchTimer = eventLoop.scheduleTask(in: options.batchingMaxPublishDelay) { [self] in
                batchTimer = nil
                flushBatch()
            }
        }
        batch!.append(payload)
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
            producerID: producerID, producerName: producerName, publishTimeMs: Self.nowMs(), allocator: connection.allocator)
        pending.append(.init(
            firstSequenceID: batch.firstSequenceID, lastSequenceID: batch.lastSequenceID, isBatch: true,
            completions: .many(completions)))
        connection.write(frame)
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
            completeDrainWaitersIfIdle()
        case .stale:
            break
        case .unexpected(let expected):
            connection.fail(connection: "receipt for sequence id \(sequenceID) while \(expected.map { "\($0)" } ?? "nothing") was pending")
        }
    }

    /// SEND_ERROR fails the op it names (the broker answers in order, so that is the head).
    func sendErrorReceived(sequenceID: UInt64, error: PulsarClientError) {
        logger.info("client.producer.send-error", metadata: ["error": "\(error)"])
        guard let op = pending.removeHead(ifContains: Int64(bitPattern: sequenceID)) else { return }
        op.completions.forEach { completion, _ in completion(.failure(error)) }
        completeDrainWaitersIfIdle()
    }

    /// A future that completes when no message waits for a receipt.
    func waitForReceipts() -> EventLoopFuture<Void> {
        if pending.isEmpty { return eventLoop.makeSucceededVoidFuture() }
        let promise = eventLoop.makePromise(of: Void.self)
        drainWaiters.append(promise)
        return promise.futureResult
    }

    private func completeDrainWaitersIfIdle() {
        guard pending.isEmpty, !drainWaiters.isEmpty else { return }
        let waiters = drainWaiters
        drainWaiters = []
        for waiter in waiters { waiter.succeed() }
    }

    func close() -> EventLoopFuture<Void> {
        guard closeError == nil else { return eventLoop.makeSucceededVoidFuture() }
        flushBatch()
        return waitForReceipts().flatMap { [self] in
            connection.request { ClientCommands.closeProducer(producerID: producerID, requestID: $0) }.map { _ in }
        }.always { [self] _ in
            connection.unregisterProducer(producerID)
            shutDown(PulsarClientError(.alreadyClosed, "producer closed"))
        }
    }

    /// Fails every pending and future send with `error`.
    func shutDown(_ error: PulsarClientError) {
        guard closeError == nil else { return }
        closeError = error
        batchTimer?.cancel()
        batchTimer = nil
        if let batch {
            self.batch = nil
            _ = batch
            let completions = batchCompletions
            batchCompletions = []
            for completion in completions { completion(.failure(error)) }
        }
        for op in pending.removeAll() {
            op.completions.forEach { completion, _ in completion(.failure(error)) }
        }
        let waiters = drainWaiters
        drainWaiters = []
        for waiter in waiters { waiter.fail(error) }
    }

    static func nowMs() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }
}
