import CRC32C
import ManagedLedger
import Foundation
import Logging
import Metadata
import NIOCore

// Topic admin operations (what `/admin/v2/{persistent|non-persistent}/...` does), protocol-neutral.
// Control plane: async methods on `BrokerService`; everything that reads or changes a topic hops
// to the topic's event loop once (`submit`/`flatSubmit`) and runs there.

/// One entry returned by a peek: where it is and what is stored.
public struct PeekedEntry: Sendable {
    public var position: Position
    public var partitionIndex: Int32
    public var entry: Entry
}

/// The metric values of one loaded topic, read at scrape time.
public struct TopicMetricsSnapshot: Sendable {
    public var topic: TopicName
    public var stats: TopicStatistics
}

// MARK: topic-side (event loop)

extension Topic {
    func adminStats() -> TopicStatistics {
        eventLoop.preconditionInEventLoop()
        var subscriptionStats: [String: SubscriptionStatistics] = [:]
        var messagesOut: Int64 = 0
        var bytesOut: Int64 = 0
        for (subscriptionName, subscription) in subscriptions where !Replication.isReplicatorCursor(subscriptionName) {
            let consumers = subscription.consumers.map { consumer in
                let rates = consumer.rateMeter.rates
                return ConsumerStatistics(
                    name: consumer.name, availablePermits: max(consumer.permits, 0), unackedMessages: consumer.unackedMessages,
                    messagesOut: consumer.messagesOut, bytesOut: consumer.bytesOut,
                    messageRateOut: rates.count == 3 ? rates[0] : 0, byteRateOut: rates.count == 3 ? rates[1] : 0,
                    redeliverRate: rates.count == 3 ? rates[2] : 0, connectedSinceMs: consumer.connectedSinceMs,
                    address: consumer.address)
            }
            let out = consumers.reduce(0) { $0 + $1.messagesOut }
            let outBytes = consumers.reduce(0) { $0 + $1.bytesOut }
            messagesOut += out
            bytesOut += outBytes
            let subscriptionRates = subscriptionRateMeters[subscriptionName]?.rates ?? []
            subscriptionStats[subscriptionName] = SubscriptionStatistics(
                backlogEntries: subscription.cursor.backlogEntries, unackedMessages: subscription.unackedMessages,
                messagesOut: out, bytesOut: outBytes,
                messageRateOut: subscriptionRates.first ?? 0, byteRateOut: subscriptionRates.dropFirst().first ?? 0,
                backlogBytes: estimatedBytes(after: subscription.cursor.markDelete),
                acknowledgedRangeCount: subscription.cursor.individuallyAcked.allRanges.count,
                redeliverRate: subscriptionRates.count == 3 ? subscriptionRates[2] : 0,
                lastExpireTimestampMs: subscription.lastExpireTimestampMs,
                type: subscription.type, isDurable: subscription.isDurable, consumers: consumers)
        }
        let slowest = subscriptions.values.filter(\.isDurable).map(\.cursor.markDelete).min()
        var statistics = TopicStatistics(
            messagesIn: messagesIn, bytesIn: bytesIn, messagesOut: messagesOut,
            storageBytes: storageSizeBytes, backlogBytes: slowest.map { estimatedBytes(after: $0) } ?? 0,
            producers: producers.values.sorted(),
            subscriptions: subscriptionStats, unreadableEntries: Int64(unreadablePositions.count))
        statistics.bytesOut = bytesOut
        let rates = rateMeter.rates
        if rates.count == 4 {
            (statistics.messageRateIn, statistics.byteRateIn, statistics.messageRateOut, statistics.byteRateOut) =
                (rates[0], rates[1], rates[2], rates[3])
        }
        statistics.writeLatency = writeLatency
        statistics.entrySizes = entrySizes
        statistics.compaction = compaction
        statistics.topicEpoch = producerAccess.epoch > 0 ? producerAccess.epoch : nil
        statistics.offloadedStorageBytes = managedLedger.offloadedSizeBytes
        statistics.offloadLagBytes = managedLedger.offloadLagBytes
        statistics.offloads = managedLedger.offloadCounters
        statistics.replication = replicationStatistics()
        countProducerRun()
        statistics.publishers = producerDetails.compactMap { key, details -> ProducerStatistics? in
            guard let name = producers[key] else { return nil }
            let counters = producerCounters[name] ?? (0, 0)
            let rates = producerRateMeters[name]?.rates ?? []
            return ProducerStatistics(
                producerID: details.producerID, name: name, accessMode: details.accessMode, messagesIn: counters.messages,
                bytesIn: counters.bytes, messageRateIn: rates.first ?? 0, byteRateIn: rates.dropFirst().first ?? 0,
                connectedSinceMs: details.connectedSinceMs, address: details.address)
        }.sorted { $0.name < $1.name }
        for key in producerDetails.keys where producers[key] == nil { producerDetails[key] = nil }
        return statistics
    }

