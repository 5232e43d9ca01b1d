import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// The S3 driver's objects (`managedLedgerOffloadDriver=aws-s3`): objects in a bucket of any
/// S3-compatible server (`s3ManagedLedgerOffloadServiceEndpoint`), path-style addressed
/// (`endpoint/bucket/key`), every request signed with SigV4. Uploads of more than one part go
/// through S3's multipart upload (parts of at least 5 MiB, buffered one at a time), smaller ones
/// as one PUT; reads are ranged GETs. Requests that fail for the network, a 5xx or a 429 are
/// retried with doubling back-off (`maxAttempts`). Thread-safe.
public final class S3ObjectStore: ObjectStore {
    public let endpoint: URL
    public let bucket: String
    private let signer: SigV4Signer
    private let client: HTTPClient
    public let maxAttempts: Int
    /// S3's smallest part (but the last) of a multipart upload.
    public static let partBytes = 5 * 1024 * 1024
    /// The most bytes one response body is collected to (a block, or an index).
    static let maxResponseBytes = 256 * 1024 * 1024

    public init(endpoint: URL, bucket: String, signer: SigV4Signer, maxAttempts: Int = 5) throws(TieredStorageError) {
        guard let scheme = endpoint.scheme, scheme == "http" || scheme == "https", endpoint.host != nil else {
            throw TieredStorageError(.invalidArgument, "s3ManagedLedgerOffloadServiceEndpoint '\(endpoint)' is not an http(s) URL")
        }
        guard !bucket.isEmpty, !bucket.contains("/") else {
            throw TieredStorageError(.invalidArgument, "s3ManagedLedgerOffloadBucket '\(bucket)' cannot name a bucket")
        }
        self.endpoint = endpoint
        self.bucket = bucket
        self.signer = signer
        self.maxAttempts = max(maxAttempts, 1)
        client = Self.httpClient
    }

    /// One client for every S3 store of the process (never shut down: it lives as long as the
    /// process). A server that does not answer fails a request within seconds (`connect`), so
    /// the retries below, and the reader's, run instead of one long wait; `read` bounds a
    /// response that stops halfway.
    static let httpClient: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: .seconds(2), read: .seconds(30))
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }()

    struct Response {
        var status: HTTPResponseStatus
        var headers: HTTPHeaders
        var body: ByteBuffer
    }

    /// One signed request, retried while it fails for a reason a retry can fix.
    func send(
        _ method: HTTPMethod, key: String?, query: [(String, String)] = [], headers extra: [(String, String)] = [],
        body: ByteBuffer? = nil, accept: Set<UInt> = [200, 204, 206]
    ) async throws(TieredStorageError) -> Response {
        let path = "/\(bucket)" + (key.map { "/" + $0 } ?? "")
        let host = endpoint.port.map { "\(endpoint.host!):\($0)" } ?? endpoint.host!
        let payloadHash = body.map { buffer in buffer.withUnsafeReadableBytes { SigV4Signer.sha256Hex($0) } } ?? SigV4Signer.emptyPayloadHash
        let queryString = query.map { "\(SigV4Signer.uriEncode($0.0))=\(SigV4Signer.uriEncode($0.1))" }.joined(separator: "&")
        let encodedPath = path.split(separator: "/", omittingEmptySubsequences: false).map { SigV4Signer.uriEncode(String($0)) }.joined(separator: "/")
        let base = endpoint.absoluteString.hasSuffix("/") ? String(endpoint.absoluteString.dropLast()) : endpoint.absoluteString
        var lastFailure = "no attempt"
        for attempt in 0..<maxAttempts {
            if attempt > 0 { try? await Task.sleep(for: .milliseconds(100 << min(attempt - 1, 6))) }
            var request = HTTPClientRequest(url: base + encodedPath + (queryString.isEmpty ? "" : "?" + queryString))
            request.method = method
            var headers = [("host", host)] + extra
            headers += signer.signedHeaders(
                method: method.rawValue, path: path, query: query, headers: headers, payloadHash: payloadHash, date: Date())
            for (name, value) in headers where name != "host" { request.headers.add(name: name, value: value) }
            if let body { request.body = .bytes(body) }
            do {
                let response = try await client.execute(request, timeout: .seconds(60))
                let collected = try await response.body.collect(upTo: Self.maxResponseBytes)
                if accept.contains(response.status.code) {
                    return Response(status: response.status, headers: response.headers, body: collected)
                }
                let detail = collected.getString(at: collected.readerIndex, length: min(collected.readableBytes, 300)) ?? ""
                lastFailure = "\(method) \(path): HTTP \(response.status.code) \(detail)"
                if response.status.code == 404 { throw TieredStorageError(.notFound, lastFailure) }
                guard response.status.code >= 500 || response.status.code == 429 else {
                    throw TieredStorageError(.unavailable, lastFailure)
                }
            } catch let error as TieredStorageError {
                throw error
            } catch {
                lastFailure = "\(method) \(path): \(error)"
            }
        }
        throw TieredStorageError(.unavailable, "S3 at \(endpoint) failed \(maxAttempts) times, last: \(lastFailure)")
    }

    public func beginUpload(_ key: String) async throws(TieredStorageError) -> any ObjectUpload {
        S3Upload(store: self, key: key)
    }

    public func read(_ key: String, offset: Int64, length: Int) async throws(TieredStorageError) -> ByteBuffer {
        guard length > 0 else { return ByteBuffer() }
        return try await send(.GET, key: key, headers: [("range", "bytes=\(offset)-\(offset + Int64(length) - 1)")]).body
    }

    public func size(of key: String) async throws(TieredStorageError) -> Int64? {
        do {
            let response = try await send(.HEAD, key: key)
            return response.headers.first(name: "content-length").flatMap { Int64($0) }
        } catch where error.code == .notFound {
            return nil
        }
    }

    public func delete(_ key: String) async throws(TieredStorageError) {
        do {
            _ = try await send(.DELETE, key: key)
        } catch where error.code == .notFound {
            return
        }
    }
}

