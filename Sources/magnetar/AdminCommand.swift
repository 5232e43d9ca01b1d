import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import Schemas

/// `magnetar admin`: pulsar-admin's nouns and verbs over the REST API (`/admin/v2/...`).
struct AdminCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "admin",
        abstract: "Administer a broker over its REST API (pulsar-admin's nouns and verbs).",
        subcommands: [
            ClustersCommand.self, TenantsCommand.self, NamespacesCommand.self, TopicsCommand.self, SchemasCommand.self, BrokersCommand.self,
            BookiesCommand.self,
        ])

    // Declared here and in every subcommand: `--url`/`--output` may come before or after the nouns.
    @OptionGroup var options: AdminOptions
}

// MARK: - shared options, client, output

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case text
    case json
}

struct AdminOptions: ParsableArguments {
    @Option(help: "The broker's HTTP endpoint.")
    var url = "http://localhost:8080"

    @Option(name: [.customShort("o"), .long], help: "Output: text (tables) or json.")
    var output: OutputFormat = .text

    @OptionGroup var auth: AuthTokenOptions

    @OptionGroup var tls: TLSClientOptions
}

/// A failed admin call: the server's status and reason, or why the call could not be made.
struct AdminCLIError: Error, CustomStringConvertible {
    var description: String
}

/// The REST client (AsyncHTTPClient): one request per call, JSON in and out, errors carry the
/// server's `reason`. `https://` URLs verify the broker against `tls` (`--tls-trust-cert`).
struct AdminClient {
    static let timeoutSeconds: Int64 = 30
    /// Largest answer read (a topic's full stats, a long list).
    static let maxResponseBytes = 64 * 1024 * 1024
    var baseURL: String
    /// Sent as `Authorization: Bearer <token>`.
    var authToken: String? = nil
    var tls = TLSClientOptions()

    struct Reply {
        var status: Int
        var body: Data
        var headers: [String: String]
    }

    func call(_ method: String, _ path: String, body: Data? = nil) async throws -> Reply {
        let url = baseURL.trimmingCharacters(in: CharacterSet(charactersIn: "/")) + path
        guard URL(string: url) != nil, url.hasPrefix("http://") || url.hasPrefix("https://") else {
            throw AdminCLIError(description: "invalid URL: \(url) (use http://host:port or https://host:port)")
        }
        var configuration = HTTPClient.Configuration()
        configuration.tlsConfiguration = try tls.clientConfiguration()
        configuration.timeout = .init(connect: .seconds(10), read: .seconds(Self.timeoutSeconds))
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        defer { _ = client.shutdown() }
        var request = HTTPClientRequest(url: url)
        request.method = HTTPMethod(rawValue: method)
        if let authToken { request.headers.add(name: "Authorization", value: "Bearer \(authToken)") }
        if let body {
            request.body = .bytes(ByteBuffer(data: body))
            request.headers.add(name: "Content-Type", value: "application/json")
        }
        let status: Int
        let data: Data
        var headers: [String: String] = [:]
        do {
            let response = try await client.execute(request, timeout: .seconds(Self.timeoutSeconds))
            status = Int(response.status.code)
            for header in response.headers { headers[header.name.lowercased()] = header.value }
            data = Data(buffer: try await response.body.collect(upTo: Self.maxResponseBytes))
        } catch let error as NIOSSLError {
            throw AdminCLIError(description: "TLS with \(baseURL) failed: \(error) (is --tls-trust-cert the CA that signed the broker's certificate?)")
        } catch {
            throw AdminCLIError(description: "cannot reach \(baseURL): \(error)")
        }
        guard (200..<300).contains(status) else {
            var reason = String(decoding: data, as: UTF8.self)
            if case .string(let text)? = (try? JSONDecoder().decode(JSONValue.self, from: data))?["reason"] { reason = text }
            throw AdminCLIError(description: "\(status) \(HTTPResponseStatus(statusCode: status).reasonPhrase): \(reason)")
        }
        return Reply(status: status, body: data, headers: headers)
    }

    func json(_ method: String, _ path: String, body: JSONValue? = nil) async throws -> JSONValue? {
        let encoded = try body.map { try JSONEncoder().encode($0) }
        let reply = try await call(method, path, body: encoded)
        guard !reply.body.isEmpty else { return nil }
        do {
            return try JSONDecoder().decode(JSONValue.self, from: reply.body)
        } catch {
            throw AdminCLIError(description: "the server answered with something that is not JSON: \(String(decoding: reply.body, as: UTF8.self))")
        }
    }
}

