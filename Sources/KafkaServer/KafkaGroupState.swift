import KafkaProtocol

/// The limits and delays of the group coordinator (KoP's keys: `groupMinSessionTimeoutMs`,
/// `groupMaxSessionTimeoutMs`, `groupInitialRebalanceDelayMs`).
public struct KafkaGroupConfig: Sendable, Equatable {
    public var minSessionTimeoutMs: Int64 = 6_000
    public var maxSessionTimeoutMs: Int64 = 300_000
    /// How long a new (empty) group waits for more members before its first generation.
    public var initialRebalanceDelayMs: Int64 = 3_000

    public init() {}
}

/// One consumer group of Kafka's classic protocol, as a pure state machine: every event takes the
/// time (`nowMs`, monotonic) and returns the answers due to members whose JoinGroup or SyncGroup
/// was held. Nothing here waits, sleeps or stores: `KafkaGroupCoordinator` holds the pending
/// requests, runs the timers (`nextDeadlineMs`) and keeps the committed offsets.
///
/// Phases as Kafka's: Empty → PreparingRebalance (members join; the first generation of an
/// empty group waits `initialRebalanceDelayMs` for more) → CompletingRebalance (generation + 1,
/// every member has its JoinGroup answer, the leader with the members' metadata; everyone waits
/// for the leader's SyncGroup) → Stable (assignments handed out). A member that joins, changes its
/// protocols, leaves or misses its session timeout sends the group back to PreparingRebalance;
/// members that do not rejoin within the rebalance timeout are dropped.
public struct KafkaGroupState: Sendable {
    public enum Phase: String, Sendable {
        case empty = "Empty"
        case preparingRebalance = "PreparingRebalance"
        case completingRebalance = "CompletingRebalance"
        case stable = "Stable"
    }

    public struct Member: Sendable, Equatable {
        public let id: String
        public var groupInstanceID: String?
        public var clientID: String
        public var clientHost: String
        public var sessionTimeoutMs: Int64
        public var rebalanceTimeoutMs: Int64
        public var protocols: [KafkaGroupProtocol]
        public var assignment: [UInt8] = []
        public var lastHeardMs: Int64
        /// Its JoinGroup is held until the rebalance completes.
        public var awaitingJoin = false
        /// Its SyncGroup is held until the leader's arrives.
        public var awaitingSync = false

        /// Its metadata for the protocol the group chose.
        public func metadata(for protocolName: String?) -> [UInt8] {
            protocols.first { $0.name == protocolName }?.metadata ?? []
        }
    }

    /// An answer to a held request.
    public enum Reply: Sendable, Equatable {
        case join(memberID: String, JoinGroupResponse)
        case sync(memberID: String, SyncGroupResponse)
    }

    /// The outcome of a JoinGroup or SyncGroup: answered now, or held (the member's answer comes
    /// in `replies`, now or from a later event).
    public enum Outcome<Response: Sendable & Equatable>: Sendable, Equatable {
        case answer(Response)
        case held(memberID: String, replies: [Reply])
    }

    public let groupID: String
    public let config: KafkaGroupConfig
    public private(set) var phase: Phase = .empty
    public private(set) var generation: Int32 = 0
    public private(set) var protocolType: String?
    public private(set) var protocolName: String?
    public private(set) var leaderID: String?
    /// Members in the order they joined (the first is the leader of a new generation when the old
    /// leader is gone).
    public private(set) var members: [Member] = []
    /// When PreparingRebalance gives up on members that have not rejoined.
    public private(set) var rebalanceDeadlineMs: Int64?
    /// The first rebalance of an empty group: held until its deadline even when everyone joined.
    private var initialDelayStartMs: Int64?

    public init(groupID: String, config: KafkaGroupConfig) {
        self.groupID = groupID
        self.config = config
    }

    public func member(_ id: String) -> Member? { members.first { $0.id == id } }
    private func index(_ id: String) -> Int? { members.firstIndex { $0.id == id } }

    // MARK: JoinGroup

