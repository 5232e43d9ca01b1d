import Foundation
import Logging
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Settings of a `FileLedgerStore`.
public struct FileLedgerStoreConfiguration: Sendable {
    /// The data directory; created if missing. One store per directory (a `LOCK` file enforces it).
    public var directory: String
    /// Group commit: the journal thread waits at most this long (from the arrival of the oldest
    /// queued append) to gather a group before writing it. The default, `.zero`, writes whatever is
    /// queued at once: under load the appends that arrive while one write + fdatasync runs form the
    /// next group (adaptive group commit), and a lone append pays no extra wait.
    public var groupCommitMaxDelay: Duration = .zero
    /// Group commit: a group is written as soon as this many record bytes are queued.
    public var groupCommitMaxBytes: Int = 512 * 1024
    /// An entry log file is rolled before it would grow past this size.
    public var entryLogMaxBytes: Int = 256 * 1024 * 1024
    /// A journal file is rolled once it grows past this size; every roll checkpoints the index and
    /// then deletes the journal files the checkpoint covers.
    public var journalMaxBytes: Int = 64 * 1024 * 1024
    /// Called on the journal thread after each group commit with the time the journal write took,
    /// the time the fdatasync took, and the group's size (metrics; must be cheap).
    public var groupCommitObserver: (@Sendable (_ write: Duration, _ sync: Duration, _ bytes: Int, _ entries: Int) -> Void)?
    /// While the disk is full, the journal thread checks this often whether there is room for a
    /// group again (`groupCommitMaxBytes` free), and then accepts writes again.
    public var diskFullCheckInterval: Duration = .seconds(1)
    /// Tests only: makes chosen writes, syncs and file system checks fail (a disk that fills up).
    public var faultInjector: FileFaultInjector?
    /// Tests only: sees every write and sync (to model what a crash keeps).
    public var writeObserver: FileWriteObserver?

    public init(directory: String) {
        self.directory = directory
    }
}

/// A `LedgerStore` on local disk, BookKeeper's split into parts, each its own type: the `Journal`,
/// the `EntryLog`, the `EntryIndex` (checkpointed as `IndexCheckpoint`) and `StoreRecovery`. This
/// type runs them: the queue of appends, fences and deletes, the journal thread, the disk-full and
/// failure states, and the public `LedgerStore` calls.
///
/// - **Journal** (`journal-N.log`): the write-ahead log. One dedicated thread, the journal thread,
///   takes queued appends, fences and deletes, writes a group of records with one `pwrite`, calls
///   `fdatasync` once, and only then applies them and runs their completions, in queue order.
/// - **Entry log** (`entrylog-N.log`): right after the journal sync the same thread writes the
///   group's add records (same bytes, same CRCs) to the current entry log, without syncing it;
///   entry logs are synced when they roll and before every index checkpoint.
/// - **Index**: in memory, ledger → locations of its entries in the entry logs; checkpointed to
///   `index.dat` together with the journal position it covers when the journal rolls, after
///   recovery and on `close`. After a checkpoint the journal files before that position are deleted,
///   and so are entry logs that no live ledger points into.
///
/// On open: load `index.dat`, cut the current entry log back to its checkpointed (synced) length,
/// replay the journal from the checkpointed position (re-writing add records to the entry log),
/// verifying every CRC. A torn or corrupt record at the tail of the last journal file ends the
/// replay and is truncated, with a warning; damage anywhere else refuses to open (`.corrupted`).
///
/// Words: **appended** = accepted by `append` and readable (from the write cache); **written** =
/// handed to the kernel with `pwrite`; **synced** = an `fdatasync` covering it returned. An append's
/// completion reports success once its journal record is synced, never before.
///
/// Disk full: a write that finds no room (`ENOSPC`) fails its group's appends with `.diskFull`,
/// cuts the journal back to the end of the last synced group (so no torn record is left for
/// recovery to meet, and the next group goes right after the last good one), and *suspends*
/// writes: appends, fences and deletes are refused at once with that error, and what the refused
/// ones had reserved (entry ids, write cache) is released, so every ledger goes on at its last
/// durable entry + 1. Reads go on. Add records that are durable in the journal but found no room in
/// the entry log stay readable from the write cache and are written there first when space is back.
/// Every `diskFullCheckInterval` the journal thread checks the free space; once a group fits, writes
/// resume by themselves. Any other failed write or sync (EIO; every failed sync, whatever its errno)
/// stops writes for good until a restart, which recovers from the last checkpoint and the journal.
///
/// Threads: all public methods are thread-safe; one lock (`condition`) guards the shared state.
/// Completions, fences' and deletes' results are produced on the journal thread; `fence`,
/// `deleteLedger` and `close` block their caller until the journal thread has done its part, so
/// they must not be called from inside an append completion (`close` there only starts closing).
/// Call `close` when done: the journal thread holds the store alive until then.
public final class FileLedgerStore: LedgerStore, @unchecked Sendable {
    typealias Completion = @Sendable (Result<Void, LedgerStoreError>) -> Void

