import ManagedLedger
import Foundation
import Logging
import Metadata
import NIOConcurrencyHelpers
import NIOCore

/// Tenants and namespaces in metadata: `/tenants/<tenant>` holds a `TenantInfo`,
/// `/namespaces/<tenant>/<namespace>` a `NamespacePolicies` (both JSON). Control plane: async,
/// callable from any task; changes are compare-and-set on the record's version, so concurrent
/// admin calls never lose an update. The broker reads a namespace's policies through
/// `effectivePolicies`, cached for a second.
public final class Namespaces: Sendable {
    let metadata: any MetadataStore
    let logger: Logger
    /// Whether topics of `tenant/namespace` are loaded here (a namespace with topics is not deleted).
    private let hasLoadedTopics: @Sendable (_ tenant: String, _ namespace: String) -> Bool
    private let policyCache = NIOLockedValueBox<[String: (policies: EffectivePolicies, expires: NIODeadline)]>([:])
    private let tenantCache = NIOLockedValueBox<[String: (info: TenantInfo, expires: NIODeadline)]>([:])
    /// Called after this broker changed a namespace's policies, with what now applies (the broker
    /// pushes it to the namespace's loaded topics at once; other brokers read it within a second).
    let policiesChanged = NIOLockedValueBox<(@Sendable (String, EffectivePolicies) -> Void)?>(nil)

    /// `maxNamespacesPerTenant`; 0: unlimited.
    let maxNamespacesPerTenant: Int

    init(metadata: any MetadataStore, maxNamespacesPerTenant: Int = 0, logger: Logger, hasLoadedTopics: @escaping @Sendable (String, String) -> Bool) {
        self.metadata = metadata
        self.maxNamespacesPerTenant = maxNamespacesPerTenant
        self.logger = logger
        self.hasLoadedTopics = hasLoadedTopics
    }


    /// Creates what exists from the start: the `public` tenant and its `default` namespace.
    /// The tenant may use the local cluster (`allowedClusters`), as Pulsar's standalone sets it up.
    func bootstrap(localCluster: String) async throws {
        if try await metadata.get(MetadataKeys.tenant("public")) == nil {
            let info = TenantInfo(allowedClusters: [localCluster])
            try await metadata.put(MetadataKeys.tenant("public"), value: Self.encodeRecord(info), expectedVersion: nil)
        }
        if try await metadata.get(MetadataKeys.namespace("public/default")) == nil {
            try await metadata.put(MetadataKeys.namespace("public/default"), value: Array("{}".utf8), expectedVersion: nil)
        }
    }

    /// The policies of a namespace as the runtime applies them, cached for `policyCacheTTL`.
    public func effectivePolicies(_ namespace: String) async throws -> EffectivePolicies {
        let now = NIODeadline.now()
        if let cached = policyCache.withLockedValue({ $0[namespace] }), cached.expires > now {
            return cached.policies
        }
        let policies = EffectivePolicies(try await self.policies(namespace))
        policyCache.withLockedValue { $0[namespace] = (policies, now + Self.policyCacheTTL) }
        return policies
    }

    static let policyCacheTTL = TimeAmount.seconds(1)

    /// A tenant's info as authorization reads it, cached for `policyCacheTTL` (a change of its
    /// admin roles takes effect on every broker within that); 404 if it does not exist.
    public func cachedTenantInfo(_ tenant: String) async throws -> TenantInfo {
        let now = NIODeadline.now()
        if let cached = tenantCache.withLockedValue({ $0[tenant] }), cached.expires > now {
            return cached.info
        }
        let info = try await tenantInfo(tenant)
        tenantCache.withLockedValue {
            if $0.count >= Self.maxCachedTenants { $0.removeAll() }
            $0[tenant] = (info, now + Self.policyCacheTTL)
        }
        return info
    }

    static let maxCachedTenants = 10_000

    /// Names that go into metadata keys and URLs: Pulsar's `[-=:.\w]+`.
    static func validateName(_ what: String, _ value: String) throws(BrokerError) {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:=")
        guard !value.isEmpty, value.utf8.count <= AdminLimits.maxNameLengthBytes, value != ".", value != "..",
              value.allSatisfy({ allowed.contains($0) })
        else { throw .invalidName(what, value) }
    }

