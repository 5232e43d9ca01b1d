import Crypto
import Foundation
import JWTKit
import _CryptoExtras

/// What signs tokens (`magnetar tokens create`): the secret key, or the private key of a pair,
/// in the formats `pulsar tokens create-secret-key` / `create-key-pair` write (raw bytes; PKCS#8
/// DER, PEM also read).
public enum TokenSigningKey: Sendable {
    case secret([UInt8])
    case privateKey([UInt8], TokenAlgorithm)
}

/// Makes tokens that Apache Pulsar accepts (`{"alg":...}` with `sub` and optionally `exp`), and
/// the keys to sign them, as `pulsar tokens` does.
public enum TokenIssuer {
    /// A signed token for `subject` (the role), expiring at `expiresAt` if given.
    public static func create(
        subject: String, expiresAt: Date? = nil, key: TokenSigningKey, algorithm: TokenAlgorithm? = nil
    ) async throws(AuthenticationConfigError) -> String {
        let keys = JWTKeyCollection()
        do {
            switch key {
            case .secret(let bytes):
                let algorithm = algorithm ?? .hs256
                guard algorithm.isHMAC else {
                    throw AuthenticationConfigError("a secret key signs HS256, HS384 or HS512 tokens, not \(algorithm.rawValue)")
                }
                guard bytes.count >= algorithm.secretKeyBytes else {
                    throw AuthenticationConfigError(
                        "the secret key has \(bytes.count) bytes: \(algorithm.rawValue) needs at least \(algorithm.secretKeyBytes)")
                }
                await keys.add(hmac: HMACKey(key: SymmetricKey(data: bytes)), digestAlgorithm: algorithm.digest)
            case .privateKey(let bytes, let algorithm):
                try await addPrivateKey(bytes, algorithm, to: keys)
            }
        } catch let error as AuthenticationConfigError {
            throw error
        } catch {
            throw AuthenticationConfigError("the signing key cannot be used: \(error)")
        }
        var claims: [String: TokenClaims.Value] = ["sub": .string(subject)]
        if let expiresAt { claims["exp"] = .number(expiresAt.timeIntervalSince1970.rounded(.down)) }
        do {
            return try await keys.sign(IssuedClaims(values: claims))
        } catch {
            throw AuthenticationConfigError("signing the token failed: \(error)")
        }
    }

    /// A new random secret key for `algorithm` (32 bytes for HS256).
    public static func makeSecretKey(_ algorithm: TokenAlgorithm = .hs256) -> [UInt8] {
        let key = SymmetricKey(size: SymmetricKeySize(bitCount: algorithm.secretKeyBytes * 8))
        return key.withUnsafeBytes { Array($0) }
    }

    /// A new key pair as DER: the private key in PKCS#8, the public one as X.509
    /// SubjectPublicKeyInfo (the encodings Java's `getEncoded()` writes, so Pulsar reads them).
    public static func makeKeyPair(_ algorithm: TokenAlgorithm = .rs256) throws(AuthenticationConfigError) -> (privateKey: [UInt8], publicKey: [UInt8]) {
        do {
            switch algorithm {
            case .rs256, .rs384, .rs512, .ps256, .ps384, .ps512:
                let key = try _RSA.Signing.PrivateKey(keySize: .bits2048)
                return (Array(key.pkcs8DERRepresentation), Array(key.publicKey.derRepresentation))
            case .es256:
                let key = P256.Signing.PrivateKey()
                return (Array(key.derRepresentation), Array(key.publicKey.derRepresentation))
            case .es384:
                let key = P384.Signing.PrivateKey()
                return (Array(key.derRepresentation), Array(key.publicKey.derRepresentation))
            case .es512:
                let key = P521.Signing.PrivateKey()
                return (Array(key.derRepresentation), Array(key.publicKey.derRepresentation))
            case .hs256, .hs384, .hs512:
                throw AuthenticationConfigError("\(algorithm.rawValue) uses a secret key: make one with create-secret-key")
            }
        } catch let error as AuthenticationConfigError {
            throw error
        } catch {
            throw AuthenticationConfigError("making the key pair failed: \(error)")
        }
    }

