import Prometheus
import Replication

/// A storage node's `/metrics`: BookKeeper's `bookie_*` names (Pulsar's and BookKeeper's Grafana
/// dashboards read them), rendered by swift-prometheus from the node's counters at scrape time.
actor StorageMetrics {
    private let node: StorageNode
    private let registry = PrometheusCollectorRegistry()
    private let status: Gauge
    private let ledgers: Gauge
    private let entries: Gauge
    private let writableDirs: Gauge
    private var counters: [String: (counter: Counter, last: Int64)] = [:]

    init(node: StorageNode) {
        self.node = node
        status = registry.makeGauge(name: "bookie_SERVER_STATUS", help: "1 while the storage node serves reads and writes")
        ledgers = registry.makeGauge(name: "bookie_ledgers_count", help: "Ledgers the storage node holds")
        entries = registry.makeGauge(name: "bookie_entries_count", help: "Entries the storage node holds")
        writableDirs = registry.makeGauge(
            name: "bookie_ledger_writable_dirs", help: "Ledger directories that take writes (0: the disk is full, writes refused)")
    }

    static let counterHelp: [String: String] = [
        "bookie_WRITE_BYTES": "Bytes of entries written (durable)",
        "bookie_READ_BYTES": "Bytes of entries read",
        "bookie_ADD_ENTRY_count": "Entries added (durable)",
        "bookie_ADD_ENTRY_failed": "Adds that failed",
        "bookie_READ_ENTRY_count": "Entries read",
        "bookie_READ_ENTRY_failed": "Reads that failed",
    ]

    func scrape() -> String {
        let (statistics, ledgerCount) = node.statistics
        status.set(Int64(1))
        ledgers.set(Int64(ledgerCount))
        entries.set(node.entryCount)
        writableDirs.set(Int64(node.store.writeSuspension == nil ? 1 : 0))
        let values: [(String, Int64)] = [
            ("bookie_WRITE_BYTES", statistics.addBytes), ("bookie_READ_BYTES", statistics.readBytes),
            ("bookie_ADD_ENTRY_count", statistics.addEntries), ("bookie_ADD_ENTRY_failed", statistics.addFailures),
            ("bookie_READ_ENTRY_count", statistics.readEntries), ("bookie_READ_ENTRY_failed", statistics.readFailures),
        ]
        for (name, value) in values {
            let entry = counters[name] ?? (registry.makeCounter(name: name, help: Self.counterHelp[name] ?? name), 0)
            if value > entry.last { entry.counter.increment(by: value - entry.last) }
            counters[name] = (entry.counter, max(value, entry.last))
        }
        return registry.emitToString()
    }
}
