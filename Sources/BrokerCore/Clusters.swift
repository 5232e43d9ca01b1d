import Foundation
import ManagedLedger
import Metadata
import NIOConcurrencyHelpers
import NIOCore

/// How to reach one cluster (`PUT /admin/v2/clusters/{name}`, Pulsar's `ClusterData`): its admin
/// API (`serviceUrl`, `serviceUrlTls`) and its brokers (`brokerServiceUrl`, `brokerServiceUrlTls`),
/// and how a replicator authenticates there (unset: the broker's `brokerClientAuthentication*`).
public struct ClusterData: Codable, Sendable, Equatable {
    public var serviceUrl: String?
    public var serviceUrlTls: String?
    public var brokerServiceUrl: String?
    public var brokerServiceUrlTls: String?
    public var authenticationPlugin: String?
    public var authenticationParameters: String?
    public var brokerClientTlsEnabled: Bool?
    public var tlsAllowInsecureConnection: Bool?
    public var brokerClientTrustCertsFilePath: String?

    public init(serviceUrl: String? = nil, serviceUrlTls: String? = nil, brokerServiceUrl: String? = nil, brokerServiceUrlTls: String? = nil) {
        self.serviceUrl = serviceUrl
        self.serviceUrlTls = serviceUrlTls
        self.brokerServiceUrl = brokerServiceUrl
        self.brokerServiceUrlTls = brokerServiceUrlTls
    }

    /// The URL a replicator's client uses: TLS when the cluster asks for it and has a TLS URL.
    public var replicationURL: String? {
        if brokerClientTlsEnabled == true, let tls = brokerServiceUrlTls, !tls.isEmpty { return tls }
        if let plain = brokerServiceUrl, !plain.isEmpty { return plain }
        if let tls = brokerServiceUrlTls, !tls.isEmpty { return tls }
        return nil
    }

    /// The admin URL a replicator uses to create partitioned topics there.
    public var adminURL: String? {
        if brokerClientTlsEnabled == true, let tls = serviceUrlTls, !tls.isEmpty { return tls }
        if let plain = serviceUrl, !plain.isEmpty { return plain }
        return serviceUrlTls.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// URLs are of the right scheme (Pulsar's `ClusterData.checkPropertiesIfPresent`).
    func validate() throws(BrokerError) {
        func check(_ value: String?, _ field: String, _ schemes: [String]) throws(BrokerError) {
            guard let value, !value.isEmpty else { return }
            // A broker URL may list several hosts (`pulsar://a:6650,b:6650`), as clients take it.
            guard let scheme = schemes.first(where: { value.hasPrefix($0) }),
                  let first = value.dropFirst(scheme.count).split(separator: ",").first,
                  URL(string: scheme + first)?.host != nil
            else {
                throw .invalidArgument("Illegal \(field) '\(value)': use \(schemes.map { "\($0)host:port" }.joined(separator: " or "))")
            }
        }
        try check(serviceUrl, "service url", ["http://", "https://"])
        try check(serviceUrlTls, "service url tls", ["https://"])
        try check(brokerServiceUrl, "broker service url", ["pulsar://"])
        try check(brokerServiceUrlTls, "broker service url tls", ["pulsar+ssl://"])
    }
}

/// The clusters this cluster knows: `/clusters/<name>` holds a `ClusterData` (JSON). The local
/// cluster (`clusterName`) is registered at start with this broker's advertised URLs; the others
/// are what geo-replication sends to. Control plane: async, compare-and-set writes. A cluster's
/// record is cached for a second for the replicators.
public final class Clusters: Sendable {
    let metadata: any MetadataStore
    let localCluster: String
    private let cache = NIOLockedValueBox<[String: (data: ClusterData?, expires: NIODeadline)]>([:])

    init(metadata: any MetadataStore, localCluster: String) {
        self.metadata = metadata
        self.localCluster = localCluster
    }

    static func key(_ name: String) -> String { MetadataKeys.clustersPrefix + name }

    /// Registers the local cluster unless it is (a restart keeps what an operator set).
    func bootstrap(local data: ClusterData) async throws {
        if try await metadata.get(Self.key(localCluster)) == nil {
            do {
                try await metadata.put(Self.key(localCluster), value: Namespaces.encodeRecord(data), expectedVersion: -1)
            } catch MetadataStoreError.badVersion {
                // Another broker of the cluster registered it first.
            }
        }
    }

    /// Every cluster's name, sorted.
    public func list() async throws -> [String] {
        try await metadata.list(prefix: MetadataKeys.clustersPrefix).map { String($0.dropFirst(MetadataKeys.clustersPrefix.count)) }
    }

