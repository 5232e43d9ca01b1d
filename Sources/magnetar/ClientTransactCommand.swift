import ArgumentParser
import Foundation
import MagnetarClient
import NIOCore

/// `magnetar client transact`: consume-transform-produce in one Pulsar transaction with
/// MagnetarClient — receive messages from a subscription, send each (upper-cased, with `--prefix`)
/// to an output topic and acknowledge it, all in the transaction, then commit, abort, or leave it
/// open for the coordinator's timeout. Prints `txn\t<id>`, one `<input id>\t<payload sent>` line per
/// message, then `committed`, `aborted` or `open`; with `--check-conflict`, also
/// `conflict\t<error>` from a second transaction acknowledging the first message.
struct ClientTransactCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "transact",
        abstract: "Consume, transform and produce in one transaction (Pulsar's transaction protocol).")

    @Option(help: "Topic to consume from.")
    var input: String

    @Option(name: [.customShort("s"), .customLong("subscription-name")], help: "Subscription on the input topic.")
    var subscription: String

    @Option(help: "Topic to produce to.")
    var output: String

    @Option(name: [.customShort("n"), .customLong("num-messages")], help: "Messages to process in the transaction.")
    var count = 1

    @Option(help: "How the transaction ends: commit, abort, or leave (exit with it open: it times out).")
    var end = "commit"

    @Option(help: "The transaction's timeout, in milliseconds.")
    var timeoutMs: Int64 = 60_000

    @Option(help: "Prepended to each payload sent.")
    var prefix = ""

    @Flag(help: "Also acknowledge the first message in a second transaction and print the refusal.")
    var checkConflict = false

    @OptionGroup var connection: ClientConnectionOptions

    func validate() throws {
        guard ["commit", "abort", "leave"].contains(end) else { throw ValidationError("--end must be commit, abort or leave") }
        guard count > 0 else { throw ValidationError("--num-messages must be at least 1") }
    }

    func run() async throws {
        let client = try connection.makeClient()
        var options = ConsumerOptions()
        options.initialPosition = .earliest
        let consumer = try await client.subscribe(topic: input, subscription: subscription, type: .shared, options: options)
        let producer = try await client.createProducer(topic: output)
        let transaction = try await client.newTransaction(timeout: .milliseconds(timeoutMs))
        ClientCommand.printLine("txn\t\(transaction)")
        var first: Message?
        for _ in 0..<count {
            let message = try await consumer.receive()
            first = first ?? message
            let payload = prefix + String(buffer: message.payload).uppercased()
            _ = try await producer.send(ByteBuffer(string: payload), key: message.partitionKey, transaction: transaction)
            try await consumer.acknowledge(message, transaction: transaction)
            ClientCommand.printLine("\(ClientCommand.format(message.id))\t\(payload)")
        }
        if checkConflict, let first {
            let other = try await client.newTransaction(timeout: .milliseconds(timeoutMs))
            do {
                try await consumer.acknowledge(first, transaction: other)
                ClientCommand.printLine("conflict\tnone")
            } catch {
                ClientCommand.printLine("conflict\t\(error.serverError.map { "\($0)" } ?? "\(error.code)")")
            }
            try await other.abort()
        }
        switch end {
        case "commit":
            try await transaction.commit()
            ClientCommand.printLine("committed")
        case "abort":
            try await transaction.abort()
            ClientCommand.printLine("aborted")
        default:
            ClientCommand.printLine("open")
        }
        try? await producer.close()
        try? await consumer.close()
        await client.close()
    }
}
