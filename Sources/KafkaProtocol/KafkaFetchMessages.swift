import NIOCore

/// `FetchRequest` v4–v11 (no flexible versions: v12 is the first). Fetch sessions (v7+, KIP-227)
/// are not kept: every request is answered as a full fetch and the response's `session_id` is 0,
/// which tells the client to send full requests.
public struct FetchRequest: Sendable, Equatable {
    public struct Partition: Sendable, Equatable {
        public var index: Int32
        public var fetchOffset: Int64
        public var maxBytes: Int32
        public init(index: Int32, fetchOffset: Int64, maxBytes: Int32) {
            self.index = index
            self.fetchOffset = fetchOffset
            self.maxBytes = maxBytes
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

    public var maxWaitMs: Int32
    public var minBytes: Int32
    public var maxBytes: Int32
    public var isolationLevel: Int8
    public var topics: [Topic]

    public init(maxWaitMs: Int32, minBytes: Int32, maxBytes: Int32, isolationLevel: Int8 = 0, topics: [Topic]) {
        self.maxWaitMs = maxWaitMs
        self.minBytes = minBytes
        self.maxBytes = maxBytes
        self.isolationLevel = isolationLevel
        self.topics = topics
    }

    public static func read(_ reader: inout KafkaReader, version: Int16) throws(KafkaProtocolError) -> FetchRequest {
        _ = try reader.int32()  // replica_id
        let maxWait = try reader.int32()
        let minBytes = try reader.int32()
        let maxBytes = try reader.int32()
        let isolation = try reader.int8()
        if version >= 7 {
            _ = try reader.int32()  // session_id
            _ = try reader.int32()  // session_epoch
        }
        let topics = try reader.array(flexible: false) { (reader: inout KafkaReader) throws(KafkaProtocolError) -> Topic in
            let name = try reader.string(flexible: false)
            let partitions = try reader.array(flexible: false) { (reader: inout KafkaReader) throws(KafkaProtocolError) -> Partition in
                let index = try reader.int32()
                if version >= 9 { _ = try reader.int32() }  // current_leader_epoch
                let offset = try reader.int64()
                if version >= 5 { _ = try reader.int64() }  // log_start_offset (followers only)
                return Partition(index: index, fetchOffset: offset, maxBytes: try reader.int32())
            } ?? []
            return Topic(name: name, partitions: partitions)
        } ?? []
        if version >= 7 {
            _ = try reader.array(flexible: false) { (reader: inout KafkaReader) throws(KafkaProtocolError) -> Void in
                _ = try reader.string(flexible: false)
                _ = try reader.array(flexible: false) { (reader: inout KafkaReader) throws(KafkaProtocolError) -> Int32 in try reader.int32() }
            }
        }
        if version >= 11 { _ = try reader.string(flexible: false) }  // rack_id
        return FetchRequest(maxWaitMs: maxWait, minBytes: minBytes, maxBytes: maxBytes, isolationLevel: isolation, topics: topics)
    }

    public func write(into buffer: inout ByteBuffer, version: Int16) {
        buffer.writeInteger(Int32(-1))
        buffer.writeInteger(maxWaitMs)
        buffer.writeInteger(minBytes)
        buffer.writeInteger(maxBytes)
        buffer.writeInteger(isolationLevel)
        if version >= 7 {
            buffer.writeInteger(Int32(0))
            buffer.writeInteger(Int32(-1))
        }
        buffer.writeKafkaArray(topics, flexible: false) { buffer, topic in
            buffer.writeKafkaString(topic.name, flexible: false)
            buffer.writeKafkaArray(topic.partitions, flexible: false) { buffer, partition in
                buffer.writeInteger(partition.index)
                if version >= 9 { buffer.writeInteger(Int32(-1)) }
                buffer.writeInteger(partition.fetchOffset)
                if version >= 5 { buffer.writeInteger(Int64(-1)) }
                buffer.writeInteger(partition.maxBytes)
            }
        }
        if version >= 7 { buffer.writeKafkaArrayCount(0, flexible: false) }
        if version >= 11 { buffer.writeKafkaString("", flexible: false) }
    }
}

/// `FetchResponse` v4–v11; each partition's `records` is record batches back to back.
public struct FetchResponse: Sendable, Equatable {
    public struct AbortedTransaction: Sendable, Equatable {
        public var producerID: Int64
        public var firstOffset: Int64
        public init(producerID: Int64, firstOffset: Int64) {
            self.producerID = producerID
            self.firstOffset = firstOffset
        }
    }

