import ManagedLedger
import LedgerStorage
import Logging
import Metadata
import NIOConcurrencyHelpers
import NIOCore

/// What a SUBSCRIBE asks for, protocol-neutral.
public struct SubscribeRequest: Sendable {
    public var subscription: String
    public var type: SubscriptionType
    public var consumerKey: ConsumerKey
    public var consumerName: String
    public var priorityLevel: Int32
    public var durable: Bool
    /// Readers: the first entry to deliver (inclusive). `.beforeEverything`-like sentinels are mapped by the edge.
    public var start: StartPosition?
    public var initialPosition: InitialPosition
    public var keySharedPolicy: KeySharedPolicy?
    /// Read the compacted ledger up to its horizon (Exclusive and Failover only).
    public var readCompacted: Bool
    /// A geo-replicator's own consumer: the only one allowed a `pulsar.repl.` subscription name.
    public var isReplicator = false
    /// `replicate_subscription_state`: true marks the subscription replicated (it stays so); nil/false leave it.
    public var replicateSubscriptionState = false

    public init(
        subscription: String, type: SubscriptionType, consumerKey: ConsumerKey, consumerName: String,
        priorityLevel: Int32, durable: Bool, start: StartPosition?, initialPosition: InitialPosition,
        keySharedPolicy: KeySharedPolicy? = nil, readCompacted: Bool = false
    ) {
        self.keySharedPolicy = keySharedPolicy
        self.readCompacted = readCompacted
        self.subscription = subscription
        self.type = type
        self.consumerKey = consumerKey
        self.consumerName = consumerName
        self.priorityLevel = priorityLevel
        self.durable = durable
        self.start = start
        self.initialPosition = initialPosition
    }
}

/// A start or seek target.
public enum StartPosition: Sendable, Equatable {
    case earliest
    case latest
    /// Deliver starting at this entry, inclusive.
    case at(Position)
}

/// What GET_LAST_MESSAGE_ID answers.
public struct LastMessageInfo: Sendable {
    /// The last durable entry, or `(openLedger, -1)` when there is none.
    public var last: Position
    /// Index of the last message in a batch entry, or -1 for a single message.
    public var batchIndex: Int32
    public var markDelete: Position

    public init(last: Position, batchIndex: Int32, markDelete: Position) {
        self.last = last
        self.batchIndex = batchIndex
        self.markDelete = markDelete
    }
}

/// One persistent topic: its managed ledger, producers and subscriptions.
///
/// Owned by one event loop (`eventLoop`): every method must be called there; protocol edges hop
/// to it once per command. Lifecycle: loaded by `BrokerService` on first use (recovering the
/// managed ledger and reloading durable cursors), unloaded when the broker stops.
public final class Topic: ProducerAccessHost, @unchecked Sendable {
    public let name: TopicName
    /// `name.partitionIndex`, parsed once (it is written into every receipt).
    public let partitionIndex: Int32
    public let eventLoop: any EventLoop
    let managedLedger: ManagedLedger
    let store: any LedgerClient
    let metadata: any MetadataStore
    let logger: Logger
    private(set) var subscriptions: [String: Subscription] = [:]
    private var creatingSubscriptions: [String: EventLoopFuture<Subscription>] = [:]

