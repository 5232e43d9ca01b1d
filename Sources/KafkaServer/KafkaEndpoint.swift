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
        try? await gracefulShutdown()
        logger.info("kafka-server.stopping")
        await api.groups.shutdown()
        try? await channel.close()
    }
}

/// One connection: requests are answered in the order they came (Kafka clients pipeline them and
/// match responses by order and correlation id); at `maxInFlight` unanswered requests it stops
/// reading until one is answered. A request that cannot be parsed closes only this connection. On
/// the channel's loop.
final class KafkaConnectionHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let api: KafkaApiHandler
    private let connectionID: UInt64
    private var logger: Logger
    /// The previous request's answer: the next one is written after it.
    private var previous: EventLoopFuture<Void>?
    /// The previous request's admission: the next one starts after it.
    private var previousAdmission: EventLoopFuture<Void>?
    /// Requests read and not yet answered; at `maxInFlight` reading stops until one is.
    private var inFlight = 0
    static let maxInFlight = 64
    /// A flush of the answers written this tick is scheduled.
    private var flushScheduled = false

    /// The client's address as DescribeGroups shows it (`/host`, as Kafka does).
    private var clientHost = ""

    init(api: KafkaApiHandler, connectionID: UInt64, logger: Logger) {
        self.api = api
        self.connectionID = connectionID
        var logger = logger
        logger[metadataKey: "connection.id"] = "\(connectionID)"
        self.logger = logger
    }

    func channelActive(context: ChannelHandlerContext) {
        clientHost = "/" + (context.channel.remoteAddress?.ipAddress ?? "")
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        let channel = context.channel
        let api = self.api
        let allocator = context.channel.allocator
        let clientHost = clientHost
        // A request starts once the one before it is admitted (its effects ordered).
        let admission = channel.eventLoop.makePromise(of: Void.self)
        let start = previousAdmission ?? channel.eventLoop.makeSucceededVoidFuture()
        previousAdmission = admission.futureResult
        let bound = NIOLoopBound(self, eventLoop: channel.eventLoop)
        let answer = start.flatMap { () -> EventLoopFuture<ByteBuffer?> in
            // The common Produce (its partitions loaded here) stays on this loop: no task, no hops.
            if let answered = api.produceOnLoop(frame, allocator: allocator, eventLoop: channel.eventLoop) {
                admission.succeed()
                return answered
            }
            return channel.eventLoop.makeFutureWithTask {
                try await api.answer(frame, allocator: allocator, clientHost: clientHost) { admission.succeed() }
            }
        }
        answer.whenComplete { _ in admission.succeed() }
        let ordered = (previous ?? channel.eventLoop.makeSucceededVoidFuture()).flatMap { answer }
        let logger = self.logger
        inFlight += 1
        if inFlight == Self.maxInFlight { channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in } }
        previous = ordered.map { response in
            guard let response else { return }
            // Answers that become due together (one group commit makes many durable) go out in
            // one flush: written now, flushed once at the end of this loop tick.
            channel.write(response, promise: nil)
            let handler = bound.value
            if !handler.flushScheduled {
                handler.flushScheduled = true
                channel.eventLoop.execute {
                    bound.value.flushScheduled = false
                    channel.flush()
                }
            }
        }.flatMapErrorThrowing { error in
            logger.warning("kafka.connection.request-refused", metadata: ["error": "\(error)"])
            channel.close(promise: nil)
            throw error
        }
        previous?.whenComplete { _ in
            let handler = bound.value
            handler.inFlight -= 1
            if handler.inFlight == Self.maxInFlight - 1 { channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in } }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.warning("kafka.connection.closed", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }
}
