import NIOCore

/// What the broker needs to know about an entry without decoding protocol metadata:
/// how many messages it holds (permits count messages), when it was published, when it may be
/// delivered, and its routing key. Computed once at publish time and stored in front of the body.
public struct EntryAttributes: Sendable, Equatable {
    public var numMessages: Int32
    public var publishTimeMs: Int64
    /// Epoch milliseconds before which the entry is held back (Shared/Key_Shared), or 0.
    public var deliverAtMs: Int64
    /// Ordering key, else partition key, else empty.
    public var key: [UInt8]
    /// The producer's name and the highest sequence id in the entry (deduplication), or "" and -1.
    public var producerName: String
    public var highestSequenceID: Int64
    /// True for a chunk that is not the last of its message: deduplication looks at the last only.
    public var isNonFinalChunk: Bool
    /// A marker the broker writes for itself (geo-replication's snapshot markers, transactions'
    /// commit and abort markers): never delivered to consumers, acknowledged by dispatch as it passes.
    public var isMarker = false
    /// The transaction the entry was written in (its data, or its commit / abort marker), or nil.
    public var transactionID: TransactionID?

    public init(
        numMessages: Int32, publishTimeMs: Int64, deliverAtMs: Int64 = 0, key: [UInt8] = [],
        producerName: String = "", highestSequenceID: Int64 = -1, isNonFinalChunk: Bool = false
    ) {
        self.producerName = producerName
        self.highestSequenceID = highestSequenceID
        self.isNonFinalChunk = isNonFinalChunk
        self.numMessages = numMessages
        self.publishTimeMs = publishTimeMs
        self.deliverAtMs = deliverAtMs
        self.key = key
    }
}

/// A transaction's id: the coordinator's id in the high half (Pulsar's `TxnID.mostSigBits`), a
/// sequence in the low half. Protocol-neutral.
public struct TransactionID: Sendable, Hashable, Codable, Comparable, CustomStringConvertible {
    public var mostBits: UInt64
    public var leastBits: UInt64

    public init(mostBits: UInt64, leastBits: UInt64) {
        self.mostBits = mostBits
        self.leastBits = leastBits
    }

    public static func < (lhs: TransactionID, rhs: TransactionID) -> Bool {
        (lhs.mostBits, lhs.leastBits) < (rhs.mostBits, rhs.leastBits)
    }

    /// Pulsar's text form, `(most,least)`.
    public var description: String { "(\(mostBits),\(leastBits))" }
}

/// One stored entry: attributes + the protocol's bytes, forwarded verbatim on dispatch.
///
/// On-disk body layout (version 1), inside a ledger entry, all big-endian:
/// `[u8 version][i32 numMessages][i64 publishTimeMs][i64 deliverAtMs][u16 keyLength][key]`
/// then, from version 2 on, `[u16 producerNameLength][producerName][i64 highestSequenceID][u8 flags]`
/// (bit 0: a chunk before its message's last; bit 1: a broker's marker, never delivered; bit 2: a
/// transaction's entry, followed by `[u64 mostBits][u64 leastBits]`), then `[body]`. Version history: 1 = first format; 2 = producer name and sequence id (deduplication).
/// For the Pulsar protocol `body` is `[u32 crc32c][u32 metadataSize][MessageMetadata][payload]`.
/// A pure value; `body` is a slice of the buffer read from storage.
public struct Entry: Sendable {
    public static let formatVersion: UInt8 = 2
    public static let maxKeyLengthBytes = Int(UInt16.max)

    public var attributes: EntryAttributes
    public var body: ByteBuffer

    public init(attributes: EntryAttributes, body: ByteBuffer) {
        self.attributes = attributes
        self.body = body
    }

    /// Encodes header + body into one buffer for the ledger.
    public func encode(allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        Entry.encode(attributes: attributes, bodyLength: body.readableBytes, allocator: allocator) { buffer in
            var body = self.body
            buffer.writeBuffer(&body)
        }
    }

