import Authentication
import BrokerCore
import Foundation
import ManagedLedger
import Logging
import NIOCore
import PulsarProtocol
import Schemas

/// Everything one Pulsar connection decides, as a sans-IO state machine: events go in (a decoded
/// frame, a topic's answer, the socket's writability, a keep-alive tick), and each returns the one
/// action the channel handler runs. It owns the handshake, the producer and consumer tables (by the
/// client's ids, unique per connection), the requests waiting for a topic, and back-pressure on
/// publishes and on the socket. It does no I/O, touches no topic and knows no event loop, so
/// transcripts of frames and answers test it without a socket (`PulsarConnectionMachineTests`).
///
/// `TopicHandle` is what a topic is to the machine: the handler uses `any ServedTopic`, tests a
/// name. A value owned by the connection's handler, on the connection's event loop.
struct PulsarConnectionMachine<TopicHandle> {
    struct Limits {
        var maxProducers = ConnectionLimits.maxProducersPerConnection
        var maxConsumers = ConnectionLimits.maxConsumersPerConnection
        /// Reading stops at this many SENDs without a receipt, and resumes at half.
        var maxPendingPublishes = ConnectionLimits.maxPendingPublishesPerConnection
    }

    /// A consumer as the topic knows it.
    struct ConsumerRef {
        var topic: TopicHandle
        var subscription: String
        var key: ConsumerKey
    }

    /// A line for the handler's log, with the action it belongs to.
    struct LogLine: Equatable {
        var level: Logger.Level
        var event: String
        var metadata: Logger.Metadata = [:]
    }

    /// A SEND that passed every check: the handler stages it for `topic`.
    struct Publish {
        var topic: TopicHandle
        var attributes: EntryAttributes
        var producerID: UInt64
        var sequenceID: UInt64
        /// The producer's checksum, computed if its frame had none: stored in front of `bytes`.
        var checksum: UInt32
        /// `[metadataSize][metadata][payload]`, a slice of the socket's buffer.
        var bytes: ByteBuffer
        /// This SEND reached the limit of pending publishes: stop reading until receipts come back.
        var pauseReading: Bool
    }

    struct CreateProducer {
        var requestID: UInt64
        var producerID: UInt64
        var topic: TopicName
        /// nil: the broker names the producer.
        var producerName: String?
        var initialSubscription: String?
        /// The producer's schema; nil: none (the bytes schema).
        var schema: SchemaDefinition?
        var accessMode: ProducerAccessMode = .shared
        /// The topic epoch a reconnecting exclusive producer was given.
        var topicEpoch: UInt64?
    }

    struct Subscribe {
        var requestID: UInt64
        var consumerID: UInt64
        var topic: TopicName
        var request: SubscribeRequest
        /// The consumer's schema, to check (or register) before subscribing; nil: none, or AUTO_CONSUME.
        var schema: SchemaDefinition?
    }

    enum ConsumerOperation {
        case flow(permits: UInt32)
        case redeliver([Position])
        /// Acknowledges everything up to and including the position.
        case acknowledgeCumulative(Position)
        /// Whole entries, and entries of which only the batch indexes whose bit is 0 are acknowledged.
        case acknowledge(complete: [Position], partial: [(Position, [Int64])])
    }

    enum SeekTarget {
        case position(StartPosition)
        case publishTime(Int64)
    }

    enum Action {
        case none
        case write(Pulsar_Proto_BaseCommand, log: LogLine? = nil)
        /// Log why, then close the connection.
        case close(reason: String, log: LogLine)
        /// Write `command`, then close the connection (a refused CONNECT).
        case refuse(Pulsar_Proto_BaseCommand, log: LogLine)
        /// Check the credentials with the broker's `Authenticator`, then call
        /// `authenticationCompleted` (`refresh`: an AUTH_RESPONSE on a live connection).
        case authenticate(Credentials, refresh: Bool)
        case publish(Publish)
        case pauseReading
        case resumeReading
        case createProducer(CreateProducer)
        /// Take the producer off its topic, then write `reply` if there is one.
        case releaseProducer(TopicHandle, producerID: UInt64, reply: Pulsar_Proto_BaseCommand? = nil)
        case subscribe(Subscribe)
        /// Take the consumer off its subscription; nobody waits for an answer.
        case releaseConsumer(ConsumerRef)
        /// Close the consumer and answer `requestID` with `requestCompleted` once its acks are durable.
        case closeConsumer(ConsumerRef, requestID: UInt64)
        /// Run the operation on the consumer's topic, then write `reply` if there is one.
        case consumerOperation(ConsumerRef, ConsumerOperation, reply: Pulsar_Proto_BaseCommand?)
        /// Answer with `unsubscribed`.
        case unsubscribe(ConsumerRef, consumerID: UInt64, requestID: UInt64)
        /// Answer with `lastMessageFound`.
        case lastMessageID(ConsumerRef, requestID: UInt64)
        /// Answer with `requestCompleted`.
        case seek(ConsumerRef, SeekTarget, requestID: UInt64)
        /// Carry out a transaction command with the broker's coordinator; answer with `transactionCompleted`.
        case transaction(TransactionOperation, command: Pulsar_Proto_BaseCommand.TypeEnum, requestID: UInt64)
        /// A SEND in a transaction: written once the coordinator says the transaction may write to the topic.
        case publishTransactional(Publish, TransactionID)
        /// An acknowledgement in a transaction: held on the subscription until the transaction ends;
        /// answer `requestID` (if any) with `transactionalAckCompleted`.
        case acknowledgeTransactional(ConsumerRef, positions: [Position], TransactionID, consumerID: UInt64, requestID: UInt64?)
        /// Answer with `partitionsFound`.
        case partitionedMetadata(topic: String, requestID: UInt64)
        /// Answer with `lookupAnswered`.
        /// `listener`: the client's `advertised_listener_name`, nil without one.
        case lookup(topic: String, authoritative: Bool, listener: String?, requestID: UInt64)
        /// Answer with `topicsListed`.
        /// `mode`: Pulsar's PERSISTENT, NON_PERSISTENT or ALL; `hash`: the client's last list's.
        case topicsOfNamespace(namespace: String, mode: Pulsar_Proto_CommandGetTopicsOfNamespace.Mode, hash: String?, requestID: UInt64)
        /// Start a topic-list watch; answer with `topicListWatched`, tell changes with `topicListChanged`.
        case watchTopicList(namespace: String, pattern: String, watcherID: UInt64, requestID: UInt64)
        /// End a topic-list watch (nobody waits for an answer).
        case unwatchTopicList(watcherID: UInt64)
        /// Answer with `schemaFound`; `version` nil: the latest.
        case getSchema(topic: String, version: Int64?, requestID: UInt64)
        /// The socket drained: resume reading if publishes allow, and let each consumer's
        /// subscription dispatch again (a zero-permit flow).
        case socketDrained(resumeReading: Bool, consumers: [ConsumerRef])
        /// The connection is gone: take every producer and consumer off its topic.
        case releaseAll(producers: [(TopicHandle, producerID: UInt64)], consumers: [ConsumerRef])
    }

