import ArgumentParser
import Foundation
import Logging
import MagnetarClient
import NIOCore
import Synchronization

/// `magnetar client produce|consume|read`: send and receive messages from the command line with
/// MagnetarClient (the equivalent of Pulsar's `pulsar-client produce|consume`). Each received
/// message is printed as one line on stdout: `<message id>\t<key>\t<payload as UTF-8>`, the id as
/// `ledger:entry:partition:batchIndex`; diagnostics go to stderr.
struct ClientCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "client",
        abstract: "Produce, consume and read messages (like pulsar-client).",
        subcommands: [ClientProduceCommand.self, ClientConsumeCommand.self, ClientReadCommand.self, ClientTransactCommand.self])

    static func format(_ id: MessageID) -> String { "\(id.ledgerID):\(id.entryID):\(id.partition):\(id.batchIndex)" }

    /// One output line per message, written atomically (callbacks of several partitions may race).
    static func printLine(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }

    static func printError(_ line: String) {
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }

    static func printMessage(_ message: Message) {
        printLine("\(format(message.id))\t\(message.partitionKey ?? "")\t\(String(buffer: message.payload))")
    }
}

/// `--schema-type` / `--schema-file`: the schema a producer or consumer declares (the Python
/// client's StringSchema, JsonSchema, AvroSchema; payloads stay what `-m` gives).
struct ClientSchemaOptions: ParsableArguments {
    @Option(help: "Declare a schema: string, json or avro (default: none, bytes).")
    var schemaType: String?

    @Option(help: ArgumentHelp("The schema's definition (an Avro record schema, JSON) for json and avro.", valueName: "file"))
    var schemaFile: String?

    func schema() throws -> SchemaInfo? {
        guard let schemaType else {
            if schemaFile != nil { throw ValidationError("--schema-file needs --schema-type json or avro") }
            return nil
        }
        func definition() throws -> String {
            guard let schemaFile else { throw ValidationError("--schema-type \(schemaType) needs --schema-file") }
            do {
                return try String(contentsOfFile: schemaFile, encoding: .utf8)
            } catch {
                throw ValidationError("cannot read --schema-file \(schemaFile): \(error.localizedDescription)")
            }
        }
        switch schemaType.lowercased() {
        case "string": return .string
        case "json": return .json(definition: try definition())
        case "avro": return .avro(definition: try definition())
        default: throw ValidationError("unknown --schema-type '\(schemaType)': use string, json or avro")
        }
    }
}

/// `--url` and logging, shared by the three commands.
struct ClientConnectionOptions: ParsableArguments {
    @Option(help: "Service URL.")
    var url = "pulsar://127.0.0.1:6650"

    @OptionGroup var logging: LoggingOptions

    @OptionGroup var auth: AuthTokenOptions

    @OptionGroup var tls: TLSClientOptions

    func makeClient() throws -> PulsarClient {
        logging.bootstrap()
        var options = ClientOptions()
        options.authToken = try auth.token()
        tls.apply(to: &options)
        return try PulsarClient(url: url, options: options, logger: Logger(label: "magnetar.client"))
    }
}

