import ManagedLedger
import Foundation
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
    private(set) var lastRead: Position
    /// Entries to deliver again before reading further, in log order.
    private(set) var replay: [Position] = []
    /// Redeliveries requested per entry (REDELIVER_UNACKNOWLEDGED_MESSAGES), reported to consumers.
    private var redeliveryCounts: [Position: UInt32] = [:]
    private var roundRobinIndex = 0
    private var activeConsumer: Consumer?
    private var keySharedSelector = KeySharedSelector()
    /// Key_Shared: which consumer holds delivered, unacknowledged entries of each sticky-key hash, and
    /// how many. An entry of a hash goes to no other consumer until these are acknowledged or come
    /// back (a hash moves when consumers join or leave: its earlier entries must be done first, or
    /// the key's messages would be processed out of order — Pulsar's "draining hashes").
    private var pendingHashOwners: [UInt32: (consumer: ConsumerKey, count: Int)] = [:]
    /// Key_Shared: the sticky-key hash of each delivered, unacknowledged entry.
    private var pendingHashes: [Position: UInt32] = [:]
    /// Key_Shared: the sticky-key hash of entries in the replay queue, so a pass can keep a held
    /// entry held without reading it (Pulsar keeps the hash with each redelivery position too).
    private var replayHashes: [Position: UInt32] = [:]
    /// Entries held until their delivery time (Shared and Key_Shared), by position.
    private var delayed: [Position: Int64] = [:]
    private var delayedTimer: Scheduled<Void>?
    private var delayedTimerDeadlineMs: Int64 = .max
    private var dispatchScheduled = false
    /// Failed reads per entry not yet delivered nor given up (a checksum mismatch may be a passing
    /// I/O fault): the entry waits at the head of the replay queue for the next attempt.
    private var readFailures: [Position: Int] = [:]
    private var readRetryTimer: Scheduled<Void>?
    /// The last read failed because the store holding the entry (the offload tier) did not answer:
    /// dispatch waits for `readRetryTimer` before reading again.
    private var waitingForStore = false
    /// The topic's dispatch rate (shared by its subscriptions); in debt, dispatch waits on this timer.
    let dispatchRateLimiter: RateLimiter
    private var rateTimer: Scheduled<Void>?
    /// Set by a seek, so a reader's subscription survives the reconnect the seek causes.
    var keepWithoutConsumers = false
    /// Messages put back for redelivery (Pulsar's `msgRateRedeliver` counts them), and when the
    /// message TTL last expired some (epoch ms; 0: never).
    var messagesRedelivered: Int64 = 0
    var lastExpireTimestampMs: Int64 = 0
    /// Consumers read compacted (Exclusive / Failover): up to the compaction horizon, entries come
    /// from the compacted ledger (the latest message of each key), after it from the log.
    var readCompacted = false
    private let compacted: CompactedTopicView
    /// The topic's transaction buffer: nothing at or after its read limit is read, and the entries
    /// of aborted transactions are acknowledged without being delivered.
    private let transactions: TransactionView
    /// Kept entries fetched from the compacted ledger, in log order, not yet dispatched.
    private var compactedQueue = CircularBuffer<(position: Position, entry: Entry)>()
    private var compactedFetching = false
    /// Bumped by seeks and new compacted ledgers: a fetch started before is dropped.
    private var compactedGeneration = 0

    /// Entries handed to consumers per dispatch pass before yielding the event loop.
    static let maxEntriesPerDispatchPass = 256
    /// Entries read from the log per pass. A Key_Shared entry whose hash is known (`replayHashes`)
    /// is judged without a read, so held entries never use up a pass before others are reached;
    /// a pass that runs out of reads continues in a new one.
    static let maxEntriesExaminedPerDispatchPass = 4_096
    /// Entries a Key_Shared subscription may hold back (read but waiting for their consumer) before
    /// it stops reading ahead.
    static let maxHeldEntries = 10_000
    /// Reads of one entry before dispatch gives up on it: it is reported unreadable (log, metric,
    /// admin internal stats), left unacknowledged (its backlog stays visible until an operator skips
    /// it) and dispatch goes on with the entries after it.
    static let maxReadAttempts = 3
    /// Wait before the next read of an entry whose read failed; dispatch stops meanwhile, so the
    /// entries after it keep their order.
    static let readRetryDelay: TimeAmount = .milliseconds(100)
    /// Wait before reading again from a store that did not answer (`serviceNotReady`: the tier).
    static let unavailableRetryDelay: TimeAmount = .seconds(1)

    init(
        name: String, type: SubscriptionType, cursor: Cursor, managedLedger: ManagedLedger, partitionIndex: Int32,
        compacted: CompactedTopicView, transactions: TransactionView = TransactionView(),
        dispatchRateLimiter: RateLimiter = RateLimiter(), logger: Logger
    ) {
        self.compacted = compacted
        self.transactions = transactions
        self.dispatchRateLimiter = dispatchRateLimiter
        self.name = name
        self.type = type
        self.cursor = cursor
        self.managedLedger = managedLedger
        self.partitionIndex = partitionIndex
        self.logger = logger
        self.lastRead = cursor.markDelete
    }

    var isDurable: Bool { cursor.durable }

    /// Geo-replication: the subscription's position is mirrored to the other clusters
    /// (`replicate_subscription_state`); `onMarker` hears every marker its dispatch passes.
    var isReplicated = false
    var onMarker: ((Entry, Position) -> Void)?
    /// A replicator's cursor: markers are delivered to it like any entry (it forwards them).
    var deliversMarkers = false
    /// Entries acknowledged in transactions that have not ended, by transaction and by entry.
    private(set) var transactionAcks: [TransactionID: [Position]] = [:]
    private(set) var transactionHeld: [Position: TransactionID] = [:]

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
        if type == .keyShared {
            let mode = consumer.keySharedPolicy?.mode ?? .autoSplit
            if let existing = consumers.first?.keySharedPolicy?.mode, Self.isSticky(existing) != Self.isSticky(mode) {
                throw BrokerError(.consumerAssign, "subscription '\(name)' mixes sticky and auto-split Key_Shared consumers")
            }
            // Keys that move to the new consumer may have entries in flight at others: per hash,
            // `pendingHashOwners` holds them back until those are acknowledged (Pulsar 4's draining
            // hashes). No subscription-wide "recently joined" wait: it made the new consumer wait for
            // the slowest consumer's oldest entry, whatever its keys.
            try keySharedSelector.add(consumer.key, name: consumer.name, mode: mode)
        }
        consumers.append(consumer)
        keepWithoutConsumers = false
        if type == .failover { updateActiveConsumer() }
    }

    private static func isSticky(_ mode: KeySharedMode) -> Bool {
        if case .sticky = mode { return true }
        return false
    }

    /// Detaches a consumer; what it held unacknowledged goes back for redelivery (count unchanged).
    func removeConsumer(_ key: ConsumerKey) {
        guard let index = consumers.firstIndex(where: { $0.key == key }) else { return }
        let consumer = consumers.remove(at: index)
        keySharedSelector.remove(key)
        for position in consumer.pending.keys {
            if let hash = forgetPendingHash(position) { replayHashes[position] = hash }
        }
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
        scheduleDispatchIfHeld()
    }

    /// A partial acknowledgement of a batch entry (batch-index acks).
    func acknowledgeBatchIndexes(_ position: Position, ackSet: [Int64]) {
        cursor.acknowledgeBatchIndexes(position, ackSet: ackSet)
        if cursor.isAcknowledged(position) {
            releasePending(position)
            dropAcknowledgedFromReplay()
            scheduleDispatchIfHeld()
        }
    }

    /// Key_Shared entries held back (a hash still held by another consumer) may be deliverable once
    /// acknowledgements come in.
    private func scheduleDispatchIfHeld() {
        if type == .keyShared, !replay.isEmpty { scheduleDispatch() }
    }

    func acknowledgeCumulative(upTo position: Position) {
        for consumer in consumers {
            for pendingPosition in consumer.pending.keys where pendingPosition <= position {
                releasePending(pendingPosition, from: consumer)
            }
        }
        cursor.acknowledgeCumulative(upTo: position)
        dropAcknowledgedFromReplay()
        scheduleDispatchIfHeld()
    }

    private func releasePending(_ position: Position, from owner: Consumer? = nil) {
        redeliveryCounts[position] = nil
        let holders = owner.map { [$0] } ?? consumers
        for consumer in holders {
            if let messages = consumer.pending.removeValue(forKey: position) {
                consumer.unackedMessages -= Int64(messages)
                forgetPendingHash(position)
                return
            }
        }
    }

    /// A delivered entry is no longer held by its consumer (acknowledged, redelivered, or the consumer left).
    /// Returns its hash (Key_Shared).
    @discardableResult
    private func forgetPendingHash(_ position: Position) -> UInt32? {
        guard let hash = pendingHashes.removeValue(forKey: position) else { return nil }
        if let owner = pendingHashOwners[hash] {
            pendingHashOwners[hash] = owner.count > 1 ? (owner.consumer, owner.count - 1) : nil
        }
        return hash
    }

    private func dropAcknowledgedFromReplay() {
        replay.removeAll { cursor.isAcknowledged($0) }
        if !replayHashes.isEmpty { replayHashes = replayHashes.filter { !cursor.isAcknowledged($0.key) } }
    }

    /// Puts entries a consumer holds back for delivery, counting one more redelivery for each
    /// (Shared and Key_Shared).
    /// An empty list means all of them.
    func redeliver(_ key: ConsumerKey, positions: [Position]) {
        guard let consumer = consumer(key) else { return }
        let chosen = positions.isEmpty ? Array(consumer.pending.keys) : positions.filter { consumer.pending[$0] != nil }
        for position in chosen {
            if let messages = consumer.pending.removeValue(forKey: position) {
                consumer.unackedMessages -= Int64(messages)
                consumer.messagesRedelivered += Int64(messages)
                messagesRedelivered += Int64(messages)
                if let hash = forgetPendingHash(position) { replayHashes[position] = hash }
            }
            // As Pulsar's single-active-consumer dispatchers, Exclusive and Failover track no
            // redelivery counts (their messages always carry 0); Shared and Key_Shared do.
            if type != .exclusive, type != .failover { redeliveryCounts[position, default: 0] += 1 }
        }
        addToReplay(chosen)
        dispatch()
    }

    private func addToReplay<S: Sequence>(_ positions: S) where S.Element == Position {
        var added = false
        var positions = Array(positions)
        if readCompacted, let horizon = compacted.horizon, let earliest = positions.filter({ $0 <= horizon }).min() {
            // Compacted entries are delivered again by reading the compacted ledger again from the
            // earliest of them (the log may no longer hold them, and holds superseded messages); the
            // log's entries after them follow in order, read again too.
            positions.removeAll { $0 >= earliest }
            replay.removeAll { $0 >= earliest }
            rewindCompacted(before: earliest)
        }
        for position in positions where !cursor.isAcknowledged(position) && transactionHeld[position] == nil {
            replay.append(position)
            added = true
        }
        if added {
            replay = Array(Set(replay)).sorted()
        }
    }

    // MARK: transactions

    /// Acknowledges `positions` in `transaction`: they are held (neither dispatched nor redelivered)
    /// until it ends. An entry already acknowledged, or held by another transaction, is a conflict
    /// (Pulsar's TransactionConflict) and nothing of the request is taken.
    func acknowledge(_ positions: [Position], transaction: TransactionID) throws(BrokerError) {
        for position in positions {
            if cursor.isAcknowledged(position) {
                throw BrokerError(.transactionConflict, "message \(position) of subscription '\(name)' is already acknowledged")
            }
            if let owner = transactionHeld[position], owner != transaction {
                throw BrokerError(
                    .transactionConflict, "message \(position) of subscription '\(name)' is acknowledged in transaction \(owner)")
            }
        }
        for position in positions where transactionHeld[position] == nil {
            transactionHeld[position] = transaction
            transactionAcks[transaction, default: []].append(position)
            releasePending(position)
        }
        replay.removeAll { transactionHeld[$0] != nil }
        scheduleDispatchIfHeld()
    }

    /// The transaction ended: committed, its acknowledgements apply; aborted, its entries are delivered again.
    func endTransaction(_ transaction: TransactionID, committed: Bool) {
        guard let positions = transactionAcks.removeValue(forKey: transaction) else { return }
        for position in positions { transactionHeld[position] = nil }
        if committed {
            acknowledge(positions)
        } else {
            for position in positions where type != .exclusive && type != .failover { redeliveryCounts[position, default: 0] += 1 }
            addToReplay(positions)
            scheduleDispatch()
        }
    }

    /// Acknowledgements of ongoing transactions, as restored when the topic loads.
    func restoreTransactionAcks(_ acks: [TransactionID: [Position]]) {
        for (transaction, positions) in acks {
            for position in positions where transactionHeld[position] == nil && !cursor.isAcknowledged(position) {
                transactionHeld[position] = transaction
                transactionAcks[transaction, default: []].append(position)
            }
        }
    }

    // MARK: seek

    // MARK: compacted reads

    /// The next read starts after `position` again (entries still pending at a consumer are skipped).
    private func rewindCompacted(before position: Position) {
        let target = position.previousInLedger
        guard target < lastRead else { return }
        lastRead = target
        compactedQueue.removeAll()
        compactedGeneration += 1
    }

    /// The topic installed a newer compacted ledger: fetch from it from now on.
    func compactedLedgerChanged() {
        compactedQueue.removeAll()
        compactedGeneration += 1
        scheduleDispatch()
    }

    /// Fetches the next kept entries after `lastRead`; none left: the log is read from the horizon on.
    private func fetchCompacted(horizon: Position) {
        guard !compactedFetching else { return }
        compactedFetching = true
        let generation = compactedGeneration
        let after = lastRead
        compacted.entries(after: after, limit: ManagedLedgerLimits.readAheadBatch).whenComplete { result in
            self.compactedFetching = false
            guard generation == self.compactedGeneration else {
                self.scheduleDispatch()
                return
            }
            switch result {
            case .success(let entries) where entries.isEmpty:
                if self.lastRead == after, after < horizon { self.lastRead = horizon }
                self.scheduleDispatch()
            case .success(let entries):
                for entry in entries where entry.0 > after { self.compactedQueue.append((entry.0, entry.1)) }
                self.scheduleDispatch()
            case .failure(let error):
                self.logger.warning("subscription.compacted-read-failed", metadata: [
                    "subscription": "\(self.name)", "error": "\(error)",
                ])
                self.scheduleReadRetry()
            }
        }
    }

    private func isPending(_ position: Position) -> Bool {
        consumers.contains { $0.pending[position] != nil }
    }

    /// Moves the cursor so the next delivery is the first entry after `markDelete`, forgets all
    /// delivery state, and closes every consumer (the clients reconnect and send fresh permits).
    func reset(markDelete: Position) {
        compactedQueue.removeAll()
        compactedGeneration += 1
        cursor.reset(markDelete: markDelete)
        lastRead = cursor.markDelete
        replay.removeAll()
        readFailures.removeAll()
        redeliveryCounts.removeAll()
        delayed.removeAll()
        pendingHashes.removeAll()
        pendingHashOwners.removeAll()
        replayHashes.removeAll()
        let closing = consumers
        for consumer in closing { keySharedSelector.remove(consumer.key) }
        consumers.removeAll()
        activeConsumer = nil
        keepWithoutConsumers = true
        for consumer in closing {
            consumer.sink.closeConsumerByBroker(consumerID: consumer.key.consumerID)
        }
    }

    /// Repositions a subscription that has no delivery in flight (a reader re-subscribing with a start).
    func reposition(markDelete: Position) {
        compactedQueue.removeAll()
        compactedGeneration += 1
        cursor.reset(markDelete: markDelete)
        lastRead = cursor.markDelete
        replay.removeAll()
        readFailures.removeAll()
        redeliveryCounts.removeAll()
        delayed.removeAll()
        pendingHashes.removeAll()
        pendingHashOwners.removeAll()
        replayHashes.removeAll()
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

    /// Hands entries to consumers with permits: the replay queue first, then new entries in log order.
    /// An entry no consumer may take now (Key_Shared: its consumer has no permits, or another consumer
    /// still holds entries of its hash) stays in the replay queue, and so does every later entry of
    /// that hash in this pass, so later entries of the same key stay behind it.
    func dispatch() {
        managedLedger.eventLoop.preconditionInEventLoop()
        // The store did not answer: nothing is read before the retry timer (publishes, permits
        // and acks do not start a fetch each meanwhile).
        if waitingForStore, readRetryTimer != nil { return }
        var touched: [ObjectIdentifier: any ConsumerSink] = [:]
        var delivered = 0
        var reads = 0
        var replayIndex = 0
        var outOfReads = false
        var progressed = false
        /// Key_Shared: hashes an entry of which was held in this pass; their later entries are held too
        /// (per-key order), even if their consumer became able to take them meanwhile.
        var blockedHashes = Set<UInt32>()
        let nowMs = currentTimeMs()
        while delivered < Subscription.maxEntriesPerDispatchPass {
            guard consumers.contains(where: \.canReceive) else { break }
            // The namespace's dispatchRate: over it, nothing more until the debt is paid off.
            if let wait = dispatchRateLimiter.wait(nowNanos: NIODeadline.now().uptimeNanoseconds) {
                armRateTimer(nanoseconds: wait)
                break
            }
            let position: Position
            var compactedEntry: Entry?
            let fromReplay = replayIndex < replay.count
            if fromReplay {
                position = replay[replayIndex]
                if cursor.isAcknowledged(position) || transactionHeld[position] != nil {
                    replay.remove(at: replayIndex)
                    replayHashes[position] = nil
                    if !readFailures.isEmpty { readFailures[position] = nil }
                    continue
                }
                // A held Key_Shared entry whose hash is known is judged without reading it.
                if let hash = replayHashes[position], keySharedConsumer(hash: hash, blocked: blockedHashes) == nil {
                    blockedHashes.insert(hash)
                    replayIndex += 1
                    continue
                }
                if replayHashes[position] == nil {
                    guard reads < Subscription.maxEntriesExaminedPerDispatchPass else { outOfReads = true; break }
                }
                // Not at hand in a cluster: fetch it (and the held entries after it) without blocking
                // the loop; the pass goes on when they are in.
                if !managedLedger.canReadNow(position) {
                    let batch = replay[replayIndex...].prefix(ManagedLedgerLimits.readAheadBatch)
                    managedLedger.readAhead(Array(batch)) { self.scheduleDispatch() }
                    break
                }
            } else if readCompacted, let horizon = compacted.horizon, max(lastRead, cursor.markDelete) < horizon {
                if lastRead < cursor.markDelete { lastRead = cursor.markDelete }
                while let first = compactedQueue.first, first.position <= lastRead { compactedQueue.removeFirst() }
                guard let next = compactedQueue.popFirst() else {
                    fetchCompacted(horizon: horizon)
                    break
                }
                lastRead = next.position
                position = next.position
                compactedEntry = next.entry
                progressed = true
                if cursor.isAcknowledged(position) || isPending(position) { continue }
            } else {
                if lastRead < cursor.markDelete { lastRead = cursor.markDelete }
                guard replay.count < Subscription.maxHeldEntries, let next = managedLedger.next(after: lastRead),
                      transactions.mayRead(next)
                else { break }
                guard reads < Subscription.maxEntriesExaminedPerDispatchPass else { outOfReads = true; break }
                if !managedLedger.canReadNow(next), !cursor.isAcknowledged(next) {
                    managedLedger.readAhead(unacknowledged(from: next, limit: ManagedLedgerLimits.readAheadBatch), forward: true) {
                        self.scheduleDispatch()
                    }
                    break
                }
                lastRead = next
                position = next
                progressed = true
                if cursor.isAcknowledged(position) { continue }
                if !transactionHeld.isEmpty, transactionHeld[position] != nil { continue }
                // After a rewind of compacted reads, what a consumer still holds is not sent again.
                if readCompacted, isPending(position) { continue }
            }
            reads += 1
            let entry: Entry
            do {
                if let compactedEntry {
                    entry = compactedEntry
                } else {
                    entry = try managedLedger.read(position)
                }
            } catch {
                if error.code == .serviceNotReady {
                    // The store holding it (the offload tier) is down: wait for it, however long,
                    // without giving up on the entry; the consumer sees a pause, not a gap.
                    if !fromReplay { replay.append(position) }
                    if readFailures[position] == nil {
                        readFailures[position] = 0
                        logger.warning("subscription.read-waiting", metadata: [
                            "subscription": "\(name)", "ledger.id": "\(position.ledgerID)", "entry.id": "\(position.entryID)",
                            "error": "\(error)", "hint": "dispatch retries every second until the store answers",
                        ])
                    }
                    waitingForStore = true
                    scheduleReadRetry(after: Subscription.unavailableRetryDelay)
                    break
                }
                let attempts = (readFailures[position] ?? 0) + 1
                if attempts < Subscription.maxReadAttempts {
                    // Try it again first, later: it waits in the replay queue (log order holds:
                    // everything there was read before it).
                    readFailures[position] = attempts
                    if !fromReplay { replay.append(position) }
                    logger.warning("subscription.read-failed", metadata: [
                        "subscription": "\(name)", "ledger.id": "\(position.ledgerID)", "entry.id": "\(position.entryID)",
                        "read.attempt": "\(attempts)", "error": "\(error)",
                    ])
                    scheduleReadRetry()
                    break
                }
                // Neither stall nor lose it: report it, leave it unacknowledged, go on after it.
                readFailures[position] = nil
                if fromReplay { replay.remove(at: replayIndex) }
                replayHashes[position] = nil
                managedLedger.recordUnreadable(position, error: error)
                logger.error("subscription.entry-unreadable", metadata: [
                    "subscription": "\(name)", "ledger.id": "\(position.ledgerID)", "entry.id": "\(position.entryID)",
                    "read.attempts": "\(attempts)", "error": "\(error)",
                    "hint": "the entry stays in the backlog; restore it from a replica, or skip it with the admin API (topics skip)",
                ])
                continue
            }
            if !readFailures.isEmpty { readFailures[position] = nil }
            if let transaction = entry.attributes.transactionID,
               entry.attributes.isMarker || transactions.aborted.contains(transaction)
            {
                // A transaction's marker, or an entry of an aborted one: never delivered.
                if fromReplay { replay.remove(at: replayIndex) }
                replayHashes[position] = nil
                releasePending(position)
                cursor.acknowledge(position)
                continue
            }
            if entry.attributes.isMarker, !deliversMarkers {
                // Never shown to a client: acknowledged as dispatch passes it.
                if fromReplay { replay.remove(at: replayIndex) }
                replayHashes[position] = nil
                onMarker?(entry, position)
                releasePending(position)
                cursor.acknowledge(position)
                continue
            }
            if (type == .shared || type == .keyShared), entry.attributes.deliverAtMs > nowMs {
                if fromReplay { replay.remove(at: replayIndex) }
                replayHashes[position] = nil
                delayed[position] = entry.attributes.deliverAtMs
                continue
            }
            guard let consumer = selectConsumer(for: entry, blocked: blockedHashes) else {
                if type == .keyShared {
                    let hash = Self.stickyHash(entry)
                    blockedHashes.insert(hash)
                    if replayHashes.updateValue(hash, forKey: position) == nil { progressed = true }
                }
                if fromReplay { replayIndex += 1 } else { replay.append(position); replayIndex = replay.count }
                continue
            }
            if fromReplay { replay.remove(at: replayIndex) }
            replayHashes[position] = nil
            let messages = max(entry.attributes.numMessages, 1)
            consumer.permits -= Int64(messages)
            consumer.pending[position] = messages
            if type == .keyShared {
                let hash = Self.stickyHash(entry)
                pendingHashes[position] = hash
                let owned = pendingHashOwners[hash]?.count ?? 0
                pendingHashOwners[hash] = (consumer.key, owned + 1)
            }
            consumer.unackedMessages += Int64(messages)
            consumer.messagesOut += Int64(messages)
            consumer.bytesOut += Int64(entry.body.readableBytes)
            consumer.sink.sendMessage(
                consumerID: consumer.key.consumerID, position: position, partitionIndex: partitionIndex,
                redeliveryCount: redeliveryCounts[position] ?? 0,
                ackSet: compactedEntry == nil ? cursor.batchAckSets[position] : nil, entry: entry)
            touched[ObjectIdentifier(consumer.sink)] = consumer.sink
            delivered += 1
            _ = dispatchRateLimiter.consume(
                messages: Int(messages), bytes: entry.body.readableBytes, nowNanos: NIODeadline.now().uptimeNanoseconds)
        }
        for sink in touched.values { sink.flush() }
        armDelayedTimer()
        // Out of reads: go on in a new pass (entries held in this one are now judged without reads).
        if delivered == Subscription.maxEntriesPerDispatchPass || (outOfReads && (progressed || delivered > 0)) {
            scheduleDispatch()
        }
    }

    /// One more pass after `readRetryDelay`, for an entry whose read failed.
    /// Up to `limit` unacknowledged positions of the log from `first` on (the entries a pass will
    /// read next).
    private func unacknowledged(from first: Position, limit: Int) -> [Position] {
        var positions: [Position] = []
        var current: Position? = first
        var examined = 0
        while let position = current, positions.count < limit, examined < 4 * limit {
            examined += 1
            if !cursor.isAcknowledged(position) { positions.append(position) }
            current = managedLedger.next(after: position)
        }
        return positions
    }

    /// One more pass once the dispatch rate's debt is paid off.
    private func armRateTimer(nanoseconds: UInt64) {
        guard rateTimer == nil else { return }
        rateTimer = managedLedger.eventLoop.scheduleTask(in: .nanoseconds(Int64(nanoseconds))) {
            self.rateTimer = nil
            self.dispatch()
        }
    }

    private func scheduleReadRetry(after delay: TimeAmount = Subscription.readRetryDelay) {
        guard readRetryTimer == nil else { return }
        readRetryTimer = managedLedger.eventLoop.scheduleTask(in: delay) {
            self.readRetryTimer = nil
            self.waitingForStore = false
            self.dispatch()
        }
    }

    private func selectConsumer(for entry: Entry, blocked: Set<UInt32>) -> Consumer? {
        switch type {
        case .exclusive:
            return consumers.first.flatMap { $0.canReceive ? $0 : nil }
        case .failover:
            return activeConsumer.flatMap { $0.canReceive ? $0 : nil }
        case .shared:
            for offset in 0..<consumers.count {
                let candidate = consumers[(roundRobinIndex + offset) % consumers.count]
                if candidate.canReceive {
                    roundRobinIndex = (roundRobinIndex + offset + 1) % consumers.count
                    return candidate
                }
            }
            return nil
        case .keyShared:
            return keySharedConsumer(hash: Self.stickyHash(entry), blocked: blocked)
        }
    }

    /// The consumer that may take an entry of `hash` now, if any.
    private func keySharedConsumer(hash: UInt32, blocked: Set<UInt32>) -> Consumer? {
        guard !blocked.contains(hash), let key = keySharedSelector.select(hash: hash), let consumer = consumer(key),
              consumer.canReceive
        else { return nil }
        // The hash moved here while another consumer still holds some of its entries.
        if let owner = pendingHashOwners[hash], owner.consumer != key { return nil }
        return consumer
    }

    private static func stickyHash(_ entry: Entry) -> UInt32 {
        entry.attributes.key.isEmpty ? KeySharedSelector.noKeyHash : Murmur3.stickyKeyHash(entry.attributes.key)
    }

    // MARK: delayed delivery

    private func currentTimeMs() -> Int64 {
        managedLedger.clock.nowMs()
    }

    /// Schedules a pass for when the earliest held entry becomes due.
    private func armDelayedTimer() {
        guard let earliest = delayed.values.min() else { return }
        guard earliest < delayedTimerDeadlineMs else { return }
        delayedTimer?.cancel()
        delayedTimerDeadlineMs = earliest
        let wait = max(0, earliest - currentTimeMs())
        delayedTimer = managedLedger.eventLoop.scheduleTask(in: .milliseconds(wait)) {
            self.delayedTimer = nil
            self.delayedTimerDeadlineMs = .max
            self.releaseDueEntries()
        }
    }

    private func releaseDueEntries() {
        let now = currentTimeMs()
        let due = delayed.filter { $0.value <= now }.map(\.key)
        for position in due { delayed[position] = nil }
        addToReplay(due)
        dispatch()
        armDelayedTimer()
    }

    // MARK: stats

    var unackedMessages: Int64 { consumers.reduce(0) { $0 + $1.unackedMessages } }
}
