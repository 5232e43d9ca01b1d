import NIOConcurrencyHelpers
import NIOCore

/// Replies to SENDs (receipts and send errors) on their way from topic event loops to one
/// connection's loop. A topic completes many appends in one go (a group commit); instead of one
/// loop hop, one buffer and one flush per reply, replies are encoded straight into one shared
/// buffer, and the first reply of a burst schedules one task on the connection's loop, which
/// writes that buffer and flushes once. Thread-safe.
final class ReplyOutbox: @unchecked Sendable {
    private let lock = NIOLock()
    /// Encoded replies not yet handed to the channel, and how many.
    private var pending: ByteBuffer
    private var pendingCount = 0
    private var drainScheduled = false
    private let channel: any Channel
    /// Runs on the connection's loop with the number of replies written (backpressure accounting).
    private let written: (Int) -> Void

    init(channel: any Channel, written: @escaping (Int) -> Void) {
        self.channel = channel
        self.written = written
        self.pending = channel.allocator.buffer(capacity: 4096)
    }

    /// Queues an encoded reply frame; from any thread.
    func post(_ frame: ByteBuffer) {
        post { $0.writeImmutableBuffer(frame) }
    }

    /// Queues one reply that `encode` writes (a whole frame) into the shared buffer; from any thread.
    /// `encode` runs under the outbox's lock: keep it to writing bytes.
    func post(encoding encode: (inout ByteBuffer) -> Void) {
        let schedule = lock.withLock { () -> Bool in
            encode(&pending)
            pendingCount += 1
            if drainScheduled { return false }
            drainScheduled = true
            return true
        }
        if schedule {
            channel.eventLoop.execute { self.drain() }
        }
    }

    /// Capacity of the next reply buffer: about what the last burst needed, so a busy connection
    /// does not grow its buffer by reallocation on every burst.
    private var nextCapacity = 4096

    private func drain() {
        var fresh = channel.allocator.buffer(capacity: nextCapacity)
        let count = lock.withLock { () -> Int in
            drainScheduled = false
            swap(&fresh, &pending)
            defer { pendingCount = 0 }
            return pendingCount
        }
        nextCapacity = min(max(4096, fresh.readableBytes + fresh.readableBytes / 4), 1 << 20)
        channel.writeAndFlush(fresh, promise: nil)
        written(count)
    }
}
