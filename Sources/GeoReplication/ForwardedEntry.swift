import Foundation
import NIOCore
import PulsarProtocol
import SwiftProtobuf

/// What a replicator does with one stored entry.
public enum ForwardDecision: Equatable, Sendable {
    /// Send it to the remote cluster, stamped `replicated_from = <local cluster>`.
    case forward
    /// It came from another cluster (`replicated_from` set): sending it on would loop.
    case alreadyReplicated
    /// Its `replicate_to` leaves this remote out (`send(replication_clusters=…)`,
    /// `disable_replication=True` → `["__local__"]`).
    case notForThisRemote
    /// A marker (`marker_type` set) that is not replicated (transaction markers).
    case localMarker
}

/// A stored Pulsar entry as the replicator reads it: the body
/// `[u32 crc32c][u32 metadataSize][MessageMetadata][payload]` split into its metadata and the payload
/// (a slice, never copied). A pure value.
public struct ForwardedEntry: Sendable {
    public var metadata: Pulsar_Proto_MessageMetadata
    public var payload: ByteBuffer

    public init(metadata: Pulsar_Proto_MessageMetadata, payload: ByteBuffer) {
        self.metadata = metadata
        self.payload = payload
    }

    public struct MalformedEntry: Error, CustomStringConvertible {
        public var description: String
    }

    /// Splits a stored entry's body; throws if it is not a Pulsar entry.
    public static func parse(_ body: ByteBuffer) throws -> ForwardedEntry {
        var view = body
        guard view.readInteger(as: UInt32.self) != nil, let size = view.readInteger(as: UInt32.self),
              Int(size) <= view.readableBytes, let metadataBytes = view.readSlice(length: Int(size))
        else { throw MalformedEntry(description: "entry body is shorter than its metadata size says") }
        do {
            let metadata = try Pulsar_Proto_MessageMetadata(serializedBytes: Array(metadataBytes.readableBytesView))
            return ForwardedEntry(metadata: metadata, payload: view)
        } catch {
            throw MalformedEntry(description: "entry metadata is not a MessageMetadata: \(error)")
        }
    }

    /// Marker types that replicate (the replicated-subscription markers, PulsarMarkers.proto 10-13);
    /// the rest (transaction markers, 20-22) stay in their cluster.
    static let replicatedMarkerTypes: ClosedRange<Int32> = 10...13

    public func decision(remoteCluster: String) -> ForwardDecision {
        if metadata.hasMarkerType, !Self.replicatedMarkerTypes.contains(metadata.markerType) { return .localMarker }
        if metadata.hasReplicatedFrom { return .alreadyReplicated }
        if !metadata.replicateTo.isEmpty, !metadata.replicateTo.contains(remoteCluster) { return .notForThisRemote }
        return .forward
    }

    /// The metadata to send: the stored one with `replicated_from` set (producer name, sequence id,
    /// publish time, properties, keys and batch count stay the original producer's) and, when the
    /// remote gave the schema another version number, that version.
    public func forwardedMetadata(localCluster: String, remoteSchemaVersion: [UInt8]?) throws -> ByteBuffer {
        var metadata = self.metadata
        metadata.replicatedFrom = localCluster
        if let remoteSchemaVersion, metadata.hasSchemaVersion { metadata.schemaVersion = Data(remoteSchemaVersion) }
        let bytes: [UInt8] = try metadata.serializedBytes()
        return ByteBuffer(bytes: bytes)
    }

    /// `num_messages_in_batch` for the SEND (nil: a single message).
    public var numMessages: Int32? { metadata.hasNumMessagesInBatch ? metadata.numMessagesInBatch : nil }
}
