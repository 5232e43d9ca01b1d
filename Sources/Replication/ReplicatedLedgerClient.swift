import LedgerStorage
import Logging
import Metadata
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Configuration of a `ReplicatedLedgerClient` over a fixed list of nodes, without ledger metadata
/// (tests and single-process setups; a cluster uses `ReplicatedLedgerClient.connect(metadata:…)`).
public struct ReplicatedLedgerClientConfiguration: Sendable {
    /// The storage nodes to place ledgers on (ensembles and replacements are picked from these).
    public var nodes: [StorageNodeAddress]
    public var quorum: QuorumConfiguration
    /// How long one storage request may take before the node counts as failed.
    public var requestTimeout: TimeAmount = .seconds(10)
    /// TLS and credentials for secured nodes; the default: plain text, nothing presented.
    public var security = StorageClientSecurity()

    public init(nodes: [StorageNodeAddress], quorum: QuorumConfiguration) {
        precondition(nodes.count >= quorum.ensembleSize, "need at least E storage nodes")
        self.nodes = nodes
        self.quorum = quorum
    }
}

/// Limits and timings of the replicated store, in one place.
public enum ReplicatedLedgerClientLimits {
    /// A node whose request failed is not picked for a new ensemble or a replacement for this long
    /// (its `/storage-nodes/` key may outlive it by the session TTL).
    public static let failedNodeQuarantine: Duration = .seconds(30)
    /// Attempts of one metadata change (ensemble change, close) that keeps losing races or failing.
    public static let maxMetadataAttempts = 5
    /// First wait between two metadata attempts; doubles each time.
    public static let metadataRetryBackoff: Duration = .milliseconds(200)
}

/// A `LedgerClient` whose ledgers live on remote storage nodes, written with BookKeeper's quorum
/// protocol (`LedgerWriteQuorum`): what a broker of a cluster uses.
///
/// Two modes:
/// - **Metadata** (`connect(metadata:…)`, or `init(metadata:directory:…)`): each ledger has a record
///   `/ledgers/<id>` (`LedgerMetadata`): created by `createLedger` on an ensemble picked among the live
///   nodes (`StorageNodeDirectory`), changed by compare-and-set on every ensemble change and closed by
///   `recoverLedger` / `closeLedger`. Any client (another broker) reads a ledger through that record.
/// - **Fixed** (`init(configuration:)`): a fixed node list, the ensemble history only in this client's
///   memory; a ledger it did not write is assumed to be on `initialEnsemble(for:)`.
///
/// Threads: writer state (`LedgerWriteQuorum` per ledger, node connections) lives on one event loop
/// of the client's own (`eventLoop`); `append` hops there and completions run there, in entry order
/// per ledger. Ledger records (`catalog`) are behind a lock. Nothing blocks a thread: every other
/// call awaits metadata calls and NIO futures (reads deliver on the caller's loop).
///
/// Ensemble changes run as a `Task` per change (the metadata store is async); its result hops back
/// to the loop. Writes to the failed index wait meanwhile and confirmations are held (see
/// `LedgerWriteQuorum`).
public final class ReplicatedLedgerClient: LedgerClient, @unchecked Sendable {
    public typealias Completion = @Sendable (Result<Void, LedgerStoreError>) -> Void
    typealias Writer = LedgerWriteQuorum<StorageNodeAddress>

    /// Where ledgers are placed and recorded.
    private enum Placement: Sendable {
        case fixed(ReplicatedLedgerClientConfiguration)
        case metadata(LedgerMetadataStore, StorageNodeDirectory, defaultReplication: LedgerReplicationOptions?)
    }

    /// A ledger's record as this store knows it. `version` is the metadata version (-1 in fixed mode).
    struct CatalogEntry: Sendable {
        var metadata: LedgerMetadata
        var version: Int64
        /// A `LedgerWriteQuorum` for it lives on the loop (reads may find in-flight entries there).
        var hasWriter: Bool
    }

    /// An ensemble change waiting for, or being recorded in, metadata. Loop only.
    private struct ReplacementQueue {
        var pending: [(index: Int, failed: StorageNodeAddress)] = []
        var inFlight = false
    }

    private enum ReplacementOutcome: Sendable {
        case replaced(StorageNodeAddress)
        case unavailable
        case fenced
        case failed(LedgerStoreError)
    }

    private let placement: Placement
    public let requestTimeout: TimeAmount
    private let security: StorageClientSecurity
    public let eventLoop: any EventLoop
    private let eventLoopGroup: any EventLoopGroup
    private let ownsGroup: Bool
    private let logger: Logger

    /// Ledger records known to this store. Any thread.
    private let catalog = NIOLockedValueBox<[Int64: CatalogEntry]>([:])
    /// Nodes whose requests failed recently, with when. Any thread.
    private let failedNodes = NIOLockedValueBox<[StorageNodeAddress: ContinuousClock.Instant]>([:])

    // Only on `eventLoop`.
    private var writers: [Int64: Writer] = [:]
    private var completions: [Int64: [Int64: Completion]] = [:]
    private var replacements: [Int64: ReplacementQueue] = [:]
    private var clients: [StorageNodeAddress: EventLoopFuture<StorageNodeClient>] = [:]
    private var isClosed = false

    /// A store over a fixed node list, without metadata. `eventLoopGroup`: where the node
    /// connections run; nil makes a one-thread group of its own.
    public convenience init(configuration: ReplicatedLedgerClientConfiguration, eventLoopGroup: (any EventLoopGroup)? = nil, logger: Logger) {
        self.init(
            placement: .fixed(configuration), requestTimeout: configuration.requestTimeout, security: configuration.security,
            eventLoopGroup: eventLoopGroup, logger: logger)
    }

    /// A store that records ledgers in `metadata` and places them on `directory`'s live nodes.
    /// `defaultReplication` nil: 3/3/2 when at least three nodes are live, else n/n/min(2, n),
    /// decided per ledger at `createLedger`. `security`: TLS and the credentials it presents to
    /// secured nodes.
    public convenience init(
        metadata: any MetadataStore, directory: StorageNodeDirectory, defaultReplication: LedgerReplicationOptions?,
        requestTimeout: TimeAmount = .seconds(10), security: StorageClientSecurity = StorageClientSecurity(),
        eventLoopGroup: (any EventLoopGroup)? = nil, logger: Logger
    ) {
        self.init(
            placement: .metadata(LedgerMetadataStore(store: metadata), directory, defaultReplication: defaultReplication),
            requestTimeout: requestTimeout, security: security, eventLoopGroup: eventLoopGroup, logger: logger)
    }