    /// Entries recorded unreadable that the managed ledger still holds, in log order.
    var unreadablePositions: [Position] {
        managedLedger.unreadableEntries.keys.filter { managedLedger.contains($0) }.sorted()
    }

    /// Bytes of the entries after `position`, from each ledger's average entry size.
    private func estimatedBytes(after position: Position) -> Int64 {
        var bytes: Int64 = 0
        for ledger in managedLedger.ledgers where ledger.ledgerID >= position.ledgerID && ledger.entries > 0 {
            let after = ledger.ledgerID == position.ledgerID
                ? max(0, ledger.entries - max(position.entryID + 1, 0)) : ledger.entries
            bytes += ledger.sizeBytes / ledger.entries * after
        }
        return bytes
    }

    func adminInternalStats() -> ManagedLedgerStatistics {
        eventLoop.preconditionInEventLoop()
        let ledgers = managedLedger.ledgers
        var cursors: [String: CursorStatistics] = [:]
        for (subscriptionName, subscription) in subscriptions {
            let cursor = subscription.cursor
            let read = max(subscription.lastRead, cursor.markDelete)
            cursors[subscriptionName] = CursorStatistics(
                markDelete: cursor.markDelete,
                readPosition: managedLedger.next(after: read) ?? Position(ledgerID: read.ledgerID, entryID: read.entryID + 1),
                acknowledgedRanges: cursor.individuallyAcked.allRanges.map {
                    AcknowledgedRange(ledgerID: $0.ledgerID, entries: $0.entries)
                },
                backlogEntries: cursor.backlogEntries, isDurable: cursor.durable)
        }
        let current = ledgers.last
        return ManagedLedgerStatistics(
            entriesAdded: numberOfEntries, entries: numberOfEntries, totalBytes: storageSizeBytes,
            currentLedgerEntries: current?.entries ?? 0, currentLedgerBytes: current?.sizeBytes ?? 0,
            lastConfirmed: managedLedger.positionBeforeNextEntry,
            ledgers: ledgers.map {
                LedgerStatistics(ledgerID: $0.ledgerID, entries: $0.entries, bytes: $0.sizeBytes, offloaded: $0.offloaded != nil)
            },
            cursors: cursors, unreadableEntries: unreadablePositions)
    }

    func existingSubscription(_ subscriptionName: String) throws(BrokerError) -> Subscription {
        guard let subscription = subscriptions[subscriptionName] else { throw .subscriptionNotFound(subscriptionName) }
        return subscription
    }

    /// Closes every consumer of `subscription` (the clients reconnect).
    func closeConsumers(of subscription: Subscription) {
        for consumer in subscription.consumers {
            subscription.removeConsumer(consumer.key)
            consumer.sink.closeConsumerByBroker(consumerID: consumer.key.consumerID)
        }
    }

    /// The first `limit` unacknowledged entries of a subscription, in log order.
    func unacknowledgedPositions(of subscription: Subscription, limit: Int64) -> [Position] {
        var positions: [Position] = []
        var position = subscription.cursor.markDelete
        var examined: Int64 = 0
        while Int64(positions.count) < limit, examined < AdminLimits.maxEntriesExaminedPerOperation,
              let next = managedLedger.next(after: position)
        {
            examined += 1
            position = next
            if !subscription.cursor.isAcknowledged(next) { positions.append(next) }
        }
        return positions
    }

