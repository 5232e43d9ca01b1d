import NIOCore

// The topic-administration APIs (`CreateTopics`, `DeleteTopics`, `CreatePartitions`,
// `DescribeConfigs`), field for field as in Kafka's message definitions.

/// A topic or group name with Kafka's error code and message: the result of each admin operation.
public struct KafkaNamedResult: Sendable, Equatable {
    public var name: String
    public var errorCode: KafkaErrorCode
    public var errorMessage: String?
    public init(name: String, errorCode: KafkaErrorCode = .none, errorMessage: String? = nil) {
        self.name = name
        self.errorCode = errorCode
        self.errorMessage = errorMessage
    }
}

// MARK: CreateTopics

/// `CreateTopicsRequest` v0–v6 (flexible from v5). Replica assignments and replication factors
/// are read and set aside: storage placement is the ensemble's business.
public struct CreateTopicsRequest: Sendable, Equatable {
    public struct Topic: Sendable, Equatable {
        public var name: String
        /// -1: the broker's default (v4+).
        public var numPartitions: Int32
        public var replicationFactor: Int16
        public var configs: [String: String?]
        public init(name: String, numPartitions: Int32, replicationFactor: Int16 = -1, configs: [String: String?] = [:]) {
            self.name = name
            self.numPartitions = numPartitions
            self.replicationFactor = replicationFactor
            self.configs = configs
        }
    }

    public var topics: [Topic]
    public var timeoutMs: Int32
    public var validateOnly: Bool

    public init(topics: [Topic], timeoutMs: Int32 = 60_000, validateOnly: Bool = false) {
        self.topics = topics
        self.timeoutMs = timeoutMs
        self.validateOnly = validateOnly
    }

    public static func read(_ reader: inout KafkaReader, version: Int16) throws(KafkaProtocolError) -> CreateTopicsRequest {
        let flexible = version >= 5
        let topics = try reader.array(flexible: flexible) { (reader: inout KafkaReader) throws(KafkaProtocolError) -> Topic in
            let name = try reader.string(flexible: flexible)
            let partitions = try reader.int32()
            let replication = try reader.int16()
            _ = try reader.array(flexible: flexible) { (reader: inout KafkaReader) throws(KafkaProtocolError) -> Int32 in
                let index = try reader.int32()
                _ = try reader.array(flexible: flexible) { (reader: inout KafkaReader) throws(KafkaProtocolError) -> Int32 in try reader.int32() }
                if flexible { try reader.skipTaggedFields() }
                return index
            }
            var configs: [String: String?] = [:]
            _ = try reader.array(flexible: flexible) { (reader: inout KafkaReader) throws(KafkaProtocolError) -> Void in
                let key = try reader.string(flexible: flexible)
                configs[key] = .some(try reader.nullableString(flexible: flexible))
                if flexible { try reader.skipTaggedFields() }
            }
            if flexible { try reader.skipTaggedFields() }
            return Topic(name: name, numPartitions: partitions, replicationFactor: replication, configs: configs)
        } ?? []
        let timeout = try reader.int32()
        let validateOnly = version >= 1 ? try reader.bool() : false
        if flexible { try reader.skipTaggedFields() }
        return CreateTopicsRequest(topics: topics, timeoutMs: timeout, validateOnly: validateOnly)
    }
}

public struct CreateTopicsResponse: Sendable, Equatable {
    public struct Topic: Sendable, Equatable {
        public var result: KafkaNamedResult
        public var numPartitions: Int32
        public var replicationFactor: Int16
        public init(result: KafkaNamedResult, numPartitions: Int32 = -1, replicationFactor: Int16 = -1) {
            self.result = result
            self.numPartitions = numPartitions
            self.replicationFactor = replicationFactor
        }
    }

    public var topics: [Topic]

    public init(topics: [Topic]) { self.topics = topics }

    public func write(into buffer: inout ByteBuffer, version: Int16) {
        let flexible = version >= 5
        if version >= 2 { buffer.writeInteger(Int32(0)) }  // throttle_time_ms
        buffer.writeKafkaArray(topics, flexible: flexible) { buffer, topic in
            buffer.writeKafkaString(topic.result.name, flexible: flexible)
            buffer.writeInteger(topic.result.errorCode.rawValue)
            if version >= 1 { buffer.writeKafkaString(topic.result.errorMessage, flexible: flexible) }
            if flexible {
                buffer.writeInteger(topic.numPartitions)
                buffer.writeInteger(topic.replicationFactor)
                buffer.writeKafkaArrayCount(nil, flexible: true)  // configs: not returned
                buffer.writeKafkaEmptyTaggedFields()
            }
        }
        if flexible { buffer.writeKafkaEmptyTaggedFields() }
    }
}

