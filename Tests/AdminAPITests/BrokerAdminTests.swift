import BrokerCore
import ManagedLedger
import Foundation
import LedgerStorage
import Logging
import Metadata
import NIOCore
import NIOPosix
import Prometheus
import Testing

@testable import AdminAPI

/// Tenants, namespaces and topic admin operations over the in-memory stores, on a real event loop.
@Suite struct BrokerAdminTests {
    func withBroker(_ body: (BrokerService) async throws -> Void) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let broker = BrokerService(
            configuration: BrokerConfiguration(), store: LocalLedgerClient(store: InMemoryLedgerStore(), readsInline: true), metadata: InMemoryMetadataStore(),
            eventLoopGroup: group, logger: Logger(label: "test"))
        try await broker.bootstrap()
        do {
            try await body(broker)
        } catch {
            try await group.shutdownGracefully()
            throw error
        }
        try await group.shutdownGracefully()
    }

    func expectCode(_ code: BrokerError.Code, _ body: () async throws -> Void) async {
        do {
            try await body()
            Issue.record("expected \(code), nothing was thrown")
        } catch let error as BrokerError {
            #expect(error.code == code, "\(error)")
        } catch {
            Issue.record("expected \(code), got \(error)")
        }
    }

    func publish(_ broker: BrokerService, _ name: TopicName, _ bodies: [String], publishTimeMs: Int64? = nil) async throws {
        let topic = try await broker.topic(name).get()
        for body in bodies {
            let attributes = EntryAttributes(
                numMessages: 1, publishTimeMs: publishTimeMs ?? Int64(Date().timeIntervalSince1970 * 1000))
            let encoded = Entry(attributes: attributes, body: ByteBuffer(string: body)).encode()
            let promise = topic.eventLoop.makePromise(of: Position.self)
            topic.eventLoop.execute {
                topic.publish(encoded: encoded, attributes: attributes) { promise.completeWith($0.mapError { $0 as any Error }) }
            }
            _ = try await promise.futureResult.get()
        }
    }

    @Test func tenantsAndNamespaces() async throws {
        try await withBroker { broker in
            #expect(try await broker.namespaces.tenants() == ["public"])
            #expect(try await broker.namespaces.list(ofTenant: "public") == ["public/default"])
            #expect(try await broker.namespaces.policies("public/default") == NamespacePolicies())

            try await broker.namespaces.createTenant("acme", info: TenantInfo(adminRoles: ["ops"], allowedClusters: ["standalone"]))
            await expectCode(.conflict) { try await broker.namespaces.createTenant("acme") }
            await expectCode(.badRequest) { try await broker.namespaces.createTenant("no/slash") }
            #expect(try await broker.namespaces.tenantInfo("acme").adminRoles == ["ops"])
            await expectCode(.notFound) { _ = try await broker.namespaces.tenantInfo("nobody") }

            await expectCode(.notFound) { try await broker.namespaces.create("nobody/ns") }
            try await broker.namespaces.create("acme/orders")
            await expectCode(.conflict) { try await broker.namespaces.create("acme/orders") }
            await expectCode(.preconditionFailed) { try await broker.namespaces.deleteTenant("acme") }

            try await broker.namespaces.updatePolicies("acme/orders") {
                $0.messageTTLSeconds = 60
                $0.backlogQuotas["destination_storage"] = BacklogQuota(limitSizeBytes: 10, policy: .producerException)
            }
            let policies = try await broker.namespaces.policies("acme/orders")
            #expect(policies.messageTTLSeconds == 60)
            #expect(policies.backlogQuota(.destinationStorage)?.policy == .producerException)
            await expectCode(.badRequest) {
                try await broker.namespaces.updatePolicies("acme/orders") { $0.messageTTLSeconds = -1 }
            }

            try await broker.createTopic(TopicName(parsing: "persistent://acme/orders/t1"))
            await expectCode(.preconditionFailed) { try await broker.namespaces.delete("acme/orders") }
            try await broker.deleteTopic(TopicName(parsing: "persistent://acme/orders/t1"), force: false)
            try await broker.namespaces.delete("acme/orders")
            try await broker.namespaces.deleteTenant("acme")
            #expect(try await broker.namespaces.tenants() == ["public"])
        }
    }

    @Test func partitionedTopics() async throws {
        try await withBroker { broker in
            let name = try TopicName(parsing: "persistent://public/default/p")
            try await broker.createPartitionedTopic(name, partitions: 2)
            await expectCode(.conflict) { try await broker.createPartitionedTopic(name, partitions: 2) }
            await expectCode(.conflict) { try await broker.createTopic(name) }
            await expectCode(.badRequest) { try await broker.createPartitionedTopic(TopicName(parsing: "q"), partitions: 0) }
            #expect(try await broker.partitionedTopicMetadata(name).partitions == 2)
            #expect(try await broker.partitionCount(name) == 2)
            await expectCode(.conflict) { try await broker.updatePartitionedTopic(name, partitions: 1) }
            try await broker.updatePartitionedTopic(name, partitions: 3)
            #expect(try await broker.listPartitionedTopics(namespace: "public/default", domain: .persistent) == ["\(name)"])
            #expect(try await broker.listTopics(namespace: "public/default", domain: .persistent) == [
                "\(name)-partition-0", "\(name)-partition-1", "\(name)-partition-2",
            ])
            // A partition exists as soon as the partitioned topic does.
            _ = try await broker.topicStats(TopicName(parsing: "\(name)-partition-1"))
            await expectCode(.notFound) { _ = try await broker.topicStats(TopicName(parsing: "\(name)-partition-7")) }
            try await broker.deleteTopic(name, force: false)
            await expectCode(.notFound) { _ = try await broker.partitionedTopicMetadata(name) }
            #expect(try await broker.listTopics(namespace: "public/default", domain: .persistent) == [])
        }
    }

    @Test func subscriptionsSkipExpirePeekReset() async throws {
        try await withBroker { broker in
            let name = try TopicName(parsing: "persistent://public/default/s")
            await expectCode(.notFound) { _ = try await broker.topicStats(name) }
            try await broker.createTopic(name)
            await expectCode(.conflict) { try await broker.createTopic(name) }
            let hourAgoMs = Int64(Date().timeIntervalSince1970 * 1000) - 3_600_000
            try await publish(broker, name, ["old-0", "old-1"], publishTimeMs: hourAgoMs)
            try await publish(broker, name, ["new-0", "new-1", "new-2"])

            try await broker.createSubscription(name, subscription: "from-start", start: .earliest)
            try await broker.createSubscription(name, subscription: "from-end", start: .latest)
            await expectCode(.conflict) { try await broker.createSubscription(name, subscription: "from-end", start: .latest) }
            #expect(try await broker.subscriptions(of: name) == ["from-end", "from-start"])

            var stats = try await broker.topicStats(name)
            #expect(stats.messagesIn == 5)
            #expect(stats.subscriptions["from-start"]?.backlogEntries == 5)
            #expect(stats.subscriptions["from-end"]?.backlogEntries == 0)
            #expect(stats.storageBytes > 0 && stats.backlogBytes > 0)

            let first = try await broker.peekMessage(name, subscription: "from-start", nth: 1)
            #expect(String(buffer: first.entry.body) == "old-0")
            await expectCode(.notFound) { _ = try await broker.peekMessage(name, subscription: "from-start", nth: 6) }

            #expect(try await broker.expireMessages(name, subscription: "from-start", olderThanSeconds: 60) == 2)
            #expect(try await broker.skipMessages(name, subscription: "from-start", count: 1) == 1)
            stats = try await broker.topicStats(name)
            #expect(stats.subscriptions["from-start"]?.backlogEntries == 2)
            #expect(String(buffer: try await broker.peekMessage(name, subscription: "from-start", nth: 1).entry.body) == "new-1")

            try await broker.resetCursor(name, subscription: "from-start", publishTimeMs: 0)
            #expect(try await broker.topicStats(name).subscriptions["from-start"]?.backlogEntries == 5)
            try await broker.resetCursor(name, subscription: "from-start", to: .at(first.position))
            #expect(try await broker.topicStats(name).subscriptions["from-start"]?.backlogEntries == 5)
            try await broker.clearBacklog(name, subscription: "from-start")
            #expect(try await broker.topicStats(name).subscriptions["from-start"]?.backlogEntries == 0)

            let internalStats = try await broker.topicInternalStats(name)
            #expect(internalStats.entries == 5)
            #expect(internalStats.cursors["from-start"]?.markDelete == internalStats.lastConfirmed)

            await expectCode(.notFound) { try await broker.deleteSubscription(name, subscription: "nope", force: false) }
            try await broker.deleteSubscription(name, subscription: "from-end", force: false)
            #expect(try await broker.subscriptions(of: name) == ["from-start"])

            let collector = MetricsCollector(broker: broker, registry: PrometheusCollectorRegistry())
            let text = await collector.scrape()
            #expect(text.contains(#"pulsar_in_messages_total{cluster="standalone",namespace="public/default",topic="persistent://public/default/s"} 5"#))
            #expect(text.contains(#"pulsar_subscription_back_log{"#))

            try await broker.deleteTopic(name, force: false)
            await expectCode(.notFound) { _ = try await broker.topicStats(name) }
            let after = await collector.scrape()
            #expect(!after.contains("topic=\"persistent://public/default/s\""))
        }
    }
}
