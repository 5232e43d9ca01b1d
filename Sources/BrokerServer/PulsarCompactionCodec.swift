import BrokerCore
import CRC32C
import ManagedLedger
import NIOCore
import PayloadCompression
import PulsarProtocol

/// How compaction reads and rewrites entries the Pulsar endpoint stored: an entry body is
/// `[u32 crc32c][u32 metadataSize][MessageMetadata][payload]`, the payload one message or (with
/// `num_messages_in_batch`) a batch of `[u32 size][SingleMessageMetadata][payload]`, compressed as a
/// whole. The key compaction goes by is the partition key (Pulsar's `getKey()`); an empty or null
/// value deletes it. Not on the hot path: metadata is decoded with SwiftProtobuf. A pure value.
struct PulsarCompactionCodec: CompactionCodec {
    /// The largest batch decompressed for compaction (a compressed batch may expand past the 5 MiB
    /// message limit); checked before anything is allocated.
    static let maxUncompressedBatchBytes = 64 * 1024 * 1024

    private struct Parsed {
        var metadata: Pulsar_Proto_MessageMetadata
        var payload: ByteBuffer
    }

    private func parse(_ entry: Entry) throws(BrokerError) -> Parsed {
        var body = entry.body
        guard body.readInteger(as: UInt32.self) != nil, let metadataSize = body.readInteger(as: UInt32.self),
              Int(metadataSize) <= body.readableBytes, let metadataBytes = body.readBytes(length: Int(metadataSize))
        else { throw BrokerError(.persistence, "stored entry has a damaged message metadata frame") }
        do {
            return Parsed(metadata: try Pulsar_Proto_MessageMetadata(serializedBytes: metadataBytes), payload: body)
        } catch {
            throw BrokerError(.persistence, "stored entry's message metadata does not decode: \(error)")
        }
    }

    /// The batch payload, decompressed.
    private func plainPayload(_ parsed: Parsed) throws(BrokerError) -> ByteBuffer {
        let raw = parsed.metadata.compression.rawValue
        guard raw != 0 else { return parsed.payload }
        guard let type = CompressionType(rawValue: raw) else {
            throw BrokerError(.persistence, "stored batch has an unknown compression type \(raw)")
        }
        do {
            return try PayloadCodec.decompress(
                parsed.payload, type: type, uncompressedSize: Int(parsed.metadata.uncompressedSize),
                maxSizeBytes: Self.maxUncompressedBatchBytes, allocator: ByteBufferAllocator())
        } catch {
            throw BrokerError(.persistence, "stored batch does not decompress: \(error)")
        }
    }

    /// One message of a batch: its metadata's bytes as stored, decoded, and its payload.
    private struct Single {
        var metadataBytes: ByteBuffer
        var metadata: Pulsar_Proto_SingleMessageMetadata
        var payload: ByteBuffer
    }

    private func split(_ parsed: Parsed) throws(BrokerError) -> [Single] {
        var payload = try plainPayload(parsed)
        let count = Int(parsed.metadata.numMessagesInBatch)
        var singles: [Single] = []
        singles.reserveCapacity(min(max(count, 0), 10_000))
        for index in 0..<max(count, 0) {
            guard let size = payload.readInteger(as: UInt32.self), Int(size) <= payload.readableBytes,
                  let metadataBytes = payload.readSlice(length: Int(size))
            else { throw BrokerError(.persistence, "batch message \(index) of \(count) is damaged") }
            let metadata: Pulsar_Proto_SingleMessageMetadata
            do {
                metadata = try Pulsar_Proto_SingleMessageMetadata(serializedBytes: Array(buffer: metadataBytes))
            } catch {
                throw BrokerError(.persistence, "batch message \(index) of \(count) has damaged metadata: \(error)")
            }
            guard metadata.payloadSize >= 0, Int(metadata.payloadSize) <= payload.readableBytes,
                  let messagePayload = payload.readSlice(length: Int(metadata.payloadSize))
            else { throw BrokerError(.persistence, "batch message \(index) of \(count) is truncated") }
            singles.append(Single(metadataBytes: metadataBytes, metadata: metadata, payload: messagePayload))
        }
        return singles
    }

    func messages(of entry: Entry) throws(BrokerError) -> [CompactionMessage]? {
        let parsed = try parse(entry)
        let metadata = parsed.metadata
        // A chunk is part of a message; an encrypted batch cannot be split: both are kept whole.
        if metadata.numChunksFromMsg > 1 { return nil }
        guard metadata.hasNumMessagesInBatch else {
            let key = metadata.hasPartitionKey && !metadata.nullPartitionKey ? metadata.partitionKey : nil
            return [CompactionMessage(key: key, isTombstone: metadata.nullValue || parsed.payload.readableBytes == 0)]
        }
        if !metadata.encryptionKeys.isEmpty { return nil }
        return try split(parsed).map { single in
            let key = single.metadata.hasPartitionKey && !single.metadata.nullPartitionKey ? single.metadata.partitionKey : nil
            return CompactionMessage(
                key: key, isTombstone: single.metadata.nullValue || single.metadata.compactedOut || single.payload.readableBytes == 0)
        }
    }

    /// A batch of the kept messages only, uncompressed, with its checksum computed anew; the
    /// attributes follow (message count, key of the first kept message).
    func retaining(_ kept: [Int], of entry: Entry) throws(BrokerError) -> Entry {
        let parsed = try parse(entry)
        guard parsed.metadata.hasNumMessagesInBatch else { return entry }
        let singles = try split(parsed)
        let chosen = kept.filter { singles.indices.contains($0) }.map { singles[$0] }
        guard !chosen.isEmpty else { throw BrokerError(.persistence, "compaction kept no message of a batch") }
        var payload = ByteBufferAllocator().buffer(
            capacity: chosen.reduce(0) { $0 + 4 + $1.metadataBytes.readableBytes + $1.payload.readableBytes })
        for single in chosen {
            payload.writeInteger(UInt32(single.metadataBytes.readableBytes))
            payload.writeImmutableBuffer(single.metadataBytes)
            payload.writeImmutableBuffer(single.payload)
        }
        var metadata = parsed.metadata
        metadata.numMessagesInBatch = Int32(chosen.count)
        metadata.compression = .none
        metadata.clearUncompressedSize()
        let metadataBytes: [UInt8]
        do {
            metadataBytes = try metadata.serializedBytes()
        } catch {
            throw BrokerError(.persistence, "cannot encode the compacted batch's metadata: \(error)")
        }
        var checksummed = ByteBufferAllocator().buffer(capacity: 4 + metadataBytes.count + payload.readableBytes)
        checksummed.writeInteger(UInt32(metadataBytes.count))
        checksummed.writeBytes(metadataBytes)
        checksummed.writeBuffer(&payload)
        var crc = CRC32C()
        checksummed.withUnsafeReadableBytes { crc.update($0) }
        var body = ByteBufferAllocator().buffer(capacity: 4 + checksummed.readableBytes)
        body.writeInteger(crc.value)
        body.writeBuffer(&checksummed)
        var attributes = entry.attributes
        attributes.numMessages = Int32(chosen.count)
        if let first = chosen.first?.metadata {
            attributes.key = Array((first.hasOrderingKey ? [UInt8](first.orderingKey) : [UInt8](first.partitionKey.utf8)))
        }
        return Entry(attributes: attributes, body: body)
    }
}
