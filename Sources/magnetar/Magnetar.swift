import ArgumentParser
import BrokerCore
import ManagedLedger
import BrokerServer
import KafkaServer
import Logging
import Metrics
import Prometheus
import ServerConfig

@main
struct Magnetar: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "magnetar",
        abstract: "A messaging and streaming platform that speaks Apache Pulsar's protocol.",
        subcommands: [StandaloneCommand.self, BrokerCommand.self, StorageCommand.self, AdminCommand.self, PerfCommand.self,
            ClientCommand.self, TokensCommand.self])
}

struct StandaloneCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "standalone",
        abstract: "Run broker, storage and metadata in one process.",
        discussion: "Settings come from --config FILE (Pulsar's standalone.conf keys, see conf/standalone.conf), then the flags.")

    @OptionGroup var config: ConfigOption

    @Option(help: "Directory for ledgers and metadata.")
    var dataDir = "./data"

    @OptionGroup var listen: ListenOptions

    @Option(help: "Name of the cluster, as /admin/v2/clusters reports it (clusterName; default standalone).")
    var clusterName: String?

    @OptionGroup var ledgers: LedgerOptions

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        logging.bootstrap()
        let logger = Logger(label: "magnetar")
        let file = try config.load(known: ListenOptions.knownKeys(ConfigKeys.standalone), logger: logger)
        let listening = try listen.resolve(file)
        var options = StandaloneOptions(
            dataDirectory: dataDir, bindAddress: listening.bindAddress, port: listening.port, httpPort: listening.httpPort,
            advertisedAddress: listening.advertisedAddress)
        options.broker.clusterName = try clusterNameSetting(clusterName, file, default: "standalone")
        options.broker.managedLedger = try ledgers.resolve(file, into: options.broker.managedLedger)
        options.listener = listening.listener
        options.endpoints = listening.endpoints
        options.settings = listening.settings
        let security = try SecuritySettings.resolve(file)
        options.authentication = security.authentication
        options.authenticateMetricsEndpoint = security.authenticateMetricsEndpoint
        options.broker.authorization = security.authorization
        options.tls = security.tls
        try QuotaSettings.apply(file, to: &options.broker)
        options.broker.transactionCoordinatorEnabled = try TransactionSettings.enabled(file, default: true)
        try OffloadConfiguration.apply(file, to: &options.broker)
        options.replication = try GeoReplicationConfiguration.settings(file)
        let listeners = try AdvertisedListenerSettings.resolve(file)
        options.broker.advertisedListeners = listeners.listeners
        options.broker.internalListenerName = listeners.internalName
        let metricsRegistry = MetricsBootstrap.bootstrap()
        try await Standalone.run(options, metricsRegistry: metricsRegistry, logger: logger)
    }
}

/// `--cluster-name` / `clusterName`: letters, digits, `-`, `_` and `.` (it is a path segment of
/// the admin API and part of generated producer names).
func clusterNameSetting(_ flag: String?, _ file: ConfigFile?, default value: String) throws -> String {
    let name = Layered.string(flag, file, "clusterName", default: value)
    let allowed = name.unicodeScalars.allSatisfy {
        ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || "-_.".unicodeScalars.contains($0)
    }
    guard !name.isEmpty, name.utf8.count <= 128, allowed else {
        let expected = "1-128 letters, digits, '-', '_' or '.'"
        guard flag == nil, let file else { throw StartupError("--cluster-name '\(name)': use \(expected)") }
        throw StartupError(file.error("clusterName", name, expected: expected).description)
    }
    return name
}

/// Where a broker listens and how clients reach it (`standalone` and `broker`). Each flag
/// overrides the `--config` key named in its help.
struct ListenOptions: ParsableArguments {
    @Option(help: "Address to listen on (bindAddress; default 0.0.0.0).")
    var bindAddress: String?

    @Option(help: "Port of the Pulsar binary protocol (brokerServicePort; default 6650).")
    var port: Int?

    @Option(help: "Port of the HTTP endpoint: /health, /admin/v2, /metrics (webServicePort; default 8080).")
    var httpPort: Int?

    @Option(help: "Host name or address clients and other brokers use to reach this broker, returned by topic lookups (advertisedAddress; default localhost).")
    var advertisedAddress: String?

    @Option(help: "A connection without CONNECT after this long is closed; a silent one gets a PING and is closed after another interval without an answer (keepAliveIntervalSeconds; default 30).")
    var keepAliveIntervalSeconds: Int?

    @Option(help: "Most Pulsar connections at once; 0: the file-descriptor limit less a reserve (brokerMaxConnections; default 0).")
    var brokerMaxConnections: Int?

    @Option(help: "Most Pulsar connections from one client address; 0: no limit (brokerMaxConnectionsPerIp; default 0).")
    var brokerMaxConnectionsPerIp: Int?

    @Option(help: "Protocols served beside Pulsar's, comma-separated (messagingProtocols; default none).")
    var messagingProtocols: String?

    struct Resolved {
        var bindAddress: String
        var port: Int
        var httpPort: Int
        var advertisedAddress: String
        var listener: PulsarListenerSettings
        /// The endpoints `messagingProtocols` names, besides Pulsar's.
        var endpoints: [ProtocolEndpoint]
        /// The file's key=value pairs, for the endpoints' own keys.
        var settings: [String: String]
    }

    /// The endpoints this binary can serve beside Pulsar's (`messagingProtocols` picks).
    static let servedEndpoints: [ProtocolEndpoint] = ProtocolEndpoints.available + [KafkaEndpoint.endpoint]