    private static func addPrivateKey(_ bytes: [UInt8], _ algorithm: TokenAlgorithm, to keys: JWTKeyCollection) async throws {
        let pem = KeyEncoding.pemText(bytes)
        switch algorithm {
        case .rs256, .rs384, .rs512, .ps256, .ps384, .ps512:
            let backing = try pem.map { try _RSA.Signing.PrivateKey(pemRepresentation: $0) }
                ?? _RSA.Signing.PrivateKey(derRepresentation: bytes)
            let key = try Insecure.RSA.PrivateKey(backing: backing)
            if algorithm.rawValue.hasPrefix("PS") {
                await keys.add(pss: key, digestAlgorithm: algorithm.digest)
            } else {
                await keys.add(rsa: key, digestAlgorithm: algorithm.digest)
            }
        case .es256:
            let backing = try pem.map { try P256.Signing.PrivateKey(pemRepresentation: $0) } ?? P256.Signing.PrivateKey(derRepresentation: bytes)
            await keys.add(ecdsa: try ES256PrivateKey(backing: backing))
        case .es384:
            let backing = try pem.map { try P384.Signing.PrivateKey(pemRepresentation: $0) } ?? P384.Signing.PrivateKey(derRepresentation: bytes)
            await keys.add(ecdsa: try ES384PrivateKey(backing: backing))
        case .es512:
            let backing = try pem.map { try P521.Signing.PrivateKey(pemRepresentation: $0) } ?? P521.Signing.PrivateKey(derRepresentation: bytes)
            await keys.add(ecdsa: try ES512PrivateKey(backing: backing))
        case .hs256, .hs384, .hs512:
            throw AuthenticationConfigError("\(algorithm.rawValue) uses a secret key, not a private key")
        }
    }
}

/// The claims of a token we sign: `sub` and `exp` as Pulsar writes them (`exp` in whole seconds).
private struct IssuedClaims: JWTPayload {
    var values: [String: TokenClaims.Value]

    init(values: [String: TokenClaims.Value]) { self.values = values }

    init(from decoder: any Decoder) throws {
        values = try TokenClaims(from: decoder).values
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: TokenClaims.Key.self)
        for key in values.keys.sorted() {
            switch values[key]! {
            case .number(let value) where value == value.rounded() && abs(value) < 1e15:
                try container.encode(Int64(value), forKey: TokenClaims.Key(stringValue: key))
            case let value:
                try container.encode(value, forKey: TokenClaims.Key(stringValue: key))
            }
        }
    }

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// Reads key bytes as a `TokenSigningKey` / `TokenValidationKey` for the command line.
public extension TokenSigningKey {
    /// The public key of a private one (for `tokens validate` with a private key).
    static func publicKey(ofPrivate bytes: [UInt8], _ algorithm: TokenAlgorithm) throws(AuthenticationConfigError) -> [UInt8] {
        let pem = KeyEncoding.pemText(bytes)
        do {
            switch algorithm {
            case .rs256, .rs384, .rs512, .ps256, .ps384, .ps512:
                let key = try pem.map { try _RSA.Signing.PrivateKey(pemRepresentation: $0) } ?? _RSA.Signing.PrivateKey(derRepresentation: bytes)
                return Array(key.publicKey.derRepresentation)
            case .es256:
                let key = try pem.map { try P256.Signing.PrivateKey(pemRepresentation: $0) } ?? P256.Signing.PrivateKey(derRepresentation: bytes)
                return Array(key.publicKey.derRepresentation)
            case .es384:
                let key = try pem.map { try P384.Signing.PrivateKey(pemRepresentation: $0) } ?? P384.Signing.PrivateKey(derRepresentation: bytes)
                return Array(key.publicKey.derRepresentation)
            case .es512:
                let key = try pem.map { try P521.Signing.PrivateKey(pemRepresentation: $0) } ?? P521.Signing.PrivateKey(derRepresentation: bytes)
                return Array(key.publicKey.derRepresentation)
            case .hs256, .hs384, .hs512:
                throw AuthenticationConfigError("\(algorithm.rawValue) has no key pair")
            }
        } catch let error as AuthenticationConfigError {
            throw error
        } catch {
            throw AuthenticationConfigError("the private key is not a valid \(algorithm.rawValue) key (DER or PEM): \(error)")
        }
    }
}
