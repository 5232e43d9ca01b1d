import Authentication
import BrokerCore
import Foundation
import ManagedLedger
import Logging
import NIOCore
import NIOSSL
import PulsarProtocol

/// Settings every connection needs.
public struct ConnectionConfiguration: Sendable {
    /// What LOOKUP answers: `pulsar://<advertisedAddress>:<port>`.
    public var brokerServiceURL: String
    /// What LOOKUP answers in `brokerServiceUrlTls` (`pulsar+ssl://<advertisedAddress>:<tlsPort>`);
    /// a client connected over TLS goes there. Nil: this broker has no TLS listener.
    public var brokerServiceURLTls: String?
    /// This broker's named listeners (`advertisedListeners`), for lookups that name one.
    public var listeners: [String: AdvertisedListener] = [:]
    public var serverVersion = "Magnetar 0.1.0"
    /// Checks CONNECT's and AUTH_RESPONSE's credentials; `.disabled`: authentication is off.
    public var authenticator: Authenticator = .disabled
    public init(brokerServiceURL: String, brokerServiceURLTls: String? = nil, authenticator: Authenticator = .disabled) {
        self.brokerServiceURL = brokerServiceURL
        self.brokerServiceURLTls = brokerServiceURLTls
        self.authenticator = authenticator
    }
}

