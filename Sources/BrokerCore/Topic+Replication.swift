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
    /// The topic's replicated-subscription snapshots, made with its first replicator.
    func makeSubscriptionsController(for topic: Topic) -> any ReplicatedSubscriptionsController
}

/// Pulsar's `ReplicatedSubscriptionsController`: snapshot markers that tie a position of this
/// topic to positions of the same topic in the other clusters, and the updates that move a
/// replicated subscription there when it moves here. On the topic's event loop.
public protocol ReplicatedSubscriptionsController: AnyObject {
    /// Each policy pass (about once a second).
    func tick()
    /// A replicated subscription's dispatch passed a marker.
    func subscription(_ name: String, passedMarker entry: Entry, at position: Position)
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
    /// Subscriptions whose position is replicated (`replicate_subscription_state`).
    public var replicatedSubscriptions: [String]?
    public init(replicationClusters: [String]? = nil, replicatedSubscriptions: [String]? = nil) {
        self.replicationClusters = replicationClusters
        self.replicatedSubscriptions = replicatedSubscriptions
    }

    enum CodingKeys: String, CodingKey {
        case replicationClusters = "replication_clusters"
        case replicatedSubscriptions = "replicated_subscriptions"
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
        if replicators.isEmpty {
            subscriptionsController = nil
        } else {
            if subscriptionsController == nil { subscriptionsController = factory.makeSubscriptionsController(for: self) }
            subscriptionsController?.tick()
        }
    }

    func stopReplicators() {
        for replicator in replicators.values { replicator.stop() }
        replicators.removeAll()
        subscriptionsController = nil
    }

    /// What a subscription needs from the topic for geo-replication: replicator cursors see markers,
    /// replicated subscriptions report the ones they pass.
    func installHooks(_ subscription: Subscription) {
        let name = subscription.name
        subscription.deliversMarkers = Replication.isReplicatorCursor(name)
        subscription.isReplicated = replicatedSubscriptions.contains(name)
        subscription.onMarker = { [unowned self] entry, position in
            guard let subscription = self.subscriptions[name], subscription.isReplicated else { return }
            self.subscriptionsController?.subscription(name, passedMarker: entry, at: position)
        }
    }

    /// Marks a subscription replicated, for good (kept in the topic's policy record).
    func markReplicated(_ subscription: Subscription) {
        subscription.isReplicated = true
        replicatedSubscriptions.insert(subscription.name)
        persistTopicPolicies()
    }

    /// Writes the topic's policy record (replication clusters, replicated subscriptions); a failure is logged.
    func persistTopicPolicies() {
        let record = TopicPolicyRecord(
            replicationClusters: topicReplicationClusters,
            replicatedSubscriptions: replicatedSubscriptions.isEmpty ? nil : replicatedSubscriptions.sorted())
        let key = MetadataKeys.topicPolicies(name.metadataPath)
        let metadata = self.metadata
        let logger = self.logger
        Task {
            do {
                try await metadata.put(key, value: Namespaces.encodeRecord(record), expectedVersion: nil)
            } catch {
                logger.warning("topic.policies-write-failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// The replicated subscriptions with their mark-delete positions.
    public var replicatedSubscriptionPositions: [(name: String, markDelete: Position)] {
        eventLoop.preconditionInEventLoop()
        return subscriptions.values.filter(\.isReplicated).map { ($0.name, $0.cursor.markDelete) }
    }

    /// Another cluster's subscription moved: this one moves up to `position` (a cumulative
    /// acknowledgement, never backwards), created there if it does not exist, as Pulsar does.
    public func replicatedSubscriptionUpdated(_ subscriptionName: String, upTo position: Position) {
        eventLoop.preconditionInEventLoop()
        guard !Replication.isReplicatorCursor(subscriptionName), !isUnloaded else { return }
        if let subscription = subscriptions[subscriptionName] {
            if !subscription.isReplicated { markReplicated(subscription) }
            if position > subscription.cursor.markDelete, managedLedger.contains(position) || position < managedLedger.positionBeforeNextEntry {
                subscription.acknowledgeCumulative(upTo: position)
            }
            return
        }
        createSubscriptionIfMissing(subscriptionName).whenSuccess { [self] in
            guard let subscription = subscriptions[subscriptionName] else { return }
            if !subscription.isReplicated { markReplicated(subscription) }
            if position > subscription.cursor.markDelete { subscription.acknowledgeCumulative(upTo: position) }
            logger.info("subscription.created-by-replication", metadata: ["subscription": "\(subscriptionName)"])
        }
    }

    /// Appends a marker entry (`body`: the protocol's bytes); `completion` has its position.
    public func appendMarker(_ body: ByteBuffer, completion: @escaping (Result<Position, BrokerError>) -> Void) {
        eventLoop.preconditionInEventLoop()
        var attributes = EntryAttributes(numMessages: 1, publishTimeMs: managedLedger.clock.nowMs())
        attributes.isMarker = true
        let encoded = Entry.encode(attributes: attributes, bodyLength: body.readableBytes) { $0.writeImmutableBuffer(body) }
        publish(encoded: encoded, attributes: attributes, completion: completion)
    }

    /// The topic's replicators that are connected to their remote now, and all of them.
    public var replicatorStates: (connected: Set<String>, all: Set<String>) {
        eventLoop.preconditionInEventLoop()
        var connected = Set<String>()
        for (remote, replicator) in replicators where replicator.statistics().connected { connected.insert(remote) }
        return (connected, Set(replicators.keys))
    }

    /// The topic's snapshot controller (a replicator hands it the markers that came from its remote).
    public var replicatedSubscriptionsController: (any ReplicatedSubscriptionsController)? { subscriptionsController }

    /// Each replicator's statistics, by remote cluster.
    func replicationStatistics() -> [String: ReplicatorStatistics] {
        replicators.mapValues { $0.statistics() }
    }

    /// Reads the topic's own replication clusters (at load).
    func loadTopicPolicies() async throws {
        guard let stored = try await metadata.get(MetadataKeys.topicPolicies(name.metadataPath)) else { return }
        let record = try Namespaces.decodeRecord(TopicPolicyRecord.self, stored.value, key: MetadataKeys.topicPolicies(name.metadataPath))
        try await eventLoop.submit {
            self.topicReplicationClusters = record.replicationClusters
            self.replicatedSubscriptions = Set(record.replicatedSubscriptions ?? [])
        }.get()
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
            var record = TopicPolicyRecord()
            if let stored = try await metadata.get(key) {
                record = try Namespaces.decodeRecord(TopicPolicyRecord.self, stored.value, key: key)
            }
            record.replicationClusters = validated
            try await metadata.put(key, value: Namespaces.encodeRecord(record), expectedVersion: nil)
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
