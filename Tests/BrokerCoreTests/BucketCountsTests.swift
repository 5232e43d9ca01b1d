import Testing

@testable import BrokerCore

@Suite struct BucketCountsTests {
    @Test func valuesLandInTheirBucketAndPastTheLastInOverflow() {
        var latency = BucketCounts(bounds: BucketCounts.writeLatencyBoundsMs)
        for value in [0.2, 0.5, 0.7, 3, 1000, 1000.1, 5000] { latency.record(value) }
        #expect(latency.counts == [2, 1, 1, 0, 0, 0, 0, 0, 1, 2])
        #expect(latency.count == 7)
        #expect(latency.sum == 0.2 + 0.5 + 0.7 + 3 + 1000 + 1000.1 + 5000)
        var sizes = BucketCounts(bounds: BucketCounts.entrySizeBounds)
        sizes.record(128)
        sizes.record(129)
        sizes.record(2_000_000)
        #expect(sizes.counts.first == 1 && sizes.counts[1] == 1 && sizes.counts.last == 1)
    }
}

@Suite struct RateMeterTests {
    @Test func ratesAreTheRisePerSecondOverTheWindow() {
        var meter = RateMeter()
        #expect(meter.rates.isEmpty)
        meter.sample([0, 0], nowNanos: 1_000_000_000)
        #expect(meter.rates == [0, 0])
        meter.sample([10, 100], nowNanos: 2_000_000_000)
        meter.sample([30, 300], nowNanos: 3_000_000_000)
        #expect(meter.rates == [15, 150])
        // Samples older than the window fall out: only the last 10 s count.
        meter.sample([30, 300], nowNanos: 14_000_000_000)
        #expect(meter.rates == [0, 0])
    }
}
