@testable import BrokerServer
import BrokerCore
import CRC32C
import ManagedLedger
import NIOCore
import PayloadCompression
import PulsarProtocol
import Testing

/// Compaction's view of Pulsar entries: keys and tombstones of single messages and batches
/// (compressed ones too), and batches rewritten with the kept messages only, checksummed anew.
@Suite struct PulsarCompactionCodecTests {
    let codec = PulsarCompactionCodec()

    /// A stored entry body: `[crc32c][metadataSize][MessageMetadata][payload]`.
    func entry(_ metadata: Pulsar_Proto_MessageMetadata, payload: ByteBuffer, messages: Int32 = 1) throws -> Entry {
        let metadataBytes: [UInt8] = try metadata.serializedBytes()
        var checksummed = ByteBuffer()
        checksummed.writeInteger(UInt32(metadataBytes.count))
        checksummed.writeBytes(metadataBytes)
        checksummed.writeImmutableBuffer(payload)
        var crc = CRC32C()
        checksummed.withUnsafeReadableBytes { crc.update($0) }
        var body = ByteBuffer()
        body.writeInteger(crc.value)
        body.writeBuffer(&checksummed)
        return Entry(attributes: EntryAttributes(numMessages: messages, publishTimeMs: 1), body: body)
    }

    func metadata(key: String? = nil, batch: Int32? = nil, nullValue: Bool = false) -> Pulsar_Proto_MessageMetadata {
        var metadata = Pulsar_Proto_MessageMetadata()
        metadata.producerName = "p"
        metadata.sequenceID = 1
        metadata.publishTime = 1
        if let key { metadata.partitionKey = key }
        if let batch { metadata.numMessagesInBatch = batch }
        if nullValue { metadata.nullValue = true }
        return metadata
    }

    func batchPayload(_ messages: [(String?, String?)]) throws -> ByteBuffer {
        var payload = ByteBuffer()
        for (key, value) in messages {
            var single = Pulsar_Proto_SingleMessageMetadata()
            if let key { single.partitionKey = key }
            single.payloadSize = Int32(value?.utf8.count ?? 0)
            if value == nil { single.nullValue = true }
            let bytes: [UInt8] = try single.serializedBytes()
            payload.writeInteger(UInt32(bytes.count))
            payload.writeBytes(bytes)
            payload.writeString(value ?? "")
        }
        return payload
    }

    /// (key, value) of each message of a stored batch entry, read back as a consumer would.
    func decodeBatch(_ entry: Entry) throws -> [(String, String)] {
        var body = entry.body
        let crc = body.readInteger(as: UInt32.self)!
        var check = CRC32C()
        body.withUnsafeReadableBytes { check.update($0) }
        #expect(check.value == crc, "the rewritten entry's checksum covers its bytes")
        let size = Int(body.readInteger(as: UInt32.self)!)
        let metadata = try Pulsar_Proto_MessageMetadata(serializedBytes: body.readBytes(length: size)!)
        #expect(metadata.compression == .none)
        var messages: [(String, String)] = []
        for _ in 0..<metadata.numMessagesInBatch {
            let singleSize = Int(body.readInteger(as: UInt32.self)!)
            let single = try Pulsar_Proto_SingleMessageMetadata(serializedBytes: body.readBytes(length: singleSize)!)
            messages.append((single.partitionKey, body.readString(length: Int(single.payloadSize))!))
        }
        #expect(body.readableBytes == 0)
        return messages
    }

    @Test func singleMessagesGiveTheirKeyAndTombstones() throws {
        #expect(try codec.messages(of: entry(metadata(key: "k"), payload: ByteBuffer(string: "v")))
            == [CompactionMessage(key: "k", isTombstone: false)])
        #expect(try codec.messages(of: entry(metadata(key: "k", nullValue: true), payload: ByteBuffer()))
            == [CompactionMessage(key: "k", isTombstone: true)])
        #expect(try codec.messages(of: entry(metadata(), payload: ByteBuffer(string: "v")))
            == [CompactionMessage(key: nil, isTombstone: false)])
        var chunk = metadata(key: "k")
        chunk.numChunksFromMsg = 3
        #expect(try codec.messages(of: entry(chunk, payload: ByteBuffer(string: "part"))) == nil)
    }

    @Test(arguments: [CompressionType.none, .lz4, .zlib, .zstd, .snappy])
    func batchesAreSplitAndRewritten(_ compression: CompressionType) throws {
        let plain = try batchPayload([("a", "1"), ("b", "1"), ("a", "2"), (nil, "x"), ("c", nil)])
        var meta = metadata(batch: 5)
        var payload = plain
        if compression != .none {
            meta.compression = Pulsar_Proto_CompressionType(rawValue: compression.rawValue)!
            meta.uncompressedSize = UInt32(plain.readableBytes)
            payload = PayloadCodec.compress(plain, type: compression, allocator: ByteBufferAllocator())
        }
        let stored = try entry(meta, payload: payload, messages: 5)
        #expect(try codec.messages(of: stored) == [
            CompactionMessage(key: "a", isTombstone: false), CompactionMessage(key: "b", isTombstone: false),
            CompactionMessage(key: "a", isTombstone: false), CompactionMessage(key: nil, isTombstone: false),
            CompactionMessage(key: "c", isTombstone: true),
        ])
        let rewritten = try codec.retaining([1, 2], of: stored)
        #expect(rewritten.attributes.numMessages == 2)
        let messages = try decodeBatch(rewritten)
        #expect(messages.map(\.0) == ["b", "a"] && messages.map(\.1) == ["1", "2"])
    }

    @Test func damagedEntriesAreErrorsNotCrashes() throws {
        var truncated = try entry(metadata(batch: 3), payload: try batchPayload([("a", "1")]), messages: 3)
        #expect(throws: BrokerError.self) { try codec.messages(of: truncated) }
        truncated.body = ByteBuffer(bytes: [0, 0, 0, 0, 0, 0, 0xFF, 0xFF])
        #expect(throws: BrokerError.self) { try codec.messages(of: truncated) }
        var oversized = metadata(batch: 1)
        oversized.compression = .zstd
        oversized.uncompressedSize = UInt32.max
        #expect(throws: BrokerError.self) {
            try codec.messages(of: entry(oversized, payload: ByteBuffer(string: "junk"), messages: 1))
        }
    }
}
