import NIOCore

/// What the `kafka` fuzz target runs: a request frame body through the header readers, every
/// version of every request codec, and the record-batch reader; malformed input must throw, never trap.
public enum KafkaProtocolFuzzing {
    public static func decodeRequest(_ bytes: UnsafeRawBufferPointer) {
        let buffer = ByteBuffer(bytes: bytes)
        var reader = KafkaReader(buffer)
        guard var header = try? KafkaRequestHeader.readPrefix(&reader) else { return }
        for flexible in [false, true] {
            var rest = reader
            guard (try? header.readRest(&rest, flexible: flexible)) != nil else { continue }
            for version in Int16(0)...11 {
                var fetch = rest
                _ = try? FetchRequest.read(&fetch, version: version)
                var listOffsets = rest
                _ = try? ListOffsetsRequest.read(&listOffsets, version: version)
                var initProducerID = rest
                _ = try? InitProducerIdRequest.read(&initProducerID, version: version)
                var body = rest
                _ = try? MetadataRequest.read(&body, version: version)
                decodeGroupRequests(rest, version: version)
                var produce = rest
                if let request = try? ProduceRequest.read(&produce, version: version) {
                    for partition in request.topics.flatMap(\.partitions) {
                        if let records = partition.records { _ = try? KafkaRecordBatch.readAll(records) }
                    }
                }
            }
            _ = try? KafkaRecordBatch.readAll(rest.buffer)
            var tags = rest
            _ = try? tags.skipTaggedFields()
            _ = try? tags.varlong()
        }
    }

    /// Every consumer-group and topic-administration request codec in one version.
    static func decodeGroupRequests(_ reader: KafkaReader, version: Int16) {
        var r = reader
        _ = try? FindCoordinatorRequest.read(&r, version: version)
        r = reader
        _ = try? JoinGroupRequest.read(&r, version: version)
        r = reader
        _ = try? SyncGroupRequest.read(&r, version: version)
        r = reader
        _ = try? HeartbeatRequest.read(&r, version: version)
        r = reader
        _ = try? LeaveGroupRequest.read(&r, version: version)
        r = reader
        _ = try? OffsetCommitRequest.read(&r, version: version)
        r = reader
        _ = try? OffsetFetchRequest.read(&r, version: version)
        r = reader
        _ = try? DescribeGroupsRequest.read(&r, version: version)
        r = reader
        _ = try? ListGroupsRequest.read(&r, version: version)
        r = reader
        _ = try? DeleteGroupsRequest.read(&r, version: version)
        r = reader
        _ = try? CreateTopicsRequest.read(&r, version: version)
        r = reader
        _ = try? DeleteTopicsRequest.read(&r, version: version)
        r = reader
        _ = try? CreatePartitionsRequest.read(&r, version: version)
        r = reader
        _ = try? DescribeConfigsRequest.read(&r, version: version)
    }
}
