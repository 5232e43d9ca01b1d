import Authentication
import BrokerCore
import GeoReplication
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
    public var authentication = AuthenticationSettings()
    public var authenticateMetricsEndpoint = false
    /// The TLS listeners (`brokerServicePortTls`, `webServicePortTls`); nil: plain text only.
    public var tls: TLSListeners?
    /// How geo-replicators reach remote clusters.
    public var replication = ReplicationClientSettings()
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
        var configuration = options.broker
        configuration.advertisedPulsarURL = "pulsar://\(options.advertisedAddress):\(options.port)"
        configuration.advertisedHTTPURL = "http://\(options.advertisedAddress):\(options.httpPort)"
        configuration.advertisedPulsarTLSURL = options.tls?.pulsarURL(advertisedAddress: options.advertisedAddress)
        configuration.advertisedHTTPSURL = options.tls?.httpsURL(advertisedAddress: options.advertisedAddress)
        var wiring = BrokerWiring(
            role: "standalone", configuration: configuration, store: store, metadata: metadata,
            bindAddress: options.bindAddress, port: options.port, httpPort: options.httpPort,
            advertisedAddress: options.advertisedAddress, metricsRegistry: metricsRegistry)
        wiring.listener = options.listener
        wiring.endpoints = options.endpoints
        wiring.settings = options.settings
        wiring.authentication = options.authentication
        wiring.authenticateMetricsEndpoint = options.authenticateMetricsEndpoint
        wiring.tls = options.tls
        wiring.replication = options.replication
        try await BrokerProcess.run(wiring, logger: logger)
    }
}

/// Everything one broker process is built from, standalone or in a cluster: `BrokerProcess.run`
/// makes the same broker of both (the core, the Pulsar listener, the endpoints
/// `messagingProtocols` names, the HTTP endpoint, the periodic services); only what goes in
/// differs: the ledger client (local or replicated), the metadata store (embedded or etcd), and in
/// a cluster the coordinator, the auditor service and the registration after bootstrap.
public struct BrokerWiring: Sendable {
    /// `standalone` or `broker`: the prefix of the process's log events.
    public var role: String
    public var configuration: BrokerConfiguration
    public var store: any LedgerClient
    public var metadata: any MetadataStore
    /// Membership and bundle ownership (a cluster broker); nil: this broker owns every topic.
    public var cluster: ClusterCoordinator?
    public var bindAddress: String
    public var port: Int
    public var httpPort: Int
    public var advertisedAddress: String
    public var listener = PulsarListenerSettings()
    /// Endpoints served beside Pulsar's (`messagingProtocols`).
    public var endpoints: [ProtocolEndpoint] = []
    /// The `--config` file's key=value pairs, for the endpoints' own keys.
    public var settings: [String: String] = [:]
    public var metricsRegistry: PrometheusCollectorRegistry
    /// Who clients are (`authenticationEnabled` and the providers); authorization is in `configuration`.
    public var authentication = AuthenticationSettings()
    /// `/metrics` needs credentials too (`authenticateMetricsEndpoint`).
    public var authenticateMetricsEndpoint = false
    /// The TLS listeners; nil: plain text only.
    public var tls: TLSListeners?
    /// Services that run beside the broker's own (a cluster's re-replication auditor).
    public var extraServices: [any Service] = []
    /// How geo-replicators reach remote clusters (`brokerClientAuthentication*`, trust certificates).
    public var replication = ReplicationClientSettings()
    /// Runs once the broker has bootstrapped, before it serves (a cluster broker registers itself).
    public var afterBootstrap: (@Sendable (BrokerService) async throws -> Void)?

    public init(
        role: String, configuration: BrokerConfiguration, store: any LedgerClient, metadata: any MetadataStore,
        cluster: ClusterCoordinator? = nil, bindAddress: String, port: Int, httpPort: Int, advertisedAddress: String,
        metricsRegistry: PrometheusCollectorRegistry
    ) {
        self.role = role
        self.configuration = configuration
        self.store = store
        self.metadata = metadata
        self.cluster = cluster
        self.bindAddress = bindAddress
        self.port = port
        self.httpPort = httpPort
        self.advertisedAddress = advertisedAddress
        self.metricsRegistry = metricsRegistry
    }
}

