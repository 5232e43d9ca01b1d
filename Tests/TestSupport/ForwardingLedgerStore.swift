import LedgerStorage
import NIOCore

/// A ledger store that passes every call to `inner` (a fresh in-memory store unless told
/// otherwise). Tests subclass it and override only the calls whose behaviour they change: reads
/// that fail or go over the "network", held completions, a full disk, a store brokers share.
/// `readWithoutBlocking` and `deleteLedgerWithoutBlocking` go through this store's own `read` and
/// `deleteLedger`, so an override of those applies to both paths.
open class ForwardingLedgerStore: LedgerStore, @unchecked Sendable {
    public let inner: any LedgerStore

    public init(_ inner: any LedgerStore = InMemoryLedgerStore()) {
        self.inner = inner
    }

    open var blocksOnNetwork: Bool { false }
    open var isShared: Bool { false }
    open var writeSuspension: LedgerStoreError? { inner.writeSuspension }

    open func append(
        ledgerID: Int64, entryID: Int64, payload: ByteBuffer,
        completion: @escaping @Sendable (Result<Void, LedgerStoreError>) -> Void
    ) {
        append(ledgerID: ledgerID, entryID: entryID, payload: payload, recovery: false, completion: completion)
    }

    open func append(
        ledgerID: Int64, entryID: Int64, payload: ByteBuffer, recovery: Bool,
        completion: @escaping @Sendable (Result<Void, LedgerStoreError>) -> Void
    ) {
        inner.append(ledgerID: ledgerID, entryID: entryID, payload: payload, recovery: recovery, completion: completion)
    }

    open func read(ledgerID: Int64, entryID: Int64) throws(LedgerStoreError) -> ByteBuffer {
        try inner.read(ledgerID: ledgerID, entryID: entryID)
    }

    open func readWithoutBlocking(ledgerID: Int64, entryID: Int64) async throws(LedgerStoreError) -> ByteBuffer {
        try read(ledgerID: ledgerID, entryID: entryID)
    }

    open func deleteLedgerWithoutBlocking(ledgerID: Int64) async throws(LedgerStoreError) {
        try deleteLedger(ledgerID: ledgerID)
    }

    open func lastAddConfirmed(ledgerID: Int64) -> Int64? { inner.lastAddConfirmed(ledgerID: ledgerID) }
    open func fence(ledgerID: Int64) throws(LedgerStoreError) -> Int64 { try inner.fence(ledgerID: ledgerID) }
    open func deleteLedger(ledgerID: Int64) throws(LedgerStoreError) { try inner.deleteLedger(ledgerID: ledgerID) }
    open func ledgerIDs() -> [Int64] { inner.ledgerIDs() }
    open func close() { inner.close() }
}
