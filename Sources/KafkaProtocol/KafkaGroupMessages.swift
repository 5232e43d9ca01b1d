import NIOCore

// The consumer-group APIs (`FindCoordinator`, `JoinGroup`, `SyncGroup`, `Heartbeat`,
// `LeaveGroup`, `OffsetCommit`, `OffsetFetch`, `DescribeGroups`, `ListGroups`), field for field
// as in Kafka's `clients/src/main/resources/common/message/*.json`. Requests are read,
// responses written; a flexible version ends every structure with its tagged fields.

extension KafkaReader {
    /// `bytes` (int32 length) or, flexible, `compact_bytes`; null reads as empty.
    public mutating func byteArray(flexible: Bool) throws(KafkaProtocolError) -> [UInt8] {
        let length: Int
        if flexible {
            let raw = try unsignedVarint()
            length = raw == 0 ? 0 : Int(raw) - 1
        } else {
            length = max(Int(try int32()), 0)
        }
        guard length <= remaining else { throw KafkaProtocolError("\(length) bytes run past the request") }
        var slice = try bytes(count: length)
        return slice.readBytes(length: length) ?? []
    }

    fileprivate mutating func endStruct(_ flexible: Bool) throws(KafkaProtocolError) {
        if flexible { try skipTaggedFields() }
    }
}

extension ByteBuffer {
    /// `bytes` or, flexible, `compact_bytes`.
    public mutating func writeKafkaBytes(_ bytes: [UInt8], flexible: Bool) {
        if flexible { writeKafkaUnsignedVarint(UInt32(bytes.count + 1)) } else { writeInteger(Int32(bytes.count)) }
        writeBytes(bytes)
    }

    fileprivate mutating func endStruct(_ flexible: Bool) {
        if flexible { writeKafkaEmptyTaggedFields() }
    }
}

// MARK: FindCoordinator

/// `FindCoordinatorRequest` v0–v3 (flexible from v3): the coordinator of a group (key type 0) or
/// of a transactional id (key type 1).
public struct FindCoordinatorRequest: Sendable, Equatable {
    public var key: String
    public var keyType: Int8

    public init(key: String, keyType: Int8 = 0) {
        self.key = key
        self.keyType = keyType
    }

    public static func read(_ reader: inout KafkaReader, version: Int16) throws(KafkaProtocolError) -> FindCoordinatorRequest {
        let flexible = version >= 3
        let key = try reader.string(flexible: flexible)
        let keyType = version >= 1 ? try reader.int8() : 0
        try reader.endStruct(flexible)
        return FindCoordinatorRequest(key: key, keyType: keyType)
    }
}

public struct FindCoordinatorResponse: Sendable, Equatable {
    public var errorCode: KafkaErrorCode
    public var errorMessage: String?
    public var nodeID: Int32
    public var host: String
    public var port: Int32

    public init(errorCode: KafkaErrorCode = .none, errorMessage: String? = nil, nodeID: Int32, host: String, port: Int32) {
        self.errorCode = errorCode
        self.errorMessage = errorMessage
        self.nodeID = nodeID
        self.host = host
        self.port = port
    }

    public func write(into buffer: inout ByteBuffer, version: Int16) {
        let flexible = version >= 3
        if version >= 1 { buffer.writeInteger(Int32(0)) }  // throttle_time_ms
        buffer.writeInteger(errorCode.rawValue)
        if version >= 1 { buffer.writeKafkaString(errorMessage, flexible: flexible) }
        buffer.writeInteger(nodeID)
        buffer.writeKafkaString(host, flexible: flexible)
        buffer.writeInteger(port)
        buffer.endStruct(flexible)
    }
}

// MARK: JoinGroup

/// One protocol a joining member supports (an assignor: `range`, `roundrobin`,
/// `cooperative-sticky`, ...) with its opaque metadata (subscribed topics, owned partitions).
public struct KafkaGroupProtocol: Sendable, Equatable {
    public var name: String
    public var metadata: [UInt8]
    public init(name: String, metadata: [UInt8]) {
        self.name = name
        self.metadata = metadata
    }
}

