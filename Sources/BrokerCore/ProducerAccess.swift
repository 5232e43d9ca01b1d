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
