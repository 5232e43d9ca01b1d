import Foundation
import NIOCore
import PulsarProtocol
import Testing

@testable import GeoReplication

/// The replicator's view of stored entries: which go to a remote, and what it sends.
struct ForwardedEntryTests {
    /// A stored Pulsar entry body: `[u32 crc32c][u32 metadataSize][MessageMetadata][payload]`.
    static func body(_ metadata: Pulsar_Proto_MessageMetadata, payload: String) throws -> ByteBuffer {
        let bytes: [UInt8] = try metadata.serializedBytes()
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(0))
        buffer.writeInteger(UInt32(bytes.count))
        buffer.writeBytes(bytes)
        buffer.writeString(payload)
        return buffer
    }

    static func metadata(_ change: (inout Pulsar_Proto_MessageMetadata) -> Void = { _ in }) -> Pulsar_Proto_MessageMetadata {
        var metadata = Pulsar_Proto_MessageMetadata()
        metadata.producerName = "us-east-abc-1"
        metadata.sequenceID = 41
        metadata.publishTime = 1_700_000_000_000
        change(&metadata)
        return metadata
    }

    @Test func forwardsAPlainEntryStampedWithTheLocalCluster() throws {
        let entry = try ForwardedEntry.parse(Self.body(Self.metadata { $0.numMessagesInBatch = 3 }, payload: "hello"))
        #expect(entry.decision(remoteCluster: "us-west") == .forward)
        #expect(String(buffer: entry.payload) == "hello")
        #expect(entry.numMessages == 3)
        let sent = try Pulsar_Proto_MessageMetadata(serializedBytes: Array(entry.forwardedMetadata(localCluster: "us-east", remoteSchemaVersion: nil).readableBytesView))
        #expect(sent.replicatedFrom == "us-east")
        // The original producer and sequence id stay: the remote deduplicates by them.
        #expect(sent.producerName == "us-east-abc-1")
        #expect(sent.sequenceID == 41)
        #expect(sent.publishTime == 1_700_000_000_000)
    }

    @Test func neverForwardsWhatCameFromAnotherCluster() throws {
        let entry = try ForwardedEntry.parse(Self.body(Self.metadata { $0.replicatedFrom = "us-west" }, payload: "x"))
        #expect(entry.decision(remoteCluster: "us-west") == .alreadyReplicated)
        #expect(entry.decision(remoteCluster: "eu") == .alreadyReplicated)
    }

    @Test func replicateToChoosesTheRemotes() throws {
        let local = try ForwardedEntry.parse(Self.body(Self.metadata { $0.replicateTo = ["__local__"] }, payload: "x"))
        #expect(local.decision(remoteCluster: "us-west") == .notForThisRemote)
        let some = try ForwardedEntry.parse(Self.body(Self.metadata { $0.replicateTo = ["us-west"] }, payload: "x"))
        #expect(some.decision(remoteCluster: "us-west") == .forward)
        #expect(some.decision(remoteCluster: "eu") == .notForThisRemote)
    }

    @Test func transactionMarkersStayLocal() throws {
        let marker = try ForwardedEntry.parse(Self.body(Self.metadata { $0.markerType = 21 }, payload: ""))
        #expect(marker.decision(remoteCluster: "us-west") == .localMarker)
        let snapshotRequest = try ForwardedEntry.parse(Self.body(Self.metadata { $0.markerType = 10 }, payload: ""))
        #expect(snapshotRequest.decision(remoteCluster: "us-west") == .forward)
    }

    @Test func rewritesTheSchemaVersionToTheRemotes() throws {
        let entry = try ForwardedEntry.parse(Self.body(Self.metadata { $0.schemaVersion = Data([0, 0, 0, 0, 0, 0, 0, 3]) }, payload: "x"))
        let sent = try Pulsar_Proto_MessageMetadata(serializedBytes: Array(
            entry.forwardedMetadata(localCluster: "us-east", remoteSchemaVersion: [0, 0, 0, 0, 0, 0, 0, 0]).readableBytesView))
        #expect(Array(sent.schemaVersion) == [0, 0, 0, 0, 0, 0, 0, 0])
    }

    @Test func refusesWhatIsNotAPulsarEntry() {
        var short = ByteBuffer()
        short.writeInteger(UInt32(0))
        short.writeInteger(UInt32(100))
        #expect(throws: ForwardedEntry.MalformedEntry.self) { try ForwardedEntry.parse(short) }
    }

    @Test func schemaVersionNumbers() {
        #expect(GeoReplicator.versionNumber(GeoReplicator.versionBytes(7)) == 7)
        #expect(GeoReplicator.versionNumber([]) == -1)
    }
}

/// PulsarMarkers.proto's messages, as encoded and read back.
struct MarkerTests {
    @Test func everyMarkerRoundTrips() throws {
        let west = Marker.ClusterPosition(cluster: "us-west", position: Marker.MarkerPosition(ledgerID: 7, entryID: 300))
        let markers: [Marker] = [
            .snapshotRequest(snapshotID: "id-1", sourceCluster: "us-east"),
            .snapshotResponse(snapshotID: "id-1", cluster: west),
            .snapshot(snapshotID: "id-1", local: Marker.MarkerPosition(ledgerID: 3, entryID: 4), clusters: [west]),
            .update(subscription: "app", clusters: [west]),
        ]
        for marker in markers {
            #expect(try Marker.decode(type: marker.type, marker.encoded()) == marker)
        }
        #expect(try Marker.decode(type: 21, ByteBuffer()) == nil)
    }

    @Test func theEntryIsAMarkerMessage() throws {
        let body = try Marker.update(subscription: "app", clusters: []).entryBody(replicateTo: ["us-east"], publishTimeMs: 5)
        let entry = try ForwardedEntry.parse(body)
        #expect(entry.metadata.markerType == Marker.updateType)
        #expect(entry.metadata.producerName == "pulsar.marker")
        #expect(entry.metadata.replicateTo == ["us-east"])
        #expect(entry.decision(remoteCluster: "us-west") == .notForThisRemote)
    }

    @Test func aTruncatedMarkerIsRefused() {
        var truncated = ByteBuffer()
        truncated.writeBytes([0x0a, 0x10, 0x61])
        #expect(throws: Marker.Malformed.self) { try Marker.decode(type: Marker.updateType, truncated) }
    }
}