    struct ProducerKey: Hashable {
        var connectionID: UInt64
        var producerID: UInt64
    }
    var producers: [ProducerKey: String] = [:]
    var producerSinks: [ProducerKey: any ProducerSink] = [:]
    /// What the stats show of each producer (entries of producers gone are dropped by `adminStats`).
    struct ProducerDetails {
        var producerID: UInt64
        var connectedSinceMs: Int64
        var address: String
        var accessMode: ProducerAccessMode
    }
    var producerDetails: [ProducerKey: ProducerDetails] = [:]
    /// Messages and bytes in per producer name, and their rates. Entries of one producer come in
    /// runs: a run is counted here when another producer's entry (or a stats read) ends it.
    var producerCounters: [String: (messages: Int64, bytes: Int64)] = [:]
    var producerRateMeters: [String: RateMeter] = [:]
    private var runProducer = ""
    private var runMessages: Int64 = 0
    private var runBytes: Int64 = 0
    /// The topic's and each subscription's rates (sampled by the policy pass, about once a second).
    var rateMeter = RateMeter()
    var subscriptionRateMeters: [String: RateMeter] = [:]
    /// Pulsar's `pulsar_storage_write_latency_*` and `pulsar_entry_size_*` histograms.
    var writeLatency = BucketCounts(bounds: BucketCounts.writeLatencyBoundsMs)
    var entrySizes = BucketCounts(bounds: BucketCounts.entrySizeBounds)
    /// Exclusive access and the topic epoch (producer access modes).
    var producerAccess = ProducerAccessControl<ProducerKey>()
    /// WaitForExclusive producers not yet given access, with what to tell them when they are.
    var waitingProducers: [ProducerKey: WaitingProducer] = [:]
    /// Writes of the topic epoch, one after the other (each writes the latest).
    var topicEpochWrites: EventLoopFuture<Void>?
    /// The namespace policies in force, refreshed by the broker's policy task.
    var policies = EffectivePolicies()
    /// Set while the backlog is over a producer-blocking quota.
    var backlogQuotaExceeded = false
    /// The namespace's `publishRate`, shared by the connections of this topic's producers.
    public let publishRateLimiter = RateLimiter()
    /// The namespace's `dispatchRate`, shared by this topic's subscriptions (used on the loop).
    let dispatchRateLimiter = RateLimiter()
    /// Offset readers waiting for the next entry (Kafka's long-polling Fetch), by token: each runs
    /// once, at the next durable entry, and is then forgotten.
    var appendWaiters: [UInt64: @Sendable () -> Void] = [:]
    var nextAppendWaiter: UInt64 = 0
    /// Acknowledgements of positions past the last durable entry, ignored (Pulsar refuses to
    /// mark-delete ahead of the last confirmed entry): stored, they would hide messages written there later.
    public private(set) var acknowledgementsBeyondLastEntryIgnored: Int64 = 0
    let deduplicationStage = DeduplicationStage()
    /// The stages every published entry passes, in order, before the managed ledger.
    let publishStages: [any PublishStage]
    /// The stages every acknowledgement passes, in order, before a subscription's cursor (set in `init`).
    private(set) var ackStages: [any AckStage] = []

    /// Set by `unload`: the topic is no longer served here.
    var isUnloaded = false
    /// Called (on the event loop) once when the managed ledger fails, e.g. because another broker
    /// fenced its ledger: the broker unloads the topic.
    var onManagedLedgerFailure: ((Topic) -> Void)?
    private var reportedFailure = false

    public private(set) var messagesIn: Int64 = 0
    public private(set) var bytesIn: Int64 = 0

    /// The compacted ledger in force, shared with the subscriptions that read compacted.
    let compactedView: CompactedTopicView
    var compaction = CompactionState()
    /// Set by the broker when the topic loads (its configuration).
    var compactionCodec: (any CompactionCodec)?
    var compactionMonitorIntervalMs: Int64 = 60_000
    var compactionThresholdDefault: Int64 = 0
    /// The broker's offload settings (a namespace's own override them).
    var offloadDefaults = OffloadSettings()
    /// Geo-replication: the local cluster's name, the replicators by remote cluster, the topic's own
    /// replication clusters (nil: its namespace's), and what makes replicators (nil: none here).
    var localCluster = "standalone"
    var replicators: [String: any TopicReplicator] = [:]
    var topicReplicationClusters: [String]?
    var replicatorFactory: (any ReplicatorFactory)?
    /// Replicated subscriptions' snapshots (made with the first replicator), and the subscriptions
    /// marked replicated (kept in the topic's policy record).
    var subscriptionsController: (any ReplicatedSubscriptionsController)?
    var replicatedSubscriptions: Set<String> = []
    /// The last entry published that is not a marker (snapshots are taken only after new data).
    public private(set) var lastDataPosition: Position?
    var lastCompactionCheckMs: Int64 = 0
    /// Transactions: the buffer's state (and as last written), what subscriptions read of it, the
    /// registrations being written (with what waits for each), the ends in progress, the last write.
    var transactionBuffer = TransactionBufferState()
    var persistedTransactionBuffer = TransactionBufferState()
    let transactionView = TransactionView()
    var transactionRegistrations: [TransactionID: [(BrokerError?) -> Void]] = [:]
    var endingTransactions: [TransactionID: EventLoopFuture<Void>] = [:]
    var transactionBufferWrites: EventLoopFuture<Void>?
    var transactionAckWrites: [String: EventLoopFuture<Void>] = [:]
    var transactionMarkerCodec: (any TransactionMarkerCodec)?
    let transactionStatePublished = NIOLockedValueBox<TransactionBufferState?>(nil)

