import ArgumentParser
import Foundation
import MagnetarClient
import NIOCore
import Synchronization

/// `magnetar perf topics`: many topics at once, each with one producer and one consumer (exclusive
/// subscription), created in a ramp; a low total publish rate spread over every topic keeps each one
/// live. At every checkpoint count it prints one JSON line on stdout (`{"event":"checkpoint",…}`) and
/// holds the load there for `--hold` seconds, so a script can read the broker's memory at that count.
/// Ends with a `{"event":"summary",…}` line.
struct PerfTopicsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "topics",
        abstract: "Create many topics (one producer + one consumer each) in a ramp and keep them live at a low rate.")

    @Option(help: "Service URL.")
    var url = "pulsar://127.0.0.1:6650"

    @OptionGroup var auth: AuthTokenOptions

    @OptionGroup var tls: TLSClientOptions

    @Option(help: "Topics to create in total.")
    var topics = 1000

    @Option(help: "Topic names: persistent://public/default/<prefix>-<i>.")
    var topicPrefix = "scale"

    @Option(help: "Subscription name (exclusive, one consumer per topic).")
    var subscription = "scale-sub"

    @Option(help: "Client connections; topic i uses connection i mod N.")
    var connections = 4

    @Option(help: "Topic creations (subscribe + create producer) in flight at once.")
    var concurrency = 64

    @Option(help: "Messages per second over all topics (round robin), while the ramp runs and after.")
    var rate: Double = 1000

    @Option(help: "Message size in bytes.")
    var size = 100

    @Option(help: "Receiver queue size (permits) per consumer.")
    var receiverQueue = 10

    @Option(help: "Comma-separated topic counts at which to print a checkpoint and hold.")
    var checkpoints = ""

    @Option(help: "Seconds to hold the load at each checkpoint.")
    var hold: Double = 10

    @Option(help: "Seconds to keep the load running once every topic exists.")
    var duration: Double = 10

    func run() async throws {
        PerfRun.bootstrapLogging()
        guard topics > 0, connections > 0, concurrency > 0 else { throw ValidationError("--topics, --connections and --concurrency must be positive") }
        var stages = checkpoints.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            .filter { $0 > 0 && $0 < topics }
        stages = Array(Set(stages)).sorted() + [topics]

        var clientOptions = ClientOptions()
        clientOptions.authToken = try auth.token()
        tls.apply(to: &clientOptions)
        let clients = try (0..<connections).map { _ in try PulsarClient(url: url, options: clientOptions) }
        let load = TopicsLoad(connections: connections, ratePerSecond: rate, payloadSize: size)
        var payload = ByteBufferAllocator().buffer(capacity: size)
        payload.writeRepeatingByte(0x6D, count: size)
        let consumerOptions = {
            var options = ConsumerOptions()
            options.receiverQueueSize = receiverQueue
            options.initialPosition = .earliest
            return options
        }()
        let producerOptions = {
            var options = ProducerOptions()
            options.maxPendingMessages = 1000
            return options
        }()

        let connectionCount = connections
        let prefix = topicPrefix
        let subscription = self.subscription
        let start = perfNowNanos()
        var created = 0
        var lastProgress = start
        let creationErrors = PerfCounter()
        for stage in stages {
            let stageStart = perfNowNanos()
            let first = created
            try await withThrowingTaskGroup(of: Void.self) { group in
                var next = first
                var inFlight = 0
                func launch(_ index: Int) {
                    let connection = index % connectionCount
                    let client = clients[connection]
                    let topic = "persistent://public/default/\(prefix)-\(index)"
                    group.addTask {
                        do {
                            let consumer = try await client.subscribe(
                                topic: topic, subscription: subscription, type: .exclusive, options: consumerOptions)
                            let producer = try await client.createProducer(topic: topic, options: producerOptions)
                            load.add(producer: producer, consumer: consumer, connection: connection)
                        } catch {
                            creationErrors.add(1)
                            load.recordError("\(topic): \(error)")
                        }
                    }
                }
                while next < stage && inFlight < concurrency {
                    launch(next)
                    next += 1
                    inFlight += 1
                }
                while inFlight > 0 {
                    try await group.next()
                    inFlight -= 1
                    created += 1
                    if next < stage {
                        launch(next)
                        next += 1
                        inFlight += 1
                    }
                    let now = perfNowNanos()
                    if now - lastProgress >= 1_000_000_000 {
                        lastProgress = now
                        let seconds = Double(now - start) / 1e9
                        FileHandle.standardError.write(Data(
                            "[perf topics] \(created)/\(topics) topics in \(String(format: "%.1f", seconds)) s, errors \(creationErrors.value) | \(load.line())\n".utf8))
                    }
                }
            }
            if stage == stages.first { load.start(payload: payload) }
            let now = perfNowNanos()
            let event = TopicsEvent(
                event: stage == topics ? "created" : "checkpoint", topics: created, creationErrors: creationErrors.value,
                elapsedSeconds: Double(now - start) / 1e9, stageSeconds: Double(now - stageStart) / 1e9,
                sent: load.sent.value, acked: load.acked.value, sendErrors: load.sendErrors.value,
                received: load.received.value, lastError: load.lastError())
            emit(event)
            if stage < topics {
                try await Task.sleep(nanoseconds: UInt64(hold * 1e9))
            }
        }
        let loadStart = perfNowNanos()
        let ackedBefore = load.acked.value
        let receivedBefore = load.received.value
        while perfNowNanos() - loadStart < UInt64(duration * 1e9) {
            try await Task.sleep(nanoseconds: 1_000_000_000)
            FileHandle.standardError.write(Data("[perf topics] \(created) topics | \(load.line())\n".utf8))
        }
        let loadSeconds = Double(perfNowNanos() - loadStart) / 1e9
        load.stop()
        // Let what is in flight arrive: every send answered and every acked message received (10 s at most).
        let drainDeadline = perfNowNanos() + 10_000_000_000
        while perfNowNanos() < drainDeadline,
              load.acked.value + load.sendErrors.value < load.sent.value || load.received.value < load.acked.value
        {
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        var summary = TopicsEvent(
            event: "summary", topics: created, creationErrors: creationErrors.value,
            elapsedSeconds: Double(perfNowNanos() - start) / 1e9, stageSeconds: loadSeconds,
            sent: load.sent.value, acked: load.acked.value, sendErrors: load.sendErrors.value,
            received: load.received.value, lastError: load.lastError())
        summary.publishRate = Double(load.acked.value - ackedBefore) / loadSeconds
        summary.receiveRate = Double(load.received.value - receivedBefore) / loadSeconds
        emit(summary)
        for client in clients { await client.close() }
        if creationErrors.value > 0 || load.sendErrors.value > 0 { throw ExitCode(1) }
    }

    private func emit(_ event: TopicsEvent) {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        if let data = try? encoder.encode(event) {
            FileHandle.standardOutput.write(data + Data("\n".utf8))
        }
        FileHandle.standardError.write(Data(
            "[perf topics] \(event.event): \(event.topics) topics, \(String(format: "%.1f", event.elapsedSeconds)) s, \(load_line(event))\n".utf8))
    }

    private func load_line(_ event: TopicsEvent) -> String {
        "sent \(event.sent) acked \(event.acked) received \(event.received) errors \(event.sendErrors + event.creationErrors)"
    }
}