    public struct Partition: Sendable, Equatable {
        public var index: Int32
        public var errorCode: KafkaErrorCode
        public var highWatermark: Int64
        public var logStartOffset: Int64
        public var records: ByteBuffer?
        /// The last stable offset (read_committed reads stop there); nil: the high watermark.
        public var lastStableOffset: Int64?
        /// Aborted transactions in the records returned (read_committed): producer id, first offset.
        public var abortedTransactions: [AbortedTransaction] = []
        public init(index: Int32, errorCode: KafkaErrorCode, highWatermark: Int64, logStartOffset: Int64, records: ByteBuffer?) {
            self.index = index
            self.errorCode = errorCode
            self.highWatermark = highWatermark
            self.logStartOffset = logStartOffset
            self.records = records
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

    public var errorCode: KafkaErrorCode = .none
    public var topics: [Topic]

    public init(errorCode: KafkaErrorCode = .none, topics: [Topic]) {
        self.errorCode = errorCode
        self.topics = topics
    }

    public func write(into buffer: inout ByteBuffer, version: Int16) {
        buffer.writeInteger(Int32(0))  // throttle_time_ms
        if version >= 7 {
            buffer.writeInteger(errorCode.rawValue)
            buffer.writeInteger(Int32(0))  // session_id: no fetch session
        }
        buffer.writeKafkaArray(topics, flexible: false) { buffer, topic in
            buffer.writeKafkaString(topic.name, flexible: false)
            buffer.writeKafkaArray(topic.partitions, flexible: false) { buffer, partition in
                buffer.writeInteger(partition.index)
                buffer.writeInteger(partition.errorCode.rawValue)
                buffer.writeInteger(partition.highWatermark)
                buffer.writeInteger(partition.lastStableOffset ?? partition.highWatermark)
                if version >= 5 { buffer.writeInteger(partition.logStartOffset) }
                buffer.writeKafkaArray(partition.abortedTransactions, flexible: false) { buffer, aborted in
                    buffer.writeInteger(aborted.producerID)
                    buffer.writeInteger(aborted.firstOffset)
                }
                if version >= 11 { buffer.writeInteger(Int32(-1)) }  // preferred_read_replica
                if let records = partition.records {
                    buffer.writeInteger(Int32(records.readableBytes))
                    buffer.writeImmutableBuffer(records)
                } else {
                    buffer.writeInteger(Int32(-1))
                }
            }
        }
    }
}

/// `ListOffsetsRequest` v1–v5 (v6 is the first flexible one). Timestamp -1: the latest offset
/// (the next one to be written), -2: the earliest; else the first offset written at or after it.
public struct ListOffsetsRequest: Sendable, Equatable {
    public static let latest: Int64 = -1
    public static let earliest: Int64 = -2

    public struct Partition: Sendable, Equatable {
        public var index: Int32
        public var timestamp: Int64
        public init(index: Int32, timestamp: Int64) {
            self.index = index
            self.timestamp = timestamp
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

    public var isolationLevel: Int8
    public var topics: [Topic]

    public init(isolationLevel: Int8 = 0, topics: [Topic]) {
        self.isolationLevel = isolationLevel
        self.topics = topics
    }

    public static func read(_ reader: inout KafkaReader, version: Int16) throws(KafkaProtocolError) -> ListOffsetsRequest {
        _ = try reader.int32()  // replica_id
        let isolation = version >= 2 ? try reader.int8() : 0
        let topics = try reader.array(flexible: false) { (reader: inout KafkaReader) throws(KafkaProtocolError) -> Topic in
            let name = try reader.string(flexible: false)
            let partitions = try reader.array(flexible: false) { (reader: inout KafkaReader) throws(KafkaProtocolError) -> Partition in
                let index = try reader.int32()
                if version >= 4 { _ = try reader.int32() }  // current_leader_epoch
                return Partition(index: index, timestamp: try reader.int64())
            } ?? []
            return Topic(name: name, partitions: partitions)
        } ?? []
        return ListOffsetsRequest(isolationLevel: isolation, topics: topics)
    }

    public func write(into buffer: inout ByteBuffer, version: Int16) {
        buffer.writeInteger(Int32(-1))
        if version >= 2 { buffer.writeInteger(isolationLevel) }
        buffer.writeKafkaArray(topics, flexible: false) { buffer, topic in
            buffer.writeKafkaString(topic.name, flexible: false)
            buffer.writeKafkaArray(topic.partitions, flexible: false) { buffer, partition in
                buffer.writeInteger(partition.index)
                if version >= 4 { buffer.writeInteger(Int32(-1)) }
                buffer.writeInteger(partition.timestamp)
            }
        }
    }
}

/// `ListOffsetsResponse` v1–v5.
public struct ListOffsetsResponse: Sendable, Equatable {
    public struct Partition: Sendable, Equatable {
        public var index: Int32
        public var errorCode: KafkaErrorCode
        public var timestamp: Int64
        public var offset: Int64
        public init(index: Int32, errorCode: KafkaErrorCode, timestamp: Int64 = -1, offset: Int64 = -1) {
            self.index = index
            self.errorCode = errorCode
            self.timestamp = timestamp
            self.offset = offset
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
        if version >= 2 { buffer.writeInteger(Int32(0)) }  // throttle_time_ms
        buffer.writeKafkaArray(topics, flexible: false) { buffer, topic in
            buffer.writeKafkaString(topic.name, flexible: false)
            buffer.writeKafkaArray(topic.partitions, flexible: false) { buffer, partition in
                buffer.writeInteger(partition.index)
                buffer.writeInteger(partition.errorCode.rawValue)
                buffer.writeInteger(partition.timestamp)
                buffer.writeInteger(partition.offset)
                if version >= 4 { buffer.writeInteger(Int32(-1)) }  // leader_epoch
            }
        }
    }
}
