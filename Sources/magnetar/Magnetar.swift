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
}
