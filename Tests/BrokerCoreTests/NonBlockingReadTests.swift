import Foundation
@testable import BrokerCore
@testable import ManagedLedger
import LedgerStorage
import Logging
import Metadata
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TestSupport
import Testing

/// A store whose reads take a while, as reads over the network do: each one answers after a short
/// delay; a read made on an event loop thread is counted (the blocking wait it would be).
private final class NetworkLikeStore: ForwardingLedgerStore, @unchecked Sendable {
    let blockingReadsOnALoop = NIOLockedValueBox(0)
    let readsWithoutBlocking = NIOLockedValueBox(0)
    /// Entries whose every read fails (a node that lost them).
    let failing = NIOLockedValueBox<Set<Position>>([])

    override func read(ledgerID: Int64, entryID: Int64) throws(LedgerStoreError) -> ByteBuffer {
        if MultiThreadedEventLoopGroup.currentEventLoop != nil {
            blockingReadsOnALoop.withLockedValue { $0 += 1 }
        } else {
            readsWithoutBlocking.withLockedValue { $0 += 1 }
        }
        Thread.sleep(forTimeInterval: 0.002)
        if failing.withLockedValue({ $0.contains(Position(ledgerID: ledgerID, entryID: entryID)) }) {
            throw .io("storage node 127.0.0.1:3181 unreachable")
        }
        return try inner.read(ledgerID: ledgerID, entryID: entryID)
    }
}

/// Issue 13 (and RELIABILITY finding 2): dispatch never reads the store on the topic's event loop;
/// it fetches ahead through the `LedgerClient` (off the loop) and goes on when the entries are in.
/// On a real one-thread event loop, over a store whose reads are slow.
@Suite struct NonBlockingReadTests {
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private var loop: any EventLoop { group.next() }
    private let store = NetworkLikeStore()
    private let metadata = InMemoryMetadataStore()

    private func makeBroker() async throws -> BrokerService {
        var configuration = BrokerConfiguration()
        configuration.managedLedger.maxEntriesPerLedger = 100
        let broker = BrokerService(
            configuration: configuration, store: LocalLedgerClient(store: store), metadata: metadata, eventLoopGroup: group,
            logger: Logger(label: "test"))
        try await broker.bootstrap()
        return broker
    }

    private func publish(_ topic: Topic, _ text: String) async throws -> Position {
        let promise = loop.makePromise(of: Position.self)
        let attributes = EntryAttributes(numMessages: 1, publishTimeMs: 1, key: Array(text.utf8))
        let encoded = Entry(attributes: attributes, body: ByteBuffer(string: text)).encode()
        loop.execute {
            topic.publish(encoded: encoded, attributes: attributes) { promise.completeWith($0.mapError { $0 as any Error }) }
        }
        return try await promise.futureResult.get()
    }

