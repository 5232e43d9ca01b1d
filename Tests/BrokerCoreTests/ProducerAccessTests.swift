import ManagedLedger
import Testing

@testable import BrokerCore

/// Pulsar's producer access rules as a pure state machine.
@Suite struct ProducerAccessTests {
    typealias Control = ProducerAccessControl<String>

    @Test func exclusiveRefusesOthersAndSharedRefusesBesideIt() {
        var control = Control()
        #expect(control.request("a", mode: .exclusive, clientEpoch: nil, current: []) == .granted(epoch: 1))
        guard case .refused(let busy) = control.request("b", mode: .exclusive, clientEpoch: nil, current: ["a"]) else {
            Issue.record("a second exclusive producer was let in")
            return
        }
        #expect(busy.code == .producerBusy)
        guard case .refused = control.request("s", mode: .shared, clientEpoch: nil, current: ["a"]) else {
            Issue.record("a shared producer was let in beside an exclusive one")
            return
        }
        // Shared producers mix; an exclusive one cannot join them.
        var shared = Control()
        #expect(shared.request("s1", mode: .shared, clientEpoch: nil, current: []) == .granted(epoch: nil))
        #expect(shared.request("s2", mode: .shared, clientEpoch: nil, current: ["s1"]) == .granted(epoch: nil))
        guard case .refused = shared.request("x", mode: .exclusive, clientEpoch: nil, current: ["s1", "s2"]) else {
            Issue.record("exclusive beside shared producers")
            return
        }
    }

    @Test func waitersGetTheTopicInTurn() {
        var control = Control()
        _ = control.request("a", mode: .exclusive, clientEpoch: nil, current: [])
        #expect(control.request("w1", mode: .waitForExclusive, clientEpoch: nil, current: ["a"]) == .waiting)
        #expect(control.request("w2", mode: .waitForExclusive, clientEpoch: nil, current: ["a"]) == .waiting)
        #expect(control.released("a", remaining: ["a"]).map { [$0.0] + ["\($0.1)"] } == ["w1", "2"])
        #expect(control.exclusiveHolder == "w1")
        #expect(control.released("w1", remaining: ["w1"]).map { [$0.0] + ["\($0.1)"] } == ["w2", "3"])
    }

    @Test func fencingRaisesTheEpochAndOldHoldersAreFenced() {
        var control = Control()
        #expect(control.request("a", mode: .exclusive, clientEpoch: nil, current: []) == .granted(epoch: 1))
        #expect(control.request("f", mode: .exclusiveWithFencing, clientEpoch: nil, current: ["a"]) == .fencing(others: ["a"], epoch: 2))
        // The fenced producer comes back with its old epoch.
        guard case .refused(let fenced) = control.request("a", mode: .exclusive, clientEpoch: 1, current: ["f"]) else {
            Issue.record("a fenced producer was let back in")
            return
        }
        #expect(fenced.code == .producerFenced)
        // The holder reconnecting with its own epoch keeps it.
        _ = control.released("f", remaining: ["f"])
        #expect(control.request("f", mode: .exclusive, clientEpoch: 2, current: []) == .granted(epoch: 2))
    }
}
