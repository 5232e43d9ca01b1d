import ManagedLedger

// What topics report about themselves, for admin stats and metrics: pure, protocol-neutral values.
// The admin API renders them in Pulsar's JSON shapes (AdminAPI/PulsarStats.swift); metrics read
// them as they are.

/// A topic's counters (since it was loaded) and state. Persistent and non-persistent alike.
public struct TopicStatistics: Sendable, Equatable {
    public var messagesIn: Int64
    public var bytesIn: Int64
    /// Messages delivered to consumers (a consumer counts messages; batches sent before that count as one).
    public var messagesOut: Int64
    public var storageBytes: Int64
    /// Estimated bytes not yet acknowledged by the slowest durable subscription.
    public var backlogBytes: Int64
    /// Names of the connected producers, sorted.
    public var producers: [String]
    public var subscriptions: [String: SubscriptionStatistics]
    /// Non-persistent topics only: messages dropped because no consumer of a subscription had a permit.
    public var messagesDropped: Int64? = nil
    /// Persistent topics only: entries dispatch could not read after every attempt.
    public var unreadableEntries: Int64? = nil
}

public struct SubscriptionStatistics: Sendable, Equatable {
    /// Unacknowledged entries (a batch counts as one).
    public var backlogEntries: Int64
    public var unackedMessages: Int64
    public var messagesOut: Int64
    public var type: SubscriptionType
    public var isDurable: Bool
    public var consumers: [ConsumerStatistics]
}

public struct ConsumerStatistics: Sendable, Equatable {
    public var name: String
    public var availablePermits: Int64
    public var unackedMessages: Int64
    public var messagesOut: Int64
}

/// A persistent topic's managed ledger and its cursors.
public struct ManagedLedgerStatistics: Sendable, Equatable {
    public var entriesAdded: Int64
    public var entries: Int64
    public var totalBytes: Int64
    public var currentLedgerEntries: Int64
    public var currentLedgerBytes: Int64
    public var lastConfirmed: Position
    public var ledgers: [LedgerStatistics]
    public var cursors: [String: CursorStatistics]
    /// Entries dispatch could not read after every attempt (a checksum mismatch, a missing file),
    /// in log order. Such an entry stays unacknowledged until skipped.
    public var unreadableEntries: [Position]
}

public struct LedgerStatistics: Sendable, Equatable {
    public var ledgerID: Int64
    public var entries: Int64
    public var bytes: Int64
}

public struct CursorStatistics: Sendable, Equatable {
    /// Everything at or before it is acknowledged.
    public var markDelete: Position
    /// The next entry to read for dispatch.
    public var readPosition: Position
    /// Acknowledged entries beyond the mark-delete position, in order.
    public var acknowledgedRanges: [AcknowledgedRange]
    public var backlogEntries: Int64
    public var isDurable: Bool
}

/// Entries `entries` of ledger `ledgerID`, all acknowledged.
public struct AcknowledgedRange: Sendable, Equatable {
    public var ledgerID: Int64
    public var entries: ClosedRange<Int64>
}

/// A partitioned topic's record and each partition's statistics, in partition order.
public struct PartitionedTopicStatistics: Sendable {
    public var record: PartitionedTopicRecord
    public var partitions: [(name: TopicName, statistics: TopicStatistics)]
}
