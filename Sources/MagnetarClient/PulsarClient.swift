import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PulsarProtocol
import Synchronization

/// A producer or consumer core as the client sees it: something to end when the client closes.
protocol ClientHandler: AnyObject, Sendable {
    var eventLoop: any EventLoop { get }
    func shutDown(_ error: PulsarClientError)
}

/// Client-wide settings. A pure value.
public struct ClientOptions: Sendable {
    /// TCP connect + CONNECT/CONNECTED handshake.
    public var connectTimeout: TimeAmount = .seconds(10)
    /// Every request that waits for an answer (lookup, PRODUCER, SUBSCRIBE, CLOSE_*); also how long
    /// `createProducer` / `subscribe` / `createReader` keep retrying failures that may pass (broker not
    /// reachable yet, topic being unloaded, ServiceNotReady, TooManyRequests).
    public var operationTimeout: TimeAmount = .seconds(30)
    /// LOOKUP redirects followed before giving up.
    public var maxLookupRedirects = 5
    /// A token for brokers with authentication on (Pulsar's `AuthenticationToken`); nil: none.
    public var authToken: String?
    /// With a `pulsar+ssl://` URL: the CAs the broker's certificate must chain to (PEM; Pulsar's
    /// `tlsTrustCertsFilePath`); nil: the system's.
    public var tlsTrustCertsFile: String?
    /// Check that the broker's certificate names the host connected to (`tlsValidateHostname`; off by default, as in Pulsar).
    public var tlsValidateHostname = false
    /// Accept any broker certificate (`tlsAllowInsecureConnection`): for tests only.
    public var tlsAllowInsecureConnection = false
    /// A client certificate and key (PEM) for brokers that ask for one (mutual TLS).
    public var tlsCertificateFile: String?
    public var tlsKeyFile: String?

    public init() {}
}

/// The entry point: a client for the Pulsar binary protocol on SwiftNIO.
///
/// Holds one connection per broker (`host:port`), opened on first use; topics are looked up with
/// PARTITIONED_METADATA and LOOKUP (following redirects), then producers and consumers are created on
/// the owning broker's connection. Thread-safe (`Sendable`); share one per process. Lifecycle: `init`
/// opens nothing; `close()` closes every connection and ends every producer and consumer. A connection
/// that drops is replaced on the next lookup; its producers and consumers reconnect by themselves
/// (re-lookup with `Backoff`, see `ProducerCore` / `ConsumerCore`).
///
/// ```swift
/// let client = try PulsarClient(url: "pulsar://127.0.0.1:6650")
/// let producer = try await client.createProducer(topic: "my-topic")
/// let id = try await producer.send(ByteBuffer(string: "hello"))
/// ```
public final class PulsarClient: Sendable {
    /// The first service address of the URL.
    public let serviceHost: String
    public let servicePort: Int
    /// Every `host:port` of the URL (`pulsar://a:6650,b:6650`): lookups go to the current one and move
    /// on to the next when it cannot be reached, as the Java/C++ clients' service URL resolver does.
    let serviceAddresses: [(host: String, port: Int)]
    private let currentServiceAddress = Atomic<Int>(0)
    public let options: ClientOptions
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let connections = Mutex<[String: EventLoopFuture<ClientConnection>]>([:])
    private let closed = Atomic<Bool>(false)
    /// Producer and consumer ids, unique per client so they survive a move to another connection.
    private let nextHandlerID = Atomic<UInt64>(0)
    /// Every open producer and consumer core, so `close()` can end those that are between connections.
    private let handlers = Mutex<[UInt64: any ClientHandler]>([:])
    /// Set for a `pulsar+ssl://` URL: every connection is TLS, and lookups follow `brokerServiceUrlTls`.
    private let tls: NIOSSLContext?

    /// - Parameters:
    ///   - url: `pulsar://host:port` (port defaults to 6650), or `pulsar+ssl://host:port` (6651) for TLS.
    ///   - eventLoopGroup: where connections live; NIO's shared group by default.
    public init(
        url: String, eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        options: ClientOptions = ClientOptions(), logger: Logger = Logger(label: "magnetar.client")
    ) throws(PulsarClientError) {
        serviceAddresses = try Self.parseAll(url: url)
        (serviceHost, servicePort) = serviceAddresses[0]
        tls = url.hasPrefix(Self.tlsScheme) ? try Self.makeTLSContext(options) : nil
        self.eventLoopGroup = eventLoopGroup
        self.options = options
        self.logger = logger
    }

