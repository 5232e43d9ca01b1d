import BrokerCore
import KafkaProtocol
import NIOConcurrencyHelpers
import NIOCore

/// The idempotent producer's state per partition (Kafka's producer state manager): for each
/// producer id its epoch, the last sequence number taken and the last five batches with their
/// offsets. A batch repeating one of those (a client's retry) is answered with the original's
/// offset and not written again; a gap in the sequence is OUT_OF_ORDER_SEQUENCE_NUMBER, an older
/// epoch INVALID_PRODUCER_EPOCH. The state is rebuilt from the end of the partition's log before
/// its first idempotent batch is checked (every idempotent entry names its producer id and epoch
/// in its Pulsar producer name, `kafka-pid-<id>-<epoch>`, with its first sequence as the sequence
/// id), so a retry after a restart or a failover to another broker is still answered as one.
final class KafkaIdempotence: Sendable {
    /// A loaded topic's table; a topic loaded again (here after another broker served it, say)
    /// gets a new one, rebuilt from the log as it is then.
    private struct Slot {
        weak var topic: Topic?
        var table: PartitionProducers
    }

    private let tables = NIOLockedValueBox<[TopicName: Slot]>([:])

    /// The table of one partition (created on first use), used on the topic's loop only.
    func table(for topic: Topic) -> PartitionProducers {
        tables.withLockedValue { tables in
            if let slot = tables[topic.name], slot.topic === topic { return slot.table }
            let table = PartitionProducers()
            tables[topic.name] = Slot(topic: topic, table: table)
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

    /// Whether the state was rebuilt from the log; until then checks wait in `waiting`, in order.
    private(set) var ready = false
    private var rebuilding = false
    private var waiting: [() -> Void] = []

    /// Messages at the end of the log the rebuild reads (Kafka keeps the last five batches per producer).
    static let rebuildMessages: Int64 = 50_000
    static let rebuildMaxEntries = 5_000

    /// The Pulsar producer name of an idempotent producer's entries.
    static func producerName(producerID: Int64, epoch: Int16) -> String { "kafka-pid-\(producerID)-\(epoch)" }

    /// The producer id and epoch in a name `producerName(producerID:epoch:)` made.
    static func identity(ofProducerName name: String) -> (producerID: Int64, epoch: Int16)? {
        guard name.hasPrefix("kafka-pid-") else { return nil }
        let parts = name.dropFirst("kafka-pid-".count).split(separator: "-")
        guard parts.count == 2, let id = Int64(parts[0]), let epoch = Int16(parts[1]) else { return nil }
        return (id, epoch)
    }

    /// Runs `body` on the topic's loop once the state is rebuilt (at once when it is), starting the
    /// rebuild on first use. `body` runs on the loop, in the order of the calls.
    func whenReady(_ topic: Topic, _ body: @escaping () -> Void) {
        topic.eventLoop.preconditionInEventLoop()
        if ready { return body() }
        waiting.append(body)
        guard !rebuilding else { return }
        rebuilding = true
        let table = self
        Task {
            let recovered = await Self.recover(topic)
            topic.eventLoop.execute {
                for batch in recovered {
                    table.record(
                        producerID: batch.producerID, epoch: batch.epoch, firstSequence: batch.firstSequence,
                        lastSequence: batch.lastSequence, offset: topic.eventLoop.makeSucceededFuture(batch.offset))
                }
                table.ready = true
                table.rebuilding = false
                let waiting = table.waiting
                table.waiting = []
                for body in waiting { body() }
            }
        }
    }

    /// The idempotent batches of the last `rebuildMessages` messages of the log, oldest first. A
    /// log that cannot be read gives what was read (the producers start anew, as before).
    static func recover(_ topic: Topic) async -> [(producerID: Int64, epoch: Int16, firstSequence: Int32, lastSequence: Int32, offset: Int64)] {
        guard let bounds = await topic.offsetBounds(), bounds.next > bounds.first,
              let start = await topic.position(ofOffset: max(bounds.first, bounds.next - rebuildMessages))
        else { return [] }
        var recovered: [(producerID: Int64, epoch: Int16, firstSequence: Int32, lastSequence: Int32, offset: Int64)] = []
        var offset = start.firstOffset
        for (_, entry) in await topic.entries(from: start.position, maxEntries: rebuildMaxEntries, maxBytes: 256 * 1024 * 1024) {
            defer { offset += Int64(max(entry.attributes.numMessages, 1)) }
            // A transaction's marker names its producer but holds none of its batches.
            guard !entry.attributes.isMarker, let (name, sequence) = KafkaEntryCodec.producer(of: entry), let identity = identity(ofProducerName: name),
                  sequence >= 0, sequence <= Int64(Int32.max)
            else { continue }
            let first = Int32(sequence)
            let last = Int32(truncatingIfNeeded: sequence + Int64(max(entry.attributes.numMessages, 1)) - 1) & Int32.max
            recovered.append((identity.producerID, identity.epoch, first, last, offset))
        }
        return recovered
    }

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
