import KafkaProtocol
import NIOCore
import Testing

/// Kafka's primitive types, request headers and the first message codecs against byte fixtures
/// written from Kafka's message definitions (`*Request.json` / `*Response.json`) and the protocol
/// guide's encodings.
@Suite struct KafkaWireTests {
    func bytes(_ hex: String) -> ByteBuffer {
        var buffer = ByteBuffer()
        var digits = hex.filter { !$0.isWhitespace }[...]
        while !digits.isEmpty {
            buffer.writeInteger(UInt8(digits.prefix(2), radix: 16)!)
            digits = digits.dropFirst(2)
        }
        return buffer
    }

    func hex(_ buffer: ByteBuffer) -> String {
        buffer.readableBytesView.map { $0 < 16 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
    }

    @Test func varintsAreZigZagAndUnsignedLEB128() throws {
        var buffer = ByteBuffer()
        buffer.writeKafkaUnsignedVarint(300)
        buffer.writeKafkaVarint(0)
        buffer.writeKafkaVarint(-1)
        buffer.writeKafkaVarint(1)
        buffer.writeKafkaVarint(Int32.min)
        buffer.writeKafkaVarlong(-1)
        buffer.writeKafkaVarlong(Int64.max)
        let expectedbuffer: [String] = ["ac02", "00", "01", "02", "ffffffff0f", "01"]
        #expect(hex(buffer).hasPrefix(expectedbuffer.joined()))
        var reader = KafkaReader(buffer)
        #expect(try reader.unsignedVarint() == 300)
        #expect(try reader.varint() == 0)
        #expect(try reader.varint() == -1)
        #expect(try reader.varint() == 1)
        #expect(try reader.varint() == Int32.min)
        #expect(try reader.varlong() == -1)
        #expect(try reader.varlong() == Int64.max)
        #expect(reader.remaining == 0)
    }

    @Test func varintSizesAreWhatTheWritersWrite() {
        let ints: [Int32] = [0, 1, -1, 63, -64, 64, -65, 8191, 8192, -8193, 1_048_575, Int32.max, Int32.min]
        for value in ints {
            var buffer = ByteBuffer()
            buffer.writeKafkaVarint(value)
            #expect(ByteBuffer.kafkaVarintSize(value) == buffer.readableBytes, "varint \(value)")
        }
        let longs: [Int64] = [0, 1, -1, 63, -64, 1 << 20, -(1 << 35), 1_700_000_000_000, Int64.max, Int64.min]
        for value in longs {
            var buffer = ByteBuffer()
            buffer.writeKafkaVarlong(value)
            #expect(ByteBuffer.kafkaVarlongSize(value) == buffer.readableBytes, "varlong \(value)")
        }
    }

    @Test func stringsAndArraysInBothForms() throws {
        var buffer = ByteBuffer()
        buffer.writeKafkaString("ab", flexible: false)
        buffer.writeKafkaString(nil, flexible: false)
        buffer.writeKafkaString("ab", flexible: true)
        buffer.writeKafkaString(nil, flexible: true)
        buffer.writeKafkaArrayCount(nil, flexible: false)
        buffer.writeKafkaArrayCount(2, flexible: true)
        let expectedbuffer: [String] = ["00026162", "ffff", "036162", "00", "ffffffff", "03"]
        #expect(hex(buffer) == expectedbuffer.joined())
        var reader = KafkaReader(buffer)
        #expect(try reader.string(flexible: false) == "ab")
        #expect(try reader.nullableString(flexible: false) == nil)
        #expect(try reader.string(flexible: true) == "ab")
        #expect(try reader.nullableString(flexible: true) == nil)
        #expect(try reader.arrayCount(flexible: false) == nil)
        #expect(throws: KafkaProtocolError.self) { try reader.arrayCount(flexible: true) }  // 2 elements, no bytes left
    }

    @Test func malformedInputIsAnErrorNotATrap() {
        var truncated = KafkaReader(bytes("0005 6162"))  // a 5-byte string with 2 bytes
        #expect(throws: KafkaProtocolError.self) { try truncated.string(flexible: false) }
        var hugeArray = KafkaReader(bytes("7fffffff 00"))
        #expect(throws: KafkaProtocolError.self) { try hugeArray.arrayCount(flexible: false) }
        var longVarint = KafkaReader(bytes("ffffffffffff"))
        #expect(throws: KafkaProtocolError.self) { try longVarint.unsignedVarint() }
        var tags = KafkaReader(bytes("01 00 05 61"))  // one tagged field claiming 5 bytes, 1 there
        #expect(throws: KafkaProtocolError.self) { try tags.skipTaggedFields() }
    }

    @Test func requestHeaderV1AndV2() throws {
        // Metadata v1, correlation id 7, client id "c"; body: topics ["a"].
        var reader = KafkaReader(bytes("0003 0001 00000007 0001 63" + "00000001 0001 61"))
        var header = try KafkaRequestHeader.readPrefix(&reader)
        try header.readRest(&reader, flexible: false)
        #expect(header == KafkaRequestHeader(apiKey: 3, apiVersion: 1, correlationID: 7, clientID: "c"))
        #expect(try MetadataRequest.read(&reader, version: 1) == MetadataRequest(topics: ["a"], allowAutoTopicCreation: true))
        // Metadata v9 (flexible): header v2 (client id stays int16-length, then tags); topics null,
        // allow auto creation false, the two authorized-operations flags, tags.
        var flexible = KafkaReader(bytes("0003 0009 00000001 ffff 00" + "00 00 00 00 00"))
        var v2 = try KafkaRequestHeader.readPrefix(&flexible)
        try v2.readRest(&flexible, flexible: true)
        #expect(v2.clientID == nil)
        #expect(try MetadataRequest.read(&flexible, version: 9) == MetadataRequest(topics: nil, allowAutoTopicCreation: false))
        #expect(flexible.remaining == 0)
        // v0: an empty list means every topic.
        var v0 = KafkaReader(bytes("00000000"))
        #expect(try MetadataRequest.read(&v0, version: 0).topics == nil)
    }

    @Test func apiVersionsResponses() {
        let apis = [KafkaApiSupport(.metadata, 0...9, flexibleFrom: 9)]
        var v0 = ByteBuffer()
        ApiVersionsResponse(errorCode: .unsupportedVersion, apis: apis).write(into: &v0, version: 0)
        let expectedv0: [String] = ["0023", "00000001", "0003", "0000", "0009"]
        #expect(hex(v0) == expectedv0.joined())
        var v3 = ByteBuffer()
        ApiVersionsResponse(errorCode: .none, apis: apis).write(into: &v3, version: 3)
        let expectedv3: [String] = ["0000", "02", "0003", "0000", "0009", "00", "00000000", "00"]
        #expect(hex(v3) == expectedv3.joined())
        let frame = KafkaResponseFrame.make(correlationID: 5, flexibleHeader: false, allocator: ByteBufferAllocator()) {
            $0.writeInteger(Int16(0))
        }
        let expectedframe: [String] = ["00000006", "00000005", "0000"]
        #expect(hex(frame) == expectedframe.joined())
    }

    @Test func metadataResponseV1AndV9() {
        let response = MetadataResponse(
            brokers: [MetadataResponse.Broker(nodeID: 0, host: "h", port: 9092)], clusterID: "c", controllerID: 0,
            topics: [MetadataResponse.Topic(name: "t", partitions: [MetadataResponse.Partition(index: 0, leaderID: 0)])])
        var v1 = ByteBuffer()
        response.write(into: &v1, version: 1)
        let expectedv1: [String] = ["00000001", "00000000", "000168", "00002384", "ffff", "00000000", "00000001", "0000", "000174", "00", "00000001", "0000", "00000000", "00000000", "00000001", "00000000", "00000001", "00000000"]
        #expect(hex(v1) == expectedv1.joined())
        var v9 = ByteBuffer()
        response.write(into: &v9, version: 9)
        let expectedv9: [String] = ["00000000", "02", "00000000", "0268", "00002384", "00", "00", "0263", "00000000", "02", "0000", "0274", "00", "02", "0000", "00000000", "00000000", "00000000", "0200000000", "0200000000", "01", "00", "80000000", "00", "80000000", "00"]
        #expect(hex(v9) == expectedv9.joined())
    }
}
