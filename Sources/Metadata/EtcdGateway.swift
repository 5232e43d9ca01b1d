import Foundation
import NIOCore
import NIOPosix

/// How `EtcdGateway` retries a request that failed for a reason that may pass (etcd restarting,
/// a leader election, a dropped connection).
///
/// A pure value. Waits `initialBackoff`, doubling up to `maxBackoff`, for at most `maxAttempts` tries in all.
public struct EtcdRetryPolicy: Sendable, Equatable {
    public var maxAttempts: Int
    public var initialBackoff: Duration
    public var maxBackoff: Duration

    public init(maxAttempts: Int = 6, initialBackoff: Duration = .milliseconds(100), maxBackoff: Duration = .seconds(2)) {
        precondition(maxAttempts >= 1, "maxAttempts must be at least 1")
        self.maxAttempts = maxAttempts
        self.initialBackoff = initialBackoff
        self.maxBackoff = maxBackoff
    }

    public static let `default` = EtcdRetryPolicy()

    /// The wait before try number `attempt + 1` (attempt counts from 1).
    func backoff(afterAttempt attempt: Int) -> Duration {
        var wait = initialBackoff
        for _ in 1..<max(attempt, 1) {
            wait = min(wait * 2, maxBackoff)
        }
        return min(wait, maxBackoff)
    }
}

/// Whether a request may be sent again when the first try's outcome is unknown.
enum EtcdRequestKind {
    /// Reads and lease refreshes: sending twice does no harm, so every transient failure is retried.
    case idempotent
    /// Writes: retried only when the request certainly never reached etcd (connection refused), because
    /// a compare-and-set that did apply would fail on its second try with a misleading bad version.
    case write
}

/// A failure talking to etcd, before it is turned into a `MetadataStoreError`.
struct EtcdGatewayError: Error {
    /// etcd answered with an error: its gRPC status code and message (e.g. 5 "requested lease not found").
    var code: Int?
    var message: String
    var isTransient: Bool
    /// The request certainly did not reach etcd.
    var wasNotSent: Bool
}

/// The etcd v3 JSON gateway (`POST /v3/...` with JSON bodies, base64 keys and values, 64-bit integers as
/// strings), over `EtcdHTTPClient`.
///
/// A Sendable value owned by `EtcdMetadataStore`; holds no connections between requests.
/// Unary calls go through `call`; watches stream newline-delimited JSON through `streamLines`.
struct EtcdGateway: Sendable {
    let endpoint: URL
    let retryPolicy: EtcdRetryPolicy
    let requestTimeout: Duration
    private let client: EtcdHTTPClient

    init(endpoint: URL, retryPolicy: EtcdRetryPolicy, requestTimeout: Duration) {
        self.endpoint = endpoint
        self.retryPolicy = retryPolicy
        self.requestTimeout = requestTimeout
        let components = URLComponents(url: endpoint, resolvingAgainstBaseURL: false)
        var host = components?.host ?? "127.0.0.1"
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        self.client = EtcdHTTPClient(
            host: host, port: components?.port ?? MetadataStoreURL.defaultEtcdPort,
            group: MultiThreadedEventLoopGroup.singleton, connectTimeout: min(requestTimeout, .seconds(5)))
    }

    /// POSTs `body` to `path` and decodes the answer, retrying transient failures per `retryPolicy`.
    func call<Response: Decodable>(
        _ path: String, _ body: some Encodable, kind: EtcdRequestKind, as type: Response.Type = Response.self
    ) async throws -> Response {
        var attempt = 1
        while true {
            do {
                return try await callOnce(path, body)
            } catch let error as EtcdGatewayError {
                let retryable = kind == .idempotent ? error.isTransient : error.wasNotSent
                guard retryable, attempt < retryPolicy.maxAttempts, !Task.isCancelled else {
                    throw MetadataStoreError.io(describe(error, path: path, attempts: attempt))
                }
                try? await Task.sleep(for: retryPolicy.backoff(afterAttempt: attempt))
                attempt += 1
            }
        }
    }

    /// The `.io` message for a failure: where, what, and what the operator can do.
    func describe(_ error: EtcdGatewayError, path: String, attempts: Int) -> String {
        let tries = attempts == 1 ? "" : " (after \(attempts) tries)"
        if error.code != nil {
            return "etcd at \(endpoint.absoluteString): \(path) failed\(tries): \(error.message)"
        }
        return "etcd at \(endpoint.absoluteString): \(path) failed\(tries): \(error.message); "
            + "check that etcd is running and that the metadata URL (etcd://host:port) names its client address"
    }

    private func callOnce<Response: Decodable>(_ path: String, _ body: some Encodable) async throws -> Response {
        let response: EtcdHTTPClient.Response
        do {
            response = try await client.post(path, body: Self.encode(body, path: path), timeout: requestTimeout)
        } catch let error as EtcdHTTPClient.TransportError {
            throw Self.transportError(error)
        }
        let data = Data(response.body.readableBytesView)
        guard response.status == 200 else {
            throw Self.statusError(status: response.status, body: data)
        }
        do {
            return try JSONDecoder().decode(Response.self, from: data)
        } catch {
            throw EtcdGatewayError(
                code: nil,
                message: "unexpected answer (\(error)): \(String(decoding: data.prefix(512), as: UTF8.self)); "
                    + "is this an etcd v3.4+ client URL?",
                isTransient: false, wasNotSent: false)
        }
    }

