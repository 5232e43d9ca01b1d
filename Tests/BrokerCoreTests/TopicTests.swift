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

/// Records what a topic sends to a connection: the core's edge seen as pure values.
final class RecordingSink: ConsumerSink, @unchecked Sendable {
    struct Delivery: Equatable {
        var consumerID: UInt64
        var position: Position
        var redeliveryCount: UInt32
        var body: String
    }
    var deliveries: [Delivery] = []
    var closedByBroker: [UInt64] = []

    func sendMessage(
        consumerID: UInt64, position: Position, partitionIndex: Int32, redeliveryCount: UInt32, ackSet: [Int64]?,
        entry: Entry
    ) {
        deliveries.append(Delivery(
            consumerID: consumerID, position: position, redeliveryCount: redeliveryCount,
            body: String(buffer: entry.body)))
    }
    func flush() {}
    func closeConsumerByBroker(consumerID: UInt64) { closedByBroker.append(consumerID) }
    func activeConsumerChanged(consumerID: UInt64, isActive: Bool) {}
}

/// Transcripts of a topic over the in-memory stores, on a testing event loop that runs only when
/// told to (`NIOAsyncTestingEventLoop`: thread-safe, so the topic's own tasks may hop onto it while
/// the test drives it). Everything that touches the topic runs on the loop (`onLoop`).
@Suite struct TopicTests {
    let loop = NIOAsyncTestingEventLoop()
    let store = LocalLedgerClient(store: InMemoryLedgerStore(), readsInline: true)
    let metadata = InMemoryMetadataStore()

    func makeBroker(maxEntriesPerLedger: Int64 = 3, minLedgerAge: TimeAmount = .zero) async throws -> BrokerService {
        var configuration = BrokerConfiguration()
        configuration.managedLedger.maxEntriesPerLedger = maxEntriesPerLedger
        configuration.managedLedger.minLedgerAge = minLedgerAge
        let broker = BrokerService(
            configuration: configuration, store: store, metadata: metadata, eventLoopGroup: loop,
            logger: Logger(label: "test"))
        try await broker.bootstrap()
        return broker
    }

    func settle<T: Sendable>(_ future: EventLoopFuture<T>) async throws -> T { try await loop.settle(future) }

    @discardableResult
    func onLoop<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T { try await loop.onLoop(body) }

    func publish(_ topic: Topic, _ text: String, key: String = "") async throws -> Position {
        let promise = loop.makePromise(of: Position.self)
        let attributes = EntryAttributes(numMessages: 1, publishTimeMs: 1, key: Array(key.utf8))
        let encoded = Entry(attributes: attributes, body: ByteBuffer(string: text)).encode()
        try await loop.executeInContext {
            topic.publish(encoded: encoded, attributes: attributes) { promise.completeWith($0.mapError { $0 as any Error }) }
        }
        return try await settle(promise.futureResult)
    }

    func subscribe(_ topic: Topic, _ name: String, consumer: UInt64, type: SubscriptionType = .exclusive,
                   initial: InitialPosition = .earliest, sink: RecordingSink) async throws {
        let request = SubscribeRequest(
            subscription: name, type: type, consumerKey: ConsumerKey(connectionID: 1, consumerID: consumer),
            consumerName: "c\(consumer)", priorityLevel: 0, durable: true, start: nil, initialPosition: initial)
        try await settle(loop.flatSubmit { topic.subscribe(request, sink: sink) })
    }