    private init(
        placement: Placement, requestTimeout: TimeAmount, security: StorageClientSecurity,
        eventLoopGroup: (any EventLoopGroup)?, logger: Logger
    ) {
        self.placement = placement
        self.requestTimeout = requestTimeout
        self.security = security
        if let eventLoopGroup {
            self.eventLoopGroup = eventLoopGroup
            ownsGroup = false
        } else {
            self.eventLoopGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            ownsGroup = true
        }
        eventLoop = self.eventLoopGroup.next()
        self.logger = logger
    }

    /// The cluster store a broker uses: ledger records in `metadata`, ensembles placed on the nodes
    /// registered under `/storage-nodes/`. Checks that the metadata store answers (lists the nodes).
    public static func connect(
        metadata: any SessionCapableMetadataStore, defaultReplication: LedgerReplicationOptions?,
        security: StorageClientSecurity = StorageClientSecurity(), logger: Logger
    ) async throws -> ReplicatedLedgerClient {
        if let defaultReplication, !defaultReplication.isValid {
            throw LedgerStoreError.io(
                "replication \(defaultReplication.ensembleSize)/\(defaultReplication.writeQuorumSize)/\(defaultReplication.ackQuorumSize) is invalid: need E >= Qw >= Qa >= 1")
        }
        let directory = StorageNodeDirectory(metadata: metadata)
        let nodes = try await directory.liveNodes()
        logger.info("replicated-store.connected", metadata: [
            "storage-nodes": "\(nodes.map(\.description).joined(separator: ","))",
            "replication": "\(defaultReplication.map { "\($0.ensembleSize)/\($0.writeQuorumSize)/\($0.ackQuorumSize)" } ?? "auto")",
        ])
        return ReplicatedLedgerClient(
            metadata: metadata, directory: directory, defaultReplication: defaultReplication, security: security, logger: logger)
    }

    /// Fixed mode: the ensemble a new ledger starts on: E consecutive nodes of the list, starting at
    /// `ledgerID % n`. Metadata mode: nil (placement depends on the live nodes).
    public func initialEnsemble(for ledgerID: Int64) -> [StorageNodeAddress] {
        guard case .fixed(let configuration) = placement else { return [] }
        let nodes = configuration.nodes
        let first = Int(ledgerID.magnitude % UInt64(nodes.count))
        return (0..<configuration.quorum.ensembleSize).map { nodes[(first + $0) % nodes.count] }
    }

    /// The ensemble history of a ledger this store knows (for tests and admin), nil otherwise.
    public func ensembleHistory(of ledgerID: Int64) -> [(firstEntryID: Int64, ensemble: [StorageNodeAddress])]? {
        catalog.withLockedValue { $0[ledgerID] }?.metadata.ensembleHistory
    }

    /// The ledger's record as this store last saw it (nil if unknown here).
    public func cachedMetadata(of ledgerID: Int64) -> LedgerMetadata? {
        catalog.withLockedValue { $0[ledgerID] }?.metadata
    }

    // MARK: - Ledger lifecycle

    public func createLedger(ledgerID: Int64, replication: LedgerReplicationOptions?) async throws(LedgerStoreError) {
        switch placement {
        case .fixed(let configuration):
            var quorum = configuration.quorum
            if let replication {
                guard replication.isValid, replication.ensembleSize <= configuration.nodes.count else {
                    throw .io("ledger \(ledgerID): replication \(replication.ensembleSize)/\(replication.writeQuorumSize)/\(replication.ackQuorumSize) does not fit \(configuration.nodes.count) storage nodes")
                }
                quorum = QuorumConfiguration(replication)
            }
            let metadata = LedgerMetadata(quorum: quorum, ensemble: placeFixedEnsemble(for: ledgerID, quorum: quorum, configuration: configuration))
            try await installWriter(ledgerID: ledgerID, entry: CatalogEntry(metadata: metadata, version: -1, hasWriter: true))
        case .metadata(let ledgers, let directory, let defaultReplication):
            let live = try await liveNodes(directory)
            let healthy = live.filter { !isQuarantined($0) }
            let options = replication ?? defaultReplication ?? Self.automaticReplication(liveNodeCount: healthy.count)
            guard options.isValid else {
                throw .io("ledger \(ledgerID): replication \(options.ensembleSize)/\(options.writeQuorumSize)/\(options.ackQuorumSize) is invalid: need E >= Qw >= Qa >= 1")
            }
            guard healthy.count >= options.ensembleSize else {
                throw .io(
                    "ledger \(ledgerID) needs \(options.ensembleSize) storage nodes, \(healthy.count) are live and healthy (of \(live.count) under \(MetadataKeys.storageNodesPrefix)); start more storage nodes or lower the ensemble size")
            }
            let ensemble = pickNodes(count: options.ensembleSize, from: healthy)
            let metadata = LedgerMetadata(quorum: QuorumConfiguration(options), ensemble: ensemble)
            switch try await ledgers.write(ledgerID: ledgerID, metadata, expectedVersion: -1) {
            case .written(let written):
                try await installWriter(ledgerID: ledgerID, entry: CatalogEntry(metadata: metadata, version: written.version, hasWriter: true))
                logger.info("replicated-store.ledger-created", metadata: [
                    "ledger.id": "\(ledgerID)", "ensemble": "\(ensemble.map(\.description).joined(separator: ","))",
                    "quorum": "\(options.ensembleSize)/\(options.writeQuorumSize)/\(options.ackQuorumSize)",
                ])
            case .conflict:
                throw .io("ledger \(ledgerID) already has a record at \(MetadataKeys.ledger(ledgerID)); ledger ids must come from the metadata counter, never reused")
            }
        }
    }

