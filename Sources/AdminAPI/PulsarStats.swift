import BrokerCore
import ManagedLedger
import Foundation

// Pulsar's admin JSON shapes for what topics report (`.../stats`, `.../partitioned-stats`,
// `.../internalStats`): the subset of Pulsar's `TopicStats` / `PersistentTopicInternalStats` fields
// Magnetar tracks, with Pulsar's names, built from the core's protocol-neutral statistics.

/// `GET .../stats`. Counters count since the topic was loaded.
struct TopicStats: Codable, Sendable, Equatable {
    /// Per second over the last 10 s (Pulsar: over its stats interval).
    var msgRateIn: Double
    var msgThroughputIn: Double
    var msgRateOut: Double
    var msgThroughputOut: Double
    /// Bytes per message published, since the topic was loaded.
    var averageMsgSize: Double
    var msgInCounter: Int64
    var bytesInCounter: Int64
    var msgOutCounter: Int64
    var bytesOutCounter: Int64
    var storageSize: Int64
    var backlogSize: Int64
    var publishers: [PublisherStats]
    var subscriptions: [String: SubscriptionStats]
    /// Non-persistent topics only.
    var msgDropCounter: Int64?
    /// Persistent topics only: entries listed in the internal stats as `unreadableEntries`. Not a Pulsar field.
    var unreadableEntryCount: Int64?
    /// Persistent topics only: Pulsar's `CompactionStats`.
    var compaction: CompactionStats?
    /// The exclusive producers' topic epoch, once one had the topic (kept across restarts).
    var topicEpoch: UInt64?
    /// Bytes of the topic's ledgers held by the offload tier.
    var offloadedStorageSize: Int64 = 0
    /// Each geo-replicator, by remote cluster (Pulsar's `ReplicatorStats`).
    var replication: [String: ReplicatorStats] = [:]

    init(_ statistics: TopicStatistics) {
        msgRateIn = statistics.messageRateIn
        msgThroughputIn = statistics.byteRateIn
        msgRateOut = statistics.messageRateOut
        msgThroughputOut = statistics.byteRateOut
        averageMsgSize = statistics.messagesIn > 0 ? Double(statistics.bytesIn) / Double(statistics.messagesIn) : 0
        msgInCounter = statistics.messagesIn
        bytesInCounter = statistics.bytesIn
        msgOutCounter = statistics.messagesOut
        bytesOutCounter = statistics.bytesOut
        storageSize = statistics.storageBytes
        backlogSize = statistics.backlogBytes
        publishers = statistics.publishers.isEmpty
            ? statistics.producers.map { PublisherStats(producerName: $0) } : statistics.publishers.map(PublisherStats.init)
        subscriptions = statistics.subscriptions.mapValues(SubscriptionStats.init)
        msgDropCounter = statistics.messagesDropped
        unreadableEntryCount = statistics.unreadableEntries
        compaction = statistics.compaction.map(CompactionStats.init)
        topicEpoch = statistics.topicEpoch
        offloadedStorageSize = statistics.offloadedStorageBytes
        replication = statistics.replication.mapValues(ReplicatorStats.init)
    }
}

/// Pulsar's `ReplicatorStats` (the inbound side is the remote producer's publisher entry).
struct ReplicatorStats: Codable, Sendable, Equatable {
    var msgRateIn: Double = 0
    var msgThroughputIn: Double = 0
    var msgRateOut: Double
    var msgThroughputOut: Double
    var msgRateExpired: Double = 0
    var replicationBacklog: Int64
    var connected: Bool
    var replicationDelayInSeconds: Int64
    var outboundConnection: String
    var outboundConnectedSince: String
    /// Not Pulsar fields: what the replicator sent since the topic was loaded.
    var msgOutCounter: Int64
    var bytesOutCounter: Int64

