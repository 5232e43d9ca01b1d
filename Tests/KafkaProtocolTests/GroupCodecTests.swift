import KafkaProtocol
import NIOCore
import Testing

/// The consumer-group APIs' codecs against byte layouts written field by field from Kafka's
/// message definitions (`JoinGroupRequest.json`, ...), in non-flexible and flexible versions.
@Suite struct GroupCodecTests {
    func reader(_ bytes: [UInt8]) -> KafkaReader { KafkaReader(ByteBuffer(bytes: bytes)) }

    @Test func findCoordinatorRequestV0AndV3() throws {
        var v0 = reader([0, 2, 0x67, 0x31])  // key "g1"
        #expect(try FindCoordinatorRequest.read(&v0, version: 0) == FindCoordinatorRequest(key: "g1"))
        // v3: compact string (length + 1), key type, no tagged fields.
        var v3 = reader([3, 0x67, 0x31, 0, 0])
        #expect(try FindCoordinatorRequest.read(&v3, version: 3) == FindCoordinatorRequest(key: "g1", keyType: 0))
        #expect(v3.remaining == 0)
    }

    @Test func findCoordinatorResponseV3Layout() {
        var buffer = ByteBuffer()
        FindCoordinatorResponse(nodeID: 0, host: "h", port: 9092).write(into: &buffer, version: 3)
        #expect(Array(buffer.readableBytesView) == [0, 0, 0, 0, /* error */ 0, 0, /* null message */ 0, /* node */ 0, 0, 0, 0,
                                                    /* "h" */ 2, 0x68, /* port */ 0, 0, 0x23, 0x84, /* tags */ 0])
    }

    @Test func joinGroupRequestV5AndV6() throws {
        // v5: group "g", session 10000, rebalance 30000, member "", instance null, type "consumer",
        // one protocol "range" with metadata [1, 2].
        var v5 = ByteBuffer()
        v5.writeInteger(Int16(1)); v5.writeString("g")
        v5.writeInteger(Int32(10_000)); v5.writeInteger(Int32(30_000))
        v5.writeInteger(Int16(0))
        v5.writeInteger(Int16(-1))
        v5.writeInteger(Int16(8)); v5.writeString("consumer")
        v5.writeInteger(Int32(1)); v5.writeInteger(Int16(5)); v5.writeString("range"); v5.writeInteger(Int32(2)); v5.writeBytes([1, 2])
        var r5 = KafkaReader(v5)
        let expected = JoinGroupRequest(
            groupID: "g", sessionTimeoutMs: 10_000, rebalanceTimeoutMs: 30_000, memberID: "", protocolType: "consumer",
            protocols: [KafkaGroupProtocol(name: "range", metadata: [1, 2])])
        #expect(try JoinGroupRequest.read(&r5, version: 5) == expected)
        #expect(r5.remaining == 0)

        // v6: the same in compact form, each structure ending with its tagged fields.
        var v6 = ByteBuffer()
        v6.writeBytes([2, 0x67]); v6.writeInteger(Int32(10_000)); v6.writeInteger(Int32(30_000))
        v6.writeBytes([1])  // member ""
        v6.writeBytes([0])  // instance null
        v6.writeBytes([9]); v6.writeString("consumer")
        v6.writeBytes([2, 6]); v6.writeString("range"); v6.writeBytes([3, 1, 2, 0])
        v6.writeBytes([0])
        var r6 = KafkaReader(v6)
        #expect(try JoinGroupRequest.read(&r6, version: 6) == expected)
        #expect(r6.remaining == 0)
    }

    @Test func joinGroupResponseV7Layout() throws {
        let response = JoinGroupResponse(
            errorCode: .none, generationID: 3, protocolType: "consumer", protocolName: "range", leader: "a", memberID: "a",
            members: [KafkaGroupMemberMetadata(memberID: "a", groupInstanceID: nil, metadata: [9])])
        var buffer = ByteBuffer()
        response.write(into: &buffer, version: 7)
        var r = KafkaReader(buffer)
        #expect(try r.int32() == 0)
        #expect(try r.int16() == 0)
        #expect(try r.int32() == 3)
        #expect(try r.nullableString(flexible: true) == "consumer")
        #expect(try r.nullableString(flexible: true) == "range")
        #expect(try r.string(flexible: true) == "a")
        #expect(try r.string(flexible: true) == "a")
        #expect(try r.arrayCount(flexible: true) == 1)
        #expect(try r.string(flexible: true) == "a")
        #expect(try r.nullableString(flexible: true) == nil)
        #expect(try r.byteArray(flexible: true) == [9])
        try r.skipTaggedFields()
        try r.skipTaggedFields()
        #expect(r.remaining == 0)
    }

    @Test func syncGroupRequestV4() throws {
        var v4 = ByteBuffer()
        v4.writeBytes([2, 0x67]); v4.writeInteger(Int32(3)); v4.writeBytes([2, 0x61]); v4.writeBytes([0])
        v4.writeBytes([3, 2, 0x61, 4, 7, 8, 9, 0, 2, 0x62, 1, 0])  // two assignments: a → [7,8,9], b → []
        v4.writeBytes([0])
        var r = KafkaReader(v4)
        let request = try SyncGroupRequest.read(&r, version: 4)
        #expect(request.generationID == 3)
        #expect(request.memberID == "a")
        #expect(request.assignments.map(\.memberID) == ["a", "b"])
        #expect(request.assignments.map(\.assignment) == [[7, 8, 9], []])
        #expect(r.remaining == 0)
    }

    @Test func leaveGroupRequestV0AndV3() throws {
        var v0 = reader([0, 1, 0x67, 0, 1, 0x61])
        #expect(try LeaveGroupRequest.read(&v0, version: 0) == LeaveGroupRequest(groupID: "g", members: ["a"]))
        var v3 = reader([0, 1, 0x67, 0, 0, 0, 2, 0, 1, 0x61, 0xFF, 0xFF, 0, 1, 0x62, 0xFF, 0xFF])
        #expect(try LeaveGroupRequest.read(&v3, version: 3) == LeaveGroupRequest(groupID: "g", members: ["a", "b"]))
        #expect(v3.remaining == 0)
    }

    @Test func offsetCommitRequestV2AndV8() throws {
        var v2 = ByteBuffer()
        v2.writeInteger(Int16(1)); v2.writeString("g")
        v2.writeInteger(Int32(4)); v2.writeInteger(Int16(1)); v2.writeString("a")
        v2.writeInteger(Int64(-1))  // retention
        v2.writeInteger(Int32(1)); v2.writeInteger(Int16(1)); v2.writeString("t")
        v2.writeInteger(Int32(1)); v2.writeInteger(Int32(2)); v2.writeInteger(Int64(42)); v2.writeInteger(Int16(-1))
        var r2 = KafkaReader(v2)
        let expected = OffsetCommitRequest(groupID: "g", generationID: 4, memberID: "a", topics: [
            KafkaTopicPartitions(topic: "t", partitions: [(2, KafkaCommittedOffset(offset: 42, metadata: nil))]),
        ])
        #expect(try OffsetCommitRequest.read(&r2, version: 2) == expected)
        #expect(r2.remaining == 0)

        var v8 = ByteBuffer()
        v8.writeBytes([2, 0x67]); v8.writeInteger(Int32(4)); v8.writeBytes([2, 0x61]); v8.writeBytes([0])
        v8.writeBytes([2, 2, 0x74, 2]); v8.writeInteger(Int32(2)); v8.writeInteger(Int64(42)); v8.writeInteger(Int32(-1))
        v8.writeBytes([0, 0])  // null metadata, partition tags
        v8.writeBytes([0, 0])  // topic tags, request tags
        var r8 = KafkaReader(v8)
        #expect(try OffsetCommitRequest.read(&r8, version: 8) == expected)
        #expect(r8.remaining == 0)
    }

    @Test func offsetFetchRequestAllPartitionsAndResponseV5Layout() throws {
        var v6 = reader([2, 0x67, 0, 0])  // group "g", null topics: every committed partition
        #expect(try OffsetFetchRequest.read(&v6, version: 6) == OffsetFetchRequest(groupID: "g", topics: nil))

        let response = OffsetFetchResponse(topics: [
            KafkaTopicPartitions(topic: "t", partitions: [(0, OffsetFetchResponse.Partition(offset: -1, metadata: ""))]),
        ])
        var buffer = ByteBuffer()
        response.write(into: &buffer, version: 5)
        var r = KafkaReader(buffer)
        #expect(try r.int32() == 0)
        #expect(try r.int32() == 1)
        #expect(try r.string(flexible: false) == "t")
        #expect(try r.int32() == 1)
        #expect(try r.int32() == 0)
        #expect(try r.int64() == -1)  // nothing committed
        #expect(try r.int32() == -1)  // leader epoch
        #expect(try r.string(flexible: false) == "")
        #expect(try r.int16() == 0)
        #expect(try r.int16() == 0)  // top-level error
        #expect(r.remaining == 0)
    }

    @Test func truncatedGroupRequestsAreRefused() {
        for version in Int16(0)...9 {
            var short = reader([0, 5, 0x67])
            #expect(throws: KafkaProtocolError.self) { try JoinGroupRequest.read(&short, version: version) }
        }
        var lying = reader([0, 1, 0x67, 0, 0, 0, 1, 0, 1, 0x61, 0, 0, 0, 1, 0, 1, 0x61, 0x7F, 0xFF, 0xFF, 0xFF])  // an assignment of 2 GiB
        #expect(throws: KafkaProtocolError.self) { try SyncGroupRequest.read(&lying, version: 0) }
    }
}
