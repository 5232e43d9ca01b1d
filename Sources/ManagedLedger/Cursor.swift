import Foundation
import LedgerStorage
import Logging
import Metadata
import NIOCore

/// The metadata record of a durable cursor: `/cursors/<tenant>/<ns>/<domain>/<topic>/<subscription>`.
package struct CursorRecord: Codable, Sendable {
    /// The ledger holding the cursor's snapshots (last entry wins).
    package var cursorLedgerID: Int64
    /// The position at creation, used when the cursor ledger holds no snapshot yet.
    package var initialMarkDeleteLedgerID: Int64
    package var initialMarkDeleteEntryID: Int64
}

/// A subscription's position in a managed ledger: the mark-delete position (everything at or
/// before it is acknowledged) and the individually acknowledged entries beyond it.
///
/// Durable cursors persist a snapshot after every change into their own cursor ledger (group
/// commit makes that cheap; at most one snapshot is in flight, changes meanwhile coalesce into the
/// next). Non-durable cursors (readers) live in memory only. Owned by the topic's event loop.
package final class Cursor: @unchecked Sendable {
    package let name: String
    package let durable: Bool
    private let managedLedger: ManagedLedger
    private let store: any LedgerClient
    private let metadata: any MetadataStore
    private let metadataKey: String
    private let logger: Logger

    package private(set) var markDelete: Position
    package private(set) var individuallyAcked = PositionRangeSet()
    /// Batch entries partly acknowledged: Java `BitSet.toLongArray` words, bit i set = message i not yet acked.
    package private(set) var batchAckSets: [Position: [Int64]] = [:]

    private var record: CursorRecord?
    private var recordVersion: Int64 = -1
    private var nextSnapshotEntryID: Int64 = 0
    private var snapshotInFlight = false
    private var snapshotDirty = false
    /// A snapshot append failed: the next one waits for this timer (`snapshotRetryDelay`).
    private var snapshotRetry: Scheduled<Void>?
    private var rollingLedger = false
    private var deleted = false
    /// Waiting for every change made so far to be durable.
    private var flushWaiters: [EventLoopPromise<Void>] = []

    package static let snapshotsPerLedger: Int64 = 1_000
    package static let maxRangesToPersist = 100_000
    /// Wait before writing a snapshot again after an append of one failed (a full disk, storage
    /// briefly away): changes meanwhile coalesce into it.
    package static let snapshotRetryDelay: TimeAmount = .seconds(1)

    private init(
        name: String, durable: Bool, managedLedger: ManagedLedger, store: any LedgerClient,
        metadata: any MetadataStore, metadataKey: String, logger: Logger, markDelete: Position
    ) {
        self.name = name
        self.durable = durable
        self.managedLedger = managedLedger
        self.store = store
        self.metadata = metadata
        self.metadataKey = metadataKey
        self.logger = logger
        self.markDelete = markDelete
    }

    /// What a non-durable cursor holds instead of a store: it never writes.
    private static let nonDurableStore = LocalLedgerClient(store: InMemoryLedgerStore())

    /// A cursor that lives in memory only (readers).
    package static func nonDurable(name: String, managedLedger: ManagedLedger, markDelete: Position, logger: Logger) -> Cursor {
        Cursor(
            name: name, durable: false, managedLedger: managedLedger, store: Cursor.nonDurableStore,
            metadata: InMemoryMetadataStore(), metadataKey: "", logger: logger, markDelete: markDelete)
    }

    /// Creates a new durable cursor at `markDelete` and records it in metadata.
    package static func create(
        name: String, managedLedger: ManagedLedger, store: any LedgerClient, metadata: any MetadataStore,
        metadataKey: String, markDelete: Position, logger: Logger
    ) async throws -> Cursor {
        let ledgerID = try await metadata.increment(ManagedLedger.ledgerIDCounterKey)
        try await store.createLedger(ledgerID: ledgerID, replication: managedLedger.replication)
        let record = CursorRecord(
            cursorLedgerID: ledgerID, initialMarkDeleteLedgerID: markDelete.ledgerID,
            initialMarkDeleteEntryID: markDelete.entryID)
        let version = try await metadata.put(metadataKey, value: Array(try JSONEncoder().encode(record)), expectedVersion: -1)
        let cursor = Cursor(
            name: name, durable: true, managedLedger: managedLedger, store: store, metadata: metadata,
            metadataKey: metadataKey, logger: logger, markDelete: markDelete)
        cursor.record = record
        cursor.recordVersion = version
        return cursor
    }

    /// Opens an existing durable cursor from its metadata record and its last snapshot.
    ///
    /// The new owner also claims the record: it fences the cursor ledger and then
    /// rewrites the record (a compare-and-set on the version it read), so a previous owner still
    /// running (a "zombie" broker) can no longer point the record at a fresh cursor ledger of its
    /// own. Fencing alone does not stop that: a zombie whose next snapshot rolls to a new ledger
    /// writes it there and swings the record with the version both brokers read, and its client's
    /// close then succeeds for acknowledgements the new owner never sees (RELIABILITY finding 5).
    /// If the record changed since it was read, the open starts again from the new record.
    package static func open(
        name: String, managedLedger: ManagedLedger, store: any LedgerClient, metadata: any MetadataStore,
        metadataKey: String, logger: Logger
    ) async throws -> Cursor? {
        var attempt = 0
        while true {
            attempt += 1
            guard let stored = try await metadata.get(metadataKey) else { return nil }
            let record = try JSONDecoder().decode(CursorRecord.self, from: Data(stored.value))
            var markDelete = Position(ledgerID: record.initialMarkDeleteLedgerID, entryID: record.initialMarkDeleteEntryID)
            var acked = PositionRangeSet()
            var batches: [Position: [Int64]] = [:]
            // Fence the cursor ledger first, so a previous owner of the topic (a "zombie" broker)
            // can persist no further acknowledgement into it.
            let lastAddConfirmed = try await store.recoverLedger(ledgerID: record.cursorLedgerID)
            if lastAddConfirmed >= 0 {
                let snapshot = try await store.read(ledgerID: record.cursorLedgerID, entryID: lastAddConfirmed)
                (markDelete, acked, batches) = try decodeSnapshot(snapshot)
            }
            let version: Int64
            do {
                version = try await metadata.put(metadataKey, value: stored.value, expectedVersion: stored.version)
            } catch MetadataStoreError.badVersion where attempt < openAttempts {
                logger.info("cursor.record-changed-during-open", metadata: [
                    "subscription": "\(name)", "cursor.ledger-id": "\(record.cursorLedgerID)", "attempt": "\(attempt)",
                ])
                continue
            }
            let cursor = Cursor(
                name: name, durable: true, managedLedger: managedLedger, store: store, metadata: metadata,
                metadataKey: metadataKey, logger: logger, markDelete: markDelete)
            cursor.individuallyAcked = acked
            cursor.batchAckSets = batches
            cursor.record = record
            cursor.recordVersion = version
            // A recovered ledger is fenced: the first snapshot then goes to a new cursor ledger.
            cursor.nextSnapshotEntryID = Cursor.snapshotsPerLedger
            return cursor
        }
    }

    /// How often an open starts again because the cursor's record changed under it (a previous
    /// owner rolled its cursor ledger meanwhile); after that the topic load fails and is retried.
    package static let openAttempts = 5

    /// Whether the entry at `position` is acknowledged.
    package func isAcknowledged(_ position: Position) -> Bool {
        position <= markDelete || individuallyAcked.contains(position)
    }

    /// Acknowledges one entry.
    package func acknowledge(_ position: Position) {
        guard position > markDelete, !individuallyAcked.contains(position) else { return }
        individuallyAcked.insert(position)
        batchAckSets[position] = nil
        advanceMarkDelete()
        changed()
    }

    /// Acknowledges some messages of a batch entry: `ackSet` has a 1 bit for each message still unacked.
    package func acknowledgeBatchIndexes(_ position: Position, ackSet: [Int64]) {
        guard !isAcknowledged(position) else { return }
        var combined = ackSet
        if let existing = batchAckSets[position] {
            combined = (0..<max(existing.count, ackSet.count)).map { index in
                (index < existing.count ? existing[index] : 0) & (index < ackSet.count ? ackSet[index] : 0)
            }
        }
        if combined.allSatisfy({ $0 == 0 }) {
            acknowledge(position)
            return
        }
        batchAckSets[position] = combined
        changed()
    }

    /// Acknowledges everything up to and including `position`.
    package func acknowledgeCumulative(upTo position: Position) {
        guard position > markDelete else { return }
        markDelete = position
        individuallyAcked.removeAll(upTo: position)
        advanceMarkDelete()
        changed()
    }

    /// Moves the cursor: the next entry delivered is the first one after `markDelete`.
    package func reset(markDelete newMarkDelete: Position) {
        markDelete = newMarkDelete
        individuallyAcked.removeAll(from: Position(ledgerID: newMarkDelete.ledgerID, entryID: newMarkDelete.entryID + 1))
        individuallyAcked.removeAll(upTo: newMarkDelete)
        batchAckSets.removeAll()
        changed()
    }

    /// Swallows acknowledged ranges that start right after the mark-delete position.
    private func advanceMarkDelete() {
        while let next = managedLedger.next(after: markDelete), let range = individuallyAcked.range(containing: next) {
            markDelete = Position(ledgerID: next.ledgerID, entryID: range.upperBound)
            individuallyAcked.removeAll(upTo: markDelete)
        }
        if !batchAckSets.isEmpty {
            batchAckSets = batchAckSets.filter { $0.key > markDelete && !individuallyAcked.contains($0.key) }
        }
    }

    /// Number of unacknowledged durable entries (the backlog in entries).
    package var backlogEntries: Int64 {
        max(0, managedLedger.entriesAfter(markDelete) - individuallyAcked.count)
    }

    // MARK: persistence

    /// Set when a snapshot append was refused as fenced: this broker no longer owns the topic.
    package private(set) var fencedOut = false

    private func changed() {
        guard durable, !deleted, !fencedOut else { return }
        if snapshotInFlight || snapshotRetry != nil {
            snapshotDirty = true
            return
        }
        writeSnapshot()
    }

    private func writeSnapshot() {
        guard let record else { return }
        snapshotInFlight = true
        snapshotDirty = false
        if nextSnapshotEntryID >= Cursor.snapshotsPerLedger, !rollingLedger {
            rollCursorLedger()
            return
        }
        let snapshot = encodeSnapshot()
        let eventLoop = managedLedger.eventLoop
        let entryID = nextSnapshotEntryID
        nextSnapshotEntryID += 1
        store.append(ledgerID: record.cursorLedgerID, entryID: entryID, payload: snapshot) { result in
            eventLoop.execute { self.snapshotWritten(result, entryID: entryID) }
        }
    }

    private func snapshotWritten(_ result: Result<Void, LedgerStoreError>, entryID: Int64) {
        snapshotInFlight = false
        if case .failure(let error) = result {
            logger.error("cursor.snapshot-failed", metadata: ["subscription": "\(name)", "error": "\(error)"])
            if case .fenced = error {
                // Another broker took the topic over and fenced this cursor's ledger: stop writing;
                // the topic is being unloaded here.
                stopWriting()
                return
            }
            // The store did not take it (a full disk forgets a refused entry): the next snapshot
            // goes to the same entry id, or to the one the store expects. Later, not in a tight loop.
            if case .outOfOrder(_, let expected, _) = error {
                nextSnapshotEntryID = expected
            } else {
                nextSnapshotEntryID = entryID
            }
            snapshotDirty = true
            scheduleSnapshotRetry()
            return
        }
        if snapshotDirty {
            writeSnapshot()
        } else {
            completeFlushWaiters()
        }
    }

    private func scheduleSnapshotRetry() {
        guard snapshotRetry == nil else { return }
        snapshotRetry = managedLedger.eventLoop.scheduleTask(in: Cursor.snapshotRetryDelay) {
            self.snapshotRetry = nil
            if self.snapshotDirty, !self.snapshotInFlight, !self.rollingLedger, !self.deleted, !self.fencedOut {
                self.writeSnapshot()
            }
        }
    }

    private func completeFlushWaiters() {
        let waiters = flushWaiters
        flushWaiters = []
        for waiter in waiters { waiter.succeed() }
    }

    /// This broker lost the topic: no more snapshots; whoever waits for durability is told so.
    private func stopWriting() {
        fencedOut = true
        let waiters = flushWaiters
        flushWaiters = []
        let error = BrokerError(.serviceNotReady, "subscription \(name) moved to another broker: its acknowledgements are no longer written here")
        for waiter in waiters { waiter.fail(error) }
    }

    /// Succeeds once every change made so far is durable (at once for a non-durable cursor).
    package func flush() -> EventLoopFuture<Void> {
        let eventLoop = managedLedger.eventLoop
        if fencedOut {
            return eventLoop.makeFailedFuture(BrokerError(.serviceNotReady, "subscription \(name) moved to another broker"))
        }
        guard durable, !deleted, snapshotInFlight || snapshotDirty || rollingLedger else {
            return eventLoop.makeSucceededVoidFuture()
        }
        let promise = eventLoop.makePromise(of: Void.self)
        flushWaiters.append(promise)
        return promise.futureResult
    }

    /// Starts a new cursor ledger with a fresh snapshot, points metadata at it, deletes the old one.
    private func rollCursorLedger() {
        guard let currentRecord = record else { return }
        rollingLedger = true
        let oldLedgerID = currentRecord.cursorLedgerID
        let snapshot = encodeSnapshot()
        let store = self.store
        let metadata = self.metadata
        let key = metadataKey
        let expected = recordVersion
        let replication = managedLedger.replication
        let future = managedLedger.eventLoop.makeFutureWithTask { () async throws -> (CursorRecord, Int64) in
            let ledgerID = try await metadata.increment(ManagedLedger.ledgerIDCounterKey)
            try await store.createLedger(ledgerID: ledgerID, replication: replication)
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                store.append(ledgerID: ledgerID, entryID: 0, payload: snapshot) { continuation.resume(with: $0) }
            }
            var newRecord = currentRecord
            newRecord.cursorLedgerID = ledgerID
            let version = try await metadata.put(key, value: Array(try JSONEncoder().encode(newRecord)), expectedVersion: expected)
            return (newRecord, version)
        }
        future.whenComplete { result in
            self.rollingLedger = false
            self.snapshotInFlight = false
            switch result {
            case .success(let (record, version)):
                self.record = record
                self.recordVersion = version
                self.nextSnapshotEntryID = 1
                Task { try? await store.deleteLedger(ledgerID: oldLedgerID) }
            case .failure(let error):
                self.logger.error("cursor.roll-failed", metadata: ["subscription": "\(self.name)", "error": "\(error)"])
                if case MetadataStoreError.badVersion = error {
                    // Another broker took the topic over and rewrote the cursor's record.
                    self.stopWriting()
                    return
                }
                if case LedgerStoreError.fenced = error {
                    self.stopWriting()
                    return
                }
                self.snapshotDirty = true
                // Retry later rather than in a tight loop (metadata or storage may be briefly away).
                self.managedLedger.eventLoop.scheduleTask(in: .seconds(1)) {
                    if !self.snapshotInFlight, !self.rollingLedger, self.snapshotDirty { self.writeSnapshot() }
                }
                return
            }
            if self.snapshotDirty { self.writeSnapshot() } else { self.completeFlushWaiters() }
        }
    }

    /// Removes the cursor's metadata and ledger (unsubscribe).
    package func delete() async throws {
        deleted = true
        guard durable, let record else { return }
        try? await store.deleteLedger(ledgerID: record.cursorLedgerID)
        try await metadata.delete(metadataKey, expectedVersion: nil)
    }

    /// Snapshot layout, big-endian. Version 1:
    /// `[u8 1][i64 markDeleteLedger][i64 markDeleteEntry][u32 n][n × (i64 ledger, i64 first, i64 last)]`.
    /// Version 2 appends the partly acknowledged batches:
    /// `[u32 m][m × (i64 ledger, i64 entry, u32 words, words × i64 ackSet)]`.
    private func encodeSnapshot() -> ByteBuffer {
        let ranges = individuallyAcked.allRanges.prefix(Cursor.maxRangesToPersist)
        var buffer = ByteBufferAllocator().buffer(capacity: 25 + ranges.count * 24 + batchAckSets.count * 28)
        buffer.writeInteger(UInt8(2))
        buffer.writeInteger(markDelete.ledgerID)
        buffer.writeInteger(markDelete.entryID)
        buffer.writeInteger(UInt32(ranges.count))
        for (ledgerID, entries) in ranges {
            buffer.writeInteger(ledgerID)
            buffer.writeInteger(entries.lowerBound)
            buffer.writeInteger(entries.upperBound)
        }
        let batches = batchAckSets.sorted { $0.key < $1.key }.prefix(Cursor.maxRangesToPersist)
        buffer.writeInteger(UInt32(batches.count))
        for (position, words) in batches {
            buffer.writeInteger(position.ledgerID)
            buffer.writeInteger(position.entryID)
            buffer.writeInteger(UInt32(words.count))
            for word in words { buffer.writeInteger(word) }
        }
        return buffer
    }

    package static func decodeSnapshot(_ snapshot: ByteBuffer) throws(BrokerError) -> (Position, PositionRangeSet, [Position: [Int64]]) {
        var buffer = snapshot
        let version = buffer.readInteger(as: UInt8.self)
        guard version == 1 || version == 2,
              let ledgerID = buffer.readInteger(as: Int64.self),
              let entryID = buffer.readInteger(as: Int64.self),
              let count = buffer.readInteger(as: UInt32.self), Int(count) * 24 <= buffer.readableBytes
        else {
            throw BrokerError(.persistence, "cursor snapshot is damaged or of an unknown version")
        }
        var set = PositionRangeSet()
        for _ in 0..<count {
            let ledger = buffer.readInteger(as: Int64.self)!
            let first = buffer.readInteger(as: Int64.self)!
            let last = buffer.readInteger(as: Int64.self)!
            guard first <= last else { throw BrokerError(.persistence, "cursor snapshot holds an inverted range") }
            set.insert(ledgerID: ledger, entries: first...last)
        }
        var batches: [Position: [Int64]] = [:]
        if version == 2 {
            guard let batchCount = buffer.readInteger(as: UInt32.self) else {
                throw BrokerError(.persistence, "cursor snapshot is truncated")
            }
            for _ in 0..<batchCount {
                guard let ledger = buffer.readInteger(as: Int64.self), let entry = buffer.readInteger(as: Int64.self),
                      let words = buffer.readInteger(as: UInt32.self), Int(words) * 8 <= buffer.readableBytes
                else { throw BrokerError(.persistence, "cursor snapshot is truncated") }
                batches[Position(ledgerID: ledger, entryID: entry)] = (0..<words).map { _ in buffer.readInteger(as: Int64.self)! }
            }
        }
        return (Position(ledgerID: ledgerID, entryID: entryID), set, batches)
    }
}
