import BrokerCore
import ManagedLedger
import Prometheus

/// Computes the per-topic Prometheus series at scrape time from the loaded topics' stats, with
/// Pulsar's metric names and labels (`cluster`, `namespace`, `topic`, `subscription`), so existing
/// Grafana dashboards work. Series of topics no longer loaded are unregistered.
///
/// An actor: scrapes are serialized. The registry is shared with the swift-metrics backend
/// (`PrometheusMetricsFactory`), so `/metrics` also shows what libraries report through swift-metrics.
public actor MetricsCollector {
    let broker: BrokerService
    public nonisolated let registry: PrometheusCollectorRegistry
    private var gauges: [SeriesKey: Gauge] = [:]
    /// The counters of the previous scrape per topic / subscription, for Pulsar's rate series.
    private var previous: [String: (at: ContinuousClock.Instant, values: [Int64])] = [:]

    struct SeriesKey: Hashable {
        var name: String
        var labels: [String]
    }

    /// Pulsar's per-topic metrics: name → help. Values are gauges (as Pulsar exports them).
    static let help: [String: String] = [
        "pulsar_topics_count": "Number of topics loaded in the namespace",
        "pulsar_subscriptions_count": "Number of subscriptions of the topic",
        "pulsar_producers_count": "Number of producers connected to the topic",
        "pulsar_consumers_count": "Number of consumers connected to the topic",
        "pulsar_in_messages_total": "Messages published to the topic since it was loaded",
        "pulsar_in_bytes_total": "Bytes published to the topic since it was loaded",
        "pulsar_out_messages_total": "Messages delivered from the topic to connected consumers",
        "pulsar_storage_size": "Bytes of the topic's ledgers",
        "pulsar_msg_backlog": "Unacknowledged entries summed over the topic's subscriptions",
        "pulsar_subscription_back_log": "Unacknowledged entries of the subscription",
        "pulsar_subscription_unacked_messages": "Messages delivered to the subscription's consumers and not acknowledged",
        "pulsar_subscription_msg_out_total": "Messages delivered from the subscription to connected consumers",
        "pulsar_subscription_consumers_count": "Consumers connected to the subscription",
        "pulsar_dropped_messages_total": "Non-persistent topics: messages dropped because no consumer had a permit",
        "pulsar_ml_unreadable_entries": "Entries of the topic that could not be read after every attempt (checksum mismatch, missing file); listed in internalStats, skip them with the admin API",
        "pulsar_rate_in": "Messages per second published to the topic (since the previous scrape)",
        "pulsar_rate_out": "Messages per second delivered from the topic (since the previous scrape)",
        "pulsar_throughput_in": "Bytes per second published to the topic (since the previous scrape)",
        "pulsar_throughput_out": "Bytes per second delivered from the topic (since the previous scrape)",
        "pulsar_storage_backlog_size": "Estimated bytes not yet acknowledged by the topic's slowest durable subscription",
        "pulsar_subscription_msg_rate_out": "Messages per second delivered from the subscription (since the previous scrape)",
        "pulsar_subscription_msg_throughput_out": "Bytes per second delivered from the subscription (since the previous scrape)",
        "pulsar_storage_offloaded_size": "Bytes of the topic's ledgers held by the offload tier",
        "brk_ledgeroffloader_offload_error": "Ledger offloads of the topic that failed since it was loaded",
        "brk_ledgeroffloader_read_offload_error": "Reads of the topic's offloaded ledgers that failed since it was loaded (the tier did not answer, or a checksum failed)",
        "magnetar_offloaded_ledgers_total": "Ledgers of the topic offloaded since it was loaded",
        "magnetar_offloaded_bytes_total": "Bytes of the topic offloaded since it was loaded",
        "magnetar_offload_time_ms_total": "Milliseconds spent offloading the topic's ledgers since it was loaded (divide by magnetar_offloaded_ledgers_total for the latency)",
        "magnetar_offload_lag_bytes": "Bytes of the namespace's closed ledgers that its offload threshold wants offloaded and that are not yet",
        "pulsar_replication_backlog": "Entries of the topic not yet replicated to the remote cluster",
        "pulsar_replication_rate_out": "Messages per second replicated to the remote cluster",
        "pulsar_replication_throughput_out": "Bytes per second replicated to the remote cluster",
        "pulsar_replication_delay_in_seconds": "Age in seconds of the oldest entry not yet replicated to the remote cluster (0: caught up)",
        "pulsar_replication_connected_count": "1 while the replicator's producer is connected to the remote cluster, else 0",
        "pulsar_txn_active_count": "Transactions open now",
        "pulsar_txn_created_total": "Transactions opened since the coordinator started",
        "pulsar_txn_committed_total": "Transactions committed since the coordinator started",
        "pulsar_txn_aborted_total": "Transactions aborted since the coordinator started (time-outs included)",
        "pulsar_txn_timeout_total": "Transactions aborted by their time-out since the coordinator started",
    ]

    /// `le_<bound>` suffixes of Pulsar's bucket names.
    static let writeLatencyBuckets = ["0_5", "1", "5", "10", "20", "50", "100", "200", "1000"]
    static let entrySizeBuckets = ["128", "512", "1_kb", "2_kb", "4_kb", "16_kb", "100_kb", "1_mb"]

    public init(broker: BrokerService, registry: PrometheusCollectorRegistry) {
        self.broker = broker
        self.registry = registry
    }

    /// Refreshes the per-topic gauges and renders the whole registry in Prometheus text format.
    public func scrape() async -> String {
        let cluster = broker.configuration.clusterName
        let snapshots = await broker.loadedTopicMetrics()
        var seen = Set<SeriesKey>()
        /// The gauge of one series (made on first use), marked as seen this scrape.
        func gauge(_ name: String, _ labels: [(String, String)]) -> Gauge {
            let key = SeriesKey(name: name, labels: labels.map { "\($0.0)=\($0.1)" })
            seen.insert(key)
            if let existing = gauges[key] { return existing }
            let made = registry.makeGauge(
                descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: Self.help[name] ?? name),
                labels: labels)
            gauges[key] = made
            return made
        }
        func set(_ name: String, _ labels: [(String, String)], _ value: Int64) { gauge(name, labels).set(value) }
        func setDouble(_ name: String, _ labels: [(String, String)], _ value: Double) { gauge(name, labels).set(value) }
        let now = ContinuousClock.now
        var seenRates = Set<String>()
        /// Per-second rates of `values` since the previous scrape of `key` (0 the first time).
        func rates(_ key: String, _ values: [Int64]) -> [Double] {
            seenRates.insert(key)
            defer { previous[key] = (now, values) }
            guard let before = previous[key] else { return values.map { _ in 0 } }
            let elapsed = (now - before.at) / .seconds(1)
            guard elapsed > 0 else { return values.map { _ in 0 } }
            return zip(values, before.values).map { max(0, Double($0 - $1) / elapsed) }
        }
        /// Pulsar's per-topic bucket series (counts since the topic was loaded). `totals`: also
        /// `_count` and `_sum` (not for the write latency, whose base name is the broker-wide histogram's).
        func histogram(_ prefix: String, _ names: [String], overflow: String, _ counts: BucketCounts, _ labels: [(String, String)], totals: Bool) {
            for (index, name) in names.enumerated() { set("\(prefix)_le_\(name)", labels, counts.counts[index]) }
            set(overflow, labels, counts.counts[names.count])
            guard totals else { return }
            set("\(prefix)_count", labels, counts.count)
            setDouble("\(prefix)_sum", labels, counts.sum)
        }
        var topicsPerNamespace: [String: Int64] = [:]
        var offloadLagPerNamespace: [String: Int64] = [:]
        for snapshot in snapshots {
            let namespace = snapshot.topic.namespaceName
            topicsPerNamespace[namespace, default: 0] += 1
            let labels = [("cluster", cluster), ("namespace", namespace), ("topic", "\(snapshot.topic)")]
            let stats = snapshot.stats
            set("pulsar_subscriptions_count", labels, Int64(stats.subscriptions.count))
            set("pulsar_producers_count", labels, Int64(stats.producers.count))
            set("pulsar_consumers_count", labels, Int64(stats.subscriptions.values.reduce(0) { $0 + $1.consumers.count }))
            set("pulsar_in_messages_total", labels, stats.messagesIn)
            set("pulsar_in_bytes_total", labels, stats.bytesIn)
            set("pulsar_out_messages_total", labels, stats.messagesOut)
            set("pulsar_storage_size", labels, stats.storageBytes)
            set("pulsar_msg_backlog", labels, stats.subscriptions.values.reduce(0) { $0 + $1.backlogEntries })
            if let dropped = stats.messagesDropped {
                set("pulsar_dropped_messages_total", labels, dropped)
            }
            if let unreadable = stats.unreadableEntries {
                set("pulsar_ml_unreadable_entries", labels, unreadable)
            }
            let topicRates = rates("\(snapshot.topic)", [stats.messagesIn, stats.messagesOut, stats.bytesIn, stats.bytesOut])
            setDouble("pulsar_rate_in", labels, topicRates[0])
            setDouble("pulsar_rate_out", labels, topicRates[1])
            setDouble("pulsar_throughput_in", labels, topicRates[2])
            setDouble("pulsar_throughput_out", labels, topicRates[3])
            set("pulsar_storage_backlog_size", labels, stats.backlogBytes)
            if snapshot.topic.domain == .persistent {
                offloadLagPerNamespace[namespace, default: 0] += stats.offloadLagBytes
                set("pulsar_storage_offloaded_size", labels, stats.offloadedStorageBytes)
                set("brk_ledgeroffloader_offload_error", labels, stats.offloads.errors)
                set("brk_ledgeroffloader_read_offload_error", labels, stats.offloads.tierReadErrors)
                set("magnetar_offloaded_ledgers_total", labels, stats.offloads.ledgers)
                set("magnetar_offloaded_bytes_total", labels, stats.offloads.bytes)
                set("magnetar_offload_time_ms_total", labels, stats.offloads.totalMs)
            }
            for (remote, replication) in stats.replication {
                let remoteLabels = labels + [("remote_cluster", remote)]
                set("pulsar_replication_backlog", remoteLabels, replication.backlogEntries)
                setDouble("pulsar_replication_rate_out", remoteLabels, replication.messageRateOut)
                setDouble("pulsar_replication_throughput_out", remoteLabels, replication.byteRateOut)
                set("pulsar_replication_delay_in_seconds", remoteLabels, replication.delaySeconds)
                set("pulsar_replication_connected_count", remoteLabels, replication.connected ? 1 : 0)
            }
            if let latency = stats.writeLatency {
                histogram("pulsar_storage_write_latency", Self.writeLatencyBuckets, overflow: "pulsar_storage_write_latency_overflow",
                          latency, labels, totals: true)
            }
            if let sizes = stats.entrySizes {
                histogram("pulsar_entry_size", Self.entrySizeBuckets, overflow: "pulsar_entry_size_le_overflow", sizes, labels, totals: true)
            }
            for (subscription, subscriptionStats) in stats.subscriptions {
                let subscriptionLabels = labels + [("subscription", subscription)]
                set("pulsar_subscription_back_log", subscriptionLabels, subscriptionStats.backlogEntries)
                set("pulsar_subscription_unacked_messages", subscriptionLabels, subscriptionStats.unackedMessages)
                set("pulsar_subscription_msg_out_total", subscriptionLabels, subscriptionStats.messagesOut)
                set("pulsar_subscription_consumers_count", subscriptionLabels, Int64(subscriptionStats.consumers.count))
                let subscriptionRates = rates("\(snapshot.topic) \(subscription)", [subscriptionStats.messagesOut, subscriptionStats.bytesOut])
                setDouble("pulsar_subscription_msg_rate_out", subscriptionLabels, subscriptionRates[0])
                setDouble("pulsar_subscription_msg_throughput_out", subscriptionLabels, subscriptionRates[1])
            }
        }
        if let coordinator = broker.transactionCoordinator.withLockedValue({ $0 }) {
            let stats = await coordinator.currentStatistics()
            let labels = [("cluster", cluster), ("coordinator_id", "\(stats.coordinatorID)")]
            set("pulsar_txn_active_count", labels, Int64(stats.open))
            set("pulsar_txn_created_total", labels, stats.created)
            set("pulsar_txn_committed_total", labels, stats.committed)
            set("pulsar_txn_aborted_total", labels, stats.aborted)
            set("pulsar_txn_timeout_total", labels, stats.timedOut)
        }
        for (namespace, count) in topicsPerNamespace {
            set("pulsar_topics_count", [("cluster", cluster), ("namespace", namespace)], count)
            if let lag = offloadLagPerNamespace[namespace] {
                set("magnetar_offload_lag_bytes", [("cluster", cluster), ("namespace", namespace)], lag)
            }
        }
        for key in previous.keys where !seenRates.contains(key) { previous[key] = nil }
        for (key, gauge) in gauges where !seen.contains(key) {
            registry.unregisterGauge(gauge)
            gauges[key] = nil
        }
        return registry.emitToString()
    }
}
