import Foundation
import LedgerStorage
import Logging
import Metadata
import NIOConcurrencyHelpers
import ServiceLifecycle

/// Background re-replication (BookKeeper's auditor + replication worker in one), a `Service` every
/// broker runs; only the one holding the ephemeral key `/replication/auditor` works (created with
/// expected version -1; the others retry each pass, so a new leader takes over within a pass of
/// the old one's session ending).
///
/// Each pass (`auditOnce`), for every **closed** ledger in `/ledgers/`:
/// 1. A node of its ensembles absent from `/storage-nodes/` for longer than `lostNodeGracePeriod`
///    is replaced in every segment by a live node outside the ledger (compare-and-set on the record;
///    a lost race is retried next pass).
/// 2. Each live node of the ledger lists the entries it holds (`listEntries`); every entry
///    `0...lastEntryID` missing from a live node of its write set is read from a node that has it
///    and written with a recovery add.
/// Open ledgers are left to their writer (and to recovery). What it did is logged (`auditor.*`,
/// with `ledger.id` and `node`) and counted in `statistics`.
///
/// Owns only its counters and the leader flag; uses the store's node connections.
public final class ReplicationAuditor: Service, Sendable {
    /// What the auditor did since it started.
    public struct Statistics: Sendable, Equatable {
        public var passes = 0
        public var ledgersAudited = 0
        /// Entry copies written to nodes that lacked them.
        public var entriesCopied = 0
        /// Lost nodes replaced in a ledger's ensembles (one per ledger and node).
        public var nodesReplaced = 0
        /// Entries no live node had (nothing to copy from).
        public var entriesUnrecoverable = 0
        public var isLeader = false
        /// Ledgers the last completed pass found with a missing copy or a node that is not live
        /// (0 after a pass: every closed ledger was fully replicated on live nodes).
        public var underReplicatedLastPass = 0
    }

    private let metadata: any MetadataStore
    private let ledgers: LedgerMetadataStore
    private let directory: StorageNodeDirectory
    private let store: ReplicatedLedgerClient
    private let name: String
    private let interval: Duration
    private let lostNodeGracePeriod: Duration
    private let logger: Logger
    private let state = NIOLockedValueBox<(statistics: Statistics, absentSince: [StorageNodeAddress: ContinuousClock.Instant])>((Statistics(), [:]))

    /// `name`: written in the leader key (default host name + process id). `metadata` should be the
    /// broker's `SessionCapableMetadataStore` (the leader key is then ephemeral); a plain store
    /// works for single-process setups and tests.
    public init(
        metadata: any MetadataStore, store: ReplicatedLedgerClient, name: String? = nil, interval: Duration = .seconds(5),
        lostNodeGracePeriod: Duration = .seconds(30), logger: Logger
    ) {
        self.metadata = metadata
        ledgers = LedgerMetadataStore(store: metadata)
        directory = StorageNodeDirectory(metadata: metadata, cacheTTL: .zero)
        self.store = store
        self.name = name ?? "\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)"
        self.interval = interval
        self.lostNodeGracePeriod = lostNodeGracePeriod
        var logger = logger
        logger[metadataKey: "auditor"] = "\(self.name)"
        self.logger = logger
    }

    public var statistics: Statistics { state.withLockedValue { $0.statistics } }

