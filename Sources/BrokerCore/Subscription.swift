import Logging
import NIOCore

/// A named subscription on a topic: a cursor plus the consumers attached to it and the dispatcher
/// state (what was read from the log, what waits for redelivery, what each consumer holds unacked).
///
/// Owned by the topic's event loop. Lifecycle: created by the topic on the first SUBSCRIBE (durable
/// ones are also reloaded from metadata when the topic loads); deleted by UNSUBSCRIBE, or — for a
/// non-durable subscription — when its last consumer leaves, except across a seek's reconnect.
final class Subscription: @unchecked Sendable {
    let name: String
    /// The type is chosen by the first consumer of an idle subscription.
    private(set) var type: SubscriptionType
    let cursor: Cursor
    private let managedLedger: ManagedLedger
    private let partitionIndex: Int32
    private let logger: Logger

    private(set) var consumers: [Consumer] = []
    /// The last entry read from the log for dispatch; entries after it have never been delivered.
    private var lastRead: Position
    /// Entries to deliver again before reading further, in log order.
    private var replay: [Position] = []
    /// Redeliveries requested per entry (REDELIVER_UNACKNOWLEDGED_MESSAGES), reported to consumers.
    private var redeliveryCounts: [Position: UInt32] = [:]
    private var roundRobinIndex = 0
    private var activeConsumer: Consumer?
    private var dispatchScheduled = false
    /// Set by a seek, so a reader's subscription survives the reconnect the seek causes.
    var keepWithoutConsumers = false

    /// Entries handed to consumers per dispatch pass before yielding the event loop.
    static let maxEntriesPerDispatchPass = 256

    init(name: String, type: SubscriptionType, cursor: Cursor, managedLedger: ManagedLedger, partitionIndex: Int32, logger: Logger) {
        self.name = name
        self.type = type
        self.cursor = cursor
        self.managedLedger = managedLedger
        self.partitionIndex = partitionIndex
        self.logger = logger
        self.lastRead = cursor.markDelete
    }

    var isDurable: Bool { cursor.durable }

    // MARK: consumers

    /// Attaches a consumer, enforcing the subscription type's rules.
    func addConsumer(_ consumer: Consumer, type requested: SubscriptionType) throws(BrokerError) {
        if consumers.isEmpty { type = requested }
        guard requested == type else {
            throw BrokerError(
                .consumerBusy,
                "subscription '\(name)' is \(type), not \(requested): use the same subscription type or another subscription")
        }
        if type == .exclusive, !consumers.isEmpty {
            throw BrokerError(.consumerBusy, "exclusive subscription '\(name)' already has a consumer")
        }
        consumers.append(consumer)
        keepWithoutConsumers = false
        if type == .failover { updateActiveConsumer() }
    }

    /// Detaches a consumer; what it held unacknowledged goes back for redelivery (count unchanged).
    func removeConsumer(_ key: ConsumerKey) {
        guard let index = consumers.firstIndex(where: { $0.key == key }) else { return }
        let consumer = consumers.remove(at: index)
        addToReplay(consumer.pending.keys)
        consumer.pending.removeAll()
        consumer.unackedMessages = 0
        if type == .failover { updateActiveConsumer() }
        scheduleDispatch()
    }

    func consumer(_ key: ConsumerKey) -> Consumer? {
        consumers.first { $0.key == key }
    }

    /// Failover: the active consumer is the first by (priority, name); for partition i, the i-th modulo count.
    private func updateActiveConsumer() {
        let sorted = consumers.sorted { ($0.priorityLevel, $0.name) < ($1.priorityLevel, $1.name) }
        let newActive: Consumer? = sorted.isEmpty ? nil : sorted[Int(max(partitionIndex, 0)) % sorted.count]
        guard newActive !== activeConsumer else { return }
        if let old = activeConsumer, consumers.contains(where: { $0 === old }) {
            // The old active consumer keeps nothing: its unacked entries go to the new one.
            addToReplay(old.pending.keys)
            old.pending.removeAll()
            old.unackedMessages = 0
        }
        activeConsumer = newActive
        for consumer in consumers {
            consumer.sink.activeConsumerChanged(consumerID: consumer.key.consumerID, isActive: consumer === newActive)
        }
    }

    // MARK: flow, acks, redelivery

    func flow(_ key: ConsumerKey, permits: UInt32) {
        guard let consumer = consumer(key) else { return }
        consumer.permits += Int64(permits)
        dispatch()
    }

    func acknowledge(_ positions: [Position]) {
        for position in positions {
            releasePending(position)
            cursor.acknowledge(position)
        }
        dropAcknowledgedFromReplay()
    }

    func acknowledgeCumulative(upTo position: Position) {
        for consumer in consumers {
            for pendingPosition in consumer.pending.keys where pendingPosition <= position {
                releasePending(pendingPosition, from: consumer)
            }
        }
        cursor.acknowledgeCumulative(upTo: position)
        dropAcknowledgedFromReplay()
    }

