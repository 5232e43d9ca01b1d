import LedgerStorage
import NIOCore

/// A ledger store that passes every call to `inner` (a fresh in-memory store unless told
/// otherwise). Tests subclass it and override only the calls whose behaviour they change: reads
/// that fail or are slow, held completions, a full disk. A broker uses one through a
/// `LocalLedgerClient`.
open class ForwardingLedgerStore: LedgerStore, @unchecked Sendable {
    public let inner: any LedgerStore

    public init(_ inner: any LedgerStore = InMemoryLedgerStore()) {
        self.inner = inner
    }

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

    open func lastAddConfirmed(ledgerID: Int64) -> Int64? { inner.lastAddConfirmed(ledgerID: ledgerID) }
    open func fence(ledgerID: Int64) throws(LedgerStoreError) -> Int64 { try inner.fence(ledgerID: ledgerID) }
    open func deleteLedger(ledgerID: Int64) throws(LedgerStoreError) { try inner.deleteLedger(ledgerID: ledgerID) }
    open func ledgerIDs() -> [Int64] { inner.ledgerIDs() }
    open func close() { inner.close() }
}
