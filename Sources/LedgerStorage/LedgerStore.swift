import Foundation
import NIOCore

/// Every operating error a `LedgerStore` reports. Programmer errors (an oversized payload, calling
/// `fence` from inside a completion) are preconditions instead.
public enum LedgerStoreError: Error, Equatable, CustomStringConvertible {
    /// The ledger was fenced: appends are refused.
    case fenced(ledgerID: Int64)
    /// The ledger exists but holds no entry with that id (never appended, or beyond the last appended).
    case entryNotFound(ledgerID: Int64, entryID: Int64)
    /// The ledger is unknown to this store (never created, or deleted).
    case ledgerNotFound(ledgerID: Int64)
    /// `entryID` must be `lastEntryID + 1` (0 for a new ledger).
    case outOfOrder(ledgerID: Int64, expected: Int64, got: Int64)
    /// A CRC or framing mismatch on read or on recovery; the text names the file and the offset.
    case corrupted(String)
    /// A system call failed; the text has the errno text and what an operator should do.
    case io(String)
    /// A write found no room on the disk (`ENOSPC`, `EDQUOT`). Nothing was left half written: the
    /// store refuses writes with this error until space is freed, then accepts them again by
    /// itself; reads go on meanwhile. The text names the file and what an operator should do.
    case diskFull(String)
    /// A remote store (the offload tier) did not answer or failed: not permanent, the read is
    /// tried again later. The text says which store and what to check.
    case unavailable(String)
    /// The store was closed.
    case closed

    public var description: String {
        switch self {
        case .fenced(let ledgerID):
            return "ledger \(ledgerID) is fenced: appends are refused"
        case .entryNotFound(let ledgerID, let entryID):
            return "ledger \(ledgerID) has no entry \(entryID)"
        case .ledgerNotFound(let ledgerID):
            return "ledger \(ledgerID) not found"
        case .outOfOrder(let ledgerID, let expected, let got):
            return "ledger \(ledgerID): entry \(got) appended out of order, expected entry \(expected)"
        case .corrupted(let detail):
            return "ledger storage corrupted: \(detail)"
        case .io(let detail):
            return "ledger storage I/O error: \(detail)"
        case .diskFull(let detail):
            return "ledger storage disk full: \(detail)"
        case .unavailable(let detail):
            return "ledger storage unavailable: \(detail)"
        case .closed:
            return "ledger store is closed"
        }
    }
}

/// A storage node's local store of many ledgers (in standalone, the broker's, through a
/// `LocalLedgerClient`). Thread-safe; `read`, `fence`, `deleteLedger` and `close` wait for the
/// disk, so they are called from plain threads or a thread pool, never from an event loop.
///
/// Vocabulary used by every implementation:
/// - **appended**: `append` accepted the entry (right id, ledger not fenced); it is readable at once
///   (from the write cache) but may still be lost by a crash.
/// - **written**: the entry's bytes were handed to the kernel (`pwrite`) in a file; they survive a
///   process crash but not a power loss.
/// - **synced** (= **durable**): an `fdatasync` covering the entry's bytes in the journal returned;
///   the entry survives a power loss. Only then does `append`'s completion report success and does
///   `lastAddConfirmed` move past it.
public protocol LedgerStore: AnyObject, Sendable {
    /// Appends entry `entryID` (first entry of a ledger is 0; must be last+1; a ledger is created implicitly by its first append).
    /// `completion` runs (on any thread) once the entry is DURABLE (for the file store: fdatasync'ed in the journal) or failed.
    /// Completions for one ledger run in append order. The payload is not copied more than needed to write it.
    func append(ledgerID: Int64, entryID: Int64, payload: ByteBuffer, completion: @escaping @Sendable (Result<Void, LedgerStoreError>) -> Void)
    /// Like `append`, but `recovery: true` is a **recovery add**: accepted even when the ledger is
    /// fenced (same entry-id rule). A storage node uses it to write back entries that a recovering
    /// writer or the re-replication auditor copies to it after the ledger was fenced; nothing else
    /// may. The default implementation ignores `recovery` (its stores refuse a fenced ledger).
    func append(
        ledgerID: Int64, entryID: Int64, payload: ByteBuffer, recovery: Bool,
        completion: @escaping @Sendable (Result<Void, LedgerStoreError>) -> Void)
    /// Appends `payloads` as entries `firstEntryID`, `firstEntryID + 1`, ... of one ledger: the same
    /// as `append` for each in order, with one `completion` for all: success once every one is
    /// durable, failure as soon as one failed (earlier ones may be durable). The default calls
    /// `append` per entry; the file store takes its lock and wakes its journal once per batch.
    func appendBatch(
        ledgerID: Int64, firstEntryID: Int64, payloads: [ByteBuffer],
        completion: @escaping @Sendable (Result<Void, LedgerStoreError>) -> Void)
    /// Reads one entry that was appended (durable or still in flight is fine: served from a write
    /// cache if not yet in the entry log). Synchronous (a `pread`): never call it on an event loop
    /// (debug builds trap); brokers read through a `LedgerClient`.
    func read(ledgerID: Int64, entryID: Int64) throws(LedgerStoreError) -> ByteBuffer
    /// Reads entries `firstEntryID ... lastEntryID`: one result per entry, in order (an entry that
    /// cannot be read fails alone). Waits for the disk like `read`. The default calls `read` per
    /// entry; the file store reads records that sit end to end with one `pread`.
    func readRange(ledgerID: Int64, firstEntryID: Int64, lastEntryID: Int64) -> [Result<ByteBuffer, LedgerStoreError>]
    /// Highest durable entry id of the ledger, -1 if it has none, nil if the ledger is unknown.
    func lastAddConfirmed(ledgerID: Int64) -> Int64?
    /// Fence: no further appends succeed (pending ones that are not yet durable may fail). Durable itself. Returns lastAddConfirmed.
    ///
    /// Fencing a ledger this store has never seen creates it, empty and fenced, and returns -1: a
    /// new topic owner must be able to shut out a zombie writer even on a node that got no entry yet.
    func fence(ledgerID: Int64) throws(LedgerStoreError) -> Int64
    /// Deletes the ledger (its index; space reclaimed when an entry log holds no live ledger). Durable.
    func deleteLedger(ledgerID: Int64) throws(LedgerStoreError)
    /// Known ledgers, sorted.
    func ledgerIDs() -> [Int64]
    /// Why the store refuses writes right now (its disk is full), or nil when it takes them.
    /// Thread-safe; a hint for refusing new work early, not a promise about the next append.
    var writeSuspension: LedgerStoreError? { get }
    /// Flushes, stops the journal thread, closes files. Idempotent.
    func close()
}

