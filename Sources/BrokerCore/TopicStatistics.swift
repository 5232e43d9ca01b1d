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
    /// Per second over the last `RateMeter.windowNanos`: messages and bytes in and out.
    public var messageRateIn: Double = 0
    public var messageRateOut: Double = 0
    public var byteRateIn: Double = 0
    public var byteRateOut: Double = 0
    /// Persistent topics only: the last compaction.
    public var compaction: CompactionState? = nil
    /// Persistent topics only: each connected producer.
    public var publishers: [ProducerStatistics] = []
    /// The topic epoch of the exclusive producer modes; nil: no exclusive producer ever had the topic.
    public var topicEpoch: UInt64? = nil
    /// Bytes of the ledgers held by the offload tier, the bytes the offload threshold wants
    /// offloaded that are not yet (the offload lag), and what offloads did since the topic loaded.
    public var offloadedStorageBytes: Int64 = 0
    public var offloadLagBytes: Int64 = 0
    package var offloads = OffloadCounters()
    /// Persistent topics only: each geo-replicator, by remote cluster.
    public var replication: [String: ReplicatorStatistics] = [:]
}

/// One connected producer (Pulsar's `PublisherStats`).
public struct ProducerStatistics: Sendable, Equatable {
    public var producerID: UInt64
    public var name: String
    public var accessMode: ProducerAccessMode
    public var messagesIn: Int64
    public var bytesIn: Int64
    public var messageRateIn: Double
    public var byteRateIn: Double
    public var connectedSinceMs: Int64
    public var address: String
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
    /// Per second over the last `RateMeter.windowNanos`.
    public var messageRateOut: Double = 0
    public var byteRateOut: Double = 0
    /// Estimated bytes after the subscription's mark-delete position (persistent topics).
    public var backlogBytes: Int64 = 0
    /// Acknowledged ranges beyond the mark-delete position (Pulsar's `nonContiguousDeletedMessagesRanges`).
    public var acknowledgedRangeCount: Int = 0
    /// Messages put back for redelivery per second; when TTL last expired messages (epoch ms, 0: never).
    public var redeliverRate: Double = 0
    public var lastExpireTimestampMs: Int64 = 0
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
    public var messageRateOut: Double = 0
    public var byteRateOut: Double = 0
    public var redeliverRate: Double = 0
    public var connectedSinceMs: Int64 = 0
    public var address: String = ""
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
    /// Held by the offload tier (the local copy may be kept for the deletion lag).
    public var offloaded = false
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

/// Per-second rates of a few counters over a sliding window (Pulsar's `msgRateIn`, `msgRateOut`,
/// `msgThroughputIn`, ...): fed the counters about once a second, it answers their rise per
/// second between the oldest sample still in the window and the newest. A pure value.
public struct RateMeter: Sendable, Equatable {
    /// How far back the rates look.
    public static let windowNanos: UInt64 = 10_000_000_000
    private var samples: [(nanos: UInt64, values: [Int64])] = []

    public init() {}

    public mutating func sample(_ values: [Int64], nowNanos: UInt64) {
        samples.append((nowNanos, values))
        while let first = samples.first, samples.count > 2, nowNanos &- first.nanos > Self.windowNanos { samples.removeFirst() }
    }

    /// One rate per counter; zeros until two samples exist.
    public var rates: [Double] {
        guard let first = samples.first, let last = samples.last, last.nanos > first.nanos else {
            return samples.last.map { $0.values.map { _ in 0 } } ?? []
        }
        let seconds = Double(last.nanos - first.nanos) / 1_000_000_000
        return zip(last.values, first.values).map { max(0, Double($0 - $1) / seconds) }
    }

    public static func == (lhs: RateMeter, rhs: RateMeter) -> Bool {
        lhs.samples.map(\.nanos) == rhs.samples.map(\.nanos) && lhs.samples.map(\.values) == rhs.samples.map(\.values)
    }
}
