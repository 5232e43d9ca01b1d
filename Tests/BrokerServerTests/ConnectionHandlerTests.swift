import BrokerCore
import ManagedLedger
@testable import BrokerServer
import LedgerStorage
import Logging
import Metadata
import NIOCore
import NIOEmbedded
import PulsarProtocol
import Testing

/// The connection handler in an `EmbeddedChannel` behind the real frame decoder.
@Suite struct ConnectionHandlerTests {
    func makeChannel() throws -> EmbeddedChannel {
        let loop = EmbeddedEventLoop()
        let broker = BrokerService(
            configuration: BrokerConfiguration(), store: LocalLedgerClient(store: InMemoryLedgerStore(), readsInline: true), metadata: InMemoryMetadataStore(),
            eventLoopGroup: loop, logger: Logger(label: "test"))
        let channel = EmbeddedChannel(loop: loop)
        try channel.pipeline.syncOperations.addHandler(PulsarConnectionHandler(
            broker: broker, configuration: ConnectionConfiguration(brokerServiceURL: "pulsar://127.0.0.1:6650"),
            connectionID: 1, logger: Logger(label: "test")))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 6650)).wait()
        return channel
    }

    func command(_ type: Pulsar_Proto_BaseCommand.TypeEnum, _ fill: (inout Pulsar_Proto_BaseCommand) -> Void = { _ in }) -> ByteBuffer {
        var command = Pulsar_Proto_BaseCommand()
        command.type = type
        fill(&command)
        return PulsarFrameEncoder.encodeCommand(command)
    }

    func readCommand(_ channel: EmbeddedChannel) throws -> Pulsar_Proto_BaseCommand? {
        guard var buffer = try channel.readOutbound(as: ByteBuffer.self) else { return nil }
        var decoder = PulsarFrameDecoder()
        return try decoder.decode(buffer: &buffer)?.command
    }

    @Test func handshakeAndPing() throws {
        let channel = try makeChannel()
        try channel.writeInbound(command(.connect) {
            $0.connect.clientVersion = "Pulsar-CPP-v4.2.0"
            $0.connect.protocolVersion = 20
        })
        let connected = try #require(try readCommand(channel))
        #expect(connected.type == .connected)
        #expect(connected.connected.serverVersion.hasPrefix("Magnetar"))
        #expect(connected.connected.maxMessageSize == Int32(PulsarLimits.maxMessageSizeBytes))
        try channel.writeInbound(command(.ping) { $0.ping = Pulsar_Proto_CommandPing() })
        #expect(try readCommand(channel)?.type == .pong)
        #expect(channel.isActive)
    }

    @Test func commandBeforeConnectClosesTheConnection() throws {
        let channel = try makeChannel()
        try channel.writeInbound(command(.ping) { $0.ping = Pulsar_Proto_CommandPing() })
        #expect(!channel.isActive)
    }

    @Test func oversizedFrameClosesTheConnection() throws {
        let channel = try makeChannel()
        var buffer = ByteBufferAllocator().buffer(capacity: 8)
        buffer.writeInteger(UInt32(0x7FFF_FFFF))
        buffer.writeInteger(UInt32(1))
        // The decoder refuses it from the length field; the handler closes this connection.
        _ = try? channel.writeInbound(buffer)
        #expect(!channel.isActive)
    }

    @Test func sendWithoutProducerGetsAnErrorNotACrash() throws {
        let channel = try makeChannel()
        try channel.writeInbound(command(.connect) { $0.connect.clientVersion = "x"; $0.connect.protocolVersion = 20 })
        _ = try readCommand(channel)
        var metadata = Pulsar_Proto_MessageMetadata()
        metadata.producerName = "p"
        metadata.sequenceID = 0
        metadata.publishTime = 1
        let bytes = try PulsarFrameEncoder.checksummedBytes(metadata: metadata, payload: ByteBuffer(string: "x"))
        var send = Pulsar_Proto_BaseCommand()
        send.type = .send
        send.send.producerID = 42
        send.send.sequenceID = 0
        try channel.writeInbound(PulsarFrameEncoder.encodePayloadFrame(send, payload: PayloadSection(checksum: nil, checksummedBytes: bytes)))
        let reply = try #require(try readCommand(channel))
        #expect(reply.type == .sendError)
        #expect(channel.isActive)
    }
}
