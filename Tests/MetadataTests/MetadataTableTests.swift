import TestSupport
import Testing

@testable import Metadata

/// `MetadataTable.list(prefix:)` answers from an ordered index of keys (`OrderedKeys`); these check it
/// against a plain scan of every key.
@Suite struct MetadataTableTests {
    @Test(arguments: [1, 2, 3])
    func randomPutsAndDeletesListLikeAScan(seed: UInt64) throws {
        var random = SplitMix64(seed: seed)
        var table = MetadataTable()
        var model: Set<String> = []
        let parts = ["a", "b", "ab", "cursors", "managed-ledgers", "t-1", "t-10", "t-2", "é", "z"]
        func randomKey() -> String {
            (0..<Int.random(in: 1...3, using: &random)).map { _ in parts.randomElement(using: &random)! }
                .reduce("") { $0 + "/" + $1 }
        }
        // Enough keys to split chunks many times (512 per chunk).
        for step in 0..<6_000 {
            let key = step < 3_000 ? "/bulk/\(Int.random(in: 0..<2_000, using: &random))/\(randomKey())" : randomKey()
            if Int.random(in: 0..<4, using: &random) == 0, let existing = table.entries[key] {
                table.apply(.delete(key: key, version: existing.version))
                model.remove(key)
            } else {
                table.apply(try table.preparePut(key, value: [1], expectedVersion: nil))
                model.insert(key)
            }
            if step % 500 == 0 {
                for prefix in ["", "/", "/a", "/a/", "/ab", "/bulk/1", "/bulk/19/", "/é", "/z/z", "/zz", "/t-1"] {
                    #expect(table.list(prefix: prefix) == model.filter { $0.hasPrefix(prefix) }.sorted(), "seed \(seed) step \(step) prefix \(prefix)")
                }
            }
        }
        #expect(table.count == model.count)
    }

    @Test func orderedKeysSplitAndEmptyChunks() {
        var keys = OrderedKeys()
        let all = (0..<2_000).map { "/k/\($0)" }
        for key in all.shuffled() { keys.insert(key) }
        keys.insert("/k/7")  // again: no duplicate
        #expect(keys.count == 2_000)
        #expect(keys.chunks.count > 1)
        #expect(keys.chunks.allSatisfy { $0.count <= OrderedKeys.maxChunkCount })
        #expect(keys.all == all.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) })
        for key in all { keys.remove(key) }
        keys.remove("/absent")
        #expect(keys.count == 0)
        #expect(keys.chunks.isEmpty)
        #expect(keys.keys(withPrefix: "/k").isEmpty)
    }
}