    init(
        name: TopicName, eventLoop: any EventLoop, managedLedger: ManagedLedger, store: any LedgerClient,
        metadata: any MetadataStore, logger: Logger
    ) {
        self.name = name
        self.partitionIndex = name.partitionIndex
        self.eventLoop = eventLoop
        self.managedLedger = managedLedger
        self.store = store
        self.metadata = metadata
        var logger = logger
        logger[metadataKey: "topic"] = "\(name)"
        self.logger = logger
        self.compactedView = CompactedTopicView(store: store, eventLoop: eventLoop)
        self.publishStages = [deduplicationStage]
        self.ackStages = [
            StoredEntriesOnlyStage(
                lastDurable: { [unowned self] in self.managedLedger.positionBeforeNextEntry },
                ignored: { [unowned self] count, subscription in self.ignoredAcknowledgements(count, subscription: subscription) }),
        ]
    }

    func attachLoadedSubscription(_ cursor: Cursor) {
        let subscription = Subscription(
            name: cursor.name, type: .exclusive, cursor: cursor, managedLedger: managedLedger,
            partitionIndex: partitionIndex, compacted: compactedView, transactions: transactionView,
            dispatchRateLimiter: dispatchRateLimiter, logger: logger)
        subscriptions[cursor.name] = subscription
        installHooks(subscription)
    }

    // MARK: producers

    /// Registers a producer; returns its name. Idempotent for the same (connection, producer id).
    public func addProducer(
        connectionID: UInt64, producerID: UInt64, name requested: String, sink: any ProducerSink
    ) throws(BrokerError) -> String {
        eventLoop.preconditionInEventLoop()
        if isUnloaded { throw unloadedError }
        let key = ProducerKey(connectionID: connectionID, producerID: producerID)
        if let existing = producers[key] { return existing }
        if let (existingKey, _) = producers.first(where: { $0.value == requested && $0.key.connectionID != connectionID }) {
            guard producerSinks[existingKey]?.isConnected == false else {
                throw BrokerError(.producerBusy, "producer '\(requested)' is already connected to \(name)")
            }
            // Its connection is gone and the client reconnected before we noticed: take over.
            producers[existingKey] = nil
            producerSinks[existingKey] = nil
        }
        if policies.maxProducersPerTopic > 0, producers.count >= policies.maxProducersPerTopic {
            throw BrokerError(.producerBusy, "topic \(name) reached its maximum of \(policies.maxProducersPerTopic) producers")
        }
        if let diskFull = managedLedger.diskFullError {
            // Fatal for the client (NotAllowed): a new producer fails at once, a reconnecting one
            // stops resending, so its pending sends fail at their send timeout instead of looping
            // through SEND_ERROR and reconnects; it gets in again once space is back.
            throw BrokerError(.notAllowed, diskFull.message)
        }
        if backlogQuotaExceeded {
            throw BrokerError(
                .producerBlockedQuota,
                "backlog quota of \(name) exceeded: consume or skip the backlog, or raise the namespace's backlog quota")
        }
        producers[key] = requested
        producerSinks[key] = sink
        producerAdmitted(key, name: requested, sink: sink, mode: .shared)
        return requested
    }