    /// Acknowledges, on the subscription's behalf, every entry published before `cutoffMs`.
    /// Returns how many entries were newly acknowledged. An unreadable entry goes with the expired
    /// entries after it (published later, so it is older); it stops nothing.
    ///
    /// Called off the loop: positions and acknowledgements are looked at on it, batch by batch, and
    /// the reads are awaited off it.
    func expireMessages(subscription subscriptionName: String, publishedBeforeMs cutoffMs: Int64) async throws -> Int64 {
        let subscription = try await eventLoop.submit { () throws in try self.existingSubscription(subscriptionName) }.get()
        // Whole blocks the ledgers' time indexes show as older go at once, unread (as TTL does);
        // the block holding the first entry at or after the cutoff is then scanned.
        let (skipped, start) = try await eventLoop.submit { () -> (Int64, Position) in
            let markDelete = subscription.cursor.markDelete
            guard let known = self.managedLedger.lastEntryKnownPublished(before: cutoffMs, after: markDelete), known > markDelete else {
                return (0, markDelete)
            }
            let backlog = subscription.cursor.backlogEntries
            subscription.acknowledgeCumulative(upTo: known)
            return (backlog - subscription.cursor.backlogEntries, subscription.cursor.markDelete)
        }.get()
        var position: Position? = start
        var lastExpired: Position?
        var expired: Int64 = skipped
        var unreadable: Int64 = 0
        var examined: Int64 = 0
        scan: while examined < AdminLimits.maxEntriesExaminedPerOperation {
            let batch = await managedLedger.positions(after: position, limit: ManagedLedgerLimits.readAheadBatch)
            guard !batch.isEmpty else { break }
            let times = await managedLedger.publishTimes(of: batch)
            let acknowledged = try await eventLoop.submit { batch.map { subscription.cursor.isAcknowledged($0) } }.get()
            for index in batch.indices {
                examined += 1
                position = batch[index]
                guard let publishTime = times[index] else {
                    if !acknowledged[index] { unreadable += 1 }
                    continue
                }
                if publishTime >= cutoffMs { break scan }
                if !acknowledged[index] { expired += 1 }
                expired += unreadable
                unreadable = 0
                lastExpired = batch[index]
            }
        }
        if let lastExpired {
            try await eventLoop.submit { subscription.acknowledgeCumulative(upTo: lastExpired) }.get()
        }
        if expired > 0 {
            try await eventLoop.submit { subscription.lastExpireTimestampMs = self.managedLedger.clock.nowMs() }.get()
        }
        return expired
    }

    /// Acknowledges the next `count` unacknowledged entries of a subscription (reading none, so an
    /// unreadable entry can be skipped); returns how many there were.
    func skipMessages(subscription subscriptionName: String, count: Int64) throws(BrokerError) -> Int64 {
        eventLoop.preconditionInEventLoop()
        let subscription = try existingSubscription(subscriptionName)
        let positions = unacknowledgedPositions(of: subscription, limit: count)
        subscription.acknowledge(positions)
        return Int64(positions.count)
    }
}

// MARK: broker-side (control plane)

extension BrokerService {
    /// `T-partition-i` → `T` (nil for a name without a partition suffix).
    static func partitionedParent(_ name: TopicName) -> TopicName? {
        guard name.partitionIndex >= 0, let range = name.localName.range(of: "-partition-", options: .backwards) else {
            return nil
        }
        var parent = name
        parent.localName = String(name.localName[..<range.lowerBound])
        return parent
    }

    func requireNamespace(_ namespace: String) async throws {
        _ = try Namespaces.splitNamespace(namespace)
        guard try await metadata.get(MetadataKeys.namespace(namespace)) != nil else { throw BrokerError.namespaceNotFound(namespace) }
    }

    func partitionedRecord(_ name: TopicName) async throws -> (PartitionedTopicRecord, Int64)? {
        guard let stored = try await metadata.get(MetadataKeys.partitionedTopic(name.metadataPath)) else { return nil }
        return (try Namespaces.decodeRecord(PartitionedTopicRecord.self, stored.value, key: MetadataKeys.partitionedTopic(name.metadataPath)), stored.version)
    }

    /// Whether a non-partitioned topic (or one partition) exists: loaded, or stored.
    func adminTopicExists(_ name: TopicName) async throws -> Bool {
        if loadedTopic(name) != nil { return true }
        guard name.domain == .persistent else { return false }
        if try await metadata.get(MetadataKeys.managedLedger(name.metadataPath)) != nil { return true }
        if let parent = Self.partitionedParent(name), let (record, _) = try await partitionedRecord(parent) {
            return name.partitionIndex < record.partitions
        }
        return false
    }

