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

/// The transaction buffer as a pure value: the read limit is the oldest ongoing transaction's
/// lower bound, aborted transactions are kept (for Kafka's aborted list) until their marker is trimmed.
@Suite struct TransactionBufferStateTests {
    let t1 = TransactionID(mostBits: 0, leastBits: 1)
    let t2 = TransactionID(mostBits: 0, leastBits: 2)

    @Test func readLimitFollowsTheOldestOngoingTransaction() {
        var state = TransactionBufferState()
        #expect(state.readLimit == nil && state.stableOffset == nil)
        state.register(t1, at: Position(ledgerID: 3, entryID: 5), offset: 10, producerName: "p1")
        state.register(t2, at: Position(ledgerID: 3, entryID: 9), offset: 20, producerName: "p2")
        state.register(t1, at: Position(ledgerID: 3, entryID: 11), offset: 30, producerName: "p1")  // again: no change
        #expect(state.readLimit == Position(ledgerID: 3, entryID: 5) && state.stableOffset == 10)
        state.ended(t1, committed: true, markerPosition: Position(ledgerID: 3, entryID: 12), markerOffset: 25)
        #expect(state.readLimit == Position(ledgerID: 3, entryID: 9) && state.stableOffset == 20)
        #expect(state.aborted.isEmpty)
        state.ended(t2, committed: false, markerPosition: Position(ledgerID: 4, entryID: 0), markerOffset: 26)
        #expect(state.readLimit == nil && state.stableOffset == nil)
        #expect(state.aborted.map(\.id) == [t2])
        // Overlap with a fetched range [from, to).
        #expect(state.aborted(overlapping: 0, 20).isEmpty)
        #expect(state.aborted(overlapping: 0, 21).map(\.id) == [t2])
        #expect(state.aborted(overlapping: 26, 40).map(\.id) == [t2])
        #expect(state.aborted(overlapping: 27, 40).isEmpty)
        // Ending an unknown or ended transaction changes nothing.
        state.ended(t2, committed: false, markerPosition: Position(ledgerID: 4, entryID: 1), markerOffset: 27)
        #expect(state.aborted.count == 1)
        state.trim(before: Position(ledgerID: 4, entryID: 0))
        #expect(state.aborted.count == 1)
        state.trim(before: Position(ledgerID: 5, entryID: 0))
        #expect(state.aborted.isEmpty)
    }

    @Test func anUnknownMarkerOffsetKeepsTheAbortedTransactionListed() {
        var state = TransactionBufferState()
        state.register(t1, at: Position(ledgerID: 1, entryID: 0), offset: 0, producerName: "p")
        state.ended(t1, committed: false, markerPosition: Position(ledgerID: 1, entryID: 4), markerOffset: nil)
        #expect(state.aborted(overlapping: 1_000, 2_000).map(\.id) == [t1])
    }
}

/// Participants that record every end they carry out, and fail (a crashed broker) once `failAfter`
/// calls were made.
actor RecordingParticipants: TransactionParticipants {
    var partitionEnds: [(TransactionID, String, Bool)] = []
    var subscriptionEnds: [(TransactionID, TransactionSubscription, Bool)] = []
    var offsetCommits: [[TransactionOffsetCommit]] = []
    var failAfter: Int?
    private var calls = 0

    init(failAfter: Int? = nil) { self.failAfter = failAfter }

    private func step() throws {
        calls += 1
        if let failAfter, calls > failAfter { throw BrokerError(.serviceNotReady, "crashed") }
    }

    func endTransaction(_ transaction: TransactionID, onPartition topic: String, committed: Bool) async throws {
        try step()
        partitionEnds.append((transaction, topic, committed))
    }

    func endTransaction(_ transaction: TransactionID, onSubscription subscription: TransactionSubscription, committed: Bool) async throws {
        try step()
        subscriptionEnds.append((transaction, subscription, committed))
    }

    func commitOffsets(_ commits: [TransactionOffsetCommit]) async throws {
        try step()
        offsetCommits.append(commits)
    }
}