    public mutating func join(
        _ request: JoinGroupRequest, clientID: String, clientHost: String, newMemberID: String, nowMs: Int64
    ) -> Outcome<JoinGroupResponse> {
        func refuse(_ code: KafkaErrorCode) -> Outcome<JoinGroupResponse> {
            .answer(JoinGroupResponse(errorCode: code, memberID: request.memberID))
        }
        let session = Int64(request.sessionTimeoutMs)
        guard (config.minSessionTimeoutMs...config.maxSessionTimeoutMs).contains(session) else { return refuse(.invalidSessionTimeout) }
        guard !request.protocolType.isEmpty, !request.protocols.isEmpty else { return refuse(.inconsistentGroupProtocol) }
        if !members.isEmpty {
            let others = members.filter { $0.id != request.memberID }
            let common = Set(request.protocols.map(\.name)).intersection(candidates(among: others))
            if request.protocolType != protocolType || (!others.isEmpty && common.isEmpty) { return refuse(.inconsistentGroupProtocol) }
        }
        let rebalanceTimeout = request.rebalanceTimeoutMs > 0 ? Int64(request.rebalanceTimeoutMs) : session

        guard !request.memberID.isEmpty else {
            // A new member: it gets its id with the generation it joins.
            var member = Member(
                id: newMemberID, groupInstanceID: request.groupInstanceID, clientID: clientID, clientHost: clientHost,
                sessionTimeoutMs: session, rebalanceTimeoutMs: rebalanceTimeout, protocols: request.protocols, lastHeardMs: nowMs)
            member.awaitingJoin = true
            if members.isEmpty { protocolType = request.protocolType }
            members.append(member)
            var replies: [Reply] = []
            if phase == .preparingRebalance, let start = initialDelayStartMs {
                // Each new member of the first rebalance waits a little longer, within the timeout.
                rebalanceDeadlineMs = min(nowMs + config.initialRebalanceDelayMs, start + maxRebalanceTimeout)
            } else if phase != .preparingRebalance {
                replies = prepareRebalance(nowMs: nowMs)
            }
            return .held(memberID: newMemberID, replies: replies + completeJoinIfReady(nowMs: nowMs))
        }

        guard let at = index(request.memberID) else { return refuse(.unknownMemberID) }
        let unchanged = members[at].protocols == request.protocols
        members[at].lastHeardMs = nowMs
        members[at].clientHost = clientHost
        members[at].sessionTimeoutMs = session
        members[at].rebalanceTimeoutMs = rebalanceTimeout
        switch phase {
        case .completingRebalance where unchanged, .stable where unchanged && leaderID != request.memberID:
            // A retry of a join already answered: the same answer again.
            return .answer(joinResponse(for: members[at]))
        case .empty, .preparingRebalance, .completingRebalance, .stable:
            members[at].protocols = request.protocols
            members[at].awaitingJoin = true
            let replies = phase == .preparingRebalance ? [] : prepareRebalance(nowMs: nowMs)
            return .held(memberID: request.memberID, replies: replies + completeJoinIfReady(nowMs: nowMs))
        }
    }

    /// The protocols every member given supports.
    private func candidates(among members: [Member]) -> Set<String> {
        guard let first = members.first else { return [] }
        return members.dropFirst().reduce(into: Set(first.protocols.map(\.name))) { $0.formIntersection($1.protocols.map(\.name)) }
    }

    private var maxRebalanceTimeout: Int64 { members.map(\.rebalanceTimeoutMs).max() ?? config.initialRebalanceDelayMs }

    /// Back to PreparingRebalance: held SyncGroups learn that a new generation is coming.
    private mutating func prepareRebalance(nowMs: Int64) -> [Reply] {
        var replies: [Reply] = []
        if phase == .completingRebalance {
            for i in members.indices where members[i].awaitingSync {
                members[i].awaitingSync = false
                replies.append(.sync(memberID: members[i].id, SyncGroupResponse(errorCode: .rebalanceInProgress)))
            }
        }
        for i in members.indices { members[i].assignment = [] }
        if phase == .empty {
            initialDelayStartMs = nowMs
            rebalanceDeadlineMs = nowMs + min(config.initialRebalanceDelayMs, maxRebalanceTimeout)
        } else {
            initialDelayStartMs = nil
            rebalanceDeadlineMs = nowMs + maxRebalanceTimeout
        }
        phase = .preparingRebalance
        return replies
    }

