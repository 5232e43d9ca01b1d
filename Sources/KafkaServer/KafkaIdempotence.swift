import BrokerCore
import KafkaProtocol
import NIOConcurrencyHelpers
import NIOCore

/// The idempotent producer's state per partition (Kafka's producer state manager): for each
/// producer id its epoch, the last sequence number taken and the last five batches with their
/// offsets. A batch repeating one of those (a client's retry) is answered with the original's
/// offset and not written again; a gap in the sequence is OUT_OF_ORDER_SEQUENCE_NUMBER, an older
/// epoch INVALID_PRODUCER_EPOCH. Kept in memory: after a restart a producer's next batch starts
/// its state anew (a retry that crosses a restart can be written twice).
final class KafkaIdempotence: Sendable {
    private let tables = NIOLockedValueBox<[TopicName: PartitionProducers]>([:])

    /// The table of one partition (created on first use), used on the topic's loop only.
    func table(for topic: Topic) -> PartitionProducers {
        tables.withLockedValue { tables in
            if let table = tables[topic.name] { return table }
            let table = PartitionProducers()
            tables[topic.name] = table
            return table
        }
    }
}

/// One partition's producers; a state machine over pure values, used on the topic's loop.
final class PartitionProducers: @unchecked Sendable {
    /// Batches remembered per producer (Kafka keeps five: `max.in.flight.requests.per.connection`).
    static let batchesKept = 5
    /// Producer ids remembered per partition; the one idle longest is forgotten past it.
    static let maxProducers = 10_000

    struct Batch {
        var firstSequence: Int32
        var lastSequence: Int32
        var offset: EventLoopFuture<Int64>
    }

    struct Producer {
        var epoch: Int16
        var lastSequence: Int32
        var batches: [Batch]
        var lastUse: UInt64
    }

    enum Verdict {
        case write
        case duplicate(EventLoopFuture<Int64>)
        case refuse(KafkaErrorCode, String)
    }

    private(set) var producers: [Int64: Producer] = [:]
    private var uses: UInt64 = 0

    /// The next sequence number after `sequence` (they wrap at Int32.max).
    static func after(_ sequence: Int32) -> Int32 { sequence == Int32.max ? 0 : sequence + 1 }

    func check(producerID: Int64, epoch: Int16, firstSequence: Int32, lastSequence: Int32) -> Verdict {
        guard let producer = producers[producerID] else { return .write }
        if epoch < producer.epoch {
            return .refuse(.invalidProducerEpoch, "producer \(producerID) epoch \(epoch) is older than \(producer.epoch)")
        }
        if epoch > producer.epoch { return .write }
        if let earlier = producer.batches.first(where: { $0.firstSequence == firstSequence && $0.lastSequence == lastSequence }) {
            return .duplicate(earlier.offset)
        }
        guard firstSequence == Self.after(producer.lastSequence) else {
            return .refuse(
                .outOfOrderSequenceNumber,
                "producer \(producerID) sent sequence \(firstSequence) after \(producer.lastSequence)")
        }
        return .write
    }

    /// Records a batch that `check` let through, its offset to come.
    func record(producerID: Int64, epoch: Int16, firstSequence: Int32, lastSequence: Int32, offset: EventLoopFuture<Int64>) {
        uses += 1
        var producer = producers[producerID] ?? Producer(epoch: epoch, lastSequence: -1, batches: [], lastUse: uses)
        if epoch > producer.epoch { producer = Producer(epoch: epoch, lastSequence: -1, batches: [], lastUse: uses) }
        producer.lastSequence = lastSequence
        producer.batches.append(Batch(firstSequence: firstSequence, lastSequence: lastSequence, offset: offset))
        if producer.batches.count > Self.batchesKept { producer.batches.removeFirst() }
        producer.lastUse = uses
        producers[producerID] = producer
        if producers.count > Self.maxProducers, let idle = producers.min(by: { $0.value.lastUse < $1.value.lastUse })?.key {
            producers[idle] = nil
        }
    }

    /// A recorded batch was not stored: it and what came after it are forgotten, so the client's
    /// retry is written.
    func failed(producerID: Int64, epoch: Int16, firstSequence: Int32) {
        guard var producer = producers[producerID], producer.epoch == epoch,
              let index = producer.batches.firstIndex(where: { $0.firstSequence == firstSequence })
        else { return }
        producer.batches.removeSubrange(index...)
        producer.lastSequence = firstSequence == 0 ? -1 : firstSequence - 1
        producers[producerID] = producer
    }
}
