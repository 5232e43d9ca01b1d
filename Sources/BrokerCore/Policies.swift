import Foundation
import LedgerStorage
import ManagedLedger
import Schemas
import TieredStorage

// Tenants' and namespaces' metadata records, in Apache Pulsar's admin JSON shapes (field names as in
// Pulsar's `TenantInfo`, `Policies`, `RetentionPolicies`, `BacklogQuota`, `AutoTopicCreationOverride`),
// so that the REST API reads and writes the same JSON as the reference system. Pure values.
//
// Stored at `/tenants/<tenant>` and `/namespaces/<tenant>/<namespace>`. Every field is optional in
// JSON: `{}` decodes as the defaults (what the bootstrap writes for `public/default`).

/// A tenant: `/tenants/<tenant>`.
public struct TenantInfo: Codable, Sendable, Equatable {
    public var adminRoles: [String]
    public var allowedClusters: [String]

    public init(adminRoles: [String] = [], allowedClusters: [String] = []) {
        self.adminRoles = adminRoles
        self.allowedClusters = allowedClusters
    }

    enum CodingKeys: String, CodingKey {
        case adminRoles
        case allowedClusters
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        adminRoles = try container.decodeIfPresent([String].self, forKey: .adminRoles) ?? []
        allowedClusters = try container.decodeIfPresent([String].self, forKey: .allowedClusters) ?? []
    }
}

/// How long and how much acknowledged data a namespace keeps. -1 = unlimited, 0 = none.
public struct RetentionPolicies: Codable, Sendable, Equatable {
    public var retentionTimeInMinutes: Int64
    public var retentionSizeInMB: Int64

    public init(retentionTimeInMinutes: Int64 = 0, retentionSizeInMB: Int64 = 0) {
        self.retentionTimeInMinutes = retentionTimeInMinutes
        self.retentionSizeInMB = retentionSizeInMB
    }

    enum CodingKeys: String, CodingKey {
        case retentionTimeInMinutes
        case retentionSizeInMB
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        retentionTimeInMinutes = try container.decodeIfPresent(Int64.self, forKey: .retentionTimeInMinutes) ?? 0
        retentionSizeInMB = try container.decodeIfPresent(Int64.self, forKey: .retentionSizeInMB) ?? 0
    }
}

/// What the broker does when a topic's backlog is over its quota.
public enum BacklogQuotaRetentionPolicy: String, Codable, Sendable, CaseIterable {
    /// Producers wait (their sends are refused until the backlog shrinks).
    case producerRequestHold = "producer_request_hold"
    /// Producers are refused with `ProducerBlockedQuotaExceededException`.
    case producerException = "producer_exception"
    /// The oldest unacknowledged messages are dropped.
    case consumerBacklogEviction = "consumer_backlog_eviction"
}

/// The kinds of backlog quota: the keys of `backlog_quota_map`.
public enum BacklogQuotaType: String, Codable, Sendable, CaseIterable {
    /// A limit on the backlog's size in bytes.
    case destinationStorage = "destination_storage"
    /// A limit on the age of the oldest unacknowledged message, in seconds.
    case messageAge = "message_age"
}

/// A backlog quota. -1 = no limit of that kind.
public struct BacklogQuota: Codable, Sendable, Equatable {
    public var limitSizeBytes: Int64
    public var limitTimeSeconds: Int64
    public var policy: BacklogQuotaRetentionPolicy

    public init(limitSizeBytes: Int64 = -1, limitTimeSeconds: Int64 = -1, policy: BacklogQuotaRetentionPolicy) {
        self.limitSizeBytes = limitSizeBytes
        self.limitTimeSeconds = limitTimeSeconds
        self.policy = policy
    }

