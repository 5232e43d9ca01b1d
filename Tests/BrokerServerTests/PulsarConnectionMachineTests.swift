import BrokerCore
import ManagedLedger
@testable import BrokerServer
import CRC32C
import NIOCore
import Foundation
import PulsarProtocol
import Schemas
import Testing

/// Transcripts of the Pulsar connection machine: frames and topic answers in, actions out; no
/// socket, no topic, no event loop. A topic is its name here.
@Suite struct PulsarConnectionMachineTests {
    typealias Machine = PulsarConnectionMachine<String>

    // MARK: helpers

    func frame(_ type: Pulsar_Proto_BaseCommand.TypeEnum, payload: PayloadSection? = nil, _ fill: (inout Pulsar_Proto_BaseCommand) -> Void = { _ in }) -> PulsarFrame {
        var command = Pulsar_Proto_BaseCommand()
        command.type = type
        fill(&command)
        return PulsarFrame(command: command, payload: payload)
    }

    func producerFrame(_ producerID: UInt64, request requestID: UInt64, topic: String = "t", name: String? = nil) -> PulsarFrame {
        frame(.producer) {
            $0.producer.topic = topic
            $0.producer.producerID = producerID
            $0.producer.requestID = requestID
            if let name { $0.producer.producerName = name }
        }
    }

    func subscribeFrame(_ consumerID: UInt64, request requestID: UInt64, topic: String = "t", subscription: String = "s") -> PulsarFrame {
        frame(.subscribe) {
            $0.subscribe.topic = topic
            $0.subscribe.subscription = subscription
            $0.subscribe.consumerID = consumerID
            $0.subscribe.requestID = requestID
        }
    }

    func connected(_ limits: Machine.Limits = Machine.Limits()) -> Machine {
        var machine = Machine(connectionID: 7, serverVersion: "Magnetar test", limits: limits)
        machine.bytesReceived()
        let reply = written(machine.frameReceived(frame(.connect) { $0.connect.clientVersion = "test"; $0.connect.protocolVersion = 20 }))
        #expect(reply?.type == .connected)
        return machine
    }

    /// The command a `.write` action writes, nil for any other action.
    func written(_ action: Machine.Action) -> Pulsar_Proto_BaseCommand? {
        if case .write(let command, _) = action { return command }
        return nil
    }

    func expectError(_ action: Machine.Action, _ code: Pulsar_Proto_ServerError, requestID: UInt64, sourceLocation: SourceLocation = #_sourceLocation) {
        let command = written(action)
        #expect(command?.type == .error, sourceLocation: sourceLocation)
        #expect(command?.error.error == code, sourceLocation: sourceLocation)
        #expect(command?.error.requestID == requestID, sourceLocation: sourceLocation)
        #expect(command?.error.message.isEmpty == false, sourceLocation: sourceLocation)
    }

    func expectSuccess(_ action: Machine.Action, requestID: UInt64, sourceLocation: SourceLocation = #_sourceLocation) {
        let command = written(action)
        #expect(command?.type == .success, sourceLocation: sourceLocation)
        #expect(command?.success.requestID == requestID, sourceLocation: sourceLocation)
    }