    /// Every key a broker reads, its endpoints' included.
    static func knownKeys(_ role: Set<String>) -> Set<String> {
        servedEndpoints.reduce(role) { $0.union($1.configKeys) }
    }

    /// The settings from the flags, then `file`, then the defaults.
    func resolve(_ file: ConfigFile?) throws -> Resolved {
        for (flag, value, range) in [
            ("--port", port, 1...65535), ("--http-port", httpPort, 1...65535),
            ("--keep-alive-interval-seconds", keepAliveIntervalSeconds, 1...Int(Int32.max)),
            ("--broker-max-connections", brokerMaxConnections, 0...Int(Int32.max)),
            ("--broker-max-connections-per-ip", brokerMaxConnectionsPerIp, 0...Int(Int32.max)),
        ] {
            if let value, !range.contains(value) {
                throw StartupError("\(flag) \(value): expected \(range.lowerBound == 0 ? "0 (no limit) or more" : "\(range.lowerBound) to \(range.upperBound)")")
            }
        }
        var listener = PulsarListenerSettings()
        listener.keepAliveInterval = .seconds(Int64(try Layered.int(
            keepAliveIntervalSeconds, file, "keepAliveIntervalSeconds", default: 30, in: 1...Int(Int32.max))))
        listener.maxConnections = try Layered.int(brokerMaxConnections, file, "brokerMaxConnections", default: 0, in: 0...Int(Int32.max))
        listener.maxConnectionsPerIP = try Layered.int(
            brokerMaxConnectionsPerIp, file, "brokerMaxConnectionsPerIp", default: 0, in: 0...Int(Int32.max))
        let protocols = messagingProtocols.map { $0.split(separator: ",").map(String.init) } ?? file?.list("messagingProtocols") ?? []
        let endpoints: [ProtocolEndpoint]
        do {
            endpoints = try ProtocolEndpoints.select(protocols, from: Self.servedEndpoints)
        } catch {
            guard messagingProtocols == nil, let file else { throw StartupError("--messaging-protocols: \(error)") }
            throw StartupError(file.error(
                "messagingProtocols", file.string("messagingProtocols") ?? "",
                expected: "protocols this build serves (\(error.served.joined(separator: ", "))); '\(error.name)' is not one").description)
        }
        return Resolved(
            bindAddress: Layered.string(bindAddress, file, "bindAddress", default: "0.0.0.0"),
            port: try Layered.int(port, file, "brokerServicePort", default: 6650, in: 1...65535),
            httpPort: try Layered.int(httpPort, file, "webServicePort", default: 8080, in: 1...65535),
            advertisedAddress: Layered.string(advertisedAddress, file, "advertisedAddress", default: "localhost"),
            listener: listener, endpoints: endpoints, settings: file?.values ?? [:])
    }
}

/// How topics' ledgers roll (`standalone` and `broker`).
struct LedgerOptions: ParsableArguments {
    @Option(help: "Roll a topic's ledger after this many entries (managedLedgerMaxEntriesPerLedger; default 50000).")
    var maxEntriesPerLedger: Int64?

    @Option(help: "Roll a topic's ledger that holds entries after this many seconds; retention trims whole ledgers (managedLedgerMaxLedgerRolloverTimeMinutes, in minutes; default 240 minutes).")
    var ledgerRolloverSeconds: Int64?

    /// The managed-ledger settings from the flags, then `file`, then `defaults`.
    func resolve(_ file: ConfigFile?, into defaults: ManagedLedgerConfiguration) throws -> ManagedLedgerConfiguration {
        if let maxEntriesPerLedger, maxEntriesPerLedger <= 0 {
            throw StartupError("--max-entries-per-ledger \(maxEntriesPerLedger): must be positive")
        }
        if let ledgerRolloverSeconds, ledgerRolloverSeconds <= 0 {
            throw StartupError("--ledger-rollover-seconds \(ledgerRolloverSeconds): must be positive")
        }
        let minutes: ClosedRange<Int64> = 1...(Int64(Int32.max))
        var configuration = defaults
        configuration.maxEntriesPerLedger = try Layered.int64(
            maxEntriesPerLedger, file, "managedLedgerMaxEntriesPerLedger", default: defaults.maxEntriesPerLedger,
            in: 1...Int64(Int32.max))
        if let ledgerRolloverSeconds {
            configuration.maxLedgerAge = .seconds(ledgerRolloverSeconds)
        } else if let maxMinutes = try Layered.optionalInt64(file, "managedLedgerMaxLedgerRolloverTimeMinutes", in: minutes) {
            configuration.maxLedgerAge = .minutes(maxMinutes)
        }
        let minMinutes = try Layered.int64(nil, file, "managedLedgerMinLedgerRolloverTimeMinutes", default: 0, in: 0...Int64(Int32.max))
        configuration.minLedgerAge = .minutes(minMinutes)
        if configuration.minLedgerAge > configuration.maxLedgerAge {
            let place = file?.path ?? "the flags"
            throw StartupError("\(place): managedLedgerMinLedgerRolloverTimeMinutes (\(minMinutes)) is above the maximum rollover time; lower it or raise managedLedgerMaxLedgerRolloverTimeMinutes")
        }
        let megabytes = try Layered.int64(
            nil, file, "managedLedgerMaxSizePerLedgerMbytes", default: defaults.maxSizePerLedgerBytes >> 20, in: 1...(1 << 30))
        configuration.maxSizePerLedgerBytes = megabytes << 20
        return configuration
    }
}