    /// 3/3/2 with at least three nodes, else n/n/min(2, n) (0 nodes: 1/1/1, refused for lack of nodes).
    public static func automaticReplication(liveNodeCount: Int) -> LedgerReplicationOptions {
        if liveNodeCount >= 3 { return LedgerReplicationOptions(ensembleSize: 3, writeQuorumSize: 3, ackQuorumSize: 2) }
        let count = max(1, liveNodeCount)
        return LedgerReplicationOptions(ensembleSize: count, writeQuorumSize: count, ackQuorumSize: min(2, count))
    }

    public func openLedger(ledgerID: Int64) async throws(LedgerStoreError) {
        guard case .metadata(let ledgers, _, _) = placement else { return }
        if catalog.withLockedValue({ $0[ledgerID]?.hasWriter }) == true { return }
        guard let record = try await ledgers.read(ledgerID: ledgerID) else {
            throw .ledgerNotFound(ledgerID: ledgerID)
        }
        remember(ledgerID: ledgerID, record)
    }

    /// BookKeeper recovery by a new writer. If the record is closed, its `lastEntryID`. Otherwise
    /// `LedgerRecovery` (a pure state machine, driven here over the storage nodes) fences the
    /// ledger's current ensemble, lists what the fenced nodes hold from the last segment's first
    /// entry on, reads the end back and writes the recovered tail back (recovery adds) to the nodes
    /// of its write set that lack it; then the record is closed at that entry by compare-and-set. If
    /// the old writer changed its ensemble meanwhile, the close loses the race and recovery starts
    /// over on the new ensemble. No record: -1 (never written).
    public func recoverLedger(ledgerID: Int64) async throws(LedgerStoreError) -> Int64 {
        for attempt in 1...ReplicatedLedgerClientLimits.maxMetadataAttempts {
            guard let current = try await recordForRecovery(ledgerID: ledgerID) else { return -1 }
            if current.metadata.isClosed {
                remember(ledgerID: ledgerID, current)
                return current.metadata.lastEntryID
            }
            try await stopWriter(ledgerID: ledgerID, .fenced(ledgerID: ledgerID))
            let lastEntryID = try await fenceAndRecover(ledgerID: ledgerID, metadata: current.metadata)
            var closed = current.metadata
            closed.state = .closed
            closed.lastEntryID = lastEntryID
            guard case .metadata(let ledgers, _, _) = placement else {
                remember(ledgerID: ledgerID, VersionedLedgerMetadata(metadata: closed, version: -1))
                return lastEntryID
            }
            switch try await ledgers.write(ledgerID: ledgerID, closed, expectedVersion: current.version) {
            case .written(let written):
                remember(ledgerID: ledgerID, written)
                logger.info("replicated-store.ledger-recovered", metadata: ["ledger.id": "\(ledgerID)", "ledger.last-entry-id": "\(lastEntryID)"])
                return lastEntryID
            case .conflict(nil):
                throw .ledgerNotFound(ledgerID: ledgerID)
            case .conflict(let now?) where now.metadata.isClosed:
                remember(ledgerID: ledgerID, now)
                return now.metadata.lastEntryID
            case .conflict:
                logger.notice("replicated-store.recovery-raced-ensemble-change", metadata: ["ledger.id": "\(ledgerID)", "attempt": "\(attempt)"])
            }
        }
        throw .io("ledger \(ledgerID): recovery lost \(ReplicatedLedgerClientLimits.maxMetadataAttempts) races with ensemble changes of its previous writer; retry the topic load")
    }

    /// Closes a ledger this store wrote, at its last confirmed entry, once nothing is in flight
    /// (the broker rolled it): later appends fail with `.fenced`; the record becomes closed, so
    /// the auditor may re-replicate it. A ledger not written here, or already closed: nothing.
    public func closeLedger(ledgerID: Int64) async throws(LedgerStoreError) {
        let lastEntryID: Int64?
        do {
            lastEntryID = try await eventLoop.submit { () -> Int64? in
                guard var writer = self.writers[ledgerID] else { return nil }
                let last = writer.lastAddConfirmed
                let actions = writer.stop(.fenced(ledgerID: ledgerID))
                self.run(actions, ledgerID: ledgerID, writer: &writer)
                self.writers[ledgerID] = nil
                self.replacements[ledgerID] = nil
                self.catalog.withLockedValue { $0[ledgerID]?.hasWriter = false }
                return last
            }.get()
        } catch {
            throw .closed
        }
        guard let lastEntryID, var entry = catalog.withLockedValue({ $0[ledgerID] }), !entry.metadata.isClosed else { return }
        entry.metadata.state = .closed
        entry.metadata.lastEntryID = lastEntryID
        guard case .metadata(let ledgers, _, _) = placement else {
            remember(ledgerID: ledgerID, VersionedLedgerMetadata(metadata: entry.metadata, version: -1))
            return
        }
        var expected = entry.version
        for _ in 1...ReplicatedLedgerClientLimits.maxMetadataAttempts {
            switch try await ledgers.write(ledgerID: ledgerID, entry.metadata, expectedVersion: expected) {
            case .written(let written):
                remember(ledgerID: ledgerID, written)
                logger.info("replicated-store.ledger-closed", metadata: ["ledger.id": "\(ledgerID)", "ledger.last-entry-id": "\(lastEntryID)"])
                return
            case .conflict(nil):
                throw .ledgerNotFound(ledgerID: ledgerID)
            case .conflict(let now?):
                if now.metadata.isClosed {
                    remember(ledgerID: ledgerID, now)
                    return
                }
                // Our own ensemble change landed after we read the version: keep its history.
                entry.metadata.ensembles = now.metadata.ensembles
                expected = now.version
            }
        }
        throw .io("ledger \(ledgerID): could not close its metadata record after \(ReplicatedLedgerClientLimits.maxMetadataAttempts) attempts")
    }

    // MARK: - Appends and reads

    public func append(ledgerID: Int64, entryID: Int64, payload: ByteBuffer, completion: @escaping Completion) {
        eventLoop.execute {
            self.appendOnLoop(ledgerID: ledgerID, entryID: entryID, payload: payload, completion: completion)
        }
    }

