import CRC32C
import Foundation
import NIOCore

/// What went wrong with a tier: an object that does not decode (damaged, or not ours), a tier that
/// cannot be reached or refused, a ledger that is not in the tier. The message says what to do.
public struct TieredStorageError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: Sendable, Equatable {
        /// An object's bytes do not decode or fail their checksum: never delivered.
        case corrupted
        /// The tier did not answer or answered with an error (retried by the caller).
        case unavailable
        /// No such object, or no such entry in the ledger's objects.
        case notFound
        /// The configuration or a key cannot be used.
        case invalidArgument
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

/// The objects one offloaded ledger becomes (format version 1), all integers big-endian:
///
/// - the **data object**: a 32-byte header `[u32 magic "MGTD"][u16 version][u16 0][i64 ledgerID]`
///   `[16 bytes uuid]`, then blocks, each `[u32 magic "MGTB"][u32 payloadLength][i64 firstEntryID]`
///   `[u32 entryCount][u32 crc32c of the payload]` and a payload of `entryCount` entries
///   `[u32 length][bytes]`, in entry id order with no gaps;
/// - the **index object**: `[u32 magic "MGTI"][u16 version][u16 0][i64 ledgerID][16 bytes uuid]`
///   `[i64 entryCount][i64 dataObjectLength][u32 blockCount]`, per block
///   `[i64 firstEntryID][u32 entryCount][i64 offset][u32 length]` (offset and length of the whole
///   block in the data object), then `[u32 crc32c]` of everything before it.
///
/// A reader fetches the index once, then only the blocks holding the entries it wants (ranged
/// reads); every block's checksum is checked before an entry of it is handed out, so a damaged
/// object is detected, not delivered. The uuid ties the two objects of one offload together (a
/// ledger offloaded twice gets two uuids). History: version 1 is the first. Pure values.
public enum OffloadFormat {
    public static let version: UInt16 = 1
    static let dataMagic: UInt32 = 0x4D47_5444  // "MGTD"
    static let blockMagic: UInt32 = 0x4D47_5442  // "MGTB"
    static let indexMagic: UInt32 = 0x4D47_5449  // "MGTI"
    public static let dataHeaderBytes = 32
    public static let blockHeaderBytes = 24
    static let indexHeaderBytes = 52
    static let indexBlockBytes = 24
    /// The largest entry a block takes (Pulsar's 5 MiB message limit with room for metadata).
    public static let maxEntryBytes = 16 * 1024 * 1024
    /// The most blocks an index may list (a 2 GiB ledger in 64 KiB blocks), checked before allocating.
    static let maxBlocks = 32_768

    /// The data object's header.
    public static func dataHeader(ledgerID: Int64, uuid: UUID, allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: dataHeaderBytes)
        buffer.writeInteger(dataMagic)
        buffer.writeInteger(version)
        buffer.writeInteger(UInt16(0))
        buffer.writeInteger(ledgerID)
        writeUUID(uuid, into: &buffer)
        return buffer
    }

    /// Checks a data object's header against the index that names it.
    public static func checkDataHeader(_ header: ByteBuffer, ledgerID: Int64, uuid: UUID) throws(TieredStorageError) {
        var header = header
        guard header.readableBytes >= dataHeaderBytes, header.readInteger(as: UInt32.self) == dataMagic else {
            throw TieredStorageError(.corrupted, "the data object of ledger \(ledgerID) has no Magnetar offload header")
        }
        let found = header.readInteger(as: UInt16.self)!
        guard found == version else {
            throw TieredStorageError(.corrupted, "the data object of ledger \(ledgerID) is format version \(found), this broker reads \(version)")
        }
        _ = header.readInteger(as: UInt16.self)
        guard header.readInteger(as: Int64.self) == ledgerID, readUUID(&header) == uuid else {
            throw TieredStorageError(.corrupted, "the data object does not belong to ledger \(ledgerID)'s offload \(uuid)")
        }
    }