struct ClientProduceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "produce",
        abstract: "Send messages; prints `<message id>\\t<index>` for every receipt.",
        discussion: "Each -m message is sent --num-produce times; `%d` in a message or key is replaced by its index (0, 1, ...).")

    @Argument(help: "Topic (short names expand to persistent://public/default/<name>).")
    var topic: String

    @Option(name: [.customShort("m"), .long], help: "Message payload (repeatable).")
    var messages: [String] = []

    @Option(name: [.customShort("n"), .customLong("num-produce")], help: "How often to send each message.")
    var count = 1

    @Option(name: [.customShort("k"), .long], help: "Message key (partition routing, Key_Shared); `%d` is replaced by the index.")
    var key: String?

    @Option(name: [.customShort("p"), .customLong("property")], help: "Message property key=value (repeatable).")
    var properties: [String] = []

    @Option(help: "Compression: none, lz4, zlib, zstd, snappy.")
    var compression = "none"

    @Option(help: "Messages per batch (0 or 1 = no batching).")
    var batch = 0

    @Option(help: "Batch publish delay in milliseconds.")
    var batchDelayMs = 10

    @Option(help: "Messages per second (0 = as fast as possible).")
    var rate: Double = 0

    @Option(help: "Messages in flight before waiting for receipts.")
    var maxPending = 1000

    @Option(help: "The producer's own queue limit (ProducerOptions.maxPendingMessages, per partition).")
    var maxPendingMessages = 100_000

    @Flag(help: "When the producer's queue is full, wait for room instead of failing (ProducerOptions.blockIfQueueFull).")
    var blockIfQueueFull = false

    @Option(help: "Fail a message with no receipt after this many milliseconds (0 = never).")
    var sendTimeoutMs = 30_000

    @OptionGroup var connection: ClientConnectionOptions

    @OptionGroup var schema: ClientSchemaOptions

    func validate() throws {
        guard !messages.isEmpty else { throw ValidationError("give at least one message with -m") }
        guard count > 0 else { throw ValidationError("-n must be positive") }
        guard maxPendingMessages > 0 else { throw ValidationError("--max-pending-messages must be positive") }
        guard CompressionType(name: compression) != nil else {
            throw ValidationError("unknown --compression '\(compression)': use none, lz4, zlib, zstd or snappy")
        }
        for property in properties where !property.contains("=") {
            throw ValidationError("--property '\(property)' is not key=value")
        }
    }

    func run() async throws {
        let client = try connection.makeClient()
        var options = ProducerOptions()
        options.compression = CompressionType(name: compression) ?? .none
        options.batchingMaxMessages = batch
        options.batchingMaxPublishDelay = .milliseconds(Int64(batchDelayMs))
        options.maxPendingMessages = maxPendingMessages
        options.blockIfQueueFull = blockIfQueueFull
        options.sendTimeout = .milliseconds(Int64(sendTimeoutMs))
        options.schema = try schema.schema()
        let producer = try await client.createProducer(topic: topic, options: options)
        var propertyMap: [String: String] = [:]
        for property in properties {
            let parts = property.split(separator: "=", maxSplits: 1)
            propertyMap[String(parts[0])] = parts.count > 1 ? String(parts[1]) : ""
        }
        let total = messages.count * count
        let inFlight = InFlight(limit: max(maxPending, 1))
        let failures = Atomic<Int>(0)
        let start = ContinuousClock.now
        for index in 0..<total {
            let text = messages[index % messages.count].replacingOccurrences(of: "%d", with: "\(index)")
            if rate > 0 {
                let due = start + .seconds(Double(index) / rate)
                if due > .now { try await Task.sleep(until: due) }
            }
            await inFlight.acquire()
            let messageKey = key?.replacingOccurrences(of: "%d", with: "\(index)")
            let message = OutgoingMessage(payload: ByteBuffer(string: text), key: messageKey, properties: propertyMap)
            producer.sendAsync(message) { result in
                switch result {
                case .success(let id): ClientCommand.printLine("\(ClientCommand.format(id))\t\(index)")
                case .failure(let error):
                    failures.add(1, ordering: .relaxed)
                    ClientCommand.printError("message \(index) failed: \(error)")
                }
                inFlight.release()
            }
        }
        // Failed sends are counted by their callbacks; flush only waits for the last receipts.
        try? await producer.flush()
        try? await producer.close()
        await client.close()
        let failed = failures.load(ordering: .relaxed)
        ClientCommand.printError("\(total - failed) messages produced, \(failed) failed")
        if failed > 0 { throw ExitCode(1) }
    }
}

/// Bounds the sends waiting for receipts. Thread-safe.
final class InFlight: Sendable {
    private struct State {
        var available: Int
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state: Mutex<State>

    init(limit: Int) { state = Mutex(State(available: limit)) }

    func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { state -> Bool in
                if state.available > 0 {
                    state.available -= 1
                    return true
                }
                state.waiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    func release() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if !state.waiters.isEmpty { return state.waiters.removeFirst() }
            state.available += 1
            return nil
        }
        waiter?.resume()
    }
}

struct ClientConsumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "consume",
        abstract: "Receive and acknowledge messages; prints `<message id>\\t<key>\\t<payload>` per message.")

    @Argument(help: "Topic (partitioned topics are consumed on every partition).")
    var topic: String

    @Option(name: [.customShort("s"), .customLong("subscription-name")], help: "Subscription name.")
    var subscription: String

    @Option(name: [.customShort("n"), .customLong("num-messages")], help: "Messages to receive (0 = until interrupted or --timeout).")
    var count = 1

    @Option(name: [.customShort("t"), .customLong("type")], help: "Subscription type: exclusive, shared, failover, key_shared.")
    var type = "exclusive"

    @Flag(help: "Start a new subscription at the earliest message (default: latest).")
    var earliest = false

    @Option(help: "Stop after this many seconds without a message (0 = wait forever).")
    var timeout: Double = 0

    @Option(help: "Move the subscription first: earliest, latest, or after the message ledger:entry[:partition:batchIndex].")
    var seek: String?

    @Option(help: "Move the subscription first to the first message published at or after this time (ms since the epoch).")
    var seekTime: UInt64?

    @OptionGroup var connection: ClientConnectionOptions

    @OptionGroup var schema: ClientSchemaOptions

    @Flag(help: "Print each message's schema version (its writer's) as a fourth column (- without one).")
    var showSchemaVersion = false

    func subscriptionType() throws -> SubscriptionType {
        switch type.lowercased() {
        case "exclusive": return .exclusive
        case "shared": return .shared
        case "failover": return .failover
        case "key_shared", "key-shared", "keyshared": return .keyShared
        default: throw ValidationError("unknown --type '\(type)': use exclusive, shared, failover or key_shared")
        }
    }

    func validate() throws {
        _ = try subscriptionType()
        if let seek { _ = try ClientCommand.parsePosition(seek, option: "--seek") }
    }

    func run() async throws {
        let client = try connection.makeClient()
        var options = ConsumerOptions()
        options.initialPosition = earliest ? .earliest : .latest
        options.schema = try schema.schema()
        let consumer = try await client.subscribe(topic: topic, subscription: subscription, type: try subscriptionType(), options: options)
        if let seek { try await consumer.seek(to: try ClientCommand.parsePosition(seek, option: "--seek")) }
        if let seekTime { try await consumer.seek(toPublishTime: seekTime) }
        var received = 0
        while count == 0 || received < count {
            let wanted = count == 0 ? 100 : min(100, count - received)
            let batch = try await ClientCommand.receive(timeout: timeout) { try await consumer.receive(maxMessages: wanted) }
            guard let batch else { break }
            for message in batch {
                if showSchemaVersion {
                    ClientCommand.printLine(
                        "\(ClientCommand.format(message.id))\t\(message.partitionKey ?? "")\t\(String(buffer: message.payload))\t\(message.schemaVersion.map(String.init) ?? "-")")
                } else {
                    ClientCommand.printMessage(message)
                }
            }
            consumer.acknowledge(batch.map(\.id))
            received += batch.count
        }
        try? await consumer.close()
        await client.close()
        ClientCommand.printError("\(received) messages received")
    }
}

