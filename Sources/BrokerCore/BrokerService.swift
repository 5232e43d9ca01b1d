import ManagedLedger
import Foundation
import LedgerStorage
import Logging
import Metadata
import NIOConcurrencyHelpers
import NIOCore
import Schemas
import TieredStorage

/// The metadata record of a partitioned topic.
public struct PartitionedTopicRecord: Codable, Sendable, Equatable {
    public var partitions: Int
    public init(partitions: Int) { self.partitions = partitions }
}

/// Broker-wide settings of the core.
public struct BrokerConfiguration: Sendable {
    /// Cluster name; generated producer names start with it.
    public var clusterName = "standalone"
    /// How clients and other brokers reach this broker (lookup answers, admin API).
    public var advertisedPulsarURL = "pulsar://localhost:6650"
    public var advertisedHTTPURL = "http://localhost:8080"
    /// `pulsar+ssl://...` and `https://...` when the broker has TLS listeners.
    public var advertisedPulsarTLSURL: String?
    public var advertisedHTTPSURL: String?
    /// Pulsar's `advertisedListeners` by name, and `internalListenerName` (the listener whose
    /// addresses a LOOKUP without a listener name is answered with; nil: the advertised address).
    public var advertisedListeners: [String: AdvertisedListener] = [:]
    public var internalListenerName: String?
    public var managedLedger = ManagedLedgerConfiguration()
    /// `authorizationEnabled`, `superUserRoles`.
    public var authorization = AuthorizationSettings()
    /// Pulsar's `maxTopicsPerNamespace` (partitions counted; a namespace's own policy overrides it)
    /// and `maxNamespacesPerTenant`; 0: unlimited.
    public var maxTopicsPerNamespace = 0
    public var maxNamespacesPerTenant = 0
    /// Pulsar's `schemaCompatibilityStrategy` (FULL), `isAllowAutoUpdateSchemaEnabled` (true) and
    /// `isSchemaValidationEnforced` (false): what a namespace that sets nothing gets.
    public var schemaCompatibilityStrategy: SchemaCompatibilityStrategy = .full
    public var isAllowAutoUpdateSchemaEnabled = true
    public var isSchemaValidationEnforced = false
    /// How compaction reads the entries (the Pulsar endpoint's codec); nil: topics cannot be compacted.
    public var compactionCodec: (any CompactionCodec)?
    /// Pulsar's `transactionCoordinatorEnabled`: the server runs a transaction coordinator.
    public var transactionCoordinatorEnabled = false
    /// How topics write transactions' commit and abort markers (the Pulsar edge's metadata).
    public var transactionMarkerCodec: (any TransactionMarkerCodec)?
    /// Pulsar's `brokerServiceCompactionMonitorIntervalInSeconds` (60): how often a topic's backlog is
    /// checked against its `compactionThreshold`; `brokerServiceCompactionThresholdInBytes` (0: off):
    /// the threshold of namespaces that set none.
    public var compactionMonitorIntervalSeconds: Int64 = 60
    public var compactionThresholdBytes: Int64 = 0
    /// Tiered storage: where and when topics offload, unless their namespace says otherwise.
    public var offload = OffloadSettings()
    public init() {}
}

/// The broker's offload configuration: `managedLedgerOffloadDriver` and its keys (the target; nil:
/// no tier), `managedLedgerOffloadAutoTriggerSizeThresholdBytes` (-1: never by size) and
/// `managedLedgerOffloadDeletionLagMs` (4 hours).
public struct OffloadSettings: Sendable, Equatable {
    public var target: OffloadTarget?
    public var thresholdBytes: Int64 = -1
    public var deletionLagMs: Int64 = ManagedLedger.defaultOffloadDeletionLagMs
    public init() {}
}

