import KafkaProtocol
import Testing

@testable import KafkaServer

/// The consumer-group coordinator as a state machine: generations, leaders, held joins and syncs,
/// heartbeats in each phase, leaving, session expiry, rebalance timeouts and offset-commit admission.
@Suite struct GroupStateTests {
    var config: KafkaGroupConfig {
        var config = KafkaGroupConfig()
        config.initialRebalanceDelayMs = 100
        config.minSessionTimeoutMs = 1_000
        return config
    }

    func joinRequest(_ member: String = "", protocols: [String] = ["range", "roundrobin"], session: Int32 = 10_000, rebalance: Int32 = 30_000)
        -> JoinGroupRequest
    {
        JoinGroupRequest(
            groupID: "g", sessionTimeoutMs: session, rebalanceTimeoutMs: rebalance, memberID: member, protocolType: "consumer",
            protocols: protocols.map { KafkaGroupProtocol(name: $0, metadata: Array($0.utf8)) })
    }

    func joins(_ replies: [KafkaGroupState.Reply]) -> [String: JoinGroupResponse] {
        var found: [String: JoinGroupResponse] = [:]
        for case .join(let id, let response) in replies { found[id] = response }
        return found
    }

    func syncs(_ replies: [KafkaGroupState.Reply]) -> [String: SyncGroupResponse] {
        var found: [String: SyncGroupResponse] = [:]
        for case .sync(let id, let response) in replies { found[id] = response }
        return found
    }

    func held<R>(_ outcome: KafkaGroupState.Outcome<R>) -> (String, [KafkaGroupState.Reply]) {
        guard case .held(let id, let replies) = outcome else {
            Issue.record("expected the request to be held, got \(outcome)")
            return ("", [])
        }
        return (id, replies)
    }

    /// Two members through the initial delay into a stable generation 1.
    func stableGroupOfTwo() -> (KafkaGroupState, leader: String, follower: String) {
        var group = KafkaGroupState(groupID: "g", config: config)
        let (a, r1) = held(group.join(joinRequest(), clientID: "c", clientHost: "/h", newMemberID: "a", nowMs: 0))
        #expect(r1.isEmpty)  // the initial delay holds the first member
        let (b, r2) = held(group.join(joinRequest(protocols: ["roundrobin", "range"]), clientID: "c", clientHost: "/h", newMemberID: "b", nowMs: 50))
        #expect(r2.isEmpty)
        #expect(group.phase == .preparingRebalance)
        let answered = joins(group.tick(nowMs: 150))
        #expect(group.phase == .completingRebalance)
        #expect(group.generation == 1)
        #expect(answered[a]?.leader == a)
        #expect(answered[a]?.members.map(\.memberID) == [a, b])  // the leader sees everyone
        #expect(answered[b]?.members.isEmpty == true)
        _ = held(group.sync(SyncGroupRequest(groupID: "g", generationID: 1, memberID: b, assignments: []), nowMs: 160))
        let (_, replies) = held(group.sync(
            SyncGroupRequest(groupID: "g", generationID: 1, memberID: a, assignments: [(a, [1]), (b, [2])]), nowMs: 170))
        let synced = syncs(replies)
        #expect(synced[a]?.assignment == [1])
        #expect(synced[b]?.assignment == [2])
        #expect(group.phase == .stable)
        return (group, a, b)
    }

    @Test func firstGenerationWaitsForTheInitialDelayThenHandsOutAssignments() {
        let (group, _, _) = stableGroupOfTwo()
        // Votes tie (range first for a, roundrobin first for b): the leader's preference wins.
        #expect(group.protocolName == "range")
        #expect(group.nextDeadlineMs == Int64(10_160))  // b's session: its last word was its sync at 160
    }