/// `JoinGroupRequest` v0–v9 (flexible from v6).
public struct JoinGroupRequest: Sendable, Equatable {
    public var groupID: String
    public var sessionTimeoutMs: Int32
    /// v1+; v0 uses the session timeout.
    public var rebalanceTimeoutMs: Int32
    public var memberID: String
    public var groupInstanceID: String?
    public var protocolType: String
    public var protocols: [KafkaGroupProtocol]
    public var reason: String?

    public init(
        groupID: String, sessionTimeoutMs: Int32, rebalanceTimeoutMs: Int32, memberID: String, groupInstanceID: String? = nil,
        protocolType: String, protocols: [KafkaGroupProtocol], reason: String? = nil
    ) {
        self.groupID = groupID
        self.sessionTimeoutMs = sessionTimeoutMs
        self.rebalanceTimeoutMs = rebalanceTimeoutMs
        self.memberID = memberID
        self.groupInstanceID = groupInstanceID
        self.protocolType = protocolType
        self.protocols = protocols
        self.reason = reason
    }

    public static func read(_ reader: inout KafkaReader, version: Int16) throws(KafkaProtocolError) -> JoinGroupRequest {
        let flexible = version >= 6
        let groupID = try reader.string(flexible: flexible)
        let session = try reader.int32()
        let rebalance = version >= 1 ? try reader.int32() : session
        let memberID = try reader.string(flexible: flexible)
        let instance = version >= 5 ? try reader.nullableString(flexible: flexible) : nil
        let protocolType = try reader.string(flexible: flexible)
        let protocols = try reader.array(flexible: flexible) { (reader: inout KafkaReader) throws(KafkaProtocolError) -> KafkaGroupProtocol in
            let name = try reader.string(flexible: flexible)
            let metadata = try reader.byteArray(flexible: flexible)
            try reader.endStruct(flexible)
            return KafkaGroupProtocol(name: name, metadata: metadata)
        } ?? []
        let reason = version >= 8 ? try reader.nullableString(flexible: flexible) : nil
        try reader.endStruct(flexible)
        return JoinGroupRequest(
            groupID: groupID, sessionTimeoutMs: session, rebalanceTimeoutMs: rebalance, memberID: memberID,
            groupInstanceID: instance, protocolType: protocolType, protocols: protocols, reason: reason)
    }
}

/// A member as the leader sees it in its JoinGroup response.
public struct KafkaGroupMemberMetadata: Sendable, Equatable {
    public var memberID: String
    public var groupInstanceID: String?
    public var metadata: [UInt8]
    public init(memberID: String, groupInstanceID: String?, metadata: [UInt8]) {
        self.memberID = memberID
        self.groupInstanceID = groupInstanceID
        self.metadata = metadata
    }
}

public struct JoinGroupResponse: Sendable, Equatable {
    public var errorCode: KafkaErrorCode
    public var generationID: Int32
    public var protocolType: String?
    public var protocolName: String?
    public var leader: String
    public var memberID: String
    /// Filled for the leader only.
    public var members: [KafkaGroupMemberMetadata]

    public init(
        errorCode: KafkaErrorCode, generationID: Int32 = -1, protocolType: String? = nil, protocolName: String? = nil,
        leader: String = "", memberID: String, members: [KafkaGroupMemberMetadata] = []
    ) {
        self.errorCode = errorCode
        self.generationID = generationID
        self.protocolType = protocolType
        self.protocolName = protocolName
        self.leader = leader
        self.memberID = memberID
        self.members = members
    }