// MARK: DeleteTopics

/// `DeleteTopicsRequest` v0–v5 (flexible from v4).
public struct DeleteTopicsRequest: Sendable, Equatable {
    public var names: [String]
    public var timeoutMs: Int32

    public init(names: [String], timeoutMs: Int32 = 30_000) {
        self.names = names
        self.timeoutMs = timeoutMs
    }

    public static func read(_ reader: inout KafkaReader, version: Int16) throws(KafkaProtocolError) -> DeleteTopicsRequest {
        let flexible = version >= 4
        let names = try reader.array(flexible: flexible) { (reader: inout KafkaReader) throws(KafkaProtocolError) -> String in
            try reader.string(flexible: flexible)
        } ?? []
        let timeout = try reader.int32()
        if flexible { try reader.skipTaggedFields() }
        return DeleteTopicsRequest(names: names, timeoutMs: timeout)
    }
}

public struct DeleteTopicsResponse: Sendable, Equatable {
    public var results: [KafkaNamedResult]

    public init(results: [KafkaNamedResult]) { self.results = results }

    public func write(into buffer: inout ByteBuffer, version: Int16) {
        let flexible = version >= 4
        if version >= 1 { buffer.writeInteger(Int32(0)) }  // throttle_time_ms
        buffer.writeKafkaArray(results, flexible: flexible) { buffer, result in
            buffer.writeKafkaString(result.name, flexible: flexible)
            buffer.writeInteger(result.errorCode.rawValue)
            if version >= 5 { buffer.writeKafkaString(result.errorMessage, flexible: flexible) }
            if flexible { buffer.writeKafkaEmptyTaggedFields() }
        }
        if flexible { buffer.writeKafkaEmptyTaggedFields() }
    }
}

// MARK: CreatePartitions

/// `CreatePartitionsRequest` v0–v3 (flexible from v2): raise topics' partition counts.
public struct CreatePartitionsRequest: Sendable, Equatable {
    public var topics: [(name: String, count: Int32)]
    public var validateOnly: Bool

    public init(topics: [(name: String, count: Int32)], validateOnly: Bool = false) {
        self.topics = topics
        self.validateOnly = validateOnly
    }

    public static func == (lhs: CreatePartitionsRequest, rhs: CreatePartitionsRequest) -> Bool {
        lhs.topics.map(\.name) == rhs.topics.map(\.name) && lhs.topics.map(\.count) == rhs.topics.map(\.count)
            && lhs.validateOnly == rhs.validateOnly
    }

    public static func read(_ reader: inout KafkaReader, version: Int16) throws(KafkaProtocolError) -> CreatePartitionsRequest {
        let flexible = version >= 2
        let topics = try reader.array(flexible: flexible) { (reader: inout KafkaReader) throws(KafkaProtocolError) -> (name: String, count: Int32) in
            let name = try reader.string(flexible: flexible)
            let count = try reader.int32()
            _ = try reader.array(flexible: flexible) { (reader: inout KafkaReader) throws(KafkaProtocolError) -> Int in
                _ = try reader.array(flexible: flexible) { (reader: inout KafkaReader) throws(KafkaProtocolError) -> Int32 in try reader.int32() }
                if flexible { try reader.skipTaggedFields() }
                return 0
            }
            if flexible { try reader.skipTaggedFields() }
            return (name, count)
        } ?? []
        _ = try reader.int32()  // timeout_ms
        let validateOnly = try reader.bool()
        if flexible { try reader.skipTaggedFields() }
        return CreatePartitionsRequest(topics: topics, validateOnly: validateOnly)
    }
}

public struct CreatePartitionsResponse: Sendable, Equatable {
    public var results: [KafkaNamedResult]

    public init(results: [KafkaNamedResult]) { self.results = results }

