import Authentication
import BrokerCore
import BrokerServer
import Foundation
import Logging
import ManagedLedger
import NIOSSL
import Replication
import Schemas
import ServerConfig
import TieredStorage

/// Authentication and authorization from the `--config` file, with Pulsar's keys
/// (`authenticationEnabled`, `authenticationProviders`, `tokenSecretKey`, ... `superUserRoles`).
struct SecuritySettings {
    var authentication = AuthenticationSettings()
    var authorization = AuthorizationSettings()
    var authenticateMetricsEndpoint = false
    /// `brokerServicePortTls` / `webServicePortTls` and the certificate keys; nil: no TLS listener.
    var tls: TLSListeners?

    static let tokenProvider = "org.apache.pulsar.broker.authentication.AuthenticationProviderToken"
    static let tlsProvider = "org.apache.pulsar.broker.authentication.AuthenticationProviderTls"

    static func resolve(_ file: ConfigFile?) throws -> SecuritySettings {
        var settings = SecuritySettings()
        guard let file else { return settings }
        do {
            settings.authentication.isEnabled = try file.bool("authenticationEnabled") ?? false
            settings.authorization.isEnabled = try file.bool("authorizationEnabled") ?? false
            settings.authenticateMetricsEndpoint = try file.bool("authenticateMetricsEndpoint") ?? false
            if let seconds = try file.int("authenticationRefreshCheckSeconds", in: 1...86_400) {
                settings.authentication.refreshCheckInterval = .seconds(seconds)
            }
        } catch {
            throw StartupError(error.description)
        }
        settings.tls = try tlsListeners(file)
        settings.authentication.anonymousRole = file.string("anonymousUserRole")
        settings.authorization.superUserRoles = Set(file.list("superUserRoles") ?? [])
        for provider in file.list("authenticationProviders") ?? [] {
            switch provider {
            case tokenProvider:
                settings.authentication.token = try tokenSettings(file)
            case tlsProvider:
                settings.authentication.acceptsTLSCertificates = true
            default:
                throw StartupError(file.error(
                    "authenticationProviders", file.string("authenticationProviders") ?? "",
                    expected: "\(tokenProvider) and/or \(tlsProvider); '\(provider)' is not a provider this build has").description)
            }
        }
        if settings.authentication.isEnabled, settings.authentication.token == nil, !settings.authentication.acceptsTLSCertificates {
            throw StartupError(file.error(
                "authenticationProviders", file.string("authenticationProviders") ?? "",
                expected: "a provider, since authenticationEnabled=true (\(tokenProvider))").description)
        }
        if settings.authorization.isEnabled, !settings.authentication.isEnabled {
            throw StartupError(file.error(
                "authorizationEnabled", "true",
                expected: "authenticationEnabled=true as well: authorization checks the roles authentication establishes").description)
        }
        return settings
    }

    private static func tlsListeners(_ file: ConfigFile) throws -> TLSListeners? {
        let pulsarPort: Int?
        let httpsPort: Int?
        let refresh: Int?
        let requireTrusted: Bool?
        do {
            pulsarPort = try file.int("brokerServicePortTls", in: 1...65535)
            httpsPort = try file.int("webServicePortTls", in: 1...65535)
            refresh = try file.int("tlsCertRefreshCheckDurationSec", in: 1...86_400 * 365)
            requireTrusted = try file.bool("tlsRequireTrustedClientCertOnConnect")
        } catch {
            throw StartupError(error.description)
        }
        guard pulsarPort != nil || httpsPort != nil else { return nil }
        let key = pulsarPort != nil ? "brokerServicePortTls" : "webServicePortTls"
        guard let certificate = file.string("tlsCertificateFilePath"), let privateKey = file.string("tlsKeyFilePath") else {
            throw StartupError(file.error(
                key, file.string(key) ?? "", expected: "tlsCertificateFilePath and tlsKeyFilePath as well: a TLS listener needs the broker's certificate and key").description)
        }
        var settings = TLSServerSettings(certificateFile: certificate, keyFile: privateKey)
        settings.trustCertsFile = file.string("tlsTrustCertsFilePath")
        settings.requireTrustedClientCert = requireTrusted ?? false
        settings.protocols = file.list("tlsProtocols") ?? []
        settings.ciphers = file.list("tlsCiphers") ?? []
        if let refresh { settings.refreshCheckInterval = .seconds(refresh) }
        return TLSListeners(settings: settings, pulsarPort: pulsarPort, httpsPort: httpsPort)
    }

