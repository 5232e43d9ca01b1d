import ArgumentParser
import BrokerServer
import Foundation
import LedgerStorage
import Logging
import Metadata
import NIOCore
import NIOPosix
import NIOSSL
import Replication
import ServerConfig
import ServiceLifecycle

/// `magnetar storage`: one storage node — a `FileLedgerStore` served over the storage protocol.
/// With `--metadata etcd://…` it registers itself under `/storage-nodes/<advertised-address:port>`
/// (an ephemeral key, re-written if its session is lost) so brokers place ledgers on it.
struct StorageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "storage",
        abstract: "Run a storage node: ledgers on local disk, served to brokers over TCP.",
        discussion: "Settings come from --config FILE (BookKeeper's bookkeeper.conf keys, see conf/bookkeeper.conf), then the flags.")

    @OptionGroup var config: ConfigOption

    @Option(help: "Directory for the node's journal, entry logs and index (ledgerDirectories; default ./storage-data).")
    var dataDir: String?

    @Option(help: "Address to listen on (default 0.0.0.0).")
    var bindAddress = "0.0.0.0"

    @Option(help: "Port of the storage protocol (bookiePort; default 3181).")
    var port: Int?

    @Option(help: "Metadata store to register in, e.g. etcd://127.0.0.1:2379; without it the node is not registered (metadataServiceUri).")
    var metadata: String?

    @Option(help: "Host brokers use to reach this node, registered with --metadata (advertisedAddress; default: the bind address, or 127.0.0.1 for 0.0.0.0).")
    var advertisedAddress: String?

    @Option(help: "Port of the node's HTTP endpoint: /metrics (bookie_* series) and /health (prometheusStatsHttpPort; default: none).")
    var metricsPort: Int?

    @OptionGroup var logging: LoggingOptions

    struct Settings {
        var dataDirectory: String
        var port: Int
        var metadataURL: MetadataStoreURL?
        var advertisedAddress: String?
        var metricsPort: Int?
    }

    func settings(_ file: ConfigFile?) throws -> Settings {
        if let port, !(1...65535).contains(port) { throw StartupError("--port \(port): expected 1 to 65535") }
        var directory = dataDir
        if directory == nil, let file, let ledgers = file.list("ledgerDirectories") {
            guard ledgers.count == 1 else {
                throw StartupError(file.error(
                    "ledgerDirectories", file.string("ledgerDirectories") ?? "",
                    expected: "one directory (a storage node keeps its journal, entry logs and index in one)").description)
            }
            for key in ["journalDirectories", "journalDirectory"] {
                if let journal = file.list(key), journal != ledgers {
                    throw StartupError(file.error(
                        key, file.string(key) ?? "",
                        expected: "the same directory as ledgerDirectories (\(ledgers[0])), or no value: the journal lives beside the ledgers").description)
                }
            }
            directory = ledgers[0]
        }
        let metadataText = Layered.optionalString(metadata, file, "metadataServiceUri")
        var metadataURL: MetadataStoreURL?
        if let metadataText {
            guard case .etcd? = try? MetadataStoreURL(parsing: metadataText) else {
                throw StartupError("metadata store '\(metadataText)' (--metadata / metadataServiceUri): expected etcd://host:port[/root]; storage nodes register in a shared store")
            }
            metadataURL = try MetadataStoreURL(parsing: metadataText)
        }
        return Settings(
            dataDirectory: directory ?? "./storage-data",
            port: try Layered.int(port, file, "bookiePort", default: 3181, in: 1...65535),
            metadataURL: metadataURL,
            advertisedAddress: Layered.optionalString(advertisedAddress, file, "advertisedAddress"),
            metricsPort: try metricsPort ?? file?.int("prometheusStatsHttpPort", in: 1...65535))
    }

    func run() async throws {
        logging.bootstrap()
        let logger = Logger(label: "magnetar.storage")
        let file = try config.load(known: ConfigKeys.storage, logger: logger)
        let settings = try settings(file)
        let port = settings.port
        let ledgersDirectory = (settings.dataDirectory as NSString).appendingPathComponent("ledgers")
        try FileManager.default.createDirectory(atPath: ledgersDirectory, withIntermediateDirectories: true)
        let store = try FileLedgerStore(configuration: FileLedgerStoreConfiguration(directory: ledgersDirectory), logger: logger)
        defer { store.close() }
        let node = try StorageNode(store: store)
        let authenticator = try await StorageNodeAuthentication.authenticator(file)
        if authenticator != nil { logger.info("storage.authentication-on") }
        let certificates = try StorageNodeTLS.certificates(file)
        let tlsContext: NIOSSLContext?
        do {
            tlsContext = try certificates?.makeContext()
        } catch {
            throw StartupError(error.description)
        }
        let eventLoopGroup = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let server = StorageNodeServer(
            host: bindAddress, port: port, node: node, authenticator: authenticator, tls: tlsContext,
            eventLoopGroup: eventLoopGroup, logger: logger)
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: server)]
        if let metricsPort = settings.metricsPort {
            let metrics = StorageMetrics(node: node)
            services.append(.init(service: HTTPServer.makeMetricsApplication(
                host: bindAddress, port: metricsPort, scrape: { await metrics.scrape() }, logger: logger)))
            logger.info("storage.metrics", metadata: ["port": "\(metricsPort)"])
        }
        if let certificates, let interval = certificates.settings.refreshCheckInterval {
            services.append(.init(service: PeriodicService(name: "tls-certificate-refresh", interval: interval, logger: logger) {
                certificates.reloadIfChanged(logger: logger)
            }))
        }
        var metadataStore: (any SessionCapableMetadataStore)?
        if let url = settings.metadataURL {
            guard let store = try url.makeStore(logger: Logger(label: "magnetar.metadata")) as? any SessionCapableMetadataStore else {
                throw StartupError("metadata store \(url) has no sessions; use etcd://")
            }
            metadataStore = store
            let host = settings.advertisedAddress ?? (bindAddress == "0.0.0.0" || bindAddress == "::" ? "127.0.0.1" : bindAddress)
            let registrar = StorageNodeRegistrar(metadata: store, address: StorageNodeAddress(host: host, port: port), logger: logger)
            // Fail at start when the metadata store cannot be reached, rather than run unregistered.
            try await registrar.register()
            services.append(.init(service: registrar))
        }
        let group = ServiceGroup(configuration: .init(
            services: services,
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        try await group.run()
        await metadataStore?.close()
        try await eventLoopGroup.shutdownGracefully()
        logger.info("storage.stopped")
    }
}
