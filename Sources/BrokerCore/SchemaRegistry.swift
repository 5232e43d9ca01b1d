import Foundation
import ManagedLedger
import Metadata
import Schemas

/// Every version of one schema id, as stored at `MetadataKeys.schema(_:)` (JSON; definitions in
/// base64), and the topic-level compatibility strategy (Pulsar's topic policy), which outlives
/// the versions when they are removed with `force`.
struct SchemaRecord: Codable, Sendable {
    var versions: [SchemaVersionRecord]
    var compatibilityStrategy: SchemaCompatibilityStrategy?
}

/// The topics' schemas (Pulsar's schema registry): one record of versions per schema id
/// (`TopicName.schemaName`: partitions share their partitioned topic's, the domains share one), in
/// the metadata store — so they survive restarts and every broker of a cluster sees the same.
/// Versions are added with compare-and-set: two brokers adding at once never lose one. The rules
/// (reuse, compatibility, tombstones) are `SchemaRules`'. Thread-safe.
public final class SchemaRegistry: Sendable {
    let metadata: any MetadataStore

    /// How many times a put re-reads the record when another writer changed it first.
    static let maxAttempts = 8

    init(metadata: any MetadataStore) {
        self.metadata = metadata
    }

    /// Every stored version, oldest first (tombstones included); empty if the id has none.
    public func versions(_ schemaName: String) async throws -> [SchemaVersionRecord] {
        try await load(schemaName).record.versions
    }

    /// The live versions (after the last deletion).
    public func liveVersions(_ schemaName: String) async throws -> [SchemaVersionRecord] {
        SchemaRules.live(try await versions(schemaName))
    }

    /// Whether the id has a live schema (its latest version is not a deletion).
    public func hasSchema(_ schemaName: String) async throws -> Bool {
        guard let latest = try await versions(schemaName).last else { return false }
        return !latest.deleted
    }

    /// `version` nil: the latest stored (a tombstone too, as Pulsar's GET_SCHEMA answers); else that
    /// version if it is live and not a deletion.
    public func version(_ schemaName: String, _ version: Int64?) async throws -> SchemaVersionRecord? {
        let all = try await versions(schemaName)
        guard let version else { return all.last }
        return SchemaRules.live(all).first { $0.version == version && !$0.deleted }
    }

    /// Stores `definition` (or finds the identical live version) under `strategy`: the version.
    /// Throws `BrokerError(.invalidSchema / .incompatibleSchema)` with Pulsar's messages.
    @discardableResult
    public func put(
        _ definition: SchemaDefinition, schemaName: String, strategy: SchemaCompatibilityStrategy, autoUpdate: Bool = true,
        user: String = ""
    ) async throws -> Int64 {
        try await update(schemaName) { versions throws(BrokerError) in
            let placement: SchemaRules.Placement
            do throws(SchemaError) {
                placement = try SchemaRules.place(definition, in: versions, strategy: strategy, autoUpdate: autoUpdate)
            } catch {
                throw Self.brokerError(error)
            }
            switch placement {
            case .existing(let version):
                return (version, nil)
            case .add(let version):
                return (version, SchemaVersionRecord(version: version, definition: definition, timestamp: Self.now(), user: user))
            }
        }
    }

    /// Marks the schema deleted (a tombstone version, returned) or, with `force`, removes its whole
    /// history (-1; numbering starts again at 0).
    public func delete(_ schemaName: String, force: Bool, user: String = "") async throws -> Int64 {
        if force {
            try await change(schemaName) { $0.versions = [] }
            return -1
        }
        return try await update(schemaName) { versions in
            let version = (versions.last?.version ?? -1) + 1
            return (version, SchemaVersionRecord(
                version: version, definition: SchemaDefinition(type: .none, data: []), timestamp: Self.now(), deleted: true, user: user))
        }
    }

    /// The topic-level strategy (nil: the namespace's applies).
    public func topicStrategy(_ schemaName: String) async throws -> SchemaCompatibilityStrategy? {
        try await load(schemaName).record.compatibilityStrategy
    }

    public func setTopicStrategy(_ schemaName: String, _ strategy: SchemaCompatibilityStrategy?) async throws {
        try await change(schemaName) { $0.compatibilityStrategy = strategy == .undefined ? nil : strategy }
    }

    /// Rewrites the record with `edit` (compare-and-set, retried); an empty record is deleted.
    private func change(_ schemaName: String, _ edit: (inout SchemaRecord) -> Void) async throws {
        let key = MetadataKeys.schema(schemaName)
        for _ in 0..<Self.maxAttempts {
            var (record, storedVersion) = try await load(schemaName)
            edit(&record)
            do {
                if record.versions.isEmpty, record.compatibilityStrategy == nil {
                    if let storedVersion { try await metadata.delete(key, expectedVersion: storedVersion) }
                } else {
                    try await metadata.put(key, value: Array(try JSONEncoder().encode(record)), expectedVersion: storedVersion ?? -1)
                }
                return
            } catch MetadataStoreError.badVersion {
                continue
            } catch MetadataStoreError.notFound {
                continue
            }
        }
        throw BrokerError(.serviceNotReady, "the schema record of \(schemaName) kept changing; retry")
    }

    /// Removes every version and the topic-level strategy (the topic was deleted).
    public func removeAll(_ schemaName: String) async throws {
        try await metadata.delete(MetadataKeys.schema(schemaName), expectedVersion: nil)
    }

