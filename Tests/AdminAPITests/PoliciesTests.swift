@testable import AdminAPI
import BrokerCore
import ManagedLedger
import Foundation
import Testing

/// Policy records decode from and encode to Apache Pulsar's admin JSON.
@Suite struct PoliciesTests {
    func decode<T: Decodable>(_ type: T.Type, _ json: String) throws -> T {
        try JSONDecoder().decode(type, from: Data(json.utf8))
    }

    func roundTrip<T: Codable & Equatable>(_ value: T) throws -> T {
        try JSONDecoder().decode(T.self, from: JSONEncoder().encode(value))
    }

    @Test func emptyRecordsDecodeAsDefaults() throws {
        #expect(try decode(NamespacePolicies.self, "{}") == NamespacePolicies())
        #expect(try decode(TenantInfo.self, "{}") == TenantInfo())
        let policies = try decode(NamespacePolicies.self, "{}")
        #expect(policies.schemaCompatibilityStrategy == .undefined)
        #expect(policies.backlogQuotas.isEmpty)
        #expect(policies.retention == nil && policies.messageTTLSeconds == nil && policies.deduplicationEnabled == nil)
    }

    @Test func pulsarShapedPoliciesDecode() throws {
        let json = """
            {"retention_policies": {"retentionTimeInMinutes": 60, "retentionSizeInMB": -1},
             "message_ttl_in_seconds": 120,
             "backlog_quota_map": {"destination_storage": {"limitSize": 1048576, "limitTime": -1, "policy": "producer_exception"},
                                   "message_age": {"limit": 5, "policy": "consumer_backlog_eviction"}},
             "autoTopicCreationOverride": {"allowAutoTopicCreation": true, "topicType": "partitioned", "defaultNumPartitions": 4},
             "deduplicationEnabled": true,
             "schema_compatibility_strategy": "BACKWARD_TRANSITIVE",
             "max_producers_per_topic": 3, "max_consumers_per_topic": 7,
             "replication_clusters": ["standalone"], "bundles": {"numBundles": 4}}
            """
        let policies = try decode(NamespacePolicies.self, json)
        #expect(policies.retention == RetentionPolicies(retentionTimeInMinutes: 60, retentionSizeInMB: -1))
        #expect(policies.messageTTLSeconds == 120)
        #expect(policies.backlogQuota(.destinationStorage) == BacklogQuota(limitSizeBytes: 1_048_576, policy: .producerException))
        // Pulsar before 2.8 wrote the size limit as `limit`.
        #expect(policies.backlogQuota(.messageAge) == BacklogQuota(limitSizeBytes: 5, policy: .consumerBacklogEviction))
        #expect(policies.autoTopicCreation == AutoTopicCreationOverride(
            allowAutoTopicCreation: true, topicType: .partitioned, defaultNumPartitions: 4))
        #expect(policies.deduplicationEnabled == true)
        #expect(policies.schemaCompatibilityStrategy == .backwardTransitive)
        #expect(policies.maxProducersPerTopic == 3 && policies.maxConsumersPerTopic == 7)
        #expect(try roundTrip(policies) == policies)
        try policies.validate()
    }

    @Test func encodesPulsarFieldNames() throws {
        var policies = NamespacePolicies()
        policies.retention = RetentionPolicies(retentionTimeInMinutes: 10, retentionSizeInMB: 20)
        policies.backlogQuotas["destination_storage"] = BacklogQuota(limitSizeBytes: 100, policy: .producerRequestHold)
        let object = try #require(
            JSONSerialization.jsonObject(with: JSONEncoder().encode(policies)) as? [String: Any])
        #expect(Set(object.keys) == [
            "retention_policies", "message_ttl_in_seconds", "backlog_quota_map", "autoTopicCreationOverride",
            "deduplicationEnabled", "schema_compatibility_strategy", "max_producers_per_topic", "max_consumers_per_topic",
            "persistence", "auth_policies", "publishMaxMessageRate", "topicDispatchRate", "max_topics_per_namespace",
            "is_allow_auto_update_schema", "schema_validation_enforced", "compaction_threshold",
            "offload_threshold", "offload_deletion_lag_ms", "offload_policies", "replication_clusters",
        ])
        #expect(object["schema_validation_enforced"] as? Bool == false)
        #expect(object["message_ttl_in_seconds"] is NSNull)
        let quota = try #require((object["backlog_quota_map"] as? [String: Any])?["destination_storage"] as? [String: Any])
        #expect(quota["policy"] as? String == "producer_request_hold")
        #expect(quota["limitSize"] as? Int == 100)
        #expect(quota["limitTime"] as? Int == -1)
        let tenant = try #require(
            JSONSerialization.jsonObject(with: JSONEncoder().encode(TenantInfo(adminRoles: ["ops"], allowedClusters: ["standalone"])))
                as? [String: [String]])
        #expect(tenant == ["adminRoles": ["ops"], "allowedClusters": ["standalone"]])
    }

    @Test func badValuesAreRefused() throws {
        #expect(throws: DecodingError.self) {
            try decode(NamespacePolicies.self, #"{"schema_compatibility_strategy": "SOMETIMES"}"#)
        }
        #expect(throws: DecodingError.self) {
            try decode(BacklogQuota.self, #"{"limitSize": 1, "policy": "drop_everything"}"#)
        }
        #expect(throws: DecodingError.self) {
            try decode(AutoTopicCreationOverride.self, #"{"topicType": "partitioned"}"#)
        }
        var policies = NamespacePolicies()
        policies.autoTopicCreation = AutoTopicCreationOverride(allowAutoTopicCreation: true, topicType: .partitioned)
        #expect(throws: BrokerError.self) { try policies.validate() }
        policies = NamespacePolicies(messageTTLSeconds: -5)
        #expect(throws: BrokerError.self) { try policies.validate() }
        policies = NamespacePolicies(backlogQuotas: ["nonsense": BacklogQuota(policy: .producerException)])
        #expect(throws: BrokerError.self) { try policies.validate() }
    }
}

/// Every error becomes one HTTP status and a JSON reason, in one place.
@Suite struct AdminErrorTests {
    @Test func brokerErrorCodesMapToStatuses() {
        let cases: [(BrokerError.Code, Int)] = [
            (.notFound, 404), (.topicNotFound, 404), (.subscriptionNotFound, 404), (.conflict, 409),
            (.producerBusy, 409), (.preconditionFailed, 412), (.consumerBusy, 412), (.badRequest, 400),
            (.invalidTopicName, 400), (.notAllowed, 405), (.tooManyRequests, 429), (.serviceNotReady, 503),
            (.metadata, 500), (.persistence, 500), (.unknown, 500),
        ]
        for (code, status) in cases {
            let error = AdminError(mapping: BrokerError(code, "why"))
            #expect(error.status.code == status, "\(code)")
            #expect(error.reason == "why")
        }
    }

    @Test func decodingErrorsAreBadRequests() throws {
        do {
            _ = try JSONDecoder().decode(NamespacePolicies.self, from: Data("{not json".utf8))
            Issue.record("decoded bad JSON")
        } catch {
            let mapped = AdminError(mapping: error)
            #expect(mapped.status == .badRequest)
            #expect(mapped.reason.hasPrefix("Invalid JSON"))
        }
        #expect(AdminError(mapping: AdminError(status: .conflict, reason: "x")) == AdminError(status: .conflict, reason: "x"))
        struct Other: Error {}
        #expect(AdminError(mapping: Other()).status == .internalServerError)
    }
}