    /// The loaded topic, loading it only if it exists (admin views never create topics).
    func existingTopic(_ name: TopicName) async throws -> Topic {
        if let topic = loadedTopic(name) { return topic }
        try await requireNamespace(name.namespaceName)
        guard try await adminTopicExists(name) else {
            if try await partitionedRecord(name) != nil {
                throw BrokerError.invalidArgument("\(name) is a partitioned topic: ask about one of its partitions (\(name)-partition-0, ...)")
            }
            throw BrokerError.topicNotFound(name)
        }
        return try await topic(name).get()
    }

    // MARK: listing

    /// Topics of a namespace in one domain: stored or loaded ones, plus the partitions of partitioned topics.
    public func listTopics(namespace: String, domain: TopicName.Domain) async throws -> [String] {
        try await requireNamespace(namespace)
        var names = Set<String>()
        if domain == .persistent {
            names.formUnion(try await topics(inNamespace: namespace))
        }
        for parent in try await listPartitionedTopics(namespace: namespace, domain: domain) {
            let name = try TopicName(parsing: parent)
            if let (record, _) = try await partitionedRecord(name) {
                for index in 0..<record.partitions { names.insert("\(parent)-partition-\(index)") }
            }
        }
        for topic in loadedTopics where topic.name.domain == domain && topic.name.namespaceName == namespace {
            names.insert("\(topic.name)")
        }
        for topic in loadedNonPersistentTopics where topic.name.domain == domain && topic.name.namespaceName == namespace {
            names.insert("\(topic.name)")
        }
        if domain == .nonPersistent, cluster != nil {
            // Those the cluster's other brokers serve.
            let prefix = MetadataKeys.nonPersistentTopics(inNamespace: namespace)
            for key in try await metadata.list(prefix: prefix) { names.insert("non-persistent://\(namespace)/\(key.dropFirst(prefix.count))") }
        }
        return names.sorted()
    }

    /// What GET_TOPICS_OF_NAMESPACE answers for `mode` (Pulsar's PERSISTENT, NON_PERSISTENT, ALL):
    /// the topics and partitions of those domains (non-persistent ones: those loaded on this broker
    /// or partitioned), sorted, and their hash (`topicListHash`).
    public func topicsOfNamespace(_ namespace: String, persistent: Bool, nonPersistent: Bool) async throws -> (topics: [String], hash: String) {
        var topics: [String] = []
        if persistent { topics += try await listTopics(namespace: namespace, domain: .persistent) }
        if nonPersistent { topics += try await listTopics(namespace: namespace, domain: .nonPersistent) }
        topics.sort()
        return (topics, Self.topicListHash(topics))
    }

    /// A topic list's hash, as a client compares it between polls: the CRC32C of the sorted names
    /// joined by commas, in hex.
    public static func topicListHash(_ sortedTopics: [String]) -> String {
        String(CRC32C.checksum(Array(sortedTopics.joined(separator: ",").utf8)), radix: 16)
    }

    /// Partitioned topics of a namespace in one domain.
    public func listPartitionedTopics(namespace: String, domain: TopicName.Domain) async throws -> [String] {
        try await requireNamespace(namespace)
        let prefix = MetadataKeys.partitionedTopics(inNamespace: namespace, domain: domain.rawValue)
        return try await metadata.list(prefix: prefix).map { "\(domain.rawValue)://\(namespace)/\($0.dropFirst(prefix.count))" }
    }

    // MARK: create, update, delete

    /// Creates a non-partitioned persistent topic (loads it, which records its managed ledger).
    public func createTopic(_ name: TopicName) async throws {
        try await requireNamespace(name.namespaceName)
        if try await adminTopicExists(name) { throw BrokerError.topicExists(name) }
        if try await partitionedRecord(name) != nil { throw BrokerError.partitionedTopicExists(name) }
        guard name.domain == .persistent else {
            throw BrokerError(.notAllowed, "non-persistent topics exist while clients use them: nothing to create")
        }
        if name.partitionIndex < 0 {
            let limit = topicLimit(try await policies(namespace: name.namespaceName))
            try await checkTopicLimit(name.namespaceName, adding: 1, limit: limit, code: .preconditionFailed)
        }
        _ = try await topic(name).get()
        logger.info("topic.created", metadata: ["topic": "\(name)"])
    }