    private enum ProducerSlot {
        case creating(requestID: UInt64, closeRequested: Bool)
        case ready(TopicHandle)
    }

    private enum ConsumerSlot {
        case subscribing(requestID: UInt64, closeRequested: Bool)
        case ready(topic: TopicHandle, subscription: String)
    }

    let connectionID: UInt64
    let limits: Limits
    let serverVersion: String
    private(set) var handshake = ConnectionStateMachine()
    private var producers: [UInt64: ProducerSlot] = [:]
    private var consumers: [UInt64: ConsumerSlot] = [:]
    private(set) var pendingPublishes = 0
    /// Reading stopped for pending publishes.
    private(set) var pausedForPublishes = false
    /// Reading stopped because the socket does not take our writes.
    private(set) var pausedForWritability = false
    /// Reading stopped because a topic this connection publishes to is over its namespace's
    /// `publishRate` (Pulsar throttles producers so, never by dropping).
    private(set) var pausedForPublishRate = false
    private var receivedSinceKeepAliveTick = false
    private var pingOutstanding = false
    /// Who the client is, once authenticated (nil with authentication off).
    private(set) var client: AuthenticatedRole?
    /// The CONNECT's client version, kept for the CONNECTED log line.
    private var clientVersion = ""
    private var supportsAuthRefresh = false
    /// The topic-list watches this connection holds (WATCH_TOPIC_LIST), by watcher id.
    private var topicListWatches: Set<UInt64> = []
    /// An AUTH_CHALLENGE was sent for expired credentials and not yet answered.
    private(set) var challengePending = false

    init(connectionID: UInt64, serverVersion: String, limits: Limits = Limits(), requiresAuthentication: Bool = false) {
        self.connectionID = connectionID
        self.serverVersion = serverVersion
        self.limits = limits
        self.handshake = ConnectionStateMachine(requiresAuthentication: requiresAuthentication)
    }

    /// The client's role for authorization; nil with authentication off.
    var role: String? { client?.role }

    var isClosed: Bool { handshake.state == .closed }
    var producerCount: Int { producers.count }
    var consumerCount: Int { consumers.count }

    // MARK: input from the socket

    /// Bytes arrived (the client is alive).
    mutating func bytesReceived() {
        receivedSinceKeepAliveTick = true
    }

    mutating func frameReceived(_ frame: PulsarFrame) -> Action {
        let type = frame.type
        var version: Int32?
        if type == .connect {
            let connect = frame.command.connect
            version = connect.hasProtocolVersion ? connect.protocolVersion : nil
        }
        switch handshake.commandReceived(type, clientProtocolVersion: version) {
        case .sendConnected(let version):
            clientVersion = frame.command.connect.clientVersion
            return connectedReply(version)
        case .authenticate:
            let connect = frame.command.connect
            clientVersion = connect.clientVersion
            supportsAuthRefresh = connect.hasFeatureFlags && connect.featureFlags.supportsAuthRefresh
            let method = connect.hasAuthMethodName ? connect.authMethodName : ""
            let credentials: Credentials = method.isEmpty || method == "none" ? .none : .method(method, Array(connect.authData))
            return .authenticate(credentials, refresh: false)
        case .sendPong:
            return .write(Commands.base(.pong) { $0.pong = Pulsar_Proto_CommandPong() })
        case .ignore:
            return .none
        case .close(let reason):
            return .close(reason: reason, log: LogLine(level: .info, event: "connection.refused-input", metadata: ["reason": "\(reason)"]))
        case .handleCommand:
            if type == .send {
                return sendReceived(frame.send ?? SendCommandFields(frame.command.send), payload: frame.payload)
            }
            return commandReceived(frame.command)
        }
    }

    private func connectedReply(_ version: Int32) -> Action {
        let serverVersion = self.serverVersion
        var metadata: Logger.Metadata = ["client.version": "\(clientVersion)", "protocol.version": "\(version)"]
        if let client { metadata["role"] = "\(client.role)" }
        return .write(
            Commands.base(.connected) {
                $0.connected.serverVersion = serverVersion
                $0.connected.protocolVersion = version
                $0.connected.maxMessageSize = Int32(PulsarLimits.maxMessageSizeBytes)
                $0.connected.featureFlags.supportsTopicWatchers = true
            },
            log: LogLine(level: .debug, event: "connection.connected", metadata: metadata))
    }

    // MARK: authentication

    /// The `Authenticator` answered an `.authenticate`.
    mutating func authenticationCompleted(_ result: Result<AuthenticatedRole, AuthenticationFailure>, refresh: Bool) -> Action {
        guard !refresh else { return refreshCompleted(result) }
        switch result {
        case .success(let role):
            client = role
            switch handshake.authenticated(true) {
            case .sendConnected(let version): return connectedReply(version)
            default: return .none
            }
        case .failure(let failure):
            guard case .close = handshake.authenticated(false) else { return .none }
            // Pulsar's answer: an ERROR for no request, then the connection is closed. The
            // reason stays in our log; the client learns only that it failed.
            return .refuse(
                Commands.base(.error) {
                    $0.error.requestID = UInt64.max
                    $0.error.error = .authenticationError
                    $0.error.message = "Failed to authenticate"
                },
                log: LogLine(level: .warning, event: "connection.authentication-failed", metadata: [
                    "reason": "\(failure)", "client.version": "\(clientVersion)",
                ]))
        }
    }

    private mutating func refreshCompleted(_ result: Result<AuthenticatedRole, AuthenticationFailure>) -> Action {
        guard !isClosed else { return .none }
        switch result {
        case .success(let role) where role.role == client?.role:
            client = role
            challengePending = false
            return .none
        case .success(let role):
            handshake.close()
            return .close(reason: "refreshed credentials are for another role", log: LogLine(
                level: .warning, event: "connection.authentication-refresh-refused", metadata: [
                    "role": "\(client?.role ?? "")", "new.role": "\(role.role)",
                ]))
        case .failure(let failure):
            handshake.close()
            return .close(reason: "refreshed credentials are not valid", log: LogLine(
                level: .warning, event: "connection.authentication-refresh-failed", metadata: ["reason": "\(failure)"]))
        }
    }

