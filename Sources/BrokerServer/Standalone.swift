import BrokerCore
import ManagedLedger
import Foundation
import LedgerStorage
import Logging
import Metadata
import NIOCore
import NIOPosix
import Prometheus
import ServiceLifecycle

/// Options of `magnetar standalone`.
public struct StandaloneOptions: Sendable {
    public var dataDirectory: String
    public var bindAddress: String
    public var port: Int
    public var httpPort: Int
    public var advertisedAddress: String
    public var broker = BrokerConfiguration()
    public var listener = PulsarListenerSettings()
    /// Endpoints served beside Pulsar's (`messagingProtocols`).
    public var endpoints: [ProtocolEndpoint] = []
    /// The `--config` file's key=value pairs, for the endpoints' own keys.
    public var settings: [String: String] = [:]
    public init(dataDirectory: String, bindAddress: String, port: Int, httpPort: Int, advertisedAddress: String) {
        self.dataDirectory = dataDirectory
        self.bindAddress = bindAddress
        self.port = port
        self.httpPort = httpPort
        self.advertisedAddress = advertisedAddress
    }
}

/// Broker + storage + metadata in one process: the quick start.
public enum Standalone {
    /// The latency timers' labels and their histogram buckets, for the metrics backend.
    public static var latencyTimerLabels: [String] { BrokerMetrics.timerLabels }
    public static var latencyBuckets: [Duration] { BrokerMetrics.latencyBuckets }

    /// `metricsRegistry`: where `/metrics` reads from; the executable bootstraps swift-metrics with it.
    public static func run(
        _ options: StandaloneOptions, metricsRegistry: PrometheusCollectorRegistry = PrometheusCollectorRegistry(),
        logger: Logger
    ) async throws {
        let ledgersDirectory = (options.dataDirectory as NSString).appendingPathComponent("ledgers")
        let metadataDirectory = (options.dataDirectory as NSString).appendingPathComponent("metadata")
        try FileManager.default.createDirectory(atPath: ledgersDirectory, withIntermediateDirectories: true)
        logger.info("standalone.starting", metadata: ["data-dir": "\(options.dataDirectory)"])
        var storeConfiguration = FileLedgerStoreConfiguration(directory: ledgersDirectory)
        storeConfiguration.groupCommitObserver = BrokerMetrics.groupCommitObserver()
        let store = LocalLedgerClient(store: try FileLedgerStore(configuration: storeConfiguration, logger: logger))
        let metadata = try EmbeddedMetadataStore(directory: metadataDirectory, logger: logger)
        let eventLoopGroup = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        var configuration = options.broker
        configuration.advertisedPulsarURL = "pulsar://\(options.advertisedAddress):\(options.port)"
        configuration.advertisedHTTPURL = "http://\(options.advertisedAddress):\(options.httpPort)"
        let broker = BrokerService(
            configuration: configuration, store: store, metadata: metadata,
            eventLoopGroup: eventLoopGroup, logger: logger)
        try await broker.bootstrap()
        do {
            try await BrokerProcess.serve(
                broker: broker, bindAddress: options.bindAddress, port: options.port, httpPort: options.httpPort,
                advertisedAddress: options.advertisedAddress, listener: options.listener,
                endpoints: options.endpoints, settings: options.settings, metricsRegistry: metricsRegistry,
                eventLoopGroup: eventLoopGroup, logger: logger)
        } catch {
            logger.error("standalone.failed", metadata: ["error": "\(error)"])
            await broker.shutdown()
            await metadata.close()
            try? await eventLoopGroup.shutdownGracefully()
            throw error
        }
        await broker.shutdown()
        await metadata.close()
        try? await eventLoopGroup.shutdownGracefully()
        logger.info("standalone.stopped")
    }
}

/// Serving a `BrokerService`: the Pulsar protocol listener, the endpoints of other protocols
/// `messagingProtocols` names, and the HTTP endpoint, until SIGTERM/SIGINT.
public enum BrokerProcess {
    public static func serve(
        broker: BrokerService, bindAddress: String, port: Int, httpPort: Int, advertisedAddress: String,
        listener: PulsarListenerSettings = PulsarListenerSettings(),
        endpoints: [ProtocolEndpoint] = [], settings: [String: String] = [:],
        metricsRegistry: PrometheusCollectorRegistry, eventLoopGroup: any EventLoopGroup,
        extraServices: [any Service] = [], logger: Logger
    ) async throws {
        let context = EndpointContext(
            broker: broker, bindAddress: bindAddress, advertisedAddress: advertisedAddress, settings: settings,
            eventLoopGroup: eventLoopGroup, logger: logger)
        let endpointServices = try endpoints.map { endpoint in
            logger.info("broker.endpoint", metadata: ["protocol": "\(endpoint.name)"])
            return try endpoint.makeService(context)
        }
        let pulsar = PulsarServer(
            host: bindAddress, port: port, broker: broker,
            configuration: ConnectionConfiguration(brokerServiceURL: "pulsar://\(advertisedAddress):\(port)"),
            settings: listener, eventLoopGroup: eventLoopGroup, logger: logger)
        let http = HTTPServer.makeApplication(
            host: bindAddress, port: httpPort, broker: broker, metricsRegistry: metricsRegistry, logger: logger)
        var services: [any Service] = [pulsar]
        services += endpointServices
        services.append(http)
        services += extraServices
        // Last, so the group stops them first.
        services += brokerServices(broker, logger: logger)
        let group = ServiceGroup(configuration: .init(
            services: services.map { ServiceGroupConfiguration.ServiceConfiguration(service: $0) },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        try await group.run()
    }
}
