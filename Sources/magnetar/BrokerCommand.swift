import ArgumentParser
import BrokerCore
import ManagedLedger
import BrokerServer
import Foundation
import LedgerStorage
import Logging
import Metadata
import Metrics
import NIOCore
import NIOPosix
import Prometheus
import Replication
import ServerConfig

/// `magnetar broker`: a stateless broker of a cluster. Ledgers live on storage nodes, metadata
/// (and bundle ownership) in etcd; any broker can take over the topics of one that died.
struct BrokerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "broker",
        abstract: "Run a cluster broker: metadata in etcd, ledgers on storage nodes (see scripts/local-cluster).",
        discussion: "Settings come from --config FILE (Pulsar's broker.conf keys, see conf/broker.conf), then the flags.")

    @OptionGroup var config: ConfigOption

    @Option(help: "Where the cluster's metadata lives: etcd://host:port[/root] (metadataStoreUrl; Pulsar's etcd:http://host:port works too).")
    var metadata: String?

    @OptionGroup var listen: ListenOptions

    @Option(help: "Name of the cluster: admin API paths, producer names (clusterName; default magnetar).")
    var clusterName: String?

    @Option(help: "Storage nodes as host:port,host:port,... (default: the nodes registered in the metadata store).")
    var storageNodes: String?

    @Option(help: "Ensemble size E of new ledgers (managedLedgerDefaultEnsembleSize; default 3, or fewer when fewer storage nodes exist).")
    var ensembleSize: Int?

    @Option(help: "Write quorum Qw of new ledgers (managedLedgerDefaultWriteQuorum; default E).")
    var writeQuorum: Int?

    @Option(help: "Ack quorum Qa of new ledgers (managedLedgerDefaultAckQuorum; default 2, or fewer when E is smaller).")
    var ackQuorum: Int?

    @Option(help: "Seconds the metadata store keeps this broker's registration and bundle ownership after it stops answering (metadataStoreSessionTimeoutMillis, in milliseconds; default 10 s).")
    var sessionTtlSeconds: Int?

    @Option(help: "Seconds a storage node may be gone before the re-replication auditor moves its ledgers' copies elsewhere (lostBookieRecoveryDelay; default 30).")
    var replicationGraceSeconds: Int?

    @Option(help: "Seconds between re-replication audits; only the elected auditor broker audits (auditorPeriodicBookieCheckInterval; default 5).")
    var replicationCheckSeconds: Int?

    @OptionGroup var ledgers: LedgerOptions

    @OptionGroup var logging: LoggingOptions

    /// What the flags and the file say, checked.
    struct Settings {
        var metadataURL: String
        var clusterName: String
        var replication: LedgerReplicationOptions?
        var sessionTTLSeconds: Int
        var replicationGraceSeconds: Int
        var replicationCheckSeconds: Int
    }

    func settings(_ file: ConfigFile?) throws -> Settings {
        guard let url = Layered.optionalString(metadata, file, "metadataStoreUrl") else {
            throw StartupError("the broker needs its metadata store: --metadata etcd://host:port, or metadataStoreUrl in --config")
        }
        let positive = 1...Int(Int32.max)
        for (flag, value, range) in [
            ("--ensemble-size", ensembleSize, positive), ("--write-quorum", writeQuorum, positive),
            ("--ack-quorum", ackQuorum, positive), ("--session-ttl-seconds", sessionTtlSeconds, positive),
            ("--replication-grace-seconds", replicationGraceSeconds, 0...Int(Int32.max)),
            ("--replication-check-seconds", replicationCheckSeconds, positive),
        ] {
            if let value, !range.contains(value) { throw StartupError("\(flag) \(value): expected \(range.lowerBound) or more") }
        }
        let ensemble = try Layered.optionalInt(ensembleSize, file, "managedLedgerDefaultEnsembleSize", in: positive)
        let write = try Layered.optionalInt(writeQuorum, file, "managedLedgerDefaultWriteQuorum", in: positive)
        let ack = try Layered.optionalInt(ackQuorum, file, "managedLedgerDefaultAckQuorum", in: positive)
        var replication: LedgerReplicationOptions?
        if ensemble != nil || write != nil || ack != nil {
            let e = ensemble ?? 3
            let w = write ?? e
            let options = LedgerReplicationOptions(ensembleSize: e, writeQuorumSize: w, ackQuorumSize: ack ?? min(2, w))
            guard options.isValid else {
                throw StartupError("ensemble size \(e) >= write quorum \(w) >= ack quorum \(options.ackQuorumSize) >= 1 does not hold (--ensemble-size / --write-quorum / --ack-quorum, managedLedgerDefaultEnsembleSize / WriteQuorum / AckQuorum)")
            }
            replication = options
        }
        let sessionTTL: Int
        if let sessionTtlSeconds {
            sessionTTL = sessionTtlSeconds
        } else if let millis = try Layered.optionalInt(nil, file, "metadataStoreSessionTimeoutMillis", in: 1_000...Int(Int32.max)) {
            sessionTTL = (millis + 999) / 1_000
        } else {
            sessionTTL = 10
        }
        return Settings(
            metadataURL: Self.normalizedMetadataURL(url),
            clusterName: try clusterNameSetting(clusterName, file, default: "magnetar"),
            replication: replication,
            sessionTTLSeconds: sessionTTL,
            replicationGraceSeconds: try Layered.int(replicationGraceSeconds, file, "lostBookieRecoveryDelay", default: 30, in: 0...Int(Int32.max)),
            replicationCheckSeconds: try Layered.int(replicationCheckSeconds, file, "auditorPeriodicBookieCheckInterval", default: 5, in: positive))
    }

    /// Pulsar writes an etcd metadata URL as `etcd:http://host:port[,http://host2:port]`; ours is
    /// `etcd://host:port[/root]`. The first endpoint of Pulsar's form is used.
    static func normalizedMetadataURL(_ url: String) -> String {
        guard url.hasPrefix("etcd:http://") || url.hasPrefix("etcd:https://") else { return url }
        let endpoints = url.dropFirst("etcd:".count).split(separator: ",")
        guard let first = endpoints.first else { return url }
        let authority = first.drop { $0 != "/" }.dropFirst(2)
        return "etcd://\(authority)"
    }

    func run() async throws {
        logging.bootstrap()
        let logger = Logger(label: "magnetar.broker")
        let file = try config.load(known: ListenOptions.knownKeys(ConfigKeys.broker), logger: logger)
        let settings = try settings(file)
        let listening = try listen.resolve(file)
        let managedLedger = try ledgers.resolve(file, into: ManagedLedgerConfiguration())
        // The storage nodes' TLS and credentials: a missing file fails here, before any connection.
        let storageSecurity = try StorageClientSecuritySettings.resolve(file)
        let security = try SecuritySettings.resolve(file)
        let metricsRegistry = MetricsBootstrap.bootstrap()
        let parsedURL: MetadataStoreURL
        do {
            parsedURL = try MetadataStoreURL(parsing: settings.metadataURL)
        } catch {
            throw StartupError("\(error)")
        }
        guard case .etcd(let endpoint, let rootPrefix) = parsedURL else {
            throw StartupError("the metadata store must be etcd (etcd://host:port): brokers of a cluster share their metadata")
        }
        let metadataStore = EtcdMetadataStore(
            endpoint: endpoint, rootPrefix: rootPrefix, sessionTTL: .seconds(Int64(settings.sessionTTLSeconds)), logger: logger)
        try await metadataStore.checkConnection()
        let brokerID = "\(listening.advertisedAddress):\(listening.httpPort)"
        let store = try await ClusterStorage.connect(
            metadata: metadataStore, staticNodes: storageNodes, replication: settings.replication,
            auditInterval: .seconds(settings.replicationCheckSeconds), lostNodeGracePeriod: .seconds(settings.replicationGraceSeconds),
            auditorName: brokerID, security: storageSecurity, logger: logger)
        let listeners = try AdvertisedListenerSettings.resolve(file)
        var identity = BrokerIdentity(
            brokerID: brokerID, pulsarURL: "pulsar://\(listening.advertisedAddress):\(listening.port)",
            httpURL: "http://\(listening.advertisedAddress):\(listening.httpPort)", instance: String(UInt64.random(in: 0...UInt64.max), radix: 36),
            pulsarTLSURL: security.tls?.pulsarURL(advertisedAddress: listening.advertisedAddress),
            httpsURL: security.tls?.httpsURL(advertisedAddress: listening.advertisedAddress))
        if !listeners.listeners.isEmpty { identity.listeners = listeners.listeners }
        var protocols: [String: String] = [:]
        for endpoint in listening.endpoints {
            if let data = try endpoint.advertisedData(listening.settings, listening.bindAddress, listening.advertisedAddress) {
                protocols[endpoint.name] = data
            }
        }
        if !protocols.isEmpty { identity.protocols = protocols }
        if let internalListener = listeners.internalName.flatMap({ listeners.listeners[$0] }) {
            // Other brokers redirect clients that name no listener to the internal one.
            identity.pulsarURL = internalListener.pulsarURL ?? identity.pulsarURL
            identity.pulsarTLSURL = internalListener.pulsarTLSURL
        }
        let cluster = ClusterCoordinator(identity: identity, metadata: metadataStore, logger: logger)
        var configuration = BrokerConfiguration()
        configuration.clusterName = settings.clusterName
        configuration.advertisedPulsarURL = identity.pulsarURL
        configuration.advertisedHTTPURL = identity.httpURL
        configuration.advertisedPulsarTLSURL = identity.pulsarTLSURL
        configuration.advertisedHTTPSURL = identity.httpsURL
        configuration.managedLedger = managedLedger
        configuration.managedLedger.replication = settings.replication
        configuration.authorization = security.authorization
        try QuotaSettings.apply(file, to: &configuration)
        configuration.transactionCoordinatorEnabled = try TransactionSettings.enabled(file, default: false)
        try OffloadConfiguration.apply(file, to: &configuration)
        configuration.advertisedListeners = listeners.listeners
        configuration.internalListenerName = listeners.internalName
        logger.info("broker.starting", metadata: ["metadata": "\(settings.metadataURL)"])
        var wiring = BrokerWiring(
            role: "broker", configuration: configuration, store: store.ledgerStore, metadata: metadataStore,
            cluster: cluster, bindAddress: listening.bindAddress, port: listening.port, httpPort: listening.httpPort,
            advertisedAddress: listening.advertisedAddress, metricsRegistry: metricsRegistry)
        wiring.listener = listening.listener
        wiring.endpoints = listening.endpoints
        wiring.settings = listening.settings
        wiring.extraServices = [store.auditor]
        wiring.authentication = security.authentication
        wiring.authenticateMetricsEndpoint = security.authenticateMetricsEndpoint
        wiring.tls = security.tls
        wiring.replication = try GeoReplicationConfiguration.settings(file)
        let auditor = store.auditor
        wiring.afterBootstrap = { broker in
            broker.setReplicationStatusSource { ClusterStorage.report(auditor.statistics) }
            try await broker.registerInCluster()
        }
        try await BrokerProcess.run(wiring, logger: logger)
    }
}

/// Prometheus as the swift-metrics backend, with the broker's latency buckets.
enum MetricsBootstrap {
    static func bootstrap() -> PrometheusCollectorRegistry {
        let metricsRegistry = PrometheusCollectorRegistry()
        var metricsFactory = PrometheusMetricsFactory(registry: metricsRegistry)
        for label in Standalone.latencyTimerLabels {
            metricsFactory.durationHistogramBuckets[label] = Standalone.latencyBuckets
        }
        MetricsSystem.bootstrap(metricsFactory)
        return metricsRegistry
    }
}
