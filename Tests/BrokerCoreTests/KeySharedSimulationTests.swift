@testable import BrokerCore
@testable import ManagedLedger
import NIOCore
import NIOEmbedded
import TestSupport
import Testing

// Seeded, deterministic simulations of a Key_Shared subscription: consumers join, leave, go slow or
// stop reading altogether, on TopicTests' fixture (testing event loop, in-memory stores). No
// timing: every interleaving is chosen by a seeded generator, so a failing seed fails every time.
//
// Liveness is checked at quiescent points (nothing left to do for any consumer that still reads):
// every unacknowledged entry must then be held only by an idle consumer, i.e. its hash is owned by
// one (the selector says so) or one holds delivered, unacknowledged entries of it (draining).
// A consumer that stops reading stalls its own keys, never the others'. At the end everyone reads
// again and everything must be acknowledged; per key, first deliveries come in publish order.

/// What the subscription sent: per consumer, in order (the consumer's socket), and first deliveries.
private final class SimSink: ConsumerSink, @unchecked Sendable {
    var inbox: [UInt64: [Position]] = [:]
    var firstDeliveries: [Position] = []
    private var seen: Set<Position> = []

    func sendMessage(
        consumerID: UInt64, position: Position, partitionIndex: Int32, redeliveryCount: UInt32, ackSet: [Int64]?,
        entry: Entry
    ) {
        inbox[consumerID, default: []].append(position)
        if seen.insert(position).inserted { firstDeliveries.append(position) }
    }
    func flush() {}
    func closeConsumerByBroker(consumerID: UInt64) {}
    func activeConsumerChanged(consumerID: UInt64, isActive: Bool) {}
}

/// A client consumer as the Java/C++ clients behave: `queueSize` permits at subscribe, permits
/// returned in halves as the application takes messages, acknowledgements grouped.
private final class SimClient {
    let key: ConsumerKey
    let queueSize: Int
    /// Chance that a "process one message" step does it (a slow consumer has a small one).
    let speed: Double
    var queue: [Position] = []
    var unsentAcks: [Position] = []
    var permitsToReturn = 0
    /// Receives (its socket is read) but the application takes nothing and acknowledges nothing.
    var idle = false
    init(key: ConsumerKey, queueSize: Int, speed: Double) {
        self.key = key
        self.queueSize = queueSize
        self.speed = speed
    }
}

/// One run: a topic, its Key_Shared subscription "s" (non-durable: no cursor snapshots, so nothing
/// leaves the testing loop) and the simulated clients.
private final class KeySharedSimulation: @unchecked Sendable {
    let loop: NIOAsyncTestingEventLoop
    let topic: Topic
    let sink = SimSink()
    var rng: SplitMix64
    let keys: [String]
    let total: Int
    var clients: [SimClient] = []
    /// The subscription's selector, rebuilt from the same joins and leaves (it is deterministic).
    var mirror = KeySharedSelector()
    var nextConsumerID: UInt64 = 0
    var published: [Position: (key: String, seq: Int)] = [:]
    var publishedCount = 0
    var nextSeq: [String: Int] = [:]
    var failures: [String] = []
    /// A consumer kept idle (and open) until this step, so a join happens while it holds entries.
    var pinned: ConsumerKey?
    var pinnedUntil = 0
    var stepNumber = 0

    init(loop: NIOAsyncTestingEventLoop, topic: Topic, seed: UInt64, keys: Int, total: Int) {
        self.loop = loop
        self.topic = topic
        self.rng = SplitMix64(seed: seed)
        self.keys = (0..<keys).map { "key-\($0)" }
        self.total = total
    }