    /// Splits `tenant/namespace`, validating both parts.
    static func splitNamespace(_ namespace: String) throws(BrokerError) -> (tenant: String, namespace: String) {
        let parts = namespace.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2 else { throw .invalidName("namespace", namespace) }
        try validateName("tenant", String(parts[0]))
        try validateName("namespace", String(parts[1]))
        return (String(parts[0]), String(parts[1]))
    }

    static let jsonEncoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()

    static func encodeRecord<T: Encodable>(_ value: T) throws -> [UInt8] {
        Array(try jsonEncoder.encode(value))
    }

    static func decodeRecord<T: Decodable>(_ type: T.Type, _ bytes: [UInt8], key: String) throws(BrokerError) -> T {
        do {
            return try JSONDecoder().decode(type, from: Data(bytes))
        } catch {
            throw BrokerError(.metadata, "metadata record '\(key)' is not valid JSON for \(type): \(error)")
        }
    }

    // MARK: tenants

    /// All tenants, sorted.
    public func tenants() async throws -> [String] {
        let prefix = MetadataKeys.tenantsPrefix
        return try await metadata.list(prefix: prefix).map { String($0.dropFirst(prefix.count)) }
    }

    public func tenantInfo(_ tenant: String) async throws -> TenantInfo {
        try Self.validateName("tenant", tenant)
        guard let stored = try await metadata.get(MetadataKeys.tenant(tenant)) else { throw BrokerError.tenantNotFound(tenant) }
        return try Self.decodeRecord(TenantInfo.self, stored.value, key: MetadataKeys.tenant(tenant))
    }

    /// Creates a tenant; 409 if it exists.
    public func createTenant(_ tenant: String, info: TenantInfo = TenantInfo()) async throws {
        try Self.validateName("tenant", tenant)
        do {
            try await metadata.put(MetadataKeys.tenant(tenant), value: Self.encodeRecord(info), expectedVersion: -1)
        } catch MetadataStoreError.badVersion {
            throw BrokerError.tenantExists(tenant)
        }
        logger.info("tenant.created", metadata: ["tenant": "\(tenant)"])
    }

    /// Replaces a tenant's info; 404 if it does not exist.
    public func updateTenant(_ tenant: String, info: TenantInfo) async throws {
        try Self.validateName("tenant", tenant)
        guard let stored = try await metadata.get(MetadataKeys.tenant(tenant)) else { throw BrokerError.tenantNotFound(tenant) }
        do {
            try await metadata.put(MetadataKeys.tenant(tenant), value: Self.encodeRecord(info), expectedVersion: stored.version)
        } catch MetadataStoreError.badVersion {
            throw BrokerError.concurrentModification("tenant \(tenant)")
        }
    }

    /// Deletes a tenant; refused (412) while it has namespaces.
    public func deleteTenant(_ tenant: String) async throws {
        try Self.validateName("tenant", tenant)
        guard let stored = try await metadata.get(MetadataKeys.tenant(tenant)) else { throw BrokerError.tenantNotFound(tenant) }
        guard try await metadata.list(prefix: MetadataKeys.namespaces(ofTenant: tenant)).isEmpty else { throw BrokerError.tenantNotEmpty(tenant) }
        do {
            try await metadata.delete(MetadataKeys.tenant(tenant), expectedVersion: stored.version)
        } catch MetadataStoreError.badVersion {
            throw BrokerError.concurrentModification("tenant \(tenant)")
        } catch MetadataStoreError.notFound {
            throw BrokerError.tenantNotFound(tenant)
        }
        logger.info("tenant.deleted", metadata: ["tenant": "\(tenant)"])
    }

    // MARK: namespaces

    /// The namespaces of a tenant as `tenant/namespace`, sorted; 404 if the tenant does not exist.
    public func list(ofTenant tenant: String) async throws -> [String] {
        try Self.validateName("tenant", tenant)
        guard try await metadata.get(MetadataKeys.tenant(tenant)) != nil else { throw BrokerError.tenantNotFound(tenant) }
        let prefix = MetadataKeys.namespacesPrefix
        return try await metadata.list(prefix: "\(prefix)\(tenant)/").map { String($0.dropFirst(prefix.count)) }
    }