    /// Creates a partitioned topic with `partitions` partitions (`T-partition-0` ... are loaded on first use).
    public func createPartitionedTopic(_ name: TopicName, partitions: Int) async throws {
        guard (1...AdminLimits.maxPartitions).contains(partitions) else { throw BrokerError.invalidPartitions(partitions) }
        guard name.partitionIndex < 0 else {
            throw BrokerError.invalidArgument("a partitioned topic's name must not end in -partition-N: \(name)")
        }
        try await requireNamespace(name.namespaceName)
        if try await adminTopicExists(name) { throw BrokerError.topicExists(name) }
        let limit = topicLimit(try await policies(namespace: name.namespaceName))
        try await checkTopicLimit(name.namespaceName, adding: partitions, limit: limit, code: .preconditionFailed)
        do {
            try await metadata.put(
                MetadataKeys.partitionedTopic(name.metadataPath), value: Namespaces.encodeRecord(PartitionedTopicRecord(partitions: partitions)),
                expectedVersion: -1)
        } catch MetadataStoreError.badVersion {
            throw BrokerError.partitionedTopicExists(name)
        }
        logger.info("topic.partitioned-created", metadata: ["topic": "\(name)", "partitions": "\(partitions)"])
    }

    /// Raises the number of partitions; only increases are allowed (409 otherwise).
    public func updatePartitionedTopic(_ name: TopicName, partitions: Int) async throws {
        guard (1...AdminLimits.maxPartitions).contains(partitions) else { throw BrokerError.invalidPartitions(partitions) }
        try await requireNamespace(name.namespaceName)
        guard let (record, version) = try await partitionedRecord(name) else { throw BrokerError.partitionedTopicNotFound(name) }
        guard partitions > record.partitions else {
            throw BrokerError.partitionsNotIncreased(current: record.partitions, requested: partitions)
        }
        do {
            try await metadata.put(
                MetadataKeys.partitionedTopic(name.metadataPath), value: Namespaces.encodeRecord(PartitionedTopicRecord(partitions: partitions)),
                expectedVersion: version)
        } catch MetadataStoreError.badVersion {
            throw BrokerError.concurrentModification("partitioned topic \(name)")
        }
        logger.info("topic.partitions-updated", metadata: [
            "topic": "\(name)", "partitions": "\(partitions)", "partitions.before": "\(record.partitions)",
        ])
    }

    /// `{"partitions": N}`: N for a partitioned topic, 0 for an existing non-partitioned one; 404 otherwise.
    /// A topic's partitions: n for a partitioned topic, 0 for a non-partitioned one, nil when it
    /// does not exist. Creates nothing.
    public func existingPartitionCount(_ name: TopicName) async throws -> Int? {
        try await requireNamespace(name.namespaceName)
        let count = try await partitionCount(name)
        if count > 0 { return count }
        return try await adminTopicExists(name) ? 0 : nil
    }

    public func partitionedTopicMetadata(_ name: TopicName) async throws -> PartitionedTopicRecord {
        try await requireNamespace(name.namespaceName)
        if let (record, _) = try await partitionedRecord(name) { return record }
        guard try await adminTopicExists(name) else { throw BrokerError.topicNotFound(name) }
        return PartitionedTopicRecord(partitions: 0)
    }

