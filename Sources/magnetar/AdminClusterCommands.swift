import ArgumentParser
import Foundation
import Schemas

/// `magnetar admin brokers ...`: the live brokers of the cluster and what they own.
struct BrokersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "brokers", abstract: "Live brokers and the bundles they own.",
        subcommands: [List.self, OwnedNamespaces.self])

    @OptionGroup var options: AdminOptions

    struct List: AdminLeafCommand {
        static let configuration = CommandConfiguration(abstract: "List live brokers (host:http-port).")
        @OptionGroup var options: AdminOptions
        @Argument(help: "Cluster name.") var cluster = "magnetar"
        func run(client: AdminClient) async throws {
            Printer.show(try await client.json("GET", "/admin/v2/brokers/\(AdminArguments.escape(cluster))"), options.output)
        }
    }

    struct OwnedNamespaces: AdminLeafCommand {
        static let configuration = CommandConfiguration(
            commandName: "namespaces", abstract: "List the namespace bundles a broker owns.")
        @OptionGroup var options: AdminOptions
        @Argument(help: "Cluster name.") var cluster: String
        @Argument(help: "Broker id (host:http-port, as `brokers list` prints it).") var broker: String
        func run(client: AdminClient) async throws {
            let path = "/admin/v2/brokers/\(AdminArguments.escape(cluster))/\(AdminArguments.escape(broker))/ownedNamespaces"
            Printer.show(try await client.json("GET", path), options.output)
        }
    }
}

/// `magnetar admin bookies list`: the registered storage nodes (pulsar-admin calls them bookies).
struct BookiesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bookies", abstract: "Storage nodes registered in the cluster.", subcommands: [List.self])

    @OptionGroup var options: AdminOptions

    struct List: AdminLeafCommand {
        static let configuration = CommandConfiguration(abstract: "List registered storage nodes.")
        @OptionGroup var options: AdminOptions
        func run(client: AdminClient) async throws {
            Printer.show(try await client.json("GET", "/admin/v2/bookies/all"), options.output)
        }
    }
}

/// Bundle commands under `magnetar admin namespaces`.
struct NamespaceBundles: AdminLeafCommand {
    static let configuration = CommandConfiguration(commandName: "bundles", abstract: "Show a namespace's bundle boundaries.")
    @OptionGroup var options: AdminOptions
    @Argument var namespace: String
    func run(client: AdminClient) async throws {
        Printer.show(try await client.json("GET", "/admin/v2/namespaces/\(try AdminArguments.namespacePath(namespace))/bundles"), options.output)
    }
}

struct NamespaceUnload: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "unload", abstract: "Unload a namespace (or one bundle): its topics move to whichever broker looks them up next.")
    @OptionGroup var options: AdminOptions
    @Argument var namespace: String
    @Option(name: [.customShort("b"), .long], help: "One bundle, e.g. 0x00000000_0x40000000.") var bundle: String?
    func run(client: AdminClient) async throws {
        let base = "/admin/v2/namespaces/\(try AdminArguments.namespacePath(namespace))"
        _ = try await client.json("PUT", bundle.map { "\(base)/\(AdminArguments.escape($0))/unload" } ?? "\(base)/unload")
    }
}

/// Topic commands: unload, lookup.
struct TopicUnload: AdminLeafCommand {
    static let configuration = CommandConfiguration(commandName: "unload", abstract: "Unload a topic: its clients reconnect.")
    @OptionGroup var options: AdminOptions
    @Argument var topic: String
    func run(client: AdminClient) async throws {
        _ = try await client.json("PUT", try AdminArguments.topicPath(topic) + "/unload")
    }
}

struct TopicLookup: AdminLeafCommand {
    static let configuration = CommandConfiguration(commandName: "lookup", abstract: "Show the broker serving a topic.")
    @OptionGroup var options: AdminOptions
    @Argument var topic: String
    func run(client: AdminClient) async throws {
        let path = try AdminArguments.topicPath(topic).replacingOccurrences(of: "/admin/v2/", with: "/lookup/v2/topic/")
        Printer.show(try await client.json("GET", path), options.output)
    }
}

struct NamespaceSetPersistence: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "set-persistence", abstract: "Set the ensemble size, write quorum and ack quorum of the namespace's new ledgers.")
    @OptionGroup var options: AdminOptions
    @Argument var namespace: String
    @Option(name: [.customShort("e"), .customLong("bookkeeper-ensemble")], help: "Ensemble size E.") var ensemble: Int
    @Option(name: [.customShort("w"), .customLong("bookkeeper-write-quorum")], help: "Write quorum Qw.") var writeQuorum: Int
    @Option(name: [.customShort("a"), .customLong("bookkeeper-ack-quorum")], help: "Ack quorum Qa.") var ackQuorum: Int
    func run(client: AdminClient) async throws {
        let body: JSONValue = .object([
            "bookkeeperEnsemble": .int(Int64(ensemble)), "bookkeeperWriteQuorum": .int(Int64(writeQuorum)),
            "bookkeeperAckQuorum": .int(Int64(ackQuorum)), "managedLedgerMaxMarkDeleteRate": .double(0),
        ])
        _ = try await client.json("POST", "/admin/v2/namespaces/\(try AdminArguments.namespacePath(namespace))/persistence", body: body)
    }
}

struct NamespaceGetPersistence: AdminLeafCommand {
    static let configuration = CommandConfiguration(commandName: "get-persistence", abstract: "Show the namespace's persistence policy.")
    @OptionGroup var options: AdminOptions
    @Argument var namespace: String
    func run(client: AdminClient) async throws {
        Printer.show(try await client.json("GET", "/admin/v2/namespaces/\(try AdminArguments.namespacePath(namespace))/persistence"), options.output)
    }
}
