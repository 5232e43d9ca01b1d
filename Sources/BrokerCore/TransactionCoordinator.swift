import Foundation
import Logging
import ManagedLedger
import Metadata
import NIOConcurrencyHelpers
import NIOCore

/// A transaction's state (Pulsar's `TxnStatus`): OPEN until its client ends it or its time-out
/// does, then COMMITTING / ABORTING while the markers are written, then COMMITTED / ABORTED.
public enum TransactionStatus: String, Codable, Sendable {
    case open = "OPEN"
    case committing = "COMMITTING"
    case committed = "COMMITTED"
    case aborting = "ABORTING"
    case aborted = "ABORTED"

    public var isEnding: Bool { self == .committing || self == .aborting }
    public var isEnded: Bool { self == .committed || self == .aborted }
}

/// A consumer group's offset committed in a transaction (Kafka's TxnOffsetCommit), applied when it commits.
public struct TransactionOffsetCommit: Codable, Sendable, Equatable {
    public var group: String
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    public var metadata: String?

    public init(group: String, topic: String, partition: Int32, offset: Int64, metadata: String?) {
        self.group = group
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.metadata = metadata
    }
}

/// A subscription a transaction acknowledges on (Pulsar's ADD_SUBSCRIPTION_TO_TXN).
public struct TransactionSubscription: Codable, Sendable, Hashable {
    public var topic: String
    public var subscription: String

    public init(topic: String, subscription: String) {
        self.topic = topic
        self.subscription = subscription
    }
}

/// A topic (by full name) and partition index whose group offset a transaction holds.
public struct TransactionSubscriptionPartition: Sendable, Hashable {
    public var topic: String
    public var partition: Int32

    public init(topic: String, partition: Int32) {
        self.topic = topic
        self.partition = partition
    }
}

/// One transaction as the coordinator keeps it (`MetadataKeys.transaction`, JSON) until it ended.
public struct TransactionRecord: Codable, Sendable, Equatable {
    public var id: TransactionID
    public var status: TransactionStatus
    public var openedAtMs: Int64
    public var timeoutMs: Int64
    /// The topics (partitions) it wrote to, by full name, in the order they were added.
    public var partitions: [String]
    /// The subscriptions it acknowledged on.
    public var subscriptions: [TransactionSubscription] = []
    public var offsetCommits: [TransactionOffsetCommit]
    /// Who opened it, for the admin API (a Kafka `transactional.id`), or nil.
    public var owner: String?
    /// Aborted by its time-out.
    public var timedOut: Bool

    public var timeoutAtMs: Int64 { openedAtMs.saturatingAdd(timeoutMs) }
}

/// Where a transaction's end is carried out: the topics it wrote to (their markers), and the
/// groups it committed offsets for.
public protocol TransactionParticipants: Sendable {
    func endTransaction(_ transaction: TransactionID, onPartition topic: String, committed: Bool) async throws
    func endTransaction(_ transaction: TransactionID, onSubscription subscription: TransactionSubscription, committed: Bool) async throws
    func commitOffsets(_ commits: [TransactionOffsetCommit]) async throws
}

/// The coordinator's counts since it started (the admin API's coordinator stats, `/metrics`).
public struct TransactionCoordinatorStatistics: Sendable, Equatable {
    public var coordinatorID: UInt64
    public var open: Int
    public var created: Int64
    public var committed: Int64
    public var aborted: Int64
    public var timedOut: Int64
}

