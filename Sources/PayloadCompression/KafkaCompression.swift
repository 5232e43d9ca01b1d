import CLZ4
import CSnappy
import CZlib
import CZstd
import NIOCore

/// The compression codecs of Kafka's record batches (attributes bits 0–2), in Kafka's own framings,
/// which differ from Pulsar's: gzip (RFC 1952, not zlib), Snappy in snappy-java's "xerial" block
/// framing (or raw Snappy, which librdkafka also accepts), the LZ4 *frame* format, and Zstandard
/// frames (possibly without a content size). Unlike Pulsar's, a Kafka batch does not state its
/// uncompressed size, so decompression streams into a buffer that grows up to `maxSizeBytes` and
/// fails past it. Stateless pure functions.
public enum KafkaCompression: Int16, Sendable, CaseIterable, CustomStringConvertible {
    case none = 0
    case gzip = 1
    case snappy = 2
    case lz4 = 3
    case zstd = 4

    public var description: String {
        switch self {
        case .none: "none"
        case .gzip: "gzip"
        case .snappy: "snappy"
        case .lz4: "lz4"
        case .zstd: "zstd"
        }
    }

    /// Pulsar's codec for the same algorithm (what a Kafka batch is stored with).
    public var pulsarType: CompressionType {
        switch self {
        case .none: .none
        case .gzip: .zlib
        case .snappy: .snappy
        case .lz4: .lz4
        case .zstd: .zstd
        }
    }

    /// snappy-java's stream header: magic `\x82SNAPPY\0`, version 1, compatible version 1.
    static let xerialMagic: [UInt8] = [0x82, 0x53, 0x4E, 0x41, 0x50, 0x50, 0x59, 0x00]

    // MARK: decompress

    /// The bytes `compressed` holds, at most `maxSizeBytes` of them.
    public func decompress(
        _ compressed: ByteBuffer, maxSizeBytes: Int, allocator: ByteBufferAllocator
    ) throws(PayloadCompressionError) -> ByteBuffer {
        switch self {
        case .none: return compressed
        case .gzip: return try Self.gunzip(compressed, maxSizeBytes: maxSizeBytes, allocator: allocator)
        case .snappy: return try Self.unsnappy(compressed, maxSizeBytes: maxSizeBytes, allocator: allocator)
        case .lz4: return try Self.unlz4(compressed, maxSizeBytes: maxSizeBytes, allocator: allocator)
        case .zstd: return try Self.unzstd(compressed, maxSizeBytes: maxSizeBytes, allocator: allocator)
        }
    }

    /// One step of a streaming decompressor: from `input` (what is left) into `output` (free space);
    /// returns the bytes consumed and produced and whether the stream ended. Throws on bad data.
    typealias Step = (UnsafeRawBufferPointer, UnsafeMutableRawBufferPointer) throws(PayloadCompressionError) -> (consumed: Int, produced: Int, ended: Bool)

    /// Runs `step` until the stream ends and the input is used up, growing the output (doubling,
    /// from about 4× the input) up to `maxSizeBytes`.
    static func stream(
        _ input: ByteBuffer, maxSizeBytes: Int, allocator: ByteBufferAllocator, name: String, _ step: Step
    ) throws(PayloadCompressionError) -> ByteBuffer {
        var output = allocator.buffer(capacity: min(max(input.readableBytes * 4, 256), max(maxSizeBytes, 1)))
        var consumedTotal = 0
        var ended = false
        var failure: PayloadCompressionError?
        while !(ended && consumedTotal == input.readableBytes) {
            let room = maxSizeBytes - output.readableBytes
            let chunk = min(max(output.capacity - output.writerIndex, 64 * 1024), room)
            var progressed = false
            input.withUnsafeReadableBytes { source in
                let rest = UnsafeRawBufferPointer(rebasing: source[consumedTotal...])
                output.writeWithUnsafeMutableBytes(minimumWritableBytes: max(chunk, 1)) { destination in
                    let space = UnsafeMutableRawBufferPointer(rebasing: destination[..<min(destination.count, max(chunk, 0))])
                    do {
                        let result = try step(rest, space)
                        consumedTotal += result.consumed
                        ended = result.ended
                        progressed = result.consumed > 0 || result.produced > 0 || result.ended
                        return result.produced
                    } catch {
                        failure = (error as? PayloadCompressionError) ?? PayloadCompressionError("\(error)")
                        return 0
                    }
                }
            }
            if let failure { throw failure }
            if ended, consumedTotal < input.readableBytes { ended = false }  // another frame follows
            if !progressed {
                if room <= 0 {
                    throw PayloadCompressionError("\(name) data expands past the limit of \(maxSizeBytes) bytes")
                }
                throw PayloadCompressionError("\(name) data of \(input.readableBytes) bytes is truncated")
            }
        }
        return output
    }