/// One S3 object being written: bytes buffered up to a part, a multipart upload started at the
/// first full part; calls come one at a time.
final class S3Upload: ObjectUpload, @unchecked Sendable {
    private let store: S3ObjectStore
    private let key: String
    private var buffered = ByteBuffer()
    private var uploadID: String?
    private var etags: [String] = []

    init(store: S3ObjectStore, key: String) {
        self.store = store
        self.key = key
    }

    func write(_ part: ByteBuffer) async throws(TieredStorageError) {
        buffered.writeImmutableBuffer(part)
        while buffered.readableBytes >= S3ObjectStore.partBytes {
            try await uploadPart(buffered.readSlice(length: S3ObjectStore.partBytes)!)
            buffered.discardReadBytes()
        }
    }

    private func uploadPart(_ bytes: ByteBuffer) async throws(TieredStorageError) {
        if uploadID == nil {
            let response = try await store.send(.POST, key: key, query: [("uploads", "")])
            guard let id = Self.element("UploadId", in: response.body) else {
                throw TieredStorageError(.unavailable, "S3 started no multipart upload for \(key): no UploadId in its answer")
            }
            uploadID = id
        }
        let response = try await store.send(
            .PUT, key: key, query: [("partNumber", "\(etags.count + 1)"), ("uploadId", uploadID!)], body: bytes)
        guard let etag = response.headers.first(name: "etag") else {
            throw TieredStorageError(.unavailable, "S3 gave no ETag for part \(etags.count + 1) of \(key)")
        }
        etags.append(etag)
    }

    func complete() async throws(TieredStorageError) {
        guard uploadID != nil else {
            _ = try await store.send(.PUT, key: key, body: buffered)
            return
        }
        if buffered.readableBytes > 0 { try await uploadPart(buffered) }
        var xml = "<CompleteMultipartUpload>"
        for (index, etag) in etags.enumerated() { xml += "<Part><PartNumber>\(index + 1)</PartNumber><ETag>\(etag)</ETag></Part>" }
        xml += "</CompleteMultipartUpload>"
        let response = try await store.send(.POST, key: key, query: [("uploadId", uploadID!)], body: ByteBuffer(string: xml))
        // S3 may answer 200 with an error document when the completion failed late.
        if Self.element("Code", in: response.body) != nil {
            throw TieredStorageError(.unavailable, "S3 did not complete the upload of \(key): \(response.body.getString(at: 0, length: response.body.readableBytes) ?? "")")
        }
    }

    func abort() async {
        guard let uploadID else { return }
        _ = try? await store.send(.DELETE, key: key, query: [("uploadId", uploadID)])
    }

    /// The text of the first `<name>` element of an XML answer.
    static func element(_ name: String, in body: ByteBuffer) -> String? {
        guard let text = body.getString(at: body.readerIndex, length: body.readableBytes),
              let open = text.range(of: "<\(name)>"), let close = text.range(of: "</\(name)>", range: open.upperBound..<text.endIndex)
        else { return nil }
        return String(text[open.upperBound..<close.lowerBound])
    }
}