    /// Every `authenticationRefreshCheckSeconds`: credentials that expired get an AUTH_CHALLENGE
    /// (the client answers with fresh ones); if they are still expired at the next check, or the
    /// client cannot refresh, the connection is closed.
    mutating func authenticationCheckTick(now: Date) -> Action {
        guard case .connected(let version) = handshake.state, let client, let expiresAt = client.expiresAt, expiresAt <= now else {
            return .none
        }
        guard supportsAuthRefresh, !challengePending else {
            handshake.close()
            return .close(reason: "credentials expired", log: LogLine(
                level: .info, event: "connection.authentication-expired", metadata: [
                    "role": "\(client.role)", "challenged": "\(challengePending)",
                ]))
        }
        challengePending = true
        let serverVersion = self.serverVersion
        return .write(
            Commands.base(.authChallenge) {
                $0.authChallenge.serverVersion = serverVersion
                $0.authChallenge.protocolVersion = version
                $0.authChallenge.challenge.authMethodName = client.method
                $0.authChallenge.challenge.authData = Data("refresh".utf8)
            },
            log: LogLine(level: .debug, event: "connection.authentication-challenge", metadata: ["role": "\(client.role)"]))
    }

    /// The input could not be read as frames: nothing after it is.
    mutating func protocolErrorReceived(_ error: PulsarProtocolError) -> Action {
        switch handshake.protocolErrorReceived(error) {
        case .close(let reason):
            return .close(reason: reason, log: LogLine(level: .info, event: "connection.refused-input", metadata: ["reason": "\(reason)"]))
        default:
            return .none
        }
    }

    private mutating func commandReceived(_ command: Pulsar_Proto_BaseCommand) -> Action {
        switch command.type {
        case .pong:
            return .none
        case .partitionedMetadata:
            let request = command.partitionMetadata
            return .partitionedMetadata(topic: request.topic, requestID: request.requestID)
        case .lookup:
            let request = command.lookupTopic
            return .lookup(
                topic: request.topic, authoritative: request.authoritative,
                listener: request.hasAdvertisedListenerName && !request.advertisedListenerName.isEmpty ? request.advertisedListenerName : nil,
                requestID: request.requestID)
        case .getTopicsOfNamespace:
            let request = command.getTopicsOfNamespace
            return .topicsOfNamespace(
                namespace: request.namespace, mode: request.mode, hash: request.hasTopicsHash ? request.topicsHash : nil,
                requestID: request.requestID)
        case .watchTopicList:
            let request = command.watchTopicList
            if !topicListWatches.contains(request.watcherID), topicListWatches.count >= BrokerService.maxTopicListWatchesPerConnection {
                return .write(Commands.error(requestID: request.requestID, error: BrokerError(
                    .notAllowed, "this connection holds \(topicListWatches.count) topic-list watches, the most one may: close some")))
            }
            topicListWatches.insert(request.watcherID)
            return .watchTopicList(
                namespace: request.namespace, pattern: request.topicsPattern, watcherID: request.watcherID,
                requestID: request.requestID)
        case .watchTopicListClose:
            let request = command.watchTopicListClose
            guard topicListWatches.remove(request.watcherID) != nil else { return .none }
            return .unwatchTopicList(watcherID: request.watcherID)
        case .producer:
            return producerRequested(command.producer)
        case .closeProducer:
            return closeProducerRequested(command.closeProducer)
        case .subscribe:
            return subscribeRequested(command.subscribe)
        case .flow:
            let flow = command.flow
            guard let consumer = readyConsumer(flow.consumerID) else { return .none }
            return .consumerOperation(consumer, .flow(permits: flow.messagePermits), reply: nil)
        case .ack:
            return ackReceived(command.ack)
        case .redeliverUnacknowledgedMessages:
            let request = command.redeliverUnacknowledgedMessages
            guard let consumer = readyConsumer(request.consumerID) else { return .none }
            return .consumerOperation(consumer, .redeliver(request.messageIds.map(Commands.position)), reply: nil)
        case .closeConsumer:
            return closeConsumerRequested(command.closeConsumer)
        case .unsubscribe:
            let request = command.unsubscribe
            guard let consumer = readyConsumer(request.consumerID) else {
                return .write(Commands.error(requestID: request.requestID, error: BrokerError(
                    .consumerNotFound, "consumer \(request.consumerID) is not open on this connection")))
            }
            return .unsubscribe(consumer, consumerID: request.consumerID, requestID: request.requestID)
        case .getLastMessageID:
            let request = command.getLastMessageID
            guard let consumer = readyConsumer(request.consumerID) else {
                return .write(Commands.error(requestID: request.requestID, error: BrokerError(
                    .metadata, "Consumer not found: consumer \(request.consumerID) is not open on this connection")))
            }
            return .lastMessageID(consumer, requestID: request.requestID)
        case .seek:
            let request = command.seek
            guard let consumer = readyConsumer(request.consumerID) else {
                return .write(Commands.error(requestID: request.requestID, error: BrokerError(
                    .consumerNotFound, "consumer \(request.consumerID) is not open on this connection")))
            }
            let target: SeekTarget = request.hasMessagePublishTime
                ? .publishTime(Int64(bitPattern: request.messagePublishTime))
                : .position(Commands.startPosition(request.messageID))
            return .seek(consumer, target, requestID: request.requestID)
        case .getSchema:
            let request = command.getSchema
            // Pulsar reads the first 8 bytes as a big-endian version (the older 64-byte form too).
            let version = request.hasSchemaVersion ? Commands.schemaVersion(request.schemaVersion) : nil
            return .getSchema(topic: request.topic, version: version, requestID: request.requestID)
        case .newTxn, .addPartitionToTxn, .addSubscriptionToTxn, .endTxn, .endTxnOnPartition, .endTxnOnSubscription,
             .tcClientConnectRequest:
            guard let operation = Self.transactionOperation(command) else {
                return .write(Commands.transactionResponse(
                    for: command.type, requestID: Commands.transactionRequestID(command) ?? 0, transaction: nil,
                    error: .invalidTxnStatus, message: "\(command.type) names no transaction id"))
            }
            return .transaction(operation, command: command.type, requestID: Commands.transactionRequestID(command) ?? 0)
        case .authResponse where handshake.requiresAuthentication:
            let response = command.authResponse.response
            return .authenticate(.method(response.authMethodName, Array(response.authData)), refresh: true)
        case .authResponse:
            // Only sent after an AUTH_CHALLENGE, and this broker challenges nobody: authentication is off.
            return .write(
                Commands.base(.error) {
                    $0.error.requestID = 0
                    $0.error.error = .authenticationError
                    $0.error.message = "Authentication is not enabled on this broker: AUTH_RESPONSE is not expected"
                },
                log: LogLine(level: .info, event: "connection.auth-response-refused"))
        default:
            let reason = "unsupported command \(command.type)"
            handshake.close()
            return .close(reason: reason, log: LogLine(level: .info, event: "connection.unsupported-command", metadata: ["command": "\(command.type)"]))
        }
    }

