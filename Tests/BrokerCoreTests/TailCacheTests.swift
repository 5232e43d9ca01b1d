@testable import BrokerCore
@testable import ManagedLedger
import NIOCore
import Testing

/// `TailCache`: the newest durable entries of one ledger, as a pure value.
@Suite struct TailCacheTests {
    func entry(_ n: Int, size: Int = 10) -> ByteBuffer {
        ByteBuffer(bytes: [UInt8](repeating: UInt8(truncatingIfNeeded: n), count: size))
    }

    @Test func servesContiguousEntriesOfTheLastLedgerOnly() {
        var cache = TailCache()
        for id in Int64(0)..<5 { cache.insert(entry(Int(id)), at: Position(ledgerID: 7, entryID: id)) }
        #expect(cache.entry(at: Position(ledgerID: 7, entryID: 3)) == entry(3))
        #expect(cache.entry(at: Position(ledgerID: 7, entryID: 5)) == nil)
        #expect(cache.entry(at: Position(ledgerID: 6, entryID: 3)) == nil)
        // A new ledger (or a gap) starts over.
        cache.insert(entry(100), at: Position(ledgerID: 8, entryID: 0))
        #expect(cache.entry(at: Position(ledgerID: 7, entryID: 3)) == nil)
        #expect(cache.entry(at: Position(ledgerID: 8, entryID: 0)) == entry(100))
        cache.insert(entry(102), at: Position(ledgerID: 8, entryID: 2))
        #expect(cache.entry(at: Position(ledgerID: 8, entryID: 0)) == nil)
        #expect(cache.entry(at: Position(ledgerID: 8, entryID: 2)) == entry(102))
        #expect(cache.count == 1)
    }

    @Test func evictsTheOldestPastItsLimits() {
        var cache = TailCache()
        let total = TailCache.maxEntries + 1500
        for id in 0..<total { cache.insert(entry(id, size: 1), at: Position(ledgerID: 1, entryID: Int64(id))) }
        #expect(cache.count == TailCache.maxEntries)
        #expect(cache.entry(at: Position(ledgerID: 1, entryID: Int64(total - TailCache.maxEntries - 1))) == nil)
        #expect(cache.entry(at: Position(ledgerID: 1, entryID: Int64(total - TailCache.maxEntries))) == entry(total - TailCache.maxEntries, size: 1))
        #expect(cache.entry(at: Position(ledgerID: 1, entryID: Int64(total - 1))) == entry(total - 1, size: 1))

        var big = TailCache()
        let size = TailCache.maxBytes / 4
        for id in 0..<10 { big.insert(entry(id, size: size), at: Position(ledgerID: 2, entryID: Int64(id))) }
        #expect(big.bytes <= TailCache.maxBytes)
        #expect(big.count == 4)
        #expect(big.entry(at: Position(ledgerID: 2, entryID: 9)) == entry(9, size: size))
        #expect(big.entry(at: Position(ledgerID: 2, entryID: 5)) == nil)
    }
}
