import NIOCore

/// `ApiVersionsResponse` v0–v3 (`ApiVersionsResponse.json`; flexible from v3). For an
/// unsupported request version the broker answers in v0 with UNSUPPORTED_VERSION and its ranges,
/// and the client retries with the highest version both know (KIP-511).
public struct ApiVersionsResponse: Sendable, Equatable {
    public var errorCode: KafkaErrorCode
    public var apis: [KafkaApiSupport]
    public var throttleTimeMs: Int32 = 0

    public init(errorCode: KafkaErrorCode, apis: [KafkaApiSupport]) {
        self.errorCode = errorCode
        self.apis = apis
    }

    public func write(into buffer: inout ByteBuffer, version: Int16) {
        let flexible = version >= 3
        buffer.writeInteger(errorCode.rawValue)
        buffer.writeKafkaArray(apis, flexible: flexible) { buffer, api in
            buffer.writeInteger(api.key.rawValue)
            buffer.writeInteger(api.minVersion)
            buffer.writeInteger(api.maxVersion)
            if flexible { buffer.writeKafkaEmptyTaggedFields() }
        }
        if version >= 1 { buffer.writeInteger(throttleTimeMs) }
        if flexible { buffer.writeKafkaEmptyTaggedFields() }
    }
}

/// `MetadataRequest` v0–v9 (`MetadataRequest.json`; flexible from v9).
public struct MetadataRequest: Sendable, Equatable {
    /// nil: every topic (v0 has no null: an empty list means all).
    public var topics: [String]?
    /// v4+; before, the broker's `auto.create.topics.enable` decides (true).
    public var allowAutoTopicCreation: Bool

    public init(topics: [String]?, allowAutoTopicCreation: Bool) {
        self.topics = topics
        self.allowAutoTopicCreation = allowAutoTopicCreation
    }

    public static func read(_ reader: inout KafkaReader, version: Int16) throws(KafkaProtocolError) -> MetadataRequest {
        let flexible = version >= 9
        var topics = try reader.array(flexible: flexible) { (reader: inout KafkaReader) throws(KafkaProtocolError) -> String in
            let name = try reader.string(flexible: flexible)
            if flexible { try reader.skipTaggedFields() }
            return name
        }
        if version == 0, topics?.isEmpty == true { topics = nil }
        var allow = true
        if version >= 4 { allow = try reader.bool() }
        if version >= 8 {
            _ = try reader.bool()  // include_cluster_authorized_operations
            _ = try reader.bool()  // include_topic_authorized_operations
        }
        if flexible { try reader.skipTaggedFields() }
        return MetadataRequest(topics: topics, allowAutoTopicCreation: allow)
    }
}

/// `MetadataResponse` v0–v9.
public struct MetadataResponse: Sendable, Equatable {
    public struct Broker: Sendable, Equatable {
        public var nodeID: Int32
        public var host: String
        public var port: Int32
        public init(nodeID: Int32, host: String, port: Int32) {
            self.nodeID = nodeID
            self.host = host
            self.port = port
        }
    }

    public struct Partition: Sendable, Equatable {
        public var errorCode: KafkaErrorCode = .none
        public var index: Int32
        public var leaderID: Int32
        public var leaderEpoch: Int32 = 0
        public var replicas: [Int32]
        public init(index: Int32, leaderID: Int32, errorCode: KafkaErrorCode = .none) {
            self.index = index
            self.leaderID = leaderID
            self.errorCode = errorCode
            replicas = leaderID >= 0 ? [leaderID] : []
        }
    }

    public struct Topic: Sendable, Equatable {
        public var errorCode: KafkaErrorCode
        public var name: String
        public var isInternal = false
        public var partitions: [Partition]
        public init(errorCode: KafkaErrorCode = .none, name: String, partitions: [Partition]) {
            self.errorCode = errorCode
            self.name = name
            self.partitions = partitions
        }
    }

    public var brokers: [Broker]
    public var clusterID: String?
    public var controllerID: Int32
    public var topics: [Topic]

    public init(brokers: [Broker], clusterID: String?, controllerID: Int32, topics: [Topic]) {
        self.brokers = brokers
        self.clusterID = clusterID
        self.controllerID = controllerID
        self.topics = topics
    }

    /// "Not requested" for the authorized-operations fields (v8+).
    static let operationsUnknown = Int32.min