/// Prints what a command got back: JSON as is (pretty), or a human-readable form.
enum Printer {
    static func show(_ value: JSONValue?, _ format: OutputFormat) {
        guard let value else { return }
        if format == .json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            if let data = try? encoder.encode(value) { print(String(decoding: data, as: UTF8.self)) }
            return
        }
        switch value {
        case .array(let list):
            for item in list { print(scalar(item)) }
        case .object(let object):
            table(flatten(object).map { [$0.key, $0.value] }, header: ["FIELD", "VALUE"])
        default:
            print(scalar(value))
        }
    }

    static func scalar(_ value: JSONValue?) -> String {
        switch value {
        case nil, .null?: return "-"
        case .bool(let value)?: return value ? "true" : "false"
        case .int(let value)?: return "\(value)"
        case .double(let value)?: return "\(value)"
        case .string(let value)?: return value
        case let value?:
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            return (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "-"
        }
    }

    /// Nested objects as dotted keys; lists of scalars joined with commas.
    static func flatten(_ object: [String: JSONValue], prefix: String = "") -> [(key: String, value: String)] {
        var rows: [(key: String, value: String)] = []
        for key in object.keys.sorted() {
            let name = prefix.isEmpty ? key : "\(prefix).\(key)"
            switch object[key]! {
            case .object(let nested) where !nested.isEmpty:
                rows += flatten(nested, prefix: name)
            case .object:
                rows.append((name, "-"))
            case .array(let list) where !list.contains(where: \.isContainer):
                rows.append((name, list.isEmpty ? "-" : list.map { scalar($0) }.joined(separator: ", ")))
            case .array(let list):
                for (index, item) in list.enumerated() {
                    if case .object(let nested) = item { rows += flatten(nested, prefix: "\(name)[\(index)]") }
                    else { rows.append(("\(name)[\(index)]", scalar(item))) }
                }
            case let value:
                rows.append((name, scalar(value)))
            }
        }
        return rows
    }

    static func table(_ rows: [[String]], header: [String]) {
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0.indices.contains(column) ? $0[column].count : 0 }.max() ?? 0 }
        for row in all {
            let cells = row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }
            print(cells.joined(separator: "  "))
        }
    }
}

// MARK: - argument parsing helpers

enum AdminArguments {
    /// `persistent://t/ns/topic`, `t/ns/topic` or `topic` (in public/default) → the REST path of the topic.
    static func topicPath(_ raw: String) throws -> String {
        var domain = "persistent"
        var rest = raw
        if let range = raw.range(of: "://") {
            domain = String(raw[..<range.lowerBound])
            rest = String(raw[range.upperBound...])
            guard domain == "persistent" || domain == "non-persistent" else {
                throw ValidationError("unknown topic domain '\(domain)': use persistent:// or non-persistent://")
            }
        }
        let parts = rest.split(separator: "/", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
        let (tenant, namespace, topic): (String, String, String)
        switch parts.count {
        case 1: (tenant, namespace, topic) = ("public", "default", parts[0])
        case 3: (tenant, namespace, topic) = (parts[0], parts[1], parts[2])
        default: throw ValidationError("topic '\(raw)' must be 'topic', 'tenant/namespace/topic' or 'persistent://tenant/namespace/topic'")
        }
        guard !tenant.isEmpty, !namespace.isEmpty, !topic.isEmpty else { throw ValidationError("topic '\(raw)' has an empty part") }
        return "/admin/v2/\(domain)/\(escape(tenant))/\(escape(namespace))/\(escape(topic))"
    }

    static func namespacePath(_ raw: String) throws -> String {
        let parts = raw.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
            throw ValidationError("namespace '\(raw)' must be 'tenant/namespace'")
        }
        return "\(escape(parts[0]))/\(escape(parts[1]))"
    }

    static func escape(_ segment: String) -> String {
        var allowed = CharacterSet.urlPathAllowed
        allowed.remove("/")
        return segment.addingPercentEncoding(withAllowedCharacters: allowed) ?? segment
    }

