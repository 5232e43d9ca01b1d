import Foundation
import NIOCore

/// Where one offloaded ledger's objects are: recorded in the managed ledger's metadata (so a
/// restart and every broker of a cluster find it) by whoever offloaded it. A value.
public struct OffloadedLedgerLocation: Codable, Sendable, Equatable {
    /// `filesystem` or `aws-s3` (`managedLedgerOffloadDriver`).
    public var driver: String
    /// The directory (filesystem) or bucket (S3) the objects are in.
    public var container: String
    public var uuid: UUID
    public var dataKey: String
    public var indexKey: String
    /// The S3 driver's region and service endpoint (nil: the filesystem driver), so any broker
    /// finds the bucket again whatever its own configuration names.
    public var region: String?
    public var endpoint: String?

    public init(
        driver: String, container: String, uuid: UUID, dataKey: String, indexKey: String,
        region: String? = nil, endpoint: String? = nil
    ) {
        self.driver = driver
        self.container = container
        self.uuid = uuid
        self.dataKey = dataKey
        self.indexKey = indexKey
        self.region = region
        self.endpoint = endpoint
    }
}

/// Offloads closed ledgers into an `ObjectStore` and reads their entries back (`OffloadFormat`).
/// An offload streams: it asks `readEntries` for one range at a time and uploads a block as soon
/// as it is full, so a ledger is never held in memory whole. Reads fetch the index once (kept, by
/// uuid, for the last `cachedIndexes` ledgers) and then only the blocks they need. Thread-safe.
public final class LedgerOffloader: Sendable {
    public let store: any ObjectStore
    public let driver: String
    public let container: String
    /// The payload bytes at which a block is cut (`managedLedgerOffloadMaxBlockSizeInBytes`).
    public let blockSizeBytes: Int
    /// Recorded in each location (the S3 driver's).
    public let region: String?
    public let endpoint: String?
    private let indexes = IndexCache(capacity: 256)

    public init(
        store: any ObjectStore, driver: String, container: String, blockSizeBytes: Int = 4 * 1024 * 1024,
        region: String? = nil, endpoint: String? = nil
    ) {
        self.store = store
        self.driver = driver
        self.container = container
        self.blockSizeBytes = max(blockSizeBytes, 1024)
        self.region = region
        self.endpoint = endpoint
    }

    /// Entries read from the ledger being offloaded: `first...last`, in order (fewer: an error).
    public typealias EntrySource = @Sendable (_ first: Int64, _ last: Int64) async throws -> [ByteBuffer]

    /// Writes ledger `ledgerID`'s entries `0..<entryCount` (read through `source`, `readBatch` at a
    /// time) as a data object and an index object, the index last, and returns where they are.
    /// On failure nothing of this offload is left behind (the objects it wrote are deleted).
    public func offload(
        ledgerID: Int64, entryCount: Int64, readBatch: Int = 500, source: EntrySource
    ) async throws(TieredStorageError) -> OffloadedLedgerLocation {
        let uuid = UUID()
        let prefix = "\(uuid.uuidString.lowercased())-ledger-\(ledgerID)"
        let location = OffloadedLedgerLocation(
            driver: driver, container: container, uuid: uuid, dataKey: prefix, indexKey: prefix + "-index",
            region: region, endpoint: endpoint)
        let upload = try await store.beginUpload(location.dataKey)
        do throws(TieredStorageError) {
            try await upload.write(OffloadFormat.dataHeader(ledgerID: ledgerID, uuid: uuid))
            var offset = Int64(OffloadFormat.dataHeaderBytes)
            var blocks: [OffloadIndex.Block] = []
            var pending: [ByteBuffer] = []
            var pendingBytes = 0
            var nextEntry: Int64 = 0
            func cut() async throws(TieredStorageError) {
                guard !pending.isEmpty else { return }
                let first = nextEntry - Int64(pending.count)
                let block = OffloadFormat.block(firstEntryID: first, entries: pending)
                try await upload.write(block)
                blocks.append(OffloadIndex.Block(firstEntryID: first, entryCount: pending.count, offset: offset, length: block.readableBytes))
                offset += Int64(block.readableBytes)
                pending.removeAll(keepingCapacity: true)
                pendingBytes = 0
            }
            while nextEntry < entryCount {
                let last = min(nextEntry + Int64(max(readBatch, 1)) - 1, entryCount - 1)
                let entries: [ByteBuffer]
                do {
                    entries = try await source(nextEntry, last)
                } catch {
                    throw TieredStorageError(.unavailable, "reading entries \(nextEntry)-\(last) of ledger \(ledgerID) to offload failed: \(error)")
                }
                guard entries.count == Int(last - nextEntry + 1) else {
                    throw TieredStorageError(.unavailable, "ledger \(ledgerID) gave \(entries.count) entries for \(nextEntry)-\(last)")
                }
                for entry in entries {
                    guard entry.readableBytes <= OffloadFormat.maxEntryBytes else {
                        throw TieredStorageError(.invalidArgument, "entry \(nextEntry) of ledger \(ledgerID) is \(entry.readableBytes) bytes, over \(OffloadFormat.maxEntryBytes)")
                    }
                    pending.append(entry)
                    pendingBytes += 4 + entry.readableBytes
                    nextEntry += 1
                    if pendingBytes >= blockSizeBytes { try await cut() }
                }
            }
            try await cut()
            try await upload.complete()
            let index = OffloadIndex(ledgerID: ledgerID, uuid: uuid, entryCount: entryCount, dataObjectLength: offset, blocks: blocks)
            let indexUpload = try await store.beginUpload(location.indexKey)
            do throws(TieredStorageError) {
                try await indexUpload.write(index.encode())
                try await indexUpload.complete()
            } catch {
                await indexUpload.abort()
                throw error
            }
            indexes.insert(index)
            return location
        } catch {
            await upload.abort()
            try? await store.delete(location.dataKey)
            throw error
        }
    }

