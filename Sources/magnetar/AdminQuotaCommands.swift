import ArgumentParser

/// pulsar-admin's quota verbs on namespaces: `set-publish-rate | get-publish-rate |
/// remove-publish-rate`, the same for `dispatch-rate` and `max-topics-per-namespace`.
enum NamespaceQuota {
    /// GET / DELETE of one namespace policy path.
    static func get(_ client: AdminClient, _ namespace: String, _ path: String, _ output: OutputFormat) async throws {
        Printer.show(try await client.json("GET", "/admin/v2/namespaces/\(try AdminArguments.namespacePath(namespace))/\(path)"), output)
    }

    static func remove(_ client: AdminClient, _ namespace: String, _ path: String) async throws {
        _ = try await client.json("DELETE", "/admin/v2/namespaces/\(try AdminArguments.namespacePath(namespace))/\(path)")
    }
}

struct NamespaceSetPublishRate: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "set-publish-rate",
        abstract: "Limit what each topic of the namespace takes from producers (messages and bytes per second; -1 = unlimited).",
        discussion: "Over the rate, the broker stops reading the producers' connections until the rate allows more: nothing is dropped.")
    @OptionGroup var options: AdminOptions
    @Argument var namespace: String
    @Option(name: [.customShort("m"), .customLong("msg-publish-rate")], help: "Messages per second per topic.")
    var messages: Int = -1
    @Option(name: [.customShort("b"), .customLong("byte-publish-rate")], help: "Bytes per second per topic.")
    var bytes: Int64 = -1
    func run(client: AdminClient) async throws {
        _ = try await client.json(
            "POST", "/admin/v2/namespaces/\(try AdminArguments.namespacePath(namespace))/publishRate",
            body: .object(["publishThrottlingRateInMsg": .int(Int64(messages)), "publishThrottlingRateInByte": .int(bytes)]))
    }
}

struct NamespaceGetPublishRate: AdminLeafCommand {
    static let configuration = CommandConfiguration(commandName: "get-publish-rate", abstract: "Show a namespace's publish rate.")
    @OptionGroup var options: AdminOptions
    @Argument var namespace: String
    func run(client: AdminClient) async throws { try await NamespaceQuota.get(client, namespace, "publishRate", options.output) }
}

struct NamespaceRemovePublishRate: AdminLeafCommand {
    static let configuration = CommandConfiguration(commandName: "remove-publish-rate", abstract: "Remove a namespace's publish rate.")
    @OptionGroup var options: AdminOptions
    @Argument var namespace: String
    func run(client: AdminClient) async throws { try await NamespaceQuota.remove(client, namespace, "publishRate") }
}

struct NamespaceSetDispatchRate: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "set-dispatch-rate",
        abstract: "Limit what each topic of the namespace dispatches to consumers, all subscriptions together (-1 = unlimited).")
    @OptionGroup var options: AdminOptions
    @Argument var namespace: String
    @Option(name: [.customLong("md", withSingleDash: true), .customLong("msg-dispatch-rate")], help: "Messages per period.")
    var messages: Int = -1
    @Option(name: [.customLong("bd", withSingleDash: true), .customLong("byte-dispatch-rate")], help: "Bytes per period.")
    var bytes: Int64 = -1
    @Option(name: [.customLong("dt", withSingleDash: true), .customLong("dispatch-rate-period")], help: "The period, in seconds.")
    var period: Int = 1
    func run(client: AdminClient) async throws {
        _ = try await client.json(
            "POST", "/admin/v2/namespaces/\(try AdminArguments.namespacePath(namespace))/dispatchRate",
            body: .object([
                "dispatchThrottlingRateInMsg": .int(Int64(messages)), "dispatchThrottlingRateInByte": .int(bytes),
                "ratePeriodInSecond": .int(Int64(period)), "relativeToPublishRate": .bool(false),
            ]))
    }
}

struct NamespaceGetDispatchRate: AdminLeafCommand {
    static let configuration = CommandConfiguration(commandName: "get-dispatch-rate", abstract: "Show a namespace's dispatch rate.")
    @OptionGroup var options: AdminOptions
    @Argument var namespace: String
    func run(client: AdminClient) async throws { try await NamespaceQuota.get(client, namespace, "dispatchRate", options.output) }
}

struct NamespaceRemoveDispatchRate: AdminLeafCommand {
    static let configuration = CommandConfiguration(commandName: "remove-dispatch-rate", abstract: "Remove a namespace's dispatch rate.")
    @OptionGroup var options: AdminOptions
    @Argument var namespace: String
    func run(client: AdminClient) async throws { try await NamespaceQuota.remove(client, namespace, "dispatchRate") }
}

struct NamespaceSetMaxTopics: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "set-max-topics-per-namespace", abstract: "Limit the topics of a namespace (partitions count; 0 = unlimited).")
    @OptionGroup var options: AdminOptions
    @Argument var namespace: String
    @Option(name: [.customShort("t"), .customLong("max-topics-per-namespace")], help: "The most topics.")
    var maxTopics: Int
    func run(client: AdminClient) async throws {
        _ = try await client.json(
            "POST", "/admin/v2/namespaces/\(try AdminArguments.namespacePath(namespace))/maxTopicsPerNamespace", body: .int(Int64(maxTopics)))
    }
}

struct NamespaceGetMaxTopics: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "get-max-topics-per-namespace", abstract: "Show a namespace's topic limit (null: the broker's).")
    @OptionGroup var options: AdminOptions
    @Argument var namespace: String
    func run(client: AdminClient) async throws { try await NamespaceQuota.get(client, namespace, "maxTopicsPerNamespace", options.output) }
}

struct NamespaceRemoveMaxTopics: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove-max-topics-per-namespace", abstract: "Remove a namespace's topic limit (the broker's applies).")
    @OptionGroup var options: AdminOptions
    @Argument var namespace: String
    func run(client: AdminClient) async throws { try await NamespaceQuota.remove(client, namespace, "maxTopicsPerNamespace") }
}