    public func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            if await holdLeadership() {
                do {
                    try await auditOnce()
                } catch {
                    logger.warning("auditor.pass-failed", metadata: ["error": "\(error)"])
                }
            }
            let interval = self.interval
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
        }
        if statistics.isLeader {
            if let current = try? await metadata.get(MetadataKeys.auditorLeader), String(decoding: current.value, as: UTF8.self) == name {
                try? await metadata.delete(MetadataKeys.auditorLeader, expectedVersion: current.version)
            }
            logger.info("auditor.stopped-leading")
        }
    }

    /// Becomes or stays the leader; false if another broker holds the key (or metadata is down).
    func holdLeadership() async -> Bool {
        let key = MetadataKeys.auditorLeader
        do {
            if let current = try await metadata.get(key) {
                let mine = String(decoding: current.value, as: UTF8.self) == name
                setLeader(mine)
                return mine
            }
            if let session = metadata as? any SessionCapableMetadataStore {
                try await session.putEphemeral(key, value: Array(name.utf8), expectedVersion: -1)
            } else {
                try await metadata.put(key, value: Array(name.utf8), expectedVersion: -1)
            }
            setLeader(true)
            return true
        } catch MetadataStoreError.badVersion {
            setLeader(false)
            return false
        } catch {
            logger.warning("auditor.leader-check-failed", metadata: ["error": "\(error)"])
            setLeader(false)
            return false
        }
    }

    private func setLeader(_ leader: Bool) {
        let changed = state.withLockedValue { state in
            defer { state.statistics.isLeader = leader }
            return state.statistics.isLeader != leader
        }
        if changed { logger.notice(leader ? "auditor.leading" : "auditor.not-leading") }
    }

    /// One pass over every closed ledger (see the type's notes). Callable directly (tests, admin).
    public func auditOnce() async throws {
        let live = Set(try await directory.liveNodes())
        let now = ContinuousClock.now
        let ledgerIDs = try await ledgers.ledgerIDs()
        var audited = 0
        var underReplicated = 0
        for ledgerID in ledgerIDs {
            guard var record = try await ledgers.read(ledgerID: ledgerID), record.metadata.isClosed else { continue }
            audited += 1
            let nodes = record.metadata.allNodes
            let lost = state.withLockedValue { state -> [StorageNodeAddress] in
                for node in nodes where !live.contains(node) && state.absentSince[node] == nil { state.absentSince[node] = now }
                for node in live { state.absentSince[node] = nil }
                return nodes.filter { node in state.absentSince[node].map { $0.duration(to: now) > lostNodeGracePeriod } ?? false }
            }
            for node in lost {
                guard let updated = await replace(node, in: ledgerID, record: record, live: live) else { break }
                record = updated
            }
            let complete = try await copyMissingEntries(ledgerID: ledgerID, metadata: record.metadata, live: live)
            if !complete || !record.metadata.allNodes.allSatisfy(live.contains) { underReplicated += 1 }
        }
        state.withLockedValue {
            $0.statistics.passes += 1
            $0.statistics.ledgersAudited += audited
            $0.statistics.underReplicatedLastPass = underReplicated
        }
    }

    /// Replaces `lost` by a live node outside the ledger, by compare-and-set. The new record, or nil
    /// (no spare, or the record changed: next pass).
    private func replace(
        _ lost: StorageNodeAddress, in ledgerID: Int64, record: VersionedLedgerMetadata, live: Set<StorageNodeAddress>
    ) async -> VersionedLedgerMetadata? {
        let used = Set(record.metadata.allNodes)
        guard let replacement = live.subtracting(used).sorted().randomElement() else {
            logger.warning("auditor.no-spare-node", metadata: ["ledger.id": "\(ledgerID)", "node": "\(lost)"])
            return nil
        }
        let changed = record.metadata.replacingNodeEverywhere(lost, with: replacement)
        do {
            switch try await ledgers.write(ledgerID: ledgerID, changed, expectedVersion: record.version) {
            case .written(let written):
                state.withLockedValue { $0.statistics.nodesReplaced += 1 }
                logger.notice("auditor.node-replaced", metadata: ["ledger.id": "\(ledgerID)", "node": "\(lost)", "replacement": "\(replacement)"])
                return written
            case .conflict:
                return nil
            }
        } catch {
            logger.warning("auditor.replace-failed", metadata: ["ledger.id": "\(ledgerID)", "node": "\(lost)", "error": "\(error)"])
            return nil
        }
    }

    /// Returns whether every entry was already on every live node of its write set.
    @discardableResult
    private func copyMissingEntries(ledgerID: Int64, metadata: LedgerMetadata, live: Set<StorageNodeAddress>) async throws -> Bool {
        guard metadata.lastEntryID >= 0 else { return true }
        var held: [StorageNodeAddress: Set<Int64>] = [:]
        for node in metadata.allNodes where live.contains(node) {
            if let ids = await store.listEntries(ledgerID: ledgerID, from: 0, on: node) {
                held[node] = Set(ids.filter { $0 <= metadata.lastEntryID })
            }
        }
        var copied = 0
        var unrecoverable = 0
        for entryID in 0...metadata.lastEntryID {
            let targets = metadata.writeSetNodes(of: entryID).filter { held[$0].map { !$0.contains(entryID) } ?? false }
            guard !targets.isEmpty else { continue }
            let sources = held.filter { $0.value.contains(entryID) }.map(\.key).sorted()
            guard let payload = await store.readEntry(ledgerID: ledgerID, entryID: entryID, from: sources) else {
                unrecoverable += 1
                continue
            }
            let accepted = await store.recoveryAdd(ledgerID: ledgerID, entryID: entryID, payload: payload, to: targets)
            for target in targets.prefix(accepted) { held[target]?.insert(entryID) }
            copied += accepted
        }
        if copied > 0 || unrecoverable > 0 {
            logger.notice("auditor.ledger-rereplicated", metadata: [
                "ledger.id": "\(ledgerID)", "entries.copied": "\(copied)", "entries.unrecoverable": "\(unrecoverable)"])
        }
        state.withLockedValue {
            $0.statistics.entriesCopied += copied
            $0.statistics.entriesUnrecoverable += unrecoverable
        }
        return copied == 0 && unrecoverable == 0
    }
}
