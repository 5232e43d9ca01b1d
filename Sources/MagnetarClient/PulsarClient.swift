import Logging
import NIOCore
import NIOPosix
import PulsarProtocol
import Synchronization

/// Client-wide settings. A pure value.
public struct ClientOptions: Sendable {
    /// TCP connect + CONNECT/CONNECTED handshake.
    public var connectTimeout: TimeAmount = .seconds(10)
    /// Every request that waits for an answer (lookup, PRODUCER, SUBSCRIBE, CLOSE_*).
    public var operationTimeout: TimeAmount = .seconds(30)
    /// LOOKUP redirects followed before giving up.
    public var maxLookupRedirects = 5

    public init() {}
}

/// The entry point: a client for the Pulsar binary protocol on SwiftNIO.
///
/// Holds one connection per broker (`host:port`), opened on first use; topics are looked up with
/// PARTITIONED_METADATA and LOOKUP (following redirects), then producers and consumers are created on
/// the owning broker's connection. Thread-safe (`Sendable`); share one per process. Lifecycle: `init`
/// opens nothing; `close()` closes every connection. A connection that drops fails its producers and
/// consumers (reconnect with backoff is not implemented yet); the next lookup opens a new one.
///
/// ```swift
/// let client = try PulsarClient(url: "pulsar://127.0.0.1:6650")
/// let producer = try await client.createProducer(topic: "my-topic")
/// let id = try await producer.send(ByteBuffer(string: "hello"))
/// ```
public final class PulsarClient: Sendable {
    public let serviceHost: String
    public let servicePort: Int
    public let options: ClientOptions
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let connections = Mutex<[String: EventLoopFuture<ClientConnection>]>([:])

    /// - Parameters:
    ///   - url: `pulsar://host:port` (port defaults to 6650).
    ///   - eventLoopGroup: where connections live; NIO's shared group by default.
    public init(
        url: String, eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        options: ClientOptions = ClientOptions(), logger: Logger = Logger(label: "magnetar.client")
    ) throws(PulsarClientError) {
        (serviceHost, servicePort) = try Self.parse(url: url)
        self.eventLoopGroup = eventLoopGroup
        self.options = options
        self.logger = logger
    }

    static func parse(url: String) throws(PulsarClientError) -> (String, Int) {
        let prefix = "pulsar://"
        guard url.hasPrefix(prefix) else {
            throw PulsarClientError(.invalidURL, "\(url) is not a pulsar:// URL (TLS is not supported yet)")
        }
        var rest = url.dropFirst(prefix.count)
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        // Several hosts (`a:1,b:2`): use the first.
        if let comma = rest.firstIndex(of: ",") { rest = rest[..<comma] }
        guard let colon = rest.lastIndex(of: ":") else {
            guard !rest.isEmpty else { throw PulsarClientError(.invalidURL, "\(url) has no host") }
            return (String(rest), 6650)
        }
        guard let port = Int(rest[rest.index(after: colon)...]), (1...65535).contains(port), colon != rest.startIndex else {
            throw PulsarClientError(.invalidURL, "\(url) has no valid host:port")
        }
        return (String(rest[..<colon]), port)
    }

    // MARK: connections

