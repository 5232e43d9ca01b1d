import BrokerCore
import KafkaProtocol
import Logging
import ManagedLedger
import PulsarProtocol

/// CreateTopics, DeleteTopics, CreatePartitions and DescribeConfigs over the admin operations
/// Pulsar's REST API uses: a Kafka topic is created as a partitioned topic (one partition when one
/// is asked for, as KoP does), deleted with its partitions, and grown with more partitions.
extension KafkaApiHandler {
    func createTopics(_ request: CreateTopicsRequest) async -> CreateTopicsResponse {
        var results: [CreateTopicsResponse.Topic] = []
        for topic in request.topics {
            results.append(await createTopic(topic, validateOnly: request.validateOnly))
        }
        return CreateTopicsResponse(topics: results)
    }

    private func createTopic(_ topic: CreateTopicsRequest.Topic, validateOnly: Bool) async -> CreateTopicsResponse.Topic {
        func refuse(_ code: KafkaErrorCode, _ message: String) -> CreateTopicsResponse.Topic {
            CreateTopicsResponse.Topic(result: KafkaNamedResult(name: topic.name, errorCode: code, errorMessage: message))
        }
        do {
            let name = try pulsarName(topic.name)
            var partitions = Int(topic.numPartitions)
            if partitions == -1 {
                // Kafka's num.partitions: the namespace's auto-creation default, else 1.
                partitions = max(try await broker.namespaces.effectivePolicies(name.namespaceName).autoCreatePartitions, 1)
            }
            guard partitions >= 1 else { return refuse(.invalidPartitions, "a topic needs at least one partition, not \(partitions)") }
            if try await broker.existingPartitionCount(name) != nil {
                return refuse(.topicAlreadyExists, "topic '\(topic.name)' already exists")
            }
            if !validateOnly { try await broker.createPartitionedTopic(name, partitions: partitions) }
            logger.info("kafka.topic-created", metadata: ["topic": "\(name)", "partitions": "\(partitions)", "validate-only": "\(validateOnly)"])
            return CreateTopicsResponse.Topic(
                result: KafkaNamedResult(name: topic.name), numPartitions: Int32(partitions),
                replicationFactor: topic.replicationFactor > 0 ? topic.replicationFactor : 1)
        } catch let error as BrokerError where error.code == .conflict {
            return refuse(.topicAlreadyExists, error.message)
        } catch let error as BrokerError where error.code == .badRequest && error.message.contains("Number of partitions") {
            return refuse(.invalidPartitions, error.message)
        } catch {
            let failure = Self.failure(error)
            return refuse(failure.code, failure.message)
        }
    }

    func deleteTopics(_ request: DeleteTopicsRequest) async -> DeleteTopicsResponse {
        var results: [KafkaNamedResult] = []
        for kafkaName in request.names {
            do {
                let name = try pulsarName(kafkaName)
                guard try await broker.existingPartitionCount(name) != nil else {
                    results.append(KafkaNamedResult(name: kafkaName, errorCode: .unknownTopicOrPartition, errorMessage: "no topic '\(kafkaName)'"))
                    continue
                }
                // As Kafka does, consumers and producers do not keep a topic alive.
                try await broker.deleteTopic(name, force: true)
                logger.info("kafka.topic-deleted", metadata: ["topic": "\(name)"])
                results.append(KafkaNamedResult(name: kafkaName))
            } catch {
                let failure = Self.failure(error)
                results.append(KafkaNamedResult(name: kafkaName, errorCode: failure.code, errorMessage: failure.message))
            }
        }
        return DeleteTopicsResponse(results: results)
    }

