import LedgerStorage
import NIOCore
import Testing
@testable import Replication

@Suite struct LedgerWriteQuorumTests {
    typealias Quorum = LedgerWriteQuorum<String>
    let payload = ByteBuffer(string: "x")

    @Test func writeSetsAreStriped() {
        let configuration = QuorumConfiguration(ensembleSize: 5, writeQuorumSize: 3, ackQuorumSize: 2)
        #expect(configuration.writeSet(of: 0) == [0, 1, 2])
        #expect(configuration.writeSet(of: 3) == [3, 4, 0])
        #expect(configuration.writeSet(of: 9) == [4, 0, 1])
    }

    @Test func confirmsInOrderAfterAckQuorum() {
        var quorum = Quorum(ledgerID: 1, configuration: .init(ensembleSize: 3, writeQuorumSize: 3, ackQuorumSize: 2), ensemble: ["a", "b", "c"])
        #expect(quorum.addEntry(entryID: 0, payload: payload) == [
            .sendEntry(entryID: 0, payload: payload, node: "a"),
            .sendEntry(entryID: 0, payload: payload, node: "b"),
            .sendEntry(entryID: 0, payload: payload, node: "c"),
        ])
        #expect(quorum.addEntry(entryID: 1, payload: payload).count == 3)
        // Entry 1 reaches Qa first: held back until entry 0 is confirmed.
        #expect(quorum.writeCompleted(entryID: 1, node: "a", result: .ok) == [])
        #expect(quorum.writeCompleted(entryID: 1, node: "c", result: .ok) == [])
        #expect(quorum.writeCompleted(entryID: 0, node: "b", result: .ok) == [])
        #expect(quorum.writeCompleted(entryID: 0, node: "c", result: .ok) == [.confirmEntries(from: 0, through: 1)])
        #expect(quorum.lastAddConfirmed == 1)
        #expect(quorum.writeCompleted(entryID: 0, node: "a", result: .ok) == [])
    }

    @Test func failedNodeIsReplacedAndUnconfirmedEntriesResent() {
        var quorum = Quorum(ledgerID: 1, configuration: .init(ensembleSize: 3, writeQuorumSize: 3, ackQuorumSize: 3), ensemble: ["a", "b", "c"])
        _ = quorum.addEntry(entryID: 0, payload: payload)
        _ = quorum.addEntry(entryID: 1, payload: payload)
        for node in ["a", "b", "c"] { _ = quorum.writeCompleted(entryID: 0, node: node, result: .ok) }
        #expect(quorum.lastAddConfirmed == 0)
        _ = quorum.writeCompleted(entryID: 1, node: "a", result: .ok)
        #expect(quorum.writeCompleted(entryID: 1, node: "b", result: .failed) == [.replaceNode(ensembleIndex: 1, failed: "b")])
        // New entries skip the failed index until it is replaced.
        #expect(quorum.addEntry(entryID: 2, payload: payload).count == 2)
        #expect(quorum.nodeReplaced(ensembleIndex: 1, with: "d") == [
            .sendEntry(entryID: 1, payload: payload, node: "d"),
            .sendEntry(entryID: 2, payload: payload, node: "d"),
        ])
        #expect(quorum.ensembleHistory.map(\.firstEntryID) == [0, 1])
        #expect(quorum.writeSetNodes(of: 0) == ["a", "b", "c"])
        #expect(quorum.writeSetNodes(of: 1) == ["d", "c", "a"])
        // A late answer from the replaced node does not count.
        #expect(quorum.writeCompleted(entryID: 1, node: "b", result: .ok) == [])
        _ = quorum.writeCompleted(entryID: 1, node: "c", result: .ok)
        #expect(quorum.writeCompleted(entryID: 1, node: "d", result: .ok) == [.confirmEntries(from: 1, through: 1)])
    }

    @Test func writingContinuesWithoutReplacementWhileAckQuorumHolds() {
        var quorum = Quorum(ledgerID: 1, configuration: .init(ensembleSize: 3, writeQuorumSize: 3, ackQuorumSize: 2), ensemble: ["a", "b", "c"])
        _ = quorum.addEntry(entryID: 0, payload: payload)
        #expect(quorum.writeCompleted(entryID: 0, node: "a", result: .failed) == [.replaceNode(ensembleIndex: 0, failed: "a")])
        #expect(quorum.replacementUnavailable(ensembleIndex: 0) == [])
        _ = quorum.writeCompleted(entryID: 0, node: "b", result: .ok)
        #expect(quorum.writeCompleted(entryID: 0, node: "c", result: .ok) == [.confirmEntries(from: 0, through: 0)])
        _ = quorum.addEntry(entryID: 1, payload: payload)
        #expect(quorum.writeCompleted(entryID: 1, node: "b", result: .failed) == [.replaceNode(ensembleIndex: 1, failed: "b")])
        let error = LedgerStoreError.io("ledger 1: fewer than 2 storage nodes left to write to")
        #expect(quorum.replacementUnavailable(ensembleIndex: 1) == [.failEntries([1], error)])
        #expect(quorum.state == .failed(error))
    }

    @Test func fencedAnswerFencesTheWriter() {
        var quorum = Quorum(ledgerID: 9, configuration: .init(ensembleSize: 3, writeQuorumSize: 3, ackQuorumSize: 2), ensemble: ["a", "b", "c"])
        _ = quorum.addEntry(entryID: 0, payload: payload)
        _ = quorum.addEntry(entryID: 1, payload: payload)
        _ = quorum.writeCompleted(entryID: 0, node: "a", result: .ok)
        #expect(quorum.writeCompleted(entryID: 0, node: "b", result: .fenced) == [.failEntries([0, 1], .fenced(ledgerID: 9))])
        #expect(quorum.addEntry(entryID: 2, payload: payload) == [.failEntries([2], .fenced(ledgerID: 9))])
        #expect(quorum.lastAddConfirmed == -1)
    }

    @Test func confirmationsWaitForAnEnsembleChange() {
        var quorum = Quorum(ledgerID: 1, configuration: .init(ensembleSize: 3, writeQuorumSize: 3, ackQuorumSize: 2), ensemble: ["a", "b", "c"])
        _ = quorum.addEntry(entryID: 0, payload: payload)
        _ = quorum.writeCompleted(entryID: 0, node: "a", result: .ok)
        _ = quorum.writeCompleted(entryID: 0, node: "b", result: .ok)
        #expect(quorum.lastAddConfirmed == 0)
        // A failure for an entry already confirmed still replaces the node.
        #expect(quorum.writeCompleted(entryID: 0, node: "c", result: .failed) == [.replaceNode(ensembleIndex: 2, failed: "c")])
        _ = quorum.addEntry(entryID: 1, payload: payload)
        _ = quorum.writeCompleted(entryID: 1, node: "a", result: .ok)
        // Qa is met, but the change (being recorded in metadata) holds the confirmation, so the
        // new segment's first entry stays lastAddConfirmed + 1.
        #expect(quorum.writeCompleted(entryID: 1, node: "b", result: .ok) == [])
        #expect(quorum.isChangingEnsemble && quorum.nextSegmentFirstEntryID == 1)
        #expect(quorum.nodeReplaced(ensembleIndex: 2, with: "d") == [
            .sendEntry(entryID: 1, payload: payload, node: "d"),
            .confirmEntries(from: 1, through: 1),
        ])
        #expect(quorum.ensembleHistory.map(\.firstEntryID) == [0, 1])
    }
}
