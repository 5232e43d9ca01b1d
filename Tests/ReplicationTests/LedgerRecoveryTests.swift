import LedgerStorage
import NIOCore
import Testing
@testable import Replication

/// Transcripts of `LedgerRecovery`, the pure recovery state machine: answers in, actions out.
@Suite struct LedgerRecoveryTests {
    typealias Recovery = LedgerRecovery<Int>
    static let quorum332 = QuorumConfiguration(ensembleSize: 3, writeQuorumSize: 3, ackQuorumSize: 2)

    static func payload(_ entryID: Int64) -> ByteBuffer { ByteBuffer(string: "entry-\(entryID)") }

    /// Fences and lists every node with `held[node]`; returns the actions after the listings.
    static func fencedAndListed(_ recovery: inout Recovery, held: [Int: [Int64]], fenced: Set<Int> = [0, 1, 2]) -> [Recovery.Action] {
        #expect(recovery.start() == [.fence(node: 0), .fence(node: 1), .fence(node: 2)])
        var actions: [Recovery.Action] = []
        for node in 0..<3 { actions += recovery.fenceAnswered(node: node, fenced: fenced.contains(node)) }
        #expect(actions == fenced.sorted().map { .listEntries(node: $0, fromEntryID: 0) })
        var next: [Recovery.Action] = []
        for node in fenced.sorted() { next += recovery.listed(node: node, entryIDs: held[node]) }
        return next
    }

    @Test func anEmptyLedgerEndsBeforeItsFirstEntry() {
        var recovery = Recovery(ledgerID: 1, ensemble: [0, 1, 2], firstEntryID: 0, configuration: Self.quorum332)
        #expect(Self.fencedAndListed(&recovery, held: [0: [], 1: [], 2: []]) == [.finished(lastEntryID: -1, copies: 0)])
    }

    @Test func tooFewFencesFailWithTheMissingNodesNamed() {
        var recovery = Recovery(ledgerID: 1, ensemble: [0, 1, 2], firstEntryID: 0, configuration: Self.quorum332)
        _ = recovery.start()
        #expect(recovery.fenceAnswered(node: 0, fenced: true) == [])
        #expect(recovery.fenceAnswered(node: 1, fenced: false) == [])
        let last = recovery.fenceAnswered(node: 2, fenced: false)
        guard case .failed(.io(let text))? = last.first else {
            Issue.record("expected a failure, got \(last)")
            return
        }
        #expect(text.contains("fenced on 1 of its 3"))
        #expect(text.contains("1, 2"))
    }

    @Test func theEndIsReadBackAndTheTailWrittenToNodesThatLackIt() {
        var recovery = Recovery(ledgerID: 1, ensemble: [0, 1, 2], firstEntryID: 0, configuration: Self.quorum332)
        // Entries 0...2 are on 0 and 1; node 2 has only 0; entry 4 (no 3) is an orphan past the gap.
        var actions = Self.fencedAndListed(&recovery, held: [0: [0, 1, 2], 1: [0, 1, 2, 4], 2: [0]])
        #expect(actions == [.readEntry(entryID: 2, node: 0)])
        actions = recovery.readAnswered(entryID: 2, node: 0, .entry(Self.payload(2)))
        // Write-back: entry 0 is everywhere; entry 1 goes to node 2, read from node 0.
        #expect(actions == [.readEntry(entryID: 1, node: 0)])
        actions = recovery.readAnswered(entryID: 1, node: 0, .failed("timed out"))
        #expect(actions == [.readEntry(entryID: 1, node: 1)])  // the next holder
        actions = recovery.readAnswered(entryID: 1, node: 1, .entry(Self.payload(1)))
        #expect(actions == [.recoveryAdd(entryID: 1, payload: Self.payload(1), nodes: [2])])
        actions = recovery.recoveryAddsAnswered(entryID: 1, accepted: 1)
        #expect(actions == [.readEntry(entryID: 2, node: 0)])
        actions = recovery.readAnswered(entryID: 2, node: 0, .entry(Self.payload(2)))
        #expect(actions == [.recoveryAdd(entryID: 2, payload: Self.payload(2), nodes: [2])])
        #expect(recovery.recoveryAddsAnswered(entryID: 2, accepted: 1) == [.finished(lastEntryID: 2, copies: 2)])
    }

