import NIOCore

/// Reads a topic from a chosen position without a durable subscription (Pulsar's Reader): a
/// non-durable exclusive subscription `reader-<random>` positioned with SUBSCRIBE's `start_message_id`.
/// Nothing is acknowledged; after a reconnection it resumes after the last message it returned.
/// Thread-safe. Lifecycle: `PulsarClient.createReader` … `close()`.
public final class Reader: Sendable {
    let consumer: Consumer
    let inclusive: Bool
    public var topic: String { consumer.topic }

    private init(consumer: Consumer, inclusive: Bool) {
        self.consumer = consumer
        self.inclusive = inclusive
    }

    /// Sets what `hasMessageAvailable` compares with before anything was read: nothing (earliest),
    /// the topic's last id when starting at `.latest`, or the start id.
    static func make(consumer: Consumer, start: StartMessageID, inclusive: Bool) async throws -> Reader {
        let core = consumer.cores[0]
        try await core.eventLoop.flatSubmit { () -> EventLoopFuture<Void> in
            switch start {
            case .earliest:
                core.availabilityReference = .anyMessage
                return core.eventLoop.makeSucceededVoidFuture()
            case .latest:
                return core.lastMessageID().map { core.availabilityReference = .after($0, inclusive: false) }
            case .id(let id):
                core.availabilityReference = .after(id, inclusive: inclusive)
                return core.eventLoop.makeSucceededVoidFuture()
            }
        }.get()
        return Reader(consumer: consumer, inclusive: inclusive)
    }

    /// The next message; waits until one arrives.
    public func readNext() async throws -> Message { try await consumer.receive() }

    /// Up to `maxMessages` messages (at least one; waits for it).
    public func readNext(maxMessages: Int) async throws -> [Message] { try await consumer.receive(maxMessages: maxMessages) }

    /// True if a message after the last one read exists: one is queued, or GET_LAST_MESSAGE_ID names a
    /// later one. While the reader is reconnecting (after a seek, say) it waits for it, up to the
    /// client's operation timeout.
    public func hasMessageAvailable() async throws -> Bool {
        let timeout = consumer.cores[0].client.options.operationTimeout
        let deadline = ContinuousClock.now + .nanoseconds(timeout.nanoseconds)
        while true {
            do {
                return try await checkMessageAvailable()
            } catch let error as PulsarClientError where error.code == .connectionClosed && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    private func checkMessageAvailable() async throws -> Bool {
        let core = consumer.cores[0]
        let queue = consumer.queue
        return try await queue.eventLoop.flatSubmit { () -> EventLoopFuture<Bool> in
            if !queue.isEmpty { return queue.eventLoop.makeSucceededFuture(true) }
            let dequeued = core.lastDequeuedID
            let reference = core.availabilityReference
            return core.lastMessageIDs().map { last, markDelete in
                guard last.ledgerID >= 0, last.entryID >= 0 else { return false }
                if let dequeued { return Reader.isAfter(last, dequeued, inclusive: false) }
                switch reference {
                case .anyMessage:
                    return true
                case .after(let id, let inclusive):
                    return Reader.isAfter(last, id, inclusive: inclusive)
                case .afterMarkDeletePosition:
                    guard let markDelete else { return true }
                    return Reader.isAfter(last, markDelete, inclusive: false)
                }
            }
        }.get()
    }

    /// Repositions the reader (SEEK): `.id(x)` continues after `x` (at `x` if the reader is inclusive).
    public func seek(to position: StartMessageID) async throws {
        let core = consumer.cores[0]
        let inclusive = self.inclusive
        try await core.eventLoop.flatSubmit { core.seek(to: position, inclusive: inclusive) }.get()
    }

    /// Repositions the reader at the first message published at or after `publishTimeMs` (ms since the
    /// epoch; SEEK with `message_publish_time`).
    public func seek(toPublishTime publishTimeMs: UInt64) async throws {
        let core = consumer.cores[0]
        try await core.eventLoop.flatSubmit { core.seek(toPublishTime: publishTimeMs) }.get()
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