/// The coordinator over the in-memory metadata store: statuses, time-outs, repeated ends, and a
/// seeded simulation of crashes between participants (a new coordinator over the same store
/// finishes every transaction the way it began to end, and never the other way).
@Suite struct TransactionCoordinatorTests {
    let logger = Logger(label: "test")

    @Test func endsGoThroughEveryParticipantAndAreAnsweredAgainTheSameWay() async throws {
        let metadata = InMemoryMetadataStore()
        let participants = RecordingParticipants()
        let coordinator = TransactionCoordinator(metadata: metadata, participants: participants, logger: logger)
        try await coordinator.recover()
        let id = try await coordinator.newTransaction(timeoutMs: 60_000)
        #expect(id.mostBits == 0 && id.leastBits == 1)
        try await coordinator.addPartitions(id, ["a", "b", "a"])
        try await coordinator.addSubscriptions(id, [TransactionSubscription(topic: "in", subscription: "s")])
        try await coordinator.addOffsetCommits(id, [TransactionOffsetCommit(group: "g", topic: "in", partition: 0, offset: 5, metadata: nil)])
        #expect(coordinator.mayWrite(id, to: "a") && !coordinator.mayWrite(id, to: "c"))
        try await coordinator.end(id, committed: true)
        #expect(!coordinator.mayWrite(id, to: "a"))
        #expect(await coordinator.status(id) == .committed)
        #expect(await participants.partitionEnds.map(\.1) == ["a", "b"])
        #expect(await participants.subscriptionEnds.count == 1)
        #expect(await participants.offsetCommits.count == 1)
        try await coordinator.end(id, committed: true)  // repeated: answered by the first
        await #expect(throws: BrokerError.self) { try await coordinator.end(id, committed: false) }
        await #expect(throws: BrokerError.self) { try await coordinator.addPartitions(id, ["c"]) }
        #expect(try await metadata.list(prefix: MetadataKeys.transactions(ofCoordinator: 0)).isEmpty)
        let stats = await coordinator.currentStatistics()
        #expect(stats.created == 1 && stats.committed == 1 && stats.open == 0)

        // An aborted transaction commits no offsets.
        let other = try await coordinator.newTransaction(timeoutMs: 60_000)
        try await coordinator.addOffsetCommits(other, [TransactionOffsetCommit(group: "g", topic: "in", partition: 0, offset: 9, metadata: nil)])
        try await coordinator.end(other, committed: false)
        #expect(await participants.offsetCommits.count == 1)
        await #expect(throws: BrokerError.self) { try await coordinator.end(TransactionID(mostBits: 0, leastBits: 99), committed: true) }
    }

