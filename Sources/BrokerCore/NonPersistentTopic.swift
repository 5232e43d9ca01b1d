import ManagedLedger
import Logging
import NIOCore

/// A `non-persistent://` topic: nothing is stored. A published message goes at once to one
/// consumer of each subscription that has a permit for it, or is dropped (and counted) when none has.
///
/// Owned by one event loop, like `Topic`. Message ids are `(0, n)` with n counting up per topic, so
/// they stay unique within a broker's life; acknowledgements and redelivery requests are accepted
/// and have nothing to do.
public final class NonPersistentTopic: ServedTopic, ProducerAccessHost, @unchecked Sendable {
    public let name: TopicName
    /// `name.partitionIndex`, parsed once (it is written into every MESSAGE).
    public let partitionIndex: Int32
    public let eventLoop: any EventLoop
    /// Not configured: the namespace's rates apply to persistent topics.
    public let publishRateLimiter = RateLimiter()
    let logger: Logger

    private final class NonPersistentSubscription {
        var type: SubscriptionType
        var consumers: [Consumer] = []
        var roundRobinIndex = 0
        var selector = KeySharedSelector()
        init(type: SubscriptionType) { self.type = type }
    }

    private var subscriptions: [String: NonPersistentSubscription] = [:]
    var producers: [Topic.ProducerKey: String] = [:]
    var producerSinks: [Topic.ProducerKey: any ProducerSink] = [:]
    /// Producer access modes as on persistent topics; the epoch lives in memory (nothing here
    /// survives a restart).
    var producerAccess = ProducerAccessControl<Topic.ProducerKey>()
    var waitingProducers: [Topic.ProducerKey: WaitingProducer] = [:]
    private var nextEntryID: Int64 = 0
    public private(set) var messagesIn: Int64 = 0
    public private(set) var bytesIn: Int64 = 0
    public private(set) var messagesDropped: Int64 = 0

    init(name: TopicName, eventLoop: any EventLoop, logger: Logger) {
        self.name = name
        self.partitionIndex = name.partitionIndex
        self.eventLoop = eventLoop
        var logger = logger
        logger[metadataKey: "topic"] = "\(name)"
        self.logger = logger
    }

    public func addProducer(
        connectionID: UInt64, producerID: UInt64, name requested: String, sink: any ProducerSink
    ) throws(BrokerError) -> String {
        let key = Topic.ProducerKey(connectionID: connectionID, producerID: producerID)
        if let existing = producers[key] { return existing }
        if producers.contains(where: { $0.value == requested && $0.key.connectionID != connectionID }) {
            throw BrokerError(.producerBusy, "producer '\(requested)' is already connected to \(name)")
        }
        producers[key] = requested
        producerSinks[key] = sink
        return requested
    }

    public func addProducer(
        connectionID: UInt64, producerID: UInt64, name requested: String, sink: any ProducerSink,
        accessMode: ProducerAccessMode, topicEpoch: UInt64?
    ) throws(BrokerError) -> ProducerGrant {
        try requestAccess(
            connectionID: connectionID, producerID: producerID, name: requested, sink: sink, accessMode: accessMode,
            topicEpoch: topicEpoch)
    }

    public func removeProducer(connectionID: UInt64, producerID: UInt64) {
        releaseAccess(Topic.ProducerKey(connectionID: connectionID, producerID: producerID))
    }

    func producerAdmitted(_ key: Topic.ProducerKey, name: String, sink: any ProducerSink, mode: ProducerAccessMode) {}

    func persistTopicEpoch() -> EventLoopFuture<Void>? { nil }

    /// Closes every producer and consumer (the topic moves to another broker); clients reconnect.
    func closeAllClients() {
        eventLoop.preconditionInEventLoop()
        for (key, sink) in producerSinks { sink.closeProducerByBroker(producerID: key.producerID) }
        producers.removeAll()
        producerSinks.removeAll()
        for subscription in subscriptions.values {
            for consumer in subscription.consumers { consumer.sink.closeConsumerByBroker(consumerID: consumer.key.consumerID) }
        }
        subscriptions.removeAll()
    }