    private static func tokenSettings(_ file: ConfigFile) throws -> TokenSettings {
        let key: TokenValidationKey
        do {
            if let secret = file.string("tokenSecretKey") {
                key = .secret(try KeySource.read(secret))
            } else if let publicKey = file.string("tokenPublicKey") {
                let name = file.string("tokenPublicAlg") ?? "RS256"
                guard let algorithm = TokenAlgorithm(name: name), !algorithm.isHMAC else {
                    throw StartupError(file.error(
                        "tokenPublicAlg", name, expected: "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or ES512").description)
                }
                key = .publicKey(try KeySource.read(publicKey), algorithm)
            } else {
                throw StartupError(file.error(
                    "authenticationProviders", file.string("authenticationProviders") ?? "",
                    expected: "tokenSecretKey or tokenPublicKey with the token provider").description)
            }
        } catch let error as AuthenticationConfigError {
            throw StartupError("\(file.path): token key: \(error.description)")
        }
        var settings = TokenSettings(key: key)
        settings.roleClaim = file.string("tokenAuthClaim") ?? "sub"
        settings.audienceClaim = file.string("tokenAudienceClaim") ?? "aud"
        settings.audience = file.string("tokenAudience")
        return settings
    }
}

/// Tenant quotas and schema defaults from the `--config` file (`maxTopicsPerNamespace`,
/// `maxNamespacesPerTenant`, `schemaCompatibilityStrategy`, `isAllowAutoUpdateSchemaEnabled`,
/// `isSchemaValidationEnforced`), compaction's (`brokerServiceCompactionMonitorIntervalInSeconds`,
/// `brokerServiceCompactionThresholdInBytes`).
enum QuotaSettings {
    static func apply(_ file: ConfigFile?, to configuration: inout BrokerConfiguration) throws {
        guard let file else { return }
        do {
            configuration.maxTopicsPerNamespace = try file.int("maxTopicsPerNamespace", in: 0...Int(Int32.max)) ?? 0
            configuration.maxNamespacesPerTenant = try file.int("maxNamespacesPerTenant", in: 0...Int(Int32.max)) ?? 0
            configuration.isAllowAutoUpdateSchemaEnabled = try file.bool("isAllowAutoUpdateSchemaEnabled") ?? true
            configuration.isSchemaValidationEnforced = try file.bool("isSchemaValidationEnforced") ?? false
            configuration.compactionMonitorIntervalSeconds =
                try file.int64("brokerServiceCompactionMonitorIntervalInSeconds", in: 1...86_400) ?? 60
            configuration.compactionThresholdBytes = try file.int64("brokerServiceCompactionThresholdInBytes", in: 0...Int64.max) ?? 0
        } catch {
            throw StartupError(error.description)
        }
        if let name = file.string("schemaCompatibilityStrategy") {
            guard let strategy = SchemaCompatibilityStrategy(rawValue: name.uppercased()), strategy != .undefined else {
                throw StartupError(file.error(
                    "schemaCompatibilityStrategy", name,
                    expected: SchemaCompatibilityStrategy.allCases.filter { $0 != .undefined }.map(\.rawValue).joined(separator: ", ")).description)
            }
            configuration.schemaCompatibilityStrategy = strategy
        }
    }
}