    public func write(into buffer: inout ByteBuffer, version: Int16) {
        let flexible = version >= 6
        if version >= 2 { buffer.writeInteger(Int32(0)) }  // throttle_time_ms
        buffer.writeInteger(errorCode.rawValue)
        buffer.writeInteger(generationID)
        if version >= 7 { buffer.writeKafkaString(protocolType, flexible: flexible) }
        // Not nullable before v7: an empty name there.
        buffer.writeKafkaString(version >= 7 ? protocolName : (protocolName ?? ""), flexible: flexible)
        buffer.writeKafkaString(leader, flexible: flexible)
        if version >= 9 { buffer.writeKafkaBool(false) }  // skip_assignment
        buffer.writeKafkaString(memberID, flexible: flexible)
        buffer.writeKafkaArray(members, flexible: flexible) { buffer, member in
            buffer.writeKafkaString(member.memberID, flexible: flexible)
            if version >= 5 { buffer.writeKafkaString(member.groupInstanceID, flexible: flexible) }
            buffer.writeKafkaBytes(member.metadata, flexible: flexible)
            buffer.endStruct(flexible)
        }
        buffer.endStruct(flexible)
    }
}

// MARK: SyncGroup

/// `SyncGroupRequest` v0–v5 (flexible from v4): the leader sends every member's assignment, the
/// others none.
public struct SyncGroupRequest: Sendable, Equatable {
    public var groupID: String
    public var generationID: Int32
    public var memberID: String
    public var groupInstanceID: String?
    public var protocolType: String?
    public var protocolName: String?
    public var assignments: [(memberID: String, assignment: [UInt8])]

    public init(
        groupID: String, generationID: Int32, memberID: String, groupInstanceID: String? = nil, protocolType: String? = nil,
        protocolName: String? = nil, assignments: [(memberID: String, assignment: [UInt8])]
    ) {
        self.groupID = groupID
        self.generationID = generationID
        self.memberID = memberID
        self.groupInstanceID = groupInstanceID
        self.protocolType = protocolType
        self.protocolName = protocolName
        self.assignments = assignments
    }

    public static func == (lhs: SyncGroupRequest, rhs: SyncGroupRequest) -> Bool {
        lhs.groupID == rhs.groupID && lhs.generationID == rhs.generationID && lhs.memberID == rhs.memberID
            && lhs.groupInstanceID == rhs.groupInstanceID && lhs.protocolType == rhs.protocolType && lhs.protocolName == rhs.protocolName
            && lhs.assignments.map(\.memberID) == rhs.assignments.map(\.memberID)
            && lhs.assignments.map(\.assignment) == rhs.assignments.map(\.assignment)
    }

    public static func read(_ reader: inout KafkaReader, version: Int16) throws(KafkaProtocolError) -> SyncGroupRequest {
        let flexible = version >= 4
        let groupID = try reader.string(flexible: flexible)
        let generation = try reader.int32()
        let memberID = try reader.string(flexible: flexible)
        let instance = version >= 3 ? try reader.nullableString(flexible: flexible) : nil
        let protocolType = version >= 5 ? try reader.nullableString(flexible: flexible) : nil
        let protocolName = version >= 5 ? try reader.nullableString(flexible: flexible) : nil
        let assignments = try reader.array(flexible: flexible) { (reader: inout KafkaReader) throws(KafkaProtocolError) -> (memberID: String, assignment: [UInt8]) in
            let member = try reader.string(flexible: flexible)
            let assignment = try reader.byteArray(flexible: flexible)
            try reader.endStruct(flexible)
            return (memberID: member, assignment: assignment)
        } ?? []
        try reader.endStruct(flexible)
        return SyncGroupRequest(
            groupID: groupID, generationID: generation, memberID: memberID, groupInstanceID: instance, protocolType: protocolType,
            protocolName: protocolName, assignments: assignments)
    }
}

public struct SyncGroupResponse: Sendable, Equatable {
    public var errorCode: KafkaErrorCode
    public var protocolType: String?
    public var protocolName: String?
    public var assignment: [UInt8]

    public init(errorCode: KafkaErrorCode, protocolType: String? = nil, protocolName: String? = nil, assignment: [UInt8] = []) {
        self.errorCode = errorCode
        self.protocolType = protocolType
        self.protocolName = protocolName
        self.assignment = assignment
    }

