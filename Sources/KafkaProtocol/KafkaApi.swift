import NIOCore

/// Kafka's API keys (the `apiKey` of each `*Request.json`).
public enum KafkaApiKey: Int16, Sendable, CaseIterable {
    case produce = 0
    case fetch = 1
    case listOffsets = 2
    case metadata = 3
    case offsetCommit = 8
    case offsetFetch = 9
    case findCoordinator = 10
    case joinGroup = 11
    case heartbeat = 12
    case leaveGroup = 13
    case syncGroup = 14
    case describeGroups = 15
    case listGroups = 16
    case apiVersions = 18
    case createTopics = 19
    case deleteTopics = 20
    case initProducerId = 22
    case addPartitionsToTxn = 24
    case addOffsetsToTxn = 25
    case endTxn = 26
    case txnOffsetCommit = 28
    case deleteGroups = 42
    case describeConfigs = 32
    case createPartitions = 37
}

/// Kafka's error codes (`Errors.java`), those the endpoint answers with.
public enum KafkaErrorCode: Int16, Sendable {
    case unknownServerError = -1
    case none = 0
    case offsetOutOfRange = 1
    case corruptMessage = 2
    case unknownTopicOrPartition = 3
    case leaderNotAvailable = 5
    case notLeaderOrFollower = 6
    case requestTimedOut = 7
    case messageTooLarge = 10
    case offsetMetadataTooLarge = 12
    case coordinatorLoadInProgress = 14
    case coordinatorNotAvailable = 15
    case notCoordinator = 16
    case invalidTopicException = 17
    case illegalGeneration = 22
    case inconsistentGroupProtocol = 23
    case invalidGroupID = 24
    case unknownMemberID = 25
    case invalidSessionTimeout = 26
    case rebalanceInProgress = 27
    case groupAuthorizationFailed = 30
    case topicAuthorizationFailed = 29
    case unsupportedVersion = 35
    case topicAlreadyExists = 36
    case invalidPartitions = 37
    case invalidRequest = 42
    case outOfOrderSequenceNumber = 45
    case duplicateSequenceNumber = 46
    case invalidProducerEpoch = 47
    case invalidTxnState = 48
    case invalidProducerIDMapping = 49
    case invalidTransactionTimeout = 50
    case concurrentTransactions = 51
    case policyViolation = 44
    case operationNotAttempted = 55
    case kafkaStorageError = 56
    case nonEmptyGroup = 68
    case groupIDNotFound = 69
    case invalidRecord = 87
    case unstableOffsetCommit = 88
    case producerFenced = 90
}

/// The versions of one API this endpoint serves, and the first flexible one (tagged fields,
/// compact strings and arrays, request header v2 / response header v1).
public struct KafkaApiSupport: Sendable, Equatable {
    public var key: KafkaApiKey
    public var minVersion: Int16
    public var maxVersion: Int16
    public var firstFlexibleVersion: Int16

    public init(_ key: KafkaApiKey, _ versions: ClosedRange<Int16>, flexibleFrom: Int16) {
        self.key = key
        minVersion = versions.lowerBound
        maxVersion = versions.upperBound
        firstFlexibleVersion = flexibleFrom
    }

    public func supports(_ version: Int16) -> Bool { (minVersion...maxVersion).contains(version) }
    public func isFlexible(_ version: Int16) -> Bool { version >= firstFlexibleVersion }
}

