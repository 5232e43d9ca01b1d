import Schemas
import Authentication
import BrokerCore
import ManagedLedger
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import PulsarProtocol

/// Limits of the HTTP endpoint.
public enum AdminHTTPLimits {
    /// Largest request body accepted (policies and message ids are small).
    public static let maxRequestBodyBytes = 64 * 1024
    /// An HTTP connection that sends no request for this long is closed.
    public static let idleConnectionTimeout = TimeAmount.seconds(30)
}

/// The HTTP routes: `/health`, `/metrics` and Apache Pulsar's `/admin/v2/...` REST API (same paths,
/// JSON shapes and error bodies). Stateless: every handler calls into `BrokerService`.
public enum AdminRouter {
    /// `authenticator`: checks each request's `Authorization` header once authentication is on
    /// (then the broker's `Authorizer` checks the path's `AdminAccess`).
    public static func makeRouter(
        broker: BrokerService, metrics: MetricsCollector, authenticator: Authenticator = .disabled, authenticateMetrics: Bool = false
    ) -> Router<AdminRequestContext> {
        let router = Router(context: AdminRequestContext.self)
        router.add(middleware: MetricsMiddleware())
        router.add(middleware: AdminErrorMiddleware())
        router.add(middleware: AdminAuthMiddleware(
            authenticator: authenticator, authorizer: broker.authorizer, authenticateMetrics: authenticateMetrics))
        router.get("/health") { _, _ -> String in "ok" }
        router.get("/metrics") { _, _ -> Response in
            let text = await metrics.scrape()
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
        }
        addTenantRoutes(router, broker)
        addClusterRoutes(router, broker)
        addReplicationRoutes(router, broker)
        addTransactionRoutes(router, broker)
        addNamespaceRoutes(router, broker)
        addPermissionRoutes(router, broker)
        addSchemaRoutes(router, broker)
        for domain in [TopicName.Domain.persistent, .nonPersistent] {
            addTopicRoutes(router, broker, domain)
        }
        return router
    }

    // MARK: tenants

    static func addTenantRoutes(_ router: Router<AdminRequestContext>, _ broker: BrokerService) {
        router.get("/admin/v2/tenants") { _, _ in try json(await broker.namespaces.tenants()) }
        router.get("/admin/v2/tenants/:tenant") { _, context in
            try json(await broker.namespaces.tenantInfo(parameter(context, "tenant")))
        }
        router.put("/admin/v2/tenants/:tenant") { request, context in
            let info = try await decodeBody(TenantInfo.self, request, default: TenantInfo())
            try await broker.namespaces.createTenant(parameter(context, "tenant"), info: info)
            return noContent()
        }
        router.post("/admin/v2/tenants/:tenant") { request, context in
            let info = try await decodeBody(TenantInfo.self, request)
            try await broker.namespaces.updateTenant(parameter(context, "tenant"), info: info)
            return noContent()
        }
        router.delete("/admin/v2/tenants/:tenant") { _, context in
            try await broker.namespaces.deleteTenant(parameter(context, "tenant"))
            return noContent()
        }
    }

    // MARK: namespaces

