import NIOConcurrencyHelpers
import NIOCore

/// Replies to SENDs (receipts and send errors) on their way from topic event loops to one
/// connection's loop. A topic completes many appends in one go (a group commit); instead of one
/// loop hop and one flush per reply, the first reply of a burst schedules one task on the
/// connection's loop, which writes every reply queued by then and flushes once. Thread-safe.
final class ReplyOutbox: @unchecked Sendable {
    private let lock = NIOLock()
    private var queued: [ByteBuffer] = []
    private var spare: [ByteBuffer] = []
    private var drainScheduled = false
    private let channel: any Channel
    /// Runs on the connection's loop with the number of replies written (backpressure accounting).
    private let written: (Int) -> Void

    init(channel: any Channel, written: @escaping (Int) -> Void) {
        self.channel = channel
        self.written = written
    }

    /// Queues a reply frame; from any thread.
    func post(_ frame: ByteBuffer) {
        let schedule = lock.withLock { () -> Bool in
            queued.append(frame)
            if drainScheduled { return false }
            drainScheduled = true
            return true
        }
        if schedule {
            channel.eventLoop.execute { self.drain() }
        }
    }

    private func drain() {
        let batch = lock.withLock { () -> [ByteBuffer] in
            drainScheduled = false
            let batch = queued
            queued = spare
            return batch
        }
        for frame in batch {
            channel.write(frame, promise: nil)
        }
        channel.flush()
        written(batch.count)
        var emptied = batch
        emptied.removeAll(keepingCapacity: true)
        lock.withLock { if spare.capacity < emptied.capacity { spare = emptied } }
    }
}
