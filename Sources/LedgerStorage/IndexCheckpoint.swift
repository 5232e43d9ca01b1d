import CRC32C
import NIOCore

/// A snapshot of the index (ledger → entry locations, fenced flags) and of how far it reaches:
/// every journal record before `journalPosition` is reflected in it, none after.
///
/// File `index.dat`: the 12-byte header (magic `MGTRINDX`, version), then one record
/// `[u64 bodyLength][u32 crc32c(body)][body]`, body:
/// ```
/// u64 journalFileID  u64 journalOffset      -- replay starts here
/// u64 entryLogID     u64 entryLogSizeBytes  -- the current entry log and its synced length
/// u32 ledgerCount
/// ledgerCount × { i64 ledgerID, u8 flags (bit 0: fenced), u64 entryCount,
///                 entryCount × { u64 entryLogID, u64 offset, u32 recordLength } }  -- entry i is the i-th
/// ```
/// Written as `index.tmp`, fsynced, renamed over `index.dat`, then the directory is fsynced.
struct IndexCheckpoint {
    struct Ledger {
        var ledgerID: Int64
        var fenced: Bool
        var locations: [EntryLocation]
    }

    var journalFileID: Int64
    var journalOffset: Int64
    var entryLogID: Int64
    var entryLogSizeBytes: Int64
    var ledgers: [Ledger]

    private static let fixedBodyBytes = 8 * 4 + 4
    private static let ledgerFixedBytes = 8 + 1 + 8
    private static let locationBytes = 8 + 8 + 4
    private static let recordHeaderBytes = 12

    /// Encodes the checkpoint file. `ledgers` are passed separately as (id, fenced, locations)
    /// so the writer can encode straight from its live state without copying location arrays.
    static func encode(
        journalFileID: Int64, journalOffset: Int64, entryLogID: Int64, entryLogSizeBytes: Int64,
        ledgers: [(ledgerID: Int64, fenced: Bool, locations: [EntryLocation])],
        allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        var bodyLength = fixedBodyBytes
        for ledger in ledgers {
            bodyLength += ledgerFixedBytes + ledger.locations.count * locationBytes
        }
        var buffer = allocator.buffer(capacity: OnDiskFormat.fileHeaderBytes + recordHeaderBytes + bodyLength)
        OnDiskFormat.writeFileHeader(magic: OnDiskFormat.indexMagic, into: &buffer)
        buffer.writeInteger(UInt64(bodyLength))
        let crcIndex = buffer.writerIndex
        buffer.writeInteger(UInt32(0))
        let bodyStart = buffer.writerIndex
        buffer.writeInteger(journalFileID)
        buffer.writeInteger(journalOffset)
        buffer.writeInteger(entryLogID)
        buffer.writeInteger(entryLogSizeBytes)
        buffer.writeInteger(UInt32(ledgers.count))
        for ledger in ledgers {
            buffer.writeInteger(ledger.ledgerID)
            buffer.writeInteger(UInt8(ledger.fenced ? 1 : 0))
            buffer.writeInteger(UInt64(ledger.locations.count))
            for location in ledger.locations {
                buffer.writeInteger(location.entryLogID)
                buffer.writeInteger(location.offset)
                buffer.writeInteger(location.length)
            }
        }
        precondition(buffer.writerIndex - bodyStart == bodyLength)
        let readerIndex = buffer.readerIndex
        let crc = buffer.withUnsafeReadableBytes { bytes in
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[(bodyStart - readerIndex)...]))
        }
        buffer.setInteger(crc, at: crcIndex)
        return buffer
    }

    /// Decodes and verifies a checkpoint file read whole into `buffer`.
    static func decode(_ buffer: ByteBuffer, fileName: String) -> Result<IndexCheckpoint, LedgerStoreError> {
        func corrupted(_ what: String, at offset: Int) -> Result<IndexCheckpoint, LedgerStoreError> {
            .failure(.corrupted("\(fileName) offset \(offset): \(what); restore the data directory from a replica (re-replication)"))
        }
        if let problem = OnDiskFormat.checkFileHeader(magic: OnDiskFormat.indexMagic, in: buffer, at: buffer.readerIndex) {
            return corrupted(problem, at: 0)
        }
        var reader = buffer
        reader.moveReaderIndex(forwardBy: OnDiskFormat.fileHeaderBytes)
        guard let bodyLength64 = reader.readInteger(as: UInt64.self), let storedCRC = reader.readInteger(as: UInt32.self) else {
            return corrupted("truncated record header", at: OnDiskFormat.fileHeaderBytes)
        }
        guard bodyLength64 <= UInt64(reader.readableBytes), Int(bodyLength64) == reader.readableBytes else {
            return corrupted("body length \(bodyLength64) does not match the file (\(reader.readableBytes) bytes follow)", at: OnDiskFormat.fileHeaderBytes)
        }
        let crc = reader.withUnsafeReadableBytes { CRC32C.checksum($0) }
        guard crc == storedCRC else {
            return corrupted("CRC mismatch (stored \(storedCRC), computed \(crc))", at: OnDiskFormat.fileHeaderBytes)
        }
        guard reader.readableBytes >= fixedBodyBytes else {
            return corrupted("body shorter than its fixed fields", at: OnDiskFormat.fileHeaderBytes + recordHeaderBytes)
        }
        var checkpoint = IndexCheckpoint(
            journalFileID: reader.readInteger()!, journalOffset: reader.readInteger()!,
            entryLogID: reader.readInteger()!, entryLogSizeBytes: reader.readInteger()!, ledgers: [])
        let ledgerCount = Int(reader.readInteger(as: UInt32.self)!)
        checkpoint.ledgers.reserveCapacity(ledgerCount)
        for _ in 0..<ledgerCount {
            let offset = reader.readerIndex - buffer.readerIndex
            guard reader.readableBytes >= ledgerFixedBytes else { return corrupted("truncated ledger", at: offset) }
            let ledgerID: Int64 = reader.readInteger()!
            let flags: UInt8 = reader.readInteger()!
            let entryCount = reader.readInteger(as: UInt64.self)!
            guard entryCount <= UInt64(reader.readableBytes / locationBytes) else {
                return corrupted("ledger \(ledgerID) claims \(entryCount) entries, more than the file holds", at: offset)
            }
            var locations: [EntryLocation] = []
            locations.reserveCapacity(Int(entryCount))
            for _ in 0..<entryCount {
                locations.append(
                    EntryLocation(entryLogID: reader.readInteger()!, offset: reader.readInteger()!, length: reader.readInteger()!))
            }
            checkpoint.ledgers.append(Ledger(ledgerID: ledgerID, fenced: flags & 1 != 0, locations: locations))
        }
        guard reader.readableBytes == 0 else {
            return corrupted("\(reader.readableBytes) trailing bytes", at: reader.readerIndex - buffer.readerIndex)
        }
        return .success(checkpoint)
    }
}