    public func write(into buffer: inout ByteBuffer, version: Int16) {
        let flexible = version >= 9
        if version >= 3 { buffer.writeInteger(Int32(0)) }  // throttle_time_ms
        buffer.writeKafkaArray(brokers, flexible: flexible) { buffer, broker in
            buffer.writeInteger(broker.nodeID)
            buffer.writeKafkaString(broker.host, flexible: flexible)
            buffer.writeInteger(broker.port)
            if version >= 1 { buffer.writeKafkaString(nil, flexible: flexible) }  // rack
            if flexible { buffer.writeKafkaEmptyTaggedFields() }
        }
        if version >= 2 { buffer.writeKafkaString(clusterID, flexible: flexible) }
        if version >= 1 { buffer.writeInteger(controllerID) }
        buffer.writeKafkaArray(topics, flexible: flexible) { buffer, topic in
            buffer.writeInteger(topic.errorCode.rawValue)
            buffer.writeKafkaString(topic.name, flexible: flexible)
            if version >= 1 { buffer.writeKafkaBool(topic.isInternal) }
            buffer.writeKafkaArray(topic.partitions, flexible: flexible) { buffer, partition in
                buffer.writeInteger(partition.errorCode.rawValue)
                buffer.writeInteger(partition.index)
                buffer.writeInteger(partition.leaderID)
                if version >= 7 { buffer.writeInteger(partition.leaderEpoch) }
                buffer.writeKafkaArray(partition.replicas, flexible: flexible) { $0.writeInteger($1) }
                buffer.writeKafkaArray(partition.replicas, flexible: flexible) { $0.writeInteger($1) }  // ISR
                if version >= 5 { buffer.writeKafkaArray([Int32](), flexible: flexible) { $0.writeInteger($1) } }
                if flexible { buffer.writeKafkaEmptyTaggedFields() }
            }
            if version >= 8 { buffer.writeInteger(Self.operationsUnknown) }
            if flexible { buffer.writeKafkaEmptyTaggedFields() }
        }
        if version >= 8 { buffer.writeInteger(Self.operationsUnknown) }
        if flexible { buffer.writeKafkaEmptyTaggedFields() }
    }
}

/// `ProduceRequest` v3–v9 (`ProduceRequest.json`; flexible from v9; v3 is the first that carries
/// record batches v2 only). Each partition's `records` is kept as the bytes sent (a slice).
public struct ProduceRequest: Sendable, Equatable {
    public struct Partition: Sendable, Equatable {
        public var index: Int32
        public var records: ByteBuffer?
    }

    public struct Topic: Sendable, Equatable {
        public var name: String
        public var partitions: [Partition]
    }

    public var transactionalID: String?
    /// 0: no response; 1 and -1 (all): answered once durable.
    public var acks: Int16
    public var timeoutMs: Int32
    public var topics: [Topic]

    public static func read(_ reader: inout KafkaReader, version: Int16) throws(KafkaProtocolError) -> ProduceRequest {
        let flexible = version >= 9
        let transactionalID = try reader.nullableString(flexible: flexible)
        let acks = try reader.int16()
        let timeoutMs = try reader.int32()
        let topics = try reader.array(flexible: flexible) { (reader: inout KafkaReader) throws(KafkaProtocolError) -> Topic in
            let name = try reader.string(flexible: flexible)
            let partitions = try reader.array(flexible: flexible) { (reader: inout KafkaReader) throws(KafkaProtocolError) -> Partition in
                let index = try reader.int32()
                let length: Int
                if flexible {
                    length = Int(try reader.unsignedVarint()) - 1
                } else {
                    length = Int(try reader.int32())
                }
                let records = length < 0 ? nil : try reader.bytes(count: length)
                if flexible { try reader.skipTaggedFields() }
                return Partition(index: index, records: records)
            } ?? []
            if flexible { try reader.skipTaggedFields() }
            return Topic(name: name, partitions: partitions)
        } ?? []
        if flexible { try reader.skipTaggedFields() }
        return ProduceRequest(transactionalID: transactionalID, acks: acks, timeoutMs: timeoutMs, topics: topics)
    }
}

/// `ProduceResponse` v3–v9.
public struct ProduceResponse: Sendable, Equatable {
    public struct Partition: Sendable, Equatable {
        public var index: Int32
        public var errorCode: KafkaErrorCode
        public var baseOffset: Int64
        public var logAppendTimeMs: Int64 = -1
        public var logStartOffset: Int64 = -1
        public var errorMessage: String?
        public init(index: Int32, errorCode: KafkaErrorCode, baseOffset: Int64, logStartOffset: Int64 = -1, errorMessage: String? = nil) {
            self.index = index
            self.errorCode = errorCode
            self.baseOffset = baseOffset
            self.logStartOffset = logStartOffset
            self.errorMessage = errorMessage
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

    public init(topics: [Topic]) { self.topics = topics }

    public func write(into buffer: inout ByteBuffer, version: Int16) {
        let flexible = version >= 9
        buffer.writeKafkaArray(topics, flexible: flexible) { buffer, topic in
            buffer.writeKafkaString(topic.name, flexible: flexible)
            buffer.writeKafkaArray(topic.partitions, flexible: flexible) { buffer, partition in
                buffer.writeInteger(partition.index)
                buffer.writeInteger(partition.errorCode.rawValue)
                buffer.writeInteger(partition.baseOffset)
                buffer.writeInteger(partition.logAppendTimeMs)
                if version >= 5 { buffer.writeInteger(partition.logStartOffset) }
                if version >= 8 {
                    buffer.writeKafkaArrayCount(0, flexible: flexible)  // record_errors
                    buffer.writeKafkaString(partition.errorMessage, flexible: flexible)
                }
                if flexible { buffer.writeKafkaEmptyTaggedFields() }
            }
            if flexible { buffer.writeKafkaEmptyTaggedFields() }
        }
        buffer.writeInteger(Int32(0))  // throttle_time_ms
        if flexible { buffer.writeKafkaEmptyTaggedFields() }
    }
}