    private enum Lifecycle {
        case open
        case closing
        case closed
    }

    /// One queued operation for the journal thread.
    private struct Request {
        var kind: RecordKind
        var ledgerID: Int64
        var entryID: Int64
        /// The ledger's state object at enqueue time (nil only for refused appends to unknown ledgers).
        var ledger: LedgerState?
        var payload: ByteBuffer?
        /// Set when the operation was refused at enqueue time; it then only keeps its place in the
        /// completion order and writes nothing.
        var refusal: LedgerStoreError?
        var completion: Completion?
        var waiter: Waiter?
        var recordBytes: Int
    }

    private let configuration: FileLedgerStoreConfiguration
    private let directory: String
    private let logger: Logger
    private let allocator = ByteBufferAllocator()
    private let lockFile: OpenFile

    // MARK: Guarded by `condition`.
    private let condition = NSCondition()
    private let entryIndex: EntryIndex
    private var queue: [Request] = []
    private var queuedBytes = 0
    private var queueHeadEnqueuedAt = ContinuousClock.now
    private var lifecycle = Lifecycle.open
    /// Set (by the journal thread only) once a write or sync failed: from then on appends, fences
    /// and deletes are refused with it and no checkpoint is written, so a restart replays the
    /// journal from the last good checkpoint.
    private var failure: LedgerStoreError?
    /// Set (by the journal thread only) while the disk is full (`.diskFull`): appends, fences and
    /// deletes are refused with it until the journal thread finds room again and clears it. Unlike
    /// `failure`, nothing is in an unknown state, so no restart is needed.
    private var suspension: LedgerStoreError?

    public var writeSuspension: LedgerStoreError? {
        condition.lock()
        defer { condition.unlock() }
        return suspension
    }

    // MARK: Owned by the journal thread (and by `init` before that thread starts).
    private let journal: Journal
    /// Written by the journal thread; its readable files are guarded by its own lock.
    private let entryLog: EntryLog
    private let storeDirectory: DataDirectory
    private var batchBuffer: ByteBuffer
    /// Set once in `init` before the thread starts; read-only afterwards.
    private var journalThread: Thread?
    /// While `suspension` is set: when to check the free space next.
    private var nextSpaceCheck = ContinuousClock.now
    /// Add records durable in the journal that found no room in the entry log, in order: read from
    /// the write cache until they are written there (first thing when space is back). No
    /// checkpoint is taken meanwhile: it would cover journal records no entry log holds.
    private var entryLogBacklog: [(ledger: LedgerState, entryID: Int64, record: ByteBuffer)] = []
    /// A checkpoint found no room; it is taken before writes resume.
    private var checkpointPending = false

