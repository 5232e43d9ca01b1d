import Foundation
import KafkaProtocol
import Logging
import Metadata

/// A group's committed offsets as stored (`MetadataKeys.kafkaGroupOffsets`): per Pulsar topic
/// (the partitioned topic's name, or the topic itself when it is not partitioned), per Kafka
/// partition index.
struct KafkaGroupOffsets: Codable, Sendable, Equatable {
    var topics: [String: [String: KafkaCommittedOffset]] = [:]

    func offset(topic: String, partition: Int32) -> KafkaCommittedOffset? { topics[topic]?[String(partition)] }

    mutating func set(topic: String, partition: Int32, _ offset: KafkaCommittedOffset) {
        topics[topic, default: [:]][String(partition)] = offset
    }
}

/// The group coordinator of this broker: the groups' state machines (`KafkaGroupState`), the
/// JoinGroup / SyncGroup requests they hold, one timer per group for session and rebalance
/// deadlines (a sleeping task, re-armed only when a deadline comes earlier), and the committed
/// offsets, kept durably in the metadata store (so every broker of a cluster reads the same).
actor KafkaGroupCoordinator {
    let config: KafkaGroupConfig
    private let metadata: any MetadataStore
    private let logger: Logger
    private let epoch = ContinuousClock.now

    private var groups: [String: KafkaGroupState] = [:]
    private var joinWaiters: [String: [String: CheckedContinuation<JoinGroupResponse, Never>]] = [:]
    private var syncWaiters: [String: [String: CheckedContinuation<SyncGroupResponse, Never>]] = [:]
    private var timers: [String: (deadline: Int64, task: Task<Void, Never>)] = [:]

    private var offsets: [String: KafkaGroupOffsets] = [:]
    private var loading: [String: Task<KafkaGroupOffsets, any Error>] = [:]
    /// Per group: the latest change to its offsets, the latest stored, whether a write is under
    /// way, and the commits waiting for theirs. One write at a time, each of the whole document,
    /// so a later state never lands before an earlier one.
    private var revision: [String: Int] = [:]
    private var storedRevision: [String: Int] = [:]
    private var writing: Set<String> = []
    private var storeWaiters: [String: [(revision: Int, continuation: CheckedContinuation<Void, any Error>)]] = [:]

    init(config: KafkaGroupConfig, metadata: any MetadataStore, logger: Logger) {
        self.config = config
        self.metadata = metadata
        self.logger = logger
    }

    private var nowMs: Int64 {
        let elapsed = epoch.duration(to: .now).components
        return elapsed.seconds * 1000 + elapsed.attoseconds / 1_000_000_000_000_000
    }

    private func state(_ groupID: String) -> KafkaGroupState {
        groups[groupID] ?? KafkaGroupState(groupID: groupID, config: config)
    }

    // MARK: membership

    func join(_ request: JoinGroupRequest, clientID: String, clientHost: String) async -> JoinGroupResponse {
        let groupID = request.groupID
        var group = state(groupID)
        let newID = (clientID.isEmpty ? "member" : clientID) + "-" + UUID().uuidString.lowercased()
        let outcome = group.join(request, clientID: clientID, clientHost: clientHost, newMemberID: newID, nowMs: nowMs)
        groups[groupID] = group
        switch outcome {
        case .answer(let response):
            armTimer(groupID)
            return response
        case .held(let memberID, let replies):
            logger.debug("kafka.group.join", metadata: ["group": "\(groupID)", "member": "\(memberID)", "phase": "\(group.phase.rawValue)"])
            return await withCheckedContinuation { continuation in
                // A member joining again while its earlier join is held: the earlier one is moot.
                joinWaiters[groupID, default: [:]].updateValue(continuation, forKey: memberID)?
                    .resume(returning: JoinGroupResponse(errorCode: .rebalanceInProgress, memberID: memberID))
                deliver(groupID, replies)
                armTimer(groupID)
            }
        }
    }

    func sync(_ request: SyncGroupRequest) async -> SyncGroupResponse {
        let groupID = request.groupID
        var group = state(groupID)
        let outcome = group.sync(request, nowMs: nowMs)
        groups[groupID] = group
        switch outcome {
        case .answer(let response):
            return response
        case .held(let memberID, let replies):
            return await withCheckedContinuation { continuation in
                syncWaiters[groupID, default: [:]].updateValue(continuation, forKey: memberID)?
                    .resume(returning: SyncGroupResponse(errorCode: .rebalanceInProgress))
                deliver(groupID, replies)
                armTimer(groupID)
                if group.phase == .stable {
                    logger.info("kafka.group.stable", metadata: [
                        "group": "\(groupID)", "generation": "\(group.generation)", "members": "\(group.members.count)",
                        "protocol": "\(group.protocolName ?? "")",
                    ])
                }
            }
        }
    }

    func heartbeat(_ request: HeartbeatRequest) -> KafkaErrorCode {
        guard var group = groups[request.groupID] else { return .unknownMemberID }
        let code = group.heartbeat(request, nowMs: nowMs)
        groups[request.groupID] = group
        return code
    }

    func leave(_ request: LeaveGroupRequest) -> [(memberID: String, errorCode: KafkaErrorCode)] {
        guard var group = groups[request.groupID] else { return request.members.map { ($0, .unknownMemberID) } }
        let (results, replies) = group.leave(request.members, nowMs: nowMs)
        groups[request.groupID] = group
        deliver(request.groupID, replies)
        armTimer(request.groupID)
        return results
    }

    private func deliver(_ groupID: String, _ replies: [KafkaGroupState.Reply]) {
        for reply in replies {
            switch reply {
            case .join(let memberID, let response):
                joinWaiters[groupID]?.removeValue(forKey: memberID)?.resume(returning: response)
            case .sync(let memberID, let response):
                syncWaiters[groupID]?.removeValue(forKey: memberID)?.resume(returning: response)
            }
        }
    }

    /// Arms the group's timer for its next deadline, unless one at or before it is armed.
    private func armTimer(_ groupID: String) {
        guard let deadline = groups[groupID]?.nextDeadlineMs else {
            timers.removeValue(forKey: groupID)?.task.cancel()
            return
        }
        if let armed = timers[groupID], armed.deadline <= deadline { return }
        timers[groupID]?.task.cancel()
        let delay = max(deadline - nowMs, 0)
        let task = Task { [weak self] in
            try? await Task.sleep(for: .milliseconds(delay))
            guard !Task.isCancelled else { return }
            await self?.timerFired(groupID, deadline: deadline)
        }
        timers[groupID] = (deadline, task)
    }

    private func timerFired(_ groupID: String, deadline: Int64) {
        guard timers[groupID]?.deadline == deadline else { return }
        timers[groupID] = nil
        guard var group = groups[groupID] else { return }
        let before = group.members.map(\.id)
        let replies = group.tick(nowMs: nowMs)
        groups[groupID] = group
        let gone = Set(before).subtracting(group.members.map(\.id))
        if !gone.isEmpty {
            logger.info("kafka.group.members-expired", metadata: ["group": "\(groupID)", "members": "\(gone.sorted())"])
        }
        deliver(groupID, replies)
        armTimer(groupID)
    }

    // MARK: describe

    func describe(_ groupID: String) -> DescribeGroupsResponse.Group {
        guard let group = groups[groupID] else {
            return DescribeGroupsResponse.Group(groupID: groupID, state: "Dead", protocolType: "", protocolData: "", members: [])
        }
        return DescribeGroupsResponse.Group(
            groupID: groupID, state: group.phase.rawValue, protocolType: group.protocolType ?? "",
            protocolData: group.phase == .stable ? group.protocolName ?? "" : "",
            members: group.members.map {
                DescribeGroupsResponse.Member(
                    memberID: $0.id, groupInstanceID: $0.groupInstanceID, clientID: $0.clientID, clientHost: $0.clientHost,
                    metadata: $0.protocols.first { p in p.name == group.protocolName }?.metadata ?? [], assignment: $0.assignment)
            })
    }

    /// The groups with members here, and those with committed offsets in the metadata store.
    func list() async -> [ListGroupsResponse.Group] {
        var listed: [String: ListGroupsResponse.Group] = [:]
        if let keys = try? await metadata.list(prefix: MetadataKeys.kafkaGroupOffsetsPrefix) {
            for key in keys {
                let encoded = String(key.dropFirst(MetadataKeys.kafkaGroupOffsetsPrefix.count))
                guard let id = encoded.removingPercentEncoding else { continue }
                listed[id] = ListGroupsResponse.Group(groupID: id, protocolType: "consumer", state: "Empty")
            }
        }
        for (id, group) in groups {
            listed[id] = ListGroupsResponse.Group(groupID: id, protocolType: group.protocolType ?? "consumer", state: group.phase.rawValue)
        }
        return listed.values.sorted { $0.groupID < $1.groupID }
    }

    // MARK: offsets

    /// Whether a commit from this member and generation is accepted now.
    func admitCommit(groupID: String, generationID: Int32, memberID: String) -> KafkaErrorCode {
        var group = state(groupID)
        let code = group.admitCommit(generationID: generationID, memberID: memberID, nowMs: nowMs)
        if groups[groupID] != nil { groups[groupID] = group }
        return code
    }

    func committedOffsets(_ groupID: String) async throws -> KafkaGroupOffsets {
        if let known = offsets[groupID] { return known }
        if let task = loading[groupID] { return try await task.value }
        let metadata = self.metadata
        let task = Task {
            guard let stored = try await metadata.get(MetadataKeys.kafkaGroupOffsets(groupID)) else { return KafkaGroupOffsets() }
            return try JSONDecoder().decode(KafkaGroupOffsets.self, from: Data(stored.value))
        }
        loading[groupID] = task
        defer { loading[groupID] = nil }
        let loaded = try await task.value
        if offsets[groupID] == nil { offsets[groupID] = loaded }
        return offsets[groupID] ?? loaded
    }

    /// Records commits and returns once they are durable.
    func commit(_ groupID: String, _ commits: [(topic: String, partition: Int32, offset: KafkaCommittedOffset)]) async throws {
        var current = try await committedOffsets(groupID)
        for commit in commits { current.set(topic: commit.topic, partition: commit.partition, commit.offset) }
        offsets[groupID] = current
        let mine = revision[groupID, default: 0] + 1
        revision[groupID] = mine
        if writing.contains(groupID) {
            try await withCheckedThrowingContinuation { storeWaiters[groupID, default: []].append((mine, $0)) }
            return
        }
        writing.insert(groupID)
        defer { writing.remove(groupID) }
        while true {
            let target = revision[groupID, default: 0]
            let document = try JSONEncoder().encode(offsets[groupID] ?? KafkaGroupOffsets())
            do {
                try await metadata.put(MetadataKeys.kafkaGroupOffsets(groupID), value: Array(document), expectedVersion: nil)
            } catch {
                let waiting = storeWaiters.removeValue(forKey: groupID) ?? []
                for waiter in waiting { waiter.continuation.resume(throwing: error) }
                throw error
            }
            storedRevision[groupID] = target
            var still: [(revision: Int, continuation: CheckedContinuation<Void, any Error>)] = []
            for waiter in storeWaiters.removeValue(forKey: groupID) ?? [] {
                if waiter.revision <= target { waiter.continuation.resume() } else { still.append(waiter) }
            }
            if !still.isEmpty { storeWaiters[groupID] = still }
            if revision[groupID, default: 0] == target { return }
        }
    }

    /// Forgets a group's offsets (DeleteGroups; a group that has members is refused).
    func delete(_ groupID: String) async throws -> KafkaErrorCode {
        if let group = groups[groupID], !group.isIdle { return .nonEmptyGroup }
        try await metadata.delete(MetadataKeys.kafkaGroupOffsets(groupID), expectedVersion: nil)
        offsets[groupID] = nil
        groups[groupID] = nil
        return .none
    }

    /// Ends every timer (the broker is stopping); held requests are answered as a coordinator
    /// that is going away would: COORDINATOR_NOT_AVAILABLE.
    func shutdown() {
        for (_, timer) in timers { timer.task.cancel() }
        timers.removeAll()
        for (_, waiters) in joinWaiters {
            for (id, waiter) in waiters { waiter.resume(returning: JoinGroupResponse(errorCode: .coordinatorNotAvailable, memberID: id)) }
        }
        for (_, waiters) in syncWaiters {
            for (_, waiter) in waiters { waiter.resume(returning: SyncGroupResponse(errorCode: .coordinatorNotAvailable)) }
        }
        joinWaiters.removeAll()
        syncWaiters.removeAll()
    }
}