    /// Creates `tenant/namespace`; 404 if the tenant does not exist, 409 if the namespace does.
    public func create(_ namespace: String, policies: NamespacePolicies = NamespacePolicies()) async throws {
        let (tenant, _) = try Self.splitNamespace(namespace)
        try policies.validate()
        guard try await metadata.get(MetadataKeys.tenant(tenant)) != nil else { throw BrokerError.tenantNotFound(tenant) }
        if maxNamespacesPerTenant > 0 {
            let existing = try await metadata.list(prefix: MetadataKeys.namespaces(ofTenant: tenant)).count
            guard existing < maxNamespacesPerTenant else {
                throw BrokerError(
                    .preconditionFailed,
                    "Exceed the maximum number of namespace in tenant :\(tenant) (it has \(existing); maxNamespacesPerTenant=\(maxNamespacesPerTenant))")
            }
        }
        do {
            try await metadata.put(MetadataKeys.namespace(namespace), value: Self.encodeRecord(policies), expectedVersion: -1)
        } catch MetadataStoreError.badVersion {
            throw BrokerError.namespaceExists(namespace)
        }
        logger.info("namespace.created", metadata: ["namespace": "\(namespace)"])
    }

    /// Deletes a namespace; refused (412) while it has topics (persistent, partitioned or loaded).
    public func delete(_ namespace: String) async throws {
        let (tenant, local) = try Self.splitNamespace(namespace)
        guard let stored = try await metadata.get(MetadataKeys.namespace(namespace)) else {
            throw BrokerError.namespaceNotFound(namespace)
        }
        let storedTopics = try await metadata.list(prefix: MetadataKeys.managedLedgers(inNamespace: namespace))
        let partitionedTopics = try await metadata.list(prefix: MetadataKeys.partitionedTopics(inNamespace: namespace))
        let hasTopics = !storedTopics.isEmpty || !partitionedTopics.isEmpty
            || hasLoadedTopics(tenant, local)
        guard !hasTopics else { throw BrokerError.namespaceNotEmpty(namespace) }
        do {
            try await metadata.delete(MetadataKeys.namespace(namespace), expectedVersion: stored.version)
        } catch MetadataStoreError.badVersion {
            throw BrokerError.concurrentModification("namespace \(namespace)")
        } catch MetadataStoreError.notFound {
            throw BrokerError.namespaceNotFound(namespace)
        }
        logger.info("namespace.deleted", metadata: ["namespace": "\(namespace)"])
    }

    /// The policies of `tenant/namespace`; 404 (`.notFound`) if it does not exist.
    /// This is what the runtime reads (retention, TTL, quotas, auto creation, limits).
    public func policies(_ namespace: String) async throws -> NamespacePolicies {
        _ = try Self.splitNamespace(namespace)
        guard let stored = try await metadata.get(MetadataKeys.namespace(namespace)) else {
            throw BrokerError.namespaceNotFound(namespace)
        }
        return try Self.decodeRecord(NamespacePolicies.self, stored.value, key: MetadataKeys.namespace(namespace))
    }

    /// Replaces the policies of a namespace; 404 if it does not exist.
    public func setPolicies(_ namespace: String, _ policies: NamespacePolicies) async throws {
        try await updatePolicies(namespace) { $0 = policies }
    }

    /// Read-modify-write of a namespace's policies, retried on a concurrent change.
    @discardableResult
    public func updatePolicies(
        _ namespace: String, _ change: (inout NamespacePolicies) throws -> Void
    ) async throws -> NamespacePolicies {
        _ = try Self.splitNamespace(namespace)
        let key = MetadataKeys.namespace(namespace)
        for _ in 0..<Self.maxPolicyUpdateAttempts {
            guard let stored = try await metadata.get(key) else { throw BrokerError.namespaceNotFound(namespace) }
            var policies = try Self.decodeRecord(NamespacePolicies.self, stored.value, key: key)
            try change(&policies)
            try policies.validate()
            do {
                try await metadata.put(key, value: Self.encodeRecord(policies), expectedVersion: stored.version)
                logger.info("namespace.policies-updated", metadata: ["namespace": "\(namespace)"])
                // What this broker applies from now on: no waiting for the cache to expire.
                let effective = EffectivePolicies(policies)
                policyCache.withLockedValue { $0[namespace] = (effective, NIODeadline.now() + Self.policyCacheTTL) }
                policiesChanged.withLockedValue { $0 }?(namespace, effective)
                return policies
            } catch MetadataStoreError.badVersion {
                continue
            }
        }
        throw BrokerError.concurrentModification("the policies of namespace \(namespace)")
    }

    static let maxPolicyUpdateAttempts = 5
}