    /// The open connection to `host:port`, opening one if there is none or the last one failed or closed.
    func connection(host: String, port: Int) async throws -> ClientConnection {
        let key = "\(host):\(port)"
        while true {
            let (future, isNew) = connections.withLock { table -> (EventLoopFuture<ClientConnection>, Bool) in
                if let existing = table[key] { return (existing, false) }
                let created = ClientConnection.connect(
                    host: host, port: port, group: eventLoopGroup, connectTimeout: options.connectTimeout,
                    operationTimeout: options.operationTimeout, logger: logger)
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

    /// Number of partitions of `topic` (0: not partitioned).
    public func partitionCount(topic: String) async throws -> Int {
        let topic = TopicNames.normalize(topic)
        let connection = try await connection(host: serviceHost, port: servicePort)
        let response = try await connection.eventLoop.flatSubmit {
            connection.request { ClientCommands.partitionedMetadata(topic: topic, requestID: $0) }
        }.get()
        return Int(response.partitionMetadataResponse.partitions)
    }

    /// LOOKUP: the connection to the broker that owns `topic`.
    func lookup(topic: String) async throws -> ClientConnection {
        var host = serviceHost
        var port = servicePort
        var authoritative = false
        for _ in 0...options.maxLookupRedirects {
            let connection = try await connection(host: host, port: port)
            let isAuthoritative = authoritative
            let response = try await connection.eventLoop.flatSubmit {
                connection.request { ClientCommands.lookup(topic: topic, requestID: $0, authoritative: isAuthoritative) }
            }.get().lookupTopicResponse
            let (nextHost, nextPort) = try Self.parse(url: response.brokerServiceURL)
            switch response.response {
            case .connect:
                if response.proxyThroughServiceURL { return connection }
                return try await self.connection(host: nextHost, port: nextPort)
            case .redirect:
                (host, port) = (nextHost, nextPort)
                authoritative = response.authoritative
            case .failed:
                throw PulsarClientError.server(response.error, response.message)
            }
        }
        throw PulsarClientError(.protocolViolation, "more than \(options.maxLookupRedirects) lookup redirects for \(topic)")
    }

    private func requireUnpartitioned(_ topic: String) async throws {
        let partitions = try await partitionCount(topic: topic)
        guard partitions == 0 else {
            throw PulsarClientError(
                .unsupported,
                "\(topic) has \(partitions) partitions; open one producer or consumer per partition (\(topic)-partition-<i>)")
        }
    }

    // MARK: producers and consumers

    /// Creates a producer on `topic` (short names are expanded to `persistent://public/default/<name>`).
    public func createProducer(topic: String, options: ProducerOptions = ProducerOptions()) async throws -> Producer {
        let topic = TopicNames.normalize(topic)
        try await requireUnpartitioned(topic)
        let connection = try await lookup(topic: topic)
        let logger = self.logger
        let partition = TopicNames.partitionIndex(topic)
        let (core, name) = try await connection.eventLoop.flatSubmit { () -> EventLoopFuture<(ProducerCore, String)> in
            let core = connection.registerProducer {
                ProducerCore(connection: connection, topic: topic, producerID: $0, partition: partition, options: options, logger: logger)
            }
            return connection.request {
                ClientCommands.producer(topic: topic, producerID: core.producerID, requestID: $0, name: options.name)
            }.map { response in
                let success = response.producerSuccess
                core.ready(producerName: success.producerName, lastSequenceID: success.hasLastSequenceID ? success.lastSequenceID : -1)
                return (core, success.producerName)
            }.flatMapErrorThrowing { error in
                connection.unregisterProducer(core.producerID)
                throw error
            }
        }.get()
        return Producer(core: core, name: name)
    }

    /// Subscribes to `topic` with a durable subscription and grants the first permits.
    public func subscribe(
        topic: String, subscription: String, type: SubscriptionType = .exclusive, options: ConsumerOptions = ConsumerOptions()
    ) async throws -> Consumer {
        let topic = TopicNames.normalize(topic)
        try await requireUnpartitioned(topic)
        let connection = try await lookup(topic: topic)
        let logger = self.logger
        let partition = TopicNames.partitionIndex(topic)
        let consumerName = options.name ?? String(UInt64.random(in: 0...UInt64.max) & 0xFF_FFFF_FFFF, radix: 16)
        let core = try await connection.eventLoop.flatSubmit { () -> EventLoopFuture<ConsumerCore> in
            let core = connection.registerConsumer {
                ConsumerCore(
                    connection: connection, topic: topic, subscription: subscription, type: type, consumerID: $0,
                    partition: partition, options: options, logger: logger)
            }
            return connection.request {
                ClientCommands.subscribe(
                    topic: topic, subscription: subscription, type: type, consumerID: core.consumerID, requestID: $0,
                    consumerName: consumerName, initialPosition: options.initialPosition)
            }.map { _ in
                core.start()
                return core
            }.flatMapErrorThrowing { error in
                connection.unregisterConsumer(core.consumerID)
                throw error
            }
        }.get()
        return Consumer(core: core)
    }

    /// Closes every connection (their producers and consumers fail with `alreadyClosed`).
    public func close() async {
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