    /// What a transaction command asks of the coordinator (or, for the ON_PARTITION / ON_SUBSCRIPTION
    /// ones, of a topic); nil when it names no transaction.
    static func transactionOperation(_ command: Pulsar_Proto_BaseCommand) -> TransactionOperation? {
        func id(_ most: UInt64, _ least: UInt64, _ present: Bool) -> TransactionID? {
            present ? TransactionID(mostBits: most, leastBits: least) : nil
        }
        switch command.type {
        case .tcClientConnectRequest:
            return .connectCoordinator(coordinatorID: command.tcClientConnectRequest.tcID)
        case .newTxn:
            return .newTransaction(coordinatorID: command.newTxn.tcID, timeoutMs: command.newTxn.txnTtlMillis)
        case .addPartitionToTxn:
            let request = command.addPartitionToTxn
            return id(request.txnidMostBits, request.txnidLeastBits, request.hasTxnidLeastBits).map {
                .addPartitions($0, request.partitions)
            }
        case .addSubscriptionToTxn:
            let request = command.addSubscriptionToTxn
            return id(request.txnidMostBits, request.txnidLeastBits, request.hasTxnidLeastBits).map {
                .addSubscriptions($0, request.subscription.map { TransactionSubscription(topic: $0.topic, subscription: $0.subscription) })
            }
        case .endTxn:
            let request = command.endTxn
            return id(request.txnidMostBits, request.txnidLeastBits, request.hasTxnidLeastBits).map {
                .end($0, committed: request.txnAction == .commit)
            }
        case .endTxnOnPartition:
            let request = command.endTxnOnPartition
            return id(request.txnidMostBits, request.txnidLeastBits, request.hasTxnidLeastBits).map {
                .endOnPartition($0, topic: request.topic, committed: request.txnAction == .commit)
            }
        case .endTxnOnSubscription:
            let request = command.endTxnOnSubscription
            return id(request.txnidMostBits, request.txnidLeastBits, request.hasTxnidLeastBits).map {
                .endOnSubscription(
                    $0, TransactionSubscription(topic: request.subscription.topic, subscription: request.subscription.subscription),
                    committed: request.txnAction == .commit)
            }
        default:
            return nil
        }
    }

    /// A transaction command was carried out (or failed): its response.
    func transactionCompleted(
        command: Pulsar_Proto_BaseCommand.TypeEnum, requestID: UInt64, _ result: Result<TransactionID?, any Error>
    ) -> Action {
        switch result {
        case .success(let transaction):
            return .write(Commands.transactionResponse(for: command, requestID: requestID, transaction: transaction))
        case .failure(let error):
            return .write(
                Commands.transactionResponse(
                    for: command, requestID: requestID, transaction: nil, error: ServerErrors.serverError(for: error),
                    message: ServerErrors.message(for: error)),
                log: LogLine(level: .info, event: "transaction.command-failed", metadata: [
                    "command": "\(command)", "error": "\(error)",
                ]))
        }
    }

    /// A transactional acknowledgement is durable (or was refused: TransactionConflict and the like).
    func transactionalAckCompleted(consumerID: UInt64, requestID: UInt64, transaction: TransactionID, _ result: Result<Void, any Error>) -> Action {
        .write(Commands.base(.ackResponse) {
            $0.ackResponse.consumerID = consumerID
            $0.ackResponse.requestID = requestID
            $0.ackResponse.txnidMostBits = transaction.mostBits
            $0.ackResponse.txnidLeastBits = transaction.leastBits
            if case .failure(let error) = result {
                $0.ackResponse.error = ServerErrors.serverError(for: error)
                $0.ackResponse.message = ServerErrors.message(for: error)
            }
        })
    }

    private func readyConsumer(_ consumerID: UInt64) -> ConsumerRef? {
        guard case .ready(let topic, let subscription)? = consumers[consumerID] else { return nil }
        return ConsumerRef(topic: topic, subscription: subscription, key: ConsumerKey(connectionID: connectionID, consumerID: consumerID))
    }

    // MARK: producers

    private mutating func producerRequested(_ request: Pulsar_Proto_CommandProducer) -> Action {
        switch producers[request.producerID] {
        case .creating?:
            // Pulsar's answer while the first request is still in flight; the client retries.
            return .write(Commands.error(requestID: request.requestID, error: BrokerError(
                .serviceNotReady, "producer \(request.producerID) is already being created on this connection: retry")))
        case .ready?:
            // The client retried after a timeout: the topic answers as it did (the same name).
            break
        case nil:
            guard producers.count < limits.maxProducers else {
                return .write(Commands.error(requestID: request.requestID, error: BrokerError(
                    .notAllowed, "this connection has \(producers.count) producers open, the most one may have: close some or open another connection")))
            }
        }
        let name: TopicName
        do {
            name = try TopicName(parsing: request.topic)
        } catch {
            return .write(Commands.error(requestID: request.requestID, error: error))
        }
        if producers[request.producerID] == nil {
            producers[request.producerID] = .creating(requestID: request.requestID, closeRequested: false)
        }
        return .createProducer(CreateProducer(
            requestID: request.requestID, producerID: request.producerID, topic: name,
            producerName: request.hasProducerName && !request.producerName.isEmpty ? request.producerName : nil,
            initialSubscription: request.hasInitialSubscriptionName && !request.initialSubscriptionName.isEmpty
                ? request.initialSubscriptionName : nil,
            schema: request.hasSchema ? Commands.schema(request.schema) : nil,
            accessMode: ProducerAccessMode(rawValue: request.producerAccessMode.rawValue) ?? .shared,
            topicEpoch: request.hasTopicEpoch ? request.topicEpoch : nil))
    }

