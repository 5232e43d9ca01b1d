import BrokerCore
import Foundation
import KafkaProtocol
import Logging
import ManagedLedger
import Metadata
import PulsarProtocol

/// Consumer groups: FindCoordinator points at this broker; JoinGroup, SyncGroup, Heartbeat and
/// LeaveGroup go to the group coordinator; OffsetCommit stores offsets durably and moves the
/// group's Pulsar subscription (named after the group) on each partition to the committed
/// offset, so admin stats and `pulsar_subscription_back_log` show the group's backlog.
extension KafkaApiHandler {
    /// Kafka's `offset.metadata.max.bytes`.
    static let maxOffsetMetadataBytes = 4096

    /// What a group's coordinator is placed by: a name in the Kafka namespace that hashes the
    /// group into one of its bundles, so the bundle's owner coordinates the group and another
    /// broker takes it over as it takes over topics.
    func coordinatorName(_ groupID: String) -> TopicName {
        TopicName(domain: .persistent, tenant: settings.tenant, namespace: settings.namespace, localName: "__kafka-group-coordinator/" + groupID)
    }

    func findCoordinator(_ request: FindCoordinatorRequest) async -> FindCoordinatorResponse {
        let here = FindCoordinatorResponse(nodeID: nodeID, host: settings.advertisedHost, port: Int32(settings.advertisedPort))
        if request.keyType == 1 {
            // A transactional id: transaction coordinator 0, here in standalone, else on the owner of
            // the coordinator-assign topic's partition 0.
            guard broker.configuration.transactionCoordinatorEnabled else {
                return FindCoordinatorResponse(
                    errorCode: .coordinatorNotAvailable,
                    errorMessage: "transactions are not enabled on this broker (transactionCoordinatorEnabled=true)",
                    nodeID: -1, host: "", port: -1)
            }
            do {
                guard let owner = try await broker.placement(of: BrokerService.transactionCoordinatorPartition) else {
                    guard broker.transactionCoordinator.withLockedValue({ $0 }) != nil else {
                        return FindCoordinatorResponse(
                            errorCode: .coordinatorNotAvailable, errorMessage: "the transaction coordinator is starting here",
                            nodeID: -1, host: "", port: -1)
                    }
                    return here
                }
                guard let address = Self.kafkaAddress(of: owner) else {
                    return FindCoordinatorResponse(
                        errorCode: .coordinatorNotAvailable,
                        errorMessage: "broker \(owner.brokerID) runs the transaction coordinator but serves no Kafka", nodeID: -1, host: "", port: -1)
                }
                return FindCoordinatorResponse(nodeID: Self.nodeID(of: owner), host: address.host, port: Int32(address.port))
            } catch {
                return FindCoordinatorResponse(errorCode: .coordinatorNotAvailable, errorMessage: "\(error)", nodeID: -1, host: "", port: -1)
            }
        }
        do {
            let owner = try await broker.placement(of: coordinatorName(request.key))
            logger.debug("kafka.find-coordinator", metadata: ["group": "\(request.key)", "coordinator": "\(owner?.brokerID ?? "here")"])
            guard let owner else { return here }
            guard let address = Self.kafkaAddress(of: owner) else {
                return FindCoordinatorResponse(
                    errorCode: .coordinatorNotAvailable, errorMessage: "broker \(owner.brokerID) coordinates the group but serves no Kafka",
                    nodeID: -1, host: "", port: -1)
            }
            return FindCoordinatorResponse(nodeID: Self.nodeID(of: owner), host: address.host, port: Int32(address.port))
        } catch {
            return FindCoordinatorResponse(errorCode: .coordinatorNotAvailable, errorMessage: "\(error)", nodeID: -1, host: "", port: -1)
        }
    }

    /// nil when this broker coordinates the group (taking it if nobody does), else the error to
    /// answer with; a group that moved away is forgotten here.
    func coordinatorRefusal(_ groupID: String) async -> KafkaErrorCode? {
        guard !groupID.isEmpty else { return .invalidGroupID }
        do {
            if try await broker.servesHere(coordinatorName(groupID)) { return nil }
            await groups.forget(groupID)
            return .notCoordinator
        } catch {
            return .coordinatorNotAvailable
        }
    }

