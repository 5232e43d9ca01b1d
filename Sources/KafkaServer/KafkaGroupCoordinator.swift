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

/// The coordinator cannot do what was asked; the message says what to do.
struct KafkaCoordinatorError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The group coordinator of this broker: the groups' state machines (`KafkaGroupState`), the
/// JoinGroup / SyncGroup requests they hold, one timer per group for session and rebalance
/// deadlines (a sleeping task, re-armed only when a deadline comes earlier), and the committed
/// offsets, kept durably in the metadata store (so every broker of a cluster reads the same;
/// nothing of them is cached here).
actor KafkaGroupCoordinator {
    let config: KafkaGroupConfig
    private let metadata: any MetadataStore
    private let logger: Logger
    private let epoch = ContinuousClock.now

    private var groups: [String: KafkaGroupState] = [:]
    private var joinWaiters: [String: [String: CheckedContinuation<JoinGroupResponse, Never>]] = [:]
    private var syncWaiters: [String: [String: CheckedContinuation<SyncGroupResponse, Never>]] = [:]
    private var timers: [String: (deadline: Int64, task: Task<Void, Never>)] = [:]

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
                    metadata: $0.metadata(for: group.protocolName), assignment: $0.assignment)
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

    /// The group's committed offsets, as stored: read at each OffsetFetch, so a coordinator that
    /// took the group over from another broker reads what that one committed.
    func committedOffsets(_ groupID: String) async throws -> KafkaGroupOffsets {
        try await storedOffsets(groupID).offsets
    }

    private func storedOffsets(_ groupID: String) async throws -> (offsets: KafkaGroupOffsets, version: Int64) {
        guard let stored = try await metadata.get(MetadataKeys.kafkaGroupOffsets(groupID)) else { return (KafkaGroupOffsets(), -1) }
        do {
            return (try JSONDecoder().decode(KafkaGroupOffsets.self, from: Data(stored.value)), stored.version)
        } catch {
            throw KafkaCoordinatorError("the stored offsets of group '\(groupID)' do not decode (\(error)): delete the group to start over")
        }
    }

    /// Records commits and returns once they are durable: a compare-and-set of the group's
    /// document, retried when another commit landed in between.
    func commit(_ groupID: String, _ commits: [(topic: String, partition: Int32, offset: KafkaCommittedOffset)]) async throws {
        for _ in 0..<16 {
            var (current, version) = try await storedOffsets(groupID)
            for commit in commits { current.set(topic: commit.topic, partition: commit.partition, commit.offset) }
            do {
                try await metadata.put(
                    MetadataKeys.kafkaGroupOffsets(groupID), value: Array(try JSONEncoder().encode(current)), expectedVersion: version)
                return
            } catch MetadataStoreError.badVersion {
                continue
            }
        }
        throw KafkaCoordinatorError("the offsets of group '\(groupID)' changed under 16 attempts to commit in a row: commit again")
    }

    /// Drops what this broker holds of a group it no longer coordinates (another broker took its
    /// bundle): held requests are told NOT_COORDINATOR and look the coordinator up again.
    func forget(_ groupID: String) {
        guard groups.removeValue(forKey: groupID) != nil else { return }
        timers.removeValue(forKey: groupID)?.task.cancel()
        for (id, waiter) in joinWaiters.removeValue(forKey: groupID) ?? [:] {
            waiter.resume(returning: JoinGroupResponse(errorCode: .notCoordinator, memberID: id))
        }
        for (_, waiter) in syncWaiters.removeValue(forKey: groupID) ?? [:] {
            waiter.resume(returning: SyncGroupResponse(errorCode: .notCoordinator))
        }
        logger.info("kafka.group.moved-away", metadata: ["group": "\(groupID)"])
    }

    /// Forgets a group's offsets (DeleteGroups; a group that has members is refused).
    func delete(_ groupID: String) async throws -> KafkaErrorCode {
        if let group = groups[groupID], !group.isIdle { return .nonEmptyGroup }
        try await metadata.delete(MetadataKeys.kafkaGroupOffsets(groupID), expectedVersion: nil)
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