/// The broker's core: loads the topics it serves (kept in its `TopicRegistry`, after the cluster's
/// ownership check), namespaces and their policies, partition metadata, admin operations.
///
/// Thread-safe (locks); each `Topic` it hands out belongs to one event loop.
/// Lifecycle: created by the server with a `LedgerClient` and a `MetadataStore`; `shutdown()` stops it.
public final class BrokerService: Sendable {
    public let configuration: BrokerConfiguration
    public let store: any LedgerClient
    public let metadata: any MetadataStore
    let eventLoopGroup: any EventLoopGroup
    let logger: Logger
    let registry = TopicRegistry()
    /// The connections' WATCH_TOPIC_LIST watches.
    public let topicListWatchers = TopicListWatchers()
    /// Tenants, namespaces and their policies.
    public let namespaces: Namespaces
    /// Who may do what: every endpoint and the admin API ask it.
    public let authorizer: Authorizer
    /// The topics' schemas.
    public let schemas: SchemaRegistry
    /// The clusters this one knows (geo-replication).
    public let clusters: Clusters
    /// Makes topics' geo-replicators; nil until the server sets it (no replication then).
    public let replicatorFactory = NIOLockedValueBox<(any ReplicatorFactory)?>(nil)
    /// The transaction coordinator (`transactionCoordinatorEnabled`), once the server started it.
    public let transactionCoordinator = NIOLockedValueBox<TransactionCoordinator?>(nil)
    /// Ends transactions on other brokers' topics (a cluster), once the server installed it.
    public let remoteTransactionEnds = NIOLockedValueBox<(any RemoteTransactionEnds)?>(nil)
    /// Applies offsets committed in transactions (the Kafka endpoint's group offsets), once installed.
    public let transactionOffsetCommitter = NIOLockedValueBox<(any TransactionOffsetCommitter)?>(nil)
    private let producerCounter = NIOLockedValueBox<Int64>(0)
    private let instanceID: String
    /// Membership and bundle ownership when this broker is one of a cluster; nil in standalone
    /// (then this broker owns every topic).
    public let cluster: ClusterCoordinator?
    let replicationStatusSource = NIOLockedValueBox<(@Sendable () -> ReplicationStatusReport)?>(nil)

    public init(
        configuration: BrokerConfiguration, store: any LedgerClient, metadata: any MetadataStore,
        eventLoopGroup: any EventLoopGroup, cluster: ClusterCoordinator? = nil, logger: Logger
    ) {
        self.cluster = cluster
        self.configuration = configuration
        self.store = store
        self.metadata = metadata
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.instanceID = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let registry = self.registry
        self.namespaces = Namespaces(metadata: metadata, maxNamespacesPerTenant: configuration.maxNamespacesPerTenant, logger: logger) { tenant, namespace in
            registry.loadedTopics.contains { $0.name.tenant == tenant && $0.name.namespace == namespace }
        }
        self.authorizer = Authorizer(settings: configuration.authorization, namespaces: namespaces)
        self.schemas = SchemaRegistry(metadata: metadata)
        self.clusters = Clusters(metadata: metadata, localCluster: configuration.clusterName)
        namespaces.policiesChanged.withLockedValue { hook in
            hook = { namespace, policies in
                for topic in registry.loadedTopics where topic.name.namespaceName == namespace {
                    topic.eventLoop.execute { topic.enforce(policies) }
                }
            }
        }
    }


    /// Creates what exists from the start: the `public` tenant and its `default` namespace.
    public func bootstrap() async throws {
        try await namespaces.bootstrap(localCluster: configuration.clusterName)
        try await clusters.bootstrap(local: ClusterData(
            serviceUrl: configuration.advertisedHTTPURL, serviceUrlTls: configuration.advertisedHTTPSURL,
            brokerServiceUrl: configuration.advertisedPulsarURL, brokerServiceUrlTls: configuration.advertisedPulsarTLSURL))
    }

    /// A unique producer name: `<cluster>-<broker instance>-<n>`.
    public func generateProducerName() -> String {
        let n = producerCounter.withLockedValue { value -> Int64 in
            value += 1
            return value
        }
        return "\(configuration.clusterName)-\(instanceID)-\(n)"
    }

