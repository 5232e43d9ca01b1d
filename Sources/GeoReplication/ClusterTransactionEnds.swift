import BrokerCore
import Logging
import MagnetarClient
import ManagedLedger
import NIOConcurrencyHelpers
import NIOCore

/// A cluster's transaction coordinator ending transactions on the other brokers' topics: one
/// MagnetarClient to this cluster (through this broker's own URL: LOOKUPs find each topic's owner),
/// presenting `brokerClientAuthentication*` like the replicators, sending END_TXN_ON_PARTITION /
/// END_TXN_ON_SUBSCRIPTION. Thread-safe.
public final class ClusterTransactionEnds: RemoteTransactionEnds {
    private let url: String
    private let settings: ReplicationClientSettings
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let client = NIOLockedValueBox<PulsarClient?>(nil)

    public init(url: String, settings: ReplicationClientSettings, eventLoopGroup: any EventLoopGroup, logger: Logger) {
        self.url = url
        self.settings = settings
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
    }

    private func connected() throws -> PulsarClient {
        var options = ClientOptions()
        options.authToken = try settings.token?()
        options.tlsTrustCertsFile = settings.trustCertsFile
        options.tlsAllowInsecureConnection = settings.allowInsecureConnection
        options.connectTimeout = .seconds(5)
        options.operationTimeout = .seconds(10)
        let url = self.url
        let group = eventLoopGroup
        let logger = self.logger
        return try client.withLockedValue { client throws -> PulsarClient in
            if let client, !client.isClosed { return client }
            let made = try PulsarClient(url: url, eventLoopGroup: group, options: options, logger: logger)
            client = made
            return made
        }
    }

    public func endTransaction(_ transaction: TransactionID, onPartition topic: String, committed: Bool) async throws {
        try await connected().endTransaction(
            mostBits: transaction.mostBits, leastBits: transaction.leastBits, onPartition: topic, commit: committed)
    }

    public func endTransaction(_ transaction: TransactionID, onSubscription subscription: TransactionSubscription, committed: Bool) async throws {
        try await connected().endTransaction(
            mostBits: transaction.mostBits, leastBits: transaction.leastBits, onSubscription: subscription.subscription,
            topic: subscription.topic, commit: committed)
    }

    public func shutdown() async {
        let current = client.withLockedValue { client in
            defer { client = nil }
            return client
        }
        await current?.close()
    }
}
