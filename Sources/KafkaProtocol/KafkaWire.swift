import NIOCore

/// A request that does not follow Kafka's wire format (truncated, a length past the end, a count
/// over the limits). The connection answers with Kafka's error code where it can, else closes.
public struct KafkaProtocolError: Error, CustomStringConvertible, Sendable, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Every size limit of the Kafka wire format in one place, checked before anything is allocated.
public enum KafkaLimits {
    /// Kafka's `socket.request.max.bytes` (100 MiB): the largest request frame read.
    public static let maxRequestBytes = 100 * 1024 * 1024
    /// Elements of one array (topics, partitions, ...) a request may hold.
    public static let maxArrayCount = 100_000
    /// Bytes of one string.
    public static let maxStringBytes = Int(Int16.max)
    /// The most bytes one compressed record batch may expand to (its records, decompressed).
    public static let maxUncompressedBatchBytes = 64 * 1024 * 1024
    /// Entries one partition's part of a Fetch response holds at most (besides its byte limit).
    public static let maxEntriesPerFetch = 1_000
}

/// Reads Kafka's primitive types (the protocol guide's: big-endian integers, unsigned varints,
/// zig-zag varints, int16-length and compact strings, int32-count and compact arrays, UUIDs,
/// tagged fields) from a request. A value over one buffer; every read is bounds-checked.
public struct KafkaReader {
    public var buffer: ByteBuffer

    public init(_ buffer: ByteBuffer) { self.buffer = buffer }

    public var remaining: Int { buffer.readableBytes }

    public mutating func int8() throws(KafkaProtocolError) -> Int8 { try integer() }
    public mutating func int16() throws(KafkaProtocolError) -> Int16 { try integer() }
    public mutating func int32() throws(KafkaProtocolError) -> Int32 { try integer() }
    public mutating func int64() throws(KafkaProtocolError) -> Int64 { try integer() }
    public mutating func bool() throws(KafkaProtocolError) -> Bool { try int8() != 0 }

    private mutating func integer<T: FixedWidthInteger>() throws(KafkaProtocolError) -> T {
        guard let value = buffer.readInteger(as: T.self) else {
            throw KafkaProtocolError("request ends inside a \(MemoryLayout<T>.size)-byte integer")
        }
        return value
    }

    public mutating func unsignedVarint() throws(KafkaProtocolError) -> UInt32 {
        var value: UInt32 = 0
        for shift in stride(from: 0, to: 35, by: 7) {
            guard let byte = buffer.readInteger(as: UInt8.self) else { throw KafkaProtocolError("request ends inside a varint") }
            value |= UInt32(byte & 0x7F) << UInt32(shift)
            if byte & 0x80 == 0 { return value }
        }
        throw KafkaProtocolError("varint longer than 5 bytes")
    }

    public mutating func varint() throws(KafkaProtocolError) -> Int32 {
        let raw = try unsignedVarint()
        return Int32(bitPattern: (raw >> 1) ^ (0 &- (raw & 1)))
    }

    public mutating func varlong() throws(KafkaProtocolError) -> Int64 {
        var raw: UInt64 = 0
        for shift in stride(from: 0, to: 70, by: 7) {
            guard let byte = buffer.readInteger(as: UInt8.self) else { throw KafkaProtocolError("request ends inside a varlong") }
            raw |= UInt64(byte & 0x7F) << UInt64(shift)
            if byte & 0x80 == 0 { return Int64(bitPattern: (raw >> 1) ^ (0 &- (raw & 1))) }
        }
        throw KafkaProtocolError("varlong longer than 10 bytes")
    }

    /// `string` (int16 length; -1 is null, only where `nullable`) or, flexible, `compact_string`.
    public mutating func string(flexible: Bool) throws(KafkaProtocolError) -> String {
        guard let value = try nullableString(flexible: flexible) else { throw KafkaProtocolError("a required string is null") }
        return value
    }

    public mutating func nullableString(flexible: Bool) throws(KafkaProtocolError) -> String? {
        let length: Int
        if flexible {
            let raw = try unsignedVarint()
            if raw == 0 { return nil }
            length = Int(raw) - 1
        } else {
            let raw = try int16()
            if raw < 0 { return nil }
            length = Int(raw)
        }
        guard length <= KafkaLimits.maxStringBytes, length <= buffer.readableBytes else {
            throw KafkaProtocolError("string of \(length) bytes runs past the request")
        }
        return buffer.readString(length: length)
    }