    static let plainScheme = "pulsar://"
    static let tlsScheme = "pulsar+ssl://"

    /// Every `host:port` of a `pulsar://a[:port],b[:port]/` (or `pulsar+ssl://`) URL.
    static func parseAll(url: String) throws(PulsarClientError) -> [(host: String, port: Int)] {
        let prefix = try scheme(of: url)
        var rest = url.dropFirst(prefix.count)
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        var addresses: [(host: String, port: Int)] = []
        for part in rest.split(separator: ",", omittingEmptySubsequences: false) {
            let (host, port) = try parse(url: prefix + part)
            addresses.append((host, port))
        }
        return addresses
    }

    private static func scheme(of url: String) throws(PulsarClientError) -> String {
        if url.hasPrefix(plainScheme) { return plainScheme }
        if url.hasPrefix(tlsScheme) { return tlsScheme }
        throw PulsarClientError(.invalidURL, "\(url) is not a pulsar:// or pulsar+ssl:// URL")
    }

    /// The first `host:port` of a `pulsar://` URL (port 6650 by default) or `pulsar+ssl://` URL (6651).
    static func parse(url: String) throws(PulsarClientError) -> (String, Int) {
        let prefix = try scheme(of: url)
        var rest = url.dropFirst(prefix.count)
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        // Several hosts (`a:1,b:2`): use the first.
        if let comma = rest.firstIndex(of: ",") { rest = rest[..<comma] }
        guard let colon = rest.lastIndex(of: ":") else {
            guard !rest.isEmpty else { throw PulsarClientError(.invalidURL, "\(url) has no host") }
            return (String(rest), prefix == tlsScheme ? 6651 : 6650)
        }
        guard let port = Int(rest[rest.index(after: colon)...]), (1...65535).contains(port), colon != rest.startIndex else {
            throw PulsarClientError(.invalidURL, "\(url) has no valid host:port")
        }
        return (String(rest[..<colon]), port)
    }

