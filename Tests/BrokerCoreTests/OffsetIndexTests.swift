@testable import BrokerCore
@testable import ManagedLedger
import LedgerStorage
import Logging
import Metadata
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import TestSupport
import Testing

/// Per-topic offsets and the time index through a topic's managed ledger (issue 13 item 2): gap
/// free across ledger rolls, batches and restarts; seek by time and message expiry answered from
/// the indexes. On a testing event loop over the in-memory stores.
/// Counts the store's reads (the test's broker reads through it).
private final class CountingStore: ForwardingLedgerStore, @unchecked Sendable {
    let reads = NIOLockedValueBox(0)

    override func read(ledgerID: Int64, entryID: Int64) throws(LedgerStoreError) -> ByteBuffer {
        reads.withLockedValue { $0 += 1 }
        return try inner.read(ledgerID: ledgerID, entryID: entryID)
    }
}

@Suite struct OffsetIndexTests {
    let loop = NIOAsyncTestingEventLoop()
    let store = LocalLedgerClient(store: InMemoryLedgerStore(), readsInline: true)
    let metadata = InMemoryMetadataStore()

    func makeBroker(maxEntriesPerLedger: Int64) async throws -> BrokerService {
        var configuration = BrokerConfiguration()
        configuration.managedLedger.maxEntriesPerLedger = maxEntriesPerLedger
        let broker = BrokerService(
            configuration: configuration, store: store, metadata: metadata, eventLoopGroup: loop,
            logger: Logger(label: "test"))
        try await broker.bootstrap()
        return broker
    }

    func settle<T: Sendable>(_ future: EventLoopFuture<T>) async throws -> T { try await loop.settle(future) }

    /// Runs an async operation of the managed ledger while the test drives the loop.
    func pumped<T: Sendable>(_ operation: @escaping @Sendable () async -> T) async throws -> T {
        try await settle(loop.makeFutureWithTask { await operation() })
    }

    /// Publishes entries (messages per entry, publish time) in one go; their positions, in order.
    func publish(_ topic: Topic, _ entries: [(numMessages: Int32, publishTimeMs: Int64)]) async throws -> [Position] {
        let promises = entries.map { _ in loop.makePromise(of: Position.self) }
        try await loop.executeInContext {
            for (index, entry) in entries.enumerated() {
                let attributes = EntryAttributes(numMessages: entry.numMessages, publishTimeMs: entry.publishTimeMs)
                let encoded = Entry(attributes: attributes, body: ByteBuffer(string: "e\(index)")).encode()
                topic.publish(encoded: encoded, attributes: attributes) { promises[index].completeWith($0.mapError { $0 as any Error }) }
            }
        }
        return try await settle(EventLoopFuture.whenAllSucceed(promises.map(\.futureResult), on: loop))
    }

    /// Entry i holds (i % 5) + 1 messages; its first offset is the sum of those before it.
    func batches(_ range: Range<Int>) -> [(numMessages: Int32, publishTimeMs: Int64)] {
        range.map { (Int32($0 % 5 + 1), 1_000 + Int64($0)) }
    }

    func firstOffsets(of entries: [(numMessages: Int32, publishTimeMs: Int64)], from start: Int64 = 0) -> [Int64] {
        var next = start
        return entries.map { entry in
            defer { next += Int64(entry.numMessages) }
            return next
        }
    }

    @Test func offsetsAreGapFreeAcrossRollsAndBatches() async throws {
        let broker = try await makeBroker(maxEntriesPerLedger: 150)
        let topic = try await settle(broker.topic(try TopicName(parsing: "offsets")))
        let entries = batches(0..<400)
        let positions = try await publish(topic, entries)
        #expect(Set(positions.map(\.ledgerID)).count == 3)
        let expected = firstOffsets(of: entries)
        let total = entries.reduce(Int64(0)) { $0 + Int64($1.numMessages) }
        let ledger = topic.managedLedger
        let bounds = try await pumped { await ledger.offsetBounds() }
        #expect(bounds?.first == 0 && bounds?.next == total)
        for i in stride(from: 0, to: entries.count, by: 7) + [63, 64, 149, 150, 399] {
            let position = positions[i]
            #expect(try await pumped { await ledger.offset(of: position) } == expected[i], "entry \(i)")
            // Every message of the entry maps back to it.
            for message in expected[i]..<(expected[i] + Int64(entries[i].numMessages)) {
                let found = try await pumped { await ledger.position(ofOffset: message) }
                #expect(found?.position == position && found?.firstOffset == expected[i], "offset \(message)")
            }
        }
        #expect(try await pumped { await ledger.position(ofOffset: total) } == nil)
        #expect(try await pumped { await ledger.position(ofOffset: -1) } == nil)
        // The rolled ledgers' indexes are in metadata, so a restart need not read them back.
        for ledgerID in Set(positions.map(\.ledgerID)).sorted().dropLast() {
            let key = MetadataKeys.messageIndex(ofManagedLedger: MetadataKeys.managedLedger(topic.name.metadataPath), ledgerID: ledgerID)
            let stored = try #require(try await metadata.get(key), "no index for ledger \(ledgerID)")
            #expect(try MessageIndex.decode(stored.value).entries == 150)
        }
    }

