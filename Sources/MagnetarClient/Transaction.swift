import NIOCore
import PulsarProtocol
import Synchronization

/// A Pulsar transaction (the Java client's `Transaction`): messages sent in it
/// (`Producer.send(_:transaction:)`) are seen by consumers only once it commits; messages
/// acknowledged in it (`Consumer.acknowledge(_:transaction:)`) are acknowledged only then, and
/// delivered again if it aborts. The broker's coordinator aborts it after its timeout.
/// Opened by `PulsarClient.newTransaction`. Thread-safe.
///
/// Protocol: TC_CLIENT_CONNECT (once per client), NEW_TXN, then ADD_PARTITION_TO_TXN before the
/// first send to each partition and ADD_SUBSCRIPTION_TO_TXN before the first acknowledgement on
/// each subscription, SEND / ACK with the transaction id, END_TXN (COMMIT or ABORT).
public final class Transaction: Sendable, CustomStringConvertible {
    public let mostBits: UInt64
    public let leastBits: UInt64
    private let client: PulsarClient
    private struct State {
        var partitions: Set<String> = []
        var subscriptions: Set<String> = []
        var ended = false
    }
    private let state = Mutex(State())

    init(mostBits: UInt64, leastBits: UInt64, client: PulsarClient) {
        self.mostBits = mostBits
        self.leastBits = leastBits
        self.client = client
    }

    /// Pulsar's `(most,least)`.
    public var description: String { "(\(mostBits),\(leastBits))" }

    /// Commits: every message sent in it becomes visible, every acknowledgement applies.
    public func commit() async throws(PulsarClientError) { try await end(commit: true) }

    /// Aborts: its messages are never delivered, its acknowledged messages are delivered again.
    public func abort() async throws(PulsarClientError) { try await end(commit: false) }

    private func end(commit: Bool) async throws(PulsarClientError) {
        let (most, least) = (mostBits, leastBits)
        _ = try await client.coordinatorRequest { requestID in
            ClientCommands.base(.endTxn) {
                $0.endTxn.requestID = requestID
                $0.endTxn.txnidMostBits = most
                $0.endTxn.txnidLeastBits = least
                $0.endTxn.txnAction = commit ? .commit : .abort
            }
        }
        state.withLock { $0.ended = true }
    }

    private func checkOpen() throws(PulsarClientError) {
        if state.withLock({ $0.ended }) {
            throw PulsarClientError(.alreadyClosed, "transaction \(description) has ended")
        }
    }

    /// ADD_PARTITION_TO_TXN for `topic` (a partition's full name), once.
    func add(partition topic: String) async throws(PulsarClientError) {
        try checkOpen()
        guard !state.withLock({ $0.partitions.contains(topic) }) else { return }
        let (most, least) = (mostBits, leastBits)
        _ = try await client.coordinatorRequest { requestID in
            ClientCommands.base(.addPartitionToTxn) {
                $0.addPartitionToTxn.requestID = requestID
                $0.addPartitionToTxn.txnidMostBits = most
                $0.addPartitionToTxn.txnidLeastBits = least
                $0.addPartitionToTxn.partitions = [topic]
            }
        }
        state.withLock { _ = $0.partitions.insert(topic) }
    }

    /// ADD_SUBSCRIPTION_TO_TXN for `subscription` on `topic`, once.
    func add(subscription: String, topic: String) async throws(PulsarClientError) {
        try checkOpen()
        let key = topic + "\u{0}" + subscription
        guard !state.withLock({ $0.subscriptions.contains(key) }) else { return }
        let (most, least) = (mostBits, leastBits)
        _ = try await client.coordinatorRequest { requestID in
            ClientCommands.base(.addSubscriptionToTxn) {
                $0.addSubscriptionToTxn.requestID = requestID
                $0.addSubscriptionToTxn.txnidMostBits = most
                $0.addSubscriptionToTxn.txnidLeastBits = least
                var entry = Pulsar_Proto_Subscription()
                entry.topic = topic
                entry.subscription = subscription
                $0.addSubscriptionToTxn.subscription = [entry]
            }
        }
        state.withLock { _ = $0.subscriptions.insert(key) }
    }
}