    init(_ statistics: ReplicatorStatistics) {
        msgRateOut = statistics.messageRateOut
        msgThroughputOut = statistics.byteRateOut
        replicationBacklog = statistics.backlogEntries
        connected = statistics.connected
        replicationDelayInSeconds = statistics.delaySeconds
        outboundConnection = statistics.outboundConnection
        outboundConnectedSince = statistics.outboundConnectedSinceMs > 0 ? PulsarTimestamp.format(ms: statistics.outboundConnectedSinceMs) : ""
        msgOutCounter = statistics.messagesOut
        bytesOutCounter = statistics.bytesOut
    }
}

/// Pulsar's `CompactionStats` of a topic's stats.
struct CompactionStats: Codable, Sendable, Equatable {
    var lastCompactionRemovedEventCount: Int64
    var lastCompactionSucceedTimestamp: Int64
    var lastCompactionFailedTimestamp: Int64
    var lastCompactionDurationTimeInMills: Int64

    init(_ state: CompactionState) {
        lastCompactionRemovedEventCount = state.lastRemovedEventCount
        lastCompactionSucceedTimestamp = state.lastSucceedTimestamp
        lastCompactionFailedTimestamp = state.lastFailedTimestamp
        lastCompactionDurationTimeInMills = state.lastDurationMs
    }
}

/// Pulsar's `LongRunningProcessStatus`: `GET .../compaction`.
struct LongRunningProcessStatus: Codable, Sendable, Equatable {
    var status: String
    var lastError: String

    init(_ state: CompactionState) {
        status = state.status.rawValue
        lastError = state.lastError ?? ""
    }
}

/// Pulsar's `PublisherStats`. Non-persistent topics give the name only.
struct PublisherStats: Codable, Sendable, Equatable {
    var producerName: String
    var producerId: UInt64?
    /// `Shared`, `Exclusive`, `WaitForExclusive` or `ExclusiveWithFencing`.
    var accessMode: String?
    var msgRateIn: Double = 0
    var msgThroughputIn: Double = 0
    var averageMsgSize: Double = 0
    var msgInCounter: Int64 = 0
    var bytesInCounter: Int64 = 0
    var address: String?
    var connectedSince: String?

    init(producerName: String) {
        self.producerName = producerName
    }

    init(_ statistics: ProducerStatistics) {
        producerName = statistics.name
        producerId = statistics.producerID
        accessMode = switch statistics.accessMode {
        case .shared: "Shared"
        case .exclusive: "Exclusive"
        case .waitForExclusive: "WaitForExclusive"
        case .exclusiveWithFencing: "ExclusiveWithFencing"
        }
        msgRateIn = statistics.messageRateIn
        msgThroughputIn = statistics.byteRateIn
        averageMsgSize = statistics.messagesIn > 0 ? Double(statistics.bytesIn) / Double(statistics.messagesIn) : 0
        msgInCounter = statistics.messagesIn
        bytesInCounter = statistics.bytesIn
        address = statistics.address
        connectedSince = PulsarTimestamp.format(ms: statistics.connectedSinceMs)
    }
}

/// Pulsar's stats timestamps (`connectedSince`): ISO 8601 in UTC with milliseconds.
enum PulsarTimestamp {
    static func format(ms: Int64) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: Date(timeIntervalSince1970: Double(ms) / 1000))
    }
}

struct SubscriptionStats: Codable, Sendable, Equatable {
    var msgRateOut: Double
    var msgThroughputOut: Double
    var msgBacklog: Int64
    /// Magnetar does not count delayed messages apart: the same as `msgBacklog`.
    var msgBacklogNoDelayed: Int64
    /// Estimated bytes after the mark-delete position.
    var backlogSize: Int64
    var unackedMessages: Int64
    var msgOutCounter: Int64
    var bytesOutCounter: Int64
    var nonContiguousDeletedMessagesRanges: Int
    var msgRateRedeliver: Double
    /// When the message TTL last expired messages (epoch ms; 0: never).
    var lastExpireTimestamp: Int64
    /// `Exclusive`, `Shared`, `Failover` or `Key_Shared`.
    var type: String
    var isDurable: Bool
    var consumers: [ConsumerStats]