/// Pulsar's `transactionCoordinatorEnabled`: on by default in standalone, off on a cluster's brokers.
enum TransactionSettings {
    static func enabled(_ file: ConfigFile?, default value: Bool) throws -> Bool {
        do {
            return try file?.bool("transactionCoordinatorEnabled") ?? value
        } catch {
            throw StartupError(error.description)
        }
    }
}

/// Pulsar's `advertisedListeners` (`name:pulsar://host:port,name:pulsar+ssl://host:port,...`: a
/// client with `listener_name` is answered that listener's addresses) and `internalListenerName`
/// (the listener LOOKUPs without a name are answered with; by default the advertised address).
enum AdvertisedListenerSettings {
    static func resolve(_ file: ConfigFile?) throws -> (listeners: [String: AdvertisedListener], internalName: String?) {
        guard let file, let entries = file.list("advertisedListeners") else {
            if let name = file?.string("internalListenerName") {
                throw StartupError(file!.error("internalListenerName", name, expected: "a name of advertisedListeners, which is empty").description)
            }
            return ([:], nil)
        }
        var listeners: [String: AdvertisedListener] = [:]
        for entry in entries {
            guard let colon = entry.firstIndex(of: ":"), colon != entry.startIndex else {
                throw StartupError(file.error("advertisedListeners", entry, expected: "name:pulsar://host:port or name:pulsar+ssl://host:port").description)
            }
            let name = String(entry[..<colon])
            let url = String(entry[entry.index(after: colon)...])
            var listener = listeners[name] ?? AdvertisedListener()
            if url.hasPrefix("pulsar://"), listener.pulsarURL == nil {
                listener.pulsarURL = url
            } else if url.hasPrefix("pulsar+ssl://"), listener.pulsarTLSURL == nil {
                listener.pulsarTLSURL = url
            } else {
                throw StartupError(file.error(
                    "advertisedListeners", entry,
                    expected: "one pulsar:// and at most one pulsar+ssl:// address per listener name").description)
            }
            listeners[name] = listener
        }
        let internalName = file.string("internalListenerName")
        if let internalName, listeners[internalName] == nil {
            throw StartupError(file.error(
                "internalListenerName", internalName, expected: "one of advertisedListeners' names (\(listeners.keys.sorted().joined(separator: ", ")))").description)
        }
        return (listeners, internalName)
    }
}

/// How a broker reaches the storage nodes of its cluster: TLS with `brokerClientTlsEnabled` (or
/// `bookkeeperTLSClientAuthentication`, which presents the broker's certificate), trusting
/// `bookkeeperTLSTrustCertsFilePath` (else `brokerClientTrustCertsFilePath`, else the system's CAs);
/// and the credentials of `BrokerClientAuthentication`. As with Pulsar's broker client, the node's
/// chain is verified and its hostname is not, unless `tlsHostnameVerificationEnabled=true`.
enum StorageClientSecuritySettings {
    static func resolve(_ file: ConfigFile?) throws -> StorageClientSecurity {
        StorageClientSecurity(credentials: try BrokerClientAuthentication.credentials(file), tls: try tlsContext(file))
    }