    public var producerCount: Int { producers.count }

    public var isInUse: Bool { producerCount > 0 || consumerCount > 0 || messagesIn > 0 }

    public func lastPublishedSequenceID(producerName: String) -> Int64 { -1 }
    public var consumerCount: Int { subscriptions.values.reduce(0) { $0 + $1.consumers.count } }
    public var subscriptionNames: [String] { subscriptions.keys.sorted() }

    public func publish(_ batch: PublishBatch) {
        for index in 0..<batch.count {
            publish(encoded: batch.entries[index], attributes: batch.attributes[index]) { result in
                batch.replier.published(index: index, result: result)
            }
        }
    }

    public func publish(
        encoded: ByteBuffer, attributes: EntryAttributes, completion: @escaping (Result<Position, BrokerError>) -> Void
    ) {
        eventLoop.preconditionInEventLoop()
        let entry: Entry
        do {
            entry = try Entry.decode(encoded)
        } catch {
            completion(.failure(error))
            return
        }
        let position = Position(ledgerID: 0, entryID: nextEntryID)
        nextEntryID += 1
        let messages = Int64(max(attributes.numMessages, 1))
        messagesIn += messages
        bytesIn += Int64(entry.body.readableBytes)
        for subscription in subscriptions.values {
            guard let consumer = select(in: subscription, entry: entry) else {
                messagesDropped += messages
                continue
            }
            consumer.permits -= messages
            consumer.messagesOut += messages
            consumer.bytesOut += Int64(entry.body.readableBytes)
            consumer.sink.sendMessage(
                consumerID: consumer.key.consumerID, position: position, partitionIndex: partitionIndex,
                redeliveryCount: 0, ackSet: nil, entry: entry)
            consumer.sink.flush()
        }
        completion(.success(position))
    }

    private func select(in subscription: NonPersistentSubscription, entry: Entry) -> Consumer? {
        let consumers = subscription.consumers
        switch subscription.type {
        case .exclusive, .failover:
            let active = consumers.min { ($0.priorityLevel, $0.name) < ($1.priorityLevel, $1.name) }
            return active.flatMap { $0.canReceive ? $0 : nil }
        case .shared:
            for offset in 0..<consumers.count {
                let candidate = consumers[(subscription.roundRobinIndex + offset) % consumers.count]
                if candidate.canReceive {
                    subscription.roundRobinIndex = (subscription.roundRobinIndex + offset + 1) % consumers.count
                    return candidate
                }
            }
            return nil
        case .keyShared:
            let hash = entry.attributes.key.isEmpty ? KeySharedSelector.noKeyHash : Murmur3.stickyKeyHash(entry.attributes.key)
            guard let key = subscription.selector.select(hash: hash) else { return nil }
            return consumers.first { $0.key == key && $0.canReceive }
        }
    }

    public func subscribe(_ request: SubscribeRequest, sink: any ConsumerSink) -> EventLoopFuture<Void> {
        eventLoop.preconditionInEventLoop()
        let subscription = subscriptions[request.subscription] ?? NonPersistentSubscription(type: request.type)
        if subscription.consumers.contains(where: { $0.key == request.consumerKey }) {
            return eventLoop.makeSucceededVoidFuture()
        }
        if subscription.consumers.isEmpty { subscription.type = request.type }
        guard subscription.type == request.type else {
            return eventLoop.makeFailedFuture(BrokerError(
                .consumerBusy, "subscription '\(request.subscription)' is \(subscription.type), not \(request.type)"))
        }
        if request.type == .exclusive, !subscription.consumers.isEmpty {
            return eventLoop.makeFailedFuture(BrokerError(
                .consumerBusy, "exclusive subscription '\(request.subscription)' already has a consumer"))
        }
        if request.type == .keyShared {
            do {
                try subscription.selector.add(
                    request.consumerKey, name: request.consumerName, mode: request.keySharedPolicy?.mode ?? .autoSplit)
            } catch {
                return eventLoop.makeFailedFuture(error)
            }
        }
        subscription.consumers.append(Consumer(
            key: request.consumerKey, name: request.consumerName, priorityLevel: request.priorityLevel, sink: sink,
            keySharedPolicy: request.keySharedPolicy))
        subscriptions[request.subscription] = subscription
        return eventLoop.makeSucceededVoidFuture()
    }

