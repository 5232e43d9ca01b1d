import LedgerStorage
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle

/// Serves a `StorageNode` over TCP with the storage protocol, as a `Service`: binds, serves until
/// graceful shutdown (or cancellation), then closes the listening socket and every connection.
/// `addEntry` is answered only once the entry is durable (the store's completion).
public final class StorageNodeServer: Service, Sendable {
    public let host: String
    public let port: Int
    private let node: StorageNode
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let state = NIOLockedValueBox<(channel: (any Channel)?, children: [ObjectIdentifier: any Channel])>((nil, [:]))
    private let boundPromise: EventLoopPromise<Int>

    public init(host: String, port: Int, node: StorageNode, eventLoopGroup: any EventLoopGroup, logger: Logger) {
        self.host = host
        self.port = port
        self.node = node
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
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(StorageMessageDecoder()))
                        try channel.pipeline.syncOperations.addHandler(StorageMessageEncoderHandler())
                        try channel.pipeline.syncOperations.addHandler(StorageNodeServerHandler(node: node, logger: logger))
                    }
                }
                .bind(host: host, port: port).get()
        } catch {
            boundPromise.fail(error)
            throw error
        }
        state.withLockedValue { $0.channel = channel }
        boundPromise.succeed(channel.localAddress?.port ?? port)
        logger.info("storage-server.listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
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

/// One server connection: decoded requests go to the node; answers are written in whatever
/// order they complete (the client matches them by request id). Owned by the channel's loop.
final class StorageNodeServerHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = StorageMessage
    typealias OutboundOut = StorageMessage

    private let node: StorageNode
    private let logger: Logger

    init(node: StorageNode, logger: Logger) {
        self.node = node
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .request(let requestID, let request) = unwrapInboundIn(data) else {
            logger.warning("storage-server.unexpected-response")
            context.close(promise: nil)
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

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.warning("storage-server.connection-error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }
}
