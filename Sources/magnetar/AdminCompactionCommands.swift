import ArgumentParser
import Foundation
import Schemas

/// pulsar-admin's compaction verbs: `topics compact | compaction-status`, and the namespace's
/// `set-compaction-threshold | get-compaction-threshold | remove-compaction-threshold`.
struct TopicCompact: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "compact",
        abstract: "Compact a topic: keep the latest message of each key (a partitioned topic: each partition).",
        discussion: "Runs in the background on the broker; follow it with compaction-status --wait-complete.")
    @OptionGroup var options: AdminOptions
    @Argument var topic: String
    func run(client: AdminClient) async throws {
        _ = try await client.json("PUT", try AdminArguments.topicPath(topic) + "/compaction")
        print("Topic compaction requested for \(topic)")
    }
}

struct TopicCompactionStatus: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "compaction-status", abstract: "Show whether a topic's compaction runs, succeeded or failed.")
    @OptionGroup var options: AdminOptions
    @Argument var topic: String
    @Flag(name: [.customShort("w"), .customLong("wait-complete")], help: "Wait (showing progress) until it is no longer running.")
    var wait = false
    func run(client: AdminClient) async throws {
        try await LongRunningProcess.show(
            client, path: try AdminArguments.topicPath(topic) + "/compaction", process: "Compaction", of: topic,
            wait: wait, output: options.output)
    }
}

/// Pulsar's `LongRunningProcessStatus` / `OffloadProcessStatus` as pulsar-admin prints them,
/// optionally waited for (`--wait-complete`) with a progress line each second.
enum LongRunningProcess {
    static func show(
        _ client: AdminClient, path: String, process: String, of topic: String, wait: Bool, output: OutputFormat
    ) async throws {
        var reply = try await client.json("GET", path)
        let started = Date()
        while wait, case .object(let fields)? = reply, case .string("RUNNING")? = fields["status"] {
            FileHandle.standardError.write(Data("\(process.lowercased()) of \(topic) running (\(Int(Date().timeIntervalSince(started))) s)\n".utf8))
            try await Task.sleep(nanoseconds: 1_000_000_000)
            reply = try await client.json("GET", path)
        }
        guard case .object(let fields)? = reply else { return Printer.show(reply, output) }
        switch fields["status"] {
        case .string("SUCCESS")?: print("\(process) was a success")
        case .string("NOT_RUN")?: print("\(process) has not been run")
        case .string("RUNNING")?: print("\(process) is running")
        case .string("ERROR")?:
            throw AdminCLIError(description: "\(process.lowercased()) of \(topic) failed: \(Printer.scalar(fields["lastError"]))")
        default: Printer.show(reply, output)
        }
    }
}

struct NamespaceSetCompactionThreshold: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "set-compaction-threshold",
        abstract: "Compact each topic of the namespace once this much was written after its last compaction (0 = never).")
    @OptionGroup var options: AdminOptions
    @Argument var namespace: String
    @Option(name: [.customShort("t"), .long], help: "Bytes: 100M, 1G, or a number.") var threshold: String
    func run(client: AdminClient) async throws {
        let bytes = try AdminArguments.bytes(threshold)
        guard bytes >= 0 else { throw AdminCLIError(description: "the threshold must be 0 (never) or a size such as 100M") }
        _ = try await client.json(
            "PUT", "/admin/v2/namespaces/\(try AdminArguments.namespacePath(namespace))/compactionThreshold", body: .int(bytes))
    }
}

struct NamespaceGetCompactionThreshold: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "get-compaction-threshold", abstract: "Show a namespace's compaction threshold (null: the broker's).")
    @OptionGroup var options: AdminOptions
    @Argument var namespace: String
    func run(client: AdminClient) async throws { try await NamespaceQuota.get(client, namespace, "compactionThreshold", options.output) }
}

struct NamespaceRemoveCompactionThreshold: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove-compaction-threshold", abstract: "Remove a namespace's compaction threshold (the broker's applies).")
    @OptionGroup var options: AdminOptions
    @Argument var namespace: String
    func run(client: AdminClient) async throws { try await NamespaceQuota.remove(client, namespace, "compactionThreshold") }
}
