import ArgumentParser
import Foundation
import Schemas

/// pulsar-admin's `schemas` verbs: `get`, `upload`, `delete`, `compatibility` (a topic's schema
/// registry through `/admin/v2/schemas/{tenant}/{namespace}/{topic}/…`).
struct SchemasCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "schemas", abstract: "Topics' schemas: get, upload, delete, compatibility.",
        subcommands: [Get.self, Upload.self, Delete.self, Compatibility.self])

    @OptionGroup var options: AdminOptions

    /// `/admin/v2/schemas/t/ns/topic` for a topic name in any of the CLI's forms (the domain
    /// does not matter: both share one schema).
    static func path(_ topic: String) throws -> String {
        let topicPath = try AdminArguments.topicPath(topic)
        let parts = topicPath.split(separator: "/", maxSplits: 3)  // admin, v2, domain, rest
        return "/admin/v2/schemas/\(parts[3])"
    }

    /// A schema file as pulsar-admin takes it: `{"type": "AVRO", "schema": "<definition>", "properties": {...}}`.
    /// For convenience `schema` may be the definition itself as a JSON object.
    static func payload(_ file: String) throws -> JSONValue {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: file))
        } catch {
            throw ValidationError("cannot read the schema file \(file): \(error.localizedDescription)")
        }
        guard case .object(var object)? = JSONValue.parse(data), object["type"]?.stringValue != nil else {
            throw ValidationError("\(file) is not a schema file: expected {\"type\": \"AVRO\", \"schema\": \"...\", \"properties\": {}}")
        }
        if let definition = object["schema"], definition.isContainer {
            let encoded = try JSONEncoder().encode(definition)
            object["schema"] = .string(String(decoding: encoded, as: UTF8.self))
        }
        return .object(object)
    }

    struct Get: AdminLeafCommand {
        static let configuration = CommandConfiguration(abstract: "Show a topic's latest schema, or one version of it.")
        @OptionGroup var options: AdminOptions
        @Argument var topic: String
        @Option(help: "The version to show (default: the latest).")
        var version: Int64?
        @Flag(help: "List every version since the last deletion instead.")
        var all = false
        func run(client: AdminClient) async throws {
            let base = try SchemasCommand.path(topic)
            let path = all ? "\(base)/versions" : version.map { "\(base)/schema/\($0)" } ?? "\(base)/schema"
            Printer.show(try await client.json("GET", path), options.output)
        }
    }

    struct Upload: AdminLeafCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a schema version to a topic (checked against the namespace's compatibility strategy).")
        @OptionGroup var options: AdminOptions
        @Argument var topic: String
        @Option(name: [.customShort("f"), .long], help: "The schema file: {\"type\": \"AVRO\", \"schema\": \"...\", \"properties\": {}}.")
        var filename: String
        func run(client: AdminClient) async throws {
            let answer = try await client.json("POST", "\(try SchemasCommand.path(topic))/schema", body: try SchemasCommand.payload(filename))
            Printer.show(answer?["version"] ?? answer, options.output)
        }
    }

    struct Delete: AdminLeafCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete a topic's schema (a tombstone version; --force removes every version).")
        @OptionGroup var options: AdminOptions
        @Argument var topic: String
        @Flag(name: [.customShort("f"), .long], help: "Remove the whole history; numbering starts again at 0.")
        var force = false
        func run(client: AdminClient) async throws {
            Printer.show(try await client.json("DELETE", "\(try SchemasCommand.path(topic))/schema?force=\(force)"), options.output)
        }
    }

    struct Compatibility: AdminLeafCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check whether a schema could be added to a topic (exits non-zero with the reason if not).")
        @OptionGroup var options: AdminOptions
        @Argument var topic: String
        @Option(name: [.customShort("f"), .long], help: "The schema file, as for upload.")
        var filename: String
        func run(client: AdminClient) async throws {
            Printer.show(
                try await client.json("POST", "\(try SchemasCommand.path(topic))/compatibility", body: try SchemasCommand.payload(filename)),
                options.output)
        }
    }
}

/// The topic-level schema compatibility strategy (over the namespace's).
struct TopicSetSchemaCompatibilityStrategy: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "set-schema-compatibility-strategy", abstract: "Set a topic's own schema compatibility strategy.")
    @OptionGroup var options: AdminOptions
    @Argument var topic: String
    @Option(name: [.customShort("s"), .long], help: "e.g. FULL, BACKWARD, FORWARD_TRANSITIVE, ALWAYS_COMPATIBLE.")
    var strategy: String
    func run(client: AdminClient) async throws {
        _ = try await client.json(
            "PUT", "\(try AdminArguments.topicPath(topic))/schemaCompatibilityStrategy", body: .string(strategy.uppercased()))
    }
}

struct TopicGetSchemaCompatibilityStrategy: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "get-schema-compatibility-strategy", abstract: "Show a topic's own strategy (UNDEFINED: none), or with --applied the one in force.")
    @OptionGroup var options: AdminOptions
    @Argument var topic: String
    @Flag(help: "The strategy in force: the topic's, the namespace's or the broker's.")
    var applied = false
    func run(client: AdminClient) async throws {
        Printer.show(try await client.json(
            "GET", "\(try AdminArguments.topicPath(topic))/schemaCompatibilityStrategy?applied=\(applied)"), options.output)
    }
}

struct TopicRemoveSchemaCompatibilityStrategy: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove-schema-compatibility-strategy", abstract: "Remove a topic's own strategy (the namespace's applies).")
    @OptionGroup var options: AdminOptions
    @Argument var topic: String
    func run(client: AdminClient) async throws {
        _ = try await client.json("DELETE", "\(try AdminArguments.topicPath(topic))/schemaCompatibilityStrategy")
    }
}