    func joinGroup(_ request: JoinGroupRequest, clientID: String?, clientHost: String) async -> JoinGroupResponse {
        if let refusal = await coordinatorRefusal(request.groupID) { return JoinGroupResponse(errorCode: refusal, memberID: request.memberID) }
        return await groups.join(request, clientID: clientID ?? "", clientHost: clientHost)
    }

    func syncGroup(_ request: SyncGroupRequest) async -> SyncGroupResponse {
        if let refusal = await coordinatorRefusal(request.groupID) { return SyncGroupResponse(errorCode: refusal) }
        return await groups.sync(request)
    }

    func heartbeat(_ request: HeartbeatRequest) async -> KafkaErrorCode {
        if let refusal = await coordinatorRefusal(request.groupID) { return refusal }
        return await groups.heartbeat(request)
    }

    func leaveGroup(_ request: LeaveGroupRequest) async -> [(memberID: String, errorCode: KafkaErrorCode)] {
        if let refusal = await coordinatorRefusal(request.groupID) { return request.members.map { ($0, refusal) } }
        return await groups.leave(request)
    }

    // MARK: offsets

    func offsetCommit(_ request: OffsetCommitRequest) async -> OffsetCommitResponse {
        func all(_ code: KafkaErrorCode) -> OffsetCommitResponse {
            OffsetCommitResponse(topics: request.topics.map { topic in
                KafkaTopicPartitions(topic: topic.topic, partitions: topic.partitions.map { ($0.index, code) })
            })
        }
        if let refusal = await coordinatorRefusal(request.groupID) { return all(refusal) }
        let admitted = await groups.admitCommit(groupID: request.groupID, generationID: request.generationID, memberID: request.memberID)
        guard admitted == .none else { return all(admitted) }

        var results: [KafkaTopicPartitions<KafkaErrorCode>] = []
        var commits: [(topic: String, partition: Int32, offset: KafkaCommittedOffset)] = []
        var cursors: [(name: TopicName, partitions: Int, index: Int32, offset: Int64)] = []
        for topic in request.topics {
            var outcomes: [(index: Int32, value: KafkaErrorCode)] = []
            let resolved = await resolvePartitions(topic.topic)
            for partition in topic.partitions {
                switch resolved {
                case .failure(let failure):
                    outcomes.append((partition.index, failure.code))
                case .success(let (name, count)):
                    if partition.index < 0 || partition.index >= max(count, 1) {
                        outcomes.append((partition.index, .unknownTopicOrPartition))
                    } else if (partition.value.metadata?.utf8.count ?? 0) > Self.maxOffsetMetadataBytes {
                        outcomes.append((partition.index, .offsetMetadataTooLarge))
                    } else {
                        commits.append((name.description, partition.index, partition.value))
                        cursors.append((name, count, partition.index, partition.value.offset))
                        outcomes.append((partition.index, .none))
                    }
                }
            }
            results.append(KafkaTopicPartitions(topic: topic.topic, partitions: outcomes))
        }
        guard !commits.isEmpty else { return OffsetCommitResponse(topics: results) }
        do {
            try await groups.commit(request.groupID, commits)
        } catch {
            logger.warning("kafka.offset-commit.failed", metadata: ["group": "\(request.groupID)", "error": "\(error)"])
            return OffsetCommitResponse(topics: results.map { topic in
                KafkaTopicPartitions(topic: topic.topic, partitions: topic.partitions.map { ($0.index, $0.value == .none ? .coordinatorNotAvailable : $0.value) })
            })
        }
        for cursor in cursors {
            await moveSubscription(request.groupID, of: cursor.name, partitions: cursor.partitions, index: cursor.index, to: cursor.offset)
        }
        return OffsetCommitResponse(topics: results)
    }

    /// A Kafka topic's Pulsar name and partition count (0: not partitioned, one Kafka partition).
    func resolvePartitions(_ kafkaName: String) async -> Result<(TopicName, Int), PartitionFailure> {
        do {
            let name = try pulsarName(kafkaName)
            guard let count = try await broker.existingPartitionCount(name) else {
                return .failure(PartitionFailure(code: .unknownTopicOrPartition, message: "topic '\(kafkaName)' does not exist"))
            }
            return .success((name, count))
        } catch {
            return .failure(Self.failure(error))
        }
    }

