import CRC32C

/// The byte layout of `metadata.log`, the embedded store's append-only log. Pure functions, no I/O.
///
/// All integers are big-endian (network order, as on the Pulsar wire).
///
///     file   = header record*
///     header = magic (8 bytes, ASCII "MGTRMETA") formatVersion (u32)
///     record = bodyLength (u32) bodyCRC32C (u32) body
///     body   = op (u8: 1 = put, 2 = delete) keyLength (u32) key (UTF-8)
///              version (i64) valueLength (u32) value
///
/// A delete carries the version the key had and an empty value. Replaying the records in order rebuilds
/// the map. The layout is also described in docs/ON_DISK_FORMAT.md ("Metadata log").
///
/// Format versions:
/// - 1: the layout above (first version).
enum MetadataLogFormat {
    static let magic: [UInt8] = Array("MGTRMETA".utf8)
    static let formatVersion: UInt32 = 1
    static let headerBytes = 12
    static let recordHeaderBytes = 8

    static let opPut: UInt8 = 1
    static let opDelete: UInt8 = 2

    /// Fixed part of a body: op + key length + version + value length.
    static let bodyOverheadBytes = 1 + 4 + 8 + 4
    static let maxBodyBytes = bodyOverheadBytes + MetadataLimits.maxKeyBytes + MetadataLimits.maxValueBytes

    static func header() -> [UInt8] {
        var bytes = magic
        appendUInt32(formatVersion, to: &bytes)
        return bytes
    }

