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
