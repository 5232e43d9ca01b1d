import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL

/// The TLS settings of a broker's TLS listeners (`brokerServicePortTls`, `webServicePortTls`),
/// with Pulsar's keys: `tlsCertificateFilePath`, `tlsKeyFilePath`, `tlsTrustCertsFilePath`,
/// `tlsRequireTrustedClientCertOnConnect`, `tlsProtocols`, `tlsCiphers`,
/// `tlsCertRefreshCheckDurationSec`.
public struct TLSServerSettings: Sendable, Equatable {
    /// The broker's certificate chain (PEM, leaf first).
    public var certificateFile: String
    /// Its private key (PEM: PKCS#8 as Pulsar wants, or PKCS#1 / SEC1).
    public var keyFile: String
    /// The CAs client certificates must chain to (PEM); nil: the system's.
    public var trustCertsFile: String?
    /// Refuse a client without a trusted certificate. Off: a certificate is asked for, and one that
    /// is presented must be trusted, but a client may present none.
    public var requireTrustedClientCert = false
    /// `TLSv1.3`, `TLSv1.2`, ...: the versions to negotiate; empty: TLS 1.2 and 1.3.
    public var protocols: [String] = []
    /// IANA cipher suite names (`TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`); empty: the library's.
    public var ciphers: [String] = []
    /// How often the certificate and key files are checked for changes; nil: never.
    public var refreshCheckInterval: Duration? = .seconds(300)
    /// The configuration keys that named the two files, for error messages (a storage node's
    /// bookkeeper.conf names them `tlsCertificatePath` and `tlsKeyStore`).
    public var certificateKeyName = "tlsCertificateFilePath"
    public var keyKeyName = "tlsKeyFilePath"

    public init(certificateFile: String, keyFile: String) {
        self.certificateFile = certificateFile
        self.keyFile = keyFile
    }
}

/// A TLS setting that cannot be used; says which and why.
public struct TLSSettingsError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The broker's certificate and key, loaded from their files and reloaded when the files change
/// (checked every `refreshCheckInterval` by `reloadIfChanged`): every new TLS handshake uses the
/// latest pair, through NIOSSL's per-handshake context callback; open connections keep theirs.
/// Thread-safe.
public final class TLSCertificates: Sendable {
    public let settings: TLSServerSettings
    private let minimumVersion: TLSVersion
    private let maximumVersion: TLSVersion
    private let cipherSuites: [NIOTLSCipher]

    private struct Loaded: @unchecked Sendable {
        // NIOSSLCertificate and NIOSSLPrivateKey are immutable once made (their Sendable
        // conformance is declared by NIOSSL); the box only swaps whole pairs.
        var chain: [NIOSSLCertificate]
        var key: NIOSSLPrivateKey
        var stamp: [FileStamp]
    }

    /// What tells a changed file: its modification time, size and inode (a renamed-over file has a new one).
    private struct FileStamp: Equatable {
        var modified: Date?
        var size: Int?
        var inode: Int?
    }

    private let loaded: NIOLockedValueBox<Loaded>

    public init(settings: TLSServerSettings) throws(TLSSettingsError) {
        self.settings = settings
        (minimumVersion, maximumVersion) = try Self.versions(settings.protocols)
        cipherSuites = try Self.ciphers(settings.ciphers)
        loaded = NIOLockedValueBox(try Self.load(settings))
        // Fail at startup, not at the first handshake, if the pair or the trust file is unusable.
        _ = try makeContext()
    }

    /// A `NIOSSLContext` for a listener: the handshake asks this object for the current pair.
    public func makeContext() throws(TLSSettingsError) -> NIOSSLContext {
        do {
            return try NIOSSLContext(configuration: serverConfiguration())
        } catch {
            throw TLSSettingsError("cannot use the TLS certificate \(settings.certificateFile) with key \(settings.keyFile)\(settings.trustCertsFile.map { " and trust file \($0)" } ?? ""): \(error)")
        }
    }