    /// Deletes a non-partitioned topic (or a partition): its subscriptions, ledgers and metadata.
    /// Refused (412) while it has producers or consumers, unless `force` (consumers are closed then;
    /// producers cannot be closed by the broker yet, so they always refuse it).
    public func deleteTopic(_ name: TopicName, force: Bool) async throws {
        if name.partitionIndex < 0, try await partitionedRecord(name) != nil {
            try await deletePartitionedTopic(name, force: force)
            return
        }
        let topic = try await existingTopic(name)
        let subscriptionNames = try await topic.eventLoop.submit { () throws -> [String] in
            if !topic.producers.isEmpty {
                throw force ? BrokerError.topicHasProducers(name) : BrokerError.topicHasActiveClients(name)
            }
            if !force, topic.subscriptions.contains(where: { !Replication.isReplicatorCursor($0.key) && !$0.value.consumers.isEmpty }) {
                throw BrokerError.topicHasActiveClients(name)
            }
            // Its replicators go with it (a deleted topic is not replicated; Pulsar's delete does the same).
            topic.stopReplicators()
            topic.replicatorFactory = nil
            for subscription in topic.subscriptions.values { topic.closeConsumers(of: subscription) }
            return topic.subscriptionNames
        }.get()
        try await deleteSubscriptions(of: topic, subscriptionNames)
        try await topic.eventLoop.flatSubmit {
            topic.eventLoop.makeFutureWithTask { try await topic.managedLedger.delete() }
        }.get()
        try await topic.deleteCompactedLedger()
        try await topic.deleteTransactionBuffer()
        try await metadata.delete(MetadataKeys.topicEpoch(name.metadataPath), expectedVersion: nil)
        try await metadata.delete(MetadataKeys.topicPolicies(name.metadataPath), expectedVersion: nil)
        forgetTopic(name)
        // Cursors of subscriptions that never loaded (a damaged record) would otherwise outlive the topic.
        for key in try await metadata.list(prefix: MetadataKeys.cursors(ofTopic: name.metadataPath)) {
            try await metadata.delete(key, expectedVersion: nil)
        }
        // A topic's schema goes with it, as in Pulsar (a partition's belongs to its partitioned topic).
        if name.partitionIndex < 0 { try await schemas.removeAll(name.schemaName) }
        logger.info("topic.deleted", metadata: ["topic": "\(name)", "force": "\(force)"])
    }

    private func deleteSubscriptions(of topic: Topic, _ names: [String]) async throws {
        let idle = ConsumerKey(connectionID: 0, consumerID: 0)
        for subscriptionName in names {
            try await topic.eventLoop.flatSubmit { () -> EventLoopFuture<Void> in
                guard topic.subscriptions[subscriptionName] != nil else { return topic.eventLoop.makeSucceededVoidFuture() }
                return topic.unsubscribe(subscription: subscriptionName, key: idle)
            }.get()
        }
    }

    /// Deletes a partitioned topic: every partition, then the partitioned record.
    public func deletePartitionedTopic(_ name: TopicName, force: Bool) async throws {
        try await requireNamespace(name.namespaceName)
        guard let (record, _) = try await partitionedRecord(name) else { throw BrokerError.partitionedTopicNotFound(name) }
        for index in 0..<record.partitions {
            var partition = name
            partition.localName = "\(name.localName)-partition-\(index)"
            let stored = try await metadata.get(MetadataKeys.managedLedger(partition.metadataPath)) != nil
            if stored || loadedTopic(partition) != nil {
                try await deleteTopic(partition, force: force)
            }
        }
        try await metadata.delete(MetadataKeys.partitionedTopic(name.metadataPath), expectedVersion: nil)
        try await schemas.removeAll(name.schemaName)
        logger.info("topic.partitioned-deleted", metadata: ["topic": "\(name)"])
    }

    // MARK: compaction

    /// Starts compacting a topic (each partition of a partitioned one); `conflict` while one runs.
    public func triggerCompaction(_ name: TopicName) async throws {
        guard name.domain == .persistent else {
            throw BrokerError(.notAllowed, "\(name) is non-persistent: only persistent topics can be compacted")
        }
        if name.partitionIndex < 0, let (record, _) = try await partitionedRecord(name) {
            for index in 0..<record.partitions {
                var partition = name
                partition.localName = "\(name.localName)-partition-\(index)"
                let topic = try await self.topic(partition).get()
                try await topic.eventLoop.submit { () throws in try topic.triggerCompaction() }.get()
            }
            return
        }
        let topic = try await existingTopic(name)
        try await topic.eventLoop.submit { () throws in try topic.triggerCompaction() }.get()
    }

    /// The state of a topic's compaction (`GET .../compaction`).
    public func compactionState(_ name: TopicName) async throws -> CompactionState {
        let topic = try await existingTopic(name)
        return try await topic.eventLoop.submit { topic.compaction }.get()
    }

    // MARK: offload

    /// Offloads the topic's closed ledgers before `position`'s ledger (`PUT .../offload`, nil:
    /// every closed ledger); returns the first entry left local. 409 while one runs.
    package func triggerOffload(_ name: TopicName, before position: Position?) async throws -> Position? {
        guard name.domain == .persistent else {
            throw BrokerError(.notAllowed, "\(name) is non-persistent: only persistent topics keep ledgers to offload")
        }
        let topic = try await existingTopic(name)
        return try await topic.eventLoop.submit { () throws in
            try topic.managedLedger.startOffload(before: position)
        }.get()
    }