    /// One block of consecutive entries starting at `firstEntryID`.
    public static func block(firstEntryID: Int64, entries: [ByteBuffer], allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        let payloadLength = entries.reduce(0) { $0 + 4 + $1.readableBytes }
        var buffer = allocator.buffer(capacity: blockHeaderBytes + payloadLength)
        buffer.writeInteger(blockMagic)
        buffer.writeInteger(UInt32(payloadLength))
        buffer.writeInteger(firstEntryID)
        buffer.writeInteger(UInt32(entries.count))
        let crcAt = buffer.writerIndex
        buffer.writeInteger(UInt32(0))
        let payloadStart = buffer.writerIndex
        for entry in entries {
            buffer.writeInteger(UInt32(entry.readableBytes))
            buffer.writeImmutableBuffer(entry)
        }
        var crc = CRC32C()
        let from = payloadStart - buffer.readerIndex
        buffer.withUnsafeReadableBytes { crc.update(UnsafeRawBufferPointer(rebasing: $0[from...])) }
        buffer.setInteger(crc.value, at: crcAt)
        return buffer
    }

    /// The entries of a block read back, checked against its index record and its checksum.
    public static func entries(ofBlock bytes: ByteBuffer, _ expected: OffloadIndex.Block) throws(TieredStorageError) -> [ByteBuffer] {
        var buffer = bytes
        func damaged(_ why: String) -> TieredStorageError {
            TieredStorageError(.corrupted, "offloaded block of entries \(expected.firstEntryID)+\(expected.entryCount) is damaged: \(why)")
        }
        guard buffer.readableBytes == expected.length, buffer.readableBytes >= blockHeaderBytes,
              buffer.readInteger(as: UInt32.self) == blockMagic
        else { throw damaged("no block header where the index says one is") }
        let payloadLength = Int(buffer.readInteger(as: UInt32.self)!)
        let firstEntryID = buffer.readInteger(as: Int64.self)!
        let count = Int(buffer.readInteger(as: UInt32.self)!)
        let crc = buffer.readInteger(as: UInt32.self)!
        guard payloadLength == buffer.readableBytes, firstEntryID == expected.firstEntryID, count == expected.entryCount,
              count <= payloadLength / 4
        else { throw damaged("its header does not match the index") }
        var check = CRC32C()
        buffer.withUnsafeReadableBytes { check.update($0) }
        guard check.value == crc else { throw damaged("checksum mismatch") }
        var entries: [ByteBuffer] = []
        entries.reserveCapacity(count)
        for _ in 0..<count {
            guard let length = buffer.readInteger(as: UInt32.self), let entry = buffer.readSlice(length: Int(length)) else {
                throw damaged("an entry runs past the block")
            }
            entries.append(entry)
        }
        guard buffer.readableBytes == 0 else { throw damaged("bytes after its last entry") }
        return entries
    }

    static func writeUUID(_ uuid: UUID, into buffer: inout ByteBuffer) {
        withUnsafeBytes(of: uuid.uuid) { buffer.writeBytes($0) }
    }

    static func readUUID(_ buffer: inout ByteBuffer) -> UUID? {
        guard let bytes = buffer.readBytes(length: 16) else { return nil }
        return UUID(uuid: (bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
                           bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]))
    }
}

/// The index object of an offloaded ledger: where each block of entries sits in the data object.
/// A pure value.
public struct OffloadIndex: Sendable, Equatable {
    public struct Block: Sendable, Equatable {
        public var firstEntryID: Int64
        public var entryCount: Int
        /// Offset and length of the whole block (header included) in the data object.
        public var offset: Int64
        public var length: Int

        public var lastEntryID: Int64 { firstEntryID + Int64(entryCount) - 1 }

        public init(firstEntryID: Int64, entryCount: Int, offset: Int64, length: Int) {
            self.firstEntryID = firstEntryID
            self.entryCount = entryCount
            self.offset = offset
            self.length = length
        }
    }

    public var ledgerID: Int64
    public var uuid: UUID
    public var entryCount: Int64
    public var dataObjectLength: Int64
    public var blocks: [Block]

    public init(ledgerID: Int64, uuid: UUID, entryCount: Int64, dataObjectLength: Int64, blocks: [Block]) {
        self.ledgerID = ledgerID
        self.uuid = uuid
        self.entryCount = entryCount
        self.dataObjectLength = dataObjectLength
        self.blocks = blocks
    }

    /// The blocks holding entries `first...last` (in order; empty when none does).
    public func blocks(covering first: Int64, _ last: Int64) -> ArraySlice<Block> {
        guard first <= last, !blocks.isEmpty else { return [] }
        // The first block whose last entry is at or after `first` (blocks are in entry order).
        var low = 0
        var high = blocks.count
        while low < high {
            let middle = (low + high) / 2
            if blocks[middle].lastEntryID < first { low = middle + 1 } else { high = middle }
        }
        var end = low
        while end < blocks.count, blocks[end].firstEntryID <= last { end += 1 }
        return blocks[low..<end]
    }