    /// The topic answered a `createProducer`.
    mutating func producerCreated(
        producerID: UInt64, requestID: UInt64, topicName: TopicName,
        _ result: Result<(topic: TopicHandle, name: String, lastSequenceID: Int64, schemaVersion: Int64?), any Error>,
        topicEpoch: UInt64? = nil, ready: Bool = true
    ) -> Action {
        switch result {
        case .success(let created):
            switch producers[producerID] {
            case .creating(let pending, let closeRequested)? where pending == requestID:
                if closeRequested || isClosed {
                    producers[producerID] = nil
                    return .releaseProducer(created.topic, producerID: producerID)
                }
                if !ready {
                    // WaitForExclusive behind others: the client waits for a second PRODUCER_SUCCESS.
                    return .write(Commands.base(.producerSuccess) {
                        $0.producerSuccess.requestID = requestID
                        $0.producerSuccess.producerName = created.name
                        $0.producerSuccess.lastSequenceID = created.lastSequenceID
                        $0.producerSuccess.producerReady = false
                        $0.producerSuccess.schemaVersion = created.schemaVersion.map(Commands.schemaVersionBytes) ?? Data()
                    })
                }
            case .ready?:
                break
            default:
                // Closed while it was being created, or the connection is gone.
                return .releaseProducer(created.topic, producerID: producerID)
            }
            producers[producerID] = .ready(created.topic)
            return .write(
                Commands.base(.producerSuccess) {
                    $0.producerSuccess.requestID = requestID
                    $0.producerSuccess.producerName = created.name
                    $0.producerSuccess.lastSequenceID = created.lastSequenceID
                    $0.producerSuccess.producerReady = true
                    if let topicEpoch { $0.producerSuccess.topicEpoch = topicEpoch }
                    // Always set, as Pulsar does: 8 bytes big-endian, or empty without a schema.
                    $0.producerSuccess.schemaVersion = created.schemaVersion.map(Commands.schemaVersionBytes) ?? Data()
                },
                log: LogLine(level: .debug, event: "producer.created", metadata: [
                    "topic": "\(topicName)", "producer.name": "\(created.name)",
                ]))
        case .failure(let error):
            if case .creating(let pending, _)? = producers[producerID], pending == requestID {
                producers[producerID] = nil
            }
            guard !isClosed else { return .none }
            return .write(
                Commands.error(requestID: requestID, error: error),
                log: LogLine(level: .info, event: "producer.refused", metadata: ["topic": "\(topicName)", "error": "\(error)"]))
        }
    }

    private mutating func closeProducerRequested(_ request: Pulsar_Proto_CommandCloseProducer) -> Action {
        let success = Commands.success(requestID: request.requestID)
        switch producers[request.producerID] {
        case .ready(let topic)?:
            producers[request.producerID] = nil
            // The topic drops it in order with the SENDs before (one queue per topic loop).
            return .releaseProducer(topic, producerID: request.producerID, reply: success)
        case .creating(let requestID, _)?:
            // Pulsar's way: the close succeeds now, the producer is taken off the topic when it is made.
            producers[request.producerID] = .creating(requestID: requestID, closeRequested: true)
            return .write(success)
        case nil:
            return .write(success)
        }
    }

    // MARK: publishing

    private mutating func sendReceived(_ request: SendCommandFields, payload: PayloadSection?) -> Action {
        guard case .ready(let topic)? = producers[request.producerID] else {
            return .write(sendError(request, .notAllowedError, "producer \(request.producerID) is not open on this connection"))
        }
        guard let payload else {
            return protocolErrorReceived(PulsarProtocolError(.malformedPayload, "SEND without a payload"))
        }
        guard payload.isChecksumValid else {
            return .write(
                sendError(request, .checksumError, "checksum of the message does not match its bytes: it was corrupted in transit"),
                log: LogLine(level: .info, event: "send.checksum-mismatch", metadata: ["producer.id": "\(request.producerID)"]))
        }
        let metadata: SendMetadataFields
        do {
            // Hand-decoded: only the fields the entry needs, no SwiftProtobuf message per SEND.
            metadata = try SendMetadataFields.parse(payload.checksummedBytes)
        } catch {
            return .write(sendError(request, .checksumError, "message metadata is malformed: \(error.message)"))
        }
        let key: [UInt8] = metadata.orderingKey ?? Array((metadata.partitionKey ?? "").utf8)
        let numMessages = max(metadata.numMessagesInBatch ?? 1, 1)
        // The C++ client numbers a batch's messages consecutively from the SEND's sequence id.
        // Every value here comes from the network: no arithmetic on it may trap.
        let sequenceID = Int64(bitPattern: request.sequenceID)
        let highestSequenceID: Int64
        if metadata.isReplicated {
            // A geo-replicator's SEND: deduplicated under the original producer's name and
            // sequence ids (the metadata's), not the replicator's own (Pulsar's MessageDeduplication).
            highestSequenceID = Int64(bitPattern: metadata.sequenceID).saturatingAdd(Int64(numMessages) - 1)
        } else {
            highestSequenceID = max(
                request.highestSequenceID.map { Int64(bitPattern: $0) } ?? sequenceID,
                sequenceID.saturatingAdd(Int64(numMessages) - 1))
        }
        var attributes = EntryAttributes(
            numMessages: numMessages,
            // A publish time past Int64.max (2^63 and up) is kept as the latest time there is.
            publishTimeMs: Int64(clamping: metadata.publishTime),
            deliverAtMs: metadata.deliverAtTime ?? 0,
            key: key,
            producerName: metadata.producerName,
            highestSequenceID: highestSequenceID,
            isNonFinalChunk: SendMetadataFields.isNonFinalChunk(chunkID: metadata.chunkID, numChunks: metadata.numChunksFromMsg))
        // Only a geo-replicator forwards markers; from anyone else they are plain messages.
        if metadata.isMarker, metadata.isReplicated { attributes.isMarker = true }
        attributes.transactionID = request.transactionID
        pendingPublishes += 1
        var pause = false
        if pendingPublishes >= limits.maxPendingPublishes, !pausedForPublishes {
            pausedForPublishes = true
            pause = !pausedForWritability && !pausedForPublishRate
        }
        let publish = Publish(
            topic: topic, attributes: attributes, producerID: request.producerID, sequenceID: request.sequenceID,
            checksum: payload.checksum ?? payload.computeChecksum(), bytes: payload.checksummedBytes, pauseReading: pause)
        if let transaction = request.transactionID { return .publishTransactional(publish, transaction) }
        return .publish(publish)
    }

    private func sendError(_ request: SendCommandFields, _ error: Pulsar_Proto_ServerError, _ message: String) -> Pulsar_Proto_BaseCommand {
        Commands.base(.sendError) {
            $0.sendError.producerID = request.producerID
            $0.sendError.sequenceID = request.sequenceID
            $0.sendError.error = error
            $0.sendError.message = message
        }
    }

