/// An operating error of the broker core, with a code that the protocol edges map to their own
/// error values (Pulsar's `ServerError`, HTTP statuses) in exactly one place each.
public struct BrokerError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable {
        case metadata
        case persistence
        case consumerBusy
        case consumerAssign
        case producerBusy
        /// An exclusive producer another one took the topic from (Pulsar's ProducerFenced, HTTP 409).
        case producerFenced
        case producerBlockedQuota
        case topicNotFound
        case subscriptionNotFound
        case consumerNotFound
        case invalidTopicName
        case notAllowed
        case serviceNotReady
        case checksum
        case tooManyRequests
        /// A tenant, namespace, topic or subscription that was asked for does not exist (HTTP 404).
        case notFound
        /// What a request would create exists already, or a change conflicts with the current state (HTTP 409).
        case conflict
        /// A delete or change refused by the current state: not empty, clients connected (HTTP 412).
        case preconditionFailed
        /// A request that is malformed: bad JSON, a bad number, an invalid name (HTTP 400).
        case badRequest
        /// The client's credentials are missing or not valid (Pulsar's AuthenticationError, HTTP 401).
        case authenticationError
        /// The client's role may not do this (Pulsar's AuthorizationError, HTTP 403).
        case authorizationError
        /// A schema the topic's stored versions and strategy do not allow (Pulsar's
        /// IncompatibleSchema, HTTP 409).
        case incompatibleSchema
        /// A schema definition that cannot be used (IncompatibleSchema on the binary protocol, as in
        /// Pulsar; HTTP 422).
        case invalidSchema
        /// Transactions: no coordinator here / the transaction is unknown (or ended long ago) /
        /// it is not in a state that allows this / an acknowledgement another transaction holds.
        case transactionCoordinatorNotFound
        case transactionNotFound
        case invalidTransactionStatus
        case transactionConflict
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
