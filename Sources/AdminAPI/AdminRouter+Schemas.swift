import BrokerCore
import Foundation
import Hummingbird
import ManagedLedger
import Schemas

/// Pulsar's schema paths (`SchemasResource`): `/admin/v2/schemas/{tenant}/{namespace}/{topic}/…`.
extension AdminRouter {
    /// Pulsar's `GetSchemaResponse`.
    struct SchemaResponse: Codable {
        var version: Int64
        var type: SchemaType
        var timestamp: Int64
        var data: String
        var properties: [String: String]

        init(_ record: SchemaVersionRecord) {
            version = record.version
            type = record.type
            timestamp = record.timestamp
            data = record.type == .keyValue
                ? KeyValueJSON.render(record.definition) : String(decoding: record.data, as: UTF8.self)
            properties = record.properties
        }
    }

    /// Pulsar's `PostSchemaPayload`.
    struct SchemaPayload: Codable {
        var type: String
        var schema: String?
        var properties: [String: String]?

        func definition() throws -> SchemaDefinition {
            guard let type = SchemaType(rawValue: type.uppercased()) else {
                throw AdminError(
                    status: .unprocessableContent,
                    reason: "Invalid schema type '\(type)': use one of \(SchemaType.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            if type == .bytes {
                throw AdminError(status: .notAcceptable, reason: "Do not upload a BYTES schema, because it's the default schema type")
            }
            let text = schema ?? ""
            let data = type == .keyValue ? try KeyValueJSON.binary(text) : Array(text.utf8)
            return SchemaDefinition(type: type, data: data, properties: properties ?? [:])
        }
    }

    struct VersionResponse: Codable {
        var version: Int64
    }

    /// Pulsar's `PostSchemaResponse`: the version as Jackson writes a `LongSchemaVersion`.
    struct PostSchemaResponse: Codable {
        var version: VersionResponse
    }

    struct CompatibilityResponse: Codable {
        var compatibility: Bool
        var schemaCompatibilityStrategy: SchemaCompatibilityStrategy
    }

    static func schemaName(_ context: AdminRequestContext) throws -> (TopicName, String) {
        let topic = try topicName(context, .persistent)
        return (topic, topic.schemaName)
    }

    static func schemaNotFound() -> AdminError { AdminError(status: .notFound, reason: "Schema not found") }

    static func addSchemaRoutes(_ router: Router<AdminRequestContext>, _ broker: BrokerService) {
        let base = "/admin/v2/schemas/:tenant/:namespace/:topic"

        router.get(RouterPath("\(base)/schema")) { _, context in
            let (_, name) = try schemaName(context)
            guard let latest = try await broker.schemas.versions(name).last, !latest.deleted else { throw schemaNotFound() }
            return try json(SchemaResponse(latest))
        }
        router.get(RouterPath("\(base)/schema/:version")) { _, context in
            let (_, name) = try schemaName(context)
            guard let record = try await broker.schemas.version(name, number(context, "version")) else { throw schemaNotFound() }
            return try json(SchemaResponse(record))
        }
        router.get(RouterPath("\(base)/versions")) { _, context in
            let (_, name) = try schemaName(context)
            return try json(["getSchemaResponses": try await broker.schemas.liveVersions(name).map(SchemaResponse.init)])
        }
        router.post(RouterPath("\(base)/schema")) { request, context in
            let (topic, name) = try schemaName(context)
            let definition = try await decodeBody(SchemaPayload.self, request).definition()
            let policy = try await broker.schemaPolicy(topic, fresh: true)
            // The admin API adds versions whatever isAllowAutoUpdateSchema says, as Pulsar's does.
            let version = try await broker.schemas.put(definition, schemaName: name, strategy: policy.strategy, user: context.role ?? "")
            return try json(PostSchemaResponse(version: VersionResponse(version: version)))
        }
        router.delete(RouterPath("\(base)/schema")) { request, context in
            let (_, name) = try schemaName(context)
            let version = try await broker.schemas.delete(name, force: flag(request, "force"), user: context.role ?? "")
            return try json(VersionResponse(version: version))
        }
        router.post(RouterPath("\(base)/compatibility")) { request, context in
            let (topic, name) = try schemaName(context)
            let definition = try await decodeBody(SchemaPayload.self, request).definition()
            let strategy = try await broker.schemaPolicy(topic, fresh: true).strategy
            try await broker.schemas.checkCompatibility(definition, schemaName: name, strategy: strategy)
            return try json(CompatibilityResponse(compatibility: true, schemaCompatibilityStrategy: strategy), status: .accepted)
        }
        // The topic-level strategy (Pulsar's topic policy): over the namespace's.
        for domain in [TopicName.Domain.persistent, .nonPersistent] {
            let path = RouterPath("/admin/v2/\(domain.rawValue)/:tenant/:namespace/:topic/schemaCompatibilityStrategy")
            router.get(path) { request, context in
                let topic = try topicName(context, domain)
                if flag(request, "applied") { return try json(try await broker.schemaPolicy(topic, fresh: true).strategy) }
                return try json(try await broker.schemas.topicStrategy(topic.schemaName) ?? .undefined)
            }
            router.put(path) { request, context in
                let topic = try topicName(context, domain)
                try await broker.schemas.setTopicStrategy(topic.schemaName, try await decodeSchemaCompatibilityStrategy(request))
                return noContent()
            }
            router.delete(path) { _, context in
                try await broker.schemas.setTopicStrategy(try topicName(context, domain).schemaName, nil)
                return noContent()
            }
        }
        router.post(RouterPath("\(base)/version")) { request, context in
            let (_, name) = try schemaName(context)
            let definition = try await decodeBody(SchemaPayload.self, request).definition()
            return try json(VersionResponse(version: try await broker.schemas.findVersion(definition, schemaName: name)))
        }
    }
}

/// A KEY_VALUE schema as the admin API shows it: `{"key": <definition>, "value": <definition>}`
/// (`""` for a part without one), and the binary layout the registry stores
/// (`[i32 length][key][i32 length][value]`).
enum KeyValueJSON {
    static func binary(_ text: String) throws -> [UInt8] {
        guard case .object(let object)? = JSONValue.parse(Array(text.utf8)), let key = object["key"], let value = object["value"] else {
            throw AdminError(status: .unprocessableContent, reason: "Invalid KEY_VALUE schema: expected {\"key\": <schema>, \"value\": <schema>}")
        }
        var data: [UInt8] = []
        for part in [key, value] {
            let bytes: [UInt8]
            switch part {
            case .string(let definition): bytes = Array(definition.utf8)
            default: bytes = Array(try JSONEncoder().encode(part))
            }
            data += withUnsafeBytes(of: UInt32(bytes.count).bigEndian, Array.init) + bytes
        }
        return data
    }

    static func render(_ definition: SchemaDefinition) -> String {
        guard let (key, value) = try? KeyValueSchema.split(definition) else { return "" }
        func part(_ bytes: [UInt8]) -> JSONValue {
            if bytes.isEmpty { return .string("") }
            return JSONValue.parse(bytes) ?? .string(String(decoding: bytes, as: UTF8.self))
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let object = JSONValue.object(["key": part(key.data), "value": part(value.data)])
        return (try? encoder.encode(object)).map { String(decoding: $0, as: UTF8.self) } ?? ""
    }
}
