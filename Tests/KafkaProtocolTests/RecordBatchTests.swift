import KafkaProtocol
import NIOCore
import Testing

/// Record batches (magic 2) against a batch kafka-python's own builder wrote, round trips, and
/// damaged batches refused.
@Suite struct RecordBatchTests {
    /// kafka-python 3.0's `DefaultRecordBatchBuilder`: k1=v1 with header h=x at 1700000000000, then
    /// a keyless v2 five milliseconds later.
    static let fixture = "000000000000000000000049000000000297f4442a0000000000010000018bcfe568000000018bcfe56805"
        + "ffffffffffffffffffffffffffff000000021c000000046b31047631020268027810000a020104763200"

    func bytes(_ hex: String) -> ByteBuffer {
        var buffer = ByteBuffer()
        var digits = hex[...]
        while !digits.isEmpty {
            buffer.writeInteger(UInt8(digits.prefix(2), radix: 16)!)
            digits = digits.dropFirst(2)
        }
        return buffer
    }

    @Test func readsWhatKafkaPythonWrote() throws {
        let batches = try KafkaRecordBatch.readAll(bytes(Self.fixture))
        #expect(batches.count == 1)
        let batch = batches[0]
        #expect(batch.baseTimestamp == 1_700_000_000_000 && batch.maxTimestamp == 1_700_000_000_005)
        #expect(batch.producerID == -1 && batch.baseSequence == -1 && batch.compression == 0 && batch.lastOffsetDelta == 1)
        #expect(batch.records.count == 2)
        #expect(batch.records[0].key == ByteBuffer(string: "k1") && batch.records[0].value == ByteBuffer(string: "v1"))
        #expect(batch.records[0].headers.map(\.key) == ["h"] && batch.records[0].headers[0].value == ByteBuffer(string: "x"))
        #expect(batch.records[1].key == nil && batch.records[1].offsetDelta == 1 && batch.records[1].timestampDelta == 5)
    }

    @Test func writesTheSameBytes() throws {
        let batch = try KafkaRecordBatch.read(bytes(Self.fixture))
        var written = ByteBuffer()
        batch.write(into: &written)
        #expect(written == bytes(Self.fixture))
        #expect(try KafkaRecordBatch.read(written) == batch)
    }

    /// kafka-python's builder with gzip: "gzip" × 20 keyed k with header h=v, then a keyless
    /// "second" × 10 a millisecond later.
    static let gzipFixture = "000000000000000000000069000000000237bd85b20001000000010000018bcfe568000000018bcfe56801"
        + "ffffffffffffffffffffffffffff000000021f8b08005cc5136b02ffdbc1c8c0c0c094bd8031bd2ab3809a98892983a9ac8591818989b1a23835393f2f853c9201004e59dabaa2000000"

    @Test func readsAGzipBatchKafkaPythonWrote() throws {
        let batch = try KafkaRecordBatch.read(bytes(Self.gzipFixture))
        #expect(batch.compression == 1 && batch.records.count == 2)
        #expect(batch.records[0].key == ByteBuffer(string: "k"))
        #expect(batch.records[0].value == ByteBuffer(string: String(repeating: "gzip", count: 20)))
        #expect(batch.records[0].headers.map(\.key) == ["h"])
        #expect(batch.records[1].key == nil && batch.records[1].timestampDelta == 1)
        #expect(batch.records[1].value == ByteBuffer(string: String(repeating: "second", count: 10)))
    }

    @Test func damagedBatchesAreRefused() {
        var flipped = bytes(Self.fixture)
        flipped.setInteger(UInt8(0x77), at: flipped.writerIndex - 3)
        #expect(throws: KafkaProtocolError.self) { try KafkaRecordBatch.read(flipped) }  // CRC
        let truncated = bytes(String(Self.fixture.dropLast(8)))
        #expect(throws: KafkaProtocolError.self) { try KafkaRecordBatch.readAll(truncated) }
        var oldMagic = bytes(Self.fixture)
        oldMagic.setInteger(Int8(1), at: 16)
        #expect(throws: KafkaProtocolError.self) { try KafkaRecordBatch.read(oldMagic) }
    }
}