    @Test func anEntryStoredNowhereIsDroppedFromTheTail() {
        var recovery = Recovery(ledgerID: 1, ensemble: [0, 1, 2], firstEntryID: 0, configuration: Self.quorum332)
        var actions = Self.fencedAndListed(&recovery, held: [0: [0, 1], 1: [0], 2: [0]])
        #expect(actions == [.readEntry(entryID: 1, node: 0)])
        actions = recovery.readAnswered(entryID: 1, node: 0, .notFound)
        #expect(actions.first == .droppedPhantomEntry(entryID: 1, nodes: [0]))
        #expect(Array(actions.dropFirst()) == [.readEntry(entryID: 0, node: 0)])
        #expect(recovery.readAnswered(entryID: 0, node: 0, .corrupted) == [.finished(lastEntryID: 0, copies: 0)])
    }

    @Test func anEndThatCannotBeReadStopsTheRecoveryForARetry() {
        var recovery = Recovery(ledgerID: 1, ensemble: [0, 1, 2], firstEntryID: 0, configuration: Self.quorum332)
        var actions = Self.fencedAndListed(&recovery, held: [0: [0, 1], 1: [0, 1], 2: [0]])
        #expect(actions == [.readEntry(entryID: 1, node: 0)])
        actions = recovery.readAnswered(entryID: 1, node: 0, .notFound)
        #expect(actions == [.readEntry(entryID: 1, node: 1)])
        actions = recovery.readAnswered(entryID: 1, node: 1, .failed("connection reset"))
        guard case .failed(.io(let text))? = actions.first else {
            Issue.record("expected a failure, got \(actions)")
            return
        }
        #expect(text.contains("cannot read entry 1 back"))
        // A late answer after the outcome changes nothing.
        #expect(recovery.readAnswered(entryID: 1, node: 0, .entry(Self.payload(1))) == [])
    }

    @Test func tooFewListingsFail() {
        var recovery = Recovery(ledgerID: 1, ensemble: [0, 1, 2], firstEntryID: 0, configuration: Self.quorum332)
        let actions = Self.fencedAndListed(&recovery, held: [0: [0]], fenced: [0, 1])
        guard case .failed(.io(let text))? = actions.first else {
            Issue.record("expected a failure, got \(actions)")
            return
        }
        #expect(text.contains("listed entries on 1 storage nodes, need 2"))
    }

    @Test func aStripedLedgerWritesBackOnlyToTheWriteSet() {
        // E=5, Qw=3, Qa=2 from entry 10: entry 10's write set is ensemble indices 0, 1, 2.
        let quorum = QuorumConfiguration(ensembleSize: 5, writeQuorumSize: 3, ackQuorumSize: 2)
        var recovery = Recovery(ledgerID: 1, ensemble: [10, 11, 12, 13, 14], firstEntryID: 10, configuration: quorum)
        _ = recovery.start()
        var actions: [Recovery.Action] = []
        for node in 10...14 { actions += recovery.fenceAnswered(node: node, fenced: true) }
        #expect(actions.count == 5)
        var next: [Recovery.Action] = []
        for node in 10...14 { next += recovery.listed(node: node, entryIDs: node == 10 ? [10] : []) }
        #expect(next == [.readEntry(entryID: 10, node: 10)])
        next = recovery.readAnswered(entryID: 10, node: 10, .entry(Self.payload(10)))
        #expect(next == [.readEntry(entryID: 10, node: 10)])
        next = recovery.readAnswered(entryID: 10, node: 10, .entry(Self.payload(10)))
        #expect(next == [.recoveryAdd(entryID: 10, payload: Self.payload(10), nodes: [11, 12])])
    }
}
