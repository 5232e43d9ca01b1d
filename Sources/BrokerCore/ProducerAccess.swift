import Logging
import ManagedLedger
import NIOCore

/// Pulsar's producer access modes (`ProducerAccessMode` on the wire, `access_mode=` in Python).
public enum ProducerAccessMode: Int, Sendable {
    /// Any number of producers, unless one is exclusive.
    case shared = 0
    /// The only producer: refused (`ProducerBusy`) while any other is connected.
    case exclusive = 1
    /// The only producer, once the others are gone: it waits its turn.
    case waitForExclusive = 2
    /// The only producer: the others are fenced (closed; they cannot come back).
    case exclusiveWithFencing = 3
}

/// Who may produce on one topic (Pulsar's `AbstractTopic` rules): the exclusive holder, the
/// queue of WaitForExclusive producers, and the topic epoch, which each exclusive grant raises and
/// which a reconnecting exclusive producer must not be behind. A pure value; the topic owns one.
struct ProducerAccessControl<Key: Hashable> {
    private(set) var exclusiveHolder: Key?
    private(set) var epoch: UInt64 = 0
    private(set) var waiters: [Key] = []

    enum Decision: Equatable {
        /// Produce now; `epoch` is the topic epoch to report (exclusive modes) or nil (shared).
        case granted(epoch: UInt64?)
        /// Wait for `grantNext`.
        case waiting
        /// Produce now, after the listed producers are fenced.
        case fencing(others: [Key], epoch: UInt64)
        case refused(BrokerError)
    }

    /// A producer asks for access; `current`: the other producers connected now.
    mutating func request(_ key: Key, mode: ProducerAccessMode, clientEpoch: UInt64?, current: [Key]) -> Decision {
        if mode != .shared, let clientEpoch, clientEpoch < epoch {
            return .refused(BrokerError(.producerFenced, "Topic epoch has already moved. Current epoch: \(epoch), Producer epoch: \(clientEpoch)"))
        }
        let others = current.filter { $0 != key }
        switch mode {
        case .shared:
            if let holder = exclusiveHolder, holder != key {
                return .refused(BrokerError(.producerBusy, "Topic has an existing exclusive producer"))
            }
            return .granted(epoch: nil)
        case .exclusive:
            guard others.isEmpty else {
                return .refused(BrokerError(
                    .producerBusy, exclusiveHolder != nil ? "Topic has an existing exclusive producer" : "Topic has existing shared producers"))
            }
            return .granted(epoch: grant(key, clientEpoch: clientEpoch))
        case .waitForExclusive:
            guard others.isEmpty, waiters.isEmpty || waiters.first == key else {
                if !waiters.contains(key) { waiters.append(key) }
                return .waiting
            }
            waiters.removeAll { $0 == key }
            return .granted(epoch: grant(key, clientEpoch: clientEpoch))
        case .exclusiveWithFencing:
            let epoch = grant(key, clientEpoch: nil)
            return others.isEmpty ? .granted(epoch: epoch) : .fencing(others: others, epoch: epoch)
        }
    }

    /// A producer left (closed, or its connection did). Returns the waiter that now has access,
    /// with its epoch, if the topic has no producer left.
    mutating func released(_ key: Key, remaining: [Key]) -> (Key, UInt64)? {
        waiters.removeAll { $0 == key }
        if exclusiveHolder == key { exclusiveHolder = nil }
        guard remaining.filter({ $0 != key }).isEmpty, let next = waiters.first else { return nil }
        waiters.removeFirst()
        return (next, grant(next, clientEpoch: nil))
    }

    /// The holder reconnecting with the epoch it was given keeps it; anyone else raises it.
    private mutating func grant(_ key: Key, clientEpoch: UInt64?) -> UInt64 {
        if let clientEpoch, clientEpoch == epoch, epoch > 0 {
            exclusiveHolder = key
            return epoch
        }
        epoch += 1
        exclusiveHolder = key
        return epoch
    }
}

extension ProducerAccessControl {
    /// The epoch a topic had before it was loaded here (persisted by the previous owner).
    mutating func restore(epoch: UInt64) {
        self.epoch = max(self.epoch, epoch)
    }
}

/// A WaitForExclusive producer not yet given access, with what to tell it when it is.
typealias WaitingProducer = (name: String, sink: any ProducerSink, promise: EventLoopPromise<UInt64>)