    @Test func aNewMemberRebalancesAndOldMembersRejoin() {
        var (group, a, b) = stableGroupOfTwo()
        let (c, replies) = held(group.join(joinRequest(), clientID: "c", clientHost: "/h", newMemberID: "c", nowMs: 1_000))
        #expect(replies.isEmpty)
        #expect(group.phase == .preparingRebalance)
        // The others learn it from their heartbeats.
        #expect(group.heartbeat(HeartbeatRequest(groupID: "g", generationID: 1, memberID: a), nowMs: 1_100) == .rebalanceInProgress)
        _ = held(group.join(joinRequest(a), clientID: "c", clientHost: "/h", newMemberID: "x", nowMs: 1_200))
        let (_, done) = held(group.join(joinRequest(b), clientID: "c", clientHost: "/h", newMemberID: "x", nowMs: 1_300))
        let answered = joins(done)
        #expect(Set(answered.keys) == [a, b, c])
        #expect(answered.values.allSatisfy { $0.generationID == 2 && $0.leader == a })
        // A heartbeat of the old generation is refused.
        #expect(group.heartbeat(HeartbeatRequest(groupID: "g", generationID: 1, memberID: a), nowMs: 1_400) == .illegalGeneration)
        #expect(group.heartbeat(HeartbeatRequest(groupID: "g", generationID: 2, memberID: a), nowMs: 1_400) == .none)
    }

    @Test func membersThatDoNotRejoinInTimeAreDropped() {
        var (group, a, b) = stableGroupOfTwo()
        _ = held(group.join(joinRequest(a, protocols: ["roundrobin"], rebalance: 5_000), clientID: "c", clientHost: "/h", newMemberID: "x", nowMs: 1_000))
        #expect(group.phase == .preparingRebalance)
        #expect(group.rebalanceDeadlineMs == Int64(31_000))  // the longest rebalance timeout of the members
        // b heartbeats (and hears of the rebalance) but never rejoins.
        for now in [Int64(9_000), 18_000, 27_000] {
            #expect(group.heartbeat(HeartbeatRequest(groupID: "g", generationID: 1, memberID: b), nowMs: now) == .rebalanceInProgress)
        }
        #expect(group.tick(nowMs: 20_000).isEmpty)
        let answered = joins(group.tick(nowMs: 31_000))
        #expect(Set(answered.keys) == [a])
        #expect(group.member(b) == nil)
        #expect(group.generation == 2)
        #expect(group.protocolName == "roundrobin")
    }

    @Test func aSessionTimeoutRemovesTheMemberAndHeldSyncsLearnOfTheRebalance() {
        var (group, a, b) = stableGroupOfTwo()
        #expect(group.heartbeat(HeartbeatRequest(groupID: "g", generationID: 1, memberID: a), nowMs: 9_000) == .none)
        // b stops heartbeating: 10 s after its sync at 160 its session ends.
        #expect(group.tick(nowMs: 10_159).isEmpty)
        #expect(group.member(b) != nil)
        _ = group.tick(nowMs: 10_160)
        #expect(group.member(b) == nil)
        #expect(group.phase == .preparingRebalance)
        // Only a is left; its rejoin completes the generation at once.
        let (_, done) = held(group.join(joinRequest(a), clientID: "c", clientHost: "/h", newMemberID: "x", nowMs: 10_200))
        #expect(joins(done)[a]?.members.map(\.memberID) == [a])
        // A follower's sync held in CompletingRebalance is answered when the group must rebalance.
        let (c, _) = held(group.join(joinRequest(), clientID: "c", clientHost: "/h", newMemberID: "c", nowMs: 10_300))
        let (_, rejoined) = held(group.join(joinRequest(a), clientID: "c", clientHost: "/h", newMemberID: "x", nowMs: 10_400))
        #expect(Set(joins(rejoined).keys) == [a, c])
        _ = held(group.sync(SyncGroupRequest(groupID: "g", generationID: group.generation, memberID: c, assignments: []), nowMs: 10_500))
        let (_, left) = group.leave([a], nowMs: 10_600)
        #expect(syncs(left)[c]?.errorCode == .rebalanceInProgress)
    }

