import BrokerCore
import ManagedLedger
import NIOCore
import PulsarProtocol

/// The SENDs of one socket read for one topic, on their way to `PublishBatch`: entries encoded back
/// to back into one buffer (the payload's single copy), with what each receipt needs. A value owned
/// by the connection's handler, on its loop.
struct StagedPublishes {
    /// Who answers one SEND: the ids its receipt carries.
    struct Send {
        var producerID: UInt64
        var sequenceID: UInt64
    }

    let topic: any ServedTopic
    private(set) var buffer: ByteBuffer
    let receivedAt: NIODeadline
    private(set) var attributes: [EntryAttributes] = []
    private(set) var sends: [Send] = []
    /// Where each entry ends in `buffer` (it starts where the previous one ends).
    private var ends: [Int] = []

    init(topic: any ServedTopic, buffer: ByteBuffer, receivedAt: NIODeadline) {
        self.topic = topic
        self.buffer = buffer
        self.receivedAt = receivedAt
    }

    /// Encodes one entry (header, then what `writeBody` writes) after the previous ones.
    mutating func add(
        attributes: EntryAttributes, producerID: UInt64, sequenceID: UInt64, writeBody: (inout ByteBuffer) -> Void
    ) {
        Entry.write(attributes: attributes, into: &buffer, writeBody: writeBody)
        ends.append(buffer.writerIndex)
        self.attributes.append(attributes)
        sends.append(Send(producerID: producerID, sequenceID: sequenceID))
    }

    /// One slice of the staged bytes per entry (they share one storage). The slices live on in the
    /// tail cache and the store's queue and keep that whole storage alive, so when the buffer was
    /// sized for far more than was staged (the read went on with SENDs for other topics: with one
    /// connection for many producers, every topic's first entry of a read would otherwise pin a
    /// buffer the size of the read), the staged bytes move to an exact-size buffer first.
    func entries(allocator: ByteBufferAllocator) -> [ByteBuffer] {
        var staged = buffer
        let used = staged.readableBytes
        if staged.capacity > 2 * used + 4096 {
            var exact = allocator.buffer(capacity: used)
            exact.writeBuffer(&staged)
            staged = exact
        }
        var entries: [ByteBuffer] = []
        entries.reserveCapacity(ends.count)
        let base = buffer.readerIndex
        var start = 0
        for end in ends {
            entries.append(staged.getSlice(at: staged.readerIndex + start, length: end - base - start)!)
            start = end - base
        }
        return entries
    }
}

/// Answers the SENDs of one `PublishBatch`: a SEND_RECEIPT (encoded by hand straight into the
/// connection's reply buffer) or a SEND_ERROR per entry. Called on the topic's loop.
final class SendReplies: PublishReplier, @unchecked Sendable {
    private let outbox: ReplyOutbox
    private let partition: Int32
    private let receivedAt: NIODeadline
    private let sends: [StagedPublishes.Send]
    private let allocator: ByteBufferAllocator

    init(outbox: ReplyOutbox, partition: Int32, receivedAt: NIODeadline, sends: [StagedPublishes.Send], allocator: ByteBufferAllocator) {
        self.outbox = outbox
        self.partition = partition
        self.receivedAt = receivedAt
        self.sends = sends
        self.allocator = allocator
    }

    func published(index: Int, result: Result<Position, BrokerError>) {
        let send = sends[index]
        switch result {
        case .success(let position):
            BrokerMetrics.publishLatency.recordNanoseconds((NIODeadline.now() - receivedAt).nanoseconds)
            let partition = self.partition
            outbox.post { buffer in
                SendReceiptEncoder.write(
                    producerID: send.producerID, sequenceID: send.sequenceID, ledgerID: position.ledgerID,
                    entryID: position.entryID, partition: partition, into: &buffer)
            }
        case .failure(let error):
            var command = Pulsar_Proto_BaseCommand()
            command.type = .sendError
            command.sendError.producerID = send.producerID
            command.sendError.sequenceID = send.sequenceID
            command.sendError.error = ServerErrors.serverError(for: error)
            command.sendError.message = ServerErrors.message(for: error)
            outbox.post(PulsarFrameEncoder.encodeCommand(command, allocator: allocator))
        }
    }
}
