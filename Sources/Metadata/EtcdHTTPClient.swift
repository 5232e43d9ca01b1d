import NIOCore
import NIOHTTP1
import NIOPosix

/// A minimal HTTP/1.1 client for etcd's JSON gateway: `POST path` with a JSON body, one TCP connection
/// per request, on swift-nio.
///
/// Why not Foundation's URLSession: on Linux (swift-corelibs-foundation, Swift 6.3) it stops the process
/// with `fatalError("Transfer completed, but there's no response.")` when a response ends with HTTP
/// trailers — and the gateway sends every error (lease not found, no leader, ...) as a chunked response
/// with a `Grpc-Trailer-Content-Type` trailer (swiftlang/swift-corelibs-foundation#5285). NIOHTTP1
/// decodes trailers properly.
///
/// A Sendable value; the event loop group is shared and not owned (NIO's singleton by default).
/// Connection reuse is left out on purpose (loopback/LAN etcd, a handful of requests per operation);
/// add a small pool if profiles show connection setup.
struct EtcdHTTPClient: Sendable {
    let host: String
    let port: Int
    let group: any EventLoopGroup
    let connectTimeout: Duration

    /// A response: status code and the whole body (trailers dropped).
    struct Response: Sendable {
        var status: Int
        var body: ByteBuffer
    }

    /// Why a request failed below HTTP.
    enum TransportError: Error, CustomStringConvertible {
        /// No connection could be made: the request certainly was not sent.
        case connectFailed(String)
        /// The connection closed before the whole request was written: etcd cannot have acted on it
        /// (it reads a request to its `Content-Length` before acting).
        case closedBeforeSent(String)
        /// The connection broke or timed out after the request may have been sent.
        case connectionLost(String)
        /// A response larger than the limit.
        case responseTooLarge(Int)

        var description: String {
            switch self {
            case .connectFailed(let reason): return "cannot connect (\(reason))"
            case .closedBeforeSent(let reason): return "connection closed before the request was sent (\(reason))"
            case .connectionLost(let reason): return "connection lost (\(reason))"
            case .responseTooLarge(let limit): return "response larger than \(limit) bytes"
            }
        }
    }

    /// POSTs `body` and returns the whole response, failing after `timeout`.
    func post(_ path: String, body: [UInt8], timeout: Duration) async throws -> Response {
        try await withThrowingTaskGroup(of: Response?.self) { group in
            group.addTask {
                try await exchange(path, body: body) { head, inbound in
                    var collected = ByteBufferAllocator().buffer(capacity: 512)
                    while let part = try await inbound.next() {
                        switch part {
                        case .head:
                            continue
                        case .body(var chunk):
                            guard collected.readableBytes + chunk.readableBytes <= EtcdLimits.maxResponseBytes else {
                                throw TransportError.responseTooLarge(EtcdLimits.maxResponseBytes)
                            }
                            collected.writeBuffer(&chunk)
                        case .end:
                            return Response(status: Int(head.status.code), body: collected)
                        }
                    }
                    throw TransportError.connectionLost("etcd closed the connection before the response ended")
                }
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let response = first else {
                throw TransportError.connectionLost("no response within \(timeout)")
            }
            return response
        }
    }

    /// POSTs `body` and hands each newline-terminated line of the (streamed) response body to `onLine`
    /// until the response ends, the connection breaks (throws) or the task is cancelled.
    /// A non-200 response is returned as the first and only line after `onStatus` sees its status.
    func streamLines(
        _ path: String, body: [UInt8], onStatus: (Int) throws -> Void, onLine: ([UInt8]) async throws -> Void
    ) async throws {
        try await exchange(path, body: body) { head, inbound in
            try onStatus(Int(head.status.code))
            var pending: [UInt8] = []
            while let part = try await inbound.next() {
                switch part {
                case .head:
                    continue
                case .body(let chunk):
                    pending.append(contentsOf: chunk.readableBytesView)
                    while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                        let line = Array(pending[..<newline])
                        pending.removeSubrange(...newline)
                        if !line.isEmpty { try await onLine(line) }
                    }
                    if pending.count > EtcdLimits.maxResponseBytes {
                        throw TransportError.responseTooLarge(EtcdLimits.maxResponseBytes)
                    }
                case .end:
                    if !pending.isEmpty { try await onLine(pending) }
                    return
                }
            }
            throw TransportError.connectionLost("etcd closed the stream")
        }
    }

    /// Connects, sends the request, waits for the response head and runs `handle` on the rest.
    private func exchange<Result: Sendable>(
        _ path: String, body: [UInt8],
        handle: (HTTPResponseHead, inout NIOAsyncChannelInboundStream<HTTPClientResponsePart>.AsyncIterator)
            async throws -> Result
    ) async throws -> Result {
        let channel: NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(.nanoseconds(Int64(connectTimeout.components.seconds) * 1_000_000_000
                    + connectTimeout.components.attoseconds / 1_000_000_000))
                .connect(host: host, port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(
                            wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw TransportError.connectFailed("\(error)")
        }
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "\(host):\(port)")
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(body.count))
        headers.add(name: "Connection", value: "close")
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: path, headers: headers)
        do {
            return try await channel.executeThenClose { inbound, outbound in
                // One batch, so the request goes out whole or not at all. (Written part by part, etcd
                // could answer and close — `Connection: close` — between the body and the end, and the
                // last write would fail for a request etcd did carry out.)
                do {
                    try await outbound.write(contentsOf: [
                        .head(head), .body(.byteBuffer(ByteBuffer(bytes: body))), .end(nil),
                    ])
                } catch {
                    // The fresh connection closed before the request was handed to it: etcd never saw
                    // it, so any request, idempotent or not, can be retried.
                    throw TransportError.closedBeforeSent("\(error)")
                }
                var iterator = inbound.makeAsyncIterator()
                guard case .head(let responseHead) = try await iterator.next() else {
                    throw TransportError.connectionLost("etcd closed the connection without a response")
                }
                return try await handle(responseHead, &iterator)
            }
        } catch let error as TransportError {
            throw error
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw TransportError.connectionLost("\(error)")
        }
    }
}