    public func write(into buffer: inout ByteBuffer, version: Int16) {
        let flexible = version >= 2
        buffer.writeInteger(Int32(0))  // throttle_time_ms
        buffer.writeKafkaArray(results, flexible: flexible) { buffer, result in
            buffer.writeKafkaString(result.name, flexible: flexible)
            buffer.writeInteger(result.errorCode.rawValue)
            buffer.writeKafkaString(result.errorMessage, flexible: flexible)
            if flexible { buffer.writeKafkaEmptyTaggedFields() }
        }
        if flexible { buffer.writeKafkaEmptyTaggedFields() }
    }
}

// MARK: DescribeConfigs

/// `DescribeConfigsRequest` v0–v4 (flexible from v4). Resource types: 2 topic, 4 broker.
public struct DescribeConfigsRequest: Sendable, Equatable {
    public struct Resource: Sendable, Equatable {
        public var type: Int8
        public var name: String
        /// nil: every key.
        public var keys: [String]?
        public init(type: Int8, name: String, keys: [String]?) {
            self.type = type
            self.name = name
            self.keys = keys
        }
    }

    public var resources: [Resource]

    public init(resources: [Resource]) { self.resources = resources }

    public static func read(_ reader: inout KafkaReader, version: Int16) throws(KafkaProtocolError) -> DescribeConfigsRequest {
        let flexible = version >= 4
        let resources = try reader.array(flexible: flexible) { (reader: inout KafkaReader) throws(KafkaProtocolError) -> Resource in
            let type = try reader.int8()
            let name = try reader.string(flexible: flexible)
            let keys = try reader.array(flexible: flexible) { (reader: inout KafkaReader) throws(KafkaProtocolError) -> String in
                try reader.string(flexible: flexible)
            }
            if flexible { try reader.skipTaggedFields() }
            return Resource(type: type, name: name, keys: keys)
        } ?? []
        if version >= 1 { _ = try reader.bool() }  // include_synonyms
        if version >= 3 { _ = try reader.bool() }  // include_documentation
        if flexible { try reader.skipTaggedFields() }
        return DescribeConfigsRequest(resources: resources)
    }
}

public struct DescribeConfigsResponse: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var name: String
        public var value: String?
        public var isDefault: Bool
        public init(name: String, value: String?, isDefault: Bool) {
            self.name = name
            self.value = value
            self.isDefault = isDefault
        }
    }

    public struct Result: Sendable, Equatable {
        public var errorCode: KafkaErrorCode
        public var errorMessage: String?
        public var type: Int8
        public var name: String
        public var entries: [Entry]
        public init(errorCode: KafkaErrorCode = .none, errorMessage: String? = nil, type: Int8, name: String, entries: [Entry]) {
            self.errorCode = errorCode
            self.errorMessage = errorMessage
            self.type = type
            self.name = name
            self.entries = entries
        }
    }

    public var results: [Result]

    public init(results: [Result]) { self.results = results }

    public func write(into buffer: inout ByteBuffer, version: Int16) {
        let flexible = version >= 4
        buffer.writeInteger(Int32(0))  // throttle_time_ms
        buffer.writeKafkaArray(results, flexible: flexible) { buffer, result in
            buffer.writeInteger(result.errorCode.rawValue)
            buffer.writeKafkaString(result.errorMessage, flexible: flexible)
            buffer.writeInteger(result.type)
            buffer.writeKafkaString(result.name, flexible: flexible)
            buffer.writeKafkaArray(result.entries, flexible: flexible) { buffer, entry in
                buffer.writeKafkaString(entry.name, flexible: flexible)
                buffer.writeKafkaString(entry.value, flexible: flexible)
                buffer.writeKafkaBool(true)  // read_only
                if version == 0 {
                    buffer.writeKafkaBool(entry.isDefault)
                } else {
                    // config_source: 5 DEFAULT_CONFIG, 4 STATIC_BROKER_CONFIG.
                    buffer.writeInteger(Int8(entry.isDefault ? 5 : 4))
                }
                buffer.writeKafkaBool(false)  // is_sensitive
                if version >= 1 { buffer.writeKafkaArrayCount(0, flexible: flexible) }  // synonyms
                if version >= 3 {
                    buffer.writeInteger(Int8(0))  // config_type: unknown
                    buffer.writeKafkaString(nil, flexible: flexible)  // documentation
                }
                if flexible { buffer.writeKafkaEmptyTaggedFields() }
            }
            if flexible { buffer.writeKafkaEmptyTaggedFields() }
        }
        if flexible { buffer.writeKafkaEmptyTaggedFields() }
    }
}
