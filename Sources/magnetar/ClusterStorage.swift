import ArgumentParser
import LedgerStorage
import Logging
import Metadata
import Replication
import ServiceLifecycle

/// The ledger store of a cluster broker: ledgers on the storage nodes, written with quorums.
struct ClusterStorage {
    var ledgerStore: any LedgerStore
    /// Background services the broker process runs with it (re-replication).
    var services: [any Service]

    static func connect(
        metadata: any SessionCapableMetadataStore, staticNodes: String?, replication: LedgerReplicationOptions?, logger: Logger
    ) async throws -> ClusterStorage {
        guard let staticNodes else {
            throw ValidationError("--storage-nodes is required (host:port,...)")
        }
        let nodes = try staticNodes.split(separator: ",").map { text -> StorageNodeAddress in
            guard let node = StorageNodeAddress(String(text)) else {
                throw ValidationError("--storage-nodes: '\(text)' is not host:port")
            }
            return node
        }
        let ensemble = replication?.ensembleSize ?? min(3, nodes.count)
        let quorum = QuorumConfiguration(
            ensembleSize: ensemble, writeQuorumSize: replication?.writeQuorumSize ?? ensemble,
            ackQuorumSize: replication?.ackQuorumSize ?? min(2, ensemble))
        let store = ReplicatedLedgerStore(
            configuration: ReplicatedLedgerStoreConfiguration(nodes: nodes, quorum: quorum), logger: logger)
        return ClusterStorage(ledgerStore: store, services: [])
    }
}