    @Test func aTransactionPastItsTimeoutIsAborted() async throws {
        let metadata = InMemoryMetadataStore()
        let participants = RecordingParticipants()
        let coordinator = TransactionCoordinator(metadata: metadata, participants: participants, logger: logger)
        try await coordinator.recover()
        let id = try await coordinator.newTransaction(timeoutMs: 50)
        try await coordinator.addPartitions(id, ["t"])
        for _ in 0..<400 where await coordinator.status(id) != .aborted {
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(await coordinator.status(id) == .aborted)
        #expect(await participants.partitionEnds.map(\.2) == [false])
        #expect(await coordinator.currentStatistics().timedOut == 1)
        await #expect(throws: BrokerError.self) { try await coordinator.end(id, committed: true) }
        await #expect(throws: BrokerError.self) { try await coordinator.newTransaction(timeoutMs: 10_000_000) }
    }

    @Test func crashesBetweenParticipantsAreFinishedByTheNextCoordinator() async throws {
        for seed in UInt64(1)...40 {
            var random = SplitMix64(seed: seed)
            let metadata = InMemoryMetadataStore()
            let crashAt = Int.random(in: 0...6, using: &random)
            let first = RecordingParticipants(failAfter: crashAt)
            let coordinator = TransactionCoordinator(metadata: metadata, participants: first, retryDelayMs: 1, logger: logger)
            try await coordinator.recover()
            var intended: [TransactionID: Bool] = [:]
            var partitionsOf: [TransactionID: Set<String>] = [:]
            var opened: [TransactionID] = []
            for _ in 0..<Int.random(in: 1...4, using: &random) {
                let id = try await coordinator.newTransaction(timeoutMs: 600_000)
                let partitions = (0..<Int.random(in: 1...3, using: &random)).map { "topic-\($0)" }
                try await coordinator.addPartitions(id, partitions)
                partitionsOf[id] = Set(partitions)
                if Bool.random(using: &random) {
                    try await coordinator.addSubscriptions(id, [TransactionSubscription(topic: "in", subscription: "s")])
                }
                opened.append(id)
            }
            for id in opened where Bool.random(using: &random) {
                let committed = Bool.random(using: &random)
                intended[id] = committed
                // The crash may come in the middle: the caller hears an error, the record says how it ends.
                try? await coordinator.end(id, committed: committed)
            }
            // The process dies: a new coordinator over the same store takes over.
            await coordinator.stop()
            let second = RecordingParticipants()
            let successor = TransactionCoordinator(metadata: metadata, participants: second, retryDelayMs: 1, logger: logger)
            try await successor.recover()
            for id in opened {
                if let committed = intended[id] {
                    // Finished by the first coordinator (its record gone), or by the successor.
                    let firstStatus = await coordinator.status(id)
                    let record = try await metadata.get(MetadataKeys.transaction(coordinator: 0, sequence: id.leastBits))
                    let finishedFirst = firstStatus?.isEnded == true && record == nil
                    if !finishedFirst {
                        for _ in 0..<400 where await successor.status(id)?.isEnded != true {
                            try await Task.sleep(for: .milliseconds(2))
                        }
                    }
                    let status = finishedFirst ? await coordinator.status(id) : await successor.status(id)
                    #expect(status == (committed ? .committed : .aborted), "seed \(seed)")
                    let ends = await first.partitionEnds.filter { $0.0 == id } + second.partitionEnds.filter { $0.0 == id }
                    #expect(ends.allSatisfy { $0.2 == committed }, "seed \(seed): ended the other way")
                    // Every partition got its marker (some twice: a marker is idempotent on the topic).
                    #expect(Set(ends.map(\.1)) == partitionsOf[id], "seed \(seed)")
                } else {
                    // Never ended: still open with the successor, and it can still end.
                    #expect(await successor.status(id) == .open, "seed \(seed)")
                    try await successor.end(id, committed: false)
                }
            }
        }
    }
}

/// A topic's transaction buffer with its subscriptions, over the in-memory stores: dispatch stops at
/// the oldest open transaction, skips aborted ones, and a restarted broker (one topic's marker
/// written, the other's not: a crash between markers) holds back and skips the same entries.
@Suite struct TopicTransactionTests {
    let loop = NIOAsyncTestingEventLoop()
    let store = LocalLedgerClient(store: InMemoryLedgerStore(), readsInline: true)
    let metadata = InMemoryMetadataStore()
    let key = ConsumerKey(connectionID: 1, consumerID: 1)

    func makeBroker() async throws -> BrokerService {
        let broker = BrokerService(
            configuration: BrokerConfiguration(), store: store, metadata: metadata, eventLoopGroup: loop, logger: Logger(label: "test"))
        try await broker.bootstrap()
        return broker
    }

    func publish(_ topic: Topic, _ text: String, in transaction: TransactionID? = nil) async throws {
        var attributes = EntryAttributes(numMessages: 1, publishTimeMs: 1, producerName: "p")
        attributes.transactionID = transaction
        let promise = loop.makePromise(of: Position.self)
        let batch = PublishBatch(
            entries: [Entry(attributes: attributes, body: ByteBuffer(string: text)).encode()], attributes: [attributes],
            replier: ClosurePublishReplier { promise.completeWith($0.mapError { $0 as any Error }) })
        try await loop.executeInContext {
            if let transaction { topic.publish(batch, transaction: transaction, producerName: "p") } else { topic.publish(batch) }
        }
        _ = try await loop.settle(promise.futureResult)
    }

