import CLZ4
import CSnappy
import CZlib
import CZstd
import NIOCore

/// How a producer compresses each entry's payload (a whole batch, or one message). The raw values are
/// Pulsar's `CompressionType` (PulsarApi.proto): NONE 0, LZ4 1, ZLIB 2, ZSTD 3, SNAPPY 4. A pure value.
public enum CompressionType: Int, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case none = 0
    /// The LZ4 *block* format (`LZ4_compress_default` / `LZ4_decompress_safe`), no frame header.
    case lz4 = 1
    /// zlib-wrapped deflate (`compress` / `uncompress`).
    case zlib = 2
    /// One Zstandard frame.
    case zstd = 3
    /// Raw Snappy (no framing).
    case snappy = 4

    public var description: String {
        switch self {
        case .none: return "none"
        case .lz4: return "lz4"
        case .zlib: return "zlib"
        case .zstd: return "zstd"
        case .snappy: return "snappy"
        }
    }

    /// Parses `none`, `lz4`, `zlib`, `zstd`, `snappy` (case-insensitive).
    public init?(name: String) {
        guard let match = Self.allCases.first(where: { $0.description == name.lowercased() }) else { return nil }
        self = match
    }
}

/// A payload that does not decompress to what its metadata states (or claims more than allowed).
public struct PayloadCompressionError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Compresses and decompresses payloads with the C libraries, the way the Pulsar clients do, so entries
/// interoperate with the Java/C++/Python clients. Stateless pure functions; each call allocates its
/// output buffer once.
public enum PayloadCodec {
    /// The zstd level the C++ client uses (`ZSTD_CLEVEL_DEFAULT`-like: 3).
    public static let zstdLevel: Int32 = 3

    /// The compressed form of `payload` (`payload` itself for `.none`).
    public static func compress(_ payload: ByteBuffer, type: CompressionType, allocator: ByteBufferAllocator) -> ByteBuffer {
        let sourceCount = payload.readableBytes
        switch type {
        case .none:
            return payload
        case .lz4:
            let bound = Int(LZ4_compressBound(Int32(sourceCount)))
            return Self.produce(payload, capacity: bound, allocator: allocator) { source, destination in
                Int(LZ4_compress_default(
                    source.baseAddress, destination.baseAddress, Int32(source.count), Int32(destination.count)))
            }
        case .zlib:
            let bound = Int(compressBound(uLong(sourceCount)))
            return Self.produce(payload, capacity: bound, allocator: allocator) { source, destination in
                var destinationCount = uLongf(destination.count)
                let status = CZlib.compress(
                    destination.baseAddress!.assumingMemoryBound(to: Bytef.self), &destinationCount,
                    source.baseAddress?.assumingMemoryBound(to: Bytef.self), uLong(source.count))
                return status == Z_OK ? Int(destinationCount) : -1
            }
        case .zstd:
            let bound = ZSTD_compressBound(sourceCount)
            return Self.produce(payload, capacity: bound, allocator: allocator) { source, destination in
                let written = ZSTD_compress(destination.baseAddress, destination.count, source.baseAddress, source.count, zstdLevel)
                return ZSTD_isError(written) != 0 ? -1 : written
            }
        case .snappy:
            let bound = snappy_max_compressed_length(sourceCount)
            return Self.produce(payload, capacity: bound, allocator: allocator) { source, destination in
                var destinationCount = destination.count
                let status = snappy_compress(
                    source.baseAddress?.assumingMemoryBound(to: CChar.self), source.count,
                    destination.baseAddress!.assumingMemoryBound(to: CChar.self), &destinationCount)
                return status == SNAPPY_OK ? destinationCount : -1
            }
        }
    }

