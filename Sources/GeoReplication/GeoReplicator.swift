import AsyncHTTPClient
import BrokerCore
import Foundation
import Logging
import MagnetarClient
import ManagedLedger
import NIOConcurrencyHelpers
import NIOCore
import Schemas

/// How replicators reach remote clusters: the broker's `brokerClientAuthentication*` token and
/// `brokerClientTrustCertsFilePath` / `tlsAllowInsecureConnection` for TLS URLs, unless the remote
/// cluster's `ClusterData` names its own.
public struct ReplicationClientSettings: Sendable {
    /// The token presented to remote brokers (nil: none).
    public var token: (@Sendable () throws -> String)?
    public var trustCertsFile: String?
    public var allowInsecureConnection = false
    /// Messages a replicator has in flight to its remote (Pulsar's `replicationProducerQueueSize`).
    public var producerQueueSize = 1000
    public init() {}
}

/// One client per remote cluster, shared by every replicator of this broker, made again when the
/// cluster's URL or credentials change. Thread-safe.
public final class RemoteClusterClients: Sendable {
    let broker: BrokerService
    let settings: ReplicationClientSettings
    let eventLoopGroup: any EventLoopGroup
    let logger: Logger
    private let clients = NIOLockedValueBox<[String: (key: String, client: PulsarClient)]>([:])

    public init(broker: BrokerService, settings: ReplicationClientSettings, eventLoopGroup: any EventLoopGroup, logger: Logger) {
        self.broker = broker
        self.settings = settings
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
    }

    /// The token for `data`'s cluster: its own `authenticationParameters` (token plugin), else the broker's.
    func token(for data: ClusterData) throws -> String? {
        if let parameters = data.authenticationParameters, !parameters.isEmpty {
            if parameters.hasPrefix("token:") { return String(parameters.dropFirst("token:".count)) }
            if let json = try? JSONDecoder().decode([String: String].self, from: Data(parameters.utf8)), let token = json["token"] {
                return token
            }
            return parameters
        }
        return try settings.token?()
    }

    func client(for cluster: String, _ data: ClusterData) throws -> PulsarClient {
        guard let url = data.replicationURL else {
            throw ReplicationError("cluster \(cluster) has no brokerServiceUrl: set it with PUT /admin/v2/clusters/\(cluster)")
        }
        var options = ClientOptions()
        options.authToken = try token(for: data)
        options.tlsTrustCertsFile = data.brokerClientTrustCertsFilePath ?? settings.trustCertsFile
        options.tlsAllowInsecureConnection = data.tlsAllowInsecureConnection ?? settings.allowInsecureConnection
        options.connectTimeout = .seconds(5)
        options.operationTimeout = .seconds(10)
        let key = "\(url)|\(options.authToken ?? "")|\(options.tlsTrustCertsFile ?? "")|\(options.tlsAllowInsecureConnection)"
        let logger = self.logger
        let group = eventLoopGroup
        return try clients.withLockedValue { clients throws -> PulsarClient in
            if let existing = clients[cluster], existing.key == key, !existing.client.isClosed { return existing.client }
            if let stale = clients[cluster]?.client { Task { await stale.close() } }
            let client = try PulsarClient(url: url, eventLoopGroup: group, options: options, logger: logger)
            clients[cluster] = (key, client)
            return client
        }
    }

