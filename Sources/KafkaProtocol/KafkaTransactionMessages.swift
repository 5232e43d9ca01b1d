import NIOCore

// Kafka's transactional producer API (the `*Request.json` / `*Response.json` of apache/kafka):
// AddPartitionsToTxn (24), AddOffsetsToTxn (25), EndTxn (26), TxnOffsetCommit (28), v0–v3 of
// each, flexible from v3. librdkafka 2.x sends AddPartitionsToTxn v0, AddOffsetsToTxn v0,
// EndTxn v0–1, TxnOffsetCommit v0–3. Pure values.

/// `AddPartitionsToTxnRequest` v0–v3 (v4+ is the brokers' batched form).
public struct AddPartitionsToTxnRequest: Sendable, Equatable {
    public struct Topic: Sendable, Equatable {
        public var name: String
        public var partitions: [Int32]
        public init(name: String, partitions: [Int32]) {
            self.name = name
            self.partitions = partitions
        }
    }

    public var transactionalID: String
    public var producerID: Int64
    public var producerEpoch: Int16
    public var topics: [Topic]

    public init(transactionalID: String, producerID: Int64, producerEpoch: Int16, topics: [Topic]) {
        self.transactionalID = transactionalID
        self.producerID = producerID
        self.producerEpoch = producerEpoch
        self.topics = topics
    }

    public static func read(_ reader: inout KafkaReader, version: Int16) throws(KafkaProtocolError) -> AddPartitionsToTxnRequest {
        let flexible = version >= 3
        let transactionalID = try reader.string(flexible: flexible)
        let producerID = try reader.int64()
        let epoch = try reader.int16()
        let topics: [Topic] = try reader.array(flexible: flexible) { reader throws(KafkaProtocolError) -> Topic in
            let name = try reader.string(flexible: flexible)
            let partitions: [Int32] = try reader.array(flexible: flexible) { reader throws(KafkaProtocolError) -> Int32 in
                try reader.int32()
            } ?? []
            if flexible { try reader.skipTaggedFields() }
            return Topic(name: name, partitions: partitions)
        } ?? []
        if flexible { try reader.skipTaggedFields() }
        return AddPartitionsToTxnRequest(transactionalID: transactionalID, producerID: producerID, producerEpoch: epoch, topics: topics)
    }

    public func write(into buffer: inout ByteBuffer, version: Int16) {
        let flexible = version >= 3
        buffer.writeKafkaString(transactionalID, flexible: flexible)
        buffer.writeInteger(producerID)
        buffer.writeInteger(producerEpoch)
        buffer.writeKafkaArray(topics, flexible: flexible) { buffer, topic in
            buffer.writeKafkaString(topic.name, flexible: flexible)
            buffer.writeKafkaArray(topic.partitions, flexible: flexible) { $0.writeInteger($1) }
            if flexible { buffer.writeKafkaEmptyTaggedFields() }
        }
        if flexible { buffer.writeKafkaEmptyTaggedFields() }
    }
}

/// `AddPartitionsToTxnResponse` v0–v3, and `TxnOffsetCommitResponse` v0–v3 (the same shape):
/// per topic, per partition an error code.
public struct KafkaPartitionErrorsResponse: Sendable, Equatable {
    public struct Partition: Sendable, Equatable {
        public var index: Int32
        public var errorCode: KafkaErrorCode
        public init(index: Int32, errorCode: KafkaErrorCode) {
            self.index = index
            self.errorCode = errorCode
        }
    }

    public struct Topic: Sendable, Equatable {
        public var name: String
        public var partitions: [Partition]
        public init(name: String, partitions: [Partition]) {
            self.name = name
            self.partitions = partitions
        }
    }

    public var topics: [Topic]

    public init(topics: [Topic]) {
        self.topics = topics
    }