    /// Throws unless `definition` could be added under `strategy` (REST `compatibility`).
    public func checkCompatibility(_ definition: SchemaDefinition, schemaName: String, strategy: SchemaCompatibilityStrategy) async throws {
        let versions = try await versions(schemaName)
        do throws(SchemaError) {
            try SchemaRules.validate(definition)
            try SchemaRules.checkCompatibility(definition, against: versions, strategy: strategy)
        } catch {
            throw Self.brokerError(error)
        }
    }

    /// Throws unless a consumer with `definition` may read the topic's live schema.
    public func checkConsumer(_ definition: SchemaDefinition, schemaName: String, strategy: SchemaCompatibilityStrategy) async throws {
        let versions = try await versions(schemaName)
        do throws(SchemaError) {
            try SchemaRules.checkConsumer(definition, against: versions, strategy: strategy)
        } catch {
            throw Self.brokerError(error)
        }
    }

    /// The live version with the same type and bytes, or -1 (REST `version`).
    public func findVersion(_ definition: SchemaDefinition, schemaName: String) async throws -> Int64 {
        let live = try await liveVersions(schemaName)
        return live.last { $0.type == definition.type && $0.data == Data(definition.data) }?.version ?? -1
    }

    // MARK: storage

    private func load(_ schemaName: String) async throws -> (record: SchemaRecord, version: Int64?) {
        guard let stored = try await metadata.get(MetadataKeys.schema(schemaName)) else {
            return (SchemaRecord(versions: [], compatibilityStrategy: nil), nil)
        }
        do {
            return (try JSONDecoder().decode(SchemaRecord.self, from: Data(stored.value)), stored.version)
        } catch {
            throw BrokerError(.metadata, "the schema record of \(schemaName) does not decode (\(error)); delete it with force=true to start over")
        }
    }

    /// Reads the record, lets `change` decide (a version to answer, and a version to append or
    /// none), writes it back with compare-and-set, and tries again if another writer came first.
    private func update(
        _ schemaName: String,
        _ change: ([SchemaVersionRecord]) throws(BrokerError) -> (Int64, SchemaVersionRecord?)
    ) async throws -> Int64 {
        for _ in 0..<Self.maxAttempts {
            let (record, storedVersion) = try await load(schemaName)
            let (answer, added) = try change(record.versions)
            guard let added else { return answer }
            var updated = record
            updated.versions.append(added)
            let bytes = Array(try JSONEncoder().encode(updated))
            do {
                try await metadata.put(MetadataKeys.schema(schemaName), value: bytes, expectedVersion: storedVersion ?? -1)
                return answer
            } catch MetadataStoreError.badVersion {
                continue
            }
        }
        throw BrokerError(.serviceNotReady, "the schema of \(schemaName) kept changing while this version was being added; retry")
    }

    static func brokerError(_ error: SchemaError) -> BrokerError {
        switch error {
        case .invalid(let text): BrokerError(.invalidSchema, text)
        case .incompatible(let text): BrokerError(.incompatibleSchema, text)
        }
    }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
}

extension BrokerService {
    /// The strategy, auto-update flag and validation flag a topic's schemas go by: the namespace's
    /// policies, else the broker's keys. `fresh`: read the policies now (the admin API), not
    /// through the one-second cache (clients).
    public func schemaPolicy(_ topic: TopicName, fresh: Bool = false) async throws -> (strategy: SchemaCompatibilityStrategy, autoUpdate: Bool, enforced: Bool) {
        let policies = fresh
            ? EffectivePolicies(try await namespaces.policies(topic.namespaceName))
            : try await policies(namespace: topic.namespaceName)
        // The topic's own strategy, else the namespace's, else the broker's.
        let strategy = try await schemas.topicStrategy(topic.schemaName)
            ?? (policies.schemaCompatibilityStrategy == .undefined ? configuration.schemaCompatibilityStrategy : policies.schemaCompatibilityStrategy)
        return (strategy, policies.isAllowAutoUpdateSchema ?? configuration.isAllowAutoUpdateSchemaEnabled,
                policies.schemaValidationEnforced || configuration.isSchemaValidationEnforced)
    }

    /// A producer's schema step (Pulsar's `addSchema`): its version, or nil for a producer without
    /// a schema (refused on a topic with one when validation is enforced).
    public func producerSchemaVersion(_ schema: SchemaDefinition?, topic: TopicName, role: String?) async throws -> Int64? {
        let policy = try await schemaPolicy(topic)
        guard let schema else {
            if policy.enforced, try await schemas.hasSchema(topic.schemaName) {
                throw BrokerError(.incompatibleSchema, "Producers cannot connect or send message without a schema to topics with a schema")
            }
            return nil
        }
        return try await schemas.put(schema, schemaName: topic.schemaName, strategy: policy.strategy, autoUpdate: policy.autoUpdate, user: role ?? "")
    }

    /// A consumer's schema step (Pulsar's `addSchemaIfIdleOrCheckCompatible`): on a topic nothing
    /// uses and without a schema, it registers; otherwise it must be able to read the topic's.
    public func checkConsumerSchema(_ schema: SchemaDefinition, topic: TopicName, inUse: Bool, role: String?) async throws {
        let policy = try await schemaPolicy(topic)
        let hasSchema = try await schemas.hasSchema(topic.schemaName)
        if hasSchema || inUse {
            guard hasSchema else {
                throw BrokerError(.incompatibleSchema, "Failed to add schema to an active topic with empty(BYTES) schema: new schema type \(schema.type.rawValue)")
            }
            try await schemas.checkConsumer(schema, schemaName: topic.schemaName, strategy: policy.strategy)
        } else {
            try await schemas.put(schema, schemaName: topic.schemaName, strategy: policy.strategy, autoUpdate: policy.autoUpdate, user: role ?? "")
        }
    }
}
