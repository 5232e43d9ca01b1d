import BrokerCore
import KafkaProtocol
import Logging
import ManagedLedger
import PulsarProtocol

/// Consumer groups: FindCoordinator points at this broker; JoinGroup, SyncGroup, Heartbeat and
/// LeaveGroup go to the group coordinator; OffsetCommit stores offsets durably and moves the
/// group's Pulsar subscription (named after the group) on each partition to the committed
/// offset, so admin stats and `pulsar_subscription_back_log` show the group's backlog.
extension KafkaApiHandler {
    /// Kafka's `offset.metadata.max.bytes`.
    static let maxOffsetMetadataBytes = 4096

    func findCoordinator(_ request: FindCoordinatorRequest) -> FindCoordinatorResponse {
        FindCoordinatorResponse(nodeID: Self.nodeID, host: settings.advertisedHost, port: Int32(settings.advertisedPort))
    }

    func joinGroup(_ request: JoinGroupRequest, clientID: String?, clientHost: String) async -> JoinGroupResponse {
        guard !request.groupID.isEmpty else { return JoinGroupResponse(errorCode: .invalidGroupID, memberID: request.memberID) }
        return await groups.join(request, clientID: clientID ?? "", clientHost: clientHost)
    }

    func syncGroup(_ request: SyncGroupRequest) async -> SyncGroupResponse {
        guard !request.groupID.isEmpty else { return SyncGroupResponse(errorCode: .invalidGroupID) }
        return await groups.sync(request)
    }

    // MARK: offsets

    func offsetCommit(_ request: OffsetCommitRequest) async -> OffsetCommitResponse {
        func all(_ code: KafkaErrorCode) -> OffsetCommitResponse {
            OffsetCommitResponse(topics: request.topics.map { topic in
                KafkaTopicPartitions(topic: topic.topic, partitions: topic.partitions.map { ($0.index, code) })
            })
        }
        guard !request.groupID.isEmpty else { return all(.invalidGroupID) }
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

    /// Moves the group's subscription on one partition so that the entry holding `offset` is the
    /// first unacknowledged one. Best effort: the stored offset is what consumers resume from.
    private func moveSubscription(_ group: String, of name: TopicName, partitions: Int, index: Int32, to offset: Int64) async {
        var partitionName = name
        if partitions > 0 { partitionName.localName += "-partition-\(index)" }
        do {
            let topic = try await broker.topic(partitionName).get()
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
        let stored: KafkaGroupOffsets
        do {
            stored = try await groups.committedOffsets(request.groupID)
        } catch {
            logger.warning("kafka.offset-fetch.failed", metadata: ["group": "\(request.groupID)", "error": "\(error)"])
            return OffsetFetchResponse(topics: [], errorCode: .coordinatorNotAvailable)
        }
        func value(_ offset: KafkaCommittedOffset?) -> OffsetFetchResponse.Partition {
            OffsetFetchResponse.Partition(offset: offset?.offset ?? -1, metadata: offset?.metadata ?? "")
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
                ($0.index, value(stored.offset(topic: name.description, partition: $0.index)))
            })
        })
    }

    // MARK: admin

    func describeGroups(_ request: DescribeGroupsRequest) async -> DescribeGroupsResponse {
        var described: [DescribeGroupsResponse.Group] = []
        for id in request.groups { described.append(await groups.describe(id)) }
        return DescribeGroupsResponse(groups: described)
    }

    func listGroups(_ request: ListGroupsRequest) async -> ListGroupsResponse {
        let listed = await groups.list()
        let states = Set(request.statesFilter.map { $0.lowercased() })
        return ListGroupsResponse(groups: states.isEmpty ? listed : listed.filter { states.contains($0.state.lowercased()) })
    }

    func deleteGroups(_ request: DeleteGroupsRequest) async -> DeleteGroupsResponse {
        var results: [KafkaNamedResult] = []
        for id in request.groups {
            let code: KafkaErrorCode
            do {
                code = try await groups.delete(id)
            } catch {
                code = .coordinatorNotAvailable
            }
            results.append(KafkaNamedResult(name: id, errorCode: code))
        }
        return DeleteGroupsResponse(results: results)
    }
}
