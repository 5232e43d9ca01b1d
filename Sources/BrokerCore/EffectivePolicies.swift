import Foundation

/// The namespace policies the broker enforces at run time, read from the namespace's metadata
/// record (`/namespaces/<tenant>/<ns>`, Pulsar's admin JSON names). Absent fields take the
/// broker defaults (Pulsar's broker.conf defaults). A pure value.
public struct EffectivePolicies: Sendable, Equatable {
    public var retentionTimeMinutes: Int64 = 0
    public var retentionSizeMB: Int64 = 0
    /// Whether the namespace sets a retention policy. Without one, a topic that has no durable
    /// subscription keeps everything (Magnetar's default; Java Pulsar would delete it).
    public var retentionConfigured = false
    public var messageTTLSeconds: Int64 = 0
    public var backlogQuotaLimitBytes: Int64 = -1
    public var backlogQuotaLimitTimeSeconds: Int64 = -1
    public var backlogQuotaPolicy: BacklogQuotaPolicy = .producerRequestHold
    public var allowAutoTopicCreation = true
    public var autoCreatePartitions = 0
    public var deduplicationEnabled = false
    public var maxProducersPerTopic = 0
    public var maxConsumersPerTopic = 0

    public enum BacklogQuotaPolicy: String, Sendable, Codable {
        case producerRequestHold = "producer_request_hold"
        case producerException = "producer_exception"
        case consumerBacklogEviction = "consumer_backlog_eviction"
    }

    public init() {}

    private struct Record: Decodable {
        struct Retention: Decodable {
            var retentionTimeInMinutes: Int64?
            var retentionSizeInMB: Int64?
        }
        struct Quota: Decodable {
            var limitSize: Int64?
            var limit: Int64?
            var limitTime: Int64?
            var policy: BacklogQuotaPolicy?
        }
        struct AutoTopicCreation: Decodable {
            var allowAutoTopicCreation: Bool?
            var topicType: String?
            var defaultNumPartitions: Int?
        }
        var retention_policies: Retention?
        var message_ttl_in_seconds: Int64?
        var backlog_quota_map: [String: Quota]?
        var autoTopicCreationOverride: AutoTopicCreation?
        var deduplicationEnabled: Bool?
        var max_producers_per_topic: Int?
        var max_consumers_per_topic: Int?
    }

    /// Decodes a namespace record; unknown fields are ignored, a damaged record gives the defaults.
    public static func decode(_ bytes: [UInt8]) -> EffectivePolicies {
        var policies = EffectivePolicies()
        guard let record = try? JSONDecoder().decode(Record.self, from: Data(bytes)) else { return policies }
        if let retention = record.retention_policies {
            policies.retentionConfigured = true
            policies.retentionTimeMinutes = retention.retentionTimeInMinutes ?? 0
            policies.retentionSizeMB = retention.retentionSizeInMB ?? 0
        }
        policies.messageTTLSeconds = record.message_ttl_in_seconds ?? 0
        if let quota = record.backlog_quota_map?["destination_storage"] {
            policies.backlogQuotaLimitBytes = quota.limitSize ?? quota.limit ?? -1
            policies.backlogQuotaLimitTimeSeconds = quota.limitTime ?? -1
            policies.backlogQuotaPolicy = quota.policy ?? .producerRequestHold
        }
        if let auto = record.autoTopicCreationOverride {
            policies.allowAutoTopicCreation = auto.allowAutoTopicCreation ?? true
            if auto.topicType == "partitioned" { policies.autoCreatePartitions = max(auto.defaultNumPartitions ?? 1, 1) }
        }
        policies.deduplicationEnabled = record.deduplicationEnabled ?? false
        policies.maxProducersPerTopic = record.max_producers_per_topic ?? 0
        policies.maxConsumersPerTopic = record.max_consumers_per_topic ?? 0
        return policies
    }
}