    /// POSTs a streaming request (a watch) and hands each JSON line of the answer to `onLine`, until the
    /// answer ends, the connection breaks or the task is cancelled. Failures are `EtcdGatewayError`s.
    func streamLines(_ path: String, _ body: some Encodable, onLine: ([UInt8]) async throws -> Void) async throws {
        do {
            var status = 200
            try await client.streamLines(
                path, body: Self.encode(body, path: path), onStatus: { status = $0 },
                onLine: { line in
                    guard status == 200 else { throw Self.statusError(status: status, body: Data(line)) }
                    try await onLine(line)
                })
        } catch let error as EtcdHTTPClient.TransportError {
            throw Self.transportError(error)
        }
    }

    private static func encode(_ body: some Encodable, path: String) -> [UInt8] {
        do {
            return [UInt8](try JSONEncoder().encode(body))
        } catch {
            preconditionFailure("etcd request for \(path) did not encode: \(error)")
        }
    }

    static func transportError(_ error: EtcdHTTPClient.TransportError) -> EtcdGatewayError {
        switch error {
        case .connectFailed, .closedBeforeSent:
            return EtcdGatewayError(code: nil, message: error.description, isTransient: true, wasNotSent: true)
        case .connectionLost:
            return EtcdGatewayError(code: nil, message: error.description, isTransient: true, wasNotSent: false)
        case .responseTooLarge:
            return EtcdGatewayError(code: nil, message: error.description, isTransient: false, wasNotSent: false)
        }
    }

    static func statusError(status: Int, body: Data) -> EtcdGatewayError {
        let decoded = try? JSONDecoder().decode(EtcdErrorBody.self, from: body)
        let code = decoded?.code
        let message = decoded?.message ?? decoded?.error ?? String(decoding: body.prefix(512), as: UTF8.self)
        // gRPC codes 14 (unavailable: no leader, shutting down) and 4 (deadline exceeded) pass.
        let transient = status == 503 || code == 14 || code == 4
        return EtcdGatewayError(
            code: code ?? status, message: "HTTP \(status): \(message)", isTransient: transient, wasNotSent: false)
    }
}

/// Limits on what the etcd store sends and keeps.
enum EtcdLimits {
    /// A response, or one watch line (a batch of events), larger than this is refused; etcd's default
    /// request limit is 1.5 MiB, but a range or a watch batch can carry many values.
    static let maxResponseBytes = 256 * 1024 * 1024
    /// Events a watch holds for a consumer that has not read them; beyond this the watch ends.
    static let maxBufferedWatchEvents = 100_000
    /// Compare-and-set rounds `increment` tries before giving up.
    static let maxIncrementAttempts = 10_000
}

extension Duration {
    var seconds: TimeInterval {
        let (seconds, attoseconds) = components
        return TimeInterval(seconds) + TimeInterval(attoseconds) / 1e18
    }
}

// MARK: - Wire types (field names exactly as the gateway's JSON; 64-bit integers are strings)

struct EtcdErrorBody: Decodable {
    var error: String?
    var message: String?
    var code: Int?
}

struct EtcdResponseHeader: Codable {
    var revision: String?
}

struct EtcdKeyValue: Codable {
    var key: String
    var create_revision: String?
    var mod_revision: String?
    var version: String?
    var value: String?
    var lease: String?
}

struct EtcdRangeRequest: Codable {
    var key: String
    var range_end: String?
    var keys_only: Bool?
    var count_only: Bool?
}

struct EtcdRangeResponse: Codable {
    var header: EtcdResponseHeader?
    var kvs: [EtcdKeyValue]?
}

struct EtcdPutRequest: Codable {
    var key: String
    var value: String
    var lease: String?
}

struct EtcdDeleteRangeRequest: Codable {
    var key: String
    var range_end: String?
}

struct EtcdDeleteRangeResponse: Codable {
    var header: EtcdResponseHeader?
    var deleted: String?
}

struct EtcdCompare: Codable {
    enum Target: String, Codable { case VERSION, CREATE, MOD }
    var key: String
    var target: Target
    var result: String = "EQUAL"
    var version: String?
    var create_revision: String?
}

struct EtcdRequestOp: Codable {
    var request_range: EtcdRangeRequest?
    var request_put: EtcdPutRequest?
    var request_delete_range: EtcdDeleteRangeRequest?
}

struct EtcdResponseOp: Codable {
    var response_range: EtcdRangeResponse?
    var response_delete_range: EtcdDeleteRangeResponse?
}

struct EtcdTxnRequest: Codable {
    var compare: [EtcdCompare]
    var success: [EtcdRequestOp]
    var failure: [EtcdRequestOp]
}

struct EtcdTxnResponse: Codable {
    var header: EtcdResponseHeader?
    var succeeded: Bool?
    var responses: [EtcdResponseOp]?
}

struct EtcdLeaseGrantRequest: Codable {
    var TTL: String
}

struct EtcdLeaseGrantResponse: Codable {
    var ID: String?
    var TTL: String?
    var error: String?
}

struct EtcdLeaseIDRequest: Codable {
    var ID: String
}

struct EtcdLeaseKeepAliveResponse: Codable {
    struct Result: Codable {
        var ID: String?
        var TTL: String?
    }
    var result: Result?
}

struct EtcdEmptyResponse: Codable {}

struct EtcdWatchCreateRequest: Codable {
    struct Create: Codable {
        var key: String
        var range_end: String?
        var start_revision: String?
        var prev_kv: Bool?
    }
    var create_request: Create
}

struct EtcdWatchLine: Codable {
    struct Event: Codable {
        var type: String?
        var kv: EtcdKeyValue?
        var prev_kv: EtcdKeyValue?
    }
    struct Result: Codable {
        var header: EtcdResponseHeader?
        var created: Bool?
        var canceled: Bool?
        var compact_revision: String?
        var cancel_reason: String?
        var events: [Event]?
    }
    struct Failure: Codable {
        var message: String?
        var code: Int?
    }
    var result: Result?
    var error: Failure?
}