    @Test func leavingLastMemberEmptiesTheGroupAndUnknownMembersAreRefused() {
        var (group, a, b) = stableGroupOfTwo()
        let (results, _) = group.leave([a, "nobody"], nowMs: 1_000)
        #expect(results.map(\.errorCode) == [.none, .unknownMemberID])
        let (_, done) = held(group.join(joinRequest(b), clientID: "c", clientHost: "/h", newMemberID: "x", nowMs: 1_100))
        #expect(joins(done)[b]?.leader == b)  // the old leader is gone: the first member leads
        _ = group.leave([b], nowMs: 1_200)
        #expect(group.phase == .empty)
        #expect(group.isIdle)
        guard case .answer(let refused) = group.join(joinRequest("ghost"), clientID: "c", clientHost: "/h", newMemberID: "x", nowMs: 1_300) else {
            Issue.record("an unknown member id must be refused"); return
        }
        #expect(refused.errorCode == .unknownMemberID)
        #expect(group.heartbeat(HeartbeatRequest(groupID: "g", generationID: 3, memberID: "ghost"), nowMs: 1_300) == .unknownMemberID)
    }

    @Test func joinsWithBadTimeoutsOrProtocolsAreRefused() {
        var (group, _, _) = stableGroupOfTwo()
        guard case .answer(let short) = group.join(joinRequest(session: 10), clientID: "c", clientHost: "/h", newMemberID: "x", nowMs: 0),
              case .answer(let foreign) = group.join(joinRequest(protocols: ["sticky-only"]), clientID: "c", clientHost: "/h", newMemberID: "x", nowMs: 0)
        else { Issue.record("expected refusals"); return }
        #expect(short.errorCode == .invalidSessionTimeout)
        #expect(foreign.errorCode == .inconsistentGroupProtocol)
        #expect(group.members.count == 2)
    }

    @Test func aRetriedJoinInStableGetsTheSameAnswer() {
        var (group, _, b) = stableGroupOfTwo()
        guard case .answer(let again) = group.join(joinRequest(b, protocols: ["roundrobin", "range"]), clientID: "c", clientHost: "/h", newMemberID: "x", nowMs: 500)
        else { Issue.record("an unchanged follower's rejoin is answered at once"); return }
        #expect(again.generationID == 1)
        #expect(group.phase == .stable)
    }

    @Test func syncsAreCheckedAgainstMemberGenerationAndPhase() {
        var (group, a, _) = stableGroupOfTwo()
        guard case .answer(let stale) = group.sync(SyncGroupRequest(groupID: "g", generationID: 0, memberID: a, assignments: []), nowMs: 0),
              case .answer(let unknown) = group.sync(SyncGroupRequest(groupID: "g", generationID: 1, memberID: "z", assignments: []), nowMs: 0),
              case .answer(let current) = group.sync(SyncGroupRequest(groupID: "g", generationID: 1, memberID: a, assignments: []), nowMs: 0)
        else { Issue.record("expected immediate answers"); return }
        #expect(stale.errorCode == .illegalGeneration)
        #expect(unknown.errorCode == .unknownMemberID)
        #expect(current.assignment == [1])  // Stable: the member's assignment again
    }

    @Test func commitsFromOutsideAGenerationOnlyWhileTheGroupIsEmpty() {
        var empty = KafkaGroupState(groupID: "g", config: config)
        #expect(empty.admitCommit(generationID: -1, memberID: "", nowMs: 0) == .none)
        var (group, a, _) = stableGroupOfTwo()
        #expect(group.admitCommit(generationID: -1, memberID: "", nowMs: 0) == .unknownMemberID)
        #expect(group.admitCommit(generationID: 0, memberID: a, nowMs: 0) == .illegalGeneration)
        #expect(group.admitCommit(generationID: 1, memberID: a, nowMs: 0) == .none)
    }
}