    enum CodingKeys: String, CodingKey {
        case limitSizeBytes = "limitSize"
        case limitTimeSeconds = "limitTime"
        case policy
        /// Pulsar before 2.8 wrote the size as `limit`; read it when `limitSize` is absent.
        case deprecatedLimit = "limit"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        limitSizeBytes = try container.decodeIfPresent(Int64.self, forKey: .limitSizeBytes)
            ?? container.decodeIfPresent(Int64.self, forKey: .deprecatedLimit) ?? -1
        limitTimeSeconds = try container.decodeIfPresent(Int64.self, forKey: .limitTimeSeconds) ?? -1
        policy = try container.decode(BacklogQuotaRetentionPolicy.self, forKey: .policy)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(limitSizeBytes, forKey: .limitSizeBytes)
        try container.encode(limitTimeSeconds, forKey: .limitTimeSeconds)
        try container.encode(policy, forKey: .policy)
    }
}

/// Whether topics are created on first use in a namespace, and of which kind.
public struct AutoTopicCreationOverride: Codable, Sendable, Equatable {
    public enum TopicType: String, Codable, Sendable {
        case partitioned
        case nonPartitioned = "non-partitioned"
    }

    public var allowAutoTopicCreation: Bool
    public var topicType: TopicType
    /// Partitions of an auto-created partitioned topic; required (> 0) when `topicType` is partitioned.
    public var defaultNumPartitions: Int?

    public init(allowAutoTopicCreation: Bool, topicType: TopicType = .nonPartitioned, defaultNumPartitions: Int? = nil) {
        self.allowAutoTopicCreation = allowAutoTopicCreation
        self.topicType = topicType
        self.defaultNumPartitions = defaultNumPartitions
    }

    enum CodingKeys: String, CodingKey {
        case allowAutoTopicCreation
        case topicType
        case defaultNumPartitions
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        allowAutoTopicCreation = try container.decode(Bool.self, forKey: .allowAutoTopicCreation)
        topicType = try container.decodeIfPresent(TopicType.self, forKey: .topicType) ?? .nonPartitioned
        defaultNumPartitions = try container.decodeIfPresent(Int.self, forKey: .defaultNumPartitions)
    }
}

/// Pulsar's `PublishRate`: the most messages and bytes per second each topic of the namespace takes
/// from its producers (-1 or 0: no limit). Excess pauses reading the producers' connections.
public struct PublishRate: Codable, Sendable, Equatable {
    public var publishThrottlingRateInMsg: Int
    public var publishThrottlingRateInByte: Int64

    public init(messages: Int, bytes: Int64) {
        publishThrottlingRateInMsg = messages
        publishThrottlingRateInByte = bytes
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        publishThrottlingRateInMsg = try container.decodeIfPresent(Int.self, forKey: .publishThrottlingRateInMsg) ?? -1
        publishThrottlingRateInByte = try container.decodeIfPresent(Int64.self, forKey: .publishThrottlingRateInByte) ?? -1
    }

    public var limit: RateLimit {
        RateLimit(messagesPerSecond: Double(publishThrottlingRateInMsg), bytesPerSecond: Double(publishThrottlingRateInByte))
    }
}

/// Pulsar's `DispatchRate`: the most messages and bytes per `ratePeriodInSecond` each topic of the
/// namespace dispatches to its consumers, all subscriptions together (-1 or 0: no limit).
public struct DispatchRate: Codable, Sendable, Equatable {
    public var dispatchThrottlingRateInMsg: Int
    public var dispatchThrottlingRateInByte: Int64
    public var relativeToPublishRate: Bool
    public var ratePeriodInSecond: Int

    public init(messages: Int, bytes: Int64, periodSeconds: Int = 1) {
        dispatchThrottlingRateInMsg = messages
        dispatchThrottlingRateInByte = bytes
        relativeToPublishRate = false
        ratePeriodInSecond = periodSeconds
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        dispatchThrottlingRateInMsg = try container.decodeIfPresent(Int.self, forKey: .dispatchThrottlingRateInMsg) ?? -1
        dispatchThrottlingRateInByte = try container.decodeIfPresent(Int64.self, forKey: .dispatchThrottlingRateInByte) ?? -1
        relativeToPublishRate = try container.decodeIfPresent(Bool.self, forKey: .relativeToPublishRate) ?? false
        ratePeriodInSecond = try container.decodeIfPresent(Int.self, forKey: .ratePeriodInSecond) ?? 1
    }

