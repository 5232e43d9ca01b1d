@testable import BrokerCore
@testable import ManagedLedger
import TestSupport
import Testing

/// The message index of a ledger as a pure value: block lookups agree with a walk over every
/// entry, and the encoding round-trips and refuses damage.
@Suite struct MessageIndexTests {
    /// Entries with 0 to 4 messages and publish times that go back and forth.
    func sample(entries: Int, seed: UInt64) -> [(numMessages: Int32, publishTimeMs: Int64)] {
        var rng = SplitMix64(seed: seed)
        return (0..<entries).map { i in
            (Int32(rng.next() % 5), 1_000 + Int64(i) * 10 - Int64(rng.next() % 40))
        }
    }

    func index(of entries: [(numMessages: Int32, publishTimeMs: Int64)]) -> MessageIndex {
        var index = MessageIndex()
        for entry in entries { index.append(numMessages: entry.numMessages, publishTimeMs: entry.publishTimeMs) }
        return index
    }

    @Test(arguments: [1, 63, 64, 65, 200, 1_000])
    func everyMessageIsFoundInTheEntryThatHoldsIt(entries count: Int) throws {
        let entries = sample(entries: count, seed: UInt64(count))
        let index = index(of: entries)
        #expect(index.entries == Int64(count))
        #expect(index.messages == entries.reduce(0) { $0 + Int64($1.numMessages) })
        var message: Int64 = 0
        for (entryID, entry) in entries.enumerated() {
            for _ in 0..<entry.numMessages {
                let block = try #require(index.block(containingMessage: message))
                #expect(block.entries.contains(Int64(entryID)))
                let counts = block.entries.map { entries[Int($0)].numMessages }
                let at = try #require(MessageIndex.entry(holding: message, in: block, numMessages: counts))
                #expect(block.entries.lowerBound + Int64(at) == Int64(entryID))
                message += 1
            }
        }
        #expect(index.block(containingMessage: message) == nil)
        #expect(index.block(containingMessage: -1) == nil)
    }

    @Test(arguments: [1, 64, 130, 700])
    func theBlockForATimeHoldsTheFirstEntryAtOrAfterIt(entries count: Int) throws {
        let entries = sample(entries: count, seed: 7 + UInt64(count))
        let index = index(of: entries)
        for time in stride(from: Int64(900), through: 1_000 + Int64(count) * 10 + 10, by: 7) {
            let expected = entries.firstIndex { $0.publishTimeMs >= time }
            guard let expected else {
                #expect(index.block(firstPublishedAtOrAfter: time) == nil)
                continue
            }
            let block = try #require(index.block(firstPublishedAtOrAfter: time))
            #expect(block.entries.contains(Int64(expected)), "time \(time): entry \(expected) not in \(block.entries)")
        }
    }

    @Test func encodingRoundTripsAndRefusesDamage() throws {
        let index = index(of: sample(entries: 150, seed: 3))
        let bytes = index.encode()
        #expect(try MessageIndex.decode(bytes) == index)
        #expect(try MessageIndex.decode(MessageIndex().encode()) == MessageIndex())
        #expect(throws: MessageIndex.DecodingError.self) { try MessageIndex.decode(Array(bytes.dropLast())) }
        #expect(throws: MessageIndex.DecodingError.self) { try MessageIndex.decode(bytes + [0]) }
        var wrongVersion = bytes
        wrongVersion[0] = 9
        #expect(throws: MessageIndex.DecodingError.self) { try MessageIndex.decode(wrongVersion) }
        // A block count that does not match the entries, and one far larger than the bytes.
        var wrongBlocks = bytes
        wrongBlocks[20] &+= 1
        #expect(throws: MessageIndex.DecodingError.self) { try MessageIndex.decode(wrongBlocks) }
        var huge = bytes
        huge[17] = 0xFF
        #expect(throws: MessageIndex.DecodingError.self) { try MessageIndex.decode(huge) }
        #expect(throws: MessageIndex.DecodingError.self) { try MessageIndex.decode([]) }
    }

    @Test func firstOffsetsFollowFromNeighbours() {
        func ledger(_ id: Int64, first: Int64?, messages: Int64?) -> LedgerInfo {
            LedgerInfo(ledgerID: id, entries: 1, sizeBytes: 1, closed: true, firstOffset: first, messages: messages)
        }
        // Written before offsets: the first ledger starts at 0.
        var legacy = [ledger(1, first: nil, messages: 5), ledger(2, first: nil, messages: 3)]
        #expect(ManagedLedgerRecord.resolveOffsets(&legacy) == 8)
        #expect(legacy.map(\.firstOffset) == [0, 5])
        // A recovered ledger of unknown size in the middle: what follows it stays unknown.
        var recovered = [ledger(1, first: 10, messages: 5), ledger(2, first: nil, messages: nil), ledger(3, first: nil, messages: 2)]
        #expect(ManagedLedgerRecord.resolveOffsets(&recovered) == nil)
        #expect(recovered.map(\.firstOffset) == [10, 15, nil])
        // Backwards: a ledger's first offset from the next one's.
        var trimmed = [ledger(4, first: nil, messages: 4), ledger(5, first: 20, messages: 1)]
        #expect(ManagedLedgerRecord.resolveOffsets(&trimmed) == 21)
        #expect(trimmed.map(\.firstOffset) == [16, 20])
    }
}