    static func addNamespaceRoutes(_ router: Router<AdminRequestContext>, _ broker: BrokerService) {
        let base = "/admin/v2/namespaces/:tenant/:namespace"
        router.get("/admin/v2/namespaces/:tenant") { _, context in
            try json(await broker.namespaces.list(ofTenant: parameter(context, "tenant")))
        }
        router.put(RouterPath(base)) { request, context in
            let policies = try await decodeBody(NamespacePolicies.self, request, default: NamespacePolicies())
            try await broker.namespaces.create(namespace(context), policies: policies)
            return noContent()
        }
        router.get(RouterPath(base)) { _, context in try json(await broker.namespaces.policies(namespace(context))) }
        router.delete(RouterPath(base)) { _, context in
            try await broker.namespaces.delete(namespace(context))
            return noContent()
        }

        /// GET / POST / DELETE of one policy field.
        func policy<Value: Codable & Sendable>(
            _ path: String, _ keyPath: WritableKeyPath<NamespacePolicies, Value?> & Sendable, setMethods: [HTTPRequest.Method] = [.post]
        ) {
            router.get(RouterPath("\(base)/\(path)")) { _, context in
                try json(await broker.namespaces.policies(namespace(context))[keyPath: keyPath])
            }
            for method in setMethods {
                router.on(RouterPath("\(base)/\(path)"), method: method) { request, context in
                    let value = try await decodeBody(Value.self, request)
                    try await broker.namespaces.updatePolicies(namespace(context)) { $0[keyPath: keyPath] = value }
                    return noContent()
                }
            }
            router.delete(RouterPath("\(base)/\(path)")) { _, context in
                try await broker.namespaces.updatePolicies(namespace(context)) { $0[keyPath: keyPath] = nil }
                return noContent()
            }
        }
        policy("retention", \.retention)
        policy("messageTTL", \.messageTTLSeconds)
        policy("autoTopicCreation", \.autoTopicCreation)
        policy("deduplication", \.deduplicationEnabled)
        policy("maxProducersPerTopic", \.maxProducersPerTopic)
        policy("maxConsumersPerTopic", \.maxConsumersPerTopic)
        policy("persistence", \.persistence)
        policy("publishRate", \.publishRate)
        policy("dispatchRate", \.dispatchRate)
        policy("maxTopicsPerNamespace", \.maxTopicsPerNamespace)
        policy("compactionThreshold", \.compactionThreshold, setMethods: [.put, .post])
        // Unset, the threshold reads -1 (Pulsar's default); the lag reads null (the broker's applies).
        router.get(RouterPath("\(base)/offloadThreshold")) { _, context in
            try json(await broker.namespaces.policies(namespace(context)).offloadThreshold ?? -1)
        }
        router.put(RouterPath("\(base)/offloadThreshold")) { request, context in
            let value = try await decodeBody(Int64.self, request)
            try await broker.namespaces.updatePolicies(namespace(context)) { $0.offloadThreshold = value }
            return noContent()
        }
        policy("offloadDeletionLagMs", \.offloadDeletionLagMs, setMethods: [.put])
        router.get(RouterPath("\(base)/offloadPolicies")) { _, context in
            try json(await broker.namespaces.policies(namespace(context)).offloadPolicies)
        }
        router.post(RouterPath("\(base)/offloadPolicies")) { request, context in
            let value = try await decodeBody(OffloadPolicies.self, request)
            try await broker.namespaces.updatePolicies(namespace(context)) { $0.offloadPolicies = value }
            return noContent()
        }
        router.delete(RouterPath("\(base)/removeOffloadPolicies")) { _, context in
            try await broker.namespaces.updatePolicies(namespace(context)) { $0.offloadPolicies = nil }
            return noContent()
        }

        router.get(RouterPath("\(base)/backlogQuotaMap")) { _, context in
            try json(await broker.namespaces.policies(namespace(context)).backlogQuotas)
        }
        router.post(RouterPath("\(base)/backlogQuota")) { request, context in
            let type = try backlogQuotaType(request)
            let quota = try await decodeBody(BacklogQuota.self, request)
            try await broker.namespaces.updatePolicies(namespace(context)) { $0.backlogQuotas[type.rawValue] = quota }
            return noContent()
        }
        router.delete(RouterPath("\(base)/backlogQuota")) { request, context in
            let type = try backlogQuotaType(request)
            try await broker.namespaces.updatePolicies(namespace(context)) { $0.backlogQuotas[type.rawValue] = nil }
            return noContent()
        }

        router.get(RouterPath("\(base)/schemaCompatibilityStrategy")) { _, context in
            try json(await broker.namespaces.policies(namespace(context)).schemaCompatibilityStrategy)
        }
        for method in [HTTPRequest.Method.put, .post] {
            router.on(RouterPath("\(base)/schemaCompatibilityStrategy"), method: method) { request, context in
                let strategy = try await decodeSchemaCompatibilityStrategy(request)
                try await broker.namespaces.updatePolicies(namespace(context)) { $0.schemaCompatibilityStrategy = strategy }
                return noContent()
            }
        }
        router.delete(RouterPath("\(base)/schemaCompatibilityStrategy")) { _, context in
            try await broker.namespaces.updatePolicies(namespace(context)) { $0.schemaCompatibilityStrategy = .undefined }
            return noContent()
        }
        // Unset, these answer what applies: the broker's isAllowAutoUpdateSchemaEnabled, and false.
        router.get(RouterPath("\(base)/isAllowAutoUpdateSchema")) { _, context in
            try json(await broker.namespaces.policies(namespace(context)).isAllowAutoUpdateSchema
                ?? broker.configuration.isAllowAutoUpdateSchemaEnabled)
        }
        router.get(RouterPath("\(base)/schemaValidationEnforced")) { _, context in
            try json(await broker.namespaces.policies(namespace(context)).schemaValidationEnforced)
        }
        router.post(RouterPath("\(base)/isAllowAutoUpdateSchema")) { request, context in
            let value = try await decodeBody(Bool.self, request)
            try await broker.namespaces.updatePolicies(namespace(context)) { $0.isAllowAutoUpdateSchema = value }
            return noContent()
        }
        router.post(RouterPath("\(base)/schemaValidationEnforced")) { request, context in
            let value = try await decodeBody(Bool.self, request)
            try await broker.namespaces.updatePolicies(namespace(context)) { $0.schemaValidationEnforced = value }
            return noContent()
        }
    }