    /// In a cluster: moves the subscriptions of every group on the partitions served here to the
    /// groups' stored offsets, where they changed since the last pass (`applied`). One metadata
    /// read per group whose offsets changed; nothing is loaded for it.
    func syncGroupSubscriptions(_ applied: inout KafkaGroupSubscriptionSync) async {
        guard let keys = try? await broker.metadata.list(prefix: MetadataKeys.kafkaGroupOffsetsPrefix) else { return }
        for key in keys {
            let path = key.hasPrefix("/") ? key : MetadataKeys.kafkaGroupOffsetsPrefix + key
            guard let group = String(path.dropFirst(MetadataKeys.kafkaGroupOffsetsPrefix.count)).removingPercentEncoding,
                  let stored = try? await broker.metadata.get(path), applied.versions[path] != stored.version,
                  let offsets = try? JSONDecoder().decode(KafkaGroupOffsets.self, from: Data(stored.value))
            else { continue }
            applied.versions[path] = stored.version
            for (topic, partitions) in offsets.topics {
                guard let name = try? TopicName(parsing: topic) else { continue }
                for (key, committed) in partitions {
                    guard let index = Int32(key) else { continue }
                    var partitionName = name
                    partitionName.localName += "-partition-\(index)"
                    let served = broker.loadedTopic(partitionName) != nil || (index == 0 && broker.loadedTopic(name) != nil)
                    let slot = "\(group)\u{0}\(topic)\u{0}\(index)"
                    guard served, applied.offsets[slot] != committed.offset else { continue }
                    applied.offsets[slot] = committed.offset
                    let count = broker.loadedTopic(partitionName) != nil ? Int(index) + 1 : 0
                    await moveSubscription(group, of: name, partitions: count, index: index, to: committed.offset)
                }
            }
        }
    }

    /// Moves the group's subscription on one partition so that the entry holding `offset` is the
    /// first unacknowledged one. Best effort: the stored offset is what consumers resume from.
    /// In a cluster, only for partitions this broker serves.
    func moveSubscription(_ group: String, of name: TopicName, partitions: Int, index: Int32, to offset: Int64) async {
        var partitionName = name
        if partitions > 0 { partitionName.localName += "-partition-\(index)" }
        do {
            // In a cluster only the partitions served here (another broker's would move here).
            guard let topic = try await broker.cluster == nil ? broker.topic(partitionName).get() : broker.loadedTopic(partitionName)
            else { return }
            let target = await topic.position(ofOffset: offset)
            try await topic.eventLoop.flatSubmit { topic.createSubscriptionIfMissing(group) }.get()
            try await topic.eventLoop.submit { () throws in
                try topic.seek(subscription: group, to: target.map { .at($0.position) } ?? .latest)
            }.get()
        } catch {
            logger.debug("kafka.offset-commit.subscription-not-moved", metadata: [
                "group": "\(group)", "topic": "\(partitionName)", "error": "\(error)",
            ])
        }
    }

    func offsetFetch(_ request: OffsetFetchRequest) async -> OffsetFetchResponse {
        if let refusal = await coordinatorRefusal(request.groupID) { return OffsetFetchResponse(topics: [], errorCode: refusal) }
        let stored: KafkaGroupOffsets
        do {
            stored = try await groups.committedOffsets(request.groupID)
        } catch {
            logger.warning("kafka.offset-fetch.failed", metadata: ["group": "\(request.groupID)", "error": "\(error)"])
            return OffsetFetchResponse(topics: [], errorCode: .coordinatorNotAvailable)
        }
        // read_committed consumers do not start from an offset an open transaction is about to replace.
        var pending = Set<TransactionSubscriptionPartition>()
        if request.requireStable, let coordinator = broker.transactionCoordinator.withLockedValue({ $0 }) {
            // (In a cluster only when the coordinator runs on the group's broker.)
            pending = await coordinator.pendingOffsetCommits(group: request.groupID)
        }
        func value(_ offset: KafkaCommittedOffset?) -> OffsetFetchResponse.Partition {
            OffsetFetchResponse.Partition(offset: offset?.offset ?? -1, metadata: offset?.metadata ?? "")
        }
        func value(_ offset: KafkaCommittedOffset?, topic: String, partition: Int32) -> OffsetFetchResponse.Partition {
            guard !pending.contains(TransactionSubscriptionPartition(topic: topic, partition: partition)) else {
                return OffsetFetchResponse.Partition(offset: -1, metadata: "", errorCode: .unstableOffsetCommit)
            }
            return value(offset)
        }
        guard let topics = request.topics else {
            // Every partition the group has committed.
            return OffsetFetchResponse(topics: stored.topics.keys.sorted().compactMap { full in
                guard let name = try? TopicName(parsing: full), let partitions = stored.topics[full] else { return nil }
                return KafkaTopicPartitions(topic: kafkaName(name), partitions: partitions.compactMap { key, offset in
                    Int32(key).map { ($0, value(offset)) }
                }.sorted { $0.index < $1.index })
            })
        }
        return OffsetFetchResponse(topics: topics.map { topic in
            guard let name = try? pulsarName(topic.topic) else {
                return KafkaTopicPartitions(topic: topic.topic, partitions: topic.partitions.map {
                    ($0.index, OffsetFetchResponse.Partition(offset: -1, metadata: "", errorCode: .invalidTopicException))
                })
            }
            return KafkaTopicPartitions(topic: topic.topic, partitions: topic.partitions.map {
                ($0.index, value(stored.offset(topic: name.description, partition: $0.index), topic: name.description, partition: $0.index))
            })
        })
    }

