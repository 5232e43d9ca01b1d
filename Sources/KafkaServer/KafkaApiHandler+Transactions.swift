import BrokerCore
import KafkaProtocol
import ManagedLedger

/// Kafka's transactional API: InitProducerId with a `transactional.id`, AddPartitionsToTxn,
/// AddOffsetsToTxn, TxnOffsetCommit and EndTxn, over the broker's transaction coordinator
/// (`KafkaTransactions`); the committed offsets are applied to the groups when a transaction commits.
extension KafkaApiHandler: TransactionOffsetCommitter {
    func addPartitionsToTxn(_ request: AddPartitionsToTxnRequest) async -> KafkaPartitionErrorsResponse {
        var resolved: [(topic: String, partition: Int32, name: String?)] = []
        for topic in request.topics {
            let partitions = await resolvePartitions(topic.name)
            for partition in topic.partitions {
                var name: String?
                if case .success(let (pulsar, count)) = partitions, partition >= 0, partition < max(count, 1) {
                    var partitionName = pulsar
                    if count > 0 { partitionName.localName += "-partition-\(partition)" }
                    name = partitionName.description
                }
                resolved.append((topic.name, partition, name))
            }
        }
        let codes = await transactions.addPartitions(request, topics: resolved)
        var topics: [KafkaPartitionErrorsResponse.Topic] = []
        for (item, code) in zip(resolved, codes) {
            if topics.last?.name != item.topic { topics.append(KafkaPartitionErrorsResponse.Topic(name: item.topic, partitions: [])) }
            topics[topics.count - 1].partitions.append(KafkaPartitionErrorsResponse.Partition(index: item.partition, errorCode: code))
        }
        return KafkaPartitionErrorsResponse(topics: topics)
    }

    func addOffsetsToTxn(_ request: AddOffsetsToTxnRequest) async -> KafkaErrorCode {
        guard !request.groupID.isEmpty else { return .invalidGroupID }
        return await transactions.addOffsets(request)
    }

    func txnOffsetCommit(_ request: TxnOffsetCommitRequest) async -> KafkaPartitionErrorsResponse {
        func all(_ code: KafkaErrorCode) -> KafkaPartitionErrorsResponse {
            KafkaPartitionErrorsResponse(topics: request.topics.map { topic in
                KafkaPartitionErrorsResponse.Topic(
                    name: topic.name, partitions: topic.partitions.map { .init(index: $0.index, errorCode: code) })
            })
        }
        if let refusal = await coordinatorRefusal(request.groupID) { return all(refusal) }
        if request.generationID >= 0 {
            let admitted = await groups.admitCommit(groupID: request.groupID, generationID: request.generationID, memberID: request.memberID)
            guard admitted == .none else { return all(admitted) }
        }
        var commits: [TransactionOffsetCommit] = []
        var response = KafkaPartitionErrorsResponse(topics: [])
        for topic in request.topics {
            let resolved = await resolvePartitions(topic.name)
            var partitions: [KafkaPartitionErrorsResponse.Partition] = []
            for partition in topic.partitions {
                switch resolved {
                case .failure(let failure):
                    partitions.append(.init(index: partition.index, errorCode: failure.code))
                case .success(let (name, count)):
                    if partition.index < 0 || partition.index >= max(count, 1) {
                        partitions.append(.init(index: partition.index, errorCode: .unknownTopicOrPartition))
                    } else if (partition.metadata?.utf8.count ?? 0) > Self.maxOffsetMetadataBytes {
                        partitions.append(.init(index: partition.index, errorCode: .offsetMetadataTooLarge))
                    } else {
                        commits.append(TransactionOffsetCommit(
                            group: request.groupID, topic: name.description, partition: partition.index, offset: partition.offset,
                            metadata: partition.metadata))
                        partitions.append(.init(index: partition.index, errorCode: .none))
                    }
                }
            }
            response.topics.append(.init(name: topic.name, partitions: partitions))
        }
        guard !commits.isEmpty else { return response }
        let code = await transactions.commitOffsets(request, commits)
        guard code != .none else { return response }
        return all(code)
    }

    func endTxn(_ request: EndTxnRequest) async -> KafkaErrorCode {
        await transactions.end(request)
    }

    /// A committed transaction's offsets, group by group, as an OffsetCommit stores them (and the
    /// groups' subscriptions moved to them).
    func commitOffsets(_ commits: [TransactionOffsetCommit]) async throws {
        var groupsInOrder: [String] = []
        var byGroup: [String: [(topic: String, partition: Int32, offset: KafkaCommittedOffset)]] = [:]
        for commit in commits {
            if byGroup[commit.group] == nil { groupsInOrder.append(commit.group) }
            byGroup[commit.group, default: []].append(
                (commit.topic, commit.partition, KafkaCommittedOffset(offset: commit.offset, metadata: commit.metadata)))
        }
        for group in groupsInOrder {
            try await groups.commit(group, byGroup[group] ?? [])
        }
        for commit in commits {
            guard let name = try? TopicName(parsing: commit.topic), let count = try? await broker.existingPartitionCount(name) else { continue }
            await moveSubscription(commit.group, of: name, partitions: count, index: commit.partition, to: commit.offset)
        }
    }
}