    public func encode(allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: OffloadFormat.indexHeaderBytes + blocks.count * OffloadFormat.indexBlockBytes + 4)
        buffer.writeInteger(OffloadFormat.indexMagic)
        buffer.writeInteger(OffloadFormat.version)
        buffer.writeInteger(UInt16(0))
        buffer.writeInteger(ledgerID)
        OffloadFormat.writeUUID(uuid, into: &buffer)
        buffer.writeInteger(entryCount)
        buffer.writeInteger(dataObjectLength)
        buffer.writeInteger(UInt32(blocks.count))
        for block in blocks {
            buffer.writeInteger(block.firstEntryID)
            buffer.writeInteger(UInt32(block.entryCount))
            buffer.writeInteger(block.offset)
            buffer.writeInteger(UInt32(block.length))
        }
        var crc = CRC32C()
        buffer.withUnsafeReadableBytes { crc.update($0) }
        buffer.writeInteger(crc.value)
        return buffer
    }

    /// An index object read back: its checksum, its version, and that its blocks tile the data
    /// object and the ledger's entries without gaps or overlaps.
    public static func decode(_ bytes: ByteBuffer) throws(TieredStorageError) -> OffloadIndex {
        func damaged(_ why: String) -> TieredStorageError { TieredStorageError(.corrupted, "offload index object is damaged: \(why)") }
        var buffer = bytes
        guard buffer.readableBytes >= OffloadFormat.indexHeaderBytes + 4 else { throw damaged("\(buffer.readableBytes) bytes is too short") }
        var check = CRC32C()
        buffer.withUnsafeReadableBytes { check.update(UnsafeRawBufferPointer(rebasing: $0.dropLast(4))) }
        guard buffer.getInteger(at: buffer.writerIndex - 4, as: UInt32.self) == check.value else { throw damaged("checksum mismatch") }
        guard buffer.readInteger(as: UInt32.self) == OffloadFormat.indexMagic else { throw damaged("no Magnetar offload index header") }
        let version = buffer.readInteger(as: UInt16.self)!
        guard version == OffloadFormat.version else {
            throw damaged("format version \(version); this broker reads \(OffloadFormat.version)")
        }
        _ = buffer.readInteger(as: UInt16.self)
        let ledgerID = buffer.readInteger(as: Int64.self)!
        let uuid = OffloadFormat.readUUID(&buffer)!
        let entryCount = buffer.readInteger(as: Int64.self)!
        let dataObjectLength = buffer.readInteger(as: Int64.self)!
        let count = Int(buffer.readInteger(as: UInt32.self)!)
        guard count <= OffloadFormat.maxBlocks, buffer.readableBytes == count * OffloadFormat.indexBlockBytes + 4 else {
            throw damaged("\(count) blocks do not fit its length")
        }
        var blocks: [Block] = []
        blocks.reserveCapacity(count)
        var nextEntry: Int64 = 0
        var nextOffset = Int64(OffloadFormat.dataHeaderBytes)
        for _ in 0..<count {
            let block = Block(
                firstEntryID: buffer.readInteger(as: Int64.self)!, entryCount: Int(buffer.readInteger(as: UInt32.self)!),
                offset: buffer.readInteger(as: Int64.self)!, length: Int(buffer.readInteger(as: UInt32.self)!))
            guard block.firstEntryID == nextEntry, block.entryCount > 0, block.offset == nextOffset,
                  block.length >= OffloadFormat.blockHeaderBytes + 4 * block.entryCount
            else { throw damaged("block \(blocks.count) does not follow the one before it") }
            nextEntry += Int64(block.entryCount)
            nextOffset += Int64(block.length)
            blocks.append(block)
        }
        guard nextEntry == entryCount, nextOffset == dataObjectLength else {
            throw damaged("its blocks hold \(nextEntry) entries in \(nextOffset) bytes, not \(entryCount) in \(dataObjectLength)")
        }
        return OffloadIndex(ledgerID: ledgerID, uuid: uuid, entryCount: entryCount, dataObjectLength: dataObjectLength, blocks: blocks)
    }
}
