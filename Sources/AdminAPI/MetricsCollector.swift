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
    ]

    public init(broker: BrokerService, registry: PrometheusCollectorRegistry) {
        self.broker = broker
        self.registry = registry
    }

    /// Refreshes the per-topic gauges and renders the whole registry in Prometheus text format.
    public func scrape() async -> String {
        let cluster = broker.configuration.clusterName
        let snapshots = await broker.loadedTopicMetrics()
        var seen = Set<SeriesKey>()
        func set(_ name: String, _ labels: [(String, String)], _ value: Int64) {
            let key = SeriesKey(name: name, labels: labels.map { "\($0.0)=\($0.1)" })
            seen.insert(key)
            let gauge: Gauge
            if let existing = gauges[key] {
                gauge = existing
            } else {
                gauge = registry.makeGauge(
                    descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: Self.help[name] ?? name),
                    labels: labels)
                gauges[key] = gauge
            }
            gauge.set(value)
        }
        var topicsPerNamespace: [String: Int64] = [:]
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
            for (subscription, subscriptionStats) in stats.subscriptions {
                let subscriptionLabels = labels + [("subscription", subscription)]
                set("pulsar_subscription_back_log", subscriptionLabels, subscriptionStats.backlogEntries)
                set("pulsar_subscription_unacked_messages", subscriptionLabels, subscriptionStats.unackedMessages)
                set("pulsar_subscription_msg_out_total", subscriptionLabels, subscriptionStats.messagesOut)
                set("pulsar_subscription_consumers_count", subscriptionLabels, Int64(subscriptionStats.consumers.count))
            }
        }
        for (namespace, count) in topicsPerNamespace {
            set("pulsar_topics_count", [("cluster", cluster), ("namespace", namespace)], count)
        }
        for (key, gauge) in gauges where !seen.contains(key) {
            registry.unregisterGauge(gauge)
            gauges[key] = nil
        }
        return registry.emitToString()
    }
}
