@testable import BrokerCore
@testable import ManagedLedger
import TestSupport
import Testing

@Suite struct PositionRangeSetTests {
    @Test func mergesAdjacentRanges() {
        var set = PositionRangeSet()
        set.insert(Position(ledgerID: 1, entryID: 3))
        set.insert(Position(ledgerID: 1, entryID: 5))
        #expect(set.rangeCount == 2)
        set.insert(Position(ledgerID: 1, entryID: 4))
        #expect(set.rangeCount == 1)
        #expect(set.range(containing: Position(ledgerID: 1, entryID: 4)) == 3...5)
        #expect(!set.contains(Position(ledgerID: 2, entryID: 4)))
    }

    /// Random operation sequences checked against a plain set of positions.
    @Test(arguments: [1, 2, 3, 4, 5])
    func randomOperationsMatchTheModel(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        var set = PositionRangeSet()
        var model = Set<Position>()
        for _ in 0..<2_000 {
            let position = Position(ledgerID: Int64(random.next() % 3), entryID: Int64(random.next() % 60))
            switch random.next() % 10 {
            case 0:
                set.removeAll(upTo: position)
                model = model.filter { $0 > position }
            case 1:
                set.removeAll(from: position)
                model = model.filter { $0 < position }
            default:
                set.insert(position)
                model.insert(position)
            }
            #expect(set.count == Int64(model.count))
        }
        for ledger in Int64(0)..<3 {
            for entry in Int64(-1)..<61 {
                let position = Position(ledgerID: ledger, entryID: entry)
                #expect(set.contains(position) == model.contains(position), "seed \(seed) position \(position)")
            }
        }
        // Ranges are disjoint and never adjacent.
        for (ledgerID, ranges) in set.ranges {
            for (a, b) in zip(ranges, ranges.dropFirst()) {
                #expect(a.upperBound + 1 < b.lowerBound, "ledger \(ledgerID)")
            }
        }
    }
}