    /// The complete record (length, CRC, body) for `record`.
    static func encode(_ record: MetadataRecord) -> [UInt8] {
        var body: [UInt8] = []
        switch record {
        case .put(let key, let value, let version):
            body.reserveCapacity(bodyOverheadBytes + key.utf8.count + value.count)
            body.append(opPut)
            appendBytes(Array(key.utf8), to: &body)
            appendUInt64(UInt64(bitPattern: version), to: &body)
            appendBytes(value, to: &body)
        case .delete(let key, let version):
            body.append(opDelete)
            appendBytes(Array(key.utf8), to: &body)
            appendUInt64(UInt64(bitPattern: version), to: &body)
            appendBytes([], to: &body)
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(recordHeaderBytes + body.count)
        appendUInt32(UInt32(body.count), to: &bytes)
        appendUInt32(CRC32C.checksum(body), to: &bytes)
        bytes.append(contentsOf: body)
        return bytes
    }

    /// The record in `body`, or nil when the bytes are not a well-formed body.
    static func decodeBody(_ body: ArraySlice<UInt8>) -> MetadataRecord? {
        var reader = Reader(bytes: body)
        guard let op = reader.readUInt8(),
            let keyLength = reader.readUInt32(), keyLength <= MetadataLimits.maxKeyBytes,
            let keyBytes = reader.readBytes(Int(keyLength)),
            case let key = String(decoding: keyBytes, as: UTF8.self), key.utf8.elementsEqual(keyBytes),
            let versionBits = reader.readUInt64(),
            let valueLength = reader.readUInt32(), valueLength <= MetadataLimits.maxValueBytes,
            let value = reader.readBytes(Int(valueLength)),
            reader.isAtEnd
        else { return nil }
        let version = Int64(bitPattern: versionBits)
        guard version >= 0 else { return nil }
        switch op {
        case opPut:
            return .put(key: key, value: Array(value), version: version)
        case opDelete:
            return value.isEmpty ? .delete(key: key, version: version) : nil
        default:
            return nil
        }
    }

    /// What `scan` found in a log file.
    struct Scan: Equatable {
        enum Header: Equatable {
            /// The header is valid; records follow.
            case valid
            /// The file is empty, or holds only zeros or a prefix of a header: a log whose creation
            /// never completed. It holds no records and can be rewritten.
            case unwritten
        }
        var header: Header
        var records: [MetadataRecord]
        /// Offset just past the last good record: where the next record goes.
        var validEnd: Int
        /// Bytes after `validEnd` that are a torn or zero-filled last record, to be truncated.
        var tornBytes: Int { fileBytes - validEnd }
        var fileBytes: Int
    }

    /// Why a log file cannot be used as is. Each case leads to an operator-facing message.
    enum ScanError: Error, Equatable {
        case notAMetadataLog
        case unsupportedFormatVersion(UInt32)
        /// A bad record that is followed by more non-zero data: not a torn write, real corruption.
        case corruptRecord(offset: Int)
        /// A record whose CRC matches but whose body does not parse.
        case undecodableRecord(offset: Int)
    }

    /// Reads a whole log file. A bad record at the end (short, CRC mismatch, zero-filled) is a torn
    /// write from a crash: the scan stops there and reports the bytes to truncate. A bad record with
    /// non-zero bytes after it is corruption and throws, because truncating would drop good records.
    static func scan(_ bytes: [UInt8]) throws(ScanError) -> Scan {
        let header = self.header()
        if bytes.count < headerBytes || bytes[0..<headerBytes].allSatisfy({ $0 == 0 }) {
            let isPrefix = bytes.count < headerBytes && bytes.elementsEqual(header.prefix(bytes.count))
            if isPrefix || bytes.allSatisfy({ $0 == 0 }) {
                return Scan(header: .unwritten, records: [], validEnd: 0, fileBytes: bytes.count)
            }
            throw .notAMetadataLog
        }
        guard bytes[0..<magic.count].elementsEqual(magic) else { throw .notAMetadataLog }
        var headerReader = Reader(bytes: bytes[magic.count..<headerBytes])
        let version = headerReader.readUInt32()!
        guard version == formatVersion else { throw .unsupportedFormatVersion(version) }

        var records: [MetadataRecord] = []
        var offset = headerBytes
        while offset < bytes.count {
            let remaining = bytes.count - offset
            guard remaining >= recordHeaderBytes else { break }  // torn record header
            var reader = Reader(bytes: bytes[offset..<offset + recordHeaderBytes])
            let bodyLength = Int(reader.readUInt32()!)
            let storedCRC = reader.readUInt32()!
            let bodyStart = offset + recordHeaderBytes
            guard bodyLength > 0, bodyLength <= maxBodyBytes else {
                if bytes[bodyStart...].allSatisfy({ $0 == 0 }) { break }
                throw .corruptRecord(offset: offset)
            }
            let bodyEnd = bodyStart + bodyLength
            guard bodyEnd <= bytes.count else { break }  // torn body: the file ends inside the record
            let body = bytes[bodyStart..<bodyEnd]
            guard body.withUnsafeBytes({ CRC32C.checksum($0) }) == storedCRC else {
                if bytes[bodyEnd...].allSatisfy({ $0 == 0 }) { break }
                throw .corruptRecord(offset: offset)
            }
            guard let record = decodeBody(body) else { throw .undecodableRecord(offset: offset) }
            records.append(record)
            offset = bodyEnd
        }
        return Scan(header: .valid, records: records, validEnd: offset, fileBytes: bytes.count)
    }

    // MARK: - Integers

    static func appendUInt32(_ value: UInt32, to bytes: inout [UInt8]) {
        for shift in stride(from: 24, through: 0, by: -8) {
            bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(shift)))
        }
    }

    static func appendUInt64(_ value: UInt64, to bytes: inout [UInt8]) {
        for shift in stride(from: 56, through: 0, by: -8) {
            bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift)))
        }
    }

    /// A u32 length followed by the bytes.
    static func appendBytes(_ value: [UInt8], to bytes: inout [UInt8]) {
        appendUInt32(UInt32(value.count), to: &bytes)
        bytes.append(contentsOf: value)
    }

    /// Reads big-endian integers and byte runs from a slice; every read returns nil when too few bytes remain.
    struct Reader {
        var bytes: ArraySlice<UInt8>

        var isAtEnd: Bool { bytes.isEmpty }

        mutating func readUInt8() -> UInt8? {
            bytes.popFirst()
        }

        mutating func readUInt32() -> UInt32? {
            guard let run = readBytes(4) else { return nil }
            return run.reduce(0) { $0 << 8 | UInt32($1) }
        }

        mutating func readUInt64() -> UInt64? {
            guard let run = readBytes(8) else { return nil }
            return run.reduce(0) { $0 << 8 | UInt64($1) }
        }

        mutating func readBytes(_ count: Int) -> ArraySlice<UInt8>? {
            guard count >= 0, bytes.count >= count else { return nil }
            let run = bytes.prefix(count)
            bytes = bytes.dropFirst(count)
            return run
        }
    }
}
