import BrokerCore
import BrokerServer
import Foundation
import KafkaProtocol
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle

/// KoP's configuration keys for the Kafka endpoint (`messagingProtocols=kafka`).
public struct KafkaSettings: Sendable, Equatable {
    public var listenHost: String
    public var listenPort: Int
    /// What Metadata answers as this broker's address (`kafkaAdvertisedListeners`, else the listener
    /// with the broker's advertised address).
    public var advertisedHost: String
    public var advertisedPort: Int
    /// `kafkaTenant` / `kafkaNamespace`: where a Kafka topic `t` lives (`persistent://tenant/ns/t`).
    public var tenant: String
    public var namespace: String
    /// `groupMinSessionTimeoutMs`, `groupMaxSessionTimeoutMs`, `groupInitialRebalanceDelayMs`.
    public var groups = KafkaGroupConfig()

    public static let configKeys: Set<String> = [
        "kafkaListeners", "kafkaAdvertisedListeners", "kafkaTenant", "kafkaNamespace",
        "groupMinSessionTimeoutMs", "groupMaxSessionTimeoutMs", "groupInitialRebalanceDelayMs",
    ]

    /// From the `--config` file's keys; `advertisedAddress`: the broker's.
    public init(settings: [String: String], bindAddress: String, advertisedAddress: String) throws(KafkaSettingsError) {
        let listeners = settings["kafkaListeners"] ?? "PLAINTEXT://\(bindAddress):9092"
        let (host, port) = try Self.plaintext(listeners, key: "kafkaListeners")
        listenHost = host.isEmpty ? bindAddress : host
        listenPort = port
        if let advertised = settings["kafkaAdvertisedListeners"] {
            (advertisedHost, advertisedPort) = try Self.plaintext(advertised, key: "kafkaAdvertisedListeners")
        } else {
            advertisedHost = host.isEmpty || host == "0.0.0.0" ? advertisedAddress : host
            advertisedPort = port
        }
        tenant = settings["kafkaTenant"] ?? "public"
        namespace = settings["kafkaNamespace"] ?? "default"
        groups.minSessionTimeoutMs = try Self.milliseconds(settings, "groupMinSessionTimeoutMs", default: groups.minSessionTimeoutMs)
        groups.maxSessionTimeoutMs = try Self.milliseconds(settings, "groupMaxSessionTimeoutMs", default: groups.maxSessionTimeoutMs)
        groups.initialRebalanceDelayMs = try Self.milliseconds(
            settings, "groupInitialRebalanceDelayMs", default: groups.initialRebalanceDelayMs)
        guard groups.minSessionTimeoutMs <= groups.maxSessionTimeoutMs else {
            throw KafkaSettingsError(
                key: "groupMinSessionTimeoutMs", value: "\(groups.minSessionTimeoutMs)",
                expected: "at most groupMaxSessionTimeoutMs (\(groups.maxSessionTimeoutMs))")
        }
    }

    static func milliseconds(_ settings: [String: String], _ key: String, default value: Int64) throws(KafkaSettingsError) -> Int64 {
        guard let text = settings[key] else { return value }
        guard let parsed = Int64(text.trimmingCharacters(in: .whitespaces)), (0...86_400_000).contains(parsed) else {
            throw KafkaSettingsError(key: key, value: text, expected: "milliseconds, 0 to 86400000")
        }
        return parsed
    }

    /// The PLAINTEXT listener of a comma list (`PLAINTEXT://host:port`).
    static func plaintext(_ value: String, key: String) throws(KafkaSettingsError) -> (String, Int) {
        for listener in value.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            guard let range = listener.range(of: "://") else { continue }
            let scheme = listener[..<range.lowerBound].uppercased()
            guard scheme == "PLAINTEXT" else { continue }
            let address = listener[range.upperBound...]
            guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
                  (1...65_535).contains(port)
            else { break }
            return (String(address[..<colon]), port)
        }
        throw KafkaSettingsError(key: key, value: value)
    }
}

