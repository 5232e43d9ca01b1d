@testable import BrokerCore
@testable import ManagedLedger
import Testing

@Suite struct KeySharedTests {
    @Test func murmur3MatchesKnownVectors() {
        // Reference values of MurmurHash3_x86_32 with seed 0.
        #expect(Murmur3.hash32([UInt8]()) == 0)
        #expect(Murmur3.hash32(Array("hello".utf8)) == 0x248B_FA47)
        #expect(Murmur3.hash32(Array("The quick brown fox jumps over the lazy dog".utf8)) == 0x2E4F_F723)
    }

    @Test func autoSplitGivesEveryHashOneConsumerAndSpreadsLoad() throws {
        var selector = KeySharedSelector()
        let a = ConsumerKey(connectionID: 1, consumerID: 0)
        let b = ConsumerKey(connectionID: 1, consumerID: 1)
        try selector.add(a, name: "a", mode: .autoSplit)
        try selector.add(b, name: "b", mode: .autoSplit)
        var counts: [ConsumerKey: Int] = [:]
        for key in 0..<1_000 {
            let owner = try #require(selector.select(hash: Murmur3.stickyKeyHash(Array("key-\(key)".utf8))))
            counts[owner, default: 0] += 1
        }
        #expect(counts[a]! > 200 && counts[b]! > 200)
        selector.remove(a)
        #expect(selector.select(hash: 12345) == b)
    }

    @Test func overlappingStickyRangesAreRefused() throws {
        var selector = KeySharedSelector()
        try selector.add(ConsumerKey(connectionID: 1, consumerID: 0), name: "a", mode: .sticky([0...32767]))
        try selector.add(ConsumerKey(connectionID: 1, consumerID: 1), name: "b", mode: .sticky([32768...65535]))
        #expect(throws: BrokerError.self) {
            try selector.add(ConsumerKey(connectionID: 1, consumerID: 2), name: "c", mode: .sticky([100...200]))
        }
        #expect(selector.select(hash: 5) == ConsumerKey(connectionID: 1, consumerID: 0))
        #expect(selector.select(hash: 40000) == ConsumerKey(connectionID: 1, consumerID: 1))
    }
}
