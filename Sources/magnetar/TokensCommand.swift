import ArgumentParser
import Authentication
import Foundation

/// `magnetar tokens`: keys and tokens as `pulsar tokens` makes them (and reads Pulsar's).
struct TokensCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokens",
        abstract: "Make keys and tokens for token authentication (pulsar tokens' verbs).",
        subcommands: [CreateSecretKey.self, CreateKeyPair.self, Create.self, Show.self, Validate.self])

    struct CreateSecretKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create-secret-key", abstract: "A random HMAC key: for tokenSecretKey=file:///<path> and `tokens create --secret-key`.")

        @Option(name: [.customShort("o"), .long], help: "Write the raw key bytes to this file (mode 600); default: stdout.")
        var output: String?

        @Flag(name: [.customShort("b"), .long], help: "Print the key as base64 instead of raw bytes.")
        var base64 = false

        @Option(name: [.customShort("a"), .long], help: "HS256, HS384 or HS512.")
        var signatureAlgorithm = "HS256"

        func run() throws {
            guard let algorithm = TokenAlgorithm(name: signatureAlgorithm), algorithm.isHMAC else {
                throw ValidationError("--signature-algorithm \(signatureAlgorithm): use HS256, HS384 or HS512")
            }
            let key = TokenIssuer.makeSecretKey(algorithm)
            let bytes = base64 ? Array((Data(key).base64EncodedString() + "\n").utf8) : key
            try TokensCommand.write(bytes, to: output)
        }
    }

    struct CreateKeyPair: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create-key-pair", abstract: "A key pair (DER): the private key signs tokens, tokenPublicKey verifies them.")

        @Option(help: "File for the private key (PKCS#8 DER, mode 600).")
        var outputPrivateKey: String

        @Option(help: "File for the public key (X.509 SubjectPublicKeyInfo DER).")
        var outputPublicKey: String

        @Option(name: [.customShort("a"), .long], help: "RS256 (default), RS384, RS512, PS256, PS384, PS512, ES256, ES384 or ES512.")
        var signatureAlgorithm = "RS256"

        func run() throws {
            guard let algorithm = TokenAlgorithm(name: signatureAlgorithm), !algorithm.isHMAC else {
                throw ValidationError("--signature-algorithm \(signatureAlgorithm): use RS256, ES256 or another public-key algorithm")
            }
            let pair = try TokensCommand.wrap { try TokenIssuer.makeKeyPair(algorithm) }
            try TokensCommand.write(pair.privateKey, to: outputPrivateKey)
            try TokensCommand.write(pair.publicKey, to: outputPublicKey, privateFile: false)
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A token for a role, signed with a secret key or a private key; printed to stdout.")

        @Option(name: [.customShort("s"), .long], help: "The role (the token's sub claim).")
        var subject: String

        @Option(name: [.customShort("e"), .long], help: "Expire after this long: 30s, 10m, 1h, 7d, 2w, 1y (default: never).")
        var expiryTime: String?

        @Option(name: [.customLong("secret-key"), .customLong("sk")], help: "The HMAC key: file:///path, data:;base64,..., a path or base64.")
        var secretKey: String?

        @Option(name: [.customLong("private-key"), .customLong("pk")], help: "The private key: file:///path, data:;base64,... or a path.")
        var privateKey: String?

        @Option(name: [.customShort("a"), .long], help: "HS256 with a secret key (default), RS256 with a private key (default), or another.")
        var signatureAlgorithm: String?

        func run() async throws {
            let expiresAt = try expiryTime.map { Date().addingTimeInterval(try TokensCommand.duration($0)) }
            let algorithm = try signatureAlgorithm.map { name in
                guard let algorithm = TokenAlgorithm(name: name) else { throw ValidationError("unknown --signature-algorithm \(name)") }
                return algorithm
            }
            let key: TokenSigningKey
            switch (secretKey, privateKey) {
            case (let secret?, nil):
                key = .secret(try TokensCommand.wrap { try KeySource.read(secret) })
            case (nil, let privateKey?):
                key = .privateKey(try TokensCommand.wrap { try KeySource.read(privateKey) }, algorithm ?? .rs256)
            default:
                throw ValidationError("give exactly one of --secret-key and --private-key")
            }
            do {
                print(try await TokenIssuer.create(subject: subject, expiresAt: expiresAt, key: key, algorithm: algorithm))
            } catch {
                throw ValidationError(error.description)
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a token's header and claims (without checking it).")

        @OptionGroup var token: TokenInput

        func run() throws {
            let parts = try token.text().split(separator: ".", omittingEmptySubsequences: false)
            guard parts.count == 3, let header = TokensCommand.decodePart(parts[0]), let claims = TokensCommand.decodePart(parts[1]) else {
                throw ValidationError("not a JWT: expected header.claims.signature in base64url")
            }
            print(header)
            print("---")
            print(claims)
        }
    }

    struct Validate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a token as a broker would; prints its role and expiry, exits 1 if it is refused.")

        @OptionGroup var token: TokenInput

        @Option(name: [.customLong("secret-key"), .customLong("sk")], help: "The HMAC key (as tokenSecretKey).")
        var secretKey: String?

        @Option(name: [.customLong("public-key"), .customLong("pk")], help: "The public key (as tokenPublicKey).")
        var publicKey: String?

        @Option(name: [.customShort("a"), .long], help: "The public key's algorithm (tokenPublicAlg; default RS256).")
        var signatureAlgorithm = "RS256"

        func run() async throws {
            let key: TokenValidationKey
            switch (secretKey, publicKey) {
            case (let secret?, nil):
                key = .secret(try TokensCommand.wrap { try KeySource.read(secret) })
            case (nil, let publicKey?):
                guard let algorithm = TokenAlgorithm(name: signatureAlgorithm), !algorithm.isHMAC else {
                    throw ValidationError("--signature-algorithm \(signatureAlgorithm) is not a public-key algorithm")
                }
                key = .publicKey(try TokensCommand.wrap { try KeySource.read(publicKey) }, algorithm)
            default:
                throw ValidationError("give exactly one of --secret-key and --public-key")
            }
            let verifier = try await TokensCommand.wrapAsync { try await TokenVerifier(settings: TokenSettings(key: key)) }
            do {
                let verified = try await verifier.verify(try token.text())
                print("role: \(verified.role)")
                print("expires: \(verified.expiresAt.map { ISO8601DateFormatter().string(from: $0) } ?? "never")")
            } catch {
                FileHandle.standardError.write(Data("refused: \(error)\n".utf8))
                throw ExitCode.failure
            }
        }
    }

    /// `-i TOKEN` or `-f FILE`.
    struct TokenInput: ParsableArguments {
        @Option(name: [.customShort("i"), .customLong("token")], help: "The token.")
        var token: String?

        @Option(name: [.customShort("f"), .customLong("token-file")], help: "A file holding the token.")
        var tokenFile: String?

        func text() throws -> String {
            if let token { return token.trimmingCharacters(in: .whitespacesAndNewlines) }
            guard let tokenFile else { throw ValidationError("give the token with -i TOKEN or -f FILE") }
            let path = tokenFile.hasPrefix("file://") ? String(tokenFile.dropFirst("file://".count)) : tokenFile
            guard let data = FileManager.default.contents(atPath: path), data.count <= TokenVerifier.maxTokenBytes,
                  let line = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline).first
            else { throw ValidationError("-f \(tokenFile): cannot read a token from it") }
            return line.trimmingCharacters(in: .whitespaces)
        }
    }

    // MARK: helpers

    /// `30s`, `10m`, `1h`, `7d`, `2w`, `1y` (Pulsar's relative times); a bare number is seconds.
    static func duration(_ text: String) throws -> TimeInterval {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800, "y": 31_536_000]
        let trimmed = text.trimmingCharacters(in: .whitespaces).lowercased()
        let unit = trimmed.last.flatMap { units[$0] }
        let number = unit == nil ? trimmed : String(trimmed.dropLast())
        guard let value = Double(number), value > 0, value.isFinite, value * (unit ?? 1) < 100 * 31_536_000 else {
            throw ValidationError("--expiry-time \(text): use a positive number with s, m, h, d, w or y (under 100 years)")
        }
        return value * (unit ?? 1)
    }

    static func decodePart(_ part: Substring) -> String? {
        var base64 = part.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        guard let data = Data(base64Encoded: base64) else { return nil }
        return String(data: data, encoding: .utf8)
    }

    static func write(_ bytes: [UInt8], to path: String?, privateFile: Bool = true) throws {
        guard let path else {
            FileHandle.standardOutput.write(Data(bytes))
            return
        }
        let attributes: [FileAttributeKey: Any] = [.posixPermissions: privateFile ? 0o600 : 0o644]
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes), attributes: attributes) else {
            throw ValidationError("cannot write \(path)")
        }
    }

    static func wrap<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as AuthenticationConfigError {
            throw ValidationError(error.description)
        }
    }

    static func wrapAsync<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as AuthenticationConfigError {
            throw ValidationError(error.description)
        }
    }
}
