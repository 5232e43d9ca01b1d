import NIOCore

/// Splits the byte stream into Kafka request frames (`[int32 size][size bytes]`). The size is
/// checked before the frame is buffered: over `maxRequestBytes` (Kafka's
/// `socket.request.max.bytes`) or too small to hold a header, the connection is closed with
/// `KafkaProtocolError` (nothing of it was read, so it cannot be answered).
public struct KafkaFrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = ByteBuffer
    public let maxRequestBytes: Int

    public init(maxRequestBytes: Int = KafkaLimits.maxRequestBytes) {
        self.maxRequestBytes = maxRequestBytes
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let size = buffer.getInteger(at: buffer.readerIndex, as: Int32.self) else { return .needMoreData }
        // The header's fixed part: api key, version, correlation id, client id length.
        guard size >= 10 else { throw KafkaProtocolError("request frame of \(size) bytes is too small for a header") }
        guard Int(size) <= maxRequestBytes else {
            throw KafkaProtocolError("request frame of \(size) bytes is over socket.request.max.bytes (\(maxRequestBytes))")
        }
        guard buffer.readableBytes >= 4 + Int(size) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 4)
        context.fireChannelRead(wrapInboundOut(buffer.readSlice(length: Int(size))!))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}
