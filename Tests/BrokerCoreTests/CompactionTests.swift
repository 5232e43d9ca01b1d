@testable import BrokerCore
@testable import ManagedLedger
import LedgerStorage
import Logging
import Metadata
import NIOCore
import NIOEmbedded
import TestSupport
import Testing

/// A protocol's entries as compaction sees them, reduced to text: a body is `key=value` messages
/// separated by `;` (a batch), `=value` has no key, `key=` is a tombstone, `!` an opaque entry.
struct TextCompactionCodec: CompactionCodec {
    func messages(of entry: Entry) throws(BrokerError) -> [CompactionMessage]? {
        let text = String(buffer: entry.body)
        if text == "!" { return nil }
        return text.split(separator: ";", omittingEmptySubsequences: false).map { message in
            let parts = message.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = parts[0].isEmpty ? nil : String(parts[0])
            return CompactionMessage(key: key, isTombstone: parts.count < 2 || parts[1].isEmpty)
        }
    }

    func retaining(_ kept: [Int], of entry: Entry) throws(BrokerError) -> Entry {
        let messages = String(buffer: entry.body).split(separator: ";", omittingEmptySubsequences: false)
        var attributes = entry.attributes
        attributes.numMessages = Int32(kept.count)
        return Entry(attributes: attributes, body: ByteBuffer(string: kept.map { String(messages[$0]) }.joined(separator: ";")))
    }
}

/// Compaction over the in-memory stores: the compactor's result, what a compacted subscription is
/// dispatched (compacted ledger, then the log after the horizon), redelivery, restarts.
@Suite struct CompactionTests {
    let loop = NIOAsyncTestingEventLoop()
    let store = LocalLedgerClient(store: InMemoryLedgerStore(), readsInline: true)
    let metadata = InMemoryMetadataStore()

    func makeBroker() async throws -> BrokerService {
        var configuration = BrokerConfiguration()
        configuration.managedLedger.maxEntriesPerLedger = 3
        configuration.compactionCodec = TextCompactionCodec()
        let broker = BrokerService(
            configuration: configuration, store: store, metadata: metadata, eventLoopGroup: loop, logger: Logger(label: "test"))
        try await broker.bootstrap()
        return broker
    }

    func publish(_ topic: Topic, _ text: String) async throws {
        let messages = Int32(text.split(separator: ";", omittingEmptySubsequences: false).count)
        let attributes = EntryAttributes(numMessages: text == "!" ? 1 : messages, publishTimeMs: 1)
        let promise = loop.makePromise(of: Position.self)
        let encoded = Entry(attributes: attributes, body: ByteBuffer(string: text)).encode()
        try await loop.executeInContext {
            topic.publish(encoded: encoded, attributes: attributes) { promise.completeWith($0.mapError { $0 as any Error }) }
        }
        _ = try await loop.settle(promise.futureResult)
    }

    func compact(_ topic: Topic) async throws {
        try await loop.onLoop { try topic.triggerCompaction() }
        for _ in 0..<5_000 {
            let state = try await loop.onLoop { topic.compaction }
            if state.status == .success { return }
            #expect(state.status == .running, "\(state)")
            try await Task.sleep(for: .milliseconds(1))
        }
        Issue.record("compaction did not finish")
    }

    func subscribe(
        _ topic: Topic, _ name: String, type: SubscriptionType = .exclusive, readCompacted: Bool = true, sink: RecordingSink
    ) async throws {
        let request = SubscribeRequest(
            subscription: name, type: type, consumerKey: ConsumerKey(connectionID: 1, consumerID: 1), consumerName: "c",
            priorityLevel: 0, durable: true, start: nil, initialPosition: .earliest, readCompacted: readCompacted)
        _ = try await loop.settle(loop.flatSubmit { topic.subscribe(request, sink: sink) })
    }

    func flow(_ topic: Topic, _ name: String, _ permits: UInt32) async throws {
        try await loop.onLoop { topic.flow(subscription: name, key: ConsumerKey(connectionID: 1, consumerID: 1), permits: permits) }
        for _ in 0..<20 {
            await loop.run()
            try await Task.sleep(for: .milliseconds(1))
        }
    }

    @Test func compactedSubscriptionGetsLatestPerKeyThenTheLog() async throws {
        let broker = try await makeBroker()
        let topic = try await loop.settle(broker.topic(try TopicName(parsing: "table")))
        for text in ["a=1", "b=1;a=2;c=1", "=nokey", "c=", "!", "d=1;d=2"] { try await publish(topic, text) }
        try await compact(topic)
        try await publish(topic, "a=3")
        let sink = RecordingSink()
        try await subscribe(topic, "reader", sink: sink)
        try await flow(topic, "reader", 100)
        // b and a of the batch (c's value deleted later), the opaque entry, the last d, then the log.
        #expect(sink.deliveries.map(\.body) == ["b=1;a=2", "!", "d=2", "a=3"])
        // A subscription that does not read compacted sees everything.
        let plain = RecordingSink()
        try await subscribe(topic, "plain", readCompacted: false, sink: plain)
        try await flow(topic, "plain", 100)
        #expect(plain.deliveries.count == 7)

        // Redelivered compacted entries come from the compacted ledger again.
        try await loop.onLoop { topic.redeliver(subscription: "reader", key: ConsumerKey(connectionID: 1, consumerID: 1), positions: []) }
        try await flow(topic, "reader", 100)
        #expect(sink.deliveries.map(\.body).suffix(4) == ["b=1;a=2", "!", "d=2", "a=3"])

        // A second compaction folds in what came after the first one's horizon.
        try await compact(topic)
        let again = RecordingSink()
        try await subscribe(topic, "again", sink: again)
        try await flow(topic, "again", 100)
        #expect(again.deliveries.map(\.body) == ["b=1", "!", "d=2", "a=3"])
        let stats = try await loop.onLoop { topic.adminStats() }
        #expect(stats.subscriptions[Topic.compactionSubscription]?.backlogEntries == 0)
        #expect(stats.compaction?.lastRemovedEventCount ?? 0 > 0)
    }

    @Test func compactedReadsOnlyOnExclusiveOrFailover() async throws {
        let broker = try await makeBroker()
        let topic = try await loop.settle(broker.topic(try TopicName(parsing: "shared-compacted")))
        await #expect(throws: BrokerError(.notAllowed, "readCompacted only allowed on failover or exclusive subscriptions")) {
            try await subscribe(topic, "s", type: .shared, sink: RecordingSink())
        }
    }

    @Test func compactedLedgerIsFoundAfterARestart() async throws {
        let broker = try await makeBroker()
        let name = try TopicName(parsing: "restart-compacted")
        let topic = try await loop.settle(broker.topic(name))
        for text in ["k=1", "k=2", "j=1"] { try await publish(topic, text) }
        try await compact(topic)
        // A broker on the same stores loads the record and reads the compacted ledger's index.
        let restarted = try await makeBroker()
        let reloaded = try await loop.settle(restarted.topic(name))
        let sink = RecordingSink()
        try await subscribe(reloaded, "after-restart", sink: sink)
        try await flow(reloaded, "after-restart", 100)
        #expect(sink.deliveries.map(\.body) == ["k=2", "j=1"])
        let last = try await loop.settle(loop.flatSubmit { reloaded.lastMessage(subscription: "after-restart") })
        #expect(last?.last == sink.deliveries.last?.position)
    }
}