extension PulsarClient {
    /// Opens a transaction with the broker's coordinator; it is aborted if not ended within `timeout`.
    public func newTransaction(timeout: TimeAmount = .seconds(60)) async throws(PulsarClientError) -> Transaction {
        let timeoutMs = UInt64(max(timeout.nanoseconds / 1_000_000, 1))
        let response = try await coordinatorRequest { requestID in
            ClientCommands.base(.newTxn) {
                $0.newTxn.requestID = requestID
                $0.newTxn.txnTtlMillis = timeoutMs
                $0.newTxn.tcID = 0
            }
        }
        return Transaction(mostBits: response.newTxnResponse.txnidMostBits, leastBits: response.newTxnResponse.txnidLeastBits, client: self)
    }

    /// The topic whose partition 0 stands for coordinator 0: its owner runs the coordinator.
    static let coordinatorPartition = "persistent://pulsar/system/transaction_coordinator_assign-partition-0"

    /// A request to transaction coordinator 0 on the connection to the broker that runs it (a LOOKUP
    /// of the coordinator-assign topic's partition 0; connected once with TC_CLIENT_CONNECT); a
    /// refusal is the broker's `ServerError`.
    func coordinatorRequest(
        _ make: @escaping @Sendable (UInt64) -> Pulsar_Proto_BaseCommand
    ) async throws(PulsarClientError) -> Pulsar_Proto_BaseCommand {
        do {
            let connection = try await lookup(topic: Self.coordinatorPartition)
            if !connection.coordinatorConnected.load(ordering: .relaxed) {
                _ = try await connection.requestFromAnyLoop(on: connection.eventLoop) { requestID in
                    ClientCommands.base(.tcClientConnectRequest) {
                        $0.tcClientConnectRequest.requestID = requestID
                        $0.tcClientConnectRequest.tcID = 0
                    }
                }.get()
                connection.coordinatorConnected.store(true, ordering: .relaxed)
            }
            return try await connection.requestFromAnyLoop(on: connection.eventLoop, make).get()
        } catch let error as PulsarClientError {
            throw error
        } catch {
            throw PulsarClientError(.connectionFailed, "\(error)")
        }
    }

    /// Ends a transaction on one topic (END_TXN_ON_PARTITION), at the broker that serves it: what a
    /// coordinator sends to the other brokers of its cluster.
    public func endTransaction(
        mostBits: UInt64, leastBits: UInt64, onPartition topic: String, commit: Bool
    ) async throws(PulsarClientError) {
        try await topicRequest(topic) { requestID in
            ClientCommands.base(.endTxnOnPartition) {
                $0.endTxnOnPartition.requestID = requestID
                $0.endTxnOnPartition.txnidMostBits = mostBits
                $0.endTxnOnPartition.txnidLeastBits = leastBits
                $0.endTxnOnPartition.topic = topic
                $0.endTxnOnPartition.txnAction = commit ? .commit : .abort
            }
        }
    }

    /// Ends a transaction's acknowledgements on one subscription (END_TXN_ON_SUBSCRIPTION), at the
    /// broker that serves its topic.
    public func endTransaction(
        mostBits: UInt64, leastBits: UInt64, onSubscription subscription: String, topic: String, commit: Bool
    ) async throws(PulsarClientError) {
        try await topicRequest(topic) { requestID in
            ClientCommands.base(.endTxnOnSubscription) {
                $0.endTxnOnSubscription.requestID = requestID
                $0.endTxnOnSubscription.txnidMostBits = mostBits
                $0.endTxnOnSubscription.txnidLeastBits = leastBits
                var entry = Pulsar_Proto_Subscription()
                entry.topic = topic
                entry.subscription = subscription
                $0.endTxnOnSubscription.subscription = entry
                $0.endTxnOnSubscription.txnAction = commit ? .commit : .abort
            }
        }
    }

    private func topicRequest(_ topic: String, _ make: @escaping @Sendable (UInt64) -> Pulsar_Proto_BaseCommand) async throws(PulsarClientError) {
        do {
            let connection = try await lookup(topic: topic)
            _ = try await connection.requestFromAnyLoop(on: connection.eventLoop, make).get()
        } catch let error as PulsarClientError {
            throw error
        } catch {
            throw PulsarClientError(.connectionFailed, "\(error)")
        }
    }
}
