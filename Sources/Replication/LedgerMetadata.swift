import Foundation
import LedgerStorage
import Metadata

extension MetadataKeys {
    public static func storageNode(_ address: StorageNodeAddress) -> String { storageNode(address.description) }

    /// The node address of a `/storage-nodes/<host:port>` key, nil for any other key.
    public static func storageNode(fromKey key: String) -> StorageNodeAddress? {
        guard key.hasPrefix(storageNodesPrefix) else { return nil }
        return StorageNodeAddress(String(key.dropFirst(storageNodesPrefix.count)))
    }
}

/// A replicated ledger's record in metadata (`/ledgers/<ledgerID>`): its quorum, its ensemble
/// history and whether it is closed. BookKeeper's `LedgerMetadata`, reduced to what we use.
///
/// A pure value. Written by the ledger's writer (`createLedger`, each ensemble change), by whoever
/// recovers it (closes it), and by the `ReplicationAuditor` (replaces a lost node in a closed
/// ledger); every change after creation is a compare-and-set on the record's version, so a zombie
/// writer's ensemble change fails once a new owner closed the ledger.
///
/// JSON: `{"ensembleSize":3,"writeQuorumSize":3,"ackQuorumSize":2,"ensembles":[{"firstEntryID":0,
/// "nodes":["10.0.0.1:3181",…]}],"state":"open","lastEntryID":-1}`.
public struct LedgerMetadata: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable {
        /// A writer may still append; `lastEntryID` is -1 and means nothing.
        case open
        /// Recovered or closed by its writer: entries `0...lastEntryID` are the ledger, for good.
        case closed
    }

    /// Ensemble segment: entries from `firstEntryID` up to the next segment's are on `nodes`.
    public struct Segment: Codable, Sendable, Equatable {
        public var firstEntryID: Int64
        /// `host:port` of each ensemble index.
        public var nodes: [String]

        public init(firstEntryID: Int64, nodes: [StorageNodeAddress]) {
            self.firstEntryID = firstEntryID
            self.nodes = nodes.map(\.description)
        }

        public var addresses: [StorageNodeAddress] { nodes.compactMap(StorageNodeAddress.init) }
    }

    public var ensembleSize: Int
    public var writeQuorumSize: Int
    public var ackQuorumSize: Int
    public var ensembles: [Segment]
    public var state: State
    /// The last entry of a closed ledger (-1: none); -1 while open.
    public var lastEntryID: Int64

    public init(quorum: QuorumConfiguration, ensemble: [StorageNodeAddress]) {
        ensembleSize = quorum.ensembleSize
        writeQuorumSize = quorum.writeQuorumSize
        ackQuorumSize = quorum.ackQuorumSize
        ensembles = [Segment(firstEntryID: 0, nodes: ensemble)]
        state = .open
        lastEntryID = -1
    }

    public var quorum: QuorumConfiguration {
        QuorumConfiguration(ensembleSize: ensembleSize, writeQuorumSize: writeQuorumSize, ackQuorumSize: ackQuorumSize)
    }

    public var isClosed: Bool { state == .closed }

    /// The ensemble history as the writer's state machine keeps it.
    public var ensembleHistory: [(firstEntryID: Int64, ensemble: [StorageNodeAddress])] {
        ensembles.map { ($0.firstEntryID, $0.addresses) }
    }

    /// The segment holding `entryID` (the first one for negative ids).
    public func segmentIndex(of entryID: Int64) -> Int {
        ensembles.lastIndex { $0.firstEntryID <= entryID } ?? 0
    }

    /// The nodes that should hold `entryID`, in write-set order.
    public func writeSetNodes(of entryID: Int64) -> [StorageNodeAddress] {
        let ensemble = ensembles[segmentIndex(of: entryID)].addresses
        return quorum.writeSet(of: entryID).map { ensemble[$0] }
    }

    /// Every node of every segment, in first-seen order.
    public var allNodes: [StorageNodeAddress] {
        var nodes: [StorageNodeAddress] = []
        for segment in ensembles {
            for node in segment.addresses where !nodes.contains(node) { nodes.append(node) }
        }
        return nodes
    }

    /// The current (last) ensemble.
    public var currentEnsemble: [StorageNodeAddress] { ensembles[ensembles.count - 1].addresses }

    /// The record after replacing ensemble index `index` with `node` for entries from `firstEntryID`
    /// on: a new segment, or the last one rewritten when it starts at `firstEntryID` (as
    /// `LedgerWriteQuorum.nodeReplaced` does, so writer and metadata agree).
    public func replacingNode(at index: Int, with node: StorageNodeAddress, fromEntryID firstEntryID: Int64) -> LedgerMetadata {
        var copy = self
        var ensemble = currentEnsemble
        ensemble[index] = node
        if copy.ensembles[copy.ensembles.count - 1].firstEntryID >= firstEntryID {
            copy.ensembles[copy.ensembles.count - 1] = Segment(
                firstEntryID: copy.ensembles[copy.ensembles.count - 1].firstEntryID, nodes: ensemble)
        } else {
            copy.ensembles.append(Segment(firstEntryID: firstEntryID, nodes: ensemble))
        }
        return copy
    }

    /// The record after replacing `lost` with `node` in every segment (re-replication of a closed
    /// ledger: the copies go to `node`, so the history is rewritten rather than extended).
    public func replacingNodeEverywhere(_ lost: StorageNodeAddress, with node: StorageNodeAddress) -> LedgerMetadata {
        var copy = self
        for index in copy.ensembles.indices {
            copy.ensembles[index].nodes = copy.ensembles[index].nodes.map { $0 == lost.description ? node.description : $0 }
        }
        return copy
    }

    public func encoded() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array(try! encoder.encode(self))
    }

    /// Decodes and checks a record read from metadata.
    public static func decode(_ bytes: [UInt8], ledgerID: Int64) throws(LedgerStoreError) -> LedgerMetadata {
        let record: LedgerMetadata
        do {
            record = try JSONDecoder().decode(LedgerMetadata.self, from: Data(bytes))
        } catch {
            throw .corrupted("metadata \(MetadataKeys.ledger(ledgerID)) is not a ledger record: \(error)")
        }
        let validQuorum = record.ensembleSize >= record.writeQuorumSize && record.writeQuorumSize >= record.ackQuorumSize
            && record.ackQuorumSize >= 1
        guard validQuorum, !record.ensembles.isEmpty, record.ensembles[0].firstEntryID == 0,
              record.ensembles.allSatisfy({ $0.nodes.count == record.ensembleSize && $0.addresses.count == record.ensembleSize }),
              zip(record.ensembles, record.ensembles.dropFirst()).allSatisfy({ $0.firstEntryID < $1.firstEntryID })
        else {
            throw .corrupted(
                "metadata \(MetadataKeys.ledger(ledgerID)) has an impossible quorum or ensemble history; fix or delete the record")
        }
        return record
    }
}