    public func appendBatch(
        ledgerID: Int64, firstEntryID: Int64, payloads: [ByteBuffer], completion: @escaping Completion
    ) {
        guard !payloads.isEmpty else {
            completion(.success(()))
            return
        }
        let remaining = NIOLockedValueBox<(count: Int, done: Bool)>((payloads.count, false))
        let once: Completion = { result in
            let report = remaining.withLockedValue { state -> Bool in
                state.count -= 1
                guard !state.done else { return false }
                if case .failure = result {
                    state.done = true
                    return true
                }
                if state.count == 0 {
                    state.done = true
                    return true
                }
                return false
            }
            if report { completion(result) }
        }
        eventLoop.execute {
            for (offset, payload) in payloads.enumerated() {
                self.appendOnLoop(ledgerID: ledgerID, entryID: firstEntryID + Int64(offset), payload: payload, completion: once)
            }
        }
    }

    /// Entries are read from the nodes of each one's write set, in parallel.
    public func readEntries(
        ledgerID: Int64, firstEntryID: Int64, lastEntryID: Int64, on eventLoop: any EventLoop
    ) -> EventLoopFuture<[Result<ByteBuffer, LedgerStoreError>]> {
        guard firstEntryID <= lastEntryID else { return eventLoop.makeSucceededFuture([]) }
        return eventLoop.makeFutureWithTask {
            await withTaskGroup(of: (Int, Result<ByteBuffer, LedgerStoreError>).self) { group in
                for (index, entryID) in (firstEntryID...lastEntryID).enumerated() {
                    group.addTask {
                        do throws(LedgerStoreError) {
                            return (index, .success(try await self.read(ledgerID: ledgerID, entryID: entryID)))
                        } catch {
                            return (index, .failure(error))
                        }
                    }
                }
                var results = [Result<ByteBuffer, LedgerStoreError>](
                    repeating: .failure(.closed), count: Int(lastEntryID - firstEntryID + 1))
                for await (index, result) in group { results[index] = result }
                return results
            }
        }
    }

    /// Reads one entry from a node of its write set. The auditor may have moved a closed ledger's
    /// entries off a lost node since this store read the record: then the record is read again
    /// once, and the read retried if the ensembles changed.
    public func read(ledgerID: Int64, entryID: Int64) async throws(LedgerStoreError) -> ByteBuffer {
        let entry = try await catalogEntry(ledgerID: ledgerID)
        do {
            return try await read(ledgerID: ledgerID, entryID: entryID, entry: entry)
        } catch {
            guard case .metadata(let ledgers, _, _) = placement, entry.metadata.isClosed,
                  let fresh = try? await ledgers.read(ledgerID: ledgerID),
                  fresh.metadata.ensembles != entry.metadata.ensembles
            else { throw error }
            remember(ledgerID: ledgerID, fresh)
            return try await read(
                ledgerID: ledgerID, entryID: entryID, entry: CatalogEntry(metadata: fresh.metadata, version: fresh.version, hasWriter: false))
        }
    }

    /// Deletes the metadata record first (from then on the ledger does not exist for any broker),
    /// then the entries on every node of its ensembles (best effort: a node that is down keeps
    /// them as garbage).
    public func deleteLedger(ledgerID: Int64) async throws(LedgerStoreError) {
        let entry = try await catalogEntry(ledgerID: ledgerID)
        _ = try? await eventLoop.submit { () -> Void in
            if var writer = self.writers.removeValue(forKey: ledgerID) {
                let actions = writer.stop(.ledgerNotFound(ledgerID: ledgerID))
                self.run(actions, ledgerID: ledgerID, writer: &writer)
            }
            self.replacements[ledgerID] = nil
        }.get()
        if case .metadata(let ledgers, _, _) = placement {
            try await ledgers.delete(ledgerID: ledgerID)
        }
        catalog.withLockedValue { $0[ledgerID] = nil }
        for node in entry.metadata.allNodes {
            if let response = try? await send(.deleteLedger(ledgerID: ledgerID), to: node).get(),
               response.status != .ok, response.status != .notFound {
                logger.warning("replicated-store.delete-refused", metadata: ["ledger.id": "\(ledgerID)", "node": "\(node)", "error": "\(response.text)"])
            }
        }
        logger.info("replicated-store.ledger-deleted", metadata: ["ledger.id": "\(ledgerID)"])
    }

    private func read(ledgerID: Int64, entryID: Int64, entry: CatalogEntry) async throws(LedgerStoreError) -> ByteBuffer {
        if entry.metadata.isClosed && entryID > entry.metadata.lastEntryID || entryID < 0 {
            throw .entryNotFound(ledgerID: ledgerID, entryID: entryID)
        }
        if entry.hasWriter,
           let pending = try? await eventLoop.submit({ self.writers[ledgerID]?.pendingPayload(of: entryID) }).get() {
            return pending
        }
        let nodes = entry.metadata.writeSetNodes(of: entryID)
        var lastError = LedgerStoreError.entryNotFound(ledgerID: ledgerID, entryID: entryID)
        var notFoundCount = 0
        for node in nodes {
            do {
                let response = try await send(.readEntry(ledgerID: ledgerID, entryID: entryID), to: node).get()
                switch response.status {
                case .ok: return response.body
                case .notFound: notFoundCount += 1
                default: lastError = Self.error(response, ledgerID: ledgerID)
                }
            } catch {
                lastError = .io("ledger \(ledgerID) entry \(entryID): storage node \(node) unreachable (\(error)), and no other node of the write set has the entry")
            }
        }
        if notFoundCount == nodes.count {
            throw .entryNotFound(ledgerID: ledgerID, entryID: entryID)
        }
        throw lastError
    }

    /// A closed ledger's last entry, as recorded; nil for one still open (its writer's confirmations
    /// live on this store's loop, and the broker needs them only for a full disk, which a
    /// replicated store does not report).
    public func writtenLastAddConfirmed(ledgerID: Int64) -> Int64? {
        guard let entry = catalog.withLockedValue({ $0[ledgerID] }), entry.metadata.isClosed else { return nil }
        return entry.metadata.lastEntryID
    }

