import NIOCore
import PayloadCompression
import Testing

/// Every codec round-trips through the C libraries; a corrupt or oversized payload gives a clear
/// `PayloadCompressionError` instead of a crash or a huge allocation.
@Suite struct CompressionTests {
    private let allocator = ByteBufferAllocator()
    private static let codecs: [CompressionType] = [.lz4, .zlib, .zstd, .snappy]

    private func sample(_ count: Int) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: count)
        for index in 0..<count { buffer.writeInteger(UInt8(truncatingIfNeeded: index % 7 == 0 ? index : 65 + index % 3)) }
        return buffer
    }

    @Test(arguments: codecs)
    func roundTrips(_ type: CompressionType) throws {
        for size in [0, 1, 5, 1000, 200_000] {
            let original = sample(size)
            let compressed = PayloadCodec.compress(original, type: type, allocator: allocator)
            if size >= 1000 { #expect(compressed.readableBytes < size, "\(type) compresses repetitive data") }
            let restored = try PayloadCodec.decompress(
                compressed, type: type, uncompressedSize: size, maxSizeBytes: 5 * 1024 * 1024, allocator: allocator)
            #expect(restored == original, "\(type) round trip of \(size) bytes")
        }
    }

    @Test func knownFormats() throws {
        // zlib: the stream starts with the 0x78 CMF byte; zstd: one frame with its magic number;
        // snappy (raw): the varint of the uncompressed length first.
        let original = sample(300)
        let zlib = PayloadCodec.compress(original, type: .zlib, allocator: allocator)
        #expect(zlib.getInteger(at: zlib.readerIndex, as: UInt8.self) == 0x78)
        let zstd = PayloadCodec.compress(original, type: .zstd, allocator: allocator)
        #expect(zstd.getInteger(at: zstd.readerIndex, endianness: .little, as: UInt32.self) == 0xFD2F_B528)
        let snappy = PayloadCodec.compress(original, type: .snappy, allocator: allocator)
        #expect(snappy.getBytes(at: snappy.readerIndex, length: 2) == [0xAC, 0x02])  // 300 as a varint
        #expect(CompressionType(name: "LZ4") == .lz4)
        #expect(CompressionType.zstd.rawValue == 3 && CompressionType.snappy.rawValue == 4)
    }

    @Test(arguments: codecs)
    func corruptPayloadIsReported(_ type: CompressionType) throws {
        let compressed = PayloadCodec.compress(sample(5000), type: type, allocator: allocator)
        var corrupt = compressed
        corrupt.moveWriterIndex(to: corrupt.readerIndex + corrupt.readableBytes / 2)  // truncated
        #expect(throws: PayloadCompressionError.self) {
            try PayloadCodec.decompress(corrupt, type: type, uncompressedSize: 5000, maxSizeBytes: 1 << 20, allocator: allocator)
        }
        // A wrong uncompressed size in the metadata is caught too.
        #expect(throws: PayloadCompressionError.self) {
            try PayloadCodec.decompress(compressed, type: type, uncompressedSize: 4999, maxSizeBytes: 1 << 20, allocator: allocator)
        }
    }

    @Test(arguments: codecs)
    func oversizedUncompressedSizeIsRejectedBeforeAllocating(_ type: CompressionType) throws {
        let compressed = PayloadCodec.compress(sample(100), type: type, allocator: allocator)
        do {
            _ = try PayloadCodec.decompress(
                compressed, type: type, uncompressedSize: Int(UInt32.max), maxSizeBytes: 5 * 1024 * 1024, allocator: allocator)
            Issue.record("an uncompressed size over the limit must be rejected")
        } catch {
            #expect(error.description.contains("over the limit"))
        }
    }
}