    /// The state of the topic's last offload (`GET .../offload`).
    package func offloadStatus(_ name: TopicName) async throws -> OffloadStatus {
        guard name.domain == .persistent else {
            throw BrokerError(.notAllowed, "\(name) is non-persistent: only persistent topics keep ledgers to offload")
        }
        let topic = try await existingTopic(name)
        return try await topic.eventLoop.submit { topic.managedLedger.offloadStatus }.get()
    }

    // MARK: stats

    public func topicStats(_ name: TopicName) async throws -> TopicStatistics {
        if name.domain == .nonPersistent {
            guard let topic = loadedNonPersistentTopics.first(where: { $0.name == name }) else {
                throw BrokerError.topicNotFound(name)
            }
            return try await topic.eventLoop.submit { topic.adminStats() }.get()
        }
        let topic = try await existingTopic(name)
        return try await topic.eventLoop.submit { topic.adminStats() }.get()
    }

    public func topicInternalStats(_ name: TopicName) async throws -> ManagedLedgerStatistics {
        let topic = try await existingTopic(name)
        return try await topic.eventLoop.submit { topic.adminInternalStats() }.get()
    }

    /// Stats of every loaded topic, for `/metrics`.
    public func loadedTopicMetrics() async -> [TopicMetricsSnapshot] {
        var snapshots: [TopicMetricsSnapshot] = []
        for topic in loadedTopics {
            if let stats = try? await topic.eventLoop.submit({ topic.adminStats() }).get() {
                snapshots.append(TopicMetricsSnapshot(topic: topic.name, stats: stats))
            }
        }
        for topic in loadedNonPersistentTopics {
            if let stats = try? await topic.eventLoop.submit({ topic.adminStats() }).get() {
                snapshots.append(TopicMetricsSnapshot(topic: topic.name, stats: stats))
            }
        }
        return snapshots
    }

    // MARK: subscriptions

    public func subscriptions(of name: TopicName) async throws -> [String] {
        let topic = try await existingTopic(name)
        return try await topic.eventLoop.submit { topic.subscriptionNames }.get()
    }

    /// Creates a durable subscription starting at `start` (409 if it exists).
    public func createSubscription(_ name: TopicName, subscription subscriptionName: String, start: StartPosition) async throws {
        guard !subscriptionName.isEmpty else { throw BrokerError.invalidArgument("subscription name must not be empty") }
        let topic = try await existingTopic(name)
        try await topic.eventLoop.flatSubmit { () -> EventLoopFuture<Void> in
            guard topic.subscriptions[subscriptionName] == nil else {
                return topic.eventLoop.makeFailedFuture(BrokerError.subscriptionExists(subscriptionName))
            }
            return topic.createSubscriptionIfMissing(subscriptionName).flatMapThrowing {
                // Created at the earliest entry; move it where it was asked to start.
                if start != .earliest { try topic.seek(subscription: subscriptionName, to: start) }
            }
        }.get()
        logger.info("subscription.created-by-admin", metadata: ["topic": "\(name)", "subscription": "\(subscriptionName)"])
    }

    /// Deletes a subscription; refused (412) while consumers are connected, unless `force` closes them.
    public func deleteSubscription(_ name: TopicName, subscription subscriptionName: String, force: Bool) async throws {
        let topic = try await existingTopic(name)
        try await topic.eventLoop.flatSubmit { () -> EventLoopFuture<Void> in
            do {
                let subscription = try topic.existingSubscription(subscriptionName)
                if !subscription.consumers.isEmpty {
                    guard force else { throw BrokerError.subscriptionHasConsumers(subscriptionName) }
                    topic.closeConsumers(of: subscription)
                }
            } catch {
                return topic.eventLoop.makeFailedFuture(error)
            }
            return topic.unsubscribe(subscription: subscriptionName, key: ConsumerKey(connectionID: 0, consumerID: 0))
        }.get()
    }

    /// Acknowledges the next `count` unacknowledged entries; returns how many there were.
    @discardableResult
    public func skipMessages(_ name: TopicName, subscription subscriptionName: String, count: Int64) async throws -> Int64 {
        guard count > 0 else { throw BrokerError.invalidArgument("number of messages to skip must be positive, got \(count)") }
        let topic = try await existingTopic(name)
        return try await topic.eventLoop.submit { () throws -> Int64 in
            try topic.skipMessages(subscription: subscriptionName, count: count)
        }.get()
    }