    private static func tlsContext(_ file: ConfigFile?) throws -> NIOSSLContext? {
        guard let file else { return nil }
        let enabled: Bool
        let mutual: Bool
        let verifyHostname: Bool
        do {
            mutual = try file.bool("bookkeeperTLSClientAuthentication") ?? false
            enabled = try file.bool("brokerClientTlsEnabled") ?? false || mutual
            verifyHostname = try file.bool("tlsHostnameVerificationEnabled") ?? false
        } catch {
            throw StartupError(error.description)
        }
        guard enabled else { return nil }
        for key in ["bookkeeperTLSKeyFileType", "bookkeeperTLSTrustCertTypes"] {
            if let type = file.string(key), type.uppercased() != "PEM" {
                throw StartupError(file.error(key, type, expected: "PEM: this build reads PEM files only").description)
            }
        }
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = verifyHostname ? .fullVerification : .noHostnameVerification
        let trustKey = file.string("bookkeeperTLSTrustCertsFilePath") != nil ? "bookkeeperTLSTrustCertsFilePath" : "brokerClientTrustCertsFilePath"
        if let trust = file.string(trustKey) {
            do {
                configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(trust))
            } catch {
                throw StartupError(file.error(trustKey, trust, expected: "a readable PEM file of CA certificates (\(error))").description)
            }
        }
        if mutual {
            guard let certificate = file.string("bookkeeperTLSCertificateFilePath"), let key = file.string("bookkeeperTLSKeyFilePath") else {
                throw StartupError(file.error(
                    "bookkeeperTLSClientAuthentication", "true",
                    expected: "bookkeeperTLSCertificateFilePath and bookkeeperTLSKeyFilePath as well: the broker's certificate and key (PEM)").description)
            }
            do {
                configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) }
            } catch {
                throw StartupError(file.error("bookkeeperTLSCertificateFilePath", certificate, expected: "a readable PEM certificate file (\(error))").description)
            }
            do {
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            } catch {
                throw StartupError(file.error("bookkeeperTLSKeyFilePath", key, expected: "a readable PEM private key (\(error))").description)
            }
        }
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw StartupError("brokerClientTlsEnabled: cannot make the TLS client context for storage nodes: \(error)")
        }
    }
}

/// A storage node's TLS (BookKeeper's bookkeeper.conf keys, PEM files only): `tlsCertificatePath`
/// and `tlsKeyStore` turn it on, and then the node's port speaks only TLS; `tlsTrustStore` holds the
/// CAs client certificates must chain to, `tlsClientAuthentication=true` requires one;
/// `tlsEnabledProtocols`, `tlsEnabledCipherSuites`; `tlsCertFilesRefreshDurationSeconds` (0, the
/// default: never) how often the files are checked for a new pair.
enum StorageNodeTLS {
    static func certificates(_ file: ConfigFile?) throws -> TLSCertificates? {
        guard let file else { return nil }
        let certificate = file.string("tlsCertificatePath")
        let key = file.string("tlsKeyStore")
        guard certificate != nil || key != nil else { return nil }
        guard let certificate, let key else {
            throw StartupError(file.error(
                certificate == nil ? "tlsKeyStore" : "tlsCertificatePath", certificate ?? key ?? "",
                expected: "tlsCertificatePath and tlsKeyStore together: the node's certificate chain and private key (PEM)").description)
        }
        for typeKey in ["tlsKeyStoreType", "tlsTrustStoreType"] {
            if let type = file.string(typeKey), type.uppercased() != "PEM" {
                throw StartupError(file.error(typeKey, type, expected: "PEM: this build reads PEM files only").description)
            }
        }
        var settings = TLSServerSettings(certificateFile: certificate, keyFile: key)
        settings.certificateKeyName = "tlsCertificatePath"
        settings.keyKeyName = "tlsKeyStore"
        settings.trustCertsFile = file.string("tlsTrustStore")
        settings.protocols = file.list("tlsEnabledProtocols") ?? []
        settings.ciphers = file.list("tlsEnabledCipherSuites") ?? []
        do {
            settings.requireTrustedClientCert = try file.bool("tlsClientAuthentication") ?? false
            let refresh = try file.int("tlsCertFilesRefreshDurationSeconds", in: 0...86_400 * 365) ?? 0
            settings.refreshCheckInterval = refresh == 0 ? nil : .seconds(refresh)
        } catch {
            throw StartupError(error.description)
        }
        if settings.requireTrustedClientCert, settings.trustCertsFile == nil {
            throw StartupError(file.error(
                "tlsClientAuthentication", "true", expected: "tlsTrustStore as well: the CAs the brokers' certificates must chain to").description)
        }
        do {
            return try TLSCertificates(settings: settings)
        } catch {
            throw StartupError(error.description)
        }
    }
}