    public func write(into buffer: inout ByteBuffer, version: Int16) {
        let flexible = version >= 3
        buffer.writeInteger(Int32(0))  // throttle_time_ms
        buffer.writeKafkaArray(topics, flexible: flexible) { buffer, topic in
            buffer.writeKafkaString(topic.name, flexible: flexible)
            buffer.writeKafkaArray(topic.partitions, flexible: flexible) { buffer, partition in
                buffer.writeInteger(partition.index)
                buffer.writeInteger(partition.errorCode.rawValue)
                if flexible { buffer.writeKafkaEmptyTaggedFields() }
            }
            if flexible { buffer.writeKafkaEmptyTaggedFields() }
        }
        if flexible { buffer.writeKafkaEmptyTaggedFields() }
    }
}

/// `AddOffsetsToTxnRequest` v0–v3: the group whose offsets the transaction will commit.
public struct AddOffsetsToTxnRequest: Sendable, Equatable {
    public var transactionalID: String
    public var producerID: Int64
    public var producerEpoch: Int16
    public var groupID: String

    public init(transactionalID: String, producerID: Int64, producerEpoch: Int16, groupID: String) {
        self.transactionalID = transactionalID
        self.producerID = producerID
        self.producerEpoch = producerEpoch
        self.groupID = groupID
    }

    public static func read(_ reader: inout KafkaReader, version: Int16) throws(KafkaProtocolError) -> AddOffsetsToTxnRequest {
        let flexible = version >= 3
        let request = AddOffsetsToTxnRequest(
            transactionalID: try reader.string(flexible: flexible), producerID: try reader.int64(),
            producerEpoch: try reader.int16(), groupID: try reader.string(flexible: flexible))
        if flexible { try reader.skipTaggedFields() }
        return request
    }

    public func write(into buffer: inout ByteBuffer, version: Int16) {
        let flexible = version >= 3
        buffer.writeKafkaString(transactionalID, flexible: flexible)
        buffer.writeInteger(producerID)
        buffer.writeInteger(producerEpoch)
        buffer.writeKafkaString(groupID, flexible: flexible)
        if flexible { buffer.writeKafkaEmptyTaggedFields() }
    }
}

/// `EndTxnRequest` v0–v3: commit (true) or abort.
public struct EndTxnRequest: Sendable, Equatable {
    public var transactionalID: String
    public var producerID: Int64
    public var producerEpoch: Int16
    public var committed: Bool

    public init(transactionalID: String, producerID: Int64, producerEpoch: Int16, committed: Bool) {
        self.transactionalID = transactionalID
        self.producerID = producerID
        self.producerEpoch = producerEpoch
        self.committed = committed
    }

    public static func read(_ reader: inout KafkaReader, version: Int16) throws(KafkaProtocolError) -> EndTxnRequest {
        let flexible = version >= 3
        let request = EndTxnRequest(
            transactionalID: try reader.string(flexible: flexible), producerID: try reader.int64(),
            producerEpoch: try reader.int16(), committed: try reader.bool())
        if flexible { try reader.skipTaggedFields() }
        return request
    }

    public func write(into buffer: inout ByteBuffer, version: Int16) {
        let flexible = version >= 3
        buffer.writeKafkaString(transactionalID, flexible: flexible)
        buffer.writeInteger(producerID)
        buffer.writeInteger(producerEpoch)
        buffer.writeKafkaBool(committed)
        if flexible { buffer.writeKafkaEmptyTaggedFields() }
    }
}

// AddOffsetsToTxnResponse / EndTxnResponse v0–v3 are `KafkaErrorOnlyResponse(throttleFromVersion: 0, flexibleFromVersion: 3)`.

/// `TxnOffsetCommitRequest` v0–v3: offsets committed with the transaction (v3 adds the group
/// generation and member, checked like an OffsetCommit's).
public struct TxnOffsetCommitRequest: Sendable, Equatable {
    public struct Partition: Sendable, Equatable {
        public var index: Int32
        public var offset: Int64
        public var leaderEpoch: Int32
        public var metadata: String?
        public init(index: Int32, offset: Int64, leaderEpoch: Int32 = -1, metadata: String?) {
            self.index = index
            self.offset = offset
            self.leaderEpoch = leaderEpoch
            self.metadata = metadata
        }
    }

