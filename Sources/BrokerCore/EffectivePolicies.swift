import LedgerStorage
import ManagedLedger
import Schemas
import TieredStorage

/// The namespace policies the broker enforces at run time, with broker defaults (Pulsar's
/// broker.conf defaults) filled in for what the namespace leaves unset. Derived from the
/// namespace's `NamespacePolicies` record. A pure value.
public struct EffectivePolicies: Sendable, Equatable {
    public var retentionTimeMinutes: Int64 = 0
    public var retentionSizeMB: Int64 = 0
    /// Whether the namespace sets a retention policy. Without one, a topic that has no durable
    /// subscription keeps everything (Magnetar's default; Java Pulsar would delete it).
    public var retentionConfigured = false
    public var messageTTLSeconds: Int64 = 0
    public var backlogQuotaLimitBytes: Int64 = -1
    public var backlogQuotaLimitTimeSeconds: Int64 = -1
    public var backlogQuotaPolicy: BacklogQuotaRetentionPolicy = .producerRequestHold
    public var allowAutoTopicCreation = true
    public var autoCreatePartitions = 0
    public var deduplicationEnabled = false
    public var maxProducersPerTopic = 0
    public var maxConsumersPerTopic = 0
    /// Replication of new ledgers; nil: the broker's default.
    public var replication: LedgerReplicationOptions?
    /// The namespace's and its topics' grants.
    public var auth = AuthPolicies()
    /// Each topic's publish and dispatch rate; nil: not limited.
    public var publishRate: RateLimit?
    public var dispatchRate: RateLimit?
    /// The namespace's own topic limit; 0: the broker's.
    public var maxTopicsPerNamespace = 0
    /// The namespace's schema strategy; `.undefined`: the broker's `schemaCompatibilityStrategy`.
    public var schemaCompatibilityStrategy: SchemaCompatibilityStrategy = .undefined
    /// nil: the broker's `isAllowAutoUpdateSchemaEnabled`.
    public var isAllowAutoUpdateSchema: Bool?
    public var schemaValidationEnforced = false
    /// Compact a topic once this many bytes came after its horizon; nil: the broker's
    /// `brokerServiceCompactionThresholdInBytes`; 0: never.
    public var compactionThreshold: Int64?
    /// The namespace's offload settings (`offloadThreshold`, `offloadDeletionLagMs`, then its
    /// `offloadPolicies`); nil: the broker's (`OffloadSettings`).
    public var offloadThreshold: Int64?
    public var offloadDeletionLagMs: Int64?
    public var offloadTarget: OffloadTarget?
    /// The namespace's `replication_clusters` (the local cluster among them when replicated).
    public var replicationClusters: [String] = []

    public init() {}

    public init(_ policies: NamespacePolicies) {
        if let retention = policies.retention {
            retentionConfigured = true
            retentionTimeMinutes = retention.retentionTimeInMinutes
            retentionSizeMB = retention.retentionSizeInMB
        }
        messageTTLSeconds = Int64(policies.messageTTLSeconds ?? 0)
        if let quota = policies.backlogQuotas[BacklogQuotaType.destinationStorage.rawValue] {
            backlogQuotaLimitBytes = quota.limitSizeBytes
            backlogQuotaLimitTimeSeconds = quota.limitTimeSeconds
            backlogQuotaPolicy = quota.policy
        }
        if let quota = policies.backlogQuotas[BacklogQuotaType.messageAge.rawValue] {
            backlogQuotaLimitTimeSeconds = quota.limitTimeSeconds
            backlogQuotaPolicy = quota.policy
        }
        if let auto = policies.autoTopicCreation {
            allowAutoTopicCreation = auto.allowAutoTopicCreation
            if auto.topicType == .partitioned { autoCreatePartitions = max(auto.defaultNumPartitions ?? 1, 1) }
        }
        deduplicationEnabled = policies.deduplicationEnabled ?? false
        maxProducersPerTopic = policies.maxProducersPerTopic ?? 0
        maxConsumersPerTopic = policies.maxConsumersPerTopic ?? 0
        replication = policies.persistence?.replication
        auth = policies.auth
        publishRate = policies.publishRate.map(\.limit).flatMap { $0.isLimiting ? $0 : nil }
        dispatchRate = policies.dispatchRate.map(\.limit).flatMap { $0.isLimiting ? $0 : nil }
        maxTopicsPerNamespace = policies.maxTopicsPerNamespace ?? 0
        schemaCompatibilityStrategy = policies.schemaCompatibilityStrategy
        isAllowAutoUpdateSchema = policies.isAllowAutoUpdateSchema
        schemaValidationEnforced = policies.schemaValidationEnforced
        compactionThreshold = policies.compactionThreshold
        // -1 is Pulsar's "unset" for the namespace's threshold: the offload policies' (and then
        // the broker's) applies.
        offloadThreshold = policies.offloadThreshold.flatMap { $0 == -1 ? nil : $0 }
            ?? policies.offloadPolicies?.managedLedgerOffloadThresholdInBytes
        offloadDeletionLagMs = policies.offloadDeletionLagMs ?? policies.offloadPolicies?.managedLedgerOffloadDeletionLagInMillis
        offloadTarget = try? policies.offloadPolicies?.target()
        replicationClusters = policies.replicationClusters
    }
}
