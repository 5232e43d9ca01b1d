import ArgumentParser
import Foundation
import Schemas

/// pulsar-admin's tiered-storage verbs: `topics offload | offload-status`, and the namespace's
/// `set-offload-threshold | get-offload-threshold`, `set-offload-deletion-lag |
/// get-offload-deletion-lag | clear-offload-deletion-lag`, `set-offload-policies |
/// get-offload-policies | remove-offload-policies`.
struct TopicOffload: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "offload",
        abstract: "Offload a topic's older ledgers to the tier, keeping at most --size-threshold bytes local.",
        discussion: "Runs in the background on the broker; follow it with offload-status --wait-complete.")
    @OptionGroup var options: AdminOptions
    @Argument var topic: String
    @Option(name: [.customShort("s"), .customLong("size-threshold")], help: "Bytes to keep local: 10M, 5G, or a number.")
    var sizeThreshold: String

    func run(client: AdminClient) async throws {
        let threshold = try AdminArguments.bytes(sizeThreshold)
        guard threshold >= 0 else { throw AdminCLIError(description: "--size-threshold must be a size such as 10M (0: offload every closed ledger)") }
        let path = try AdminArguments.topicPath(topic)
        guard case .object(let stats)? = try await client.json("GET", path + "/internalStats"),
              case .array(let ledgers)? = stats["ledgers"], !ledgers.isEmpty
        else { throw AdminCLIError(description: "\(topic) has no data to offload") }
        // Pulsar's rule: sum the ledgers from the newest; the first ledger that takes the sum over
        // the threshold is offloaded with everything before it (the message id names the newer one).
        var suffix: Int64 = 0
        var newer: Int64?
        var before: Int64?
        for case .object(let ledger) in ledgers.reversed() {
            guard case .int(let ledgerID)? = ledger["ledgerId"] else { continue }
            if case .int(let size)? = ledger["size"] { suffix += size }
            if suffix > threshold, let newer {
                before = newer
                break
            }
            newer = ledgerID
        }
        guard let before else {
            print("Nothing to offload")
            return
        }
        _ = try await client.json("PUT", path + "/offload", body: .object([
            "ledgerId": .int(before), "entryId": .int(0), "partitionIndex": .int(-1),
        ]))
        print("Offload triggered for \(topic) for messages before \(before):0:-1")
    }
}

struct TopicOffloadStatus: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "offload-status", abstract: "Show whether a topic's offload runs, succeeded or failed.")
    @OptionGroup var options: AdminOptions
    @Argument var topic: String
    @Flag(name: [.customShort("w"), .customLong("wait-complete")], help: "Wait (showing progress) until it is no longer running.")
    var wait = false
    func run(client: AdminClient) async throws {
        try await LongRunningProcess.show(
            client, path: try AdminArguments.topicPath(topic) + "/offload", process: "Offload", of: topic,
            wait: wait, output: options.output)
    }
}

struct NamespaceSetOffloadThreshold: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "set-offload-threshold",
        abstract: "Offload each topic's closed ledgers once it holds more than this locally (0 = as each closes, -1 = the broker's).")
    @OptionGroup var options: AdminOptions
    @Argument var namespace: String
    @Option(name: [.customShort("s"), .long], help: "Bytes: 10M, 1G, a number, 0 or -1.") var size: String
    func run(client: AdminClient) async throws {
        let bytes = try AdminArguments.bytes(size)
        _ = try await client.json(
            "PUT", "/admin/v2/namespaces/\(try AdminArguments.namespacePath(namespace))/offloadThreshold", body: .int(bytes))
    }
}

struct NamespaceGetOffloadThreshold: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "get-offload-threshold", abstract: "Show a namespace's offload threshold in bytes (-1: not set).")
    @OptionGroup var options: AdminOptions
    @Argument var namespace: String
    func run(client: AdminClient) async throws { try await NamespaceQuota.get(client, namespace, "offloadThreshold", options.output) }
}

struct NamespaceSetOffloadDeletionLag: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "set-offload-deletion-lag",
        abstract: "Keep the local copy of an offloaded ledger this long before deleting it (0 = delete at once).")
    @OptionGroup var options: AdminOptions
    @Argument var namespace: String
    @Option(name: [.customShort("l"), .long], help: "Time: 0, 30s, 10m, 3h, 2d.") var lag: String
    func run(client: AdminClient) async throws {
        let seconds = try AdminArguments.seconds(lag)
        guard seconds >= 0 else { throw AdminCLIError(description: "--lag must be 0 or a time such as 10m") }
        _ = try await client.json(
            "PUT", "/admin/v2/namespaces/\(try AdminArguments.namespacePath(namespace))/offloadDeletionLagMs", body: .int(seconds * 1000))
    }
}

