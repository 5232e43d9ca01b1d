import Foundation
import JWTKit

/// How tokens are checked: Pulsar's `AuthenticationProviderToken` settings.
public struct TokenSettings: Sendable {
    public var key: TokenValidationKey
    /// The claim holding the role (`tokenAuthClaim`; default `sub`).
    public var roleClaim = "sub"
    /// The claim holding the audience (`tokenAudienceClaim`; default `aud`).
    public var audienceClaim = "aud"
    /// If set, a token's audience claim must name it (`tokenAudience`).
    public var audience: String?

    public init(key: TokenValidationKey) {
        self.key = key
    }
}

/// A token that passed every check.
public struct VerifiedToken: Sendable, Equatable {
    public var role: String
    /// Its `exp` claim; nil: it does not expire.
    public var expiresAt: Date?

    public init(role: String, expiresAt: Date?) {
        self.role = role
        self.expiresAt = expiresAt
    }
}

/// Why a token was refused. Descriptions go into logs: they never contain the token.
public enum TokenRejection: Error, Sendable, Equatable, CustomStringConvertible {
    case malformed(String)
    case algorithmNotAllowed(String)
    case badSignature
    case expired(Date)
    case notYetValid(Date)
    case missingRole(claim: String)
    case wrongAudience(expected: String)

    public var description: String {
        switch self {
        case .malformed(let why): "the token is not a valid JWT: \(why)"
        case .algorithmNotAllowed(let alg): "the token is signed with '\(alg)', which the broker's key does not verify"
        case .badSignature: "the token's signature does not match the broker's key"
        case .expired(let at): "the token expired at \(at)"
        case .notYetValid(let at): "the token is not valid before \(at)"
        case .missingRole(let claim): "the token has no role in its '\(claim)' claim"
        case .wrongAudience(let expected): "the token's audience does not include '\(expected)'"
        }
    }
}

/// Verifies tokens with jwt-kit: the header's `alg` must be one the configured key verifies
/// (`none` never is), then the signature, `exp` and `nbf`, the audience if one is configured, and
/// the role claim. Thread-safe; `verify` may run on any task.
public final class TokenVerifier: Sendable {
    /// Largest token accepted, checked before it is parsed.
    public static let maxTokenBytes = 16 * 1024

    public let settings: TokenSettings
    private let keys: [TokenAlgorithm: JWTKeyCollection]

    public init(settings: TokenSettings) async throws(AuthenticationConfigError) {
        self.settings = settings
        self.keys = try await settings.key.keyCollections()
    }

    public func verify(_ token: String, now: Date = Date()) async throws(TokenRejection) -> VerifiedToken {
        guard token.utf8.count <= Self.maxTokenBytes else {
            throw .malformed("it has \(token.utf8.count) bytes, more than \(Self.maxTokenBytes)")
        }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw .malformed("a JWT has three parts separated by '.'") }
        guard let headerBytes = Base64URL.decode(parts[0]),
              let header = try? JSONSerialization.jsonObject(with: headerBytes) as? [String: Any],
              let algName = header["alg"] as? String
        else { throw .malformed("its header is not base64url JSON with an 'alg'") }
        guard let algorithm = TokenAlgorithm(rawValue: algName), let collection = keys[algorithm] else {
            throw .algorithmNotAllowed(algName)
        }
        let claims: TokenClaims
        do {
            claims = try await collection.verify(token, as: TokenClaims.self)
        } catch let error as JWTError where error.errorType == .signatureVerificationFailed {
            throw .badSignature
        } catch {
            throw .malformed("\(error)")
        }
        if let exp = claims.number("exp") {
            let at = Date(timeIntervalSince1970: exp)
            guard now < at else { throw .expired(at) }
        }
        if let nbf = claims.number("nbf") {
            let at = Date(timeIntervalSince1970: nbf)
            guard now >= at else { throw .notYetValid(at) }
        }
        if let audience = settings.audience {
            guard claims.strings(settings.audienceClaim).contains(audience) else { throw .wrongAudience(expected: audience) }
        }
        guard let role = claims.strings(settings.roleClaim).first, !role.isEmpty else {
            throw .missingRole(claim: settings.roleClaim)
        }
        return VerifiedToken(role: role, expiresAt: claims.number("exp").map { Date(timeIntervalSince1970: $0) })
    }
}

/// A token's claims, whatever they are named: the role and audience claims are configurable.
struct TokenClaims: JWTPayload {
    enum Value: Codable, Sendable {
        case string(String)
        case number(Double)
        case strings([String])
        case other

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let value = try? container.decode(String.self) {
                self = .string(value)
            } else if let value = try? container.decode(Double.self) {
                self = .number(value)
            } else if let value = try? container.decode([String].self) {
                self = .strings(value)
            } else {
                self = .other
            }
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case .string(let value): try container.encode(value)
            case .number(let value): try container.encode(value)
            case .strings(let value): try container.encode(value)
            case .other: try container.encodeNil()
            }
        }
    }

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    var values: [String: Value]

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Key.self)
        var values: [String: Value] = [:]
        for key in container.allKeys {
            values[key.stringValue] = try container.decode(Value.self, forKey: key)
        }
        self.values = values
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Key.self)
        for (key, value) in values {
            try container.encode(value, forKey: Key(stringValue: key))
        }
    }

    /// Time claims are checked by the verifier against its clock, not here.
    func verify(using algorithm: some JWTAlgorithm) async throws {}

    func number(_ claim: String) -> Double? {
        if case .number(let value)? = values[claim] { return value }
        return nil
    }

    /// A string claim as one value, an array claim as its strings.
    func strings(_ claim: String) -> [String] {
        switch values[claim] {
        case .string(let value)?: [value]
        case .strings(let values)?: values
        default: []
        }
    }
}

enum Base64URL {
    static func decode(_ text: Substring) -> Data? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        return Data(base64Encoded: base64)
    }
}