    public var limit: RateLimit {
        let period = Double(max(ratePeriodInSecond, 1))
        return RateLimit(
            messagesPerSecond: Double(dispatchThrottlingRateInMsg) / period, bytesPerSecond: Double(dispatchThrottlingRateInByte) / period)
    }
}

/// A namespace's policies: `/namespaces/<tenant>/<namespace>`. nil = not set (the broker default).
public struct NamespacePolicies: Codable, Sendable, Equatable {
    public var retention: RetentionPolicies?
    public var messageTTLSeconds: Int?
    /// Keyed by `BacklogQuotaType` raw values (`destination_storage`, `message_age`).
    public var backlogQuotas: [String: BacklogQuota]
    public var autoTopicCreation: AutoTopicCreationOverride?
    public var deduplicationEnabled: Bool?
    public var schemaCompatibilityStrategy: SchemaCompatibilityStrategy
    public var maxProducersPerTopic: Int?
    public var maxConsumersPerTopic: Int?
    /// How the namespace's ledgers are replicated on storage nodes (cluster brokers only).
    public var persistence: PersistencePolicies?
    /// Grants of the namespace and its topics (`auth_policies`).
    public var auth = AuthPolicies()
    /// Per-topic publish and dispatch rates (`publishRate`, `dispatchRate` REST paths).
    public var publishRate: PublishRate?
    public var dispatchRate: DispatchRate?
    /// Most topics (partitions counted) the namespace may hold; nil: the broker's `maxTopicsPerNamespace`.
    public var maxTopicsPerNamespace: Int?
    /// Whether producers may add schema versions (nil: the broker's `isAllowAutoUpdateSchemaEnabled`).
    public var isAllowAutoUpdateSchema: Bool?
    /// Refuse producers without a schema on topics that have one.
    public var schemaValidationEnforced = false
    /// Bytes after a topic's compaction horizon that start a compaction (0: never; nil: the broker's).
    public var compactionThreshold: Int64?
    /// Local bytes of a topic past which its closed ledgers are offloaded (-1: never by size; 0:
    /// each as it closes; nil: the offload policies', then the broker's
    /// `managedLedgerOffloadAutoTriggerSizeThresholdBytes`).
    public var offloadThreshold: Int64?
    /// How long a local copy outlives its offload (nil: the broker's `managedLedgerOffloadDeletionLagMs`).
    public var offloadDeletionLagMs: Int64?
    /// The namespace's own tier (Pulsar's `offload_policies`).
    public var offloadPolicies: OffloadPolicies?
    /// The clusters its topics are replicated between (`replication_clusters`; empty or only the
    /// local cluster: not replicated).
    public var replicationClusters: [String] = []

    public init(
        retention: RetentionPolicies? = nil, messageTTLSeconds: Int? = nil, backlogQuotas: [String: BacklogQuota] = [:],
        autoTopicCreation: AutoTopicCreationOverride? = nil, deduplicationEnabled: Bool? = nil,
        schemaCompatibilityStrategy: SchemaCompatibilityStrategy = .undefined, maxProducersPerTopic: Int? = nil,
        maxConsumersPerTopic: Int? = nil
    ) {
        self.retention = retention
        self.messageTTLSeconds = messageTTLSeconds
        self.backlogQuotas = backlogQuotas
        self.autoTopicCreation = autoTopicCreation
        self.deduplicationEnabled = deduplicationEnabled
        self.schemaCompatibilityStrategy = schemaCompatibilityStrategy
        self.maxProducersPerTopic = maxProducersPerTopic
        self.maxConsumersPerTopic = maxConsumersPerTopic
    }

    /// The backlog quota of one type, if set.
    public func backlogQuota(_ type: BacklogQuotaType) -> BacklogQuota? { backlogQuotas[type.rawValue] }

