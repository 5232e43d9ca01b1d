import NIOCore
import Testing

@testable import MagnetarClient

/// Every codec round-trips through the C libraries; a corrupt or oversized payload gives a clear
/// `corruptMessage` error instead of a crash or a huge allocation.
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
            let compressed = PayloadCompression.compress(original, type: type, allocator: allocator)
            if size >= 1000 { #expect(compressed.readableBytes < size, "\(type) compresses repetitive data") }
            let restored = try PayloadCompression.decompress(
                compressed, type: type, uncompressedSize: size, maxSizeBytes: 5 * 1024 * 1024, allocator: allocator)
            #expect(restored == original, "\(type) round trip of \(size) bytes")
        }
    }

    @Test func knownFormats() throws {
        // zlib: the stream starts with the 0x78 CMF byte; zstd: one frame with its magic number;
        // snappy (raw): the varint of the uncompressed length first.
        let original = sample(300)
        let zlib = PayloadCompression.compress(original, type: .zlib, allocator: allocator)
        #expect(zlib.getInteger(at: zlib.readerIndex, as: UInt8.self) == 0x78)
        let zstd = PayloadCompression.compress(original, type: .zstd, allocator: allocator)
        #expect(zstd.getInteger(at: zstd.readerIndex, endianness: .little, as: UInt32.self) == 0xFD2F_B528)
        let snappy = PayloadCompression.compress(original, type: .snappy, allocator: allocator)
        #expect(snappy.getBytes(at: snappy.readerIndex, length: 2) == [0xAC, 0x02])  // 300 as a varint
        #expect(CompressionType(name: "LZ4") == .lz4)
        #expect(CompressionType.zstd.rawValue == 3 && CompressionType.snappy.rawValue == 4)
    }

    @Test(arguments: codecs)
    func corruptPayloadIsReported(_ type: CompressionType) throws {
        let compressed = PayloadCompression.compress(sample(5000), type: type, allocator: allocator)
        var corrupt = compressed
        corrupt.moveWriterIndex(to: corrupt.readerIndex + corrupt.readableBytes / 2)  // truncated
        #expect(throws: PulsarClientError.self) {
            try PayloadCompression.decompress(corrupt, type: type, uncompressedSize: 5000, maxSizeBytes: 1 << 20, allocator: allocator)
        }
        // A wrong uncompressed size in the metadata is caught too.
        #expect(throws: PulsarClientError.self) {
            try PayloadCompression.decompress(compressed, type: type, uncompressedSize: 4999, maxSizeBytes: 1 << 20, allocator: allocator)
        }
    }

    @Test(arguments: codecs)
    func oversizedUncompressedSizeIsRejectedBeforeAllocating(_ type: CompressionType) throws {
        let compressed = PayloadCompression.compress(sample(100), type: type, allocator: allocator)
        do {
            _ = try PayloadCompression.decompress(
                compressed, type: type, uncompressedSize: Int(UInt32.max), maxSizeBytes: 5 * 1024 * 1024, allocator: allocator)
            Issue.record("an uncompressed size over the limit must be rejected")
        } catch {
            #expect(error.code == .corruptMessage)
            #expect(error.message.contains("over the limit"))
        }
    }
}

/// Key routing must put a key on the same partition as the official Python/C++ client (BoostHash).
@Suite struct PartitionRoutingTests {
    @Test func boostHashMatchesTheReferenceValues() {
        // boost::hash<std::string> (Boost >= 1.83, 64-bit) & INT32_MAX, computed from the algorithm's definition.
        #expect(KeyHash.boostHash("a") == 2_135_870_748)
        #expect(KeyHash.boostHash("hello") == 1_742_291_129)
        #expect(KeyHash.boostHash("abcdefgh") == 1_534_298_190)  // exactly one 8-byte block
        #expect(KeyHash.boostHash("xxxxxxxxxxxxxxxxx") == 558_514_235)  // two blocks + a 1-byte tail
        #expect(KeyHash.boostHash("") == 2_133_126_054)
    }

