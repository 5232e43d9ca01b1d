import NIOCore

/// Reads a topic from a chosen position without a durable subscription (Pulsar's Reader): a
/// non-durable exclusive subscription `reader-<random>` positioned with SUBSCRIBE's `start_message_id`.
/// Nothing is acknowledged; after a reconnection it resumes after the last message it returned.
/// Thread-safe. Lifecycle: `PulsarClient.createReader` … `close()`.
public final class Reader: Sendable {
    let consumer: Consumer
    /// For `hasMessageAvailable` before anything was read: the id the first message must exceed
    /// (the topic's last id when the reader started at `.latest`).
    private let reference: MessageID?
    private let referenceInclusive: Bool
    public var topic: String { consumer.topic }

    private init(consumer: Consumer, reference: MessageID?, referenceInclusive: Bool) {
        self.consumer = consumer
        self.reference = reference
        self.referenceInclusive = referenceInclusive
    }

    static func make(consumer: Consumer, start: StartMessageID, inclusive: Bool) async throws -> Reader {
        switch start {
        case .earliest:
            return Reader(consumer: consumer, reference: nil, referenceInclusive: true)
        case .latest:
            let core = consumer.cores[0]
            let last = try await core.eventLoop.flatSubmit { core.lastMessageID() }.get()
            return Reader(consumer: consumer, reference: last, referenceInclusive: false)
        case .id(let id):
            return Reader(consumer: consumer, reference: id, referenceInclusive: inclusive)
        }
    }

    /// The next message; waits until one arrives.
    public func readNext() async throws -> Message { try await consumer.receive() }

    /// Up to `maxMessages` messages (at least one; waits for it).
    public func readNext(maxMessages: Int) async throws -> [Message] { try await consumer.receive(maxMessages: maxMessages) }

    /// True if a message after the last one read exists: one is queued, or GET_LAST_MESSAGE_ID names a
    /// later one.
    public func hasMessageAvailable() async throws -> Bool {
        let core = consumer.cores[0]
        let queue = consumer.queue
        let (reference, inclusive) = (self.reference, referenceInclusive)
        return try await queue.eventLoop.flatSubmit { () -> EventLoopFuture<Bool> in
            if !queue.isEmpty { return queue.eventLoop.makeSucceededFuture(true) }
            let dequeued = core.lastDequeuedID
            return core.lastMessageID().map { last in
                guard last.ledgerID >= 0, last.entryID >= 0 else { return false }
                if let dequeued { return Reader.isAfter(last, dequeued, inclusive: false) }
                guard let reference else { return true }
                return Reader.isAfter(last, reference, inclusive: inclusive)
            }
        }.get()
    }

    /// Whether `last` is past `reference` (or equal to it, when inclusive), in (ledger, entry, batch index) order.
    static func isAfter(_ last: MessageID, _ reference: MessageID, inclusive: Bool) -> Bool {
        let lhs = (last.ledgerID, last.entryID)
        let rhs = (reference.ledgerID, reference.entryID)
        if lhs != rhs { return lhs > rhs }
        if last.batchIndex < 0 || reference.batchIndex < 0 { return inclusive }
        return inclusive ? last.batchIndex >= reference.batchIndex : last.batchIndex > reference.batchIndex
    }

    public func close() async throws { try await consumer.close() }
}
