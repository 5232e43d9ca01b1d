import Foundation
import ManagedLedger
import NIOConcurrencyHelpers
import NIOCore

/// Pulsar's `AuthAction`: what a role may do on a namespace or topic.
public enum AuthAction: String, Codable, Sendable, CaseIterable, Comparable {
    case produce, consume, functions, sources, sinks, packages

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// A namespace's grants, as Pulsar stores them in its policies (`auth_policies`): roles of the
/// namespace, roles per topic (full topic names), and the roles allowed per subscription.
public struct AuthPolicies: Codable, Sendable, Equatable {
    public var namespaceAuth: [String: Set<AuthAction>] = [:]
    public var destinationAuth: [String: [String: Set<AuthAction>]] = [:]
    public var subscriptionAuthRoles: [String: Set<String>] = [:]

    public init() {}

    enum CodingKeys: String, CodingKey {
        case namespaceAuth = "namespace_auth"
        case destinationAuth = "destination_auth"
        case subscriptionAuthRoles = "subscription_auth_roles"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        namespaceAuth = try container.decodeIfPresent([String: Set<AuthAction>].self, forKey: .namespaceAuth) ?? [:]
        destinationAuth = try container.decodeIfPresent([String: [String: Set<AuthAction>]].self, forKey: .destinationAuth) ?? [:]
        subscriptionAuthRoles = try container.decodeIfPresent([String: Set<String>].self, forKey: .subscriptionAuthRoles) ?? [:]
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(namespaceAuth.mapValues { $0.sorted() }, forKey: .namespaceAuth)
        try container.encode(destinationAuth.mapValues { $0.mapValues { $0.sorted() } }, forKey: .destinationAuth)
        try container.encode(subscriptionAuthRoles.mapValues { $0.sorted() }, forKey: .subscriptionAuthRoles)
    }

    /// What `role` may do on `topic`: its namespace grants and the topic's own (a partition
    /// inherits the grants of its partitioned topic).
    public func actions(of role: String, on topic: TopicName) -> Set<AuthAction> {
        var actions = namespaceAuth[role] ?? []
        for name in Self.grantNames(topic) {
            actions.formUnion(destinationAuth[name]?[role] ?? [])
        }
        return actions
    }

    /// The names topic grants may be kept under for `topic`: itself and, for a partition, its
    /// partitioned topic.
    static func grantNames(_ topic: TopicName) -> [String] {
        var names = ["\(topic)"]
        if topic.partitionIndex >= 0, let range = topic.localName.range(of: "-partition-", options: .backwards) {
            var base = topic
            base.localName = String(topic.localName[..<range.lowerBound])
            names.append("\(base)")
        }
        return names
    }
}

/// What a client asks to do with a topic over a messaging protocol.
public enum TopicOperation: String, Sendable {
    case produce = "Produce"
    case consume = "Consume"
    /// LOOKUP, PARTITIONED_METADATA, a namespace's topic list: allowed to whoever may produce or consume.
    case lookup = "Lookup"
}

/// `authorizationEnabled` and `superUserRoles`.
public struct AuthorizationSettings: Sendable {
    public var isEnabled = false
    public var superUserRoles: Set<String> = []
    public init(isEnabled: Bool = false, superUserRoles: Set<String> = []) {
        self.isEnabled = isEnabled
        self.superUserRoles = superUserRoles
    }
}

/// Pulsar's authorization rules as pure functions (`PulsarAuthorizationProvider`): super-users may
/// do everything; a tenant's `adminRoles` administer it and may produce and consume on all of
/// its topics; other roles may do what the namespace's or the topic's grants say.
public enum Permissions {
    public static func isSuperUser(_ role: String?, superUsers: Set<String>) -> Bool {
        guard let role else { return false }
        return superUsers.contains(role)
    }

    public static func isTenantAdmin(_ role: String?, tenant: TenantInfo?, superUsers: Set<String>) -> Bool {
        guard let role else { return false }
        return superUsers.contains(role) || (tenant?.adminRoles.contains(role) ?? false)
    }

    public static func allows(
        _ role: String?, _ operation: TopicOperation, topic: TopicName, tenant: TenantInfo?, auth: AuthPolicies,
        superUsers: Set<String>
    ) -> Bool {
        guard let role else { return false }
        if isTenantAdmin(role, tenant: tenant, superUsers: superUsers) { return true }
        let actions = auth.actions(of: role, on: topic)
        switch operation {
        case .produce: return actions.contains(.produce)
        case .consume: return actions.contains(.consume)
        case .lookup: return actions.contains(.produce) || actions.contains(.consume)
        }
    }

    /// A namespace-wide read (its topic list): tenant admins and roles with a grant in the namespace.
    public static func allowsNamespaceRead(_ role: String?, tenant: TenantInfo?, auth: AuthPolicies, superUsers: Set<String>) -> Bool {
        guard let role else { return false }
        if isTenantAdmin(role, tenant: tenant, superUsers: superUsers) { return true }
        return !(auth.namespaceAuth[role] ?? []).isEmpty
    }
}

/// Checks a client's role against the grants in metadata (through `Namespaces`' one-second
/// caches, so a grant or revocation takes effect on every broker within seconds). Off, it allows
/// everything. Protocol-neutral; thread-safe.
public final class Authorizer: Sendable {
    public let settings: AuthorizationSettings
    private let namespaces: Namespaces

    init(settings: AuthorizationSettings, namespaces: Namespaces) {
        self.settings = settings
        self.namespaces = namespaces
    }

    public var isEnabled: Bool { settings.isEnabled }