    /// `30`, `30s`, `10m`, `3h`, `2d`, `1w` → seconds; `-1` stays -1.
    static func seconds(_ raw: String) throws -> Int64 {
        if raw == "-1" { return -1 }
        let units: [Character: Int64] = ["s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800]
        var digits = raw
        var unit: Int64 = 1
        if let last = raw.last, let multiplier = units[Character(last.lowercased())] {
            digits = String(raw.dropLast())
            unit = multiplier
        }
        guard let value = Int64(digits), value >= 0, case let (seconds, overflow) = value.multipliedReportingOverflow(by: unit),
              !overflow, seconds <= Int64.max / 1000
        else {
            throw ValidationError("invalid time '\(raw)': use a number with an optional unit s, m, h, d or w (e.g. 10m)")
        }
        return seconds
    }

    /// `100`, `10K`, `10M`, `16G`, `1T` → bytes; `-1` stays -1.
    static func bytes(_ raw: String) throws -> Int64 {
        if raw == "-1" { return -1 }
        let units: [Character: Int64] = ["k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40]
        var digits = raw
        var unit: Int64 = 1
        if let last = raw.last, let multiplier = units[Character(last.lowercased())] {
            digits = String(raw.dropLast())
            unit = multiplier
        }
        guard let value = Int64(digits), value >= 0, case let (bytes, overflow) = value.multipliedReportingOverflow(by: unit),
              !overflow, bytes <= Int64.max - (1 << 20)
        else {
            throw ValidationError("invalid size '\(raw)': use a number with an optional unit K, M, G or T (e.g. 10M)")
        }
        return bytes
    }

    /// `earliest`, `latest` or `ledgerId:entryId` → Pulsar's message id JSON.
    static func messageID(_ raw: String) throws -> JSONValue {
        switch raw {
        case "latest": return .object(["ledgerId": .int(Int64.max), "entryId": .int(Int64.max), "partitionIndex": .int(-1)])
        case "earliest": return .object(["ledgerId": .int(-1), "entryId": .int(-1), "partitionIndex": .int(-1)])
        default:
            let parts = raw.split(separator: ":")
            guard parts.count >= 2, let ledgerID = Int64(parts[0]), let entryID = Int64(parts[1]) else {
                throw ValidationError("invalid message id '\(raw)': use earliest, latest or ledgerId:entryId")
            }
            return .object([
                "ledgerId": .int(ledgerID), "entryId": .int(entryID),
                "partitionIndex": .int(parts.count > 2 ? Int64(parts[2]) ?? -1 : -1),
            ])
        }
    }
}

/// pulsar-admin's `--enable` / `--disable` pair.
enum AdminToggle: String, EnumerableFlag {
    case enable, disable
}

/// A leaf command: options + one REST call.
protocol AdminLeafCommand: AsyncParsableCommand {
    var options: AdminOptions { get }
    func run(client: AdminClient) async throws
}

extension AdminLeafCommand {
    func run() async throws {
        do {
            try await run(client: AdminClient(baseURL: options.url, authToken: options.auth.token(), tls: options.tls))
        } catch let error as AdminCLIError {
            FileHandle.standardError.write(Data("error: \(error.description)\n".utf8))
            throw ExitCode.failure
        }
    }
}

// MARK: - tenants

struct TenantsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tenants", abstract: "Tenants: list, get, create, update, delete.",
        subcommands: [List.self, Get.self, Create.self, Update.self, Delete.self])

    @OptionGroup var options: AdminOptions

    struct List: AdminLeafCommand {
        static let configuration = CommandConfiguration(abstract: "List tenants.")
        @OptionGroup var options: AdminOptions
        func run(client: AdminClient) async throws {
            Printer.show(try await client.json("GET", "/admin/v2/tenants"), options.output)
        }
    }

    struct Get: AdminLeafCommand {
        static let configuration = CommandConfiguration(abstract: "Show a tenant's admin roles and allowed clusters.")
        @OptionGroup var options: AdminOptions
        @Argument var tenant: String
        func run(client: AdminClient) async throws {
            Printer.show(try await client.json("GET", "/admin/v2/tenants/\(AdminArguments.escape(tenant))"), options.output)
        }
    }

    struct Create: AdminLeafCommand {
        static let configuration = CommandConfiguration(abstract: "Create a tenant.")
        @OptionGroup var options: AdminOptions
        @Argument var tenant: String
        @Option(name: [.customShort("r"), .customLong("admin-roles")], help: "Comma-separated admin roles.")
        var adminRoles = ""
        @Option(name: [.customShort("c"), .customLong("allowed-clusters")], help: "Comma-separated allowed clusters.")
        var allowedClusters = "standalone"
        func run(client: AdminClient) async throws {
            _ = try await client.json("PUT", "/admin/v2/tenants/\(AdminArguments.escape(tenant))", body: TenantsCommand.tenantInfo(adminRoles: adminRoles, allowedClusters: allowedClusters))
        }
    }

    struct Update: AdminLeafCommand {
        static let configuration = CommandConfiguration(abstract: "Replace a tenant's admin roles and allowed clusters.")
        @OptionGroup var options: AdminOptions
        @Argument var tenant: String
        @Option(name: [.customShort("r"), .customLong("admin-roles")], help: "Comma-separated admin roles.")
        var adminRoles = ""
        @Option(name: [.customShort("c"), .customLong("allowed-clusters")], help: "Comma-separated allowed clusters.")
        var allowedClusters = "standalone"
        func run(client: AdminClient) async throws {
            _ = try await client.json("POST", "/admin/v2/tenants/\(AdminArguments.escape(tenant))", body: TenantsCommand.tenantInfo(adminRoles: adminRoles, allowedClusters: allowedClusters))
        }
    }

    /// The TenantInfo body from comma-separated lists.
    static func tenantInfo(adminRoles: String, allowedClusters: String) -> JSONValue {
        .object([
            "adminRoles": .array(adminRoles.split(separator: ",").map { .string(String($0)) }),
            "allowedClusters": .array(allowedClusters.split(separator: ",").map { .string(String($0)) }),
        ])
    }

    struct Delete: AdminLeafCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a tenant (it must have no namespaces).")
        @OptionGroup var options: AdminOptions
        @Argument var tenant: String
        func run(client: AdminClient) async throws {
            _ = try await client.json("DELETE", "/admin/v2/tenants/\(AdminArguments.escape(tenant))")
        }
    }
}

// MARK: - namespaces

