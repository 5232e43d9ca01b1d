import NIOCore
import PulsarProtocol

/// Entry point of the fuzz target (`scripts/fuzz`): the connection's state machine fed the
/// commands decoded from arbitrary bytes, with the per-command mappings the handler applies to
/// their fields (message ids to positions and start positions, transaction request ids). It must
/// return for every input. A pure function.
public enum BrokerServerFuzzing {
    public static func connectionCommands(_ bytes: UnsafeRawBufferPointer) {
        var buffer = ByteBuffer(bytes: bytes)
        var decoder = PulsarFrameDecoder()
        var machine = ConnectionStateMachine()
        // Half the inputs start connected, so the fuzzer reaches past the handshake at once.
        if bytes.first.map({ $0 & 1 == 1 }) ?? false {
            _ = machine.commandReceived(.connect, clientProtocolVersion: PulsarLimits.protocolVersion)
        }
        while true {
            let frame: PulsarFrame?
            do {
                frame = try decoder.decode(buffer: &buffer)
            } catch {
                _ = machine.protocolErrorReceived(error as? PulsarProtocolError
                    ?? PulsarProtocolError(.malformedCommand, "\(error)"))
                return
            }
            guard let frame else { return }
            let command = frame.command
            let version: Int32? = frame.type == .connect && command.connect.hasProtocolVersion
                ? command.connect.protocolVersion : nil
            switch machine.commandReceived(frame.type, clientProtocolVersion: version) {
            case .close: return
            case .sendConnected, .authenticate, .sendPong, .ignore: continue
            case .handleCommand: break
            }
            _ = Commands.transactionRequestID(command)
            switch command.type {
            case .ack:
                for id in command.ack.messageID { _ = Commands.position(id) }
            case .seek:
                _ = Commands.startPosition(command.seek.messageID)
            case .subscribe:
                _ = Commands.startPosition(command.subscribe.startMessageID)
            case .redeliverUnacknowledgedMessages:
                for id in command.redeliverUnacknowledgedMessages.messageIds { _ = Commands.position(id) }
            default:
                break
            }
        }
    }
}