struct ClientReadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "read",
        abstract: "Read a topic with a reader (no subscription); prints `<message id>\\t<key>\\t<payload>` per message.")

    @Argument(help: "Topic (not partitioned; read a partition by its name).")
    var topic: String

    @Option(help: "Where to start: earliest, latest, or a message id ledger:entry[:partition:batchIndex].")
    var start = "earliest"

    @Flag(help: "Include the start message itself (with a message id).")
    var inclusive = false

    @Option(help: "Then seek to the first message published at or after this time (ms since the epoch).")
    var seekTime: UInt64?

    @Option(name: [.customShort("n"), .customLong("num-messages")], help: "Messages to read (0 = until none is available).")
    var count = 0

    @Option(help: "Stop after this many seconds without a message (0 = wait forever; with -n 0 the reader stops when caught up).")
    var timeout: Double = 0

    @OptionGroup var connection: ClientConnectionOptions

    func startMessageID() throws -> StartMessageID { try ClientCommand.parsePosition(start, option: "--start") }

    func validate() throws { _ = try startMessageID() }

    func run() async throws {
        let client = try connection.makeClient()
        let reader = try await client.createReader(
            topic: topic, startMessageID: try startMessageID(), startMessageIDInclusive: inclusive)
        if let seekTime { try await reader.seek(toPublishTime: seekTime) }
        var received = 0
        while count == 0 || received < count {
            if count == 0, !(try await reader.hasMessageAvailable()) { break }
            let wanted = count == 0 ? 100 : min(100, count - received)
            let batch = try await ClientCommand.receive(timeout: timeout) { try await reader.readNext(maxMessages: wanted) }
            guard let batch else { break }
            for message in batch { ClientCommand.printMessage(message) }
            received += batch.count
        }
        try? await reader.close()
        await client.close()
        ClientCommand.printError("\(received) messages read")
    }
}

extension ClientCommand {
    /// `earliest`, `latest` or `ledger:entry[:partition:batchIndex]` (the format the tool prints).
    static func parsePosition(_ text: String, option: String) throws -> StartMessageID {
        switch text.lowercased() {
        case "earliest": return .earliest
        case "latest": return .latest
        default:
            let parts = text.split(separator: ":").map { Int64($0) }
            guard parts.count == 2 || parts.count == 4, parts.allSatisfy({ $0 != nil }) else {
                throw ValidationError("\(option) must be earliest, latest or ledger:entry[:partition:batchIndex]")
            }
            return .id(MessageID(
                ledgerID: parts[0]!, entryID: parts[1]!, partition: parts.count == 4 ? Int32(parts[2]!) : -1,
                batchIndex: parts.count == 4 ? Int32(parts[3]!) : -1))
        }
    }

    /// Runs `body`, or gives nil after `timeout` seconds (0: no limit). A receive cannot be cancelled,
    /// so on a timeout it is left waiting; the command then closes the consumer, which ends it.
    static func receive(
        timeout: Double, _ body: @escaping @Sendable () async throws -> [Message]
    ) async throws -> [Message]? {
        guard timeout > 0 else { return try await body() }
        let once = Once()
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<[Message]?, any Error>) in
            Task {
                do {
                    let messages = try await body()
                    if once.fire() { continuation.resume(returning: messages) }
                } catch {
                    if once.fire() { continuation.resume(throwing: error) }
                }
            }
            Task {
                try? await Task.sleep(for: .seconds(timeout))
                if once.fire() { continuation.resume(returning: nil) }
            }
        }
    }
}

/// True for the first caller only. Thread-safe.
final class Once: Sendable {
    private let fired = Atomic<Bool>(false)
    func fire() -> Bool { !fired.exchange(true, ordering: .acquiringAndReleasing) }
}
