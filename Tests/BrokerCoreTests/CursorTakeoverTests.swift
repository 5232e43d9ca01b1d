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


/// Metadata that runs `beforePut` once, just before the first put of a key with `prefix`: another
/// broker's write landing between this broker's read of a record and its write of it.
private final class InterleavingMetadata: MetadataStore, @unchecked Sendable {
    let inner: any MetadataStore
    let prefix: String
    private let hook: NIOLockedValueBox<(@Sendable () async throws -> Void)?>

    init(_ inner: any MetadataStore, prefix: String, beforePut: @escaping @Sendable () async throws -> Void) {
        self.inner = inner
        self.prefix = prefix
        self.hook = NIOLockedValueBox(beforePut)
    }

    func get(_ key: String) async throws -> VersionedValue? { try await inner.get(key) }

    func put(_ key: String, value: [UInt8], expectedVersion: Int64?) async throws -> Int64 {
        if key.hasPrefix(prefix), let beforePut = hook.withLockedValue({ hook in defer { hook = nil }; return hook }) {
            try await beforePut()
        }
        return try await inner.put(key, value: value, expectedVersion: expectedVersion)
    }

    func delete(_ key: String, expectedVersion: Int64?) async throws { try await inner.delete(key, expectedVersion: expectedVersion) }
    func list(prefix: String) async throws -> [String] { try await inner.list(prefix: prefix) }
    func increment(_ key: String) async throws -> Int64 { try await inner.increment(key) }
    func close() async { await inner.close() }
}

/// RELIABILITY finding 5: a subscription's acknowledgements across a takeover. The new owner fences
/// the cursor ledger, but a previous owner still running rolls to a fresh cursor ledger of its own
/// when its next snapshot is due there (always, after it recovered the cursor itself); unless the
/// new owner has claimed the cursor's record, that roll swings the record and the old owner's
/// client is told its acknowledgements are durable while the new owner never sees them.
@Suite struct CursorTakeoverTests {
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    /// One store several brokers share, as the storage nodes of a cluster are: a topic's new owner
    /// fences what it recovers.
    private let store = LocalLedgerClient(store: InMemoryLedgerStore())
    private let metadata = InMemoryMetadataStore()
    private let name: TopicName
    private let consumer = ConsumerKey(connectionID: 1, consumerID: 0)

    init() throws { name = try TopicName(parsing: "persistent://public/default/takeover") }

    private func makeBroker(metadata: (any MetadataStore)? = nil) async throws -> BrokerService {
        let broker = BrokerService(
            configuration: BrokerConfiguration(), store: store, metadata: metadata ?? self.metadata,
            eventLoopGroup: group, logger: Logger(label: "test"))
        try await broker.bootstrap()
        return broker
    }

    /// A first owner creates subscription `s` on three entries; returns their positions.
    private func firstOwnerWritesThreeEntries() async throws -> [Position] {
        let first = try await makeBroker()
        let topic = try await first.topic(name).get()
        try await topic.eventLoop.flatSubmit { topic.createSubscriptionIfMissing("s") }.get()
        var positions: [Position] = []
        for i in 0..<3 {
            let promise = topic.eventLoop.makePromise(of: Position.self)
            let attributes = EntryAttributes(numMessages: 1, publishTimeMs: 1, key: [])
            let encoded = Entry(attributes: attributes, body: ByteBuffer(string: "m\(i)")).encode()
            topic.eventLoop.execute {
                topic.publish(encoded: encoded, attributes: attributes) { promise.completeWith($0.mapError { $0 as any Error }) }
            }
            positions.append(try await promise.futureResult.get())
        }
        return positions
    }

    /// Acknowledges `position` on `topic` and closes a consumer: the close's outcome says whether
    /// the acknowledgement was reported durable.
    private func acknowledgeAndClose(_ topic: Topic, _ position: Position) async -> Result<Void, any Error> {
        do {
            try await topic.eventLoop.flatSubmit {
                topic.acknowledge(subscription: "s", positions: [position])
                return topic.closeConsumer(subscription: "s", key: consumer)
            }.get()
            return .success(())
        } catch {
            return .failure(error)
        }
    }

    private func backlog(_ topic: Topic) async throws -> Int64? {
        try await topic.eventLoop.submit { topic.backlog(subscription: "s") }.get()
    }

    @Test func aPreviousOwnerCannotReportAnAcknowledgementDurableThatTheNewOwnerWillNotSee() async throws {
        let positions = try await firstOwnerWritesThreeEntries()
        // The zombie-to-be recovered the cursor itself, so its next snapshot rolls to a new ledger.
        let zombie = try await makeBroker().topic(name).get()
        let newOwner = try await makeBroker().topic(name).get()

        let close = await acknowledgeAndClose(zombie, positions[0])
        #expect(throws: (any Error).self, "the zombie's client was told its ack is durable") { try close.get() }
        #expect(try await backlog(newOwner) == 3)
        // Whoever loads the topic next finds what the new owner has, not the zombie's ack.
        let next = try await makeBroker().topic(name).get()
        #expect(try await backlog(next) == 3)
        try await group.shutdownGracefully()
    }

    @Test func anOpenWhoseRecordChangesMeanwhileStartsAgainFromTheNewRecord() async throws {
        let positions = try await firstOwnerWritesThreeEntries()
        let zombie = try await makeBroker().topic(name).get()
        let zombieClose = NIOLockedValueBox<Result<Void, any Error>?>(nil)
        // The zombie's roll lands between the new owner's read of the cursor's record and its claim.
        let interleaving = InterleavingMetadata(metadata, prefix: MetadataKeys.cursors(ofTopic: name.metadataPath)) { [self] in
            let result = await acknowledgeAndClose(zombie, positions[0])
            zombieClose.withLockedValue { $0 = result }
        }
        let newOwner = try await makeBroker(metadata: interleaving).topic(name).get()

        let close = try #require(zombieClose.withLockedValue { $0 })
        #expect(throws: Never.self) { try close.get() }
        #expect(try await backlog(newOwner) == 2, "the new owner lost an acknowledgement reported durable")
        let next = try await makeBroker().topic(name).get()
        #expect(try await backlog(next) == 2)
        try await group.shutdownGracefully()
    }
}