    /// Creates the partitioned topic on the remote cluster with `partitions` unless it is partitioned
    /// there (Pulsar's `createTopicToRemoteClusterForReplication`), through its admin API.
    func ensurePartitionedTopic(_ base: TopicName, partitions: Int, cluster: String, data: ClusterData, client: PulsarClient) async throws {
        let remotePartitions = try await client.partitionCount(topic: base.description)
        guard remotePartitions == 0 else { return }
        guard let adminURL = data.adminURL else {
            throw ReplicationError("cluster \(cluster) has no serviceUrl to create \(base) on: set it with PUT /admin/v2/clusters/\(cluster)")
        }
        let path = "/admin/v2/\(base.domain.rawValue)/\(base.tenant)/\(base.namespace)/\(base.localName)/partitions"
        var request = HTTPClientRequest(url: adminURL.trimmingSuffix("/") + path)
        request.method = .PUT
        request.headers.add(name: "Content-Type", value: "application/json")
        if let token = try token(for: data) { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        request.body = .bytes(ByteBuffer(string: String(partitions)))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 64 * 1024)
        // 409: someone created it meanwhile.
        guard (200..<300).contains(response.status.code) || response.status.code == 409 else {
            throw ReplicationError(
                "cluster \(cluster) refused to create the partitioned topic \(base): HTTP \(response.status.code) \(String(buffer: body))")
        }
        logger.info("replicator.remote-partitioned-topic-created", metadata: [
            "topic": "\(base)", "remote.cluster": "\(cluster)", "partitions": "\(partitions)",
        ])
    }

    public func shutdown() async {
        let all = clients.withLockedValue { clients in
            defer { clients.removeAll() }
            return clients.values.map(\.client)
        }
        for client in all { await client.close() }
    }
}

public struct ReplicationError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

extension String {
    func trimmingSuffix(_ suffix: String) -> String {
        hasSuffix(suffix) ? String(dropLast(suffix.count)) : self
    }
}

/// Makes each topic's replicators (one per remote cluster), sharing this broker's remote clients.
public struct GeoReplicatorFactory: ReplicatorFactory {
    let broker: BrokerService
    let clients: RemoteClusterClients
    let logger: Logger

    public init(broker: BrokerService, clients: RemoteClusterClients, logger: Logger) {
        self.broker = broker
        self.clients = clients
        self.logger = logger
    }

    public func makeReplicator(for topic: Topic, remoteCluster: String) -> any TopicReplicator {
        let replicator = GeoReplicator(topic: topic, remoteCluster: remoteCluster, broker: broker, clients: clients, logger: logger)
        replicator.start()
        return replicator
    }

    public func makeSubscriptionsController(for topic: Topic) -> any ReplicatedSubscriptionsController {
        SubscriptionSnapshots(topic: topic, logger: logger)
    }
}

/// Pulsar's `PersistentReplicator`: forwards a topic's entries, in log order, to the same topic on
/// one remote cluster. It reads through the durable subscription `pulsar.repl.<remote>` (created at
/// the topic's current end when replication starts, so a backlog builds there while the remote is
/// away and is bounded by the backlog quota) as an Exclusive consumer of the topic, and sends each
/// entry with a producer on the remote cluster named `pulsar.repl.<local>--><remote>`: metadata kept
/// (so the remote deduplicates by the original producer and sequence id) and stamped
/// `replicated_from`. An entry is acknowledged on the cursor once the remote's receipt is in; a
/// replicator that loses its remote producer stops, and the topic's next policy pass starts a new
/// one from the cursor (what was in flight is sent again). Entries that came from another cluster,
/// or whose `replicate_to` leaves the remote out, are acknowledged without sending.
///
/// Lives on its topic's event loop; the remote producer has its own loop, completions hop back.
final class GeoReplicator: TopicReplicator, ConsumerSink, @unchecked Sendable {
    let topic: Topic
    let remoteCluster: String
    let localCluster: String
    let broker: BrokerService
    let clients: RemoteClusterClients
    let loop: any EventLoop
    let cursorName: String
    let producerName: String
    private var logger: Logger

    private(set) var isStopped = false
    private var subscribed = false
    private var producer: Producer?
    /// The local schema version the producer was registered with, and the remote's number for it.
    private var localSchemaVersion: [UInt8]?
    private var remoteSchemaVersion: [UInt8]?
    private var permitsToGrant: UInt32 = 0
    private var inFlight = 0
    private var messagesOut: Int64 = 0
    private var bytesOut: Int64 = 0
    private var connectedSinceMs: Int64 = 0
    private var rateMeter = RateMeter()

