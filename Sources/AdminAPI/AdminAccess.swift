import Authentication
import BrokerCore
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import ManagedLedger
import NIOCore
import NIOSSL

/// The request context of the HTTP endpoint: Hummingbird's core context and the caller's role,
/// which `AdminAuthMiddleware` sets once authentication is on.
public struct AdminRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The authenticated role; nil with authentication off (or on anonymous paths).
    public var role: String?
    /// The connection, for the client certificate of an HTTPS request (`AuthenticationProviderTls`).
    public let channel: any Channel

    public init(source: Source) {
        self.coreContext = .init(source: source)
        self.channel = source.channel
    }

    /// The common name of the client's verified TLS certificate; nil over plain HTTP or without one.
    func peerCommonName() async -> String? {
        guard let certificate = try? await channel.nioSSL_peerCertificate().get(),
              let der = try? certificate.toDERBytes()
        else { return nil }
        return CertificateIdentity.commonName(derEncoded: der)
    }
}

/// Who may call an HTTP path, as Pulsar's admin resources check it (`validateSuperUserAccess`,
/// `validateTenantOperation`, `validateTopicOperation` with the default authorization provider).
/// A pure function of method and path, so the whole table is tested without a server.
public enum AdminAccess: Equatable, Sendable {
    /// No credentials needed (`/health`; `/metrics` unless `authenticateMetricsEndpoint`).
    case anonymous
    /// Any authenticated role (cluster listings).
    case authenticated
    case superUser
    case tenantAdmin(tenant: String)
    /// Listing a namespace's topics: its tenant's admins and roles with a grant in it.
    case namespaceRead(namespace: String)
    /// An operation on one topic: produce / consume / lookup grants, or the tenant's admins.
    case topic(TopicName, TopicOperation)

    /// Namespace policies that are quotas: only super-users change them.
    static let quotaPolicies: Set<String> = ["publishRate", "dispatchRate", "maxTopicsPerNamespace"]

    public static func required(method: HTTPRequest.Method, path: String, authenticateMetrics: Bool) -> AdminAccess {
        let parts = path.split(separator: "?", maxSplits: 1).first.map { $0.split(separator: "/").map(String.init) } ?? []
        guard let first = parts.first else { return .authenticated }
        switch first {
        case "health":
            return .anonymous
        case "metrics":
            return authenticateMetrics ? .authenticated : .anonymous
        case "lookup":
            // /lookup/v2/topic/{domain}/{tenant}/{namespace}/{topic}
            if parts.count >= 7, let topic = topicName(domain: parts[3], parts[4], parts[5], parts[6]) {
                return .topic(topic, .lookup)
            }
            return .superUser
        case "admin":
            break
        default:
            return .superUser
        }
        guard parts.count >= 3, parts[1] == "v2" else { return .superUser }
        let rest = Array(parts.dropFirst(2))
        switch rest[0] {
        case "clusters":
            return method == .get ? .authenticated : .superUser
        case "tenants":
            guard rest.count >= 2 else { return .superUser }
            return method == .get ? .tenantAdmin(tenant: rest[1]) : .superUser
        case "namespaces":
            guard rest.count >= 2 else { return .superUser }
            if rest.count >= 4, rest[3] == "topics", method == .get {
                return .namespaceRead(namespace: "\(rest[1])/\(rest[2])")
            }
            // A tenant's quotas are the operator's to set: its admins may read them, not raise them.
            if rest.count >= 4, quotaPolicies.contains(rest[3]), method != .get {
                return .superUser
            }
            return .tenantAdmin(tenant: rest[1])
        case "schemas":
            // /admin/v2/schemas/{tenant}/{namespace}/{topic}/{schema|versions|compatibility|version}
            guard rest.count >= 5, let topic = topicName(domain: "persistent", rest[1], rest[2], rest[3]) else {
                return rest.count >= 2 ? .tenantAdmin(tenant: rest[1]) : .superUser
            }
            switch (method, rest[4]) {
            case (.get, _), (.post, "version"): return .topic(topic, .lookup)
            case (.post, "schema"): return .topic(topic, .produce)
            default: return .tenantAdmin(tenant: topic.tenant)
            }
        case "persistent", "non-persistent":
            guard rest.count >= 3 else { return rest.count == 2 ? .tenantAdmin(tenant: rest[1]) : .superUser }
            guard rest.count >= 4, let topic = topicName(domain: rest[0], rest[1], rest[2], rest[3]) else {
                // The namespace's topic lists.
                return method == .get ? .namespaceRead(namespace: "\(rest[1])/\(rest[2])") : .tenantAdmin(tenant: rest[1])
            }
            let action = rest.count >= 5 ? rest[4] : ""
            switch action {
            case "subscription":
                // Subscription operations need consume (SUBSCRIBE, SKIP, EXPIRE_MESSAGES, RESET_CURSOR, ...).
                return .topic(topic, .consume)
            case "stats", "internalStats", "partitioned-stats", "partitions", "subscriptions", "lastMessageId":
                return method == .get ? .topic(topic, .lookup) : .tenantAdmin(tenant: topic.tenant)
            default:
                return .tenantAdmin(tenant: topic.tenant)
            }
        default:
            // Brokers, bookies, replication status and anything unknown: super-users only.
            return .superUser
        }
    }