    static func gunzip(_ input: ByteBuffer, maxSizeBytes: Int, allocator: ByteBufferAllocator) throws(PayloadCompressionError) -> ByteBuffer {
        // zlib keeps a pointer to the stream: it must not move, so it lives on the heap.
        let zstream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
        zstream.initialize(to: z_stream())
        defer {
            inflateEnd(zstream)
            zstream.deinitialize(count: 1)
            zstream.deallocate()
        }
        // windowBits 15 + 16: gzip framing only.
        guard inflateInit2_(zstream, 15 + 16, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw PayloadCompressionError("zlib could not start inflating")
        }
        var needsReset = false
        return try stream(input, maxSizeBytes: maxSizeBytes, allocator: allocator, name: "gzip") { source, destination throws(PayloadCompressionError) in
            if needsReset {
                // A further gzip member (concatenated streams are valid gzip).
                inflateReset(zstream)
                needsReset = false
            }
            zstream.pointee.next_in = UnsafeMutablePointer(mutating: source.baseAddress?.assumingMemoryBound(to: Bytef.self))
            zstream.pointee.avail_in = uInt(source.count)
            zstream.pointee.next_out = destination.baseAddress?.assumingMemoryBound(to: Bytef.self)
            zstream.pointee.avail_out = uInt(destination.count)
            let status = inflate(zstream, Z_NO_FLUSH)
            let consumed = source.count - Int(zstream.pointee.avail_in)
            let produced = destination.count - Int(zstream.pointee.avail_out)
            switch status {
            case Z_STREAM_END:
                needsReset = true
                return (consumed, produced, true)
            case Z_OK, Z_BUF_ERROR:
                return (consumed, produced, false)
            default:
                throw PayloadCompressionError("gzip data is damaged (zlib status \(status))")
            }
        }
    }

    static func unzstd(_ input: ByteBuffer, maxSizeBytes: Int, allocator: ByteBufferAllocator) throws(PayloadCompressionError) -> ByteBuffer {
        guard let context = ZSTD_createDCtx() else { throw PayloadCompressionError("zstd could not start decompressing") }
        defer { ZSTD_freeDCtx(context) }
        return try stream(input, maxSizeBytes: maxSizeBytes, allocator: allocator, name: "zstd") { source, destination throws(PayloadCompressionError) in
            var inBuffer = ZSTD_inBuffer(src: source.baseAddress, size: source.count, pos: 0)
            var outBuffer = ZSTD_outBuffer(dst: destination.baseAddress, size: destination.count, pos: 0)
            let result = ZSTD_decompressStream(context, &outBuffer, &inBuffer)
            if ZSTD_isError(result) != 0 {
                throw PayloadCompressionError("zstd data is damaged: \(String(cString: ZSTD_getErrorName(result)))")
            }
            return (inBuffer.pos, outBuffer.pos, result == 0)
        }
    }

    static func unlz4(_ input: ByteBuffer, maxSizeBytes: Int, allocator: ByteBufferAllocator) throws(PayloadCompressionError) -> ByteBuffer {
        var context: OpaquePointer?
        guard LZ4F_isError(LZ4F_createDecompressionContext(&context, UInt32(LZ4F_VERSION))) == 0, let context else {
            throw PayloadCompressionError("lz4 could not start decompressing")
        }
        defer { LZ4F_freeDecompressionContext(context) }
        return try stream(input, maxSizeBytes: maxSizeBytes, allocator: allocator, name: "lz4") { source, destination throws(PayloadCompressionError) in
            var sourceCount = source.count
            var destinationCount = destination.count
            let hint = LZ4F_decompress(context, destination.baseAddress, &destinationCount, source.baseAddress, &sourceCount, nil)
            if LZ4F_isError(hint) != 0 {
                throw PayloadCompressionError("lz4 frame is damaged: \(String(cString: LZ4F_getErrorName(hint)))")
            }
            return (sourceCount, destinationCount, hint == 0)
        }
    }

