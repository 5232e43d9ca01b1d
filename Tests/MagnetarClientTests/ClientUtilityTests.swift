import NIOCore
import Testing

@testable import MagnetarClient

/// Key routing must put a key on the same partition as the official Python/C++ client (BoostHash).
@Suite struct PartitionRoutingTests {
    @Test func boostHashMatchesTheReferenceValues() {
        // boost::hash<std::string> (Boost >= 1.83, 64-bit) & INT32_MAX, computed from the algorithm's definition.
        #expect(KeyHash.boostHash("a") == 2_135_870_748)
        #expect(KeyHash.boostHash("hello") == 1_742_291_129)
        #expect(KeyHash.boostHash("abcdefgh") == 1_534_298_190)  // exactly one 8-byte block
        #expect(KeyHash.boostHash("xxxxxxxxxxxxxxxxx") == 558_514_235)  // two blocks + a 1-byte tail
        #expect(KeyHash.boostHash("") == 2_133_126_054)
    }

    @Test func partitionsMatchPulsarClient313() {
        // Partitions pulsar-client 3.13.0 chose for these keys on a 7-partition topic.
        let expected: [String: Int] = [
            "a": 4, "b": 1, "key-1": 2, "key-2": 2, "hello": 5, "order-42": 6, "abcdefgh": 5, "xxxxxxxxxxxxxxxxx": 6,
            "ключ": 4, "k0": 3, "k1": 6, "k2": 1, "k3": 2, "k10": 5, "k12": 0, "k19": 1,
        ]
        for (key, partition) in expected {
            #expect(KeyHash.partition(forKey: key, partitions: 7) == partition, "key \(key)")
        }
    }

    @Test func roundRobinWithoutBatchingVisitsEveryPartition() {
        var router = PartitionRouter(
            partitions: 3, mode: .roundRobin, isBatching: false, batchingMaxMessages: 0, batchingMaxBytes: 0,
            batchingMaxPublishDelayMs: 1, startCursor: 5)
        let picks = (0..<6).map { _ in router.partition(key: nil, sizeBytes: 10, nowMs: 0) }
        #expect(picks == [2, 0, 1, 2, 0, 1])
        #expect(router.partition(key: "a", sizeBytes: 10, nowMs: 0) == KeyHash.partition(forKey: "a", partitions: 3))
        #expect(router.partition(key: "", sizeBytes: 10, nowMs: 0) == 2, "an empty key counts as no key")
    }

    @Test func roundRobinWithBatchingSticksForABatch() {
        var router = PartitionRouter(
            partitions: 4, mode: .roundRobin, isBatching: true, batchingMaxMessages: 3, batchingMaxBytes: 1000,
            batchingMaxPublishDelayMs: 10, startCursor: 0, nowMs: 0)
        let picks = (0..<7).map { _ in router.partition(key: nil, sizeBytes: 10, nowMs: 1) }
        #expect(picks == [0, 0, 0, 1, 1, 1, 2])
        #expect(router.partition(key: nil, sizeBytes: 10, nowMs: 50) == 3, "the publish delay moves on")
        #expect(router.partition(key: nil, sizeBytes: 995, nowMs: 50) == 0, "so does a full batch by bytes")
    }

    @Test func singlePartitionModeKeepsOnePartition() {
        var router = PartitionRouter(
            partitions: 5, mode: .singlePartition, isBatching: false, batchingMaxMessages: 0, batchingMaxBytes: 0,
            batchingMaxPublishDelayMs: 1, startCursor: 7)
        #expect((0..<5).map { _ in router.partition(key: nil, sizeBytes: 1, nowMs: 0) } == [2, 2, 2, 2, 2])
    }
}

/// The reconnection delays: 100 ms doubling to the cap, minus up to 9 % jitter, never below the initial delay.
@Suite struct BackoffTests {
    @Test func doublesUpToTheMaximum() {
        var backoff = Backoff(initial: .milliseconds(100), max: .seconds(30))
        let delays = (0..<12).map { _ in backoff.nextDelay(jitterPercent: 0).nanoseconds / 1_000_000 }
        #expect(delays == [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000])
        backoff.reset()
        #expect(backoff.nextDelay(jitterPercent: 0) == .milliseconds(100))
    }

    @Test func jitterShavesAtMostNinePercent() {
        var backoff = Backoff()
        #expect(backoff.nextDelay(jitterPercent: 9) == .milliseconds(100), "never below the initial delay")
        #expect(backoff.nextDelay(jitterPercent: 9) == .milliseconds(182))
        for _ in 0..<20 {
            let delay = backoff.nextDelay()
            #expect(delay <= Backoff.defaultMax && delay >= .nanoseconds(Backoff.defaultMax.nanoseconds / 100 * 91) || delay < .seconds(60))
        }
    }
}

/// Service URLs with several brokers: lookups fail over between them.
@Suite struct ServiceURLTests {
    @Test func parsesEveryAddress() throws {
        let addresses = try PulsarClient.parseAll(url: "pulsar://a:6651,b,c:7000/")
        #expect(addresses.map(\.host) == ["a", "b", "c"])
        #expect(addresses.map(\.port) == [6651, 6650, 7000])
        #expect(throws: PulsarClientError.self) { try PulsarClient.parseAll(url: "pulsar://a:1,:2") }
        // TLS URLs: port 6651 by default.
        let tls = try PulsarClient.parseAll(url: "pulsar+ssl://a,b:7001")
        #expect(tls.map(\.port) == [6651, 7001])
        #expect(throws: PulsarClientError.self) { try PulsarClient.parseAll(url: "http://a:8080") }
    }
}
