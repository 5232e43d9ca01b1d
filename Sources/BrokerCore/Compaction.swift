import Foundation
import LedgerStorage
import Logging
import ManagedLedger
import Metadata
import NIOCore

/// What compaction needs to know about one message of a stored entry.
public struct CompactionMessage: Sendable, Equatable {
    /// The message's key (Pulsar: the partition key); nil: the message has none.
    public var key: String?
    /// A null or empty value: the message deletes its key.
    public var isTombstone: Bool

    public init(key: String?, isTombstone: Bool) {
        self.key = key
        self.isTombstone = isTombstone
    }
}

/// How compaction looks into and rewrites one protocol's entries. The endpoint that owns the entry
/// format gives it to the broker (the core knows nothing of Pulsar's metadata or batches).
public protocol CompactionCodec: Sendable {
    /// One value per message of the entry, in batch order; nil: the entry cannot be looked into
    /// (an encrypted batch, a chunk): compaction keeps it whole and it changes no key.
    func messages(of entry: Entry) throws(BrokerError) -> [CompactionMessage]?
    /// The entry holding only the messages at `kept` (ascending, not empty, not all of them).
    func retaining(_ kept: [Int], of entry: Entry) throws(BrokerError) -> Entry
}

/// A topic's compacted ledger, as recorded in metadata (`MetadataKeys.compactedTopic`): the latest
/// message of every key up to `horizon`, in log order. Entries `0 ..< dataEntries` hold the kept
/// entries, the `indexEntries` after them the original position of each (see `CompactedLedgerFormat`).
package struct CompactionRecord: Codable, Sendable, Equatable {
    package var ledgerID: Int64
    package var horizonLedgerID: Int64
    package var horizonEntryID: Int64
    package var dataEntries: Int64
    package var indexEntries: Int64
    /// The last message kept (GET_LAST_MESSAGE_ID of a compacted reader with nothing after the horizon);
    /// nil: nothing was kept.
    package var lastLedgerID: Int64?
    package var lastEntryID: Int64?
    package var lastBatchIndex: Int32
    package var compactedAtMs: Int64

    package var horizon: Position { Position(ledgerID: horizonLedgerID, entryID: horizonEntryID) }
    package var last: Position? {
        guard let lastLedgerID, let lastEntryID else { return nil }
        return Position(ledgerID: lastLedgerID, entryID: lastEntryID)
    }
}

/// The entries of a compacted ledger, version 1, big-endian:
/// data `[u8 1][i64 ledgerID][i64 entryID][stored entry]` (the entry as `Entry.encode` wrote it, kept
/// messages only), then index entries `[u8 2][u32 count][count × (i64 ledgerID, i64 entryID)]`, the
/// original positions of the data entries in order. A pure namespace.
package enum CompactedLedgerFormat {
    static let dataTag: UInt8 = 1
    static let indexTag: UInt8 = 2
    /// Positions per index entry (1 MiB).
    static let positionsPerIndexEntry = 65_536

    static func data(_ position: Position, _ entry: Entry, allocator: ByteBufferAllocator) -> ByteBuffer {
        let encoded = entry.encode(allocator: allocator)
        var buffer = allocator.buffer(capacity: 17 + encoded.readableBytes)
        buffer.writeInteger(dataTag)
        buffer.writeInteger(position.ledgerID)
        buffer.writeInteger(position.entryID)
        buffer.writeImmutableBuffer(encoded)
        return buffer
    }

    static func decodeData(_ buffer: ByteBuffer) throws(BrokerError) -> (Position, Entry) {
        var buffer = buffer
        guard buffer.readInteger(as: UInt8.self) == dataTag, let ledgerID = buffer.readInteger(as: Int64.self),
              let entryID = buffer.readInteger(as: Int64.self)
        else { throw BrokerError(.persistence, "compacted ledger entry is damaged: compact the topic again") }
        return (Position(ledgerID: ledgerID, entryID: entryID), try Entry.decode(buffer))
    }

    static func index(_ positions: ArraySlice<Position>, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 5 + 16 * positions.count)
        buffer.writeInteger(indexTag)
        buffer.writeInteger(UInt32(positions.count))
        for position in positions {
            buffer.writeInteger(position.ledgerID)
            buffer.writeInteger(position.entryID)
        }
        return buffer
    }

    static func decodeIndex(_ buffer: ByteBuffer) throws(BrokerError) -> [Position] {
        var buffer = buffer
        guard buffer.readInteger(as: UInt8.self) == indexTag, let count = buffer.readInteger(as: UInt32.self),
              Int(count) <= positionsPerIndexEntry, buffer.readableBytes == 16 * Int(count)
        else { throw BrokerError(.persistence, "compacted ledger index is damaged: compact the topic again") }
        var positions: [Position] = []
        positions.reserveCapacity(Int(count))
        for _ in 0..<count {
            positions.append(Position(ledgerID: buffer.readInteger()!, entryID: buffer.readInteger()!))
        }
        return positions
    }
}