    static let consumerIDs = NIOLockedValueBox<UInt64>(0)
    /// Consumer keys of replicators: a connection id no client connection has.
    static let connectionID = UInt64.max - 1
    let consumerKey: ConsumerKey

    init(topic: Topic, remoteCluster: String, broker: BrokerService, clients: RemoteClusterClients, logger: Logger) {
        self.topic = topic
        self.remoteCluster = remoteCluster
        self.localCluster = topic.clusterName
        self.broker = broker
        self.clients = clients
        self.loop = topic.eventLoop
        self.cursorName = Replication.cursorName(remoteCluster: remoteCluster)
        self.producerName = "\(Replication.cursorPrefix)\(topic.clusterName)-->\(remoteCluster)"
        var logger = logger
        logger[metadataKey: "topic"] = "\(topic.name)"
        logger[metadataKey: "remote.cluster"] = "\(remoteCluster)"
        self.logger = logger
        let id = Self.consumerIDs.withLockedValue { value -> UInt64 in
            value += 1
            return value
        }
        self.consumerKey = ConsumerKey(connectionID: Self.connectionID, consumerID: id)
    }

    var queueSize: Int { clients.settings.producerQueueSize }

    /// Attaches to the cursor now (on the topic's loop: what is published from here on is kept for
    /// the remote), then connects to the remote in the background.
    func start() {
        loop.preconditionInEventLoop()
        var request = SubscribeRequest(
            subscription: cursorName, type: .exclusive, consumerKey: consumerKey, consumerName: producerName, priorityLevel: 0,
            durable: true, start: nil, initialPosition: .latest)
        request.isReplicator = true
        topic.subscribe(request, sink: self).whenComplete { [self] result in
            switch result {
            case .success:
                subscribed = true
                if isStopped {
                    topic.closeConsumer(subscription: cursorName, key: consumerKey)
                    return
                }
                logger.info("replicator.started", metadata: ["cursor": "\(cursorName)"])
                connect(attempt: 0)
            case .failure(let error):
                logger.warning("replicator.subscribe-failed", metadata: ["error": "\(error)"])
                isStopped = true
            }
        }
    }

    /// Creates the remote producer, retrying with backoff (1 s doubling to 30 s) while not stopped.
    private func connect(attempt: Int) {
        guard !isStopped else { return }
        let topic = self.topic
        let remote = remoteCluster
        let broker = self.broker
        let clients = self.clients
        let producerName = self.producerName
        let queueSize = self.queueSize
        loop.makeFutureWithTask { () async throws -> (Producer, [UInt8]?) in
            guard let data = try await broker.clusters.cached(remote) else {
                throw ReplicationError("cluster \(remote) is not registered here: PUT /admin/v2/clusters/\(remote) with its URLs")
            }
            let client = try clients.client(for: remote, data)
            if topic.name.partitionIndex >= 0 {
                let base = Self.partitionedName(topic.name)
                let partitions = try await broker.partitionCount(base)
                if partitions > 0 {
                    try await clients.ensurePartitionedTopic(base, partitions: partitions, cluster: remote, data: data, client: client)
                }
            }
            // The topic's latest schema goes with the producer (the remote registers it, or finds it).
            let latest = try await broker.schemas.version(topic.name.schemaName, nil)
            var options = ProducerOptions()
            options.name = producerName
            options.sendTimeout = .zero
            options.maxPendingMessages = queueSize
            var localVersion: [UInt8]?
            if let latest, !latest.deleted, let schema = Self.clientSchema(latest) {
                options.schema = schema
                localVersion = Self.versionBytes(latest.version)
            }
            let producer = try await client.createProducer(topic: topic.name.description, options: options)
            return (producer, localVersion)
        }.whenComplete { [self] result in
            switch result {
            case .success(let (producer, localVersion)):
                guard !isStopped else {
                    Task { try? await producer.close() }
                    return
                }
                producer.eventLoop.execute {
                    let remoteVersion = producer.schemaVersion
                    self.loop.execute { self.connected(producer, localSchemaVersion: localVersion, remoteSchemaVersion: remoteVersion) }
                }
            case .failure(let error):
                guard !isStopped else { return }
                let delay = min(30, 1 << min(attempt, 5))
                logger.log(level: attempt == 0 ? .warning : .debug, "replicator.connect-failed", metadata: [
                    "error": "\(error)", "retry.in.s": "\(delay)",
                ])
                loop.scheduleTask(in: .seconds(Int64(delay))) { self.connect(attempt: attempt + 1) }
            }
        }
    }

