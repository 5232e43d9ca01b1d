import Foundation
import LedgerStorage
import Logging
import Metadata
import NIOConcurrencyHelpers
import NIOCore
import TieredStorage

/// Pulsar's `OffloadProcessStatus`: the offload started last (by hand or by the threshold).
package struct OffloadStatus: Sendable, Equatable {
    package enum State: String, Sendable {
        case notRun = "NOT_RUN"
        case running = "RUNNING"
        case success = "SUCCESS"
        case error = "ERROR"
    }

    package var state: State = .notRun
    package var lastError = ""
    /// The first entry the offload leaves local (the first entry of the first ledger not offloaded).
    package var firstUnoffloaded: Position?
}

/// What a managed ledger's offloads did since it was opened.
package struct OffloadCounters: Sendable, Equatable {
    package var ledgers: Int64 = 0
    package var bytes: Int64 = 0
    package var errors: Int64 = 0
    package var tierReadErrors: Int64 = 0
    /// Total time of the successful ledger offloads, for an average.
    package var totalMs: Int64 = 0

    package init() {}
}

/// A change to one ledger's record (an offload, a local copy deleted), queued until the managed
/// ledger's record is free to write.
/// Made, written and completed on the managed ledger's loop only.
struct PendingRecordChange: @unchecked Sendable {
    var ledgerID: Int64
    var apply: (inout LedgerInfo) -> Void
    var promise: EventLoopPromise<Void>
}

/// A record change that failed: `mayHaveBeenWritten` when the metadata store's answer leaves open
/// whether the write landed (so what it names must not be deleted).
struct RecordChangeFailure: Error, CustomStringConvertible {
    var mayHaveBeenWritten: Bool
    var reason: String
    var description: String { reason }
}

/// Which ledgers are offloaded, and whether only the tier holds them: read by the read paths,
/// which also run in tasks (off the loop). Thread-safe.
final class OffloadedLedgerMap: @unchecked Sendable {
    private let lock = NIOLock()
    private var locations: [Int64: (location: OffloadedLedgerLocation, tierOnly: Bool)] = [:]

    func update(_ ledgers: [LedgerInfo]) {
        var fresh: [Int64: (location: OffloadedLedgerLocation, tierOnly: Bool)] = [:]
        for ledger in ledgers {
            if let location = ledger.offloaded { fresh[ledger.ledgerID] = (location, ledger.localDeleted == true) }
        }
        lock.withLock { locations = fresh }
    }

    var isEmpty: Bool { lock.withLock { locations.isEmpty } }

    func location(of ledgerID: Int64) -> (location: OffloadedLedgerLocation, tierOnly: Bool)? {
        lock.withLock { locations.isEmpty ? nil : locations[ledgerID] }
    }
}

extension ManagedLedger {
    /// Pulsar's `managedLedgerOffloadDeletionLagMs` default: 4 hours.
    package static let defaultOffloadDeletionLagMs: Int64 = 4 * 3_600_000

    // MARK: reads across tiers

    /// Entries `firstEntryID...lastEntryID` of one of this managed ledger's ledgers, one result
    /// each, completed on the loop: from the store, or from the tier for a ledger whose local copy
    /// is gone (or cannot be read). Callable from any thread.
    func readStoredEntries(ledgerID: Int64, firstEntryID: Int64, lastEntryID: Int64) -> EventLoopFuture<[Result<ByteBuffer, LedgerStoreError>]> {
        guard let offloaded = offloadedLedgers.location(of: ledgerID) else {
            return store.readEntries(ledgerID: ledgerID, firstEntryID: firstEntryID, lastEntryID: lastEntryID, on: eventLoop)
        }
        if offloaded.tierOnly {
            return readFromTier(offloaded.location, ledgerID: ledgerID, first: firstEntryID, last: lastEntryID)
        }
        // Offloaded, local copy still kept (the deletion lag): local first, the tier if that fails
        // (the copy was just deleted).
        return store.readEntries(ledgerID: ledgerID, firstEntryID: firstEntryID, lastEntryID: lastEntryID, on: eventLoop)
            .flatMap { results in
                guard results.contains(where: { if case .failure = $0 { true } else { false } }) else {
                    return self.eventLoop.makeSucceededFuture(results)
                }
                return self.readFromTier(offloaded.location, ledgerID: ledgerID, first: firstEntryID, last: lastEntryID)
            }
    }

