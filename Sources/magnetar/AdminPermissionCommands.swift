import ArgumentParser
import Schemas

/// pulsar-admin's permission verbs: `namespaces grant-permission | revoke-permission | permissions`
/// and the same on `topics`.
enum PermissionArguments {
    static let actions = ["produce", "consume", "functions", "sources", "sinks", "packages"]

    static func parse(_ list: String) throws -> JSONValue {
        let names = list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !names.isEmpty else { throw ValidationError("--actions: give at least one of \(actions.joined(separator: ", "))") }
        for name in names where !actions.contains(name) {
            throw ValidationError("--actions: '\(name)' is not one of \(actions.joined(separator: ", "))")
        }
        return .array(names.map { .string($0) })
    }
}

struct NamespaceGrantPermission: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "grant-permission", abstract: "Let a role produce and/or consume on every topic of a namespace.")
    @OptionGroup var options: AdminOptions
    @Argument var namespace: String
    @Option(help: "The role (a token's subject).") var role: String
    @Option(help: "Comma-separated: produce, consume, functions, sources, sinks, packages.") var actions: String
    func run(client: AdminClient) async throws {
        let path = "/admin/v2/namespaces/\(try AdminArguments.namespacePath(namespace))/permissions/\(AdminArguments.escape(role))"
        _ = try await client.json("POST", path, body: try PermissionArguments.parse(actions))
    }
}

struct NamespaceRevokePermission: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "revoke-permission", abstract: "Take a role's namespace grants away.")
    @OptionGroup var options: AdminOptions
    @Argument var namespace: String
    @Option(help: "The role.") var role: String
    func run(client: AdminClient) async throws {
        let path = "/admin/v2/namespaces/\(try AdminArguments.namespacePath(namespace))/permissions/\(AdminArguments.escape(role))"
        _ = try await client.json("DELETE", path)
    }
}

struct NamespacePermissions: AdminLeafCommand {
    static let configuration = CommandConfiguration(commandName: "permissions", abstract: "Show a namespace's grants: role -> actions.")
    @OptionGroup var options: AdminOptions
    @Argument var namespace: String
    func run(client: AdminClient) async throws {
        Printer.show(try await client.json("GET", "/admin/v2/namespaces/\(try AdminArguments.namespacePath(namespace))/permissions"), options.output)
    }
}

struct TopicGrantPermission: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "grant-permission", abstract: "Let a role produce and/or consume on one topic (and its partitions).")
    @OptionGroup var options: AdminOptions
    @Argument var topic: String
    @Option(help: "The role (a token's subject).") var role: String
    @Option(help: "Comma-separated: produce, consume, functions, sources, sinks, packages.") var actions: String
    func run(client: AdminClient) async throws {
        let path = "\(try AdminArguments.topicPath(topic))/permissions/\(AdminArguments.escape(role))"
        _ = try await client.json("POST", path, body: try PermissionArguments.parse(actions))
    }
}

struct TopicRevokePermission: AdminLeafCommand {
    static let configuration = CommandConfiguration(commandName: "revoke-permission", abstract: "Take a role's grant on one topic away.")
    @OptionGroup var options: AdminOptions
    @Argument var topic: String
    @Option(help: "The role.") var role: String
    func run(client: AdminClient) async throws {
        _ = try await client.json("DELETE", "\(try AdminArguments.topicPath(topic))/permissions/\(AdminArguments.escape(role))")
    }
}

struct TopicPermissions: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "permissions", abstract: "Show who may do what on a topic (namespace grants included).")
    @OptionGroup var options: AdminOptions
    @Argument var topic: String
    func run(client: AdminClient) async throws {
        Printer.show(try await client.json("GET", "\(try AdminArguments.topicPath(topic))/permissions"), options.output)
    }
}
