import BrokerCore
import CRC32C
import Foundation
import KafkaProtocol
import ManagedLedger
import NIOCore
import PayloadCompression
import PulsarProtocol

/// One log for both protocols: a Kafka record batch is stored as one Pulsar batch entry, and any
/// stored entry reads back as one Kafka record batch.
///
/// Stored (`Entry.body`, as the Pulsar endpoint stores a SEND): `[u32 crc32c][u32 metadataSize]`
/// `[MessageMetadata][payload]`, the payload `[u32 size][SingleMessageMetadata][value]` per record,
/// compressed as a whole with Pulsar's framing of the producer's codec. Record → message: key →
/// `partition_key` (base64 with `partition_key_b64_encoded` when it is not UTF-8), headers →
/// `properties`, timestamp → `event_time`, a null value → `null_value`. Back to Kafka: the same
/// fields the other way, the timestamp being the event time or else the publish time; a batch of
/// n messages takes n offsets from the entry's first. A pure value.
enum KafkaEntryCodec {
    /// The Kafka batch as an encoded entry (`Entry.write`) with its attributes.
    static func entry(
        from batch: KafkaRecordBatch, producerName: String, publishTimeMs: Int64, allocator: ByteBufferAllocator
    ) -> (encoded: ByteBuffer, attributes: EntryAttributes) {
        let codec = KafkaCompression(rawValue: batch.compression) ?? .none
        let firstKey = batch.records.first?.key
        let sharedKey = firstKey != nil && batch.records.allSatisfy { $0.key == firstKey }
        let attributes = EntryAttributes(
            numMessages: Int32(batch.records.count), publishTimeMs: publishTimeMs,
            key: sharedKey ? keyString(firstKey!).map { Array($0.string.utf8) } ?? [] : [])
        var metadata = ByteBuffer()
        var payload: ByteBuffer?
        var uncompressedSize = 0
        if codec != .none {
            var plain = allocator.buffer(capacity: batch.records.reduce(0) { $0 + 32 + ($1.value?.readableBytes ?? 0) })
            writeMessages(batch, into: &plain)
            uncompressedSize = plain.readableBytes
            payload = PayloadCodec.compress(plain, type: codec.pulsarType, allocator: allocator)
        }
        writeMetadata(
            into: &metadata, producerName: producerName, sequenceID: max(Int64(batch.baseSequence), 0), publishTimeMs: publishTimeMs,
            compression: codec.pulsarType, uncompressedSize: uncompressedSize, count: batch.records.count)
        let estimate = payload?.readableBytes ?? batch.records.reduce(0) { $0 + 24 + ($1.value?.readableBytes ?? 0) + ($1.key?.readableBytes ?? 0) }
        var buffer = allocator.buffer(capacity: Entry.encodedLength(attributes: attributes, bodyLength: 8 + metadata.readableBytes + estimate))
        Entry.write(attributes: attributes, into: &buffer) { body in
            let crcAt = body.writerIndex
            body.writeInteger(UInt32(0))
            let checked = body.writerIndex
            body.writeInteger(UInt32(metadata.readableBytes))
            body.writeBuffer(&metadata)
            if var payload {
                body.writeBuffer(&payload)
            } else {
                writeMessages(batch, into: &body)
            }
            var crc = CRC32C()
            let from = checked - body.readerIndex
            body.withUnsafeReadableBytes { crc.update(UnsafeRawBufferPointer(rebasing: $0[from...])) }
            body.setInteger(crc.value, at: crcAt)
        }
        return (buffer, attributes)
    }

    /// A Kafka key as a Pulsar partition key: itself when UTF-8, else base64 (flagged).
    static func keyString(_ key: ByteBuffer) -> (string: String, base64: Bool)? {
        let bytes = key.readableBytesView
        if let string = String(validating: bytes, as: UTF8.self) { return (string, false) }
        return (Data(bytes).base64EncodedString(), true)
    }

