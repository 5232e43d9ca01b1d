import Foundation
import Logging

/// Where the metadata lives, as given on the command line (`--metadata`):
/// `etcd://host:port[/root]` or `embedded://path`.
///
/// A pure value. `etcd://127.0.0.1:2379` uses the root prefix `/magnetar`; `etcd://h:2379/prod` uses
/// `/prod`; `etcd://h:2379/` uses none. The port defaults to 2379. `embedded:///var/lib/magnetar/metadata`
/// is an absolute directory, `embedded://data/metadata` a relative one.
public enum MetadataStoreURL: Sendable, Equatable, CustomStringConvertible {
    case etcd(endpoint: URL, rootPrefix: String)
    case embedded(directory: String)

    public static let defaultEtcdRootPrefix = "/magnetar"
    public static let defaultEtcdPort = 2379

    public init(parsing text: String) throws {
        if text.hasPrefix("etcd://") {
            let rest = text.dropFirst("etcd://".count)
            let authority = rest.prefix { $0 != "/" }
            let path = rest.dropFirst(authority.count)
            guard !authority.isEmpty,
                let components = URLComponents(string: "http://\(authority)"),
                let host = components.host, !host.isEmpty,
                components.user == nil, components.query == nil
            else {
                throw MetadataStoreError.io(
                    "metadata URL '\(text)': expected etcd://host:port[/root], e.g. etcd://127.0.0.1:2379/magnetar")
            }
            let port = components.port ?? Self.defaultEtcdPort
            let hostText = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
            guard let endpoint = URL(string: "http://\(hostText):\(port)") else {
                throw MetadataStoreError.io("metadata URL '\(text)': '\(authority)' is not a host:port")
            }
            var root = path.isEmpty ? Self.defaultEtcdRootPrefix : String(path)
            while root.hasSuffix("/") { root.removeLast() }
            self = .etcd(endpoint: endpoint, rootPrefix: root)
        } else if text.hasPrefix("embedded://") {
            let directory = String(text.dropFirst("embedded://".count))
            guard !directory.isEmpty else {
                throw MetadataStoreError.io(
                    "metadata URL '\(text)': expected embedded://<directory>, e.g. embedded:///var/lib/magnetar/metadata")
            }
            self = .embedded(directory: directory)
        } else {
            throw MetadataStoreError.io(
                "metadata URL '\(text)': unknown scheme; use etcd://host:port[/root] or embedded://<directory>")
        }
    }

    public var description: String {
        switch self {
        case .etcd(let endpoint, let rootPrefix):
            let authority = endpoint.absoluteString.dropFirst("http://".count)
            return "etcd://\(authority)\(rootPrefix.isEmpty ? "/" : rootPrefix)"
        case .embedded(let directory):
            return "embedded://\(directory)"
        }
    }

    /// Opens the store this URL names. The etcd store does no I/O until first used.
    public func makeStore(logger: Logger = Logger(label: "magnetar.metadata")) throws -> any MetadataStore {
        switch self {
        case .etcd(let endpoint, let rootPrefix):
            return EtcdMetadataStore(endpoint: endpoint, rootPrefix: rootPrefix, logger: logger)
        case .embedded(let directory):
            return try EmbeddedMetadataStore(directory: directory, logger: logger)
        }
    }
}