    @Test func publishSubscribeAcknowledgeAcrossLedgerRolls() async throws {
        let broker = try await makeBroker()
        let topic = try await settle(broker.topic(try TopicName(parsing: "events")))
        var positions: [Position] = []
        for i in 0..<7 { positions.append(try await publish(topic, "m\(i)")) }
        // Three entries per ledger: the ledger rolled twice.
        #expect(Set(positions.map(\.ledgerID)).count == 3)
        #expect(positions == positions.sorted())

        let sink = RecordingSink()
        try await subscribe(topic, "s", consumer: 0, sink: sink)
        try await onLoop { topic.flow(subscription: "s", key: ConsumerKey(connectionID: 1, consumerID: 0), permits: 100) }
        await loop.run()
        #expect(sink.deliveries.map(\.body) == (0..<7).map { "m\($0)" })
        #expect(try await onLoop { topic.backlog(subscription: "s") } == 7)

        try await onLoop { [positions] in topic.acknowledge(subscription: "s", positions: [positions[0], positions[1], positions[3]]) }
        let markDelete = try await onLoop { topic.subscriptions["s"]!.cursor.markDelete }
        #expect(markDelete == positions[1])
        #expect(try await onLoop { topic.backlog(subscription: "s") } == 4)
        try await onLoop { [positions] in topic.acknowledgeCumulative(subscription: "s", upTo: positions[6]) }
        #expect(try await onLoop { topic.backlog(subscription: "s") } == 0)
    }

    /// managedLedgerMinLedgerRolloverTimeMinutes: a ledger younger than the minimum age is not
    /// rolled for its entry limit (Pulsar's rule), so all entries stay in one ledger.
    @Test func aLedgerYoungerThanTheMinimumRolloverAgeDoesNotRollAtItsEntryLimit() async throws {
        let broker = try await makeBroker(maxEntriesPerLedger: 3, minLedgerAge: .minutes(10))
        let topic = try await settle(broker.topic(try TopicName(parsing: "min-rollover")))
        var positions: [Position] = []
        for i in 0..<7 { positions.append(try await publish(topic, "m\(i)")) }
        #expect(Set(positions.map(\.ledgerID)).count == 1)
        #expect(positions.map(\.entryID) == Array(0..<7))
    }

    /// Records each entry's outcome in a `PublishBatch`, in the order the topic reports them.
    final class RecordingReplier: PublishReplier, @unchecked Sendable {
        var replies: [(index: Int, position: Position?)] = []
        func published(index: Int, result: Result<Position, BrokerError>) {
            replies.append((index, try? result.get()))
        }
    }

    @Test func batchOfSlicesIsAppendedInOrderAcrossALedgerRoll() async throws {
        let broker = try await makeBroker()
        let topic = try await settle(broker.topic(try TopicName(parsing: "batched")))
        // Five entries written back to back into one buffer, as the connection stages a socket read.
        var buffer = ByteBufferAllocator().buffer(capacity: 16)
        var ends: [Int] = []
        var attributes: [EntryAttributes] = []
        for i in 0..<5 {
            let entryAttributes = EntryAttributes(numMessages: 2, publishTimeMs: 1, key: Array("k\(i)".utf8))
            Entry.write(attributes: entryAttributes, into: &buffer) { $0.writeString("b\(i)") }
            ends.append(buffer.writerIndex)
            attributes.append(entryAttributes)
        }
        let entries = ends.indices.map { i in
            let start = i == 0 ? 0 : ends[i - 1]
            return buffer.getSlice(at: start, length: ends[i] - start)!
        }
        let replier = RecordingReplier()
        try await onLoop { [entries, attributes] in topic.publish(PublishBatch(entries: entries, attributes: attributes, replier: replier)) }
        for _ in 0..<10_000 where replier.replies.count < 5 {
            await loop.run()
            try await Task.sleep(for: .milliseconds(1))
        }
        // Three entries per ledger: the batch spans a roll; the replies still come in batch order.
        #expect(replier.replies.map(\.index) == [0, 1, 2, 3, 4])
        let positions = replier.replies.compactMap(\.position)
        #expect(positions.count == 5)
        #expect(positions == positions.sorted())
        #expect(Set(positions.map(\.ledgerID)).count == 2)
        #expect(try await onLoop { topic.messagesIn } == 10)

        let sink = RecordingSink()
        try await subscribe(topic, "s", consumer: 0, sink: sink)
        try await onLoop { topic.flow(subscription: "s", key: ConsumerKey(connectionID: 1, consumerID: 0), permits: 100) }
        await loop.run()
        #expect(sink.deliveries.map(\.body) == (0..<5).map { "b\($0)" })
        #expect(sink.deliveries.map(\.position) == positions)
    }

