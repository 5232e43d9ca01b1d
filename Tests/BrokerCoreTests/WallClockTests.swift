@testable import BrokerCore
@testable import ManagedLedger
import LedgerStorage
import Logging
import Metadata
import NIOCore
import NIOPosix
import Testing

/// Time-based behaviour runs on the injected wall clock: the test moves a `ManualWallClock`
/// instead of sleeping. On a real one-thread event loop.
@Suite struct WallClockTests {
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private var loop: any EventLoop { group.next() }
    private let clock = ManualWallClock(nowMs: 1_800_000_000_000)

    private func makeTopic(_ name: String, maxLedgerAge: TimeAmount = .hours(4)) async throws -> Topic {
        var configuration = BrokerConfiguration()
        configuration.managedLedger.clock = clock.clock
        configuration.managedLedger.maxLedgerAge = maxLedgerAge
        let broker = BrokerService(
            configuration: configuration, store: LocalLedgerClient(store: InMemoryLedgerStore(), readsInline: true), metadata: InMemoryMetadataStore(),
            eventLoopGroup: group, logger: Logger(label: "test"))
        try await broker.bootstrap()
        return try await broker.topic(try TopicName(parsing: name)).get()
    }

    /// Publishes one message stamped with the clock's time, as a client on that clock would.
    @discardableResult
    private func publish(_ topic: Topic, _ text: String) async throws -> Position {
        let promise = loop.makePromise(of: Position.self)
        let attributes = EntryAttributes(numMessages: 1, publishTimeMs: clock.nowMs, key: Array(text.utf8))
        let encoded = Entry(attributes: attributes, body: ByteBuffer(string: text)).encode()
        loop.execute {
            topic.publish(encoded: encoded, attributes: attributes) { promise.completeWith($0.mapError { $0 as any Error }) }
        }
        return try await promise.futureResult.get()
    }

    @Test func messageTTLExpiresWhenTheClockPassesIt() async throws {
        let topic = try await makeTopic("ttl-on-the-clock")
        try await loop.flatSubmit { topic.createSubscriptionIfMissing("s") }.get()
        for i in 0..<5 { try await publish(topic, "m\(i)") }
        var policies = EffectivePolicies()
        policies.messageTTLSeconds = 60
        let applied = policies
        func backlogAfterPolicyPass() async throws -> Int64? {
            try await loop.submit { () -> Int64? in
                topic.enforce(applied)
                return topic.backlog(subscription: "s")
            }.get()
        }
        #expect(try await backlogAfterPolicyPass() == 5)
        clock.advance(byMs: 59_000)
        #expect(try await backlogAfterPolicyPass() == 5)
        clock.advance(byMs: 2_000)
        #expect(try await backlogAfterPolicyPass() == 0)
        try await group.shutdownGracefully()
    }

    @Test func aLedgerRollsWhenTheClockMakesItOld() async throws {
        let topic = try await makeTopic("rollover-on-the-clock", maxLedgerAge: .minutes(10))
        let first = try await publish(topic, "a")
        let second = try await publish(topic, "b")
        #expect(second.ledgerID == first.ledgerID)
        clock.advance(byMs: 11 * 60 * 1000)
        let third = try await publish(topic, "c")
        #expect(third.ledgerID > first.ledgerID)
        try await group.shutdownGracefully()
    }
}
