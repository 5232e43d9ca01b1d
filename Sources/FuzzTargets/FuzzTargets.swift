import AdminAPI
import BrokerCore
import BrokerServer
import Dispatch
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import LedgerStorage
import Logging
import Metadata
import NIOCore
import Prometheus
import PulsarProtocol

/// The fuzz targets: each takes arbitrary bytes and runs them through one reader of untrusted
/// input (`scripts/fuzz` runs them under libFuzzer; `FuzzTargetsTests` replays the seed corpus and
/// every kept crash). A target must return for every input: a trap is a bug.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// The Pulsar frame decoder, whole and dripped, with the SEND and metadata readers behind it.
    case frame
    /// The hand-written hot-path command readers (SEND, SEND_RECEIPT, MESSAGE, message ids).
    case hotPath = "hot-path"
    /// The connection state machine fed the commands decoded from the bytes.
    case connection
    /// The admin REST routes: the first byte picks the method, the first line is the path, the rest the body.
    case rest
    /// The storage node's journal / entry log / index readers, the metadata log reader and the
    /// stored entry header reader.
    case records

    /// Runs one input and waits for it on the calling thread: for libFuzzer's thread, never for a
    /// thread of Swift's cooperative pool (the REST target would wait for a task of its own there).
    public func run(_ bytes: UnsafeRawBufferPointer) {
        guard self == .rest else { return runSynchronously(bytes) }
        let input = Array(bytes)
        let done = DispatchSemaphore(value: 0)
        Task {
            await RESTFuzzing.request(input)
            done.signal()
        }
        done.wait()
    }

    /// Runs one input from async code (the corpus tests).
    public func run(_ bytes: [UInt8]) async {
        if self == .rest { return await RESTFuzzing.request(bytes) }
        bytes.withUnsafeBytes { runSynchronously($0) }
    }

    private func runSynchronously(_ bytes: UnsafeRawBufferPointer) {
        switch self {
        case .frame: PulsarProtocolFuzzing.decodeFrames(bytes)
        case .hotPath: PulsarProtocolFuzzing.decodeHotPathCommands(bytes)
        case .connection: BrokerServerFuzzing.connectionCommands(bytes)
        case .rest: preconditionFailure("the REST target runs through run(_:)")
        case .records:
            LedgerStorageFuzzing.readFiles(bytes)
            MetadataFuzzing.scanLog(bytes)
            BrokerCoreFuzzing.decodeEntry(bytes)
        }
    }
}

/// One admin request through the real router (Hummingbird's in-process router test framework, no
/// socket) over a broker on in-memory storage. Waits for the answer on the calling thread, which
/// is the fuzzer's (never an event loop).
enum RESTFuzzing {
    static let methods: [HTTPRequest.Method] = [.get, .put, .post, .delete, .head, .patch, .options]

    static func request(_ bytes: [UInt8]) async {
        guard let first = bytes.first else { return }
        let method = methods[Int(first) % methods.count]
        let rest = bytes.dropFirst()
        let newline = rest.firstIndex(of: UInt8(ascii: "\n")) ?? rest.endIndex
        // A real HTTP parser hands the router only visible ASCII in a path.
        var path = String(decoding: rest[rest.startIndex..<newline].filter { (0x21...0x7e).contains($0) }, as: UTF8.self)
        if !path.hasPrefix("/") { path = "/" + path }
        let body = newline < rest.endIndex ? ByteBuffer(bytes: rest[(newline + 1)...]) : nil
        let request = Request(method: method, path: path, body: body)
        do {
            let app = await SharedBroker.shared.application()
            _ = try? await app.test(.router) { client in
                let response = try await client.executeRequest(
                    uri: request.path, method: request.method, headers: [:], body: request.body)
                // Every error answer carries Pulsar's JSON `reason`.
                if response.status.code >= 400, response.status.code != 404 || request.method != .head {
                    precondition(
                        response.headers[.contentType]?.contains("json") ?? false,
                        "\(request.method) \(request.path) answered \(response.status) without a JSON reason")
                }
            }
        }
    }

    /// One broker and router for `inputsPerBroker` inputs in a row (a broker per input spent most
    /// of the time starting it), then a fresh one, so what inputs create (tenants, namespaces,
    /// topics) stays bounded.
    actor SharedBroker {
        static let shared = SharedBroker()
        static let inputsPerBroker = 500
        private var current: (broker: BrokerService, app: Application<RouterResponder<BasicRequestContext>>)?
        private var inputs = 0

        func application() async -> Application<RouterResponder<BasicRequestContext>> {
            inputs += 1
            if let current, inputs <= Self.inputsPerBroker { return current.app }
            if let current { await current.broker.shutdown() }
            inputs = 1
            let broker = BrokerService(
                configuration: BrokerConfiguration(), store: InMemoryLedgerStore(), metadata: InMemoryMetadataStore(),
                eventLoopGroup: NIOSingletons.posixEventLoopGroup, logger: quiet)
            try? await broker.bootstrap()
            let router = AdminRouter.makeRouter(
                broker: broker, metrics: MetricsCollector(broker: broker, registry: PrometheusCollectorRegistry()))
            let app = Application(router: router, logger: quiet)
            current = (broker, app)
            return app
        }
    }

    struct Request: Sendable {
        var method: HTTPRequest.Method
        var path: String
        var body: ByteBuffer?
    }

    static let quiet = Logger(label: "fuzz") { _ in SwiftLogNoOpLogHandler() }
}