    static func topicName(domain: String, _ tenant: String, _ namespace: String, _ topic: String) -> TopicName? {
        let decoded = topic.removingPercentEncoding ?? topic
        return try? TopicName(parsing: "\(domain)://\(tenant)/\(namespace)/\(decoded)")
    }
}

/// Authentication and authorization of HTTP requests: `Authorization: Bearer <token>` is checked
/// by the broker's `Authenticator` (401 without valid credentials), then the path's
/// `AdminAccess` by its `Authorizer` (403). The role goes into the request context.
public struct AdminAuthMiddleware: RouterMiddleware {
    public typealias Context = AdminRequestContext
    let authenticator: Authenticator
    let authorizer: Authorizer
    let authenticateMetrics: Bool

    public init(authenticator: Authenticator, authorizer: Authorizer, authenticateMetrics: Bool) {
        self.authenticator = authenticator
        self.authorizer = authorizer
        self.authenticateMetrics = authenticateMetrics
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard authenticator.isEnabled else { return try await next(request, context) }
        let access = AdminAccess.required(method: request.method, path: request.uri.path, authenticateMetrics: authenticateMetrics)
        guard access != .anonymous else { return try await next(request, context) }
        var context = context
        do throws(AuthenticationFailure) {
            let header = request.headers[.authorization]
            if header == nil, authenticator.acceptsTLSCertificates, let commonName = await context.peerCommonName() {
                // HTTPS with a client certificate and no token: the certificate's CN is the role, as on the binary protocol.
                context.role = try await authenticator.authenticate(.tlsCertificate(commonName: commonName)).role
            } else {
                context.role = try await authenticator.authenticate(authorizationHeader: header).role
            }
        } catch {
            context.logger.warning("http.authentication-failed", metadata: ["reason": "\(error)", "path": "\(request.uri.path)"])
            throw BrokerError(.authenticationError, "Authentication required: send Authorization: Bearer <token> with a valid token (or, over HTTPS with the TLS provider, a trusted client certificate)")
        }
        let role = context.role
        switch access {
        case .anonymous, .authenticated:
            break
        case .superUser:
            try authorizer.authorizeSuperUser(role, "do this (super-user only)")
        case .tenantAdmin(let tenant):
            try await authorizer.authorizeTenantAdmin(role, tenant: tenant)
        case .namespaceRead(let namespace):
            try await authorizer.authorizeNamespaceRead(role, namespace: namespace)
        case .topic(let topic, let operation):
            try await authorizer.authorize(role, operation, topic: topic)
        }
        return try await next(request, context)
    }
}