    func createPartitions(_ request: CreatePartitionsRequest) async -> CreatePartitionsResponse {
        var results: [KafkaNamedResult] = []
        for topic in request.topics {
            do {
                let name = try pulsarName(topic.name)
                guard let current = try await broker.existingPartitionCount(name) else {
                    results.append(KafkaNamedResult(name: topic.name, errorCode: .unknownTopicOrPartition, errorMessage: "no topic '\(topic.name)'"))
                    continue
                }
                guard current > 0 else {
                    results.append(KafkaNamedResult(
                        name: topic.name, errorCode: .invalidPartitions,
                        errorMessage: "'\(topic.name)' is a non-partitioned Pulsar topic: its partition count cannot change"))
                    continue
                }
                guard Int(topic.count) > current else {
                    results.append(KafkaNamedResult(
                        name: topic.name, errorCode: .invalidPartitions,
                        errorMessage: "topic '\(topic.name)' has \(current) partitions: only more can be asked for, not \(topic.count)"))
                    continue
                }
                if !request.validateOnly { try await broker.updatePartitionedTopic(name, partitions: Int(topic.count)) }
                results.append(KafkaNamedResult(name: topic.name))
            } catch {
                let failure = Self.failure(error)
                results.append(KafkaNamedResult(name: topic.name, errorCode: failure.code, errorMessage: failure.message))
            }
        }
        return CreatePartitionsResponse(results: results)
    }

    /// Kafka's resource types.
    enum ConfigResource: Int8 {
        case topic = 2
        case broker = 4
    }

    func describeConfigs(_ request: DescribeConfigsRequest) async -> DescribeConfigsResponse {
        var results: [DescribeConfigsResponse.Result] = []
        for resource in request.resources {
            var entries: [DescribeConfigsResponse.Entry] = []
            switch ConfigResource(rawValue: resource.type) {
            case .topic:
                do {
                    let name = try pulsarName(resource.name)
                    guard try await broker.existingPartitionCount(name) != nil else {
                        results.append(DescribeConfigsResponse.Result(
                            errorCode: .unknownTopicOrPartition, errorMessage: "no topic '\(resource.name)'", type: resource.type,
                            name: resource.name, entries: []))
                        continue
                    }
                    let policies = try await broker.namespaces.effectivePolicies(name.namespaceName)
                    let retentionMs = policies.retentionTimeMinutes < 0 ? -1 : policies.retentionTimeMinutes * 60_000
                    entries = [
                        .init(name: "cleanup.policy", value: policies.compactionThreshold.map { $0 > 0 } == true ? "compact,delete" : "delete", isDefault: policies.compactionThreshold == nil),
                        .init(name: "retention.ms", value: String(retentionMs), isDefault: !policies.retentionConfigured),
                        .init(name: "max.message.bytes", value: String(PulsarLimits.maxMessageSizeBytes), isDefault: true),
                    ]
                } catch {
                    let failure = Self.failure(error)
                    results.append(DescribeConfigsResponse.Result(
                        errorCode: failure.code, errorMessage: failure.message, type: resource.type, name: resource.name, entries: []))
                    continue
                }
            case .broker:
                let policies = try? await broker.namespaces.effectivePolicies(namespace)
                entries = [
                    .init(name: "num.partitions", value: String(max(policies?.autoCreatePartitions ?? 1, 1)), isDefault: true),
                    .init(name: "auto.create.topics.enable", value: String(policies?.allowAutoTopicCreation ?? true), isDefault: true),
                    .init(name: "message.max.bytes", value: String(PulsarLimits.maxMessageSizeBytes), isDefault: true),
                    .init(name: "group.initial.rebalance.delay.ms", value: String(settings.groups.initialRebalanceDelayMs), isDefault: false),
                ]
            case nil:
                results.append(DescribeConfigsResponse.Result(
                    errorCode: .invalidRequest, errorMessage: "resource type \(resource.type) is not described here (2: topic, 4: broker)",
                    type: resource.type, name: resource.name, entries: []))
                continue
            }
            if let keys = resource.keys { entries = entries.filter { keys.contains($0.name) } }
            results.append(DescribeConfigsResponse.Result(type: resource.type, name: resource.name, entries: entries))
        }
        return DescribeConfigsResponse(results: results)
    }
}
