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
            guard value.utf8.count <= 255, !value.contains("/") || what == "topic" else {
                throw BrokerError(.invalidTopicName, "the \(what) of '\(raw)' is not valid")
            }
        }
    }

    public init(domain: Domain, tenant: String, namespace: String, localName: String) {
        self.domain = domain
        self.tenant = tenant
        self.namespace = namespace
        self.localName = localName
    }

    /// A path segment safe for metadata keys.
    var metadataPath: String { "\(tenant)/\(namespace)/\(domain.rawValue)/\(localName)" }
}