/// What a broker presents to the storage nodes of its cluster (Pulsar's
/// `brokerClientAuthenticationPlugin` and `brokerClientAuthenticationParameters`).
enum BrokerClientAuthentication {
    static let tokenPlugin = "org.apache.pulsar.client.impl.auth.AuthenticationToken"

    /// nil when no plugin is configured. Parameters as Pulsar's `AuthenticationToken` reads them:
    /// `token:<jwt>`, `file:///path` (read again for every new connection, trimmed),
    /// `{"token":"<jwt>"}`, or the token itself.
    static func credentials(_ file: ConfigFile?) throws -> StorageClientCredentials? {
        guard let file, let plugin = file.string("brokerClientAuthenticationPlugin") else { return nil }
        guard plugin == tokenPlugin || plugin == "token" else {
            throw StartupError(file.error(
                "brokerClientAuthenticationPlugin", plugin,
                expected: "\(tokenPlugin) (storage nodes accept tokens)").description)
        }
        guard let parameters = file.string("brokerClientAuthenticationParameters") else {
            throw StartupError(file.error(
                "brokerClientAuthenticationParameters", "",
                expected: "the broker's token: token:<jwt>, file:///path/to/token or {\"token\":\"<jwt>\"}").description)
        }
        let token = try tokenSource(parameters, file: file)
        // Read once now: a missing file fails the start-up rather than every ledger write.
        _ = try token()
        return StorageClientCredentials(method: "token", data: { Array(try token().utf8) })
    }

    private static func tokenSource(_ parameters: String, file: ConfigFile) throws -> @Sendable () throws -> String {
        if parameters.hasPrefix("token:") {
            let token = String(parameters.dropFirst("token:".count))
            return { token }
        }
        if parameters.hasPrefix("file:") {
            guard let url = URL(string: parameters), url.isFileURL, !url.path.isEmpty else {
                throw StartupError(file.error("brokerClientAuthenticationParameters", "file:…", expected: "file:///absolute/path/to/token").description)
            }
            let path = url.path
            return {
                do {
                    return try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
                } catch {
                    throw StartupError("brokerClientAuthenticationParameters: cannot read the token file \(path): \(error.localizedDescription)")
                }
            }
        }
        if parameters.hasPrefix("{") {
            guard let object = try? JSONSerialization.jsonObject(with: Data(parameters.utf8)) as? [String: Any],
                  let token = object["token"] as? String
            else {
                throw StartupError(file.error("brokerClientAuthenticationParameters", "{…}", expected: "a JSON object with a \"token\" string").description)
            }
            return { token }
        }
        return { parameters }
    }
}

/// A storage node's check of the brokers that connect (`authenticationEnabled`, the token
/// provider's keys and `superUserRoles`, as in broker.conf): a valid token whose role is one of
/// `superUserRoles`. Any other role, even with a valid token (an application's), is refused.
enum StorageNodeAuthentication {
    struct RoleNotAllowed: Error, CustomStringConvertible {
        var role: String
        var description: String { "role '\(role)' is not one of the storage node's superUserRoles" }
    }

    static func authenticator(_ file: ConfigFile?) async throws -> StorageClientAuthenticator? {
        let security = try SecuritySettings.resolve(file)
        guard let file, security.authentication.isEnabled else { return nil }
        guard security.authentication.token != nil else {
            throw StartupError(file.error(
                "authenticationProviders", file.string("authenticationProviders") ?? "",
                expected: "\(SecuritySettings.tokenProvider): storage nodes check the brokers' tokens").description)
        }
        let allowed = security.authorization.superUserRoles
        guard !allowed.isEmpty else {
            throw StartupError(file.error(
                "superUserRoles", "", expected: "the brokers' roles, since authenticationEnabled=true: only they may read and write ledgers").description)
        }
        let authenticator: Authenticator
        do {
            authenticator = try await Authenticator.make(security.authentication)
        } catch {
            throw StartupError("\(file.path): \(error.description)")
        }
        return { method, data in
            let role = try await authenticator.authenticate(.method(method, data)).role
            guard allowed.contains(role) else { throw RoleNotAllowed(role: role) }
            return role
        }
    }
}

