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
    /// Bytes delivered to consumers (entries' sizes).
    public var bytesOut: Int64 = 0
    /// Persistent topics only: how long appends took to become durable, and how large entries were.
    public var writeLatency: BucketCounts? = nil
    public var entrySizes: BucketCounts? = nil
}

/// A histogram as Pulsar exports its topic ones: counts per bucket (`le_<bound>` ... `le_overflow`),
/// their total and the sum of the values. A pure value.
public struct BucketCounts: Sendable, Equatable {
    /// Upper bounds, ascending; values above the last go to the overflow bucket.
    public let bounds: [Double]
    /// One per bound, then the overflow bucket (not cumulative).
    public private(set) var counts: [Int64]
    public private(set) var sum: Double = 0
    public var count: Int64 { counts.reduce(0, +) }

    public init(bounds: [Double]) {
        self.bounds = bounds
        self.counts = Array(repeating: 0, count: bounds.count + 1)
    }

    public mutating func record(_ value: Double) {
        sum += value
        counts[bounds.firstIndex { value <= $0 } ?? bounds.count] += 1
    }

    /// Pulsar's write-latency buckets, in milliseconds: `pulsar_storage_write_latency_le_0_5` ... `le_1000`, `le_overflow`.
    public static let writeLatencyBoundsMs: [Double] = [0.5, 1, 5, 10, 20, 50, 100, 200, 1000]
    /// Pulsar's entry-size buckets, in bytes: `pulsar_entry_size_le_128` ... `le_1_mb`, `le_overflow`.
    public static let entrySizeBounds: [Double] = [128, 512, 1024, 2048, 4096, 16_384, 102_400, 1_048_576]
}

public struct SubscriptionStatistics: Sendable, Equatable {
    /// Unacknowledged entries (a batch counts as one).
    public var backlogEntries: Int64
    public var unackedMessages: Int64
    public var messagesOut: Int64
    public var bytesOut: Int64 = 0
    public var type: SubscriptionType
    public var isDurable: Bool
    public var consumers: [ConsumerStatistics]
}

public struct ConsumerStatistics: Sendable, Equatable {
    public var name: String
    public var availablePermits: Int64
    public var unackedMessages: Int64
    public var messagesOut: Int64
    public var bytesOut: Int64 = 0
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