    /// The server configuration both TLS listeners use (HTTPS through Hummingbird's TLS channel).
    public func serverConfiguration() -> TLSConfiguration {
        let current = loaded.withLockedValue { $0 }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: current.chain.map { .certificate($0) }, privateKey: .privateKey(current.key))
        configuration.minimumTLSVersion = minimumVersion
        configuration.maximumTLSVersion = maximumVersion
        if !cipherSuites.isEmpty { configuration.cipherSuiteValues = cipherSuites }
        if let trust = settings.trustCertsFile { configuration.trustRoots = .file(trust) }
        configuration.certificateVerification = settings.requireTrustedClientCert ? .noHostnameVerification : .optionalVerification
        let box = loaded
        configuration.sslContextCallback = { _, promise in
            let pair = box.withLockedValue { ($0.chain, $0.key) }
            var override = NIOSSLContextConfigurationOverride()
            override.certificateChain = pair.0.map { .certificate($0) }
            override.privateKey = .privateKey(pair.1)
            promise.succeed(override)
        }
        return configuration
    }

    /// Reloads the pair if either file changed since it was loaded; true if it did. A pair that
    /// does not load (a half-written file) leaves the previous one in use and is tried again next time.
    @discardableResult
    public func reloadIfChanged(logger: Logger) -> Bool {
        let stamp = Self.stamps(settings)
        guard stamp != loaded.withLockedValue({ $0.stamp }) else { return false }
        do {
            let fresh = try Self.load(settings)
            loaded.withLockedValue { $0 = fresh }
            logger.info("tls.certificate-reloaded", metadata: ["tls.certificate": "\(settings.certificateFile)"])
            return true
        } catch {
            logger.warning("tls.certificate-reload-failed", metadata: [
                "tls.certificate": "\(settings.certificateFile)", "error": "\(error)",
            ])
            return false
        }
    }

    private static func load(_ settings: TLSServerSettings) throws(TLSSettingsError) -> Loaded {
        let stamp = stamps(settings)
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(settings.certificateFile)
        } catch {
            throw TLSSettingsError("\(settings.certificateKeyName) \(settings.certificateFile): not a readable PEM certificate file (\(error))")
        }
        guard !chain.isEmpty else {
            throw TLSSettingsError("\(settings.certificateKeyName) \(settings.certificateFile): holds no PEM certificate")
        }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: settings.keyFile, format: .pem)
        } catch {
            throw TLSSettingsError("\(settings.keyKeyName) \(settings.keyFile): not a readable PEM private key (\(error))")
        }
        return Loaded(chain: chain, key: key, stamp: stamp)
    }

    private static func stamps(_ settings: TLSServerSettings) -> [FileStamp] {
        [settings.certificateFile, settings.keyFile].map { path in
            let attributes = try? FileManager.default.attributesOfItem(atPath: path)
            return FileStamp(
                modified: attributes?[.modificationDate] as? Date, size: (attributes?[.size] as? NSNumber)?.intValue,
                inode: (attributes?[.systemFileNumber] as? NSNumber)?.intValue)
        }
    }

    static func versions(_ names: [String]) throws(TLSSettingsError) -> (TLSVersion, TLSVersion) {
        guard !names.isEmpty else { return (.tlsv12, .tlsv13) }
        let known: [(String, TLSVersion, Int)] = [("TLSv1", .tlsv1, 0), ("TLSv1.1", .tlsv11, 1), ("TLSv1.2", .tlsv12, 2), ("TLSv1.3", .tlsv13, 3)]
        var ranks: [Int] = []
        for name in names {
            guard let entry = known.first(where: { $0.0.lowercased() == name.lowercased() }) else {
                throw TLSSettingsError("tlsProtocols: '\(name)' is not a TLS version; use TLSv1.3, TLSv1.2, TLSv1.1 or TLSv1")
            }
            ranks.append(entry.2)
        }
        return (known[ranks.min()!].1, known[ranks.max()!].1)
    }

    static func ciphers(_ names: [String]) throws(TLSSettingsError) -> [NIOTLSCipher] {
        let known: [String: NIOTLSCipher] = [
            "TLS_RSA_WITH_AES_128_CBC_SHA": .TLS_RSA_WITH_AES_128_CBC_SHA,
            "TLS_RSA_WITH_AES_256_CBC_SHA": .TLS_RSA_WITH_AES_256_CBC_SHA,
            "TLS_RSA_WITH_AES_128_GCM_SHA256": .TLS_RSA_WITH_AES_128_GCM_SHA256,
            "TLS_RSA_WITH_AES_256_GCM_SHA384": .TLS_RSA_WITH_AES_256_GCM_SHA384,
            "TLS_AES_128_GCM_SHA256": .TLS_AES_128_GCM_SHA256,
            "TLS_AES_256_GCM_SHA384": .TLS_AES_256_GCM_SHA384,
            "TLS_CHACHA20_POLY1305_SHA256": .TLS_CHACHA20_POLY1305_SHA256,
            "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": .TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
            "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": .TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
            "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": .TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
            "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": .TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": .TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": .TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": .TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": .TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": .TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": .TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ]
        return try names.map { name throws(TLSSettingsError) in
            guard let cipher = known[name.uppercased()] else {
                throw TLSSettingsError("tlsCiphers: '\(name)' is not a cipher suite this build offers; use IANA names such as TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 (known: \(known.keys.sorted().joined(separator: ", ")))")
            }
            return cipher
        }
    }
}
