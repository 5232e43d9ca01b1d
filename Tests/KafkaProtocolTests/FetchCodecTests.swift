import KafkaProtocol
import NIOCore
import Testing

/// Fetch v4–v11, ListOffsets v1–v5 and InitProducerId v0–v4: requests read back what is written
/// in each version, and responses have Kafka's field layout.
@Suite struct FetchCodecTests {
    @Test(arguments: Array(Int16(4)...11))
    func fetchRequestRoundTrips(_ version: Int16) throws {
        let request = FetchRequest(maxWaitMs: 500, minBytes: 1, maxBytes: 52_428_800, isolationLevel: 0, topics: [
            FetchRequest.Topic(name: "orders", partitions: [
                FetchRequest.Partition(index: 0, fetchOffset: 42, maxBytes: 1_048_576),
                FetchRequest.Partition(index: 3, fetchOffset: 0, maxBytes: 65_536),
            ]),
        ])
        var buffer = ByteBuffer()
        request.write(into: &buffer, version: version)
        var reader = KafkaReader(buffer)
        #expect(try FetchRequest.read(&reader, version: version) == request)
        #expect(reader.remaining == 0)
    }

    @Test func fetchResponseLayout() throws {
        var records = ByteBuffer()
        KafkaRecordBatch(baseOffset: 7, baseTimestamp: 1, records: [KafkaRecord(offsetDelta: 0, timestampDelta: 0, key: nil, value: ByteBuffer(string: "v"))])
            .write(into: &records)
        let response = FetchResponse(topics: [FetchResponse.Topic(name: "t", partitions: [
            FetchResponse.Partition(index: 2, errorCode: .none, highWatermark: 8, logStartOffset: 0, records: records),
        ])])
        var buffer = ByteBuffer()
        response.write(into: &buffer, version: 11)
        var reader = KafkaReader(buffer)
        #expect(try reader.int32() == 0)  // throttle
        #expect(try reader.int16() == 0)  // error
        #expect(try reader.int32() == 0)  // session id
        #expect(try reader.int32() == 1)
        #expect(try reader.string(flexible: false) == "t")
        #expect(try reader.int32() == 1)
        #expect(try reader.int32() == 2)
        #expect(try reader.int16() == 0)
        #expect(try reader.int64() == 8)  // high watermark
        #expect(try reader.int64() == 8)  // last stable offset
        #expect(try reader.int64() == 0)  // log start offset
        #expect(try reader.int32() == 0)  // aborted transactions
        #expect(try reader.int32() == -1)  // preferred read replica
        #expect(try reader.int32() == Int32(records.readableBytes))
        let batches = try KafkaRecordBatch.readAll(try reader.bytes(count: records.readableBytes))
        #expect(batches.map(\.baseOffset) == [7])
        #expect(reader.remaining == 0)
    }

    @Test(arguments: Array(Int16(1)...5))
    func listOffsetsRoundTrips(_ version: Int16) throws {
        let request = ListOffsetsRequest(isolationLevel: version >= 2 ? 1 : 0, topics: [
            ListOffsetsRequest.Topic(name: "t", partitions: [
                ListOffsetsRequest.Partition(index: 0, timestamp: ListOffsetsRequest.earliest),
                ListOffsetsRequest.Partition(index: 1, timestamp: 1_700_000_000_000),
            ]),
        ])
        var buffer = ByteBuffer()
        request.write(into: &buffer, version: version)
        var reader = KafkaReader(buffer)
        #expect(try ListOffsetsRequest.read(&reader, version: version) == request)
        var response = ByteBuffer()
        ListOffsetsResponse(topics: [ListOffsetsResponse.Topic(name: "t", partitions: [
            ListOffsetsResponse.Partition(index: 0, errorCode: .none, timestamp: -1, offset: 12),
        ])]).write(into: &response, version: version)
        // throttle (v2+), 1 topic "t", 1 partition: index, error, timestamp, offset, leader epoch (v4+).
        #expect(response.readableBytes == (version >= 2 ? 4 : 0) + 4 + 3 + 4 + 4 + 2 + 8 + 8 + (version >= 4 ? 4 : 0))
        #expect(response.getInteger(at: response.readableBytes - (version >= 4 ? 12 : 8), as: Int64.self) == 12)
    }

    @Test(arguments: Array(Int16(0)...4))
    func initProducerIdRoundTrips(_ version: Int16) throws {
        var request = InitProducerIdRequest(transactionalID: nil, transactionTimeoutMs: 60_000)
        if version >= 3 {
            request.producerID = 17
            request.producerEpoch = 2
        }
        var buffer = ByteBuffer()
        request.write(into: &buffer, version: version)
        var reader = KafkaReader(buffer)
        #expect(try InitProducerIdRequest.read(&reader, version: version) == request)
        #expect(reader.remaining == 0)
        var response = ByteBuffer()
        InitProducerIdResponse(errorCode: .none, producerID: 9, producerEpoch: 0).write(into: &response, version: version)
        #expect(response.readableBytes == 4 + 2 + 8 + 2 + (version >= 2 ? 1 : 0))
        #expect(response.getInteger(at: 6, as: Int64.self) == 9)
    }
}