    func end(_ topic: Topic, _ transaction: TransactionID, committed: Bool) async throws {
        _ = try await loop.settle(loop.flatSubmit { topic.endTransaction(transaction, committed: committed) })
    }

    func subscribe(_ topic: Topic, _ sink: RecordingSink) async throws {
        let request = SubscribeRequest(
            subscription: "s", type: .exclusive, consumerKey: key, consumerName: "c", priorityLevel: 0, durable: true,
            start: nil, initialPosition: .earliest)
        _ = try await loop.settle(loop.flatSubmit { topic.subscribe(request, sink: sink) })
        try await loop.onLoop { topic.flow(subscription: "s", key: key, permits: 100) }
        try await settle()
    }

    func settle() async throws {
        for _ in 0..<20 {
            await loop.run()
            try await Task.sleep(for: .milliseconds(1))
        }
    }

    @Test func dispatchStopsAtTheOpenTransactionAndSkipsAbortedOnes() async throws {
        let broker = try await makeBroker()
        let topic = try await loop.settle(broker.topic(try TopicName(parsing: "tx")))
        let sink = RecordingSink()
        try await subscribe(topic, sink)
        let t1 = TransactionID(mostBits: 0, leastBits: 1)
        let t2 = TransactionID(mostBits: 0, leastBits: 2)
        try await publish(topic, "before")
        #expect(topic.publishedTransactionState == nil)
        try await publish(topic, "t1", in: t1)
        try await publish(topic, "after")
        try await settle()
        #expect(sink.deliveries.map(\.body) == ["before"])
        // What other threads read (a Kafka fetch) follows the buffer.
        #expect(topic.publishedTransactionState?.ongoing.map(\.id) == [t1])
        try await end(topic, t1, committed: true)
        try await settle()
        #expect(sink.deliveries.map(\.body) == ["before", "t1", "after"])
        try await publish(topic, "t2", in: t2)
        try await publish(topic, "last")
        try await end(topic, t2, committed: false)
        try await settle()
        #expect(sink.deliveries.map(\.body) == ["before", "t1", "after", "last"])
        // Ending twice, or a transaction that never wrote here, changes nothing.
        try await end(topic, t2, committed: false)
        try await end(topic, TransactionID(mostBits: 0, leastBits: 9), committed: true)
        let state = try await loop.onLoop { topic.transactionState }
        #expect(state.ongoing.isEmpty && state.aborted.map(\.id) == [t2])
    }

    @Test func aRestartedBrokerHoldsBackAndSkipsTheSameEntries() async throws {
        let t = TransactionID(mostBits: 0, leastBits: 1)
        let aborted = TransactionID(mostBits: 0, leastBits: 2)
        do {
            let broker = try await makeBroker()
            let a = try await loop.settle(broker.topic(try TopicName(parsing: "tx-a")))
            let b = try await loop.settle(broker.topic(try TopicName(parsing: "tx-b")))
            try await publish(a, "a-aborted", in: aborted)
            try await end(a, aborted, committed: false)
            try await publish(a, "a1", in: t)
            try await publish(b, "b1", in: t)
            try await publish(b, "b-plain")
            // The commit's first marker is written; the process dies before the second.
            try await end(a, t, committed: true)
        }
        let broker = try await makeBroker()
        let a = try await loop.settle(broker.topic(try TopicName(parsing: "tx-a")))
        let b = try await loop.settle(broker.topic(try TopicName(parsing: "tx-b")))
        let sinkA = RecordingSink()
        let sinkB = RecordingSink()
        try await subscribe(a, sinkA)
        try await subscribe(b, sinkB)
        #expect(sinkA.deliveries.map(\.body) == ["a1"])
        #expect(sinkB.deliveries.isEmpty)
        // The recovered coordinator writes the missing marker (and repeats the one written: no change).
        try await end(b, t, committed: true)
        try await end(a, t, committed: true)
        try await settle()
        #expect(sinkB.deliveries.map(\.body) == ["b1", "b-plain"])
        #expect(sinkA.deliveries.map(\.body) == ["a1"])
    }
}