struct NamespacesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "namespaces", abstract: "Namespaces and their policies.",
        subcommands: [
            NamespaceBundles.self, NamespaceUnload.self, NamespaceSetPersistence.self, NamespaceGetPersistence.self,
            List.self, Create.self, Delete.self, Policies.self, SetRetention.self, GetRetention.self, SetMessageTTL.self,
            SetBacklogQuota.self, SetAutoTopicCreation.self, SetDeduplication.self, SetSchemaCompatibilityStrategy.self,
            NamespaceGrantPermission.self, NamespaceRevokePermission.self, NamespacePermissions.self,
            NamespaceSetPublishRate.self, NamespaceGetPublishRate.self, NamespaceRemovePublishRate.self,
            NamespaceSetDispatchRate.self, NamespaceGetDispatchRate.self, NamespaceRemoveDispatchRate.self,
            NamespaceSetMaxTopics.self, NamespaceGetMaxTopics.self, NamespaceRemoveMaxTopics.self,
            GetSchemaCompatibilityStrategy.self, SetIsAllowAutoUpdateSchema.self, SetSchemaValidationEnforced.self,
            NamespaceSetCompactionThreshold.self, NamespaceGetCompactionThreshold.self, NamespaceRemoveCompactionThreshold.self,
            NamespaceSetOffloadThreshold.self, NamespaceGetOffloadThreshold.self, NamespaceSetOffloadDeletionLag.self,
            NamespaceGetOffloadDeletionLag.self, NamespaceClearOffloadDeletionLag.self, NamespaceSetOffloadPolicies.self,
            NamespaceGetOffloadPolicies.self, NamespaceRemoveOffloadPolicies.self, NamespaceSetClusters.self, NamespaceGetClusters.self,
        ])

    @OptionGroup var options: AdminOptions

    struct List: AdminLeafCommand {
        static let configuration = CommandConfiguration(abstract: "List the namespaces of a tenant.")
        @OptionGroup var options: AdminOptions
        @Argument var tenant: String
        func run(client: AdminClient) async throws {
            Printer.show(try await client.json("GET", "/admin/v2/namespaces/\(AdminArguments.escape(tenant))"), options.output)
        }
    }

    struct Create: AdminLeafCommand {
        static let configuration = CommandConfiguration(abstract: "Create a namespace (tenant/namespace).")
        @OptionGroup var options: AdminOptions
        @Argument var namespace: String
        func run(client: AdminClient) async throws {
            _ = try await client.json("PUT", "/admin/v2/namespaces/\(AdminArguments.namespacePath(namespace))")
        }
    }

    struct Delete: AdminLeafCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a namespace (it must have no topics).")
        @OptionGroup var options: AdminOptions
        @Argument var namespace: String
        func run(client: AdminClient) async throws {
            _ = try await client.json("DELETE", "/admin/v2/namespaces/\(AdminArguments.namespacePath(namespace))")
        }
    }

    struct Policies: AdminLeafCommand {
        static let configuration = CommandConfiguration(abstract: "Show a namespace's policies.")
        @OptionGroup var options: AdminOptions
        @Argument var namespace: String
        func run(client: AdminClient) async throws {
            Printer.show(try await client.json("GET", "/admin/v2/namespaces/\(AdminArguments.namespacePath(namespace))"), options.output)
        }
    }

    struct SetRetention: AdminLeafCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-retention", abstract: "Keep acknowledged messages for a time and/or size (-1 = unlimited).")
        @OptionGroup var options: AdminOptions
        @Argument var namespace: String
        @Option(name: [.customShort("t"), .long], help: "Retention time: 30s, 10m, 3h, 2d, 1w or -1.")
        var time: String
        @Option(name: [.customShort("s"), .long], help: "Retention size: 100M, 2G or -1.")
        var size: String
        func run(client: AdminClient) async throws {
            let seconds = try AdminArguments.seconds(time)
            let bytes = try AdminArguments.bytes(size)
            _ = try await client.json("POST", "/admin/v2/namespaces/\(AdminArguments.namespacePath(namespace))/retention", body: .object([
                "retentionTimeInMinutes": .int(seconds < 0 ? -1 : (seconds + 59) / 60),
                "retentionSizeInMB": .int(bytes < 0 ? -1 : (bytes + (1 << 20) - 1) >> 20),
            ]))
        }
    }

    struct GetRetention: AdminLeafCommand {
        static let configuration = CommandConfiguration(commandName: "get-retention", abstract: "Show a namespace's retention.")
        @OptionGroup var options: AdminOptions
        @Argument var namespace: String
        func run(client: AdminClient) async throws {
            Printer.show(
                try await client.json("GET", "/admin/v2/namespaces/\(AdminArguments.namespacePath(namespace))/retention"),
                options.output)
        }
    }

    struct SetMessageTTL: AdminLeafCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-message-ttl", abstract: "Expire unacknowledged messages after a time (0 = never).")
        @OptionGroup var options: AdminOptions
        @Argument var namespace: String
        @Option(name: [.customLong("messageTTL"), .customLong("ttl", withSingleDash: true), .customLong("ttl")],
                help: "Time to live: seconds, or 10m, 3h, 2d.")
        var messageTTL: String
        func run(client: AdminClient) async throws {
            _ = try await client.json(
                "POST", "/admin/v2/namespaces/\(AdminArguments.namespacePath(namespace))/messageTTL",
                body: .int(try AdminArguments.seconds(messageTTL)))
        }
    }

    struct SetBacklogQuota: AdminLeafCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-backlog-quota", abstract: "Limit the backlog by size or age, with a policy for when it is over.")
        @OptionGroup var options: AdminOptions
        @Argument var namespace: String
        @Option(name: [.customShort("l"), .long], help: "Size limit: 10M, 16G or -1.")
        var limit = "-1"
        @Option(name: [.customLong("limitTime"), .customLong("lt", withSingleDash: true), .customLong("limit-time")],
                help: "Age limit: seconds, or 10m, 3h, 2d; -1 for none.")
        var limitTime = "-1"
        @Option(name: [.customShort("p"), .long],
                help: "producer_request_hold, producer_exception or consumer_backlog_eviction.")
        var policy: String
        @Option(name: [.customShort("t"), .long], help: "destination_storage (size) or message_age (time).")
        var type = "destination_storage"
        func run(client: AdminClient) async throws {
            _ = try await client.json(
                "POST", "/admin/v2/namespaces/\(AdminArguments.namespacePath(namespace))/backlogQuota?backlogQuotaType=\(type)",
                body: .object([
                    "limitSize": .int(try AdminArguments.bytes(limit)), "limitTime": .int(try AdminArguments.seconds(limitTime)),
                    "policy": .string(policy),
                ]))
        }
    }

    struct SetAutoTopicCreation: AdminLeafCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-auto-topic-creation", abstract: "Allow or forbid creating topics on first use.")
        @OptionGroup var options: AdminOptions
        @Argument var namespace: String
        @Flag(name: [.customShort("e"), .long]) var enable = false
        @Flag(name: [.customShort("d"), .long]) var disable = false
        @Option(name: [.customShort("t"), .long], help: "partitioned or non-partitioned.")
        var type = "non-partitioned"
        @Option(name: [.customShort("n"), .customLong("num-partitions")], help: "Partitions of auto-created partitioned topics.")
        var numPartitions: Int?
        func validate() throws {
            guard enable != disable else { throw ValidationError("give exactly one of --enable or --disable") }
        }
        func run(client: AdminClient) async throws {
            var body: [String: JSONValue] = ["allowAutoTopicCreation": .bool(enable), "topicType": .string(type)]
            if let numPartitions { body["defaultNumPartitions"] = .int(Int64(numPartitions)) }
            _ = try await client.json(
                "POST", "/admin/v2/namespaces/\(AdminArguments.namespacePath(namespace))/autoTopicCreation", body: .object(body))
        }
    }

    struct SetDeduplication: AdminLeafCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-deduplication", abstract: "Turn message deduplication on or off.")
        @OptionGroup var options: AdminOptions
        @Argument var namespace: String
        @Flag(name: [.customShort("e"), .long]) var enable = false
        @Flag(name: [.customShort("d"), .long]) var disable = false
        func validate() throws {
            guard enable != disable else { throw ValidationError("give exactly one of --enable or --disable") }
        }
        func run(client: AdminClient) async throws {
            _ = try await client.json(
                "POST", "/admin/v2/namespaces/\(AdminArguments.namespacePath(namespace))/deduplication", body: .bool(enable))
        }
    }

    struct SetSchemaCompatibilityStrategy: AdminLeafCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-schema-compatibility-strategy", abstract: "Set how new schemas must relate to the existing ones.")
        @OptionGroup var options: AdminOptions
        @Argument var namespace: String
        @Option(name: [.customShort("c"), .long], help: "e.g. FULL, BACKWARD, FORWARD_TRANSITIVE, ALWAYS_COMPATIBLE.")
        var compatibility: String
        func run(client: AdminClient) async throws {
            _ = try await client.json(
                "PUT", "/admin/v2/namespaces/\(AdminArguments.namespacePath(namespace))/schemaCompatibilityStrategy",
                body: .string(compatibility.uppercased()))
        }
    }

    /// POST `body` to one policy path of a namespace.
    static func post(_ client: AdminClient, _ namespace: String, _ path: String, _ body: JSONValue) async throws {
        _ = try await client.json("POST", "/admin/v2/namespaces/\(try AdminArguments.namespacePath(namespace))/\(path)", body: body)
    }

    struct GetSchemaCompatibilityStrategy: AdminLeafCommand {
        static let configuration = CommandConfiguration(
            commandName: "get-schema-compatibility-strategy", abstract: "Show a namespace's schema compatibility strategy (UNDEFINED: the broker's).")
        @OptionGroup var options: AdminOptions
        @Argument var namespace: String
        func run(client: AdminClient) async throws {
            Printer.show(try await client.json(
                "GET", "/admin/v2/namespaces/\(AdminArguments.namespacePath(namespace))/schemaCompatibilityStrategy"), options.output)
        }
    }

    struct SetIsAllowAutoUpdateSchema: AdminLeafCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-is-allow-auto-update-schema", abstract: "Whether producers may add schema versions in the namespace.")
        @OptionGroup var options: AdminOptions
        @Argument var namespace: String
        @Flag(help: "--enable: producers may add versions; --disable: only known schemas.")
        var toggle: AdminToggle
        func run(client: AdminClient) async throws {
            try await NamespacesCommand.post(client, namespace, "isAllowAutoUpdateSchema", .bool(toggle == .enable))
        }
    }

    struct SetSchemaValidationEnforced: AdminLeafCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-schema-validation-enforce", abstract: "Refuse producers without a schema on the namespace's topics that have one.")
        @OptionGroup var options: AdminOptions
        @Argument var namespace: String
        @Flag(help: "--enable: enforce; --disable: producers without a schema are let in.")
        var toggle: AdminToggle
        func run(client: AdminClient) async throws {
            try await NamespacesCommand.post(client, namespace, "schemaValidationEnforced", .bool(toggle == .enable))
        }
    }
}

