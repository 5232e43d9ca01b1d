import Metrics
import NIOConcurrencyHelpers

/// The latency histograms the broker reports through swift-metrics (exported on `/metrics` by the
/// Prometheus backend the executable bootstraps). Names follow Pulsar and BookKeeper.
enum BrokerMetrics {
    /// SEND received → entry durable (receipt about to be written), per message entry.
    static let publishLatency = Timer(label: "pulsar_broker_publish_latency")
    /// Journal write of one group commit.
    static let storageWriteLatency = Timer(label: "bookie_journal_write_latency")
    /// The fdatasync of one group commit.
    static let journalSyncLatency = Timer(label: "bookie_journal_sync_latency")
    /// Entries per group commit.
    static let groupCommitEntries = Recorder(label: "bookie_journal_group_commit_entries")

    /// Histogram buckets (Pulsar's latency buckets, 0.5 ms … 1 s) for the labels above.
    static let latencyBuckets: [Duration] = [
        .microseconds(100), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
        .milliseconds(10), .milliseconds(20), .milliseconds(50), .milliseconds(100), .milliseconds(200),
        .seconds(1),
    ]
    static let timerLabels = ["pulsar_broker_publish_latency", "bookie_journal_write_latency", "bookie_journal_sync_latency"]

    static func groupCommitObserver() -> @Sendable (Duration, Duration, Int, Int) -> Void {
        { write, sync, _, entries in
            storageWriteLatency.recordNanoseconds(write.nanoseconds)
            journalSyncLatency.recordNanoseconds(sync.nanoseconds)
            groupCommitEntries.record(entries)
        }
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}

/// Connection-level counters of the Pulsar endpoint (exported on `/metrics`). Thread-safe.
enum ConnectionMetrics {
    /// Pulsar's name: connections whose reading is paused because their socket does not take the
    /// broker's writes (the client stopped reading).
    static let throttledConnections = Gauge(label: "pulsar_broker_throttled_connections")
    /// Connections closed because what they did not read passed `maxOutboundBytesPerConnection`.
    static let outboundLimitClosed = Counter(label: "magnetar_connections_closed_outbound_limit_total")
    /// Times a connection stopped being read because a topic it publishes to was over its `publishRate`.
    static let publishThrottledCounter = Counter(label: "magnetar_publish_rate_throttled_total")
    private static let paused = NIOLockedValueBox(0)

    static func publishThrottled() { publishThrottledCounter.increment() }

    static func writePaused(_ delta: Int) {
        let now = paused.withLockedValue { value -> Int in
            value += delta
            return value
        }
        throttledConnections.record(now)
    }
}