/// A topic's current compacted ledger, shared by the topic and its subscriptions on the topic's
/// loop: compacted readers read the kept entries from here while their position is before the horizon.
/// The index of original positions is read once, when a compacted reader first needs it.
final class CompactedTopicView: @unchecked Sendable {
    private let store: any LedgerClient
    private let eventLoop: any EventLoop
    private(set) var record: CompactionRecord?
    /// The metadata version of `record` (-1: none stored).
    var recordVersion: Int64 = -1
    private var positions: [Position]?
    private var indexLoad: EventLoopFuture<[Position]>?

    init(store: any LedgerClient, eventLoop: any EventLoop) {
        self.store = store
        self.eventLoop = eventLoop
    }

    var horizon: Position? { record?.horizon }

    /// Installs a newer compacted ledger (`positions`: its index, known to the compactor).
    func install(_ record: CompactionRecord?, version: Int64, positions: [Position]?) {
        eventLoop.preconditionInEventLoop()
        self.record = record
        recordVersion = version
        self.positions = positions
        indexLoad = nil
    }

    /// Up to `limit` kept entries after `position`, with their original positions; empty: none
    /// left before the horizon. Fails if the ledger cannot be read (the caller tries again later).
    func entries(after position: Position, limit: Int) -> EventLoopFuture<[(Position, Entry)]> {
        eventLoop.preconditionInEventLoop()
        guard let record else { return eventLoop.makeSucceededFuture([]) }
        return loadIndex(record).flatMap { positions in
            guard self.record == record else { return self.eventLoop.makeSucceededFuture([]) }
            // The first kept entry after `position`.
            var low = 0
            var high = positions.count
            while low < high {
                let middle = (low + high) / 2
                if positions[middle] <= position { low = middle + 1 } else { high = middle }
            }
            guard low < positions.count else { return self.eventLoop.makeSucceededFuture([]) }
            let last = min(low + limit, positions.count) - 1
            return self.store.readEntries(
                ledgerID: record.ledgerID, firstEntryID: Int64(low), lastEntryID: Int64(last), on: self.eventLoop
            ).flatMapThrowing { results in
                try results.map { result in
                    guard case .success(let buffer) = result else {
                        throw BrokerError(.persistence, "cannot read compacted ledger \(record.ledgerID)")
                    }
                    return try CompactedLedgerFormat.decodeData(buffer)
                }
            }
        }
    }

    private func loadIndex(_ record: CompactionRecord) -> EventLoopFuture<[Position]> {
        if let positions { return eventLoop.makeSucceededFuture(positions) }
        if let indexLoad { return indexLoad }
        guard record.indexEntries > 0 else {
            positions = []
            return eventLoop.makeSucceededFuture([])
        }
        let load = store.readEntries(
            ledgerID: record.ledgerID, firstEntryID: record.dataEntries,
            lastEntryID: record.dataEntries + record.indexEntries - 1, on: eventLoop
        ).flatMapThrowing { results -> [Position] in
            var positions: [Position] = []
            for result in results {
                guard case .success(let buffer) = result else {
                    throw BrokerError(.persistence, "cannot read the index of compacted ledger \(record.ledgerID)")
                }
                positions += try CompactedLedgerFormat.decodeIndex(buffer)
            }
            guard Int64(positions.count) == record.dataEntries else {
                throw BrokerError(.persistence, "the index of compacted ledger \(record.ledgerID) does not match its entries")
            }
            return positions
        }
        indexLoad = load
        load.whenComplete { result in
            guard self.record == record else { return }
            self.indexLoad = nil
            if case .success(let positions) = result { self.positions = positions }
        }
        return load
    }
}

/// What one compaction produced.
struct CompactionResult: Sendable {
    var record: CompactionRecord
    var positions: [Position]
    /// Messages read that the compacted ledger no longer holds (superseded, deleted, without a key).
    var removedMessages: Int64
}

/// Pulsar's two-phase compaction, over a managed ledger and the previous compacted ledger: phase one
/// reads everything up to the horizon and keeps the latest message id per key (a tombstone removes
/// its key; messages without a key are dropped, Pulsar's `topicCompactionRetainNullKey=false`);
/// phase two reads it again and writes the kept messages, in log order, to a new ledger. Only keys and
/// positions are held in memory, never entries beyond one read batch.
struct TopicCompactor {
    let codec: any CompactionCodec
    let store: any LedgerClient
    let metadata: any MetadataStore
    let managedLedger: ManagedLedger
    let logger: Logger
    /// Aborted transactions: their entries are left out, as are markers (never delivered either).
    var abortedTransactions: Set<TransactionID> = []

    static let readBatch = 100
    static let writeBatch = 100

