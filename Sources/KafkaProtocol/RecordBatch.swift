import CRC32C
import NIOCore
import PayloadCompression

/// One record of a batch (`DefaultRecord`): offsets and timestamps as deltas from the batch's.
public struct KafkaRecord: Sendable, Equatable {
    public var offsetDelta: Int32
    public var timestampDelta: Int64
    public var key: ByteBuffer?
    public var value: ByteBuffer?
    public var headers: [(key: String, value: ByteBuffer?)]

    public init(offsetDelta: Int32, timestampDelta: Int64, key: ByteBuffer?, value: ByteBuffer?, headers: [(key: String, value: ByteBuffer?)] = []) {
        self.offsetDelta = offsetDelta
        self.timestampDelta = timestampDelta
        self.key = key
        self.value = value
        self.headers = headers
    }

    public static func == (lhs: KafkaRecord, rhs: KafkaRecord) -> Bool {
        lhs.offsetDelta == rhs.offsetDelta && lhs.timestampDelta == rhs.timestampDelta && lhs.key == rhs.key
            && lhs.value == rhs.value && lhs.headers.map(\.key) == rhs.headers.map(\.key)
            && lhs.headers.map(\.value) == rhs.headers.map(\.value)
    }
}

/// Kafka's record batch, magic 2 (`DefaultRecordBatch`), the only format produced since Kafka 0.11:
/// `[i64 baseOffset][i32 batchLength][i32 partitionLeaderEpoch][i8 magic=2][u32 crc32c]`
/// `[i16 attributes][i32 lastOffsetDelta][i64 baseTimestamp][i64 maxTimestamp][i64 producerId]`
/// `[i16 producerEpoch][i32 baseSequence][i32 recordCount][records]`; the CRC32C covers everything
/// from `attributes` on. Attributes: bits 0–2 compression (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd),
/// bit 3 log-append time, bit 4 transactional, bit 5 control. A pure value.
public struct KafkaRecordBatch: Sendable, Equatable {
    public var baseOffset: Int64
    public var partitionLeaderEpoch: Int32
    public var attributes: Int16
    public var lastOffsetDelta: Int32
    public var baseTimestamp: Int64
    public var maxTimestamp: Int64
    public var producerID: Int64
    public var producerEpoch: Int16
    public var baseSequence: Int32
    public var records: [KafkaRecord]

    public var compression: Int16 { attributes & 0x07 }
    public var isTransactional: Bool { attributes & 0x10 != 0 }
    public var isControl: Bool { attributes & 0x20 != 0 }

    /// Bytes in front of the records: the fixed header (61 bytes).
    public static let headerBytes = 61

    public init(
        baseOffset: Int64 = 0, attributes: Int16 = 0, baseTimestamp: Int64, producerID: Int64 = -1, producerEpoch: Int16 = -1,
        baseSequence: Int32 = -1, records: [KafkaRecord]
    ) {
        self.baseOffset = baseOffset
        partitionLeaderEpoch = -1
        self.attributes = attributes
        lastOffsetDelta = records.last?.offsetDelta ?? 0
        self.baseTimestamp = baseTimestamp
        maxTimestamp = baseTimestamp + (records.map(\.timestampDelta).max() ?? 0)
        self.producerID = producerID
        self.producerEpoch = producerEpoch
        self.baseSequence = baseSequence
        self.records = records
    }

    /// Reads every batch of a Produce request's `records`, compressed ones decompressed (at most
    /// `KafkaLimits.maxUncompressedBatchBytes` each).
    public static func readAll(_ buffer: ByteBuffer) throws(KafkaProtocolError) -> [KafkaRecordBatch] {
        var batches: [KafkaRecordBatch] = []
        for raw in try KafkaRawRecordBatch.readAll(buffer) { batches.append(try KafkaRecordBatch(raw)) }
        return batches
    }

    /// One batch, its CRC checked.
    public static func read(_ batch: ByteBuffer) throws(KafkaProtocolError) -> KafkaRecordBatch {
        try KafkaRecordBatch(try KafkaRawRecordBatch.read(batch))
    }