public struct KafkaSettingsError: Error, CustomStringConvertible, Sendable {
    public var key: String
    public var value: String
    public var expected = "a PLAINTEXT://host:port listener (e.g. PLAINTEXT://0.0.0.0:9092)"
    public var description: String { "\(key)=\(value): give \(expected)" }
}

public enum KafkaEndpoint {
    /// The endpoint `messagingProtocols=kafka` selects.
    public static let endpoint = ProtocolEndpoint(
        name: "kafka", configKeys: KafkaSettings.configKeys,
        advertisedData: { settings, bindAddress, advertisedAddress in
            let parsed = try KafkaSettings(settings: settings, bindAddress: bindAddress, advertisedAddress: advertisedAddress)
            return "PLAINTEXT://\(parsed.advertisedHost):\(parsed.advertisedPort)"
        }
    ) { context in
        let settings = try KafkaSettings(
            settings: context.settings, bindAddress: context.bindAddress, advertisedAddress: context.advertisedAddress)
        return KafkaServer(settings: settings, broker: context.broker, eventLoopGroup: context.eventLoopGroup, logger: context.logger)
    }
}

/// The Kafka protocol listener, as a `Service`: binds, serves until graceful shutdown, then closes.
public final class KafkaServer: Service, Sendable {
    let settings: KafkaSettings
    let broker: BrokerService
    let eventLoopGroup: any EventLoopGroup
    let logger: Logger
    private let nextConnectionID = NIOLockedValueBox<UInt64>(0)

    public init(settings: KafkaSettings, broker: BrokerService, eventLoopGroup: any EventLoopGroup, logger: Logger) {
        self.settings = settings
        self.broker = broker
        self.eventLoopGroup = eventLoopGroup
        var logger = logger
        logger[metadataKey: "endpoint"] = "kafka"
        self.logger = logger
    }

    public func run() async throws {
        let api = KafkaApiHandler(settings: settings, broker: broker, logger: logger)
        broker.transactionOffsetCommitter.withLockedValue { $0 = api }
        let logger = self.logger
        let counter = nextConnectionID
        let channel = try await ServerBootstrap(group: eventLoopGroup)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                let connectionID = counter.withLockedValue { value -> UInt64 in
                    value += 1
                    return value
                }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(KafkaFrameDecoder()))
                    try channel.pipeline.syncOperations.addHandler(
                        KafkaConnectionHandler(api: api, connectionID: connectionID, logger: logger))
                }
            }
            .bind(host: settings.listenHost, port: settings.listenPort).get()
        logger.info("kafka-server.listening", metadata: [
            "address": "\(channel.localAddress.map { "\($0)" } ?? "?")",
            "advertised": "\(settings.advertisedHost):\(settings.advertisedPort)",
            "namespace": "\(settings.tenant)/\(settings.namespace)",
        ])
        // In a cluster a group's coordinator moves its subscription only on the partitions it
        // serves; each broker moves it on the others it serves, from the stored offsets.
        let sync = broker.cluster == nil ? nil : Task {
            var applied = KafkaGroupSubscriptionSync()
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(KafkaGroupSubscriptionSync.intervalMs))
                guard !Task.isCancelled else { break }
                await api.syncGroupSubscriptions(&applied)
            }
        }
        try? await gracefulShutdown()
        logger.info("kafka-server.stopping")
        sync?.cancel()
        await api.groups.shutdown()
        try? await channel.close()
    }
}

