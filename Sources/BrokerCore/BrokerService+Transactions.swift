import ManagedLedger
import NIOCore

/// Applies a transaction's consumer-group offsets when it commits (the endpoint that owns the groups).
public protocol TransactionOffsetCommitter: Sendable {
    func commitOffsets(_ commits: [TransactionOffsetCommit]) async throws
}

/// Ends transactions on topics another broker of the cluster serves (END_TXN_ON_PARTITION /
/// END_TXN_ON_SUBSCRIPTION sent to their owner); the server installs it in a cluster.
public protocol RemoteTransactionEnds: Sendable {
    func endTransaction(_ transaction: TransactionID, onPartition topic: String, committed: Bool) async throws
    func endTransaction(_ transaction: TransactionID, onSubscription subscription: TransactionSubscription, committed: Bool) async throws
}

/// The broker's topics as a coordinator's participants: a transaction ends on a topic with its
/// marker (`Topic.endTransaction`), loading the topic if it is not loaded; in a cluster, a topic
/// another broker serves is ended there (`RemoteTransactionEnds`).
public struct BrokerTransactionParticipants: TransactionParticipants {
    private weak var broker: BrokerService?

    public init(broker: BrokerService) {
        self.broker = broker
    }

    /// nil: the topic is served here; else who ends it elsewhere.
    private func remote(_ name: TopicName, _ broker: BrokerService) async throws -> (any RemoteTransactionEnds)? {
        guard broker.cluster != nil, try await !broker.servesHere(name) else { return nil }
        guard let remote = broker.remoteTransactionEnds.withLockedValue({ $0 }) else {
            throw BrokerError(.serviceNotReady, "\(name) is served by another broker and none can be reached yet")
        }
        return remote
    }

    public func endTransaction(_ transaction: TransactionID, onPartition topic: String, committed: Bool) async throws {
        guard let broker else { throw BrokerError(.serviceNotReady, "the broker is stopping") }
        let name = try TopicName(parsing: topic)
        if let remote = try await remote(name, broker) {
            return try await remote.endTransaction(transaction, onPartition: topic, committed: committed)
        }
        let loaded = try await broker.topic(name).get()
        try await loaded.eventLoop.flatSubmit { loaded.endTransaction(transaction, committed: committed) }.get()
    }

    public func endTransaction(
        _ transaction: TransactionID, onSubscription subscription: TransactionSubscription, committed: Bool
    ) async throws {
        guard let broker else { throw BrokerError(.serviceNotReady, "the broker is stopping") }
        let name = try TopicName(parsing: subscription.topic)
        if let remote = try await remote(name, broker) {
            return try await remote.endTransaction(transaction, onSubscription: subscription, committed: committed)
        }
        let loaded = try await broker.topic(name).get()
        try await loaded.eventLoop.flatSubmit {
            loaded.endTransaction(transaction, onSubscription: subscription.subscription, committed: committed)
        }.get()
    }

    public func commitOffsets(_ commits: [TransactionOffsetCommit]) async throws {
        guard let committer = broker?.transactionOffsetCommitter.withLockedValue({ $0 }) else {
            throw BrokerError(.serviceNotReady, "no endpoint applies transactions' group offsets yet")
        }
        try await committer.commitOffsets(commits)
    }
}

extension BrokerService {
    /// Pulsar's `persistent://pulsar/system/transaction_coordinator_assign`: its partition i stands
    /// for coordinator i, which clients find with PARTITIONED_METADATA and LOOKUP, then
    /// TC_CLIENT_CONNECT (the Java client's discovery). One partition: coordinator 0, here.
    public static let transactionCoordinatorAssign = TopicName(
        domain: .persistent, tenant: "pulsar", namespace: "system", localName: "transaction_coordinator_assign")

    /// Partition 0 of the coordinator-assign topic: its bundle's owner runs coordinator 0.
    public static var transactionCoordinatorPartition: TopicName {
        var name = transactionCoordinatorAssign
        name.localName += "-partition-0"
        return name
    }

    /// Whether `name` is the coordinator-assign topic (or its partition 0) and transactions are on.
    public func servesTransactionCoordinatorAssign(_ name: TopicName) -> Bool {
        guard configuration.transactionCoordinatorEnabled else { return false }
        let assign = Self.transactionCoordinatorAssign
        guard name.domain == assign.domain, name.tenant == assign.tenant, name.namespace == assign.namespace else { return false }
        return name.localName == assign.localName || name.localName == assign.localName + "-partition-0"
    }

    /// The coordinator, or the error a client gets when transactions are off (or, in a cluster,
    /// another broker runs it now).
    public func requireTransactionCoordinator() throws(BrokerError) -> TransactionCoordinator {
        guard let coordinator = transactionCoordinator.withLockedValue({ $0 }) else {
            if configuration.transactionCoordinatorEnabled {
                throw BrokerError(
                    .transactionCoordinatorNotFound,
                    "transaction coordinator 0 does not run on this broker now (look up \(Self.transactionCoordinatorPartition))")
            }
            throw BrokerError(
                .transactionCoordinatorNotFound,
                "transactions are not enabled on this broker (transactionCoordinatorEnabled=true turns them on)")
        }
        return coordinator
    }
}

/// A topic's transaction buffer for the admin API (Pulsar's `TransactionBufferStats`).
public struct TransactionBufferStatistics: Sendable, Equatable {
    /// Entries before it are dispatched; nil: no transaction holds the topic back.
    public var maxReadPosition: Position?
    public var ongoing: [TransactionID]
    public var aborted: [TransactionID]
}

/// A subscription's acknowledgements held by transactions (Pulsar's `TransactionPendingAckStats`).
public struct TransactionPendingAckStatistics: Sendable, Equatable {
    public var transactions: [TransactionID: [Position]]
}

extension BrokerService {
    public func transactionBufferStatistics(_ name: TopicName) async throws -> TransactionBufferStatistics {
        let topic = try await existingTopic(name)
        return try await topic.eventLoop.submit {
            let state = topic.transactionState
            return TransactionBufferStatistics(
                maxReadPosition: state.readLimit, ongoing: state.ongoing.map(\.id), aborted: state.aborted.map(\.id))
        }.get()
    }

    public func transactionPendingAckStatistics(_ name: TopicName, subscription: String) async throws -> TransactionPendingAckStatistics {
        let topic = try await existingTopic(name)
        return try await topic.eventLoop.submit { () throws -> TransactionPendingAckStatistics in
            let subscription = try topic.existingSubscription(subscription)
            return TransactionPendingAckStatistics(transactions: subscription.transactionAcks)
        }.get()
    }
}
