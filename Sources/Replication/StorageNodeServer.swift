import LedgerStorage
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle

/// Serves a `StorageNode` over TCP with the storage protocol, as a `Service`: binds, serves until
/// graceful shutdown (or cancellation), then closes the listening socket and every connection.
/// `addEntry` is answered only once the entry is durable (the store's completion). With a TLS
/// context the port speaks only TLS: a plain-text client's connection fails its handshake and is closed.
public final class StorageNodeServer: Service, Sendable {
    public let host: String
    public let port: Int
    private let node: StorageNode
    private let authenticator: StorageClientAuthenticator?
    private let tls: NIOSSLContext?
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let state = NIOLockedValueBox<(channel: (any Channel)?, children: [ObjectIdentifier: any Channel])>((nil, [:]))
    private let boundPromise: EventLoopPromise<Int>

    /// `authenticator`: nil, every client is served; else each connection must `authenticate` first.
    /// `tls`: the server context (its certificate callback may hand out reloaded pairs); nil: plain text.
    public init(
        host: String, port: Int, node: StorageNode, authenticator: StorageClientAuthenticator? = nil,
        tls: NIOSSLContext? = nil, eventLoopGroup: any EventLoopGroup, logger: Logger
    ) {
        self.host = host
        self.port = port
        self.node = node
        self.authenticator = authenticator
        self.tls = tls
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.boundPromise = eventLoopGroup.next().makePromise()
    }

    /// The port actually bound (useful with port 0), once listening.
    public var boundPort: Int {
        get async throws { try await boundPromise.futureResult.get() }
    }

    public func run() async throws {
        let node = self.node
        let authenticator = self.authenticator
        let tls = self.tls
        let logger = self.logger
        let state = self.state
        let channel: any Channel
        do {
            channel = try await ServerBootstrap(group: eventLoopGroup)
                .serverChannelOption(.backlog, value: 256)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { channel in
                    let key = ObjectIdentifier(channel)
                    state.withLockedValue { $0.children[key] = channel }
                    channel.closeFuture.whenComplete { _ in
                        _ = state.withLockedValue { $0.children.removeValue(forKey: key) }
                    }
                    return channel.eventLoop.makeCompletedFuture {
                        if let tls {
                            try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls))
                        }
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(StorageMessageDecoder()))
                        try channel.pipeline.syncOperations.addHandler(StorageMessageEncoderHandler())
                        try channel.pipeline.syncOperations.addHandler(StorageNodeServerHandler(node: node, authenticator: authenticator, logger: logger))
                    }
                }
                .bind(host: host, port: port).get()
        } catch {
            boundPromise.fail(error)
            throw error
        }
        state.withLockedValue { $0.channel = channel }
        boundPromise.succeed(channel.localAddress?.port ?? port)
        logger.info("storage-server.listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")", "tls": "\(tls != nil)"])
        try? await gracefulShutdown()
        logger.info("storage-server.stopping")
        await stop()
    }

    /// Closes the listener and every connection now (tests use it to "kill" a node).
    public func stop() async {
        let (listener, children) = state.withLockedValue { ($0.channel, Array($0.children.values)) }
        try? await listener?.close()
        for child in children {
            try? await child.close()
        }
    }
}

/// How a storage node with authentication on checks a client: the method and credentials of its
/// `authenticate` request in, the client's role out, or a thrown error (logged, never sent: the
/// client hears only "Failed to authenticate"). Deciding which roles may use the node is part of it.
public typealias StorageClientAuthenticator = @Sendable (_ method: String, _ data: [UInt8]) async throws -> String

/// One server connection: decoded requests go to the node; answers are written in whatever
/// order they complete (the client matches them by request id). With an authenticator, the
/// connection answers nothing but `authenticate` until that succeeds; any other request first, or
/// refused credentials, get `unauthenticated` and the connection is closed. Owned by the channel's loop.
final class StorageNodeServerHandler: ChannelInboundHandler {
    typealias InboundIn = StorageMessage
    typealias OutboundOut = StorageMessage

    private enum Access {
        /// No authentication on this node.
        case open
        /// Waiting for the client's `authenticate`.
        case required
        /// Its credentials are being checked.
        case checking
        case authenticated(role: String)
        /// Refused: the connection is closing; later requests are dropped.
        case refused
    }