    public func createSubscriptionIfMissing(_ subscriptionName: String) -> EventLoopFuture<Void> {
        eventLoop.makeSucceededVoidFuture()
    }

    @discardableResult
    public func closeConsumer(subscription name: String, key: ConsumerKey) -> EventLoopFuture<Void> {
        if let subscription = subscriptions[name] {
            subscription.consumers.removeAll { $0.key == key }
            subscription.selector.remove(key)
            if subscription.consumers.isEmpty { subscriptions[name] = nil }
        }
        return eventLoop.makeSucceededVoidFuture()
    }

    public func flow(subscription name: String, key: ConsumerKey, permits: UInt32) {
        subscriptions[name]?.consumers.first { $0.key == key }?.permits += Int64(permits)
    }

    public func acknowledge(subscription name: String, positions: [Position]) {}
    public func acknowledgeBatchIndexes(subscription name: String, position: Position, ackSet: [Int64]) {}
    public func acknowledgeCumulative(subscription name: String, upTo position: Position) {}
    public func redeliver(subscription name: String, key: ConsumerKey, positions: [Position]) {}

    public func unsubscribe(subscription name: String, key: ConsumerKey) -> EventLoopFuture<Void> {
        if let subscription = subscriptions[name], subscription.consumers.contains(where: { $0.key != key }) {
            return eventLoop.makeFailedFuture(BrokerError(
                .consumerBusy, "subscription '\(name)' has other connected consumers: close them first"))
        }
        subscriptions[name] = nil
        return eventLoop.makeSucceededVoidFuture()
    }

    /// Stats in the shape of a persistent topic's (nothing stored, no backlog) plus the drop counter.
    func adminStats() -> TopicStatistics {
        eventLoop.preconditionInEventLoop()
        var subscriptionStats: [String: SubscriptionStatistics] = [:]
        var messagesOut: Int64 = 0
        var bytesOut: Int64 = 0
        for (subscriptionName, subscription) in subscriptions {
            let consumers = subscription.consumers.map {
                ConsumerStatistics(
                    name: $0.name, availablePermits: max($0.permits, 0), unackedMessages: 0, messagesOut: $0.messagesOut, bytesOut: $0.bytesOut)
            }
            let out = consumers.reduce(0) { $0 + $1.messagesOut }
            let outBytes = consumers.reduce(0) { $0 + $1.bytesOut }
            messagesOut += out
            bytesOut += outBytes
            subscriptionStats[subscriptionName] = SubscriptionStatistics(
                backlogEntries: 0, unackedMessages: 0, messagesOut: out, bytesOut: outBytes, type: subscription.type, isDurable: false,
                consumers: consumers)
        }
        var statistics = TopicStatistics(
            messagesIn: messagesIn, bytesIn: bytesIn, messagesOut: messagesOut, storageBytes: 0, backlogBytes: 0,
            producers: producers.values.sorted(), subscriptions: subscriptionStats, messagesDropped: messagesDropped)
        statistics.bytesOut = bytesOut
        return statistics
    }

    public func lastMessage(subscription name: String) -> EventLoopFuture<LastMessageInfo?> {
        let last = Position(ledgerID: 0, entryID: nextEntryID - 1)
        return eventLoop.makeSucceededFuture(LastMessageInfo(last: last, batchIndex: -1, markDelete: last))
    }

    public func seek(subscription name: String, to target: StartPosition) throws(BrokerError) {
        throw BrokerError(.notAllowed, "seek is not possible on a non-persistent topic: it keeps no messages")
    }

    public func seek(subscription name: String, publishTimeMs timestampMs: Int64) async throws {
        throw BrokerError(.notAllowed, "seek is not possible on a non-persistent topic: it keeps no messages")
    }
}