    /// A cluster's data; 404 if it is not registered.
    public func get(_ name: String) async throws -> ClusterData {
        try Namespaces.validateName("cluster", name)
        guard let stored = try await metadata.get(Self.key(name)) else { throw BrokerError.clusterNotFound(name) }
        return try Namespaces.decodeRecord(ClusterData.self, stored.value, key: Self.key(name))
    }

    /// A cluster's data as a replicator reads it: cached for a second; nil if not registered.
    public func cached(_ name: String) async throws -> ClusterData? {
        let now = NIODeadline.now()
        if let hit = cache.withLockedValue({ $0[name] }), hit.expires > now { return hit.data }
        let data: ClusterData?
        do {
            data = try await get(name)
        } catch let error as BrokerError where error.code == .notFound {
            data = nil
        }
        cache.withLockedValue { $0[name] = (data, now + .seconds(1)) }
        return data
    }

    /// Registers a cluster; 409 if it is.
    public func create(_ name: String, _ data: ClusterData) async throws {
        try Namespaces.validateName("cluster", name)
        try data.validate()
        do {
            try await metadata.put(Self.key(name), value: Namespaces.encodeRecord(data), expectedVersion: -1)
        } catch MetadataStoreError.badVersion {
            throw BrokerError.clusterExists(name)
        }
        cache.withLockedValue { $0[name] = nil }
    }

    /// Replaces a cluster's data; 404 if it is not registered.
    public func update(_ name: String, _ data: ClusterData) async throws {
        try Namespaces.validateName("cluster", name)
        try data.validate()
        guard let stored = try await metadata.get(Self.key(name)) else { throw BrokerError.clusterNotFound(name) }
        do {
            try await metadata.put(Self.key(name), value: Namespaces.encodeRecord(data), expectedVersion: stored.version)
        } catch MetadataStoreError.badVersion {
            throw BrokerError.concurrentModification("cluster \(name)")
        }
        cache.withLockedValue { $0[name] = nil }
    }

    /// Removes a cluster; refused (412) for the local cluster and for one a namespace replicates to.
    public func delete(_ name: String, namespaces: Namespaces) async throws {
        try Namespaces.validateName("cluster", name)
        guard let stored = try await metadata.get(Self.key(name)) else { throw BrokerError.clusterNotFound(name) }
        guard name != localCluster else {
            throw BrokerError(.preconditionFailed, "Cluster not empty: \(name) is this cluster (clusterName)")
        }
        for tenant in try await namespaces.tenants() {
            for namespace in (try? await namespaces.list(ofTenant: tenant)) ?? [] {
                if let policies = try? await namespaces.policies(namespace), policies.replicationClusters.contains(name) {
                    throw BrokerError(
                        .preconditionFailed, "Cluster not empty: namespace \(namespace) replicates to \(name) (set its clusters first)")
                }
            }
        }
        do {
            try await metadata.delete(Self.key(name), expectedVersion: stored.version)
        } catch MetadataStoreError.badVersion {
            throw BrokerError.concurrentModification("cluster \(name)")
        }
        cache.withLockedValue { $0[name] = nil }
    }
}

extension Clusters {
    /// Checks a replication cluster list as Pulsar's `setNamespaceReplicationClusters` does: not
    /// empty (412), no `global` (412), every cluster registered (403 "Invalid cluster id") and
    /// allowed for the tenant (403). The list without repeats, in its order.
    public func validateReplicationClusters(_ clusters: [String], tenant: String, namespaces: Namespaces) async throws -> [String] {
        guard !clusters.isEmpty else { throw BrokerError(.preconditionFailed, "ClusterIds should not be null or empty") }
        guard !clusters.contains("global") else {
            throw BrokerError(.preconditionFailed, "Cannot specify global in the list of replication clusters")
        }
        let known = Set(try await list())
        let allowed = try await namespaces.tenantInfo(tenant).allowedClusters
        var unique: [String] = []
        for cluster in clusters where !unique.contains(cluster) {
            guard known.contains(cluster) else {
                throw BrokerError(.authorizationError, "Invalid cluster id: \(cluster) (register it first: PUT /admin/v2/clusters/\(cluster))")
            }
            guard allowed.contains(cluster) else {
                throw BrokerError(
                    .authorizationError,
                    "Cluster [\(cluster)] is not in the list of allowed clusters list for tenant [\(tenant)] (POST /admin/v2/tenants/\(tenant) with it in allowedClusters)")
            }
            unique.append(cluster)
        }
        return unique
    }
}

extension BrokerError {
    static func clusterNotFound(_ cluster: String) -> BrokerError {
        BrokerError(.notFound, "Cluster does not exist: \(cluster)")
    }
    static func clusterExists(_ cluster: String) -> BrokerError {
        BrokerError(.conflict, "Cluster already exists: \(cluster)")
    }
}
