import CRC32C
import Foundation
import NIOCore
import PulsarProtocol

/// Replicated-subscription markers (PulsarMarkers.proto; facts: field numbers, marker types), hand
/// encoded: `MarkersMessageIdData{ledger_id=1, entry_id=2}`, `ClusterMessageId{cluster=1,
/// message_id=2}`, `ReplicatedSubscriptionsSnapshotRequest{snapshot_id=1, source_cluster=2}`,
/// `...Response{snapshot_id=1, cluster=2}`, `...Snapshot{snapshot_id=1, local_message_id=2,
/// clusters=3}`, `...Update{subscription_name=1, clusters=2}`. Pure values.
public enum Marker: Equatable, Sendable {
    case snapshotRequest(snapshotID: String, sourceCluster: String)
    case snapshotResponse(snapshotID: String, cluster: ClusterPosition)
    case snapshot(snapshotID: String, local: MarkerPosition, clusters: [ClusterPosition])
    case update(subscription: String, clusters: [ClusterPosition])

    /// `MarkerType` of PulsarMarkers.proto.
    public static let snapshotRequestType: Int32 = 10
    public static let snapshotResponseType: Int32 = 11
    public static let snapshotType: Int32 = 12
    public static let updateType: Int32 = 13

    public var type: Int32 {
        switch self {
        case .snapshotRequest: Self.snapshotRequestType
        case .snapshotResponse: Self.snapshotResponseType
        case .snapshot: Self.snapshotType
        case .update: Self.updateType
        }
    }

    public struct MarkerPosition: Equatable, Sendable {
        public var ledgerID: UInt64
        public var entryID: UInt64
        public init(ledgerID: UInt64, entryID: UInt64) {
            self.ledgerID = ledgerID
            self.entryID = entryID
        }
    }

    public struct ClusterPosition: Equatable, Sendable {
        public var cluster: String
        public var position: MarkerPosition
        public init(cluster: String, position: MarkerPosition) {
            self.cluster = cluster
            self.position = position
        }
    }

    public struct Malformed: Error, CustomStringConvertible {
        public var description: String
    }

    // MARK: encoding

    public func encoded() -> ByteBuffer {
        var out = ByteBuffer()
        switch self {
        case .snapshotRequest(let id, let source):
            Self.string(1, id, &out)
            Self.string(2, source, &out)
        case .snapshotResponse(let id, let cluster):
            Self.string(1, id, &out)
            Self.message(2, Self.encode(cluster), &out)
        case .snapshot(let id, let local, let clusters):
            Self.string(1, id, &out)
            Self.message(2, Self.encode(local), &out)
            for cluster in clusters { Self.message(3, Self.encode(cluster), &out) }
        case .update(let subscription, let clusters):
            Self.string(1, subscription, &out)
            for cluster in clusters { Self.message(2, Self.encode(cluster), &out) }
        }
        return out
    }

    static func encode(_ position: MarkerPosition) -> ByteBuffer {
        var out = ByteBuffer()
        out.writeInteger(ProtobufWire.tag(1, wireType: 0))
        ProtobufWire.writeVarint(position.ledgerID, into: &out)
        out.writeInteger(ProtobufWire.tag(2, wireType: 0))
        ProtobufWire.writeVarint(position.entryID, into: &out)
        return out
    }

    static func encode(_ cluster: ClusterPosition) -> ByteBuffer {
        var out = ByteBuffer()
        string(1, cluster.cluster, &out)
        message(2, encode(cluster.position), &out)
        return out
    }

    static func string(_ field: Int, _ value: String, _ out: inout ByteBuffer) {
        message(field, ByteBuffer(string: value), &out)
    }

    static func message(_ field: Int, _ value: ByteBuffer, _ out: inout ByteBuffer) {
        out.writeInteger(ProtobufWire.tag(field, wireType: 2))
        ProtobufWire.writeVarint(UInt64(value.readableBytes), into: &out)
        out.writeImmutableBuffer(value)
    }

    // MARK: decoding