    /// The element count of an `ARRAY` (int32; -1 null) or `COMPACT_ARRAY`; nil: null.
    public mutating func arrayCount(flexible: Bool) throws(KafkaProtocolError) -> Int? {
        let count: Int
        if flexible {
            let raw = try unsignedVarint()
            if raw == 0 { return nil }
            count = Int(raw) - 1
        } else {
            let raw = try int32()
            if raw < 0 { return nil }
            count = Int(raw)
        }
        // Every element takes at least one byte: a count past the rest of the request is a lie.
        guard count <= KafkaLimits.maxArrayCount, count <= buffer.readableBytes else {
            throw KafkaProtocolError("array of \(count) elements runs past the request")
        }
        return count
    }

    public mutating func array<T>(flexible: Bool, _ element: (inout KafkaReader) throws(KafkaProtocolError) -> T) throws(KafkaProtocolError) -> [T]? {
        guard let count = try arrayCount(flexible: flexible) else { return nil }
        var elements: [T] = []
        elements.reserveCapacity(count)
        for _ in 0..<count { elements.append(try element(&self)) }
        return elements
    }

    public mutating func bytes(count: Int) throws(KafkaProtocolError) -> ByteBuffer {
        guard count >= 0, let slice = buffer.readSlice(length: count) else {
            throw KafkaProtocolError("\(count) bytes run past the request")
        }
        return slice
    }

    /// Skips a flexible version's tagged fields (none is one Magnetar reads yet).
    public mutating func skipTaggedFields() throws(KafkaProtocolError) {
        let count = try unsignedVarint()
        guard count <= UInt32(buffer.readableBytes) else { throw KafkaProtocolError("\(count) tagged fields run past the request") }
        for _ in 0..<count {
            _ = try unsignedVarint()
            let size = Int(try unsignedVarint())
            _ = try bytes(count: size)
        }
    }
}

/// Writes Kafka's primitive types into a response.
extension ByteBuffer {
    public mutating func writeKafkaUnsignedVarint(_ value: UInt32) {
        var value = value
        while value >= 0x80 {
            writeInteger(UInt8(value & 0x7F | 0x80))
            value >>= 7
        }
        writeInteger(UInt8(value))
    }

    public mutating func writeKafkaVarint(_ value: Int32) {
        writeKafkaUnsignedVarint(UInt32(bitPattern: (value << 1) ^ (value >> 31)))
    }

    /// The bytes `writeKafkaVarint(value)` writes.
    public static func kafkaVarintSize(_ value: Int32) -> Int {
        let raw = UInt32(bitPattern: (value << 1) ^ (value >> 31))
        return raw == 0 ? 1 : (32 - raw.leadingZeroBitCount + 6) / 7
    }

    /// The bytes `writeKafkaVarlong(value)` writes.
    public static func kafkaVarlongSize(_ value: Int64) -> Int {
        let raw = UInt64(bitPattern: (value << 1) ^ (value >> 63))
        return raw == 0 ? 1 : (64 - raw.leadingZeroBitCount + 6) / 7
    }

    public mutating func writeKafkaVarlong(_ value: Int64) {
        var raw = UInt64(bitPattern: (value << 1) ^ (value >> 63))
        while raw >= 0x80 {
            writeInteger(UInt8(raw & 0x7F | 0x80))
            raw >>= 7
        }
        writeInteger(UInt8(raw))
    }

    public mutating func writeKafkaBool(_ value: Bool) { writeInteger(Int8(value ? 1 : 0)) }

    public mutating func writeKafkaString(_ value: String?, flexible: Bool) {
        guard let value else {
            if flexible { writeKafkaUnsignedVarint(0) } else { writeInteger(Int16(-1)) }
            return
        }
        let count = min(value.utf8.count, KafkaLimits.maxStringBytes)
        if flexible { writeKafkaUnsignedVarint(UInt32(count + 1)) } else { writeInteger(Int16(count)) }
        if count == value.utf8.count { writeString(value) } else { writeBytes(value.utf8.prefix(count)) }
    }

    /// An array's count (`nil`: a null array).
    public mutating func writeKafkaArrayCount(_ count: Int?, flexible: Bool) {
        guard let count else {
            if flexible { writeKafkaUnsignedVarint(0) } else { writeInteger(Int32(-1)) }
            return
        }
        if flexible { writeKafkaUnsignedVarint(UInt32(count + 1)) } else { writeInteger(Int32(count)) }
    }

    public mutating func writeKafkaArray<S: Collection>(_ elements: S, flexible: Bool, _ write: (inout ByteBuffer, S.Element) -> Void) {
        writeKafkaArrayCount(elements.count, flexible: flexible)
        for element in elements { write(&self, element) }
    }

    /// No tagged fields (flexible versions end every structure with their count).
    public mutating func writeKafkaEmptyTaggedFields() { writeKafkaUnsignedVarint(0) }
}
