import NIOCore

/// Splits the byte stream into Kafka request frames (`[int32 size][size bytes]`). The size is
/// checked before the frame is buffered: over `maxRequestBytes` (Kafka's
/// `socket.request.max.bytes`) or too small to hold a header, the connection is closed with
/// `KafkaProtocolError` (nothing of it was read, so it cannot be answered).
public struct KafkaFrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = ByteBuffer
    public let maxRequestBytes: Int
    /// Frames up to this size are handed on as their own buffer, larger ones as slices.
    static let copiedFrameBytes = 4096

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
        let frame = buffer.readSlice(length: Int(size))!
        if frame.readableBytes <= Self.copiedFrameBytes {
            // A small request is copied out: a slice would pin the whole read buffer until the
            // request is answered, and the next read would copy that buffer to append to it.
            var copy = context.channel.allocator.buffer(capacity: frame.readableBytes)
            copy.writeImmutableBuffer(frame)
            context.fireChannelRead(wrapInboundOut(copy))
        } else {
            context.fireChannelRead(wrapInboundOut(frame))
        }
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}