    /// Throws `authorizationError` ("Client is not authorized to Produce") unless `role` may.
    public func authorize(_ role: String?, _ operation: TopicOperation, topic: TopicName) async throws {
        guard isEnabled else { return }
        if Permissions.isSuperUser(role, superUsers: settings.superUserRoles) { return }
        let tenant = try await namespaces.cachedTenantInfo(topic.tenant)
        let auth = (try? await namespaces.effectivePolicies(topic.namespaceName))?.auth ?? AuthPolicies()
        guard Permissions.allows(role, operation, topic: topic, tenant: tenant, auth: auth, superUsers: settings.superUserRoles) else {
            throw BrokerError.notAuthorized(role: role, operation.rawValue)
        }
    }

    /// Throws unless `role` may list the topics of `namespace` (`tenant/ns`).
    public func authorizeNamespaceRead(_ role: String?, namespace: String) async throws {
        guard isEnabled else { return }
        if Permissions.isSuperUser(role, superUsers: settings.superUserRoles) { return }
        let (tenantName, _) = try Namespaces.splitNamespace(namespace)
        let tenant = try await namespaces.cachedTenantInfo(tenantName)
        let auth = (try? await namespaces.effectivePolicies(namespace))?.auth ?? AuthPolicies()
        guard Permissions.allowsNamespaceRead(role, tenant: tenant, auth: auth, superUsers: settings.superUserRoles) else {
            throw BrokerError.notAuthorized(role: role, "list the topics of \(namespace)")
        }
    }

    /// Throws unless `role` administers `tenant` (or is a super-user).
    public func authorizeTenantAdmin(_ role: String?, tenant: String) async throws {
        guard isEnabled else { return }
        if Permissions.isSuperUser(role, superUsers: settings.superUserRoles) { return }
        let info = try await namespaces.cachedTenantInfo(tenant)
        guard Permissions.isTenantAdmin(role, tenant: info, superUsers: settings.superUserRoles) else {
            throw BrokerError.notAuthorized(role: role, "administer tenant \(tenant)")
        }
    }

    /// Throws unless `role` is a super-user.
    public func authorizeSuperUser(_ role: String?, _ what: String) throws {
        guard isEnabled else { return }
        guard Permissions.isSuperUser(role, superUsers: settings.superUserRoles) else {
            throw BrokerError.notAuthorized(role: role, what)
        }
    }
}

extension BrokerError {
    /// Pulsar's words for a denied PRODUCER / SUBSCRIBE: "Client is not authorized to Produce".
    static func notAuthorized(role: String?, _ what: String) -> BrokerError {
        BrokerError(.authorizationError, "Client is not authorized to \(what)\(role.map { " (role \($0))" } ?? " (no role)")")
    }
}

// MARK: grants in metadata

extension Namespaces {
    /// The namespace's grants: role → actions (`GET .../namespaces/{t}/{ns}/permissions`).
    public func permissions(_ namespace: String) async throws -> [String: Set<AuthAction>] {
        try await policies(namespace).auth.namespaceAuth
    }

    /// Grants `actions` on every topic of the namespace to `role`, replacing what it had.
    public func grantPermission(_ namespace: String, role: String, actions: Set<AuthAction>) async throws {
        try Self.validateRole(role)
        try await updatePolicies(namespace) { $0.auth.namespaceAuth[role] = actions }
        logger.info("namespace.permission-granted", metadata: [
            "namespace": "\(namespace)", "role": "\(role)", "actions": "\(actions.sorted().map(\.rawValue))",
        ])
    }

    public func revokePermission(_ namespace: String, role: String) async throws {
        try Self.validateRole(role)
        try await updatePolicies(namespace) { $0.auth.namespaceAuth[role] = nil }
        logger.info("namespace.permission-revoked", metadata: ["namespace": "\(namespace)", "role": "\(role)"])
    }

    /// What each role may do on `topic`: the namespace's grants with the topic's own added, as
    /// Pulsar's `GET .../{topic}/permissions` answers.
    public func permissions(topic: TopicName) async throws -> [String: Set<AuthAction>] {
        let auth = try await policies(topic.namespaceName).auth
        var merged = auth.namespaceAuth
        for name in AuthPolicies.grantNames(topic) {
            for (role, actions) in auth.destinationAuth[name] ?? [:] {
                merged[role, default: []].formUnion(actions)
            }
        }
        return merged
    }

    public func grantPermission(topic: TopicName, role: String, actions: Set<AuthAction>) async throws {
        try Self.validateRole(role)
        try await updatePolicies(topic.namespaceName) { $0.auth.destinationAuth["\(topic)", default: [:]][role] = actions }
        logger.info("topic.permission-granted", metadata: [
            "topic": "\(topic)", "role": "\(role)", "actions": "\(actions.sorted().map(\.rawValue))",
        ])
    }

    /// 412 if the role has no grant on the topic itself (one on its namespace is revoked there).
    public func revokePermission(topic: TopicName, role: String) async throws {
        try Self.validateRole(role)
        try await updatePolicies(topic.namespaceName) { policies throws(BrokerError) in
            guard policies.auth.destinationAuth["\(topic)"]?[role] != nil else {
                throw BrokerError(.preconditionFailed, "Permissions are not set at the topic level: role \(role) on \(topic)")
            }
            policies.auth.destinationAuth["\(topic)"]?[role] = nil
            if policies.auth.destinationAuth["\(topic)"]?.isEmpty == true { policies.auth.destinationAuth["\(topic)"] = nil }
        }
        logger.info("topic.permission-revoked", metadata: ["topic": "\(topic)", "role": "\(role)"])
    }

    static func validateRole(_ role: String) throws(BrokerError) {
        guard !role.isEmpty, role.utf8.count <= AdminLimits.maxNameLengthBytes, !role.contains("/") else {
            throw BrokerError(.badRequest, "invalid role '\(role)': 1-\(AdminLimits.maxNameLengthBytes) bytes without '/'")
        }
    }
}