    enum CodingKeys: String, CodingKey {
        case retention = "retention_policies"
        case messageTTLSeconds = "message_ttl_in_seconds"
        case backlogQuotas = "backlog_quota_map"
        case autoTopicCreation = "autoTopicCreationOverride"
        case deduplicationEnabled
        case schemaCompatibilityStrategy = "schema_compatibility_strategy"
        case maxProducersPerTopic = "max_producers_per_topic"
        case maxConsumersPerTopic = "max_consumers_per_topic"
        case persistence
        case auth = "auth_policies"
        case publishRate = "publishMaxMessageRate"
        case dispatchRate = "topicDispatchRate"
        case maxTopicsPerNamespace = "max_topics_per_namespace"
        case isAllowAutoUpdateSchema = "is_allow_auto_update_schema"
        case schemaValidationEnforced = "schema_validation_enforced"
        case compactionThreshold = "compaction_threshold"
        case offloadThreshold = "offload_threshold"
        case offloadDeletionLagMs = "offload_deletion_lag_ms"
        case offloadPolicies = "offload_policies"
        case replicationClusters = "replication_clusters"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        retention = try container.decodeIfPresent(RetentionPolicies.self, forKey: .retention)
        messageTTLSeconds = try container.decodeIfPresent(Int.self, forKey: .messageTTLSeconds)
        backlogQuotas = try container.decodeIfPresent([String: BacklogQuota].self, forKey: .backlogQuotas) ?? [:]
        autoTopicCreation = try container.decodeIfPresent(AutoTopicCreationOverride.self, forKey: .autoTopicCreation)
        deduplicationEnabled = try container.decodeIfPresent(Bool.self, forKey: .deduplicationEnabled)
        schemaCompatibilityStrategy =
            try container.decodeIfPresent(SchemaCompatibilityStrategy.self, forKey: .schemaCompatibilityStrategy) ?? .undefined
        maxProducersPerTopic = try container.decodeIfPresent(Int.self, forKey: .maxProducersPerTopic)
        maxConsumersPerTopic = try container.decodeIfPresent(Int.self, forKey: .maxConsumersPerTopic)
        persistence = try container.decodeIfPresent(PersistencePolicies.self, forKey: .persistence)
        auth = try container.decodeIfPresent(AuthPolicies.self, forKey: .auth) ?? AuthPolicies()
        publishRate = try container.decodeIfPresent(PublishRate.self, forKey: .publishRate)
        dispatchRate = try container.decodeIfPresent(DispatchRate.self, forKey: .dispatchRate)
        maxTopicsPerNamespace = try container.decodeIfPresent(Int.self, forKey: .maxTopicsPerNamespace)
        isAllowAutoUpdateSchema = try container.decodeIfPresent(Bool.self, forKey: .isAllowAutoUpdateSchema)
        schemaValidationEnforced = try container.decodeIfPresent(Bool.self, forKey: .schemaValidationEnforced) ?? false
        compactionThreshold = try container.decodeIfPresent(Int64.self, forKey: .compactionThreshold)
        offloadThreshold = try container.decodeIfPresent(Int64.self, forKey: .offloadThreshold)
        offloadDeletionLagMs = try container.decodeIfPresent(Int64.self, forKey: .offloadDeletionLagMs)
        offloadPolicies = try container.decodeIfPresent(OffloadPolicies.self, forKey: .offloadPolicies)
        replicationClusters = try container.decodeIfPresent([String].self, forKey: .replicationClusters) ?? []
    }

