import ArgumentParser
import BrokerCore
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

/// `magnetar broker`: a stateless broker of a cluster. Ledgers live on storage nodes, metadata
/// (and bundle ownership) in etcd; any broker can take over the topics of one that died.
struct BrokerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "broker",
        abstract: "Run a cluster broker: metadata in etcd, ledgers on storage nodes (see scripts/local-cluster).")

    @Option(help: "Where the cluster's metadata lives: etcd://host:port[/root].")
    var metadata: String

    @OptionGroup var listen: ListenOptions

    @Option(help: "Name of the cluster (admin API paths, producer names).")
    var clusterName = "magnetar"

    @Option(help: "Storage nodes as host:port,host:port,... (default: the nodes registered in the metadata store).")
    var storageNodes: String?

    @Option(help: "Ensemble size E of new ledgers (default: 3, or fewer when fewer storage nodes exist).")
    var ensembleSize: Int?

    @Option(help: "Write quorum Qw of new ledgers (default: E).")
    var writeQuorum: Int?

    @Option(help: "Ack quorum Qa of new ledgers (default: 2, or fewer when E is smaller).")
    var ackQuorum: Int?

    @Option(help: "Seconds the metadata store keeps this broker's registration and bundle ownership after it stops answering.")
    var sessionTtlSeconds = 10

    @Option(help: "Seconds a storage node may be gone before the re-replication auditor moves its ledgers' copies elsewhere.")
    var replicationGraceSeconds = 30

    @Option(help: "Seconds between re-replication audits (only the elected auditor broker audits).")
    var replicationCheckSeconds = 5

    @Option(help: "Roll a topic's ledger after this many entries.")
    var maxEntriesPerLedger: Int64 = 50_000

    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        guard sessionTtlSeconds >= 1 else { throw ValidationError("--session-ttl-seconds must be at least 1") }
        guard replicationGraceSeconds >= 0, replicationCheckSeconds >= 1 else {
            throw ValidationError("--replication-grace-seconds must be >= 0 and --replication-check-seconds >= 1")
        }
        guard maxEntriesPerLedger > 0 else { throw ValidationError("--max-entries-per-ledger must be positive") }
        if let replication = replicationOptions, !replication.isValid {
            throw ValidationError("need ensemble size >= write quorum >= ack quorum >= 1")
        }
    }

    /// The quorum flags as given (nil: the store picks 3/3/2, or what the live nodes allow).
    var replicationOptions: LedgerReplicationOptions? {
        guard ensembleSize != nil || writeQuorum != nil || ackQuorum != nil else { return nil }
        let ensemble = ensembleSize ?? 3
        let write = writeQuorum ?? ensemble
        return LedgerReplicationOptions(ensembleSize: ensemble, writeQuorumSize: write, ackQuorumSize: ackQuorum ?? min(2, write))
    }

    func run() async throws {
        logging.bootstrap()
        let logger = Logger(label: "magnetar.broker")
        let metricsRegistry = MetricsBootstrap.bootstrap()
        guard case .etcd(let endpoint, let rootPrefix) = try MetadataStoreURL(parsing: metadata) else {
            throw ValidationError("--metadata must name etcd (etcd://host:port): brokers of a cluster share their metadata")
        }
        let metadataStore = EtcdMetadataStore(
            endpoint: endpoint, rootPrefix: rootPrefix, sessionTTL: .seconds(Int64(sessionTtlSeconds)), logger: logger)
        try await metadataStore.checkConnection()
        let brokerID = "\(listen.advertisedAddress):\(listen.httpPort)"
        let store = try await ClusterStorage.connect(
            metadata: metadataStore, staticNodes: storageNodes, replication: replicationOptions,
            auditInterval: .seconds(replicationCheckSeconds), lostNodeGracePeriod: .seconds(replicationGraceSeconds),
            auditorName: brokerID, logger: logger)
        let identity = BrokerIdentity(
            brokerID: brokerID, pulsarURL: "pulsar://\(listen.advertisedAddress):\(listen.port)",
            httpURL: "http://\(listen.advertisedAddress):\(listen.httpPort)", instance: String(UInt64.random(in: 0...UInt64.max), radix: 36))
        let cluster = ClusterCoordinator(identity: identity, metadata: metadataStore, logger: logger)
        var configuration = BrokerConfiguration()
        configuration.clusterName = clusterName
        configuration.advertisedPulsarURL = identity.pulsarURL
        configuration.advertisedHTTPURL = identity.httpURL
        configuration.managedLedger.maxEntriesPerLedger = maxEntriesPerLedger
        configuration.managedLedger.replication = replicationOptions
        let eventLoopGroup = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let broker = BrokerService(
            configuration: configuration, store: store.ledgerStore, metadata: metadataStore,
            eventLoopGroup: eventLoopGroup, cluster: cluster, logger: logger)
        try await broker.bootstrap()
        let auditor = store.auditor
        broker.setReplicationStatusSource { ClusterStorage.report(auditor.statistics) }
        try await broker.startClusterTasks()
        broker.startPolicyTask()
        logger.info("broker.started", metadata: [
            "pulsar-url": "\(identity.pulsarURL)", "http-url": "\(identity.httpURL)", "metadata": "\(metadata)",
        ])
        do {
            try await BrokerProcess.serve(
                broker: broker, bindAddress: listen.bindAddress, port: listen.port, httpPort: listen.httpPort,
                advertisedAddress: listen.advertisedAddress, listener: try listen.listenerSettings(),
                metricsRegistry: metricsRegistry, eventLoopGroup: eventLoopGroup,
                extraServices: [store.auditor], logger: logger)
        } catch {
            logger.error("broker.failed", metadata: ["error": "\(error)"])
        }
        await broker.shutdown()
        await metadataStore.close()
        try? await eventLoopGroup.shutdownGracefully()
        logger.info("broker.stopped")
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
