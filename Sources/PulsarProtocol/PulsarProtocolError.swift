import NIOCore

/// A malformed frame from the network. The connection that sent it is closed; nobody else is affected.
public struct PulsarProtocolError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable {
        case frameTooLarge
        case frameTooSmall
        case commandSizeInvalid
        case malformedCommand
        case missingCommandType
        case malformedPayload
    }
    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}
