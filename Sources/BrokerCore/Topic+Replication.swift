import ManagedLedger
import Metadata
import NIOCore

/// A topic's geo-replicator toward one remote cluster: reads the topic through its durable
/// subscription `pulsar.repl.<remote>` and forwards what it reads to the remote cluster's brokers
/// (the GeoReplication module implements it). Lives on its topic's event loop.
public protocol TopicReplicator: AnyObject {
    var remoteCluster: String { get }
    /// True once it stopped by itself (its consumer was closed, its remote producer refused for
    /// good): the topic's next policy pass makes a new one.
    var isStopped: Bool { get }
    /// Stops forwarding and closes the remote producer; the cursor keeps its position.
    func stop()
    func statistics() -> ReplicatorStatistics
}

/// Makes a topic's replicators (set by the server once per broker).
public protocol ReplicatorFactory: Sendable {
    /// Called on the topic's event loop.
    func makeReplicator(for topic: Topic, remoteCluster: String) -> any TopicReplicator
}

/// One replicator's state, as topic stats report it under `replication.<cluster>`.
public struct ReplicatorStatistics: Sendable, Equatable {
    public var messageRateOut: Double = 0
    public var byteRateOut: Double = 0
    public var messagesOut: Int64 = 0
    public var bytesOut: Int64 = 0
    /// Entries the cursor has not forwarded yet.
    public var backlogEntries: Int64 = 0
    public var connected = false
    /// Seconds between the publish time of the oldest entry not yet forwarded and now (0: caught up).
    public var delaySeconds: Int64 = 0
    /// The remote broker address the producer is connected to ("" while disconnected).
    public var outboundConnection = ""
    public var outboundConnectedSinceMs: Int64 = 0
    public init() {}
}

/// A topic's own policies (`/topic-policies/<path>`): Pulsar's topic-level replication clusters.
public struct TopicPolicyRecord: Codable, Sendable, Equatable {
    public var replicationClusters: [String]?
    public init(replicationClusters: [String]? = nil) { self.replicationClusters = replicationClusters }

    enum CodingKeys: String, CodingKey {
        case replicationClusters = "replication_clusters"
    }
}

public enum Replication {
    /// Subscription names of replicator cursors: `pulsar.repl.<remote cluster>` (Pulsar's
    /// `replicatorPrefix`). Clients may not subscribe with such a name.
    public static let cursorPrefix = "pulsar.repl."

    public static func cursorName(remoteCluster: String) -> String { cursorPrefix + remoteCluster }

    public static func isReplicatorCursor(_ subscription: String) -> Bool { subscription.hasPrefix(cursorPrefix) }
}

extension Topic {
    /// The clusters this topic replicates to, from its own policy if set, else its namespace's;
    /// empty unless the local cluster is among them.
    func remoteReplicationClusters(_ policies: EffectivePolicies) -> Set<String> {
        let clusters = topicReplicationClusters ?? policies.replicationClusters
        guard clusters.contains(localCluster) else { return [] }
        return Set(clusters).subtracting([localCluster])
    }

    /// Starts a replicator for each remote cluster the policies name and that has none, replaces
    /// the ones that stopped, and removes those no longer named (with their cursors, as Pulsar
    /// does). Part of the policy pass, on the topic's loop.
    func updateReplicators(_ policies: EffectivePolicies) {
        eventLoop.preconditionInEventLoop()
        guard !isUnloaded else { return }
        let wanted = replicatorFactory == nil ? [] : remoteReplicationClusters(policies)
        for (remote, replicator) in replicators where !wanted.contains(remote) {
            replicator.stop()
            replicators[remote] = nil
            let cursor = Replication.cursorName(remoteCluster: remote)
            if subscriptions[cursor] != nil {
                unsubscribe(subscription: cursor, key: ConsumerKey(connectionID: 0, consumerID: 0)).whenFailure { [logger] error in
                    logger.warning("replicator.cursor-delete-failed", metadata: ["remote.cluster": "\(remote)", "error": "\(error)"])
                }
            }
            logger.info("replicator.removed", metadata: ["remote.cluster": "\(remote)"])
        }
        guard let factory = replicatorFactory else { return }
        for remote in wanted.sorted() where replicators[remote]?.isStopped ?? true {
            replicators[remote] = factory.makeReplicator(for: self, remoteCluster: remote)
        }
    }