    public func write(into buffer: inout ByteBuffer, version: Int16) {
        let flexible = version >= 4
        if version >= 1 { buffer.writeInteger(Int32(0)) }  // throttle_time_ms
        buffer.writeInteger(errorCode.rawValue)
        if version >= 5 {
            buffer.writeKafkaString(protocolType, flexible: flexible)
            buffer.writeKafkaString(protocolName, flexible: flexible)
        }
        buffer.writeKafkaBytes(assignment, flexible: flexible)
        buffer.endStruct(flexible)
    }
}

// MARK: Heartbeat

/// `HeartbeatRequest` v0–v4 (flexible from v4).
public struct HeartbeatRequest: Sendable, Equatable {
    public var groupID: String
    public var generationID: Int32
    public var memberID: String
    public var groupInstanceID: String?

    public init(groupID: String, generationID: Int32, memberID: String, groupInstanceID: String? = nil) {
        self.groupID = groupID
        self.generationID = generationID
        self.memberID = memberID
        self.groupInstanceID = groupInstanceID
    }

    public static func read(_ reader: inout KafkaReader, version: Int16) throws(KafkaProtocolError) -> HeartbeatRequest {
        let flexible = version >= 4
        let groupID = try reader.string(flexible: flexible)
        let generation = try reader.int32()
        let memberID = try reader.string(flexible: flexible)
        let instance = version >= 3 ? try reader.nullableString(flexible: flexible) : nil
        try reader.endStruct(flexible)
        return HeartbeatRequest(groupID: groupID, generationID: generation, memberID: memberID, groupInstanceID: instance)
    }
}

/// The response of Heartbeat (and the shape of any error-only response): throttle time (v1+) and
/// an error code.
public struct KafkaErrorOnlyResponse: Sendable, Equatable {
    public var errorCode: KafkaErrorCode
    public var throttleFromVersion: Int16
    public var flexibleFromVersion: Int16

    public init(errorCode: KafkaErrorCode, throttleFromVersion: Int16 = 1, flexibleFromVersion: Int16) {
        self.errorCode = errorCode
        self.throttleFromVersion = throttleFromVersion
        self.flexibleFromVersion = flexibleFromVersion
    }

    public func write(into buffer: inout ByteBuffer, version: Int16) {
        if version >= throttleFromVersion { buffer.writeInteger(Int32(0)) }
        buffer.writeInteger(errorCode.rawValue)
        buffer.endStruct(version >= flexibleFromVersion)
    }
}

// MARK: LeaveGroup

/// `LeaveGroupRequest` v0–v5 (flexible from v4; v3+ leaves several members at once).
public struct LeaveGroupRequest: Sendable, Equatable {
    public var groupID: String
    public var members: [String]

    public init(groupID: String, members: [String]) {
        self.groupID = groupID
        self.members = members
    }

    public static func read(_ reader: inout KafkaReader, version: Int16) throws(KafkaProtocolError) -> LeaveGroupRequest {
        let flexible = version >= 4
        let groupID = try reader.string(flexible: flexible)
        var members: [String]
        if version >= 3 {
            members = try reader.array(flexible: flexible) { (reader: inout KafkaReader) throws(KafkaProtocolError) -> String in
                let member = try reader.string(flexible: flexible)
                _ = try reader.nullableString(flexible: flexible)  // group_instance_id
                if version >= 5 { _ = try reader.nullableString(flexible: flexible) }  // reason
                try reader.endStruct(flexible)
                return member
            } ?? []
        } else {
            members = [try reader.string(flexible: flexible)]
        }
        try reader.endStruct(flexible)
        return LeaveGroupRequest(groupID: groupID, members: members)
    }
}

public struct LeaveGroupResponse: Sendable, Equatable {
    public var errorCode: KafkaErrorCode
    /// v3+: each member's outcome.
    public var members: [(memberID: String, errorCode: KafkaErrorCode)]

