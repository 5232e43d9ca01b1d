import ArgumentParser
import Foundation
import Schemas

// Geo-replication in pulsar-admin's words: `clusters create|update|list|get|delete`,
// `namespaces set-clusters|get-clusters`, `topics set-|get-|remove-replication-clusters`.

struct ClustersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clusters", abstract: "The clusters this one knows (geo-replication targets).",
        subcommands: [List.self, Get.self, Create.self, Update.self, Delete.self])

    @OptionGroup var options: AdminOptions

    /// pulsar-admin's `--url` / `--url-secure` are `--service-url` / `--service-url-secure` here
    /// (`--url` is the admin endpoint of every `magnetar admin` command); `--broker-url`,
    /// `--broker-url-secure` as in pulsar-admin.
    struct ClusterURLs: ParsableArguments {
        @Option(name: .customLong("service-url"), help: "The cluster's admin (web service) URL, http://host:port.")
        var serviceURL: String?
        @Option(name: .customLong("service-url-secure"), help: "Its TLS admin URL, https://host:port.")
        var serviceURLTLS: String?
        @Option(name: .customLong("broker-url"), help: "Its brokers' URL, pulsar://host:port.")
        var brokerURL: String?
        @Option(name: .customLong("broker-url-secure"), help: "Its brokers' TLS URL, pulsar+ssl://host:port.")
        var brokerURLTLS: String?

        var body: JSONValue {
            var fields: [String: JSONValue] = [:]
            if let serviceURL { fields["serviceUrl"] = .string(serviceURL) }
            if let serviceURLTLS { fields["serviceUrlTls"] = .string(serviceURLTLS) }
            if let brokerURL { fields["brokerServiceUrl"] = .string(brokerURL) }
            if let brokerURLTLS { fields["brokerServiceUrlTls"] = .string(brokerURLTLS) }
            return .object(fields)
        }
    }

    struct List: AdminLeafCommand {
        static let configuration = CommandConfiguration(abstract: "List the clusters.")
        @OptionGroup var options: AdminOptions
        func run(client: AdminClient) async throws {
            Printer.show(try await client.json("GET", "/admin/v2/clusters"), options.output)
        }
    }

    struct Get: AdminLeafCommand {
        static let configuration = CommandConfiguration(abstract: "Show how a cluster is reached.")
        @OptionGroup var options: AdminOptions
        @Argument var cluster: String
        func run(client: AdminClient) async throws {
            Printer.show(try await client.json("GET", "/admin/v2/clusters/\(AdminArguments.escape(cluster))"), options.output)
        }
    }

    struct Create: AdminLeafCommand {
        static let configuration = CommandConfiguration(abstract: "Register a cluster (its admin and broker URLs).")
        @OptionGroup var options: AdminOptions
        @Argument var cluster: String
        @OptionGroup var urls: ClusterURLs
        func run(client: AdminClient) async throws {
            _ = try await client.json("PUT", "/admin/v2/clusters/\(AdminArguments.escape(cluster))", body: urls.body)
        }
    }

    struct Update: AdminLeafCommand {
        static let configuration = CommandConfiguration(abstract: "Replace a cluster's URLs.")
        @OptionGroup var options: AdminOptions
        @Argument var cluster: String
        @OptionGroup var urls: ClusterURLs
        func run(client: AdminClient) async throws {
            _ = try await client.json("POST", "/admin/v2/clusters/\(AdminArguments.escape(cluster))", body: urls.body)
        }
    }

    struct Delete: AdminLeafCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a cluster (no namespace may replicate to it).")
        @OptionGroup var options: AdminOptions
        @Argument var cluster: String
        func run(client: AdminClient) async throws {
            _ = try await client.json("DELETE", "/admin/v2/clusters/\(AdminArguments.escape(cluster))")
        }
    }
}

/// `--clusters a,b` as the JSON list the REST API takes.
func clusterList(_ raw: String) throws -> JSONValue {
    let names = raw.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    guard !names.isEmpty else { throw ValidationError("--clusters needs at least one cluster name (comma-separated)") }
    return .array(names.map { .string($0) })
}

struct NamespaceSetClusters: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "set-clusters", abstract: "Set the clusters a namespace's topics are replicated between.")
    @OptionGroup var options: AdminOptions
    @Argument var namespace: String
    @Option(name: [.customShort("c"), .long], help: "Comma-separated cluster names, this cluster among them.") var clusters: String
    func run(client: AdminClient) async throws {
        _ = try await client.json(
            "POST", "/admin/v2/namespaces/\(try AdminArguments.namespacePath(namespace))/replication", body: try clusterList(clusters))
    }
}

struct NamespaceGetClusters: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "get-clusters", abstract: "Show the clusters a namespace's topics are replicated between.")
    @OptionGroup var options: AdminOptions
    @Argument var namespace: String
    func run(client: AdminClient) async throws {
        Printer.show(try await client.json("GET", "/admin/v2/namespaces/\(try AdminArguments.namespacePath(namespace))/replication"), options.output)
    }
}

struct TopicSetReplicationClusters: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "set-replication-clusters", abstract: "Replicate one topic between these clusters (overrides its namespace's).")
    @OptionGroup var options: AdminOptions
    @Argument var topic: String
    @Option(name: [.customShort("c"), .long], help: "Comma-separated cluster names, this cluster among them.") var clusters: String
    func run(client: AdminClient) async throws {
        _ = try await client.json("POST", "\(try AdminArguments.topicPath(topic))/replication", body: try clusterList(clusters))
    }
}

struct TopicGetReplicationClusters: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "get-replication-clusters", abstract: "Show a topic's own replication clusters (--applied: what applies).")
    @OptionGroup var options: AdminOptions
    @Argument var topic: String
    @Flag(help: "Show the namespace's when the topic sets none.") var applied = false
    func run(client: AdminClient) async throws {
        Printer.show(
            try await client.json("GET", "\(try AdminArguments.topicPath(topic))/replication\(applied ? "?applied=true" : "")"),
            options.output)
    }
}

struct TopicRemoveReplicationClusters: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove-replication-clusters", abstract: "Remove a topic's own replication clusters (its namespace's apply).")
    @OptionGroup var options: AdminOptions
    @Argument var topic: String
    func run(client: AdminClient) async throws {
        _ = try await client.json("DELETE", "\(try AdminArguments.topicPath(topic))/replication")
    }
}
