@testable import BrokerCore
@testable import ManagedLedger
import Testing

/// The acknowledgement path's first stage, as a pure value: only stored entries may be acknowledged.
@Suite struct AckStagesTests {
    final class Ignored {
        var counts: [(Int, String)] = []
    }

    func stage(last: Position, _ ignored: Ignored) -> StoredEntriesOnlyStage {
        StoredEntriesOnlyStage(lastDurable: { last }, ignored: { ignored.counts.append(($0, $1)) })
    }

    let last = Position(ledgerID: 3, entryID: 9)

    @Test func acknowledgementsOfStoredEntriesPassUnchanged() {
        let ignored = Ignored()
        let stage = stage(last: last, ignored)
        let individual = Acknowledgement.individual([Position(ledgerID: 3, entryID: 1), last])
        #expect(stage.admit(individual, subscription: "s") == .pass(individual))
        let cumulative = Acknowledgement.cumulative(upTo: last)
        #expect(stage.admit(cumulative, subscription: "s") == .pass(cumulative))
        let batch = Acknowledgement.batchIndexes(Position(ledgerID: 2, entryID: 40), ackSet: [6])
        #expect(stage.admit(batch, subscription: "s") == .pass(batch))
        #expect(ignored.counts.isEmpty)
    }

    @Test func positionsPastTheLastStoredEntryAreDroppedAndCounted() {
        let ignored = Ignored()
        let stage = stage(last: last, ignored)
        let beyond = Position(ledgerID: 3, entryID: 10)
        let nextLedger = Position(ledgerID: 4, entryID: 0)
        #expect(stage.admit(.individual([Position(ledgerID: 3, entryID: 2), beyond, nextLedger]), subscription: "a")
            == .pass(.individual([Position(ledgerID: 3, entryID: 2)])))
        #expect(stage.admit(.individual([beyond]), subscription: "b") == .stop)
        #expect(stage.admit(.cumulative(upTo: beyond), subscription: "c") == .stop)
        #expect(stage.admit(.batchIndexes(nextLedger, ackSet: [1]), subscription: "d") == .stop)
        #expect(ignored.counts.map(\.0) == [2, 1, 1, 1])
        #expect(ignored.counts.map(\.1) == ["a", "b", "c", "d"])
    }
}