    /// `count` SENDs got their receipt (or send error).
    mutating func publishesCompleted(_ count: Int) -> Action {
        pendingPublishes -= count
        guard pausedForPublishes, pendingPublishes <= limits.maxPendingPublishes / 2 else { return .none }
        pausedForPublishes = false
        return pausedForWritability || pausedForPublishRate ? .none : .resumeReading
    }

    /// A topic of this connection went over its publish rate: stop reading (if not already
    /// stopped) until `publishRateRestored`.
    mutating func publishRateExceeded() -> Action {
        guard !pausedForPublishRate, !isClosed else { return .none }
        pausedForPublishRate = true
        return pausedForPublishes || pausedForWritability ? .none : .pauseReading
    }

    /// The rate's debt is paid off: read again unless another reason still holds.
    mutating func publishRateRestored() -> Action {
        guard pausedForPublishRate else { return .none }
        pausedForPublishRate = false
        return pausedForPublishes || pausedForWritability || isClosed ? .none : .resumeReading
    }

    // MARK: consumers

    private mutating func subscribeRequested(_ request: Pulsar_Proto_CommandSubscribe) -> Action {
        switch consumers[request.consumerID] {
        case .ready?:
            return .write(Commands.success(requestID: request.requestID))
        case .subscribing?:
            return .write(Commands.error(requestID: request.requestID, error: BrokerError(
                .serviceNotReady, "consumer \(request.consumerID) is already subscribing on this connection: retry")))
        case nil:
            break
        }
        guard consumers.count < limits.maxConsumers else {
            return .write(Commands.error(requestID: request.requestID, error: BrokerError(
                .notAllowed, "this connection has \(consumers.count) consumers open, the most one may have: close some or open another connection")))
        }
        let name: TopicName
        do {
            name = try TopicName(parsing: request.topic)
        } catch {
            return .write(Commands.error(requestID: request.requestID, error: error))
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
        let durable = request.hasDurable ? request.durable : true
        consumers[request.consumerID] = .subscribing(requestID: request.requestID, closeRequested: false)
        var subscribeRequest = SubscribeRequest(
                subscription: request.subscription, type: type,
                consumerKey: ConsumerKey(connectionID: connectionID, consumerID: request.consumerID),
                consumerName: request.consumerName, priorityLevel: request.priorityLevel, durable: durable,
                start: !durable && request.hasStartMessageID ? Commands.startPosition(request.startMessageID) : nil,
                initialPosition: request.initialPosition == .earliest ? .earliest : .latest,
                keySharedPolicy: keySharedPolicy, readCompacted: request.readCompacted)
        subscribeRequest.replicateSubscriptionState = request.replicateSubscriptionState
        return .subscribe(Subscribe(
            requestID: request.requestID, consumerID: request.consumerID, topic: name, request: subscribeRequest,
            schema: request.hasSchema && request.schema.type != .autoConsume ? Commands.schema(request.schema) : nil))
    }

    /// The topic answered a `subscribe`.
    mutating func subscribed(_ subscribe: Subscribe, _ result: Result<TopicHandle, any Error>) -> Action {
        let consumerID = subscribe.consumerID
        let request = subscribe.request
        let pendingHere: Bool
        var closeRequested = false
        if case .subscribing(let pending, let close)? = consumers[consumerID], pending == subscribe.requestID {
            pendingHere = true
            closeRequested = close
        } else {
            pendingHere = false
        }
        switch result {
        case .success(let topic):
            let ref = ConsumerRef(topic: topic, subscription: request.subscription, key: request.consumerKey)
            guard pendingHere, !closeRequested, !isClosed else {
                if pendingHere { consumers[consumerID] = nil }
                return .releaseConsumer(ref)
            }
            consumers[consumerID] = .ready(topic: topic, subscription: request.subscription)
            return .write(
                Commands.success(requestID: subscribe.requestID),
                log: LogLine(level: .debug, event: "consumer.subscribed", metadata: [
                    "topic": "\(subscribe.topic)", "subscription": "\(request.subscription)", "subscription.type": "\(request.type)",
                ]))
        case .failure(let error):
            if pendingHere { consumers[consumerID] = nil }
            guard !isClosed else { return .none }
            return .write(
                Commands.error(requestID: subscribe.requestID, error: error),
                log: LogLine(level: .info, event: "consumer.refused", metadata: [
                    "topic": "\(subscribe.topic)", "subscription": "\(request.subscription)", "error": "\(error)",
                ]))
        }
    }

    private mutating func ackReceived(_ request: Pulsar_Proto_CommandAck) -> Action {
        let reply: Pulsar_Proto_BaseCommand? = request.hasRequestID
            ? Commands.base(.ackResponse) {
                $0.ackResponse.consumerID = request.consumerID
                $0.ackResponse.requestID = request.requestID
            }
            : nil
        guard let consumer = readyConsumer(request.consumerID) else {
            return reply.map { .write($0) } ?? .none
        }
        if request.hasTxnidLeastBits || request.hasTxnidMostBits {
            let transaction = TransactionID(mostBits: request.txnidMostBits, leastBits: request.txnidLeastBits)
            guard request.ackType == .individual, request.messageID.allSatisfy({ $0.ackSet.allSatisfy { $0 == 0 } }) else {
                return transactionalAckCompleted(
                    consumerID: request.consumerID, requestID: request.requestID, transaction: transaction,
                    .failure(BrokerError(.notAllowed, "transactions acknowledge whole messages individually here (no cumulative or batch-index acks)")))
            }
            return .acknowledgeTransactional(
                consumer, positions: request.messageID.map(Commands.position), transaction, consumerID: request.consumerID,
                requestID: request.hasRequestID ? request.requestID : nil)
        }
        // A validation error means the client dropped a corrupt message: it counts as acknowledged.
        let ids = request.messageID
        let complete = ids.filter { request.hasValidationError || $0.ackSet.allSatisfy { $0 == 0 } }.map(Commands.position)
        let partial = request.hasValidationError ? [] : ids.filter { !$0.ackSet.allSatisfy { $0 == 0 } }
            .map { (Commands.position($0), $0.ackSet) }
        if request.ackType == .cumulative {
            if let position = complete.first {
                return .consumerOperation(consumer, .acknowledgeCumulative(position), reply: reply)
            }
            if let (position, _) = partial.first {
                // A cumulative ack inside a batch acknowledges everything before that batch.
                return .consumerOperation(consumer, .acknowledgeCumulative(position.previousInLedger), reply: reply)
            }
            return reply.map { .write($0) } ?? .none
        }
        return .consumerOperation(consumer, .acknowledge(complete: complete, partial: partial), reply: reply)
    }

    private mutating func closeConsumerRequested(_ request: Pulsar_Proto_CommandCloseConsumer) -> Action {
        switch consumers[request.consumerID] {
        case .ready?:
            let consumer = readyConsumer(request.consumerID)!
            consumers[request.consumerID] = nil
            // SUCCESS only once the subscription's acknowledgements are durable: if they cannot be
            // (this broker lost the topic meanwhile), the client's close fails instead of reporting
            // acknowledgements as kept that a new owner will not find.
            return .closeConsumer(consumer, requestID: request.requestID)
        case .subscribing(let requestID, _)?:
            consumers[request.consumerID] = .subscribing(requestID: requestID, closeRequested: true)
            return .write(Commands.success(requestID: request.requestID))
        case nil:
            return .write(Commands.success(requestID: request.requestID))
        }
    }

    /// The broker closed the consumer (its topic unloaded, a seek): the client subscribes again with
    /// the same id, so the connection forgets it first.
    mutating func consumerClosedByBroker(consumerID: UInt64) {
        if case .ready? = consumers[consumerID] { consumers[consumerID] = nil }
    }

    /// An unsubscribe finished.
    mutating func unsubscribed(consumerID: UInt64, requestID: UInt64, _ result: Result<Void, any Error>) -> Action {
        switch result {
        case .success:
            if case .ready? = consumers[consumerID] { consumers[consumerID] = nil }
            return isClosed ? .none : .write(Commands.success(requestID: requestID))
        case .failure(let error):
            return isClosed ? .none : .write(Commands.error(requestID: requestID, error: error))
        }
    }

    /// A close-consumer or seek finished.
    func requestCompleted(requestID: UInt64, _ result: Result<Void, any Error>) -> Action {
        guard !isClosed else { return .none }
        switch result {
        case .success: return .write(Commands.success(requestID: requestID))
        case .failure(let error): return .write(Commands.error(requestID: requestID, error: error))
        }
    }

    /// The topic answered `lastMessageID`; nil: the subscription is gone.
    func lastMessageFound(requestID: UInt64, partition: Int32, _ info: LastMessageInfo?) -> Action {
        guard !isClosed else { return .none }
        guard let info else {
            return .write(Commands.error(requestID: requestID, error: BrokerError(.metadata, "Consumer not found: its subscription is gone")))
        }
        return .write(Commands.base(.getLastMessageIDResponse) {
            $0.getLastMessageIDResponse.requestID = requestID
            $0.getLastMessageIDResponse.lastMessageID = Commands.messageID(
                info.last, partition: partition, batchIndex: info.batchIndex >= 0 ? info.batchIndex : nil)
            $0.getLastMessageIDResponse.consumerMarkDeletePosition = Commands.messageID(info.markDelete, partition: partition)
        })
    }

    // MARK: namespace and lookup answers

    func partitionsFound(requestID: UInt64, _ result: Result<Int, any Error>) -> Action {
        guard !isClosed else { return .none }
        return .write(Commands.base(.partitionedMetadataResponse) {
            $0.partitionMetadataResponse.requestID = requestID
            switch result {
            case .success(let partitions):
                $0.partitionMetadataResponse.response = .success
                $0.partitionMetadataResponse.partitions = UInt32(clamping: partitions)
            case .failure(let error):
                $0.partitionMetadataResponse.response = .failed
                $0.partitionMetadataResponse.error = ServerErrors.serverError(for: error)
                $0.partitionMetadataResponse.message = ServerErrors.message(for: error)
            }
        })
    }

    /// The registry answered a GET_SCHEMA: the version, or nil (none, or not that version).
    func schemaFound(requestID: UInt64, topic: String, _ result: Result<SchemaVersionRecord?, any Error>) -> Action {
        guard !isClosed else { return .none }
        return .write(Commands.base(.getSchemaResponse) {
            $0.getSchemaResponse.requestID = requestID
            switch result {
            case .success(let record?):
                $0.getSchemaResponse.schema = Commands.schema(record, name: (try? TopicName(parsing: topic))?.schemaName ?? topic)
                $0.getSchemaResponse.schemaVersion = Commands.schemaVersionBytes(record.version)
            case .success(nil):
                $0.getSchemaResponse.errorCode = .topicNotFound
                $0.getSchemaResponse.errorMessage = "Topic not found or no-schema"
            case .failure(let error):
                $0.getSchemaResponse.errorCode = ServerErrors.serverError(for: error)
                $0.getSchemaResponse.errorMessage = ServerErrors.message(for: error)
            }
        })
    }

    /// `local`: this broker's `pulsar://` and `pulsar+ssl://` addresses.
    func lookupAnswered(requestID: UInt64, local: LocalURLs, _ result: Result<LookupAnswer, any Error>) -> Action {
        guard !isClosed else { return .none }
        return .write(Commands.base(.lookupResponse) {
            $0.lookupTopicResponse.requestID = requestID
            switch result {
            case .success(let answer):
                // A client connected over TLS goes to `brokerServiceUrlTls` (the C++ client reads only that field then).
                let target: (plain: String, tls: String?)
                switch answer {
                case .local:
                    $0.lookupTopicResponse.response = .connect
                    target = (local.plain, local.tls)
                case .connect(let owner):
                    $0.lookupTopicResponse.response = .connect
                    target = (owner.pulsarURL, owner.pulsarTLSURL)
                case .redirect(let candidate):
                    $0.lookupTopicResponse.response = .redirect
                    target = (candidate.pulsarURL, candidate.pulsarTLSURL)
                }
                $0.lookupTopicResponse.brokerServiceURL = target.plain
                if let tls = target.tls { $0.lookupTopicResponse.brokerServiceURLTls = tls }
                $0.lookupTopicResponse.authoritative = true
            case .failure(let error):
                $0.lookupTopicResponse.response = .failed
                $0.lookupTopicResponse.error = ServerErrors.serverError(for: error)
                $0.lookupTopicResponse.message = ServerErrors.message(for: error)
            }
        })
    }

    /// `clientHash`: the hash the client sent; equal to the list's, the answer says unchanged and
    /// omits the list, as Pulsar's does.
    func topicsListed(requestID: UInt64, clientHash: String?, _ result: Result<(topics: [String], hash: String), any Error>) -> Action {
        guard !isClosed else { return .none }
        switch result {
        case .success(let list):
            return .write(Commands.base(.getTopicsOfNamespaceResponse) {
                $0.getTopicsOfNamespaceResponse.requestID = requestID
                $0.getTopicsOfNamespaceResponse.topicsHash = list.hash
                $0.getTopicsOfNamespaceResponse.filtered = false
                let changed = clientHash != list.hash
                $0.getTopicsOfNamespaceResponse.changed = changed
                if changed { $0.getTopicsOfNamespaceResponse.topics = list.topics }
            })
        case .failure(let error):
            return .write(Commands.error(requestID: requestID, error: error))
        }
    }

    /// The broker answered a `watchTopicList`: the matching topics now, or why not.
    mutating func topicListWatched(requestID: UInt64, watcherID: UInt64, _ result: Result<(topics: [String], hash: String), any Error>) -> Action {
        guard !isClosed, topicListWatches.contains(watcherID) else {
            // Closed (or the connection went) while the broker started it: end it there too.
            if case .success = result { return .unwatchTopicList(watcherID: watcherID) }
            return .none
        }
        switch result {
        case .success(let list):
            return .write(Commands.base(.watchTopicListSuccess) {
                $0.watchTopicListSuccess.requestID = requestID
                $0.watchTopicListSuccess.watcherID = watcherID
                $0.watchTopicListSuccess.topic = list.topics
                $0.watchTopicListSuccess.topicsHash = list.hash
            })
        case .failure(let error):
            topicListWatches.remove(watcherID)
            return .write(Commands.error(requestID: requestID, error: error))
        }
    }

    /// Topics matching a watch were created or deleted.
    func topicListChanged(watcherID: UInt64, created: [String], deleted: [String], hash: String) -> Action {
        guard !isClosed, topicListWatches.contains(watcherID) else { return .none }
        return .write(Commands.base(.watchTopicUpdate) {
            $0.watchTopicUpdate.watcherID = watcherID
            $0.watchTopicUpdate.newTopics = created
            $0.watchTopicUpdate.deletedTopics = deleted
            $0.watchTopicUpdate.topicsHash = hash
        })
    }

    // MARK: the socket and time

    /// Back-pressure on the way out: while the socket does not take our writes, consumers of this
    /// connection get nothing (the sink says so) and no further requests are read; once it drains,
    /// reading resumes and their subscriptions dispatch again.
    mutating func writabilityChanged(isWritable: Bool) -> Action {
        if !isWritable, !pausedForWritability {
            pausedForWritability = true
            return .pauseReading
        }
        guard isWritable, pausedForWritability else { return .none }
        pausedForWritability = false
        // The client read what piled up: alive, though its PONG may still wait unread.
        receivedSinceKeepAliveTick = true
        let ready = consumers.keys.sorted().compactMap(readyConsumer)
        return .socketDrained(resumeReading: !pausedForPublishes && !pausedForPublishRate, consumers: ready)
    }

    /// Keep-alive (Pulsar's `keepAliveIntervalSeconds`): every interval, a connection that sent no
    /// CONNECT is closed; one that sent nothing gets a PING, and is closed at the next tick if it
    /// still sent nothing. `interval` is only for the log.
    mutating func keepAliveTick(interval: TimeAmount) -> Action {
        switch handshake.state {
        case .awaitingConnect:
            handshake.close()
            return .close(reason: "no CONNECT", log: LogLine(level: .info, event: "connection.connect-timeout", metadata: ["timeout": "\(interval)"]))
        case .connected:
            defer { receivedSinceKeepAliveTick = false }
            // A connection paused for pending publishes or the publish rate is not read: its silence says nothing.
            if receivedSinceKeepAliveTick || pausedForPublishes || pausedForPublishRate {
                pingOutstanding = false
                return .none
            }
            if pingOutstanding {
                handshake.close()
                return .close(reason: "keep-alive timeout", log: LogLine(level: .info, event: "connection.keep-alive-timeout", metadata: ["timeout": "\(interval)"]))
            }
            pingOutstanding = true
            return .write(Commands.base(.ping) { $0.ping = Pulsar_Proto_CommandPing() })
        case .authenticating, .closed:
            return .none
        }
    }

    /// The connection is gone: every producer and consumer leaves its topic, and answers still on
    /// their way are dropped.
    mutating func channelInactive() -> Action {
        handshake.channelInactive()
        var releasedProducers: [(TopicHandle, producerID: UInt64)] = []
        for (producerID, slot) in producers.sorted(by: { $0.key < $1.key }) {
            if case .ready(let topic) = slot { releasedProducers.append((topic, producerID)) }
        }
        let releasedConsumers = consumers.keys.sorted().compactMap(readyConsumer)
        // Slots still being created stay, so their answers know to undo them.
        producers = producers.filter { if case .creating = $0.value { true } else { false } }
        consumers = consumers.filter { if case .subscribing = $0.value { true } else { false } }
        return .releaseAll(producers: releasedProducers, consumers: releasedConsumers)
    }
}

extension PulsarConnectionMachine.ConsumerRef: Sendable where TopicHandle: Sendable {}
extension PulsarConnectionMachine.Publish: Sendable where TopicHandle: Sendable {}
extension PulsarConnectionMachine.CreateProducer: Sendable {}
extension PulsarConnectionMachine.Subscribe: Sendable {}
extension PulsarConnectionMachine.ConsumerOperation: Sendable {}
extension PulsarConnectionMachine.SeekTarget: Sendable {}

/// This broker's Pulsar addresses, as LOOKUP hands them out.
struct LocalURLs: Sendable, Equatable {
    /// `pulsar://host:port`.
    var plain: String
    /// `pulsar+ssl://host:tlsPort`; nil without a TLS listener.
    var tls: String?
}

/// What a Pulsar transaction command asks for (a value the handler carries out).
enum TransactionOperation: Sendable, Equatable {
    case connectCoordinator(coordinatorID: UInt64)
    case newTransaction(coordinatorID: UInt64, timeoutMs: UInt64)
    case addPartitions(TransactionID, [String])
    case addSubscriptions(TransactionID, [TransactionSubscription])
    case end(TransactionID, committed: Bool)
    case endOnPartition(TransactionID, topic: String, committed: Bool)
    case endOnSubscription(TransactionID, TransactionSubscription, committed: Bool)
}

extension SendCommandFields {
    /// The transaction a SEND is part of, or nil.
    var transactionID: TransactionID? {
        guard let most = transactionMostBits, let least = transactionLeastBits else { return nil }
        return TransactionID(mostBits: most, leastBits: least)
    }
}
