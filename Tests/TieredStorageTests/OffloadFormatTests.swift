import Foundation
import NIOCore
import Testing

@testable import TieredStorage

/// The offloaded-ledger object format: blocks, the index, and damage detected rather than delivered.
@Suite struct OffloadFormatTests {
    let uuid = UUID(uuidString: "6F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9")!

    func entries(_ range: Range<Int>) -> [ByteBuffer] {
        range.map { ByteBuffer(string: "entry-\($0)-" + String(repeating: "x", count: $0 % 7)) }
    }

    @Test func blocksAndTheIndexRoundTrip() throws {
        let first = OffloadFormat.block(firstEntryID: 0, entries: entries(0..<3))
        let second = OffloadFormat.block(firstEntryID: 3, entries: entries(3..<5))
        let blocks = [
            OffloadIndex.Block(firstEntryID: 0, entryCount: 3, offset: 32, length: first.readableBytes),
            OffloadIndex.Block(firstEntryID: 3, entryCount: 2, offset: Int64(32 + first.readableBytes), length: second.readableBytes),
        ]
        let index = OffloadIndex(
            ledgerID: 42, uuid: uuid, entryCount: 5, dataObjectLength: Int64(32 + first.readableBytes + second.readableBytes), blocks: blocks)
        #expect(try OffloadIndex.decode(index.encode()) == index)
        #expect(try OffloadFormat.entries(ofBlock: first, blocks[0]) == entries(0..<3))
        #expect(try OffloadFormat.entries(ofBlock: second, blocks[1]) == entries(3..<5))
        #expect(index.blocks(covering: 0, 0).map(\.firstEntryID) == [0])
        #expect(index.blocks(covering: 2, 3).map(\.firstEntryID) == [0, 3])
        #expect(index.blocks(covering: 4, 9).map(\.firstEntryID) == [3])
        #expect(index.blocks(covering: 5, 9).isEmpty && index.blocks(covering: 3, 2).isEmpty)
        let header = OffloadFormat.dataHeader(ledgerID: 42, uuid: uuid)
        #expect(header.readableBytes == OffloadFormat.dataHeaderBytes)
        try OffloadFormat.checkDataHeader(header, ledgerID: 42, uuid: uuid)
        #expect(throws: TieredStorageError.self) { try OffloadFormat.checkDataHeader(header, ledgerID: 43, uuid: uuid) }
    }

    @Test func everyFlippedByteOfABlockIsDetected() throws {
        let block = OffloadFormat.block(firstEntryID: 10, entries: entries(10..<14))
        let record = OffloadIndex.Block(firstEntryID: 10, entryCount: 4, offset: 32, length: block.readableBytes)
        for position in 0..<block.readableBytes {
            var damaged = block
            damaged.setInteger(damaged.getInteger(at: position, as: UInt8.self)! ^ 0x5A, at: position)
            #expect(throws: TieredStorageError.self) { try OffloadFormat.entries(ofBlock: damaged, record) }
        }
        // The block the index does not describe: another first entry, a short read.
        var other = record
        other.firstEntryID = 11
        #expect(throws: TieredStorageError.self) { try OffloadFormat.entries(ofBlock: block, other) }
        #expect(throws: TieredStorageError.self) { try OffloadFormat.entries(ofBlock: block.getSlice(at: 0, length: 30)!, record) }
    }

    @Test func aDamagedOrInconsistentIndexIsRefused() throws {
        let block = OffloadFormat.block(firstEntryID: 0, entries: entries(0..<2))
        let index = OffloadIndex(
            ledgerID: 7, uuid: uuid, entryCount: 2, dataObjectLength: Int64(32 + block.readableBytes),
            blocks: [OffloadIndex.Block(firstEntryID: 0, entryCount: 2, offset: 32, length: block.readableBytes)])
        let encoded = index.encode()
        for position in 0..<encoded.readableBytes {
            var damaged = encoded
            damaged.setInteger(damaged.getInteger(at: position, as: UInt8.self)! ^ 0x01, at: position)
            #expect(throws: TieredStorageError.self) { try OffloadIndex.decode(damaged) }
        }
        // Well-formed bytes whose blocks do not add up to the entry count.
        var lying = index
        lying.entryCount = 3
        #expect(throws: TieredStorageError.self) { try OffloadIndex.decode(lying.encode()) }
        #expect(throws: TieredStorageError.self) { try OffloadIndex.decode(ByteBuffer(string: "not an index")) }
    }
}
