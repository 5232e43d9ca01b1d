import Authentication
@testable import BrokerServer
import Foundation
import PulsarProtocol
import Testing

/// The connection machine with authentication on: CONNECT's credentials, refusal, refresh.
@Suite struct ConnectionAuthenticationTests {
    typealias Machine = PulsarConnectionMachine<String>

    func connect(method: String?, data: String = "", refresh: Bool = true) -> PulsarFrame {
        var command = Pulsar_Proto_BaseCommand()
        command.type = .connect
        command.connect.clientVersion = "Pulsar-CPP-v4.2.0"
        command.connect.protocolVersion = 20
        if let method { command.connect.authMethodName = method }
        command.connect.authData = Data(data.utf8)
        command.connect.featureFlags.supportsAuthRefresh = refresh
        return PulsarFrame(command: command, payload: nil)
    }

    @Test func credentialsAreCheckedBeforeConnected() throws {
        var machine = Machine(connectionID: 1, serverVersion: "test", requiresAuthentication: true)
        guard case .authenticate(let credentials, let refresh) = machine.frameReceived(connect(method: "token", data: "jwt")) else {
            Issue.record("CONNECT did not ask for authentication")
            return
        }
        #expect(credentials == .method("token", Array("jwt".utf8)))
        #expect(!refresh)
        guard case .write(let reply, _) = machine.authenticationCompleted(.success(AuthenticatedRole(role: "alice", method: "token")), refresh: false)
        else { Issue.record("no CONNECTED"); return }
        #expect(reply.type == .connected)
        #expect(machine.role == "alice")
    }

    @Test func noMethodIsAnonymousAndAFailureIsRefusedThenClosed() {
        var machine = Machine(connectionID: 1, serverVersion: "test", requiresAuthentication: true)
        guard case .authenticate(.none, _) = machine.frameReceived(connect(method: "none")) else {
            Issue.record("expected anonymous credentials")
            return
        }
        guard case .refuse(let error, let log) = machine.authenticationCompleted(.failure(.missingCredentials), refresh: false) else {
            Issue.record("expected a refusal")
            return
        }
        #expect(error.error.error == .authenticationError)
        #expect(error.error.message == "Failed to authenticate")
        #expect(error.error.requestID == UInt64.max)
        #expect(log.event == "connection.authentication-failed")
        #expect(machine.isClosed)
    }

    @Test func aCommandBeforeConnectedCloses() {
        var machine = Machine(connectionID: 1, serverVersion: "test", requiresAuthentication: true)
        _ = machine.frameReceived(connect(method: "token", data: "jwt"))
        var ping = Pulsar_Proto_BaseCommand()
        ping.type = .lookup
        guard case .close = machine.frameReceived(PulsarFrame(command: ping, payload: nil)) else {
            Issue.record("a command while authenticating was accepted")
            return
        }
        #expect(machine.isClosed)
    }

    @Test func expiredCredentialsAreChallengedThenClosedIfNotRefreshed() {
        var machine = Machine(connectionID: 1, serverVersion: "test", requiresAuthentication: true)
        _ = machine.frameReceived(connect(method: "token", data: "jwt"))
        let expiry = Date(timeIntervalSince1970: 1_000)
        _ = machine.authenticationCompleted(.success(AuthenticatedRole(role: "alice", expiresAt: expiry, method: "token")), refresh: false)
        guard case .none = machine.authenticationCheckTick(now: expiry.addingTimeInterval(-1)) else {
            Issue.record("challenged before expiry")
            return
        }
        guard case .write(let challenge, _) = machine.authenticationCheckTick(now: expiry) else {
            Issue.record("no AUTH_CHALLENGE")
            return
        }
        #expect(challenge.type == .authChallenge)
        #expect(challenge.authChallenge.challenge.authMethodName == "token")
        // A fresh token for the same role: kept, challenge over.
        var response = Pulsar_Proto_BaseCommand()
        response.type = .authResponse
        response.authResponse.response.authMethodName = "token"
        response.authResponse.response.authData = Data("fresh".utf8)
        guard case .authenticate(.method("token", let data), true) = machine.frameReceived(PulsarFrame(command: response, payload: nil)) else {
            Issue.record("AUTH_RESPONSE not checked")
            return
        }
        #expect(data == Array("fresh".utf8))
        let later = expiry.addingTimeInterval(60)
        _ = machine.authenticationCompleted(.success(AuthenticatedRole(role: "alice", expiresAt: later, method: "token")), refresh: true)
        #expect(!machine.challengePending)
        // Expired again, challenged, and not answered by the next check: closed.
        guard case .write = machine.authenticationCheckTick(now: later) else { Issue.record("no second challenge"); return }
        guard case .close = machine.authenticationCheckTick(now: later.addingTimeInterval(1)) else {
            Issue.record("an unanswered challenge did not close")
            return
        }
        #expect(machine.isClosed)
    }

    @Test func aRefreshForAnotherRoleCloses() {
        var machine = Machine(connectionID: 1, serverVersion: "test", requiresAuthentication: true)
        _ = machine.frameReceived(connect(method: "token", data: "jwt"))
        _ = machine.authenticationCompleted(.success(AuthenticatedRole(role: "alice", method: "token")), refresh: false)
        guard case .close = machine.authenticationCompleted(.success(AuthenticatedRole(role: "admin", method: "token")), refresh: true) else {
            Issue.record("a role change on refresh was accepted")
            return
        }
    }

    @Test func aClientWithoutRefreshIsClosedAtExpiry() {
        var machine = Machine(connectionID: 1, serverVersion: "test", requiresAuthentication: true)
        _ = machine.frameReceived(connect(method: "token", data: "jwt", refresh: false))
        let expiry = Date(timeIntervalSince1970: 1_000)
        _ = machine.authenticationCompleted(.success(AuthenticatedRole(role: "alice", expiresAt: expiry, method: "token")), refresh: false)
        guard case .close = machine.authenticationCheckTick(now: expiry) else {
            Issue.record("not closed")
            return
        }
    }
}
