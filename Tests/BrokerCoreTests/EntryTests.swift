@testable import BrokerCore
@testable import ManagedLedger
import NIOCore
import Testing

/// The stored entry header: its bytes are an on-disk format (docs/ON_DISK_FORMAT.md), so the writer
/// is checked against the layout written field by field, and against the decoder.
@Suite struct EntryTests {
    let attributes = EntryAttributes(
        numMessages: 7, publishTimeMs: 1_700_000_000_123, deliverAtMs: 42, key: Array("order-17".utf8),
        producerName: "standalone-0-12345-producer", highestSequenceID: 99, isNonFinalChunk: true)

    @Test func headerBytesFollowTheDocumentedLayout() {
        var expected = ByteBuffer()
        expected.writeInteger(UInt8(2))
        expected.writeInteger(Int32(7))
        expected.writeInteger(Int64(1_700_000_000_123))
        expected.writeInteger(Int64(42))
        expected.writeInteger(UInt16(8))
        expected.writeString("order-17")
        expected.writeInteger(UInt16(27))
        expected.writeString("standalone-0-12345-producer")
        expected.writeInteger(Int64(99))
        expected.writeInteger(UInt8(1))
        expected.writeString("body")

        var written = ByteBuffer(string: "previous entry")
        let start = written.writerIndex
        Entry.write(attributes: attributes, into: &written) { $0.writeString("body") }
        #expect(written.getSlice(at: start, length: written.writerIndex - start) == expected)
        #expect(Entry.encodedLength(attributes: attributes, bodyLength: 4) == expected.readableBytes)
        #expect(Entry.encode(attributes: attributes, bodyLength: 4) { $0.writeString("body") } == expected)
    }

    @Test func aTransactionsEntryCarriesItsIDAfterTheFlags() throws {
        var transactional = attributes
        transactional.isNonFinalChunk = false
        transactional.isMarker = true
        transactional.transactionID = TransactionID(mostBits: 3, leastBits: 0x0102_0304_0506_0708)
        var written = ByteBuffer()
        Entry.write(attributes: transactional, into: &written) { $0.writeString("m") }
        #expect(written.readableBytes == Entry.encodedLength(attributes: transactional, bodyLength: 1))
        // flags (bit 1 marker, bit 2 transaction), then the id, then the body.
        let flagsAt = written.readableBytes - 1 - 16 - 1
        #expect(written.getInteger(at: flagsAt, as: UInt8.self) == 6)
        #expect(written.getInteger(at: flagsAt + 1, as: UInt64.self) == 3)
        #expect(written.getInteger(at: flagsAt + 9, as: UInt64.self) == 0x0102_0304_0506_0708)
        let decoded = try Entry.decode(written)
        #expect(decoded.attributes == transactional)
        #expect(String(buffer: decoded.body) == "m")
        // A header cut inside the id is refused, not misread.
        #expect(throws: BrokerError.self) { try Entry.decode(written.getSlice(at: 0, length: flagsAt + 5)!) }
    }

    @Test func decodeReadsWhatWriteWrote() throws {
        var marker = EntryAttributes(numMessages: 1, publishTimeMs: 9)
        marker.isMarker = true
        for attributes in [attributes, EntryAttributes(numMessages: 1, publishTimeMs: 5), marker] {
            let encoded = Entry.encode(attributes: attributes, bodyLength: 3) { $0.writeString("abc") }
            let decoded = try Entry.decode(encoded)
            #expect(decoded.attributes == attributes)
            #expect(String(buffer: decoded.body) == "abc")
        }
    }
}
