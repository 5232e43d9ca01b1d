import Dispatch
import LedgerStorage
import Logging
import Metadata
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing
@testable import Replication

/// `ReplicatedLedgerClient` in metadata mode: real `StorageNodeServer`s on loopback, ledger records
/// and the node registry in an `InMemoryMetadataStore`.
@Suite struct ReplicatedLedgerClientMetadataTests {
    static let logger = StorageNodeServerTests.logger
    static let quorum332 = LedgerReplicationOptions(ensembleSize: 3, writeQuorumSize: 3, ackQuorumSize: 2)

    /// Registers every node of `cluster` under `/storage-nodes/` (plain keys: the in-memory store has no sessions).
    static func register(_ addresses: [StorageNodeAddress], in metadata: any MetadataStore) async throws {
        for address in addresses {
            try await metadata.put(MetadataKeys.storageNode(address), value: Array("{}".utf8), expectedVersion: nil)
        }
    }

    static func makeStore(_ metadata: any MetadataStore, group: any EventLoopGroup) -> ReplicatedLedgerClient {
        ReplicatedLedgerClient(
            metadata: metadata, directory: StorageNodeDirectory(metadata: metadata, cacheTTL: .zero), defaultReplication: nil,
            requestTimeout: .seconds(5), eventLoopGroup: group, logger: logger)
    }

    static func payload(_ entryID: Int64) -> ByteBuffer { ByteBuffer(string: "entry-\(entryID)") }

