import NIOCore

/// `InitProducerIdRequest` v0–v4 (flexible from v2): a producer id and epoch for an idempotent
/// producer. `producer_id` / `producer_epoch` (v3+) name an existing one to bump.
public struct InitProducerIdRequest: Sendable, Equatable {
    public var transactionalID: String?
    public var transactionTimeoutMs: Int32
    public var producerID: Int64
    public var producerEpoch: Int16

    public init(transactionalID: String?, transactionTimeoutMs: Int32, producerID: Int64 = -1, producerEpoch: Int16 = -1) {
        self.transactionalID = transactionalID
        self.transactionTimeoutMs = transactionTimeoutMs
        self.producerID = producerID
        self.producerEpoch = producerEpoch
    }

    public static func read(_ reader: inout KafkaReader, version: Int16) throws(KafkaProtocolError) -> InitProducerIdRequest {
        let flexible = version >= 2
        let transactionalID = try reader.nullableString(flexible: flexible)
        let timeout = try reader.int32()
        var request = InitProducerIdRequest(transactionalID: transactionalID, transactionTimeoutMs: timeout)
        if version >= 3 {
            request.producerID = try reader.int64()
            request.producerEpoch = try reader.int16()
        }
        if flexible { try reader.skipTaggedFields() }
        return request
    }

    public func write(into buffer: inout ByteBuffer, version: Int16) {
        let flexible = version >= 2
        buffer.writeKafkaString(transactionalID, flexible: flexible)
        buffer.writeInteger(transactionTimeoutMs)
        if version >= 3 {
            buffer.writeInteger(producerID)
            buffer.writeInteger(producerEpoch)
        }
        if flexible { buffer.writeKafkaEmptyTaggedFields() }
    }
}

/// `InitProducerIdResponse` v0–v4.
public struct InitProducerIdResponse: Sendable, Equatable {
    public var errorCode: KafkaErrorCode
    public var producerID: Int64
    public var producerEpoch: Int16

    public init(errorCode: KafkaErrorCode, producerID: Int64, producerEpoch: Int16) {
        self.errorCode = errorCode
        self.producerID = producerID
        self.producerEpoch = producerEpoch
    }

    public func write(into buffer: inout ByteBuffer, version: Int16) {
        buffer.writeInteger(Int32(0))  // throttle_time_ms
        buffer.writeInteger(errorCode.rawValue)
        buffer.writeInteger(producerID)
        buffer.writeInteger(producerEpoch)
        if version >= 2 { buffer.writeKafkaEmptyTaggedFields() }
    }
}