    /// A payload section as the client sends it: `[size][MessageMetadata][payload]` and its CRC32C.
    func payload(sequenceID: UInt64 = 0, batch: Int32? = nil, corrupt: Bool = false) throws -> PayloadSection {
        var metadata = Pulsar_Proto_MessageMetadata()
        metadata.producerName = "p"
        metadata.sequenceID = sequenceID
        metadata.publishTime = 1_700_000_000_000
        if let batch { metadata.numMessagesInBatch = batch }
        let bytes: [UInt8] = try metadata.serializedBytes()
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(bytes.count))
        buffer.writeBytes(bytes)
        buffer.writeString("hello")
        let checksum = buffer.withUnsafeReadableBytes { CRC32C.checksum($0) }
        return PayloadSection(checksum: corrupt ? checksum ^ 1 : checksum, checksummedBytes: buffer)
    }

    func send(producerID: UInt64, sequenceID: UInt64, _ payload: PayloadSection?) -> PulsarFrame {
        frame(.send, payload: payload) {
            $0.send.producerID = producerID
            $0.send.sequenceID = sequenceID
        }
    }

    /// A machine with producer 1 ready on topic "t".
    func withProducer(_ limits: Machine.Limits = Machine.Limits()) throws -> Machine {
        var machine = connected(limits)
        guard case .createProducer(let create) = machine.frameReceived(producerFrame(1, request: 10, topic: "persistent://public/default/t")) else {
            Issue.record("expected createProducer")
            return machine
        }
        #expect(create.producerName == nil)
        #expect(create.topic.description == "persistent://public/default/t")
        let answer = written(machine.producerCreated(
            producerID: 1, requestID: 10, topicName: create.topic, .success((topic: "t", name: "standalone-0-1", lastSequenceID: 41, schemaVersion: nil))))
        #expect(answer?.type == .producerSuccess)
        #expect(answer?.producerSuccess.requestID == 10)
        #expect(answer?.producerSuccess.producerName == "standalone-0-1")
        #expect(answer?.producerSuccess.lastSequenceID == 41)
        return machine
    }

    /// A machine with consumer 5 ready on subscription "s" of topic "t".
    func withConsumer(type: Pulsar_Proto_CommandSubscribe.SubType = .shared) -> Machine {
        var machine = connected()
        guard case .subscribe(let subscribe) = machine.frameReceived(frame(.subscribe) {
            $0.subscribe.topic = "t"
            $0.subscribe.subscription = "s"
            $0.subscribe.subType = type
            $0.subscribe.consumerID = 5
            $0.subscribe.requestID = 20
        }) else {
            Issue.record("expected subscribe")
            return machine
        }
        #expect(subscribe.request.consumerKey == ConsumerKey(connectionID: 7, consumerID: 5))
        expectSuccess(machine.subscribed(subscribe, .success("t")), requestID: 20)
        return machine
    }

    // MARK: handshake and the unexpected

    @Test func schemasTravelWithProducersSubscriptionsAndGetSchema() throws {
        var machine = connected()
        let producer = frame(.producer) {
            $0.producer.topic = "persistent://public/default/typed"
            $0.producer.producerID = 1
            $0.producer.requestID = 3
            $0.producer.schema.name = "AVRO"
            $0.producer.schema.type = .avro
            $0.producer.schema.schemaData = Data(#"{"type":"string"}"#.utf8)
            var property = Pulsar_Proto_KeyValue()
            property.key = "k"
            property.value = "v"
            $0.producer.schema.properties = [property]
        }
        guard case .createProducer(let create) = machine.frameReceived(producer) else {
            Issue.record("expected createProducer")
            return
        }
        #expect(create.schema == SchemaDefinition(type: .avro, data: Array(#"{"type":"string"}"#.utf8), properties: ["k": "v"]))
        let success = written(machine.producerCreated(
            producerID: 1, requestID: 3, topicName: create.topic, .success((topic: "t", name: "p", lastSequenceID: -1, schemaVersion: 258))))
        #expect(success?.producerSuccess.schemaVersion == Data([0, 0, 0, 0, 0, 0, 1, 2]))

        // A consumer with AUTO_CONSUME brings no schema to check.
        guard case .subscribe(let plain) = machine.frameReceived(frame(.subscribe) {
            $0.subscribe.topic = "t"
            $0.subscribe.subscription = "s"
            $0.subscribe.consumerID = 7
            $0.subscribe.requestID = 4
            $0.subscribe.schema.type = .autoConsume
            $0.subscribe.schema.name = ""
            $0.subscribe.schema.schemaData = Data()
        }) else {
            Issue.record("expected subscribe")
            return
        }
        #expect(plain.schema == nil)

        guard case .getSchema(let topic, let version, let requestID) = machine.frameReceived(frame(.getSchema) {
            $0.getSchema.topic = "persistent://public/default/typed"
            $0.getSchema.requestID = 9
            $0.getSchema.schemaVersion = Data([0, 0, 0, 0, 0, 0, 0, 1])
        }) else {
            Issue.record("expected getSchema")
            return
        }
        #expect(topic == "persistent://public/default/typed" && version == 1 && requestID == 9)
        let found = written(machine.schemaFound(requestID: 9, topic: topic, .success(SchemaVersionRecord(
            version: 1, definition: SchemaDefinition(type: .json, data: Array("{}".utf8)), timestamp: 5))))
        #expect(found?.getSchemaResponse.schema.type == .json)
        #expect(found?.getSchemaResponse.schema.name == "public/default/typed")
        #expect(found?.getSchemaResponse.schemaVersion == Data([0, 0, 0, 0, 0, 0, 0, 1]))
        let missing = written(machine.schemaFound(requestID: 10, topic: topic, .success(nil)))
        #expect(missing?.getSchemaResponse.errorCode == .topicNotFound)
        #expect(missing?.getSchemaResponse.errorMessage == "Topic not found or no-schema")
    }

    @Test func handshakeAnswersConnectedAndPong() {
        var machine = Machine(connectionID: 1, serverVersion: "Magnetar test")
        let connected = written(machine.frameReceived(frame(.connect) { $0.connect.protocolVersion = 19 }))
        #expect(connected?.connected.protocolVersion == 19)
        #expect(connected?.connected.serverVersion == "Magnetar test")
        #expect(written(machine.frameReceived(frame(.ping) { $0.ping = Pulsar_Proto_CommandPing() }))?.type == .pong)
        guard case .close = machine.frameReceived(frame(.connect)) else {
            Issue.record("a second CONNECT closes")
            return
        }
        #expect(machine.isClosed)
    }

    @Test func commandBeforeConnectCloses() {
        var machine = Machine(connectionID: 1, serverVersion: "x")
        guard case .close(let reason, _) = machine.frameReceived(frame(.producer)) else {
            Issue.record("expected close")
            return
        }
        #expect(reason.contains("CONNECT"))
    }

    @Test func transactionCommandsAreCarriedOutAndAnswered() {
        var machine = connected()
        guard case .transaction(let operation, let command, let requestID) = machine.frameReceived(frame(.newTxn) {
            $0.newTxn.requestID = 3
            $0.newTxn.txnTtlMillis = 5_000
        }) else {
            Issue.record("NEW_TXN asks the coordinator")
            return
        }
        #expect(operation == .newTransaction(coordinatorID: 0, timeoutMs: 5_000) && requestID == 3)
        let id = TransactionID(mostBits: 0, leastBits: 7)
        let response = written(machine.transactionCompleted(command: command, requestID: 3, .success(id)))
        #expect(response?.type == .newTxnResponse && response?.newTxnResponse.txnidLeastBits == 7)
        let refused = written(machine.transactionCompleted(
            command: .endTxn, requestID: 4, .failure(BrokerError(.invalidTransactionStatus, "ended"))))
        #expect(refused?.type == .endTxnResponse && refused?.endTxnResponse.error == .invalidTxnStatus)
        guard case .transaction(.addPartitions(let added, let partitions), _, _) = machine.frameReceived(frame(.addPartitionToTxn) {
            $0.addPartitionToTxn.requestID = 5
            $0.addPartitionToTxn.txnidLeastBits = 7
            $0.addPartitionToTxn.partitions = ["persistent://public/default/t"]
        }) else {
            Issue.record("ADD_PARTITION_TO_TXN asks the coordinator")
            return
        }
        #expect(added == id && partitions == ["persistent://public/default/t"])
        // A command naming no transaction is answered at once.
        #expect(written(machine.frameReceived(frame(.endTxn) { $0.endTxn.requestID = 6 }))?.endTxnResponse.error == .invalidTxnStatus)
    }

    @Test func unsupportedCommandCloses() {
        var machine = connected()
        expectError(machine.frameReceived(frame(.authResponse)), .authenticationError, requestID: 0)
        guard case .close = machine.frameReceived(frame(.message)) else {
            Issue.record("a MESSAGE from a client closes the connection")
            return
        }
        #expect(machine.isClosed)
    }

    // MARK: produce

    @Test func produceStagesSendsForTheProducersTopic() throws {
        var machine = try withProducer()
        guard case .publish(let publish) = machine.frameReceived(send(producerID: 1, sequenceID: 42, try payload(sequenceID: 42, batch: 3))) else {
            Issue.record("expected publish")
            return
        }
        #expect(publish.topic == "t")
        #expect(publish.producerID == 1)
        #expect(publish.sequenceID == 42)
        #expect(publish.attributes.numMessages == 3)
        #expect(publish.attributes.highestSequenceID == 44)
        #expect(publish.attributes.publishTimeMs == 1_700_000_000_000)
        #expect(publish.pauseReading == false)
        #expect(machine.pendingPublishes == 1)
    }

    @Test func sendErrors() throws {
        var machine = try withProducer()
        let unknown = written(machine.frameReceived(send(producerID: 9, sequenceID: 1, try payload())))
        #expect(unknown?.type == .sendError)
        #expect(unknown?.sendError.error == .notAllowedError)
        #expect(unknown?.sendError.producerID == 9)
        let corrupt = written(machine.frameReceived(send(producerID: 1, sequenceID: 2, try payload(corrupt: true))))
        #expect(corrupt?.sendError.error == .checksumError)
        #expect(corrupt?.sendError.sequenceID == 2)
        var garbage = ByteBuffer()
        garbage.writeInteger(UInt32(1000))
        let malformed = written(machine.frameReceived(send(producerID: 1, sequenceID: 3, PayloadSection(checksum: nil, checksummedBytes: garbage))))
        #expect(malformed?.sendError.error == .checksumError)
        #expect(machine.pendingPublishes == 0)
        guard case .close = machine.frameReceived(send(producerID: 1, sequenceID: 4, nil)) else {
            Issue.record("a SEND without a payload closes the connection")
            return
        }
    }

    @Test func sequenceIDsFromTheNetworkNeverTrap() throws {
        var machine = try withProducer()
        guard case .publish(let publish) = machine.frameReceived(send(producerID: 1, sequenceID: UInt64(Int64.max), try payload(batch: 10))) else {
            Issue.record("expected publish")
            return
        }
        #expect(publish.attributes.highestSequenceID == Int64.max)
    }

    @Test func producerErrors() throws {
        var machine = connected(Machine.Limits(maxProducers: 1, maxConsumers: 1, maxPendingPublishes: 10))
        expectError(machine.frameReceived(producerFrame(1, request: 1, topic: "not a topic://x")), .invalidTopicName, requestID: 1)
        guard case .createProducer(let create) = machine.frameReceived(producerFrame(1, request: 2, name: "mine")) else {
            Issue.record("expected createProducer")
            return
        }
        #expect(create.producerName == "mine")
        // A retry while the first is in flight, and one past the connection's limit.
        expectError(machine.frameReceived(producerFrame(1, request: 3)), .serviceNotReady, requestID: 3)
        expectError(machine.frameReceived(producerFrame(2, request: 4)), .notAllowedError, requestID: 4)
        // The topic refuses: the error goes back and the id is free again.
        expectError(machine.producerCreated(
            producerID: 1, requestID: 2, topicName: create.topic, .failure(BrokerError(.producerBusy, "busy"))), .producerBusy, requestID: 2)
        #expect(machine.producerCount == 0)
        guard case .createProducer = machine.frameReceived(producerFrame(1, request: 5)) else {
            Issue.record("the id is free after a refusal")
            return
        }
    }

    @Test func producerClosedWhileBeingCreatedLeavesTheTopic() throws {
        var machine = connected()
        guard case .createProducer(let create) = machine.frameReceived(producerFrame(1, request: 1)) else {
            Issue.record("expected createProducer")
            return
        }
        expectSuccess(machine.frameReceived(frame(.closeProducer) {
            $0.closeProducer.producerID = 1
            $0.closeProducer.requestID = 2
        }), requestID: 2)
        guard case .releaseProducer(let topic, let producerID, nil) = machine.producerCreated(
            producerID: 1, requestID: 1, topicName: create.topic, .success((topic: "t", name: "n", lastSequenceID: -1, schemaVersion: nil)))
        else {
            Issue.record("expected the late producer to be released")
            return
        }
        #expect(topic == "t" && producerID == 1)
        #expect(machine.producerCount == 0)
    }

    @Test func closeProducerReleasesItThenAnswers() throws {
        var machine = try withProducer()
        guard case .releaseProducer("t", 1, let reply?) = machine.frameReceived(frame(.closeProducer) {
            $0.closeProducer.producerID = 1
            $0.closeProducer.requestID = 11
        }) else {
            Issue.record("expected releaseProducer")
            return
        }
        #expect(reply.type == .success && reply.success.requestID == 11)
        #expect(written(machine.frameReceived(send(producerID: 1, sequenceID: 1, try payload())))?.type == .sendError)
    }

    @Test func pendingPublishesPauseAndResumeReading() throws {
        var machine = try withProducer(Machine.Limits(maxPendingPublishes: 4))
        var pauses: [Bool] = []
        for sequence in 0..<4 {
            guard case .publish(let publish) = machine.frameReceived(send(producerID: 1, sequenceID: UInt64(sequence), try payload())) else {
                Issue.record("expected publish")
                return
            }
            pauses.append(publish.pauseReading)
        }
        #expect(pauses == [false, false, false, true])
        guard case .none = machine.publishesCompleted(1) else {
            Issue.record("3 pending: still paused")
            return
        }
        guard case .resumeReading = machine.publishesCompleted(1) else {
            Issue.record("2 pending (half): reading resumes")
            return
        }
        #expect(!machine.pausedForPublishes)
    }

    @Test func thePublishRatePausesReadingUntilRestoredAndCombinesWithOtherReasons() throws {
        var machine = try withProducer(Machine.Limits(maxPendingPublishes: 2))
        guard case .pauseReading = machine.publishRateExceeded() else {
            Issue.record("over the rate: stop reading")
            return
        }
        guard case .none = machine.publishRateExceeded() else {
            Issue.record("already paused for the rate")
            return
        }
        guard case .resumeReading = machine.publishRateRestored() else {
            Issue.record("restored: read again")
            return
        }
        // Paused for pending publishes too: the rate's end does not resume reading, the receipts' do.
        for sequence in 0..<2 {
            _ = machine.frameReceived(send(producerID: 1, sequenceID: UInt64(sequence), try payload()))
        }
        #expect(machine.pausedForPublishes)
        guard case .none = machine.publishRateExceeded(), case .none = machine.publishRateRestored() else {
            Issue.record("pending publishes still hold reading")
            return
        }
        _ = machine.publishRateExceeded()
        guard case .none = machine.publishesCompleted(2) else {
            Issue.record("the rate still holds reading")
            return
        }
        guard case .resumeReading = machine.publishRateRestored() else {
            Issue.record("nothing holds reading any more")
            return
        }
        // A connection paused for the rate is not closed for its silence.
        _ = machine.publishRateExceeded()
        for _ in 0..<3 {
            guard case .none = machine.keepAliveTick(interval: .seconds(30)) else {
                Issue.record("a rate-paused connection is not pinged or closed")
                return
            }
        }
    }

    @Test func aFullSocketPausesReadingAndItsDrainLetsConsumersDispatch() throws {
        var machine = withConsumer()
        guard case .pauseReading = machine.writabilityChanged(isWritable: false) else {
            Issue.record("expected pauseReading")
            return
        }
        guard case .none = machine.writabilityChanged(isWritable: false) else {
            Issue.record("already paused")
            return
        }
        guard case .socketDrained(true, let consumers) = machine.writabilityChanged(isWritable: true) else {
            Issue.record("expected socketDrained")
            return
        }
        #expect(consumers.map(\.subscription) == ["s"])
        #expect(consumers.map(\.key.consumerID) == [5])
    }

    // MARK: consume

    @Test func subscribeMapsTheRequest() {
        var machine = connected()
        guard case .subscribe(let subscribe) = machine.frameReceived(frame(.subscribe) {
            $0.subscribe.topic = "persistent://public/default/t"
            $0.subscribe.subscription = "s"
            $0.subscribe.subType = .keyShared
            $0.subscribe.keySharedMeta.keySharedMode = .sticky
            $0.subscribe.keySharedMeta.hashRanges = [{ var r = Pulsar_Proto_IntRange(); r.start = 10; r.end = 5; return r }()]
            $0.subscribe.consumerID = 3
            $0.subscribe.requestID = 1
            $0.subscribe.durable = false
            $0.subscribe.startMessageID = Commands.messageID(Position(ledgerID: 4, entryID: 2), partition: -1)
            $0.subscribe.initialPosition = .earliest
        }) else {
            Issue.record("expected subscribe")
            return
        }
        let request = subscribe.request
        #expect(request.type == .keyShared)
        #expect(request.durable == false)
        #expect(request.start == .at(Position(ledgerID: 4, entryID: 2)))
        #expect(request.initialPosition == .earliest)
        guard case .sticky(let ranges)? = request.keySharedPolicy?.mode else {
            Issue.record("expected sticky ranges")
            return
        }
        #expect(ranges == [5...10])
    }

    @Test func flowAckAndRedeliverGoToTheConsumersSubscription() {
        var machine = withConsumer()
        guard case .consumerOperation(let consumer, .flow(1000), nil) = machine.frameReceived(frame(.flow) {
            $0.flow.consumerID = 5
            $0.flow.messagePermits = 1000
        }) else {
            Issue.record("expected flow")
            return
        }
        #expect(consumer.topic == "t" && consumer.subscription == "s")
        guard case .none = machine.frameReceived(frame(.flow) { $0.flow.consumerID = 99 }) else {
            Issue.record("a flow for no consumer is dropped")
            return
        }
        var whole = Commands.messageID(Position(ledgerID: 1, entryID: 2), partition: -1)
        whole.ackSet = []
        var partOfBatch = Commands.messageID(Position(ledgerID: 1, entryID: 3), partition: -1)
        partOfBatch.ackSet = [0b1100]
        let ack = machine.frameReceived(frame(.ack) {
            $0.ack.consumerID = 5
            $0.ack.ackType = .individual
            $0.ack.messageID = [whole, partOfBatch]
            $0.ack.requestID = 77
        })
        guard case .consumerOperation(_, .acknowledge(let complete, let partial), let reply?) = ack else {
            Issue.record("expected acknowledge")
            return
        }
        #expect(complete == [Position(ledgerID: 1, entryID: 2)])
        #expect(partial.map(\.0) == [Position(ledgerID: 1, entryID: 3)])
        #expect(partial.map(\.1) == [[0b1100]])
        #expect(reply.type == .ackResponse && reply.ackResponse.requestID == 77)
        // A cumulative ack inside a batch acknowledges everything before that batch.
        guard case .consumerOperation(_, .acknowledgeCumulative(let upTo), nil) = machine.frameReceived(frame(.ack) {
            $0.ack.consumerID = 5
            $0.ack.ackType = .cumulative
            $0.ack.messageID = [partOfBatch]
        }) else {
            Issue.record("expected acknowledgeCumulative")
            return
        }
        #expect(upTo == Position(ledgerID: 1, entryID: 2))
        guard case .consumerOperation(_, .redeliver(let positions), nil) = machine.frameReceived(frame(.redeliverUnacknowledgedMessages) {
            $0.redeliverUnacknowledgedMessages.consumerID = 5
            $0.redeliverUnacknowledgedMessages.messageIds = [whole]
        }) else {
            Issue.record("expected redeliver")
            return
        }
        #expect(positions == [Position(ledgerID: 1, entryID: 2)])
        // An ack for no consumer still gets its response, as the client waits for it.
        #expect(written(machine.frameReceived(frame(.ack) {
            $0.ack.consumerID = 99
            $0.ack.requestID = 78
        }))?.ackResponse.requestID == 78)
    }

    @Test func subscribeErrors() {
        var machine = connected(Machine.Limits(maxProducers: 1, maxConsumers: 1, maxPendingPublishes: 10))
        expectError(machine.frameReceived(subscribeFrame(1, request: 1, topic: "bad://", subscription: "")), .invalidTopicName, requestID: 1)
        guard case .subscribe(let subscribe) = machine.frameReceived(subscribeFrame(1, request: 2)) else {
            Issue.record("expected subscribe")
            return
        }
        expectError(machine.frameReceived(subscribeFrame(1, request: 3, subscription: "")), .serviceNotReady, requestID: 3)
        expectError(machine.frameReceived(subscribeFrame(2, request: 4, subscription: "")), .notAllowedError, requestID: 4)
        expectError(machine.subscribed(subscribe, .failure(BrokerError(.consumerBusy, "exclusive"))), .consumerBusy, requestID: 2)
        #expect(machine.consumerCount == 0)
    }

    @Test func seekByPositionAndByTime() {
        var machine = withConsumer()
        guard case .seek(_, .position(.earliest), 30) = machine.frameReceived(frame(.seek) {
            $0.seek.consumerID = 5
            $0.seek.requestID = 30
            $0.seek.messageID = { var id = Pulsar_Proto_MessageIdData(); id.ledgerID = UInt64.max; id.entryID = UInt64.max; return id }()
        }) else {
            Issue.record("expected seek to earliest")
            return
        }
        guard case .seek(_, .publishTime(1234), 31) = machine.frameReceived(frame(.seek) {
            $0.seek.consumerID = 5
            $0.seek.requestID = 31
            $0.seek.messagePublishTime = 1234
        }) else {
            Issue.record("expected seek by time")
            return
        }
        expectSuccess(machine.requestCompleted(requestID: 30, .success(())), requestID: 30)
        expectError(machine.requestCompleted(requestID: 31, .failure(BrokerError(.notAllowed, "no"))), .notAllowedError, requestID: 31)
        expectError(machine.frameReceived(frame(.seek) {
            $0.seek.consumerID = 6
            $0.seek.requestID = 32
        }), .consumerNotFound, requestID: 32)
    }

    @Test func getLastMessageID() {
        var machine = withConsumer()
        guard case .lastMessageID(_, 40) = machine.frameReceived(frame(.getLastMessageID) {
            $0.getLastMessageID.consumerID = 5
            $0.getLastMessageID.requestID = 40
        }) else {
            Issue.record("expected lastMessageID")
            return
        }
        let found = written(machine.lastMessageFound(requestID: 40, partition: 2, LastMessageInfo(
            last: Position(ledgerID: 3, entryID: 9), batchIndex: 4, markDelete: Position(ledgerID: 3, entryID: 1))))
        #expect(found?.getLastMessageIDResponse.lastMessageID.entryID == 9)
        #expect(found?.getLastMessageIDResponse.lastMessageID.batchIndex == 4)
        #expect(found?.getLastMessageIDResponse.lastMessageID.partition == 2)
        #expect(found?.getLastMessageIDResponse.consumerMarkDeletePosition.entryID == 1)
        expectError(machine.lastMessageFound(requestID: 41, partition: 2, nil), .metadataError, requestID: 41)
        expectError(machine.frameReceived(frame(.getLastMessageID) {
            $0.getLastMessageID.consumerID = 6
            $0.getLastMessageID.requestID = 42
        }), .metadataError, requestID: 42)
    }

    // MARK: close and unsubscribe

    @Test func closeConsumerAnswersWhenItsAcksAreDurable() {
        var machine = withConsumer()
        guard case .closeConsumer(let consumer, 50) = machine.frameReceived(frame(.closeConsumer) {
            $0.closeConsumer.consumerID = 5
            $0.closeConsumer.requestID = 50
        }) else {
            Issue.record("expected closeConsumer")
            return
        }
        #expect(consumer.key.consumerID == 5)
        #expect(machine.consumerCount == 0)
        expectError(machine.requestCompleted(requestID: 50, .failure(BrokerError(.serviceNotReady, "fenced"))), .serviceNotReady, requestID: 50)
        // Closing what is not open succeeds (the client may retry a close).
        expectSuccess(machine.frameReceived(frame(.closeConsumer) {
            $0.closeConsumer.consumerID = 5
            $0.closeConsumer.requestID = 51
        }), requestID: 51)
    }

    @Test func consumerClosedWhileSubscribingLeavesTheSubscription() {
        var machine = connected()
        guard case .subscribe(let subscribe) = machine.frameReceived(subscribeFrame(1, request: 1)) else {
            Issue.record("expected subscribe")
            return
        }
        expectSuccess(machine.frameReceived(frame(.closeConsumer) {
            $0.closeConsumer.consumerID = 1
            $0.closeConsumer.requestID = 2
        }), requestID: 2)
        guard case .releaseConsumer(let consumer) = machine.subscribed(subscribe, .success("t")) else {
            Issue.record("expected releaseConsumer")
            return
        }
        #expect(consumer.subscription == "s")
        #expect(machine.consumerCount == 0)
    }

    @Test func unsubscribe() {
        var machine = withConsumer()
        expectError(machine.frameReceived(frame(.unsubscribe) {
            $0.unsubscribe.consumerID = 9
            $0.unsubscribe.requestID = 60
        }), .consumerNotFound, requestID: 60)
        guard case .unsubscribe(_, 5, 61) = machine.frameReceived(frame(.unsubscribe) {
            $0.unsubscribe.consumerID = 5
            $0.unsubscribe.requestID = 61
        }) else {
            Issue.record("expected unsubscribe")
            return
        }
        // Refused (other consumers are connected): the consumer stays.
        expectError(machine.unsubscribed(consumerID: 5, requestID: 61, .failure(BrokerError(.consumerBusy, "other consumers are connected"))), .consumerBusy, requestID: 61)
        #expect(machine.consumerCount == 1)
        guard case .unsubscribe = machine.frameReceived(frame(.unsubscribe) {
            $0.unsubscribe.consumerID = 5
            $0.unsubscribe.requestID = 62
        }) else {
            Issue.record("expected unsubscribe")
            return
        }
        expectSuccess(machine.unsubscribed(consumerID: 5, requestID: 62, .success(())), requestID: 62)
        guard case .none = machine.frameReceived(frame(.flow) { $0.flow.consumerID = 5 }) else {
            Issue.record("the consumer is gone")
            return
        }
    }

    @Test func aConsumerTheBrokerClosedSubscribesAgainWithItsID() {
        var machine = withConsumer()
        machine.consumerClosedByBroker(consumerID: 5)
        guard case .subscribe = machine.frameReceived(subscribeFrame(5, request: 21)) else {
            Issue.record("expected a new subscribe")
            return
        }
    }

    // MARK: lookups, keep-alive, the end

    @Test func lookupAndPartitionAnswers() {
        var machine = connected()
        guard case .lookup("t", true, nil, 70) = machine.frameReceived(frame(.lookup) {
            $0.lookupTopic.topic = "t"
            $0.lookupTopic.authoritative = true
            $0.lookupTopic.requestID = 70
        }) else {
            Issue.record("expected lookup")
            return
        }
        let local = written(machine.lookupAnswered(
            requestID: 70, local: LocalURLs(plain: "pulsar://here:6650", tls: "pulsar+ssl://here:6651"), .success(.local)))
        #expect(local?.lookupTopicResponse.response == .connect)
        #expect(local?.lookupTopicResponse.brokerServiceURL == "pulsar://here:6650")
        #expect(local?.lookupTopicResponse.brokerServiceURLTls == "pulsar+ssl://here:6651")
        let owner = BrokerIdentity(brokerID: "b:8080", pulsarURL: "pulsar://b:6650", httpURL: "http://b:8080", instance: "i")
        let elsewhere = written(machine.lookupAnswered(requestID: 73, local: LocalURLs(plain: "x"), .success(.connect(owner))))
        #expect(elsewhere?.lookupTopicResponse.brokerServiceURL == "pulsar://b:6650")
        #expect(elsewhere?.lookupTopicResponse.hasBrokerServiceURLTls == false)
        let failed = written(machine.lookupAnswered(requestID: 71, local: LocalURLs(plain: "x"), .failure(BrokerError(.topicNotFound, "gone"))))
        #expect(failed?.lookupTopicResponse.response == .failed)
        #expect(failed?.lookupTopicResponse.error == .topicNotFound)
        guard case .partitionedMetadata("t", 72) = machine.frameReceived(frame(.partitionedMetadata) {
            $0.partitionMetadata.topic = "t"
            $0.partitionMetadata.requestID = 72
        }) else {
            Issue.record("expected partitionedMetadata")
            return
        }
        #expect(written(machine.partitionsFound(requestID: 72, .success(4)))?.partitionMetadataResponse.partitions == 4)
        guard case .topicsOfNamespace("public/default", .all, "h1", 73) = machine.frameReceived(frame(.getTopicsOfNamespace) {
            $0.getTopicsOfNamespace.namespace = "public/default"
            $0.getTopicsOfNamespace.mode = .all
            $0.getTopicsOfNamespace.topicsHash = "h1"
            $0.getTopicsOfNamespace.requestID = 73
        }) else {
            Issue.record("expected topicsOfNamespace with its mode and hash")
            return
        }
        let listed = written(machine.topicsListed(requestID: 73, clientHash: "h1", .success((["a", "b"], "h2"))))?.getTopicsOfNamespaceResponse
        #expect(listed?.topics == ["a", "b"] && listed?.topicsHash == "h2" && listed?.changed == true)
        // The client's list is current: no list, unchanged.
        let same = written(machine.topicsListed(requestID: 74, clientHash: "h2", .success((["a", "b"], "h2"))))?.getTopicsOfNamespaceResponse
        #expect(same?.topics == [] && same?.changed == false)
    }

    @Test func keepAlivePingsASilentClientThenClosesIt() {
        var connecting = Machine(connectionID: 1, serverVersion: "x")
        guard case .close = connecting.keepAliveTick(interval: .seconds(30)) else {
            Issue.record("no CONNECT within the interval closes")
            return
        }
        var machine = connected()
        guard case .none = machine.keepAliveTick(interval: .seconds(30)) else {
            Issue.record("the CONNECT counts as heard from")
            return
        }
        #expect(written(machine.keepAliveTick(interval: .seconds(30)))?.type == .ping)
        machine.bytesReceived()
        guard case .none = machine.keepAliveTick(interval: .seconds(30)) else {
            Issue.record("the client answered")
            return
        }
        #expect(written(machine.keepAliveTick(interval: .seconds(30)))?.type == .ping)
        guard case .close = machine.keepAliveTick(interval: .seconds(30)) else {
            Issue.record("no answer to the PING closes")
            return
        }
    }

    @Test func theEndReleasesEverythingAndDropsLateAnswers() throws {
        var machine = try withProducer()
        guard case .subscribe(let subscribe) = machine.frameReceived(subscribeFrame(5, request: 20, topic: "u")) else {
            Issue.record("expected subscribe")
            return
        }
        expectSuccess(machine.subscribed(subscribe, .success("u")), requestID: 20)
        guard case .createProducer(let late) = machine.frameReceived(producerFrame(2, request: 21, topic: "v")) else {
            Issue.record("expected createProducer")
            return
        }
        guard case .releaseAll(let producers, let consumers) = machine.channelInactive() else {
            Issue.record("expected releaseAll")
            return
        }
        #expect(producers.map(\.0) == ["t"] && producers.map(\.producerID) == [1])
        #expect(consumers.map(\.topic) == ["u"])
        guard case .releaseProducer("v", 2, nil) = machine.producerCreated(
            producerID: 2, requestID: 21, topicName: late.topic, .success((topic: "v", name: "n", lastSequenceID: -1, schemaVersion: nil)))
        else {
            Issue.record("a producer made after the end is released")
            return
        }
        guard case .none = machine.lookupAnswered(requestID: 1, local: LocalURLs(plain: "x"), .success(.local)) else {
            Issue.record("answers after the end are dropped")
            return
        }
        guard case .none = machine.frameReceived(frame(.ping)) else {
            Issue.record("frames after the end are ignored")
            return
        }
    }
}
