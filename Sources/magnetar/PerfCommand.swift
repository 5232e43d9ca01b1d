import ArgumentParser
import Foundation
import Histogram
import Logging
import MagnetarClient
import NIOCore
import NIOPosix
import Synchronization

/// `magnetar perf produce|consume|e2e|topics`: load generator and latency meter (the pulsar-perf equivalent),
/// built on MagnetarClient. Prints one line per second to stderr and a final summary (JSON on stdout
/// with `--json`).
struct PerfCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "perf",
        abstract: "Measure publish/consume throughput and latency against a broker.",
        subcommands: [PerfProduceCommand.self, PerfConsumeCommand.self, PerfEndToEndCommand.self, PerfTopicsCommand.self])
}

/// Options shared by the three modes.
struct PerfConnectionOptions: ParsableArguments {
    @Option(help: "Service URL.")
    var url = "pulsar://127.0.0.1:6650"

    @OptionGroup var auth: AuthTokenOptions

    @OptionGroup var tls: TLSClientOptions

    @Option(help: "Topic (short names expand to persistent://public/default/<name>).")
    var topic = "perf"

    @Option(help: "Stop after this many messages in total (0 = no limit).")
    var messages = 0

    @Option(help: "Stop after this many seconds (0 = no limit; with --messages 0 too, 10 s).")
    var duration: Double = 0

    @Flag(help: "Print the final summary as one JSON object on stdout.")
    var json = false

    var effectiveDuration: Double { messages == 0 && duration == 0 ? 10 : duration }
}

struct PerfProducerOptions: ParsableArguments {
    @Option(help: "Producers (each on its own connection).")
    var producers = 1

    @Option(help: "Message size in bytes.")
    var size = 100

    @Option(help: "Messages per second over all producers (0 = as fast as possible).")
    var rate: Double = 0

    @Option(help: "Messages per batch (0 or 1 = no batching).")
    var batch = 0

    @Option(help: "Batch publish delay in milliseconds.")
    var batchDelayMs = 1

    @Option(help: "Messages in flight per producer (0 = 10,000, or 50 batches when batching).")
    var maxPending = 0

    @Option(help: "Compression of each entry: none, lz4, zlib, zstd, snappy.")
    var compression = "none"

    func validate() throws {
        guard CompressionType(name: compression) != nil else {
            throw ValidationError("unknown --compression '\(compression)': use none, lz4, zlib, zstd or snappy")
        }
    }

    var effectiveMaxPending: Int { maxPending > 0 ? maxPending : (batch > 1 ? max(10_000, 50 * batch) : 10_000) }
}

struct PerfConsumerOptions: ParsableArguments {
    @Option(help: "Subscription name.")
    var subscription = "perf-sub"

    @Option(help: "Subscription type: exclusive, shared, failover, key-shared.")
    var subscriptionType = "exclusive"

    @Option(help: "Consumers on the subscription (use shared with more than one).")
    var consumers = 1

    @Option(help: "Receiver queue size (permits) per consumer.")
    var receiverQueue = 10_000

    @Option(help: "Where a new subscription starts: latest or earliest.")
    var initialPosition = "latest"

    func type() throws -> SubscriptionType {
        switch subscriptionType.lowercased() {
        case "exclusive": return .exclusive
        case "shared": return .shared
        case "failover": return .failover
        case "key-shared", "key_shared", "keyshared": return .keyShared
        default: throw ValidationError("unknown subscription type \(subscriptionType)")
        }
    }

    func consumerOptions() -> ConsumerOptions {
        var options = ConsumerOptions()
        options.receiverQueueSize = receiverQueue
        options.initialPosition = initialPosition.lowercased() == "earliest" ? .earliest : .latest
        return options
    }
}

struct PerfProduceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "produce", abstract: "Publish and measure publish latency.")
    @OptionGroup var connection: PerfConnectionOptions
    @OptionGroup var load: PerfProducerOptions

    func run() async throws {
        PerfRun.bootstrapLogging()
        let run = try await PerfRun(connection: connection)
        let producers = try await run.startProducers(load, embedTimestamp: false)
        let summary = try await run.drive(mode: "produce", producers: producers, consumers: [], load: load)
        try await run.finish(summary)
    }
}

