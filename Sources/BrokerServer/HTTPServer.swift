import AdminAPI
import Authentication
import BrokerCore
import ManagedLedger
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import Prometheus

/// The HTTP endpoint on `--http-port`: `/health`, the admin REST API (`/admin/v2/...`) and `/metrics`
/// (routes in AdminAPI). `metricsRegistry` is the registry swift-metrics was bootstrapped with.
/// With `tls`, the same routes over HTTPS (`webServicePortTls`).
public enum HTTPServer {
    public static func makeApplication(
        host: String, port: Int, broker: BrokerService, metricsRegistry: PrometheusCollectorRegistry,
        authenticator: Authenticator = .disabled, authenticateMetrics: Bool = false, tls: TLSCertificates? = nil,
        logger: Logger
    ) throws -> some ApplicationProtocol {
        let router = AdminRouter.makeRouter(
            broker: broker, metrics: MetricsCollector(broker: broker, registry: metricsRegistry),
            authenticator: authenticator, authenticateMetrics: authenticateMetrics)
        // Idle keep-alive connections are closed, so clients that open and abandon them cannot
        // hold the process's file descriptors.
        let http1 = HTTPServerBuilder.http1(configuration: .init(
            additionalChannelHandlers: [MalformedRequestAnswerer()],
            idleTimeout: AdminHTTPLimits.idleConnectionTimeout))
        return Application(
            router: router,
            server: try tls.map { try .tls(http1, tlsConfiguration: $0.serverConfiguration()) } ?? http1,
            configuration: .init(address: .hostname(host, port: port), serverName: "Magnetar"),
            logger: logger)
    }
}

extension HTTPServer {
    /// A storage node's HTTP endpoint: `/metrics` (what `scrape` renders, Prometheus text) and
    /// `/health`; anything else is 404.
    public static func makeMetricsApplication(
        host: String, port: Int, scrape: @escaping @Sendable () async -> String, logger: Logger
    ) -> some ApplicationProtocol {
        let router = Router()
        router.get("/health") { _, _ -> String in "ok" }
        router.get("/metrics") { _, _ -> Response in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: await scrape())))
        }
        let http1 = HTTPServerBuilder.http1(configuration: .init(
            additionalChannelHandlers: [MalformedRequestAnswerer()], idleTimeout: AdminHTTPLimits.idleConnectionTimeout))
        return Application(
            router: router, server: http1,
            configuration: .init(address: .hostname(host, port: port), serverName: "Magnetar"), logger: logger)
    }
}

/// Answers a request the HTTP parser rejects (an unknown method such as `BREW`, a malformed
/// request line or header) with `400` and Pulsar's JSON error body `{"reason": ...}` instead of
/// an empty 400, then closes the connection. Only between requests: while a request is being
/// answered the error goes on to Hummingbird, which closes the connection.
final class MalformedRequestAnswerer: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// Requests whose response has not ended yet.
    private var unanswered = 0

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head = unwrapInboundIn(data) { unanswered += 1 }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { unanswered = max(0, unanswered - 1) }
        context.write(data, promise: promise)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError, unanswered == 0 else {
            context.fireErrorCaught(error)
            return
        }
        let reason = "malformed HTTP request (\(parserError)); the admin API takes GET, PUT, POST and DELETE with Pulsar's paths"
        let json = (try? JSONEncoder().encode(["reason": reason])) ?? Data(#"{"reason":"malformed HTTP request"}"#.utf8)
        let body = context.channel.allocator.buffer(bytes: json)
        let head = HTTPResponse(status: .badRequest, headerFields: [
            .contentType: "application/json", .contentLength: String(body.readableBytes), .connection: "close",
        ])
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(body)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in context.close(promise: nil) }
    }
}
