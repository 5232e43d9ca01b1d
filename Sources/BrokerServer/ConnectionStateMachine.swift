import PulsarProtocol

/// The handshake and lifecycle of one client connection, as a pure state machine: each event
/// returns the action the channel handler must run. Owned by the connection's channel handler.
struct ConnectionStateMachine {
    enum State: Equatable {
        case awaitingConnect
        /// CONNECT came; its credentials are being checked. The client waits for CONNECTED and
        /// sends nothing meanwhile: anything it does send closes the connection.
        case authenticating(protocolVersion: Int32)
        case connected(protocolVersion: Int32)
        case closed
    }

    enum Action: Equatable {
        /// Answer CONNECTED with this protocol version.
        case sendConnected(protocolVersion: Int32)
        /// Check the CONNECT's credentials, then call `authenticated`.
        case authenticate(protocolVersion: Int32)
        /// Handle the command (the connection is established).
        case handleCommand
        /// Answer PONG.
        case sendPong
        /// Drop the frame silently (the connection is closing).
        case ignore
        /// Close the connection, logging why.
        case close(reason: String)
    }

    private(set) var state: State = .awaitingConnect
    /// Authentication is on: CONNECT's credentials are checked before CONNECTED.
    let requiresAuthentication: Bool

    init(requiresAuthentication: Bool = false) {
        self.requiresAuthentication = requiresAuthentication
    }

    mutating func commandReceived(_ type: Pulsar_Proto_BaseCommand.TypeEnum, clientProtocolVersion: Int32?) -> Action {
        switch state {
        case .awaitingConnect:
            guard type == .connect else {
                state = .closed
                return .close(reason: "expected CONNECT before \(type)")
            }
            // A negative version from the client is answered as 0, never echoed.
            let version = max(0, min(clientProtocolVersion ?? 0, PulsarLimits.protocolVersion))
            if requiresAuthentication {
                state = .authenticating(protocolVersion: version)
                return .authenticate(protocolVersion: version)
            }
            state = .connected(protocolVersion: version)
            return .sendConnected(protocolVersion: version)
        case .authenticating:
            state = .closed
            return .close(reason: "\(type) sent before CONNECTED")
        case .connected:
            switch type {
            case .connect:
                state = .closed
                return .close(reason: "CONNECT received twice")
            case .ping:
                return .sendPong
            default:
                return .handleCommand
            }
        case .closed:
            return .ignore
        }
    }

    /// The CONNECT's credentials were checked: CONNECTED, or close.
    mutating func authenticated(_ success: Bool) -> Action {
        guard case .authenticating(let version) = state else { return .ignore }
        guard success else {
            state = .closed
            return .close(reason: "authentication failed")
        }
        state = .connected(protocolVersion: version)
        return .sendConnected(protocolVersion: version)
    }

    mutating func protocolErrorReceived(_ error: PulsarProtocolError) -> Action {
        guard state != .closed else { return .ignore }
        state = .closed
        return .close(reason: "\(error)")
    }

    /// The connection is being closed on our side (a timeout, an unsupported command).
    mutating func close() {
        state = .closed
    }

    mutating func channelInactive() {
        state = .closed
    }
}
