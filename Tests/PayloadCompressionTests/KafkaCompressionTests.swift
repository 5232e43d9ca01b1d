import NIOCore
import PayloadCompression
import Testing

/// Kafka's framings: round trips for every codec, a gzip stream Python's `gzip` wrote, both Snappy
/// framings, and damaged or oversized data refused.
@Suite struct KafkaCompressionTests {
    let allocator = ByteBufferAllocator()
    let plain = ByteBuffer(string: String(repeating: "records of a kafka batch, ", count: 200))

    @Test(arguments: KafkaCompression.allCases)
    func roundTrips(_ codec: KafkaCompression) throws {
        let compressed = codec.compress(plain, allocator: allocator)
        if codec != .none { #expect(compressed.readableBytes < plain.readableBytes) }
        #expect(try codec.decompress(compressed, maxSizeBytes: 1 << 20, allocator: allocator) == plain)
        let empty = codec.compress(ByteBuffer(), allocator: allocator)
        #expect(try codec.decompress(empty, maxSizeBytes: 16, allocator: allocator).readableBytes == 0)
    }

    @Test func readsPythonsGzip() throws {
        // gzip.compress(b"kafka gzip fixture " * 3, mtime=0)
        let hex = "1f8b0800000000000203cb4e4ccb4e5448afca2c5048cbac28292d4a55c8264a0800187df50439000000"
        var fixture = ByteBuffer()
        var digits = hex[...]
        while !digits.isEmpty {
            fixture.writeInteger(UInt8(digits.prefix(2), radix: 16)!)
            digits = digits.dropFirst(2)
        }
        let plain = try KafkaCompression.gzip.decompress(fixture, maxSizeBytes: 1024, allocator: allocator)
        #expect(String(buffer: plain) == String(repeating: "kafka gzip fixture ", count: 3))
    }

    @Test func readsRawSnappyAndXerialFraming() throws {
        let raw = PayloadCodec.compress(plain, type: .snappy, allocator: allocator)
        #expect(try KafkaCompression.snappy.decompress(raw, maxSizeBytes: 1 << 20, allocator: allocator) == plain)
        let framed = KafkaCompression.snappy.compress(plain, allocator: allocator)
        #expect(framed.getBytes(at: 0, length: 8) == [0x82, 0x53, 0x4E, 0x41, 0x50, 0x50, 0x59, 0x00])
        // Two xerial blocks decode to both halves, in order.
        var halves = ByteBuffer(bytes: framed.getBytes(at: 0, length: 16)!)
        for half in [ByteBuffer(string: "first half "), ByteBuffer(string: "second half")] {
            let block = PayloadCodec.compress(half, type: .snappy, allocator: allocator)
            halves.writeInteger(Int32(block.readableBytes))
            halves.writeImmutableBuffer(block)
        }
        #expect(String(buffer: try KafkaCompression.snappy.decompress(halves, maxSizeBytes: 100, allocator: allocator)) == "first half second half")
    }

    @Test(arguments: [KafkaCompression.gzip, .snappy, .lz4, .zstd])
    func refusesDamagedTruncatedAndOversized(_ codec: KafkaCompression) {
        let compressed = codec.compress(plain, allocator: allocator)
        #expect(throws: PayloadCompressionError.self) {
            try codec.decompress(compressed, maxSizeBytes: plain.readableBytes / 2, allocator: allocator)
        }
        let truncated = compressed.getSlice(at: compressed.readerIndex, length: compressed.readableBytes / 2)!
        #expect(throws: PayloadCompressionError.self) { try codec.decompress(truncated, maxSizeBytes: 1 << 20, allocator: allocator) }
        var garbage = ByteBuffer()
        garbage.writeBytes([UInt8](repeating: 0xA5, count: 64))
        #expect(throws: PayloadCompressionError.self) { try codec.decompress(garbage, maxSizeBytes: 1 << 20, allocator: allocator) }
    }
}