/// Serving a `BrokerService`: the Pulsar protocol listener, the endpoints of other protocols
/// `messagingProtocols` names, and the HTTP endpoint, until SIGTERM/SIGINT.
public enum BrokerProcess {
    /// Builds the broker `wiring` describes, bootstraps it, serves it until SIGTERM/SIGINT, then
    /// shuts it down and closes the metadata store (also when serving failed: the error is logged
    /// and rethrown).
    public static func run(_ wiring: BrokerWiring, logger: Logger) async throws {
        let authenticator: Authenticator
        let certificates: TLSCertificates?
        do {
            authenticator = try await Authenticator.make(wiring.authentication)
            certificates = try wiring.tls.map { listeners throws(TLSSettingsError) in try TLSCertificates(settings: listeners.settings) }
        } catch {
            logger.error("\(wiring.role).failed", metadata: ["error": "\(error)"])
            throw error
        }
        let eventLoopGroup = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        var configuration = wiring.configuration
        // The Pulsar endpoint is always served: compaction reads its entries.
        if configuration.compactionCodec == nil { configuration.compactionCodec = PulsarCompactionCodec() }
        if configuration.transactionMarkerCodec == nil { configuration.transactionMarkerCodec = PulsarTransactionMarkerCodec() }
        let broker = BrokerService(
            configuration: configuration, store: wiring.store, metadata: wiring.metadata,
            eventLoopGroup: eventLoopGroup, cluster: wiring.cluster, logger: logger)
        let remoteClusters = RemoteClusterClients(
            broker: broker, settings: wiring.replication, eventLoopGroup: eventLoopGroup, logger: logger)
        broker.replicatorFactory.withLockedValue { $0 = GeoReplicatorFactory(broker: broker, clients: remoteClusters, logger: logger) }
        var failure: (any Error)?
        var stopTransactions: (@Sendable () async -> Void)?
        do {
            try await broker.bootstrap()
            try await wiring.afterBootstrap?(broker)
            stopTransactions = startTransactionCoordinator(broker, wiring: wiring, eventLoopGroup: eventLoopGroup, logger: logger)
            logger.info("\(wiring.role).started", metadata: [
                "pulsar-url": "\(wiring.configuration.advertisedPulsarURL)",
                "http-url": "\(wiring.configuration.advertisedHTTPURL)", "cluster": "\(wiring.configuration.clusterName)",
                "authentication": "\(authenticator.isEnabled)", "authorization": "\(wiring.configuration.authorization.isEnabled)",
            ])
            try await serve(
                broker: broker, bindAddress: wiring.bindAddress, port: wiring.port, httpPort: wiring.httpPort,
                advertisedAddress: wiring.advertisedAddress, listener: wiring.listener, endpoints: wiring.endpoints,
                settings: wiring.settings, metricsRegistry: wiring.metricsRegistry, eventLoopGroup: eventLoopGroup,
                extraServices: wiring.extraServices, authenticator: authenticator,
                authenticateMetrics: wiring.authenticateMetricsEndpoint,
                tls: zip(wiring.tls, certificates), logger: logger)
        } catch {
            logger.error("\(wiring.role).failed", metadata: ["error": "\(error)"])
            failure = error
        }
        await stopTransactions?()
        await broker.shutdown()
        await remoteClusters.shutdown()
        await wiring.metadata.close()
        try? await eventLoopGroup.shutdownGracefully()
        logger.info("\(wiring.role).stopped")
        if let failure { throw failure }
    }

    /// `transactionCoordinatorEnabled`: coordinator 0, recovering its transactions in the background
    /// (ending what was ending, timing out what was open). In standalone it runs here; in a cluster
    /// on the broker that owns the bundle of `transaction_coordinator_assign-partition-0` (checked
    /// each second: a broker that takes the bundle over, its owner dead, recovers the coordinator),
    /// ending transactions on other brokers' topics through `ClusterTransactionEnds`. Returns what
    /// stops it.
    static func startTransactionCoordinator(
        _ broker: BrokerService, wiring: BrokerWiring, eventLoopGroup: any EventLoopGroup, logger: Logger
    ) -> (@Sendable () async -> Void)? {
        guard wiring.configuration.transactionCoordinatorEnabled else { return nil }
        let metadata = wiring.metadata
        let clock = wiring.configuration.managedLedger.clock
        @Sendable func make() -> TransactionCoordinator {
            TransactionCoordinator(
                metadata: metadata, participants: BrokerTransactionParticipants(broker: broker), clock: clock, logger: logger)
        }
        @Sendable func recover(_ coordinator: TransactionCoordinator) async -> Bool {
            do {
                try await coordinator.recover()
                return true
            } catch {
                logger.error("transaction.coordinator-recovery-failed", metadata: [
                    "error": "\(error)", "hint": "retrying in a second; transactions are refused until it succeeds",
                ])
                return false
            }
        }
        guard wiring.cluster != nil else {
            let coordinator = make()
            broker.transactionCoordinator.withLockedValue { $0 = coordinator }
            let task = Task {
                while !Task.isCancelled, !(await recover(coordinator)) {
                    try? await Task.sleep(nanoseconds: 1_000_000_000)
                }
            }
            return { task.cancel() }
        }
        let ends = ClusterTransactionEnds(
            url: wiring.configuration.advertisedPulsarURL, settings: wiring.replication, eventLoopGroup: eventLoopGroup, logger: logger)
        broker.remoteTransactionEnds.withLockedValue { $0 = ends }
        let task = Task {
            while !Task.isCancelled {
                let owns = (try? await broker.servesHere(BrokerService.transactionCoordinatorPartition)) ?? false
                let current = broker.transactionCoordinator.withLockedValue { $0 }
                if owns, current == nil {
                    let coordinator = make()
                    broker.transactionCoordinator.withLockedValue { $0 = coordinator }
                    if await recover(coordinator) {
                        logger.info("transaction.coordinator-taken", metadata: ["transaction.coordinator": "0"])
                    } else {
                        broker.transactionCoordinator.withLockedValue { $0 = nil }
                        await coordinator.stop()
                    }
                } else if !owns, let current {
                    broker.transactionCoordinator.withLockedValue { $0 = nil }
                    await current.stop()
                    logger.info("transaction.coordinator-released", metadata: ["transaction.coordinator": "0"])
                }
                try? await Task.sleep(nanoseconds: 1_000_000_000)
            }
        }
        return {
            task.cancel()
            await ends.shutdown()
        }
    }

