import ManagedLedger

/// A namespace bundle: the topics of a namespace whose name hashes into `[lower, upper)` (the last
/// bundle includes `upper` = 0xffffffff). The unit of topic ownership in a cluster. A pure value.
///
/// Like Pulsar, a namespace is split into `NamespaceBundle.defaultCount` equal hash ranges and a
/// bundle is named by its range, `0x40000000_0x80000000`. Differences: the hash is Murmur3-32 of
/// the full topic name (Pulsar uses CRC32), and bundles are never split.
public struct NamespaceBundle: Hashable, Sendable, CustomStringConvertible, Comparable {
    public var namespace: String
    public var lower: UInt32
    public var upper: UInt32

    /// Pulsar's default number of bundles per namespace (`defaultNumberOfNamespaceBundles`).
    public static let defaultCount = 4

    public init(namespace: String, lower: UInt32, upper: UInt32) {
        self.namespace = namespace
        self.lower = lower
        self.upper = upper
    }

    /// `0x00000000_0x40000000`, as Pulsar prints bundle ranges.
    public var range: String { "\(Self.hex(lower))_\(Self.hex(upper))" }

    /// `public/default/0x00000000_0x40000000`.
    public var description: String { "\(namespace)/\(range)" }

    public static func < (lhs: NamespaceBundle, rhs: NamespaceBundle) -> Bool {
        (lhs.namespace, lhs.lower) < (rhs.namespace, rhs.lower)
    }

    /// The `count + 1` boundaries of `count` equal ranges over the 32-bit hash space.
    public static func boundaries(count: Int = defaultCount) -> [UInt32] {
        precondition(count >= 1, "a namespace has at least one bundle")
        let step = (UInt64(UInt32.max) + 1) / UInt64(count)
        return (0...count).map { $0 == count ? UInt32.max : UInt32(UInt64($0) * step) }
    }

    /// Every bundle of a namespace, in hash order.
    public static func all(namespace: String, count: Int = defaultCount) -> [NamespaceBundle] {
        let bounds = boundaries(count: count)
        return (0..<count).map { NamespaceBundle(namespace: namespace, lower: bounds[$0], upper: bounds[$0 + 1]) }
    }

    /// The hash a topic name is placed by.
    public static func hash(of topic: TopicName) -> UInt32 {
        Murmur3.hash32(Array(topic.description.utf8))
    }

    /// The bundle that holds `topic`.
    public static func bundle(for topic: TopicName, count: Int = defaultCount) -> NamespaceBundle {
        let hash = hash(of: topic)
        let all = all(namespace: topic.namespaceName, count: count)
        return all.first { hash >= $0.lower && hash < $0.upper } ?? all[all.count - 1]
    }

    /// Parses `0x40000000_0x80000000` of `namespace`; nil unless it is one of the namespace's bundles.
    public static func parse(namespace: String, range: String, count: Int = defaultCount) -> NamespaceBundle? {
        all(namespace: namespace, count: count).first { $0.range == range.lowercased() }
    }

    private static func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
    }
}