    /// Encodes header + a body written by `writeBody` (exactly `bodyLength` bytes) into one buffer:
    /// the single copy of a payload on its way from the socket to the ledger.
    public static func encode(
        attributes: EntryAttributes, bodyLength: Int, allocator: ByteBufferAllocator = ByteBufferAllocator(),
        writeBody: (inout ByteBuffer) -> Void
    ) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: encodedLength(attributes: attributes, bodyLength: bodyLength))
        write(attributes: attributes, into: &buffer, writeBody: writeBody)
        return buffer
    }

    /// Bytes `encode` writes for these attributes and a body of `bodyLength` bytes.
    public static func encodedLength(attributes: EntryAttributes, bodyLength: Int) -> Int {
        34 + min(attributes.key.count, Entry.maxKeyLengthBytes) + min(attributes.producerName.utf8.count, Int(UInt16.max))
            + (attributes.transactionID == nil ? 0 : 16) + bodyLength
    }

    /// Appends the encoded entry (header, then what `writeBody` writes) to `buffer`: the publish path
    /// writes a burst of entries back to back into one buffer and slices it.
    public static func write(attributes: EntryAttributes, into buffer: inout ByteBuffer, writeBody: (inout ByteBuffer) -> Void) {
        let keyLength = min(attributes.key.count, Entry.maxKeyLengthBytes)
        var producerName = attributes.producerName
        producerName.withUTF8 { name in
            let nameLength = min(name.count, Int(UInt16.max))
            // The header in one reservation (this runs once per published message).
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 50 + keyLength + nameLength) { out in
                var offset = 0
                func put<T: FixedWidthInteger>(_ value: T) {
                    out.storeBytes(of: value.bigEndian, toByteOffset: offset, as: T.self)
                    offset += MemoryLayout<T>.size
                }
                put(Entry.formatVersion)
                put(attributes.numMessages)
                put(attributes.publishTimeMs)
                put(attributes.deliverAtMs)
                put(UInt16(keyLength))
                if keyLength > 0 {
                    attributes.key.withUnsafeBytes { key in
                        out.baseAddress!.advanced(by: offset).copyMemory(from: key.baseAddress!, byteCount: keyLength)
                    }
                    offset += keyLength
                }
                put(UInt16(nameLength))
                if nameLength > 0 {
                    out.baseAddress!.advanced(by: offset).copyMemory(from: name.baseAddress!, byteCount: nameLength)
                    offset += nameLength
                }
                put(attributes.highestSequenceID)
                put(UInt8((attributes.isNonFinalChunk ? 1 : 0) | (attributes.isMarker ? 2 : 0) | (attributes.transactionID == nil ? 0 : 4)))
                if let transaction = attributes.transactionID {
                    put(transaction.mostBits)
                    put(transaction.leastBits)
                }
                return offset
            }
        }
        writeBody(&buffer)
    }

    /// The two header fields the message index needs, read in place at their fixed offsets (an
    /// entry too short to hold them counts as one message published at 0).
    public static func indexFields(of buffer: ByteBuffer) -> (numMessages: Int32, publishTimeMs: Int64) {
        let start = buffer.readerIndex
        guard let numMessages = buffer.getInteger(at: start + 1, as: Int32.self),
              let publishTime = buffer.getInteger(at: start + 5, as: Int64.self)
        else { return (1, 0) }
        return (numMessages, publishTime)
    }

    /// Decodes what `encode` wrote. The body is a slice of `buffer` (no copy).
    public static func decode(_ buffer: ByteBuffer) throws(BrokerError) -> Entry {
        var buffer = buffer
        guard let version = buffer.readInteger(as: UInt8.self), version == 1 || version == 2,
              let numMessages = buffer.readInteger(as: Int32.self),
              let publishTime = buffer.readInteger(as: Int64.self),
              let deliverAt = buffer.readInteger(as: Int64.self),
              let keyLength = buffer.readInteger(as: UInt16.self),
              let key = buffer.readBytes(length: Int(keyLength))
        else {
            throw BrokerError(.persistence, "stored entry has an unknown or damaged header")
        }
        var attributes = EntryAttributes(numMessages: numMessages, publishTimeMs: publishTime, deliverAtMs: deliverAt, key: key)
        if version >= 2 {
            guard let nameLength = buffer.readInteger(as: UInt16.self),
                  let name = buffer.readString(length: Int(nameLength)),
                  let sequenceID = buffer.readInteger(as: Int64.self),
                  let flags = buffer.readInteger(as: UInt8.self)
            else {
                throw BrokerError(.persistence, "stored entry has a damaged header")
            }
            attributes.producerName = name
            attributes.highestSequenceID = sequenceID
            attributes.isNonFinalChunk = flags & 1 != 0
            attributes.isMarker = flags & 2 != 0
            if flags & 4 != 0 {
                guard let most = buffer.readInteger(as: UInt64.self), let least = buffer.readInteger(as: UInt64.self) else {
                    throw BrokerError(.persistence, "stored entry has a damaged transaction id")
                }
                attributes.transactionID = TransactionID(mostBits: most, leastBits: least)
            }
        }
        return Entry(attributes: attributes, body: buffer)
    }
}