// MARK: - topics

struct TopicsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "topics", abstract: "Topics, partitions, stats and subscriptions.",
        subcommands: [
            TopicUnload.self, TopicLookup.self,
            List.self, ListPartitionedTopics.self, Create.self, Delete.self, CreatePartitionedTopic.self,
            UpdatePartitionedTopic.self, GetPartitionedTopicMetadata.self, DeletePartitionedTopic.self, Stats.self, PartitionedStats.self,
            StatsInternal.self, Subscriptions.self, CreateSubscription.self, Unsubscribe.self, Skip.self, ClearBacklog.self,
            ResetCursor.self, ExpireMessages.self, PeekMessages.self,
            TopicGrantPermission.self, TopicRevokePermission.self, TopicPermissions.self,
            TopicSetSchemaCompatibilityStrategy.self, TopicGetSchemaCompatibilityStrategy.self,
            TopicRemoveSchemaCompatibilityStrategy.self, TopicCompact.self, TopicCompactionStatus.self,
            TopicOffload.self, TopicOffloadStatus.self, TopicSetReplicationClusters.self, TopicGetReplicationClusters.self,
            TopicRemoveReplicationClusters.self,
        ])

    @OptionGroup var options: AdminOptions

    struct List: AdminLeafCommand {
        static let configuration = CommandConfiguration(abstract: "List the topics of a namespace.")
        @OptionGroup var options: AdminOptions
        @Argument var namespace: String
        @Option(help: "persistent or non-persistent.") var domain = "persistent"
        func run(client: AdminClient) async throws {
            Printer.show(try await client.json("GET", "/admin/v2/\(domain)/\(AdminArguments.namespacePath(namespace))"), options.output)
        }
    }

    struct ListPartitionedTopics: AdminLeafCommand {
        static let configuration = CommandConfiguration(
            commandName: "list-partitioned-topics", abstract: "List the partitioned topics of a namespace.")
        @OptionGroup var options: AdminOptions
        @Argument var namespace: String
        @Option(help: "persistent or non-persistent.") var domain = "persistent"
        func run(client: AdminClient) async throws {
            Printer.show(
                try await client.json("GET", "/admin/v2/\(domain)/\(AdminArguments.namespacePath(namespace))/partitioned"),
                options.output)
        }
    }

    struct Create: AdminLeafCommand {
        static let configuration = CommandConfiguration(abstract: "Create a non-partitioned topic.")
        @OptionGroup var options: AdminOptions
        @Argument var topic: String
        func run(client: AdminClient) async throws {
            _ = try await client.json("PUT", try AdminArguments.topicPath(topic))
        }
    }

    struct Delete: AdminLeafCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a topic with its subscriptions and data.")
        @OptionGroup var options: AdminOptions
        @Argument var topic: String
        @Flag(name: [.customShort("f"), .long], help: "Close connected consumers instead of refusing.") var force = false
        func run(client: AdminClient) async throws {
            _ = try await client.json("DELETE", try AdminArguments.topicPath(topic) + "?force=\(force)")
        }
    }

    struct CreatePartitionedTopic: AdminLeafCommand {
        static let configuration = CommandConfiguration(
            commandName: "create-partitioned-topic", abstract: "Create a partitioned topic.")
        @OptionGroup var options: AdminOptions
        @Argument var topic: String
        @Option(name: [.customShort("p"), .long]) var partitions: Int
        func run(client: AdminClient) async throws {
            _ = try await client.json("PUT", try AdminArguments.topicPath(topic) + "/partitions", body: .int(Int64(partitions)))
        }
    }

    struct UpdatePartitionedTopic: AdminLeafCommand {
        static let configuration = CommandConfiguration(
            commandName: "update-partitioned-topic", abstract: "Raise the number of partitions of a partitioned topic.")
        @OptionGroup var options: AdminOptions
        @Argument var topic: String
        @Option(name: [.customShort("p"), .long]) var partitions: Int
        func run(client: AdminClient) async throws {
            _ = try await client.json("POST", try AdminArguments.topicPath(topic) + "/partitions", body: .int(Int64(partitions)))
        }
    }

    struct GetPartitionedTopicMetadata: AdminLeafCommand {
        static let configuration = CommandConfiguration(
            commandName: "get-partitioned-topic-metadata", abstract: "Show the number of partitions (0: not partitioned).")
        @OptionGroup var options: AdminOptions
        @Argument var topic: String
        func run(client: AdminClient) async throws {
            Printer.show(try await client.json("GET", try AdminArguments.topicPath(topic) + "/partitions"), options.output)
        }
    }

    struct DeletePartitionedTopic: AdminLeafCommand {
        static let configuration = CommandConfiguration(
            commandName: "delete-partitioned-topic", abstract: "Delete a partitioned topic and all its partitions.")
        @OptionGroup var options: AdminOptions
        @Argument var topic: String
        @Flag(name: [.customShort("f"), .long]) var force = false
        func run(client: AdminClient) async throws {
            _ = try await client.json("DELETE", try AdminArguments.topicPath(topic) + "/partitions?force=\(force)")
        }
    }

    struct PartitionedStats: AdminLeafCommand {
        static let configuration = CommandConfiguration(
            commandName: "partitioned-stats", abstract: "Show a partitioned topic's counters summed over its partitions.")
        @OptionGroup var options: AdminOptions
        @Argument var topic: String
        func run(client: AdminClient) async throws {
            Printer.show(try await client.json("GET", try AdminArguments.topicPath(topic) + "/partitioned-stats"), options.output)
        }
    }

    struct Stats: AdminLeafCommand {
        static let configuration = CommandConfiguration(abstract: "Show a topic's counters, publishers and subscriptions.")
        @OptionGroup var options: AdminOptions
        @Argument var topic: String
        func run(client: AdminClient) async throws {
            let stats = try await client.json("GET", try AdminArguments.topicPath(topic) + "/stats")
            guard options.output == .text, case .object(var summary)? = stats else {
                Printer.show(stats, options.output)
                return
            }
            let subscriptions = summary.removeValue(forKey: "subscriptions")
            let publishers = summary.removeValue(forKey: "publishers")
            Printer.show(.object(summary), .text)
            var names: [String] = []
            if case .array(let list)? = publishers { names = list.map { Printer.scalar($0["producerName"]) } }
            print("\npublishers: \(names.isEmpty ? "-" : names.joined(separator: ", "))\n")
            var rows: [[String]] = []
            if case .object(let bySubscription)? = subscriptions {
                for name in bySubscription.keys.sorted() {
                    let sub = bySubscription[name]!
                    var consumers = 0
                    if case .array(let list)? = sub["consumers"] { consumers = list.count }
                    rows.append([
                        name, Printer.scalar(sub["type"]), Printer.scalar(sub["msgBacklog"]),
                        Printer.scalar(sub["unackedMessages"]), "\(consumers)", Printer.scalar(sub["msgOutCounter"]),
                    ])
                }
            }
            Printer.table(rows, header: ["SUBSCRIPTION", "TYPE", "BACKLOG", "UNACKED", "CONSUMERS", "OUT"])
        }
    }

    struct StatsInternal: AdminLeafCommand {
        static let configuration = CommandConfiguration(
            commandName: "stats-internal", abstract: "Show a topic's ledgers and cursors.")
        @OptionGroup var options: AdminOptions
        @Argument var topic: String
        func run(client: AdminClient) async throws {
            Printer.show(try await client.json("GET", try AdminArguments.topicPath(topic) + "/internalStats"), options.output)
        }
    }

    struct Subscriptions: AdminLeafCommand {
        static let configuration = CommandConfiguration(abstract: "List a topic's subscriptions.")
        @OptionGroup var options: AdminOptions
        @Argument var topic: String
        func run(client: AdminClient) async throws {
            Printer.show(try await client.json("GET", try AdminArguments.topicPath(topic) + "/subscriptions"), options.output)
        }
    }

    struct CreateSubscription: AdminLeafCommand {
        static let configuration = CommandConfiguration(
            commandName: "create-subscription", abstract: "Create a durable subscription.")
        @OptionGroup var options: AdminOptions
        @Argument var topic: String
        @Option(name: [.customShort("s"), .long]) var subscription: String
        @Option(name: [.customShort("m"), .customLong("messageId")], help: "latest, earliest or ledgerId:entryId.")
        var messageID = "latest"
        func run(client: AdminClient) async throws {
            _ = try await client.json(
                "PUT", try AdminArguments.topicPath(topic) + "/subscription/\(AdminArguments.escape(subscription))",
                body: try AdminArguments.messageID(messageID))
        }
    }

    struct Unsubscribe: AdminLeafCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a subscription.")
        @OptionGroup var options: AdminOptions
        @Argument var topic: String
        @Option(name: [.customShort("s"), .long]) var subscription: String
        @Flag(name: [.customShort("f"), .long], help: "Close connected consumers instead of refusing.") var force = false
        func run(client: AdminClient) async throws {
            _ = try await client.json(
                "DELETE",
                try AdminArguments.topicPath(topic) + "/subscription/\(AdminArguments.escape(subscription))?force=\(force)")
        }
    }

    struct Skip: AdminLeafCommand {
        static let configuration = CommandConfiguration(abstract: "Skip (acknowledge) the next N messages of a subscription.")
        @OptionGroup var options: AdminOptions
        @Argument var topic: String
        @Option(name: [.customShort("s"), .long]) var subscription: String
        @Option(name: [.customShort("n"), .long]) var count: Int64
        func run(client: AdminClient) async throws {
            _ = try await client.json(
                "POST", try AdminArguments.topicPath(topic) + "/subscription/\(AdminArguments.escape(subscription))/skip/\(count)")
        }
    }

    struct ClearBacklog: AdminLeafCommand {
        static let configuration = CommandConfiguration(
            commandName: "clear-backlog", abstract: "Acknowledge everything in a subscription's backlog.")
        @OptionGroup var options: AdminOptions
        @Argument var topic: String
        @Option(name: [.customShort("s"), .long]) var subscription: String
        func run(client: AdminClient) async throws {
            _ = try await client.json(
                "POST", try AdminArguments.topicPath(topic) + "/subscription/\(AdminArguments.escape(subscription))/skip_all")
        }
    }

    struct ResetCursor: AdminLeafCommand {
        static let configuration = CommandConfiguration(
            commandName: "reset-cursor", abstract: "Move a subscription back or forward, by time or to a message id.")
        @OptionGroup var options: AdminOptions
        @Argument var topic: String
        @Option(name: [.customShort("s"), .long]) var subscription: String
        @Option(name: [.customShort("t"), .long], help: "How far back from now: 30s, 10m, 3h, 2d.")
        var time: String?
        @Option(name: [.customShort("m"), .customLong("messageId")], help: "earliest, latest or ledgerId:entryId.")
        var messageID: String?
        func validate() throws {
            guard (time == nil) != (messageID == nil) else { throw ValidationError("give exactly one of --time or --messageId") }
        }
        func run(client: AdminClient) async throws {
            let path = try AdminArguments.topicPath(topic) + "/subscription/\(AdminArguments.escape(subscription))/resetcursor"
            if let time {
                let timestampMs = Int64(Date().timeIntervalSince1970 * 1000) - (try AdminArguments.seconds(time)) * 1000
                _ = try await client.json("POST", "\(path)/\(timestampMs)")
            } else if let messageID {
                _ = try await client.json("POST", path, body: try AdminArguments.messageID(messageID))
            }
        }
    }

    struct ExpireMessages: AdminLeafCommand {
        static let configuration = CommandConfiguration(
            commandName: "expire-messages", abstract: "Acknowledge a subscription's messages older than a time.")
        @OptionGroup var options: AdminOptions
        @Argument var topic: String
        @Option(name: [.customShort("s"), .long]) var subscription: String
        @Option(name: [.customShort("t"), .customLong("expireTime")], help: "Seconds, or 10m, 3h, 2d.")
        var expireTime: String
        func run(client: AdminClient) async throws {
            _ = try await client.json(
                "POST",
                try AdminArguments.topicPath(topic)
                    + "/subscription/\(AdminArguments.escape(subscription))/expireMessages/\(try AdminArguments.seconds(expireTime))")
        }
    }

    struct PeekMessages: AdminLeafCommand {
        static let configuration = CommandConfiguration(
            commandName: "peek-messages", abstract: "Show the next N messages of a subscription without consuming them.")
        @OptionGroup var options: AdminOptions
        @Argument var topic: String
        @Option(name: [.customShort("s"), .long]) var subscription: String
        @Option(name: [.customShort("n"), .long]) var count = 1
        func run(client: AdminClient) async throws {
            var messages: [[String: JSONValue]] = []
            let base = try AdminArguments.topicPath(topic) + "/subscription/\(AdminArguments.escape(subscription))/position"
            for index in 1...max(count, 1) {
                let reply: AdminClient.Reply
                do {
                    reply = try await client.call("GET", "\(base)/\(index)")
                } catch let error as AdminCLIError where error.description.hasPrefix("404") && !messages.isEmpty {
                    break  // fewer messages than asked for
                }
                var message: [String: JSONValue] = ["payload": .string(String(decoding: reply.body, as: UTF8.self))]
                for (name, value) in reply.headers where name.hasPrefix("x-pulsar-") {
                    message[String(name.dropFirst("x-pulsar-".count))] = .string(value)
                }
                messages.append(message)
            }
            if options.output == .json {
                Printer.show(.array(messages.map { .object($0) }), .json)
                return
            }
            for message in messages {
                print("Message ID: \(Printer.scalar(message["message-id"]))")
                for key in message.keys.sorted() where key != "payload" && key != "message-id" {
                    print("\(key): \(Printer.scalar(message[key]))")
                }
                print("\(Printer.scalar(message["payload"]))\n")
            }
        }
    }
}
