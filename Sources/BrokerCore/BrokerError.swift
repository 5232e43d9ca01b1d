/// An operating error of the broker core, with a code that the protocol edges map to their own
/// error values (Pulsar's `ServerError`, HTTP statuses) in exactly one place each.
public struct BrokerError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable {
        case metadata
        case persistence
        case consumerBusy
        case consumerAssign
        case producerBusy
        case producerBlockedQuota
        case topicNotFound
        case subscriptionNotFound
        case consumerNotFound
        case invalidTopicName
        case notAllowed
        case serviceNotReady
        case checksum
        case tooManyRequests
        case unknown
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}
