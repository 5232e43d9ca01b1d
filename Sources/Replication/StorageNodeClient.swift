import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS

/// Address of a storage node, `host:port`.
public struct StorageNodeAddress: Hashable, Sendable, CustomStringConvertible, Comparable {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port`.
    public init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (1...65535).contains(port), colon != text.startIndex
        else { return nil }
        self.init(host: String(text[..<colon]), port: port)
    }

    public var description: String { "\(host):\(port)" }

    public static func < (lhs: Self, rhs: Self) -> Bool { (lhs.host, lhs.port) < (rhs.host, rhs.port) }
}

/// What a broker presents to storage nodes that have authentication on (Pulsar's
/// `brokerClientAuthenticationPlugin` / `brokerClientAuthenticationParameters`). `data` is asked
/// for on every new connection, so a token file that is rotated is picked up.
public struct StorageClientCredentials: Sendable {
    public var method: String
    public var data: @Sendable () throws -> [UInt8]

    public init(method: String, data: @escaping @Sendable () throws -> [UInt8]) {
        self.method = method
        self.data = data
    }
}

/// How a broker reaches secured storage nodes: over TLS (Pulsar's `brokerClientTlsEnabled`, the
/// context trusting `bookkeeperTLSTrustCertsFilePath`, with the broker's own certificate for nodes
/// that require one) and with credentials. The default reaches open nodes in plain text.
public struct StorageClientSecurity: Sendable {
    public var credentials: StorageClientCredentials?
    /// The client context for every connection; nil: plain text.
    public var tls: NIOSSLContext?

    public init(credentials: StorageClientCredentials? = nil, tls: NIOSSLContext? = nil) {
        self.credentials = credentials
        self.tls = tls
    }
}

/// One NIO connection to a storage node. Requests are pipelined and matched to answers by request
/// id; each fails with `ReplicationError` on timeout or when the connection closes (a closed
/// client fails every later request at once). Thread-safe; its state lives on the channel's loop.
public final class StorageNodeClient: Sendable {
    public let address: StorageNodeAddress
    public let channel: any Channel

    private init(address: StorageNodeAddress, channel: any Channel) {
        self.address = address
        self.channel = channel
    }

    /// Connects to `address`. With `security.tls`, the TLS handshake completes before the client
    /// is handed out (a failed one fails the future with `connectionClosed`, saying why); with
    /// `security.credentials`, so does authentication (a refusal fails it with
    /// `authenticationFailed`). Either failure closes the connection.
    public static func connect(
        to address: StorageNodeAddress, eventLoopGroup: any EventLoopGroup,
        requestTimeout: TimeAmount = .seconds(10), connectTimeout: TimeAmount = .seconds(5),
        security: StorageClientSecurity = StorageClientSecurity()
    ) -> EventLoopFuture<StorageNodeClient> {
        let tls = security.tls
        // SNI takes a name, never an address; the chain is verified either way.
        let serverName = address.host.isIPAddress ? nil : address.host
        let handshake = NIOLockedValueBox<EventLoopPromise<Void>?>(nil)
        let connecting = ClientBootstrap(group: eventLoopGroup)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        let promise = channel.eventLoop.makePromise(of: Void.self)
                        handshake.withLockedValue { $0 = promise }
                        try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: tls, serverHostname: serverName))
                        try channel.pipeline.syncOperations.addHandler(TLSHandshakeWatcher(promise: promise))
                    }
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(StorageMessageDecoder()))
                    try channel.pipeline.syncOperations.addHandler(StorageMessageEncoderHandler())
                    try channel.pipeline.syncOperations.addHandler(StorageNodeClientHandler(requestTimeout: requestTimeout))
                }
            }
            .connect(host: address.host, port: address.port)
            .map { StorageNodeClient(address: address, channel: $0) }
        let secured = connecting.flatMap { client -> EventLoopFuture<StorageNodeClient> in
            guard let promise = handshake.withLockedValue({ $0 }) else { return client.channel.eventLoop.makeSucceededFuture(client) }
            return promise.futureResult.map { client }.flatMapError { error in
                client.close().flatMapThrowing {
                    throw ReplicationError(
                        .connectionClosed,
                        "TLS handshake with storage node \(address) failed (\(error)); check that the node has TLS on (tlsCertificatePath) and that bookkeeperTLSTrustCertsFilePath holds its CA")
                }
            }
        }
        guard let credentials = security.credentials else { return secured }
        return secured.flatMap { client in
            client.authenticate(credentials).flatMapError { error in
                client.close().flatMapThrowing { throw error }
            }
        }
    }

    private func authenticate(_ credentials: StorageClientCredentials) -> EventLoopFuture<StorageNodeClient> {
        let address = self.address
        let data: [UInt8]
        do {
            data = try credentials.data()
        } catch {
            return channel.eventLoop.makeFailedFuture(ReplicationError(
                .authenticationFailed, "could not read the broker's credentials for storage node \(address) (brokerClientAuthenticationParameters): \(error)"))
        }
        var buffer = channel.allocator.buffer(capacity: data.count)
        buffer.writeBytes(data)
        return send(.authenticate(method: credentials.method, data: buffer)).flatMapThrowing { response in
            switch response.status {
            case .ok:
                return self
            case .unauthenticated:
                throw ReplicationError(
                    .authenticationFailed,
                    "storage node \(address) refused the broker's credentials (\(response.text)); check brokerClientAuthenticationParameters against the node's token key and superUserRoles")
            default:
                throw ReplicationError(.authenticationFailed, "storage node \(address) answered authenticate with \(response.status): \(response.text)")
            }
        }
    }

    public var isActive: Bool { channel.isActive }

    /// Sends `request`; the future completes (on the channel's loop) with the node's answer.
    public func send(_ request: StorageRequest) -> EventLoopFuture<StorageResponse> {
        let promise = channel.eventLoop.makePromise(of: StorageResponse.self)
        channel.writeAndFlush(StorageClientRequest(request: request, promise: promise)).whenFailure { error in
            promise.fail(ReplicationError(.connectionClosed, "write to storage node failed: \(error)"))
        }
        return promise.futureResult
    }

    public func send(_ request: StorageRequest) async throws -> StorageResponse {
        try await send(request).get()
    }

    public func close() -> EventLoopFuture<Void> {
        channel.close().recover { _ in }
    }
}

/// A request with the promise its answer completes.
struct StorageClientRequest: Sendable {
    var request: StorageRequest
    var promise: EventLoopPromise<StorageResponse>
}

/// Assigns request ids, keeps the pending table, matches answers. Owned by the channel's loop.
final class StorageNodeClientHandler: ChannelDuplexHandler {
    typealias InboundIn = StorageMessage
    typealias OutboundIn = StorageClientRequest
    typealias OutboundOut = StorageMessage

    private struct Pending {
        var promise: EventLoopPromise<StorageResponse>
        var timeout: Scheduled<Void>
    }

    private let requestTimeout: TimeAmount
    private var nextRequestID: UInt64 = 1
    private var pending: [UInt64: Pending] = [:]
    private var isClosed = false

    init(requestTimeout: TimeAmount) {
        self.requestTimeout = requestTimeout
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        guard !isClosed else {
            request.promise.fail(ReplicationError(.connectionClosed, "connection to storage node is closed"))
            promise?.succeed(())
            return
        }
        guard pending.count < ReplicationLimits.maxPendingRequestsPerConnection else {
            request.promise.fail(ReplicationError(.tooManyPendingRequests, "\(pending.count) requests in flight"))
            promise?.succeed(())
            return
        }
        let requestID = nextRequestID
        nextRequestID += 1
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let timeout = context.eventLoop.scheduleTask(in: requestTimeout) {
            loopBound.value.timedOut(requestID: requestID)
        }
        pending[requestID] = Pending(promise: request.promise, timeout: timeout)
        context.write(wrapOutboundOut(.request(requestID: requestID, request.request)), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .response(let requestID, let response) = unwrapInboundIn(data),
              let entry = pending.removeValue(forKey: requestID)
        else {
            // An answer to a request that timed out, or a request from the node: not ours to handle.
            return
        }
        entry.timeout.cancel()
        entry.promise.succeed(response)
    }

    private func timedOut(requestID: UInt64) {
        guard let entry = pending.removeValue(forKey: requestID) else { return }
        entry.promise.fail(ReplicationError(.requestTimedOut, "storage node did not answer request \(requestID)"))
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(ReplicationError(.connectionClosed, "connection to storage node closed"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(ReplicationError(.connectionClosed, "storage connection error: \(error)"))
        context.close(promise: nil)
    }

    private func failAll(_ error: ReplicationError) {
        isClosed = true
        let entries = pending
        pending.removeAll()
        for (_, entry) in entries.sorted(by: { $0.key < $1.key }) {
            entry.timeout.cancel()
            entry.promise.fail(error)
        }
    }
}

/// Completes its promise when the TLS handshake does, or fails it with the first error or when the
/// connection closes first (or never opens); then passes everything through.
final class TLSHandshakeWatcher: ChannelInboundHandler {
    typealias InboundIn = NIOAny

    private var promise: EventLoopPromise<Void>?

    init(promise: EventLoopPromise<Void>) {
        self.promise = promise
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            promise?.succeed(())
            promise = nil
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise?.fail(error)
        promise = nil
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise?.fail(ChannelError.eof)
        promise = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // A connection that never became active still tears its pipeline down.
        promise?.fail(ChannelError.ioOnClosedChannel)
        promise = nil
    }
}

extension String {
    /// An IPv4 or IPv6 literal (not a name).
    var isIPAddress: Bool {
        (try? SocketAddress(ipAddress: self, port: 0)) != nil
    }
}
