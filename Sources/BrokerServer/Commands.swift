import BrokerCore
import ManagedLedger
import PulsarProtocol
import Schemas
import Foundation

/// Builders for the broker→client commands. Every required proto2 field is set here, so no
/// frame the client would reject can leave the broker (notes §11.1).
enum Commands {
    // MARK: schemas

    /// A client's `Schema` as the registry takes it; nil for type NONE (no schema) or a type this
    /// broker does not know.
    static func schema(_ schema: Pulsar_Proto_Schema) -> SchemaDefinition? {
        guard let type = SchemaType(wireNumber: schema.type.rawValue), type != .none else { return nil }
        var properties: [String: String] = [:]
        for property in schema.properties { properties[property.key] = property.value }
        return SchemaDefinition(type: type, data: Array(schema.schemaData), properties: properties)
    }

    /// A stored version as GET_SCHEMA answers it (`name`: the schema id, as Pulsar names it).
    static func schema(_ record: SchemaVersionRecord, name: String) -> Pulsar_Proto_Schema {
        var schema = Pulsar_Proto_Schema()
        schema.name = name
        schema.schemaData = record.data
        schema.type = record.type.wireNumber.flatMap(Pulsar_Proto_Schema.TypeEnum.init(rawValue:)) ?? .none
        schema.properties = record.properties.sorted { $0.key < $1.key }.map { key, value in
            var property = Pulsar_Proto_KeyValue()
            property.key = key
            property.value = value
            return property
        }
        return schema
    }

    /// Pulsar's `LongSchemaVersion` bytes: 8, big-endian.
    static func schemaVersionBytes(_ version: Int64) -> Data {
        withUnsafeBytes(of: version.bigEndian) { Data($0) }
    }

    /// The version in a client's `schema_version`: its first 8 bytes, big-endian; nil if shorter.
    static func schemaVersion(_ bytes: Data) -> Int64? {
        guard bytes.count >= 8 else { return nil }
        return bytes.prefix(8).reduce(Int64(0)) { $0 << 8 | Int64($1) }
    }

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
    /// The response to a transaction command (they share their fields: request id, transaction id,
    /// error and message; TC_CLIENT_CONNECT's has no transaction id).
    static func transactionResponse(
        for request: Pulsar_Proto_BaseCommand.TypeEnum, requestID: UInt64, transaction: TransactionID?,
        error: Pulsar_Proto_ServerError? = nil, message: String? = nil
    ) -> Pulsar_Proto_BaseCommand {
        func fill<T>(_ response: inout T, _ set: (inout T, UInt64, UInt64, Pulsar_Proto_ServerError?, String?) -> Void) {
            set(&response, transaction?.mostBits ?? 0, transaction?.leastBits ?? 0, error, message)
        }
        switch request {
        case .tcClientConnectRequest:
            return base(.tcClientConnectResponse) {
                $0.tcClientConnectResponse.requestID = requestID
                if let error { $0.tcClientConnectResponse.error = error }
                if let message { $0.tcClientConnectResponse.message = message }
            }
        case .newTxn:
            return base(.newTxnResponse) {
                $0.newTxnResponse.requestID = requestID
                fill(&$0.newTxnResponse) { r, most, least, error, message in
                    r.txnidMostBits = most; r.txnidLeastBits = least
                    if let error { r.error = error }
                    if let message { r.message = message }
                }
            }
        case .addPartitionToTxn:
            return base(.addPartitionToTxnResponse) {
                $0.addPartitionToTxnResponse.requestID = requestID
                fill(&$0.addPartitionToTxnResponse) { r, most, least, error, message in
                    r.txnidMostBits = most; r.txnidLeastBits = least
                    if let error { r.error = error }
                    if let message { r.message = message }
                }
            }
        case .addSubscriptionToTxn:
            return base(.addSubscriptionToTxnResponse) {
                $0.addSubscriptionToTxnResponse.requestID = requestID
                fill(&$0.addSubscriptionToTxnResponse) { r, most, least, error, message in
                    r.txnidMostBits = most; r.txnidLeastBits = least
                    if let error { r.error = error }
                    if let message { r.message = message }
                }
            }
        case .endTxnOnPartition:
            return base(.endTxnOnPartitionResponse) {
                $0.endTxnOnPartitionResponse.requestID = requestID
                fill(&$0.endTxnOnPartitionResponse) { r, most, least, error, message in
                    r.txnidMostBits = most; r.txnidLeastBits = least
                    if let error { r.error = error }
                    if let message { r.message = message }
                }
            }
        case .endTxnOnSubscription:
            return base(.endTxnOnSubscriptionResponse) {
                $0.endTxnOnSubscriptionResponse.requestID = requestID
                fill(&$0.endTxnOnSubscriptionResponse) { r, most, least, error, message in
                    r.txnidMostBits = most; r.txnidLeastBits = least
                    if let error { r.error = error }
                    if let message { r.message = message }
                }
            }
        default:
            return base(.endTxnResponse) {
                $0.endTxnResponse.requestID = requestID
                fill(&$0.endTxnResponse) { r, most, least, error, message in
                    r.txnidMostBits = most; r.txnidLeastBits = least
                    if let error { r.error = error }
                    if let message { r.message = message }
                }
            }
        }
    }

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