    static func backlogQuotaType(_ request: Request) throws -> BacklogQuotaType {
        guard let raw = request.uri.queryParameters.get("backlogQuotaType") else { return .destinationStorage }
        guard let type = BacklogQuotaType(rawValue: raw) else {
            throw AdminError(
                status: .badRequest,
                reason: "Invalid backlogQuotaType '\(raw)': use \(BacklogQuotaType.allCases.map(\.rawValue).joined(separator: " or "))")
        }
        return type
    }

    /// Pulsar sends the strategy as a JSON string (`"FULL"`); a bare word is accepted too.
    static func decodeSchemaCompatibilityStrategy(_ request: Request) async throws -> SchemaCompatibilityStrategy {
        let body = try await collectBody(request)
        if let strategy = try? JSONDecoder().decode(SchemaCompatibilityStrategy.self, from: Data(body.readableBytesView)) {
            return strategy
        }
        let word = String(buffer: body).trimmingCharacters(in: .whitespacesAndNewlines)
        guard let strategy = SchemaCompatibilityStrategy(rawValue: word.uppercased()) else {
            throw AdminError(
                status: .badRequest,
                reason: "Invalid schema compatibility strategy '\(word)': use one of \(SchemaCompatibilityStrategy.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return strategy
    }

    // MARK: topics

    /// A message id in Pulsar's JSON (`MessageIdImpl`): `{"ledgerId": L, "entryId": E, "partitionIndex": P}`.
    struct MessageIDBody: Codable {
        var ledgerId: Int64
        var entryId: Int64
        var partitionIndex: Int32?

        /// `Long.MAX_VALUE` ids mean "latest", `-1` ids "earliest" (as Pulsar's `MessageId.latest/earliest`).
        var start: StartPosition {
            if ledgerId == Int64.max && entryId == Int64.max { return .latest }
            if ledgerId < 0 { return .earliest }
            return .at(Position(ledgerID: ledgerId, entryID: max(entryId, 0)))
        }
    }

    static func addTopicRoutes(_ router: Router<AdminRequestContext>, _ broker: BrokerService, _ domain: TopicName.Domain) {
        let namespaceBase = "/admin/v2/\(domain.rawValue)/:tenant/:namespace"
        let base = "\(namespaceBase)/:topic"
        let subscriptionBase = "\(base)/subscription/:subscription"

        router.get(RouterPath(namespaceBase)) { _, context in
            try json(await broker.listTopics(namespace: namespace(context), domain: domain))
        }
        router.get(RouterPath("\(namespaceBase)/partitioned")) { _, context in
            try json(await broker.listPartitionedTopics(namespace: namespace(context), domain: domain))
        }
        router.put(RouterPath(base)) { _, context in
            try await broker.createTopic(topicName(context, domain))
            return noContent()
        }
        router.delete(RouterPath(base)) { request, context in
            try await broker.deleteTopic(topicName(context, domain), force: flag(request, "force"))
            return noContent()
        }
        router.put(RouterPath("\(base)/partitions")) { request, context in
            let partitions = try await decodeBody(Int.self, request)
            try await broker.createPartitionedTopic(topicName(context, domain), partitions: partitions)
            return noContent()
        }
        router.post(RouterPath("\(base)/partitions")) { request, context in
            let partitions = try await decodeBody(Int.self, request)
            try await broker.updatePartitionedTopic(topicName(context, domain), partitions: partitions)
            return noContent()
        }
        router.get(RouterPath("\(base)/partitions")) { request, context in
            let name = try topicName(context, domain)
            // An http:// client's lookup of a topic that may not exist yet: as the binary
            // protocol's PARTITIONED_METADATA (0, or created partitioned when the policy says so).
            if flag(request, "checkAllowAutoCreation") {
                return try json(PartitionedTopicRecord(partitions: try await broker.partitionMetadata(name)))
            }
            return try json(await broker.partitionedTopicMetadata(name))
        }
        router.delete(RouterPath("\(base)/partitions")) { request, context in
            try await broker.deletePartitionedTopic(topicName(context, domain), force: flag(request, "force"))
            return noContent()
        }
        router.get(RouterPath("\(base)/stats")) { _, context in
            try json(TopicStats(await broker.topicStats(topicName(context, domain))))
        }
        router.get(RouterPath("\(base)/partitioned-stats")) { _, context in
            try json(PartitionedTopicStats(await broker.partitionedTopicStats(topicName(context, domain))))
        }
        router.get(RouterPath("\(base)/internalStats")) { _, context in
            try json(PersistentTopicInternalStats(await broker.topicInternalStats(topicName(context, domain))))
        }
        router.put(RouterPath("\(base)/compaction")) { _, context in
            try await broker.triggerCompaction(topicName(context, domain))
            return noContent()
        }
        router.get(RouterPath("\(base)/compaction")) { _, context in
            try json(LongRunningProcessStatus(await broker.compactionState(topicName(context, domain))))
        }
        router.put(RouterPath("\(base)/offload")) { request, context in
            let body = try await decodeBody(MessageIDBody.self, request, default: MessageIDBody(ledgerId: .max, entryId: .max))
            let before: Position? = switch body.start {
            case .latest: nil
            case .earliest: Position(ledgerID: -1, entryID: -1)
            case .at(let position): position
            }
            _ = try await broker.triggerOffload(topicName(context, domain), before: before)
            return noContent()
        }
        router.get(RouterPath("\(base)/offload")) { _, context in
            try json(OffloadProcessStatus(await broker.offloadStatus(topicName(context, domain))))
        }
        router.get(RouterPath("\(base)/subscriptions")) { _, context in
            try json(await broker.subscriptions(of: topicName(context, domain)))
        }
        router.put(RouterPath(subscriptionBase)) { request, context in
            let start: StartPosition
            if let word = request.uri.queryParameters.get("messageId") {
                start = try startPosition(word)
            } else {
                start = try await decodeBody(MessageIDBody.self, request, default: MessageIDBody(ledgerId: .max, entryId: .max)).start
            }
            try await broker.createSubscription(topicName(context, domain), subscription: parameter(context, "subscription"), start: start)
            return noContent()
        }
        router.delete(RouterPath(subscriptionBase)) { request, context in
            try await broker.deleteSubscription(
                topicName(context, domain), subscription: parameter(context, "subscription"), force: flag(request, "force"))
            return noContent()
        }
        router.post(RouterPath("\(subscriptionBase)/skip/:count")) { _, context in
            try await broker.skipMessages(
                topicName(context, domain), subscription: parameter(context, "subscription"), count: number(context, "count"))
            return noContent()
        }
        router.post(RouterPath("\(subscriptionBase)/skip_all")) { _, context in
            try await broker.clearBacklog(topicName(context, domain), subscription: parameter(context, "subscription"))
            return noContent()
        }
        router.post(RouterPath("\(subscriptionBase)/resetcursor/:timestamp")) { _, context in
            try await broker.resetCursor(
                topicName(context, domain), subscription: parameter(context, "subscription"),
                publishTimeMs: number(context, "timestamp"))
            return noContent()
        }
        router.post(RouterPath("\(subscriptionBase)/resetcursor")) { request, context in
            let messageID = try await decodeBody(MessageIDBody.self, request)
            try await broker.resetCursor(
                topicName(context, domain), subscription: parameter(context, "subscription"), to: messageID.start)
            return noContent()
        }
        router.post(RouterPath("\(subscriptionBase)/expireMessages/:seconds")) { _, context in
            try await broker.expireMessages(
                topicName(context, domain), subscription: parameter(context, "subscription"),
                olderThanSeconds: number(context, "seconds"))
            return noContent()
        }
        router.get(RouterPath("\(subscriptionBase)/position/:position")) { _, context in
            let peeked = try await broker.peekMessage(
                topicName(context, domain), subscription: parameter(context, "subscription"), nth: number(context, "position"))
            return peekResponse(peeked)
        }
    }

    /// A peeked message as Pulsar answers it: the payload as the body, the metadata in `X-Pulsar-*` headers.
    static func peekResponse(_ peeked: PeekedEntry) -> Response {
        var headers: HTTPFields = [.contentType: "application/octet-stream"]
        func add(_ name: String, _ value: String) {
            if let field = HTTPField.Name(name) { headers[field] = value }
        }
        add("X-Pulsar-Message-ID", "\(peeked.position.ledgerID):\(peeked.position.entryID):\(peeked.partitionIndex)")
        add("X-Pulsar-publish-time", "\(peeked.entry.attributes.publishTimeMs)")
        var payload = peeked.entry.body
        // The Pulsar edge stores `[u32 crc32c][u32 metadataSize][MessageMetadata][payload]`.
        if payload.readInteger(as: UInt32.self) != nil,
           let metadata = try? PayloadSection(checksum: nil, checksummedBytes: payload).decodeMetadata(),
           let metadataSize = payload.readInteger(as: UInt32.self), payload.readableBytes >= Int(metadataSize)
        {
            payload.moveReaderIndex(forwardBy: Int(metadataSize))
            add("X-Pulsar-producer-name", metadata.producerName)
            add("X-Pulsar-sequence-id", "\(metadata.sequenceID)")
            if metadata.hasNumMessagesInBatch { add("X-Pulsar-num-batch-msgs", "\(metadata.numMessagesInBatch)") }
            if metadata.hasPartitionKey { add("X-Pulsar-partition-key", metadata.partitionKey) }
            if metadata.hasCompression, metadata.compression != .none { add("X-Pulsar-compression", "\(metadata.compression)") }
            for property in metadata.properties { add("X-Pulsar-PROPERTY-\(property.key)", property.value) }
        }
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: payload))
    }