    /// One pass over the messages up to `horizon`: the previous compacted ledger's entries first,
    /// then the topic's after its horizon. `body` sees each entry with its original position.
    private func scan(
        previous: CompactionRecord?, horizon: Position, _ body: (Position, Entry) async throws -> Void
    ) async throws {
        var after = Position.beforeEverything
        if let previous {
            after = previous.horizon
            var next: Int64 = 0
            while next < previous.dataEntries {
                let last = min(next + Int64(Self.readBatch), previous.dataEntries) - 1
                let results: [Result<ByteBuffer, LedgerStoreError>]
                do {
                    results = try await store.readEntries(
                        ledgerID: previous.ledgerID, firstEntryID: next, lastEntryID: last, on: managedLedger.eventLoop
                    ).get()
                } catch {
                    throw BrokerError(.persistence, "cannot read compacted ledger \(previous.ledgerID): \(error)")
                }
                for result in results {
                    guard case .success(let buffer) = result else {
                        throw BrokerError(.persistence, "cannot read compacted ledger \(previous.ledgerID)")
                    }
                    let (position, entry) = try CompactedLedgerFormat.decodeData(buffer)
                    try await body(position, entry)
                }
                next = last + 1
            }
        }
        while true {
            let positions = await managedLedger.positions(after: after, limit: Self.readBatch).filter { $0 <= horizon }
            guard let lastPosition = positions.last else { return }
            let entries = await managedLedger.entriesWithoutBlocking(positions)
            for (position, entry) in zip(positions, entries) {
                guard let entry else {
                    throw BrokerError(.persistence, "cannot read entry \(position) of \(managedLedger.name): compaction stopped before it")
                }
                try await body(position, entry)
            }
            after = lastPosition
            if lastPosition == horizon { return }
        }
    }

    func compact(previous: CompactionRecord?, horizon: Position, nowMs: Int64) async throws -> CompactionResult {
        // Phase one: the latest message of each key.
        var latest: [String: (position: Position, index: Int)] = [:]
        var opaque = Set<Position>()
        var messagesRead: Int64 = 0
        try await scan(previous: previous, horizon: horizon) { position, entry in
            if entry.attributes.isMarker { return }
            if let transaction = entry.attributes.transactionID, abortedTransactions.contains(transaction) { return }
            guard let messages = try codec.messages(of: entry) else {
                opaque.insert(position)
                messagesRead += Int64(max(entry.attributes.numMessages, 1))
                return
            }
            messagesRead += Int64(messages.count)
            for (index, message) in messages.enumerated() {
                guard let key = message.key else { continue }
                if message.isTombstone {
                    latest[key] = nil
                } else {
                    latest[key] = (position, index)
                }
            }
        }
        var kept: [Position: [Int]] = [:]
        for (position, index) in latest.values { kept[position, default: []].append(index) }
        latest = [:]

        // Phase two: write the kept messages to a new ledger, in log order.
        let ledgerID = try await metadata.increment(ManagedLedger.ledgerIDCounterKey)
        try await store.createLedger(ledgerID: ledgerID, replication: managedLedger.replication)
        let allocator = ByteBufferAllocator()
        var positions: [Position] = []
        var pending: [ByteBuffer] = []
        var written: Int64 = 0
        var keptMessages: Int64 = 0
        var last: (Position, Int32)?
        func flush() async throws {
            guard !pending.isEmpty else { return }
            let batch = pending
            pending = []
            try await Self.append(store, ledgerID: ledgerID, firstEntryID: written, batch)
            written += Int64(batch.count)
        }
        func write(_ position: Position, _ entry: Entry) async throws {
            let messages = max(entry.attributes.numMessages, 1)
            keptMessages += Int64(messages)
            positions.append(position)
            last = (position, messages > 1 ? messages - 1 : -1)
            pending.append(CompactedLedgerFormat.data(position, entry, allocator: allocator))
            if pending.count >= Self.writeBatch { try await flush() }
        }
        do {
            try await scan(previous: previous, horizon: horizon) { position, entry in
                if opaque.contains(position) {
                    try await write(position, entry)
                    return
                }
                guard var indexes = kept[position] else { return }
                indexes.sort()
                let total = Int(max(entry.attributes.numMessages, 1))
                try await write(position, indexes.count == total ? entry : try codec.retaining(indexes, of: entry))
            }
            try await flush()
            var start = 0
            var indexEntries: Int64 = 0
            while start < positions.count {
                let end = min(start + CompactedLedgerFormat.positionsPerIndexEntry, positions.count)
                pending.append(CompactedLedgerFormat.index(positions[start..<end], allocator: allocator))
                indexEntries += 1
                start = end
            }
            try await flush()
            try await store.closeLedger(ledgerID: ledgerID)
            let record = CompactionRecord(
                ledgerID: ledgerID, horizonLedgerID: horizon.ledgerID, horizonEntryID: horizon.entryID,
                dataEntries: Int64(positions.count), indexEntries: indexEntries, lastLedgerID: last?.0.ledgerID,
                lastEntryID: last?.0.entryID, lastBatchIndex: last?.1 ?? -1, compactedAtMs: nowMs)
            return CompactionResult(record: record, positions: positions, removedMessages: max(0, messagesRead - keptMessages))
        } catch {
            try? await store.deleteLedger(ledgerID: ledgerID)
            throw error
        }
    }

    private static func append(_ store: any LedgerClient, ledgerID: Int64, firstEntryID: Int64, _ payloads: [ByteBuffer]) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            store.appendBatch(ledgerID: ledgerID, firstEntryID: firstEntryID, payloads: payloads) { result in
                continuation.resume(with: result.mapError { BrokerError(.persistence, "cannot write the compacted ledger: \($0)") })
            }
        }
    }
}
