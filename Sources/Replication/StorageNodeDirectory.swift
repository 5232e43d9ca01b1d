import Foundation
import Logging
import Metadata
import NIOConcurrencyHelpers
import ServiceLifecycle

/// What a storage node writes under its `/storage-nodes/<host:port>` key.
public struct StorageNodeRegistration: Codable, Sendable, Equatable {
    public var address: String
    /// Milliseconds since 1970 when the node (re-)registered.
    public var registeredAtMs: Int64

    public init(address: StorageNodeAddress, registeredAtMs: Int64) {
        self.address = address.description
        self.registeredAtMs = registeredAtMs
    }
}

/// The live storage nodes, as the brokers see them: the keys under `/storage-nodes/` (each an
/// ephemeral key of a running node's metadata session), or a fixed list (tests, static setups).
///
/// Thread-safe; the answer is cached for `cacheTTL` so that many ledgers rolling at once cost one
/// listing. There is no background watch: every decision (a new ensemble, a replacement) lists
/// again when the cache is older than `cacheTTL`, which is as fresh as a watch would be and needs
/// no task of its own.
public final class StorageNodeDirectory: Sendable {
    private enum Source: Sendable {
        case fixed([StorageNodeAddress])
        case metadata(any MetadataStore)
    }

    private let source: Source
    private let cacheTTL: Duration
    private let cache = NIOLockedValueBox<(nodes: [StorageNodeAddress], at: ContinuousClock.Instant)?>(nil)

    /// A directory over the `/storage-nodes/` keys of `metadata`.
    public init(metadata: any MetadataStore, cacheTTL: Duration = .seconds(1)) {
        source = .metadata(metadata)
        self.cacheTTL = cacheTTL
    }

    /// A directory that always answers `nodes`.
    public init(fixedNodes nodes: [StorageNodeAddress]) {
        source = .fixed(nodes)
        cacheTTL = .zero
    }

    /// The live nodes, sorted.
    public func liveNodes() async throws -> [StorageNodeAddress] {
        switch source {
        case .fixed(let nodes):
            return nodes
        case .metadata(let metadata):
            let now = ContinuousClock.now
            if let cached = cache.withLockedValue({ $0 }), cached.at.duration(to: now) < cacheTTL {
                return cached.nodes
            }
            let nodes = try await metadata.list(prefix: MetadataKeys.storageNodesPrefix)
                .compactMap(MetadataKeys.storageNode(fromKey:)).sorted()
            cache.withLockedValue { $0 = (nodes, now) }
            return nodes
        }
    }

    /// Forgets the cached listing (after a node failed, the next decision lists again).
    public func invalidate() {
        cache.withLockedValue { $0 = nil }
    }
}

/// Keeps a storage node registered under `/storage-nodes/<host:port>` while it runs: a `Service`
/// that writes the ephemeral key, then checks it every `checkInterval` and writes it again when it
/// is gone — the session lease expired (etcd was unreachable for longer than the TTL, or restarted
/// without its data) and the metadata store started a new session. On graceful shutdown it deletes
/// the key so brokers stop placing ledgers on the node at once.
public struct StorageNodeRegistrar: Service {
    public let metadata: any SessionCapableMetadataStore
    public let address: StorageNodeAddress
    public let checkInterval: Duration
    private let logger: Logger

    public init(
        metadata: any SessionCapableMetadataStore, address: StorageNodeAddress,
        checkInterval: Duration = .seconds(2), logger: Logger
    ) {
        self.metadata = metadata
        self.address = address
        self.checkInterval = checkInterval
        var logger = logger
        logger[metadataKey: "node"] = "\(address)"
        self.logger = logger
    }

    /// Writes the key once (startup check: fails when the metadata store cannot be reached).
    public func register() async throws {
        let key = MetadataKeys.storageNode(address)
        let registration = StorageNodeRegistration(address: address, registeredAtMs: Int64(Date().timeIntervalSince1970 * 1000))
        try await metadata.putEphemeral(key, value: Array(try JSONEncoder().encode(registration)), expectedVersion: nil)
        logger.info("storage-node.registered", metadata: ["key": "\(key)"])
    }

    public func run() async throws {
        let key = MetadataKeys.storageNode(address)
        var registered = false
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                if try await metadata.get(key) == nil {
                    if registered {
                        logger.warning("storage-node.registration-lost", metadata: ["key": "\(key)"])
                    }
                    try await register()
                    registered = true
                }
            } catch {
                logger.warning("storage-node.registration-failed", metadata: ["key": "\(key)", "error": "\(error)"])
            }
            let interval = checkInterval
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
        }
        do {
            try await metadata.delete(key, expectedVersion: nil)
            logger.info("storage-node.unregistered", metadata: ["key": "\(key)"])
        } catch {
            logger.warning("storage-node.unregister-failed", metadata: ["key": "\(key)", "error": "\(error)"])
        }
    }
}