    /// The highest entry a node of the current ensemble holds for a ledger (a hint: `recoverLedger`
    /// finds the exact end); a closed ledger's last entry; nil if the ledger is unknown.
    public func highestStoredEntry(ledgerID: Int64) async -> Int64? {
        guard let entry = try? await catalogEntry(ledgerID: ledgerID) else { return nil }
        if entry.metadata.isClosed { return entry.metadata.lastEntryID }
        if entry.hasWriter, let local = try? await eventLoop.submit({ self.writers[ledgerID]?.lastAddConfirmed }).get() {
            return local
        }
        var highest: Int64?
        for node in entry.metadata.currentEnsemble {
            if let response = try? await send(.readLastAddConfirmed(ledgerID: ledgerID), to: node).get(),
               let value = response.lastAddConfirmed {
                highest = max(highest ?? -1, value)
            }
        }
        return highest ?? -1
    }

    /// Metadata mode: every ledger with a record. Fixed mode: the ledgers this store knows.
    public func ledgerIDs() async -> [Int64] {
        if case .metadata(let ledgers, _, _) = placement {
            if let ids = try? await ledgers.ledgerIDs() { return ids }
            logger.warning("replicated-store.list-failed")
        }
        return catalog.withLockedValue { Array($0.keys) }.sorted()
    }

    /// Never refuses for space: a storage node's full disk is one failed write of the quorum.
    public var writeSuspension: LedgerStoreError? { nil }

    public func shutdown() async {
        let clients = (try? await eventLoop.submit { () -> [EventLoopFuture<StorageNodeClient>] in
            guard !self.isClosed else { return [] }
            self.isClosed = true
            for ledgerID in self.writers.keys.sorted() {
                var writer = self.writers[ledgerID]!
                let actions = writer.stop(.closed)
                self.run(actions, ledgerID: ledgerID, writer: &writer)
                self.writers[ledgerID] = writer
            }
            let clients = Array(self.clients.values)
            self.clients.removeAll()
            return clients
        }.get()) ?? []
        for client in clients {
            _ = try? await client.flatMap { $0.close() }.get()
        }
        if ownsGroup {
            try? await eventLoopGroup.shutdownGracefully()
        }
    }

    // MARK: - Catalog

    private func remember(ledgerID: Int64, _ record: VersionedLedgerMetadata) {
        catalog.withLockedValue { catalog in
            let hasWriter = catalog[ledgerID]?.hasWriter ?? false
            catalog[ledgerID] = CatalogEntry(metadata: record.metadata, version: record.version, hasWriter: hasWriter && !record.metadata.isClosed)
        }
    }

    /// The record of a ledger, from the catalog, else (metadata mode) read from metadata, else
    /// (fixed mode) its initial ensemble.
    private func catalogEntry(ledgerID: Int64) async throws(LedgerStoreError) -> CatalogEntry {
        if let entry = catalog.withLockedValue({ $0[ledgerID] }) { return entry }
        switch placement {
        case .fixed(let configuration):
            return CatalogEntry(
                metadata: LedgerMetadata(quorum: configuration.quorum, ensemble: initialEnsemble(for: ledgerID)), version: -1, hasWriter: false)
        case .metadata(let ledgers, _, _):
            guard let record = try await ledgers.read(ledgerID: ledgerID) else { throw .ledgerNotFound(ledgerID: ledgerID) }
            remember(ledgerID: ledgerID, record)
            return CatalogEntry(metadata: record.metadata, version: record.version, hasWriter: false)
        }
    }

    /// The record recovery starts from: read fresh from metadata (another store may have changed
    /// it), or in fixed mode the catalog / initial ensemble.
    private func recordForRecovery(ledgerID: Int64) async throws(LedgerStoreError) -> VersionedLedgerMetadata? {
        switch placement {
        case .metadata(let ledgers, _, _):
            return try await ledgers.read(ledgerID: ledgerID)
        case .fixed(let configuration):
            if let entry = catalog.withLockedValue({ $0[ledgerID] }) {
                return VersionedLedgerMetadata(metadata: entry.metadata, version: -1)
            }
            return VersionedLedgerMetadata(
                metadata: LedgerMetadata(quorum: configuration.quorum, ensemble: initialEnsemble(for: ledgerID)), version: -1)
        }
    }

    // MARK: - Placement

    private func liveNodes(_ directory: StorageNodeDirectory) async throws(LedgerStoreError) -> [StorageNodeAddress] {
        do {
            return try await directory.liveNodes()
        } catch {
            throw LedgerMetadataStore.error(error, key: MetadataKeys.storageNodesPrefix, doing: "list")
        }
    }

    private func quarantine(_ node: StorageNodeAddress) {
        failedNodes.withLockedValue { $0[node] = .now }
    }

    private func isQuarantined(_ node: StorageNodeAddress) -> Bool {
        failedNodes.withLockedValue { failed in
            guard let since = failed[node] else { return false }
            if since.duration(to: .now) > ReplicatedLedgerClientLimits.failedNodeQuarantine {
                failed[node] = nil
                return false
            }
            return true
        }
    }

    /// `count` nodes of `candidates`, the least used by this store's open ledgers first, ties at random.
    private func pickNodes(count: Int, from candidates: [StorageNodeAddress]) -> [StorageNodeAddress] {
        let usage = catalog.withLockedValue { catalog -> [StorageNodeAddress: Int] in
            var usage: [StorageNodeAddress: Int] = [:]
            for entry in catalog.values where entry.hasWriter {
                for node in entry.metadata.currentEnsemble { usage[node, default: 0] += 1 }
            }
            return usage
        }
        return Array(candidates.shuffled().sorted { usage[$0, default: 0] < usage[$1, default: 0] }.prefix(count))
    }

    /// Fixed mode: the initial ensemble, with nodes known to have failed swapped for healthy spares when possible.
    private func placeFixedEnsemble(
        for ledgerID: Int64, quorum: QuorumConfiguration, configuration: ReplicatedLedgerClientConfiguration
    ) -> [StorageNodeAddress] {
        let nodes = configuration.nodes
        let first = Int(ledgerID.magnitude % UInt64(nodes.count))
        var ensemble = (0..<quorum.ensembleSize).map { nodes[(first + $0) % nodes.count] }
        for index in ensemble.indices where isQuarantined(ensemble[index]) {
            if let spare = nodes.first(where: { !isQuarantined($0) && !ensemble.contains($0) }) {
                ensemble[index] = spare
            }
        }
        return ensemble
    }

    // MARK: - Writers (on the loop)