    @Test func redeliveryCountsRiseOncePerRequest() async throws {
        let broker = try await makeBroker()
        let topic = try await settle(broker.topic(try TopicName(parsing: "redeliver")))
        let first = try await publish(topic, "a")
        let sink = RecordingSink()
        let key = ConsumerKey(connectionID: 1, consumerID: 0)
        try await subscribe(topic, "s", consumer: 0, type: .shared, sink: sink)
        try await onLoop { topic.flow(subscription: "s", key: key, permits: 10) }
        await loop.run()
        try await onLoop { topic.redeliver(subscription: "s", key: key, positions: [first]) }
        await loop.run()
        try await onLoop { topic.redeliver(subscription: "s", key: key, positions: []) }
        await loop.run()
        #expect(sink.deliveries.map(\.redeliveryCount) == [0, 1, 2])
        // Exclusive (and Failover) track none, as Pulsar's single-active-consumer dispatchers.
        let exclusive = RecordingSink()
        let exclusiveKey = ConsumerKey(connectionID: 1, consumerID: 1)
        try await subscribe(topic, "x", consumer: 1, type: .exclusive, sink: exclusive)
        try await onLoop { topic.flow(subscription: "x", key: exclusiveKey, permits: 10) }
        await loop.run()
        try await onLoop { topic.redeliver(subscription: "x", key: exclusiveKey, positions: []) }
        await loop.run()
        #expect(exclusive.deliveries.map(\.redeliveryCount) == [0, 0])
    }

