import LedgerStorage
import Metadata
import NIOConcurrencyHelpers
import NIOCore
import TestSupport
import Testing
@testable import Replication

/// A store that answers reads of chosen local entries with a chosen error, as if the entry never
/// reached the disk although the node's maps list it (the seed-31337 phantom) or the disk failed.
private final class FailingReadStore: ForwardingLedgerStore, @unchecked Sendable {
    /// (ledger id, local entry id) → the error its read gets.
    let failures = NIOLockedValueBox<[Int64: [Int64: LedgerStoreError]]>([:])

    override func read(ledgerID: Int64, entryID: Int64) throws(LedgerStoreError) -> ByteBuffer {
        if let error = failures.withLockedValue({ $0[ledgerID]?[entryID] }) { throw error }
        return try inner.read(ledgerID: ledgerID, entryID: entryID)
    }
}

/// Issue 12, finding 1's second half: recovery reads back the entry it closes a ledger on, instead
/// of trusting listings alone (BookKeeper's LedgerRecoveryOp reads what it recovers).
@Suite struct RecoveryReadBackTests {
    typealias Harness = ReplicatedLedgerClientMetadataTests

    private func withFailingCluster(_ body: ([FailingReadStore], StorageNodeServerTests.Cluster) async throws -> Void) async throws {
        let stores = (0..<3).map { _ in FailingReadStore() }
        try await StorageNodeServerTests.withCluster(count: 3, stores: { stores[$0] }) { cluster in
            try await body(stores, cluster)
        }
    }

    @Test func aListedEntryNoNodeCanServeIsNotTheLedgersLast() async throws {
        try await withFailingCluster { stores, cluster in
            let metadata = InMemoryMetadataStore()
            try await Harness.register(cluster.addresses, in: metadata)
            let writer = Harness.makeStore(metadata, group: cluster.group)
            defer { writer.closeSoon() }
            let ledgerID: Int64 = 31
            try await writer.createLedger(ledgerID: ledgerID, replication: Harness.quorum332)
            #expect(await Harness.append(writer, ledgerID: ledgerID, 0..<6).allSatisfy { (try? $0.1.get()) != nil })
            // Every node lists entries 4 and 5, none can serve them.
            for store in stores {
                store.failures.withLockedValue {
                    $0[ledgerID] = [4: .entryNotFound(ledgerID: ledgerID, entryID: 4), 5: .entryNotFound(ledgerID: ledgerID, entryID: 5)]
                }
            }
            // (The third node's adds may still be on the wire once the ack quorum confirmed them.)
            let deadline = ContinuousClock.now + .seconds(10)
            while !cluster.nodes.allSatisfy({ $0.entryIDs(ledgerID: ledgerID, from: 0, limit: 10) == [0, 1, 2, 3, 4, 5] }),
                  ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(cluster.nodes.allSatisfy { $0.entryIDs(ledgerID: ledgerID, from: 0, limit: 10) == [0, 1, 2, 3, 4, 5] })

            let owner = Harness.makeStore(metadata, group: cluster.group)
            defer { owner.closeSoon() }
            #expect(try await owner.recoverLedger(ledgerID: ledgerID) == 3)
            let closed = try #require(try await Harness.record(metadata, ledgerID))
            #expect(closed.metadata.state == .closed && closed.metadata.lastEntryID == 3)
            #expect(try await owner.read(ledgerID: ledgerID, entryID: 3) == Harness.payload(3))
        }
    }

    @Test func aTailEntryThatFailsForAnotherReasonStopsTheRecoveryInsteadOfCuttingIt() async throws {
        try await withFailingCluster { stores, cluster in
            let metadata = InMemoryMetadataStore()
            try await Harness.register(cluster.addresses, in: metadata)
            let writer = Harness.makeStore(metadata, group: cluster.group)
            defer { writer.closeSoon() }
            let ledgerID: Int64 = 32
            try await writer.createLedger(ledgerID: ledgerID, replication: Harness.quorum332)
            #expect(await Harness.append(writer, ledgerID: ledgerID, 0..<3).allSatisfy { (try? $0.1.get()) != nil })
            // Entry 2 is missing on two nodes, and the third cannot read its disk: it may have been
            // acknowledged, so recovery must not close the ledger before it.
            stores[0].failures.withLockedValue { $0[ledgerID] = [2: .entryNotFound(ledgerID: ledgerID, entryID: 2)] }
            stores[1].failures.withLockedValue { $0[ledgerID] = [2: .entryNotFound(ledgerID: ledgerID, entryID: 2)] }
            stores[2].failures.withLockedValue { $0[ledgerID] = [2: .io("EIO reading entry log")] }

            let owner = Harness.makeStore(metadata, group: cluster.group)
            defer { owner.closeSoon() }
            await #expect(throws: LedgerStoreError.self) { try await owner.recoverLedger(ledgerID: ledgerID) }
            let record = try #require(try await Harness.record(metadata, ledgerID))
            #expect(record.metadata.state != .closed)

            // Once the disk answers again, the same recovery keeps entry 2.
            stores[2].failures.withLockedValue { $0[ledgerID] = [:] }
            #expect(try await owner.recoverLedger(ledgerID: ledgerID) == 2)
            #expect(try await owner.read(ledgerID: ledgerID, entryID: 2) == Harness.payload(2))
        }
    }
}

extension ReplicatedLedgerClient {
    /// For a test's `defer` (which cannot await): starts the shutdown without waiting for it.
    func closeSoon() {
        Task { await shutdown() }
    }
}