/// How a ledger is replicated: ensemble size E, write quorum Qw, ack quorum Qa (BookKeeper's
/// terms; `E >= Qw >= Qa >= 1`). A pure value; a namespace's persistence policy names one.
public struct LedgerReplicationOptions: Sendable, Equatable, Codable {
    public var ensembleSize: Int
    public var writeQuorumSize: Int
    public var ackQuorumSize: Int

    public init(ensembleSize: Int, writeQuorumSize: Int, ackQuorumSize: Int) {
        self.ensembleSize = ensembleSize
        self.writeQuorumSize = writeQuorumSize
        self.ackQuorumSize = ackQuorumSize
    }

    /// Whether `E >= Qw >= Qa >= 1`.
    public var isValid: Bool {
        ensembleSize >= writeQuorumSize && writeQuorumSize >= ackQuorumSize && ackQuorumSize >= 1
    }
}

extension LedgerStore {
    public func readRange(ledgerID: Int64, firstEntryID: Int64, lastEntryID: Int64) -> [Result<ByteBuffer, LedgerStoreError>] {
        guard firstEntryID <= lastEntryID else { return [] }
        return (firstEntryID...lastEntryID).map { entryID in
            Result { () throws(LedgerStoreError) in try read(ledgerID: ledgerID, entryID: entryID) }
        }
    }

    public func appendBatch(
        ledgerID: Int64, firstEntryID: Int64, payloads: [ByteBuffer],
        completion: @escaping @Sendable (Result<Void, LedgerStoreError>) -> Void
    ) {
        guard !payloads.isEmpty else {
            completion(.success(()))
            return
        }
        let remaining = BatchCompletion(count: payloads.count, completion: completion)
        for (offset, payload) in payloads.enumerated() {
            append(ledgerID: ledgerID, entryID: firstEntryID + Int64(offset), payload: payload) { remaining.complete($0) }
        }
    }
}

/// Limits of the ledger storage, in one place.
public enum LedgerStorageLimits {
    /// Largest payload one entry may carry. Larger is a programmer error (the frame decoder refuses
    /// bigger frames long before this); it keeps every record length within a `UInt32`.
    public static let maxEntryPayloadBytes = 256 * 1024 * 1024
}

extension LedgerStore {
    public var writeSuspension: LedgerStoreError? { nil }

    public func append(
        ledgerID: Int64, entryID: Int64, payload: ByteBuffer, recovery: Bool,
        completion: @escaping @Sendable (Result<Void, LedgerStoreError>) -> Void
    ) {
        append(ledgerID: ledgerID, entryID: entryID, payload: payload, completion: completion)
    }
}

/// Counts down a batch's per-entry completions into one: the first failure, or success after all.
private final class BatchCompletion: @unchecked Sendable {
    private let lock = NSLock()
    private var remaining: Int
    private var completion: (@Sendable (Result<Void, LedgerStoreError>) -> Void)?

    init(count: Int, completion: @escaping @Sendable (Result<Void, LedgerStoreError>) -> Void) {
        self.remaining = count
        self.completion = completion
    }

    func complete(_ result: Result<Void, LedgerStoreError>) {
        let done: (@Sendable (Result<Void, LedgerStoreError>) -> Void)? = lock.withLock {
            remaining -= 1
            guard let completion else { return nil }
            if case .failure = result {
                self.completion = nil
                return completion
            }
            if remaining == 0 {
                self.completion = nil
                return completion
            }
            return nil
        }
        done?(result)
    }
}
