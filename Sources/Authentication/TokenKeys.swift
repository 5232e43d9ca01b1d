import Crypto
import Foundation
import JWTKit
import _CryptoExtras

/// The JWS algorithms tokens may be signed with (Pulsar's `tokenPublicAlg` values and the HMAC ones
/// a secret key verifies). `none` is not one: an unsigned token is always refused.
public enum TokenAlgorithm: String, Sendable, CaseIterable {
    case hs256 = "HS256", hs384 = "HS384", hs512 = "HS512"
    case rs256 = "RS256", rs384 = "RS384", rs512 = "RS512"
    case ps256 = "PS256", ps384 = "PS384", ps512 = "PS512"
    case es256 = "ES256", es384 = "ES384", es512 = "ES512"

    public var isHMAC: Bool { [.hs256, .hs384, .hs512].contains(self) }
    public var isRSA: Bool { [.rs256, .rs384, .rs512, .ps256, .ps384, .ps512].contains(self) }

    /// `RS256`, `rs256`: Pulsar's `tokenPublicAlg` is case-insensitive.
    public init?(name: String) {
        self.init(rawValue: name.uppercased())
    }

    /// The HMAC key length Pulsar's `tokens create-secret-key` makes for this algorithm.
    public var secretKeyBytes: Int {
        switch self {
        case .hs384: 48
        case .hs512: 64
        default: 32
        }
    }

    var digest: DigestAlgorithm {
        switch self {
        case .hs384, .rs384, .ps384, .es384: .sha384
        case .hs512, .rs512, .ps512, .es512: .sha512
        default: .sha256
        }
    }
}

/// What verifies tokens: a shared secret (`tokenSecretKey`: HS256, HS384 and HS512 tokens) or a
/// public key (`tokenPublicKey` with `tokenPublicAlg`, RS256 by default), DER or PEM.
public enum TokenValidationKey: Sendable {
    case secret([UInt8])
    case publicKey([UInt8], TokenAlgorithm)

    /// The algorithms a token's header may name for this key: for a secret, the HMACs it is long
    /// enough for (as jjwt, which Pulsar uses, refuses an HS512 token checked with a 32-byte key).
    var algorithms: [TokenAlgorithm] {
        switch self {
        case .secret(let bytes): [TokenAlgorithm.hs256, .hs384, .hs512].filter { bytes.count >= $0.secretKeyBytes || $0 == .hs256 }
        case .publicKey(_, let algorithm): [algorithm]
        }
    }

    /// One key collection per algorithm a token may name, so the header's `alg` picks the
    /// verifier and never turns one algorithm's key into another's.
    func keyCollections() async throws(AuthenticationConfigError) -> [TokenAlgorithm: JWTKeyCollection] {
        var collections: [TokenAlgorithm: JWTKeyCollection] = [:]
        for algorithm in algorithms {
            let keys = JWTKeyCollection()
            do {
                switch self {
                case .secret(let bytes):
                    guard bytes.count >= 32 else {
                        throw AuthenticationConfigError(
                            "the token secret key has \(bytes.count) bytes: HMAC keys need at least 32 (make one with `magnetar tokens create-secret-key`)")
                    }
                    await keys.add(hmac: HMACKey(key: SymmetricKey(data: bytes)), digestAlgorithm: algorithm.digest)
                case .publicKey(let bytes, let algorithm):
                    try await Self.addPublicKey(bytes, algorithm, to: keys)
                }
            } catch let error as AuthenticationConfigError {
                throw error
            } catch {
                throw AuthenticationConfigError("the token public key is not a valid \(algorithm.rawValue) public key (DER or PEM): \(error)")
            }
            collections[algorithm] = keys
        }
        return collections
    }

    private static func addPublicKey(_ bytes: [UInt8], _ algorithm: TokenAlgorithm, to keys: JWTKeyCollection) async throws {
        let pem = KeyEncoding.pemText(bytes)
        switch algorithm {
        case .rs256, .rs384, .rs512, .ps256, .ps384, .ps512:
            let backing = try pem.map { try _RSA.Signing.PublicKey(pemRepresentation: $0) }
                ?? _RSA.Signing.PublicKey(derRepresentation: bytes)
            let key = try Insecure.RSA.PublicKey(backing: backing)
            if algorithm.rawValue.hasPrefix("PS") {
                await keys.add(pss: key, digestAlgorithm: algorithm.digest)
            } else {
                await keys.add(rsa: key, digestAlgorithm: algorithm.digest)
            }
        case .es256:
            let backing = try pem.map { try P256.Signing.PublicKey(pemRepresentation: $0) } ?? P256.Signing.PublicKey(derRepresentation: bytes)
            await keys.add(ecdsa: try ES256PublicKey(backing: backing))
        case .es384:
            let backing = try pem.map { try P384.Signing.PublicKey(pemRepresentation: $0) } ?? P384.Signing.PublicKey(derRepresentation: bytes)
            await keys.add(ecdsa: try ES384PublicKey(backing: backing))
        case .es512:
            let backing = try pem.map { try P521.Signing.PublicKey(pemRepresentation: $0) } ?? P521.Signing.PublicKey(derRepresentation: bytes)
            await keys.add(ecdsa: try ES512PublicKey(backing: backing))
        case .hs256, .hs384, .hs512:
            throw AuthenticationConfigError("tokenPublicAlg \(algorithm.rawValue) is an HMAC algorithm: give the key as tokenSecretKey")
        }
    }
}

enum KeyEncoding {
    /// The text of a PEM file, or nil for binary (DER) key bytes.
    static func pemText(_ bytes: [UInt8]) -> String? {
        guard let text = String(bytes: bytes, encoding: .utf8), text.contains("-----BEGIN") else { return nil }
        return text
    }
}
