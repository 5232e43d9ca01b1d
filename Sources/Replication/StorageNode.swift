import Foundation
import LedgerStorage
import NIOConcurrencyHelpers
import NIOCore

/// A storage node's ledgers: what `StorageNodeServer` serves, and what the simulation drives
/// directly. Thread-safe: one lock, held across `store.append` (so the in-memory store may run an
/// append's completion under it: a completion must not call back into this node synchronously).
///
/// Why a layer over `LedgerStore`: a node of a striped ensemble (E > Qw), or one that replaced a
/// failed node mid-ledger, holds a *sparse* subset of a ledger's entries, and may receive them out
/// of order, while a `LedgerStore` ledger is dense (entry ids 0, 1, 2, …). So replicated entry `e`
/// of ledger `L` is stored as the next *local* entry `k` of local ledger `L`, with an 8-byte header:
/// `[i64 entryID][payload]` (see `docs/STORAGE_PROTOCOL.md`). The map `e → k` lives in memory and
/// is rebuilt at start by reading every local entry's header.
///
/// `lastAddConfirmed(ledgerID:)` reports the highest entry id this node holds durably — not
/// BookKeeper's piggybacked LAC; recovery only uses it as a hint.
public final class StorageNode: @unchecked Sendable {
    private struct LedgerIndex {
        var localEntryByEntryID: [Int64: Int64] = [:]
        var nextLocalEntryID: Int64 = 0
    }

    public let store: any LedgerStore
    /// Guards `ledgers`; held across `store.append` so local ids reach the store in order.
    private let lock = NSLock()
    private var ledgers: [Int64: LedgerIndex] = [:]
    /// Ledgers fenced since this process started: a re-sent entry it already holds is refused too.
    /// (After a restart the store still refuses new entries; a duplicate of a held one is answered ok.)
    private var fencedLedgers: Set<Int64> = []
    /// Highest durable entry id per ledger. Its own lock: updated from append completions, which
    /// may run while `lock` is held (the in-memory store completes inside `append`).
    private let durableMaximum = NIOLockedValueBox<[Int64: Int64]>([:])
    /// Appends the store refused or failed (a full disk, a fence), recorded by their completions
    /// (which may run while `lock` is held) and forgotten under `lock` by the next call that looks
    /// at the entry maps: the entry is not held, and its local id is the store's next one again
    /// (a store that refuses an entry takes none after it), so a re-send is stored, not answered
    /// "held" without being durable.
    private let failedAppends = NIOLockedValueBox<[(ledgerID: Int64, entryID: Int64, local: Int64)]>([])
    /// Entries whose append has not completed successfully (ledger → entry ids): in the maps but
    /// not held yet. A success removes its id; a failure leaves it until `forgetFailedAppends`.
    private let pendingAppends = NIOLockedValueBox<[Int64: Set<Int64>]>([:])

    public static let entryHeaderBytes = 8

    /// What the node has served since it started (BookKeeper's `bookie_*` counters).
    public struct Statistics: Sendable, Equatable {
        public var addEntries: Int64 = 0
        public var addBytes: Int64 = 0
        public var addFailures: Int64 = 0
        public var readEntries: Int64 = 0
        public var readBytes: Int64 = 0
        public var readFailures: Int64 = 0
    }

    private let counters = NIOLockedValueBox(Statistics())

    /// The counters, and the number of ledgers the node holds.
    public var statistics: (counters: Statistics, ledgers: Int) {
        let ledgerCount = lock.withLock { ledgers.count }
        return (counters.withLockedValue { $0 }, ledgerCount)
    }

    /// Entries held over all ledgers (BookKeeper's `bookie_entries_count`).
    public var entryCount: Int64 {
        lock.withLock { ledgers.values.reduce(0) { $0 + Int64($1.localEntryByEntryID.count) } }
    }

    /// Rebuilds the entry maps from `store` (reads every entry's header once).
    public init(store: any LedgerStore) throws(LedgerStoreError) {
        self.store = store
        var maxima: [Int64: Int64] = [:]
        for ledgerID in store.ledgerIDs() {
            var index = LedgerIndex()
            let last = store.lastAddConfirmed(ledgerID: ledgerID) ?? -1
            var highest: Int64 = -1
            if last >= 0 {
                for local in 0...last {
                    let stored = try store.read(ledgerID: ledgerID, entryID: local)
                    guard let entryID = stored.getInteger(at: stored.readerIndex, as: Int64.self) else {
                        throw .corrupted("ledger \(ledgerID) local entry \(local) has no replication header")
                    }
                    index.localEntryByEntryID[entryID] = local
                    highest = max(highest, entryID)
                }
            }
            index.nextLocalEntryID = last + 1
            ledgers[ledgerID] = index
            maxima[ledgerID] = highest
        }
        durableMaximum.withLockedValue { $0 = maxima }
    }

