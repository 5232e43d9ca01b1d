import NIOCore
import PulsarProtocol
import Testing

/// Every command the broker handles or sends survives encode → decode unchanged.
@Suite struct CommandRoundTripTests {
    static func messageID(_ ledger: UInt64, _ entry: UInt64) -> Pulsar_Proto_MessageIdData {
        var id = Pulsar_Proto_MessageIdData()
        id.ledgerID = ledger
        id.entryID = entry
        id.partition = -1
        return id
    }

    static let commands: [Pulsar_Proto_BaseCommand] = {
        func make(_ type: Pulsar_Proto_BaseCommand.TypeEnum, _ fill: (inout Pulsar_Proto_BaseCommand) -> Void) -> Pulsar_Proto_BaseCommand {
            var command = Pulsar_Proto_BaseCommand()
            command.type = type
            fill(&command)
            return command
        }
        return [
            make(.connect) { $0.connect.clientVersion = "Pulsar-CPP-v4.2.0"; $0.connect.protocolVersion = 20; $0.connect.authMethodName = "none" },
            make(.connected) { $0.connected.serverVersion = "Magnetar"; $0.connected.protocolVersion = 20; $0.connected.maxMessageSize = 5_242_880 },
            make(.partitionedMetadata) { $0.partitionMetadata.topic = "persistent://public/default/t"; $0.partitionMetadata.requestID = 1 },
            make(.partitionedMetadataResponse) { $0.partitionMetadataResponse.requestID = 1; $0.partitionMetadataResponse.partitions = 3; $0.partitionMetadataResponse.response = .success },
            make(.lookup) { $0.lookupTopic.topic = "persistent://public/default/t"; $0.lookupTopic.requestID = 2; $0.lookupTopic.authoritative = false },
            make(.lookupResponse) { $0.lookupTopicResponse.requestID = 2; $0.lookupTopicResponse.response = .connect; $0.lookupTopicResponse.brokerServiceURL = "pulsar://localhost:6650"; $0.lookupTopicResponse.authoritative = true },
            make(.producer) { $0.producer.topic = "t"; $0.producer.producerID = 0; $0.producer.requestID = 3; $0.producer.epoch = 1; $0.producer.producerAccessMode = .shared },
            make(.producerSuccess) { $0.producerSuccess.requestID = 3; $0.producerSuccess.producerName = "standalone-1"; $0.producerSuccess.lastSequenceID = -1; $0.producerSuccess.producerReady = true },
            make(.send) { $0.send.producerID = 0; $0.send.sequenceID = 9; $0.send.numMessages = 5 },
            make(.sendReceipt) { $0.sendReceipt.producerID = 0; $0.sendReceipt.sequenceID = 9; $0.sendReceipt.messageID = messageID(7, 3) },
            make(.sendError) { $0.sendError.producerID = 0; $0.sendError.sequenceID = 9; $0.sendError.error = .checksumError; $0.sendError.message = "bad" },
            make(.subscribe) {
                $0.subscribe.topic = "t"; $0.subscribe.subscription = "s"; $0.subscribe.subType = .keyShared
                $0.subscribe.consumerID = 1; $0.subscribe.requestID = 4; $0.subscribe.durable = false
                $0.subscribe.startMessageID = messageID(UInt64.max, UInt64.max)
                var range = Pulsar_Proto_IntRange(); range.start = 0; range.end = 32767
                $0.subscribe.keySharedMeta.keySharedMode = .sticky; $0.subscribe.keySharedMeta.hashRanges = [range]
            },
            make(.flow) { $0.flow.consumerID = 1; $0.flow.messagePermits = 1000 },
            make(.message) { $0.message.consumerID = 1; $0.message.messageID = messageID(7, 3); $0.message.redeliveryCount = 2; $0.message.ackSet = [5] },
            make(.ack) { $0.ack.consumerID = 1; $0.ack.ackType = .cumulative; $0.ack.messageID = [messageID(7, UInt64.max)] },
            make(.redeliverUnacknowledgedMessages) { $0.redeliverUnacknowledgedMessages.consumerID = 1; $0.redeliverUnacknowledgedMessages.messageIds = [messageID(7, 3)] },
            make(.seek) { $0.seek.consumerID = 1; $0.seek.requestID = 5; $0.seek.messagePublishTime = 1_700_000_000_000 },
            make(.getLastMessageID) { $0.getLastMessageID.consumerID = 1; $0.getLastMessageID.requestID = 6 },
            make(.getLastMessageIDResponse) { $0.getLastMessageIDResponse.requestID = 6; $0.getLastMessageIDResponse.lastMessageID = messageID(7, 3); $0.getLastMessageIDResponse.consumerMarkDeletePosition = messageID(7, 2) },
            make(.unsubscribe) { $0.unsubscribe.consumerID = 1; $0.unsubscribe.requestID = 7 },
            make(.closeConsumer) { $0.closeConsumer.consumerID = 1; $0.closeConsumer.requestID = 8 },
            make(.closeProducer) { $0.closeProducer.producerID = 0; $0.closeProducer.requestID = 9 },
            make(.success) { $0.success.requestID = 9 },
            make(.error) { $0.error.requestID = 9; $0.error.error = .consumerBusy; $0.error.message = "busy" },
            make(.getTopicsOfNamespace) { $0.getTopicsOfNamespace.requestID = 10; $0.getTopicsOfNamespace.namespace = "public/default"; $0.getTopicsOfNamespace.mode = .persistent },
            make(.getTopicsOfNamespaceResponse) { $0.getTopicsOfNamespaceResponse.requestID = 10; $0.getTopicsOfNamespaceResponse.topics = ["persistent://public/default/a"] },
            make(.activeConsumerChange) { $0.activeConsumerChange.consumerID = 1; $0.activeConsumerChange.isActive = true },
            make(.ping) { $0.ping = Pulsar_Proto_CommandPing() },
            make(.pong) { $0.pong = Pulsar_Proto_CommandPong() },
        ]
    }()

    @Test(arguments: commands)
    func roundTrip(_ command: Pulsar_Proto_BaseCommand) throws {
        var buffer = PulsarFrameEncoder.encodeCommand(command)
        var decoder = PulsarFrameDecoder()
        let frame = try #require(try decoder.decode(buffer: &buffer))
        #expect(frame.command == command)
        #expect(buffer.readableBytes == 0)
    }
}
