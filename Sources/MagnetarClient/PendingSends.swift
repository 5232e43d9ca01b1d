import NIOCore

/// The SENDs of one producer that wait for their receipts, in send order, and the rule that matches a
/// receipt to them (notes §4.2): the broker answers in send order, so a receipt belongs to the *head*
/// op; any sequence id in the head's `[first, last]` (a batch) completes it, a smaller one is a stale
/// duplicate and is ignored, a larger one means the broker skipped an op — a protocol violation.
///
/// Ops that waited longer than the send timeout are removed from the head (`removeExpired`); a receipt
/// that arrives later for one of them is stale, not a protocol violation.
///
/// Generic over what is kept per message (the producer keeps completion callbacks) so it is testable
/// as a pure value. Owned by one producer on its event loop.
struct PendingSends<Completion> {
    /// One SEND frame: a single message or a batch.
    struct Op {
        var firstSequenceID: Int64
        var lastSequenceID: Int64
        /// True if sent in batch format (`num_messages_in_batch` set): the messages get batch indexes.
        var isBatch: Bool
        var completions: Completions
        /// The encoded SEND frame, kept to resend it after a reconnection (same producer and sequence ids).
        var frame = ByteBuffer()
        /// When the op fails with `timeout` if no receipt came (its append time + the send timeout).
        var deadline: NIODeadline = .distantFuture
        var messageCount: Int { completions.count }
    }

    /// One completion (an unbatched message: no array to allocate) or one per message of a batch.
    enum Completions {
        case one(Completion)
        case many([Completion])

        var count: Int {
            switch self {
            case .one: return 1
            case .many(let all): return all.count
            }
        }

        /// Calls `body` with each completion and its batch index, in order.
        func forEach(_ body: (Completion, Int) -> Void) {
            switch self {
            case .one(let completion): body(completion, 0)
            case .many(let all): for (index, completion) in all.enumerated() { body(completion, index) }
            }
        }
    }

    enum ReceiptOutcome {
        /// The receipt completes this op (now removed from the queue).
        case completed(Op)
        /// A receipt for an op that was already completed: ignore it.
        case stale
        /// A receipt ahead of the head (or with nothing pending): the broker broke ordering.
        case unexpected(expected: ClosedRange<Int64>?)
    }

    private var ops = CircularBuffer<Op>(initialCapacity: 64)
    /// Messages (not ops) waiting for receipts.
    private(set) var messageCount = 0
    /// The last sequence id of the newest op removed without a receipt (expired, failed): receipts up
    /// to it are stale even when nothing is pending.
    private var lastAbandonedSequenceID: Int64 = -1

    var opCount: Int { ops.count }
    var isEmpty: Bool { ops.isEmpty }
    /// The deadline of the oldest op: when the send timeout must look again.
    var oldestDeadline: NIODeadline? { ops.first?.deadline }

    mutating func append(_ op: Op) {
        ops.append(op)
        messageCount += op.messageCount
    }

    mutating func receiptReceived(sequenceID: Int64) -> ReceiptOutcome {
        if sequenceID <= lastAbandonedSequenceID { return .stale }
        guard let head = ops.first else { return .unexpected(expected: nil) }
        if sequenceID < head.firstSequenceID { return .stale }
        if sequenceID > head.lastSequenceID { return .unexpected(expected: head.firstSequenceID...head.lastSequenceID) }
        let op = ops.removeFirst()
        messageCount -= op.messageCount
        return .completed(op)
    }

    /// Removes the head op if `sequenceID` falls into it (a per-message SEND_ERROR such as ChecksumError).
    mutating func removeHead(ifContains sequenceID: Int64) -> Op? {
        guard let head = ops.first, head.firstSequenceID <= sequenceID, sequenceID <= head.lastSequenceID else {
            return nil
        }
        let op = ops.removeFirst()
        messageCount -= op.messageCount
        return op
    }

    /// Calls `body` with every op in send order (to resend them after a reconnection).
    func forEach(_ body: (Op) -> Void) {
        for op in ops { body(op) }
    }

    /// Removes the ops at the head whose deadline is not after `now` (the send timeout), in send order.
    /// Later ops stay: they were sent later and may still get their receipts.
    mutating func removeExpired(now: NIODeadline) -> [Op] {
        var expired: [Op] = []
        while let head = ops.first, head.deadline <= now {
            let op = ops.removeFirst()
            messageCount -= op.messageCount
            lastAbandonedSequenceID = max(lastAbandonedSequenceID, op.lastSequenceID)
            expired.append(op)
        }
        return expired
    }

    /// Empties the queue (producer closed), returning the ops in send order.
    mutating func removeAll() -> [Op] {
        let all = Array(ops)
        if let last = ops.last { lastAbandonedSequenceID = max(lastAbandonedSequenceID, last.lastSequenceID) }
        ops.removeAll(keepingCapacity: true)
        messageCount = 0
        return all
    }
}