    /// Stores entry `entryID`; `completion` runs once it is durable. An entry already held
    /// completes at once with success (idempotent re-sends and recovery write-backs), or with
    /// `.fenced` for an ordinary add once the ledger is fenced. `recovery: true` (a recovery add:
    /// a recovering writer or the auditor writing back an entry) is accepted on a fenced ledger.
    public func addEntry(
        ledgerID: Int64, entryID: Int64, payload: ByteBuffer, recovery: Bool = false,
        completion: @escaping @Sendable (Result<Void, LedgerStoreError>) -> Void
    ) {
        guard entryID >= 0 else {
            completion(.failure(.outOfOrder(ledgerID: ledgerID, expected: 0, got: entryID)))
            return
        }
        var record = ByteBuffer()
        record.reserveCapacity(Self.entryHeaderBytes + payload.readableBytes)
        record.writeInteger(entryID)
        var body = payload
        record.writeBuffer(&body)
        let durableMaximum = self.durableMaximum
        let failedAppends = self.failedAppends
        lock.lock()
        forgetFailedAppends()
        if fencedLedgers.contains(ledgerID) && !recovery {
            // Refused now, before it enters the maps (the store would refuse it only later, from
            // its journal thread, and `entryIDs` would list it meanwhile).
            lock.unlock()
            completion(.failure(.fenced(ledgerID: ledgerID)))
            return
        }
        var index = ledgers[ledgerID] ?? LedgerIndex()
        if index.localEntryByEntryID[entryID] != nil {
            let inFlight = pendingAppends.withLockedValue { $0[ledgerID]?.contains(entryID) == true }
            lock.unlock()
            // A recovery add must not be answered ok on the strength of an add that may still fail.
            completion(inFlight && recovery ? .failure(.io("ledger \(ledgerID) entry \(entryID) is still being stored; retry")) : .success(()))
            return
        }
        let local = index.nextLocalEntryID
        index.nextLocalEntryID += 1
        index.localEntryByEntryID[entryID] = local
        ledgers[ledgerID] = index
        let pendingAppends = self.pendingAppends
        pendingAppends.withLockedValue { _ = $0[ledgerID, default: []].insert(entryID) }
        store.append(ledgerID: ledgerID, entryID: local, payload: record, recovery: recovery) { result in
            switch result {
            case .success:
                durableMaximum.withLockedValue { maxima in
                    maxima[ledgerID] = max(maxima[ledgerID] ?? -1, entryID)
                }
                pendingAppends.withLockedValue { _ = $0[ledgerID]?.remove(entryID) }
            case .failure:
                failedAppends.withLockedValue { $0.append((ledgerID, entryID, local)) }
            }
            completion(result)
        }
        lock.unlock()
    }

    /// Undoes the entry maps' part of the appends that failed since the last call. Caller holds `lock`.
    private func forgetFailedAppends() {
        let failed = failedAppends.withLockedValue { failed in
            defer { failed.removeAll() }
            return failed
        }
        for (ledgerID, entryID, local) in failed {
            guard var index = ledgers[ledgerID] else { continue }
            if index.localEntryByEntryID[entryID] == local {
                index.localEntryByEntryID[entryID] = nil
                pendingAppends.withLockedValue { _ = $0[ledgerID]?.remove(entryID) }
            }
            index.nextLocalEntryID = min(index.nextLocalEntryID, local)
            ledgers[ledgerID] = index
        }
    }

    public func readEntry(ledgerID: Int64, entryID: Int64) throws(LedgerStoreError) -> ByteBuffer {
        lock.lock()
        let local = ledgers[ledgerID]?.localEntryByEntryID[entryID]
        let known = ledgers[ledgerID] != nil
        lock.unlock()
        guard known else { throw .ledgerNotFound(ledgerID: ledgerID) }
        guard let local else { throw .entryNotFound(ledgerID: ledgerID, entryID: entryID) }
        var stored = try store.read(ledgerID: ledgerID, entryID: local)
        guard stored.readInteger(as: Int64.self) == entryID else {
            throw .corrupted("ledger \(ledgerID) local entry \(local) does not hold entry \(entryID)")
        }
        return stored
    }

    /// The entry ids held durably for the ledger from `fromEntryID` on, ascending, at most `limit`;
    /// nil if the ledger is unknown. An append still in flight (or failed) is not listed: recovery
    /// counts what is listed, and an add refused by a fence completes only later.
    public func entryIDs(ledgerID: Int64, from fromEntryID: Int64, limit: Int) -> [Int64]? {
        lock.lock()
        forgetFailedAppends()
        let ids = ledgers[ledgerID].map { Array($0.localEntryByEntryID.keys) }
        let pending = pendingAppends.withLockedValue { $0[ledgerID] ?? [] }
        lock.unlock()
        guard let ids else { return nil }
        return Array(ids.filter { $0 >= fromEntryID && !pending.contains($0) }.sorted().prefix(limit))
    }

    /// Highest entry id held durably, -1 if none, nil if the ledger is unknown.
    public func lastAddConfirmed(ledgerID: Int64) -> Int64? {
        lock.lock()
        let known = ledgers[ledgerID] != nil
        lock.unlock()
        guard known else { return nil }
        return durableMaximum.withLockedValue { $0[ledgerID] ?? -1 }
    }