    /// One entry, the same way, awaited.
    func readStoredEntry(_ position: Position) async throws(LedgerStoreError) -> ByteBuffer {
        let results: [Result<ByteBuffer, LedgerStoreError>]
        do {
            results = try await readStoredEntries(ledgerID: position.ledgerID, firstEntryID: position.entryID, lastEntryID: position.entryID).get()
        } catch {
            throw (error as? LedgerStoreError) ?? .closed
        }
        guard let result = results.first else { throw .entryNotFound(ledgerID: position.ledgerID, entryID: position.entryID) }
        return try result.get()
    }

    private func readFromTier(
        _ location: OffloadedLedgerLocation, ledgerID: Int64, first: Int64, last: Int64
    ) -> EventLoopFuture<[Result<ByteBuffer, LedgerStoreError>]> {
        let count = Int(last - first + 1)
        guard let registry = configuration.offloaders else {
            let error = LedgerStoreError.unavailable(
                "ledger \(ledgerID) of \(name) is offloaded (\(location.driver), \(location.container)) and this broker has no offload driver: set managedLedgerOffloadDriver")
            return eventLoop.makeSucceededFuture(Array(repeating: .failure(error), count: count))
        }
        let name = self.name
        return eventLoop.makeFutureWithTask { () async -> [Result<ByteBuffer, LedgerStoreError>] in
            do throws(TieredStorageError) {
                let entries = try await registry.offloader(reading: location).readEntries(location, first: first, last: last)
                return entries.map { .success($0) }
            } catch {
                let detail = "entries \(first)-\(last) of ledger \(ledgerID) of \(name), offloaded to \(location.container): \(error)"
                let mapped: LedgerStoreError = switch error.code {
                case .corrupted: .corrupted(detail)
                case .unavailable: .unavailable(detail + " (retried; check that the tier is reachable)")
                case .notFound, .invalidArgument: .io(detail)
                }
                return Array(repeating: .failure(mapped), count: count)
            }
        }.map { results in
            if case .failure(let error)? = results.first {
                self.offloadCounters.tierReadErrors += 1
                self.logger.warning("managed-ledger.tier-read-failed", metadata: [
                    "topic": "\(self.name)", "ledger.id": "\(ledgerID)", "error": "\(error)",
                ])
            }
            return results
        }
    }

    /// Entries of a ledger from the local store only (what an offload copies).
    private func readLocalEntries(ledgerID: Int64, first: Int64, last: Int64) async throws -> [ByteBuffer] {
        try await store.readEntries(ledgerID: ledgerID, firstEntryID: first, lastEntryID: last, on: eventLoop).get().map { try $0.get() }
    }

    // MARK: the record

    /// Changes one ledger's record in metadata (compare-and-set on the managed ledger's record,
    /// after any roll or trim in flight), then in memory. Fails if the ledger is gone.
    func changeLedgerRecord(_ ledgerID: Int64, _ apply: @escaping (inout LedgerInfo) -> Void) -> EventLoopFuture<Void> {
        eventLoop.preconditionInEventLoop()
        let promise = eventLoop.makePromise(of: Void.self)
        pendingRecordChanges.append(PendingRecordChange(ledgerID: ledgerID, apply: apply, promise: promise))
        writePendingRecordChanges()
        return promise.futureResult
    }

    /// Writes the queued record changes in one compare-and-set, unless a roll or a trim holds the
    /// record (each calls this again when done).
    func writePendingRecordChanges() {
        eventLoop.preconditionInEventLoop()
        guard !pendingRecordChanges.isEmpty else { return }
        // A failed managed ledger writes nothing more (a failed roll leaves `rolling` set): the
        // changes fail at once rather than wait forever.
        if let failure {
            let changes = pendingRecordChanges
            pendingRecordChanges = []
            for change in changes { change.promise.fail(failure) }
            return
        }
        guard !writingRecord, !rolling else { return }
        var changes = pendingRecordChanges
        pendingRecordChanges = []
        changes.removeAll { change in
            guard ledgers.contains(where: { $0.ledgerID == change.ledgerID }) else {
                change.promise.fail(BrokerError(.notFound, "ledger \(change.ledgerID) of \(name) is gone (trimmed by retention)"))
                return true
            }
            return false
        }
        guard !changes.isEmpty else { return }
        let changesWritten = changes
        var record = ManagedLedgerRecord(ledgers: ledgers)
        for change in changes {
            if let index = record.ledgers.firstIndex(where: { $0.ledgerID == change.ledgerID }) { change.apply(&record.ledgers[index]) }
        }
        writingRecord = true
        let metadata = self.metadata
        let key = metadataKey
        let expected = metadataVersion
        let newRecord = record
        eventLoop.makeFutureWithTask {
            try await metadata.put(key, value: Array(try JSONEncoder().encode(newRecord)), expectedVersion: expected)
        }.whenComplete { result in
            self.writingRecord = false
            switch result {
            case .success(let version):
                self.metadataVersion = version
                for change in changesWritten {
                    if let index = self.ledgers.firstIndex(where: { $0.ledgerID == change.ledgerID }) { change.apply(&self.ledgers[index]) }
                }
                self.offloadedLedgers.update(self.ledgers)
                for change in changesWritten { change.promise.succeed(()) }
            case .failure(let error):
                // Only a refused compare-and-set is sure not to have been written; anything else
                // (a time-out) may have been, so its objects must stay (`RecordChangeFailure`).
                let written = { if case .badVersion? = error as? MetadataStoreError { return false } else { return true } }()
                let failure = RecordChangeFailure(
                    mayHaveBeenWritten: written, reason: "cannot record the offload of \(self.name)'s ledgers: \(error)")
                for change in changesWritten { change.promise.fail(failure) }
            }
            if self.rolling { self.finishRollIfIdle() }
            self.writePendingRecordChanges()
        }
    }

