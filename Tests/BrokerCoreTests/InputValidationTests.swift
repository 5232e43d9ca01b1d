import BrokerCore
import ManagedLedger
import Testing

/// Values from the network, from disk or from an operator never trap (issue 12, faults 1-5).
@Suite struct InputValidationTests {
    @Test func saturatingArithmeticStopsAtTheBounds() {
        #expect(Int64.max.saturatingAdd(1) == .max)
        #expect(Int64.min.saturatingAdd(-1) == .min)
        #expect(Int64(5).saturatingAdd(-7) == -2)
        #expect(Int64(1_000).saturatingSubtract(Int64.min) == .max)
        #expect(Int64.min.saturatingSubtract(1) == .min)
        #expect(Int64(10).saturatingSubtract(3) == 7)
        #expect(Int64(100_000_000_000_000_000).saturatingMultiply(1_000) == .max)
        #expect(Int64(-100_000_000_000_000_000).saturatingMultiply(1_000) == .min)
        #expect(Int64(6).saturatingMultiply(-7) == -42)
    }

    @Test(arguments: [
        "persistent://public/default/a/b", "persistent://public/default/..", "persistent://public/default/.",
        "persistent://public/default/nul\u{0}", "persistent://public/default/line\nbreak",
        "persistent://pub lic/default/t", "persistent://public/def%ault/t", "tenant/ns/a/b",
    ])
    func badTopicNamesAreRefused(_ raw: String) {
        #expect(throws: BrokerError.self) { try TopicName(parsing: raw) }
    }

    @Test(arguments: [
        "persistent://public/default/events", "non-persistent://a-b/c.d=e:f_g/topic-partition-3",
        "persistent://public/default/ünïcödé and spaces", "my-topic", "t/n/x..y",
    ])
    func goodTopicNamesParse(_ raw: String) throws {
        _ = try TopicName(parsing: raw)
    }

    @Test func policyValuesOutOfRangeAreRefused() {
        let tooLarge: [NamespacePolicies] = [
            NamespacePolicies(messageTTLSeconds: 100_000_000_000_000_000),
            NamespacePolicies(retention: RetentionPolicies(retentionTimeInMinutes: 1_000_000_000_000_000)),
            NamespacePolicies(retention: RetentionPolicies(retentionSizeInMB: 10_000_000_000_000)),
            NamespacePolicies(backlogQuotas: [
                "message_age": BacklogQuota(limitTimeSeconds: 100_000_000_000_000_000, policy: .producerException),
            ]),
        ]
        for policies in tooLarge {
            #expect(throws: BrokerError.self) { try policies.validate() }
        }
        let largest = NamespacePolicies(
            retention: RetentionPolicies(
                retentionTimeInMinutes: PolicyLimits.maxRetentionTimeMinutes, retentionSizeInMB: PolicyLimits.maxRetentionSizeMB),
            messageTTLSeconds: Int(PolicyLimits.maxMessageTTLSeconds),
            backlogQuotas: ["message_age": BacklogQuota(
                limitSizeBytes: .max, limitTimeSeconds: PolicyLimits.maxBacklogQuotaLimitTimeSeconds, policy: .producerException)])
        #expect(throws: Never.self) { try largest.validate() }
    }
}