    private func connected(_ producer: Producer, localSchemaVersion: [UInt8]?, remoteSchemaVersion: [UInt8]?) {
        guard !isStopped else {
            Task { try? await producer.close() }
            return
        }
        self.producer = producer
        self.localSchemaVersion = localSchemaVersion
        self.remoteSchemaVersion = remoteSchemaVersion
        connectedSinceMs = Int64(Date().timeIntervalSince1970 * 1000)
        logger.info("replicator.connected", metadata: ["producer.name": "\(producerName)"])
        topic.flow(subscription: cursorName, key: consumerKey, permits: UInt32(queueSize))
    }

    /// Stops for good (the topic makes a new one if it still replicates there).
    func stop() {
        loop.preconditionInEventLoop()
        guard !isStopped else { return }
        isStopped = true
        if subscribed { topic.closeConsumer(subscription: cursorName, key: consumerKey) }
        if let producer {
            self.producer = nil
            Task { try? await producer.close() }
        }
        logger.info("replicator.stopped")
    }

    private func restart(_ reason: String) {
        logger.warning("replicator.restarting", metadata: ["reason": "\(reason)"])
        stop()
    }

    // MARK: ConsumerSink (on the topic's loop)

    func sendMessage(
        consumerID: UInt64, position: Position, partitionIndex: Int32, redeliveryCount: UInt32, ackSet: [Int64]?, entry: Entry
    ) {
        loop.preconditionInEventLoop()
        guard !isStopped, let producer else { return }
        let messages = UInt32(max(entry.attributes.numMessages, 1))
        let forwarded: ForwardedEntry
        do {
            forwarded = try ForwardedEntry.parse(entry.body)
        } catch {
            logger.error("replicator.entry-unreadable", metadata: [
                "ledger.id": "\(position.ledgerID)", "entry.id": "\(position.entryID)", "error": "\(error)",
                "hint": "the entry is not a Pulsar entry: it is skipped, not replicated",
            ])
            done(position, messages: messages)
            return
        }
        if forwarded.metadata.hasMarkerType, forwarded.metadata.replicatedFrom == remoteCluster,
           let controller = topic.replicatedSubscriptionsController as? SubscriptionSnapshots
        {
            // A marker our remote wrote: the snapshot protocol's (its request, its response, its update).
            do {
                if let marker = try Marker.decode(type: forwarded.metadata.markerType, forwarded.payload) {
                    controller.remoteMarker(marker, from: remoteCluster, at: position)
                }
            } catch {
                logger.warning("replicator.marker-malformed", metadata: ["error": "\(error)"])
            }
        }
        guard forwarded.decision(remoteCluster: remoteCluster) == .forward else {
            done(position, messages: messages)
            return
        }
        if forwarded.metadata.hasSchemaVersion, Array(forwarded.metadata.schemaVersion) != localSchemaVersion,
           Self.versionNumber(Array(forwarded.metadata.schemaVersion)) > Self.versionNumber(localSchemaVersion ?? [])
        {
            // A newer schema than the producer's: register it on the remote first (a new producer).
            restart("the topic has a newer schema than the remote producer's")
            return
        }
        let metadata: ByteBuffer
        do {
            metadata = try forwarded.forwardedMetadata(localCluster: localCluster, remoteSchemaVersion: remoteSchemaVersion)
        } catch {
            restart("cannot re-encode the metadata of \(position): \(error)")
            return
        }
        inFlight += 1
        let bytes = entry.body.readableBytes
        producer.sendEntryAsync(serializedMetadata: metadata, body: forwarded.payload, numMessages: forwarded.numMessages) { result in
            self.loop.execute { self.sent(position, messages: messages, bytes: bytes, result: result) }
        }
    }

