import BrokerCore
import Foundation
import KafkaProtocol
import Logging
import ManagedLedger
import NIOConcurrencyHelpers
import NIOCore

/// A Kafka topic name and partition index.
struct KafkaPartitionKey: Hashable, Sendable {
    var topic: String
    var index: Int32
}

/// Answers Kafka requests over the broker's protocol-neutral core: a Kafka topic `t` is
/// `persistent://{kafkaTenant}/{kafkaNamespace}/t` (`tenant/ns/t` reaches another namespace);
/// Kafka partition i is Pulsar's `-partition-i`, and a non-partitioned topic is a one-partition
/// Kafka topic. Stateless; one per listener, shared by its connections.
struct KafkaApiHandler: Sendable {
    let settings: KafkaSettings
    let broker: BrokerService
    let logger: Logger
    /// The idempotent producers' sequence state, per partition.
    let idempotence = KafkaIdempotence()
    /// The consumer groups this broker coordinates.
    let groups: KafkaGroupCoordinator
    /// The transactional producers (over the broker's transaction coordinator).
    let transactions: KafkaTransactions
    /// Kafka partition → Pulsar names (`loadedPartitionTopic`), at most `maxCachedNames`.
    let nameCache = NIOLockedValueBox<[KafkaPartitionKey: (topic: TopicName, partition: TopicName)]>([:])
    static let maxCachedNames = 100_000

    init(settings: KafkaSettings, broker: BrokerService, logger: Logger) {
        self.settings = settings
        self.broker = broker
        self.logger = logger
        groups = KafkaGroupCoordinator(config: settings.groups, metadata: broker.metadata, logger: logger)
        transactions = KafkaTransactions(broker: broker, logger: logger)
    }

    /// This broker's Kafka node id: 0 in standalone; in a cluster, the broker's (stable) id hashed.
    var nodeID: Int32 { broker.cluster.map { Self.nodeID(of: $0.identity) } ?? 0 }

    /// A cluster broker's Kafka node id: FNV-1a of its broker id (`host:httpPort`), 31 bits, so
    /// it is the same after a restart and the same on every broker.
    static func nodeID(of identity: BrokerIdentity) -> Int32 {
        var hash: UInt32 = 2_166_136_261
        for byte in identity.brokerID.utf8 { hash = (hash ^ UInt32(byte)) &* 16_777_619 }
        return Int32(bitPattern: hash & 0x7FFF_FFFF)
    }

    /// A cluster broker's Kafka listener, from its registration; nil: it serves no Kafka.
    static func kafkaAddress(of identity: BrokerIdentity) -> (host: String, port: Int)? {
        guard let data = identity.protocols?["kafka"] else { return nil }
        return try? KafkaSettings.plaintext(data, key: "kafka")
    }

