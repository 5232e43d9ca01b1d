import ManagedLedger

/// How a Key_Shared subscription assigns key hashes to consumers.
public enum KeySharedMode: Sendable, Equatable {
    /// The broker splits the hash space among consumers (a consistent-hashing ring).
    case autoSplit
    /// Each consumer brings its own hash ranges (inclusive, within 0..<65536); they may not overlap.
    case sticky([ClosedRange<Int32>])
}

/// A consumer's Key_Shared settings, from SUBSCRIBE.keySharedMeta.
public struct KeySharedPolicy: Sendable, Equatable {
    public var mode: KeySharedMode
    public var allowOutOfOrderDelivery: Bool
    public init(mode: KeySharedMode, allowOutOfOrderDelivery: Bool) {
        self.mode = mode
        self.allowOutOfOrderDelivery = allowOutOfOrderDelivery
    }
}

/// Maps a key hash to one consumer of a Key_Shared subscription. A pure value owned by the subscription.
struct KeySharedSelector {
    /// Size of the sticky hash space (Pulsar's `DEFAULT_RANGE_SIZE`).
    static let rangeSize: UInt32 = 65_536
    /// Points per consumer on the auto-split ring.
    static let pointsPerConsumer = 100
    /// The hash used when a message has no key.
    static let noKeyHash = Murmur3.stickyKeyHash(Array("NONE_KEY".utf8))

    private var ring: [(point: UInt32, consumer: ConsumerKey)] = []
    private var sticky: [(range: ClosedRange<Int32>, consumer: ConsumerKey)] = []

    mutating func add(_ key: ConsumerKey, name: String, mode: KeySharedMode) throws(BrokerError) {
        switch mode {
        case .autoSplit:
            for index in 0..<Self.pointsPerConsumer {
                let point = Murmur3.stickyKeyHash(Array("\(name)-\(key.connectionID)-\(key.consumerID)-\(index)".utf8))
                ring.append((point, key))
            }
            ring.sort { ($0.point, $0.consumer.connectionID, $0.consumer.consumerID) < ($1.point, $1.consumer.connectionID, $1.consumer.consumerID) }
        case .sticky(let ranges):
            for range in ranges {
                guard range.lowerBound >= 0, range.upperBound < Int32(Self.rangeSize) else {
                    throw BrokerError(.consumerAssign, "hash range \(range) is outside 0...65535")
                }
                if let clash = sticky.first(where: { $0.range.overlaps(range) }) {
                    throw BrokerError(.consumerAssign, "hash range \(range) overlaps \(clash.range) of another consumer")
                }
            }
            for range in ranges { sticky.append((range, key)) }
        }
    }

    mutating func remove(_ key: ConsumerKey) {
        ring.removeAll { $0.consumer == key }
        sticky.removeAll { $0.consumer == key }
    }

    /// The consumer owning `hash`, or nil when no sticky range covers it.
    func select(hash: UInt32) -> ConsumerKey? {
        if !sticky.isEmpty || ring.isEmpty {
            let slot = Int32(hash % Self.rangeSize)
            return sticky.first { $0.range.contains(slot) }?.consumer
        }
        var low = 0
        var high = ring.count
        while low < high {
            let mid = (low + high) / 2
            if ring[mid].point < hash { low = mid + 1 } else { high = mid }
        }
        return ring[low == ring.count ? 0 : low].consumer
    }
}
