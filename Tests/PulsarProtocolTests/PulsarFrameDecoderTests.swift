import CRC32C
import NIOCore
import NIOTestUtils
import PulsarProtocol
import Testing

@Suite struct PulsarFrameDecoderTests {
    let allocator = ByteBufferAllocator()

    func ping() -> Pulsar_Proto_BaseCommand {
        var command = Pulsar_Proto_BaseCommand()
        command.type = .ping
        command.ping = Pulsar_Proto_CommandPing()
        return command
    }

    func sendFrame(payload: String, sequenceID: UInt64 = 7) throws -> (Pulsar_Proto_BaseCommand, PayloadSection, ByteBuffer) {
        var command = Pulsar_Proto_BaseCommand()
        command.type = .send
        command.send.producerID = 1
        command.send.sequenceID = sequenceID
        var metadata = Pulsar_Proto_MessageMetadata()
        metadata.producerName = "p"
        metadata.sequenceID = sequenceID
        metadata.publishTime = 1_700_000_000_000
        let bytes = try PulsarFrameEncoder.checksummedBytes(metadata: metadata, payload: ByteBuffer(string: payload))
        let section = PayloadSection(checksum: nil, checksummedBytes: bytes)
        return (command, section, PulsarFrameEncoder.encodePayloadFrame(command, payload: section))
    }

    @Test func pingMatchesTheWireBytesOfTheNotes() {
        let buffer = PulsarFrameEncoder.encodeCommand(ping())
        #expect(Array(buffer.readableBytesView) == [0, 0, 0, 9, 0, 0, 0, 5, 0x08, 0x12, 0x92, 0x01, 0x00])
    }

    @Test func simpleCommandRoundTrip() throws {
        var command = Pulsar_Proto_BaseCommand()
        command.type = .subscribe
        command.subscribe.topic = "persistent://public/default/t"
        command.subscribe.subscription = "s"
        command.subscribe.subType = .shared
        command.subscribe.consumerID = 3
        command.subscribe.requestID = 9
        var buffer = PulsarFrameEncoder.encodeCommand(command)
        var decoder = PulsarFrameDecoder()
        let frame = try #require(try decoder.decode(buffer: &buffer))
        #expect(frame.command == command)
        #expect(frame.payload == nil)
        #expect(buffer.readableBytes == 0)
    }

    @Test func payloadFrameRoundTripWithChecksum() throws {
        let (command, section, encoded) = try sendFrame(payload: "hello")
        var buffer = encoded
        var decoder = PulsarFrameDecoder()
        let frame = try #require(try decoder.decode(buffer: &buffer))
        #expect(frame.command == command)
        let payload = try #require(frame.payload)
        #expect(payload.checksum == section.computeChecksum())
        #expect(payload.isChecksumValid)
        #expect(payload.checksummedBytes == section.checksummedBytes)
        let metadata = try payload.decodeMetadata()
        #expect(metadata.sequenceID == 7)
    }

    @Test func corruptedPayloadFailsTheChecksum() throws {
        let (_, _, encoded) = try sendFrame(payload: "hello")
        var buffer = encoded
        let last = buffer.writerIndex - 1
        buffer.setInteger(buffer.getInteger(at: last, as: UInt8.self)! ^ 0xFF, at: last)
        var decoder = PulsarFrameDecoder()
        let frame = try #require(try decoder.decode(buffer: &buffer))
        #expect(frame.payload?.isChecksumValid == false)
    }

    @Test func oversizedFrameIsRefusedFromItsLengthField() {
        var buffer = allocator.buffer(capacity: 8)
        buffer.writeInteger(UInt32(PulsarLimits.maxFrameSizeBytes + 1))
        buffer.writeInteger(UInt32(5))
        var decoder = PulsarFrameDecoder()
        #expect(throws: PulsarProtocolError.self) { try decoder.decode(buffer: &buffer) }
    }

    @Test func garbageIsRefused() {
        // A small frame whose command bytes are not a BaseCommand.
        var buffer = allocator.buffer(capacity: 16)
        buffer.writeInteger(UInt32(8))
        buffer.writeInteger(UInt32(4))
        buffer.writeBytes([0xFF, 0xFF, 0xFF, 0xFF])
        var decoder = PulsarFrameDecoder()
        #expect(throws: PulsarProtocolError.self) { try decoder.decode(buffer: &buffer) }
    }

    @Test func commandSizeBeyondTheFrameIsRefused() {
        var buffer = allocator.buffer(capacity: 16)
        buffer.writeInteger(UInt32(8))
        buffer.writeInteger(UInt32(100))
        buffer.writeBytes([0, 0, 0, 0])
        var decoder = PulsarFrameDecoder()
        #expect(throws: PulsarProtocolError.self) { try decoder.decode(buffer: &buffer) }
    }

    @Test func commandWithoutTypeIsRefused() {
        // BaseCommand with only field 18 (ping) and no type.
        var buffer = allocator.buffer(capacity: 16)
        buffer.writeInteger(UInt32(7))
        buffer.writeInteger(UInt32(3))
        buffer.writeBytes([0x92, 0x01, 0x00])
        var decoder = PulsarFrameDecoder()
        #expect(throws: PulsarProtocolError.self) { try decoder.decode(buffer: &buffer) }
    }

    @Test func dripFedAndCoalescedBytesDecodeTheSame() throws {
        let (send, section, sendBytes) = try sendFrame(payload: String(repeating: "x", count: 300))
        let pingBytes = PulsarFrameEncoder.encodeCommand(ping())
        var input = allocator.buffer(capacity: 1024)
        input.writeImmutableBuffer(pingBytes)
        input.writeImmutableBuffer(sendBytes)
        let expectedPing = PulsarFrame(command: ping())
        let expectedSend = PulsarFrame(
            command: send, payload: PayloadSection(checksum: section.computeChecksum(), checksummedBytes: section.checksummedBytes))
        try ByteToMessageDecoderVerifier.verifyDecoder(
            inputOutputPairs: [(input, [expectedPing, expectedSend])],
            decoderFactory: { PulsarFrameDecoderHandler() })
    }
}

extension PulsarFrame: Equatable {
    public static func == (lhs: PulsarFrame, rhs: PulsarFrame) -> Bool {
        lhs.command == rhs.command && lhs.payload == rhs.payload
    }
}

/// The single-step decoder as a `ByteToMessageDecoder`, for NIO's verifier.
struct PulsarFrameDecoderHandler: ByteToMessageDecoder {
    typealias InboundOut = PulsarFrame
    var decoder = PulsarFrameDecoder()

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try decoder.decode(buffer: &buffer) else { return .needMoreData }
        context.fireChannelRead(NIOAny(frame))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        try decode(context: context, buffer: &buffer)
    }
}