    /// Completes the rebalance once every member has rejoined (outside the initial delay) or
    /// the deadline has passed (dropping those that did not): the next generation starts.
    private mutating func completeJoinIfReady(nowMs: Int64) -> [Reply] {
        guard phase == .preparingRebalance, let deadline = rebalanceDeadlineMs else { return [] }
        let everyoneJoined = members.allSatisfy(\.awaitingJoin)
        guard nowMs >= deadline || (everyoneJoined && initialDelayStartMs == nil) else { return [] }
        members.removeAll { !$0.awaitingJoin }
        rebalanceDeadlineMs = nil
        initialDelayStartMs = nil
        generation &+= 1
        guard !members.isEmpty else {
            phase = .empty
            protocolName = nil
            leaderID = nil
            return []
        }
        protocolName = selectProtocol()
        if leaderID.map({ index($0) == nil }) ?? true { leaderID = members[0].id }
        phase = .completingRebalance
        var replies: [Reply] = []
        for i in members.indices {
            members[i].awaitingJoin = false
            members[i].lastHeardMs = nowMs
            replies.append(.join(memberID: members[i].id, joinResponse(for: members[i])))
        }
        return replies
    }

    /// Each member votes for the first of its protocols that every member supports; the most
    /// votes win, ties going to the leader-to-be's preference.
    private func selectProtocol() -> String? {
        let common = candidates(among: members)
        var votes: [String: Int] = [:]
        for member in members {
            if let choice = member.protocols.first(where: { common.contains($0.name) }) { votes[choice.name, default: 0] += 1 }
        }
        var choice: String?
        for name in members[0].protocols.map(\.name) where common.contains(name) {
            if choice.map({ (votes[name] ?? 0) > (votes[$0] ?? 0) }) ?? true { choice = name }
        }
        return choice
    }

    private func joinResponse(for member: Member) -> JoinGroupResponse {
        let isLeader = member.id == leaderID
        return JoinGroupResponse(
            errorCode: .none, generationID: generation, protocolType: protocolType, protocolName: protocolName,
            leader: leaderID ?? "", memberID: member.id,
            members: isLeader
                ? members.map { KafkaGroupMemberMetadata(memberID: $0.id, groupInstanceID: $0.groupInstanceID, metadata: $0.metadata(for: protocolName)) }
                : [])
    }

    // MARK: SyncGroup

    public mutating func sync(_ request: SyncGroupRequest, nowMs: Int64) -> Outcome<SyncGroupResponse> {
        func refuse(_ code: KafkaErrorCode) -> Outcome<SyncGroupResponse> { .answer(SyncGroupResponse(errorCode: code)) }
        guard let at = index(request.memberID) else { return refuse(.unknownMemberID) }
        guard request.generationID == generation else { return refuse(.illegalGeneration) }
        if let type = request.protocolType, type != protocolType { return refuse(.inconsistentGroupProtocol) }
        if let name = request.protocolName, name != protocolName { return refuse(.inconsistentGroupProtocol) }
        members[at].lastHeardMs = nowMs
        switch phase {
        case .empty:
            return refuse(.unknownMemberID)
        case .preparingRebalance:
            return refuse(.rebalanceInProgress)
        case .stable:
            return .answer(SyncGroupResponse(
                errorCode: .none, protocolType: protocolType, protocolName: protocolName, assignment: members[at].assignment))
        case .completingRebalance:
            members[at].awaitingSync = true
            guard request.memberID == leaderID else { return .held(memberID: request.memberID, replies: []) }
            let assigned = Dictionary(request.assignments.map { ($0.memberID, $0.assignment) }, uniquingKeysWith: { _, last in last })
            for i in members.indices { members[i].assignment = assigned[members[i].id] ?? [] }
            phase = .stable
            var replies: [Reply] = []
            for i in members.indices where members[i].awaitingSync {
                members[i].awaitingSync = false
                replies.append(.sync(memberID: members[i].id, SyncGroupResponse(
                    errorCode: .none, protocolType: protocolType, protocolName: protocolName, assignment: members[i].assignment)))
            }
            return .held(memberID: request.memberID, replies: replies)
        }
    }