    public init(errorCode: KafkaErrorCode, members: [(memberID: String, errorCode: KafkaErrorCode)] = []) {
        self.errorCode = errorCode
        self.members = members
    }

    public static func == (lhs: LeaveGroupResponse, rhs: LeaveGroupResponse) -> Bool {
        lhs.errorCode == rhs.errorCode && lhs.members.map(\.memberID) == rhs.members.map(\.memberID)
            && lhs.members.map(\.errorCode) == rhs.members.map(\.errorCode)
    }

    public func write(into buffer: inout ByteBuffer, version: Int16) {
        let flexible = version >= 4
        if version >= 1 { buffer.writeInteger(Int32(0)) }  // throttle_time_ms
        buffer.writeInteger(errorCode.rawValue)
        if version >= 3 {
            buffer.writeKafkaArray(members, flexible: flexible) { buffer, member in
                buffer.writeKafkaString(member.memberID, flexible: flexible)
                buffer.writeKafkaString(nil, flexible: flexible)  // group_instance_id
                buffer.writeInteger(member.errorCode.rawValue)
                buffer.endStruct(flexible)
            }
        }
        buffer.endStruct(flexible)
    }
}

// MARK: OffsetCommit

/// A partition's committed position: the next offset to read and the client's metadata string.
public struct KafkaCommittedOffset: Sendable, Equatable, Codable {
    public var offset: Int64
    public var metadata: String?
    public init(offset: Int64, metadata: String?) {
        self.offset = offset
        self.metadata = metadata
    }
}

/// Per topic, per partition: Kafka's nested topic → partitions layout of commits and fetches.
public struct KafkaTopicPartitions<Value: Sendable & Equatable>: Sendable, Equatable {
    public var topic: String
    public var partitions: [(index: Int32, value: Value)]

    public init(topic: String, partitions: [(index: Int32, value: Value)]) {
        self.topic = topic
        self.partitions = partitions
    }

    public static func == (lhs: KafkaTopicPartitions, rhs: KafkaTopicPartitions) -> Bool {
        lhs.topic == rhs.topic && lhs.partitions.map(\.index) == rhs.partitions.map(\.index)
            && lhs.partitions.map(\.value) == rhs.partitions.map(\.value)
    }
}

/// `OffsetCommitRequest` v0–v8 (flexible from v8).
public struct OffsetCommitRequest: Sendable, Equatable {
    public var groupID: String
    /// -1 (and an empty member id): a commit from outside the group's generations.
    public var generationID: Int32
    public var memberID: String
    public var topics: [KafkaTopicPartitions<KafkaCommittedOffset>]

    public init(groupID: String, generationID: Int32, memberID: String, topics: [KafkaTopicPartitions<KafkaCommittedOffset>]) {
        self.groupID = groupID
        self.generationID = generationID
        self.memberID = memberID
        self.topics = topics
    }

    public static func read(_ reader: inout KafkaReader, version: Int16) throws(KafkaProtocolError) -> OffsetCommitRequest {
        let flexible = version >= 8
        let groupID = try reader.string(flexible: flexible)
        var generation: Int32 = -1
        var memberID = ""
        if version >= 1 {
            generation = try reader.int32()
            memberID = try reader.string(flexible: flexible)
        }
        if version >= 7 { _ = try reader.nullableString(flexible: flexible) }  // group_instance_id
        if (2...4).contains(version) { _ = try reader.int64() }  // retention_time_ms
        let topics = try reader.array(flexible: flexible) { (reader: inout KafkaReader) throws(KafkaProtocolError) -> KafkaTopicPartitions<KafkaCommittedOffset> in
            let name = try reader.string(flexible: flexible)
            let partitions = try reader.array(flexible: flexible) { (reader: inout KafkaReader) throws(KafkaProtocolError) -> (index: Int32, value: KafkaCommittedOffset) in
                let index = try reader.int32()
                let offset = try reader.int64()
                if version >= 6 { _ = try reader.int32() }  // committed_leader_epoch
                if version == 1 { _ = try reader.int64() }  // commit_timestamp
                let metadata = try reader.nullableString(flexible: flexible)
                try reader.endStruct(flexible)
                return (index: index, value: KafkaCommittedOffset(offset: offset, metadata: metadata))
            } ?? []
            try reader.endStruct(flexible)
            return KafkaTopicPartitions(topic: name, partitions: partitions)
        } ?? []
        try reader.endStruct(flexible)
        return OffsetCommitRequest(groupID: groupID, generationID: generation, memberID: memberID, topics: topics)
    }
}