    @Test func offsetsContinueAfterARestartThatRecoversTheOpenLedger() async throws {
        let name = try TopicName(parsing: "offsets-restart")
        let first = try await makeBroker(maxEntriesPerLedger: 150)
        let before = try await settle(first.topic(name))
        let entries = batches(0..<220)
        _ = try await publish(before, entries)

        // A second broker over the same stores: the open ledger (70 entries) is recovered and its
        // messages counted by reading it back.
        let second = try await makeBroker(maxEntriesPerLedger: 150)
        let after = try await settle(second.topic(name))
        let more = batches(220..<230)
        let positions = try await publish(after, more)
        let expected = firstOffsets(of: entries + more)
        let ledger = after.managedLedger
        for (i, position) in positions.enumerated() {
            #expect(try await pumped { await ledger.offset(of: position) } == expected[220 + i])
        }
        let bounds = try await pumped { await ledger.offsetBounds() }
        #expect(bounds?.next == expected.last! + Int64(more.last!.numMessages))
    }

    @Test func seekByTimeFindsTheFirstEntryAtOrAfterEvenWhenTimesGoBack() async throws {
        let broker = try await makeBroker(maxEntriesPerLedger: 150)
        let topic = try await settle(broker.topic(try TopicName(parsing: "by-time")))
        // Publish times rise by 10 but every third entry is 25 behind (producers' clocks differ).
        let entries = (0..<300).map { i -> (numMessages: Int32, publishTimeMs: Int64) in
            (1, 10_000 + Int64(i) * 10 - (i % 3 == 0 ? 25 : 0))
        }
        let positions = try await publish(topic, entries)
        let ledger = topic.managedLedger
        for time in stride(from: Int64(9_950), through: 13_100, by: 37) {
            let expected = entries.firstIndex { $0.publishTimeMs >= time }.map { positions[$0] }
            #expect(try await pumped { await ledger.firstPosition(publishedAtOrAfter: time) } == expected, "time \(time)")
        }
    }

    @Test func expiryAcknowledgesWholeBlocksWithoutReadingThem() async throws {
        let broker = try await makeBroker(maxEntriesPerLedger: 10_000)
        let topic = try await settle(broker.topic(try TopicName(parsing: "ttl")))
        let request = SubscribeRequest(
            subscription: "s", type: .exclusive, consumerKey: ConsumerKey(connectionID: 1, consumerID: 0),
            consumerName: "c0", priorityLevel: 0, durable: true, start: nil, initialPosition: .earliest)
        try await settle(loop.flatSubmit { topic.subscribe(request, sink: RecordingSink()) })
        // More entries than one expiry pass examines one by one.
        let entries = (0..<(Topic.maxEntriesExaminedForExpiry + 2_000)).map { i -> (numMessages: Int32, publishTimeMs: Int64) in
            (1, 1_000 + Int64(i))
        }
        let positions = try await publish(topic, entries)
        let cutoff = entries[Topic.maxEntriesExaminedForExpiry + 1_000].publishTimeMs
        try await loop.executeInContext { topic.expireMessages(olderThanMs: cutoff) }
        await loop.run()
        let markDelete = try await loop.executeInContext { topic.subscriptions["s"]!.cursor.markDelete }
        #expect(markDelete == positions[Topic.maxEntriesExaminedForExpiry + 999])
    }

    /// Admin expire-messages (`.../expireMessages/{seconds}`) takes whole blocks the time index
    /// shows as older without reading them: one batch is read, not every entry before the cutoff.
    @Test func adminExpiryReadsOnlyTheBlockHoldingTheCutoff() async throws {
        let counting = CountingStore()
        var configuration = BrokerConfiguration()
        configuration.managedLedger.maxEntriesPerLedger = 10_000
        let broker = BrokerService(
            configuration: configuration, store: LocalLedgerClient(store: counting, readsInline: true),
            metadata: InMemoryMetadataStore(), eventLoopGroup: loop, logger: Logger(label: "test"))
        try await broker.bootstrap()
        let topic = try await settle(broker.topic(try TopicName(parsing: "admin-expiry")))
        let request = SubscribeRequest(
            subscription: "s", type: .exclusive, consumerKey: ConsumerKey(connectionID: 1, consumerID: 0),
            consumerName: "c0", priorityLevel: 0, durable: true, start: nil, initialPosition: .earliest)
        try await settle(loop.flatSubmit { topic.subscribe(request, sink: RecordingSink()) })
        let entries = (0..<1_000).map { i -> (numMessages: Int32, publishTimeMs: Int64) in (1, 1_000 + Int64(i)) }
        let positions = try await publish(topic, entries)
        // Acknowledged ones before the cutoff are not counted as expired.
        try await loop.executeInContext { topic.acknowledge(subscription: "s", positions: [positions[10], positions[20]]) }
        counting.reads.withLockedValue { $0 = 0 }
        let cutoff = entries[700].publishTimeMs
        let expired = try await pumped { try! await topic.expireMessages(subscription: "s", publishedBeforeMs: cutoff) }
        #expect(expired == 698)
        let markDelete = try await loop.executeInContext { topic.subscriptions["s"]!.cursor.markDelete }
        #expect(markDelete == positions[699])
        #expect(counting.reads.withLockedValue { $0 } <= ManagedLedgerLimits.readAheadBatch)
    }
}