    private func installWriter(ledgerID: Int64, entry: CatalogEntry) async throws(LedgerStoreError) {
        let refusal: LedgerStoreError?
        do {
            refusal = try await eventLoop.submit { () -> LedgerStoreError? in
                if self.isClosed { return .closed }
                guard self.writers[ledgerID] == nil else {
                    return .io("ledger \(ledgerID) is already being written by this store; ledger ids must not be reused")
                }
                self.writers[ledgerID] = Writer(ledgerID: ledgerID, configuration: entry.metadata.quorum, ensemble: entry.metadata.currentEnsemble)
                self.catalog.withLockedValue { $0[ledgerID] = entry }
                return nil
            }.get()
        } catch {
            throw .closed
        }
        if let refusal { throw refusal }
    }

    private func stopWriter(ledgerID: Int64, _ error: LedgerStoreError) async throws(LedgerStoreError) {
        do {
            try await eventLoop.submit {
                if var writer = self.writers.removeValue(forKey: ledgerID) {
                    let actions = writer.stop(error)
                    self.run(actions, ledgerID: ledgerID, writer: &writer)
                }
                self.replacements[ledgerID] = nil
                self.catalog.withLockedValue { $0[ledgerID]?.hasWriter = false }
            }.get()
        } catch {
            throw .closed
        }
    }

    private func appendOnLoop(ledgerID: Int64, entryID: Int64, payload: ByteBuffer, completion: @escaping Completion) {
        if isClosed {
            completion(.failure(.closed))
            return
        }
        var writer: Writer
        if let existing = writers[ledgerID] {
            writer = existing
        } else if catalog.withLockedValue({ $0[ledgerID] != nil }) {
            // Recovered, closed or opened for reading here: not ours to write.
            completion(.failure(.fenced(ledgerID: ledgerID)))
            return
        } else if case .fixed(let configuration) = placement {
            // Fixed mode allows appending without `createLedger` (as before ledger metadata existed).
            let ensemble = placeFixedEnsemble(for: ledgerID, quorum: configuration.quorum, configuration: configuration)
            writer = Writer(ledgerID: ledgerID, configuration: configuration.quorum, ensemble: ensemble)
            catalog.withLockedValue {
                $0[ledgerID] = CatalogEntry(metadata: LedgerMetadata(quorum: configuration.quorum, ensemble: ensemble), version: -1, hasWriter: true)
            }
        } else {
            completion(.failure(.io("ledger \(ledgerID) has no writer in this store: call createLedger before the first append")))
            return
        }
        completions[ledgerID, default: [:]][entryID] = completion
        let actions = writer.addEntry(entryID: entryID, payload: payload)
        run(actions, ledgerID: ledgerID, writer: &writer)
        writers[ledgerID] = writer
    }

    private func event(ledgerID: Int64, _ body: (inout Writer) -> [Writer.Action]) {
        guard var writer = writers[ledgerID] else { return }
        let actions = body(&writer)
        run(actions, ledgerID: ledgerID, writer: &writer)
        writers[ledgerID] = writer
    }

    /// Carries out the state machine's actions. Fixed mode answers a replacement at once; metadata
    /// mode queues it and records it in metadata first (`startReplacement`).
    private func run(_ actions: [Writer.Action], ledgerID: Int64, writer: inout Writer) {
        for action in actions {
            switch action {
            case .sendEntry(let entryID, let payload, let node):
                let request = StorageRequest.addEntry(ledgerID: ledgerID, entryID: entryID, payload: payload)
                send(request, to: node).whenComplete { result in
                    // Always a fresh loop turn: a failure can complete synchronously inside `run`,
                    // which holds this ledger's writer as an `inout` copy.
                    self.eventLoop.execute {
                        let writeResult: Writer.WriteResult
                        switch result {
                        case .success(let response) where response.status == .ok: writeResult = .ok
                        case .success(let response) where response.status == .fenced: writeResult = .fenced
                        case .success(let response):
                            self.logger.warning("replicated-store.write-refused", metadata: [
                                "ledger.id": "\(ledgerID)", "entry.id": "\(entryID)", "node": "\(node)", "error": "\(response.text)"])
                            writeResult = .failed
                        case .failure(let error):
                            self.logger.warning("replicated-store.write-failed", metadata: [
                                "ledger.id": "\(ledgerID)", "entry.id": "\(entryID)", "node": "\(node)", "error": "\(error)"])
                            writeResult = .failed
                        }
                        self.event(ledgerID: ledgerID) { $0.writeCompleted(entryID: entryID, node: node, result: writeResult) }
                    }
                }
            case .replaceNode(let index, let failed):
                quarantine(failed)
                clients[failed] = nil
                switch placement {
                case .fixed(let configuration):
                    let replacement = configuration.nodes.first { !isQuarantined($0) && !writer.ensemble.contains($0) }
                    let followUp: [Writer.Action]
                    if let replacement {
                        logger.notice("replicated-store.ensemble-changed", metadata: [
                            "ledger.id": "\(ledgerID)", "failed": "\(failed)", "replacement": "\(replacement)"])
                        followUp = writer.nodeReplaced(ensembleIndex: index, with: replacement)
                        let history = writer.ensembleHistory
                        catalog.withLockedValue { catalog in
                            catalog[ledgerID]?.metadata.ensembles = history.map { LedgerMetadata.Segment(firstEntryID: $0.firstEntryID, nodes: $0.ensemble) }
                        }
                    } else {
                        logger.warning("replicated-store.no-replacement", metadata: ["ledger.id": "\(ledgerID)", "failed": "\(failed)"])
                        followUp = writer.replacementUnavailable(ensembleIndex: index)
                    }
                    run(followUp, ledgerID: ledgerID, writer: &writer)
                case .metadata:
                    replacements[ledgerID, default: ReplacementQueue()].pending.append((index, failed))
                    // Starts on the next loop turn, once `writer` is stored back.
                    eventLoop.execute { self.startReplacement(ledgerID: ledgerID) }
                }
            case .confirmEntries(let from, let through):
                for entryID in from...through {
                    completions[ledgerID]?.removeValue(forKey: entryID)?(.success(()))
                }
            case .failEntries(let entryIDs, let error):
                for entryID in entryIDs {
                    completions[ledgerID]?.removeValue(forKey: entryID)?(.failure(error))
                }
            }
        }
    }

