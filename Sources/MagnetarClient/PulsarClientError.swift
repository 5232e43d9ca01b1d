import PulsarProtocol

/// A Pulsar `ServerError` code from the broker (ERROR, SEND_ERROR, failed lookups). A growable code:
/// unknown values from newer brokers keep their raw value. A pure value.
public struct ServerError: Sendable, Hashable, CustomStringConvertible {
    public var rawValue: Int

    public init(rawValue: Int) { self.rawValue = rawValue }

    /// The one mapping from the wire enum.
    init(_ error: Pulsar_Proto_ServerError) { self.rawValue = error.rawValue }

    public static let unknownError = ServerError(rawValue: 0)
    public static let metadataError = ServerError(rawValue: 1)
    public static let persistenceError = ServerError(rawValue: 2)
    public static let authenticationError = ServerError(rawValue: 3)
    public static let authorizationError = ServerError(rawValue: 4)
    public static let consumerBusy = ServerError(rawValue: 5)
    public static let serviceNotReady = ServerError(rawValue: 6)
    public static let producerBlockedQuotaExceededError = ServerError(rawValue: 7)
    public static let producerBlockedQuotaExceededException = ServerError(rawValue: 8)
    public static let checksumError = ServerError(rawValue: 9)
    public static let unsupportedVersionError = ServerError(rawValue: 10)
    public static let topicNotFound = ServerError(rawValue: 11)
    public static let subscriptionNotFound = ServerError(rawValue: 12)
    public static let consumerNotFound = ServerError(rawValue: 13)
    public static let tooManyRequests = ServerError(rawValue: 14)
    public static let topicTerminatedError = ServerError(rawValue: 15)
    public static let producerBusy = ServerError(rawValue: 16)
    public static let invalidTopicName = ServerError(rawValue: 17)
    public static let incompatibleSchema = ServerError(rawValue: 18)
    public static let consumerAssignError = ServerError(rawValue: 19)
    public static let notAllowedError = ServerError(rawValue: 22)
    public static let transactionCoordinatorNotFound = ServerError(rawValue: 20)
    public static let invalidTxnStatus = ServerError(rawValue: 21)
    public static let transactionConflict = ServerError(rawValue: 23)
    public static let transactionNotFound = ServerError(rawValue: 24)
    public static let producerFenced = ServerError(rawValue: 25)

    public var description: String {
        if let known = Pulsar_Proto_ServerError(rawValue: rawValue) { return "\(known)" }
        return "ServerError(\(rawValue))"
    }
}

/// Every error the client reports: one public struct with a growable code (postgres-nio `PSQLError`).
/// Broker refusals carry the broker's `ServerError` and message. A pure value.
public struct PulsarClientError: Error, Sendable, CustomStringConvertible {
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }

        /// The service URL is not `pulsar://host:port`.
        public static let invalidURL = Code("invalidURL")
        /// The TLS settings (trust file, certificate, key) cannot be used.
        public static let invalidTLSConfiguration = Code("invalidTLSConfiguration")
        /// TCP connect or the CONNECT/CONNECTED handshake failed.
        public static let connectionFailed = Code("connectionFailed")
        /// The connection closed while the operation was pending.
        public static let connectionClosed = Code("connectionClosed")
        /// The broker refused the request; see `serverError`.
        public static let server = Code("server")
        /// No answer within the operation timeout.
        public static let timeout = Code("timeout")
        /// The broker broke the protocol (e.g. a receipt out of order); the connection is closed.
        public static let protocolViolation = Code("protocolViolation")
        /// A received message failed its CRC32C check or did not decode.
        public static let corruptMessage = Code("corruptMessage")
        /// The producer already has `maxPendingMessages` messages waiting for receipts.
        public static let producerQueueFull = Code("producerQueueFull")
        /// The producer, consumer or client was closed (by the application or by the broker).
        public static let alreadyClosed = Code("alreadyClosed")
        /// A feature this client does not implement (e.g. partitioned producers).
        public static let unsupported = Code("unsupported")
        /// The message is larger than the broker's `max_message_size`.
        public static let messageTooBig = Code("messageTooBig")
    }

    public var code: Code
    public var message: String
    /// Set when `code == .server`.
    public var serverError: ServerError?

    public init(_ code: Code, _ message: String, serverError: ServerError? = nil) {
        self.code = code
        self.message = message
        self.serverError = serverError
    }

    /// A broker refusal (ERROR, SEND_ERROR, failed lookup).
    static func server(_ error: Pulsar_Proto_ServerError, _ message: String) -> PulsarClientError {
        PulsarClientError(.server, message, serverError: ServerError(error))
    }

    public var description: String {
        if let serverError { return "\(code) \(serverError): \(message)" }
        return "\(code): \(message)"
    }
}