    /// Number of partitions of `name` (0 for a non-partitioned topic).
    /// The record is JSON `{"partitions": N}` at `/partitioned-topics/<tenant>/<ns>/<domain>/<topic>`.
    public func partitionCount(_ name: TopicName) async throws -> Int {
        guard name.partitionIndex < 0, let value = try await metadata.get(MetadataKeys.partitionedTopic(name.metadataPath)) else { return 0 }
        return try JSONDecoder().decode(PartitionedTopicRecord.self, from: Data(value.value)).partitions
    }

    /// The policies of a namespace as the runtime applies them (cached briefly).
    func policies(namespace: String) async throws -> EffectivePolicies {
        try await namespaces.effectivePolicies(namespace)
    }

    /// Whether a persistent topic exists: it has a managed ledger, is partitioned, or is a partition
    /// of a partitioned topic.
    public func topicExists(_ name: TopicName) async throws -> Bool {
        if name.domain == .nonPersistent { return true }
        if try await metadata.get(MetadataKeys.managedLedger(name.metadataPath)) != nil { return true }
        if try await metadata.get(MetadataKeys.partitionedTopic(name.metadataPath)) != nil { return true }
        if name.partitionIndex >= 0, let range = name.localName.range(of: "-partition-", options: .backwards) {
            var base = name
            base.localName = String(name.localName[..<range.lowerBound])
            return try await partitionCount(base) > name.partitionIndex
        }
        return false
    }

    /// Fails unless the topic's namespace exists and the topic exists or may be created on first use
    /// (automatic creation on, and room under `maxTopicsPerNamespace`: `NotAllowedError` otherwise, as in Pulsar).
    public func checkTopicAllowed(_ name: TopicName) async throws {
        let policies = try await policies(namespace: name.namespaceName)
        let limit = topicLimit(policies)
        guard !policies.allowAutoTopicCreation || limit > 0, try await !topicExists(name) else { return }
        if !policies.allowAutoTopicCreation {
            throw BrokerError(.topicNotFound, "topic \(name) does not exist and automatic topic creation is off in its namespace")
        }
        let adding = name.partitionIndex < 0 && policies.autoCreatePartitions > 0 ? policies.autoCreatePartitions : 1
        try await checkTopicLimit(name.namespaceName, adding: adding, limit: limit, code: .notAllowed)
    }

