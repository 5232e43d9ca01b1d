import Foundation

/// Where a namespace offloads to: Pulsar's `managedLedgerOffloadDriver` with the driver's keys
/// (`fileSystemURI`; `s3ManagedLedgerOffloadBucket`, `...Region`, `...ServiceEndpoint`), from the
/// broker's configuration or a namespace's `offloadPolicies`. A value.
public struct OffloadTarget: Sendable, Hashable, CustomStringConvertible {
    public enum Driver: String, Sendable, Hashable {
        case filesystem
        case awsS3 = "aws-s3"

        /// Pulsar's driver names: `filesystem`, `aws-s3` and its older spelling `S3` (any case).
        public init?(configName: String) {
            switch configName.lowercased() {
            case "filesystem": self = .filesystem
            case "aws-s3", "s3": self = .awsS3
            default: return nil
            }
        }
    }

    public var driver: Driver
    /// The directory (filesystem: the path of `fileSystemURI`) or the bucket (S3).
    public var container: String
    public var region: String?
    /// The S3-compatible server (`s3ManagedLedgerOffloadServiceEndpoint`); nil: AWS's for `region`.
    public var endpoint: String?
    /// `managedLedgerOffloadMaxBlockSizeInBytes` / `s3ManagedLedgerOffloadMaxBlockSizeInBytes`.
    public var blockSizeBytes: Int

    public static let defaultBlockSizeBytes = 64 * 1024 * 1024
    /// A block is read back in one response (`S3ObjectStore.maxResponseBytes`), so it stays well under it.
    public static let maxBlockSizeBytes = 128 * 1024 * 1024

    public init(driver: Driver, container: String, region: String? = nil, endpoint: String? = nil, blockSizeBytes: Int = defaultBlockSizeBytes) {
        self.driver = driver
        self.container = container
        self.region = region
        self.endpoint = endpoint
        self.blockSizeBytes = blockSizeBytes
    }

    /// The filesystem driver's target from `fileSystemURI` (`file:///dir`, or a plain path).
    public static func filesystem(uri: String, blockSizeBytes: Int = defaultBlockSizeBytes) throws(TieredStorageError) -> OffloadTarget {
        let path: String
        if uri.hasPrefix("file://") {
            path = String(uri.dropFirst("file://".count))
        } else if uri.contains("://") {
            throw TieredStorageError(.invalidArgument, "fileSystemURI '\(uri)': only file:// URIs (a local or mounted directory) are served")
        } else {
            path = uri
        }
        guard path.hasPrefix("/") else {
            throw TieredStorageError(.invalidArgument, "fileSystemURI '\(uri)': give an absolute directory, as file:///path/to/dir")
        }
        return OffloadTarget(driver: .filesystem, container: path, blockSizeBytes: blockSizeBytes)
    }

    /// The target the objects of `location` were written to (its driver, container, region and endpoint).
    public init(reading location: OffloadedLedgerLocation) throws(TieredStorageError) {
        guard let driver = Driver(configName: location.driver) else {
            throw TieredStorageError(.invalidArgument, "ledger offloaded with driver '\(location.driver)', which this build cannot read")
        }
        self.init(driver: driver, container: location.container, region: location.region, endpoint: location.endpoint)
    }

    public var description: String {
        switch driver {
        case .filesystem: return "filesystem file://\(container)"
        case .awsS3: return "aws-s3 bucket \(container) at \(endpoint ?? "AWS \(region ?? "us-east-1")")"
        }
    }

    /// What identifies the objects' place (the block size only shapes new offloads).
    var placeKey: String { "\(driver.rawValue)|\(container)|\(region ?? "")|\(endpoint ?? "")" }
}