    /// A raw batch with its records parsed (keys, values and header values as slices of its bytes).
    public init(_ raw: KafkaRawRecordBatch) throws(KafkaProtocolError) {
        var records: [KafkaRecord] = []
        records.reserveCapacity(Int(raw.count))
        let bytes = raw.records
        func slice(_ part: UnsafeRawBufferPointer?, _ view: KafkaRecordView) -> ByteBuffer? {
            part.map { bytes.getSlice(at: bytes.readerIndex + view.offset(of: $0), length: $0.count)! }
        }
        try raw.forEachRecord { view in
            var headers: [(key: String, value: ByteBuffer?)] = []
            view.forEachHeader { key, value in headers.append((String(decoding: key, as: UTF8.self), slice(value, view))) }
            records.append(KafkaRecord(
                offsetDelta: view.offsetDelta, timestampDelta: view.timestampDelta, key: slice(view.key, view),
                value: slice(view.value, view), headers: headers))
        }
        self.init(
            baseOffset: raw.baseOffset, attributes: raw.attributes, baseTimestamp: raw.baseTimestamp, producerID: raw.producerID,
            producerEpoch: raw.producerEpoch, baseSequence: raw.baseSequence, records: records)
        partitionLeaderEpoch = raw.partitionLeaderEpoch
        lastOffsetDelta = raw.lastOffsetDelta
        maxTimestamp = raw.maxTimestamp
    }

    /// The batch as a Fetch response carries it (uncompressed), with its CRC32C computed.
    public func write(into buffer: inout ByteBuffer) {
        let start = buffer.writerIndex
        buffer.writeInteger(baseOffset)
        buffer.writeInteger(Int32(0))  // length, set below
        buffer.writeInteger(partitionLeaderEpoch)
        buffer.writeInteger(Int8(2))
        let crcAt = buffer.writerIndex
        buffer.writeInteger(UInt32(0))
        let checked = buffer.writerIndex
        buffer.writeInteger(attributes & ~0x07)
        buffer.writeInteger(lastOffsetDelta)
        buffer.writeInteger(baseTimestamp)
        buffer.writeInteger(maxTimestamp)
        buffer.writeInteger(producerID)
        buffer.writeInteger(producerEpoch)
        buffer.writeInteger(baseSequence)
        buffer.writeInteger(Int32(records.count))
        for record in records {
            // The record's size first (a varint in front of it), so it is written in place.
            func nullableSize(_ count: Int?) -> Int {
                guard let count else { return 1 }
                return ByteBuffer.kafkaVarintSize(Int32(count)) + count
            }
            var size = 1 + ByteBuffer.kafkaVarlongSize(record.timestampDelta) + ByteBuffer.kafkaVarintSize(record.offsetDelta)
                + nullableSize(record.key?.readableBytes) + nullableSize(record.value?.readableBytes)
                + ByteBuffer.kafkaVarintSize(Int32(record.headers.count))
            for header in record.headers { size += nullableSize(header.key.utf8.count) + nullableSize(header.value?.readableBytes) }
            buffer.writeKafkaVarint(Int32(size))
            buffer.writeInteger(Int8(0))
            buffer.writeKafkaVarlong(record.timestampDelta)
            buffer.writeKafkaVarint(record.offsetDelta)
            Self.writeNullableBytes(record.key, into: &buffer)
            Self.writeNullableBytes(record.value, into: &buffer)
            buffer.writeKafkaVarint(Int32(record.headers.count))
            for header in record.headers {
                buffer.writeKafkaVarint(Int32(header.key.utf8.count))
                buffer.writeString(header.key)
                Self.writeNullableBytes(header.value, into: &buffer)
            }
        }
        buffer.setInteger(Int32(buffer.writerIndex - start - 12), at: start + 8)
        var crc = CRC32C()
        let offset = checked - buffer.readerIndex
        buffer.withUnsafeReadableBytes { bytes in crc.update(UnsafeRawBufferPointer(rebasing: bytes[offset...])) }
        buffer.setInteger(crc.value, at: crcAt)
    }

    private static func writeNullableBytes(_ bytes: ByteBuffer?, into buffer: inout ByteBuffer) {
        guard let bytes else {
            buffer.writeKafkaVarint(-1)
            return
        }
        buffer.writeKafkaVarint(Int32(bytes.readableBytes))
        buffer.writeImmutableBuffer(bytes)
    }
}

/// A batch as the produce path takes it: the fixed header read, the CRC checked, the records
/// decompressed but not parsed. `forEachRecord` walks them once, checking every length, so a
/// batch is turned into its stored form without a `KafkaRecord` per record. A value.
public struct KafkaRawRecordBatch: Sendable {
    public var baseOffset: Int64
    public var partitionLeaderEpoch: Int32
    public var attributes: Int16
    public var lastOffsetDelta: Int32
    public var baseTimestamp: Int64
    public var maxTimestamp: Int64
    public var producerID: Int64
    public var producerEpoch: Int16
    public var baseSequence: Int32
    /// The record count the header gives (the walk checks that exactly this many are there).
    public var count: Int32
    /// The records' bytes, decompressed.
    public var records: ByteBuffer