    /// The response to one request frame, or nil when none is due. Throws for a request that
    /// cannot be answered in its own format (the connection closes). `admitted` is called once the
    /// request's effects are ordered (a Produce's entries handed to their topics, a Fetch at once):
    /// the connection starts the next request then, so a connection's produces are appended in
    /// the order they were sent while their durability waits overlap. If it is not called, the
    /// request counts as admitted when it is answered.
    func answer(
        _ frame: ByteBuffer, allocator: ByteBufferAllocator, clientHost: String = "", admitted: @escaping @Sendable () -> Void = {}
    ) async throws -> ByteBuffer? {
        var reader = KafkaReader(frame)
        var header = try KafkaRequestHeader.readPrefix(&reader)
        guard let support = KafkaApis.support(header.apiKey) else {
            throw KafkaProtocolError("API key \(header.apiKey) is not served here (ApiVersions lists those that are)")
        }
        guard support.supports(header.apiVersion) else {
            if support.key == .apiVersions {
                // KIP-511: v0 with UNSUPPORTED_VERSION and the ranges; the client retries.
                return KafkaResponseFrame.make(correlationID: header.correlationID, flexibleHeader: false, allocator: allocator) {
                    ApiVersionsResponse(errorCode: .unsupportedVersion, apis: KafkaApis.supported).write(into: &$0, version: 0)
                }
            }
            throw KafkaProtocolError(
                "\(support.key) v\(header.apiVersion) is not served (v\(support.minVersion)-v\(support.maxVersion) are)")
        }
        let version = header.apiVersion
        let flexible = support.isFlexible(version)
        logger.trace("kafka.request", metadata: ["api": "\(support.key)", "version": "\(version)", "correlation-id": "\(header.correlationID)"])
        try header.readRest(&reader, flexible: flexible)
        func respond(_ write: (inout ByteBuffer) -> Void) -> ByteBuffer {
            KafkaResponseFrame.make(correlationID: header.correlationID, flexibleHeader: flexible, allocator: allocator, body: write)
        }
        switch support.key {
        case .apiVersions:
            // The response header stays v0 in every version.
            return KafkaResponseFrame.make(correlationID: header.correlationID, flexibleHeader: false, allocator: allocator) {
                ApiVersionsResponse(errorCode: .none, apis: KafkaApis.supported).write(into: &$0, version: version)
            }
        case .metadata:
            let response = await metadata(try MetadataRequest.read(&reader, version: version))
            return respond { response.write(into: &$0, version: version) }
        case .produce:
            let request = try ProduceRequest.read(&reader, version: version)
            let response = await produce(request, clientID: header.clientID, admitted: admitted)
            guard request.acks != 0 else { return nil }  // acks=0: no response at all
            return respond { response.write(into: &$0, version: version) }
        case .fetch:
            let request = try FetchRequest.read(&reader, version: version)
            admitted()
            let response = await fetch(request, allocator: allocator)
            return respond { response.write(into: &$0, version: version) }
        case .listOffsets:
            let response = await listOffsets(try ListOffsetsRequest.read(&reader, version: version))
            return respond { response.write(into: &$0, version: version) }
        case .initProducerId:
            let response = await initProducerID(try InitProducerIdRequest.read(&reader, version: version))
            return respond { response.write(into: &$0, version: version) }
        case .addPartitionsToTxn:
            let response = await addPartitionsToTxn(try AddPartitionsToTxnRequest.read(&reader, version: version))
            return respond { response.write(into: &$0, version: version) }
        case .addOffsetsToTxn:
            let code = await addOffsetsToTxn(try AddOffsetsToTxnRequest.read(&reader, version: version))
            return respond {
                KafkaErrorOnlyResponse(errorCode: code, throttleFromVersion: 0, flexibleFromVersion: 3).write(into: &$0, version: version)
            }
        case .endTxn:
            let code = await endTxn(try EndTxnRequest.read(&reader, version: version))
            return respond {
                KafkaErrorOnlyResponse(errorCode: code, throttleFromVersion: 0, flexibleFromVersion: 3).write(into: &$0, version: version)
            }
        case .txnOffsetCommit:
            let response = await txnOffsetCommit(try TxnOffsetCommitRequest.read(&reader, version: version))
            return respond { response.write(into: &$0, version: version) }
        case .findCoordinator:
            let response = await findCoordinator(try FindCoordinatorRequest.read(&reader, version: version))
            return respond { response.write(into: &$0, version: version) }
        case .joinGroup:
            // Held until the rebalance completes; like Kafka, the connection waits with it.
            let request = try JoinGroupRequest.read(&reader, version: version)
            let response = await joinGroup(request, clientID: header.clientID, clientHost: clientHost)
            return respond { response.write(into: &$0, version: version) }
        case .syncGroup:
            let response = await syncGroup(try SyncGroupRequest.read(&reader, version: version))
            return respond { response.write(into: &$0, version: version) }
        case .heartbeat:
            let code = await heartbeat(try HeartbeatRequest.read(&reader, version: version))
            return respond { KafkaErrorOnlyResponse(errorCode: code, flexibleFromVersion: 4).write(into: &$0, version: version) }
        case .leaveGroup:
            let request = try LeaveGroupRequest.read(&reader, version: version)
            let results = await leaveGroup(request)
            // Before v3 one member, its error at the top; from v3 each member's own.
            let top = version < 3 ? results.first?.errorCode ?? .none : .none
            return respond { LeaveGroupResponse(errorCode: top, members: results).write(into: &$0, version: version) }
        case .offsetCommit:
            let response = await offsetCommit(try OffsetCommitRequest.read(&reader, version: version))
            return respond { response.write(into: &$0, version: version) }
        case .offsetFetch:
            let response = await offsetFetch(try OffsetFetchRequest.read(&reader, version: version))
            return respond { response.write(into: &$0, version: version) }
        case .describeGroups:
            let response = await describeGroups(try DescribeGroupsRequest.read(&reader, version: version))
            return respond { response.write(into: &$0, version: version) }
        case .listGroups:
            let response = await listGroups(try ListGroupsRequest.read(&reader, version: version))
            return respond { response.write(into: &$0, version: version) }
        case .deleteGroups:
            let response = await deleteGroups(try DeleteGroupsRequest.read(&reader, version: version))
            return respond { response.write(into: &$0, version: version) }
        case .createTopics:
            let response = await createTopics(try CreateTopicsRequest.read(&reader, version: version))
            return respond { response.write(into: &$0, version: version) }
        case .deleteTopics:
            let response = await deleteTopics(try DeleteTopicsRequest.read(&reader, version: version))
            return respond { response.write(into: &$0, version: version) }
        case .createPartitions:
            let response = await createPartitions(try CreatePartitionsRequest.read(&reader, version: version))
            return respond { response.write(into: &$0, version: version) }
        case .describeConfigs:
            let response = await describeConfigs(try DescribeConfigsRequest.read(&reader, version: version))
            return respond { response.write(into: &$0, version: version) }
        }
    }