    func producerAdmitted(_ key: ProducerKey, name: String, sink: any ProducerSink, mode: ProducerAccessMode) {
        producerDetails[key] = ProducerDetails(
            producerID: key.producerID, connectedSinceMs: producerDetails[key]?.connectedSinceMs ?? managedLedger.clock.nowMs(),
            address: clientAddress(of: sink), accessMode: mode)
    }

    /// Records the topic epoch (`MetadataKeys.topicEpoch`) after the writes before it.
    func persistTopicEpoch() -> EventLoopFuture<Void>? {
        let key = MetadataKeys.topicEpoch(name.metadataPath)
        let metadata = self.metadata
        let previous = topicEpochWrites ?? eventLoop.makeSucceededVoidFuture()
        let write = previous.flatMapError { _ in self.eventLoop.makeSucceededVoidFuture() }.flatMap {
            let epoch = self.producerAccess.epoch
            return self.eventLoop.makeFutureWithTask {
                try await metadata.put(key, value: Array(String(epoch).utf8), expectedVersion: nil)
            }.map { _ in }
        }
        topicEpochWrites = write
        return write
    }

    /// Reads the topic epoch the previous owner recorded (topic load, before clients attach).
    func loadTopicEpoch() async throws {
        guard let stored = try await metadata.get(MetadataKeys.topicEpoch(name.metadataPath)),
              let epoch = UInt64(String(decoding: stored.value, as: UTF8.self))
        else { return }
        try await eventLoop.submit { self.producerAccess.restore(epoch: epoch) }.get()
    }

    /// Adds the current run of one producer's entries to its counters.
    func countProducerRun() {
        guard runMessages > 0 || runBytes > 0 else { return }
        var counters = producerCounters[runProducer] ?? (0, 0)
        counters.messages += runMessages
        counters.bytes += runBytes
        producerCounters[runProducer] = counters
        runMessages = 0
        runBytes = 0
    }

    /// Registers a producer with its access mode (Pulsar's; `ProducerAccessHost.requestAccess`).
    public func addProducer(
        connectionID: UInt64, producerID: UInt64, name requested: String, sink: any ProducerSink,
        accessMode: ProducerAccessMode, topicEpoch: UInt64?
    ) throws(BrokerError) -> ProducerGrant {
        try requestAccess(
            connectionID: connectionID, producerID: producerID, name: requested, sink: sink, accessMode: accessMode,
            topicEpoch: topicEpoch)
    }

    public func removeProducer(connectionID: UInt64, producerID: UInt64) {
        eventLoop.preconditionInEventLoop()
        releaseAccess(ProducerKey(connectionID: connectionID, producerID: producerID))
    }

    public var producerCount: Int { producers.count }

    /// Appends an entry; `completion` runs on the event loop once it is durable, in publish order.
    /// `encoded` is what `Entry.encode` produced.
    public func publish(
        encoded: ByteBuffer, attributes: EntryAttributes, completion: @escaping (Result<Position, BrokerError>) -> Void
    ) {
        publish(PublishBatch(entries: [encoded], attributes: [attributes], replier: ClosurePublishReplier(completion)))
    }

    /// Appends every entry of `batch` (deduplicated ones are answered with `(-1, -1)` and not
    /// written); `batch.replier` hears about each entry in order, on this loop.
    public func publish(_ batch: PublishBatch) {
        eventLoop.preconditionInEventLoop()
        if isUnloaded {
            for index in 0..<batch.count { batch.replier.published(index: index, result: .failure(unloadedError)) }
            return
        }
        batch.topic = self
        for index in 0..<batch.count {
            if admit(batch.attributes[index]) {
                managedLedger.append(batch.entries[index], receiver: batch, tag: index)
            } else {
                managedLedger.appendDuplicate(receiver: batch, tag: index)
            }
        }
    }

