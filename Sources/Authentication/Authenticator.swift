import Foundation

/// The authentication settings of a broker (Pulsar's `authenticationEnabled`,
/// `authenticationProviders`, the token provider's keys, `anonymousUserRole`,
/// `authenticationRefreshCheckSeconds`).
public struct AuthenticationSettings: Sendable {
    public var isEnabled = false
    /// `AuthenticationProviderToken` is configured.
    public var token: TokenSettings?
    /// `AuthenticationProviderTls` is configured: a TLS client certificate's common name is its role.
    public var acceptsTLSCertificates = false
    /// The role of a client that sends no credentials; nil: such a client is refused.
    public var anonymousRole: String?
    /// How often live connections are checked for credentials that expired.
    public var refreshCheckInterval: Duration = .seconds(60)

    public init() {}
}

/// What a client presented.
public enum Credentials: Sendable, Equatable {
    /// Nothing (Pulsar's `auth_method_name` `none` or absent; HTTP without `Authorization`).
    case none
    /// `auth_method_name` and `auth_data` as the client sent them.
    case method(String, [UInt8])
    /// The common name of the client's verified TLS certificate.
    case tlsCertificate(commonName: String)
}

/// Who a client is, once authenticated.
public struct AuthenticatedRole: Sendable, Equatable {
    public var role: String
    /// When its credentials expire (a token's `exp`); nil: never.
    public var expiresAt: Date?
    /// The method that authenticated it (`token`, `tls`, `anonymous`).
    public var method: String

    public init(role: String, expiresAt: Date? = nil, method: String) {
        self.role = role
        self.expiresAt = expiresAt
        self.method = method
    }
}

/// Why authentication failed: for the log (the client hears only "Failed to authenticate").
public enum AuthenticationFailure: Error, Sendable, Equatable, CustomStringConvertible {
    case missingCredentials
    case unsupportedMethod(String)
    case token(TokenRejection)

    public var description: String {
        switch self {
        case .missingCredentials: "no credentials, and the broker has no anonymousUserRole"
        case .unsupportedMethod(let method): "authentication method '\(method)' is not one the broker's providers accept"
        case .token(let rejection): rejection.description
        }
    }
}

/// Checks credentials against the configured providers. Protocol-neutral: the Pulsar endpoint's
/// CONNECT and AUTH_RESPONSE, the admin API's `Authorization: Bearer` and later endpoints all ask it.
public final class Authenticator: Sendable {
    public let isEnabled: Bool
    public let anonymousRole: String?
    public let acceptsTLSCertificates: Bool
    public let refreshCheckInterval: Duration
    private let tokens: TokenVerifier?

    /// Authentication off: every client is accepted, with no role.
    public static let disabled = Authenticator(
        isEnabled: false, anonymousRole: nil, acceptsTLSCertificates: false, refreshCheckInterval: .seconds(60), tokens: nil)

    private init(isEnabled: Bool, anonymousRole: String?, acceptsTLSCertificates: Bool, refreshCheckInterval: Duration, tokens: TokenVerifier?) {
        self.isEnabled = isEnabled
        self.anonymousRole = anonymousRole
        self.acceptsTLSCertificates = acceptsTLSCertificates
        self.refreshCheckInterval = refreshCheckInterval
        self.tokens = tokens
    }

    /// Loads the providers' keys; fails with a message naming the setting that is wrong.
    public static func make(_ settings: AuthenticationSettings) async throws(AuthenticationConfigError) -> Authenticator {
        guard settings.isEnabled else { return .disabled }
        guard settings.token != nil || settings.acceptsTLSCertificates else {
            throw AuthenticationConfigError(
                "authenticationEnabled=true needs a provider in authenticationProviders: org.apache.pulsar.broker.authentication.AuthenticationProviderToken (with tokenSecretKey or tokenPublicKey) or ...AuthenticationProviderTls")
        }
        let tokens: TokenVerifier? = if let token = settings.token { try await TokenVerifier(settings: token) } else { nil }
        return Authenticator(
            isEnabled: true, anonymousRole: settings.anonymousRole, acceptsTLSCertificates: settings.acceptsTLSCertificates,
            refreshCheckInterval: settings.refreshCheckInterval, tokens: tokens)
    }

    /// The role `credentials` prove. With authentication off this is never called.
    public func authenticate(_ credentials: Credentials, now: Date = Date()) async throws(AuthenticationFailure) -> AuthenticatedRole {
        switch credentials {
        case .none:
            guard let anonymousRole else { throw .missingCredentials }
            return AuthenticatedRole(role: anonymousRole, method: "anonymous")
        case .method(let method, let data):
            switch method {
            case "token":
                guard let tokens else { throw .unsupportedMethod(method) }
                // Pulsar's clients send the token's text; a `token:` prefix (from `token:<jwt>`
                // parameters) is dropped as Pulsar does.
                var text = String(decoding: data, as: UTF8.self)
                if text.hasPrefix("token:") { text.removeFirst("token:".count) }
                do {
                    let verified = try await tokens.verify(text, now: now)
                    return AuthenticatedRole(role: verified.role, expiresAt: verified.expiresAt, method: "token")
                } catch {
                    throw .token(error)
                }
            case "none", "":
                return try await authenticate(.none, now: now)
            default:
                throw .unsupportedMethod(method)
            }
        case .tlsCertificate(let commonName):
            guard acceptsTLSCertificates, !commonName.isEmpty else { throw .unsupportedMethod("tls") }
            return AuthenticatedRole(role: commonName, method: "tls")
        }
    }

    /// An HTTP request's `Authorization` header (`Bearer <token>`), or nil without one.
    public func authenticate(authorizationHeader: String?, now: Date = Date()) async throws(AuthenticationFailure) -> AuthenticatedRole {
        guard let header = authorizationHeader?.trimmingCharacters(in: .whitespaces), !header.isEmpty else {
            return try await authenticate(.none, now: now)
        }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { throw .unsupportedMethod(String(parts[0])) }
        return try await authenticate(.method("token", Array(parts[1].trimmingCharacters(in: .whitespaces).utf8)), now: now)
    }
}