    /// Pulsar writes unset policies as `null`; so do we, so GET shows every field.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(retention, forKey: .retention)
        try container.encode(messageTTLSeconds, forKey: .messageTTLSeconds)
        try container.encode(backlogQuotas, forKey: .backlogQuotas)
        try container.encode(autoTopicCreation, forKey: .autoTopicCreation)
        try container.encode(deduplicationEnabled, forKey: .deduplicationEnabled)
        try container.encode(schemaCompatibilityStrategy, forKey: .schemaCompatibilityStrategy)
        try container.encode(maxProducersPerTopic, forKey: .maxProducersPerTopic)
        try container.encode(maxConsumersPerTopic, forKey: .maxConsumersPerTopic)
        try container.encode(persistence, forKey: .persistence)
        try container.encode(auth, forKey: .auth)
        try container.encode(publishRate, forKey: .publishRate)
        try container.encode(dispatchRate, forKey: .dispatchRate)
        try container.encode(maxTopicsPerNamespace, forKey: .maxTopicsPerNamespace)
        try container.encode(isAllowAutoUpdateSchema, forKey: .isAllowAutoUpdateSchema)
        try container.encode(schemaValidationEnforced, forKey: .schemaValidationEnforced)
        try container.encode(compactionThreshold, forKey: .compactionThreshold)
        try container.encode(offloadThreshold, forKey: .offloadThreshold)
        try container.encode(offloadDeletionLagMs, forKey: .offloadDeletionLagMs)
        try container.encode(offloadPolicies, forKey: .offloadPolicies)
        try container.encode(replicationClusters, forKey: .replicationClusters)
    }

    /// Checks the values are in range; the message says which one is not.
    public func validate() throws(BrokerError) {
        if let retention {
            guard retention.retentionTimeInMinutes >= -1, retention.retentionSizeInMB >= -1 else {
                throw .invalidPolicy("retention time and size must be -1 (unlimited), 0 (none) or positive")
            }
            guard retention.retentionTimeInMinutes <= PolicyLimits.maxRetentionTimeMinutes else {
                throw .invalidPolicy(
                    "retention time \(retention.retentionTimeInMinutes) minutes is too long: at most \(PolicyLimits.maxRetentionTimeMinutes) (100 years), or -1 for unlimited")
            }
            guard retention.retentionSizeInMB <= PolicyLimits.maxRetentionSizeMB else {
                throw .invalidPolicy(
                    "retention size \(retention.retentionSizeInMB) MB is too large: at most \(PolicyLimits.maxRetentionSizeMB) (1 EiB), or -1 for unlimited")
            }
        }
        if let messageTTLSeconds {
            guard messageTTLSeconds >= 0 else {
                throw .invalidPolicy("message TTL must be 0 (disabled) or a positive number of seconds")
            }
            guard Int64(messageTTLSeconds) <= PolicyLimits.maxMessageTTLSeconds else {
                throw .invalidPolicy(
                    "message TTL \(messageTTLSeconds) s is too long: at most \(PolicyLimits.maxMessageTTLSeconds) (100 years)")
            }
        }
        for (type, quota) in backlogQuotas {
            guard BacklogQuotaType(rawValue: type) != nil else {
                throw .invalidPolicy(
                    "unknown backlog quota type '\(type)': use \(BacklogQuotaType.allCases.map(\.rawValue).joined(separator: " or "))")
            }
            guard quota.limitSizeBytes >= -1, quota.limitTimeSeconds >= -1 else {
                throw .invalidPolicy("backlog quota limits must be -1 (none) or positive")
            }
            guard quota.limitTimeSeconds <= PolicyLimits.maxBacklogQuotaLimitTimeSeconds else {
                throw .invalidPolicy(
                    "backlog quota limitTime \(quota.limitTimeSeconds) s is too long: at most \(PolicyLimits.maxBacklogQuotaLimitTimeSeconds) (100 years), or -1 for none")
            }
        }
        if let autoTopicCreation, autoTopicCreation.allowAutoTopicCreation, autoTopicCreation.topicType == .partitioned {
            guard let partitions = autoTopicCreation.defaultNumPartitions, partitions > 0,
                  partitions <= AdminLimits.maxPartitions
            else {
                throw .invalidPolicy("defaultNumPartitions must be between 1 and \(AdminLimits.maxPartitions) for partitioned auto topic creation")
            }
        }
        for (what, value) in [
            ("max_producers_per_topic", maxProducersPerTopic), ("max_consumers_per_topic", maxConsumersPerTopic),
            ("max_topics_per_namespace", maxTopicsPerNamespace),
        ] {
            if let value, value < 0 { throw .invalidPolicy("\(what) must be 0 (unlimited) or positive") }
        }
        if let compactionThreshold, compactionThreshold < 0 {
            throw .invalidPolicy("compactionThreshold must be 0 (never) or a positive number of bytes")
        }
        if let offloadThreshold, offloadThreshold < -1 {
            throw .invalidPolicy("offloadThreshold must be -1 (never by size), 0 (as soon as a ledger closes) or a positive number of bytes")
        }
        if let offloadDeletionLagMs, offloadDeletionLagMs < 0 {
            throw .invalidPolicy("offloadDeletionLagMs must be 0 (delete the local copy at once) or a positive number of milliseconds")
        }
        try offloadPolicies?.validate()
        if let publishRate, publishRate.publishThrottlingRateInMsg < -1 || publishRate.publishThrottlingRateInByte < -1 {
            throw .invalidPolicy("publishThrottlingRateInMsg and publishThrottlingRateInByte must be -1 (unlimited), 0 (unlimited) or positive")
        }
        if let dispatchRate {
            guard dispatchRate.dispatchThrottlingRateInMsg >= -1, dispatchRate.dispatchThrottlingRateInByte >= -1 else {
                throw .invalidPolicy("dispatchThrottlingRateInMsg and dispatchThrottlingRateInByte must be -1 (unlimited), 0 (unlimited) or positive")
            }
            guard (1...86_400).contains(dispatchRate.ratePeriodInSecond) else {
                throw .invalidPolicy("ratePeriodInSecond must be between 1 and 86400")
            }
            guard !dispatchRate.relativeToPublishRate else {
                throw .invalidPolicy("relativeToPublishRate=true is not supported: give the dispatch rate in messages or bytes")
            }
        }
    }
}

