import NIOCore
import PulsarProtocol

/// One message id as ACK carries it: `MessageIdData{ledgerId=1, entryId=2, partition=3?, batch_index=4?}`.
/// The consumer acknowledges whole entries (`partition` and `batchIndex` nil); the optional fields are
/// there for acks of single batch slots. A pure value.
struct AckedMessageID: Sendable, Hashable {
    var ledgerID: Int64
    var entryID: Int64
    var partition: Int32?
    var batchIndex: Int32?

    init(ledgerID: Int64, entryID: Int64, partition: Int32? = nil, batchIndex: Int32? = nil) {
        self.ledgerID = ledgerID
        self.entryID = entryID
        self.partition = partition
        self.batchIndex = batchIndex
    }

    /// The entry of `id` (no partition, no batch index): what ACK and REDELIVER name.
    init(entryOf id: MessageID) { self.init(ledgerID: id.ledgerID, entryID: id.entryID) }

    /// Bytes of the serialized `MessageIdData` (int32 fields sign-extended, as protobuf does).
    var encodedSize: Int {
        var size = 1 + ProtobufWire.varintSize(UInt64(bitPattern: ledgerID)) + 1 + ProtobufWire.varintSize(UInt64(bitPattern: entryID))
        if let partition { size += 1 + ProtobufWire.varintSize(UInt64(bitPattern: Int64(partition))) }
        if let batchIndex { size += 1 + ProtobufWire.varintSize(UInt64(bitPattern: Int64(batchIndex))) }
        return size
    }

    func write(into out: inout RawWireWriter) {
        out.byte(ProtobufWire.tag(1, wireType: ProtobufWire.varint))
        out.varint(UInt64(bitPattern: ledgerID))
        out.byte(ProtobufWire.tag(2, wireType: ProtobufWire.varint))
        out.varint(UInt64(bitPattern: entryID))
        if let partition {
            out.byte(ProtobufWire.tag(3, wireType: ProtobufWire.varint))
            out.varint(UInt64(bitPattern: Int64(partition)))
        }
        if let batchIndex {
            out.byte(ProtobufWire.tag(4, wireType: ProtobufWire.varint))
            out.varint(UInt64(bitPattern: Int64(batchIndex)))
        }
    }
}

/// The ACK frame, written by hand: consumers send one per event-loop tick, and building it through
/// SwiftProtobuf (a `BaseCommand` storage object, a `MessageIdData` per id, a `[UInt8]` copy) showed up
/// in profiles. Produces exactly the bytes SwiftProtobuf writes for the same command
/// (`AckEncodingTests` decodes both and compares). Pure functions.
enum AckFrameEncoder {
    /// `BaseCommand.type` ACK, and the field number of `BaseCommand.ack`.
    static let ackType: UInt64 = 10
    static let ackField = 10

    /// Appends `[u32 totalSize][u32 commandSize][BaseCommand{type: ACK, ack: {consumer_id=1, ack_type=2,
    /// message_id=3…, validation_error=4?}}]`.
    static func write(
        consumerID: UInt64, cumulative: Bool, ids: [AckedMessageID], validationError: Pulsar_Proto_CommandAck.ValidationError? = nil,
        into buffer: inout ByteBuffer
    ) {
        var ackSize = 1 + ProtobufWire.varintSize(consumerID) + 2
        for id in ids {
            let size = id.encodedSize
            ackSize += 1 + ProtobufWire.varintSize(UInt64(size)) + size
        }
        if let validationError { ackSize += 1 + ProtobufWire.varintSize(UInt64(validationError.rawValue)) }
        let commandSize = ProtobufWire.commandSize(type: ackType, bodySize: ackSize)
        // One reservation and one exclusive access for the whole frame.
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 8 + commandSize) { bytes in
            var out = RawWireWriter(bytes: bytes)
            out.commandPrelude(frameSize: 4 + commandSize, commandSize: commandSize, type: ackType, field: ackField, bodySize: ackSize)
            out.byte(ProtobufWire.tag(1, wireType: ProtobufWire.varint))
            out.varint(consumerID)
            out.byte(ProtobufWire.tag(2, wireType: ProtobufWire.varint))
            out.varint(cumulative ? 1 : 0)
            for id in ids {
                out.byte(ProtobufWire.tag(3, wireType: ProtobufWire.lengthDelimited))
                out.varint(UInt64(id.encodedSize))
                id.write(into: &out)
            }
            if let validationError {
                out.byte(ProtobufWire.tag(4, wireType: ProtobufWire.varint))
                out.varint(UInt64(validationError.rawValue))
            }
            precondition(out.offset == 8 + commandSize, "ACK size miscomputed")
            return out.offset
        }
    }

    /// A new buffer holding one ACK frame.
    static func encode(
        consumerID: UInt64, cumulative: Bool, ids: [AckedMessageID], validationError: Pulsar_Proto_CommandAck.ValidationError? = nil,
        allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 32 + ids.count * 24)
        write(consumerID: consumerID, cumulative: cumulative, ids: ids, validationError: validationError, into: &buffer)
        return buffer
    }
}