    @Test func partitionsMatchPulsarClient313() {
        // Partitions pulsar-client 3.13.0 chose for these keys on a 7-partition topic.
        let expected: [String: Int] = [
            "a": 4, "b": 1, "key-1": 2, "key-2": 2, "hello": 5, "order-42": 6, "abcdefgh": 5, "xxxxxxxxxxxxxxxxx": 6,
            "ключ": 4, "k0": 3, "k1": 6, "k2": 1, "k3": 2, "k10": 5, "k12": 0, "k19": 1,
        ]
        for (key, partition) in expected {
            #expect(KeyHash.partition(forKey: key, partitions: 7) == partition, "key \(key)")
        }
    }

    @Test func roundRobinWithoutBatchingVisitsEveryPartition() {
        var router = PartitionRouter(
            partitions: 3, mode: .roundRobin, isBatching: false, batchingMaxMessages: 0, batchingMaxBytes: 0,
            batchingMaxPublishDelayMs: 1, startCursor: 5)
        let picks = (0..<6).map { _ in router.partition(key: nil, sizeBytes: 10, nowMs: 0) }
        #expect(picks == [2, 0, 1, 2, 0, 1])
        #expect(router.partition(key: "a", sizeBytes: 10, nowMs: 0) == KeyHash.partition(forKey: "a", partitions: 3))
        #expect(router.partition(key: "", sizeBytes: 10, nowMs: 0) == 2, "an empty key counts as no key")
    }

    @Test func roundRobinWithBatchingSticksForABatch() {
        var router = PartitionRouter(
            partitions: 4, mode: .roundRobin, isBatching: true, batchingMaxMessages: 3, batchingMaxBytes: 1000,
            batchingMaxPublishDelayMs: 10, startCursor: 0, nowMs: 0)
        let picks = (0..<7).map { _ in router.partition(key: nil, sizeBytes: 10, nowMs: 1) }
        #expect(picks == [0, 0, 0, 1, 1, 1, 2])
        #expect(router.partition(key: nil, sizeBytes: 10, nowMs: 50) == 3, "the publish delay moves on")
        #expect(router.partition(key: nil, sizeBytes: 995, nowMs: 50) == 0, "so does a full batch by bytes")
    }

    @Test func singlePartitionModeKeepsOnePartition() {
        var router = PartitionRouter(
            partitions: 5, mode: .singlePartition, isBatching: false, batchingMaxMessages: 0, batchingMaxBytes: 0,
            batchingMaxPublishDelayMs: 1, startCursor: 7)
        #expect((0..<5).map { _ in router.partition(key: nil, sizeBytes: 1, nowMs: 0) } == [2, 2, 2, 2, 2])
    }
}

/// The reconnection delays: 100 ms doubling to the cap, minus up to 9 % jitter, never below the initial delay.
@Suite struct BackoffTests {
    @Test func doublesUpToTheMaximum() {
        var backoff = Backoff(initial: .milliseconds(100), max: .seconds(30))
        let delays = (0..<12).map { _ in backoff.nextDelay(jitterPercent: 0).nanoseconds / 1_000_000 }
        #expect(delays == [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000])
        backoff.reset()
        #expect(backoff.nextDelay(jitterPercent: 0) == .milliseconds(100))
    }

    @Test func jitterShavesAtMostNinePercent() {
        var backoff = Backoff()
        #expect(backoff.nextDelay(jitterPercent: 9) == .milliseconds(100), "never below the initial delay")
        #expect(backoff.nextDelay(jitterPercent: 9) == .milliseconds(182))
        for _ in 0..<20 {
            let delay = backoff.nextDelay()
            #expect(delay <= Backoff.defaultMax && delay >= .nanoseconds(Backoff.defaultMax.nanoseconds / 100 * 91) || delay < .seconds(60))
        }
    }
}

/// Service URLs with several brokers: lookups fail over between them.
@Suite struct ServiceURLTests {
    @Test func parsesEveryAddress() throws {
        let addresses = try PulsarClient.parseAll(url: "pulsar://a:6651,b,c:7000/")
        #expect(addresses.map(\.host) == ["a", "b", "c"])
        #expect(addresses.map(\.port) == [6651, 6650, 7000])
        #expect(throws: PulsarClientError.self) { try PulsarClient.parseAll(url: "pulsar://a:1,:2") }
        // TLS URLs: port 6651 by default.
        let tls = try PulsarClient.parseAll(url: "pulsar+ssl://a,b:7001")
        #expect(tls.map(\.port) == [6651, 7001])
        #expect(throws: PulsarClientError.self) { try PulsarClient.parseAll(url: "http://a:8080") }
    }
}