    public var compression: Int16 { attributes & 0x07 }
    public var isTransactional: Bool { attributes & 0x10 != 0 }
    public var isControl: Bool { attributes & 0x20 != 0 }

    /// Every batch of a Produce request's `records`, each CRC-checked and decompressed.
    public static func readAll(_ buffer: ByteBuffer) throws(KafkaProtocolError) -> [KafkaRawRecordBatch] {
        var buffer = buffer
        var batches: [KafkaRawRecordBatch] = []
        while buffer.readableBytes > 0 {
            guard buffer.readableBytes >= 12, let length = buffer.getInteger(at: buffer.readerIndex + 8, as: Int32.self),
                  length >= Int32(KafkaRecordBatch.headerBytes - 12), Int(length) <= buffer.readableBytes - 12,
                  let slice = buffer.readSlice(length: 12 + Int(length))
            else { throw KafkaProtocolError("record batch runs past the request") }
            batches.append(try read(slice))
        }
        return batches
    }

    /// One batch, its CRC checked, its records decompressed (at most
    /// `KafkaLimits.maxUncompressedBatchBytes`).
    public static func read(_ batch: ByteBuffer) throws(KafkaProtocolError) -> KafkaRawRecordBatch {
        var reader = KafkaReader(batch)
        let baseOffset = try reader.int64()
        _ = try reader.int32()  // batch length (checked by the caller)
        let leaderEpoch = try reader.int32()
        let magic = try reader.int8()
        guard magic == 2 else { throw KafkaProtocolError("record batch magic \(magic): only v2 (Kafka 0.11+) batches are accepted") }
        let crc = UInt32(bitPattern: try reader.int32())
        var check = CRC32C()
        reader.buffer.withUnsafeReadableBytes { check.update($0) }
        guard check.value == crc else { throw KafkaProtocolError("record batch CRC32C does not match its bytes") }
        let attributes = try reader.int16()
        let lastOffsetDelta = try reader.int32()
        let baseTimestamp = try reader.int64()
        let maxTimestamp = try reader.int64()
        let producerID = try reader.int64()
        let producerEpoch = try reader.int16()
        let baseSequence = try reader.int32()
        let count = try reader.int32()
        guard let codec = KafkaCompression(rawValue: attributes & 0x07) else {
            throw KafkaProtocolError("compression codec \(attributes & 0x07) does not exist (0-4 do)")
        }
        var records = reader.buffer
        if codec != .none {
            do {
                records = try codec.decompress(records, maxSizeBytes: KafkaLimits.maxUncompressedBatchBytes, allocator: ByteBufferAllocator())
            } catch {
                throw KafkaProtocolError("\(codec) records do not decompress: \(error)")
            }
        }
        // Every record takes at least 7 bytes: a count past that is refused before anything is made.
        guard count >= 0, Int(count) <= records.readableBytes / 7 + 1 else {
            throw KafkaProtocolError("record count \(count) runs past the batch")
        }
        return KafkaRawRecordBatch(
            baseOffset: baseOffset, partitionLeaderEpoch: leaderEpoch, attributes: attributes, lastOffsetDelta: lastOffsetDelta,
            baseTimestamp: baseTimestamp, maxTimestamp: maxTimestamp, producerID: producerID, producerEpoch: producerEpoch,
            baseSequence: baseSequence, count: count, records: records)
    }

    /// Walks the records in order, each checked (lengths inside the batch, nothing after its
    /// headers), and hands each to `body` as a view into the bytes, valid during the call. Throws
    /// at the first malformed record, or when the records are not exactly `count`.
    public func forEachRecord(_ body: (KafkaRecordView) throws(KafkaProtocolError) -> Void) throws(KafkaProtocolError) {
        let count = Int(count)
        // `withUnsafeReadableBytes` rethrows untyped: the walk's error comes back as a value.
        let failure: KafkaProtocolError? = records.withUnsafeReadableBytes { bytes in
            do throws(KafkaProtocolError) {
                try Self.walk(bytes, count: count, body)
                return nil
            } catch {
                return error
            }
        }
        if let failure { throw failure }
    }