    /// Records the next queued ensemble change of `ledgerID` in metadata (one at a time per ledger).
    private func startReplacement(ledgerID: Int64) {
        guard var queue = replacements[ledgerID], !queue.inFlight, let next = queue.pending.first,
              let writer = writers[ledgerID], case .metadata(let ledgers, let directory, _) = placement
        else { return }
        guard writer.state == .writing else {
            replacements[ledgerID] = nil
            return
        }
        queue.inFlight = true
        replacements[ledgerID] = queue
        let segmentStart = writer.nextSegmentFirstEntryID
        let ensemble = writer.ensemble
        Task {
            let outcome = await self.recordReplacement(
                ledgerID: ledgerID, index: next.index, failed: next.failed, segmentStart: segmentStart, ensemble: ensemble,
                ledgers: ledgers, directory: directory)
            self.eventLoop.execute { self.replacementRecorded(ledgerID: ledgerID, index: next.index, failed: next.failed, outcome: outcome) }
        }
    }

    /// The compare-and-set of one ensemble change, retried on transient failures and on a version
    /// race with a record that is still open.
    private func recordReplacement(
        ledgerID: Int64, index: Int, failed: StorageNodeAddress, segmentStart: Int64, ensemble: [StorageNodeAddress],
        ledgers: LedgerMetadataStore, directory: StorageNodeDirectory
    ) async -> ReplacementOutcome {
        var lastError = LedgerStoreError.io("ledger \(ledgerID): ensemble change not recorded")
        var backoff = ReplicatedLedgerClientLimits.metadataRetryBackoff
        for _ in 1...ReplicatedLedgerClientLimits.maxMetadataAttempts {
            do {
                directory.invalidate()
                let candidates = try await liveNodes(directory).filter { !ensemble.contains($0) && $0 != failed && !isQuarantined($0) }
                guard let replacement = pickNodes(count: 1, from: candidates).first else { return .unavailable }
                guard let current = catalog.withLockedValue({ $0[ledgerID] }) else { return .fenced }
                if current.metadata.isClosed { return .fenced }
                let changed = current.metadata.replacingNode(at: index, with: replacement, fromEntryID: segmentStart)
                switch try await ledgers.write(ledgerID: ledgerID, changed, expectedVersion: current.version) {
                case .written(let written):
                    remember(ledgerID: ledgerID, written)
                    return .replaced(replacement)
                case .conflict(nil):
                    return .fenced
                case .conflict(let now?):
                    if now.metadata.isClosed { return .fenced }
                    // Still open, so only this store changes it: take the newer version and try again.
                    remember(ledgerID: ledgerID, now)
                }
            } catch {
                lastError = error
                logger.warning("replicated-store.ensemble-change-retry", metadata: ["ledger.id": "\(ledgerID)", "error": "\(error)"])
                try? await Task.sleep(for: backoff)
                backoff *= 2
            }
        }
        return .failed(lastError)
    }

    private func replacementRecorded(ledgerID: Int64, index: Int, failed: StorageNodeAddress, outcome: ReplacementOutcome) {
        guard var queue = replacements[ledgerID] else { return }
        queue.inFlight = false
        if !queue.pending.isEmpty { queue.pending.removeFirst() }
        replacements[ledgerID] = queue
        let base: Logger.Metadata = ["ledger.id": "\(ledgerID)", "failed": "\(failed)", "ensemble.index": "\(index)"]
        switch outcome {
        case .replaced(let replacement):
            logger.notice("replicated-store.ensemble-changed", metadata: base.merging(["replacement": "\(replacement)"]) { $1 })
            event(ledgerID: ledgerID) { $0.nodeReplaced(ensembleIndex: index, with: replacement) }
        case .unavailable:
            logger.warning("replicated-store.no-replacement", metadata: base)
            event(ledgerID: ledgerID) { $0.replacementUnavailable(ensembleIndex: index) }
        case .fenced:
            logger.notice("replicated-store.writer-fenced-by-metadata", metadata: base)
            event(ledgerID: ledgerID) { $0.stop(.fenced(ledgerID: ledgerID)) }
        case .failed(let error):
            logger.error("replicated-store.ensemble-change-failed", metadata: base.merging(["error": "\(error)"]) { $1 })
            event(ledgerID: ledgerID) { $0.stop(error) }
        }
        startReplacement(ledgerID: ledgerID)
    }

    // MARK: - Recovery

