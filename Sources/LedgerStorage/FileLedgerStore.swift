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

/// A `LedgerStore` on local disk, BookKeeper's split: journal, entry log, index.
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
    private var ledgers: [Int64: LedgerState] = [:]
    private var queue: [Request] = []
    private var queuedBytes = 0
    private var queueHeadEnqueuedAt = ContinuousClock.now
    /// Every entry log file that may be read, by id (the current one included).
    private var entryLogFiles: [Int64: OpenFile] = [:]
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
    private var journal: OpenFile?
    private var journalFileID: Int64 = 0
    private var journalOffset: Int64 = 0
    private var entryLog: OpenFile?
    private var entryLogID: Int64 = 0
    private var entryLogOffset: Int64 = 0
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
        self.lockFile = try OpenFile.open(
            directory: directory, name: StoreFileName.lock, flags: O_RDWR | O_CREAT, faultInjector: configuration.faultInjector, writeObserver: configuration.writeObserver
        ).get()
        if let error = lockFile.lockExclusively() { throw error }
        do {
            try recover()
        } catch {
            lockFile.unlock()
            throw error
        }
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
        var ledger = ledgers[ledgerID]
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
                ledgers[ledgerID] = created
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
        enum Plan {
            case cached(ByteBuffer)
            case disk(EntryLocation, OpenFile)
            case failed(LedgerStoreError)
        }
        condition.lock()
        let plan: Plan
        if lifecycle == .closed {
            plan = .failed(.closed)
        } else if let ledger = ledgers[ledgerID] {
            if entryID >= 0, entryID < Int64(ledger.locations.count) {
                let location = ledger.locations[Int(entryID)]
                if let file = entryLogFiles[location.entryLogID] {
                    plan = .disk(location, file)
                } else {
                    plan = .failed(
                        .corrupted("\(StoreFileName.entryLog(location.entryLogID)), holding ledger \(ledgerID) entry \(entryID), is missing"))
                }
            } else if let cached = ledger.writeCache[entryID] {
                plan = .cached(cached)
            } else {
                plan = .failed(.entryNotFound(ledgerID: ledgerID, entryID: entryID))
            }
        } else {
            plan = .failed(.ledgerNotFound(ledgerID: ledgerID))
        }
        condition.unlock()

        switch plan {
        case .cached(let payload):
            return payload
        case .failed(let error):
            throw error
        case .disk(let location, let file):
            let record = try file.read(count: Int(location.length), at: location.offset, allocator: allocator).get()
            let place = "\(file.name) offset \(location.offset)"
            switch OnDiskFormat.decodeRecord(in: record, at: record.readerIndex) {
            case .record(let decoded):
                guard decoded.kind == .add, decoded.ledgerID == ledgerID, decoded.entryID == entryID,
                    decoded.recordLength == Int(location.length)
                else {
                    throw .corrupted(
                        "\(place): holds \(decoded.kind) of ledger \(decoded.ledgerID) entry \(decoded.entryID), the index expected ledger \(ledgerID) entry \(entryID)")
                }
                return record.getSlice(at: decoded.payloadIndex, length: decoded.payloadLength)!
            case .incomplete:
                throw .corrupted("\(place): record of ledger \(ledgerID) entry \(entryID) is truncated")
            case .corrupt(let reason, _):
                throw .corrupted("\(place): \(reason) in ledger \(ledgerID) entry \(entryID)")
            }
        }
    }

    public func lastAddConfirmed(ledgerID: Int64) -> Int64? {
        condition.lock()
        defer { condition.unlock() }
        return ledgers[ledgerID]?.lastAddConfirmed
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
            if let existing = ledgers[ledgerID] {
                ledger = existing
            } else {
                // Fencing an unknown ledger creates it fenced: a zombie writer must not be able to
                // start it later on this node.
                ledger = LedgerState(ledgerID: ledgerID)
                ledgers[ledgerID] = ledger
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
        } else if let ledger = ledgers[ledgerID], !ledger.deleteRequested {
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
        return ledgers.values.filter { !$0.deleteRequested }.map(\.ledgerID).sorted()
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
        journal = nil
        entryLog = nil
        entryLogBacklog.removeAll()
        lockFile.unlock()
        condition.lock()
        entryLogFiles.removeAll()
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
                let clock = ContinuousClock()
                let started = clock.now
                var error = journal!.writeAll(batchBuffer, at: journalOffset)
                let written = clock.now
                if error == nil {
                    error = journal!.syncData()
                }
                if error == nil, let observer = configuration.groupCommitObserver {
                    observer(written - started, clock.now - written, batchBuffer.readableBytes, journaled.count)
                }
                if let error {
                    journalWriteFailed(error, batch: batch)
                    batchFailure = error
                } else {
                    journalOffset += Int64(batchBuffer.readableBytes)
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
        let (locations, entryLogError) = writeToEntryLog(batchBuffer, records: adds.map { ($0.index, $0.length) })
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
                if ledgers[ledgerID] === ledger {
                    ledgers[ledgerID] = nil
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

        if failure == nil && suspension == nil && journalOffset >= Int64(configuration.journalMaxBytes) {
            rollJournal()
        }
    }

    /// The group's journal write or sync failed. No room: cut off whatever part of the group
    /// reached the file, so the journal ends with the last synced group again (recovery never meets
    /// a torn record, the next group goes right after the last good one), and suspend writes. Any
    /// other failure, or a failed cut: refuse writes for good.
    private func journalWriteFailed(_ error: LedgerStoreError, batch: [Request]) {
        let metadata: Logger.Metadata = [
            "journal.file": "\(journal!.name)", "journal.offset": "\(journalOffset)", "error": "\(error)",
        ]
        guard case .diskFull = error else {
            logger.error("Journal write failed; the store refuses further writes", metadata: metadata)
            markFailed(error)
            return
        }
        var cutError = journal!.truncate(to: journalOffset)
        if cutError == nil {
            cutError = journal!.syncData()
        }
        if let cutError {
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
            if ledger.nextEntryID == 0, !ledger.isOnDisk, !ledger.fenceRequested, ledgers[request.ledgerID] === ledger {
                ledgers[request.ledgerID] = nil
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
            let (locations, error) = writeToEntryLog(batchBuffer, records: records)
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
        let nextName = StoreFileName.journal(journalFileID + 1)
        switch createFile(name: nextName, magic: OnDiskFormat.journalMagic) {
        case .success(let file):
            journal = file
            journalFileID += 1
            journalOffset = Int64(OnDiskFormat.fileHeaderBytes)
        case .failure(let error):
            if Self.isDiskFull(error) {
                // The current journal stays in use (past its size limit); the roll is tried again
                // after the next group. The half-made file must not sit after it at recovery.
                _ = removeFile(directory: directory, name: nextName)
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

    /// Writes framed add records (ranges of `source`, absolute indices, in order) to the entry log,
    /// rolling it as needed; contiguous records go out in one `pwrite`. Returns the locations of the
    /// records written: all of them, or, with the error, those before the first record not wholly
    /// written (the next write starts where that one began). Journal thread only.
    private func writeToEntryLog(
        _ source: ByteBuffer, records: [(index: Int, length: Int)]
    ) -> (locations: [EntryLocation], failure: LedgerStoreError?) {
        var locations: [EntryLocation] = []
        locations.reserveCapacity(records.count)
        var runStart = 0
        var runLength = 0
        var runFileOffset: Int64 = 0
        /// Position in `records` of the run's first record.
        var runFirstRecord = 0
        func flushRun() -> LedgerStoreError? {
            guard runLength > 0 else { return nil }
            let error = entryLog!.writeAll(source.getSlice(at: runStart, length: runLength)!, at: runFileOffset)
            runLength = 0
            if error != nil {
                // None of the run counts as written: the next write goes over whatever part of it
                // reached the file.
                locations.removeSubrange(runFirstRecord...)
                entryLogOffset = runFileOffset
            }
            return error
        }
        for (position, record) in records.enumerated() {
            if entryLogOffset > Int64(OnDiskFormat.fileHeaderBytes)
                && entryLogOffset + Int64(record.length) > Int64(configuration.entryLogMaxBytes)
            {
                if let error = flushRun() { return (locations, error) }
                if let error = rollEntryLog() { return (locations, error) }
            }
            if runLength > 0 && runStart + runLength == record.index {
                runLength += record.length
            } else {
                if let error = flushRun() { return (locations, error) }
                runStart = record.index
                runLength = record.length
                runFileOffset = entryLogOffset
                runFirstRecord = position
            }
            locations.append(EntryLocation(entryLogID: entryLogID, offset: entryLogOffset, length: UInt32(record.length)))
            entryLogOffset += Int64(record.length)
        }
        if let error = flushRun() { return (locations, error) }
        return (locations, nil)
    }

    /// Syncs the current entry log (checkpoints sync only the current one) and starts the next.
    private func rollEntryLog() -> LedgerStoreError? {
        if let error = entryLog!.syncData() { return error }
        let newID = entryLogID + 1
        switch createFile(name: StoreFileName.entryLog(newID), magic: OnDiskFormat.entryLogMagic) {
        case .success(let file):
            condition.lock()
            entryLogFiles[newID] = file
            condition.unlock()
            entryLog = file
            entryLogID = newID
            entryLogOffset = Int64(OnDiskFormat.fileHeaderBytes)
            return nil
        case .failure(let error):
            // The current entry log stays in use; the roll is tried again with the next write.
            _ = removeFile(directory: directory, name: StoreFileName.entryLog(newID))
            return error
        }
    }

    /// Creates (or empties) a file, writes its header, syncs it and the directory.
    private func createFile(name: String, magic: [UInt8]) -> Result<OpenFile, LedgerStoreError> {
        let file: OpenFile
        switch OpenFile.open(directory: directory, name: name, flags: O_RDWR | O_CREAT | O_TRUNC, faultInjector: configuration.faultInjector, writeObserver: configuration.writeObserver) {
        case .success(let opened): file = opened
        case .failure(let error): return .failure(error)
        }
        var header = allocator.buffer(capacity: OnDiskFormat.fileHeaderBytes)
        OnDiskFormat.writeFileHeader(magic: magic, into: &header)
        if let error = file.writeAll(header, at: 0) { return .failure(error) }
        if let error = file.syncData() { return .failure(error) }
        if let error = syncDirectory(directory) { return .failure(error) }
        return .success(file)
    }

    /// Writes `index.dat` for the current state: sync the entry log, write `index.tmp`, fsync,
    /// rename, fsync the directory; then delete the journal files before the covered position and
    /// the entry logs no live ledger points into. Journal thread only, between groups.
    private func checkpoint() -> LedgerStoreError? {
        if let error = entryLog!.syncData() { return error }
        condition.lock()
        let snapshot = Array(ledgers.values)
        condition.unlock()
        // `isOnDisk`, `fenced` and `locations` are written only by this thread, so reading them
        // outside the lock is safe.
        var entries: [(ledgerID: Int64, fenced: Bool, locations: [EntryLocation])] = []
        var referencedEntryLogs: Set<Int64> = [entryLogID]
        for ledger in snapshot where ledger.isOnDisk {
            entries.append((ledger.ledgerID, ledger.fenced, ledger.locations))
            var previous: Int64 = -1
            for location in ledger.locations where location.entryLogID != previous {
                referencedEntryLogs.insert(location.entryLogID)
                previous = location.entryLogID
            }
        }
        entries.sort { $0.ledgerID < $1.ledgerID }
        let encoded = IndexCheckpoint.encode(
            journalFileID: journalFileID, journalOffset: journalOffset, entryLogID: entryLogID,
            entryLogSizeBytes: entryLogOffset, ledgers: entries, allocator: allocator)
        switch OpenFile.open(
            directory: directory, name: StoreFileName.indexTemporary, flags: O_WRONLY | O_CREAT | O_TRUNC,
            faultInjector: configuration.faultInjector, writeObserver: configuration.writeObserver)
        {
        case .success(let file):
            if let error = file.writeAll(encoded, at: 0) { return error }
            if let error = file.syncAll() { return error }
        case .failure(let error):
            return error
        }
        if let error = renameFile(directory: directory, from: StoreFileName.indexTemporary, to: StoreFileName.index) {
            return error
        }
        if let error = syncDirectory(directory) { return error }

        // Reclaim space: nothing below needs to be durable, a leftover file is deleted next time.
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        var removedEntryLogs: [Int64] = []
        for name in names {
            if let id = StoreFileName.parse(name, prefix: "journal-"), id < journalFileID {
                if let error = removeFile(directory: directory, name: name) {
                    logger.warning("Could not delete an old journal file", metadata: ["error": "\(error)"])
                }
            } else if let id = StoreFileName.parse(name, prefix: "entrylog-"), id < entryLogID, !referencedEntryLogs.contains(id) {
                if let error = removeFile(directory: directory, name: name) {
                    logger.warning("Could not delete an unused entry log", metadata: ["error": "\(error)"])
                } else {
                    removedEntryLogs.append(id)
                }
            }
        }
        if !removedEntryLogs.isEmpty {
            condition.lock()
            for id in removedEntryLogs {
                entryLogFiles[id] = nil
            }
            condition.unlock()
            logger.debug("Deleted entry logs that hold no live ledger", metadata: ["entrylog.ids": "\(removedEntryLogs.sorted())"])
        }
        logger.debug(
            "Index checkpoint written",
            metadata: ["journal.file": "\(journalFileID)", "journal.offset": "\(journalOffset)", "ledger.count": "\(entries.count)"])
        return nil
    }

    // MARK: - Recovery (runs in init, before the journal thread starts)

    private func recover() throws(LedgerStoreError) {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            throw .io("list directory \(directory) failed: \(error); check its permissions")
        }
        let journalIDs = names.compactMap { StoreFileName.parse($0, prefix: "journal-") }.sorted()
        let entryLogIDs = names.compactMap { StoreFileName.parse($0, prefix: "entrylog-") }.sorted()
        let replayFileID: Int64
        let replayOffset: Int64

        if names.contains(StoreFileName.index) {
            let checkpoint = try loadCheckpoint()
            replayFileID = checkpoint.journalFileID
            replayOffset = checkpoint.journalOffset
            for saved in checkpoint.ledgers {
                let ledger = LedgerState(ledgerID: saved.ledgerID)
                ledger.locations = saved.locations
                ledger.lastAddConfirmed = Int64(saved.locations.count) - 1
                ledger.nextEntryID = Int64(saved.locations.count)
                ledger.fenced = saved.fenced
                ledger.fenceRequested = saved.fenced
                ledger.isOnDisk = true
                ledgers[saved.ledgerID] = ledger
            }
            // Entry logs started after the checkpoint hold only unsynced copies of journal records
            // that the replay below writes again.
            for id in entryLogIDs where id > checkpoint.entryLogID {
                logger.info("Removing entry log newer than the index checkpoint; the journal replay rewrites it", metadata: ["entrylog.id": "\(id)"])
                if let error = removeFile(directory: directory, name: StoreFileName.entryLog(id)) { throw error }
            }
            guard entryLogIDs.contains(checkpoint.entryLogID) else {
                throw .corrupted(
                    "\(StoreFileName.entryLog(checkpoint.entryLogID)), the current entry log in \(StoreFileName.index), is missing; restore the data directory from a replica")
            }
            for id in entryLogIDs where id <= checkpoint.entryLogID {
                let file = try OpenFile.open(
                    directory: directory, name: StoreFileName.entryLog(id), flags: O_RDWR, faultInjector: configuration.faultInjector, writeObserver: configuration.writeObserver
                ).get()
                entryLogFiles[id] = file
            }
            let current = entryLogFiles[checkpoint.entryLogID]!
            let size = try current.size().get()
            guard size >= checkpoint.entryLogSizeBytes else {
                throw .corrupted(
                    "\(current.name) is \(size) bytes, shorter than the \(checkpoint.entryLogSizeBytes) synced bytes \(StoreFileName.index) recorded; restore the data directory from a replica")
            }
            if size > checkpoint.entryLogSizeBytes {
                // Unsynced tail written after the checkpoint: the journal replay writes it again.
                if let error = current.truncate(to: checkpoint.entryLogSizeBytes) { throw error }
            }
            entryLog = current
            entryLogID = checkpoint.entryLogID
            entryLogOffset = checkpoint.entryLogSizeBytes
            for ledger in checkpoint.ledgers {
                for location in ledger.locations where entryLogFiles[location.entryLogID] == nil {
                    throw .corrupted(
                        "\(StoreFileName.entryLog(location.entryLogID)), holding entries of ledger \(ledger.ledgerID), is missing; restore the data directory from a replica")
                }
            }
        } else {
            // No checkpoint was ever written, so no journal file was ever deleted: unless one was,
            // the journal holds everything and no entry log is referenced.
            if let first = journalIDs.first, first != 1 {
                throw .corrupted(
                    "\(StoreFileName.index) is missing but the journal starts at \(StoreFileName.journal(first)); restore the data directory from a replica")
            }
            replayFileID = 1
            replayOffset = Int64(OnDiskFormat.fileHeaderBytes)
            for id in entryLogIDs {
                if let error = removeFile(directory: directory, name: StoreFileName.entryLog(id)) { throw error }
            }
            let newID = (entryLogIDs.last ?? 0) + 1
            let file = try createFile(name: StoreFileName.entryLog(newID), magic: OnDiskFormat.entryLogMagic).get()
            entryLogFiles[newID] = file
            entryLog = file
            entryLogID = newID
            entryLogOffset = Int64(OnDiskFormat.fileHeaderBytes)
        }

        let replayIDs = journalIDs.filter { $0 >= replayFileID }
        if let first = replayIDs.first, first != replayFileID {
            throw .corrupted(
                "\(StoreFileName.journal(replayFileID)), where the journal replay starts, is missing; restore the data directory from a replica")
        }
        var replayedRecords = 0
        for (position, id) in replayIDs.enumerated() {
            replayedRecords += try replayJournal(
                id: id, from: id == replayFileID ? replayOffset : Int64(OnDiskFormat.fileHeaderBytes),
                isLast: position == replayIDs.count - 1)
        }

        let newJournalID = max(journalIDs.last ?? 0, replayFileID - 1) + 1
        journal = try createFile(name: StoreFileName.journal(newJournalID), magic: OnDiskFormat.journalMagic).get()
        journalFileID = newJournalID
        journalOffset = Int64(OnDiskFormat.fileHeaderBytes)
        if let error = checkpoint() { throw error }
        logger.info(
            "Ledger store opened",
            metadata: [
                "directory": "\(directory)", "ledger.count": "\(ledgers.count)",
                "journal.replayed.records": "\(replayedRecords)",
            ])
    }

    private func loadCheckpoint() throws(LedgerStoreError) -> IndexCheckpoint {
        let file = try OpenFile.open(directory: directory, name: StoreFileName.index, flags: O_RDONLY).get()
        let size = try file.size().get()
        let contents = try file.read(count: Int(size), at: 0, allocator: allocator).get()
        return try IndexCheckpoint.decode(contents, fileName: StoreFileName.index).get()
    }

    /// Replays one journal file from `offset`; returns the number of records applied.
    private func replayJournal(id: Int64, from offset: Int64, isLast: Bool) throws(LedgerStoreError) -> Int {
        let name = StoreFileName.journal(id)
        let file = try OpenFile.open(directory: directory, name: name, flags: O_RDWR, faultInjector: configuration.faultInjector, writeObserver: configuration.writeObserver).get()
        let size = try file.size().get()
        let contents = try file.read(count: Int(size), at: 0, allocator: allocator).get()
        if let problem = OnDiskFormat.checkFileHeader(magic: OnDiskFormat.journalMagic, in: contents, at: 0) {
            guard isLast, size <= Int64(OnDiskFormat.fileHeaderBytes) else {
                throw .corrupted("\(name) offset 0: \(problem); restore the data directory from a replica")
            }
            // A journal file created just before a crash, its header not yet synced.
            logger.warning("Removing journal file with a torn header", metadata: ["journal.file": "\(name)", "problem": "\(problem)"])
            if let error = removeFile(directory: directory, name: name) { throw error }
            return 0
        }
        guard offset <= size else {
            throw .corrupted(
                "\(name) is \(size) bytes, shorter than the position \(offset) \(StoreFileName.index) recorded; restore the data directory from a replica")
        }
        var index = Int(offset)
        var applied = 0
        while index < contents.writerIndex {
            let problem: String
            let partialLedgerID: Int64?
            switch OnDiskFormat.decodeRecord(in: contents, at: index) {
            case .record(let record):
                try applyReplayed(record, from: contents, at: index, journalName: name)
                index += record.recordLength
                applied += 1
                continue
            case .incomplete(let ledgerID):
                problem = "record runs past the end of the file"
                partialLedgerID = ledgerID
            case .corrupt(let reason, let ledgerID):
                problem = reason
                partialLedgerID = ledgerID
            }
            guard isLast else {
                throw .corrupted("\(name) offset \(index): \(problem), before the last journal file; restore the data directory from a replica")
            }
            logger.warning(
                "Journal ends in a torn or corrupt record; truncating it (it was never acknowledged)",
                metadata: [
                    "journal.file": "\(name)", "journal.offset": "\(index)",
                    "ledger.id": "\(partialLedgerID.map { String($0) } ?? "unknown")", "problem": "\(problem)",
                    "bytes.dropped": "\(contents.writerIndex - index)",
                ])
            if let error = file.truncate(to: Int64(index)) { throw error }
            if let error = file.syncData() { throw error }
            break
        }
        return applied
    }

    private func applyReplayed(
        _ record: DecodedRecord, from contents: ByteBuffer, at index: Int, journalName: String
    ) throws(LedgerStoreError) {
        switch record.kind {
        case .add:
            let ledger: LedgerState
            if let existing = ledgers[record.ledgerID] {
                // An add after a fence is a recovery add (`append(recovery: true)`), so `fenced` is not checked.
                guard record.entryID == Int64(existing.locations.count) else {
                    throw .corrupted(
                        "\(journalName) offset \(index): add of ledger \(record.ledgerID) entry \(record.entryID) does not follow the index (next entry \(existing.locations.count))")
                }
                ledger = existing
            } else {
                guard record.entryID == 0 else {
                    throw .corrupted(
                        "\(journalName) offset \(index): add of ledger \(record.ledgerID) entry \(record.entryID) for a ledger the index does not know")
                }
                ledger = LedgerState(ledgerID: record.ledgerID)
                ledgers[record.ledgerID] = ledger
            }
            let (written, writeError) = writeToEntryLog(contents, records: [(index, record.recordLength)])
            if let writeError { throw writeError }
            let location = written[0]
            ledger.locations.append(location)
            ledger.lastAddConfirmed = record.entryID
            ledger.nextEntryID = record.entryID + 1
            ledger.isOnDisk = true
        case .fence:
            let ledger = ledgers[record.ledgerID] ?? LedgerState(ledgerID: record.ledgerID)
            ledgers[record.ledgerID] = ledger
            ledger.fenced = true
            ledger.fenceRequested = true
            ledger.isOnDisk = true
        case .delete:
            ledgers[record.ledgerID] = nil
        }
    }
}

/// The index entry of one ledger in a `FileLedgerStore`. Owned by the store; every field is read
/// and written under the store's lock, except that the journal thread (the only writer of
/// `locations`, `lastAddConfirmed`, `fenced`, `isOnDisk`) may read those without it.
final class LedgerState {
    let ledgerID: Int64
    // Front: what appends are checked against.
    /// Next entry id `append` accepts.
    var nextEntryID: Int64 = 0
    /// `fence` was called (durable or not): appends are refused.
    var fenceRequested = false
    /// `deleteLedger` was called and its record is not yet applied.
    var deleteRequested = false
    /// Appended entries not yet in the entry log, by entry id.
    var writeCache: [Int64: ByteBuffer] = [:]
    // Applied: what the journal made durable.
    /// Locations of entries 0..<count in the entry logs.
    var locations: [EntryLocation] = []
    var lastAddConfirmed: Int64 = -1
    var fenced = false
    /// A journal record for this ledger was applied, so checkpoints include it.
    var isOnDisk = false

    init(ledgerID: Int64) {
        self.ledgerID = ledgerID
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