    static func unsnappy(_ input: ByteBuffer, maxSizeBytes: Int, allocator: ByteBufferAllocator) throws(PayloadCompressionError) -> ByteBuffer {
        var input = input
        guard input.readableBytes >= 16, input.getBytes(at: input.readerIndex, length: 8) == xerialMagic else {
            return try rawSnappy(input, into: nil, maxSizeBytes: maxSizeBytes, allocator: allocator)
        }
        input.moveReaderIndex(forwardBy: 16)  // magic, version, compatible version
        var output = allocator.buffer(capacity: min(input.readableBytes * 4, maxSizeBytes))
        while input.readableBytes > 0 {
            guard let length = input.readInteger(as: Int32.self), length >= 0, Int(length) <= input.readableBytes,
                  let block = input.readSlice(length: Int(length))
            else { throw PayloadCompressionError("snappy (xerial) block runs past the data") }
            output = try rawSnappy(block, into: output, maxSizeBytes: maxSizeBytes, allocator: allocator)
        }
        return output
    }

    /// One raw Snappy block, appended to `output` (a new buffer when nil); its stated length is
    /// checked against the limit before anything is allocated.
    private static func rawSnappy(
        _ block: ByteBuffer, into output: ByteBuffer?, maxSizeBytes: Int, allocator: ByteBufferAllocator
    ) throws(PayloadCompressionError) -> ByteBuffer {
        var output = output ?? allocator.buffer(capacity: 0)
        var length = 0
        let stated = block.withUnsafeReadableBytes { source in
            snappy_uncompressed_length(source.baseAddress?.assumingMemoryBound(to: CChar.self), source.count, &length)
        }
        guard stated == SNAPPY_OK else { throw PayloadCompressionError("snappy data is damaged") }
        guard length <= maxSizeBytes - output.readableBytes else {
            throw PayloadCompressionError("snappy data expands past the limit of \(maxSizeBytes) bytes")
        }
        var status = SNAPPY_OK
        block.withUnsafeReadableBytes { source in
            output.writeWithUnsafeMutableBytes(minimumWritableBytes: max(length, 1)) { destination in
                var produced = length
                status = snappy_uncompress(
                    source.baseAddress?.assumingMemoryBound(to: CChar.self), source.count,
                    destination.baseAddress?.assumingMemoryBound(to: CChar.self), &produced)
                return status == SNAPPY_OK ? produced : 0
            }
        }
        guard status == SNAPPY_OK else { throw PayloadCompressionError("snappy data is damaged") }
        return output
    }

    // MARK: compress

    /// `plain` compressed in this codec's Kafka framing.
    public func compress(_ plain: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        switch self {
        case .none:
            return plain
        case .gzip:
            let zstream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
            zstream.initialize(to: z_stream())
            defer {
                deflateEnd(zstream)
                zstream.deinitialize(count: 1)
                zstream.deallocate()
            }
            let started = deflateInit2_(
                zstream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY, zlibVersion(),
                Int32(MemoryLayout<z_stream>.size))
            precondition(started == Z_OK, "zlib could not start deflating")
            let bound = Int(deflateBound(zstream, uLong(plain.readableBytes))) + 32
            var output = allocator.buffer(capacity: bound)
            plain.withUnsafeReadableBytes { source in
                output.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { destination in
                    zstream.pointee.next_in = UnsafeMutablePointer(mutating: source.baseAddress?.assumingMemoryBound(to: Bytef.self))
                    zstream.pointee.avail_in = uInt(source.count)
                    zstream.pointee.next_out = destination.baseAddress?.assumingMemoryBound(to: Bytef.self)
                    zstream.pointee.avail_out = uInt(bound)
                    let status = deflate(zstream, Z_FINISH)
                    precondition(status == Z_STREAM_END, "deflate into a bound-sized buffer did not finish")
                    return bound - Int(zstream.pointee.avail_out)
                }
            }
            return output
        case .snappy:
            var output = allocator.buffer(capacity: 20 + snappy_max_compressed_length(plain.readableBytes))
            output.writeBytes(Self.xerialMagic)
            output.writeInteger(Int32(1))
            output.writeInteger(Int32(1))
            let block = PayloadCodec.compress(plain, type: .snappy, allocator: allocator)
            output.writeInteger(Int32(block.readableBytes))
            output.writeImmutableBuffer(block)
            return output
        case .lz4:
            let bound = LZ4F_compressFrameBound(plain.readableBytes, nil)
            var output = allocator.buffer(capacity: bound)
            plain.withUnsafeReadableBytes { source in
                output.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { destination in
                    let written = LZ4F_compressFrame(destination.baseAddress, bound, source.baseAddress, source.count, nil)
                    precondition(LZ4F_isError(written) == 0, "lz4 frame into a bound-sized buffer failed")
                    return written
                }
            }
            return output
        case .zstd:
            return PayloadCodec.compress(plain, type: .zstd, allocator: allocator)
        }
    }
}
