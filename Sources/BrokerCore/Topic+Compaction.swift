import Foundation
import ManagedLedger
import Metadata
import NIOCore

/// Pulsar's `LongRunningProcessStatus.Status` of a topic's compaction.
public enum CompactionStatus: String, Sendable, Codable {
    case notRun = "NOT_RUN"
    case running = "RUNNING"
    case success = "SUCCESS"
    case error = "ERROR"
}

/// A topic's compaction as the admin API reports it (status and Pulsar's `CompactionStats`).
public struct CompactionState: Sendable, Equatable {
    public var status: CompactionStatus = .notRun
    public var lastError: String?
    public var lastSucceedTimestamp: Int64 = 0
    public var lastFailedTimestamp: Int64 = 0
    public var lastDurationMs: Int64 = 0
    public var lastRemovedEventCount: Int64 = 0
    /// The horizon of the compacted ledger in force, if any.
    public var horizon: Position?
}

extension Topic {
    /// The durable subscription that keeps what is not compacted yet (Pulsar's).
    public static let compactionSubscription = "__compaction"

    /// Starts compacting what the topic holds now (in the background); refused while a compaction runs.
    public func triggerCompaction() throws(BrokerError) {
        eventLoop.preconditionInEventLoop()
        if isUnloaded { throw unloadedError }
        guard let codec = compactionCodec else {
            throw BrokerError(.notAllowed, "topic \(name) cannot be compacted: no protocol endpoint reads its entries")
        }
        guard compaction.status != .running else {
            throw BrokerError(.conflict, "compaction of \(name) is already in progress: wait for it (compaction-status)")
        }
        let startedMs = managedLedger.clock.nowMs()
        // Not past an open transaction's first entry (what comes after it is not readable yet).
        var lastReadable = managedLedger.lastConfirmed
        if let limit = transactionView.readLimit, let last = lastReadable, last >= limit {
            lastReadable = Position(ledgerID: limit.ledgerID, entryID: limit.entryID - 1)
        }
        guard let horizon = lastReadable, horizon > (compactedView.horizon ?? .beforeEverything) else {
            // Nothing new since the last compaction.
            compaction.status = .success
            compaction.lastError = nil
            compaction.lastSucceedTimestamp = startedMs
            return
        }
        compaction.status = .running
        compaction.lastError = nil
        var configured = TopicCompactor(
            codec: codec, store: store, metadata: metadata, managedLedger: managedLedger, logger: logger)
        configured.abortedTransactions = transactionView.aborted
        let compactor = configured
        let previous = compactedView.record
        let expectedVersion = compactedView.recordVersion
        let key = MetadataKeys.compactedTopic(name.metadataPath)
        let metadata = self.metadata
        let store = self.store
        let logger = self.logger
        logger.info("compaction.started", metadata: ["horizon": "\(horizon)"])
        // The subscription holds what is not compacted yet (retention cannot trim it meanwhile).
        createSubscriptionIfMissing(Self.compactionSubscription).whenComplete { created in
            Task {
                do {
                    try created.get()
                    let result = try await compactor.compact(
                        previous: previous, horizon: horizon, nowMs: self.managedLedger.clock.nowMs())
                    let version: Int64
                    do {
                        version = try await metadata.put(
                            key, value: Array(try JSONEncoder().encode(result.record)), expectedVersion: expectedVersion)
                    } catch {
                        try? await store.deleteLedger(ledgerID: result.record.ledgerID)
                        throw error
                    }
                    try await self.eventLoop.submit {
                        self.compactedView.install(result.record, version: version, positions: result.positions)
                        let finishedMs = self.managedLedger.clock.nowMs()
                        self.compaction.status = .success
                        self.compaction.lastSucceedTimestamp = finishedMs
                        self.compaction.lastDurationMs = finishedMs - startedMs
                        self.compaction.lastRemovedEventCount = result.removedMessages
                        self.compaction.horizon = horizon
                        self.acknowledgeCumulative(subscription: Self.compactionSubscription, upTo: horizon)
                        for subscription in self.subscriptions.values where subscription.readCompacted {
                            subscription.compactedLedgerChanged()
                        }
                    }.get()
                    logger.info("compaction.finished", metadata: [
                        "horizon": "\(horizon)", "compacted.ledger.id": "\(result.record.ledgerID)",
                        "entries.kept": "\(result.record.dataEntries)", "messages.removed": "\(result.removedMessages)",
                    ])
                    if let previous { try? await store.deleteLedger(ledgerID: previous.ledgerID) }
                } catch {
                    logger.warning("compaction.failed", metadata: ["error": "\(error)"])
                    self.eventLoop.execute {
                        self.compaction.status = .error
                        self.compaction.lastError = "\(error)"
                        self.compaction.lastFailedTimestamp = self.managedLedger.clock.nowMs()
                    }
                }
            }
        }
    }

    /// Compacts when what came after the horizon reaches the threshold (namespace `compactionThreshold`,
    /// else the broker's), checked once per `compactionMonitorIntervalMs`. Called by the policy pass.
    func checkCompactionThreshold(_ policies: EffectivePolicies, nowMs: Int64) {
        let threshold = policies.compactionThreshold ?? compactionThresholdDefault
        guard threshold > 0, compactionCodec != nil, compaction.status != .running,
              nowMs - lastCompactionCheckMs >= compactionMonitorIntervalMs
        else { return }
        lastCompactionCheckMs = nowMs
        if managedLedger.sizeAfter(compactedView.horizon ?? .beforeEverything) >= threshold {
            try? triggerCompaction()
        }
    }

    /// Reads the compacted ledger's record when the topic loads (from a task, before clients attach).
    func loadCompactionRecord() async throws {
        guard let stored = try await metadata.get(MetadataKeys.compactedTopic(name.metadataPath)) else { return }
        let record = try JSONDecoder().decode(CompactionRecord.self, from: Data(stored.value))
        try await eventLoop.submit {
            self.compactedView.install(record, version: stored.version, positions: nil)
            self.compaction.horizon = record.horizon
            self.compaction.lastSucceedTimestamp = record.compactedAtMs
        }.get()
    }

    /// Deletes the compacted ledger and its record (the topic is being deleted).
    func deleteCompactedLedger() async throws {
        let key = MetadataKeys.compactedTopic(name.metadataPath)
        guard let stored = try await metadata.get(key) else { return }
        let record = try JSONDecoder().decode(CompactionRecord.self, from: Data(stored.value))
        try? await store.deleteLedger(ledgerID: record.ledgerID)
        try await metadata.delete(key, expectedVersion: nil)
    }
}