    private static func writeMetadata(
        into buffer: inout ByteBuffer, producerName: String, sequenceID: Int64, publishTimeMs: Int64,
        compression: CompressionType, uncompressedSize: Int, count: Int
    ) {
        writeString(field: 1, producerName, into: &buffer)
        writeVarintField(2, UInt64(sequenceID), into: &buffer)
        writeVarintField(3, UInt64(max(publishTimeMs, 0)), into: &buffer)
        if compression != .none {
            writeVarintField(8, UInt64(compression.rawValue), into: &buffer)
            writeVarintField(9, UInt64(uncompressedSize), into: &buffer)
        }
        writeVarintField(11, UInt64(count), into: &buffer)
    }

    /// Each record as `[u32 size][SingleMessageMetadata][value]`.
    private static func writeMessages(_ batch: KafkaRecordBatch, into buffer: inout ByteBuffer) {
        for record in batch.records {
            let sizeAt = buffer.writerIndex
            buffer.writeInteger(UInt32(0))
            let start = buffer.writerIndex
            for header in record.headers {
                // KeyValue { key = 1; value = 2 } inside properties = 1.
                let keyLength = header.key.utf8.count
                let valueLength = header.value?.readableBytes ?? 0
                let inner = 1 + ProtobufWire.varintSize(UInt64(keyLength)) + keyLength + 1 + ProtobufWire.varintSize(UInt64(valueLength)) + valueLength
                buffer.writeInteger(ProtobufWire.tag(1, wireType: ProtobufWire.lengthDelimited))
                ProtobufWire.writeVarint(UInt64(inner), into: &buffer)
                writeString(field: 1, header.key, into: &buffer)
                buffer.writeInteger(ProtobufWire.tag(2, wireType: ProtobufWire.lengthDelimited))
                ProtobufWire.writeVarint(UInt64(valueLength), into: &buffer)
                if let value = header.value { buffer.writeImmutableBuffer(value) }
            }
            var base64 = false
            if let key = record.key, let (string, encoded) = keyString(key) {
                writeString(field: 2, string, into: &buffer)
                base64 = encoded
            }
            writeVarintField(3, UInt64(record.value?.readableBytes ?? 0), into: &buffer)
            let timestamp = batch.baseTimestamp + record.timestampDelta
            if timestamp > 0 { writeVarintField(5, UInt64(timestamp), into: &buffer) }
            if base64 { writeVarintField(6, 1, into: &buffer) }
            if record.value == nil { writeVarintField(9, 1, into: &buffer) }
            buffer.setInteger(UInt32(buffer.writerIndex - start), at: sizeAt)
            if let value = record.value { buffer.writeImmutableBuffer(value) }
        }
    }

    private static func writeVarintField(_ field: Int, _ value: UInt64, into buffer: inout ByteBuffer) {
        if field < 16 {
            buffer.writeInteger(ProtobufWire.tag(field, wireType: ProtobufWire.varint))
        } else {
            ProtobufWire.writeVarint(UInt64(field << 3), into: &buffer)
        }
        ProtobufWire.writeVarint(value, into: &buffer)
    }

    private static func writeString(field: Int, _ value: String, into buffer: inout ByteBuffer) {
        buffer.writeInteger(ProtobufWire.tag(field, wireType: ProtobufWire.lengthDelimited))
        ProtobufWire.writeVarint(UInt64(value.utf8.count), into: &buffer)
        buffer.writeString(value)
    }

    // MARK: entry → Kafka

    /// The most bytes a stored compressed batch is expanded to for a Fetch.
    static let maxUncompressedBytes = 64 * 1024 * 1024

