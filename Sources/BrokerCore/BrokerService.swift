import Foundation
import LedgerStorage
import Logging
import Metadata
import NIOConcurrencyHelpers
import NIOCore

/// The metadata record of a partitioned topic.
public struct PartitionedTopicRecord: Codable, Sendable {
    public var partitions: Int
    public init(partitions: Int) { self.partitions = partitions }
}

/// Broker-wide settings of the core.
public struct BrokerConfiguration: Sendable {
    /// Cluster name; generated producer names start with it.
    public var clusterName = "standalone"
    public var managedLedger = ManagedLedgerConfiguration()
    public init() {}
}

/// The broker's core: the registry of loaded topics, namespaces and partition metadata.
///
/// Thread-safe (a lock guards the registry); each `Topic` it hands out belongs to one event loop.
/// Lifecycle: created by the server with a `LedgerStore` and a `MetadataStore`; `shutdown()` stops it.
public final class BrokerService: Sendable {
    public let configuration: BrokerConfiguration
    public let store: any LedgerStore
    public let metadata: any MetadataStore
    let eventLoopGroup: any EventLoopGroup
    let logger: Logger
    private let topics = NIOLockedValueBox<[TopicName: EventLoopFuture<Topic>]>([:])
    private let loaded = NIOLockedValueBox<[TopicName: Topic]>([:])
    private let producerCounter = NIOLockedValueBox<Int64>(0)
    private let instanceID: String

    public init(
        configuration: BrokerConfiguration, store: any LedgerStore, metadata: any MetadataStore,
        eventLoopGroup: any EventLoopGroup, logger: Logger
    ) {
        self.configuration = configuration
        self.store = store
        self.metadata = metadata
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.instanceID = String(UInt32.random(in: 0...UInt32.max), radix: 36)
    }

    static func namespaceKey(_ namespace: String) -> String { "/namespaces/\(namespace)" }
    static func partitionedTopicKey(_ name: TopicName) -> String { "/partitioned-topics/\(name.metadataPath)" }
    static func managedLedgerKey(_ name: TopicName) -> String { "/managed-ledgers/\(name.metadataPath)" }

    /// Creates what exists from the start: the `public` tenant and its `default` namespace.
    public func bootstrap() async throws {
        if try await metadata.get(Self.tenantKey("public")) == nil {
            try await metadata.put(Self.tenantKey("public"), value: Array("{}".utf8), expectedVersion: nil)
        }
        if try await metadata.get(Self.namespaceKey("public/default")) == nil {
            try await metadata.put(Self.namespaceKey("public/default"), value: Array("{}".utf8), expectedVersion: nil)
        }
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
        guard name.partitionIndex < 0, let value = try await metadata.get(Self.partitionedTopicKey(name)) else { return 0 }
        return try JSONDecoder().decode(PartitionedTopicRecord.self, from: Data(value.value)).partitions
    }

    /// Fails unless the topic's namespace exists and its domain is served.
    public func checkTopicAllowed(_ name: TopicName) async throws {
        guard name.domain == .persistent else {
            throw BrokerError(.notAllowed, "non-persistent topics are not supported yet: use persistent://")
        }
        guard try await metadata.get(Self.namespaceKey(name.namespaceName)) != nil else {
            throw BrokerError(.topicNotFound, "namespace '\(name.namespaceName)' does not exist: create it first")
        }
    }

    /// Persistent topics of a namespace that hold or held data.
    public func topics(inNamespace namespace: String) async throws -> [String] {
        let prefix = "/managed-ledgers/\(namespace)/persistent/"
        return try await metadata.list(prefix: prefix).map { "persistent://\(namespace)/\($0.dropFirst(prefix.count))" }
    }

    /// The loaded topic, loading (and creating) it on first use. Concurrent callers share one load.
    public func topic(_ name: TopicName) -> EventLoopFuture<Topic> {
        let loop = eventLoopGroup.next()
        let (future, promise) = topics.withLockedValue { topics -> (EventLoopFuture<Topic>, EventLoopPromise<Topic>?) in
            if let existing = topics[name] { return (existing, nil) }
            let promise = loop.makePromise(of: Topic.self)
            topics[name] = promise.futureResult
            return (promise.futureResult, promise)
        }
        guard let promise else { return future }
        let store = self.store
        let metadata = self.metadata
        let configuration = self.configuration.managedLedger
        let logger = self.logger
        let loading = loop.makeFutureWithTask { () async throws -> Topic in
            try await self.checkTopicAllowed(name)
            let managedLedger = try await ManagedLedger.open(
                name: "\(name)", metadataKey: Self.managedLedgerKey(name), eventLoop: loop, store: store,
                metadata: metadata, configuration: configuration, logger: logger)
            let topic = Topic(
                name: name, eventLoop: loop, managedLedger: managedLedger, store: store, metadata: metadata, logger: logger)
            let prefix = Topic.cursorPrefix(name)
            for key in try await metadata.list(prefix: prefix) {
                let subscription = String(key.dropFirst(prefix.count))
                if let cursor = try await Cursor.open(
                    name: subscription, managedLedger: managedLedger, store: store, metadata: metadata,
                    metadataKey: key, logger: logger)
                {
                    topic.attachLoadedSubscription(cursor)
                }
            }
            logger.info("topic.loaded", metadata: [
                "topic": "\(name)", "subscriptions": "\(topic.subscriptionNames.count)",
                "entries": "\(managedLedger.numberOfEntries)",
            ])
            return topic
        }
        loading.whenComplete { result in
            switch result {
            case .success(let topic):
                self.loaded.withLockedValue { $0[name] = topic }
                promise.succeed(topic)
            case .failure(let error):
                // Forget the failed load so the next request tries again.
                _ = self.topics.withLockedValue { $0.removeValue(forKey: name) }
                logger.warning("topic.load-failed", metadata: ["topic": "\(name)", "error": "\(error)"])
                promise.fail((error as? BrokerError) ?? BrokerError(.serviceNotReady, "topic \(name) failed to load: \(error)"))
            }
        }
        return future
    }

    /// Topics loaded so far.
    public var loadedTopics: [Topic] {
        loaded.withLockedValue { Array($0.values) }
    }

    /// The topic if it is loaded (admin operations must not create topics by looking at them).
    func loadedTopic(_ name: TopicName) -> Topic? {
        loaded.withLockedValue { $0[name] }
    }

    /// Forgets a topic after an admin delete: the next `topic(_:)` loads it anew.
    func forgetTopic(_ name: TopicName) {
        _ = topics.withLockedValue { $0.removeValue(forKey: name) }
        _ = loaded.withLockedValue { $0.removeValue(forKey: name) }
    }

    public func shutdown() {
        store.close()
    }
}
