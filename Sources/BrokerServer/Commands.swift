import BrokerCore
import ManagedLedger
import PulsarProtocol

/// Builders for the broker→client commands. Every required proto2 field is set here, so no
/// frame the client would reject can leave the broker (notes §11.1).
enum Commands {
    static func base(_ type: Pulsar_Proto_BaseCommand.TypeEnum, _ fill: (inout Pulsar_Proto_BaseCommand) -> Void) -> Pulsar_Proto_BaseCommand {
        var command = Pulsar_Proto_BaseCommand()
        command.type = type
        fill(&command)
        return command
    }

    static func success(requestID: UInt64) -> Pulsar_Proto_BaseCommand {
        base(.success) { $0.success.requestID = requestID }
    }

    static func error(requestID: UInt64, error: any Error) -> Pulsar_Proto_BaseCommand {
        base(.error) {
            $0.error.requestID = requestID
            $0.error.error = ServerErrors.serverError(for: error)
            $0.error.message = ServerErrors.message(for: error)
        }
    }

    /// The request id of a transaction command, nil for any other command.
    static func transactionRequestID(_ command: Pulsar_Proto_BaseCommand) -> UInt64? {
        switch command.type {
        case .newTxn: command.newTxn.requestID
        case .addPartitionToTxn: command.addPartitionToTxn.requestID
        case .addSubscriptionToTxn: command.addSubscriptionToTxn.requestID
        case .endTxn: command.endTxn.requestID
        case .endTxnOnPartition: command.endTxnOnPartition.requestID
        case .endTxnOnSubscription: command.endTxnOnSubscription.requestID
        case .tcClientConnectRequest: command.tcClientConnectRequest.requestID
        default: nil
        }
    }

    static func messageID(_ position: Position, partition: Int32, batchIndex: Int32? = nil) -> Pulsar_Proto_MessageIdData {
        var id = Pulsar_Proto_MessageIdData()
        id.ledgerID = UInt64(bitPattern: position.ledgerID)
        id.entryID = UInt64(bitPattern: position.entryID)
        id.partition = partition
        if let batchIndex { id.batchIndex = batchIndex }
        return id
    }

    static func position(_ id: Pulsar_Proto_MessageIdData) -> Position {
        Position(ledgerID: Int64(bitPattern: id.ledgerID), entryID: Int64(bitPattern: id.entryID))
    }

    /// Maps the client's start/seek message id sentinels (notes §11.6).
    static func startPosition(_ id: Pulsar_Proto_MessageIdData) -> StartPosition {
        let position = position(id)
        if position.ledgerID == -1 && position.entryID == -1 { return .earliest }
        if position.ledgerID == Int64.max && position.entryID == Int64.max { return .latest }
        if position.ledgerID < 0 { return .earliest }
        return .at(position)
    }
}