    // MARK: helpers

    static func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Response(
            status: status, headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: try encoder.encode(value))))
    }

    static func noContent() -> Response { Response(status: .noContent) }

    static func collectBody(_ request: Request) async throws -> ByteBuffer {
        do {
            return try await request.body.collect(upTo: AdminHTTPLimits.maxRequestBodyBytes)
        } catch {
            throw AdminError(status: .contentTooLarge, reason: "Request body is larger than \(AdminHTTPLimits.maxRequestBodyBytes) bytes")
        }
    }

    /// Decodes a JSON body; an empty body gives `defaultValue`, or 400 when there is none.
    static func decodeBody<T: Decodable>(_ type: T.Type, _ request: Request, default defaultValue: T? = nil) async throws -> T {
        let body = try await collectBody(request)
        if body.readableBytes == 0 || String(buffer: body).allSatisfy(\.isWhitespace) {
            if let defaultValue { return defaultValue }
            throw AdminError(status: .badRequest, reason: "Request body is empty: expected JSON \(type)")
        }
        do {
            return try JSONDecoder().decode(type, from: Data(body.readableBytesView))
        } catch let error as DecodingError {
            throw AdminError(status: .badRequest, reason: "Invalid JSON for \(type): \(AdminError.describe(error))")
        }
    }

    static func parameter(_ context: AdminRequestContext, _ name: String) throws -> String {
        let raw = try context.parameters.require(name)
        guard let decoded = raw.removingPercentEncoding, !decoded.isEmpty else {
            throw AdminError(status: .badRequest, reason: "Invalid \(name) in the path: '\(raw)'")
        }
        return decoded
    }

    static func namespace(_ context: AdminRequestContext) throws -> String {
        "\(try parameter(context, "tenant"))/\(try parameter(context, "namespace"))"
    }

    static func topicName(_ context: AdminRequestContext, _ domain: TopicName.Domain) throws -> TopicName {
        let raw = "\(domain.rawValue)://\(try namespace(context))/\(try parameter(context, "topic"))"
        return try TopicName(parsing: raw)
    }

    static func number(_ context: AdminRequestContext, _ name: String) throws -> Int64 {
        let raw = try parameter(context, name)
        guard let value = Int64(raw) else {
            throw AdminError(status: .badRequest, reason: "Invalid \(name): '\(raw)' is not a number")
        }
        return value
    }

    static func flag(_ request: Request, _ name: String) -> Bool {
        request.uri.queryParameters.get(name).map { $0 == "true" || $0 == "1" } ?? false
    }

    /// `earliest`, `latest` or `ledgerId:entryId`.
    static func startPosition(_ word: String) throws -> StartPosition {
        switch word {
        case "earliest": return .earliest
        case "latest": return .latest
        default:
            let parts = word.split(separator: ":")
            guard parts.count >= 2, let ledgerID = Int64(parts[0]), let entryID = Int64(parts[1]), ledgerID >= 0, entryID >= 0 else {
                throw AdminError(status: .badRequest, reason: "Invalid message id '\(word)': use earliest, latest or ledgerId:entryId")
            }
            return .at(Position(ledgerID: ledgerID, entryID: entryID))
        }
    }
}