    /// Creates a persistent topic (its managed-ledger record, no ledger yet) without loading it, as
    /// the namespace's auto-creation policy allows: a Kafka Metadata request that auto-creates comes
    /// over a bootstrap connection, and the producer's own connection loads the topic on its loop.
    public func createTopicRecord(_ name: TopicName) async throws {
        guard name.domain == .persistent, loadedTopic(name) == nil else { return }
        try await checkTopicAllowed(name)
        let key = MetadataKeys.managedLedger(name.metadataPath)
        guard try await metadata.get(key) == nil else { return }
        do {
            _ = try await metadata.put(key, value: Array(#"{"ledgers":[]}"#.utf8), expectedVersion: -1)
            logger.info("topic.created", metadata: ["topic": "\(name)"])
        } catch MetadataStoreError.badVersion {
            // Created meanwhile by another request.
        }
    }

    /// The namespace's `maxTopicsPerNamespace`, else the broker's; 0: unlimited.
    func topicLimit(_ policies: EffectivePolicies) -> Int {
        policies.maxTopicsPerNamespace > 0 ? policies.maxTopicsPerNamespace : configuration.maxTopicsPerNamespace
    }

    /// Fails with `code` if `adding` more topics would put the namespace over `limit`.
    func checkTopicLimit(_ namespace: String, adding: Int, limit: Int, code: BrokerError.Code) async throws {
        guard limit > 0 else { return }
        let count = try await persistentTopicCount(inNamespace: namespace)
        guard count + adding <= limit else {
            throw BrokerError(
                code, "Exceed maximum number of topics in namespace \(namespace): it has \(count), the limit is \(limit) (maxTopicsPerNamespace)")
        }
    }

    /// Persistent topics of a namespace as Pulsar counts them: each partition of a partitioned
    /// topic, and each non-partitioned topic.
    func persistentTopicCount(inNamespace namespace: String) async throws -> Int {
        let partitionedPrefix = MetadataKeys.partitionedTopics(inNamespace: namespace, domain: TopicName.Domain.persistent.rawValue)
        var partitioned: [String: Int] = [:]
        for key in try await metadata.list(prefix: partitionedPrefix) {
            guard let stored = try await metadata.get(key),
                  let record = try? JSONDecoder().decode(PartitionedTopicRecord.self, from: Data(stored.value))
            else { continue }
            partitioned[String(key.dropFirst(partitionedPrefix.count))] = record.partitions
        }
        let ledgerPrefix = MetadataKeys.managedLedgers(inNamespace: namespace, domain: TopicName.Domain.persistent.rawValue)
        var standalone = 0
        for key in try await metadata.list(prefix: ledgerPrefix) {
            let local = key.dropFirst(ledgerPrefix.count)
            if let range = local.range(of: "-partition-", options: .backwards), partitioned[String(local[..<range.lowerBound])] != nil {
                continue
            }
            standalone += 1
        }
        return standalone + partitioned.values.reduce(0, +)
    }

    /// PARTITIONED_METADATA: the number of partitions, creating the topic as partitioned when the
    /// namespace says new topics are partitioned.
    public func partitionMetadata(_ name: TopicName) async throws -> Int {
        if servesTransactionCoordinatorAssign(name) { return name.partitionIndex < 0 ? 1 : 0 }
        try await checkTopicAllowed(name)
        let count = try await partitionCount(name)
        guard count == 0, name.partitionIndex < 0, name.domain == .persistent else { return count }
        let policies = try await policies(namespace: name.namespaceName)
        guard policies.autoCreatePartitions > 0, try await !topicExists(name) else { return 0 }
        let record = Array(try JSONEncoder().encode(PartitionedTopicRecord(partitions: policies.autoCreatePartitions)))
        do {
            try await metadata.put(MetadataKeys.partitionedTopic(name.metadataPath), value: record, expectedVersion: -1)
        } catch MetadataStoreError.badVersion {
            // Created concurrently: read what won.
        }
        return try await partitionCount(name)
    }

    /// Persistent topics of a namespace that hold or held data.
    public func topics(inNamespace namespace: String) async throws -> [String] {
        let prefix = MetadataKeys.managedLedgers(inNamespace: namespace, domain: TopicName.Domain.persistent.rawValue)
        return try await metadata.list(prefix: prefix).map { "persistent://\(namespace)/\($0.dropFirst(prefix.count))" }
    }

    /// The loaded topic, loading (and creating) it on first use. Concurrent callers share one load.
    /// `preferredLoop`: the loop a newly loaded topic runs on (the first client's connection loop, so
    /// its SENDs and receipts need no thread hop); nil: the next loop of the group.
    public func topic(_ name: TopicName, preferredLoop: (any EventLoop)? = nil) -> EventLoopFuture<Topic> {
        let loop = preferredLoop ?? eventLoopGroup.next()
        let logger = self.logger
        return registry.topic(
            name, on: loop,
            load: { try await self.loadTopic(name, on: loop) },
            installed: { topic, policies in
                topic.enforce(policies)
                topic.onManagedLedgerFailure = { [weak self] topic in self?.managedLedgerFailed(topic) }
            },
            failed: { error in
                logger.warning("topic.load-failed", metadata: ["topic": "\(name)", "error": "\(error)"])
                return (error as? BrokerError) ?? BrokerError(.serviceNotReady, "topic \(name) failed to load: \(error)")
            })
    }

    /// Loads a persistent topic on `loop` once this broker owns it: its managed ledger (recovering
    /// the last ledger), its subscriptions' cursors, and, when the namespace deduplicates, the
    /// deduplication state (before any producer can attach: its resends must find it complete).
    private func loadTopic(_ name: TopicName, on loop: any EventLoop) async throws -> (Topic, EffectivePolicies) {
        try await checkTopicAllowed(name)
        try await claimOwnership(of: name)
        let policies = try await self.policies(namespace: name.namespaceName)
        var configuration = self.configuration.managedLedger
        configuration.replication = policies.replication ?? configuration.replication
        let managedLedger = try await ManagedLedger.open(
            name: "\(name)", metadataKey: MetadataKeys.managedLedger(name.metadataPath), eventLoop: loop, store: store,
            metadata: metadata, configuration: configuration, logger: logger)
        let topic = Topic(
            name: name, eventLoop: loop, managedLedger: managedLedger, store: store, metadata: metadata, logger: logger)
        topic.compactionCodec = self.configuration.compactionCodec
        topic.compactionMonitorIntervalMs = self.configuration.compactionMonitorIntervalSeconds.saturatingMultiply(1000)
        topic.compactionThresholdDefault = self.configuration.compactionThresholdBytes
        topic.offloadDefaults = self.configuration.offload
        topic.localCluster = self.configuration.clusterName
        topic.replicatorFactory = replicatorFactory.withLockedValue { $0 }
        try await topic.loadTopicPolicies()
        try await loop.submit { topic.configureOffload(policies) }.get()
        try await topic.loadCompactionRecord()
        try await topic.loadTopicEpoch()
        topic.transactionMarkerCodec = self.configuration.transactionMarkerCodec
        try await topic.loadTransactionBuffer()
        let prefix = MetadataKeys.cursors(ofTopic: name.metadataPath)
        for key in try await metadata.list(prefix: prefix) {
            let subscription = String(key.dropFirst(prefix.count))
            if let cursor = try await Cursor.open(
                name: subscription, managedLedger: managedLedger, store: store, metadata: metadata,
                metadataKey: key, logger: logger)
            {
                topic.attachLoadedSubscription(cursor)
            }
        }
        try await topic.loadTransactionAcks()
        if policies.deduplicationEnabled {
            try await loop.submit { topic.deduplicationRebuilding = true }.get()
            try await topic.rebuildDeduplication()
        }
        logger.info("topic.loaded", metadata: [
            "topic": "\(name)", "subscriptions": "\(topic.subscriptionNames.count)",
            "entries": "\(managedLedger.numberOfEntries)",
        ])
        return (topic, policies)
    }

    /// A persistent or non-persistent topic, by its domain.
    public func servedTopic(_ name: TopicName, preferredLoop: (any EventLoop)? = nil) -> EventLoopFuture<any ServedTopic> {
        switch name.domain {
        case .persistent:
            return topic(name, preferredLoop: preferredLoop).map { $0 as any ServedTopic }
        case .nonPersistent:
            return nonPersistentTopic(name, preferredLoop: preferredLoop).map { $0 as any ServedTopic }
        }
    }

    /// The non-persistent topic, created on first use (nothing to recover).
    public func nonPersistentTopic(_ name: TopicName, preferredLoop: (any EventLoop)? = nil) -> EventLoopFuture<NonPersistentTopic> {
        let loop = preferredLoop ?? eventLoopGroup.next()
        let logger = self.logger
        return loop.makeFutureWithTask {
            try await self.checkTopicAllowed(name)
            try await self.claimOwnership(of: name)
            let (topic, created) = self.registry.nonPersistentTopic(name) { NonPersistentTopic(name: name, eventLoop: loop, logger: logger) }
            if created, let cluster = self.cluster {
                // Other brokers list it too; a failure only hides it from their lists.
                do {
                    try await cluster.announceNonPersistentTopic(name.metadataPath)
                } catch {
                    logger.warning("topic.announce-failed", metadata: ["topic": "\(name)", "error": "\(error)"])
                }
            }
            return topic
        }
    }

    /// Non-persistent topics created so far.
    public var loadedNonPersistentTopics: [NonPersistentTopic] {
        registry.nonPersistentTopics
    }

    /// Topics loaded so far.
    public var loadedTopics: [Topic] {
        registry.loadedTopics
    }

    /// The topic if it is loaded (admin operations must not create topics by looking at them).
    package func loadedTopic(_ name: TopicName) -> Topic? {
        registry.loadedTopic(name)
    }

    /// Forgets a topic after an admin delete: the next `topic(_:)` loads it anew.
    func forgetTopic(_ name: TopicName) {
        registry.forget(name)
    }

    /// Forgets non-persistent topics whose name matches (their consumers are closed).
    func forgetNonPersistentTopics(where matches: (TopicName) -> Bool) {
        let removed = registry.forgetNonPersistentTopics(where: matches)
        if let cluster, !removed.isEmpty {
            let paths = removed.map(\.name.metadataPath)
            Task { await cluster.withdrawNonPersistentTopics(paths) }
        }
        for topic in removed { topic.eventLoop.execute { topic.closeAllClients() } }
    }

    /// Topics per task a policy pass hands to a topic's event loop: one task per topic cost a
    /// wake-up (eventfd write) each, about half of an idle broker's CPU at 20,000 topics; one task
    /// for all of a loop's topics would hold that loop for too long at 100,000.
    static let policyPassTopicsPerTask = 1_000

    /// One policy pass: applies namespace policies (TTL, retention, backlog quota, limits) to every
    /// loaded topic. The broker process runs it once a second (a periodic service).
    public func enforcePolicies() async {
        if topicListWatchers.count > 0 { await reconcileTopicListWatches() }
        var namespacePolicies: [String: EffectivePolicies] = [:]
        var perLoop: [ObjectIdentifier: (loop: any EventLoop, work: [(Topic, EffectivePolicies)])] = [:]
        for topic in loadedTopics {
            let namespace = topic.name.namespaceName
            let policies: EffectivePolicies
            if let known = namespacePolicies[namespace] {
                policies = known
            } else {
                guard let fetched = try? await self.policies(namespace: namespace) else { continue }
                namespacePolicies[namespace] = fetched
                policies = fetched
            }
            perLoop[ObjectIdentifier(topic.eventLoop), default: (topic.eventLoop, [])].work.append((topic, policies))
        }
        for (loop, work) in perLoop.values {
            var start = 0
            while start < work.count {
                let chunk = work[start..<min(start + Self.policyPassTopicsPerTask, work.count)]
                loop.execute {
                    for (topic, policies) in chunk { topic.enforce(policies) }
                }
                start += Self.policyPassTopicsPerTask
            }
        }
    }

    /// Waits until every cursor's acknowledgements are durable, closes the store. The periodic
    /// services have stopped before (they are the first the service group stops).
    public func shutdown() async {
        // Acknowledgements are flushed, for a bounded time: with storage that cannot take a write
        // (too few storage nodes left), a flush never succeeds and the process must still exit
        // (what was not flushed is delivered again after the restart, never lost).
        let topics = loadedTopics
        if !topics.isEmpty {
            let loop = eventLoopGroup.next()
            let done = loop.makePromise(of: Void.self)
            let finished = NIOLockedValueBox(false)
            let finish: @Sendable () -> Void = {
                if finished.withLockedValue({ value in
                    defer { value = true }
                    return !value
                }) { done.succeed() }
            }
            let flushes = topics.map { topic in topic.eventLoop.flatSubmit { topic.flushCursors() } }
            EventLoopFuture.whenAllComplete(flushes, on: loop).whenComplete { _ in finish() }
            let logger = self.logger
            let timeout = loop.scheduleTask(in: Self.shutdownFlushTimeout) {
                logger.warning("broker.cursor-flush-abandoned", metadata: [
                    "topics": "\(topics.count)",
                    "hint": "the storage did not take the subscriptions' last acknowledgements; their messages are delivered again after the restart",
                ])
                finish()
            }
            try? await done.futureResult.get()
            timeout.cancel()
        }
        if let coordinator = transactionCoordinator.withLockedValue({ $0 }) { await coordinator.stop() }
        await store.shutdown()
    }

    /// How long `shutdown` waits for the subscriptions' acknowledgements to be durable.
    static let shutdownFlushTimeout: TimeAmount = .seconds(5)
}
