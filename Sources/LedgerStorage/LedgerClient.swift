import NIOCore
import NIOPosix

/// The broker's side of ledger storage: what a managed ledger and its cursors use to write and
/// read ledgers, whether the entries are on this machine (`LocalLedgerClient`, standalone) or on
/// storage nodes (`ReplicatedLedgerClient`, a cluster). BookKeeper's client, in its terms.
///
/// Every call is safe from an event loop: nothing here blocks the calling thread. Appends hand the
/// entry over and complete later; reads deliver their results on the event loop the caller names;
/// everything else is `async`. (`LedgerStore`, a storage node's local store, is the synchronous
/// interface below this one: only storage code calls it, never from an event loop.)
public protocol LedgerClient: AnyObject, Sendable {
    /// Prepares a new ledger before its first append: a replicated client picks its ensemble and
    /// records the ledger's metadata; `replication` nil means the client's default.
    func createLedger(ledgerID: Int64, replication: LedgerReplicationOptions?) async throws(LedgerStoreError)

    /// Makes a ledger written by another process (or before a restart) readable.
    func openLedger(ledgerID: Int64) async throws(LedgerStoreError)

    /// Recovery by a new writer: fences the ledger so its previous writer can append no more, finds
    /// its last entry and (replicated) closes it in metadata there. Returns the last entry id, -1 if
    /// the ledger has none; a ledger never seen counts as empty.
    func recoverLedger(ledgerID: Int64) async throws(LedgerStoreError) -> Int64

    /// The writer is done with a ledger (rolled; nothing in flight): a replicated client closes
    /// its metadata at the last confirmed entry, so re-replication may copy it.
    func closeLedger(ledgerID: Int64) async throws(LedgerStoreError)

    /// Deletes the ledger (its metadata first, then its entries).
    func deleteLedger(ledgerID: Int64) async throws(LedgerStoreError)

    /// Appends entry `entryID` (0 first, then last + 1). `completion` runs on any thread once the
    /// entry is durable on the ack quorum, or failed; in append order per ledger.
    func append(
        ledgerID: Int64, entryID: Int64, payload: ByteBuffer,
        completion: @escaping @Sendable (Result<Void, LedgerStoreError>) -> Void)

    /// Appends `payloads` as entries `firstEntryID`, `firstEntryID + 1`, ...: one completion for
    /// all (success once every one is durable, failure as soon as one failed).
    func appendBatch(
        ledgerID: Int64, firstEntryID: Int64, payloads: [ByteBuffer],
        completion: @escaping @Sendable (Result<Void, LedgerStoreError>) -> Void)

    /// Reads entries `firstEntryID ... lastEntryID` of one ledger; the future completes on
    /// `eventLoop` with one result per entry, in order (an entry that cannot be read fails alone).
    func readEntries(
        ledgerID: Int64, firstEntryID: Int64, lastEntryID: Int64, on eventLoop: any EventLoop
    ) -> EventLoopFuture<[Result<ByteBuffer, LedgerStoreError>]>

    /// Reads one entry, awaited.
    func read(ledgerID: Int64, entryID: Int64) async throws(LedgerStoreError) -> ByteBuffer

    /// The highest durable entry of a ledger this client is writing, as it knows it without asking
    /// anyone (-1: none yet); nil when it is not writing that ledger.
    func writtenLastAddConfirmed(ledgerID: Int64) -> Int64?

    /// Why appends are refused right now (a full disk), or nil. A hint, not a promise.
    var writeSuspension: LedgerStoreError? { get }

    /// Finishes what is in flight and releases files and connections. Idempotent.
    func shutdown() async
}

/// A `LedgerClient` over a store in this process (standalone: the file store). Appends go straight
/// to the store (no hop: the journal thread takes them); reads, fences and deletes, which wait for
/// the disk, run on a thread pool and complete on the caller's loop.
///
/// `readsInline`: the store never waits (an in-memory store): its calls run on the caller's thread
/// and reads complete at once. Tests on an `EmbeddedEventLoop` use it; the core takes the same
/// asynchronous path either way.
public final class LocalLedgerClient: LedgerClient {
    public let store: any LedgerStore
    private let threadPool: NIOThreadPool
    private let readsInline: Bool