    func stopReplicators() {
        for replicator in replicators.values { replicator.stop() }
        replicators.removeAll()
    }

    /// Each replicator's statistics, by remote cluster.
    func replicationStatistics() -> [String: ReplicatorStatistics] {
        replicators.mapValues { $0.statistics() }
    }

    /// Reads the topic's own replication clusters (at load).
    func loadTopicPolicies() async throws {
        guard let stored = try await metadata.get(MetadataKeys.topicPolicies(name.metadataPath)) else { return }
        let record = try Namespaces.decodeRecord(TopicPolicyRecord.self, stored.value, key: MetadataKeys.topicPolicies(name.metadataPath))
        try await eventLoop.submit { self.topicReplicationClusters = record.replicationClusters }.get()
    }

    /// Sets (nil: removes) the topic's own replication clusters, applied at once.
    public func setTopicReplicationClusters(_ clusters: [String]?) {
        eventLoop.preconditionInEventLoop()
        topicReplicationClusters = clusters
        updateReplicators(policies)
    }

    /// The entry at `position`, the oldest a replicator has not forwarded, for its delay.
    public func publishTimeOfEntry(after position: Position) -> Int64? {
        eventLoop.preconditionInEventLoop()
        guard let next = managedLedger.next(after: position), managedLedger.canReadNow(next),
              let entry = try? managedLedger.read(next)
        else { return nil }
        return entry.attributes.publishTimeMs
    }

    /// The backlog of a subscription (a replicator's cursor), in entries.
    public func cursorBacklog(_ subscription: String) -> (entries: Int64, markDelete: Position)? {
        eventLoop.preconditionInEventLoop()
        guard let subscription = subscriptions[subscription] else { return nil }
        return (subscription.cursor.backlogEntries, subscription.cursor.markDelete)
    }

    /// The name of the local cluster this topic is served in.
    public var clusterName: String { localCluster }
}

extension BrokerService {
    /// A topic's own replication clusters (nil: its namespace's apply); 404 if the topic does not exist.
    public func topicReplicationClusters(_ name: TopicName) async throws -> [String]? {
        guard try await topicExists(name) else { throw BrokerError.topicNotFound(name) }
        guard let stored = try await metadata.get(MetadataKeys.topicPolicies(name.metadataPath)) else { return nil }
        return try Namespaces.decodeRecord(TopicPolicyRecord.self, stored.value, key: MetadataKeys.topicPolicies(name.metadataPath))
            .replicationClusters
    }

    /// Sets (nil: removes) a topic's own replication clusters; validated like a namespace's. A
    /// partitioned topic's apply to each partition. Applied at once where the topic is loaded here,
    /// else when it next loads.
    public func setTopicReplicationClusters(_ name: TopicName, _ clusters: [String]?) async throws {
        guard try await topicExists(name) else { throw BrokerError.topicNotFound(name) }
        var validated = clusters
        if let clusters {
            validated = try await self.clusters.validateReplicationClusters(clusters, tenant: name.tenant, namespaces: namespaces)
        }
        let partitions = name.partitionIndex < 0 ? try await partitionCount(name) : 0
        let names = partitions > 0
            ? (0..<partitions).map { index in
                var partition = name
                partition.localName = "\(name.localName)-partition-\(index)"
                return partition
            } : [name]
        for topicName in names + (partitions > 0 ? [name] : []) {
            let key = MetadataKeys.topicPolicies(topicName.metadataPath)
            if let validated {
                try await metadata.put(key, value: Namespaces.encodeRecord(TopicPolicyRecord(replicationClusters: validated)), expectedVersion: nil)
            } else {
                try await metadata.delete(key, expectedVersion: nil)
            }
        }
        let applied = validated
        for topicName in names {
            if let topic = loadedTopic(topicName) {
                try await topic.eventLoop.submit { topic.setTopicReplicationClusters(applied) }.get()
            }
        }
        logger.info("topic.replication-clusters-set", metadata: ["topic": "\(name)", "clusters": "\(validated ?? [])"])
    }
}