    private static func walk(
        _ bytes: UnsafeRawBufferPointer, count: Int, _ body: (KafkaRecordView) throws(KafkaProtocolError) -> Void
    ) throws(KafkaProtocolError) {
        var cursor = KafkaRawCursor(bytes: bytes, index: 0)
        for _ in 0..<count {
            let length = try cursor.varint()
            guard length >= 0, Int(length) <= bytes.count - cursor.index else {
                throw KafkaProtocolError("record of \(length) bytes runs past the batch")
            }
            var record = KafkaRawCursor(bytes: UnsafeRawBufferPointer(rebasing: bytes[cursor.index..<cursor.index + Int(length)]), index: 0)
            cursor.index += Int(length)
            try record.skip(1)  // attributes (unused)
            let timestampDelta = try record.varlong()
            let offsetDelta = try record.varint()
            let key = try record.nullableBytes()
            let value = try record.nullableBytes()
            let headerCount = try record.varint()
            guard headerCount >= 0, Int(headerCount) <= record.remaining else {
                throw KafkaProtocolError("\(headerCount) headers run past the record")
            }
            let headersStart = record.index
            for _ in 0..<headerCount {
                guard try record.nullableBytes() != nil else { throw KafkaProtocolError("a record header has a null key") }
                _ = try record.nullableBytes()
            }
            guard record.remaining == 0 else { throw KafkaProtocolError("record has \(record.remaining) bytes after its headers") }
            try body(KafkaRecordView(
                base: bytes.baseAddress, timestampDelta: timestampDelta, offsetDelta: offsetDelta, key: key, value: value,
                headerCount: Int(headerCount), headers: UnsafeRawBufferPointer(rebasing: record.bytes[headersStart...])))
        }
        guard cursor.index == bytes.count else {
            throw KafkaProtocolError("record batch has \(bytes.count - cursor.index) bytes after its \(count) records")
        }
    }
}

/// One record of a `KafkaRawRecordBatch` during its walk: pointers into the batch's bytes, valid
/// only inside the walk's call.
public struct KafkaRecordView {
    let base: UnsafeRawPointer?
    public let timestampDelta: Int64
    public let offsetDelta: Int32
    /// nil for a null key / value.
    public let key: UnsafeRawBufferPointer?
    public let value: UnsafeRawBufferPointer?
    public let headerCount: Int
    /// The headers' bytes, already checked by the walk.
    let headers: UnsafeRawBufferPointer

    /// Each header's key and value (nil: a null value), in order.
    public func forEachHeader(_ body: (_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer?) -> Void) {
        var cursor = KafkaRawCursor(bytes: headers, index: 0)
        for _ in 0..<headerCount {
            // Checked by the walk: these cannot fail.
            guard let key = try? cursor.nullableBytes(), let value = try? cursor.nullableBytes() else { return }
            body(key, value)
        }
    }

    /// Where `part` (a key, value or header of this record) starts in the batch's records.
    public func offset(of part: UnsafeRawBufferPointer) -> Int {
        guard let base, let start = part.baseAddress else { return 0 }
        return base.distance(to: start)
    }
}

/// Reads Kafka's varints and byte strings from raw bytes, every read bounds-checked.
struct KafkaRawCursor {
    let bytes: UnsafeRawBufferPointer
    var index: Int

    var remaining: Int { bytes.count - index }

    mutating func skip(_ count: Int) throws(KafkaProtocolError) {
        guard count <= remaining else { throw KafkaProtocolError("record ends early") }
        index += count
    }

    mutating func varint() throws(KafkaProtocolError) -> Int32 {
        var raw: UInt32 = 0
        var shift: UInt32 = 0
        while index < bytes.count {
            let byte = bytes[index]
            index += 1
            raw |= UInt32(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return Int32(bitPattern: (raw >> 1) ^ (0 &- (raw & 1))) }
            shift += 7
            if shift >= 35 { throw KafkaProtocolError("varint longer than 5 bytes") }
        }
        throw KafkaProtocolError("record ends inside a varint")
    }

    mutating func varlong() throws(KafkaProtocolError) -> Int64 {
        var raw: UInt64 = 0
        var shift: UInt64 = 0
        while index < bytes.count {
            let byte = bytes[index]
            index += 1
            raw |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return Int64(bitPattern: (raw >> 1) ^ (0 &- (raw & 1))) }
            shift += 7
            if shift >= 70 { throw KafkaProtocolError("varlong longer than 10 bytes") }
        }
        throw KafkaProtocolError("record ends inside a varlong")
    }

    /// A varint length, then that many bytes; a negative length is null.
    mutating func nullableBytes() throws(KafkaProtocolError) -> UnsafeRawBufferPointer? {
        let length = try varint()
        if length < 0 { return nil }
        guard Int(length) <= remaining else { throw KafkaProtocolError("\(length) bytes run past the record") }
        let part = UnsafeRawBufferPointer(rebasing: bytes[index..<index + Int(length)])
        index += Int(length)
        return part
    }
}