    /// Runs `body` on the loop (the topic is touched only there; the simulation's own state is
    /// touched by one caller at a time, the loop running only while it waits).
    func onLoop<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        // The body cannot throw, and the loop throws only what the body throws.
        try! await loop.executeInContext(body)
    }

    static func hash(_ key: String) -> UInt32 { Murmur3.stickyKeyHash(Array(key.utf8)) }

    var subscription: Subscription { topic.subscriptions["s"]! }

    func join() async throws {
        let id = nextConsumerID
        nextConsumerID += 1
        let key = ConsumerKey(connectionID: 1, consumerID: id)
        let request = SubscribeRequest(
            subscription: "s", type: .keyShared, consumerKey: key, consumerName: "c\(id)", priorityLevel: 0,
            durable: false, start: nil, initialPosition: .earliest,
            keySharedPolicy: KeySharedPolicy(mode: .autoSplit, allowOutOfOrderDelivery: false))
        await onLoop { [topic, sink] in _ = topic.subscribe(request, sink: sink) }
        await loop.run()
        let joined = await onLoop { [topic] in topic.subscriptions["s"]?.consumer(key) != nil }
        try #require(joined, "consumer \(id) did not join")
        try mirror.add(key, name: "c\(id)", mode: .autoSplit)
        let client = SimClient(
            key: key, queueSize: [5, 10, 50].randomElement(using: &rng)!,
            speed: [1.0, 0.5, 0.1].randomElement(using: &rng)!)
        clients.append(client)
        let permits = UInt32(client.queueSize)
        await onLoop { [topic] in topic.flow(subscription: "s", key: key, permits: permits) }
    }

    func close(_ client: SimClient) async {
        await flushAcks(client, force: true)
        clients.removeAll { $0 === client }
        mirror.remove(client.key)
        sink.inbox[client.key.consumerID] = nil  // what was still on its way is lost with it
        let key = client.key
        await onLoop { [topic] in topic.closeConsumer(subscription: "s", key: key) }
    }

    func publish(_ count: Int) async {
        for _ in 0..<count where publishedCount < total {
            let key = keys.randomElement(using: &rng)!
            let seq = nextSeq[key, default: 0]
            nextSeq[key] = seq + 1
            publishedCount += 1
            let attributes = EntryAttributes(numMessages: 1, publishTimeMs: 1, key: Array(key.utf8))
            let encoded = Entry(attributes: attributes, body: ByteBuffer(string: "\(key):\(seq)")).encode()
            await onLoop { [topic] in
                topic.publish(encoded: encoded, attributes: attributes) { result in
                    if case .success(let position) = result { self.published[position] = (key, seq) }
                }
            }
        }
        await loop.run()
    }

    /// The client's socket is read: what arrived goes to its receiver queue.
    func receive(_ client: SimClient) {
        let id = client.key.consumerID
        guard let arrived = sink.inbox[id], !arrived.isEmpty else { return }
        client.queue.append(contentsOf: arrived)
        sink.inbox[id] = []
    }

    /// The application takes one message (and acknowledges it later, grouped).
    func process(_ client: SimClient) async {
        guard !client.idle, !client.queue.isEmpty else { return }
        client.unsentAcks.append(client.queue.removeFirst())
        client.permitsToReturn += 1
        if client.permitsToReturn >= max(client.queueSize / 2, 1) {
            let key = client.key, permits = UInt32(client.permitsToReturn)
            await onLoop { [topic] in topic.flow(subscription: "s", key: key, permits: permits) }
            client.permitsToReturn = 0
        }
    }

    func flushAcks(_ client: SimClient, force: Bool = false) async {
        guard force || !client.idle, !client.unsentAcks.isEmpty else { return }
        let positions = client.unsentAcks
        await onLoop { [topic] in topic.acknowledge(subscription: "s", positions: positions) }
        client.unsentAcks = []
    }

    /// Runs until nothing is left to do for the consumers that read.
    func quiesce() async {
        while true {
            await loop.run()
            var progressed = false
            for client in clients {
                if sink.inbox[client.key.consumerID]?.isEmpty == false {
                    receive(client)
                    progressed = true
                }
                guard !client.idle else { continue }
                while !client.queue.isEmpty {
                    await process(client)
                    progressed = true
                }
                if !client.unsentAcks.isEmpty {
                    await flushAcks(client)
                    progressed = true
                }
            }
            if !progressed { return }
        }
    }

    /// Unacknowledged entries no idle consumer accounts for (must be none at a quiescent point).
    func stalledEntries() -> [Position] {
        let idle = Set(clients.filter(\.idle).map(\.key))
        var heldByIdle = Set<UInt32>()
        for consumer in subscription.consumers where idle.contains(consumer.key) {
            for position in consumer.pending.keys { heldByIdle.insert(Self.hash(published[position]!.key)) }
        }
        return published.keys.filter { position in
            if subscription.cursor.isAcknowledged(position) { return false }
            let hash = Self.hash(published[position]!.key)
            if heldByIdle.contains(hash) { return false }
            if let owner = mirror.select(hash: hash), idle.contains(owner) { return false }
            return true
        }.sorted()
    }

    func checkpoint(_ label: String) async {
        await quiesce()
        let stalled = await onLoop { self.stalledEntries() }
        if !stalled.isEmpty {
            let sample = stalled.prefix(3).map { "\(published[$0]!.key):\(published[$0]!.seq)" }
            failures.append("\(label): \(stalled.count) entries stalled though their consumers read, e.g. \(sample)")
        }
    }

    func step() async throws {
        stepNumber += 1
        // Scripted: the first consumer stops reading while it holds entries, then a consumer joins.
        if stepNumber == 300, let first = clients.first {
            first.idle = true
            pinned = first.key
            pinnedUntil = 1_500
        }
        if stepNumber == 400, clients.count < 4 { try await join() }
        let free = clients.filter { $0.key != pinned || stepNumber > pinnedUntil }
        let roll = Double.random(in: 0..<1, using: &rng)
        switch roll {
        case ..<0.06:
            await publish(Int.random(in: 1...30, using: &rng))
        case ..<0.07:
            if clients.count < 4 { try await join() }
        case ..<0.08:
            if clients.count > 1, let leaving = free.randomElement(using: &rng) { await close(leaving) }
        case ..<0.095:
            // Never every consumer idle at once.
            if let client = free.randomElement(using: &rng), client.idle || clients.filter({ !$0.idle }).count > 1 {
                client.idle.toggle()
            }
        case ..<0.10:
            await checkpoint("step \(stepNumber)")
        case ..<0.40:
            await loop.run()
        default:
            let client = clients.randomElement(using: &rng)!
            switch Int.random(in: 0..<4, using: &rng) {
            case 0: receive(client)
            case 1, 2: if Double.random(in: 0..<1, using: &rng) < client.speed { await process(client) }
            default: await flushAcks(client)
            }
        }
    }

    func finish() async {
        await publish(total)
        await checkpoint("end, idle consumers still idle")
        for client in clients { client.idle = false }
        await quiesce()
    }

    /// Per key, the sequence numbers in the order of their first delivery.
    func firstDeliveryOrderViolations() -> [String] {
        var seqs: [String: [Int]] = [:]
        for position in sink.firstDeliveries {
            let (key, seq) = published[position]!
            seqs[key, default: []].append(seq)
        }
        return seqs.keys.sorted().compactMap { key in
            let order = seqs[key]!
            return order == order.sorted() ? nil : "\(key): \(order)"
        }
    }
}