/// What the endpoint serves today (ApiVersions advertises exactly this).
public enum KafkaApis {
    public static let supported: [KafkaApiSupport] = [
        KafkaApiSupport(.produce, 3...9, flexibleFrom: 9),
        KafkaApiSupport(.fetch, 4...11, flexibleFrom: 12),
        KafkaApiSupport(.listOffsets, 1...5, flexibleFrom: 6),
        KafkaApiSupport(.metadata, 0...9, flexibleFrom: 9),
        KafkaApiSupport(.apiVersions, 0...3, flexibleFrom: 3),
        KafkaApiSupport(.initProducerId, 0...4, flexibleFrom: 2),
        KafkaApiSupport(.addPartitionsToTxn, 0...3, flexibleFrom: 3),
        KafkaApiSupport(.addOffsetsToTxn, 0...3, flexibleFrom: 3),
        KafkaApiSupport(.endTxn, 0...3, flexibleFrom: 3),
        KafkaApiSupport(.txnOffsetCommit, 0...3, flexibleFrom: 3),
        KafkaApiSupport(.findCoordinator, 0...3, flexibleFrom: 3),
        KafkaApiSupport(.joinGroup, 0...9, flexibleFrom: 6),
        KafkaApiSupport(.syncGroup, 0...5, flexibleFrom: 4),
        KafkaApiSupport(.heartbeat, 0...4, flexibleFrom: 4),
        KafkaApiSupport(.leaveGroup, 0...5, flexibleFrom: 4),
        KafkaApiSupport(.offsetCommit, 0...8, flexibleFrom: 8),
        KafkaApiSupport(.offsetFetch, 1...7, flexibleFrom: 6),
        KafkaApiSupport(.describeGroups, 0...5, flexibleFrom: 5),
        KafkaApiSupport(.listGroups, 0...4, flexibleFrom: 3),
        KafkaApiSupport(.deleteGroups, 0...2, flexibleFrom: 2),
        KafkaApiSupport(.createTopics, 0...6, flexibleFrom: 5),
        KafkaApiSupport(.deleteTopics, 0...5, flexibleFrom: 4),
        KafkaApiSupport(.createPartitions, 0...3, flexibleFrom: 2),
        KafkaApiSupport(.describeConfigs, 0...4, flexibleFrom: 4),
    ]

    public static func support(_ apiKey: Int16) -> KafkaApiSupport? {
        supported.first { $0.key.rawValue == apiKey }
    }
}

/// A request's header (`RequestHeader.json`): v1 (`client_id` as an int16-length string) for
/// non-flexible versions, v2 (v1 + tagged fields) for flexible ones.
public struct KafkaRequestHeader: Sendable, Equatable {
    public var apiKey: Int16
    public var apiVersion: Int16
    public var correlationID: Int32
    public var clientID: String?

    public init(apiKey: Int16, apiVersion: Int16, correlationID: Int32, clientID: String?) {
        self.apiKey = apiKey
        self.apiVersion = apiVersion
        self.correlationID = correlationID
        self.clientID = clientID
    }

    /// The fixed part every version starts with: enough to answer even an unknown API.
    public static func readPrefix(_ reader: inout KafkaReader) throws(KafkaProtocolError) -> KafkaRequestHeader {
        KafkaRequestHeader(apiKey: try reader.int16(), apiVersion: try reader.int16(), correlationID: try reader.int32(), clientID: nil)
    }

    /// The rest of the header after `readPrefix`: `client_id`, then tagged fields when flexible.
    public mutating func readRest(_ reader: inout KafkaReader, flexible: Bool) throws(KafkaProtocolError) {
        clientID = try reader.nullableString(flexible: false)
        if flexible { try reader.skipTaggedFields() }
    }
}

/// A response frame: `[int32 size][int32 correlation_id][tagged fields (header v1)][body]`.
/// ApiVersions always answers with header v0 (clients parse it before they know the versions).
public enum KafkaResponseFrame {
    public static func make(
        correlationID: Int32, flexibleHeader: Bool, allocator: ByteBufferAllocator, body: (inout ByteBuffer) -> Void
    ) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 256)
        buffer.writeInteger(Int32(0))  // size, set below
        buffer.writeInteger(correlationID)
        if flexibleHeader { buffer.writeKafkaEmptyTaggedFields() }
        body(&buffer)
        buffer.setInteger(Int32(buffer.readableBytes - 4), at: buffer.readerIndex)
        return buffer
    }
}
