import ArgumentParser
import BrokerCore
import ManagedLedger
import LedgerStorage
import Logging
import Metadata
import Replication
import ServiceLifecycle

/// The ledger store of a cluster broker: ledgers on the storage nodes (registered under
/// `/storage-nodes/`, or a fixed list), written with quorums, recorded in `/ledgers/`; and the
/// re-replication auditor the broker runs beside it.
struct ClusterStorage {
    var ledgerStore: ReplicatedLedgerClient
    var auditor: ReplicationAuditor

    static func connect(
        metadata: any SessionCapableMetadataStore, staticNodes: String?, replication: LedgerReplicationOptions?,
        auditInterval: Duration, lostNodeGracePeriod: Duration, auditorName: String,
        security: StorageClientSecurity, logger: Logger
    ) async throws -> ClusterStorage {
        let store: ReplicatedLedgerClient
        if let staticNodes {
            let nodes = try staticNodes.split(separator: ",").map { text -> StorageNodeAddress in
                guard let node = StorageNodeAddress(String(text)) else {
                    throw ValidationError("--storage-nodes: '\(text)' is not host:port")
                }
                return node
            }
            store = ReplicatedLedgerClient(
                metadata: metadata, directory: StorageNodeDirectory(fixedNodes: nodes), defaultReplication: replication,
                security: security, logger: logger)
        } else {
            store = try await ReplicatedLedgerClient.connect(
                metadata: metadata, defaultReplication: replication, security: security, logger: logger)
        }
        let auditor = ReplicationAuditor(
            metadata: metadata, store: store, name: auditorName, interval: auditInterval,
            lostNodeGracePeriod: lostNodeGracePeriod, logger: logger)
        return ClusterStorage(ledgerStore: store, auditor: auditor)
    }

    /// The auditor's counters in the admin API's shape.
    static func report(_ statistics: ReplicationAuditor.Statistics) -> ReplicationStatusReport {
        ReplicationStatusReport(
            isLeader: statistics.isLeader, auditsCompleted: statistics.passes, ledgersAudited: statistics.ledgersAudited,
            entriesCopied: statistics.entriesCopied, nodesReplaced: statistics.nodesReplaced,
            entriesUnrecoverable: statistics.entriesUnrecoverable, underReplicatedLedgers: statistics.underReplicatedLastPass)
    }
}