public struct OffsetCommitResponse: Sendable, Equatable {
    public var topics: [KafkaTopicPartitions<KafkaErrorCode>]

    public init(topics: [KafkaTopicPartitions<KafkaErrorCode>]) { self.topics = topics }

    public func write(into buffer: inout ByteBuffer, version: Int16) {
        let flexible = version >= 8
        if version >= 3 { buffer.writeInteger(Int32(0)) }  // throttle_time_ms
        buffer.writeKafkaArray(topics, flexible: flexible) { buffer, topic in
            buffer.writeKafkaString(topic.topic, flexible: flexible)
            buffer.writeKafkaArray(topic.partitions, flexible: flexible) { buffer, partition in
                buffer.writeInteger(partition.index)
                buffer.writeInteger(partition.value.rawValue)
                buffer.endStruct(flexible)
            }
            buffer.endStruct(flexible)
        }
        buffer.endStruct(flexible)
    }
}

// MARK: OffsetFetch

/// `OffsetFetchRequest` v1–v7 (flexible from v6; v2+ may ask for every partition with a null list).
public struct OffsetFetchRequest: Sendable, Equatable {
    public var groupID: String
    /// nil: every partition the group has committed.
    public var topics: [KafkaTopicPartitions<Bool>]?
    /// v7+ (`require_stable`, read_committed consumers): a partition with offsets pending in an open
    /// transaction answers UNSTABLE_OFFSET_COMMIT (the client asks again).
    public var requireStable = false

    public init(groupID: String, topics: [KafkaTopicPartitions<Bool>]?, requireStable: Bool = false) {
        self.groupID = groupID
        self.topics = topics
        self.requireStable = requireStable
    }

    public static func read(_ reader: inout KafkaReader, version: Int16) throws(KafkaProtocolError) -> OffsetFetchRequest {
        let flexible = version >= 6
        let groupID = try reader.string(flexible: flexible)
        let topics = try reader.array(flexible: flexible) { (reader: inout KafkaReader) throws(KafkaProtocolError) -> KafkaTopicPartitions<Bool> in
            let name = try reader.string(flexible: flexible)
            let indexes = try reader.array(flexible: flexible) { (reader: inout KafkaReader) throws(KafkaProtocolError) -> (index: Int32, value: Bool) in
                (index: try reader.int32(), value: true)
            } ?? []
            try reader.endStruct(flexible)
            return KafkaTopicPartitions(topic: name, partitions: indexes)
        }
        let requireStable = version >= 7 ? try reader.bool() : false
        try reader.endStruct(flexible)
        return OffsetFetchRequest(groupID: groupID, topics: topics, requireStable: requireStable)
    }
}

public struct OffsetFetchResponse: Sendable, Equatable {
    public struct Partition: Sendable, Equatable {
        /// -1: nothing committed.
        public var offset: Int64
        public var metadata: String?
        public var errorCode: KafkaErrorCode
        public init(offset: Int64, metadata: String?, errorCode: KafkaErrorCode = .none) {
            self.offset = offset
            self.metadata = metadata
            self.errorCode = errorCode
        }
    }

    public var topics: [KafkaTopicPartitions<Partition>]
    public var errorCode: KafkaErrorCode

    public init(topics: [KafkaTopicPartitions<Partition>], errorCode: KafkaErrorCode = .none) {
        self.topics = topics
        self.errorCode = errorCode
    }