    private func sent(_ position: Position, messages: UInt32, bytes: Int, result: Result<MessageID, PulsarClientError>) {
        inFlight -= 1
        guard !isStopped else { return }
        switch result {
        case .success:
            messagesOut += Int64(messages)
            bytesOut += Int64(bytes)
            done(position, messages: messages)
        case .failure(let error):
            restart("the remote refused or lost an entry: \(error)")
        }
    }

    /// The entry is on the remote (or needs not go there): acknowledge it, give its permits back.
    private func done(_ position: Position, messages: UInt32) {
        topic.acknowledge(subscription: cursorName, positions: [position])
        permitsToGrant += messages
        if permitsToGrant >= UInt32(max(queueSize / 10, 1)) || inFlight == 0 {
            let permits = permitsToGrant
            permitsToGrant = 0
            topic.flow(subscription: cursorName, key: consumerKey, permits: permits)
        }
    }

    func flush() {}

    func closeConsumerByBroker(consumerID: UInt64) {
        loop.execute { [self] in
            guard !isStopped else { return }
            subscribed = false
            restart("the broker closed the replicator's consumer")
        }
    }

    func activeConsumerChanged(consumerID: UInt64, isActive: Bool) {}

    // MARK: statistics

    func statistics() -> ReplicatorStatistics {
        loop.preconditionInEventLoop()
        var statistics = ReplicatorStatistics()
        rateMeter.sample([messagesOut, bytesOut], nowNanos: NIODeadline.now().uptimeNanoseconds)
        let rates = rateMeter.rates
        if rates.count == 2 { (statistics.messageRateOut, statistics.byteRateOut) = (rates[0], rates[1]) }
        statistics.messagesOut = messagesOut
        statistics.bytesOut = bytesOut
        statistics.connected = producer?.isConnected ?? false
        statistics.outboundConnectedSinceMs = statistics.connected ? connectedSinceMs : 0
        if let cursor = topic.cursorBacklog(cursorName) {
            statistics.backlogEntries = cursor.entries
            if cursor.entries > 0, let published = topic.publishTimeOfEntry(after: cursor.markDelete) {
                let nowMs = Int64(Date().timeIntervalSince1970 * 1000)
                statistics.delaySeconds = max(0, (nowMs - published) / 1000)
            }
        }
        return statistics
    }

    // MARK: helpers

    /// `T` of a partition `T-partition-i`.
    static func partitionedName(_ name: TopicName) -> TopicName {
        var base = name
        if let range = name.localName.range(of: "-partition-", options: .backwards) {
            base.localName = String(name.localName[..<range.lowerBound])
        }
        return base
    }

    /// Schema versions travel as 8 big-endian bytes (what PRODUCER_SUCCESS carries).
    static func versionBytes(_ version: Int64) -> [UInt8] {
        withUnsafeBytes(of: version.bigEndian) { Array($0) }
    }

    static func versionNumber(_ bytes: [UInt8]) -> Int64 {
        guard bytes.count == 8 else { return -1 }
        return bytes.reduce(Int64(0)) { $0 << 8 | Int64($1) }
    }

    /// The client-side schema of a stored version, for the types a producer can declare.
    static func clientSchema(_ record: SchemaVersionRecord) -> SchemaInfo? {
        let kind: SchemaInfo.Kind
        switch record.type {
        case .string: kind = .string
        case .json: kind = .json
        case .protobuf: kind = .protobuf
        case .avro: kind = .avro
        case .keyValue: kind = .keyValue
        case .protobufNative: kind = .protobufNative
        default: return nil
        }
        return SchemaInfo(kind: kind, definition: Array(record.data), properties: record.properties)
    }
}