/// One line of `perf topics` output. A pure value.
struct TopicsEvent: Codable, Sendable {
    var event: String
    var topics: Int
    var creationErrors: Int
    var elapsedSeconds: Double
    /// Seconds this stage's creations took (summary: seconds of the final load).
    var stageSeconds: Double
    var sent: Int
    var acked: Int
    var sendErrors: Int
    var received: Int
    var lastError: String?
    var publishRate: Double?
    var receiveRate: Double?
}

/// The low-rate load over every topic: per connection, a timer on that connection's event loop sends
/// to its producers in round robin; each consumer has one outstanding `receiveFuture` at a time and
/// acknowledges what it gets. Producers and consumers are added while the ramp runs.
final class TopicsLoad: Sendable {
    let sent = PerfCounter()
    let acked = PerfCounter()
    let sendErrors = PerfCounter()
    let received = PerfCounter()
    private let drivers: [TopicsLoadDriver]
    private let error = Mutex<String?>(nil)

    init(connections: Int, ratePerSecond: Double, payloadSize: Int) {
        drivers = (0..<connections).map { _ in TopicsLoadDriver(ratePerSecond: ratePerSecond / Double(connections)) }
    }

    func add(producer: Producer, consumer: Consumer, connection: Int) {
        drivers[connection].add(producer)
        receiveLoop(consumer)
    }

    private func receiveLoop(_ consumer: Consumer) {
        consumer.receiveFuture(maxMessages: 100).whenComplete { [self] result in
            guard case .success(let messages) = result else { return }
            received.add(messages.count)
            consumer.acknowledge(messages.map(\.id))
            receiveLoop(consumer)
        }
    }

    func start(payload: ByteBuffer) {
        for driver in drivers { driver.start(load: self, payload: payload) }
    }

    func stop() {
        for driver in drivers { driver.stop() }
    }

    func recordError(_ text: String) { error.withLock { $0 = text } }
    func lastError() -> String? { error.withLock { $0 } }

    func line() -> String {
        "sent \(sent.value) acked \(acked.value) received \(received.value) send errors \(sendErrors.value)"
    }
}

/// One connection's share of `TopicsLoad`. Loop-confined after `add` (all producers of one client
/// share its connection's event loop).
final class TopicsLoadDriver: @unchecked Sendable {
    private let ratePerSecond: Double
    /// The connection's event loop, known once the first producer was added (set from any thread).
    private let loop = Mutex<(any EventLoop)?>(nil)
    private var producers: [Producer] = []
    private var nextProducer = 0
    private var timer: RepeatedTask?
    private var credit: Double = 0
    private static let tick = TimeAmount.milliseconds(20)

    init(ratePerSecond: Double) {
        self.ratePerSecond = ratePerSecond
    }

    func add(_ producer: Producer) {
        loop.withLock { $0 = $0 ?? producer.eventLoop }
        producer.eventLoop.execute { [self] in producers.append(producer) }
    }

    func start(load: TopicsLoad, payload: ByteBuffer) {
        guard ratePerSecond > 0, let loop = loop.withLock({ $0 }) else { return }
        loop.execute { [self] in
            guard timer == nil else { return }
            timer = loop.scheduleRepeatedTask(initialDelay: Self.tick, delay: Self.tick) { [self] _ in
                credit += ratePerSecond * Double(Self.tick.nanoseconds) / 1e9
                while credit >= 1, !producers.isEmpty {
                    credit -= 1
                    let producer = producers[nextProducer % producers.count]
                    nextProducer = (nextProducer + 1) % producers.count
                    load.sent.add(1)
                    producer.sendAsync(payload) { result in
                        switch result {
                        case .success: load.acked.add(1)
                        case .failure(let error):
                            load.sendErrors.add(1)
                            load.recordError("\(producer.topic): \(error)")
                        }
                    }
                }
            }
        }
    }

    func stop() {
        guard let loop = loop.withLock({ $0 }) else { return }
        loop.execute { [self] in
            timer?.cancel()
            timer = nil
        }
    }
}
