@testable import BrokerServer
import PulsarProtocol
import Testing

/// Transcripts of the connection's handshake state machine.
@Suite struct ConnectionStateMachineTests {
    @Test func connectThenCommands() {
        var machine = ConnectionStateMachine()
        #expect(machine.commandReceived(.connect, clientProtocolVersion: 20) == .sendConnected(protocolVersion: 20))
        #expect(machine.commandReceived(.ping, clientProtocolVersion: nil) == .sendPong)
        #expect(machine.commandReceived(.producer, clientProtocolVersion: nil) == .handleCommand)
        #expect(machine.state == .connected(protocolVersion: 20))
    }

    @Test func newerClientsGetOurVersion() {
        var machine = ConnectionStateMachine()
        #expect(machine.commandReceived(.connect, clientProtocolVersion: 99) == .sendConnected(protocolVersion: 20))
        var old = ConnectionStateMachine()
        #expect(old.commandReceived(.connect, clientProtocolVersion: 6) == .sendConnected(protocolVersion: 6))
    }

    @Test func anythingBeforeConnectCloses() {
        var machine = ConnectionStateMachine()
        guard case .close = machine.commandReceived(.ping, clientProtocolVersion: nil) else {
            Issue.record("expected close")
            return
        }
        #expect(machine.state == .closed)
        #expect(machine.commandReceived(.connect, clientProtocolVersion: 20) == .ignore)
    }

    @Test func secondConnectCloses() {
        var machine = ConnectionStateMachine()
        _ = machine.commandReceived(.connect, clientProtocolVersion: 20)
        guard case .close = machine.commandReceived(.connect, clientProtocolVersion: 20) else {
            Issue.record("expected close")
            return
        }
    }

    @Test func protocolErrorClosesOnce() {
        var machine = ConnectionStateMachine()
        _ = machine.commandReceived(.connect, clientProtocolVersion: 20)
        guard case .close = machine.protocolErrorReceived(PulsarProtocolError(.malformedCommand, "bad")) else {
            Issue.record("expected close")
            return
        }
        #expect(machine.protocolErrorReceived(PulsarProtocolError(.malformedCommand, "bad")) == .ignore)
    }
}

/// Issue 12: a negative protocol version from the client is answered as 0, never echoed back.
@Suite struct ConnectionStateMachineVersionTests {
    @Test func negativeVersionIsAnsweredAsZero() {
        var machine = ConnectionStateMachine()
        #expect(machine.commandReceived(.connect, clientProtocolVersion: -5) == .sendConnected(protocolVersion: 0))
        var lowest = ConnectionStateMachine()
        #expect(lowest.commandReceived(.connect, clientProtocolVersion: .min) == .sendConnected(protocolVersion: 0))
    }
}