extension TopicTests {
    /// Joins, leaves, slow and idle consumers, chosen by a seed: no stall, per-key order kept.
    @Test(arguments: 0..<16)
    func keySharedSeededSimulationStaysLiveAndOrdered(seed: Int) async throws {
        let broker = try await makeBroker(maxEntriesPerLedger: 100_000)
        let topic = try await settle(broker.topic(try TopicName(parsing: "key-shared-sim-\(seed)")))
        let sim = KeySharedSimulation(loop: loop, topic: topic, seed: UInt64(seed), keys: 12, total: 900)
        try await sim.join()
        try await sim.join()
        for _ in 0..<3_000 { try await sim.step() }
        await sim.finish()
        #expect(sim.failures.isEmpty, "seed \(seed): \(sim.failures.prefix(3))")
        let backlog = try await onLoop { topic.backlog(subscription: "s") }
        #expect(backlog == 0, "seed \(seed): not everything was acknowledged")
        #expect(sim.published.count == 900)
        let violations = sim.firstDeliveryOrderViolations()
        #expect(violations.isEmpty, "seed \(seed): first deliveries out of order: \(violations.prefix(3))")
    }

    /// More held entries than one pass reads (a consumer that never grants permits) must not keep
    /// another consumer from its own keys.
    @Test func keySharedHeldBacklogLargerThanAPassDoesNotStarveOtherKeys() async throws {
        let broker = try await makeBroker(maxEntriesPerLedger: 100_000)
        let topic = try await settle(broker.topic(try TopicName(parsing: "key-shared-held-backlog")))
        let sink = SimSink()
        var mirror = KeySharedSelector()
        let idle = ConsumerKey(connectionID: 1, consumerID: 0)
        let live = ConsumerKey(connectionID: 1, consumerID: 1)
        for key in [idle, live] {
            let request = SubscribeRequest(
                subscription: "s", type: .keyShared, consumerKey: key, consumerName: "c\(key.consumerID)",
                priorityLevel: 0, durable: false, start: nil, initialPosition: .earliest,
                keySharedPolicy: KeySharedPolicy(mode: .autoSplit, allowOutOfOrderDelivery: false))
            try await onLoop { _ = topic.subscribe(request, sink: sink) }
            try mirror.add(key, name: "c\(key.consumerID)", mode: .autoSplit)
        }
        func key(ownedBy owner: ConsumerKey, prefix: String) throws -> String {
            try #require((0..<10_000).lazy.map { "\(prefix)-\($0)" }
                .first { mirror.select(hash: KeySharedSimulation.hash($0)) == owner })
        }
        let idleKey = try key(ownedBy: idle, prefix: "idle")
        let liveKey = try key(ownedBy: live, prefix: "live")
        func publish(_ key: String, _ count: Int) async throws {
            try await onLoop {
                for seq in 0..<count {
                    let attributes = EntryAttributes(numMessages: 1, publishTimeMs: 1, key: Array(key.utf8))
                    let encoded = Entry(attributes: attributes, body: ByteBuffer(string: "\(key):\(seq)")).encode()
                    topic.publish(encoded: encoded, attributes: attributes) { _ in }
                }
            }
        }
        try await publish(idleKey, Subscription.maxEntriesExaminedPerDispatchPass + 100)
        try await publish(liveKey, 20)
        // `idle` never sends FLOW; `live` does, twice (every FLOW is a new pass).
        try await onLoop { topic.flow(subscription: "s", key: live, permits: 100) }
        try await onLoop { topic.flow(subscription: "s", key: live, permits: 1) }
        let got = sink.inbox[live.consumerID, default: []].count
        #expect(got == 20, "the live consumer got \(got) of its 20 entries")
        #expect(sink.inbox[idle.consumerID, default: []].isEmpty)
    }
}
