import BrokerCore
import Foundation
import KafkaProtocol
import Logging
import ManagedLedger
import Metadata

/// One `transactional.id` as stored (`MetadataKeys.kafkaTransactionalID`, Kafka's
/// `TransactionMetadata`): its producer id and epoch, and the coordinator's transaction it has
/// open, if any. A new InitProducerId bumps the epoch (fencing the producer that had it) and
/// aborts what that one left open.
struct KafkaTransactionalState: Codable, Sendable, Equatable {
    var producerID: Int64
    var epoch: Int16
    var timeoutMs: Int64
    /// The transaction begun (by AddPartitionsToTxn / AddOffsetsToTxn) and not yet ended, or nil.
    var transaction: TransactionID?
    /// The last one ended, and how (an EndTxn retried after it completed is answered by it).
    var lastEnded: TransactionID?
    var lastCommitted: Bool?
}

/// Kafka's transactional producers over the broker's transaction coordinator: a Kafka
/// transaction is one coordinator transaction, begun when its first partition or group is added
/// and ended by EndTxn (or its time-out, or a newer producer with the same id). Requests for one
/// `transactional.id` are handled one at a time, in order.
actor KafkaTransactions {
    private let broker: BrokerService
    private let logger: Logger
    private var states: [String: KafkaTransactionalState] = [:]
    private var tails: [String: Task<Void, Never>] = [:]

    init(broker: BrokerService, logger: Logger) {
        self.broker = broker
        self.logger = logger
    }

    enum Refusal: Error {
        case code(KafkaErrorCode, String)
    }

    /// Runs `body` after the earlier requests for `transactionalID` are done.
    private func serialized<T: Sendable>(_ transactionalID: String, _ body: @escaping @Sendable () async -> T) async -> T {
        let previous = tails[transactionalID]
        let task = Task { () -> T in
            await previous?.value
            return await body()
        }
        tails[transactionalID] = Task { _ = await task.value }
        return await task.value
    }

    private func coordinator() throws -> TransactionCoordinator {
        do {
            return try broker.requireTransactionCoordinator()
        } catch {
            // In a cluster another broker runs it now: the client looks it up again.
            throw Refusal.code(broker.cluster != nil && broker.configuration.transactionCoordinatorEnabled ? .notCoordinator : .coordinatorNotAvailable, error.message)
        }
    }

    /// The stored state: read again each time in a cluster (the coordinator may have moved here
    /// from another broker, or the partition leader checking a produce is not the coordinator's).
    private func load(_ transactionalID: String) async throws -> KafkaTransactionalState? {
        if broker.cluster == nil, let state = states[transactionalID] { return state }
        guard let stored = try await broker.metadata.get(MetadataKeys.kafkaTransactionalID(transactionalID)) else { return nil }
        let state = try JSONDecoder().decode(KafkaTransactionalState.self, from: Data(stored.value))
        states[transactionalID] = state
        return state
    }

    private func save(_ transactionalID: String, _ state: KafkaTransactionalState) async throws {
        _ = try await broker.metadata.put(
            MetadataKeys.kafkaTransactionalID(transactionalID), value: Array(try JSONEncoder().encode(state)), expectedVersion: nil)
        states[transactionalID] = state
    }

    /// The stored state when the producer id and epoch are its current ones.
    private func check(_ transactionalID: String, producerID: Int64, epoch: Int16) async throws -> KafkaTransactionalState {
        guard let state = try await load(transactionalID), state.producerID == producerID else {
            throw Refusal.code(.invalidProducerIDMapping, "producer id \(producerID) is not the one of transactional id '\(transactionalID)'")
        }
        guard epoch == state.epoch else {
            throw Refusal.code(
                epoch < state.epoch ? .producerFenced : .invalidProducerEpoch,
                "producer epoch \(epoch) of transactional id '\(transactionalID)' is not the current \(state.epoch): a newer producer took it")
        }
        return state
    }

    /// Ends `transaction` the way it is going, or aborts it when it is open, and waits for it.
    private func settle(_ transaction: TransactionID) async throws {
        let coordinator = try coordinator()
        switch await coordinator.status(transaction) {
        case .open?, .aborting?: try await coordinator.end(transaction, committed: false)
        case .committing?: try await coordinator.end(transaction, committed: true)
        case .committed?, .aborted?, nil: return
        }
    }

    // MARK: requests

    func initProducerID(_ transactionalID: String, timeoutMs: Int32, producerID: Int64, epoch: Int16) async -> InitProducerIdResponse {
        await serialized(transactionalID) {
            do {
                return try await self.initProducerIDNow(transactionalID, timeoutMs: timeoutMs, producerID: producerID, epoch: epoch)
            } catch Refusal.code(let code, let message) {
                await self.log("kafka.init-producer-id.refused", transactionalID, code, message)
                return InitProducerIdResponse(errorCode: code, producerID: -1, producerEpoch: -1)
            } catch {
                await self.log("kafka.init-producer-id.failed", transactionalID, .coordinatorNotAvailable, "\(error)")
                return InitProducerIdResponse(errorCode: .coordinatorNotAvailable, producerID: -1, producerEpoch: -1)
            }
        }
    }

    private func initProducerIDNow(_ transactionalID: String, timeoutMs: Int32, producerID: Int64, epoch: Int16) async throws -> InitProducerIdResponse {
        let coordinator = try coordinator()
        guard timeoutMs > 0, Int64(timeoutMs) <= coordinator.maxTimeoutMs else {
            throw Refusal.code(.invalidTransactionTimeout, "transaction.timeout.ms \(timeoutMs) is not within 1..\(coordinator.maxTimeoutMs)")
        }
        var state: KafkaTransactionalState
        if var existing = try await load(transactionalID) {
            if producerID >= 0, producerID != existing.producerID || epoch != existing.epoch {
                throw Refusal.code(.producerFenced, "producer \(producerID) epoch \(epoch) is not the current one of '\(transactionalID)'")
            }
            // What the previous producer left open is aborted (what was ending ends) first.
            if let open = existing.transaction {
                try await settle(open)
                let status = await coordinator.status(open)
                existing.lastEnded = open
                existing.lastCommitted = status == .committed
                existing.transaction = nil
            }
            if existing.epoch >= Int16.max - 1 {
                existing.producerID = try await broker.metadata.increment(MetadataKeys.kafkaProducerIDCounter)
                existing.epoch = 0
            } else {
                existing.epoch += 1
            }
            existing.timeoutMs = Int64(timeoutMs)
            state = existing
        } else {
            let id = try await broker.metadata.increment(MetadataKeys.kafkaProducerIDCounter)
            state = KafkaTransactionalState(producerID: id, epoch: 0, timeoutMs: Int64(timeoutMs))
        }
        try await save(transactionalID, state)
        logger.info("kafka.transactional-producer", metadata: [
            "transactional.id": "\(transactionalID)", "producer.id": "\(state.producerID)", "producer.epoch": "\(state.epoch)",
        ])
        return InitProducerIdResponse(errorCode: .none, producerID: state.producerID, producerEpoch: state.epoch)
    }

    /// The transaction of this producer, begun now if it has none open.
    private func currentTransaction(_ transactionalID: String, producerID: Int64, epoch: Int16) async throws -> TransactionID {
        var state = try await check(transactionalID, producerID: producerID, epoch: epoch)
        let coordinator = try coordinator()
        if let open = state.transaction {
            switch await coordinator.status(open) {
            case .open?: return open
            case .committing?, .aborting?:
                throw Refusal.code(.concurrentTransactions, "the previous transaction of '\(transactionalID)' is still ending")
            case .aborted? where state.lastEnded != open:
                // Aborted by its time-out: Kafka fences the producer then.
                throw Refusal.code(.producerFenced, "the transaction of '\(transactionalID)' timed out and was aborted")
            default:
                break
            }
        }
        let transaction = try await coordinator.newTransaction(timeoutMs: state.timeoutMs, owner: "kafka:\(transactionalID)")
        state.transaction = transaction
        try await save(transactionalID, state)
        return transaction
    }

    func addPartitions(_ request: AddPartitionsToTxnRequest, topics: [(topic: String, partition: Int32, name: String?)]) async -> [KafkaErrorCode] {
        await serialized(request.transactionalID) {
            if topics.contains(where: { $0.name == nil }) {
                // Kafka adds all or none: the others were not attempted.
                return topics.map { $0.name == nil ? .unknownTopicOrPartition : .operationNotAttempted }
            }
            do {
                let transaction = try await self.currentTransaction(
                    request.transactionalID, producerID: request.producerID, epoch: request.producerEpoch)
                try await self.coordinator().addPartitions(transaction, topics.compactMap(\.name))
                return topics.map { _ in .none }
            } catch {
                let code = await self.code(error, request.transactionalID, "kafka.add-partitions-to-txn")
                return topics.map { _ in code }
            }
        }
    }

    func addOffsets(_ request: AddOffsetsToTxnRequest) async -> KafkaErrorCode {
        await serialized(request.transactionalID) {
            do {
                _ = try await self.currentTransaction(request.transactionalID, producerID: request.producerID, epoch: request.producerEpoch)
                return .none
            } catch {
                return await self.code(error, request.transactionalID, "kafka.add-offsets-to-txn")
            }
        }
    }

    func commitOffsets(_ request: TxnOffsetCommitRequest, _ commits: [TransactionOffsetCommit]) async -> KafkaErrorCode {
        await serialized(request.transactionalID) {
            do {
                let state = try await self.check(request.transactionalID, producerID: request.producerID, epoch: request.producerEpoch)
                guard let transaction = state.transaction else {
                    throw Refusal.code(.invalidTxnState, "'\(request.transactionalID)' has no transaction open (AddOffsetsToTxn first)")
                }
                if let local = self.broker.transactionCoordinator.withLockedValue({ $0 }) {
                    try await local.addOffsetCommits(transaction, commits)
                } else if self.broker.cluster != nil, self.broker.configuration.transactionCoordinatorEnabled {
                    // This is the group's broker, the coordinator runs elsewhere: recorded for it to apply.
                    try await self.record(commits, group: request.groupID, transaction: transaction)
                } else {
                    _ = try await self.coordinator()
                }
                return .none
            } catch {
                return await self.code(error, request.transactionalID, "kafka.txn-offset-commit")
            }
        }
    }

    func end(_ request: EndTxnRequest) async -> KafkaErrorCode {
        await serialized(request.transactionalID) {
            do {
                var state = try await self.check(request.transactionalID, producerID: request.producerID, epoch: request.producerEpoch)
                guard let transaction = state.transaction else {
                    if state.lastEnded != nil, state.lastCommitted == request.committed { return .none }
                    throw Refusal.code(.invalidTxnState, "'\(request.transactionalID)' has no transaction open")
                }
                try await self.coordinator().end(transaction, committed: request.committed)
                state.transaction = nil
                state.lastEnded = transaction
                state.lastCommitted = request.committed
                try await self.save(request.transactionalID, state)
                return .none
            } catch {
                return await self.code(error, request.transactionalID, "kafka.end-txn")
            }
        }
    }

    /// Records a group's offsets for a transaction whose coordinator runs on another broker (a later
    /// commit of a partition replaces the earlier one).
    private func record(_ commits: [TransactionOffsetCommit], group: String, transaction: TransactionID) async throws {
        let key = MetadataKeys.transactionOffsetCommits(coordinator: transaction.mostBits, sequence: transaction.leastBits, group: group)
        var current: [TransactionOffsetCommit] = []
        if let stored = try await broker.metadata.get(key) {
            current = (try? JSONDecoder().decode([TransactionOffsetCommit].self, from: Data(stored.value))) ?? []
        }
        for commit in commits {
            current.removeAll { $0.topic == commit.topic && $0.partition == commit.partition }
            current.append(commit)
        }
        _ = try await broker.metadata.put(key, value: Array(try JSONEncoder().encode(current)), expectedVersion: nil)
    }

    /// The open transaction a transactional Produce to `topic` writes in, or why it may not.
    func transaction(forProduce transactionalID: String, producerID: Int64, epoch: Int16, topic: String) async throws -> TransactionID {
        let state = try await check(transactionalID, producerID: producerID, epoch: epoch)
        // The coordinator checks the partition when it runs here; in a cluster, one elsewhere took
        // the client's AddPartitionsToTxn before this Produce.
        let local = broker.transactionCoordinator.withLockedValue { $0 }
        guard let transaction = state.transaction,
              local?.mayWrite(transaction, to: topic) ?? (broker.cluster != nil && broker.configuration.transactionCoordinatorEnabled)
        else {
            throw Refusal.code(.invalidTxnState, "partition \(topic) was not added to an open transaction of '\(transactionalID)' (AddPartitionsToTxn first)")
        }
        return transaction
    }

    // MARK: errors

    private func code(_ error: any Error, _ transactionalID: String, _ event: Logger.Message) -> KafkaErrorCode {
        let (code, message): (KafkaErrorCode, String) = switch error {
        case Refusal.code(let code, let message): (code, message)
        case let error as BrokerError:
            switch error.code {
            case .transactionNotFound, .invalidTransactionStatus: (.invalidTxnState, error.message)
            case .transactionCoordinatorNotFound: (.coordinatorNotAvailable, error.message)
            case .badRequest: (.invalidRequest, error.message)
            default: (.coordinatorNotAvailable, error.message)
            }
        default: (.coordinatorNotAvailable, "\(error)")
        }
        log(event, transactionalID, code, message)
        return code
    }

    private func log(_ event: Logger.Message, _ transactionalID: String, _ code: KafkaErrorCode, _ message: String) {
        logger.info(event, metadata: ["transactional.id": "\(transactionalID)", "error.code": "\(code)", "error": "\(message)"])
    }
}
