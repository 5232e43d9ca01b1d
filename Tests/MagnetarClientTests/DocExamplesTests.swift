import NIOCore
import Testing

@testable import MagnetarClient

/// The code examples of docs/CLIENT.md, compiled (not run: they need a broker) so the guide cannot
/// drift from the API. Keep in step with the guide.
@Suite struct DocExamplesTests {
    func clientExample() async throws {
        var options = ClientOptions()
        options.operationTimeout = .seconds(10)
        let client = try PulsarClient(url: "pulsar://127.0.0.1:6650", options: options)
        await client.close()
    }

    func producerExamples(client: PulsarClient) async throws {
        let producer = try await client.createProducer(topic: "orders")
        let id = try await producer.send(ByteBuffer(string: "order #1"))
        print(id)
        _ = try await producer.send(
            ByteBuffer(string: "order #2"), key: "customer-17", properties: ["source": "web"], eventTimeMs: 1_700_000_000_000)
        try await producer.close()

        var options = ProducerOptions()
        options.batchingMaxMessages = 100
        options.batchingMaxPublishDelay = .milliseconds(5)
        options.compression = .zstd
        options.routingMode = .singlePartition
        let fast = try await client.createProducer(topic: "events", options: options)
        for i in 0..<10_000 {
            fast.sendAsync(OutgoingMessage(payload: ByteBuffer(string: "event \(i)"), key: "device-\(i % 8)")) { result in
                if case .failure(let error) = result { print("send failed:", error) }
            }
        }
        try await fast.flush()
        _ = fast.partitionCount

        var blocking = ProducerOptions()
        blocking.maxPendingMessages = 1_000
        blocking.blockIfQueueFull = true
        blocking.sendTimeout = .seconds(10)
        let steady = try await client.createProducer(topic: "events", options: blocking)
        _ = try await steady.send(ByteBuffer(string: "waits for room if 1,000 are in flight"))
    }

    func consumerExamples(client: PulsarClient, someID: MessageID) async throws {
        var options = ConsumerOptions()
        options.initialPosition = .earliest
        options.receiverQueueSize = 1000
        let consumer = try await client.subscribe(topic: "orders", subscription: "billing", type: .shared, options: options)
        let message = try await consumer.receive()
        print(String(buffer: message.payload), message.partitionKey ?? "-", message.properties)
        consumer.acknowledge(message)
        let many = try await consumer.receive(maxMessages: 500)
        consumer.acknowledge(many.map(\.id))
        try await consumer.seek(to: .id(someID))
        try await consumer.seek(toPublishTime: 1_700_000_000_000)
        try await consumer.close()

        let reader = try await client.createReader(topic: "orders", startMessageID: .earliest)
        while try await reader.hasMessageAvailable() {
            let message = try await reader.readNext()
            print(message.id, String(buffer: message.payload))
        }
        try await reader.seek(to: .id(someID))
        try await reader.seek(toPublishTime: 1_700_000_000_000)
        try await reader.close()

        do {
            _ = try await client.subscribe(topic: "orders", subscription: "billing", type: .exclusive)
        } catch let error as PulsarClientError where error.serverError == .consumerBusy {
            print("someone else holds the exclusive subscription:", error.message)
        }
    }

    func transactionExample(client: PulsarClient, producer: Producer, consumer: Consumer) async throws {
        let transaction = try await client.newTransaction(timeout: .seconds(30))
        let message = try await consumer.receive()
        _ = try await producer.send(ByteBuffer(string: "result"), transaction: transaction)
        try await consumer.acknowledge(message, transaction: transaction)
        try await transaction.commit()          // or abort(): the send is never delivered, the message comes again
    }

    @Test func examplesCompile() {
        // Compiling this file is the test.
        #expect(CompressionType(name: "zstd") == .zstd)
    }
}
