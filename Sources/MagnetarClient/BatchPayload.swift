import NIOCore

/// Splits a received batch body (notes §4.4: n × `[u32 size][SingleMessageMetadata][payload]`) into
/// messages. `SingleMessageMetadata` is read by a small protobuf field scanner: it keeps the fields a
/// consumer needs and skips the rest, so splitting allocates nothing but the payload slices. Pure.
enum BatchPayload {
    /// One message of a batch: its payload (a slice of the entry, not a copy) and per-message fields.
    struct Single {
        var payload: ByteBuffer
        var sequenceID: Int64?
        var eventTimeMs: UInt64?
        var partitionKey: String?
        var isNullValue: Bool
        var properties: [String: String] = [:]
    }

    enum Failure: Error { case malformed(String) }

    static func split(_ body: ByteBuffer, count: Int) throws(Failure) -> [Single] {
        var body = body
        var messages: [Single] = []
        messages.reserveCapacity(count)
        for index in 0..<count {
            guard let metadataSize = body.readInteger(as: UInt32.self), Int(metadataSize) <= body.readableBytes,
                  var metadata = body.readSlice(length: Int(metadataSize))
            else { throw .malformed("batch message \(index) of \(count): metadata size exceeds the entry") }
            var payloadSize: Int?
            var single = Single(payload: ByteBuffer(), sequenceID: nil, eventTimeMs: nil, partitionKey: nil, isNullValue: false)
            while metadata.readableBytes > 0 {
                guard let key = readVarint(&metadata) else { throw .malformed("truncated field key") }
                let field = key >> 3
                switch key & 7 {
                case 0:
                    guard let value = readVarint(&metadata) else { throw .malformed("truncated varint") }
                    switch field {
                    case 3: payloadSize = Int(truncatingIfNeeded: Int32(truncatingIfNeeded: value))
                    case 5: single.eventTimeMs = value
                    case 8: single.sequenceID = Int64(bitPattern: value)
                    case 9: single.isNullValue = value != 0
                    default: break
                    }
                case 2:
                    guard let length = readVarint(&metadata), length <= UInt64(metadata.readableBytes) else {
                        throw .malformed("truncated length-delimited field")
                    }
                    if field == 2 {
                        single.partitionKey = metadata.readString(length: Int(length))
                    } else if field == 1, var keyValue = metadata.readSlice(length: Int(length)) {
                        let (key, value) = try readKeyValue(&keyValue)
                        single.properties[key] = value
                    } else {
                        metadata.moveReaderIndex(forwardBy: Int(length))
                    }
                case 1:
                    guard metadata.readableBytes >= 8 else { throw .malformed("truncated fixed64") }
                    metadata.moveReaderIndex(forwardBy: 8)
                case 5:
                    guard metadata.readableBytes >= 4 else { throw .malformed("truncated fixed32") }
                    metadata.moveReaderIndex(forwardBy: 4)
                default:
                    throw .malformed("unknown wire type in SingleMessageMetadata")
                }
            }
            guard let payloadSize, payloadSize >= 0, payloadSize <= body.readableBytes,
                  let payload = body.readSlice(length: payloadSize)
            else { throw .malformed("batch message \(index) of \(count): payload_size missing or exceeds the entry") }
            single.payload = payload
            messages.append(single)
        }
        return messages
    }

    /// `KeyValue{key=1, value=2}`; unknown fields are skipped.
    private static func readKeyValue(_ buffer: inout ByteBuffer) throws(Failure) -> (String, String) {
        var key = ""
        var value = ""
        while buffer.readableBytes > 0 {
            guard let tag = readVarint(&buffer), tag & 7 == 2, let length = readVarint(&buffer),
                  length <= UInt64(buffer.readableBytes), let text = buffer.readString(length: Int(length))
            else { throw .malformed("malformed KeyValue in SingleMessageMetadata") }
            if tag >> 3 == 1 { key = text } else if tag >> 3 == 2 { value = text }
        }
        return (key, value)
    }

    static func readVarint(_ buffer: inout ByteBuffer) -> UInt64? {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while shift < 64 {
            guard let byte = buffer.readInteger(as: UInt8.self) else { return nil }
            result |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
        }
        return nil
    }
}