    public static func serve(
        broker: BrokerService, bindAddress: String, port: Int, httpPort: Int, advertisedAddress: String,
        listener: PulsarListenerSettings = PulsarListenerSettings(),
        endpoints: [ProtocolEndpoint] = [], settings: [String: String] = [:],
        metricsRegistry: PrometheusCollectorRegistry, eventLoopGroup: any EventLoopGroup,
        extraServices: [any Service] = [], authenticator: Authenticator = .disabled, authenticateMetrics: Bool = false,
        tls: (listeners: TLSListeners, certificates: TLSCertificates)? = nil, logger: Logger
    ) async throws {
        let context = EndpointContext(
            broker: broker, bindAddress: bindAddress, advertisedAddress: advertisedAddress, settings: settings,
            eventLoopGroup: eventLoopGroup, logger: logger)
        let endpointServices = try endpoints.map { endpoint in
            logger.info("broker.endpoint", metadata: ["protocol": "\(endpoint.name)"])
            return try endpoint.makeService(context)
        }
        // With internalListenerName, LOOKUPs that name no listener get that listener's addresses.
        let internalListener = broker.configuration.internalListenerName.flatMap { broker.configuration.advertisedListeners[$0] }
        var connection = ConnectionConfiguration(
            brokerServiceURL: internalListener?.pulsarURL ?? "pulsar://\(advertisedAddress):\(port)",
            brokerServiceURLTls: internalListener.map(\.pulsarTLSURL) ?? tls?.listeners.pulsarURL(advertisedAddress: advertisedAddress),
            authenticator: authenticator)
        connection.listeners = broker.configuration.advertisedListeners
        let pulsar = PulsarServer(
            host: bindAddress, port: port, broker: broker, configuration: connection,
            settings: listener, eventLoopGroup: eventLoopGroup, logger: logger)
        let http = try HTTPServer.makeApplication(
            host: bindAddress, port: httpPort, broker: broker, metricsRegistry: metricsRegistry,
            authenticator: authenticator, authenticateMetrics: authenticateMetrics, logger: logger)
        var services: [any Service] = [pulsar]
        if let tls {
            if let tlsPort = tls.listeners.pulsarPort {
                services.append(PulsarServer(
                    host: bindAddress, port: tlsPort, broker: broker, configuration: connection,
                    settings: listener, tls: tls.certificates, eventLoopGroup: eventLoopGroup, logger: logger))
            }
            if let httpsPort = tls.listeners.httpsPort {
                services.append(try HTTPServer.makeApplication(
                    host: bindAddress, port: httpsPort, broker: broker, metricsRegistry: metricsRegistry,
                    authenticator: authenticator, authenticateMetrics: authenticateMetrics,
                    tls: tls.certificates, logger: logger))
            }
            let certificates = tls.certificates
            if let interval = certificates.settings.refreshCheckInterval {
                services.append(PeriodicService(
                    name: "tls-certificate-refresh", interval: interval, logger: logger
                ) { certificates.reloadIfChanged(logger: logger) })
            }
        }
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

/// The TLS listeners of a broker: `brokerServicePortTls` (`pulsar+ssl://`) and
/// `webServicePortTls` (HTTPS admin API), with the certificate settings they share.
public struct TLSListeners: Sendable {
    public var settings: TLSServerSettings
    public var pulsarPort: Int?
    public var httpsPort: Int?

    public init(settings: TLSServerSettings, pulsarPort: Int?, httpsPort: Int?) {
        self.settings = settings
        self.pulsarPort = pulsarPort
        self.httpsPort = httpsPort
    }

    public func pulsarURL(advertisedAddress: String) -> String? {
        pulsarPort.map { "pulsar+ssl://\(advertisedAddress):\($0)" }
    }

    public func httpsURL(advertisedAddress: String) -> String? {
        httpsPort.map { "https://\(advertisedAddress):\($0)" }
    }
}

private func zip<A, B>(_ a: A?, _ b: B?) -> (A, B)? {
    guard let a, let b else { return nil }
    return (a, b)
}