    /// Acknowledges everything in the subscription's backlog (`skip_all`, `clear-backlog`).
    public func clearBacklog(_ name: TopicName, subscription subscriptionName: String) async throws {
        let topic = try await existingTopic(name)
        try await topic.eventLoop.submit { () throws in
            let subscription = try topic.existingSubscription(subscriptionName)
            if let last = topic.managedLedger.lastConfirmed { subscription.acknowledgeCumulative(upTo: last) }
        }.get()
    }

    /// Moves the subscription to the first entry published at or after `timestampMs`; consumers reconnect.
    public func resetCursor(_ name: TopicName, subscription subscriptionName: String, publishTimeMs timestampMs: Int64) async throws {
        let topic = try await existingTopic(name)
        try await topic.eventLoop.submit { () throws in
            _ = try topic.existingSubscription(subscriptionName)
        }.get()
        try await topic.seek(subscription: subscriptionName, publishTimeMs: timestampMs)
    }

    /// Moves the subscription so that `position` is the next entry delivered; consumers reconnect.
    public func resetCursor(_ name: TopicName, subscription subscriptionName: String, to position: StartPosition) async throws {
        let topic = try await existingTopic(name)
        try await topic.eventLoop.submit { () throws in
            _ = try topic.existingSubscription(subscriptionName)
            try topic.seek(subscription: subscriptionName, to: position)
        }.get()
    }

    /// Acknowledges on the subscription's behalf everything published more than `seconds` ago.
    @discardableResult
    public func expireMessages(_ name: TopicName, subscription subscriptionName: String, olderThanSeconds seconds: Int64) async throws -> Int64 {
        guard (0...AdminLimits.maxExpiryTimeSeconds).contains(seconds) else {
            throw BrokerError.invalidArgument("expiry time must be between 0 and \(AdminLimits.maxExpiryTimeSeconds) seconds, got \(seconds)")
        }
        let topic = try await existingTopic(name)
        let cutoffMs = configuration.managedLedger.clock.nowMs().saturatingSubtract(seconds.saturatingMultiply(1000))
        return try await topic.expireMessages(subscription: subscriptionName, publishedBeforeMs: cutoffMs)
    }

    /// The `n`-th (1-based) unacknowledged entry after the subscription's mark-delete position.
    public func peekMessage(_ name: TopicName, subscription subscriptionName: String, nth: Int64) async throws -> PeekedEntry {
        guard nth > 0 else { throw BrokerError.invalidArgument("message position must be 1 or more, got \(nth)") }
        let topic = try await existingTopic(name)
        let position = try await topic.eventLoop.submit { () throws -> Position in
            let subscription = try topic.existingSubscription(subscriptionName)
            let positions = topic.unacknowledgedPositions(of: subscription, limit: nth)
            guard Int64(positions.count) == nth, let position = positions.last else {
                throw BrokerError.messageNotFound("the subscription has \(positions.count) unacknowledged entries, not \(nth)")
            }
            return position
        }.get()
        // Read off the loop: in a cluster the entry comes from a storage node.
        return PeekedEntry(position: position, partitionIndex: name.partitionIndex, entry: try await topic.managedLedger.readWithoutBlocking(position))
    }
}

extension BrokerService {
    /// Stats of a partitioned topic: its record and every partition's, in partition order.
    /// Partitions not yet used (never produced to or subscribed) are loaded so they report zeros.
    public func partitionedTopicStats(_ name: TopicName) async throws -> PartitionedTopicStatistics {
        try await requireNamespace(name.namespaceName)
        guard let (record, _) = try await partitionedRecord(name) else {
            throw BrokerError.partitionedTopicNotFound(name)
        }
        var partitions: [(name: TopicName, statistics: TopicStatistics)] = []
        for index in 0..<record.partitions {
            var partition = name
            partition.localName = "\(name.localName)-partition-\(index)"
            let topic = try await topic(partition).get()
            partitions.append((partition, try await topic.eventLoop.submit { topic.adminStats() }.get()))
        }
        return PartitionedTopicStatistics(record: record, partitions: partitions)
    }
}