struct PerfConsumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "consume", abstract: "Consume, acknowledge and count.")
    @OptionGroup var connection: PerfConnectionOptions
    @OptionGroup var consume: PerfConsumerOptions

    func run() async throws {
        PerfRun.bootstrapLogging()
        let run = try await PerfRun(connection: connection)
        let consumers = try await run.startConsumers(consume, measureEndToEnd: false)
        let summary = try await run.drive(mode: "consume", producers: [], consumers: consumers, load: nil)
        try await run.finish(summary)
    }
}

struct PerfEndToEndCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "e2e", abstract: "Produce and consume at once; measure publish and publish→receive latency.")
    @OptionGroup var connection: PerfConnectionOptions
    @OptionGroup var load: PerfProducerOptions
    @OptionGroup var consume: PerfConsumerOptions

    func run() async throws {
        PerfRun.bootstrapLogging()
        guard load.size >= 8 else { throw ValidationError("e2e needs --size of at least 8 (the payload carries a timestamp)") }
        let run = try await PerfRun(connection: connection)
        let consumers = try await run.startConsumers(consume, measureEndToEnd: true)
        let producers = try await run.startProducers(load, embedTimestamp: true)
        let summary = try await run.drive(mode: "e2e", producers: producers, consumers: consumers, load: load)
        try await run.finish(summary)
    }
}

/// Latency percentiles in milliseconds. A pure value.
struct PerfLatency: Codable, Sendable {
    var count: UInt64
    var p50: Double
    var p99: Double
    var p999: Double
    var max: Double
    var mean: Double

    init(_ histogram: Histogram<UInt64>) {
        count = histogram.totalCount
        let ms = { (micros: UInt64) in Double(micros) / 1000 }
        p50 = count == 0 ? 0 : ms(histogram.valueAtPercentile(50))
        p99 = count == 0 ? 0 : ms(histogram.valueAtPercentile(99))
        p999 = count == 0 ? 0 : ms(histogram.valueAtPercentile(99.9))
        self.max = count == 0 ? 0 : ms(histogram.max)
        mean = count == 0 ? 0 : histogram.mean / 1000
    }

    var line: String {
        String(format: "p50 %.3f p99 %.3f p99.9 %.3f max %.3f ms", p50, p99, p999, max)
    }
}

/// The final figures of a run (`--json` prints it). A pure value.
struct PerfSummary: Codable, Sendable {
    var mode: String
    var topic: String
    var producers: Int
    var consumers: Int
    var size: Int?
    var batch: Int?
    var rate: Double?
    var durationSeconds: Double
    var messagesSent: Int
    var messagesAcked: Int
    var sendErrors: Int
    var messagesReceived: Int
    var publishRate: Double
    var publishMegabytesPerSecond: Double
    var receiveRate: Double
    var publishLatencyMs: PerfLatency?
    var endToEndLatencyMs: PerfLatency?
    var lastError: String?
}

/// One perf run: clients, the per-second report and the summary.
final class PerfRun: Sendable {
    let options: PerfConnectionOptions
    let clients = Mutex<[PulsarClient]>([])
    let received = PerfCounter()

    init(connection: PerfConnectionOptions) async throws {
        self.options = connection
    }

