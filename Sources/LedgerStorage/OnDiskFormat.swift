import CRC32C
import NIOCore

/// The byte layout of the files a `FileLedgerStore` writes. `docs/ON_DISK_FORMAT.md`, section
/// "Ledger storage", is the same description for readers of the repository. All integers are
/// big-endian.
///
/// Every file starts with a 12-byte header: an 8-byte ASCII magic naming the kind of file, then a
/// `u32` format version.
///
/// Format history (bump `formatVersion` and add a line for every change; readers refuse versions
/// they do not know):
/// - version 1: first format. Journal and entry log records are
///   `[u32 bodyLength][u32 crc32c(body)][body]` with body `[u8 kind][i64 ledgerID][i64 entryID][payload]`;
///   the index checkpoint is one record `[u64 bodyLength][u32 crc32c(body)][body]` (layout in
///   `IndexCheckpoint`).
enum OnDiskFormat {
    static let formatVersion: UInt32 = 1
    static let fileHeaderBytes = 12

    static let journalMagic: [UInt8] = Array("MGTRJRNL".utf8)
    static let entryLogMagic: [UInt8] = Array("MGTRELOG".utf8)
    static let indexMagic: [UInt8] = Array("MGTRINDX".utf8)

    /// `[u32 bodyLength][u32 crc32c]` in front of every journal and entry log record.
    static let recordHeaderBytes = 8
    /// `[u8 kind][i64 ledgerID][i64 entryID]` at the start of every record body.
    static let recordBodyFixedBytes = 17
    /// Largest body a reader accepts; anything larger is treated as a corrupt length field.
    static let maxRecordBodyBytes = recordBodyFixedBytes + LedgerStorageLimits.maxEntryPayloadBytes

    static func recordBytes(payloadBytes: Int) -> Int {
        recordHeaderBytes + recordBodyFixedBytes + payloadBytes
    }

    static func writeFileHeader(magic: [UInt8], into buffer: inout ByteBuffer) {
        buffer.writeBytes(magic)
        buffer.writeInteger(formatVersion)
    }

    /// Checks a file header. Returns nil when it is fine, else what is wrong.
    static func checkFileHeader(magic: [UInt8], in buffer: ByteBuffer, at index: Int) -> String? {
        guard let bytes = buffer.getBytes(at: index, length: fileHeaderBytes) else {
            return "file shorter than its \(fileHeaderBytes)-byte header"
        }
        guard Array(bytes[0..<8]) == magic else {
            return "bad magic, expected \(String(decoding: magic, as: UTF8.self))"
        }
        let version = buffer.getInteger(at: index + 8, as: UInt32.self)!
        guard version == formatVersion else {
            return "unknown format version \(version), this build reads version \(formatVersion)"
        }
        return nil
    }

    /// Appends one framed record (header, body, CRC computed over the body) to `buffer`.
    /// Returns the record's length in bytes.
    @discardableResult
    static func writeRecord(
        kind: RecordKind, ledgerID: Int64, entryID: Int64, payload: ByteBuffer?, into buffer: inout ByteBuffer
    ) -> Int {
        let start = buffer.writerIndex
        let bodyLength = recordBodyFixedBytes + (payload?.readableBytes ?? 0)
        buffer.writeInteger(UInt32(bodyLength))
        buffer.writeInteger(UInt32(0))  // CRC, set below once the body is in place
        buffer.writeInteger(kind.rawValue)
        buffer.writeInteger(ledgerID)
        buffer.writeInteger(entryID)
        if let payload {
            buffer.writeImmutableBuffer(payload)
        }
        let bodyStart = start + recordHeaderBytes
        let readerIndex = buffer.readerIndex
        let crc = buffer.withUnsafeReadableBytes { bytes in
            let base = bodyStart - readerIndex
            return CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[base..<(base + bodyLength)]))
        }
        buffer.setInteger(crc, at: start + 4)
        return recordHeaderBytes + bodyLength
    }

    /// Decodes the record at absolute index `index` of `buffer` and verifies its CRC.
    static func decodeRecord(in buffer: ByteBuffer, at index: Int) -> RecordDecodeResult {
        let available = buffer.writerIndex - index
        guard available >= recordHeaderBytes else { return .incomplete(partialLedgerID: nil) }
        let bodyLength = Int(buffer.getInteger(at: index, as: UInt32.self)!)
        let storedCRC = buffer.getInteger(at: index + 4, as: UInt32.self)!
        let partialLedgerID: Int64? =
            available >= recordHeaderBytes + 9 ? buffer.getInteger(at: index + recordHeaderBytes + 1, as: Int64.self) : nil
        guard bodyLength >= recordBodyFixedBytes, bodyLength <= maxRecordBodyBytes else {
            return .corrupt("impossible record length \(bodyLength)", partialLedgerID: partialLedgerID)
        }
        guard available >= recordHeaderBytes + bodyLength else { return .incomplete(partialLedgerID: partialLedgerID) }
        let bodyStart = index + recordHeaderBytes
        let crc = buffer.withUnsafeReadableBytes { bytes in
            let base = bodyStart - buffer.readerIndex
            return CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[base..<(base + bodyLength)]))
        }
        guard crc == storedCRC else {
            return .corrupt("CRC mismatch (stored \(storedCRC), computed \(crc))", partialLedgerID: partialLedgerID)
        }
        let kindByte = buffer.getInteger(at: bodyStart, as: UInt8.self)!
        guard let kind = RecordKind(rawValue: kindByte) else {
            return .corrupt("unknown record kind \(kindByte)", partialLedgerID: partialLedgerID)
        }
        let ledgerID = buffer.getInteger(at: bodyStart + 1, as: Int64.self)!
        let entryID = buffer.getInteger(at: bodyStart + 9, as: Int64.self)!
        return .record(
            DecodedRecord(
                kind: kind, ledgerID: ledgerID, entryID: entryID,
                payloadIndex: bodyStart + recordBodyFixedBytes,
                payloadLength: bodyLength - recordBodyFixedBytes,
                recordLength: recordHeaderBytes + bodyLength))
    }
}

/// What a journal record does. Entry log records are always `.add`.
enum RecordKind: UInt8, Sendable {
    case add = 1
    case fence = 2
    case delete = 3
}

struct DecodedRecord {
    var kind: RecordKind
    var ledgerID: Int64
    var entryID: Int64
    /// Absolute index of the payload in the buffer the record was decoded from.
    var payloadIndex: Int
    var payloadLength: Int
    var recordLength: Int
}

enum RecordDecodeResult {
    case record(DecodedRecord)
    /// The buffer ends inside the record (a torn write at the tail of a file).
    case incomplete(partialLedgerID: Int64?)
    case corrupt(String, partialLedgerID: Int64?)
}

/// Where an entry's record lives: entry log file id, offset of the record's first byte, record length.
struct EntryLocation: Sendable, Equatable {
    var entryLogID: Int64
    var offset: Int64
    var length: UInt32
}

/// File names inside the store's directory.
enum StoreFileName {
    static let index = "index.dat"
    static let indexTemporary = "index.tmp"
    static let lock = "LOCK"

    static func journal(_ id: Int64) -> String { "journal-\(id).log" }
    static func entryLog(_ id: Int64) -> String { "entrylog-\(id).log" }

    /// Parses `journal-N.log` / `entrylog-N.log`.
    static func parse(_ name: String, prefix: String) -> Int64? {
        guard name.hasPrefix(prefix), name.hasSuffix(".log") else { return nil }
        let digits = name.dropFirst(prefix.count).dropLast(4)
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), let id = Int64(digits), id > 0 else { return nil }
        return id
    }
}
