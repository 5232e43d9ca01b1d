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
        var buffer = buffer
        var batches: [KafkaRecordBatch] = []
        while buffer.readableBytes > 0 {
            guard buffer.readableBytes >= 12, let length = buffer.getInteger(at: buffer.readerIndex + 8, as: Int32.self),
                  length >= Int32(headerBytes - 12), Int(length) <= buffer.readableBytes - 12,
                  let slice = buffer.readSlice(length: 12 + Int(length))
            else { throw KafkaProtocolError("record batch runs past the request") }
            batches.append(try read(slice))
        }
        return batches
    }

    /// One batch, its CRC checked.
    public static func read(_ batch: ByteBuffer) throws(KafkaProtocolError) -> KafkaRecordBatch {
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
        if codec != .none {
            do {
                reader = KafkaReader(try codec.decompress(
                    reader.buffer, maxSizeBytes: KafkaLimits.maxUncompressedBatchBytes, allocator: ByteBufferAllocator()))
            } catch {
                throw KafkaProtocolError("\(codec) records do not decompress: \(error)")
            }
        }
        // Every record takes at least 7 bytes: a count past that is refused before allocating.
        guard count >= 0, Int(count) <= reader.remaining / 7 + 1 else { throw KafkaProtocolError("record count \(count) runs past the batch") }
        var records: [KafkaRecord] = []
        records.reserveCapacity(Int(count))
        for _ in 0..<count { records.append(try readRecord(&reader)) }
        guard reader.remaining == 0 else { throw KafkaProtocolError("record batch has \(reader.remaining) bytes after its records") }
        var result = KafkaRecordBatch(
            baseOffset: baseOffset, attributes: attributes, baseTimestamp: baseTimestamp, producerID: producerID,
            producerEpoch: producerEpoch, baseSequence: baseSequence, records: records)
        result.partitionLeaderEpoch = leaderEpoch
        result.lastOffsetDelta = lastOffsetDelta
        result.maxTimestamp = maxTimestamp
        return result
    }

    private static func readRecord(_ reader: inout KafkaReader) throws(KafkaProtocolError) -> KafkaRecord {
        let length = try reader.varint()
        guard length >= 0, Int(length) <= reader.remaining else { throw KafkaProtocolError("record of \(length) bytes runs past the batch") }
        var record = KafkaReader(try reader.bytes(count: Int(length)))
        _ = try record.int8()  // attributes (unused)
        let timestampDelta = try record.varlong()
        let offsetDelta = try record.varint()
        let key = try nullableBytes(&record)
        let value = try nullableBytes(&record)
        let headerCount = try record.varint()
        guard headerCount >= 0, Int(headerCount) <= record.remaining else { throw KafkaProtocolError("\(headerCount) headers run past the record") }
        var headers: [(key: String, value: ByteBuffer?)] = []
        for _ in 0..<headerCount {
            guard var keyBytes = try nullableBytes(&record), let key = keyBytes.readString(length: keyBytes.readableBytes) else {
                throw KafkaProtocolError("a record header has a null key")
            }
            headers.append((key, try nullableBytes(&record)))
        }
        guard record.remaining == 0 else { throw KafkaProtocolError("record has \(record.remaining) bytes after its headers") }
        return KafkaRecord(offsetDelta: offsetDelta, timestampDelta: timestampDelta, key: key, value: value, headers: headers)
    }

    private static func nullableBytes(_ reader: inout KafkaReader) throws(KafkaProtocolError) -> ByteBuffer? {
        let length = try reader.varint()
        if length < 0 { return nil }
        return try reader.bytes(count: Int(length))
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
            var body = ByteBuffer()
            body.writeInteger(Int8(0))
            body.writeKafkaVarlong(record.timestampDelta)
            body.writeKafkaVarint(record.offsetDelta)
            Self.writeNullableBytes(record.key, into: &body)
            Self.writeNullableBytes(record.value, into: &body)
            body.writeKafkaVarint(Int32(record.headers.count))
            for header in record.headers {
                Self.writeNullableBytes(ByteBuffer(string: header.key), into: &body)
                Self.writeNullableBytes(header.value, into: &body)
            }
            buffer.writeKafkaVarint(Int32(body.readableBytes))
            buffer.writeBuffer(&body)
        }
        buffer.setInteger(Int32(buffer.writerIndex - start - 12), at: start + 8)
        var crc = CRC32C()
        let offset = checked - buffer.readerIndex
        buffer.withUnsafeReadableBytes { bytes in crc.update(UnsafeRawBufferPointer(rebasing: bytes[offset...])) }
        buffer.setInteger(crc.value, at: crcAt)
    }

    private static func writeNullableBytes(_ bytes: ByteBuffer?, into buffer: inout ByteBuffer) {
        guard var bytes else {
            buffer.writeKafkaVarint(-1)
            return
        }
        buffer.writeKafkaVarint(Int32(bytes.readableBytes))
        buffer.writeBuffer(&bytes)
    }
}