    /// The original bytes of a compressed entry payload. `uncompressedSize` comes from the message
    /// metadata; it is checked against `maxSizeBytes` *before* anything is allocated, and the output
    /// must have exactly that size.
    public static func decompress(
        _ payload: ByteBuffer, type: CompressionType, uncompressedSize: Int, maxSizeBytes: Int, allocator: ByteBufferAllocator
    ) throws(PayloadCompressionError) -> ByteBuffer {
        if type == .none { return payload }
        guard uncompressedSize >= 0, uncompressedSize <= maxSizeBytes else {
            throw PayloadCompressionError(
                "\(type) payload claims an uncompressed size of \(uncompressedSize) bytes, over the limit of \(maxSizeBytes)")
        }
        let expected = uncompressedSize
        let sourceCount = payload.readableBytes
        var output = allocator.buffer(capacity: max(expected, 1))
        // The library's result: the bytes produced, or -1. Only an exact match is committed to `output`.
        var produced = -1
        payload.withUnsafeReadableBytes { source in
            output.writeWithUnsafeMutableBytes(minimumWritableBytes: expected) { destination in
                let destination = UnsafeMutableRawBufferPointer(rebasing: destination[..<expected])
                produced = decode(type, source, destination, expected: expected)
                return produced == expected ? expected : 0
            }
        }
        guard produced == expected else {
            throw PayloadCompressionError(
                "\(type) payload of \(sourceCount) bytes did not decompress to the \(expected) bytes its metadata states")
        }
        return output
    }

    /// One library call into `destination` (exactly `expected` bytes): the bytes produced, or -1.
    private static func decode(
        _ type: CompressionType, _ source: UnsafeRawBufferPointer, _ destination: UnsafeMutableRawBufferPointer, expected: Int
    ) -> Int {
        let sourceCount = source.count
        switch type {
        case .none:
            return 0
        case .lz4:
            guard expected > 0 else { return sourceCount == 1 ? 0 : -1 }
            return Int(LZ4_decompress_safe(
                source.baseAddress, destination.baseAddress, Int32(sourceCount), Int32(expected)))
        case .zlib:
            var destinationCount = uLongf(expected)
            var scratch: UInt8 = 0
            let status = withUnsafeMutablePointer(to: &scratch) { scratchPointer in
                CZlib.uncompress(
                    destination.baseAddress?.assumingMemoryBound(to: Bytef.self) ?? scratchPointer, &destinationCount,
                    source.baseAddress?.assumingMemoryBound(to: Bytef.self), uLong(sourceCount))
            }
            return status == Z_OK ? Int(destinationCount) : -1
        case .zstd:
            let frameSize = ZSTD_getFrameContentSize(source.baseAddress, sourceCount)
            // ZSTD_CONTENTSIZE_ERROR / _UNKNOWN are the two largest values; a known size must match.
            if frameSize < UInt64.max - 1, frameSize != UInt64(expected) { return -1 }
            let written = ZSTD_decompress(destination.baseAddress, expected, source.baseAddress, sourceCount)
            return ZSTD_isError(written) != 0 ? -1 : written
        case .snappy:
            let sourcePointer = source.baseAddress?.assumingMemoryBound(to: CChar.self)
            var length = 0
            guard snappy_uncompressed_length(sourcePointer, sourceCount, &length) == SNAPPY_OK, length == expected
            else { return -1 }
            var destinationCount = expected
            var scratch: CChar = 0
            let status = withUnsafeMutablePointer(to: &scratch) { scratchPointer in
                snappy_uncompress(
                    sourcePointer, sourceCount,
                    destination.baseAddress?.assumingMemoryBound(to: CChar.self) ?? scratchPointer, &destinationCount)
            }
            return status == SNAPPY_OK ? destinationCount : -1
        }
    }

    /// Runs a compressor into a fresh buffer of `capacity` bytes; a negative result is a library failure,
    /// which cannot happen with a bound-sized output (precondition).
    private static func produce(
        _ payload: ByteBuffer, capacity: Int, allocator: ByteBufferAllocator,
        _ body: (UnsafeRawBufferPointer, UnsafeMutableRawBufferPointer) -> Int
    ) -> ByteBuffer {
        var output = allocator.buffer(capacity: capacity)
        payload.withUnsafeReadableBytes { source in
            output.writeWithUnsafeMutableBytes(minimumWritableBytes: capacity) { destination in
                let written = body(source, UnsafeMutableRawBufferPointer(rebasing: destination[..<capacity]))
                precondition(written >= 0, "compression into a bound-sized buffer failed")
                return written
            }
        }
        return output
    }
}
