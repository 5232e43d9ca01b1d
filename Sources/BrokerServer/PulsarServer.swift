import BrokerCore
import ManagedLedger
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import PulsarProtocol
import ServiceLifecycle

/// The Pulsar protocol listener, as a `Service`: binds, serves until graceful shutdown, then
/// closes the listening socket and every connection. With `tls` it is the `pulsar+ssl://`
/// listener (`brokerServicePortTls`): each connection starts with a TLS handshake; bytes that are
/// not TLS close that connection only.
public final class PulsarServer: Service, Sendable {
    public let host: String
    public let port: Int
    private let broker: BrokerService
    private let configuration: ConnectionConfiguration
    private let settings: PulsarListenerSettings
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let tls: TLSCertificates?
    private let nextConnectionID = NIOLockedValueBox<UInt64>(0)
    private let boundPort = NIOLockedValueBox<Int?>(nil)

    public init(
        host: String, port: Int, broker: BrokerService, configuration: ConnectionConfiguration,
        settings: PulsarListenerSettings = PulsarListenerSettings(), tls: TLSCertificates? = nil,
        eventLoopGroup: any EventLoopGroup, logger: Logger
    ) {
        self.settings = settings
        self.tls = tls
        self.host = host
        self.port = port
        self.broker = broker
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
    }

    public func run() async throws {
        let broker = self.broker
        let configuration = self.configuration
        let logger = self.logger
        let counter = self.nextConnectionID
        let registry = ConnectionRegistry(
            settings: settings, fileDescriptorLimit: FileDescriptorLimit.raiseToHardLimit(logger: logger))
        let keepAliveInterval = TimeAmount.nanoseconds(settings.keepAliveInterval.nanoseconds)
        let sslContext = try tls?.makeContext()
        let channel = try await ServerBootstrap(group: eventLoopGroup)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.socketOption(.so_keepalive), value: 1)
            .childChannelInitializer { channel in
                let connectionID = counter.withLockedValue { value -> UInt64 in
                    value += 1
                    return value
                }
                // Refused past `brokerMaxConnections` / `brokerMaxConnectionsPerIp` (Pulsar closes them at once too).
                let address = channel.remoteAddress?.ipAddress ?? "unknown"
                let admission = registry.admit(address: address)
                guard admission == .admitted else {
                    logger.warning("pulsar-server.connection-refused", metadata: [
                        "connection.remote": "\(address)", "reason": "\(admission)",
                    ])
                    return channel.close()
                }
                channel.closeFuture.whenComplete { _ in registry.release(address: address) }
                return channel.eventLoop.makeCompletedFuture {
                    if let sslContext {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext))
                    }
                    try channel.pipeline.syncOperations.addHandler(PulsarConnectionHandler(
                        broker: broker, configuration: configuration, connectionID: connectionID,
                        keepAliveInterval: keepAliveInterval, logger: logger))
                }
            }
            .bind(host: host, port: port).get()
        logger.info("pulsar-server.listening", metadata: [
            "address": "\(channel.localAddress.map { "\($0)" } ?? "?")",
            "max-connections": "\(registry.maxConnections)", "max-connections-per-ip": "\(registry.maxConnectionsPerIP)",
            "broker.service-url": "\(configuration.brokerServiceURL)", "tls": "\(tls != nil)",
        ])
        try? await gracefulShutdown()
        logger.info("pulsar-server.stopping")
        try? await channel.close()
    }
}
