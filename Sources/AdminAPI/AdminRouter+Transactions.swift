import BrokerCore
import Foundation
import Hummingbird
import ManagedLedger

/// Pulsar's transactions admin API (`/admin/v3/transactions/...`, also under `/admin/v2`), in its
/// JSON shapes: the coordinator's stats, one transaction's metadata, the slow ones, a topic's
/// buffer and a subscription's pending acknowledgements. Superusers only (like every path the
/// access rules do not name).
extension AdminRouter {
    struct CoordinatorStats: Encodable {
        var state: String
        var leastSigBits: UInt64
        var lowWaterMark: UInt64
        var ongoingTxnSize: Int
        var createdCount: Int64
        var committedCount: Int64
        var abortedCount: Int64
        var timeoutCount: Int64
    }

    struct TransactionMetadata: Encodable {
        var txnId: String
        var status: String
        var openTimestamp: Int64
        var timeoutAt: Int64
        var owner: String?
        var producedPartitions: [String: [String: String]]
        var ackedPartitions: [String: [String: [String: String]]]
    }

    struct BufferStats: Encodable {
        var state = "Ready"
        var maxReadPosition: String
        var ongoingTxnSize: Int
        var ongoingTxns: [String]
        var abortedTxnSize: Int
    }

    struct PendingAckStats: Encodable {
        var state = "Ready"
        var ongoingTxnSize: Int
        var pendingAcks: [String: [String]]
    }

    static func metadata(_ record: TransactionRecord) -> TransactionMetadata {
        var acked: [String: [String: [String: String]]] = [:]
        for subscription in record.subscriptions { acked[subscription.topic, default: [:]][subscription.subscription] = [:] }
        return TransactionMetadata(
            txnId: record.id.description, status: record.status.rawValue, openTimestamp: record.openedAtMs,
            timeoutAt: record.timeoutAtMs, owner: record.owner,
            producedPartitions: Dictionary(record.partitions.map { ($0, [:]) }, uniquingKeysWith: { first, _ in first }),
            ackedPartitions: acked)
    }

    static func addTransactionRoutes(_ router: Router<AdminRequestContext>, _ broker: BrokerService) {
        for version in ["v2", "v3"] {
            let base = "/admin/\(version)/transactions"
            router.get(RouterPath("\(base)/coordinatorStats")) { _, _ in
                let coordinator = try broker.requireTransactionCoordinator()
                let stats = await coordinator.currentStatistics()
                let open = await coordinator.transactions()
                return try json([
                    "\(coordinator.coordinatorID)": CoordinatorStats(
                        state: "Ready", leastSigBits: open.map(\.id.leastBits).max() ?? 0,
                        lowWaterMark: (open.map(\.id.leastBits).min() ?? 1) - 1, ongoingTxnSize: open.count,
                        createdCount: stats.created, committedCount: stats.committed, abortedCount: stats.aborted,
                        timeoutCount: stats.timedOut),
                ])
            }
            router.get(RouterPath("\(base)/transactionMetadata/:most/:least")) { _, context in
                let coordinator = try broker.requireTransactionCoordinator()
                let id = try transactionID(context)
                guard let record = await coordinator.record(id) else {
                    if let status = await coordinator.status(id) {
                        throw BrokerError(.notFound, "transaction \(id) is \(status.rawValue); ended transactions are not kept")
                    }
                    throw BrokerError(.transactionNotFound, "transaction \(id) is not known to coordinator \(coordinator.coordinatorID)")
                }
                return try json(metadata(record))
            }
            router.get(RouterPath("\(base)/slowTransactions/:timeout")) { _, context in
                let coordinator = try broker.requireTransactionCoordinator()
                guard let timeoutMs = Int64(try parameter(context, "timeout")), timeoutMs >= 0 else {
                    throw BrokerError(.badRequest, "the timeout is a number of milliseconds")
                }
                let now = broker.configuration.managedLedger.clock.nowMs()
                let slow = await coordinator.transactions().filter { now - $0.openedAtMs >= timeoutMs }
                return try json(Dictionary(slow.map { ($0.id.description, metadata($0)) }, uniquingKeysWith: { first, _ in first }))
            }
            router.get(RouterPath("\(base)/transactionBufferStats/:tenant/:namespace/:topic")) { _, context in
                _ = try broker.requireTransactionCoordinator()
                let stats = try await broker.transactionBufferStatistics(topicName(context, .persistent))
                return try json(BufferStats(
                    maxReadPosition: stats.maxReadPosition.map { "\($0.ledgerID):\($0.entryID)" } ?? "",
                    ongoingTxnSize: stats.ongoing.count, ongoingTxns: stats.ongoing.map(\.description),
                    abortedTxnSize: stats.aborted.count))
            }
            router.get(RouterPath("\(base)/pendingAckStats/:tenant/:namespace/:topic/:subscription")) { _, context in
                _ = try broker.requireTransactionCoordinator()
                let stats = try await broker.transactionPendingAckStatistics(
                    topicName(context, .persistent), subscription: parameter(context, "subscription"))
                return try json(PendingAckStats(
                    ongoingTxnSize: stats.transactions.count,
                    pendingAcks: Dictionary(uniqueKeysWithValues: stats.transactions.map { id, positions in
                        (id.description, positions.map { "\($0.ledgerID):\($0.entryID)" })
                    })))
            }
        }
    }

    static func transactionID(_ context: AdminRequestContext) throws -> TransactionID {
        guard let most = UInt64(try parameter(context, "most")), let least = UInt64(try parameter(context, "least")) else {
            throw BrokerError(.badRequest, "a transaction id is two unsigned numbers: /{mostSigBits}/{leastSigBits}")
        }
        return TransactionID(mostBits: most, leastBits: least)
    }
}