    // MARK: names

    var namespace: String { "\(settings.tenant)/\(settings.namespace)" }

    /// The Pulsar topic of a Kafka topic name.
    func pulsarName(_ kafkaName: String) throws -> TopicName {
        let full = kafkaName.contains("/") ? "persistent://\(kafkaName)" : "persistent://\(namespace)/\(kafkaName)"
        let name = try TopicName(parsing: full)
        guard name.partitionIndex < 0 else {
            throw BrokerError(.invalidTopicName, "'\(kafkaName)' names a partition: use the topic's name")
        }
        return name
    }

    /// The Kafka name of a Pulsar topic of the Kafka namespace (`tenant/ns/t` for others).
    func kafkaName(_ name: TopicName) -> String {
        name.namespaceName == namespace ? name.localName : "\(name.namespaceName)/\(name.localName)"
    }

    // MARK: Metadata

    func metadata(_ request: MetadataRequest) async -> MetadataResponse {
        var topics: [MetadataResponse.Topic] = []
        if let names = request.topics {
            for name in names { topics.append(await describe(name, create: request.allowAutoTopicCreation)) }
        } else {
            topics = await allTopics()
        }
        return MetadataResponse(brokers: await brokers(), clusterID: broker.configuration.clusterName, controllerID: nodeID, topics: topics)
    }

    /// This broker, and in a cluster every live broker serving Kafka.
    func brokers() async -> [MetadataResponse.Broker] {
        let this = MetadataResponse.Broker(nodeID: nodeID, host: settings.advertisedHost, port: Int32(settings.advertisedPort))
        guard let cluster = broker.cluster, let live = try? await cluster.liveBrokers() else { return [this] }
        return [this] + live.compactMap { identity in
            guard identity.brokerID != cluster.identity.brokerID, let address = Self.kafkaAddress(of: identity) else { return nil }
            return MetadataResponse.Broker(nodeID: Self.nodeID(of: identity), host: address.host, port: Int32(address.port))
        }
    }

