import ArgumentParser
import Foundation
import LedgerStorage
import Logging
import NIOCore
import NIOPosix
import Replication
import ServiceLifecycle

/// `magnetar storage`: one storage node — a `FileLedgerStore` served over the storage protocol.
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

    @OptionGroup var logging: LoggingOptions

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
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: server)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        try await group.run()
        try await eventLoopGroup.shutdownGracefully()
        logger.info("storage.stopped")
    }
}
