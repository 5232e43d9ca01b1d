import Foundation
import PulsarProtocol

/// Builders for the client→broker commands (everything but SEND and ACK, which `SendFrameEncoder` and
/// `AckFrameEncoder` write by hand). Every required proto2 field is set here. Pure functions.
enum ClientCommands {
    /// What we announce in CONNECT.
    static let clientVersion = "Magnetar-Swift-Client-0.1"

    static func base(_ type: Pulsar_Proto_BaseCommand.TypeEnum, _ fill: (inout Pulsar_Proto_BaseCommand) -> Void) -> Pulsar_Proto_BaseCommand {
        var command = Pulsar_Proto_BaseCommand()
        command.type = type
        fill(&command)
        return command
    }

    /// `authToken`: Pulsar's token authentication (`auth_method_name` `token`, the JWT as `auth_data`).
    static func connect(authToken: String? = nil) -> Pulsar_Proto_BaseCommand {
        base(.connect) {
            $0.connect.clientVersion = clientVersion
            $0.connect.protocolVersion = PulsarLimits.protocolVersion
            if let authToken {
                $0.connect.authMethodName = "token"
                $0.connect.authData = Data(authToken.utf8)
                $0.connect.featureFlags.supportsAuthRefresh = true
            } else {
                $0.connect.authMethodName = "none"
            }
        }
    }

    /// The answer to an AUTH_CHALLENGE: the token again (a static token cannot be refreshed).
    static func authResponse(authToken: String?) -> Pulsar_Proto_BaseCommand {
        base(.authResponse) {
            $0.authResponse.clientVersion = clientVersion
            $0.authResponse.response.authMethodName = authToken == nil ? "none" : "token"
            $0.authResponse.response.authData = Data((authToken ?? "").utf8)
        }
    }

    static func pong() -> Pulsar_Proto_BaseCommand { base(.pong) { $0.pong = Pulsar_Proto_CommandPong() } }

    static func partitionedMetadata(topic: String, requestID: UInt64) -> Pulsar_Proto_BaseCommand {
        base(.partitionedMetadata) {
            $0.partitionMetadata.topic = topic
            $0.partitionMetadata.requestID = requestID
        }
    }

    static func lookup(topic: String, requestID: UInt64, authoritative: Bool) -> Pulsar_Proto_BaseCommand {
        base(.lookup) {
            $0.lookupTopic.topic = topic
            $0.lookupTopic.requestID = requestID
            $0.lookupTopic.authoritative = authoritative
        }
    }

    /// PRODUCER. `name` is the application's name, or on a reconnection the name the broker assigned
    /// the first time (then `userProvidedName` stays false, as in the Java/C++ clients).
    static func producer(
        topic: String, producerID: UInt64, requestID: UInt64, name: String?, userProvidedName: Bool, schema: SchemaInfo? = nil
    ) -> Pulsar_Proto_BaseCommand {
        base(.producer) {
            $0.producer.topic = topic
            $0.producer.producerID = producerID
            $0.producer.requestID = requestID
            if let name { $0.producer.producerName = name }
            $0.producer.userProvidedProducerName = userProvidedName
            if let schema { $0.producer.schema = schema.wire }
        }
    }

    static func closeProducer(producerID: UInt64, requestID: UInt64) -> Pulsar_Proto_BaseCommand {
        base(.closeProducer) {
            $0.closeProducer.producerID = producerID
            $0.closeProducer.requestID = requestID
        }
    }

    static func subscribe(
        topic: String, subscription: String, type: SubscriptionType, consumerID: UInt64, requestID: UInt64,
        consumerName: String, initialPosition: InitialPosition, durable: Bool = true, startMessageID: MessageID? = nil,
        schema: SchemaInfo? = nil
    ) -> Pulsar_Proto_BaseCommand {
        base(.subscribe) {
            if let schema { $0.subscribe.schema = schema.wire }
            $0.subscribe.topic = topic
            $0.subscribe.subscription = subscription
            $0.subscribe.subType = type.wireValue
            $0.subscribe.consumerID = consumerID
            $0.subscribe.requestID = requestID
            $0.subscribe.consumerName = consumerName
            $0.subscribe.durable = durable
            $0.subscribe.initialPosition = initialPosition == .earliest ? .earliest : .latest
            if let startMessageID {
                var data = startMessageID.entryData
                if startMessageID.batchIndex >= 0 { data.batchIndex = startMessageID.batchIndex }
                $0.subscribe.startMessageID = data
            }
        }
    }

