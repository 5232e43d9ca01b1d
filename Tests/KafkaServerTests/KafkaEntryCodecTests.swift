import CRC32C
import KafkaProtocol
import ManagedLedger
import NIOCore
import PayloadCompression
import PulsarProtocol
import Testing

@testable import KafkaServer

/// Kafka batch → stored entry → Pulsar's message metadata and back to a Kafka batch.
@Suite struct KafkaEntryCodecTests {
    let allocator = ByteBufferAllocator()

    func batch(compression: Int16 = 0) -> KafkaRecordBatch {
        KafkaRecordBatch(attributes: compression, baseTimestamp: 1_700_000_000_000, records: [
            KafkaRecord(offsetDelta: 0, timestampDelta: 0, key: ByteBuffer(string: "user-1"), value: ByteBuffer(string: "first"),
                        headers: [("trace", ByteBuffer(string: "abc"))]),
            KafkaRecord(offsetDelta: 1, timestampDelta: 5, key: ByteBuffer(bytes: [0xFF, 0x00, 0xFE]), value: nil),
            KafkaRecord(offsetDelta: 2, timestampDelta: 9, key: nil, value: ByteBuffer(string: "third")),
        ])
    }

    /// The batch as the produce path takes it, its records to be stored with `compression`.
    func raw(_ batch: KafkaRecordBatch, compression: Int16 = 0) throws -> KafkaRawRecordBatch {
        var bytes = ByteBuffer()
        batch.write(into: &bytes)
        var raw = try KafkaRawRecordBatch.read(bytes)
        raw.attributes = compression
        return raw
    }

    @Test(arguments: KafkaCompression.allCases)
    func storedAsOnePulsarBatch(_ codec: KafkaCompression) throws {
        let (encoded, attributes) = try KafkaEntryCodec.entry(
            from: raw(batch(), compression: codec.rawValue), producerName: "kafka-app", publishTimeMs: 1_700_000_001_000, allocator: allocator)
        #expect(attributes.numMessages == 3 && attributes.publishTimeMs == 1_700_000_001_000 && attributes.key.isEmpty)
        let entry = try Entry.decode(encoded)
        var body = entry.body
        let crc = body.readInteger(as: UInt32.self)!
        var check = CRC32C()
        body.withUnsafeReadableBytes { check.update($0) }
        #expect(check.value == crc)
        let size = Int(body.readInteger(as: UInt32.self)!)
        let metadata = try Pulsar_Proto_MessageMetadata(serializedBytes: body.readBytes(length: size)!)
        #expect(metadata.producerName == "kafka-app" && metadata.publishTime == 1_700_000_001_000)
        #expect(metadata.numMessagesInBatch == 3 && metadata.compression.rawValue == codec.pulsarType.rawValue)
        let messages = try KafkaEntryCodec.records(of: entry)
        #expect(messages.map(\.timestamp) == [1_700_000_000_000, 1_700_000_000_005, 1_700_000_000_009])
        #expect(messages.map(\.key) == [ByteBuffer(string: "user-1"), ByteBuffer(bytes: [0xFF, 0x00, 0xFE]), nil])
        #expect(messages.map(\.value) == [ByteBuffer(string: "first"), nil, ByteBuffer(string: "third")])
        #expect(messages[0].headers.map(\.key) == ["trace"] && messages[0].headers[0].value == ByteBuffer(string: "abc"))

        let back = KafkaEntryCodec.batch(from: entry, baseOffset: 40)
        #expect(back.baseOffset == 40 && back.lastOffsetDelta == 2 && back.baseTimestamp == 1_700_000_000_000)
        #expect(back.records.map(\.value) == batch().records.map(\.value))
        #expect(back.records.map(\.key) == batch().records.map(\.key))
        var written = ByteBuffer()
        back.write(into: &written)
        #expect(try KafkaRecordBatch.readAll(written) == [back])
    }

    @Test func aSharedKeyRoutesTheEntry() throws {
        let keyed = KafkaRecordBatch(baseTimestamp: 1, records: (0..<3).map {
            KafkaRecord(offsetDelta: Int32($0), timestampDelta: 0, key: ByteBuffer(string: "k"), value: ByteBuffer(string: "v"))
        })
        let (_, attributes) = try KafkaEntryCodec.entry(from: raw(keyed), producerName: "p", publishTimeMs: 1, allocator: allocator)
        #expect(attributes.key == Array("k".utf8))
        var mixed = keyed
        mixed.records[2].key = ByteBuffer(string: "other")
        let (_, unshared) = try KafkaEntryCodec.entry(from: raw(mixed), producerName: "p", publishTimeMs: 1, allocator: allocator)
        #expect(unshared.key.isEmpty)
    }

    @Test func aMalformedRecordFailsTheWholeBatch() throws {
        var bytes = ByteBuffer()
        batch().write(into: &bytes)
        var raw = try KafkaRawRecordBatch.read(bytes)
        raw.count = 4  // one more record than the bytes hold
        #expect(throws: KafkaProtocolError.self) {
            try KafkaEntryCodec.entry(from: raw, producerName: "p", publishTimeMs: 1, allocator: allocator)
        }
        raw.count = 3
        raw.records.moveWriterIndex(to: raw.records.writerIndex - 2)  // the last record cut short
        #expect(throws: KafkaProtocolError.self) {
            try KafkaEntryCodec.entry(from: raw, producerName: "p", publishTimeMs: 1, allocator: allocator)
        }
    }

    @Test func anUndecodableEntryKeepsItsOffsets() {
        let entry = Entry(attributes: EntryAttributes(numMessages: 4, publishTimeMs: 99), body: ByteBuffer(string: "not pulsar"))
        let batch = KafkaEntryCodec.batch(from: entry, baseOffset: 10)
        #expect(batch.records.count == 4 && batch.lastOffsetDelta == 3 && batch.records.allSatisfy { $0.value == nil })
    }
}