/// Tiered storage from the `--config` file: `managedLedgerOffloadDriver` (`filesystem` with
/// `fileSystemURI`; `aws-s3` / `S3` with `s3ManagedLedgerOffloadBucket`, `...Region`,
/// `...ServiceEndpoint`), the block size, `managedLedgerOffloadAutoTriggerSizeThresholdBytes` and
/// `managedLedgerOffloadDeletionLagMs`. Every broker gets an offloader registry (a ledger offloaded
/// by another broker, or under a namespace's offloadPolicies, is read back through it).
enum OffloadConfiguration {
    static func apply(_ file: ConfigFile?, to configuration: inout BrokerConfiguration) throws {
        configuration.managedLedger.offloaders = OffloaderRegistry()
        guard let file else { return }
        var settings = OffloadSettings()
        do {
            settings.thresholdBytes = try file.int64("managedLedgerOffloadAutoTriggerSizeThresholdBytes", in: -1...Int64.max) ?? -1
            settings.deletionLagMs = try file.int64("managedLedgerOffloadDeletionLagMs", in: 0...Int64.max)
                ?? ManagedLedger.defaultOffloadDeletionLagMs
            let blockRange = 1024...OffloadTarget.maxBlockSizeBytes
            let genericBlock = try file.int("managedLedgerOffloadMaxBlockSizeInBytes", in: blockRange)
            let s3Block = try file.int("s3ManagedLedgerOffloadMaxBlockSizeInBytes", in: blockRange)
            guard let driverName = file.string("managedLedgerOffloadDriver") else {
                configuration.offload = settings
                return
            }
            guard let driver = OffloadTarget.Driver(configName: driverName) else {
                throw StartupError(file.error("managedLedgerOffloadDriver", driverName, expected: "filesystem, aws-s3 or S3").description)
            }
            switch driver {
            case .filesystem:
                guard let uri = file.string("fileSystemURI") else {
                    throw StartupError("\(file.path): managedLedgerOffloadDriver=filesystem needs fileSystemURI=file:///path/to/dir")
                }
                do {
                    settings.target = try OffloadTarget.filesystem(uri: uri, blockSizeBytes: genericBlock ?? OffloadTarget.defaultBlockSizeBytes)
                } catch {
                    throw StartupError(file.error("fileSystemURI", uri, expected: "file:///absolute/dir").description + " (\(error))")
                }
            case .awsS3:
                guard let bucket = file.string("s3ManagedLedgerOffloadBucket") else {
                    throw StartupError("\(file.path): managedLedgerOffloadDriver=\(driverName) needs s3ManagedLedgerOffloadBucket")
                }
                settings.target = OffloadTarget(
                    driver: .awsS3, container: bucket, region: file.string("s3ManagedLedgerOffloadRegion"),
                    endpoint: file.string("s3ManagedLedgerOffloadServiceEndpoint"),
                    blockSizeBytes: s3Block ?? genericBlock ?? OffloadTarget.defaultBlockSizeBytes)
            }
        } catch let error as ConfigFileError {
            throw StartupError(error.description)
        }
        // Made now, so a bad endpoint or missing credentials stop the start, not the first offload.
        if let target = settings.target {
            do {
                _ = try configuration.managedLedger.offloaders?.offloader(for: target)
            } catch {
                throw StartupError("\(file.path): the offload tier (\(target)) cannot be used: \(error)")
            }
        }
        configuration.offload = settings
    }
}