    public init(store: any LedgerStore, threadPool: NIOThreadPool = .singleton, readsInline: Bool = false) {
        self.store = store
        self.threadPool = threadPool
        self.readsInline = readsInline
    }

    public func createLedger(ledgerID: Int64, replication: LedgerReplicationOptions?) async throws(LedgerStoreError) {}

    public func openLedger(ledgerID: Int64) async throws(LedgerStoreError) {}

    public func closeLedger(ledgerID: Int64) async throws(LedgerStoreError) {}

    public func recoverLedger(ledgerID: Int64) async throws(LedgerStoreError) -> Int64 {
        let store = self.store
        return try await offload { () throws(LedgerStoreError) -> Int64 in
            guard store.lastAddConfirmed(ledgerID: ledgerID) != nil else { return -1 }
            return try store.fence(ledgerID: ledgerID)
        }
    }

    public func deleteLedger(ledgerID: Int64) async throws(LedgerStoreError) {
        let store = self.store
        try await offload { () throws(LedgerStoreError) in try store.deleteLedger(ledgerID: ledgerID) }
    }

    public func append(
        ledgerID: Int64, entryID: Int64, payload: ByteBuffer,
        completion: @escaping @Sendable (Result<Void, LedgerStoreError>) -> Void
    ) {
        store.append(ledgerID: ledgerID, entryID: entryID, payload: payload, completion: completion)
    }

    public func appendBatch(
        ledgerID: Int64, firstEntryID: Int64, payloads: [ByteBuffer],
        completion: @escaping @Sendable (Result<Void, LedgerStoreError>) -> Void
    ) {
        store.appendBatch(ledgerID: ledgerID, firstEntryID: firstEntryID, payloads: payloads, completion: completion)
    }

    public func readEntries(
        ledgerID: Int64, firstEntryID: Int64, lastEntryID: Int64, on eventLoop: any EventLoop
    ) -> EventLoopFuture<[Result<ByteBuffer, LedgerStoreError>]> {
        let store = self.store
        let readAll: @Sendable () -> [Result<ByteBuffer, LedgerStoreError>] = {
            store.readRange(ledgerID: ledgerID, firstEntryID: firstEntryID, lastEntryID: lastEntryID)
        }
        if readsInline { return eventLoop.makeSucceededFuture(readAll()) }
        return threadPool.runIfActive(eventLoop: eventLoop, readAll).flatMapErrorThrowing { _ in
            // The pool is stopping: the process is shutting down.
            guard firstEntryID <= lastEntryID else { return [] }
            return Array(repeating: .failure(.closed), count: Int(lastEntryID - firstEntryID + 1))
        }
    }

    public func read(ledgerID: Int64, entryID: Int64) async throws(LedgerStoreError) -> ByteBuffer {
        let store = self.store
        return try await offload { () throws(LedgerStoreError) -> ByteBuffer in try store.read(ledgerID: ledgerID, entryID: entryID) }
    }

    public func writtenLastAddConfirmed(ledgerID: Int64) -> Int64? {
        store.lastAddConfirmed(ledgerID: ledgerID)
    }

    public var writeSuspension: LedgerStoreError? { store.writeSuspension }

    public func shutdown() async {
        let store = self.store
        try? await offload { () throws(LedgerStoreError) in store.close() }
    }

    /// Runs `body` (which waits for the disk) on the thread pool.
    private func offload<T: Sendable>(_ body: @escaping @Sendable () throws(LedgerStoreError) -> T) async throws(LedgerStoreError) -> T {
        if readsInline { return try body() }
        let result: Result<T, LedgerStoreError>
        do {
            result = try await threadPool.runIfActive { () -> Result<T, LedgerStoreError> in
                Result { () throws(LedgerStoreError) in try body() }
            }
        } catch {
            throw .closed
        }
        return try result.get()
    }
}

/// Debug builds trap when storage code that waits (for the disk, the network or another thread) is
/// called on an event-loop thread: such a wait stalls every channel and topic of the loop.
public enum BlockingCallCheck {
    @inline(__always)
    public static func assertNotOnEventLoop(_ what: @autoclosure () -> String) {
        assert(
            MultiThreadedEventLoopGroup.currentEventLoop == nil,
            "\(what()) waits and was called on an event loop thread: go through a LedgerClient (or a thread pool) instead")
    }
}