    /// The index of an offloaded ledger (fetched once, then kept).
    public func index(of location: OffloadedLedgerLocation) async throws(TieredStorageError) -> OffloadIndex {
        if let known = indexes.get(location.uuid) { return known }
        guard let size = try await store.size(of: location.indexKey) else {
            throw TieredStorageError(.notFound, "the index object \(location.indexKey) is not in \(location.container)")
        }
        guard size <= Int64(OffloadFormat.indexHeaderBytes + OffloadFormat.maxBlocks * OffloadFormat.indexBlockBytes + 4) else {
            throw TieredStorageError(.corrupted, "the index object \(location.indexKey) is \(size) bytes, more than an index can be")
        }
        let index = try OffloadIndex.decode(try await store.read(location.indexKey, offset: 0, length: Int(size)))
        guard index.uuid == location.uuid else {
            throw TieredStorageError(.corrupted, "the index object \(location.indexKey) belongs to another offload")
        }
        indexes.insert(index)
        return index
    }

    /// Entries `first...last` of an offloaded ledger, every block's checksum checked.
    public func readEntries(_ location: OffloadedLedgerLocation, first: Int64, last: Int64) async throws(TieredStorageError) -> [ByteBuffer] {
        let index = try await index(of: location)
        guard first >= 0, first <= last, last < index.entryCount else {
            throw TieredStorageError(.notFound, "entries \(first)-\(last) are not in offloaded ledger \(index.ledgerID) (\(index.entryCount) entries)")
        }
        var result: [ByteBuffer] = []
        result.reserveCapacity(Int(last - first + 1))
        for block in index.blocks(covering: first, last) {
            let bytes = try await store.read(location.dataKey, offset: block.offset, length: block.length)
            let entries = try OffloadFormat.entries(ofBlock: bytes, block)
            let from = Int(max(first, block.firstEntryID) - block.firstEntryID)
            let to = Int(min(last, block.lastEntryID) - block.firstEntryID)
            result.append(contentsOf: entries[from...to])
        }
        return result
    }

    /// Deletes an offloaded ledger's objects (retention, or a topic deleted).
    public func delete(_ location: OffloadedLedgerLocation) async throws(TieredStorageError) {
        try await store.delete(location.indexKey)
        try await store.delete(location.dataKey)
        indexes.remove(location.uuid)
    }
}

/// The indexes of recently read ledgers, by offload uuid; the oldest is dropped past `capacity`.
final class IndexCache: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [UUID: OffloadIndex] = [:]
    private var order: [UUID] = []
    private let capacity: Int

    init(capacity: Int) { self.capacity = capacity }

    func get(_ uuid: UUID) -> OffloadIndex? {
        lock.withLock { entries[uuid] }
    }

    func insert(_ index: OffloadIndex) {
        lock.withLock {
            if entries.updateValue(index, forKey: index.uuid) == nil { order.append(index.uuid) }
            while order.count > capacity { entries[order.removeFirst()] = nil }
        }
    }

    func remove(_ uuid: UUID) {
        lock.withLock {
            entries[uuid] = nil
            order.removeAll { $0 == uuid }
        }
    }
}