/// The ranges a namespace policy value must lie in (checked at the REST edge, 400 otherwise).
/// The runtime also computes with stored values by saturating arithmetic, so a record written
/// before these checks existed cannot trap it.
public enum PolicyLimits {
    /// 100 years: `message_ttl_in_seconds` is 0 (disabled) up to this.
    public static let maxMessageTTLSeconds: Int64 = 100 * 365 * 86_400
    /// 100 years: `retentionTimeInMinutes` is -1 (unlimited), 0, or up to this.
    public static let maxRetentionTimeMinutes: Int64 = 100 * 365 * 24 * 60
    /// 1 EiB: `retentionSizeInMB` is -1 (unlimited), 0, or up to this.
    public static let maxRetentionSizeMB: Int64 = 1 << 40
    /// 100 years: a backlog quota's `limitTime` is -1 (none), or up to this.
    public static let maxBacklogQuotaLimitTimeSeconds: Int64 = 100 * 365 * 86_400
}

/// Limits of the admin operations, in one place.
public enum AdminLimits {
    /// Most partitions a partitioned topic may have.
    public static let maxPartitions = 10_000
    /// Most entries one expire, skip or peek examines (they run on the topic's event loop).
    public static let maxEntriesExaminedPerOperation: Int64 = 1_000_000
    /// Longest expiry an expire-messages call accepts (100 years), so `now - seconds` cannot overflow.
    public static let maxExpiryTimeSeconds: Int64 = 100 * 365 * 86_400
    /// Longest tenant or namespace name.
    public static let maxNameLengthBytes = 255
}

/// Pulsar's `PersistencePolicies`: ensemble size, write quorum and ack quorum of new ledgers.
/// Decoding refuses shapes that cannot work (`E >= Qw >= Qa >= 1`).
public struct PersistencePolicies: Codable, Sendable, Equatable {
    public var bookkeeperEnsemble: Int
    public var bookkeeperWriteQuorum: Int
    public var bookkeeperAckQuorum: Int
    public var managedLedgerMaxMarkDeleteRate: Double