    private func deliveries(_ sink: RecordingSink, atLeast count: Int) async throws -> [String] {
        let deadline = ContinuousClock.now + .seconds(20)
        while true {
            let bodies = try await loop.submit { sink.deliveries.map(\.body) }.get()
            if bodies.count >= count || ContinuousClock.now > deadline { return bodies }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    @Test(arguments: [SubscriptionType.exclusive, .shared, .keyShared])
    func aSubscriptionCatchesUpWithoutOneReadOnTheLoop(_ type: SubscriptionType) async throws {
        let name = try TopicName(parsing: "catch-up-\(type)")
        let writer = try await makeBroker()
        let first = try await writer.topic(name).get()
        for i in 0..<250 { _ = try await publish(first, "m\(i)") }

        // A new owner: its tail cache is empty, so everything comes from the store.
        let owner = try await makeBroker()
        let topic = try await owner.topic(name).get()
        let sink = RecordingSink()
        let request = SubscribeRequest(
            subscription: "s", type: type, consumerKey: ConsumerKey(connectionID: 1, consumerID: 0),
            consumerName: "c0", priorityLevel: 0, durable: true, start: nil, initialPosition: .earliest)
        try await loop.flatSubmit { topic.subscribe(request, sink: sink) }.get()
        try await loop.submit { topic.flow(subscription: "s", key: request.consumerKey, permits: 1_000) }.get()

        let bodies = try await deliveries(sink, atLeast: 250)
        #expect(bodies == (0..<250).map { "m\($0)" })
        #expect(store.blockingReadsOnALoop.withLockedValue { $0 } == 0)
        #expect(store.readsWithoutBlocking.withLockedValue { $0 } >= 250)
        try await group.shutdownGracefully()
    }

    @Test func anEntryThatCannotBeFetchedIsRetriedThenReportedAndDispatchGoesOn() async throws {
        let name = try TopicName(parsing: "fetch-fails")
        let writer = try await makeBroker()
        let first = try await writer.topic(name).get()
        var positions: [Position] = []
        for i in 0..<10 { positions.append(try await publish(first, "m\(i)")) }
        store.failing.withLockedValue { $0 = [positions[3]] }

        let owner = try await makeBroker()
        let topic = try await owner.topic(name).get()
        let sink = RecordingSink()
        let request = SubscribeRequest(
            subscription: "s", type: .exclusive, consumerKey: ConsumerKey(connectionID: 1, consumerID: 0),
            consumerName: "c0", priorityLevel: 0, durable: true, start: nil, initialPosition: .earliest)
        try await loop.flatSubmit { topic.subscribe(request, sink: sink) }.get()
        try await loop.submit { topic.flow(subscription: "s", key: request.consumerKey, permits: 100) }.get()

        let bodies = try await deliveries(sink, atLeast: 9)
        #expect(bodies == ["m0", "m1", "m2", "m4", "m5", "m6", "m7", "m8", "m9"])
        let unreadable = try await loop.submit { topic.adminInternalStats().unreadableEntries }.get()
        #expect(unreadable == [positions[3]])
        #expect(store.blockingReadsOnALoop.withLockedValue { $0 } == 0)
        try await group.shutdownGracefully()
    }

    @Test func messageExpiryFetchesAheadAndExpiresOnALaterPassWithoutReadingOnTheLoop() async throws {
        let name = try TopicName(parsing: "ttl")
        let writer = try await makeBroker()
        let first = try await writer.topic(name).get()
        for i in 0..<30 { _ = try await publish(first, "m\(i)") }
        let owner = try await makeBroker()
        let topic = try await owner.topic(name).get()
        let request = SubscribeRequest(
            subscription: "s", type: .shared, consumerKey: ConsumerKey(connectionID: 1, consumerID: 0),
            consumerName: "c0", priorityLevel: 0, durable: true, start: nil, initialPosition: .earliest)
        try await loop.flatSubmit { topic.subscribe(request, sink: RecordingSink()) }.get()
        // publishTimeMs is 1 for every entry: all are older than the cutoff. The policy pass runs
        // again and again (every second in the broker) until the fetched entries let it expire them.
        let deadline = ContinuousClock.now + .seconds(20)
        var backlog: Int64? = -1
        while ContinuousClock.now < deadline {
            backlog = try await loop.submit { () -> Int64? in
                topic.expireMessages(olderThanMs: 1_000)
                return topic.backlog(subscription: "s")
            }.get()
            if backlog == 0 { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(backlog == 0)
        #expect(store.blockingReadsOnALoop.withLockedValue { $0 } == 0)
        try await group.shutdownGracefully()
    }

    /// A reader going forward through a backlog (dispatch catching up) finds the next batch fetched
    /// before it asks: taking an entry of the last batch fetched starts the fetch of the one after
    /// it, so the disk works while the loop dispatches.
    @Test func aForwardReadFetchesTheNextBatchBeforeItIsAskedFor() async throws {
        let name = try TopicName(parsing: "forward-fetch")
        let writer = try await makeBroker()
        let first = try await writer.topic(name).get()
        let batch = ManagedLedgerLimits.readAheadBatch
        let forward = ManagedLedgerLimits.forwardReadBatch
        var positions: [Position] = []
        for i in 0..<(batch + forward + 10) { positions.append(try await publish(first, "m\(i)")) }
        let owner = try await makeBroker()
        let ledger = try await owner.topic(name).get().managedLedger

        let promise = loop.makePromise(of: Void.self)
        let firstBatch = Array(positions[0..<batch])
        loop.execute { ledger.readAhead(firstBatch, forward: true) { promise.succeed() } }
        try await promise.futureResult.get()
        let nextAtHandBefore = try await loop.submit { ledger.canReadNow(positions[batch]) }.get()
        #expect(!nextAtHandBefore)
        // Taking the first entry of the batch starts the fetch of the next one.
        let body = try await loop.submit { String(buffer: try ledger.read(positions[0]).body) }.get()
        #expect(body == "m0")
        let deadline = ContinuousClock.now + .seconds(20)
        var nextAtHand = false
        while !nextAtHand, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
            nextAtHand = try await loop.submit { ledger.canReadNow(positions[batch + forward - 1]) }.get()
        }
        #expect(nextAtHand)
        // Nothing past that batch yet: the reader is still more than a forward batch away.
        let thirdAtHand = try await loop.submit { ledger.canReadNow(positions[batch + forward]) }.get()
        #expect(!thirdAtHand)
        #expect(store.blockingReadsOnALoop.withLockedValue { $0 } == 0)
        try await group.shutdownGracefully()
    }

    /// An entry fetched ahead and never taken must not make the read-ahead's bookkeeping grow with
    /// every later fetch that is taken at once.
    @Test func readAheadBookkeepingStaysBoundedBehindAnEntryNobodyTakes() async throws {
        let name = try TopicName(parsing: "read-ahead-bound")
        let writer = try await makeBroker()
        let first = try await writer.topic(name).get()
        var positions: [Position] = []
        for i in 0..<30 { positions.append(try await publish(first, "m\(i)")) }
        let owner = try await makeBroker()
        let ledger = try await owner.topic(name).get().managedLedger

        func fetch(_ wanted: [Position]) async throws {
            let promise = loop.makePromise(of: Void.self)
            loop.execute { ledger.readAhead(wanted) { promise.succeed() } }
            try await promise.futureResult.get()
        }
        try await fetch([positions[0]])  // fetched, never read
        let rounds = 2 * ManagedLedgerLimits.maxReadAheadEntries / 29 + 10
        for _ in 0..<rounds {
            let batch = Array(positions[1...])
            try await fetch(batch)
            let bodies = try await loop.submit { try batch.map { String(buffer: try ledger.read($0).body) } }.get()
            #expect(bodies.count == 29)
        }
        let (slots, stillAtHand) = try await loop.submit { (ledger.readAheadSlotCount, ledger.canReadNow(positions[0])) }.get()
        #expect(rounds * 29 > 2 * ManagedLedgerLimits.maxReadAheadEntries)
        #expect(slots <= 2 * ManagedLedgerLimits.maxReadAheadEntries + 1)
        #expect(stillAtHand, "the entry nobody took was dropped though the read-ahead is far below its limit")
        try await group.shutdownGracefully()
    }

    @Test func turningDeduplicationOnRebuildsItsStateWithoutReadingOnTheLoop() async throws {
        let name = try TopicName(parsing: "dedup-rebuild")
        let writer = try await makeBroker()
        let first = try await writer.topic(name).get()
        for sequenceID in 0..<120 as Range<Int64> {
            let promise = loop.makePromise(of: Position.self)
            let attributes = EntryAttributes(
                numMessages: 1, publishTimeMs: 1, key: [], producerName: sequenceID % 2 == 0 ? "even" : "odd",
                highestSequenceID: sequenceID)
            let encoded = Entry(attributes: attributes, body: ByteBuffer(string: "s\(sequenceID)")).encode()
            loop.execute {
                first.publish(encoded: encoded, attributes: attributes) { promise.completeWith($0.mapError { $0 as any Error }) }
            }
            _ = try await promise.futureResult.get()
        }
        let owner = try await makeBroker()
        let topic = try await owner.topic(name).get()
        try await loop.submit { topic.setDeduplication(enabled: true) }.get()
        let deadline = ContinuousClock.now + .seconds(20)
        var state: (even: Int64, odd: Int64, on: Bool) = (-1, -1, false)
        while ContinuousClock.now < deadline {
            state = try await loop.submit {
                (topic.lastPublishedSequenceID(producerName: "even"), topic.lastPublishedSequenceID(producerName: "odd"),
                 topic.deduplication != nil)
            }.get()
            if state.on { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(state.on && state.even == 118 && state.odd == 119)
        #expect(store.blockingReadsOnALoop.withLockedValue { $0 } == 0)
        try await group.shutdownGracefully()
    }

    /// Found by the 30-minute fault-history run: a rebuild that skipped entries it could not read
    /// reported a stale last_sequence_id after a takeover. It must fail instead, and succeed later.
    @Test func aDeduplicationRebuildThatCannotReadAnEntryFailsInsteadOfSkippingIt() async throws {
        let name = try TopicName(parsing: "dedup-unreadable")
        let writer = try await makeBroker()
        let first = try await writer.topic(name).get()
        var positions: [Position] = []
        for sequenceID in 0..<10 as Range<Int64> {
            let promise = loop.makePromise(of: Position.self)
            let attributes = EntryAttributes(numMessages: 1, publishTimeMs: 1, key: [], producerName: "p", highestSequenceID: sequenceID)
            let encoded = Entry(attributes: attributes, body: ByteBuffer(string: "s\(sequenceID)")).encode()
            loop.execute {
                first.publish(encoded: encoded, attributes: attributes) { promise.completeWith($0.mapError { $0 as any Error }) }
            }
            positions.append(try await promise.futureResult.get())
        }
        store.failing.withLockedValue { $0 = [positions[9]] }
        let owner = try await makeBroker()
        let topic = try await owner.topic(name).get()
        await #expect(throws: BrokerError.self) { try await topic.rebuildDeduplication() }
        #expect(try await loop.submit { topic.deduplication == nil && !topic.deduplicationRebuilding }.get())
        store.failing.withLockedValue { $0 = [] }
        try await topic.rebuildDeduplication()
        #expect(try await loop.submit { topic.lastPublishedSequenceID(producerName: "p") }.get() == 9)
        try await group.shutdownGracefully()
    }
}
