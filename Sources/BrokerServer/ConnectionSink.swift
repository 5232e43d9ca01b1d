import BrokerCore
import NIOCore
import PulsarProtocol

/// The bridge from topics (on their event loops) to one client connection: encodes MESSAGE,
/// CLOSE_CONSUMER, CLOSE_PRODUCER and ACTIVE_CONSUMER_CHANGE frames and writes them to the channel.
///
/// Thread-safe: `Channel.write` may be called from any thread. A MESSAGE is written as two
/// buffers — a small head (size, command, magic, checksum) and a slice of the stored entry — so
/// the payload is never copied on the way out.
final class ConnectionSink: ConsumerSink, ProducerSink, @unchecked Sendable {
    let channel: any Channel
    /// Called on the channel's event loop when the broker closes a consumer (seek), so the
    /// connection forgets it before the client re-subscribes with the same id.
    let onConsumerClosedByBroker: @Sendable (UInt64) -> Void

    init(channel: any Channel, onConsumerClosedByBroker: @escaping @Sendable (UInt64) -> Void) {
        self.channel = channel
        self.onConsumerClosedByBroker = onConsumerClosedByBroker
    }

    func sendMessage(
        consumerID: UInt64, position: Position, partitionIndex: Int32, redeliveryCount: UInt32, ackSet: [Int64]?,
        entry: Entry
    ) {
        var body = entry.body
        guard let checksum = body.readInteger(as: UInt32.self) else { return }
        var head = channel.allocator.buffer(capacity: 64)
        // Hand-encoded (no SwiftProtobuf message per delivered entry).
        MessageHeadEncoder.write(
            consumerID: consumerID, ledgerID: position.ledgerID, entryID: position.entryID, partition: partitionIndex,
            redeliveryCount: redeliveryCount, ackSet: ackSet, checksum: checksum,
            checksummedBytesCount: body.readableBytes, into: &head)
        // Head and body must reach the socket back to back: writes from other threads (receipts
        // from other topics' loops) must not land between them, so both go in one task on the
        // channel's loop.
        let channel = self.channel
        if channel.eventLoop.inEventLoop {
            channel.write(head, promise: nil)
            channel.write(body, promise: nil)
        } else {
            channel.eventLoop.execute {
                channel.write(head, promise: nil)
                channel.write(body, promise: nil)
            }
        }
    }

    func flush() {
        channel.flush()
    }

    func closeConsumerByBroker(consumerID: UInt64) {
        let channel = self.channel
        let onClosed = onConsumerClosedByBroker
        channel.eventLoop.execute {
            onClosed(consumerID)
            let command = Commands.base(.closeConsumer) {
                $0.closeConsumer.consumerID = consumerID
                $0.closeConsumer.requestID = 0
            }
            channel.writeAndFlush(PulsarFrameEncoder.encodeCommand(command, allocator: channel.allocator), promise: nil)
        }
    }

    var isConnected: Bool { channel.isActive }

    func closeProducerByBroker(producerID: UInt64) {
        let command = Commands.base(.closeProducer) {
            $0.closeProducer.producerID = producerID
            $0.closeProducer.requestID = 0
        }
        channel.writeAndFlush(PulsarFrameEncoder.encodeCommand(command, allocator: channel.allocator), promise: nil)
    }

    func activeConsumerChanged(consumerID: UInt64, isActive: Bool) {
        let command = Commands.base(.activeConsumerChange) {
            $0.activeConsumerChange.consumerID = consumerID
            $0.activeConsumerChange.isActive = isActive
        }
        channel.writeAndFlush(PulsarFrameEncoder.encodeCommand(command, allocator: channel.allocator), promise: nil)
    }
}