    /// Fences the ledger (creating it, empty and fenced, if unknown); returns `lastAddConfirmed`.
    /// Waits for the disk (the fence is journaled): the server calls it from a thread pool. New adds
    /// are refused from the moment it is called; the lock is not held while the store syncs, so the
    /// adds of other ledgers go on meanwhile.
    public func fence(ledgerID: Int64) throws(LedgerStoreError) -> Int64 {
        lock.lock()
        let newlyFenced = fencedLedgers.insert(ledgerID).inserted
        lock.unlock()
        do {
            _ = try store.fence(ledgerID: ledgerID)
        } catch {
            if newlyFenced {
                lock.lock()
                fencedLedgers.remove(ledgerID)
                lock.unlock()
            }
            throw error
        }
        lock.lock()
        if ledgers[ledgerID] == nil {
            ledgers[ledgerID] = LedgerIndex()
        }
        lock.unlock()
        return durableMaximum.withLockedValue { $0[ledgerID] ?? -1 }
    }

    /// Deletes the ledger. Waits for the disk: the server calls it from a thread pool.
    public func deleteLedger(ledgerID: Int64) throws(LedgerStoreError) {
        try store.deleteLedger(ledgerID: ledgerID)
        lock.lock()
        defer { lock.unlock() }
        ledgers[ledgerID] = nil
        fencedLedgers.remove(ledgerID)
        pendingAppends.withLockedValue { $0[ledgerID] = nil }
        durableMaximum.withLockedValue { $0[ledgerID] = nil }
    }

    /// Answers one request; `respond` runs once (for `addEntry`, after the entry is durable).
    public func handle(_ request: StorageRequest, respond: @escaping @Sendable (StorageResponse) -> Void) {
        let type = request.typeByte
        @Sendable func failure(_ error: LedgerStoreError) -> StorageResponse {
            var text = ByteBuffer()
            text.writeString(error.description)
            return StorageResponse(requestType: type, status: StorageStatus(error), body: text)
        }
        func value(_ number: Int64) -> StorageResponse {
            var body = ByteBuffer()
            body.writeInteger(number)
            return StorageResponse(requestType: type, status: .ok, body: body)
        }
        switch request {
        case .addEntry(let ledgerID, let entryID, let payload):
            let bytes = Int64(payload.readableBytes)
            let counters = self.counters
            addEntry(ledgerID: ledgerID, entryID: entryID, payload: payload) { result in
                switch result {
                case .success:
                    counters.withLockedValue { $0.addEntries += 1; $0.addBytes += bytes }
                    respond(StorageResponse(requestType: type, status: .ok))
                case .failure(let error):
                    counters.withLockedValue { $0.addFailures += 1 }
                    respond(failure(error))
                }
            }
        case .recoveryAddEntry(let ledgerID, let entryID, let payload):
            addEntry(ledgerID: ledgerID, entryID: entryID, payload: payload, recovery: true) { result in
                switch result {
                case .success: respond(StorageResponse(requestType: type, status: .ok))
                case .failure(let error): respond(failure(error))
                }
            }
        case .listEntries(let ledgerID, let fromEntryID):
            if let ids = entryIDs(ledgerID: ledgerID, from: fromEntryID, limit: ReplicationLimits.maxListedEntriesPerResponse) {
                respond(StorageResponse(requestType: type, status: .ok, body: StorageResponse.entryList(ids)))
            } else {
                respond(failure(.ledgerNotFound(ledgerID: ledgerID)))
            }
        case .readEntry(let ledgerID, let entryID):
            do {
                let body = try readEntry(ledgerID: ledgerID, entryID: entryID)
                counters.withLockedValue { $0.readEntries += 1; $0.readBytes += Int64(body.readableBytes) }
                respond(StorageResponse(requestType: type, status: .ok, body: body))
            } catch {
                counters.withLockedValue { $0.readFailures += 1 }
                respond(failure(error))
            }
        case .readLastAddConfirmed(let ledgerID):
            if let last = lastAddConfirmed(ledgerID: ledgerID) {
                respond(value(last))
            } else {
                respond(failure(.ledgerNotFound(ledgerID: ledgerID)))
            }
        case .fence(let ledgerID):
            do {
                respond(value(try fence(ledgerID: ledgerID)))
            } catch {
                respond(failure(error))
            }
        case .deleteLedger(let ledgerID):
            do {
                try deleteLedger(ledgerID: ledgerID)
                respond(StorageResponse(requestType: type, status: .ok))
            } catch {
                respond(failure(error))
            }
        case .authenticate:
            // The connection's handler answers it (`StorageNodeServerHandler`); the node has no
            // notion of clients.
            var text = ByteBuffer()
            text.writeString("authenticate is answered by the storage server, not the node")
            respond(StorageResponse(requestType: type, status: .error, body: text))
        }
    }
}