struct NamespaceGetOffloadDeletionLag: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "get-offload-deletion-lag", abstract: "Show a namespace's offload deletion lag in ms (null: the broker's).")
    @OptionGroup var options: AdminOptions
    @Argument var namespace: String
    func run(client: AdminClient) async throws { try await NamespaceQuota.get(client, namespace, "offloadDeletionLagMs", options.output) }
}

struct NamespaceClearOffloadDeletionLag: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "clear-offload-deletion-lag", abstract: "Remove a namespace's offload deletion lag (the broker's applies).")
    @OptionGroup var options: AdminOptions
    @Argument var namespace: String
    func run(client: AdminClient) async throws { try await NamespaceQuota.remove(client, namespace, "offloadDeletionLagMs") }
}

struct NamespaceSetOffloadPolicies: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "set-offload-policies", abstract: "Give a namespace its own tier: driver, bucket or directory, thresholds.")
    @OptionGroup var options: AdminOptions
    @Argument var namespace: String
    @Option(name: [.customShort("d"), .long], help: "filesystem or aws-s3.") var driver: String
    @Option(name: [.customShort("b"), .long], help: "The S3 bucket.") var bucket: String?
    @Option(name: [.customShort("r"), .long], help: "The S3 region.") var region: String?
    @Option(name: [.customShort("e"), .long], help: "The S3-compatible server's URL.") var endpoint: String?
    @Option(name: .customLong("fs-uri"), help: "The filesystem driver's directory (file:///dir).") var fileSystemURI: String?
    @Option(name: .customLong("maxBlockSize"), help: "Bytes per block: 64M.")
    var maxBlockSize: String?
    @Option(name: .customLong("offloadAfterThreshold"), help: "Offload past this many local bytes: 10M, 0, -1.")
    var offloadAfterThreshold: String?
    @Option(name: .customLong("offloadDeletionLag"), help: "Keep local copies this long: 10m, 0.")
    var offloadDeletionLag: String?

    func run(client: AdminClient) async throws {
        var policies: [String: JSONValue] = ["managedLedgerOffloadDriver": .string(driver)]
        if let bucket { policies["s3ManagedLedgerOffloadBucket"] = .string(bucket) }
        if let region { policies["s3ManagedLedgerOffloadRegion"] = .string(region) }
        if let endpoint { policies["s3ManagedLedgerOffloadServiceEndpoint"] = .string(endpoint) }
        if let fileSystemURI { policies["fileSystemURI"] = .string(fileSystemURI) }
        if let maxBlockSize {
            let bytes = try AdminArguments.bytes(maxBlockSize)
            policies["s3ManagedLedgerOffloadMaxBlockSizeInBytes"] = .int(bytes)
            policies["managedLedgerOffloadMaxBlockSizeInBytes"] = .int(bytes)
        }
        if let offloadAfterThreshold { policies["managedLedgerOffloadThresholdInBytes"] = .int(try AdminArguments.bytes(offloadAfterThreshold)) }
        if let offloadDeletionLag {
            policies["managedLedgerOffloadDeletionLagInMillis"] = .int(try AdminArguments.seconds(offloadDeletionLag) * 1000)
        }
        _ = try await client.json(
            "POST", "/admin/v2/namespaces/\(try AdminArguments.namespacePath(namespace))/offloadPolicies", body: .object(policies))
    }
}

struct NamespaceGetOffloadPolicies: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "get-offload-policies", abstract: "Show a namespace's own tier (null: the broker's).")
    @OptionGroup var options: AdminOptions
    @Argument var namespace: String
    func run(client: AdminClient) async throws { try await NamespaceQuota.get(client, namespace, "offloadPolicies", options.output) }
}

struct NamespaceRemoveOffloadPolicies: AdminLeafCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove-offload-policies", abstract: "Remove a namespace's own tier (the broker's applies).")
    @OptionGroup var options: AdminOptions
    @Argument var namespace: String
    func run(client: AdminClient) async throws { try await NamespaceQuota.remove(client, namespace, "removeOffloadPolicies") }
}
