import BrokerCore
import ManagedLedger
import Foundation
import Hummingbird
import NIOCore

/// An admin API error as the client sees it: an HTTP status and Pulsar's JSON body `{"reason": "..."}`.
/// A pure value; built from any error by `AdminError.init(mapping:)`, the one place that chooses statuses.
public struct AdminError: HTTPResponseError, Equatable, CustomStringConvertible {
    public var status: HTTPResponse.Status
    public var reason: String

    public init(status: HTTPResponse.Status, reason: String) {
        self.status = status
        self.reason = reason
    }

    public var description: String { "\(status.code) \(reason)" }

    /// The one mapping from errors to HTTP statuses (the reasons come from BrokerCore's catalog, `AdminErrors.swift`).
    public init(mapping error: any Error) {
        switch error {
        case let error as AdminError:
            self = error
        case let error as BrokerError:
            self.init(status: Self.status(for: error.code), reason: error.message)
        case let error as DecodingError:
            self.init(status: .badRequest, reason: "Invalid JSON: \(Self.describe(error))")
        case let error as HTTPError:
            self.init(status: error.status, reason: error.body ?? error.status.reasonPhrase)
        default:
            self.init(status: .internalServerError, reason: "\(error)")
        }
    }

    static func status(for code: BrokerError.Code) -> HTTPResponse.Status {
        switch code {
        case .notFound, .topicNotFound, .subscriptionNotFound, .consumerNotFound, .transactionNotFound: .notFound
        case .transactionConflict, .invalidTransactionStatus: .conflict
        case .transactionCoordinatorNotFound: .serviceUnavailable
        case .conflict, .producerBusy, .producerFenced, .incompatibleSchema: .conflict
        case .invalidSchema: .unprocessableContent
        case .preconditionFailed, .consumerBusy, .producerBlockedQuota: .preconditionFailed
        case .badRequest, .invalidTopicName: .badRequest
        case .notAllowed: .methodNotAllowed
        case .tooManyRequests: .tooManyRequests
        case .authenticationError: .unauthorized
        case .authorizationError: .forbidden
        case .serviceNotReady: .serviceUnavailable
        case .consumerAssign, .metadata, .persistence, .checksum, .unknown: .internalServerError
        }
    }

    /// A short, client-facing account of what did not decode.
    static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let keys = context.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }
            return keys.isEmpty ? "" : " at '\(keys.joined(separator: "."))'"
        }
        switch error {
        case .dataCorrupted(let context): return "\(context.debugDescription)\(path(context))"
        case .keyNotFound(let key, let context): return "missing field '\(key.stringValue)'\(path(context))"
        case .typeMismatch(_, let context): return "\(context.debugDescription)\(path(context))"
        case .valueNotFound(_, let context): return "\(context.debugDescription)\(path(context))"
        @unknown default: return "\(error)"
        }
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        let body = (try? JSONEncoder().encode(["reason": reason])) ?? Data(#"{"reason":"error"}"#.utf8)
        return Response(
            status: status, headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }
}

/// Turns every error a route throws into an `AdminError` (so every 4xx/5xx has a JSON reason).
struct AdminErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    /// The methods the admin API has routes for; any other is 405 on every path, as Pulsar's REST
    /// server answers (a router would say 404).
    static var servedMethods: Set<HTTPRequest.Method> { [.get, .head, .put, .post, .delete] }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard Self.servedMethods.contains(request.method) else {
            throw AdminError(
                status: .methodNotAllowed,
                reason: "HTTP method \(request.method) is not allowed: the admin API answers GET, HEAD, PUT, POST and DELETE")
        }
        do {
            return try await next(request, context)
        } catch {
            throw AdminError(mapping: error)
        }
    }
}
