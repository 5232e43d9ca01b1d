import ArgumentParser
import BrokerServer
import Logging
import Metrics
import Prometheus

@main
struct Magnetar: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "magnetar",
        abstract: "A messaging and streaming platform that speaks Apache Pulsar's protocol.",
        subcommands: [StandaloneCommand.self, BrokerCommand.self, StorageCommand.self, AdminCommand.self, PerfCommand.self,
            ClientCommand.self])
}

struct StandaloneCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "standalone",
        abstract: "Run broker, storage and metadata in one process.")

    @Option(help: "Directory for ledgers and metadata.")
    var dataDir = "./data"

    @OptionGroup var listen: ListenOptions

    @Option(help: "Roll a topic's ledger after this many entries.")
    var maxEntriesPerLedger: Int64 = 50_000

    @Option(help: "Roll a topic's ledger that holds entries after this many seconds (retention trims whole ledgers).")
    var ledgerRolloverSeconds: Int64 = 4 * 3600

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        logging.bootstrap()
        let logger = Logger(label: "magnetar")
        var options = StandaloneOptions(
            dataDirectory: dataDir, bindAddress: listen.bindAddress, port: listen.port, httpPort: listen.httpPort,
            advertisedAddress: listen.advertisedAddress)
        guard maxEntriesPerLedger > 0, ledgerRolloverSeconds > 0 else {
            throw ValidationError("--max-entries-per-ledger and --ledger-rollover-seconds must be positive")
        }
        options.broker.managedLedger.maxEntriesPerLedger = maxEntriesPerLedger
        options.broker.managedLedger.maxLedgerAge = .seconds(ledgerRolloverSeconds)
        options.listener = try listen.listenerSettings()
        let metricsRegistry = MetricsBootstrap.bootstrap()
        try await Standalone.run(options, metricsRegistry: metricsRegistry, logger: logger)
    }
}

/// Where a broker listens and how clients reach it (`standalone` and `broker`).
struct ListenOptions: ParsableArguments {
    @Option(help: "Address to listen on.")
    var bindAddress = "0.0.0.0"

    @Option(help: "Port of the Pulsar binary protocol.")
    var port = 6650

    @Option(help: "Port of the HTTP endpoint (/health, /admin/v2, /metrics).")
    var httpPort = 8080

    @Option(help: "Host name or address clients and other brokers use to reach this broker (returned by topic lookups).")
    var advertisedAddress = "localhost"

    @Option(help: "keepAliveIntervalSeconds: a connection without CONNECT after this long is closed; a silent one gets a PING and is closed after another interval without an answer.")
    var keepAliveIntervalSeconds = 30

    @Option(help: "brokerMaxConnections: most Pulsar connections at once (0: the file-descriptor limit less a reserve).")
    var brokerMaxConnections = 0

    @Option(help: "brokerMaxConnectionsPerIp: most Pulsar connections from one client address (0: no limit).")
    var brokerMaxConnectionsPerIp = 0

    /// The listener settings these flags give.
    func listenerSettings() throws -> PulsarListenerSettings {
        guard keepAliveIntervalSeconds > 0 else {
            throw ValidationError("--keep-alive-interval-seconds must be positive (got \(keepAliveIntervalSeconds))")
        }
        guard brokerMaxConnections >= 0, brokerMaxConnectionsPerIp >= 0 else {
            throw ValidationError("--broker-max-connections and --broker-max-connections-per-ip must be 0 (no limit) or positive")
        }
        var settings = PulsarListenerSettings()
        settings.keepAliveInterval = .seconds(keepAliveIntervalSeconds)
        settings.maxConnections = brokerMaxConnections
        settings.maxConnectionsPerIP = brokerMaxConnectionsPerIp
        return settings
    }
}