    public init(ensemble: Int, writeQuorum: Int, ackQuorum: Int) {
        bookkeeperEnsemble = ensemble
        bookkeeperWriteQuorum = writeQuorum
        bookkeeperAckQuorum = ackQuorum
        managedLedgerMaxMarkDeleteRate = 0
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        bookkeeperEnsemble = try container.decode(Int.self, forKey: .bookkeeperEnsemble)
        bookkeeperWriteQuorum = try container.decode(Int.self, forKey: .bookkeeperWriteQuorum)
        bookkeeperAckQuorum = try container.decode(Int.self, forKey: .bookkeeperAckQuorum)
        managedLedgerMaxMarkDeleteRate = try container.decodeIfPresent(Double.self, forKey: .managedLedgerMaxMarkDeleteRate) ?? 0
        guard replication.isValid else {
            throw DecodingError.dataCorrupted(.init(
                codingPath: decoder.codingPath,
                debugDescription: "need bookkeeperEnsemble >= bookkeeperWriteQuorum >= bookkeeperAckQuorum >= 1"))
        }
    }

    /// The ledger-store form.
    public var replication: LedgerReplicationOptions {
        LedgerReplicationOptions(
            ensembleSize: bookkeeperEnsemble, writeQuorumSize: bookkeeperWriteQuorum, ackQuorumSize: bookkeeperAckQuorum)
    }
}

/// Pulsar's `OffloadPolicies` of a namespace (the keys of broker.conf, in JSON): where and when
/// its topics offload. Fields left out take the broker's.
public struct OffloadPolicies: Codable, Sendable, Equatable {
    public var managedLedgerOffloadDriver: String?
    public var managedLedgerOffloadThresholdInBytes: Int64?
    public var managedLedgerOffloadDeletionLagInMillis: Int64?
    public var fileSystemURI: String?
    public var s3ManagedLedgerOffloadBucket: String?
    public var s3ManagedLedgerOffloadRegion: String?
    public var s3ManagedLedgerOffloadServiceEndpoint: String?
    public var s3ManagedLedgerOffloadMaxBlockSizeInBytes: Int?
    public var managedLedgerOffloadMaxBlockSizeInBytes: Int?

    public init() {}

    /// The tier these policies name, if they name a driver.
    public func target() throws(BrokerError) -> OffloadTarget? {
        guard let driverName = managedLedgerOffloadDriver, !driverName.isEmpty else { return nil }
        guard let driver = OffloadTarget.Driver(configName: driverName) else {
            throw .invalidPolicy("managedLedgerOffloadDriver '\(driverName)' is not served: use filesystem or aws-s3")
        }
        let blockSize = s3ManagedLedgerOffloadMaxBlockSizeInBytes ?? managedLedgerOffloadMaxBlockSizeInBytes ?? OffloadTarget.defaultBlockSizeBytes
        switch driver {
        case .filesystem:
            guard let uri = fileSystemURI else { throw .invalidPolicy("the filesystem offload driver needs fileSystemURI (file:///dir)") }
            do {
                return try OffloadTarget.filesystem(uri: uri, blockSizeBytes: blockSize)
            } catch {
                throw .invalidPolicy(error.message)
            }
        case .awsS3:
            guard let bucket = s3ManagedLedgerOffloadBucket, !bucket.isEmpty else {
                throw .invalidPolicy("the aws-s3 offload driver needs s3ManagedLedgerOffloadBucket")
            }
            return OffloadTarget(
                driver: .awsS3, container: bucket, region: s3ManagedLedgerOffloadRegion,
                endpoint: s3ManagedLedgerOffloadServiceEndpoint, blockSizeBytes: blockSize)
        }
    }

    func validate() throws(BrokerError) {
        _ = try target()
        if let threshold = managedLedgerOffloadThresholdInBytes, threshold < -1 {
            throw .invalidPolicy("managedLedgerOffloadThresholdInBytes must be -1, 0 or positive")
        }
        if let lag = managedLedgerOffloadDeletionLagInMillis, lag < 0 {
            throw .invalidPolicy("managedLedgerOffloadDeletionLagInMillis must be 0 or positive")
        }
        for size in [s3ManagedLedgerOffloadMaxBlockSizeInBytes, managedLedgerOffloadMaxBlockSizeInBytes].compactMap({ $0 }) {
            guard (1024...OffloadTarget.maxBlockSizeBytes).contains(size) else {
                throw .invalidPolicy("the offload block size must be between 1024 and \(OffloadTarget.maxBlockSizeBytes) bytes")
            }
        }
    }
}