    @Test func secondExclusiveConsumerIsRefused() async throws {
        let broker = try await makeBroker()
        let topic = try await settle(broker.topic(try TopicName(parsing: "exclusive")))
        try await subscribe(topic, "s", consumer: 0, sink: RecordingSink())
        await #expect(throws: BrokerError.self) {
            try await self.subscribe(topic, "s", consumer: 1, sink: RecordingSink())
        }
    }

    @Test func closedConsumerHandsItsUnackedEntriesToTheOthers() async throws {
        let broker = try await makeBroker()
        let topic = try await settle(broker.topic(try TopicName(parsing: "shared")))
        for i in 0..<4 { _ = try await publish(topic, "m\(i)") }
        let sink = RecordingSink()
        try await subscribe(topic, "s", consumer: 0, type: .shared, sink: sink)
        try await subscribe(topic, "s", consumer: 1, type: .shared, sink: sink)
        try await onLoop { topic.flow(subscription: "s", key: ConsumerKey(connectionID: 1, consumerID: 0), permits: 2) }
        try await onLoop { topic.flow(subscription: "s", key: ConsumerKey(connectionID: 1, consumerID: 1), permits: 2) }
        await loop.run()
        #expect(sink.deliveries.count == 4)
        let ofZero = sink.deliveries.filter { $0.consumerID == 0 }.map(\.body)
        try await onLoop { topic.closeConsumer(subscription: "s", key: ConsumerKey(connectionID: 1, consumerID: 0)) }
        try await onLoop { topic.flow(subscription: "s", key: ConsumerKey(connectionID: 1, consumerID: 1), permits: 10) }
        await loop.run()
        let redelivered = sink.deliveries.dropFirst(4)
        #expect(redelivered.allSatisfy { $0.consumerID == 1 && $0.redeliveryCount == 0 })
        #expect(redelivered.map(\.body).sorted() == ofZero.sorted())
    }

    /// A consumer that joins a Key_Shared subscription while entries are in flight gets no entry
    /// read after it joined until everything read before is acknowledged; per-key order holds.
    @Test func keySharedRecentlyJoinedConsumerWaitsForEarlierEntries() async throws {
        let broker = try await makeBroker()
        let topic = try await settle(broker.topic(try TopicName(parsing: "key-shared")))
        let sink = RecordingSink()
        try await subscribe(topic, "s", consumer: 0, type: .keyShared, sink: sink)
        let first = ConsumerKey(connectionID: 1, consumerID: 0)
        try await onLoop { topic.flow(subscription: "s", key: first, permits: 100) }
        var positions: [Position] = []
        for i in 0..<20 { positions.append(try await publish(topic, "k\(i % 4)-\(i)", key: "k\(i % 4)")) }
        await loop.run()
        #expect(sink.deliveries.count == 20)
        try await subscribe(topic, "s", consumer: 1, type: .keyShared, sink: sink)
        let second = ConsumerKey(connectionID: 1, consumerID: 1)
        try await onLoop { topic.flow(subscription: "s", key: second, permits: 100) }
        for i in 20..<40 { _ = try await publish(topic, "k\(i % 4)-\(i)", key: "k\(i % 4)") }
        await loop.run()
        #expect(!sink.deliveries.contains { $0.consumerID == 1 }, "the new consumer must wait")
        try await onLoop { [positions] in topic.acknowledge(subscription: "s", positions: positions) }
        await loop.run()
        #expect(sink.deliveries.count == 40)
        // Per key, deliveries are in publish order.
        for key in 0..<4 {
            let bodies = sink.deliveries.map(\.body).filter { $0.hasPrefix("k\(key)-") }
            let numbers = bodies.map { Int($0.split(separator: "-")[1])! }
            #expect(numbers == numbers.sorted())
        }
    }

    /// The case the recently-joined rule alone misses: entries read before the join but still waiting
    /// (their consumer had no permits) must not go to the new owner of their key while the old owner
    /// holds earlier entries of that key unacknowledged.
    @Test func keySharedHashMovesOnlyAfterItsDeliveredEntriesAreAcknowledged() async throws {
        // No ledger rolls here: each roll is an async metadata round trip, and hundreds of them on the
        // embedded loop make this test slow and fragile.
        let broker = try await makeBroker(maxEntriesPerLedger: 10_000)
        let topic = try await settle(broker.topic(try TopicName(parsing: "key-shared-draining")))
        let sink = RecordingSink()
        let c0 = ConsumerKey(connectionID: 1, consumerID: 0)
        let c1 = ConsumerKey(connectionID: 1, consumerID: 1)
        let c2 = ConsumerKey(connectionID: 1, consumerID: 2)
        try await subscribe(topic, "s", consumer: 0, type: .keyShared, sink: sink)
        try await subscribe(topic, "s", consumer: 1, type: .keyShared, sink: sink)
        let keys = (0..<24).map { "key-\($0)" }
        func bodies(of consumer: ConsumerKey) -> [String] {
            sink.deliveries.filter { $0.consumerID == consumer.consumerID }.map(\.body)
        }
        // Round 0: c1's keys are delivered at once; c0 (no permits yet) then gets exactly its share.
        for key in keys { _ = try await publish(topic, "\(key)/0", key: key) }
        try await onLoop { topic.flow(subscription: "s", key: c1, permits: 1000) }
        await loop.run()
        let c0Share = UInt32(keys.count - bodies(of: c1).count)
        try await onLoop { topic.flow(subscription: "s", key: c0, permits: c0Share) }
        await loop.run()
        let heldByC0 = Set(bodies(of: c0).map { String($0.split(separator: "/")[0]) })
        #expect(sink.deliveries.count == keys.count && !heldByC0.isEmpty)
        // Rounds 1-3: read while c1 has permits; c0's keys wait in the replay queue (c0 has none).
        for round in 1..<4 {
            for key in keys { _ = try await publish(topic, "\(key)/\(round)", key: key) }
        }
        await loop.run()
        // c2 joins and takes over part of the hash range.
        try await subscribe(topic, "s", consumer: 2, type: .keyShared, sink: sink)
        try await onLoop { topic.flow(subscription: "s", key: c2, permits: 1000) }
        await loop.run()
        let early = bodies(of: c2).filter { heldByC0.contains(String($0.split(separator: "/")[0])) }
        #expect(early.isEmpty, "c2 got entries of keys whose round 0 c0 still holds: \(early)")
        // c0 acknowledges its round 0 (and gets permits): everything flows, per key in order.
        let c0Positions = sink.deliveries.filter { $0.consumerID == 0 }.map(\.position)
        try await onLoop { topic.acknowledge(subscription: "s", positions: c0Positions) }
        try await onLoop { topic.flow(subscription: "s", key: c0, permits: 1000) }
        await loop.run()
        #expect(sink.deliveries.count == keys.count * 4)
        let moved = bodies(of: c2).filter { heldByC0.contains(String($0.split(separator: "/")[0])) }
        #expect(!moved.isEmpty, "no key moved from c0 to c2: the case under test did not happen")
        for key in keys {
            let rounds = sink.deliveries.map(\.body).filter { $0.hasPrefix("\(key)/") }.map { Int($0.split(separator: "/")[1])! }
            #expect(rounds == [0, 1, 2, 3], "\(key): \(rounds)")
        }
    }

    /// Failover: only the active consumer (priority, then name) receives; when it leaves, the
    /// standby continues from the first unacknowledged entry.
    @Test func failoverStandbyContinuesFromFirstUnacknowledged() async throws {
        let broker = try await makeBroker()
        let topic = try await settle(broker.topic(try TopicName(parsing: "failover")))
        var positions: [Position] = []
        for i in 0..<5 { positions.append(try await publish(topic, "m\(i)")) }
        let sink = RecordingSink()
        // Consumer 1 is named "c1", consumer 0 "c0": c0 is active whatever the order of joining.
        try await subscribe(topic, "s", consumer: 1, type: .failover, sink: sink)
        try await subscribe(topic, "s", consumer: 0, type: .failover, sink: sink)
        try await onLoop { topic.flow(subscription: "s", key: ConsumerKey(connectionID: 1, consumerID: 0), permits: 100) }
        try await onLoop { topic.flow(subscription: "s", key: ConsumerKey(connectionID: 1, consumerID: 1), permits: 100) }
        await loop.run()
        #expect(sink.deliveries.allSatisfy { $0.consumerID == 0 })
        #expect(sink.deliveries.map(\.body) == ["m0", "m1", "m2", "m3", "m4"])
        try await onLoop { [positions] in topic.acknowledge(subscription: "s", positions: [positions[0], positions[1], positions[3]]) }
        try await onLoop { topic.closeConsumer(subscription: "s", key: ConsumerKey(connectionID: 1, consumerID: 0)) }
        await loop.run()
        let standby = sink.deliveries.dropFirst(5)
        #expect(standby.allSatisfy { $0.consumerID == 1 })
        #expect(standby.map(\.body) == ["m2", "m4"])
    }

    @Test func cursorSurvivesReload() async throws {
        let broker = try await makeBroker()
        let name = try TopicName(parsing: "reload")
        let topic = try await settle(broker.topic(name))
        var positions: [Position] = []
        for i in 0..<5 { positions.append(try await publish(topic, "m\(i)")) }
        try await subscribe(topic, "s", consumer: 0, sink: RecordingSink())
        try await onLoop { [positions] in topic.acknowledge(subscription: "s", positions: [positions[0], positions[2], positions[4]]) }
        await loop.run()
        try await Task.sleep(for: .milliseconds(20))
        await loop.run()

        // A second broker over the same stores reloads the topic, as a restart does.
        let restarted = BrokerService(
            configuration: BrokerConfiguration(), store: store, metadata: metadata, eventLoopGroup: loop,
            logger: Logger(label: "test"))
        let reloaded = try await settle(restarted.topic(name))
        let sink = RecordingSink()
        try await subscribe(reloaded, "s", consumer: 0, sink: sink)
        try await onLoop { reloaded.flow(subscription: "s", key: ConsumerKey(connectionID: 1, consumerID: 0), permits: 10) }
        await loop.run()
        #expect(sink.deliveries.map(\.body) == ["m1", "m3"])
    }
}