    /// Runs the publish stages over one entry: true to write it, false to answer it as a duplicate
    /// (the stages before the one that said so have admitted it and hear that it failed).
    private func admit(_ attributes: EntryAttributes) -> Bool {
        for (index, stage) in publishStages.enumerated() {
            switch stage.admit(attributes) {
            case .write:
                continue
            case .duplicate:
                for earlier in publishStages[..<index] { earlier.failed(attributes) }
                return false
            }
        }
        return true
    }

    /// One entry of a `PublishBatch` is durable (a duplicate, at `(-1, -1)`, was not written).
    func entryPersisted(_ attributes: EntryAttributes, bytes: Int, at position: Position, latencyNanos: UInt64 = 0) {
        guard position.ledgerID >= 0 else { return }
        if !attributes.isMarker { lastDataPosition = position }
        for stage in publishStages { stage.persisted(attributes, at: position) }
        let messages = Int64(max(attributes.numMessages, 1))
        messagesIn += messages
        bytesIn += Int64(bytes)
        if attributes.producerName != runProducer {
            countProducerRun()
            runProducer = attributes.producerName
        }
        runMessages += messages
        runBytes += Int64(bytes)
        writeLatency.record(Double(latencyNanos) / 1_000_000)
        entrySizes.record(Double(bytes))
        for subscription in subscriptions.values where !subscription.consumers.isEmpty {
            subscription.scheduleDispatch()
        }
        if !appendWaiters.isEmpty {
            let waiters = appendWaiters.values
            appendWaiters.removeAll()
            for waiter in waiters { waiter() }
        }
    }

    /// An entry of a `PublishBatch` failed (its publisher is answered right after): deduplication
    /// forgets that it was accepted, so the client's resend is written rather than answered as a
    /// duplicate of an entry that was never stored; a failed managed ledger is reported once.
    func entryFailed(_ attributes: EntryAttributes) {
        for stage in publishStages { stage.failed(attributes) }
        if managedLedger.failure != nil, !reportedFailure {
            reportedFailure = true
            onManagedLedgerFailure?(self)
        }
    }

    // MARK: consumers

    /// Attaches a consumer, creating the subscription if needed.
    public func subscribe(_ request: SubscribeRequest, sink: any ConsumerSink) -> EventLoopFuture<Void> {
        eventLoop.preconditionInEventLoop()
        if isUnloaded { return eventLoop.makeFailedFuture(unloadedError) }
        if request.readCompacted, request.type != .exclusive, request.type != .failover {
            return eventLoop.makeFailedFuture(BrokerError(
                .notAllowed, "readCompacted only allowed on failover or exclusive subscriptions"))
        }
        if Replication.isReplicatorCursor(request.subscription), !request.isReplicator {
            return eventLoop.makeFailedFuture(BrokerError(
                .notAllowed, "Subscription with reserved subscription name attempted: '\(Replication.cursorPrefix)' names geo-replication cursors"))
        }
        if let existing = subscriptions[request.subscription], existing.consumer(request.consumerKey) != nil {
            return eventLoop.makeSucceededVoidFuture()
        }
        let consumerCount = subscriptions.values.reduce(0) { $0 + $1.consumers.count }
        if policies.maxConsumersPerTopic > 0, consumerCount >= policies.maxConsumersPerTopic {
            return eventLoop.makeFailedFuture(BrokerError(
                .consumerBusy, "topic \(name) reached its maximum of \(policies.maxConsumersPerTopic) consumers"))
        }
        if let existing = subscriptions[request.subscription] {
            return attach(request, to: existing, sink: sink)
        }
        if let creating = creatingSubscriptions[request.subscription] {
            return creating.flatMap { self.attach(request, to: $0, sink: sink) }
        }
        let creating = makeSubscription(
            name: request.subscription, type: request.type, durable: request.durable,
            markDelete: markDeleteBefore(request.start ?? (request.initialPosition == .earliest ? .earliest : .latest)))
        creatingSubscriptions[request.subscription] = creating
        return creating.flatMap { subscription in
            self.creatingSubscriptions[request.subscription] = nil
            if self.subscriptions[request.subscription] == nil {
                self.subscriptions[request.subscription] = subscription
                self.installHooks(subscription)
                self.logger.info("subscription.created", metadata: [
                    "subscription": "\(request.subscription)", "durable": "\(request.durable)",
                ])
            }
            return self.attach(request, to: self.subscriptions[request.subscription]!, sink: sink)
        }.flatMapErrorThrowing { error in
            self.creatingSubscriptions[request.subscription] = nil
            throw error
        }
    }

