import Foundation
import NIOCore

/// A `LedgerStore` that keeps everything in memory: for tests and for brokers that run without
/// durability. "Durable" here means "appended": completions succeed at once, and nothing survives
/// the process.
///
/// Thread-safe: one lock guards all state. Completions run on the appending thread, outside the
/// lock, through a combining queue so that completions of one ledger run in append order even
/// when a completion appends again (it is queued and run by the thread already draining).
public final class InMemoryLedgerStore: LedgerStore, @unchecked Sendable {
    private final class Ledger {
        var entries: [ByteBuffer] = []
        var fenced = false
    }

    private typealias Completion = @Sendable (Result<Void, LedgerStoreError>) -> Void

    private let lock = NSLock()
    // Guarded by `lock`.
    private var ledgers: [Int64: Ledger] = [:]
    private var isClosed = false
    private var pendingCompletions: [(Completion, Result<Void, LedgerStoreError>)] = []
    private var isDrainingCompletions = false

    public init() {}

    public func append(
        ledgerID: Int64, entryID: Int64, payload: ByteBuffer,
        completion: @escaping @Sendable (Result<Void, LedgerStoreError>) -> Void
    ) {
        append(ledgerID: ledgerID, entryID: entryID, payload: payload, recovery: false, completion: completion)
    }

    public func append(
        ledgerID: Int64, entryID: Int64, payload: ByteBuffer, recovery: Bool,
        completion: @escaping @Sendable (Result<Void, LedgerStoreError>) -> Void
    ) {
        precondition(payload.readableBytes <= LedgerStorageLimits.maxEntryPayloadBytes, "entry payload too large")
        lock.lock()
        let result: Result<Void, LedgerStoreError>
        if isClosed {
            result = .failure(.closed)
        } else if let ledger = ledgers[ledgerID] {
            if ledger.fenced && !recovery {
                result = .failure(.fenced(ledgerID: ledgerID))
            } else if entryID != Int64(ledger.entries.count) {
                result = .failure(.outOfOrder(ledgerID: ledgerID, expected: Int64(ledger.entries.count), got: entryID))
            } else {
                ledger.entries.append(payload)
                result = .success(())
            }
        } else if entryID != 0 {
            result = .failure(.outOfOrder(ledgerID: ledgerID, expected: 0, got: entryID))
        } else {
            let ledger = Ledger()
            ledger.entries.append(payload)
            ledgers[ledgerID] = ledger
            result = .success(())
        }
        pendingCompletions.append((completion, result))
        if isDrainingCompletions {
            lock.unlock()
            return
        }
        isDrainingCompletions = true
        while true {
            let batch = pendingCompletions
            pendingCompletions.removeAll(keepingCapacity: true)
            if batch.isEmpty {
                isDrainingCompletions = false
                lock.unlock()
                return
            }
            lock.unlock()
            for (completion, result) in batch {
                completion(result)
            }
            lock.lock()
        }
    }

    public func read(ledgerID: Int64, entryID: Int64) throws(LedgerStoreError) -> ByteBuffer {
        lock.lock()
        defer { lock.unlock() }
        if isClosed { throw .closed }
        guard let ledger = ledgers[ledgerID] else { throw .ledgerNotFound(ledgerID: ledgerID) }
        guard entryID >= 0, entryID < Int64(ledger.entries.count) else {
            throw .entryNotFound(ledgerID: ledgerID, entryID: entryID)
        }
        return ledger.entries[Int(entryID)]
    }

    public func lastAddConfirmed(ledgerID: Int64) -> Int64? {
        lock.lock()
        defer { lock.unlock() }
        return ledgers[ledgerID].map { Int64($0.entries.count) - 1 }
    }

    public func fence(ledgerID: Int64) throws(LedgerStoreError) -> Int64 {
        lock.lock()
        defer { lock.unlock() }
        if isClosed { throw .closed }
        let ledger: Ledger
        if let existing = ledgers[ledgerID] {
            ledger = existing
        } else {
            ledger = Ledger()
            ledgers[ledgerID] = ledger
        }
        ledger.fenced = true
        return Int64(ledger.entries.count) - 1
    }

    public func deleteLedger(ledgerID: Int64) throws(LedgerStoreError) {
        lock.lock()
        defer { lock.unlock() }
        if isClosed { throw .closed }
        guard ledgers.removeValue(forKey: ledgerID) != nil else { throw .ledgerNotFound(ledgerID: ledgerID) }
    }

    public func ledgerIDs() -> [Int64] {
        lock.lock()
        defer { lock.unlock() }
        return ledgers.keys.sorted()
    }

    public func close() {
        lock.lock()
        isClosed = true
        lock.unlock()
    }
}