    private func releasePending(_ position: Position, from owner: Consumer? = nil) {
        redeliveryCounts[position] = nil
        let holders = owner.map { [$0] } ?? consumers
        for consumer in holders {
            if let messages = consumer.pending.removeValue(forKey: position) {
                consumer.unackedMessages -= Int64(messages)
                return
            }
        }
    }

    private func dropAcknowledgedFromReplay() {
        replay.removeAll { cursor.isAcknowledged($0) }
    }

    /// Puts entries a consumer holds back for delivery, counting one more redelivery for each.
    /// An empty list means all of them.
    func redeliver(_ key: ConsumerKey, positions: [Position]) {
        guard let consumer = consumer(key) else { return }
        let chosen = positions.isEmpty ? Array(consumer.pending.keys) : positions.filter { consumer.pending[$0] != nil }
        for position in chosen {
            if let messages = consumer.pending.removeValue(forKey: position) {
                consumer.unackedMessages -= Int64(messages)
            }
            redeliveryCounts[position, default: 0] += 1
        }
        addToReplay(chosen)
        dispatch()
    }

    private func addToReplay<S: Sequence>(_ positions: S) where S.Element == Position {
        var added = false
        for position in positions where !cursor.isAcknowledged(position) {
            replay.append(position)
            added = true
        }
        if added {
            replay = Array(Set(replay)).sorted()
        }
    }

    // MARK: seek

    /// Moves the cursor so the next delivery is the first entry after `markDelete`, forgets all
    /// delivery state, and closes every consumer (the clients reconnect and send fresh permits).
    func reset(markDelete: Position) {
        cursor.reset(markDelete: markDelete)
        lastRead = cursor.markDelete
        replay.removeAll()
        redeliveryCounts.removeAll()
        let closing = consumers
        consumers.removeAll()
        activeConsumer = nil
        keepWithoutConsumers = true
        for consumer in closing {
            consumer.sink.closeConsumerByBroker(consumerID: consumer.key.consumerID)
        }
    }

    /// Repositions a subscription that has no delivery in flight (a reader re-subscribing with a start).
    func reposition(markDelete: Position) {
        cursor.reset(markDelete: markDelete)
        lastRead = cursor.markDelete
        replay.removeAll()
        redeliveryCounts.removeAll()
        for consumer in consumers {
            consumer.pending.removeAll()
            consumer.unackedMessages = 0
        }
    }

    // MARK: dispatch

    /// Called when new entries became durable, or permits or consumers changed.
    func scheduleDispatch() {
        guard !dispatchScheduled else { return }
        dispatchScheduled = true
        managedLedger.eventLoop.execute {
            self.dispatchScheduled = false
            self.dispatch()
        }
    }

    /// Hands entries to consumers with permits, replays first, then new entries in log order.
    func dispatch() {
        managedLedger.eventLoop.preconditionInEventLoop()
        var touched: [ObjectIdentifier: any ConsumerSink] = [:]
        var budget = Subscription.maxEntriesPerDispatchPass
        while budget > 0 {
            guard let consumer = selectConsumer() else { break }
            guard let position = nextPosition() else { break }
            if cursor.isAcknowledged(position) { continue }
            let entry: Entry
            do {
                entry = try managedLedger.read(position)
            } catch {
                logger.error("subscription.read-failed", metadata: [
                    "subscription": "\(name)", "position": "\(position)", "error": "\(error)",
                ])
                break
            }
            let messages = max(entry.attributes.numMessages, 1)
            consumer.permits -= Int64(messages)
            consumer.pending[position] = messages
            consumer.unackedMessages += Int64(messages)
            consumer.messagesOut += Int64(messages)
            consumer.sink.sendMessage(
                consumerID: consumer.key.consumerID, position: position, partitionIndex: partitionIndex,
                redeliveryCount: redeliveryCounts[position] ?? 0, entry: entry)
            touched[ObjectIdentifier(consumer.sink)] = consumer.sink
            budget -= 1
        }
        for sink in touched.values { sink.flush() }
        if budget == 0 { scheduleDispatch() }
    }

    private func selectConsumer() -> Consumer? {
        switch type {
        case .exclusive:
            return consumers.first.flatMap { $0.permits > 0 ? $0 : nil }
        case .failover:
            return activeConsumer.flatMap { $0.permits > 0 ? $0 : nil }
        case .shared, .keyShared:
            guard !consumers.isEmpty else { return nil }
            for offset in 0..<consumers.count {
                let candidate = consumers[(roundRobinIndex + offset) % consumers.count]
                if candidate.permits > 0 {
                    roundRobinIndex = (roundRobinIndex + offset + 1) % consumers.count
                    return candidate
                }
            }
            return nil
        }
    }

    private func nextPosition() -> Position? {
        if !replay.isEmpty {
            return replay.removeFirst()
        }
        if lastRead < cursor.markDelete { lastRead = cursor.markDelete }
        guard let next = managedLedger.next(after: lastRead) else { return nil }
        lastRead = next
        return next
    }

    // MARK: stats

    var unackedMessages: Int64 { consumers.reduce(0) { $0 + $1.unackedMessages } }
}