    static func bootstrapLogging() {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .warning
            return handler
        }
    }

    private func newClient() throws -> PulsarClient {
        // One client per producer/consumer: each gets its own connection (and event loop).
        var clientOptions = ClientOptions()
        clientOptions.authToken = try options.auth.token()
        options.tls.apply(to: &clientOptions)
        let client = try PulsarClient(url: options.url, options: clientOptions)
        clients.withLock { $0.append(client) }
        return client
    }

    func startProducers(_ load: PerfProducerOptions, embedTimestamp: Bool) async throws -> [PerfProduceDriver] {
        guard load.producers > 0, load.size >= 0 else { throw ValidationError("--producers must be positive") }
        var drivers: [PerfProduceDriver] = []
        for index in 0..<load.producers {
            var producerOptions = ProducerOptions()
            producerOptions.batchingMaxMessages = load.batch
            producerOptions.batchingMaxPublishDelay = .milliseconds(Int64(load.batchDelayMs))
            producerOptions.compression = CompressionType(name: load.compression) ?? .none
            producerOptions.batchingMaxBytes = max(128 * 1024, load.batch * (load.size + 16))
            producerOptions.maxPendingMessages = load.effectiveMaxPending + max(load.batch, 1)
            let producer = try await newClient().createProducer(topic: options.topic, options: producerOptions)
            let share = options.messages / load.producers + (index < options.messages % load.producers ? 1 : 0)
            drivers.append(PerfProduceDriver(
                producer: producer, payloadSize: load.size, embedTimestamp: embedTimestamp,
                ratePerSecond: load.rate / Double(load.producers), messageLimit: options.messages > 0 ? max(share, 0) : 0,
                maxInFlight: load.effectiveMaxPending))
        }
        return drivers
    }

    func startConsumers(_ consume: PerfConsumerOptions, measureEndToEnd: Bool) async throws -> [PerfConsumeDriver] {
        let type = try consume.type()
        var drivers: [PerfConsumeDriver] = []
        for _ in 0..<max(consume.consumers, 1) {
            let consumer = try await newClient().subscribe(
                topic: options.topic, subscription: consume.subscription, type: type, options: consume.consumerOptions())
            drivers.append(PerfConsumeDriver(consumer: consumer, measureEndToEnd: measureEndToEnd))
        }
        return drivers
    }

    /// Runs the load, printing one line per second, until the message count or the duration is reached.
    func drive(
        mode: String, producers: [PerfProduceDriver], consumers: [PerfConsumeDriver], load: PerfProducerOptions?
    ) async throws -> PerfSummary {
        let start = perfNowNanos()
        let limit = options.messages
        let deadline = options.effectiveDuration > 0 ? start + UInt64(options.effectiveDuration * 1e9) : UInt64.max
        let received = self.received
        let consumerTasks = consumers.map { driver in
            // With producers, consumers run until stopped; alone, until --messages were received.
            Task { await driver.run(limit: producers.isEmpty ? limit : 0, shared: received) }
        }
        let producersDone = producers.map { $0.start() }
        let allProduced = EventLoopFuture.andAllComplete(producersDone, on: MultiThreadedEventLoopGroup.singleton.any())
        let producedFlag = PerfCounter()
        if producers.isEmpty { producedFlag.add(1) }
        allProduced.whenComplete { _ in producedFlag.add(1) }

        var lastTick = start
        var stoppedProducers = false
        var drainDeadline: UInt64?
        while true {
            let now = perfNowNanos()
            let producedAll = producedFlag.value > 0
            if !stoppedProducers, now >= deadline {
                for driver in producers { driver.stop() }
                stoppedProducers = true
            }
            // Done when: producers finished (and in e2e the consumers caught up, or 10 s passed), or
            // consumers alone reached the limit or the deadline.
            if producers.isEmpty {
                if (limit > 0 && received.value >= limit) || now >= deadline { break }
            } else if producedAll {
                if consumers.isEmpty { break }
                let acked = try await producers.asyncReduce { try await $1.totals().get().messages + $0 }
                if received.value >= acked { break }
                if drainDeadline == nil { drainDeadline = now + 10_000_000_000 }
                if now >= drainDeadline! { break }
            }
            let nextTick = lastTick + 1_000_000_000
            if now >= nextTick {
                try await report(mode: mode, producers: producers, consumers: consumers, seconds: Double(now - lastTick) / 1e9)
                lastTick = now
            }
            try await Task.sleep(nanoseconds: min(50_000_000, nextTick > now ? nextTick - now : 0) + 1)
        }
        let elapsed = Double(perfNowNanos() - start) / 1e9
        for consumer in consumers { try? await consumer.consumer.close() }
        for task in consumerTasks { task.cancel() }
        for task in consumerTasks { _ = await task.result }

        var produced = PerfSample()
        var sent = 0
        var lastError: String?
        for driver in producers {
            produced.add(try await driver.totals().get())
            sent += try await driver.eventLoop.submit { driver.sent }.get()
            if let error = try await driver.eventLoop.submit({ driver.lastError }).get() { lastError = error }
        }
        var consumed = PerfSample()
        for driver in consumers { consumed.add(driver.totals()) }
        let publishSeconds = elapsed
        return PerfSummary(
            mode: mode, topic: options.topic, producers: producers.count, consumers: consumers.count,
            size: load?.size, batch: load?.batch, rate: load?.rate, durationSeconds: elapsed,
            messagesSent: sent, messagesAcked: produced.messages, sendErrors: produced.errors,
            messagesReceived: consumed.messages,
            publishRate: producers.isEmpty ? 0 : Double(produced.messages) / publishSeconds,
            publishMegabytesPerSecond: producers.isEmpty ? 0 : Double(produced.bytes) / publishSeconds / 1e6,
            receiveRate: consumers.isEmpty ? 0 : Double(consumed.messages) / elapsed,
            publishLatencyMs: producers.isEmpty ? nil : PerfLatency(produced.latency),
            endToEndLatencyMs: mode == "e2e" ? PerfLatency(consumed.latency) : nil,
            lastError: lastError)
    }

    private func report(mode: String, producers: [PerfProduceDriver], consumers: [PerfConsumeDriver], seconds: Double) async throws {
        var produced = PerfSample()
        for driver in producers { produced.add(try await driver.takeInterval().get()) }
        var consumed = PerfSample()
        for driver in consumers { consumed.add(driver.takeInterval()) }
        var line = "[perf \(mode)]"
        if !producers.isEmpty {
            line += String(
                format: " publish %.0f msg/s %.1f MB/s", Double(produced.messages) / seconds, Double(produced.bytes) / seconds / 1e6)
            if produced.errors > 0 { line += " errors \(produced.errors)" }
            line += " latency " + PerfLatency(produced.latency).line
        }
        if !consumers.isEmpty {
            line += String(
                format: " | receive %.0f msg/s %.1f MB/s", Double(consumed.messages) / seconds, Double(consumed.bytes) / seconds / 1e6)
            if mode == "e2e" { line += " e2e " + PerfLatency(consumed.latency).line }
        }
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }

    func finish(_ summary: PerfSummary) async throws {
        var text = "[perf \(summary.mode)] summary: \(summary.durationSeconds.formatted(digits: 1)) s"
        if summary.producers > 0 {
            text += " sent \(summary.messagesSent) acked \(summary.messagesAcked) errors \(summary.sendErrors)"
            text += String(format: " | %.0f msg/s %.1f MB/s", summary.publishRate, summary.publishMegabytesPerSecond)
            if let latency = summary.publishLatencyMs { text += " | publish latency " + latency.line }
        }
        if summary.consumers > 0 {
            text += " | received \(summary.messagesReceived) (\(String(format: "%.0f", summary.receiveRate)) msg/s)"
            if let latency = summary.endToEndLatencyMs { text += " | e2e latency " + latency.line }
        }
        if let error = summary.lastError { text += " | last error: \(error)" }
        FileHandle.standardError.write(Data((text + "\n").utf8))
        if options.json {
            let encoder = JSONEncoder()
            encoder.keyEncodingStrategy = .convertToSnakeCase
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(summary), as: UTF8.self))
        }
        let clients = self.clients.withLock { $0 }
        for client in clients { await client.close() }
        if summary.sendErrors > 0 || (summary.producers > 0 && summary.messagesAcked == 0 && options.messages > 0) {
            throw ExitCode(1)
        }
    }
}

extension Double {
    fileprivate func formatted(digits: Int) -> String { String(format: "%.\(digits)f", self) }
}

extension Array {
    fileprivate func asyncReduce<Result>(_ initial: Result = 0, _ next: (Result, Element) async throws -> Result) async rethrows -> Result
    where Result: ExpressibleByIntegerLiteral {
        var result = initial
        for element in self { result = try await next(result, element) }
        return result
    }
}