    public func write(into buffer: inout ByteBuffer, version: Int16) {
        let flexible = version >= 6
        if version >= 3 { buffer.writeInteger(Int32(0)) }  // throttle_time_ms
        buffer.writeKafkaArray(topics, flexible: flexible) { buffer, topic in
            buffer.writeKafkaString(topic.topic, flexible: flexible)
            buffer.writeKafkaArray(topic.partitions, flexible: flexible) { buffer, partition in
                buffer.writeInteger(partition.index)
                buffer.writeInteger(partition.value.offset)
                if version >= 5 { buffer.writeInteger(Int32(-1)) }  // committed_leader_epoch
                buffer.writeKafkaString(partition.value.metadata, flexible: flexible)
                buffer.writeInteger(partition.value.errorCode.rawValue)
                buffer.endStruct(flexible)
            }
            buffer.endStruct(flexible)
        }
        if version >= 2 { buffer.writeInteger(errorCode.rawValue) }
        buffer.endStruct(flexible)
    }
}

// MARK: ListGroups / DescribeGroups

/// `ListGroupsRequest` v0–v4 (flexible from v3; v4 filters by state).
public struct ListGroupsRequest: Sendable, Equatable {
    public var statesFilter: [String]

    public init(statesFilter: [String] = []) { self.statesFilter = statesFilter }

    public static func read(_ reader: inout KafkaReader, version: Int16) throws(KafkaProtocolError) -> ListGroupsRequest {
        let flexible = version >= 3
        var states: [String] = []
        if version >= 4 {
            states = try reader.array(flexible: flexible) { (reader: inout KafkaReader) throws(KafkaProtocolError) -> String in
                try reader.string(flexible: flexible)
            } ?? []
        }
        try reader.endStruct(flexible)
        return ListGroupsRequest(statesFilter: states)
    }
}

public struct ListGroupsResponse: Sendable, Equatable {
    public struct Group: Sendable, Equatable {
        public var groupID: String
        public var protocolType: String
        public var state: String
        public init(groupID: String, protocolType: String, state: String) {
            self.groupID = groupID
            self.protocolType = protocolType
            self.state = state
        }
    }

    public var groups: [Group]

    public init(groups: [Group]) { self.groups = groups }

    public func write(into buffer: inout ByteBuffer, version: Int16) {
        let flexible = version >= 3
        if version >= 1 { buffer.writeInteger(Int32(0)) }  // throttle_time_ms
        buffer.writeInteger(KafkaErrorCode.none.rawValue)
        buffer.writeKafkaArray(groups, flexible: flexible) { buffer, group in
            buffer.writeKafkaString(group.groupID, flexible: flexible)
            buffer.writeKafkaString(group.protocolType, flexible: flexible)
            if version >= 4 { buffer.writeKafkaString(group.state, flexible: flexible) }
            buffer.endStruct(flexible)
        }
        buffer.endStruct(flexible)
    }
}

/// `DescribeGroupsRequest` v0–v5 (flexible from v5).
public struct DescribeGroupsRequest: Sendable, Equatable {
    public var groups: [String]

    public init(groups: [String]) { self.groups = groups }

    public static func read(_ reader: inout KafkaReader, version: Int16) throws(KafkaProtocolError) -> DescribeGroupsRequest {
        let flexible = version >= 5
        let groups = try reader.array(flexible: flexible) { (reader: inout KafkaReader) throws(KafkaProtocolError) -> String in
            try reader.string(flexible: flexible)
        } ?? []
        if version >= 3 { _ = try reader.bool() }  // include_authorized_operations
        try reader.endStruct(flexible)
        return DescribeGroupsRequest(groups: groups)
    }
}

