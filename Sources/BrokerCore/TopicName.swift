import ManagedLedger

/// A fully qualified topic name: `{persistent|non-persistent}://tenant/namespace/local-name`.
///
/// Partition i of topic T is the topic `T-partition-i`. A pure value.
public struct TopicName: Hashable, Sendable, CustomStringConvertible {
    public enum Domain: String, Sendable {
        case persistent
        case nonPersistent = "non-persistent"
    }

    public var domain: Domain
    public var tenant: String
    public var namespace: String
    public var localName: String

    /// The full name, e.g. `persistent://public/default/events`.
    public var description: String { "\(domain.rawValue)://\(tenant)/\(namespace)/\(localName)" }

    /// `tenant/namespace`.
    public var namespaceName: String { "\(tenant)/\(namespace)" }

    /// The schema registry's id for the topic, as Pulsar's `getSchemaName`: `tenant/ns/topic`, a
    /// partition's being its partitioned topic's; the domain is not part of it.
    public var schemaName: String {
        var base = localName
        if partitionIndex >= 0, let range = localName.range(of: "-partition-", options: .backwards) {
            base = String(localName[..<range.lowerBound])
        }
        return "\(tenant)/\(namespace)/\(base)"
    }

    /// The partition index parsed from a `-partition-N` suffix, or -1.
    public var partitionIndex: Int32 {
        guard let range = localName.range(of: "-partition-", options: .backwards),
              let index = Int32(localName[range.upperBound...]), index >= 0
        else { return -1 }
        return index
    }

    /// Parses a name as the client sends it (always fully qualified), or a short one (`my-topic`,
    /// `tenant/ns/topic`) the way the client normalizes it.
    public init(parsing raw: String) throws(BrokerError) {
        var rest = Substring(raw)
        var domain = Domain.persistent
        if let schemeEnd = raw.range(of: "://") {
            guard let parsed = Domain(rawValue: String(raw[..<schemeEnd.lowerBound])) else {
                throw BrokerError(.invalidTopicName, "unknown topic domain in '\(raw)': use persistent:// or non-persistent://")
            }
            domain = parsed
            rest = raw[schemeEnd.upperBound...]
            let parts = rest.split(separator: "/", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3 else {
                throw BrokerError(.invalidTopicName, "topic name '\(raw)' must be domain://tenant/namespace/topic")
            }
            self.init(domain: domain, tenant: String(parts[0]), namespace: String(parts[1]), localName: String(parts[2]))
        } else {
            let parts = rest.split(separator: "/", omittingEmptySubsequences: false)
            switch parts.count {
            case 1: self.init(domain: domain, tenant: "public", namespace: "default", localName: String(parts[0]))
            case 3: self.init(domain: domain, tenant: String(parts[0]), namespace: String(parts[1]), localName: String(parts[2]))
            default:
                throw BrokerError(.invalidTopicName, "topic name '\(raw)' must be 'topic' or 'tenant/namespace/topic'")
            }
        }
        for (what, value) in [("tenant", tenant), ("namespace", namespace), ("topic", localName)] {
            guard !value.isEmpty else {
                throw BrokerError(.invalidTopicName, "topic name '\(raw)' has an empty \(what)")
            }
            guard value.utf8.count <= TopicName.maxComponentLengthBytes else {
                throw BrokerError(
                    .invalidTopicName, "the \(what) of '\(raw)' is longer than \(TopicName.maxComponentLengthBytes) bytes")
            }
        }
        for (what, value) in [("tenant", tenant), ("namespace", namespace)] {
            guard TopicName.isValidNamedEntity(value) else {
                throw BrokerError(
                    .invalidTopicName,
                    "the \(what) '\(value)' of '\(raw)' may only contain letters, digits and - _ = : . (as in Pulsar)")
            }
        }
        guard TopicName.isValidLocalName(localName) else {
            throw BrokerError(
                .invalidTopicName,
                "the topic '\(localName)' of '\(raw)' is not valid: it may not contain '/', control characters, or be '.' or '..'")
        }
    }

    /// Longest tenant, namespace or local topic name, in UTF-8 bytes.
    public static let maxComponentLengthBytes = 255

    /// Pulsar's `NamedEntity` rule for tenants and namespaces: `[-=:.\w]+` (ASCII word characters).
    public static func isValidNamedEntity(_ value: String) -> Bool {
        !value.isEmpty && value.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"),
                 UInt8(ascii: "="), UInt8(ascii: ":"), UInt8(ascii: "."):
                true
            default: false
            }
        }
    }

    /// A local topic name is one metadata key component: no `/` (metadata keys are `/`-separated,
    /// so `a/b` would read as topic `a`'s child), no NUL or other control character, not `.` or `..`.
    public static func isValidLocalName(_ value: String) -> Bool {
        guard !value.isEmpty, value != ".", value != ".." else { return false }
        return value.unicodeScalars.allSatisfy { scalar in
            scalar != "/" && !(scalar.value < 0x20 || scalar.value == 0x7f || (0x80...0x9f).contains(scalar.value))
        }
    }

    public init(domain: Domain, tenant: String, namespace: String, localName: String) {
        self.domain = domain
        self.tenant = tenant
        self.namespace = namespace
        self.localName = localName
    }

    /// A path segment safe for metadata keys: every component is free of `/` (parsing refuses it),
    /// so the key of one topic is never a prefix of another topic's keys.
    var metadataPath: String { "\(tenant)/\(namespace)/\(domain.rawValue)/\(localName)" }
}