    static func makeTLSContext(_ options: ClientOptions) throws(PulsarClientError) -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        if let trust = options.tlsTrustCertsFile { configuration.trustRoots = .file(trust) }
        configuration.certificateVerification = options.tlsAllowInsecureConnection
            ? .none : (options.tlsValidateHostname ? .fullVerification : .noHostnameVerification)
        do {
            if let certificate = options.tlsCertificateFile, let key = options.tlsKeyFile {
                configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) }
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            }
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw PulsarClientError(.invalidTLSConfiguration, "cannot use the TLS settings (trust file \(options.tlsTrustCertsFile ?? "system"), certificate \(options.tlsCertificateFile ?? "none")): \(error)")
        }
    }

    /// True once `close()` was called.
    public var isClosed: Bool { closed.load(ordering: .relaxed) }

    func makeHandlerID() -> UInt64 { nextHandlerID.wrappingAdd(1, ordering: .relaxed).oldValue }

    func track(_ handler: any ClientHandler, id: UInt64) { handlers.withLock { $0[id] = handler } }

    func untrack(id: UInt64) { _ = handlers.withLock { $0.removeValue(forKey: id) } }

    // MARK: connections

    /// The open connection to `host:port`, opening one if there is none or the last one failed or closed.
    func connection(host: String, port: Int) async throws -> ClientConnection {
        let key = "\(host):\(port)"
        while true {
            if isClosed { throw PulsarClientError(.alreadyClosed, "the client was closed") }
            let (future, isNew) = connections.withLock { table -> (EventLoopFuture<ClientConnection>, Bool) in
                if let existing = table[key] { return (existing, false) }
                let created = ClientConnection.connect(
                    host: host, port: port, group: eventLoopGroup, connectTimeout: options.connectTimeout,
                    operationTimeout: options.operationTimeout, authToken: options.authToken, tls: tls, logger: logger)
                table[key] = created
                return (created, true)
            }
            do {
                let connection = try await future.get()
                if !connection.isClosed { return connection }
                if isNew { throw PulsarClientError(.connectionClosed, "connection to \(key) closed right after it opened") }
            } catch {
                connections.withLock { table in if table[key] === future { table[key] = nil } }
                if isNew { throw error }
                continue
            }
            connections.withLock { table in if table[key] === future { table[key] = nil } }
        }
    }

    /// A connection to the current service address; when it cannot be reached, the next ones in turn.
    func serviceConnection() async throws -> ClientConnection {
        var lastError: (any Error)?
        for _ in 0..<serviceAddresses.count {
            let index = currentServiceAddress.load(ordering: .relaxed) % serviceAddresses.count
            let address = serviceAddresses[index]
            do {
                return try await connection(host: address.host, port: address.port)
            } catch let error as PulsarClientError where error.code == .connectionFailed || error.code == .connectionClosed {
                lastError = error
                // Move on unless another task already did.
                _ = currentServiceAddress.compareExchange(
                    expected: index, desired: (index + 1) % serviceAddresses.count, ordering: .relaxed)
            }
        }
        throw lastError ?? PulsarClientError(.connectionFailed, "no service address")
    }

    /// Number of partitions of `topic` (0: not partitioned).
    public func partitionCount(topic: String) async throws -> Int {
        let topic = TopicNames.normalize(topic)
        let connection = try await serviceConnection()
        let response = try await connection.eventLoop.flatSubmit {
            connection.request { ClientCommands.partitionedMetadata(topic: topic, requestID: $0) }
        }.get()
        return Int(response.partitionMetadataResponse.partitions)
    }

    /// LOOKUP: the connection to the broker that owns `topic`.
    func lookup(topic: String) async throws -> ClientConnection {
        var redirect: (host: String, port: Int)?
        var authoritative = false
        for _ in 0...options.maxLookupRedirects {
            let connection: ClientConnection
            if let redirect {
                connection = try await self.connection(host: redirect.host, port: redirect.port)
            } else {
                connection = try await serviceConnection()
            }
            let isAuthoritative = authoritative
            let response = try await connection.eventLoop.flatSubmit {
                connection.request { ClientCommands.lookup(topic: topic, requestID: $0, authoritative: isAuthoritative) }
            }.get().lookupTopicResponse
            // Over TLS the broker's `pulsar+ssl://` address, as Pulsar's clients do.
            let (nextHost, nextPort) = try Self.parse(url: tls != nil && response.hasBrokerServiceURLTls ? response.brokerServiceURLTls : response.brokerServiceURL)
            switch response.response {
            case .connect:
                if response.proxyThroughServiceURL { return connection }
                return try await self.connection(host: nextHost, port: nextPort)
            case .redirect:
                redirect = (nextHost, nextPort)
                authoritative = response.authoritative
            case .failed:
                throw PulsarClientError.server(response.error, response.message)
            }
        }
        throw PulsarClientError(.protocolViolation, "more than \(options.maxLookupRedirects) lookup redirects for \(topic)")
    }

    /// `lookup` as a future completing on `loop` (what reconnecting producers and consumers use).
    func lookupFuture(topic: String, on loop: any EventLoop) -> EventLoopFuture<ClientConnection> {
        let promise = loop.makePromise(of: ClientConnection.self)
        promise.completeWithTask { try await self.lookup(topic: topic) }
        return promise.futureResult
    }

    /// The topic names to open: the topic itself, or each `<topic>-partition-<i>`.
    private func partitionTopics(_ topic: String) async throws -> (partitions: Int, topics: [String]) {
        let partitions = try await partitionCount(topic: topic)
        guard partitions > 0 else { return (0, [topic]) }
        return (partitions, (0..<partitions).map { "\(topic)-partition-\($0)" })
    }

    // MARK: producers and consumers

    /// Runs one step of creating a producer or consumer (the partition count, or one partition's lookup
    /// and PRODUCER/SUBSCRIBE) until it succeeds, fails with an error that retrying cannot fix, or the
    /// next attempt would start after `deadline`, waiting `Backoff` delays in between — as the C++
    /// client retries a first creation until its operation timeout (HandlerBase, RetryableLookupService).
    /// Gives up with the last error.
    private func retryingCreation<T>(
        _ what: String, deadline: ContinuousClock.Instant, _ attempt: () async throws -> T
    ) async throws -> T {
        var backoff = Backoff()
        var attempts = 1
        while true {
            do {
                return try await attempt()
            } catch let error as PulsarClientError where error.isRetryableForCreation && !isClosed {
                let delay = backoff.nextDelay()
                guard ContinuousClock.now + .nanoseconds(delay.nanoseconds) < deadline else {
                    var last = error
                    last.message += " (\(what): gave up after \(attempts) attempts within the operation timeout)"
                    throw last
                }
                logger.debug("client.create.retry-scheduled", metadata: [
                    "operation": "\(what)", "error": "\(error)", "delay.ms": "\(delay.nanoseconds / 1_000_000)",
                ])
                try await Task.sleep(for: .nanoseconds(delay.nanoseconds))
                attempts += 1
            }
        }
    }

    /// Creates a producer on `topic` (short names are expanded to `persistent://public/default/<name>`).
    /// On a partitioned topic it opens one producer per partition and routes messages (see `Producer`).
    /// Failures that may pass (the broker not reachable yet, the topic being unloaded, ServiceNotReady,
    /// TooManyRequests, a timeout) are retried with backoff for up to the client's `operationTimeout`;
    /// others (authorization, topic terminated, producer busy, …) fail at once.
    public func createProducer(topic: String, options: ProducerOptions = ProducerOptions()) async throws -> Producer {
        let topic = TopicNames.normalize(topic)
        let deadline = ContinuousClock.now + .nanoseconds(self.options.operationTimeout.nanoseconds)
        let (partitions, topics) = try await retryingCreation("partition count of \(topic)", deadline: deadline) {
            try await partitionTopics(topic)
        }
        var cores: [ProducerCore] = []
        var eventLoop: (any EventLoop)?
        do {
            for (index, name) in topics.enumerated() {
                var created: ProducerCore?
                do {
                    try await retryingCreation("producer on \(name)", deadline: deadline) {
                        let connection = try await lookup(topic: name)
                        // Every partition lives on the first partition's loop, so routing needs no hop.
                        let loop = eventLoop ?? connection.eventLoop
                        eventLoop = loop
                        // One core for every attempt: its producer id stays the same.
                        let core = created ?? ProducerCore(
                            client: self, eventLoop: loop, topic: name, producerID: makeHandlerID(),
                            partition: partitions > 0 ? Int32(index) : TopicNames.partitionIndex(name), options: options,
                            logger: logger)
                        created = core
                        try await core.eventLoop.flatSubmit { core.register(on: connection) }.get()
                    }
                } catch {
                    if let core = created { try? await core.eventLoop.flatSubmit { core.close() }.get() }
                    throw error
                }
                cores.append(created!)
            }
        } catch {
            for core in cores { try? await core.eventLoop.flatSubmit { core.close() }.get() }
            throw error
        }
        return Producer(cores: cores, topic: topic, partitionCount: partitions, options: options)
    }

    /// Subscribes to `topic` with a durable subscription and grants the first permits. On a
    /// partitioned topic it subscribes to every partition and merges what they deliver. Retries as
    /// `createProducer` does (ConsumerBusy on an Exclusive subscription fails at once).
    public func subscribe(
        topic: String, subscription: String, type: SubscriptionType = .exclusive, options: ConsumerOptions = ConsumerOptions()
    ) async throws -> Consumer {
        let topic = TopicNames.normalize(topic)
        let deadline = ContinuousClock.now + .nanoseconds(self.options.operationTimeout.nanoseconds)
        let (partitions, topics) = try await retryingCreation("partition count of \(topic)", deadline: deadline) {
            try await partitionTopics(topic)
        }
        let consumerName = options.name ?? String(UInt64.random(in: 0...UInt64.max) & 0xFF_FFFF_FFFF, radix: 16)
        return try await openConsumer(
            topic: topic, partitions: partitions, topics: topics, subscription: subscription, type: type,
            consumerName: consumerName, options: options, durable: true, start: nil, startInclusive: false, deadline: deadline)
    }

    /// Opens a reader: a non-durable, exclusive subscription named `reader-<random>` that starts at
    /// `startMessageID` (the message itself only when `startMessageIDInclusive`). Non-partitioned
    /// topics (or one partition) only. Retries as `createProducer` does.
    public func createReader(
        topic: String, startMessageID: StartMessageID, startMessageIDInclusive: Bool = false,
        receiverQueueSize: Int = 1000
    ) async throws -> Reader {
        let topic = TopicNames.normalize(topic)
        let deadline = ContinuousClock.now + .nanoseconds(self.options.operationTimeout.nanoseconds)
        let (partitions, _) = try await retryingCreation("partition count of \(topic)", deadline: deadline) {
            try await partitionTopics(topic)
        }
        guard partitions == 0 else {
            throw PulsarClientError(
                .unsupported, "\(topic) has \(partitions) partitions; create one reader per partition (\(topic)-partition-<i>)")
        }
        var options = ConsumerOptions()
        options.receiverQueueSize = receiverQueueSize
        options.initialPosition = startMessageID == .earliest ? .earliest : .latest
        let suffix = String(UInt64.random(in: 0...UInt64.max) & 0xFF_FFFF_FFFF, radix: 16)
        let consumer = try await openConsumer(
            topic: topic, partitions: 0, topics: [topic], subscription: "reader-\(suffix)", type: .exclusive,
            consumerName: "reader-\(suffix)", options: options, durable: false, start: startMessageID,
            startInclusive: startMessageIDInclusive, deadline: deadline)
        return try await Reader.make(consumer: consumer, start: startMessageID, inclusive: startMessageIDInclusive)
    }

    private func openConsumer(
        topic: String, partitions: Int, topics: [String], subscription: String, type: SubscriptionType,
        consumerName: String, options: ConsumerOptions, durable: Bool, start: StartMessageID?, startInclusive: Bool,
        deadline: ContinuousClock.Instant
    ) async throws -> Consumer {
        var queue: ReceiveQueue?
        var cores: [ConsumerCore] = []
        do {
            for (index, name) in topics.enumerated() {
                var created: ConsumerCore?
                try await retryingCreation("subscription \(subscription) on \(name)", deadline: deadline) {
                    let connection = try await lookup(topic: name)
                    let receiveQueue = queue ?? ReceiveQueue(eventLoop: connection.eventLoop)
                    queue = receiveQueue
                    // One core for every attempt: its consumer id stays the same.
                    let core: ConsumerCore
                    if let created {
                        core = created
                    } else {
                        core = ConsumerCore(
                            client: self, queue: receiveQueue, topic: name, subscription: subscription, type: type,
                            consumerID: makeHandlerID(), consumerName: consumerName,
                            partition: partitions > 0 ? Int32(index) : TopicNames.partitionIndex(name), options: options,
                            durable: durable, start: start, startInclusive: startInclusive, logger: logger)
                        created = core
                        cores.append(core)
                    }
                    let all = cores
                    try await receiveQueue.eventLoop.flatSubmit {
                        receiveQueue.cores = all
                        return core.register(on: connection)
                    }.get()
                }
            }
        } catch {
            for core in cores { try? await core.eventLoop.flatSubmit { core.close() }.get() }
            throw error
        }
        return Consumer(cores: cores, queue: queue!, topic: topic, partitionCount: partitions)
    }

    /// Closes every connection; every producer and consumer ends with `alreadyClosed` (no reconnection).
    public func close() async {
        closed.store(true, ordering: .relaxed)
        let open = handlers.withLock { table in
            let all = Array(table.values)
            table.removeAll()
            return all
        }
        let error = PulsarClientError(.alreadyClosed, "the client was closed")
        for handler in open {
            ClientConnection.run(on: handler.eventLoop) { handler.shutDown(error) }
        }
        let all = connections.withLock { table in
            let all = Array(table.values)
            table.removeAll()
            return all
        }
        for future in all {
            if let connection = try? await future.get() {
                try? await connection.eventLoop.submit { connection.close() }.get()
            }
        }
    }
}
