import Authentication
import Foundation
import XCTest

final class TokenVerifierTests: XCTestCase {
    let secret = TokenIssuer.makeSecretKey()

    func verifier(_ key: TokenValidationKey, audience: String? = nil, roleClaim: String = "sub") async throws -> TokenVerifier {
        var settings = TokenSettings(key: key)
        settings.audience = audience
        settings.roleClaim = roleClaim
        return try await TokenVerifier(settings: settings)
    }

    func testGoodTokenGivesItsSubjectAsRole() async throws {
        let token = try await TokenIssuer.create(subject: "alice", expiresAt: Date().addingTimeInterval(3600), key: .secret(secret))
        let verified = try await verifier(.secret(secret)).verify(token)
        XCTAssertEqual(verified.role, "alice")
        XCTAssertNotNil(verified.expiresAt)
    }

    func testTokenWithoutExpiryNeverExpires() async throws {
        let token = try await TokenIssuer.create(subject: "svc", key: .secret(secret))
        let verified = try await verifier(.secret(secret)).verify(token, now: Date().addingTimeInterval(86_400 * 365 * 50))
        XCTAssertEqual(verified, VerifiedToken(role: "svc", expiresAt: nil))
    }

    func testOtherKeysSignatureIsRefused() async throws {
        let token = try await TokenIssuer.create(subject: "alice", key: .secret(TokenIssuer.makeSecretKey()))
        await assertRejected(try await verifier(.secret(secret)), token, .badSignature)
    }

    func testTamperedPayloadIsRefused() async throws {
        let token = try await TokenIssuer.create(subject: "alice", key: .secret(secret))
        var parts = token.split(separator: ".").map(String.init)
        parts[1] = Data(#"{"sub":"admin"}"#.utf8).base64EncodedString().replacingOccurrences(of: "=", with: "")
        await assertRejected(try await verifier(.secret(secret)), parts.joined(separator: "."), .badSignature)
    }

    func testExpiredTokenIsRefused() async throws {
        let expiry = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down) - 10)
        let token = try await TokenIssuer.create(subject: "alice", expiresAt: expiry, key: .secret(secret))
        await assertRejected(try await verifier(.secret(secret)), token, .expired(expiry))
    }

    func testUnsignedNoneTokenIsRefused() async throws {
        let header = Data(#"{"alg":"none"}"#.utf8).base64EncodedString().replacingOccurrences(of: "=", with: "")
        let payload = Data(#"{"sub":"admin"}"#.utf8).base64EncodedString().replacingOccurrences(of: "=", with: "")
        await assertRejected(try await verifier(.secret(secret)), "\(header).\(payload).", .algorithmNotAllowed("none"))
    }

    func testAlgorithmOtherThanTheKeysIsRefused() async throws {
        // An RS256 key pair: a token claiming HS256 "signed" with the public key must not pass
        // (the classic algorithm-confusion attack).
        let pair = try TokenIssuer.makeKeyPair(.rs256)
        let forged = try await TokenIssuer.create(subject: "admin", key: .secret(pair.publicKey))
        await assertRejected(try await verifier(.publicKey(pair.publicKey, .rs256)), forged, .algorithmNotAllowed("HS256"))
        // And a 32-byte secret does not verify HS512 (jjwt refuses the weak key too).
        let long = TokenIssuer.makeSecretKey(.hs512)
        let hs512 = try await TokenIssuer.create(subject: "a", key: .secret(long), algorithm: .hs512)
        await assertRejected(try await verifier(.secret(Array(long.prefix(32)))), hs512, .algorithmNotAllowed("HS512"))
        let verified = try await verifier(.secret(long)).verify(hs512)
        XCTAssertEqual(verified.role, "a")
    }

    func testRS256AndES256KeyPairs() async throws {
        for algorithm in [TokenAlgorithm.rs256, .es256] {
            let pair = try TokenIssuer.makeKeyPair(algorithm)
            let token = try await TokenIssuer.create(subject: "bob", key: .privateKey(pair.privateKey, algorithm))
            let verified = try await verifier(.publicKey(pair.publicKey, algorithm)).verify(token)
            XCTAssertEqual(verified.role, "bob", "\(algorithm)")
            let other = try TokenIssuer.makeKeyPair(algorithm)
            await assertRejected(try await verifier(.publicKey(other.publicKey, algorithm)), token, .badSignature)
        }
    }

    func testAudienceAndCustomRoleClaim() async throws {
        // A token made elsewhere (as pyjwt or jjwt would): HS256 with `aud` and a custom role claim.
        let token = try await TokenIssuer.create(subject: "alice", key: .secret(secret))
        await assertRejected(try await verifier(.secret(secret), audience: "magnetar"), token, .wrongAudience(expected: "magnetar"))
        await assertRejected(try await verifier(.secret(secret), roleClaim: "role"), token, .missingRole(claim: "role"))
    }

    func testMalformedTokensAreRefusedNotCrashed() async throws {
        let verifier = try await verifier(.secret(secret))
        for text in ["", "abc", "a.b", "a.b.c.d", "!!!.???.***", String(repeating: "x", count: 20_000)] {
            do {
                _ = try await verifier.verify(text)
                XCTFail("accepted \(text.prefix(20))")
            } catch {
                guard case .malformed = error else { return XCTFail("\(error) for \(text.prefix(20))") }
            }
        }
    }

    func testKeySourceForms() throws {
        let key: [UInt8] = Array(0..<32)
        XCTAssertEqual(try KeySource.read("data:;base64,\(Data(key).base64EncodedString())"), key)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("magnetar-key-\(UUID())").path
        FileManager.default.createFile(atPath: path, contents: Data(key))
        defer { try? FileManager.default.removeItem(atPath: path) }
        XCTAssertEqual(try KeySource.read("file://\(path)"), key)
        XCTAssertEqual(try KeySource.read(path), key)
        XCTAssertEqual(try KeySource.read(Data(key).base64EncodedString()), key)
        XCTAssertThrowsError(try KeySource.read("file:///nonexistent/key"))
        XCTAssertThrowsError(try KeySource.read("data:;base64,***"))
    }

    func testAuthenticatorMethods() async throws {
        var settings = AuthenticationSettings()
        settings.isEnabled = true
        settings.token = TokenSettings(key: .secret(secret))
        let authenticator = try await Authenticator.make(settings)
        let token = try await TokenIssuer.create(subject: "alice", key: .secret(secret))
        let role = try await authenticator.authenticate(.method("token", Array(token.utf8)))
        XCTAssertEqual(role.role, "alice")
        let bearer = try await authenticator.authenticate(authorizationHeader: "Bearer \(token)")
        XCTAssertEqual(bearer.role, "alice")
        do {
            _ = try await authenticator.authenticate(.none)
            XCTFail("anonymous accepted")
        } catch {
            XCTAssertEqual(error, .missingCredentials)
        }
        do {
            _ = try await authenticator.authenticate(.method("basic", Array("u:p".utf8)))
            XCTFail("basic accepted")
        } catch {
            XCTAssertEqual(error, .unsupportedMethod("basic"))
        }
    }

    private func assertRejected(
        _ verifier: TokenVerifier, _ token: String, _ expected: TokenRejection, file: StaticString = #filePath, line: UInt = #line
    ) async {
        do {
            let verified = try await verifier.verify(token)
            XCTFail("accepted as \(verified.role)", file: file, line: line)
        } catch {
            XCTAssertEqual(error, expected, file: file, line: line)
        }
    }
}
