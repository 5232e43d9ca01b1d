import Foundation
import Histogram
import MagnetarClient
import NIOCore
import Synchronization

/// Monotonic nanoseconds (also what `e2e` writes into each payload: producer and consumer share a process).
func perfNowNanos() -> UInt64 { NIODeadline.now().uptimeNanoseconds }

/// A counter shared by tasks (Atomic itself is noncopyable, so it cannot be captured).
final class PerfCounter: Sendable {
    private let storage = Atomic<Int>(0)
    var value: Int { storage.load(ordering: .relaxed) }
    func add(_ amount: Int) { storage.add(amount, ordering: .relaxed) }
}

/// Latencies in microseconds, up to one minute, three significant digits.
func makeLatencyHistogram() -> Histogram<UInt64> {
    Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
}

/// Counters and latencies of one interval (or of the whole run). A pure value.
struct PerfSample: Sendable {
    var messages = 0
    var bytes = 0
    var errors = 0
    var latency = makeLatencyHistogram()

    mutating func add(_ other: PerfSample) {
        messages += other.messages
        bytes += other.bytes
        errors += other.errors
        latency.add(other.latency)
    }
}

/// Drives one producer from its own event loop: sends while the in-flight window and the rate allow,
/// refills from receipt callbacks, records publish latency (send call → receipt) per message.
///
/// Receipts complete in send order, so the send time of each message is simply the head of a FIFO:
/// one closure for all sends, no per-message Task or allocation besides the ring slot. Loop-confined.
final class PerfProduceDriver: @unchecked Sendable {
    let producer: Producer
    let eventLoop: any EventLoop
    private let payload: ByteBuffer
    private let embedTimestamp: Bool
    private let nanosPerMessage: Double  // 0 = as fast as possible
    private let messageLimit: Int  // 0 = unlimited
    private let maxInFlight: Int
    private static let maxSendsPerTick = 4096

    private var sendTimes = CircularBuffer<UInt64>(initialCapacity: 1024)
    private var startNanos: UInt64 = 0
    private(set) var sent = 0
    private var completed = 0
    private var isStopped = false
    private var isPumpScheduled = false
    private var timer: Scheduled<Void>?
    private var interval = PerfSample()
    private var total = PerfSample()
    private var drained: EventLoopPromise<Void>?
    private(set) var lastError: String?
    private var completion: SendCompletion = { _ in }

    init(producer: Producer, payloadSize: Int, embedTimestamp: Bool, ratePerSecond: Double, messageLimit: Int, maxInFlight: Int) {
        self.producer = producer
        self.eventLoop = producer.eventLoop
        var payload = ByteBufferAllocator().buffer(capacity: payloadSize)
        payload.writeRepeatingByte(0x6D, count: payloadSize)
        self.payload = payload
        self.embedTimestamp = embedTimestamp && payloadSize >= 8
        self.nanosPerMessage = ratePerSecond > 0 ? 1e9 / ratePerSecond : 0
        self.messageLimit = messageLimit
        self.maxInFlight = maxInFlight
        self.completion = { [unowned self] result in self.sendCompleted(result) }
    }

    /// Starts sending; the future completes when the driver stopped and every receipt arrived.
    func start() -> EventLoopFuture<Void> {
        eventLoop.flatSubmit { [self] in
            drained = eventLoop.makePromise()
            startNanos = perfNowNanos()
            pump()
            return drained!.futureResult
        }
    }

    func stop() {
        eventLoop.execute { [self] in finish() }
    }

    /// The interval's sample, and the start of a new one.
    func takeInterval() -> EventLoopFuture<PerfSample> {
        eventLoop.submit { [self] in
            let sample = interval
            interval = PerfSample()
            return sample
        }
    }

    func totals() -> EventLoopFuture<PerfSample> { eventLoop.submit { [self] in total } }

    private func finish() {
        guard !isStopped else { return }
        isStopped = true
        timer?.cancel()
        timer = nil
        producer.flushBatch()
        checkDrained()
    }

    private func checkDrained() {
        if isStopped, completed == sent, let drained {
            self.drained = nil
            drained.succeed()
        }
    }