/// S3 credentials, looked up as AWS's tools do: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`
/// (and `AWS_SESSION_TOKEN`) in the environment, else the profile `AWS_PROFILE` (default
/// `default`) of the credentials file (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`).
public struct S3Credentials: Sendable, Equatable {
    public var accessKeyID: String
    public var secretAccessKey: String
    public var sessionToken: String?

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }

    public static func resolve(environment: [String: String] = ProcessInfo.processInfo.environment) throws(TieredStorageError) -> S3Credentials {
        if let key = environment["AWS_ACCESS_KEY_ID"], !key.isEmpty, let secret = environment["AWS_SECRET_ACCESS_KEY"], !secret.isEmpty {
            return S3Credentials(accessKeyID: key, secretAccessKey: secret, sessionToken: environment["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 })
        }
        let home = environment["HOME"] ?? NSHomeDirectory()
        let path = environment["AWS_SHARED_CREDENTIALS_FILE"] ?? "\(home)/.aws/credentials"
        let profile = environment["AWS_PROFILE"] ?? "default"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw TieredStorageError(.invalidArgument, "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or write them in \(path)")
        }
        guard let values = parseProfile(text, profile) else {
            throw TieredStorageError(.invalidArgument, "no S3 credentials: \(path) has no [\(profile)] profile with aws_access_key_id and aws_secret_access_key")
        }
        return values
    }

    /// The keys of `[profile]` in an AWS credentials file (INI: `key = value`, `#` / `;` comments).
    static func parseProfile(_ text: String, _ profile: String) -> S3Credentials? {
        var section: String?
        var values: [String: String] = [:]
        for raw in text.split(whereSeparator: \.isNewline) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("["), line.hasSuffix("]") {
                section = line.dropFirst().dropLast().trimmingCharacters(in: .whitespaces)
                continue
            }
            guard section == profile, let equals = line.firstIndex(of: "=") else { continue }
            let key = line[..<equals].trimmingCharacters(in: .whitespaces).lowercased()
            values[key] = line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
        }
        guard let key = values["aws_access_key_id"], let secret = values["aws_secret_access_key"] else { return nil }
        return S3Credentials(accessKeyID: key, secretAccessKey: secret, sessionToken: values["aws_session_token"])
    }
}

/// The offloaders of one broker, one per place objects go (the broker's target, and any other a
/// namespace's `offloadPolicies` or an offloaded ledger's location names), made when first asked
/// for and kept. S3 credentials are looked up once, when the first S3 offloader is made.
/// Thread-safe.
public final class OffloaderRegistry: @unchecked Sendable {
    private let lock = NSLock()
    private var offloaders: [String: LedgerOffloader] = [:]
    private var credentials: S3Credentials?
    private let environment: [String: String]

    public init(credentials: S3Credentials? = nil, environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.credentials = credentials
        self.environment = environment
    }

    /// The offloader writing to (and reading from) `target`.
    public func offloader(for target: OffloadTarget) throws(TieredStorageError) -> LedgerOffloader {
        lock.lock()
        defer { lock.unlock() }
        let key = "\(target.placeKey)|\(target.blockSizeBytes)"
        if let known = offloaders[key] { return known }
        let offloader: LedgerOffloader
        switch target.driver {
        case .filesystem:
            offloader = LedgerOffloader(
                store: try FileSystemObjectStore(root: target.container), driver: target.driver.rawValue,
                container: target.container, blockSizeBytes: target.blockSizeBytes)
        case .awsS3:
            let credentials: S3Credentials
            if let known = self.credentials {
                credentials = known
            } else {
                credentials = try S3Credentials.resolve(environment: environment)
                self.credentials = credentials
            }
            let region = target.region ?? "us-east-1"
            let endpointText = target.endpoint ?? "https://s3.\(region).amazonaws.com"
            guard let endpoint = URL(string: endpointText) else {
                throw TieredStorageError(.invalidArgument, "s3ManagedLedgerOffloadServiceEndpoint '\(endpointText)' is not a URL")
            }
            let signer = SigV4Signer(
                accessKeyID: credentials.accessKeyID, secretAccessKey: credentials.secretAccessKey,
                sessionToken: credentials.sessionToken, region: region)
            offloader = LedgerOffloader(
                store: try S3ObjectStore(endpoint: endpoint, bucket: target.container, signer: signer),
                driver: target.driver.rawValue, container: target.container, blockSizeBytes: target.blockSizeBytes,
                region: target.region, endpoint: target.endpoint)
        }
        offloaders[key] = offloader
        return offloader
    }

    /// An offloader that reads the objects of `location` (any block size does).
    public func offloader(reading location: OffloadedLedgerLocation) throws(TieredStorageError) -> LedgerOffloader {
        let place = try OffloadTarget(reading: location).placeKey
        lock.lock()
        let known = offloaders.first { $0.key.hasPrefix(place + "|") }?.value
        lock.unlock()
        if let known { return known }
        return try offloader(for: OffloadTarget(reading: location))
    }
}
