import BrokerCore
import Logging
import NIOCore
import PulsarProtocol

/// Settings every connection needs.
public struct ConnectionConfiguration: Sendable {
    /// What LOOKUP answers: `pulsar://<advertisedAddress>:<port>`.
    public var brokerServiceURL: String
    public var serverVersion = "Magnetar 0.1.0"
    public init(brokerServiceURL: String) {
        self.brokerServiceURL = brokerServiceURL
    }
}

/// One client connection: decodes commands into calls on `BrokerService` topics and writes replies.
///
/// Owned by the channel's event loop; its tables (producers and consumers by the client's ids,
/// which are only unique per connection) are touched only there. Calls into a topic hop to the
/// topic's event loop; their results hop back. Policy lives in the state machine and the core.
final class PulsarConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private struct ProducerEntry {
        var topic: any ServedTopic
    }
    private struct ConsumerEntry {
        var topic: any ServedTopic
        var subscription: String
    }

    private let broker: BrokerService
    private let configuration: ConnectionConfiguration
    private let connectionID: UInt64
    private var logger: Logger
    private var stateMachine = ConnectionStateMachine()
    private var producers: [UInt64: ProducerEntry] = [:]
    private var consumers: [UInt64: ConsumerEntry] = [:]
    private var channel: (any Channel)?
    private var sink: ConnectionSink?
    private var isActive = true
    private var pendingPublishes = 0
    private var readingPaused = false
    private var outbox: ReplyOutbox?
    /// SENDs of the current socket read not yet handed to their topic.
    private var staged: StagedPublishes?
    /// Bytes of the current socket read: sizes the buffer staged entries are written into.
    private var readBytesLeft = 0
    /// Frames are split here, not by a `ByteToMessageHandler` in front: no `NIOAny` box, cast and
    /// pipeline hop per frame. After a malformed frame the rest of the input is ignored.
    private let frames = NIOSingleStepByteToMessageProcessor(PulsarFrameDecoder())
    private var inputFailed = false
    /// Keep-alive (Pulsar's `keepAliveIntervalSeconds`): every interval, a connection that sent no
    /// CONNECT is closed; one that sent nothing gets a PING, and is closed at the next tick if it
    /// still sent nothing.
    private let keepAliveInterval: TimeAmount
    private var keepAliveTask: RepeatedTask?
    private var receivedSinceKeepAliveTick = false
    private var pingOutstanding = false
    /// Reading stopped because the socket does not take our writes (replies pile up).
    private var readingPausedByWritability = false

    init(
        broker: BrokerService, configuration: ConnectionConfiguration, connectionID: UInt64,
        keepAliveInterval: TimeAmount = .seconds(30), logger: Logger
    ) {
        self.broker = broker
        self.configuration = configuration
        self.connectionID = connectionID
        self.keepAliveInterval = keepAliveInterval
        self.logger = logger
        self.logger[metadataKey: "connection.id"] = "\(connectionID)"
    }

    func handlerAdded(context: ChannelHandlerContext) {
        channel = context.channel
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        sink = ConnectionSink(channel: context.channel) { consumerID in
            bound.value.consumers[consumerID] = nil
        }
        if let remote = context.channel.remoteAddress {
            logger[metadataKey: "connection.remote"] = "\(remote)"
        }
        let interval = keepAliveInterval
        keepAliveTask = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            bound.value.keepAliveTick()
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        keepAliveTask?.cancel()
        keepAliveTask = nil
    }

    private func keepAliveTick() {
        guard isActive, let channel else { return }
        switch stateMachine.state {
        case .awaitingConnect:
            logger.info("connection.connect-timeout", metadata: ["timeout": "\(keepAliveInterval)"])
            channel.close(promise: nil)
        case .connected:
            defer { receivedSinceKeepAliveTick = false }
            // A connection paused for pending publishes is not read: its silence says nothing.
            if receivedSinceKeepAliveTick || readingPaused {
                pingOutstanding = false
                return
            }
            if pingOutstanding {
                logger.info("connection.keep-alive-timeout", metadata: ["timeout": "\(keepAliveInterval)"])
                channel.close(promise: nil)
                return
            }
            pingOutstanding = true
            write(Commands.base(.ping) { $0.ping = Pulsar_Proto_CommandPing() })
        case .closed:
            break
        }
    }

    /// Back-pressure on the way out: while the socket does not take our writes, consumers of this
    /// connection get nothing (`ConnectionSink.isWritable`) and no further requests are read; once it
    /// drains, reading resumes and their subscriptions dispatch again.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        let writable = context.channel.isWritable
        if !writable, !readingPausedByWritability {
            readingPausedByWritability = true
            ConnectionMetrics.writePaused(1)
            context.channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
        } else if writable, readingPausedByWritability {
            readingPausedByWritability = false
            // The client read what piled up: alive, though its PONG may still wait unread.
            receivedSinceKeepAliveTick = true
            ConnectionMetrics.writePaused(-1)
            if !readingPaused {
                context.channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
            }
            for (consumerID, entry) in consumers {
                let topic = entry.topic
                let subscription = entry.subscription
                let key = ConsumerKey(connectionID: connectionID, consumerID: consumerID)
                topic.eventLoop.execute { topic.flow(subscription: subscription, key: key, permits: 0) }
            }
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        isActive = false
        keepAliveTask?.cancel()
        keepAliveTask = nil
        if readingPausedByWritability {
            readingPausedByWritability = false
            ConnectionMetrics.writePaused(-1)
        }
        stateMachine.channelInactive()
        for (producerID, entry) in producers {
            let topic = entry.topic
            let connectionID = self.connectionID
            topic.eventLoop.execute { topic.removeProducer(connectionID: connectionID, producerID: producerID) }
        }
        for (consumerID, entry) in consumers {
            let topic = entry.topic
            let key = ConsumerKey(connectionID: connectionID, consumerID: consumerID)
            let subscription = entry.subscription
            topic.eventLoop.execute { topic.closeConsumer(subscription: subscription, key: key) }
        }
        producers.removeAll()
        consumers.removeAll()
        logger.debug("connection.closed")
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? PulsarProtocolError {
            run(stateMachine.protocolErrorReceived(error), frame: nil, context: context)
        } else {
            logger.debug("connection.error", metadata: ["error": "\(error)"])
            context.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !inputFailed else { return }
        receivedSinceKeepAliveTick = true
        let input = unwrapInboundIn(data)
        readBytesLeft = input.readableBytes
        do {
            try frames.process(buffer: input) { frame in
                self.received(frame, context: context)
            }
        } catch {
            flushStagedPublishes(context: context)
            inputFailed = true
            errorCaught(context: context, error: error)
            return
        }
        flushStagedPublishes(context: context)
    }

    private func received(_ frame: PulsarFrame, context: ChannelHandlerContext) {
        let type = frame.type
        let version: Int32?
        if type == .connect {
            let connect = frame.command.connect
            version = connect.hasProtocolVersion ? connect.protocolVersion : nil
        } else {
            version = nil
        }
        run(stateMachine.commandReceived(type, clientProtocolVersion: version), frame: frame, context: context)
    }

    private func run(_ action: ConnectionStateMachine.Action, frame: PulsarFrame?, context: ChannelHandlerContext) {
        switch action {
        case .sendConnected(let version):
            let connect = frame?.command.connect
            logger.debug("connection.connected", metadata: [
                "client.version": "\(connect?.clientVersion ?? "")", "protocol.version": "\(version)",
            ])
            let configuration = self.configuration
            write(Commands.base(.connected) {
                $0.connected.serverVersion = configuration.serverVersion
                $0.connected.protocolVersion = version
                $0.connected.maxMessageSize = Int32(PulsarLimits.maxMessageSizeBytes)
            })
        case .sendPong:
            write(Commands.base(.pong) { $0.pong = Pulsar_Proto_CommandPong() })
        case .handleCommand:
            if let frame { handle(frame, context: context) }
        case .ignore:
            break
        case .close(let reason):
            logger.info("connection.refused-input", metadata: ["reason": "\(reason)"])
            context.close(promise: nil)
        }
    }

    private func write(_ command: Pulsar_Proto_BaseCommand) {
        guard let channel else { return }
        channel.writeAndFlush(PulsarFrameEncoder.encodeCommand(command, allocator: channel.allocator), promise: nil)
    }

    private func parseTopic(_ raw: String) throws(BrokerError) -> TopicName {
        try TopicName(parsing: raw)
    }

    // MARK: commands

    private func handle(_ frame: PulsarFrame, context: ChannelHandlerContext) {
        if frame.type == .send, let send = frame.send {
            handleSend(send, payload: frame.payload, context: context)
            return
        }
        flushStagedPublishes(context: context)
        let command = frame.command
        switch command.type {
        case .pong:
            break
        case .partitionedMetadata:
            handlePartitionedMetadata(command.partitionMetadata)
        case .lookup:
            handleLookup(command.lookupTopic)
        case .producer:
            handleProducer(command.producer, context: context)
        case .send:
            handleSend(SendCommandFields(command.send), payload: frame.payload, context: context)
        case .closeProducer:
            let request = command.closeProducer
            if let entry = producers.removeValue(forKey: request.producerID) {
                let topic = entry.topic
                let connectionID = self.connectionID
                topic.eventLoop.execute { topic.removeProducer(connectionID: connectionID, producerID: request.producerID) }
            }
            write(Commands.success(requestID: request.requestID))
        case .subscribe:
            handleSubscribe(command.subscribe, context: context)
        case .flow:
            let flow = command.flow
            withConsumer(flow.consumerID) { topic, subscription, key in
                topic.flow(subscription: subscription, key: key, permits: flow.messagePermits)
            }
        case .ack:
            handleAck(command.ack)
        case .redeliverUnacknowledgedMessages:
            let request = command.redeliverUnacknowledgedMessages
            let positions = request.messageIds.map(Commands.position)
            withConsumer(request.consumerID) { topic, subscription, key in
                topic.redeliver(subscription: subscription, key: key, positions: positions)
            }
        case .closeConsumer:
            let request = command.closeConsumer
            guard let entry = consumers.removeValue(forKey: request.consumerID), let channel else {
                write(Commands.success(requestID: request.requestID))
                return
            }
            let key = ConsumerKey(connectionID: connectionID, consumerID: request.consumerID)
            let topic = entry.topic
            // SUCCESS only once the subscription's acknowledgements are durable: if they cannot be
            // (this broker lost the topic meanwhile), the client's close fails instead of reporting
            // acknowledgements as kept that a new owner will not find.
            topic.eventLoop.flatSubmit { topic.closeConsumer(subscription: entry.subscription, key: key) }
                .whenComplete { result in
                    let answer: Pulsar_Proto_BaseCommand
                    switch result {
                    case .success: answer = Commands.success(requestID: request.requestID)
                    case .failure(let error): answer = Commands.error(requestID: request.requestID, error: error)
                    }
                    channel.writeAndFlush(PulsarFrameEncoder.encodeCommand(answer, allocator: channel.allocator), promise: nil)
                }
        case .unsubscribe:
            handleUnsubscribe(command.unsubscribe, context: context)
        case .getLastMessageID:
            handleGetLastMessageID(command.getLastMessageID)
        case .seek:
            handleSeek(command.seek)
        case .getTopicsOfNamespace:
            handleGetTopicsOfNamespace(command.getTopicsOfNamespace)
        case .getSchema:
            let request = command.getSchema
            write(Commands.base(.getSchemaResponse) {
                $0.getSchemaResponse.requestID = request.requestID
                $0.getSchemaResponse.errorCode = .topicNotFound
                $0.getSchemaResponse.errorMessage = "Topic not found or no-schema"
            })
        case .newTxn, .addPartitionToTxn, .addSubscriptionToTxn, .endTxn, .endTxnOnPartition, .endTxnOnSubscription,
             .tcClientConnectRequest:
            // As Pulsar answers with `transactionCoordinatorEnabled=false`: an ERROR for the request.
            logger.info("connection.transaction-refused", metadata: ["command": "\(command.type)"])
            write(Commands.base(.error) {
                $0.error.requestID = Commands.transactionRequestID(command) ?? 0
                $0.error.error = .notAllowedError
                $0.error.message = "Transactions are not enabled on this broker (\(command.type) refused)"
            })
        case .authResponse:
            // Only sent after an AUTH_CHALLENGE, and this broker challenges nobody: authentication is off.
            logger.info("connection.auth-response-refused")
            write(Commands.base(.error) {
                $0.error.requestID = 0
                $0.error.error = .authenticationError
                $0.error.message = "Authentication is not enabled on this broker: AUTH_RESPONSE is not expected"
            })
        default:
            logger.info("connection.unsupported-command", metadata: ["command": "\(command.type)"])
            context.close(promise: nil)
        }
    }

    private func withConsumer(_ consumerID: UInt64, _ body: @escaping @Sendable (any ServedTopic, String, ConsumerKey) -> Void) {
        guard let entry = consumers[consumerID] else { return }
        let topic = entry.topic
        let subscription = entry.subscription
        let key = ConsumerKey(connectionID: connectionID, consumerID: consumerID)
        topic.eventLoop.execute { body(topic, subscription, key) }
    }

    private func handlePartitionedMetadata(_ request: Pulsar_Proto_CommandPartitionedTopicMetadata) {
        guard let channel else { return }
        let broker = self.broker
        let future = channel.eventLoop.makeFutureWithTask { () async throws -> Int in
            let name = try TopicName(parsing: request.topic)
            return try await broker.partitionMetadata(name)
        }
        future.whenComplete { result in
            var command = Pulsar_Proto_BaseCommand()
            command.type = .partitionedMetadataResponse
            command.partitionMetadataResponse.requestID = request.requestID
            switch result {
            case .success(let partitions):
                command.partitionMetadataResponse.response = .success
                command.partitionMetadataResponse.partitions = UInt32(partitions)
            case .failure(let error):
                command.partitionMetadataResponse.response = .failed
                command.partitionMetadataResponse.error = ServerErrors.serverError(for: error)
                command.partitionMetadataResponse.message = ServerErrors.message(for: error)
            }
            channel.writeAndFlush(PulsarFrameEncoder.encodeCommand(command, allocator: channel.allocator), promise: nil)
        }
    }

    private func handleLookup(_ request: Pulsar_Proto_CommandLookupTopic) {
        guard let channel else { return }
        let broker = self.broker
        let url = configuration.brokerServiceURL
        let future = channel.eventLoop.makeFutureWithTask { () async throws -> LookupAnswer in
            let name = try TopicName(parsing: request.topic)
            return try await broker.lookup(name, authoritative: request.authoritative)
        }
        future.whenComplete { result in
            var command = Pulsar_Proto_BaseCommand()
            command.type = .lookupResponse
            command.lookupTopicResponse.requestID = request.requestID
            switch result {
            case .success(let answer):
                switch answer {
                case .local:
                    command.lookupTopicResponse.response = .connect
                    command.lookupTopicResponse.brokerServiceURL = url
                case .connect(let owner):
                    command.lookupTopicResponse.response = .connect
                    command.lookupTopicResponse.brokerServiceURL = owner.pulsarURL
                case .redirect(let candidate):
                    command.lookupTopicResponse.response = .redirect
                    command.lookupTopicResponse.brokerServiceURL = candidate.pulsarURL
                }
                command.lookupTopicResponse.authoritative = true
            case .failure(let error):
                command.lookupTopicResponse.response = .failed
                command.lookupTopicResponse.error = ServerErrors.serverError(for: error)
                command.lookupTopicResponse.message = ServerErrors.message(for: error)
            }
            channel.writeAndFlush(PulsarFrameEncoder.encodeCommand(command, allocator: channel.allocator), promise: nil)
        }
    }

    private func handleProducer(_ request: Pulsar_Proto_CommandProducer, context: ChannelHandlerContext) {
        if let existing = producers[request.producerID] {
            // The client retried after a timeout: answer success again.
            _ = existing
        }
        guard producers.count < ConnectionLimits.maxProducersPerConnection else {
            write(Commands.error(requestID: request.requestID, error: BrokerError(
                .notAllowed, "this connection has \(producers.count) producers open, the most one may have: close some or open another connection")))
            return
        }
        let name: TopicName
        do {
            name = try parseTopic(request.topic)
        } catch {
            write(Commands.error(requestID: request.requestID, error: error))
            return
        }
        let producerName = request.hasProducerName && !request.producerName.isEmpty
            ? request.producerName : broker.generateProducerName()
        let connectionID = self.connectionID
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        guard let sink else { return }
        let initialSubscription = request.hasInitialSubscriptionName && !request.initialSubscriptionName.isEmpty
            ? request.initialSubscriptionName : nil
        broker.servedTopic(name, preferredLoop: context.eventLoop).flatMap { topic in
            topic.eventLoop.flatSubmit { () -> EventLoopFuture<(any ServedTopic, String, Int64)> in
                let created = initialSubscription.map { topic.createSubscriptionIfMissing($0) } ?? topic.eventLoop.makeSucceededVoidFuture()
                return created.flatMapThrowing {
                    let assigned = try topic.addProducer(
                        connectionID: connectionID, producerID: request.producerID, name: producerName, sink: sink)
                    return (topic, assigned, topic.lastPublishedSequenceID(producerName: assigned))
                }
            }
        }.hop(to: context.eventLoop).whenComplete { result in
            let handler = bound.value
            switch result {
            case .success(let (topic, assignedName, lastSequenceID)):
                guard handler.isActive else {
                    topic.eventLoop.execute { topic.removeProducer(connectionID: connectionID, producerID: request.producerID) }
                    return
                }
                handler.producers[request.producerID] = ProducerEntry(topic: topic)
                handler.logger.debug("producer.created", metadata: ["topic": "\(name)", "producer.name": "\(assignedName)"])
                handler.write(Commands.base(.producerSuccess) {
                    $0.producerSuccess.requestID = request.requestID
                    $0.producerSuccess.producerName = assignedName
                    $0.producerSuccess.lastSequenceID = lastSequenceID
                    $0.producerSuccess.producerReady = true
                })
            case .failure(let error):
                handler.logger.info("producer.refused", metadata: ["topic": "\(name)", "error": "\(error)"])
                handler.write(Commands.error(requestID: request.requestID, error: error))
            }
        }
    }

    private func sendError(_ request: SendCommandFields, _ error: Pulsar_Proto_ServerError, _ message: String) {
        write(Commands.base(.sendError) {
            $0.sendError.producerID = request.producerID
            $0.sendError.sequenceID = request.sequenceID
            $0.sendError.error = error
            $0.sendError.message = message
        })
    }

    private func handleSend(_ request: SendCommandFields, payload: PayloadSection?, context: ChannelHandlerContext) {
        guard let producer = producers[request.producerID] else {
            sendError(request, .notAllowedError, "producer \(request.producerID) is not open on this connection")
            return
        }
        guard let payload else {
            run(stateMachine.protocolErrorReceived(PulsarProtocolError(.malformedPayload, "SEND without a payload")),
                frame: nil, context: context)
            return
        }
        guard payload.isChecksumValid else {
            logger.info("send.checksum-mismatch", metadata: ["topic": "\(producer.topic.name)"])
            sendError(request, .checksumError, "checksum of the message does not match its bytes: it was corrupted in transit")
            return
        }
        let metadata: SendMetadataFields
        do {
            // Hand-decoded: only the fields the entry needs, no SwiftProtobuf message per SEND.
            metadata = try SendMetadataFields.parse(payload.checksummedBytes)
        } catch {
            sendError(request, .checksumError, "message metadata is malformed: \(error.message)")
            return
        }
        let key: [UInt8] = metadata.orderingKey ?? Array((metadata.partitionKey ?? "").utf8)
        let numMessages = max(metadata.numMessagesInBatch ?? 1, 1)
        // The C++ client numbers a batch's messages consecutively from the SEND's sequence id.
        // Every value here comes from the network: no arithmetic on it may trap.
        let sequenceID = Int64(bitPattern: request.sequenceID)
        let highestSequenceID = max(
            request.highestSequenceID.map { Int64(bitPattern: $0) } ?? sequenceID,
            sequenceID.saturatingAdd(Int64(numMessages) - 1))
        let attributes = EntryAttributes(
            numMessages: numMessages,
            // A publish time past Int64.max (2^63 and up) is kept as the latest time there is.
            publishTimeMs: Int64(clamping: metadata.publishTime),
            deliverAtMs: metadata.deliverAtTime ?? 0,
            key: key,
            producerName: metadata.producerName,
            highestSequenceID: highestSequenceID,
            isNonFinalChunk: SendMetadataFields.isNonFinalChunk(chunkID: metadata.chunkID, numChunks: metadata.numChunksFromMsg))
        let checksum = payload.checksum ?? payload.computeChecksum()
        let bytes = payload.checksummedBytes
        let topic = producer.topic
        publishStarted(context: context)
        if let current = staged, current.topic !== topic {
            flushStagedPublishes(context: context)
        }
        if staged == nil {
            // Sized for the rest of this read (entries are about as long as their SEND frames), so
            // a lone message does not pin a large buffer in the tail cache.
            let entryLength = Entry.encodedLength(attributes: attributes, bodyLength: 4 + bytes.readableBytes)
            staged = StagedPublishes(
                topic: topic,
                buffer: context.channel.allocator.buffer(capacity: max(entryLength, readBytesLeft + readBytesLeft / 4)),
                receivedAt: NIODeadline.now())
        }
        staged!.add(attributes: attributes, producerID: request.producerID, sequenceID: request.sequenceID) { buffer in
            buffer.writeInteger(checksum)
            buffer.writeImmutableBuffer(bytes)
        }
    }

    /// Hands the staged SENDs to their topic as one `PublishBatch` (one hop to the topic's loop).
    /// Called at the end of every socket read, before any other command (so commands keep their
    /// order relative to SENDs), and when a SEND for another topic arrives.
    private func flushStagedPublishes(context: ChannelHandlerContext) {
        guard let staged else { return }
        self.staged = nil
        readBytesLeft = 0
        let topic = staged.topic
        let batch = PublishBatch(
            entries: staged.entries(allocator: context.channel.allocator), attributes: staged.attributes,
            replier: SendReplies(
                outbox: replyOutbox(channel: context.channel), partition: topic.partitionIndex, receivedAt: staged.receivedAt,
                sends: staged.sends, allocator: context.channel.allocator))
        // Usually the topic runs on this connection's loop (its first client's): no hop.
        if topic.eventLoop.inEventLoop {
            topic.publish(batch)
        } else {
            topic.eventLoop.execute { topic.publish(batch) }
        }
    }

    /// Backpressure: past `maxPendingPublishesPerConnection` in-flight SENDs the connection stops
    /// reading from its socket until half of them have their receipts.
    private func publishStarted(context: ChannelHandlerContext) {
        pendingPublishes += 1
        if pendingPublishes >= ConnectionLimits.maxPendingPublishesPerConnection, readingPaused == false {
            readingPaused = true
            logger.debug("connection.reading-paused", metadata: ["pending.publishes": "\(pendingPublishes)"])
            context.channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
        }
    }

    /// The connection's reply outbox, made on first use (on the connection's loop).
    private func replyOutbox(channel: any Channel) -> ReplyOutbox {
        if let outbox { return outbox }
        // Weak: the outbox lives as long as topics hold replies for it, the handler no longer.
        let outbox = ReplyOutbox(channel: channel) { [weak self] count in self?.publishCompleted(channel: channel, count: count) }
        self.outbox = outbox
        return outbox
    }

    private func publishCompleted(channel: any Channel, count: Int = 1) {
        pendingPublishes -= count
        if readingPaused, pendingPublishes <= ConnectionLimits.maxPendingPublishesPerConnection / 2 {
            readingPaused = false
            if !readingPausedByWritability {
                channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
            }
        }
    }

    private func handleSubscribe(_ request: Pulsar_Proto_CommandSubscribe, context: ChannelHandlerContext) {
        if consumers[request.consumerID] != nil {
            write(Commands.success(requestID: request.requestID))
            return
        }
        guard consumers.count < ConnectionLimits.maxConsumersPerConnection else {
            write(Commands.error(requestID: request.requestID, error: BrokerError(
                .notAllowed, "this connection has \(consumers.count) consumers open, the most one may have: close some or open another connection")))
            return
        }
        let name: TopicName
        do {
            name = try parseTopic(request.topic)
        } catch {
            write(Commands.error(requestID: request.requestID, error: error))
            return
        }
        let type: SubscriptionType
        switch request.subType {
        case .exclusive: type = .exclusive
        case .shared: type = .shared
        case .failover: type = .failover
        case .keyShared: type = .keyShared
        }
        var keySharedPolicy: KeySharedPolicy?
        if type == .keyShared {
            let meta = request.keySharedMeta
            let sticky = request.hasKeySharedMeta && meta.keySharedMode == .sticky
            keySharedPolicy = KeySharedPolicy(
                mode: sticky ? .sticky(meta.hashRanges.map { min($0.start, $0.end)...max($0.start, $0.end) }) : .autoSplit,
                allowOutOfOrderDelivery: meta.allowOutOfOrderDelivery)
        }
        let key = ConsumerKey(connectionID: connectionID, consumerID: request.consumerID)
        let durable = request.hasDurable ? request.durable : true
        let subscribeRequest = SubscribeRequest(
            subscription: request.subscription, type: type, consumerKey: key, consumerName: request.consumerName,
            priorityLevel: request.priorityLevel, durable: durable,
            start: !durable && request.hasStartMessageID ? Commands.startPosition(request.startMessageID) : nil,
            initialPosition: request.initialPosition == .earliest ? .earliest : .latest,
            keySharedPolicy: keySharedPolicy)
        guard let sink else { return }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        broker.servedTopic(name, preferredLoop: context.eventLoop).flatMap { topic in
            topic.eventLoop.flatSubmit {
                topic.subscribe(subscribeRequest, sink: sink).map { topic }
            }
        }.hop(to: context.eventLoop).whenComplete { result in
            let handler = bound.value
            switch result {
            case .success(let topic):
                guard handler.isActive else {
                    topic.eventLoop.execute { topic.closeConsumer(subscription: request.subscription, key: key) }
                    return
                }
                handler.consumers[request.consumerID] = ConsumerEntry(topic: topic, subscription: request.subscription)
                handler.logger.debug("consumer.subscribed", metadata: [
                    "topic": "\(name)", "subscription": "\(request.subscription)", "subscription.type": "\(type)",
                ])
                handler.write(Commands.success(requestID: request.requestID))
            case .failure(let error):
                handler.logger.info("consumer.refused", metadata: [
                    "topic": "\(name)", "subscription": "\(request.subscription)", "error": "\(error)",
                ])
                handler.write(Commands.error(requestID: request.requestID, error: error))
            }
        }
    }

    private func handleAck(_ request: Pulsar_Proto_CommandAck) {
        let cumulative = request.ackType == .cumulative
        // A validation error means the client dropped a corrupt message: it counts as acknowledged.
        let ids = request.messageID
        let complete = ids.filter { request.hasValidationError || $0.ackSet.allSatisfy { $0 == 0 } }.map(Commands.position)
        let partial = request.hasValidationError ? [] : ids.filter { !$0.ackSet.allSatisfy { $0 == 0 } }
            .map { (Commands.position($0), $0.ackSet) }
        withConsumer(request.consumerID) { topic, subscription, _ in
            if cumulative {
                if let position = complete.first {
                    topic.acknowledgeCumulative(subscription: subscription, upTo: position)
                } else if let (position, _) = partial.first {
                    // A cumulative ack inside a batch acknowledges everything before that batch.
                    topic.acknowledgeCumulative(subscription: subscription, upTo: position.previousInLedger)
                }
                return
            }
            if !complete.isEmpty { topic.acknowledge(subscription: subscription, positions: complete) }
            for (position, ackSet) in partial {
                topic.acknowledgeBatchIndexes(subscription: subscription, position: position, ackSet: ackSet)
            }
        }
        if request.hasRequestID {
            write(Commands.base(.ackResponse) {
                $0.ackResponse.consumerID = request.consumerID
                $0.ackResponse.requestID = request.requestID
            })
        }
    }

    private func handleUnsubscribe(_ request: Pulsar_Proto_CommandUnsubscribe, context: ChannelHandlerContext) {
        guard let entry = consumers[request.consumerID] else {
            write(Commands.error(requestID: request.requestID, error: BrokerError(
                .consumerNotFound, "consumer \(request.consumerID) is not open on this connection")))
            return
        }
        let key = ConsumerKey(connectionID: connectionID, consumerID: request.consumerID)
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let topic = entry.topic
        topic.eventLoop.flatSubmit {
            topic.unsubscribe(subscription: entry.subscription, key: key)
        }.hop(to: context.eventLoop).whenComplete { result in
            let handler = bound.value
            switch result {
            case .success:
                handler.consumers[request.consumerID] = nil
                handler.write(Commands.success(requestID: request.requestID))
            case .failure(let error):
                handler.write(Commands.error(requestID: request.requestID, error: error))
            }
        }
    }

    private func handleGetLastMessageID(_ request: Pulsar_Proto_CommandGetLastMessageId) {
        guard let entry = consumers[request.consumerID], let channel else {
            write(Commands.error(requestID: request.requestID, error: BrokerError(
                .metadata, "Consumer not found: consumer \(request.consumerID) is not open on this connection")))
            return
        }
        let topic = entry.topic
        topic.eventLoop.flatSubmit { topic.lastMessage(subscription: entry.subscription) }.whenSuccess { info in
            var command = Pulsar_Proto_BaseCommand()
            if let info {
                let partition = topic.partitionIndex
                command.type = .getLastMessageIDResponse
                command.getLastMessageIDResponse.requestID = request.requestID
                command.getLastMessageIDResponse.lastMessageID = Commands.messageID(
                    info.last, partition: partition, batchIndex: info.batchIndex >= 0 ? info.batchIndex : nil)
                command.getLastMessageIDResponse.consumerMarkDeletePosition = Commands.messageID(
                    info.markDelete, partition: partition)
            } else {
                command = Commands.error(requestID: request.requestID, error: BrokerError(
                    .metadata, "Consumer not found: its subscription is gone"))
            }
            channel.writeAndFlush(PulsarFrameEncoder.encodeCommand(command, allocator: channel.allocator), promise: nil)
        }
    }

    private func handleSeek(_ request: Pulsar_Proto_CommandSeek) {
        guard let entry = consumers[request.consumerID], let channel else {
            write(Commands.error(requestID: request.requestID, error: BrokerError(
                .consumerNotFound, "consumer \(request.consumerID) is not open on this connection")))
            return
        }
        let topic = entry.topic
        let answer: @Sendable (Result<Void, any Error>) -> Void = { result in
            let command: Pulsar_Proto_BaseCommand
            switch result {
            case .success: command = Commands.success(requestID: request.requestID)
            case .failure(let error): command = Commands.error(requestID: request.requestID, error: error)
            }
            // CLOSE_CONSUMER frames were queued on the channel's loop first; SUCCESS follows them.
            channel.eventLoop.execute {
                channel.writeAndFlush(PulsarFrameEncoder.encodeCommand(command, allocator: channel.allocator), promise: nil)
            }
        }
        if request.hasMessagePublishTime {
            // The scan for the publish time awaits its reads off the topic's loop.
            let timestampMs = Int64(bitPattern: request.messagePublishTime)
            Task {
                do {
                    try await topic.seek(subscription: entry.subscription, publishTimeMs: timestampMs)
                    answer(.success(()))
                } catch {
                    answer(.failure(error))
                }
            }
            return
        }
        topic.eventLoop.execute {
            answer(Result { try topic.seek(subscription: entry.subscription, to: Commands.startPosition(request.messageID)) })
        }
    }

    private func handleGetTopicsOfNamespace(_ request: Pulsar_Proto_CommandGetTopicsOfNamespace) {
        guard let channel else { return }
        let broker = self.broker
        let future = channel.eventLoop.makeFutureWithTask {
            try await broker.topics(inNamespace: request.namespace)
        }
        future.whenComplete { result in
            let command: Pulsar_Proto_BaseCommand
            switch result {
            case .success(let topics):
                command = Commands.base(.getTopicsOfNamespaceResponse) {
                    $0.getTopicsOfNamespaceResponse.requestID = request.requestID
                    $0.getTopicsOfNamespaceResponse.topics = topics
                }
            case .failure(let error):
                command = Commands.error(requestID: request.requestID, error: error)
            }
            channel.writeAndFlush(PulsarFrameEncoder.encodeCommand(command, allocator: channel.allocator), promise: nil)
        }
    }
}
