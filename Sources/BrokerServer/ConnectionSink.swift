import BrokerCore
import ManagedLedger
import NIOCore
import PulsarProtocol

/// The bridge from topics (on their event loops) to one client connection: encodes MESSAGE,
/// CLOSE_CONSUMER, CLOSE_PRODUCER and ACTIVE_CONSUMER_CHANGE frames and writes them to the channel.
///
/// Thread-safe: `Channel.write` may be called from any thread. A MESSAGE is written as two
/// buffers — a small head (size, command, magic, checksum) and a slice of the stored entry — so
/// the payload is never copied on the way out.
final class ConnectionSink: ConsumerSink, ProducerSink, ClientAddressed, @unchecked Sendable {
    let channel: any Channel
    /// The client's address as Pulsar's stats print it.
    var clientAddress: String {
        guard let remote = channel.remoteAddress, let ip = remote.ipAddress, let port = remote.port else { return "" }
        return "/\(ip):\(port)"
    }
    /// Called on the channel's event loop when the broker closes a consumer (seek), so the
    /// connection forgets it before the client re-subscribes with the same id.
    let onConsumerClosedByBroker: @Sendable (UInt64) -> Void

    init(channel: any Channel, onConsumerClosedByBroker: @escaping @Sendable (UInt64) -> Void) {
        self.channel = channel
        self.onConsumerClosedByBroker = onConsumerClosedByBroker
    }

    /// MESSAGE heads of the current dispatch pass, written back to back into one buffer, and the
    /// entry bodies they precede; `flush` slices the heads and writes head, body, head, body... in
    /// order. One head buffer per pass instead of one per delivered entry. Touched only on the
    /// channel's loop (a topic on another loop writes each message with one hop instead).
    private var stagedHeads: ByteBuffer?
    private var stagedHeadEnds: [Int] = []
    private var stagedBodies: [ByteBuffer] = []

    func sendMessage(
        consumerID: UInt64, position: Position, partitionIndex: Int32, redeliveryCount: UInt32, ackSet: [Int64]?,
        entry: Entry
    ) {
        var body = entry.body
        guard let checksum = body.readInteger(as: UInt32.self) else { return }
        let channel = self.channel
        guard channel.eventLoop.inEventLoop else {
            var head = channel.allocator.buffer(capacity: 64)
            Self.writeHead(consumerID, position, partitionIndex, redeliveryCount, ackSet, checksum, body, into: &head)
            // Head and body must reach the socket back to back: writes from other threads (receipts
            // from other topics' loops) must not land between them, so both go in one task.
            channel.eventLoop.execute {
                channel.write(head, promise: nil)
                channel.write(body, promise: nil)
            }
            return
        }
        if stagedHeads == nil {
            stagedHeads = channel.allocator.buffer(capacity: 4096)
        }
        Self.writeHead(consumerID, position, partitionIndex, redeliveryCount, ackSet, checksum, body, into: &stagedHeads!)
        stagedHeadEnds.append(stagedHeads!.writerIndex)
        stagedBodies.append(body)
    }

    private static func writeHead(
        _ consumerID: UInt64, _ position: Position, _ partitionIndex: Int32, _ redeliveryCount: UInt32, _ ackSet: [Int64]?,
        _ checksum: UInt32, _ body: ByteBuffer, into head: inout ByteBuffer
    ) {
        // Hand-encoded (no SwiftProtobuf message per delivered entry).
        MessageHeadEncoder.write(
            consumerID: consumerID, ledgerID: position.ledgerID, entryID: position.entryID, partition: partitionIndex,
            redeliveryCount: redeliveryCount, ackSet: ackSet, checksum: checksum,
            checksummedBytesCount: body.readableBytes, into: &head)
    }

    func flush() {
        if channel.eventLoop.inEventLoop, let heads = stagedHeads {
            stagedHeads = nil
            var start = heads.readerIndex
            for index in stagedBodies.indices {
                let end = stagedHeadEnds[index]
                channel.write(heads.getSlice(at: start, length: end - start)!, promise: nil)
                channel.write(stagedBodies[index], promise: nil)
                start = end
            }
            stagedHeadEnds.removeAll(keepingCapacity: true)
            stagedBodies.removeAll(keepingCapacity: true)
        }
        channel.flush()
        if channel.eventLoop.inEventLoop, let buffered = try? channel.syncOptions?.getOption(.bufferedWritableBytes),
           buffered > ConnectionLimits.maxOutboundBytesPerConnection
        {
            // Dispatch stops at the high-water mark, so only a peer that reads nothing gets here.
            ConnectionMetrics.outboundLimitClosed.increment()
            channel.close(promise: nil)
        }
    }

    var isWritable: Bool { channel.isWritable }

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