    /// A stored entry as one Kafka batch at `baseOffset`, with exactly as many records as the entry
    /// holds messages (offsets stay contiguous): an entry that cannot be decoded reads as that
    /// many records without key or value.
    static func batch(from entry: Entry, baseOffset: Int64) -> KafkaRecordBatch {
        let count = Int(max(entry.attributes.numMessages, 1))
        guard let records = try? records(of: entry), !records.isEmpty else {
            let placeholders = (0..<count).map { KafkaRecord(offsetDelta: Int32($0), timestampDelta: 0, key: nil, value: nil) }
            return KafkaRecordBatch(baseOffset: baseOffset, baseTimestamp: entry.attributes.publishTimeMs, records: placeholders)
        }
        let base = records[0].timestamp
        let kafkaRecords = records.enumerated().map { index, record in
            KafkaRecord(
                offsetDelta: Int32(index), timestampDelta: record.timestamp - base, key: record.key, value: record.value,
                headers: record.headers)
        }
        return KafkaRecordBatch(baseOffset: baseOffset, baseTimestamp: base, records: kafkaRecords)
    }

    struct Message {
        var timestamp: Int64
        var key: ByteBuffer?
        var value: ByteBuffer?
        var headers: [(key: String, value: ByteBuffer?)]
    }

    struct DecodeError: Error {}

    /// The messages of a stored entry.
    static func records(of entry: Entry) throws -> [Message] {
        var body = entry.body
        guard body.readInteger(as: UInt32.self) != nil, let metadataSize = body.readInteger(as: UInt32.self),
              Int(metadataSize) <= body.readableBytes, let metadataBytes = body.readSlice(length: Int(metadataSize))
        else { throw DecodeError() }
        let metadata = try Pulsar_Proto_MessageMetadata(serializedBytes: Array(buffer: metadataBytes))
        var payload = body
        if metadata.compression.rawValue != 0 {
            guard let type = CompressionType(rawValue: metadata.compression.rawValue) else { throw DecodeError() }
            payload = try PayloadCodec.decompress(
                payload, type: type, uncompressedSize: Int(metadata.uncompressedSize), maxSizeBytes: maxUncompressedBytes,
                allocator: ByteBufferAllocator())
        }
        let publishTime = Int64(clamping: metadata.publishTime)
        func headers(_ properties: [Pulsar_Proto_KeyValue]) -> [(key: String, value: ByteBuffer?)] {
            properties.map { ($0.key, ByteBuffer(string: $0.value)) }
        }
        func key(_ string: String, present: Bool, base64: Bool) -> ByteBuffer? {
            guard present else { return nil }
            if base64, let data = Data(base64Encoded: string) { return ByteBuffer(bytes: data) }
            return ByteBuffer(string: string)
        }
        guard metadata.hasNumMessagesInBatch else {
            return [Message(
                timestamp: metadata.eventTime > 0 ? Int64(clamping: metadata.eventTime) : publishTime,
                key: key(metadata.partitionKey, present: metadata.hasPartitionKey, base64: metadata.partitionKeyB64Encoded),
                value: metadata.nullValue ? nil : payload, headers: headers(metadata.properties))]
        }
        var messages: [Message] = []
        let count = Int(metadata.numMessagesInBatch)
        guard count >= 0, count <= payload.readableBytes / 4 + 1 else { throw DecodeError() }
        messages.reserveCapacity(count)
        for _ in 0..<count {
            guard let size = payload.readInteger(as: UInt32.self), Int(size) <= payload.readableBytes,
                  let singleBytes = payload.readSlice(length: Int(size))
            else { throw DecodeError() }
            let single = try Pulsar_Proto_SingleMessageMetadata(serializedBytes: Array(buffer: singleBytes))
            guard single.payloadSize >= 0, let value = payload.readSlice(length: Int(single.payloadSize)) else { throw DecodeError() }
            messages.append(Message(
                timestamp: single.eventTime > 0 ? Int64(clamping: single.eventTime) : publishTime,
                key: key(single.partitionKey, present: single.hasPartitionKey, base64: single.partitionKeyB64Encoded),
                value: single.nullValue ? nil : value, headers: headers(single.properties)))
        }
        return messages
    }
}