    /// Creates a subscription object (and, when durable, its cursor in metadata).
    private func makeSubscription(name subscriptionName: String, type: SubscriptionType, durable: Bool, markDelete: Position)
        -> EventLoopFuture<Subscription>
    {
        let managedLedger = self.managedLedger
        let logger = self.logger
        let partitionIndex = self.partitionIndex
        let dispatchRateLimiter = self.dispatchRateLimiter
        let compacted = self.compactedView
        guard durable else {
            let cursor = Cursor.nonDurable(name: subscriptionName, managedLedger: managedLedger, markDelete: markDelete, logger: logger)
            return eventLoop.makeSucceededFuture(Subscription(
                name: subscriptionName, type: type, cursor: cursor, managedLedger: managedLedger,
                partitionIndex: partitionIndex, compacted: compacted, transactions: transactionView,
                dispatchRateLimiter: dispatchRateLimiter, logger: logger))
        }
        let key = MetadataKeys.cursor(ofTopic: name.metadataPath, subscription: subscriptionName)
        let store = self.store
        let metadata = self.metadata
        return eventLoop.makeFutureWithTask {
            try await Cursor.create(
                name: subscriptionName, managedLedger: managedLedger, store: store, metadata: metadata,
                metadataKey: key, markDelete: markDelete, logger: logger)
        }.flatMapErrorThrowing { error in
            throw BrokerError(.metadata, "cannot create subscription '\(subscriptionName)': \(error)")
        }.map { [transactionView] cursor in
            Subscription(
                name: subscriptionName, type: type, cursor: cursor, managedLedger: managedLedger,
                partitionIndex: partitionIndex, compacted: compacted, transactions: transactionView,
                dispatchRateLimiter: dispatchRateLimiter, logger: logger)
        }
    }

    /// Creates a durable subscription at the earliest entry unless it exists (a DLQ producer's
    /// `initial_subscription_name`, so nothing sent before a consumer arrives is lost).
    public func createSubscriptionIfMissing(_ subscriptionName: String) -> EventLoopFuture<Void> {
        eventLoop.preconditionInEventLoop()
        if subscriptions[subscriptionName] != nil { return eventLoop.makeSucceededVoidFuture() }
        if let creating = creatingSubscriptions[subscriptionName] { return creating.map { _ in } }
        let creating = makeSubscription(name: subscriptionName, type: .shared, durable: true, markDelete: .beforeEverything)
        creatingSubscriptions[subscriptionName] = creating
        return creating.map { subscription in
            self.creatingSubscriptions[subscriptionName] = nil
            if self.subscriptions[subscriptionName] == nil {
                self.subscriptions[subscriptionName] = subscription
                self.installHooks(subscription)
            }
        }.flatMapErrorThrowing { error in
            self.creatingSubscriptions[subscriptionName] = nil
            throw error
        }
    }

