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
    /// The Kafka batch as an encoded entry (`Entry.write`) with its attributes, its records walked
    /// once straight into the Pulsar batch's payload (no value per record is made). Throws for a
    /// malformed record: nothing of the batch is stored then.
    static func entry(
        from batch: KafkaRawRecordBatch, producerName: String, publishTimeMs: Int64, transaction: TransactionID? = nil,
        allocator: ByteBufferAllocator
    ) throws(KafkaProtocolError) -> (encoded: ByteBuffer, attributes: EntryAttributes) {
        let codec = KafkaCompression(rawValue: batch.compression) ?? .none
        // The first walk checks every record and finds the key they share (the entry's routing key,
        // written in front of the body); the second, over the same checked bytes, writes them.
        var attributes = EntryAttributes(
            numMessages: batch.count, publishTimeMs: publishTimeMs, key: try sharedKey(of: batch) ?? [])
        attributes.transactionID = transaction
        // Pulsar's framing of a record costs at most ~24 bytes more than Kafka's.
        let plainEstimate = batch.records.readableBytes + Int(batch.count) * 24
        var payload: ByteBuffer?
        var uncompressedSize = 0
        if codec != .none {
            var plain = allocator.buffer(capacity: plainEstimate)
            try? batch.forEachRecord { writeMessage($0, baseTimestamp: batch.baseTimestamp, into: &plain) }
            uncompressedSize = plain.readableBytes
            payload = PayloadCodec.compress(plain, type: codec.pulsarType, allocator: allocator)
        }
        var buffer = allocator.buffer(capacity: Entry.encodedLength(
            attributes: attributes, bodyLength: 8 + 40 + producerName.utf8.count + (payload?.readableBytes ?? plainEstimate)))
        Entry.write(attributes: attributes, into: &buffer) { body in
            let crcAt = body.writerIndex
            body.writeInteger(UInt32(0))
            let checked = body.writerIndex
            body.writeInteger(UInt32(0))  // the metadata's size, set below
            let metadataStart = body.writerIndex
            writeMetadata(
                into: &body, producerName: producerName, sequenceID: max(Int64(batch.baseSequence), 0), publishTimeMs: publishTimeMs,
                compression: codec.pulsarType, uncompressedSize: uncompressedSize, count: Int(batch.count))
            body.setInteger(UInt32(body.writerIndex - metadataStart), at: checked)
            if var payload {
                body.writeBuffer(&payload)
            } else {
                try? batch.forEachRecord { writeMessage($0, baseTimestamp: batch.baseTimestamp, into: &body) }
            }
            var crc = CRC32C()
            let from = checked - body.readerIndex
            body.withUnsafeReadableBytes { crc.update(UnsafeRawBufferPointer(rebasing: $0[from...])) }
            body.setInteger(crc.value, at: crcAt)
        }
        return (buffer, attributes)
    }

    /// Checks every record; the key all of them have (as a Pulsar partition key), or nil when one
    /// has none or another.
    private static func sharedKey(of batch: KafkaRawRecordBatch) throws(KafkaProtocolError) -> [UInt8]? {
        var first: UnsafeRawBufferPointer?
        var shared = true
        var key: [UInt8]?
        try batch.forEachRecord { record in
            guard shared, let recordKey = record.key else {
                shared = false
                return
            }
            if let first {
                shared = first.count == recordKey.count
                    && (recordKey.count == 0 || memcmp(first.baseAddress!, recordKey.baseAddress!, recordKey.count) == 0)
            } else {
                first = recordKey
                key = Array(keyString(recordKey).string.utf8)
            }
        }
        return shared ? key : nil
    }

    /// A Kafka key as a Pulsar partition key: itself when UTF-8, else base64 (flagged).
    static func keyString(_ key: UnsafeRawBufferPointer) -> (string: String, base64: Bool) {
        if let string = String(validating: key, as: UTF8.self) { return (string, false) }
        return (Data(key).base64EncodedString(), true)
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

    /// One record as `[u32 size][SingleMessageMetadata][value]`: the usual record (no headers, an
    /// ASCII key or none) in one reservation with raw stores, any other field by field.
    private static func writeMessage(_ record: KafkaRecordView, baseTimestamp: Int64, into buffer: inout ByteBuffer) {
        guard record.headerCount == 0, record.key.map(isASCII) ?? true else {
            return writeMessageFieldByField(record, baseTimestamp: baseTimestamp, into: &buffer)
        }
        let key = record.key
        let value = record.value
        let timestamp = baseTimestamp + record.timestampDelta
        // size + key (tag, varint, bytes) + payload_size + event_time + null_value + value
        let bound = 4 + (key.map { 6 + $0.count } ?? 0) + 11 + 11 + 2 + (value?.count ?? 0)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { out in
            var at = 4
            func put(_ byte: UInt8) {
                out[at] = byte
                at += 1
            }
            func putVarint(_ value: UInt64) {
                var value = value
                while value >= 0x80 {
                    put(UInt8(truncatingIfNeeded: value) | 0x80)
                    value >>= 7
                }
                put(UInt8(value))
            }
            func putBytes(_ bytes: UnsafeRawBufferPointer) {
                guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
                (out.baseAddress! + at).copyMemory(from: base, byteCount: bytes.count)
                at += bytes.count
            }
            if let key {
                put(ProtobufWire.tag(2, wireType: ProtobufWire.lengthDelimited))  // partition_key
                putVarint(UInt64(key.count))
                putBytes(key)
            }
            put(ProtobufWire.tag(3, wireType: ProtobufWire.varint))  // payload_size
            putVarint(UInt64(value?.count ?? 0))
            if timestamp > 0 {
                put(ProtobufWire.tag(5, wireType: ProtobufWire.varint))  // event_time
                putVarint(UInt64(timestamp))
            }
            if value == nil {
                put(ProtobufWire.tag(9, wireType: ProtobufWire.varint))  // null_value
                put(1)
            }
            out.storeBytes(of: UInt32(at - 4).bigEndian, toByteOffset: 0, as: UInt32.self)
            if let value { putBytes(value) }
            return at
        }
    }

    private static func writeMessageFieldByField(_ record: KafkaRecordView, baseTimestamp: Int64, into buffer: inout ByteBuffer) {
        let sizeAt = buffer.writerIndex
        buffer.writeInteger(UInt32(0))
        let start = buffer.writerIndex
        record.forEachHeader { key, value in
            // KeyValue { key = 1; value = 2 } inside properties = 1 (a key that is not UTF-8 is repaired).
            let keyString = isASCII(key) ? nil : String(decoding: key, as: UTF8.self)
            let keyLength = keyString?.utf8.count ?? key.count
            let valueLength = value?.count ?? 0
            let inner = 1 + ProtobufWire.varintSize(UInt64(keyLength)) + keyLength + 1 + ProtobufWire.varintSize(UInt64(valueLength)) + valueLength
            buffer.writeInteger(ProtobufWire.tag(1, wireType: ProtobufWire.lengthDelimited))
            ProtobufWire.writeVarint(UInt64(inner), into: &buffer)
            buffer.writeInteger(ProtobufWire.tag(1, wireType: ProtobufWire.lengthDelimited))
            ProtobufWire.writeVarint(UInt64(keyLength), into: &buffer)
            if let keyString { buffer.writeString(keyString) } else { buffer.writeBytes(key) }
            buffer.writeInteger(ProtobufWire.tag(2, wireType: ProtobufWire.lengthDelimited))
            ProtobufWire.writeVarint(UInt64(valueLength), into: &buffer)
            if let value { buffer.writeBytes(value) }
        }
        var base64 = false
        if let key = record.key {
            if isASCII(key) {
                buffer.writeInteger(ProtobufWire.tag(2, wireType: ProtobufWire.lengthDelimited))
                ProtobufWire.writeVarint(UInt64(key.count), into: &buffer)
                buffer.writeBytes(key)
            } else {
                let (string, encoded) = keyString(key)
                writeString(field: 2, string, into: &buffer)
                base64 = encoded
            }
        }
        writeVarintField(3, UInt64(record.value?.count ?? 0), into: &buffer)
        let timestamp = baseTimestamp + record.timestampDelta
        if timestamp > 0 { writeVarintField(5, UInt64(timestamp), into: &buffer) }
        if base64 { writeVarintField(6, 1, into: &buffer) }
        if record.value == nil { writeVarintField(9, 1, into: &buffer) }
        buffer.setInteger(UInt32(buffer.writerIndex - start), at: sizeAt)
        if let value = record.value { buffer.writeBytes(value) }
    }

    /// True when every byte is ASCII (then the bytes are their own UTF-8 string).
    private static func isASCII(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var index = 0
        let count = bytes.count
        while index + 8 <= count {
            if bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self) & 0x8080_8080_8080_8080 != 0 { return false }
            index += 8
        }
        while index < count {
            if bytes[index] & 0x80 != 0 { return false }
            index += 1
        }
        return true
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

    /// The producer name and sequence id of a stored entry's Pulsar metadata, or nil when it has none.
    static func producer(of entry: Entry) -> (name: String, sequenceID: Int64)? {
        var body = entry.body
        guard body.readInteger(as: UInt32.self) != nil, let size = body.readInteger(as: UInt32.self),
              Int(size) <= body.readableBytes, let bytes = body.readSlice(length: Int(size)),
              let metadata = try? Pulsar_Proto_MessageMetadata(serializedBytes: Array(buffer: bytes)),
              metadata.hasProducerName
        else { return nil }
        return (metadata.producerName, Int64(clamping: metadata.sequenceID))
    }

    // MARK: entry → Kafka

    /// The most bytes a stored compressed batch is expanded to for a Fetch.
    static let maxUncompressedBytes = 64 * 1024 * 1024

    /// A stored entry as one Kafka batch at `baseOffset`, with exactly as many records as the entry
    /// holds messages (offsets stay contiguous): an entry that cannot be decoded reads as that
    /// many records without key or value.
    static func batch(from entry: Entry, baseOffset: Int64) -> KafkaRecordBatch {
        if entry.attributes.transactionID != nil {
            return transactionalBatch(from: entry, baseOffset: baseOffset)
        }
        return plainBatch(from: entry, baseOffset: baseOffset)
    }

    /// A transaction's entry: its data with its Kafka producer's id and epoch and the
    /// transactional flag (a read_committed client drops an aborted one's by them), or its marker
    /// as a control batch (one record, key `[i16 version 0][i16 type: 0 abort, 1 commit]`, value
    /// `[i16 version 0][i32 coordinator epoch]`). A Pulsar transaction's entries read as plain data.
    private static func transactionalBatch(from entry: Entry, baseOffset: Int64) -> KafkaRecordBatch {
        let producer = PartitionProducers.identity(ofProducerName: entry.attributes.producerName)
        guard entry.attributes.isMarker else {
            var batch = plainBatch(from: entry, baseOffset: baseOffset)
            if let producer {
                batch.producerID = producer.producerID
                batch.producerEpoch = producer.epoch
                batch.attributes |= 0x10
            }
            return batch
        }
        var key = ByteBuffer()
        key.writeInteger(Int16(0))
        key.writeInteger(Int16(markerCommits(entry) ? 1 : 0))
        var value = ByteBuffer()
        value.writeInteger(Int16(0))
        value.writeInteger(Int32(0))
        return KafkaRecordBatch(
            baseOffset: baseOffset, attributes: 0x30, baseTimestamp: entry.attributes.publishTimeMs,
            producerID: producer?.producerID ?? -1, producerEpoch: producer?.epoch ?? -1,
            records: [KafkaRecord(offsetDelta: 0, timestampDelta: 0, key: key, value: value)])
    }

    /// Whether a transaction marker is a commit (its metadata's `marker_type` is TXN_COMMIT, 21).
    static func markerCommits(_ entry: Entry) -> Bool {
        var body = entry.body
        guard body.readInteger(as: UInt32.self) != nil, let size = body.readInteger(as: UInt32.self),
              Int(size) <= body.readableBytes, let bytes = body.readSlice(length: Int(size)),
              let metadata = try? Pulsar_Proto_MessageMetadata(serializedBytes: Array(buffer: bytes))
        else { return false }
        return metadata.markerType == 21
    }

    private static func plainBatch(from entry: Entry, baseOffset: Int64) -> KafkaRecordBatch {
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