/// A `LedgerMetadata` with the metadata version it was read or written at.
public struct VersionedLedgerMetadata: Sendable, Equatable {
    public var metadata: LedgerMetadata
    public var version: Int64
}

/// Reads and writes `/ledgers/<id>` records. A pure wrapper over a `MetadataStore`; errors become
/// `LedgerStoreError.io` naming the key, so a broker reports them like any storage failure.
public struct LedgerMetadataStore: Sendable {
    /// The outcome of a compare-and-set.
    public enum WriteResult: Sendable, Equatable {
        case written(VersionedLedgerMetadata)
        /// Someone else changed the record first; this is its current state (nil: deleted).
        case conflict(VersionedLedgerMetadata?)
    }

    public let store: any MetadataStore

    public init(store: any MetadataStore) {
        self.store = store
    }

    public func read(ledgerID: Int64) async throws(LedgerStoreError) -> VersionedLedgerMetadata? {
        let key = MetadataKeys.ledger(ledgerID)
        let value: VersionedValue?
        do {
            value = try await store.get(key)
        } catch {
            throw Self.error(error, key: key, doing: "read")
        }
        guard let value else { return nil }
        return VersionedLedgerMetadata(metadata: try LedgerMetadata.decode(value.value, ledgerID: ledgerID), version: value.version)
    }

    /// Writes `metadata` if the record is still at `expectedVersion` (-1: must not exist).
    public func write(ledgerID: Int64, _ metadata: LedgerMetadata, expectedVersion: Int64) async throws(LedgerStoreError) -> WriteResult {
        let key = MetadataKeys.ledger(ledgerID)
        do {
            let version = try await store.put(key, value: metadata.encoded(), expectedVersion: expectedVersion)
            return .written(VersionedLedgerMetadata(metadata: metadata, version: version))
        } catch MetadataStoreError.badVersion {
            return .conflict(try await read(ledgerID: ledgerID))
        } catch {
            throw Self.error(error, key: key, doing: "write")
        }
    }

    public func delete(ledgerID: Int64) async throws(LedgerStoreError) {
        let key = MetadataKeys.ledger(ledgerID)
        do {
            try await store.delete(key, expectedVersion: nil)
        } catch {
            throw Self.error(error, key: key, doing: "delete")
        }
    }

    /// Every ledger with a record, sorted.
    public func ledgerIDs() async throws(LedgerStoreError) -> [Int64] {
        do {
            return try await store.list(prefix: MetadataKeys.ledgersPrefix)
                .compactMap(MetadataKeys.ledgerID(fromKey:)).sorted()
        } catch {
            throw Self.error(error, key: MetadataKeys.ledgersPrefix, doing: "list")
        }
    }

    static func error(_ error: any Error, key: String, doing action: String) -> LedgerStoreError {
        if let error = error as? LedgerStoreError { return error }
        return .io("metadata \(action) of \(key) failed: \(error); check that the metadata store (etcd) is reachable")
    }
}