/// The transaction coordinator (Pulsar's `TransactionMetadataStore` + `TransactionCoordinator`,
/// Kafka's transaction coordinator): hands out transaction ids, keeps each transaction's record in
/// the metadata store, aborts those that outlive their time-out, and ends them — the status first
/// (COMMITTING / ABORTING, durably), then every participant, then the end status. A coordinator
/// that restarts (kill -9 included) finishes what was ending and keeps timing out what was open.
/// One per broker in standalone (id 0); both protocols' transactions go through it.
public actor TransactionCoordinator {
    public nonisolated let coordinatorID: UInt64
    private let metadata: any MetadataStore
    private let participants: any TransactionParticipants
    private let clock: WallClock
    private let logger: Logger
    /// The longest time-out a client may ask for (Kafka's `transaction.max.timeout.ms`, 15 minutes).
    public nonisolated let maxTimeoutMs: Int64
    /// The time-out of a transaction that asks for none (Pulsar's client default, 1 minute... the
    /// broker's `transactionTimeoutMs`-like default).
    public nonisolated let defaultTimeoutMs: Int64

    private var records: [TransactionID: TransactionRecord] = [:]
    private var ending: [TransactionID: Task<Void, any Error>] = [:]
    private var timeouts: [TransactionID: Task<Void, Never>] = [:]
    private var writes: [TransactionID: Task<Void, any Error>] = [:]
    /// How recently ended transactions ended (an end repeated after it completed is answered by it).
    private var ended: [TransactionID: TransactionStatus] = [:]
    private var endedOrder: [TransactionID] = []
    private var statistics: TransactionCoordinatorStatistics
    /// The topics each open transaction may write to, readable from any thread without a hop
    /// (a SEND is checked against it in order with the others of its connection).
    private nonisolated let writable = NIOLockedValueBox<[TransactionID: Set<String>]>([:])
    private var recovered = false
    private var stopped = false

    static let endedRemembered = 10_000
    /// The wait before an end is tried again after a participant failed (grows with the attempts).
    private let retryDelayMs: UInt64

    public init(
        coordinatorID: UInt64 = 0, metadata: any MetadataStore, participants: any TransactionParticipants,
        clock: WallClock = .system, defaultTimeoutMs: Int64 = 60_000, maxTimeoutMs: Int64 = 900_000,
        retryDelayMs: UInt64 = 200, logger: Logger
    ) {
        self.retryDelayMs = retryDelayMs
        self.coordinatorID = coordinatorID
        self.metadata = metadata
        self.participants = participants
        self.clock = clock
        self.defaultTimeoutMs = defaultTimeoutMs
        self.maxTimeoutMs = maxTimeoutMs
        var logger = logger
        logger[metadataKey: "transaction.coordinator"] = "\(coordinatorID)"
        self.logger = logger
        statistics = TransactionCoordinatorStatistics(coordinatorID: coordinatorID, open: 0, created: 0, committed: 0, aborted: 0, timedOut: 0)
    }

    // MARK: recovery

    /// Reads every transaction record: ending ones are finished, open ones get their time-outs again
    /// (those past it are aborted now).
    public func recover() async throws {
        guard !recovered else { return }
        let prefix = MetadataKeys.transactions(ofCoordinator: coordinatorID)
        var loaded = 0
        for key in try await metadata.list(prefix: prefix) {
            guard let stored = try await metadata.get(key),
                  let record = try? JSONDecoder().decode(TransactionRecord.self, from: Data(stored.value))
            else { continue }
            records[record.id] = record
            loaded += 1
        }
        recovered = true
        statistics.open = records.values.filter { $0.status == .open }.count
        logger.info("transaction.coordinator-recovered", metadata: ["transactions": "\(loaded)"])
        for record in records.values {
            switch record.status {
            case .committing, .aborting:
                startEnding(record.id, committed: record.status == .committing)
            case .open:
                armTimeout(record)
                let partitions = Set(record.partitions)
                writable.withLockedValue { $0[record.id] = partitions }
            case .committed, .aborted:
                // Ended, its record not yet removed.
                finish(record.id, status: record.status)
            }
        }
    }

    private func requireRecovered() throws(BrokerError) {
        guard recovered else {
            throw BrokerError(.transactionCoordinatorNotFound, "transaction coordinator \(coordinatorID) is still recovering; retry")
        }
    }

    // MARK: operations

    /// Opens a transaction; `timeoutMs` 0 takes the default, more than the maximum is refused.
    public func newTransaction(timeoutMs requested: Int64, owner: String? = nil) async throws -> TransactionID {
        try requireRecovered()
        let timeoutMs = requested <= 0 ? defaultTimeoutMs : requested
        guard timeoutMs <= maxTimeoutMs else {
            throw BrokerError(.badRequest, "transaction time-out \(timeoutMs) ms is over the maximum \(maxTimeoutMs) ms")
        }
        let sequence = try await metadata.increment(MetadataKeys.transactionCounter(coordinator: coordinatorID))
        let id = TransactionID(mostBits: coordinatorID, leastBits: UInt64(max(sequence, 0)))
        let record = TransactionRecord(
            id: id, status: .open, openedAtMs: clock.nowMs(), timeoutMs: timeoutMs, partitions: [], offsetCommits: [],
            owner: owner, timedOut: false)
        records[id] = record
        do {
            try await persist(id)
        } catch {
            records[id] = nil
            throw error
        }
        statistics.created += 1
        statistics.open += 1
        armTimeout(record)
        logger.debug("transaction.opened", metadata: ["transaction": "\(id)", "timeout.ms": "\(timeoutMs)"])
        return id
    }

    /// Adds topics the transaction writes to (before its first entry on each).
    public func addPartitions(_ id: TransactionID, _ topics: [String]) async throws {
        var record = try openRecord(id)
        var new: [String] = []
        for topic in topics where !record.partitions.contains(topic) && !new.contains(topic) { new.append(topic) }
        guard !new.isEmpty else { return }
        record.partitions.append(contentsOf: new)
        records[id] = record
        try await persist(id)
        // Writable once recorded (and only while it is still open).
        if records[id]?.status == .open {
            let partitions = Set(records[id]?.partitions ?? [])
            writable.withLockedValue { $0[id] = partitions }
        }
    }

    /// Adds subscriptions the transaction acknowledges on (before its first acknowledgement on each).
    public func addSubscriptions(_ id: TransactionID, _ subscriptions: [TransactionSubscription]) async throws {
        var record = try openRecord(id)
        var new: [TransactionSubscription] = []
        for subscription in subscriptions where !record.subscriptions.contains(subscription) && !new.contains(subscription) {
            new.append(subscription)
        }
        guard !new.isEmpty else { return }
        record.subscriptions.append(contentsOf: new)
        records[id] = record
        try await persist(id)
    }

    /// Whether the transaction is open and `subscription` was added to it (an acknowledgement in it may be taken).
    public func mayAcknowledge(_ id: TransactionID, on subscription: TransactionSubscription) -> Bool {
        guard let record = records[id] else { return false }
        return record.status == .open && record.subscriptions.contains(subscription)
    }

    /// Adds offsets to commit with the transaction (a later commit of the same partition replaces it).
    public func addOffsetCommits(_ id: TransactionID, _ commits: [TransactionOffsetCommit]) async throws {
        var record = try openRecord(id)
        for commit in commits {
            record.offsetCommits.removeAll { $0.group == commit.group && $0.topic == commit.topic && $0.partition == commit.partition }
            record.offsetCommits.append(commit)
        }
        records[id] = record
        try await persist(id)
    }

    /// The transaction's status; nil when it is unknown (never opened here, or ended long ago).
    public func status(_ id: TransactionID) -> TransactionStatus? {
        records[id]?.status ?? ended[id]
    }

    /// Whether the transaction is open and `topic` was added to it (a send in it may be written).
    public nonisolated func mayWrite(_ id: TransactionID, to topic: String) -> Bool {
        writable.withLockedValue { $0[id]?.contains(topic) ?? false }
    }

    public func record(_ id: TransactionID) -> TransactionRecord? { records[id] }

    /// The (topic, partition)s of `group` with offsets committed in a transaction not ended yet.
    public func pendingOffsetCommits(group: String) -> Set<TransactionSubscriptionPartition> {
        var pending = Set<TransactionSubscriptionPartition>()
        for record in records.values where !record.status.isEnded {
            for commit in record.offsetCommits where commit.group == group {
                pending.insert(TransactionSubscriptionPartition(topic: commit.topic, partition: commit.partition))
            }
        }
        return pending
    }

    /// Transactions open or ending, oldest first.
    public func transactions() -> [TransactionRecord] {
        records.values.sorted { $0.openedAtMs == $1.openedAtMs ? $0.id < $1.id : $0.openedAtMs < $1.openedAtMs }
    }

    public func currentStatistics() -> TransactionCoordinatorStatistics { statistics }

    /// Commits or aborts; returns once every participant ended it. Ending an ending transaction
    /// the same way waits for it; ending an ended one the same way returns at once.
    public func end(_ id: TransactionID, committed: Bool) async throws {
        try requireRecovered()
        let wanted: TransactionStatus = committed ? .committed : .aborted
        if let status = ended[id], records[id] == nil {
            guard status == wanted else {
                throw BrokerError(.invalidTransactionStatus, "transaction \(id) is already \(status.rawValue)")
            }
            return
        }
        guard var record = records[id] else {
            throw BrokerError(.transactionNotFound, "transaction \(id) is not known to coordinator \(coordinatorID)")
        }
        switch record.status {
        case .open:
            // Claimed before anything is awaited: a time-out or another end now sees it ending.
            let opened = record
            record.status = committed ? .committing : .aborting
            records[id] = record
            writable.withLockedValue { $0[id] = nil }
            timeouts.removeValue(forKey: id)?.cancel()
            statistics.open -= 1
            do {
                try await persist(id)
            } catch {
                records[id] = opened
                let partitions = Set(opened.partitions)
                writable.withLockedValue { $0[id] = partitions }
                statistics.open += 1
                armTimeout(opened)
                throw error
            }
            startEnding(id, committed: committed)
        case .committing, .aborting:
            guard (record.status == .committing) == committed else {
                throw BrokerError(.invalidTransactionStatus, "transaction \(id) is \(record.status.rawValue)")
            }
        case .committed, .aborted:
            guard record.status == wanted else {
                throw BrokerError(.invalidTransactionStatus, "transaction \(id) is already \(record.status.rawValue)")
            }
            return
        }
        try await ending[id]?.value
    }

    // MARK: internals

    private func openRecord(_ id: TransactionID) throws(BrokerError) -> TransactionRecord {
        try requireRecovered()
        guard let record = records[id] else {
            if let status = ended[id] {
                throw BrokerError(.invalidTransactionStatus, "transaction \(id) is already \(status.rawValue)")
            }
            throw BrokerError(.transactionNotFound, "transaction \(id) is not known to coordinator \(coordinatorID)")
        }
        guard record.status == .open else {
            throw BrokerError(.invalidTransactionStatus, "transaction \(id) is \(record.status.rawValue), not OPEN")
        }
        return record
    }

    /// Writes the transaction's record as it is when the write before it is done (so they land in
    /// order and the last one holds everything).
    private func persist(_ id: TransactionID) async throws {
        let previous = writes[id]
        let write = Task {
            _ = try? await previous?.value
            guard let record = self.records[id] else { return }
            try await self.store(record)
        }
        writes[id] = write
        try await write.value
    }

    private func store(_ record: TransactionRecord) async throws {
        let key = MetadataKeys.transaction(coordinator: coordinatorID, sequence: record.id.leastBits)
        do {
            _ = try await metadata.put(key, value: Array(try JSONEncoder().encode(record)), expectedVersion: nil)
        } catch {
            throw BrokerError(.metadata, "cannot record transaction \(record.id): \(error)")
        }
    }

    /// Stops the time-outs and background retries (the broker is stopping; a successor recovers).
    public func stop() {
        stopped = true
        for timeout in timeouts.values { timeout.cancel() }
        timeouts.removeAll()
    }

    private func startEnding(_ id: TransactionID, committed: Bool) {
        guard ending[id] == nil, !stopped else { return }
        ending[id] = Task { try await self.carryOutEnd(id, committed: committed) }
    }

    /// Every participant, then the end status; a failing participant is retried (with back-off)
    /// until it answers: a transaction that began to end always ends as it began.
    private func carryOutEnd(_ id: TransactionID, committed: Bool) async throws {
        guard var record = records[id] else { return }
        var attempt = 0
        while true {
            do {
                for topic in record.partitions {
                    try await participants.endTransaction(id, onPartition: topic, committed: committed)
                }
                for subscription in record.subscriptions {
                    try await participants.endTransaction(id, onSubscription: subscription, committed: committed)
                }
                // Offsets committed here, and those other brokers recorded for it (their groups).
                let recorded = try await recordedOffsetCommits(id)
                let commits = record.offsetCommits + recorded.flatMap(\.commits)
                if committed, !commits.isEmpty {
                    try await participants.commitOffsets(commits)
                }
                for (key, _) in recorded { try await metadata.delete(key, expectedVersion: nil) }
                break
            } catch {
                attempt += 1
                if stopped { throw error }
                logger.warning("transaction.end-retrying", metadata: [
                    "transaction": "\(id)", "committed": "\(committed)", "attempt": "\(attempt)", "error": "\(error)",
                ])
                if attempt >= 3 {
                    // The caller hears of it; the end goes on in the background until it succeeds.
                    let retry = Task { try await self.carryOutEndAgain(id, committed: committed) }
                    ending[id] = retry
                    throw error
                }
                try? await Task.sleep(nanoseconds: UInt64(attempt) * retryDelayMs * 1_000_000)
            }
        }
        record.status = committed ? .committed : .aborted
        records[id] = record
        _ = try? await writes[id]?.value
        finish(id, status: record.status)
        writes[id] = nil
        try? await metadata.delete(
            MetadataKeys.transaction(coordinator: coordinatorID, sequence: id.leastBits), expectedVersion: nil)
        if committed { statistics.committed += 1 } else { statistics.aborted += 1 }
        logger.debug("transaction.ended", metadata: ["transaction": "\(id)", "committed": "\(committed)"])
    }

    /// Offsets other brokers recorded for the transaction (`MetadataKeys.transactionOffsetCommits`).
    private func recordedOffsetCommits(_ id: TransactionID) async throws -> [(key: String, commits: [TransactionOffsetCommit])] {
        let prefix = MetadataKeys.transactionOffsetCommits(coordinator: id.mostBits, sequence: id.leastBits)
        var recorded: [(key: String, commits: [TransactionOffsetCommit])] = []
        for key in try await metadata.list(prefix: prefix) {
            let full = key.hasPrefix("/") ? key : prefix + key
            guard let stored = try await metadata.get(full),
                  let commits = try? JSONDecoder().decode([TransactionOffsetCommit].self, from: Data(stored.value))
            else { continue }
            recorded.append((full, commits))
        }
        return recorded
    }

    private func carryOutEndAgain(_ id: TransactionID, committed: Bool) async throws {
        try? await Task.sleep(nanoseconds: retryDelayMs * 5 * 1_000_000)
        guard !stopped else { return }
        ending[id] = nil
        startEnding(id, committed: committed)
        try await ending[id]?.value
    }

    private func finish(_ id: TransactionID, status: TransactionStatus) {
        records[id] = nil
        ending[id] = nil
        timeouts.removeValue(forKey: id)?.cancel()
        ended[id] = status
        endedOrder.append(id)
        if endedOrder.count > Self.endedRemembered {
            ended[endedOrder.removeFirst()] = nil
        }
    }

    private func armTimeout(_ record: TransactionRecord) {
        let id = record.id
        let delayMs = max(record.timeoutAtMs - clock.nowMs(), 0)
        timeouts[id] = Task {
            try? await Task.sleep(nanoseconds: UInt64(delayMs) * 1_000_000)
            guard !Task.isCancelled else { return }
            await self.timedOut(id)
        }
    }

    private func timedOut(_ id: TransactionID) async {
        guard var record = records[id], record.status == .open else { return }
        timeouts[id] = nil
        record.status = .aborting
        record.timedOut = true
        records[id] = record
        writable.withLockedValue { $0[id] = nil }
        statistics.open -= 1
        statistics.timedOut += 1
        logger.info("transaction.timed-out", metadata: [
            "transaction": "\(id)", "timeout.ms": "\(record.timeoutMs)", "owner": "\(record.owner ?? "")",
        ])
        do {
            try await persist(id)
        } catch {
            logger.warning("transaction.timeout-record-failed", metadata: ["transaction": "\(id)", "error": "\(error)"])
        }
        startEnding(id, committed: false)
    }
}
