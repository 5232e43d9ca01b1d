import KafkaProtocol
import NIOCore
import Testing

/// Produce requests (v3–v9) and responses against bytes laid out as `ProduceRequest.json` /
/// `ProduceResponse.json` define them.
@Suite struct ProduceCodecTests {
    @Test func requestV7AndV9() throws {
        let records = ByteBuffer(bytes: [1, 2, 3])
        var v7 = ByteBuffer()
        v7.writeKafkaString(nil, flexible: false)  // transactional id
        v7.writeInteger(Int16(-1))  // acks=all
        v7.writeInteger(Int32(30_000))
        v7.writeKafkaArrayCount(1, flexible: false)
        v7.writeKafkaString("t", flexible: false)
        v7.writeKafkaArrayCount(1, flexible: false)
        v7.writeInteger(Int32(2))
        v7.writeInteger(Int32(3))
        v7.writeImmutableBuffer(records)
        var reader = KafkaReader(v7)
        let request = try ProduceRequest.read(&reader, version: 7)
        #expect(request.acks == -1 && request.timeoutMs == 30_000 && request.transactionalID == nil)
        #expect(request.topics.map(\.name) == ["t"] && request.topics[0].partitions[0].index == 2)
        #expect(request.topics[0].partitions[0].records == records && reader.remaining == 0)

        var v9 = ByteBuffer()
        v9.writeKafkaString("tx", flexible: true)
        v9.writeInteger(Int16(1))
        v9.writeInteger(Int32(5))
        v9.writeKafkaArrayCount(1, flexible: true)
        v9.writeKafkaString("t", flexible: true)
        v9.writeKafkaArrayCount(1, flexible: true)
        v9.writeInteger(Int32(0))
        v9.writeKafkaUnsignedVarint(4)  // compact bytes: 3 + 1
        v9.writeImmutableBuffer(records)
        v9.writeKafkaEmptyTaggedFields()
        v9.writeKafkaEmptyTaggedFields()
        v9.writeKafkaEmptyTaggedFields()
        var flexible = KafkaReader(v9)
        let request9 = try ProduceRequest.read(&flexible, version: 9)
        #expect(request9.transactionalID == "tx" && request9.acks == 1 && request9.topics[0].partitions[0].records == records)
        #expect(flexible.remaining == 0)
    }

    @Test func truncatedRequestsAreErrors() {
        var lying = ByteBuffer()
        lying.writeKafkaString(nil, flexible: false)
        lying.writeInteger(Int16(1))
        lying.writeInteger(Int32(5))
        lying.writeKafkaArrayCount(1, flexible: false)
        lying.writeKafkaString("t", flexible: false)
        lying.writeKafkaArrayCount(1, flexible: false)
        lying.writeInteger(Int32(0))
        lying.writeInteger(Int32(1_000_000))  // records claims a megabyte
        var reader = KafkaReader(lying)
        #expect(throws: KafkaProtocolError.self) { try ProduceRequest.read(&reader, version: 7) }
    }

    @Test func responseV7AndV9() {
        let response = ProduceResponse(topics: [ProduceResponse.Topic(
            name: "t", partitions: [ProduceResponse.Partition(index: 0, errorCode: .none, baseOffset: 42, logStartOffset: 0)])])
        var v7 = ByteBuffer()
        response.write(into: &v7, version: 7)
        var expected = ByteBuffer()
        expected.writeInteger(Int32(1))
        expected.writeInteger(Int16(1))
        expected.writeString("t")
        expected.writeInteger(Int32(1))
        expected.writeInteger(Int32(0))
        expected.writeInteger(Int16(0))
        expected.writeInteger(Int64(42))
        expected.writeInteger(Int64(-1))
        expected.writeInteger(Int64(0))
        expected.writeInteger(Int32(0))
        #expect(v7 == expected)
        var v9 = ByteBuffer()
        response.write(into: &v9, version: 9)
        var expected9 = ByteBuffer()
        expected9.writeInteger(UInt8(2))
        expected9.writeInteger(UInt8(2))
        expected9.writeString("t")
        expected9.writeInteger(UInt8(2))
        expected9.writeInteger(Int32(0))
        expected9.writeInteger(Int16(0))
        expected9.writeInteger(Int64(42))
        expected9.writeInteger(Int64(-1))
        expected9.writeInteger(Int64(0))
        expected9.writeInteger(UInt8(1))  // record_errors: empty compact array
        expected9.writeInteger(UInt8(0))  // error_message: null
        expected9.writeInteger(UInt8(0))  // partition tags
        expected9.writeInteger(UInt8(0))  // topic tags
        expected9.writeInteger(Int32(0))
        expected9.writeInteger(UInt8(0))
        #expect(v9 == expected9)
    }
}