    static func flow(consumerID: UInt64, permits: UInt32) -> Pulsar_Proto_BaseCommand {
        base(.flow) {
            $0.flow.consumerID = consumerID
            $0.flow.messagePermits = permits
        }
    }

    /// ACK through SwiftProtobuf: the consumer sends `AckFrameEncoder`'s frames; this is the reference
    /// the tests compare them with.
    static func ack(consumerID: UInt64, cumulative: Bool, ids: [Pulsar_Proto_MessageIdData]) -> Pulsar_Proto_BaseCommand {
        base(.ack) {
            $0.ack.consumerID = consumerID
            $0.ack.ackType = cumulative ? .cumulative : .individual
            $0.ack.messageID = ids
        }
    }

    static func redeliver(consumerID: UInt64, ids: [Pulsar_Proto_MessageIdData]) -> Pulsar_Proto_BaseCommand {
        base(.redeliverUnacknowledgedMessages) {
            $0.redeliverUnacknowledgedMessages.consumerID = consumerID
            $0.redeliverUnacknowledgedMessages.messageIds = ids
        }
    }

    static func getLastMessageID(consumerID: UInt64, requestID: UInt64) -> Pulsar_Proto_BaseCommand {
        base(.getLastMessageID) {
            $0.getLastMessageID.consumerID = consumerID
            $0.getLastMessageID.requestID = requestID
        }
    }

    /// SEEK to a message id (`(-1,-1)` earliest, `(max,max)` latest).
    static func seek(consumerID: UInt64, requestID: UInt64, to id: MessageID) -> Pulsar_Proto_BaseCommand {
        base(.seek) {
            $0.seek.consumerID = consumerID
            $0.seek.requestID = requestID
            $0.seek.messageID = id.entryData
        }
    }

    /// SEEK to the first message published at or after `publishTimeMs` (ms since the epoch).
    static func seek(consumerID: UInt64, requestID: UInt64, publishTimeMs: UInt64) -> Pulsar_Proto_BaseCommand {
        base(.seek) {
            $0.seek.consumerID = consumerID
            $0.seek.requestID = requestID
            $0.seek.messagePublishTime = publishTimeMs
        }
    }

    static func closeConsumer(consumerID: UInt64, requestID: UInt64) -> Pulsar_Proto_BaseCommand {
        base(.closeConsumer) {
            $0.closeConsumer.consumerID = consumerID
            $0.closeConsumer.requestID = requestID
        }
    }

    /// The request id of a broker response, if the command is one.
    static func responseRequestID(_ command: Pulsar_Proto_BaseCommand) -> UInt64? {
        switch command.type {
        case .success: return command.success.requestID
        case .error: return command.error.requestID
        case .producerSuccess: return command.producerSuccess.requestID
        case .partitionedMetadataResponse: return command.partitionMetadataResponse.requestID
        case .lookupResponse: return command.lookupTopicResponse.requestID
        case .getLastMessageIDResponse: return command.getLastMessageIDResponse.requestID
        case .ackResponse: return command.ackResponse.requestID
        case .tcClientConnectResponse: return command.tcClientConnectResponse.requestID
        case .newTxnResponse: return command.newTxnResponse.requestID
        case .addPartitionToTxnResponse: return command.addPartitionToTxnResponse.requestID
        case .addSubscriptionToTxnResponse: return command.addSubscriptionToTxnResponse.requestID
        case .endTxnResponse: return command.endTxnResponse.requestID
        case .endTxnOnPartitionResponse: return command.endTxnOnPartitionResponse.requestID
        case .endTxnOnSubscriptionResponse: return command.endTxnOnSubscriptionResponse.requestID
        default: return nil
        }
    }
}