public struct DescribeGroupsResponse: Sendable, Equatable {
    public struct Member: Sendable, Equatable {
        public var memberID: String
        public var groupInstanceID: String?
        public var clientID: String
        public var clientHost: String
        public var metadata: [UInt8]
        public var assignment: [UInt8]
        public init(memberID: String, groupInstanceID: String?, clientID: String, clientHost: String, metadata: [UInt8], assignment: [UInt8]) {
            self.memberID = memberID
            self.groupInstanceID = groupInstanceID
            self.clientID = clientID
            self.clientHost = clientHost
            self.metadata = metadata
            self.assignment = assignment
        }
    }

    public struct Group: Sendable, Equatable {
        public var errorCode: KafkaErrorCode
        public var groupID: String
        /// Kafka's names: `Empty`, `PreparingRebalance`, `CompletingRebalance`, `Stable`, `Dead`.
        public var state: String
        public var protocolType: String
        public var protocolData: String
        public var members: [Member]
        public init(errorCode: KafkaErrorCode = .none, groupID: String, state: String, protocolType: String, protocolData: String, members: [Member]) {
            self.errorCode = errorCode
            self.groupID = groupID
            self.state = state
            self.protocolType = protocolType
            self.protocolData = protocolData
            self.members = members
        }
    }

    public var groups: [Group]

    public init(groups: [Group]) { self.groups = groups }

    public func write(into buffer: inout ByteBuffer, version: Int16) {
        let flexible = version >= 5
        if version >= 1 { buffer.writeInteger(Int32(0)) }  // throttle_time_ms
        buffer.writeKafkaArray(groups, flexible: flexible) { buffer, group in
            buffer.writeInteger(group.errorCode.rawValue)
            buffer.writeKafkaString(group.groupID, flexible: flexible)
            buffer.writeKafkaString(group.state, flexible: flexible)
            buffer.writeKafkaString(group.protocolType, flexible: flexible)
            buffer.writeKafkaString(group.protocolData, flexible: flexible)
            buffer.writeKafkaArray(group.members, flexible: flexible) { buffer, member in
                buffer.writeKafkaString(member.memberID, flexible: flexible)
                if version >= 4 { buffer.writeKafkaString(member.groupInstanceID, flexible: flexible) }
                buffer.writeKafkaString(member.clientID, flexible: flexible)
                buffer.writeKafkaString(member.clientHost, flexible: flexible)
                buffer.writeKafkaBytes(member.metadata, flexible: flexible)
                buffer.writeKafkaBytes(member.assignment, flexible: flexible)
                buffer.endStruct(flexible)
            }
            if version >= 3 { buffer.writeInteger(Int32.min) }  // authorized_operations: not asked for
            buffer.endStruct(flexible)
        }
        buffer.endStruct(flexible)
    }
}

// MARK: DeleteGroups

/// `DeleteGroupsRequest` v0–v2 (flexible from v2): forgets groups without members, offsets and all.
public struct DeleteGroupsRequest: Sendable, Equatable {
    public var groups: [String]

    public init(groups: [String]) { self.groups = groups }

    public static func read(_ reader: inout KafkaReader, version: Int16) throws(KafkaProtocolError) -> DeleteGroupsRequest {
        let flexible = version >= 2
        let groups = try reader.array(flexible: flexible) { (reader: inout KafkaReader) throws(KafkaProtocolError) -> String in
            try reader.string(flexible: flexible)
        } ?? []
        try reader.endStruct(flexible)
        return DeleteGroupsRequest(groups: groups)
    }
}

public struct DeleteGroupsResponse: Sendable, Equatable {
    public var results: [KafkaNamedResult]

    public init(results: [KafkaNamedResult]) { self.results = results }

    public func write(into buffer: inout ByteBuffer, version: Int16) {
        let flexible = version >= 2
        buffer.writeInteger(Int32(0))  // throttle_time_ms
        buffer.writeKafkaArray(results, flexible: flexible) { buffer, result in
            buffer.writeKafkaString(result.name, flexible: flexible)
            buffer.writeInteger(result.errorCode.rawValue)
            buffer.endStruct(flexible)
        }
        buffer.endStruct(flexible)
    }
}