    // MARK: admin

    func describeGroups(_ request: DescribeGroupsRequest) async -> DescribeGroupsResponse {
        var described: [DescribeGroupsResponse.Group] = []
        for id in request.groups {
            if let refusal = await coordinatorRefusal(id) {
                described.append(DescribeGroupsResponse.Group(errorCode: refusal, groupID: id, state: "", protocolType: "", protocolData: "", members: []))
            } else {
                described.append(await groups.describe(id))
            }
        }
        return DescribeGroupsResponse(groups: described)
    }

    func listGroups(_ request: ListGroupsRequest) async -> ListGroupsResponse {
        let listed = await groups.list()
        let states = Set(request.statesFilter.map { $0.lowercased() })
        return ListGroupsResponse(groups: states.isEmpty ? listed : listed.filter { states.contains($0.state.lowercased()) })
    }

    /// Deletes a deleted group's Pulsar subscriptions (the ones its commits moved) on the partitions
    /// served here. Best effort: a subscription with Pulsar consumers connected stays.
    private func deleteSubscriptions(of group: String, _ committed: KafkaGroupOffsets) async {
        for (topic, partitions) in committed.topics {
            guard let name = try? TopicName(parsing: topic) else { continue }
            let count = (try? await broker.existingPartitionCount(name)) ?? nil
            for key in partitions.keys {
                guard let index = Int32(key) else { continue }
                var partitionName = name
                if let count, count > 0 { partitionName.localName += "-partition-\(index)" }
                guard broker.cluster == nil || broker.loadedTopic(partitionName) != nil else { continue }
                do {
                    try await broker.deleteSubscription(partitionName, subscription: group, force: false)
                } catch {
                    logger.debug("kafka.delete-group.subscription-kept", metadata: [
                        "group": "\(group)", "topic": "\(partitionName)", "error": "\(error)",
                    ])
                }
            }
        }
    }

    func deleteGroups(_ request: DeleteGroupsRequest) async -> DeleteGroupsResponse {
        var results: [KafkaNamedResult] = []
        for id in request.groups {
            let code: KafkaErrorCode
            do {
                if let refusal = await coordinatorRefusal(id) {
                    code = refusal
                } else {
                    let committed = (try? await groups.committedOffsets(id)) ?? KafkaGroupOffsets()
                    code = try await groups.delete(id)
                    if code == .none { await deleteSubscriptions(of: id, committed) }
                }
            } catch {
                code = .coordinatorNotAvailable
            }
            results.append(KafkaNamedResult(name: id, errorCode: code))
        }
        return DeleteGroupsResponse(results: results)
    }
}

/// What `syncGroupSubscriptions` applied: each group document's version, and each group
/// partition's offset. A value owned by the sync loop.
struct KafkaGroupSubscriptionSync {
    /// How often a broker of a cluster looks at the groups' stored offsets.
    static let intervalMs: Int64 = 5_000
    var versions: [String: Int64] = [:]
    var offsets: [String: Int64] = [:]
}