    /// Fence on the current ensemble, find the last entry, write back. Returns the last entry id.
    private func fenceAndRecover(ledgerID: Int64, metadata: LedgerMetadata) async throws(LedgerStoreError) -> Int64 {
        var recovery = LedgerRecovery(
            ledgerID: ledgerID, ensemble: metadata.currentEnsemble,
            firstEntryID: metadata.ensembles[metadata.ensembles.count - 1].firstEntryID, configuration: metadata.quorum)
        var actions = recovery.start()
        while !actions.isEmpty {
            var next: [LedgerRecovery<StorageNodeAddress>.Action] = []
            // The fences go out together; everything else the machine asks for one at a time.
            let fences = actions.compactMap { action -> StorageNodeAddress? in
                if case .fence(let node) = action { return node }
                return nil
            }
            for (node, result) in await requestAll(fences.map { ($0, StorageRequest.fence(ledgerID: ledgerID)) }) {
                switch result {
                case .success(let response) where response.status == .ok:
                    next += recovery.fenceAnswered(node: node, fenced: true)
                case .success(let response):
                    logger.warning("replicated-store.fence-refused", metadata: ["ledger.id": "\(ledgerID)", "node": "\(node)", "error": "\(response.text)"])
                    next += recovery.fenceAnswered(node: node, fenced: false)
                case .failure(let error):
                    logger.warning("replicated-store.fence-failed", metadata: ["ledger.id": "\(ledgerID)", "node": "\(node)", "error": "\(error)"])
                    next += recovery.fenceAnswered(node: node, fenced: false)
                }
            }
            for action in actions {
                switch action {
                case .fence:
                    break
                case .listEntries(let node, let fromEntryID):
                    next += recovery.listed(node: node, entryIDs: await listEntries(ledgerID: ledgerID, from: fromEntryID, on: node))
                case .readEntry(let entryID, let node):
                    let result: LedgerRecovery<StorageNodeAddress>.ReadResult
                    do {
                        let response = try await send(.readEntry(ledgerID: ledgerID, entryID: entryID), to: node).get()
                        switch response.status {
                        case .ok: result = .entry(response.body)
                        case .notFound: result = .notFound
                        case .corrupted: result = .corrupted
                        default: result = .failed("\(response.status) \(response.text)")
                        }
                    } catch {
                        result = .failed("\(error)")
                    }
                    next += recovery.readAnswered(entryID: entryID, node: node, result)
                case .recoveryAdd(let entryID, let payload, let nodes):
                    let accepted = await recoveryAdd(ledgerID: ledgerID, entryID: entryID, payload: payload, to: nodes)
                    next += recovery.recoveryAddsAnswered(entryID: entryID, accepted: accepted)
                case .droppedPhantomEntry(let entryID, let nodes):
                    logger.warning("replicated-store.recovery-dropped-phantom-entry", metadata: [
                        "ledger.id": "\(ledgerID)", "entry.id": "\(entryID)", "nodes": "\(nodes.map(\.description).joined(separator: ","))"])
                case .writeBackUnreadable(let entryID):
                    logger.warning("replicated-store.write-back-unreadable", metadata: ["ledger.id": "\(ledgerID)", "entry.id": "\(entryID)"])
                case .finished(let lastEntryID, let copies):
                    if copies > 0 {
                        logger.info("replicated-store.recovery-written-back", metadata: ["ledger.id": "\(ledgerID)", "entries.copied": "\(copies)"])
                    }
                    return lastEntryID
                case .failed(let error):
                    throw error
                }
            }
            actions = next
        }
        throw .io("ledger \(ledgerID): recovery stopped without an outcome; retry")
    }

    /// Sends a recovery add to each target; returns how many accepted it.
    func recoveryAdd(ledgerID: Int64, entryID: Int64, payload: ByteBuffer, to targets: [StorageNodeAddress]) async -> Int {
        var accepted = 0
        let requests = targets.map { ($0, StorageRequest.recoveryAddEntry(ledgerID: ledgerID, entryID: entryID, payload: payload)) }
        for (node, result) in await requestAll(requests) {
            if case .success(let response) = result, response.status == .ok {
                accepted += 1
            } else {
                logger.warning("replicated-store.recovery-add-failed", metadata: [
                    "ledger.id": "\(ledgerID)", "entry.id": "\(entryID)", "node": "\(node)", "result": "\(result)"])
            }
        }
        return accepted
    }

    /// The entry from the first of `sources` that has it.
    func readEntry(ledgerID: Int64, entryID: Int64, from sources: [StorageNodeAddress]) async -> ByteBuffer? {
        for node in sources {
            if let response = try? await send(.readEntry(ledgerID: ledgerID, entryID: entryID), to: node).get(), response.status == .ok {
                return response.body
            }
        }
        return nil
    }

    /// Every entry id `node` holds for the ledger from `fromEntryID` on (paged); nil if it did not answer.
    func listEntries(ledgerID: Int64, from fromEntryID: Int64, on node: StorageNodeAddress) async -> [Int64]? {
        var ids: [Int64] = []
        var from = fromEntryID
        while true {
            guard let response = try? await send(.listEntries(ledgerID: ledgerID, fromEntryID: from), to: node).get() else { return nil }
            if response.status == .notFound { return ids }
            guard let page = response.entryIDs else { return nil }
            ids += page
            guard page.count == ReplicationLimits.maxListedEntriesPerResponse, let last = page.last else { return ids }
            from = last + 1
        }
    }

    /// Sends each request and waits for all answers, in the given order.
    func requestAll(_ requests: [(StorageNodeAddress, StorageRequest)]) async -> [(StorageNodeAddress, Result<StorageResponse, any Error>)] {
        let futures = requests.map { (node, request) in (node, send(request, to: node)) }
        var results: [(StorageNodeAddress, Result<StorageResponse, any Error>)] = []
        for (node, future) in futures {
            do {
                results.append((node, .success(try await future.get())))
            } catch {
                quarantineIfUnreachable(node, error)
                results.append((node, .failure(error)))
            }
        }
        return results
    }

    private func quarantineIfUnreachable(_ node: StorageNodeAddress, _ error: any Error) {
        if error is ReplicationError || error is ChannelError || error is IOError {
            quarantine(node)
        }
    }

    // MARK: - Connections

    /// Sends one request to `node` (connecting if needed). Thread-safe; completes on the store's loop.
    func send(_ request: StorageRequest, to node: StorageNodeAddress) -> EventLoopFuture<StorageResponse> {
        eventLoop.flatSubmit { self.client(for: node).flatMap { $0.send(request) } }
    }

    private func client(for node: StorageNodeAddress) -> EventLoopFuture<StorageNodeClient> {
        if isClosed {
            return eventLoop.makeFailedFuture(ReplicationError(.connectionClosed, "replicated ledger store is closed"))
        }
        if let existing = clients[node] { return existing }
        let connecting = StorageNodeClient.connect(
            to: node, eventLoopGroup: eventLoop, requestTimeout: requestTimeout, security: security)
        clients[node] = connecting
        connecting.whenComplete { result in
            if case .success(let client) = result {
                client.channel.closeFuture.hop(to: self.eventLoop).whenComplete { _ in
                    if let current = self.clients[node], current === connecting { self.clients[node] = nil }
                }
            } else if let current = self.clients[node], current === connecting {
                self.clients[node] = nil
            }
        }
        return connecting
    }

    static func error(_ response: StorageResponse, ledgerID: Int64) -> LedgerStoreError {
        switch response.status {
        case .fenced: return .fenced(ledgerID: ledgerID)
        case .corrupted: return .corrupted(response.text)
        default: return .io(response.text)
        }
    }
}

extension QuorumConfiguration {
    public init(_ options: LedgerReplicationOptions) {
        self.init(ensembleSize: options.ensembleSize, writeQuorumSize: options.writeQuorumSize, ackQuorumSize: options.ackQuorumSize)
    }
}