    /// Each partition with its leader: the broker that owns (or is to own) its bundle.
    private func partitions(of name: TopicName, count: Int) async -> [MetadataResponse.Partition] {
        var partitions: [MetadataResponse.Partition] = []
        for index in 0..<max(count, 1) {
            var partitionName = name
            if count > 0 { partitionName.localName += "-partition-\(index)" }
            do {
                let owner = try await broker.placement(of: partitionName)
                guard let owner else {
                    partitions.append(MetadataResponse.Partition(index: Int32(index), leaderID: nodeID))
                    continue
                }
                guard Self.kafkaAddress(of: owner) != nil else {
                    partitions.append(MetadataResponse.Partition(index: Int32(index), leaderID: -1, errorCode: .leaderNotAvailable))
                    continue
                }
                partitions.append(MetadataResponse.Partition(index: Int32(index), leaderID: Self.nodeID(of: owner)))
            } catch {
                partitions.append(MetadataResponse.Partition(index: Int32(index), leaderID: -1, errorCode: .leaderNotAvailable))
            }
        }
        return partitions
    }

    /// One requested topic: created when missing if the request and the namespace's
    /// auto-topic-creation policy allow it (`defaultNumPartitions` when it says partitioned).
    func describe(_ kafkaName: String, create: Bool) async -> MetadataResponse.Topic {
        let name: TopicName
        do {
            name = try pulsarName(kafkaName)
        } catch {
            return MetadataResponse.Topic(errorCode: .invalidTopicException, name: kafkaName, partitions: [])
        }
        do {
            var count = try await broker.existingPartitionCount(name)
            if count == nil, create {
                count = try await broker.partitionMetadata(name)
                if count == 0 { try await broker.createTopicRecord(name) }
            }
            guard let count else {
                return MetadataResponse.Topic(errorCode: .unknownTopicOrPartition, name: kafkaName, partitions: [])
            }
            return MetadataResponse.Topic(name: kafkaName, partitions: await partitions(of: name, count: count))
        } catch let error as BrokerError {
            let code: KafkaErrorCode = switch error.code {
            case .topicNotFound, .notFound, .notAllowed: .unknownTopicOrPartition
            case .invalidTopicName, .badRequest: .invalidTopicException
            case .authorizationError: .topicAuthorizationFailed
            default: .unknownServerError
            }
            return MetadataResponse.Topic(errorCode: code, name: kafkaName, partitions: [])
        } catch {
            return MetadataResponse.Topic(errorCode: .unknownServerError, name: kafkaName, partitions: [])
        }
    }

    /// Every persistent topic of the Kafka namespace: a partitioned topic once, with its partitions.
    func allTopics() async -> [MetadataResponse.Topic] {
        guard let listed = try? await broker.listTopics(namespace: namespace, domain: .persistent),
              let partitioned = try? await broker.listPartitionedTopics(namespace: namespace, domain: .persistent)
        else { return [] }
        var topics: [MetadataResponse.Topic] = []
        var partitionedNames = Set<String>()
        for full in partitioned {
            guard let name = try? TopicName(parsing: full), let count = try? await broker.partitionCount(name) else { continue }
            partitionedNames.insert(full)
            topics.append(MetadataResponse.Topic(name: kafkaName(name), partitions: await partitions(of: name, count: count)))
        }
        for full in listed {
            guard let name = try? TopicName(parsing: full) else { continue }
            if name.partitionIndex >= 0, partitionedNames.contains(full.replacingOccurrences(of: "-partition-\(name.partitionIndex)", with: "")) {
                continue
            }
            topics.append(MetadataResponse.Topic(name: kafkaName(name), partitions: await partitions(of: name, count: 0)))
        }
        return topics.sorted { $0.name < $1.name }
    }
}