    // MARK: offloading

    /// Offloads the closed ledgers before `limit`'s ledger (nil: every closed ledger) that are not
    /// offloaded yet, oldest first, one at a time, in the background; `offloadStatus` follows it.
    /// Returns the first entry left local. Throws if no tier is configured or an offload runs.
    @discardableResult
    package func startOffload(before limit: Position?) throws(BrokerError) -> Position? {
        eventLoop.preconditionInEventLoop()
        guard let registry = configuration.offloaders, let target = offloadTarget else {
            throw BrokerError(.preconditionFailed, "\(name) has no offload driver: set managedLedgerOffloadDriver in the broker's configuration, or the namespace's offloadPolicies")
        }
        guard offloadStatus.state != .running else { throw BrokerError(.conflict, "Offload already running") }
        let offloader: LedgerOffloader
        do {
            offloader = try registry.offloader(for: target)
        } catch {
            throw BrokerError(.preconditionFailed, "cannot offload to \(target): \(error)")
        }
        var candidates: [LedgerInfo] = []
        var firstUnoffloaded: Position?
        for (index, ledger) in ledgers.enumerated() {
            let before = limit.map { ledger.ledgerID < $0.ledgerID } ?? true
            if index + 1 < ledgers.count, ledger.closed, before {
                if ledger.offloaded == nil, ledger.entries > 0 { candidates.append(ledger) }
            } else if firstUnoffloaded == nil {
                firstUnoffloaded = Position(ledgerID: ledger.ledgerID, entryID: 0)
            }
        }
        offloadStatus = OffloadStatus(state: candidates.isEmpty ? .success : .running, firstUnoffloaded: firstUnoffloaded)
        guard !candidates.isEmpty else { return firstUnoffloaded }
        let toOffload = candidates
        Task { await self.runOffload(toOffload, with: offloader, firstUnoffloaded: firstUnoffloaded) }
        return firstUnoffloaded
    }

    private func runOffload(_ candidates: [LedgerInfo], with offloader: LedgerOffloader, firstUnoffloaded: Position?) async {
        for ledger in candidates {
            let ledgerID = ledger.ledgerID
            let started = ContinuousClock.now
            do {
                let location = try await offloader.offload(ledgerID: ledgerID, entryCount: ledger.entries) { first, last in
                    try await self.readLocalEntries(ledgerID: ledgerID, first: first, last: last)
                }
                let deleteNow = try await eventLoop.submit { self.offloadDeletionLagMs == 0 }.get()
                let nowMs = clock.nowMs()
                do {
                    try await eventLoop.flatSubmit {
                        self.changeLedgerRecord(ledgerID) { info in
                            info.offloaded = location
                            info.offloadedAtMs = nowMs
                            if deleteNow { info.localDeleted = true }
                        }
                    }.get()
                } catch {
                    // Not recorded (trimmed meanwhile, or the compare-and-set refused): nothing
                    // refers to the objects, which go. A write that may have landed keeps them.
                    if (error as? RecordChangeFailure)?.mayHaveBeenWritten != true {
                        try? await offloader.delete(location)
                    } else {
                        logger.warning("managed-ledger.offload-record-uncertain", metadata: [
                            "topic": "\(name)", "ledger.id": "\(ledgerID)", "offload.object": "\(location.dataKey)",
                            "hint": "the objects are kept: the managed ledger's record may name them (the topic reloads and reads it)",
                        ])
                    }
                    throw error
                }
                if deleteNow { try? await store.deleteLedger(ledgerID: ledgerID) }
                let elapsed = ContinuousClock.now - started
                let elapsedMs = elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000
                try await eventLoop.submit {
                    self.offloadCounters.ledgers += 1
                    self.offloadCounters.bytes += ledger.sizeBytes
                    self.offloadCounters.totalMs += elapsedMs
                }.get()
                logger.info("managed-ledger.offloaded", metadata: [
                    "topic": "\(name)", "ledger.id": "\(ledgerID)", "ledger.entries": "\(ledger.entries)",
                    "offload.container": "\(location.container)", "offload.object": "\(location.dataKey)",
                    "local.deleted": "\(deleteNow)", "offload.ms": "\(elapsedMs)",
                ])
            } catch {
                logger.error("managed-ledger.offload-failed", metadata: [
                    "topic": "\(name)", "ledger.id": "\(ledgerID)", "error": "\(error)",
                    "hint": "the ledger stays local; the offload is tried again by the next trigger",
                ])
                eventLoop.execute {
                    self.offloadCounters.errors += 1
                    self.offloadFailedAtMs = self.clock.nowMs()
                    self.offloadStatus = OffloadStatus(state: .error, lastError: "\(error)", firstUnoffloaded: firstUnoffloaded)
                }
                return
            }
        }
        eventLoop.execute {
            self.offloadStatus = OffloadStatus(state: .success, firstUnoffloaded: firstUnoffloaded)
        }
    }