    private let node: StorageNode
    private let authenticator: StorageClientAuthenticator?
    private let logger: Logger
    private var access: Access

    init(node: StorageNode, authenticator: StorageClientAuthenticator?, logger: Logger) {
        self.node = node
        self.authenticator = authenticator
        self.logger = logger
        self.access = authenticator == nil ? .open : .required
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .request(let requestID, let request) = unwrapInboundIn(data) else {
            logger.warning("storage-server.unexpected-response")
            context.close(promise: nil)
            return
        }
        if case .authenticate(let method, let credentials) = request {
            authenticate(context: context, requestID: requestID, method: method, credentials: credentials)
            return
        }
        switch access {
        case .open, .authenticated:
            break
        case .required, .checking:
            refuse(
                context.channel, requestID: requestID, requestType: request.typeByte,
                "authentication required: this storage node has authenticationEnabled=true; give the broker brokerClientAuthenticationPlugin and brokerClientAuthenticationParameters")
            return
        case .refused:
            return
        }
        let channel = context.channel
        let node = self.node
        let respond: @Sendable (StorageResponse) -> Void = { response in
            channel.writeAndFlush(StorageMessage.response(requestID: requestID, response), promise: nil)
        }
        guard request.waitsForDisk else {
            node.handle(request, respond: respond)
            return
        }
        // Reads, fences and deletes wait for the disk: never on the channel's event loop.
        NIOThreadPool.singleton.submit { state in
            guard state == .active else {
                var text = ByteBuffer()
                text.writeString("storage node is shutting down; retry on another node")
                respond(StorageResponse(requestType: request.typeByte, status: .error, body: text))
                return
            }
            node.handle(request, respond: respond)
        }
    }

    private func authenticate(context: ChannelHandlerContext, requestID: UInt64, method: String, credentials: ByteBuffer) {
        let channel = context.channel
        let type = StorageRequest.authenticate(method: method, data: credentials).typeByte
        guard let authenticator else {
            // Authentication off: credentials are accepted unread (a broker configured for a
            // secured cluster still works against an open node).
            channel.writeAndFlush(StorageMessage.response(requestID: requestID, StorageResponse(requestType: type, status: .ok)), promise: nil)
            return
        }
        switch access {
        case .checking:
            refuse(channel, requestID: requestID, requestType: type, "authenticate sent again before the first one was answered")
            return
        case .refused:
            return
        case .open, .required, .authenticated:
            break
        }
        access = .checking
        let bytes = Array(credentials.readableBytesView)
        let peer = channel.remoteAddress.map { "\($0)" } ?? "?"
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        Task {
            let outcome: Result<String, any Error>
            do {
                outcome = .success(try await authenticator(method, bytes))
            } catch {
                outcome = .failure(error)
            }
            eventLoop.execute {
                let handler = loopBound.value
                guard case .checking = handler.access else { return }
                switch outcome {
                case .success(let role):
                    handler.access = .authenticated(role: role)
                    handler.logger.info("storage-server.authenticated", metadata: ["peer": "\(peer)", "role": "\(role)", "auth.method": "\(method)"])
                    var body = ByteBuffer()
                    body.writeString(role)
                    channel.writeAndFlush(
                        StorageMessage.response(requestID: requestID, StorageResponse(requestType: type, status: .ok, body: body)), promise: nil)
                case .failure(let error):
                    handler.logger.warning("storage-server.authentication-refused", metadata: [
                        "peer": "\(peer)", "auth.method": "\(method)", "reason": "\(error)",
                    ])
                    handler.refuse(channel, requestID: requestID, requestType: type, "Failed to authenticate")
                }
            }
        }
    }

    /// Answers `unauthenticated` with `text`, then closes the connection.
    private func refuse(_ channel: any Channel, requestID: UInt64, requestType: UInt8, _ text: String) {
        access = .refused
        var body = ByteBuffer()
        body.writeString(text)
        channel.writeAndFlush(
            StorageMessage.response(requestID: requestID, StorageResponse(requestType: requestType, status: .unauthenticated, body: body))
        ).whenComplete { _ in
            channel.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.warning("storage-server.connection-error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }
}