/// A topic that applies Pulsar's producer access modes (persistent and non-persistent alike): the
/// decision is `ProducerAccessControl`'s, the bookkeeping here. Called on the topic's loop.
protocol ProducerAccessHost: AnyObject {
    var eventLoop: any EventLoop { get }
    var logger: Logger { get }
    var producers: [Topic.ProducerKey: String] { get set }
    var producerSinks: [Topic.ProducerKey: any ProducerSink] { get set }
    var producerAccess: ProducerAccessControl<Topic.ProducerKey> { get set }
    var waitingProducers: [Topic.ProducerKey: WaitingProducer] { get set }
    /// Registers a producer (limits, name clashes), as a Shared one.
    func addProducer(connectionID: UInt64, producerID: UInt64, name: String, sink: any ProducerSink) throws(BrokerError) -> String
    /// A producer got access in `mode` (stats).
    func producerAdmitted(_ key: Topic.ProducerKey, name: String, sink: any ProducerSink, mode: ProducerAccessMode)
    /// Makes a raised topic epoch durable before the producer hears of it; nil: kept in memory only.
    func persistTopicEpoch() -> EventLoopFuture<Void>?
}

extension ProducerAccessHost {
    /// Registers a producer with its access mode: `.ready` (the topic epoch for the exclusive modes),
    /// `.waiting` for a WaitForExclusive producer behind others (its future completes with the epoch
    /// once it has access, and that epoch is durable), or `.persisting` while a raised epoch is
    /// written. ExclusiveWithFencing closes the others.
    func requestAccess(
        connectionID: UInt64, producerID: UInt64, name requested: String, sink: any ProducerSink,
        accessMode: ProducerAccessMode, topicEpoch: UInt64?
    ) throws(BrokerError) -> ProducerGrant {
        eventLoop.preconditionInEventLoop()
        let key = Topic.ProducerKey(connectionID: connectionID, producerID: producerID)
        if let existing = producers[key], accessMode == .shared {
            return .ready(name: existing, topicEpoch: nil)
        }
        if let waiting = waitingProducers[key] { return .waiting(name: waiting.name, ready: waiting.promise.futureResult) }
        let previousEpoch = producerAccess.epoch
        let name: String
        let epoch: UInt64?
        switch producerAccess.request(key, mode: accessMode, clientEpoch: topicEpoch, current: Array(producers.keys)) {
        case .refused(let error):
            throw error
        case .granted(let granted):
            do {
                name = try addProducer(connectionID: connectionID, producerID: producerID, name: requested, sink: sink)
            } catch {
                _ = producerAccess.released(key, remaining: Array(producers.keys))
                throw error
            }
            epoch = granted
        case .fencing(let others, let granted):
            for other in others {
                logger.info("producer.fenced", metadata: ["producer.name": "\(producers[other] ?? "")", "topic.epoch": "\(granted)"])
                producerSinks[other]?.closeProducerByBroker(producerID: other.producerID)
                producers[other] = nil
                producerSinks[other] = nil
            }
            name = try addProducer(connectionID: connectionID, producerID: producerID, name: requested, sink: sink)
            epoch = granted
        case .waiting:
            let promise = eventLoop.makePromise(of: UInt64.self)
            waitingProducers[key] = (requested, sink, promise)
            return .waiting(name: requested, ready: promise.futureResult)
        }
        producerAdmitted(key, name: name, sink: sink, mode: accessMode)
        guard let epoch, epoch > previousEpoch, let write = persistTopicEpoch() else {
            return .ready(name: name, topicEpoch: epoch)
        }
        return .persisting(name: name, ready: write.flatMapErrorThrowing { error in
            // Not durable: the producer does not get the topic.
            self.releaseAccess(key)
            throw BrokerError(.serviceNotReady, "cannot record the topic epoch: \(error); retry")
        }.map { epoch })
    }

    /// A producer left: forget it; the next WaitForExclusive producer gets the topic once nobody else
    /// produces (after its new epoch is durable).
    func releaseAccess(_ key: Topic.ProducerKey) {
        producers[key] = nil
        producerSinks[key] = nil
        if let waiting = waitingProducers.removeValue(forKey: key) {
            waiting.promise.fail(BrokerError(.producerBusy, "producer closed while it waited for exclusive access"))
        }
        guard let (next, epoch) = producerAccess.released(key, remaining: Array(producers.keys)),
              let waiting = waitingProducers.removeValue(forKey: next)
        else { return }
        producers[next] = waiting.name
        producerSinks[next] = waiting.sink
        producerAdmitted(next, name: waiting.name, sink: waiting.sink, mode: .waitForExclusive)
        guard let write = persistTopicEpoch() else {
            waiting.promise.succeed(epoch)
            return
        }
        write.whenComplete { result in
            switch result {
            case .success: waiting.promise.succeed(epoch)
            case .failure(let error):
                waiting.promise.fail(BrokerError(.serviceNotReady, "cannot record the topic epoch: \(error); retry"))
                self.releaseAccess(next)
            }
        }
    }
}