    private func pump() {
        isPumpScheduled = false
        guard !isStopped else { return }
        let now = perfNowNanos()
        var allowed = maxInFlight - (sent - completed)
        if nanosPerMessage > 0 {
            let due = Int(Double(now - startNanos) / nanosPerMessage) + 1
            allowed = min(allowed, due - sent)
        }
        if messageLimit > 0 { allowed = min(allowed, messageLimit - sent) }
        allowed = min(allowed, Self.maxSendsPerTick)
        if allowed > 0 {
            for _ in 0..<allowed {
                var body = payload
                if embedTimestamp {
                    body = ByteBufferAllocator().buffer(capacity: payload.readableBytes)
                    body.writeInteger(perfNowNanos())
                    body.writeRepeatingByte(0x6D, count: payload.readableBytes - 8)
                }
                sendTimes.append(now)  // every message of this tick is handed over now
                sent += 1
                producer.sendAsync(body, completion: completion)
            }
        }
        if messageLimit > 0, sent >= messageLimit {
            finish()
            return
        }
        if allowed == Self.maxSendsPerTick {
            schedulePump()  // more is allowed: continue after the loop handled I/O
        } else if nanosPerMessage > 0, sent - completed < maxInFlight, timer == nil {
            let next = startNanos + UInt64(Double(sent) * nanosPerMessage)
            timer = eventLoop.scheduleTask(deadline: NIODeadline.uptimeNanoseconds(next)) { [self] in
                timer = nil
                pump()
            }
        }
        // Otherwise the window is full: receipts call pump.
    }

    private func schedulePump() {
        guard !isPumpScheduled else { return }
        isPumpScheduled = true
        eventLoop.execute { [self] in pump() }
    }

    /// The clock read once per event loop tick for receipts: a batch's receipts complete together,
    /// and reading the clock for each of them was 6 % of the perf client's CPU.
    private var receiptTickNanos: UInt64?

    private func receiptNow() -> UInt64 {
        if let receiptTickNanos { return receiptTickNanos }
        let now = perfNowNanos()
        receiptTickNanos = now
        eventLoop.execute { [self] in receiptTickNanos = nil }
        return now
    }

    private func sendCompleted(_ result: Result<MessageID, PulsarClientError>) {
        let sentAt = sendTimes.removeFirst()
        completed += 1
        switch result {
        case .success:
            let micros = (receiptNow() &- sentAt) / 1000
            interval.messages += 1
            interval.bytes += payload.readableBytes
            _ = interval.latency.record(max(micros, 1))
            total.messages += 1
            total.bytes += payload.readableBytes
            _ = total.latency.record(max(micros, 1))
        case .failure(let error):
            interval.errors += 1
            total.errors += 1
            lastError = "\(error)"
        }
        if isStopped {
            checkDrained()
        } else if timer == nil {
            schedulePump()
        }
    }
}

/// Receives on one consumer in a loop (one Task per consumer, up to 1,000 messages per hop), acknowledges
/// each batch, and records end-to-end latency from the timestamp in the payload when asked to.
final class PerfConsumeDriver: Sendable {
    let consumer: Consumer
    private let measureEndToEnd: Bool
    private let interval = Mutex(PerfSample())
    private let total = Mutex(PerfSample())

    init(consumer: Consumer, measureEndToEnd: Bool) {
        self.consumer = consumer
        self.measureEndToEnd = measureEndToEnd
    }

    var received: Int { total.withLock { $0.messages } }

    func takeInterval() -> PerfSample {
        interval.withLock { sample in
            let taken = sample
            sample = PerfSample()
            return taken
        }
    }

    func totals() -> PerfSample { total.withLock { $0 } }

    /// Receives until cancelled or until `limit` messages (0 = no limit) were received in total by `shared`.
    func run(limit: Int, shared: PerfCounter) async {
        while !Task.isCancelled {
            if limit > 0, shared.value >= limit { return }
            let messages: [Message]
            do {
                messages = try await consumer.receive(maxMessages: 1000)
            } catch {
                return
            }
            let now = perfNowNanos()
            var sample = PerfSample()
            for message in messages {
                sample.messages += 1
                sample.bytes += message.payload.readableBytes
                if measureEndToEnd, let sentAt = message.payload.getInteger(at: message.payload.readerIndex, as: UInt64.self),
                   sentAt <= now
                {
                    _ = sample.latency.record(max((now - sentAt) / 1000, 1))
                }
            }
            consumer.acknowledge(messages.map(\.id))
            interval.withLock { $0.add(sample) }
            total.withLock { $0.add(sample) }
            shared.add(messages.count)
        }
    }
}
