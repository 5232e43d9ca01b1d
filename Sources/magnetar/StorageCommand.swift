import ArgumentParser
import Foundation
import LedgerStorage
import Logging
import Metadata
import NIOCore
import NIOPosix
import Replication
import ServiceLifecycle

/// `magnetar storage`: one storage node — a `FileLedgerStore` served over the storage protocol.
/// With `--metadata etcd://…` it registers itself under `/storage-nodes/<advertised-address:port>`
/// (an ephemeral key, re-written if its session is lost) so brokers place ledgers on it.
struct StorageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "storage",
        abstract: "Run a storage node: ledgers on local disk, served to brokers over TCP.")

    @Option(help: "Directory for the node's journal, entry logs and index.")
    var dataDir = "./storage-data"

    @Option(help: "Address to listen on.")
    var bindAddress = "0.0.0.0"

    @Option(help: "Port of the storage protocol.")
    var port = 3181

    @Option(help: "Metadata store to register in, e.g. etcd://127.0.0.1:2379 (without it the node is not registered).")
    var metadata: String?

    @Option(help: "Host brokers use to reach this node (registered with --metadata); default: the bind address, or 127.0.0.1 for 0.0.0.0.")
    var advertisedAddress: String?

    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        if let metadata {
            guard case .etcd = try? MetadataStoreURL(parsing: metadata) else {
                throw ValidationError("--metadata must be an etcd://host:port[/root] URL (storage nodes register in a shared store)")
            }
        }
    }

    func run() async throws {
        logging.bootstrap()
        let logger = Logger(label: "magnetar.storage")
        let ledgersDirectory = (dataDir as NSString).appendingPathComponent("ledgers")
        try FileManager.default.createDirectory(atPath: ledgersDirectory, withIntermediateDirectories: true)
        let store = try FileLedgerStore(configuration: FileLedgerStoreConfiguration(directory: ledgersDirectory), logger: logger)
        defer { store.close() }
        let node = try StorageNode(store: store)
        let eventLoopGroup = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let server = StorageNodeServer(host: bindAddress, port: port, node: node, eventLoopGroup: eventLoopGroup, logger: logger)
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: server)]
        var metadataStore: (any SessionCapableMetadataStore)?
        if let metadata {
            let url = try MetadataStoreURL(parsing: metadata)
            guard let store = try url.makeStore(logger: Logger(label: "magnetar.metadata")) as? any SessionCapableMetadataStore else {
                throw ValidationError("--metadata \(url) has no sessions; use etcd://")
            }
            metadataStore = store
            let host = advertisedAddress ?? (bindAddress == "0.0.0.0" || bindAddress == "::" ? "127.0.0.1" : bindAddress)
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
