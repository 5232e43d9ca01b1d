import AdminAPI
import BrokerCore
import ManagedLedger
import BrokerServer
import Dispatch
import HTTPTypes
import Hummingbird
import LedgerStorage
import Logging
import Metadata
import NIOCore
import NIOEmbedded
import Prometheus
import PulsarProtocol
import KafkaProtocol
import Schemas

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
    /// The storage node's journal / entry log / index readers, the metadata log reader, the
    /// stored entry header reader, and the schema registry's definition readers.
    case records
    /// The Kafka endpoint's request header and message readers.
    case kafka

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
        case .kafka: KafkaProtocolFuzzing.decodeRequest(bytes)
        case .records:
            LedgerStorageFuzzing.readFiles(bytes)
            MetadataFuzzing.scanLog(bytes)
            BrokerCoreFuzzing.decodeEntry(bytes)
            SchemaFuzzing.check(Array(bytes))
        }
    }
}

/// A schema definition from a client, as every type's reader takes it, then checked both ways
/// against a stored record schema (what a producer's PRODUCER with that schema runs).
enum SchemaFuzzing {
    static let stored = [SchemaVersionRecord(
        version: 0,
        definition: SchemaDefinition(type: .avro, data: Array(#"{"type":"record","name":"R","fields":[{"name":"a","type":["null","string"],"default":null}]}"#.utf8)),
        timestamp: 0)]

    static func check(_ bytes: [UInt8]) {
        for type in [SchemaType.avro, .json, .protobufNative, .keyValue, .string] {
            let definition = SchemaDefinition(type: type, data: bytes, properties: type == .keyValue ? ["value.schema.type": "AVRO"] : [:])
            guard (try? SchemaRules.validate(definition)) != nil else { continue }
            let versions = type == .avro ? stored : []
            _ = try? SchemaRules.place(definition, in: versions, strategy: .fullTransitive)
            _ = try? SchemaRules.checkConsumer(definition, against: versions, strategy: .full)
        }
    }
}

/// One admin request through the real router's responder (no socket, no test framework) over a
/// broker on in-memory storage. Waits for the answer on the calling thread, which is the fuzzer's
/// (never an event loop).
///
/// Not Hummingbird's `RouterTestFramework`: it makes a channel per request that it never closes,
/// about 5 KiB a request that a long run cannot give back (1 M inputs took 8 GiB; the real HTTP
/// server, measured the same way, stays flat). One thread-safe testing channel per broker instead.
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
        let body = newline < rest.endIndex ? ByteBuffer(bytes: rest[(newline + 1)...]) : ByteBuffer()
        var headers = HTTPFields()
        headers[.contentLength] = "\(body.readableBytes)"
        let request = Hummingbird.Request(
            head: HTTPRequest(method: method, scheme: "http", authority: "localhost", path: path, headerFields: headers),
            body: RequestBody(buffer: body))
        let (responder, channel) = await SharedBroker.shared.responder()
        let context = AdminRequestContext(source: ApplicationRequestContextSource(channel: channel, logger: quiet))
        let response: Response
        do {
            response = try await responder.respond(to: request, context: context)
        } catch {
            preconditionFailure("\(method) \(path): the router threw \(error) instead of answering")
        }
        try? await response.body.write(DiscardingWriter())
        // Every error answer carries Pulsar's JSON `reason`.
        if response.status.code >= 400, response.status.code != 404 || method != .head {
            precondition(
                response.headers[.contentType]?.contains("json") ?? false,
                "\(method) \(path) answered \(response.status) without a JSON reason")
        }
    }

    /// Takes a response body as a server would write it, and drops it.
    struct DiscardingWriter: ResponseBodyWriter {
        func write(_ buffer: ByteBuffer) async throws {}
        consuming func finish(_ trailingHeaders: HTTPFields?) async throws {}
    }

    /// One broker and router for `inputsPerBroker` inputs in a row (a broker per input spent most
    /// of the time starting it), then a fresh one, so what inputs create (tenants, namespaces,
    /// topics) stays bounded.
    actor SharedBroker {
        static let shared = SharedBroker()
        static let inputsPerBroker = 500
        private var current: (broker: BrokerService, responder: RouterResponder<AdminRequestContext>, channel: NIOAsyncTestingChannel)?
        private var inputs = 0

        func responder() async -> (RouterResponder<AdminRequestContext>, any Channel) {
            inputs += 1
            if let current, inputs <= Self.inputsPerBroker { return (current.responder, current.channel) }
            if let current {
                await current.broker.shutdown()
                _ = try? await current.channel.finish()
            }
            inputs = 1
            let broker = BrokerService(
                configuration: BrokerConfiguration(), store: LocalLedgerClient(store: InMemoryLedgerStore()), metadata: InMemoryMetadataStore(),
                eventLoopGroup: NIOSingletons.posixEventLoopGroup, logger: quiet)
            try? await broker.bootstrap()
            let router = AdminRouter.makeRouter(
                broker: broker, metrics: MetricsCollector(broker: broker, registry: PrometheusCollectorRegistry()))
            let next = (broker: broker, responder: router.buildResponder(), channel: NIOAsyncTestingChannel())
            current = next
            return (next.responder, next.channel)
        }
    }

    static let quiet = Logger(label: "fuzz") { _ in SwiftLogNoOpLogHandler() }
}