/// One connection: requests are answered in the order they came (Kafka clients pipeline them and
/// match responses by order and correlation id); a request starts once the one before it is
/// admitted (its effects ordered: a Produce is admitted when its entries are handed to the topic);
/// at `maxInFlight` unanswered requests it stops reading until one is answered. A request that
/// cannot be parsed closes only this connection. Answers wait in `answers` (a ring, not a chain of
/// futures) and go out in order, those that become due together in one flush. On the channel's loop.
final class KafkaConnectionHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let api: KafkaApiHandler
    private let connectionID: UInt64
    private var logger: Logger
    /// One slot per request read and not yet written, oldest first: its answer once it has one
    /// (`.some(nil)`: answered without a response, acks=0).
    private var answers = CircularBuffer<ByteBuffer??>(initialCapacity: 16)
    /// The request number of `answers.first`, and of the next request read.
    private var firstPending: UInt64 = 0
    private var nextRequest: UInt64 = 0
    /// Requests read while an earlier one is not admitted yet, in order.
    private var waiting = CircularBuffer<(request: UInt64, frame: ByteBuffer)>()
    /// The request being admitted (a task of the async path), if one is.
    private var admitting: UInt64?
    static let maxInFlight = 64
    /// A flush of the answers written this tick is scheduled.
    private var flushScheduled = false
    private var reading = true
    private var closed = false
    private var context: ChannelHandlerContext?

    /// The client's address as DescribeGroups shows it (`/host`, as Kafka does).
    private var clientHost = ""

    init(api: KafkaApiHandler, connectionID: UInt64, logger: Logger) {
        self.api = api
        self.connectionID = connectionID
        var logger = logger
        logger[metadataKey: "connection.id"] = "\(connectionID)"
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        closed = true
    }

    func channelActive(context: ChannelHandlerContext) {
        clientHost = "/" + (context.channel.remoteAddress?.ipAddress ?? "")
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        let request = nextRequest
        nextRequest += 1
        answers.append(nil)
        if answers.count == Self.maxInFlight, reading {
            reading = false
            context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
        }
        if admitting != nil {
            waiting.append((request, frame))
        } else {
            start(request, frame, on: context.channel)
        }
    }

    /// Starts a request: the common Produce (its partitions loaded here) on this loop, admitted at
    /// once; anything else in a task, admitted when it says so (or when it is answered).
    private func start(_ request: UInt64, _ frame: ByteBuffer, on channel: any Channel) {
        let loop = channel.eventLoop
        let bound = NIOLoopBound(self, eventLoop: loop)
        if let answered = api.produceOnLoop(frame, allocator: channel.allocator, eventLoop: loop) {
            answered.whenComplete { bound.value.answered(request, $0) }
            return
        }
        admitting = request
        let api = self.api
        let allocator = channel.allocator
        let clientHost = clientHost
        let answer = loop.makeFutureWithTask {
            try await KafkaApiHandler.$connectionLoop.withValue(loop) {
                try await api.answer(frame, allocator: allocator, clientHost: clientHost) {
                    loop.execute { bound.value.admitted(request) }
                }
            }
        }
        answer.whenComplete { result in
            let handler = bound.value
            handler.admitted(request)
            handler.answered(request, result)
        }
    }

    /// The request being admitted is: the requests that waited for it start, in order.
    private func admitted(_ request: UInt64) {
        guard admitting == request, let channel = context?.channel else { return }
        admitting = nil
        while admitting == nil, let next = waiting.popFirst() { start(next.request, next.frame, on: channel) }
    }

    private func answered(_ request: UInt64, _ result: Result<ByteBuffer?, any Error>) {
        guard !closed, let context else { return }
        switch result {
        case .success(let response):
            answers[answers.index(answers.startIndex, offsetBy: Int(request - firstPending))] = .some(response)
        case .failure(let error):
            logger.warning("kafka.connection.request-refused", metadata: ["error": "\(error)"])
            closed = true
            context.close(promise: nil)
            return
        }
        // Whatever is answered at the head goes out now, flushed once at the end of this tick.
        var wrote = false
        while let first = answers.first, let response = first {
            answers.removeFirst()
            firstPending += 1
            if let response {
                context.write(wrapOutboundOut(response), promise: nil)
                wrote = true
            }
        }
        if wrote, !flushScheduled {
            flushScheduled = true
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            context.eventLoop.execute {
                let handler = bound.value
                handler.flushScheduled = false
                handler.context?.flush()
            }
        }
        if !reading, answers.count < Self.maxInFlight {
            reading = true
            context.channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.warning("kafka.connection.closed", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }
}
