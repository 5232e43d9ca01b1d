import BrokerCore
import ManagedLedger
import PulsarProtocol

/// The one place where broker errors become Pulsar `ServerError` values (notes §10: fatal vs retried).
enum ServerErrors {
    static func serverError(for error: any Error) -> Pulsar_Proto_ServerError {
        guard let error = error as? BrokerError else { return .unknownError }
        switch error.code {
        case .metadata: return .metadataError
        case .persistence: return .persistenceError
        case .consumerBusy: return .consumerBusy
        case .consumerAssign: return .consumerAssignError
        case .producerBusy: return .producerBusy
        case .producerFenced: return .producerFenced
        case .producerBlockedQuota: return .producerBlockedQuotaExceededException
        case .topicNotFound: return .topicNotFound
        case .subscriptionNotFound: return .subscriptionNotFound
        case .consumerNotFound: return .consumerNotFound
        case .invalidTopicName: return .invalidTopicName
        case .notAllowed: return .notAllowedError
        case .serviceNotReady: return .serviceNotReady
        case .checksum: return .checksumError
        case .tooManyRequests: return .tooManyRequests
        case .notFound: return .topicNotFound
        case .conflict, .preconditionFailed, .badRequest: return .notAllowedError
        case .authenticationError: return .authenticationError
        case .authorizationError: return .authorizationError
        case .incompatibleSchema, .invalidSchema: return .incompatibleSchema
        case .transactionCoordinatorNotFound: return .transactionCoordinatorNotFound
        case .transactionNotFound: return .transactionNotFound
        case .invalidTransactionStatus: return .invalidTxnStatus
        case .transactionConflict: return .transactionConflict
        case .unknown: return .unknownError
        }
    }

    static func message(for error: any Error) -> String {
        if let error = error as? BrokerError { return error.message }
        return "\(error)"
    }
}
