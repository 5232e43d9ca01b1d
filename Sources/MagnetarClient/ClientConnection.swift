import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PulsarProtocol
import Synchronization

/// One TCP connection to a broker: the CONNECT/CONNECTED handshake, PING→PONG, request/response
/// matching by request id, and the producers and consumers multiplexed on it (by the ids this client
/// assigns, unique per connection).
///
/// It is the channel's last handler and lives on the channel's event loop: every method except
/// `isClosed` must run there. Writes made during one loop tick are flushed once at the end of it, so
/// pipelined SENDs share syscalls. Lifecycle: `connect` → open → closed (by either side); once closed,
/// every pending request fails with `connectionClosed`, every producer and consumer is told
/// (`connectionLost`) and reconnects with backoff on a new connection; this one is never reused.
/// Producers and consumers keep their own event loop: frames for them hop there when it differs
/// (a reconnection may land on a connection of another loop), and their writes hop here.
final class ClientConnection: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private struct PendingRequest {
        var promise: EventLoopPromise<Pulsar_Proto_BaseCommand>
        var timeout: Scheduled<Void>
    }

    let eventLoop: any EventLoop
    let remoteAddress: String
    private let logger: Logger
    private let operationTimeout: TimeAmount
    private let connectedPromise: EventLoopPromise<Void>
    private let closed = Atomic<Bool>(false)

    // Loop-confined state.
    private var context: ChannelHandlerContext?
    private var isHandshakeDone = false
    private var closeError: PulsarClientError?
    private var nextRequestID: UInt64 = 1
    /// TC_CLIENT_CONNECT was answered on this connection (transactions).
    let coordinatorConnected = Atomic<Bool>(false)
    private var requests: [UInt64: PendingRequest] = [:]
    private var producers: [UInt64: ProducerCore] = [:]
    private var consumers: [UInt64: ConsumerCore] = [:]
    private var isFlushScheduled = false
    /// The broker's `max_message_size` from CONNECTED.
    private(set) var maxMessageSizeBytes = PulsarLimits.maxMessageSizeBytes
    private(set) var allocator = ByteBufferAllocator()

    private let authToken: String?

    init(eventLoop: any EventLoop, remoteAddress: String, operationTimeout: TimeAmount, authToken: String? = nil, logger: Logger) {
        self.authToken = authToken
        self.eventLoop = eventLoop
        self.remoteAddress = remoteAddress
        self.operationTimeout = operationTimeout
        self.connectedPromise = eventLoop.makePromise()
        var logger = logger
        logger[metadataKey: "broker.address"] = "\(remoteAddress)"
        self.logger = logger
    }

    /// Opens a connection and completes the handshake.
    static func connect(
        host: String, port: Int, group: any EventLoopGroup, connectTimeout: TimeAmount, operationTimeout: TimeAmount,
        authToken: String? = nil, tls: NIOSSLContext? = nil, logger: Logger
    ) -> EventLoopFuture<ClientConnection> {
        let eventLoop = group.next()
        let connection = ClientConnection(
            eventLoop: eventLoop, remoteAddress: "\(host):\(port)", operationTimeout: operationTimeout, authToken: authToken,
            logger: logger)
        let handshakeTimeout = eventLoop.scheduleTask(in: connectTimeout) {
            connection.connectedPromise.fail(PulsarClientError(.connectionFailed, "no CONNECTED from \(host):\(port) in time"))
            connection.context?.close(promise: nil)
        }
        return ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        // SNI only for names, as TLS allows.
                        let isAddress = host.contains(":") || host.allSatisfy { $0.isNumber || $0 == "." }
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: tls, serverHostname: isAddress ? nil : host))
                    }
                    try channel.pipeline.syncOperations.addHandler(connection)
                }
            }
            .connect(host: host, port: port)
            .flatMapError { error in
                eventLoop.makeFailedFuture(PulsarClientError(.connectionFailed, "connect to \(host):\(port) failed: \(error)"))
            }
            .flatMap { _ in connection.connectedPromise.futureResult }
            .map { _ in
                handshakeTimeout.cancel()
                return connection
            }
            .flatMapErrorThrowing { error in
                handshakeTimeout.cancel()
                throw error
            }
    }

    /// True once the connection closed (readable from any thread).
    var isClosed: Bool { closed.load(ordering: .relaxed) }

    // MARK: channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.allocator = context.channel.allocator
    }

    func channelActive(context: ChannelHandlerContext) {
        writeCommand(ClientCommands.connect(authToken: authToken))
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        shutDown(PulsarClientError(.connectionClosed, "connection to \(remoteAddress) closed"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.info("client.connection.error", metadata: ["error": "\(error)"])
        shutDown(PulsarClientError(.connectionClosed, "connection to \(remoteAddress) failed: \(error)"))
        context.close(promise: nil)
    }

    /// Frames are split here, not by a `ByteToMessageHandler` in front: no `NIOAny` box, dynamic cast
    /// and pipeline hop per frame (7 % of the perf client's CPU). After a malformed frame the rest of
    /// the input is ignored (the connection is closing).
    private let frames = NIOSingleStepByteToMessageProcessor(PulsarFrameDecoder())
    private var inputFailed = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !inputFailed else { return }
        do {
            try frames.process(buffer: unwrapInboundIn(data)) { frame in
                self.received(frame)
            }
        } catch {
            inputFailed = true
            errorCaught(context: context, error: error)
        }
    }

    private func received(_ frame: PulsarFrame) {
        // The per-message commands, read by hand: no SwiftProtobuf `BaseCommand` per message.
        if isHandshakeDone, let receipt = frame.receipt {
            guard let producer = producers[receipt.producerID] else { return }
            let id = receipt.messageID.map { MessageID($0) } ?? MessageID(Pulsar_Proto_MessageIdData())
            Self.run(on: producer.eventLoop) {
                producer.receiptReceived(sequenceID: receipt.sequenceID, messageID: id)
            }
            return
        }
        if isHandshakeDone, let message = frame.message {
            guard let consumer = consumers[message.consumerID] else { return }
            let payload = frame.payload
            Self.run(on: consumer.eventLoop) { consumer.messageReceived(message, payload: payload, from: self) }
            return
        }
        let command = frame.command
        guard isHandshakeDone else {
            guard command.type == .connected else {
                if command.type == .error {
                    fail(connection: "the broker refused the connection: \(command.error.message) (\(command.error.error)); check the --auth-token")
                    return
                }
                fail(connection: "expected CONNECTED, got \(command.type)")
                return
            }
            isHandshakeDone = true
            if command.connected.hasMaxMessageSize, command.connected.maxMessageSize > 0 {
                maxMessageSizeBytes = Int(command.connected.maxMessageSize)
            }
            logger.debug("client.connection.connected", metadata: ["server.version": "\(command.connected.serverVersion)"])
            connectedPromise.succeed()
            return
        }
        switch command.type {
        case .sendReceipt:
            let receipt = command.sendReceipt
            guard let producer = producers[receipt.producerID] else { return }
            Self.run(on: producer.eventLoop) {
                producer.receiptReceived(sequenceID: receipt.sequenceID, messageID: receipt.messageID)
            }
        case .sendError:
            let error = command.sendError
            guard let producer = producers[error.producerID] else { return }
            Self.run(on: producer.eventLoop) {
                producer.sendErrorReceived(sequenceID: error.sequenceID, error: .server(error.error, error.message))
            }
        case .message:
            // An unusual shape the hand decoder left to SwiftProtobuf.
            let message = command.message
            guard let consumer = consumers[message.consumerID] else { return }
            let id = message.messageID
            let fields = MessageCommandFields(
                consumerID: message.consumerID,
                messageID: MessageIDFields(
                    ledgerID: id.ledgerID, entryID: id.entryID, partition: id.hasPartition ? id.partition : nil,
                    batchIndex: id.hasBatchIndex ? id.batchIndex : nil, batchSize: id.hasBatchSize ? id.batchSize : nil),
                redeliveryCount: message.hasRedeliveryCount ? message.redeliveryCount : nil, ackSet: message.ackSet)
            let payload = frame.payload
            Self.run(on: consumer.eventLoop) { consumer.messageReceived(fields, payload: payload, from: self) }
        case .ping:
            writeCommand(ClientCommands.pong())
        case .authChallenge:
            writeCommand(ClientCommands.authResponse(authToken: authToken))
        case .pong, .activeConsumerChange:
            break
        case .closeProducer:
            // The topic was unloaded or moved: the producer looks it up again and re-registers.
            if let producer = producers.removeValue(forKey: command.closeProducer.producerID) {
                let error = PulsarClientError(.connectionClosed, "the broker closed the producer (topic unloaded or moved)")
                Self.run(on: producer.eventLoop) { producer.connectionLost(self, error: error) }
            }
        case .closeConsumer:
            if let consumer = consumers.removeValue(forKey: command.closeConsumer.consumerID) {
                let error = PulsarClientError(.connectionClosed, "the broker closed the consumer (topic unloaded or moved)")
                Self.run(on: consumer.eventLoop) { consumer.connectionLost(self, error: error) }
            }
        default:
            if let requestID = ClientCommands.responseRequestID(command) {
                responseReceived(requestID: requestID, command: command)
            } else {
                logger.debug("client.connection.unexpected-command", metadata: ["command": "\(command.type)"])
            }
        }
    }

    private func responseReceived(requestID: UInt64, command: Pulsar_Proto_BaseCommand) {
        guard let request = requests.removeValue(forKey: requestID) else { return }
        request.timeout.cancel()
        switch command.type {
        case .error:
            request.promise.fail(PulsarClientError.server(command.error.error, command.error.message))
        case .partitionedMetadataResponse where command.partitionMetadataResponse.response == .failed:
            let response = command.partitionMetadataResponse
            request.promise.fail(PulsarClientError.server(response.error, response.message))
        case .lookupResponse where command.lookupTopicResponse.response == .failed:
            let response = command.lookupTopicResponse
            request.promise.fail(PulsarClientError.server(response.error, response.message))
        case .tcClientConnectResponse where command.tcClientConnectResponse.hasError:
            request.promise.fail(PulsarClientError.server(command.tcClientConnectResponse.error, command.tcClientConnectResponse.message))
        case .newTxnResponse where command.newTxnResponse.hasError:
            request.promise.fail(PulsarClientError.server(command.newTxnResponse.error, command.newTxnResponse.message))
        case .addPartitionToTxnResponse where command.addPartitionToTxnResponse.hasError:
            request.promise.fail(PulsarClientError.server(command.addPartitionToTxnResponse.error, command.addPartitionToTxnResponse.message))
        case .addSubscriptionToTxnResponse where command.addSubscriptionToTxnResponse.hasError:
            request.promise.fail(PulsarClientError.server(
                command.addSubscriptionToTxnResponse.error, command.addSubscriptionToTxnResponse.message))
        case .endTxnResponse where command.endTxnResponse.hasError:
            request.promise.fail(PulsarClientError.server(command.endTxnResponse.error, command.endTxnResponse.message))
        case .endTxnOnPartitionResponse where command.endTxnOnPartitionResponse.hasError:
            request.promise.fail(PulsarClientError.server(command.endTxnOnPartitionResponse.error, command.endTxnOnPartitionResponse.message))
        case .endTxnOnSubscriptionResponse where command.endTxnOnSubscriptionResponse.hasError:
            request.promise.fail(PulsarClientError.server(
                command.endTxnOnSubscriptionResponse.error, command.endTxnOnSubscriptionResponse.message))
        case .ackResponse where command.ackResponse.hasError:
            request.promise.fail(PulsarClientError.server(command.ackResponse.error, command.ackResponse.message))
        default:
            request.promise.succeed(command)
        }
    }

    // MARK: used by the client, producers and consumers (on the loop)

    /// Sends a command with a fresh request id and completes with the broker's answer (ERROR → failure).
    func request(_ make: (UInt64) -> Pulsar_Proto_BaseCommand) -> EventLoopFuture<Pulsar_Proto_BaseCommand> {
        eventLoop.assertInEventLoop()
        let promise = eventLoop.makePromise(of: Pulsar_Proto_BaseCommand.self)
        if let closeError {
            promise.fail(closeError)
            return promise.futureResult
        }
        let requestID = nextRequestID
        nextRequestID += 1
        let command = make(requestID)
        let timeoutAmount = operationTimeout
        let timeout = eventLoop.scheduleTask(in: timeoutAmount) { [self] in
            if let request = requests.removeValue(forKey: requestID) {
                request.promise.fail(PulsarClientError(.timeout, "no answer to \(command.type) within \(timeoutAmount)"))
            }
        }
        requests[requestID] = PendingRequest(promise: promise, timeout: timeout)
        writeCommand(command)
        return promise.futureResult
    }

    /// Routes the frames for `producer.producerID` (unique per client) to it. On a closed connection the
    /// PRODUCER request that follows fails, which the producer handles.
    func attach(producer: ProducerCore) {
        eventLoop.assertInEventLoop()
        producers[producer.producerID] = producer
    }

    func detachProducer(_ producerID: UInt64) {
        Self.run(on: eventLoop) { self.producers[producerID] = nil }
    }

    func attach(consumer: ConsumerCore) {
        eventLoop.assertInEventLoop()
        consumers[consumer.consumerID] = consumer
    }

    func detachConsumer(_ consumerID: UInt64) {
        Self.run(on: eventLoop) { self.consumers[consumerID] = nil }
    }

    /// Runs `body` on `loop`: now if already there, else as the loop's next task (FIFO, so order holds).
    static func run(on loop: any EventLoop, _ body: @escaping @Sendable () -> Void) {
        if loop.inEventLoop { body() } else { loop.execute(body) }
    }

    /// `write` from any thread (a producer or consumer whose loop is not this connection's).
    func writeFromAnyLoop(_ frame: ByteBuffer) {
        // The publish hot path: no closure when already on the loop.
        if eventLoop.inEventLoop {
            write(frame)
        } else {
            eventLoop.execute { self.write(frame) }
        }
    }

    func writeCommandFromAnyLoop(_ command: Pulsar_Proto_BaseCommand) {
        Self.run(on: eventLoop) { self.writeCommand(command) }
    }

    /// `request` from any thread; the answer completes on `loop`.
    func requestFromAnyLoop(
        on loop: any EventLoop, _ make: @escaping @Sendable (UInt64) -> Pulsar_Proto_BaseCommand
    ) -> EventLoopFuture<Pulsar_Proto_BaseCommand> {
        if eventLoop.inEventLoop { return request(make).hop(to: loop) }
        return eventLoop.flatSubmit { self.request(make) }.hop(to: loop)
    }

    /// `fail(connection:)` from any thread.
    func failFromAnyLoop(connection reason: String) {
        Self.run(on: eventLoop) { self.fail(connection: reason) }
    }

    func writeCommand(_ command: Pulsar_Proto_BaseCommand) {
        var buffer = allocator.buffer(capacity: 64)
        PulsarFrameEncoder.writeCommand(command, into: &buffer)
        write(buffer)
    }

    /// Queues a frame; everything written in this loop tick is flushed together.
    func write(_ frame: ByteBuffer) {
        eventLoop.assertInEventLoop()
        guard let context, closeError == nil else { return }
        context.write(wrapOutboundOut(frame), promise: nil)
        if !isFlushScheduled {
            isFlushScheduled = true
            eventLoop.execute { [self] in
                isFlushScheduled = false
                self.context?.flush()
            }
        }
    }

    /// Closes the connection because the broker broke the protocol.
    func fail(connection reason: String) {
        logger.warning("client.connection.protocol-violation", metadata: ["reason": "\(reason)"])
        shutDown(PulsarClientError(.protocolViolation, reason))
        context?.close(promise: nil)
    }

    func close() {
        eventLoop.assertInEventLoop()
        shutDown(PulsarClientError(.alreadyClosed, "the client closed the connection"))
        context?.close(promise: nil)
    }

    private func shutDown(_ error: PulsarClientError) {
        guard closeError == nil else { return }
        closeError = error
        closed.store(true, ordering: .relaxed)
        if !isHandshakeDone { connectedPromise.fail(error) }
        let pending = requests
        requests.removeAll()
        for request in pending.values {
            request.timeout.cancel()
            request.promise.fail(error)
        }
        let producers = self.producers
        self.producers.removeAll()
        for producer in producers.values {
            Self.run(on: producer.eventLoop) { producer.connectionLost(self, error: error) }
        }
        let consumers = self.consumers
        self.consumers.removeAll()
        for consumer in consumers.values {
            Self.run(on: consumer.eventLoop) { consumer.connectionLost(self, error: error) }
        }
    }
}