    /// The marker of `type` in `payload`; nil for a type that is not a replicated-subscription marker.
    public static func decode(type: Int32, _ payload: ByteBuffer) throws -> Marker? {
        var fields = try Fields(payload)
        switch type {
        case snapshotRequestType:
            return .snapshotRequest(snapshotID: try fields.string(1), sourceCluster: (try? fields.string(2)) ?? "")
        case snapshotResponseType:
            return .snapshotResponse(snapshotID: try fields.string(1), cluster: try cluster(fields.message(2)))
        case snapshotType:
            return .snapshot(
                snapshotID: try fields.string(1), local: try position(fields.message(2)),
                clusters: try fields.messages(3).map(cluster))
        case updateType:
            return .update(subscription: try fields.string(1), clusters: try fields.messages(2).map(cluster))
        default:
            return nil
        }
    }

    static func position(_ buffer: ByteBuffer) throws -> MarkerPosition {
        let fields = try Fields(buffer)
        return MarkerPosition(ledgerID: try fields.varint(1), entryID: try fields.varint(2))
    }

    static func cluster(_ buffer: ByteBuffer) throws -> ClusterPosition {
        var fields = try Fields(buffer)
        return ClusterPosition(cluster: try fields.string(1), position: try position(fields.message(2)))
    }

    /// A protobuf message's fields by number (varints and length-delimited ones; others skipped).
    struct Fields {
        var varints: [Int: UInt64] = [:]
        var bytes: [Int: [ByteBuffer]] = [:]

        init(_ buffer: ByteBuffer) throws {
            var view = buffer
            while view.readableBytes > 0 {
                let key = try Self.readVarint(&view)
                let field = Int(key >> 3)
                guard field > 0 else { throw Malformed(description: "field number 0 in a marker") }
                switch key & 7 {
                case 0: varints[field] = try Self.readVarint(&view)
                case 1: guard view.readSlice(length: 8) != nil else { throw Malformed(description: "truncated marker") }
                case 2:
                    let length = try Self.readVarint(&view)
                    guard length <= UInt64(view.readableBytes), let slice = view.readSlice(length: Int(length)) else {
                        throw Malformed(description: "a marker field is longer than the marker")
                    }
                    bytes[field, default: []].append(slice)
                case 5: guard view.readSlice(length: 4) != nil else { throw Malformed(description: "truncated marker") }
                default: throw Malformed(description: "unknown wire type in a marker")
                }
            }
        }

        static func readVarint(_ view: inout ByteBuffer) throws -> UInt64 {
            var value: UInt64 = 0
            var shift: UInt64 = 0
            while let byte = view.readInteger(as: UInt8.self) {
                value |= UInt64(byte & 0x7f) << shift
                if byte & 0x80 == 0 { return value }
                shift += 7
                guard shift < 64 else { break }
            }
            throw Malformed(description: "a marker has a malformed varint")
        }

        func varint(_ field: Int) throws -> UInt64 {
            guard let value = varints[field] else { throw Malformed(description: "a marker misses field \(field)") }
            return value
        }

        func message(_ field: Int) throws -> ByteBuffer {
            guard let value = bytes[field]?.first else { throw Malformed(description: "a marker misses field \(field)") }
            return value
        }

        func messages(_ field: Int) -> [ByteBuffer] { bytes[field] ?? [] }

        func string(_ field: Int) throws -> String { String(buffer: try message(field)) }
    }

    // MARK: the entry

    /// The stored Pulsar entry body of this marker: `[u32 crc32c][u32 metadataSize][MessageMetadata]
    /// [payload]`, metadata as Pulsar's `Markers.newMessage` makes it (producer `pulsar.marker`,
    /// sequence id 0, `marker_type`, `replicate_to` when it goes to some clusters only).
    public func entryBody(replicateTo: [String], publishTimeMs: UInt64) throws -> ByteBuffer {
        var metadata = Pulsar_Proto_MessageMetadata()
        metadata.producerName = "pulsar.marker"
        metadata.sequenceID = 0
        metadata.publishTime = publishTimeMs
        metadata.markerType = type
        metadata.replicateTo = replicateTo
        let metadataBytes: [UInt8] = try metadata.serializedBytes()
        let payload = encoded()
        var checksummed = ByteBuffer()
        checksummed.writeInteger(UInt32(metadataBytes.count))
        checksummed.writeBytes(metadataBytes)
        checksummed.writeImmutableBuffer(payload)
        var body = ByteBuffer()
        body.writeInteger(checksummed.withUnsafeReadableBytes { CRC32C.checksum($0) })
        body.writeImmutableBuffer(checksummed)
        return body
    }
}