    init(_ statistics: SubscriptionStatistics) {
        msgRateOut = statistics.messageRateOut
        msgThroughputOut = statistics.byteRateOut
        msgBacklog = statistics.backlogEntries
        msgBacklogNoDelayed = statistics.backlogEntries
        backlogSize = statistics.backlogBytes
        unackedMessages = statistics.unackedMessages
        msgOutCounter = statistics.messagesOut
        bytesOutCounter = statistics.bytesOut
        nonContiguousDeletedMessagesRanges = statistics.acknowledgedRangeCount
        msgRateRedeliver = statistics.redeliverRate
        lastExpireTimestamp = statistics.lastExpireTimestampMs
        type = "\(statistics.type)"
        isDurable = statistics.isDurable
        consumers = statistics.consumers.map(ConsumerStats.init)
    }
}

struct ConsumerStats: Codable, Sendable, Equatable {
    var consumerName: String
    var availablePermits: Int64
    var unackedMessages: Int64
    var msgOutCounter: Int64
    var bytesOutCounter: Int64
    var msgRateOut: Double
    var msgThroughputOut: Double
    var msgRateRedeliver: Double
    var address: String
    var connectedSince: String

    init(_ statistics: ConsumerStatistics) {
        msgRateOut = statistics.messageRateOut
        msgThroughputOut = statistics.byteRateOut
        msgRateRedeliver = statistics.redeliverRate
        address = statistics.address
        connectedSince = PulsarTimestamp.format(ms: statistics.connectedSinceMs)
        consumerName = statistics.name
        availablePermits = statistics.availablePermits
        unackedMessages = statistics.unackedMessages
        msgOutCounter = statistics.messagesOut
        bytesOutCounter = statistics.bytesOut
    }
}

/// `GET .../partitioned-stats`: the partitions' stats summed, plus each partition's own.
struct PartitionedTopicStats: Codable, Sendable, Equatable {
    var msgRateIn: Double = 0
    var msgThroughputIn: Double = 0
    var msgRateOut: Double = 0
    var msgThroughputOut: Double = 0
    var msgInCounter: Int64 = 0
    var bytesInCounter: Int64 = 0
    var msgOutCounter: Int64 = 0
    var bytesOutCounter: Int64 = 0
    var storageSize: Int64 = 0
    var backlogSize: Int64 = 0
    var offloadedStorageSize: Int64 = 0
    var publishers: [PublisherStats] = []
    var subscriptions: [String: SubscriptionStats] = [:]
    var replication: [String: ReplicatorStats] = [:]
    var metadata: PartitionedTopicRecord
    var partitions: [String: TopicStats] = [:]

    init(_ statistics: PartitionedTopicStatistics) {
        metadata = statistics.record
        for (name, partition) in statistics.partitions {
            add(TopicStats(partition), partition: "\(name)")
        }
    }

    private mutating func add(_ stats: TopicStats, partition: String) {
        partitions[partition] = stats
        for (remote, replicator) in stats.replication {
            guard var total = replication[remote] else {
                replication[remote] = replicator
                continue
            }
            total.msgRateOut += replicator.msgRateOut
            total.msgThroughputOut += replicator.msgThroughputOut
            total.replicationBacklog += replicator.replicationBacklog
            total.connected = total.connected && replicator.connected
            total.replicationDelayInSeconds = max(total.replicationDelayInSeconds, replicator.replicationDelayInSeconds)
            total.msgOutCounter += replicator.msgOutCounter
            total.bytesOutCounter += replicator.bytesOutCounter
            replication[remote] = total
        }
        msgRateIn += stats.msgRateIn
        msgThroughputIn += stats.msgThroughputIn
        msgRateOut += stats.msgRateOut
        msgThroughputOut += stats.msgThroughputOut
        bytesOutCounter += stats.bytesOutCounter
        msgInCounter += stats.msgInCounter
        bytesInCounter += stats.bytesInCounter
        msgOutCounter += stats.msgOutCounter
        storageSize += stats.storageSize
        backlogSize += stats.backlogSize
        offloadedStorageSize += stats.offloadedStorageSize
        publishers += stats.publishers
        for (name, subscription) in stats.subscriptions {
            guard var total = subscriptions[name] else {
                subscriptions[name] = subscription
                continue
            }
            total.msgBacklog += subscription.msgBacklog
            total.msgBacklogNoDelayed += subscription.msgBacklogNoDelayed
            total.backlogSize += subscription.backlogSize
            total.msgRateOut += subscription.msgRateOut
            total.msgThroughputOut += subscription.msgThroughputOut
            total.msgRateRedeliver += subscription.msgRateRedeliver
            total.lastExpireTimestamp = max(total.lastExpireTimestamp, subscription.lastExpireTimestamp)
            total.bytesOutCounter += subscription.bytesOutCounter
            total.nonContiguousDeletedMessagesRanges += subscription.nonContiguousDeletedMessagesRanges
            total.unackedMessages += subscription.unackedMessages
            total.msgOutCounter += subscription.msgOutCounter
            total.consumers += subscription.consumers
            subscriptions[name] = total
        }
    }
}