    public struct Topic: Sendable, Equatable {
        public var name: String
        public var partitions: [Partition]
        public init(name: String, partitions: [Partition]) {
            self.name = name
            self.partitions = partitions
        }
    }

    public var transactionalID: String
    public var groupID: String
    public var producerID: Int64
    public var producerEpoch: Int16
    public var generationID: Int32 = -1
    public var memberID: String = ""
    public var groupInstanceID: String?
    public var topics: [Topic]

    public init(transactionalID: String, groupID: String, producerID: Int64, producerEpoch: Int16, topics: [Topic]) {
        self.transactionalID = transactionalID
        self.groupID = groupID
        self.producerID = producerID
        self.producerEpoch = producerEpoch
        self.topics = topics
    }

    public static func read(_ reader: inout KafkaReader, version: Int16) throws(KafkaProtocolError) -> TxnOffsetCommitRequest {
        let flexible = version >= 3
        let transactionalID = try reader.string(flexible: flexible)
        let groupID = try reader.string(flexible: flexible)
        let producerID = try reader.int64()
        let epoch = try reader.int16()
        var generation: Int32 = -1
        var member = ""
        var instance: String?
        if version >= 3 {
            generation = try reader.int32()
            member = try reader.string(flexible: flexible)
            instance = try reader.nullableString(flexible: flexible)
        }
        let topics: [Topic] = try reader.array(flexible: flexible) { reader throws(KafkaProtocolError) -> Topic in
            let name = try reader.string(flexible: flexible)
            let partitions: [Partition] = try reader.array(flexible: flexible) { reader throws(KafkaProtocolError) -> Partition in
                let index = try reader.int32()
                let offset = try reader.int64()
                let leaderEpoch = version >= 2 ? try reader.int32() : -1
                let metadata = try reader.nullableString(flexible: flexible)
                if flexible { try reader.skipTaggedFields() }
                return Partition(index: index, offset: offset, leaderEpoch: leaderEpoch, metadata: metadata)
            } ?? []
            if flexible { try reader.skipTaggedFields() }
            return Topic(name: name, partitions: partitions)
        } ?? []
        if flexible { try reader.skipTaggedFields() }
        var request = TxnOffsetCommitRequest(
            transactionalID: transactionalID, groupID: groupID, producerID: producerID, producerEpoch: epoch, topics: topics)
        request.generationID = generation
        request.memberID = member
        request.groupInstanceID = instance
        return request
    }

    public func write(into buffer: inout ByteBuffer, version: Int16) {
        let flexible = version >= 3
        buffer.writeKafkaString(transactionalID, flexible: flexible)
        buffer.writeKafkaString(groupID, flexible: flexible)
        buffer.writeInteger(producerID)
        buffer.writeInteger(producerEpoch)
        if version >= 3 {
            buffer.writeInteger(generationID)
            buffer.writeKafkaString(memberID, flexible: flexible)
            buffer.writeKafkaString(groupInstanceID, flexible: flexible)
        }
        buffer.writeKafkaArray(topics, flexible: flexible) { buffer, topic in
            buffer.writeKafkaString(topic.name, flexible: flexible)
            buffer.writeKafkaArray(topic.partitions, flexible: flexible) { buffer, partition in
                buffer.writeInteger(partition.index)
                buffer.writeInteger(partition.offset)
                if version >= 2 { buffer.writeInteger(partition.leaderEpoch) }
                buffer.writeKafkaString(partition.metadata, flexible: flexible)
                if flexible { buffer.writeKafkaEmptyTaggedFields() }
            }
            if flexible { buffer.writeKafkaEmptyTaggedFields() }
        }
        if flexible { buffer.writeKafkaEmptyTaggedFields() }
    }
}