    /// Opens the store in `configuration.directory` (creating it if needed) and recovers it.
    public init(configuration: FileLedgerStoreConfiguration, logger: Logger) throws(LedgerStoreError) {
        precondition(configuration.groupCommitMaxBytes > 0, "groupCommitMaxBytes must be positive")
        precondition(configuration.entryLogMaxBytes > OnDiskFormat.fileHeaderBytes, "entryLogMaxBytes too small")
        precondition(configuration.journalMaxBytes > OnDiskFormat.fileHeaderBytes, "journalMaxBytes too small")
        self.configuration = configuration
        self.directory = configuration.directory
        self.logger = logger
        self.batchBuffer = ByteBufferAllocator().buffer(capacity: configuration.groupCommitMaxBytes)
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw .io("create directory \(directory) failed: \(error); check the path and its permissions")
        }
        let storeDirectory = DataDirectory(
            path: directory, faultInjector: configuration.faultInjector, writeObserver: configuration.writeObserver)
        self.storeDirectory = storeDirectory
        self.lockFile = try storeDirectory.open(StoreFileName.lock, flags: O_RDWR | O_CREAT).get()
        if let error = lockFile.lockExclusively() { throw error }
        let recovered: StoreRecovery.Recovered
        do {
            recovered = try StoreRecovery.recover(
                directory: storeDirectory, entryLogMaxBytes: configuration.entryLogMaxBytes, logger: logger)
        } catch {
            lockFile.unlock()
            throw error
        }
        self.entryIndex = recovered.index
        self.entryLog = recovered.entryLog
        self.journal = recovered.journal
        if let error = checkpoint() {
            lockFile.unlock()
            throw error
        }
        logger.info(
            "Ledger store opened",
            metadata: [
                "directory": "\(directory)", "ledger.count": "\(entryIndex.count)",
                "journal.replayed.records": "\(recovered.replayedRecords)",
            ])
        let thread = Thread { [self] in
            self.runJournalThread()
        }
        thread.name = "magnetar-journal"
        journalThread = thread
        thread.start()
    }

    // MARK: - LedgerStore

    public func append(
        ledgerID: Int64, entryID: Int64, payload: ByteBuffer,
        completion: @escaping @Sendable (Result<Void, LedgerStoreError>) -> Void
    ) {
        append(ledgerID: ledgerID, entryID: entryID, payload: payload, recovery: false, completion: completion)
    }

    /// `recovery: true` skips the fence check only; the journal record is an ordinary add (replay
    /// accepts adds after a fence record: the journal holds only adds the store accepted).
    public func append(
        ledgerID: Int64, entryID: Int64, payload: ByteBuffer, recovery: Bool,
        completion: @escaping @Sendable (Result<Void, LedgerStoreError>) -> Void
    ) {
        precondition(payload.readableBytes <= LedgerStorageLimits.maxEntryPayloadBytes, "entry payload too large")
        condition.lock()
        guard lifecycle == .open else {
            condition.unlock()
            completion(.failure(.closed))
            return
        }
        enqueue(admit(ledgerID: ledgerID, entryID: entryID, payload: payload, recovery: recovery, completion: completion))
        condition.unlock()
    }

    /// One lock and one wake-up for the whole batch; only the last request carries the completion
    /// (the journal completes requests in order, and a failed group fails the store or refuses
    /// everything queued after it, so the last one's result stands for all; on failure the entries
    /// before the failed group may be durable: `lastAddConfirmed` tells).
    public func appendBatch(
        ledgerID: Int64, firstEntryID: Int64, payloads: [ByteBuffer],
        completion: @escaping @Sendable (Result<Void, LedgerStoreError>) -> Void
    ) {
        guard !payloads.isEmpty else {
            completion(.success(()))
            return
        }
        for payload in payloads {
            precondition(payload.readableBytes <= LedgerStorageLimits.maxEntryPayloadBytes, "entry payload too large")
        }
        condition.lock()
        guard lifecycle == .open else {
            condition.unlock()
            completion(.failure(.closed))
            return
        }
        if queue.isEmpty {
            queueHeadEnqueuedAt = .now
        }
        let last = payloads.count - 1
        var firstRefusal: LedgerStoreError?
        for (offset, payload) in payloads.enumerated() {
            var request = admit(
                ledgerID: ledgerID, entryID: firstEntryID + Int64(offset), payload: payload, recovery: false,
                completion: offset == last ? completion : nil)
            // A refusal refuses the rest of the batch too (ids no longer follow): report the first.
            if firstRefusal == nil { firstRefusal = request.refusal }
            if offset == last, let firstRefusal { request.refusal = firstRefusal }
            queue.append(request)
            queuedBytes += request.recordBytes
        }
        condition.broadcast()
        condition.unlock()
    }

    /// Checks one append against the ledger's state and builds its request. Caller holds `condition`.
    private func admit(
        ledgerID: Int64, entryID: Int64, payload: ByteBuffer, recovery: Bool, completion: Completion?
    ) -> Request {
        var refusal = failure ?? suspension
        var ledger = entryIndex[ledgerID]
        if refusal == nil {
            if let existing = ledger {
                if existing.deleteRequested {
                    refusal = .ledgerNotFound(ledgerID: ledgerID)
                } else if existing.fenceRequested && !recovery {
                    refusal = .fenced(ledgerID: ledgerID)
                } else if entryID != existing.nextEntryID {
                    refusal = .outOfOrder(ledgerID: ledgerID, expected: existing.nextEntryID, got: entryID)
                }
            } else if entryID != 0 {
                refusal = .outOfOrder(ledgerID: ledgerID, expected: 0, got: entryID)
            } else {
                let created = LedgerState(ledgerID: ledgerID)
                entryIndex[ledgerID] = created
                ledger = created
            }
        }
        var recordBytes = 0
        if refusal == nil, let ledger {
            ledger.nextEntryID = entryID + 1
            ledger.writeCache[entryID] = payload
            recordBytes = OnDiskFormat.recordBytes(payloadBytes: payload.readableBytes)
        }
        return Request(
            kind: .add, ledgerID: ledgerID, entryID: entryID, ledger: ledger,
            payload: refusal == nil ? payload : nil, refusal: refusal, completion: completion, waiter: nil,
            recordBytes: recordBytes)
    }

    public func read(ledgerID: Int64, entryID: Int64) throws(LedgerStoreError) -> ByteBuffer {
        BlockingCallCheck.assertNotOnEventLoop("FileLedgerStore.read")
        return try readRange(ledgerID: ledgerID, firstEntryID: entryID, lastEntryID: entryID)[0].get()
    }

    /// Reads a run of entries with as few `pread`s as their places allow: records that follow each
    /// other in one entry log (the usual case: a ledger's entries are written in order) come in one
    /// read of up to `maxReadSpanBytes` (64 KiB), and each entry is a slice of it (no copy).
    public func readRange(ledgerID: Int64, firstEntryID: Int64, lastEntryID: Int64) -> [Result<ByteBuffer, LedgerStoreError>] {
        BlockingCallCheck.assertNotOnEventLoop("FileLedgerStore.readRange")
        guard firstEntryID <= lastEntryID else { return [] }
        enum Plan {
            case cached(ByteBuffer)
            case disk(EntryLocation, OpenFile)
            case failed(LedgerStoreError)
        }
        var plans: [Plan] = []
        plans.reserveCapacity(Int(lastEntryID - firstEntryID + 1))
        condition.lock()
        for entryID in firstEntryID...lastEntryID {
            if lifecycle == .closed {
                plans.append(.failed(.closed))
            } else if let ledger = entryIndex[ledgerID] {
                if entryID >= 0, entryID < Int64(ledger.locations.count) {
                    let location = ledger.locations[Int(entryID)]
                    if let file = entryLog.file(location.entryLogID) {
                        plans.append(.disk(location, file))
                    } else {
                        plans.append(.failed(
                            .corrupted("\(StoreFileName.entryLog(location.entryLogID)), holding ledger \(ledgerID) entry \(entryID), is missing")))
                    }
                } else if let cached = ledger.writeCache[entryID] {
                    plans.append(.cached(cached))
                } else {
                    plans.append(.failed(.entryNotFound(ledgerID: ledgerID, entryID: entryID)))
                }
            } else {
                plans.append(.failed(.ledgerNotFound(ledgerID: ledgerID)))
            }
        }
        condition.unlock()

        var results: [Result<ByteBuffer, LedgerStoreError>] = []
        results.reserveCapacity(plans.count)
        var index = 0
        while index < plans.count {
            switch plans[index] {
            case .cached(let payload):
                results.append(.success(payload))
                index += 1
            case .failed(let error):
                results.append(.failure(error))
                index += 1
            case .disk(let first, let file):
                // The span: following records of the same file that sit end to end.
                var end = index + 1
                var spanEnd = first.offset + Int64(first.length)
                while end < plans.count, case .disk(let next, let nextFile) = plans[end], nextFile === file,
                      next.offset == spanEnd, spanEnd + Int64(next.length) - first.offset <= Self.maxReadSpanBytes
                {
                    spanEnd += Int64(next.length)
                    end += 1
                }
                switch file.read(count: Int(spanEnd - first.offset), at: first.offset, allocator: allocator) {
                case .failure(let error):
                    for _ in index..<end { results.append(.failure(error)) }
                case .success(let span):
                    let locations = plans[index..<end].map { plan -> EntryLocation in
                        guard case .disk(let location, _) = plan else { preconditionFailure("a span holds disk reads only") }
                        return location
                    }
                    results += EntryLog.payloads(
                        in: span, spanOffset: first.offset, locations: locations[...], ledgerID: ledgerID,
                        firstEntryID: firstEntryID + Int64(index), fileName: file.name)
                }
                index = end
            }
        }
        return results
    }

    /// The most one `pread` of `readRange` asks for.
    /// Each entry read is a slice of its span and keeps the span alive while it is held; 64 KiB
    /// bounds what the read-ahead's 1,000 entries can pin to its 64 MiB budget.
    static let maxReadSpanBytes: Int64 = 64 * 1024

    public func lastAddConfirmed(ledgerID: Int64) -> Int64? {
        condition.lock()
        defer { condition.unlock() }
        return entryIndex[ledgerID]?.lastAddConfirmed
    }

    public func fence(ledgerID: Int64) throws(LedgerStoreError) -> Int64 {
        BlockingCallCheck.assertNotOnEventLoop("FileLedgerStore.fence")
        precondition(
            Thread.current !== journalThread,
            "fence(ledgerID:) waits for the journal thread: do not call it from an append completion")
        enum Plan {
            case done(Int64)
            case wait(Waiter)
            case failed(LedgerStoreError)
        }
        condition.lock()
        let plan: Plan
        if lifecycle != .open {
            plan = .failed(.closed)
        } else if let refusal = failure ?? suspension {
            plan = .failed(refusal)
        } else {
            let ledger: LedgerState
            if let existing = entryIndex[ledgerID] {
                ledger = existing
            } else {
                // Fencing an unknown ledger creates it fenced: a zombie writer must not be able to
                // start it later on this node.
                ledger = LedgerState(ledgerID: ledgerID)
                entryIndex[ledgerID] = ledger
            }
            if ledger.deleteRequested {
                plan = .failed(.ledgerNotFound(ledgerID: ledgerID))
            } else if ledger.fenced {
                plan = .done(ledger.lastAddConfirmed)
            } else {
                ledger.fenceRequested = true
                let waiter = Waiter()
                enqueue(
                    Request(
                        kind: .fence, ledgerID: ledgerID, entryID: -1, ledger: ledger, payload: nil, refusal: nil,
                        completion: nil, waiter: waiter, recordBytes: OnDiskFormat.recordBytes(payloadBytes: 0)))
                plan = .wait(waiter)
            }
        }
        condition.unlock()
        switch plan {
        case .done(let lastAddConfirmed): return lastAddConfirmed
        case .failed(let error): throw error
        case .wait(let waiter): return try waiter.wait().get()
        }
    }

    public func deleteLedger(ledgerID: Int64) throws(LedgerStoreError) {
        BlockingCallCheck.assertNotOnEventLoop("FileLedgerStore.deleteLedger")
        precondition(
            Thread.current !== journalThread,
            "deleteLedger(ledgerID:) waits for the journal thread: do not call it from an append completion")
        condition.lock()
        var waiter: Waiter?
        var error: LedgerStoreError?
        if lifecycle != .open {
            error = .closed
        } else if let refusal = failure ?? suspension {
            error = refusal
        } else if let ledger = entryIndex[ledgerID], !ledger.deleteRequested {
            ledger.deleteRequested = true
            let newWaiter = Waiter()
            enqueue(
                Request(
                    kind: .delete, ledgerID: ledgerID, entryID: -1, ledger: ledger, payload: nil, refusal: nil,
                    completion: nil, waiter: newWaiter, recordBytes: OnDiskFormat.recordBytes(payloadBytes: 0)))
            waiter = newWaiter
        } else {
            error = .ledgerNotFound(ledgerID: ledgerID)
        }
        condition.unlock()
        if let error { throw error }
        _ = try waiter!.wait().get()
    }

    public func ledgerIDs() -> [Int64] {
        condition.lock()
        defer { condition.unlock() }
        return entryIndex.liveLedgerIDs()
    }

    public func close() {
        BlockingCallCheck.assertNotOnEventLoop("FileLedgerStore.close")
        let onJournalThread = Thread.current === journalThread
        condition.lock()
        if lifecycle == .open {
            lifecycle = .closing
            condition.broadcast()
        }
        if !onJournalThread {
            while lifecycle != .closed {
                condition.wait()
            }
        }
        condition.unlock()
    }

    // MARK: - Queue (callers hold `condition`)

    private func enqueue(_ request: Request) {
        if queue.isEmpty {
            queueHeadEnqueuedAt = .now
        }
        queue.append(request)
        queuedBytes += request.recordBytes
        // Broadcast, not signal: `close` callers may wait on the same condition.
        condition.broadcast()
    }

    // MARK: - Journal thread

    private func runJournalThread() {
        while let batch = takeBatch() {
            if !batch.isEmpty {
                processBatch(batch)
            }
            if suspension != nil && ContinuousClock.now >= nextSpaceCheck {
                checkForSpace()
            }
        }
        if failure == nil, entryLogBacklog.isEmpty, let error = checkpoint() {
            logger.error("Final index checkpoint failed; the next open replays the journal", metadata: ["error": "\(error)"])
        } else if !entryLogBacklog.isEmpty {
            logger.warning(
                "No final index checkpoint: entries that found no room in the entry log are only in the journal; the next open replays them",
                metadata: ["entry.count": "\(entryLogBacklog.count)"])
        }
        journal.close()
        entryLogBacklog.removeAll()
        lockFile.unlock()
        condition.lock()
        entryLog.closeAll()
        lifecycle = .closed
        condition.broadcast()
        condition.unlock()
        logger.debug("Ledger store closed", metadata: ["directory": "\(directory)"])
    }

    /// Waits for work and takes the next group: everything queued, up to `groupCommitMaxBytes`
    /// (at least one request), after waiting up to `groupCommitMaxDelay` for more to arrive.
    /// Returns an empty group when writes are suspended and the free space is due to be checked,
    /// and nil once the store is closing and the queue is empty.
    private func takeBatch() -> [Request]? {
        condition.lock()
        defer { condition.unlock() }
        while queue.isEmpty && lifecycle == .open {
            if suspension != nil {
                let remaining = ContinuousClock.now.duration(to: nextSpaceCheck)
                if remaining <= .zero { return [] }
                _ = condition.wait(until: Self.date(after: remaining))
            } else {
                condition.wait()
            }
        }
        if queue.isEmpty {
            return nil
        }
        if configuration.groupCommitMaxDelay > .zero {
            let deadline = queueHeadEnqueuedAt + configuration.groupCommitMaxDelay
            while queuedBytes < configuration.groupCommitMaxBytes && lifecycle == .open {
                let remaining = ContinuousClock.now.duration(to: deadline)
                if remaining <= .zero { break }
                _ = condition.wait(until: Self.date(after: remaining))
            }
        }
        var count = 0
        var bytes = 0
        for request in queue {
            if count > 0 && bytes + request.recordBytes > configuration.groupCommitMaxBytes { break }
            bytes += request.recordBytes
            count += 1
        }
        let batch = Array(queue[..<count])
        queue.removeFirst(count)
        queuedBytes -= bytes
        if !queue.isEmpty {
            queueHeadEnqueuedAt = .now
        }
        return batch
    }

    private static func date(after duration: Duration) -> Date {
        let (seconds, attoseconds) = duration.components
        return Date(timeIntervalSinceNow: Double(seconds) + Double(attoseconds) * 1e-18)
    }

    /// Journal write + one sync, entry log write, apply to the index, completions in order; then
    /// roll the journal and checkpoint if it grew past its limit.
    private func processBatch(_ batch: [Request]) {
        var journaled: [(requestIndex: Int, index: Int, length: Int)] = []
        var batchFailure = failure
        batchBuffer.clear()
        if batchFailure == nil {
            // By index, not `for request in batch`: copying a request retains its five references.
            for requestIndex in batch.indices where batch[requestIndex].refusal == nil {
                let start = batchBuffer.writerIndex
                let length = OnDiskFormat.writeRecord(
                    kind: batch[requestIndex].kind, ledgerID: batch[requestIndex].ledgerID,
                    entryID: batch[requestIndex].entryID, payload: batch[requestIndex].payload,
                    into: &batchBuffer)
                journaled.append((requestIndex, start, length))
            }
            if !journaled.isEmpty {
                switch journal.writeGroup(batchBuffer) {
                case .success(let took):
                    configuration.groupCommitObserver?(took.write, took.sync, batchBuffer.readableBytes, journaled.count)
                case .failure(let error):
                    journalWriteFailed(error, batch: batch)
                    batchFailure = error
                }
            }
        }
        if let batchFailure {
            // Nothing of this group is known durable.
            for request in batch {
                let error = request.refusal ?? batchFailure
                request.completion?(.failure(error))
                request.waiter?.finish(.failure(error))
            }
            return
        }

        // Synced. Now write the add records to the entry log (not synced here).
        let adds = journaled.filter { batch[$0.requestIndex].kind == .add }
        let (locations, entryLogError) = entryLog.write(batchBuffer, records: adds.map { ($0.index, $0.length) })
        var entryLogFailure: LedgerStoreError?
        var entryLogFull: LedgerStoreError?
        if let entryLogError {
            // The entries are durable in the journal and stay readable from the write cache.
            if case .diskFull = entryLogError {
                // Written to the entry log first thing once there is room.
                for item in adds[locations.count...] {
                    entryLogBacklog.append((
                        batch[item.requestIndex].ledger!, batch[item.requestIndex].entryID,
                        batchBuffer.getSlice(at: item.index, length: item.length)!))
                }
                entryLogFull = entryLogError
            } else {
                // A restart replays them. No further writes and no checkpoint from now on.
                logger.error("Entry log write failed; the store refuses further writes", metadata: ["error": "\(entryLogError)"])
                entryLogFailure = entryLogError
            }
        }

        var fenceResults: [Int: Int64] = [:]
        condition.lock()
        var addIndex = 0
        for item in journaled {
            let ledger = batch[item.requestIndex].ledger!
            let entryID = batch[item.requestIndex].entryID
            switch batch[item.requestIndex].kind {
            case .add:
                ledger.lastAddConfirmed = entryID
                ledger.isOnDisk = true
                if addIndex < locations.count {
                    assert(Int64(ledger.locations.count) == entryID)
                    ledger.locations.append(locations[addIndex])
                    ledger.writeCache[entryID] = nil
                }
                addIndex += 1
            case .fence:
                ledger.fenced = true
                ledger.isOnDisk = true
                fenceResults[item.requestIndex] = ledger.lastAddConfirmed
            case .delete:
                let ledgerID = batch[item.requestIndex].ledgerID
                if entryIndex[ledgerID] === ledger {
                    entryIndex[ledgerID] = nil
                }
            }
        }
        if let entryLogFailure, failure == nil {
            failure = entryLogFailure
        }
        condition.unlock()
        if let entryLogFull {
            suspendWrites(entryLogFull, releasing: [])
        }

        for requestIndex in batch.indices {
            if let refusal = batch[requestIndex].refusal {
                batch[requestIndex].completion?(.failure(refusal))
                batch[requestIndex].waiter?.finish(.failure(refusal))
                continue
            }
            switch batch[requestIndex].kind {
            case .add: batch[requestIndex].completion?(.success(()))
            case .fence: batch[requestIndex].waiter?.finish(.success(fenceResults[requestIndex] ?? -1))
            case .delete: batch[requestIndex].waiter?.finish(.success(-1))
            }
        }

        if failure == nil && suspension == nil && journal.isFull(maxBytes: configuration.journalMaxBytes) {
            rollJournal()
        }
    }

    /// The group's journal write or sync failed. No room: cut off whatever part of the group
    /// reached the file, so the journal ends with the last synced group again (recovery never meets
    /// a torn record, the next group goes right after the last good one), and suspend writes. Any
    /// other failure, or a failed cut: refuse writes for good.
    private func journalWriteFailed(_ error: LedgerStoreError, batch: [Request]) {
        let metadata: Logger.Metadata = [
            "journal.file": "\(journal.file.name)", "journal.offset": "\(journal.offset)", "error": "\(error)",
        ]
        guard case .diskFull = error else {
            logger.error("Journal write failed; the store refuses further writes", metadata: metadata)
            markFailed(error)
            return
        }
        if let cutError = journal.cutFailedGroup() {
            var metadata = metadata
            metadata["truncate.error"] = "\(cutError)"
            logger.error(
                "Journal write failed for lack of space and its torn tail could not be cut off; the store refuses further writes",
                metadata: metadata)
            markFailed(error)
            return
        }
        suspendWrites(error, releasing: batch)
    }

    /// No room on the disk: refuse appends, fences and deletes with `error` until `checkForSpace`
    /// finds room again. Releases what the requests of the failed group (`batch`) and every request
    /// still queued had reserved, and refuses the queued ones, so no ledger ever gets an entry
    /// journaled after one that was refused. Journal thread only.
    private func suspendWrites(_ error: LedgerStoreError, releasing batch: [Request]) {
        condition.lock()
        let alreadySuspended = suspension != nil
        if suspension == nil {
            suspension = error
        }
        for index in batch.indices where batch[index].refusal == nil {
            release(batch[index])
        }
        var refusedQueued = 0
        for index in queue.indices where queue[index].refusal == nil {
            release(queue[index])
            queuedBytes -= queue[index].recordBytes
            queue[index].refusal = error
            queue[index].payload = nil
            queue[index].recordBytes = 0
            refusedQueued += 1
        }
        condition.unlock()
        nextSpaceCheck = .now + configuration.diskFullCheckInterval
        if !alreadySuspended {
            logger.error(
                "Disk full: the store refuses writes until space is freed; reads go on, and writes resume by themselves",
                metadata: [
                    "directory": "\(directory)", "error": "\(error)", "queued.refused": "\(refusedQueued)",
                    "check.interval": "\(configuration.diskFullCheckInterval)",
                ])
        }
    }

    /// Gives back what `admit`, `fence` or `deleteLedger` reserved for a request that will not be
    /// written: an add's entry id (the ledger's next id goes back to it) and write cache slot (a
    /// ledger its refused first add created is forgotten again), a delete's mark. A fence stays
    /// requested (appends stay refused; fencing again writes it). Caller holds `condition`.
    private func release(_ request: Request) {
        guard let ledger = request.ledger else { return }
        switch request.kind {
        case .add:
            ledger.writeCache[request.entryID] = nil
            ledger.nextEntryID = min(ledger.nextEntryID, request.entryID)
            if ledger.nextEntryID == 0, !ledger.isOnDisk, !ledger.fenceRequested, entryIndex[request.ledgerID] === ledger {
                entryIndex[request.ledgerID] = nil
            }
        case .fence:
            break
        case .delete:
            ledger.deleteRequested = false
        }
    }

    /// While writes are suspended: once a group fits on the file system again, writes what the
    /// entry log lacks, takes a pending checkpoint, and lets writes resume. Journal thread only.
    private func checkForSpace() {
        nextSpaceCheck = .now + configuration.diskFullCheckInterval
        guard failure == nil else { return }
        guard let available = lockFile.availableBytes(), available >= UInt64(configuration.groupCommitMaxBytes) else {
            return
        }
        if !entryLogBacklog.isEmpty {
            batchBuffer.clear()
            var records: [(index: Int, length: Int)] = []
            records.reserveCapacity(entryLogBacklog.count)
            for item in entryLogBacklog {
                records.append((batchBuffer.writerIndex, item.record.readableBytes))
                batchBuffer.writeImmutableBuffer(item.record)
            }
            let (locations, error) = entryLog.write(batchBuffer, records: records)
            condition.lock()
            for (offset, location) in locations.enumerated() {
                let item = entryLogBacklog[offset]
                // A ledger deleted meanwhile is no longer indexed: its location is simply dropped.
                if Int64(item.ledger.locations.count) == item.entryID {
                    item.ledger.locations.append(location)
                    item.ledger.writeCache[item.entryID] = nil
                }
            }
            if let error, failure == nil, !Self.isDiskFull(error) {
                failure = error
            }
            condition.unlock()
            entryLogBacklog.removeFirst(locations.count)
            if let error {
                if !Self.isDiskFull(error) {
                    logger.error("Entry log write failed; the store refuses further writes", metadata: ["error": "\(error)"])
                }
                return
            }
        }
        if checkpointPending {
            if let error = checkpoint() {
                if !Self.isDiskFull(error) {
                    logger.error("Index checkpoint failed; the store refuses further writes", metadata: ["error": "\(error)"])
                    markFailed(error)
                }
                return
            }
            checkpointPending = false
        }
        condition.lock()
        suspension = nil
        condition.unlock()
        logger.info(
            "Disk space is back: the store accepts writes again",
            metadata: ["directory": "\(directory)", "available.bytes": "\(available)"])
    }

    private static func isDiskFull(_ error: LedgerStoreError) -> Bool {
        if case .diskFull = error { return true }
        return false
    }

    private func markFailed(_ error: LedgerStoreError) {
        condition.lock()
        if failure == nil {
            failure = error
        }
        condition.unlock()
    }

    private func rollJournal() {
        if let error = journal.roll() {
            if Self.isDiskFull(error) {
                // The current journal stays in use (past its size limit); the roll is tried again
                // after the next group.
                suspendWrites(error, releasing: [])
            } else {
                logger.error("Journal roll failed; the store refuses further writes", metadata: ["error": "\(error)"])
                markFailed(error)
            }
            return
        }
        if let error = checkpoint() {
            if Self.isDiskFull(error) {
                // The previous checkpoint stays valid (the journal files it needs are kept).
                checkpointPending = true
                suspendWrites(error, releasing: [])
            } else {
                logger.error("Index checkpoint failed; the store refuses further writes", metadata: ["error": "\(error)"])
                markFailed(error)
            }
        }
    }

    /// Writes `index.dat` for the current state (the entry log synced first), then deletes the
    /// journal files before the position it covers and the entry logs no live ledger points into.
    /// Journal thread only, between groups (and `init`, before that thread starts).
    private func checkpoint() -> LedgerStoreError? {
        if let error = entryLog.sync() { return error }
        condition.lock()
        let snapshot = entryIndex.snapshot()
        condition.unlock()
        let contents = EntryIndex.checkpointContents(of: snapshot, currentEntryLogID: entryLog.currentID)
        if let error = IndexCheckpoint.write(
            journalFileID: journal.fileID, journalOffset: journal.offset, entryLogID: entryLog.currentID,
            entryLogSizeBytes: entryLog.offset, ledgers: contents.ledgers, to: storeDirectory)
        {
            return error
        }

        // Reclaim space: nothing below needs to be durable, a leftover file is deleted next time.
        let names = (try? storeDirectory.names()) ?? []
        for name in names {
            if let id = StoreFileName.parse(name, prefix: "journal-"), id < journal.fileID, let error = storeDirectory.remove(name) {
                logger.warning("Could not delete an old journal file", metadata: ["error": "\(error)"])
            }
        }
        let removedEntryLogs = entryLog.removeUnreferenced(contents.referencedEntryLogs, among: names) { error in
            logger.warning("Could not delete an unused entry log", metadata: ["error": "\(error)"])
        }
        if !removedEntryLogs.isEmpty {
            logger.debug("Deleted entry logs that hold no live ledger", metadata: ["entrylog.ids": "\(removedEntryLogs.sorted())"])
        }
        logger.debug(
            "Index checkpoint written",
            metadata: [
                "journal.file": "\(journal.fileID)", "journal.offset": "\(journal.offset)", "ledger.count": "\(contents.ledgers.count)",
            ])
        return nil
    }
}

/// A one-shot rendezvous between a caller of `fence`/`deleteLedger` and the journal thread.
final class Waiter: @unchecked Sendable {
    private let semaphore = DispatchSemaphore(value: 0)
    // Written once before `signal`, read after `wait`: the semaphore orders the two.
    private var result: Result<Int64, LedgerStoreError> = .failure(.closed)

    func finish(_ result: Result<Int64, LedgerStoreError>) {
        self.result = result
        semaphore.signal()
    }

    func wait() -> Result<Int64, LedgerStoreError> {
        semaphore.wait()
        return result
    }
}