/// Pulsar's `OffloadProcessStatus`: `GET .../offload`.
struct OffloadProcessStatus: Codable, Sendable, Equatable {
    struct MessageID: Codable, Sendable, Equatable {
        var ledgerId: Int64
        var entryId: Int64
        var partitionIndex: Int32 = -1
        var batchIndex: Int32 = -1
    }

    var status: String
    var lastError: String
    var firstUnoffloadedMessage: MessageID?

    init(_ state: OffloadStatus) {
        status = state.state.rawValue
        lastError = state.lastError
        firstUnoffloadedMessage = state.firstUnoffloaded.map { MessageID(ledgerId: $0.ledgerID, entryId: $0.entryID) }
    }
}

/// `GET .../internalStats`: the managed ledger and its cursors. Positions as `ledgerId:entryId`.
struct PersistentTopicInternalStats: Codable, Sendable, Equatable {
    var entriesAddedCounter: Int64
    var numberOfEntries: Int64
    var totalSize: Int64
    var currentLedgerEntries: Int64
    var currentLedgerSize: Int64
    var lastConfirmedEntry: String
    var ledgers: [LedgerStats]
    var cursors: [String: CursorStats]
    /// Every entry dispatch could not read after every attempt, in log order; skip one with
    /// `.../subscription/{sub}/skip/1` once it cannot be restored. Not a Pulsar field.
    var unreadableEntries: [String]

    init(_ statistics: ManagedLedgerStatistics) {
        entriesAddedCounter = statistics.entriesAdded
        numberOfEntries = statistics.entries
        totalSize = statistics.totalBytes
        currentLedgerEntries = statistics.currentLedgerEntries
        currentLedgerSize = statistics.currentLedgerBytes
        lastConfirmedEntry = "\(statistics.lastConfirmed)"
        ledgers = statistics.ledgers.map { LedgerStats(ledgerId: $0.ledgerID, entries: $0.entries, size: $0.bytes, offloaded: $0.offloaded) }
        cursors = statistics.cursors.mapValues(CursorStats.init)
        unreadableEntries = statistics.unreadableEntries.map { "\($0)" }
    }
}

struct LedgerStats: Codable, Sendable, Equatable {
    var ledgerId: Int64
    var entries: Int64
    var size: Int64
    var offloaded: Bool
}

struct CursorStats: Codable, Sendable, Equatable {
    var markDeletePosition: String
    var readPosition: String
    /// Acknowledged ranges beyond the mark-delete position, as Pulsar prints them: `[(3:4..3:7]]`.
    var individuallyDeletedMessages: String
    var messagesBacklog: Int64
    var isDurable: Bool

    init(_ statistics: CursorStatistics) {
        markDeletePosition = "\(statistics.markDelete)"
        readPosition = "\(statistics.readPosition)"
        let ranges = statistics.acknowledgedRanges.map { range in
            "(\(range.ledgerID):\(range.entries.lowerBound - 1)..\(range.ledgerID):\(range.entries.upperBound)]"
        }
        individuallyDeletedMessages = "[\(ranges.joined(separator: ", "))]"
        messagesBacklog = statistics.backlogEntries
        isDurable = statistics.isDurable
    }
}