    // MARK: Heartbeat, LeaveGroup, OffsetCommit

    public mutating func heartbeat(_ request: HeartbeatRequest, nowMs: Int64) -> KafkaErrorCode {
        guard let at = index(request.memberID) else { return .unknownMemberID }
        guard request.generationID == generation else { return .illegalGeneration }
        members[at].lastHeardMs = nowMs
        return phase == .preparingRebalance ? .rebalanceInProgress : .none
    }

    /// Removes members (their held requests are answered UNKNOWN_MEMBER_ID); the rest rebalance.
    public mutating func leave(_ memberIDs: [String], nowMs: Int64) -> (results: [(memberID: String, errorCode: KafkaErrorCode)], replies: [Reply]) {
        var results: [(memberID: String, errorCode: KafkaErrorCode)] = []
        var removed: [Member] = []
        for id in memberIDs {
            guard let at = index(id) else {
                results.append((id, .unknownMemberID))
                continue
            }
            removed.append(members.remove(at: at))
            results.append((id, .none))
        }
        guard !removed.isEmpty else { return (results, []) }
        return (results, dropped(removed, nowMs: nowMs))
    }

    private mutating func dropped(_ removed: [Member], nowMs: Int64) -> [Reply] {
        var replies: [Reply] = []
        for member in removed {
            if member.awaitingJoin { replies.append(.join(memberID: member.id, JoinGroupResponse(errorCode: .unknownMemberID, memberID: member.id))) }
            if member.awaitingSync { replies.append(.sync(memberID: member.id, SyncGroupResponse(errorCode: .unknownMemberID))) }
        }
        if phase == .stable || phase == .completingRebalance { replies += prepareRebalance(nowMs: nowMs) }
        return replies + completeJoinIfReady(nowMs: nowMs)
    }

    /// Whether a member may commit offsets now: anyone while the group has no members and the
    /// commit carries no generation (-1), else a member of the current generation outside
    /// CompletingRebalance. A commit counts as a heartbeat.
    public mutating func admitCommit(generationID: Int32, memberID: String, nowMs: Int64) -> KafkaErrorCode {
        if generationID < 0, members.isEmpty { return .none }
        if phase == .completingRebalance { return .rebalanceInProgress }
        guard let at = index(memberID) else { return .unknownMemberID }
        guard generationID == generation else { return .illegalGeneration }
        members[at].lastHeardMs = nowMs
        return .none
    }

    // MARK: time

    /// Members whose session timed out leave; a rebalance past its deadline completes.
    public mutating func tick(nowMs: Int64) -> [Reply] {
        let expired = members.filter { !$0.awaitingJoin && !$0.awaitingSync && $0.lastHeardMs + $0.sessionTimeoutMs <= nowMs }
        if !expired.isEmpty {
            let ids = Set(expired.map(\.id))
            members.removeAll { ids.contains($0.id) }
            return dropped(expired, nowMs: nowMs)
        }
        return completeJoinIfReady(nowMs: nowMs)
    }

    /// When `tick` next has something to do; nil: nothing pending.
    public var nextDeadlineMs: Int64? {
        let sessions = members.filter { !$0.awaitingJoin && !$0.awaitingSync }.map { $0.lastHeardMs + $0.sessionTimeoutMs }
        return ([rebalanceDeadlineMs].compactMap { $0 } + sessions).min()
    }

    /// A group with no members and nothing pending (only its committed offsets remain).
    public var isIdle: Bool { members.isEmpty && phase == .empty }
}