    private func attach(_ request: SubscribeRequest, to subscription: Subscription, sink: any ConsumerSink) -> EventLoopFuture<Void> {
        if request.replicateSubscriptionState, subscription.isDurable, !subscription.isReplicated {
            markReplicated(subscription)
        }
        if !subscription.isDurable, subscription.consumers.isEmpty, let start = request.start {
            subscription.reposition(markDelete: markDeleteBefore(start))
        }
        let consumer = Consumer(
            key: request.consumerKey, name: request.consumerName, priorityLevel: request.priorityLevel, sink: sink,
            keySharedPolicy: request.keySharedPolicy)
        consumer.connectedSinceMs = managedLedger.clock.nowMs()
        consumer.address = clientAddress(of: sink)
        do {
            try subscription.addConsumer(consumer, type: request.type)
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
        subscription.readCompacted = request.readCompacted
        logger.debug("consumer.added", metadata: [
            "subscription": "\(request.subscription)", "consumer.name": "\(request.consumerName)",
        ])
        return eventLoop.makeSucceededVoidFuture()
    }

    /// The mark-delete position that makes `start` the next entry delivered.
    private func markDeleteBefore(_ start: StartPosition) -> Position {
        switch start {
        case .earliest: return .beforeEverything
        case .latest: return managedLedger.positionBeforeNextEntry
        case .at(let position): return position.previousInLedger
        }
    }

    /// Succeeds once every subscription's acknowledgements so far are durable.
    func flushCursors() -> EventLoopFuture<Void> {
        eventLoop.preconditionInEventLoop()
        return EventLoopFuture.andAllComplete(subscriptions.values.map { $0.cursor.flush() }, on: eventLoop)
    }

    /// Detaches a consumer. The future succeeds once the subscription's acknowledgements so far
    /// are durable, so a client that closed its consumer never sees acked messages again.
    @discardableResult
    public func closeConsumer(subscription name: String, key: ConsumerKey) -> EventLoopFuture<Void> {
        eventLoop.preconditionInEventLoop()
        guard let subscription = subscriptions[name] else { return eventLoop.makeSucceededVoidFuture() }
        subscription.removeConsumer(key)
        if !subscription.isDurable, subscription.consumers.isEmpty, !subscription.keepWithoutConsumers {
            subscriptions[name] = nil
        }
        return subscription.cursor.flush()
    }

    public func flow(subscription name: String, key: ConsumerKey, permits: UInt32) {
        eventLoop.preconditionInEventLoop()
        subscriptions[name]?.flow(key, permits: permits)
    }

    public func acknowledge(subscription name: String, positions: [Position]) {
        acknowledge(.individual(positions), subscription: name)
    }

    public func acknowledgeBatchIndexes(subscription name: String, position: Position, ackSet: [Int64]) {
        acknowledge(.batchIndexes(position, ackSet: ackSet), subscription: name)
    }

    public func acknowledgeCumulative(subscription name: String, upTo position: Position) {
        acknowledge(.cumulative(upTo: position), subscription: name)
    }

    /// Passes an acknowledgement through the ack stages, then applies what is left to the subscription.
    func acknowledge(_ acknowledgement: Acknowledgement, subscription name: String) {
        eventLoop.preconditionInEventLoop()
        guard let subscription = subscriptions[name] else { return }
        var current = acknowledgement
        for stage in ackStages {
            switch stage.admit(current, subscription: name) {
            case .pass(let next): current = next
            case .stop: return
            }
        }
        switch current {
        case .individual(let positions): subscription.acknowledge(positions)
        case .batchIndexes(let position, let ackSet): subscription.acknowledgeBatchIndexes(position, ackSet: ackSet)
        case .cumulative(let position): subscription.acknowledgeCumulative(upTo: position)
        }
    }

    private func ignoredAcknowledgements(_ count: Int, subscription: String) {
        // Warned once per topic (a client could send millions); the count keeps the rest.
        let level: Logger.Level = acknowledgementsBeyondLastEntryIgnored == 0 ? .warning : .debug
        acknowledgementsBeyondLastEntryIgnored += Int64(count)
        logger.log(level: level, "subscription.ack-beyond-last-entry-ignored", metadata: [
            "subscription": "\(subscription)", "count": "\(count)",
            "last.entry": "\(managedLedger.positionBeforeNextEntry)",
        ])
    }

    public func redeliver(subscription name: String, key: ConsumerKey, positions: [Position]) {
        eventLoop.preconditionInEventLoop()
        subscriptions[name]?.redeliver(key, positions: positions)
    }

    /// Deletes the subscription; refused while other consumers are attached.
    public func unsubscribe(subscription name: String, key: ConsumerKey) -> EventLoopFuture<Void> {
        eventLoop.preconditionInEventLoop()
        guard let subscription = subscriptions[name] else {
            return eventLoop.makeFailedFuture(BrokerError(.subscriptionNotFound, "subscription '\(name)' does not exist"))
        }
        if subscription.consumers.contains(where: { $0.key != key }) {
            return eventLoop.makeFailedFuture(BrokerError(
                .consumerBusy, "subscription '\(name)' has other connected consumers: close them first"))
        }
        subscription.removeConsumer(key)
        subscriptions[name] = nil
        let cursor = subscription.cursor
        logger.info("subscription.deleted", metadata: ["subscription": "\(name)"])
        return eventLoop.makeFutureWithTask { try await cursor.delete() }
            .flatMapErrorThrowing { throw BrokerError(.metadata, "cannot delete subscription '\(name)': \($0)") }
    }

    public func lastMessage(subscription name: String) -> EventLoopFuture<LastMessageInfo?> {
        eventLoop.preconditionInEventLoop()
        guard let subscription = subscriptions[name] else { return eventLoop.makeSucceededFuture(nil) }
        let last = managedLedger.positionBeforeNextEntry
        let markDelete = subscription.cursor.markDelete
        // A compacted reader with nothing after the horizon: the last message it can get is the
        // compacted ledger's (the topic's last may be compacted away: hasMessageAvailable would hang).
        if subscription.readCompacted, let record = compactedView.record, last <= record.horizon {
            return eventLoop.makeSucceededFuture(LastMessageInfo(
                last: record.last ?? Position(ledgerID: last.ledgerID, entryID: -1), batchIndex: record.lastBatchIndex,
                markDelete: markDelete))
        }
        func info(_ entry: Entry?) -> LastMessageInfo {
            let messages = entry?.attributes.numMessages ?? 1
            return LastMessageInfo(last: last, batchIndex: messages > 1 ? messages - 1 : -1, markDelete: markDelete)
        }
        guard last.entryID >= 0 else { return eventLoop.makeSucceededFuture(info(nil)) }
        if managedLedger.canReadNow(last) {
            return eventLoop.makeSucceededFuture(info(try? managedLedger.read(last)))
        }
        // In a cluster, the last entry may have to come from a storage node: await it off the loop.
        let promise = eventLoop.makePromise(of: LastMessageInfo?.self)
        managedLedger.readAhead([last]) {
            promise.succeed(info(try? self.managedLedger.read(last)))
        }
        return promise.futureResult
    }

    /// Resets a subscription to `target` and closes its consumers (they reconnect).
    public func seek(subscription name: String, to target: StartPosition) throws(BrokerError) {
        eventLoop.preconditionInEventLoop()
        guard let subscription = subscriptions[name] else {
            throw BrokerError(.subscriptionNotFound, "subscription '\(name)' does not exist")
        }
        subscription.reset(markDelete: markDeleteBefore(target))
    }

    /// Resets a subscription to the first entry published at or after `timestampMs` (`.latest` if
    /// none). Call from anywhere but the loop: the scan's reads are awaited off it, then the reset
    /// runs on it. An unreadable entry is passed over, not a reason to refuse the seek.
    public func seek(subscription name: String, publishTimeMs timestampMs: Int64) async throws {
        let position = await managedLedger.firstPosition(publishedAtOrAfter: timestampMs)
        try await eventLoop.submit { () throws in
            try self.seek(subscription: name, to: position.map { .at($0) } ?? .latest)
        }.get()
    }

    // MARK: stats

    public var subscriptionNames: [String] { subscriptions.keys.sorted() }
    public var numberOfEntries: Int64 { managedLedger.numberOfEntries }
    public var storageSizeBytes: Int64 { managedLedger.totalSizeBytes }
    public func backlog(subscription name: String) -> Int64? { subscriptions[name]?.cursor.backlogEntries }
}