    /// Appends `entryIDs` in order; returns each one's result, in completion order.
    static func append(_ store: ReplicatedLedgerClient, ledgerID: Int64, _ entryIDs: Range<Int64>) async -> [(Int64, Result<Void, LedgerStoreError>)] {
        let results = NIOLockedValueBox<[(Int64, Result<Void, LedgerStoreError>)]>([])
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let remaining = NIOLockedValueBox(entryIDs.count)
            if entryIDs.isEmpty { continuation.resume(); return }
            for entryID in entryIDs {
                store.append(ledgerID: ledgerID, entryID: entryID, payload: payload(entryID)) { result in
                    results.withLockedValue { $0.append((entryID, result)) }
                    if remaining.withLockedValue({ $0 -= 1; return $0 }) == 0 { continuation.resume() }
                }
            }
        }
        return results.withLockedValue { $0 }
    }

    /// Runs a synchronous store call on a GCD thread: those calls may block on work that needs
    /// Swift's cooperative pool, which tests running in parallel could otherwise exhaust.
    static func record(_ metadata: any MetadataStore, _ ledgerID: Int64) async throws -> VersionedLedgerMetadata? {
        try await LedgerMetadataStore(store: metadata).read(ledgerID: ledgerID)
    }

    @Test func metadataRecordRoundTripsAndMergesSegmentsLikeTheWriter() throws {
        let nodes = (1...4).map { StorageNodeAddress(host: "10.0.0.\($0)", port: 3181) }
        var record = LedgerMetadata(quorum: QuorumConfiguration(ensembleSize: 3, writeQuorumSize: 2, ackQuorumSize: 2), ensemble: Array(nodes[0..<3]))
        #expect(try LedgerMetadata.decode(record.encoded(), ledgerID: 1) == record)
        // A change at entry 0 rewrites the first segment; a later one adds a segment.
        record = record.replacingNode(at: 1, with: nodes[3], fromEntryID: 0)
        #expect(record.ensembles.count == 1 && record.currentEnsemble == [nodes[0], nodes[3], nodes[2]])
        record = record.replacingNode(at: 0, with: nodes[1], fromEntryID: 7)
        #expect(record.ensembles.map(\.firstEntryID) == [0, 7])
        #expect(record.writeSetNodes(of: 6) == [nodes[0], nodes[3]])
        #expect(record.writeSetNodes(of: 7) == [nodes[3], nodes[2]])
        record.state = .closed
        record.lastEntryID = 9
        let json = String(decoding: record.encoded(), as: UTF8.self)
        #expect(json.contains("\"state\":\"closed\"") && json.contains("\"firstEntryID\":7") && json.contains("\"10.0.0.2:3181\""))
        #expect(try LedgerMetadata.decode(record.encoded(), ledgerID: 1) == record)
        #expect(throws: LedgerStoreError.self) { try LedgerMetadata.decode(Array("{\"ensembleSize\":3}".utf8), ledgerID: 1) }
        #expect(ReplicatedLedgerClient.automaticReplication(liveNodeCount: 5) == LedgerReplicationOptions(ensembleSize: 3, writeQuorumSize: 3, ackQuorumSize: 2))
        #expect(ReplicatedLedgerClient.automaticReplication(liveNodeCount: 1) == LedgerReplicationOptions(ensembleSize: 1, writeQuorumSize: 1, ackQuorumSize: 1))
        #expect(ReplicatedLedgerClient.automaticReplication(liveNodeCount: 2) == LedgerReplicationOptions(ensembleSize: 2, writeQuorumSize: 2, ackQuorumSize: 2))
    }

    @Test func createLedgerRecordsMetadataAndAnEnsembleChangeIsCompareAndSet() async throws {
        try await StorageNodeServerTests.withCluster(count: 4) { cluster in
            let metadata = InMemoryMetadataStore()
            try await Self.register(cluster.addresses, in: metadata)
            let store = Self.makeStore(metadata, group: cluster.group)
            defer { store.closeSoon() }
            let ledgerID: Int64 = 11
            try await store.createLedger(ledgerID: ledgerID, replication: nil)
            let created = try #require(try await Self.record(metadata, ledgerID))
            #expect(created.version == 0)
            #expect(created.metadata.state == .open)
            #expect(created.metadata.quorum == QuorumConfiguration(ensembleSize: 3, writeQuorumSize: 3, ackQuorumSize: 2))
            let ensemble = created.metadata.currentEnsemble
            #expect(Set(ensemble).count == 3 && Set(ensemble).isSubset(of: Set(cluster.addresses)))
            // A second create of the same id is refused (expectedVersion -1).
            let other = Self.makeStore(metadata, group: cluster.group)
            defer { other.closeSoon() }
            await #expect(throws: LedgerStoreError.self) { try await other.createLedger(ledgerID: ledgerID, replication: nil) }

            #expect(await Self.append(store, ledgerID: ledgerID, 0..<50).allSatisfy { (try? $0.1.get()) != nil })
            let victim = ensemble[1]
            let spare = cluster.addresses.first { !ensemble.contains($0) }!
            await cluster.servers[cluster.addresses.firstIndex(of: victim)!].stop()
            let results = await Self.append(store, ledgerID: ledgerID, 50..<120)
            #expect(results.map(\.0) == Array(50..<120))  // in entry order
            #expect(results.allSatisfy { (try? $0.1.get()) != nil })
            // The change is in metadata, by compare-and-set (version 1), and matches the writer's history.
            // (With Qa = 2 the survivors may confirm every entry before the dead node's failure is
            // noticed, so the change may land just after the appends complete: wait for it.)
            var changed = try #require(try await Self.record(metadata, ledgerID))
            for _ in 0..<50 where changed.version == 0 {
                try await Task.sleep(for: .milliseconds(100))
                changed = try #require(try await Self.record(metadata, ledgerID))
            }
            #expect(changed.version == 1)
            #expect(changed.metadata.ensembles.count == 2)
            #expect(changed.metadata.currentEnsemble == [ensemble[0], spare, ensemble[2]])
            #expect((1...120).contains(changed.metadata.ensembles[1].firstEntryID))
            #expect(store.ensembleHistory(of: ledgerID)?.map(\.firstEntryID) == changed.metadata.ensembles.map(\.firstEntryID))
            // Another store reads every entry through the record.
            try await other.openLedger(ledgerID: ledgerID)
            for entryID in Int64(0)..<120 {
                #expect(try await other.read(ledgerID: ledgerID, entryID: entryID) == Self.payload(entryID))
            }
            // Closing the ledger records its end; deleting removes the record.
            try await store.closeLedger(ledgerID: ledgerID)
            let closed = try #require(try await Self.record(metadata, ledgerID))
            #expect(closed.metadata.state == .closed && closed.metadata.lastEntryID == 119)
            #expect(await store.ledgerIDs() == [ledgerID])
            try await store.deleteLedger(ledgerID: ledgerID)
            #expect(try await Self.record(metadata, ledgerID) == nil)
            #expect(await store.ledgerIDs() == [])
        }
    }

    @Test func recoveryWritesBackAnEntryHeldByOneNode() async throws {
        try await StorageNodeServerTests.withCluster(count: 3) { cluster in
            let metadata = InMemoryMetadataStore()
            try await Self.register(cluster.addresses, in: metadata)
            let writer = Self.makeStore(metadata, group: cluster.group)
            defer { writer.closeSoon() }
            let ledgerID: Int64 = 21
            try await writer.createLedger(ledgerID: ledgerID, replication: Self.quorum332)
            #expect(await Self.append(writer, ledgerID: ledgerID, 0..<5).allSatisfy { (try? $0.1.get()) != nil })
            // Entry 5 reached only one node before its writer died.
            let lonely = cluster.nodes[1]
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                lonely.addEntry(ledgerID: ledgerID, entryID: 5, payload: Self.payload(5)) { _ in continuation.resume() }
            }
            #expect(cluster.nodes.map { $0.entryIDs(ledgerID: ledgerID, from: 5, limit: 10) ?? [] } == [[], [5], []])

            let owner = Self.makeStore(metadata, group: cluster.group)
            defer { owner.closeSoon() }
            #expect(try await owner.recoverLedger(ledgerID: ledgerID) == 5)
            // Entry 5 is now on its whole write set, and the record is closed at 5.
            for node in cluster.nodes {
                #expect(node.entryIDs(ledgerID: ledgerID, from: 0, limit: 10) == [0, 1, 2, 3, 4, 5])
                #expect(try node.readEntry(ledgerID: ledgerID, entryID: 5) == Self.payload(5))
            }
            let closed = try #require(try await Self.record(metadata, ledgerID))
            #expect(closed.metadata.state == .closed && closed.metadata.lastEntryID == 5)
            // Recovering again just reads the record; a ledger without one is empty.
            #expect(try await owner.recoverLedger(ledgerID: ledgerID) == 5)
            #expect(try await owner.recoverLedger(ledgerID: 999) == -1)
            #expect(try await owner.read(ledgerID: ledgerID, entryID: 5) == Self.payload(5))
            await #expect(throws: LedgerStoreError.entryNotFound(ledgerID: ledgerID, entryID: 6)) { try await owner.read(ledgerID: ledgerID, entryID: 6) }
            #expect(await owner.highestStoredEntry(ledgerID: ledgerID) == 5)
        }
    }

    @Test func fencedWriterCannotAppendAfterAnotherStoreRecovered() async throws {
        try await StorageNodeServerTests.withCluster(count: 4) { cluster in
            let metadata = InMemoryMetadataStore()
            try await Self.register(Array(cluster.addresses[0..<3]), in: metadata)
            let zombie = Self.makeStore(metadata, group: cluster.group)
            defer { zombie.closeSoon() }
            let ledgerID: Int64 = 31
            try await zombie.createLedger(ledgerID: ledgerID, replication: Self.quorum332)
            #expect(await Self.append(zombie, ledgerID: ledgerID, 0..<10).allSatisfy { (try? $0.1.get()) != nil })

            let owner = Self.makeStore(metadata, group: cluster.group)
            defer { owner.closeSoon() }
            #expect(try await owner.recoverLedger(ledgerID: ledgerID) == 9)
            // The nodes refuse the zombie's appends.
            let refused = await Self.append(zombie, ledgerID: ledgerID, 10..<13)
            #expect(refused.allSatisfy { if case .failure(.fenced) = $0.1 { true } else { false } })

            // A zombie whose nodes were not fenced (record closed behind its back) is stopped by the
            // compare-and-set of its ensemble change.
            let otherID: Int64 = 32
            // Qa = 3: nothing is confirmed without the dead node, so the change surely runs.
            try await zombie.createLedger(ledgerID: otherID, replication: LedgerReplicationOptions(ensembleSize: 3, writeQuorumSize: 3, ackQuorumSize: 3))
            #expect(await Self.append(zombie, ledgerID: otherID, 0..<3).allSatisfy { (try? $0.1.get()) != nil })
            var record = try #require(try await Self.record(metadata, otherID))
            record.metadata.state = .closed
            record.metadata.lastEntryID = 2
            try await metadata.put(MetadataKeys.ledger(otherID), value: record.metadata.encoded(), expectedVersion: record.version)
            try await Self.register([cluster.addresses[3]], in: metadata)  // a spare exists
            let victim = record.metadata.currentEnsemble[0]
            await cluster.servers[cluster.addresses.firstIndex(of: victim)!].stop()
            let stopped = await Self.append(zombie, ledgerID: otherID, 3..<6)
            #expect(stopped.allSatisfy { if case .failure(.fenced) = $0.1 { true } else { false } })
            let after = try #require(try await Self.record(metadata, otherID))
            #expect(after.metadata.currentEnsemble == record.metadata.currentEnsemble)  // no change recorded
            #expect(after.metadata.lastEntryID == 2)
        }
    }

    @Test func auditorCopiesMissingEntriesAndReplacesALostNode() async throws {
        try await StorageNodeServerTests.withCluster(count: 4) { cluster in
            let metadata = InMemoryMetadataStore()
            try await Self.register(Array(cluster.addresses[0..<3]), in: metadata)
            let store = Self.makeStore(metadata, group: cluster.group)
            defer { store.closeSoon() }
            let ledgerID: Int64 = 41
            try await store.createLedger(ledgerID: ledgerID, replication: Self.quorum332)
            #expect(await Self.append(store, ledgerID: ledgerID, 0..<10).allSatisfy { (try? $0.1.get()) != nil })
            try await store.closeLedger(ledgerID: ledgerID)
            let ensemble = try #require(try await Self.record(metadata, ledgerID)).metadata.currentEnsemble
            // An open ledger is left alone.
            try await store.createLedger(ledgerID: 42, replication: Self.quorum332)
            #expect(await Self.append(store, ledgerID: 42, 0..<3).allSatisfy { (try? $0.1.get()) != nil })
            try cluster.nodes[2].deleteLedger(ledgerID: 42)

            let auditor = ReplicationAuditor(metadata: metadata, store: store, name: "broker-a", lostNodeGracePeriod: .milliseconds(300), logger: Self.logger)
            #expect(await auditor.holdLeadership())
            let follower = ReplicationAuditor(metadata: metadata, store: store, name: "broker-b", logger: Self.logger)
            #expect(await follower.holdLeadership() == false)

            // 1. A node lost its copy of the ledger (disk replaced): the auditor copies every entry back.
            try cluster.nodes[2].deleteLedger(ledgerID: ledgerID)
            try await auditor.auditOnce()
            #expect(auditor.statistics.entriesCopied == 10)
            #expect(cluster.nodes[2].entryIDs(ledgerID: ledgerID, from: 0, limit: 100) == Array(0..<10))
            #expect(cluster.nodes[2].entryIDs(ledgerID: 42, from: 0, limit: 100) == nil)
            try await auditor.auditOnce()
            #expect(auditor.statistics.entriesCopied == 10)  // nothing more to do

            // 2. A node is gone from /storage-nodes/ for longer than the grace period: replaced by the
            //    spare in the record, its entries copied there.
            try await Self.register([cluster.addresses[3]], in: metadata)
            await cluster.servers[1].stop()
            try await metadata.delete(MetadataKeys.storageNode(cluster.addresses[1]), expectedVersion: nil)
            try await auditor.auditOnce()  // notices the absence
            #expect(auditor.statistics.nodesReplaced == 0)
            try await Task.sleep(for: .milliseconds(400))
            try await auditor.auditOnce()
            #expect(auditor.statistics.nodesReplaced == 1)
            #expect(auditor.statistics.entriesCopied == 20)
            let record = try #require(try await Self.record(metadata, ledgerID))
            #expect(record.metadata.currentEnsemble == ensemble.map { $0 == cluster.addresses[1] ? cluster.addresses[3] : $0 })
            #expect(cluster.nodes[3].entryIDs(ledgerID: ledgerID, from: 0, limit: 100) == Array(0..<10))
            // A store that cached the old record finds the entries through the new one.
            let reader = Self.makeStore(metadata, group: cluster.group)
            defer { reader.closeSoon() }
            try await reader.openLedger(ledgerID: ledgerID)
            for entryID in Int64(0)..<10 {
                #expect(try await reader.read(ledgerID: ledgerID, entryID: entryID) == Self.payload(entryID))
            }
        }
    }
}