/// One client connection's I/O: turns the socket's bytes into events for its
/// `PulsarConnectionMachine`, and runs the actions the machine returns (calls on `BrokerService`
/// topics, writes, reading on and off). Every decision is the machine's.
///
/// Owned by the channel's event loop; the machine is touched only there. Calls into a topic hop to
/// the topic's event loop; their results hop back and go into the machine.
final class PulsarConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias Machine = PulsarConnectionMachine<any ServedTopic>

    private let broker: BrokerService
    private let configuration: ConnectionConfiguration
    private let connectionID: UInt64
    private var logger: Logger
    private var machine: Machine
    private var channel: (any Channel)?
    private var sink: ConnectionSink?
    private var isActive = true
    private var outbox: ReplyOutbox?
    /// SENDs of the current socket read not yet handed to their topic.
    private var staged: StagedPublishes?
    /// Bytes of the current socket read: sizes the buffer staged entries are written into.
    private var readBytesLeft = 0
    /// Frames are split here, not by a `ByteToMessageHandler` in front: no `NIOAny` box, cast and
    /// pipeline hop per frame. After a malformed frame the rest of the input is ignored.
    private let frames = NIOSingleStepByteToMessageProcessor(PulsarFrameDecoder())
    private var inputFailed = false
    private let keepAliveInterval: TimeAmount
    private var keepAliveTask: RepeatedTask?
    private var authenticationCheckTask: RepeatedTask?

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
        self.machine = Machine(
            connectionID: connectionID, serverVersion: configuration.serverVersion,
            requiresAuthentication: configuration.authenticator.isEnabled)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        channel = context.channel
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        sink = ConnectionSink(channel: context.channel) { consumerID in
            bound.value.machine.consumerClosedByBroker(consumerID: consumerID)
        }
        if let remote = context.channel.remoteAddress {
            logger[metadataKey: "connection.remote"] = "\(remote)"
        }
        let interval = keepAliveInterval
        keepAliveTask = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            let handler = bound.value
            guard handler.isActive else { return }
            handler.run(handler.machine.keepAliveTick(interval: interval))
        }
        if configuration.authenticator.isEnabled {
            let check = TimeAmount.nanoseconds(Int64(configuration.authenticator.refreshCheckInterval.components.seconds) * 1_000_000_000
                + configuration.authenticator.refreshCheckInterval.components.attoseconds / 1_000_000_000)
            authenticationCheckTask = context.eventLoop.scheduleRepeatedTask(initialDelay: check, delay: check) { _ in
                let handler = bound.value
                guard handler.isActive else { return }
                handler.run(handler.machine.authenticationCheckTick(now: Date()))
            }
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        keepAliveTask?.cancel()
        keepAliveTask = nil
        authenticationCheckTask?.cancel()
        authenticationCheckTask = nil
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        let wasPaused = machine.pausedForWritability
        run(machine.writabilityChanged(isWritable: context.channel.isWritable))
        if machine.pausedForWritability != wasPaused { ConnectionMetrics.writePaused(wasPaused ? -1 : 1) }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        isActive = false
        keepAliveTask?.cancel()
        keepAliveTask = nil
        authenticationCheckTask?.cancel()
        authenticationCheckTask = nil
        if machine.pausedForWritability { ConnectionMetrics.writePaused(-1) }
        run(machine.channelInactive())
        logger.debug("connection.closed")
        context.fireChannelInactive()
    }

    /// The common name of the client's TLS certificate (verified in the handshake against
    /// `tlsTrustCertsFilePath`); nil on a plain-text connection or without a certificate.
    private func peerCommonName(_ channel: any Channel) -> String? {
        guard let handler = try? channel.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self),
              let certificate = handler.peerCertificate,
              let der = try? certificate.toDERBytes()
        else { return nil }
        return CertificateIdentity.commonName(derEncoded: der)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? PulsarProtocolError {
            run(machine.protocolErrorReceived(error))
        } else {
            logger.debug("connection.error", metadata: ["error": "\(error)"])
            context.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !inputFailed else { return }
        machine.bytesReceived()
        let input = unwrapInboundIn(data)
        readBytesLeft = input.readableBytes
        do {
            try frames.process(buffer: input) { frame in
                // Staged SENDs go to their topic before any other command: commands keep their order.
                if frame.type != .send { self.flushStagedPublishes() }
                self.run(self.machine.frameReceived(frame))
            }
        } catch {
            flushStagedPublishes()
            inputFailed = true
            errorCaught(context: context, error: error)
            return
        }
        flushStagedPublishes()
    }

    // MARK: running actions

    private func write(_ command: Pulsar_Proto_BaseCommand) {
        guard let channel else { return }
        channel.writeAndFlush(PulsarFrameEncoder.encodeCommand(command, allocator: channel.allocator), promise: nil)
    }

    private func log(_ line: Machine.LogLine?) {
        guard let line else { return }
        logger.log(level: line.level, "\(line.event)", metadata: line.metadata)
    }

    private func setReading(_ on: Bool) {
        channel?.setOption(ChannelOptions.autoRead, value: on).whenFailure { _ in }
    }

    private func run(_ action: Machine.Action) {
        guard let channel else { return }
        switch action {
        case .none:
            break
        case .write(let command, let line):
            log(line)
            write(command)
        case .close(_, let line):
            log(line)
            channel.close(promise: nil)
        case .refuse(let command, let line):
            log(line)
            channel.writeAndFlush(PulsarFrameEncoder.encodeCommand(command, allocator: channel.allocator)).whenComplete { _ in
                channel.close(promise: nil)
            }
        case .authenticate(var credentials, let refresh):
            // Pulsar's `tls` method carries no data: the role is the verified client certificate's CN.
            if case .method("tls", _) = credentials { credentials = .tlsCertificate(commonName: peerCommonName(channel) ?? "") }
            let authenticator = configuration.authenticator
            let bound = NIOLoopBound(self, eventLoop: channel.eventLoop)
            channel.eventLoop.makeFutureWithTask { () -> Result<AuthenticatedRole, AuthenticationFailure> in
                do throws(AuthenticationFailure) {
                    return .success(try await authenticator.authenticate(credentials))
                } catch {
                    return .failure(error)
                }
            }.whenSuccess { result in
                let handler = bound.value
                handler.run(handler.machine.authenticationCompleted(result, refresh: refresh))
            }
        case .publish(let publish):
            stage(publish, channel: channel)
            if publish.pauseReading {
                logger.debug("connection.reading-paused", metadata: ["pending.publishes": "\(machine.pendingPublishes)"])
                setReading(false)
            }
            let limiter = publish.topic.publishRateLimiter
            if let wait = limiter.consume(
                messages: Int(publish.attributes.numMessages), bytes: publish.bytes.readableBytes,
                nowNanos: NIODeadline.now().uptimeNanoseconds
            ) {
                throttle(for: wait, limiter: limiter, channel: channel)
            }
        case .publishTransactional(let publish, let transaction):
            guard let topic = publish.topic as? Topic else {
                return refuseSend(publish, .notAllowedError, "transactions write to persistent topics only")
            }
            guard broker.configuration.transactionCoordinatorEnabled else {
                return refuseSend(publish, .transactionCoordinatorNotFound, "transactions are not enabled on this broker")
            }
            // The coordinator here checks the transaction; in a cluster one elsewhere added the
            // partition before the client sent (the client's ADD_PARTITION_TO_TXN came first).
            let coordinator = broker.transactionCoordinator.withLockedValue { $0 }
            guard coordinator?.mayWrite(transaction, to: topic.name.description) ?? (broker.cluster != nil) else {
                return refuseSend(
                    publish, .invalidTxnStatus,
                    "transaction \(transaction) is not open or \(topic.name) was not added to it (ADD_PARTITION_TO_TXN first)")
            }
            // In order with this connection's other SENDs: what is staged goes first, then this one alone.
            flushStagedPublishes()
            stage(publish, channel: channel)
            flushStagedPublishes(transaction: transaction)
        case .transaction(let operation, let command, let requestID):
            let broker = self.broker
            let role = machine.role
            answer(channel, { try await Self.carryOut(operation, broker: broker, role: role) }) { machine, result in
                machine.transactionCompleted(command: command, requestID: requestID, result)
            }
        case .acknowledgeTransactional(let consumer, let positions, let transaction, let consumerID, let requestID):
            let broker = self.broker
            answer(channel, {
                guard let topic = consumer.topic as? Topic else {
                    throw BrokerError(.notAllowed, "transactions acknowledge on persistent topics only")
                }
                guard broker.configuration.transactionCoordinatorEnabled else {
                    throw BrokerError(.transactionCoordinatorNotFound, "transactions are not enabled on this broker")
                }
                let subscription = TransactionSubscription(topic: topic.name.description, subscription: consumer.subscription)
                let coordinator = broker.transactionCoordinator.withLockedValue { $0 }
                let allowed = if let coordinator { await coordinator.mayAcknowledge(transaction, on: subscription) } else { broker.cluster != nil }
                guard allowed else {
                    throw BrokerError(
                        .invalidTransactionStatus,
                        "transaction \(transaction) is not open or subscription '\(consumer.subscription)' of \(topic.name) was not added to it (ADD_SUBSCRIPTION_TO_TXN first)")
                }
                try await topic.eventLoop.flatSubmit {
                    topic.acknowledge(subscription: consumer.subscription, positions: positions, transaction: transaction)
                }.get()
            }) { machine, result in
                guard let requestID else { return .none }
                return machine.transactionalAckCompleted(consumerID: consumerID, requestID: requestID, transaction: transaction, result)
            }
        case .pauseReading:
            setReading(false)
        case .resumeReading:
            setReading(true)
        case .createProducer(let request):
            createProducer(request, channel: channel)
        case .releaseProducer(let topic, let producerID, let reply):
            let connectionID = self.connectionID
            // The topic drops it in order with the SENDs before (one queue per topic loop).
            topic.eventLoop.execute { topic.removeProducer(connectionID: connectionID, producerID: producerID) }
            if let reply { write(reply) }
        case .subscribe(let request):
            subscribe(request, channel: channel)
        case .releaseConsumer(let consumer):
            consumer.topic.eventLoop.execute {
                _ = consumer.topic.closeConsumer(subscription: consumer.subscription, key: consumer.key)
            }
        case .closeConsumer(let consumer, let requestID):
            let bound = NIOLoopBound(self, eventLoop: channel.eventLoop)
            consumer.topic.eventLoop.flatSubmit { consumer.topic.closeConsumer(subscription: consumer.subscription, key: consumer.key) }
                .hop(to: channel.eventLoop).whenComplete { result in
                    let handler = bound.value
                    handler.run(handler.machine.requestCompleted(requestID: requestID, result))
                }
        case .consumerOperation(let consumer, let operation, let reply):
            consumer.topic.eventLoop.execute { Self.perform(operation, on: consumer) }
            if let reply { write(reply) }
        case .unsubscribe(let consumer, let consumerID, let requestID):
            let bound = NIOLoopBound(self, eventLoop: channel.eventLoop)
            consumer.topic.eventLoop.flatSubmit { consumer.topic.unsubscribe(subscription: consumer.subscription, key: consumer.key) }
                .hop(to: channel.eventLoop).whenComplete { result in
                    let handler = bound.value
                    handler.run(handler.machine.unsubscribed(consumerID: consumerID, requestID: requestID, result))
                }
        case .lastMessageID(let consumer, let requestID):
            let bound = NIOLoopBound(self, eventLoop: channel.eventLoop)
            let topic = consumer.topic
            topic.eventLoop.flatSubmit { topic.lastMessage(subscription: consumer.subscription) }
                .hop(to: channel.eventLoop).whenComplete { result in
                    let handler = bound.value
                    switch result {
                    case .success(let info):
                        handler.run(handler.machine.lastMessageFound(requestID: requestID, partition: topic.partitionIndex, info))
                    case .failure(let error):
                        handler.run(handler.machine.requestCompleted(requestID: requestID, .failure(error)))
                    }
                }
        case .seek(let consumer, let target, let requestID):
            seek(consumer, target, requestID: requestID, channel: channel)
        case .partitionedMetadata(let topic, let requestID):
            let broker = self.broker
            let role = machine.role
            answer(channel, {
                let name = try TopicName(parsing: topic)
                // Any authenticated client may find the transaction coordinators (as in Pulsar).
                if !broker.servesTransactionCoordinatorAssign(name) {
                    try await broker.authorizer.authorize(role, .lookup, topic: name)
                }
                return try await broker.partitionMetadata(name)
            }) { machine, result in
                machine.partitionsFound(requestID: requestID, result)
            }
        case .lookup(let topic, let authoritative, let listenerName, let requestID):
            let broker = self.broker
            var url = LocalURLs(plain: configuration.brokerServiceURL, tls: configuration.brokerServiceURLTls)
            let role = machine.role
            let localListeners = configuration.listeners
            if let listenerName, let listener = localListeners[listenerName] {
                url = LocalURLs(plain: listener.pulsarURL ?? url.plain, tls: listener.pulsarTLSURL)
            }
            answer(channel, {
                let name = try TopicName(parsing: topic)
                if !broker.servesTransactionCoordinatorAssign(name) {
                    try await broker.authorizer.authorize(role, .lookup, topic: name)
                }
                let answer = try await broker.lookup(name, authoritative: authoritative)
                guard let listenerName else { return answer }
                return try Self.answer(answer, forListener: listenerName, local: localListeners)
            }) { machine, result in
                machine.lookupAnswered(requestID: requestID, local: url, result)
            }
        case .getSchema(let topic, let version, let requestID):
            let broker = self.broker
            let role = machine.role
            answer(channel, {
                let name = try TopicName(parsing: topic)
                try await broker.authorizer.authorize(role, .lookup, topic: name)
                return try await broker.schemas.version(name.schemaName, version)
            }) { machine, result in
                machine.schemaFound(requestID: requestID, topic: topic, result)
            }
        case .topicsOfNamespace(let namespace, let mode, let hash, let requestID):
            let broker = self.broker
            let role = machine.role
            answer(channel, {
                try await broker.authorizer.authorizeNamespaceRead(role, namespace: namespace)
                return try await broker.topicsOfNamespace(namespace, persistent: mode != .nonPersistent, nonPersistent: mode != .persistent)
            }) { machine, result in
                machine.topicsListed(requestID: requestID, clientHash: hash, result)
            }
        case .socketDrained(let resumeReading, let consumers):
            if resumeReading { setReading(true) }
            for consumer in consumers {
                consumer.topic.eventLoop.execute {
                    consumer.topic.flow(subscription: consumer.subscription, key: consumer.key, permits: 0)
                }
            }
        case .watchTopicList(let namespace, let pattern, let watcherID, let requestID):
            let broker = self.broker
            let role = machine.role
            let token = TopicListWatchers.Token(connectionID: connectionID, watcherID: watcherID)
            let bound = NIOLoopBound(self, eventLoop: channel.eventLoop)
            let loop = channel.eventLoop
            let notify: TopicListWatchers.Notify = { created, deleted, hash in
                loop.execute {
                    let handler = bound.value
                    handler.run(handler.machine.topicListChanged(watcherID: watcherID, created: created, deleted: deleted, hash: hash))
                }
            }
            answer(channel, {
                try await broker.authorizer.authorizeNamespaceRead(role, namespace: namespace)
                return try await broker.watchTopicList(token, namespace: namespace, pattern: pattern, notify: notify)
            }) { machine, result in
                machine.topicListWatched(requestID: requestID, watcherID: watcherID, result)
            }
        case .unwatchTopicList(let watcherID):
            broker.topicListWatchers.remove(TopicListWatchers.Token(connectionID: connectionID, watcherID: watcherID))
        case .releaseAll(let producers, let consumers):
            let connectionID = self.connectionID
            broker.topicListWatchers.removeAll(connectionID: connectionID)
            for (topic, producerID) in producers {
                topic.eventLoop.execute { topic.removeProducer(connectionID: connectionID, producerID: producerID) }
            }
            for consumer in consumers {
                consumer.topic.eventLoop.execute {
                    _ = consumer.topic.closeConsumer(subscription: consumer.subscription, key: consumer.key)
                }
            }
        }
    }

    /// Runs `work` as a task and feeds its result to the machine on the connection's loop.
    /// A lookup's answer in the addresses of the listener the client named (Pulsar fails a lookup
    /// naming a listener the broker that would serve the topic does not have).
    static func answer(_ answer: LookupAnswer, forListener name: String, local: [String: AdvertisedListener]) throws -> LookupAnswer {
        func missing(_ broker: String) -> BrokerError {
            BrokerError(.serviceNotReady, "the broker \(broker) does not have the listener '\(name)' (advertisedListeners)")
        }
        func rewritten(_ identity: BrokerIdentity) throws -> BrokerIdentity {
            guard let listener = identity.listeners?[name] else { throw missing(identity.brokerID) }
            var copy = identity
            copy.pulsarURL = listener.pulsarURL ?? identity.pulsarURL
            copy.pulsarTLSURL = listener.pulsarTLSURL
            return copy
        }
        switch answer {
        case .local:
            guard local[name] != nil else { throw missing("here") }
            return answer
        case .connect(let owner): return .connect(try rewritten(owner))
        case .redirect(let candidate): return .redirect(try rewritten(candidate))
        }
    }

    private func answer<T: Sendable>(
        _ channel: any Channel, _ work: @escaping @Sendable () async throws -> T,
        _ event: @escaping (inout Machine, Result<T, any Error>) -> Machine.Action
    ) {
        let bound = NIOLoopBound(self, eventLoop: channel.eventLoop)
        let boundEvent = NIOLoopBound(event, eventLoop: channel.eventLoop)
        channel.eventLoop.makeFutureWithTask(work).whenComplete { result in
            let handler = bound.value
            handler.run(boundEvent.value(&handler.machine, result))
        }
    }

    /// A SEND refused before it reached its topic: its SEND_ERROR, and the machine counts it done.
    private func refuseSend(_ publish: Machine.Publish, _ error: Pulsar_Proto_ServerError, _ message: String) {
        write(Commands.base(.sendError) {
            $0.sendError.producerID = publish.producerID
            $0.sendError.sequenceID = publish.sequenceID
            $0.sendError.error = error
            $0.sendError.message = message
        })
        run(machine.publishesCompleted(1))
    }

    /// A transaction command, with the broker's coordinator (or, ON_PARTITION / ON_SUBSCRIPTION,
    /// the topic, once the coordinator agrees the transaction is ending that way).
    private static func carryOut(_ operation: TransactionOperation, broker: BrokerService, role: String?) async throws -> TransactionID? {
        switch operation {
        case .endOnPartition(let transaction, let topic, let committed):
            try await checkEnding(transaction, committed: committed, broker: broker, role: role)
            try await BrokerTransactionParticipants(broker: broker).endTransaction(transaction, onPartition: topic, committed: committed)
            return transaction
        case .endOnSubscription(let transaction, let subscription, let committed):
            try await checkEnding(transaction, committed: committed, broker: broker, role: role)
            try await BrokerTransactionParticipants(broker: broker).endTransaction(
                transaction, onSubscription: subscription, committed: committed)
            return transaction
        default:
            break
        }
        let coordinator = try broker.requireTransactionCoordinator()
        func checkCoordinator(_ id: UInt64) throws {
            guard id == coordinator.coordinatorID else {
                throw BrokerError(.transactionCoordinatorNotFound, "transaction coordinator \(id) is not served here (\(coordinator.coordinatorID) is)")
            }
        }
        switch operation {
        case .connectCoordinator(let id):
            try checkCoordinator(id)
            return nil
        case .newTransaction(let id, let timeoutMs):
            try checkCoordinator(id)
            return try await coordinator.newTransaction(timeoutMs: Int64(clamping: timeoutMs), owner: "pulsar:\(role ?? "")")
        case .addPartitions(let transaction, let topics):
            let names = try topics.map { topic throws(BrokerError) in try TopicName(parsing: topic) }
            for name in names { try await broker.authorizer.authorize(role, .produce, topic: name) }
            try await coordinator.addPartitions(transaction, names.map(\.description))
            return transaction
        case .addSubscriptions(let transaction, let subscriptions):
            var canonical: [TransactionSubscription] = []
            for subscription in subscriptions {
                let name = try TopicName(parsing: subscription.topic)
                try await broker.authorizer.authorize(role, .consume, topic: name)
                canonical.append(TransactionSubscription(topic: name.description, subscription: subscription.subscription))
            }
            try await coordinator.addSubscriptions(transaction, canonical)
            return transaction
        case .end(let transaction, let committed):
            try await coordinator.end(transaction, committed: committed)
            return transaction
        case .endOnPartition, .endOnSubscription:
            return nil  // carried out above
        }
    }

    /// END_TXN_ON_PARTITION / ON_SUBSCRIPTION end a transaction the coordinator is ending that way:
    /// checked with the coordinator when it runs here; from another broker of the cluster (the
    /// coordinator's), the caller must be a superuser when authorization is on (brokers are).
    private static func checkEnding(_ transaction: TransactionID, committed: Bool, broker: BrokerService, role: String?) async throws {
        guard broker.configuration.transactionCoordinatorEnabled else {
            throw BrokerError(.transactionCoordinatorNotFound, "transactions are not enabled on this broker")
        }
        guard let coordinator = broker.transactionCoordinator.withLockedValue({ $0 }) else {
            guard broker.cluster != nil else {
                throw BrokerError(.transactionCoordinatorNotFound, "the transaction coordinator is still starting; retry")
            }
            try broker.authorizer.authorizeSuperUser(role, "end a transaction on a topic")
            return
        }
        let status = await coordinator.status(transaction)
        let expected: Set<TransactionStatus> = committed ? [.committing, .committed] : [.aborting, .aborted]
        guard let status, expected.contains(status) else {
            throw BrokerError(
                .invalidTransactionStatus,
                "transaction \(transaction) is \(status?.rawValue ?? "unknown"), not \(committed ? "committing" : "aborting")")
        }
    }

    private static func perform(_ operation: Machine.ConsumerOperation, on consumer: Machine.ConsumerRef) {
        let topic = consumer.topic
        switch operation {
        case .flow(let permits):
            topic.flow(subscription: consumer.subscription, key: consumer.key, permits: permits)
        case .redeliver(let positions):
            topic.redeliver(subscription: consumer.subscription, key: consumer.key, positions: positions)
        case .acknowledgeCumulative(let position):
            topic.acknowledgeCumulative(subscription: consumer.subscription, upTo: position)
        case .acknowledge(let complete, let partial):
            if !complete.isEmpty { topic.acknowledge(subscription: consumer.subscription, positions: complete) }
            for (position, ackSet) in partial {
                topic.acknowledgeBatchIndexes(subscription: consumer.subscription, position: position, ackSet: ackSet)
            }
        }
    }

    private func createProducer(_ request: Machine.CreateProducer, channel: any Channel) {
        guard let sink else { return }
        let producerName = request.producerName ?? broker.generateProducerName()
        let connectionID = self.connectionID
        let initialSubscription = request.initialSubscription
        let bound = NIOLoopBound(self, eventLoop: channel.eventLoop)
        let broker = self.broker
        let role = machine.role
        authorized(.produce, request.topic, channel: channel).flatMap {
            broker.servedTopic(request.topic, preferredLoop: channel.eventLoop)
        }.flatMap { topic in
            // The schema step (registry in the metadata store) before the producer is added.
            channel.eventLoop.makeFutureWithTask {
                try await broker.producerSchemaVersion(request.schema, topic: request.topic, role: role)
            }.map { (topic, $0) }
        }.flatMap { topic, schemaVersion in
            topic.eventLoop.flatSubmit { () -> EventLoopFuture<(topic: any ServedTopic, name: String, grant: ProducerGrant, schemaVersion: Int64?)> in
                let created = initialSubscription.map { topic.createSubscriptionIfMissing($0) } ?? topic.eventLoop.makeSucceededVoidFuture()
                return created.flatMapThrowing {
                    let grant = try topic.addProducer(
                        connectionID: connectionID, producerID: request.producerID, name: producerName, sink: sink,
                        accessMode: request.accessMode, topicEpoch: request.topicEpoch)
                    switch grant {
                    case .ready(let name, _), .waiting(let name, _), .persisting(let name, _): return (topic, name, grant, schemaVersion)
                    }
                }
            }
        }.flatMap { created in
            // A raised topic epoch is durable before the producer hears of it.
            guard case .persisting(let name, let ready) = created.grant else { return channel.eventLoop.makeSucceededFuture(created) }
            return ready.map { epoch in (created.topic, name, ProducerGrant.ready(name: name, topicEpoch: epoch), created.schemaVersion) }
        }.hop(to: channel.eventLoop).whenComplete { result in
            let handler = bound.value
            let answer = { (ready: Bool, epoch: UInt64?) in
                handler.run(handler.machine.producerCreated(
                    producerID: request.producerID, requestID: request.requestID, topicName: request.topic,
                    result.map { ($0.topic, $0.name, $0.topic.lastPublishedSequenceID(producerName: $0.name), $0.schemaVersion) },
                    topicEpoch: epoch, ready: ready))
            }
            guard case .success(let created) = result else { return answer(true, nil) }
            switch created.grant {
            case .ready(_, let epoch):
                answer(true, epoch)
            case .persisting(_, let ready), .waiting(_, let ready):
                answer(false, nil)
                ready.hop(to: channel.eventLoop).whenComplete { granted in
                    switch granted {
                    case .success(let epoch): answer(true, epoch)
                    case .failure: break  // closed while waiting: nothing more to tell
                    }
                }
            }
        }
    }

    private func subscribe(_ request: Machine.Subscribe, channel: any Channel) {
        guard let sink else { return }
        let bound = NIOLoopBound(self, eventLoop: channel.eventLoop)
        let broker = self.broker
        let role = machine.role
        authorized(.consume, request.topic, channel: channel).flatMap {
            broker.servedTopic(request.topic, preferredLoop: channel.eventLoop)
        }.flatMap { topic -> EventLoopFuture<any ServedTopic> in
            guard let schema = request.schema else { return channel.eventLoop.makeSucceededFuture(topic) }
            // Registers on a topic nothing uses yet, else must read the topic's schema.
            return topic.eventLoop.submit { topic.isInUse }.flatMap { inUse in
                channel.eventLoop.makeFutureWithTask {
                    try await broker.checkConsumerSchema(schema, topic: request.topic, inUse: inUse, role: role)
                    return topic
                }
            }
        }.flatMap { topic in
            topic.eventLoop.flatSubmit {
                topic.subscribe(request.request, sink: sink).map { topic }
            }
        }.hop(to: channel.eventLoop).whenComplete { result in
            let handler = bound.value
            handler.run(handler.machine.subscribed(request, result))
        }
    }

    /// Succeeds if the client's role may do `operation` on `topic` (at once with authorization off).
    private func authorized(_ operation: TopicOperation, _ topic: TopicName, channel: any Channel) -> EventLoopFuture<Void> {
        let authorizer = broker.authorizer
        guard authorizer.isEnabled else { return channel.eventLoop.makeSucceededVoidFuture() }
        let role = machine.role
        return channel.eventLoop.makeFutureWithTask { try await authorizer.authorize(role, operation, topic: topic) }
    }

    private func seek(_ consumer: Machine.ConsumerRef, _ target: Machine.SeekTarget, requestID: UInt64, channel: any Channel) {
        let bound = NIOLoopBound(self, eventLoop: channel.eventLoop)
        let loop = channel.eventLoop
        let answer: @Sendable (Result<Void, any Error>) -> Void = { result in
            // CLOSE_CONSUMER frames were queued on the channel's loop first; the answer follows them.
            loop.execute {
                let handler = bound.value
                handler.run(handler.machine.requestCompleted(requestID: requestID, result))
            }
        }
        let topic = consumer.topic
        switch target {
        case .publishTime(let timestampMs):
            // The scan for the publish time awaits its reads off the topic's loop.
            Task {
                do {
                    try await topic.seek(subscription: consumer.subscription, publishTimeMs: timestampMs)
                    answer(.success(()))
                } catch {
                    answer(.failure(error))
                }
            }
        case .position(let position):
            topic.eventLoop.execute {
                answer(Result { try topic.seek(subscription: consumer.subscription, to: position) })
            }
        }
    }

    // MARK: publishing

    /// Stops reading for `nanoseconds` (a topic's publish rate is in debt), then reads again once
    /// the limiter says the debt is paid (checking again: other connections share the topic's rate).
    private func throttle(for nanoseconds: UInt64, limiter: RateLimiter, channel: any Channel) {
        guard !machine.pausedForPublishRate else { return }
        ConnectionMetrics.publishThrottled()
        run(machine.publishRateExceeded())
        let bound = NIOLoopBound(self, eventLoop: channel.eventLoop)
        func resume(after wait: UInt64) {
            channel.eventLoop.scheduleTask(in: .nanoseconds(Int64(wait))) {
                let handler = bound.value
                if let more = limiter.wait(nowNanos: NIODeadline.now().uptimeNanoseconds), handler.isActive {
                    resume(after: more)
                } else {
                    handler.run(handler.machine.publishRateRestored())
                }
            }
        }
        resume(after: nanoseconds)
    }

    /// Stages one SEND: encoded after the others of this read for the same topic.
    private func stage(_ publish: Machine.Publish, channel: any Channel) {
        if let current = staged, current.topic !== publish.topic {
            flushStagedPublishes()
        }
        if staged == nil {
            // Sized for the rest of this read (entries are about as long as their SEND frames), so
            // a lone message does not pin a large buffer in the tail cache.
            let entryLength = Entry.encodedLength(attributes: publish.attributes, bodyLength: 4 + publish.bytes.readableBytes)
            staged = StagedPublishes(
                topic: publish.topic,
                buffer: channel.allocator.buffer(capacity: max(entryLength, readBytesLeft + readBytesLeft / 4)),
                receivedAt: NIODeadline.now())
        }
        let checksum = publish.checksum
        let bytes = publish.bytes
        staged!.add(attributes: publish.attributes, producerID: publish.producerID, sequenceID: publish.sequenceID) { buffer in
            buffer.writeInteger(checksum)
            buffer.writeImmutableBuffer(bytes)
        }
    }

    /// Hands the staged SENDs to their topic as one `PublishBatch` (one hop to the topic's loop).
    /// Called at the end of every socket read, before any other command (so commands keep their
    /// order relative to SENDs), and when a SEND for another topic arrives.
    private func flushStagedPublishes(transaction: TransactionID? = nil) {
        guard let staged, let channel else { return }
        self.staged = nil
        readBytesLeft = 0
        let topic = staged.topic
        let batch = PublishBatch(
            entries: staged.entries(allocator: channel.allocator), attributes: staged.attributes,
            replier: SendReplies(
                outbox: replyOutbox(channel: channel), partition: topic.partitionIndex, receivedAt: staged.receivedAt,
                sends: staged.sends, allocator: channel.allocator))
        if let transaction, let topic = topic as? Topic {
            let producerName = staged.attributes.first?.producerName ?? ""
            topic.eventLoop.execute { topic.publish(batch, transaction: transaction, producerName: producerName) }
            return
        }
        // Usually the topic runs on this connection's loop (its first client's): no hop.
        if topic.eventLoop.inEventLoop {
            topic.publish(batch)
        } else {
            topic.eventLoop.execute { topic.publish(batch) }
        }
    }

    /// The connection's reply outbox, made on first use (on the connection's loop).
    private func replyOutbox(channel: any Channel) -> ReplyOutbox {
        if let outbox { return outbox }
        // Weak: the outbox lives as long as topics hold replies for it, the handler no longer.
        let outbox = ReplyOutbox(channel: channel) { [weak self] count in
            guard let self else { return }
            self.run(self.machine.publishesCompleted(count))
        }
        self.outbox = outbox
        return outbox
    }
}