    /// What the offload threshold asks for: the closed local ledgers beyond the newest
    /// `offloadThresholdBytes` of the log (Pulsar's rule: ledgers summed newest first; those
    /// reached after the sum passes the threshold go), and their bytes.
    package var ledgersOverOffloadThreshold: (ledgers: [LedgerInfo], bytes: Int64) {
        guard offloadThresholdBytes >= 0, offloadTarget != nil, ledgers.count > 1 else { return ([], 0) }
        var summed: Int64 = 0
        var over: [LedgerInfo] = []
        var bytes: Int64 = 0
        for (index, ledger) in ledgers.enumerated().reversed() {
            summed += ledger.sizeBytes
            guard index + 1 < ledgers.count, ledger.closed, ledger.offloaded == nil, ledger.entries > 0 else { continue }
            if summed > offloadThresholdBytes || offloadThresholdBytes == 0 {
                over.append(ledger)
                bytes += ledger.sizeBytes
            }
        }
        return (over.reversed(), bytes)
    }

    /// Bytes the threshold wants offloaded that are not yet (the offload lag).
    package var offloadLagBytes: Int64 { ledgersOverOffloadThreshold.bytes }

    /// Bytes of the ledgers held by the tier.
    package var offloadedSizeBytes: Int64 {
        ledgers.reduce(0) { $0 + ($1.offloaded == nil ? 0 : $1.sizeBytes) }
    }

    /// Starts an offload when the threshold asks for one and none runs.
    package func offloadIfOverThreshold() {
        eventLoop.preconditionInEventLoop()
        guard offloadStatus.state != .running, failure == nil else { return }
        let over = ledgersOverOffloadThreshold.ledgers
        guard let last = over.last, let lastIndex = ledgers.firstIndex(where: { $0.ledgerID == last.ledgerID }),
              lastIndex + 1 < ledgers.count
        else { return }
        // After an error the threshold tries again, but not more than once a minute.
        if offloadStatus.state == .error, let failedAt = offloadFailedAtMs, clock.nowMs().saturatingSubtract(failedAt) < 60_000 { return }
        _ = try? startOffload(before: Position(ledgerID: ledgers[lastIndex + 1].ledgerID, entryID: 0))
    }

    /// Deletes the local copies of offloaded ledgers once the deletion lag has passed (metadata
    /// first: a crash in between leaves an unreferenced local copy, never a dangling reference).
    package func deleteOffloadedLocalCopies() {
        eventLoop.preconditionInEventLoop()
        guard offloadDeletionLagMs >= 0, !offloadedLedgers.isEmpty else { return }
        let now = clock.nowMs()
        for ledger in ledgers where ledger.offloaded != nil && ledger.localDeleted != true && !localDeletions.contains(ledger.ledgerID) {
            guard let at = ledger.offloadedAtMs, now.saturatingSubtract(at) >= offloadDeletionLagMs else { continue }
            let ledgerID = ledger.ledgerID
            localDeletions.insert(ledgerID)
            let store = self.store
            changeLedgerRecord(ledgerID) { $0.localDeleted = true }.flatMap {
                self.eventLoop.makeFutureWithTask { try? await store.deleteLedger(ledgerID: ledgerID) }
            }.whenComplete { result in
                self.localDeletions.remove(ledgerID)
                if case .success = result {
                    self.logger.info("managed-ledger.offloaded-local-deleted", metadata: ["topic": "\(self.name)", "ledger.id": "\(ledgerID)"])
                }
            }
        }
    }
}
