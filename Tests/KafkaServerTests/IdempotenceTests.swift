import KafkaProtocol
import NIOCore
import NIOEmbedded
import Testing

@testable import KafkaServer

/// The idempotent producer's per-partition state machine.
@Suite struct IdempotenceTests {
    let loop = EmbeddedEventLoop()

    func offset(_ value: Int64) -> EventLoopFuture<Int64> { loop.makeSucceededFuture(value) }

    @Test func entriesNameTheirProducerAndEpoch() {
        let name = PartitionProducers.producerName(producerID: 4_000_000_001, epoch: 7)
        #expect(name == "kafka-pid-4000000001-7")
        #expect(PartitionProducers.identity(ofProducerName: name)! == (4_000_000_001, 7))
        for other in ["kafka-my-app", "kafka-pid-", "kafka-pid-12", "kafka-pid-x-1", "kafka-pid-1-2-3", "kafka-pid-1-70000", ""] {
            #expect(PartitionProducers.identity(ofProducerName: other) == nil, "\(other)")
        }
    }

    @Test func sequencesRunOnAndRetriesAreDuplicates() throws {
        let table = PartitionProducers()
        guard case .write = table.check(producerID: 7, epoch: 0, firstSequence: 0, lastSequence: 9) else { Issue.record("first batch"); return }
        table.record(producerID: 7, epoch: 0, firstSequence: 0, lastSequence: 9, offset: offset(100))
        guard case .write = table.check(producerID: 7, epoch: 0, firstSequence: 10, lastSequence: 14) else { Issue.record("next batch"); return }
        table.record(producerID: 7, epoch: 0, firstSequence: 10, lastSequence: 14, offset: offset(110))
        // A retry of either is answered with its original offset.
        guard case .duplicate(let original) = table.check(producerID: 7, epoch: 0, firstSequence: 0, lastSequence: 9) else {
            Issue.record("retry not a duplicate"); return
        }
        #expect(try original.wait() == 100)
        // A gap, and an older epoch, are refused.
        guard case .refuse(let gap, _) = table.check(producerID: 7, epoch: 0, firstSequence: 20, lastSequence: 20) else { Issue.record("gap"); return }
        #expect(gap == .outOfOrderSequenceNumber)
        table.record(producerID: 7, epoch: 1, firstSequence: 0, lastSequence: 0, offset: offset(115))
        guard case .refuse(let fenced, _) = table.check(producerID: 7, epoch: 0, firstSequence: 15, lastSequence: 15) else { Issue.record("epoch"); return }
        #expect(fenced == .invalidProducerEpoch)
        // Other producers are independent.
        guard case .write = table.check(producerID: 8, epoch: 0, firstSequence: 0, lastSequence: 0) else { Issue.record("other producer"); return }
    }

    @Test func onlyTheLastFiveBatchesAreRemembered() {
        let table = PartitionProducers()
        for batch in 0..<7 {
            table.record(producerID: 1, epoch: 0, firstSequence: Int32(batch), lastSequence: Int32(batch), offset: offset(Int64(batch)))
        }
        if case .duplicate = table.check(producerID: 1, epoch: 0, firstSequence: 1, lastSequence: 1) { Issue.record("batch 1 still remembered") }
        guard case .duplicate = table.check(producerID: 1, epoch: 0, firstSequence: 2, lastSequence: 2) else { Issue.record("batch 2 forgotten"); return }
    }

    @Test func aFailedBatchIsWrittenOnRetry() {
        let table = PartitionProducers()
        table.record(producerID: 3, epoch: 0, firstSequence: 0, lastSequence: 4, offset: offset(0))
        table.record(producerID: 3, epoch: 0, firstSequence: 5, lastSequence: 9, offset: offset(5))
        table.failed(producerID: 3, epoch: 0, firstSequence: 5)
        guard case .write = table.check(producerID: 3, epoch: 0, firstSequence: 5, lastSequence: 9) else { Issue.record("retry refused"); return }
    }

    @Test func sequencesWrap() {
        #expect(PartitionProducers.after(Int32.max) == 0)
        let table = PartitionProducers()
        table.record(producerID: 4, epoch: 0, firstSequence: Int32.max - 1, lastSequence: Int32.max, offset: offset(0))
        guard case .write = table.check(producerID: 4, epoch: 0, firstSequence: 0, lastSequence: 3) else { Issue.record("wrap refused"); return }
    }
}
