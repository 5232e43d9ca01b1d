@testable import BrokerCore
import ManagedLedger
import Testing

/// The token buckets behind `publishRate` and `dispatchRate`, on a clock passed in.
@Suite struct RateLimiterTests {
    let second: UInt64 = 1_000_000_000

    @Test func aSecondsWorthPassesThenDebtPausesForItsDuration() {
        var bucket = TokenBucket(limit: RateLimit(messagesPerSecond: 10, bytesPerSecond: -1), nowNanos: 0)
        for _ in 0..<10 { #expect(bucket.consume(messages: 1, bytes: 100, nowNanos: 0) == nil) }
        // The 11th message puts the bucket one message (0.1 s) into debt.
        let wait = bucket.consume(messages: 1, bytes: 100, nowNanos: 0)
        #expect(wait.map { $0 >= second / 10 && $0 <= second / 10 + 1 } == true)
        #expect(bucket.wait(second / 10 + 1) == nil)
        // Half a second refills five.
        for _ in 0..<5 { #expect(bucket.consume(messages: 1, bytes: 0, nowNanos: second * 6 / 10 + 1) == nil) }
        #expect(bucket.consume(messages: 1, bytes: 0, nowNanos: second * 6 / 10 + 1) != nil)
    }

    @Test func bytesLimitIndependentlyAndTheStrictestWins() {
        var bucket = TokenBucket(limit: RateLimit(messagesPerSecond: 1000, bytesPerSecond: 1000), nowNanos: 0)
        #expect(bucket.consume(messages: 1, bytes: 1000, nowNanos: 0) == nil)
        let wait = bucket.consume(messages: 1, bytes: 2000, nowNanos: 0)
        #expect(wait.map { $0 >= 2 * second } == true)
    }

    @Test func aHugeDebtIsWaitedOffInBoundedSteps() {
        var bucket = TokenBucket(limit: RateLimit(messagesPerSecond: 1, bytesPerSecond: 0), nowNanos: 0)
        #expect(bucket.consume(messages: 1000, bytes: 0, nowNanos: 0) == TokenBucket.maxWaitNanos)
        #expect(bucket.wait(TokenBucket.maxWaitNanos) == TokenBucket.maxWaitNanos)
    }

    @Test func idleTimeDoesNotBankMoreThanASecond() {
        var bucket = TokenBucket(limit: RateLimit(messagesPerSecond: 5, bytesPerSecond: 0), nowNanos: 0)
        for _ in 0..<5 { _ = bucket.consume(messages: 1, bytes: 0, nowNanos: 100 * second) }
        #expect(bucket.consume(messages: 1, bytes: 0, nowNanos: 100 * second) != nil)
    }

    @Test func theLimiterIsOffUntilConfiguredAndKeepsItsDebtAcrossChanges() {
        let limiter = RateLimiter()
        #expect(limiter.consume(messages: 1_000_000, bytes: 1 << 30, nowNanos: 0) == nil)
        limiter.configure(RateLimit(messagesPerSecond: 10, bytesPerSecond: -1), nowNanos: 0)
        #expect(limiter.consume(messages: 20, bytes: 0, nowNanos: 0) != nil)
        // The same limit again (the policy pass runs every second) keeps the debt.
        limiter.configure(RateLimit(messagesPerSecond: 10, bytesPerSecond: -1), nowNanos: 0)
        #expect(limiter.wait(nowNanos: 0) != nil)
        limiter.configure(RateLimit(messagesPerSecond: -1, bytesPerSecond: 0), nowNanos: 0)
        #expect(limiter.limit == nil)
        #expect(limiter.wait(nowNanos: 0) == nil)
    }

    @Test func pulsarRatesBecomeLimits() {
        #expect(PublishRate(messages: 100, bytes: -1).limit == RateLimit(messagesPerSecond: 100, bytesPerSecond: -1))
        #expect(DispatchRate(messages: 60, bytes: 600, periodSeconds: 2).limit == RateLimit(messagesPerSecond: 30, bytesPerSecond: 300))
        var policies = NamespacePolicies()
        policies.publishRate = PublishRate(messages: -1, bytes: -1)
        #expect(EffectivePolicies(policies).publishRate == nil)
        policies.dispatchRate = DispatchRate(messages: 5, bytes: -1)
        #expect(EffectivePolicies(policies).dispatchRate == RateLimit(messagesPerSecond: 5, bytesPerSecond: -1))
        policies.dispatchRate?.ratePeriodInSecond = 0
        #expect(throws: BrokerError.self) { try policies.validate() }
    }
}
