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
            data = String(decoding: record.data, as: UTF8.self)
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
            return SchemaDefinition(type: type, data: Array((schema ?? "").utf8), properties: properties ?? [:])
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
