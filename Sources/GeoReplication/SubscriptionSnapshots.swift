import BrokerCore
import Foundation
import Logging
import ManagedLedger
import NIOCore
import PulsarProtocol

/// Replicated subscriptions (Pulsar's `ReplicatedSubscriptionsController`, one round per snapshot):
///
/// 1. While the topic has replicated subscriptions, new data since the last snapshot, and every
///    replicator connected, it writes a SNAPSHOT_REQUEST marker (to every remote).
/// 2. A remote that reads the request (its replicator toward us hands it over) writes a
///    SNAPSHOT_RESPONSE marker back to us only: its cluster and the position the request got there.
///    Everything the remote holds up to that position is here before the response is.
/// 3. With every remote's response in, a SNAPSHOT marker is written here (kept here): the position
///    of the last response, and the remotes' positions.
/// 4. A replicated subscription's dispatch passes the snapshot marker and caches it (the last 10);
///    once its mark-delete position passes a snapshot's local position, a SUBSCRIPTION_UPDATE marker
///    goes to the remotes with their positions, and each moves its subscription there (cumulative
///    acknowledgement; the subscription is created if missing).
///
/// Markers are never delivered to clients. On the topic's event loop.
final class SubscriptionSnapshots: ReplicatedSubscriptionsController {
    private unowned let topic: Topic
    private let localCluster: String
    private let logger: Logger

    private struct Pending {
        var id: String
        var started: NIODeadline
        var remotes: Set<String>
        var responses: [String: Marker.MarkerPosition] = [:]
    }
    private var pending: Pending?
    /// The topic's last data position when the last request was written.
    private var requestedAtData: Position?
    private var cache: [String: [(local: Position, clusters: [Marker.ClusterPosition])]] = [:]
    private var lastUpdate: [String: Position] = [:]

    /// `replicatedSubscriptionsSnapshotTimeoutSeconds` and `...MaxCachedPerSubscription` (Pulsar's defaults).
    static let snapshotTimeout = TimeAmount.seconds(30)
    static let maxCachedPerSubscription = 10

    init(topic: Topic, logger: Logger) {
        self.topic = topic
        self.localCluster = topic.clusterName
        var logger = logger
        logger[metadataKey: "topic"] = "\(topic.name)"
        self.logger = logger
    }

    func tick() {
        let subscriptions = topic.replicatedSubscriptionPositions
        guard !subscriptions.isEmpty else { return }
        for (name, markDelete) in subscriptions {
            guard let snapshots = cache[name], let index = snapshots.lastIndex(where: { $0.local <= markDelete }) else { continue }
            let chosen = snapshots[index]
            cache[name] = Array(snapshots[(index + 1)...])
            if let last = lastUpdate[name], last >= chosen.local { continue }
            lastUpdate[name] = chosen.local
            write(.update(subscription: name, clusters: chosen.clusters), replicateTo: [])
        }
        if let current = pending, NIODeadline.now() - current.started > Self.snapshotTimeout {
            logger.info("replicated-subscriptions.snapshot-timed-out", metadata: [
                "snapshot.id": "\(current.id)", "missing": "\(current.remotes.subtracting(current.responses.keys).sorted())",
            ])
            pending = nil
        }
        guard pending == nil, let data = topic.lastDataPosition, data != requestedAtData else { return }
        let replicators = topic.replicatorStates
        guard !replicators.all.isEmpty, replicators.connected == replicators.all else { return }
        let id = UUID().uuidString
        pending = Pending(id: id, started: .now(), remotes: replicators.all)
        requestedAtData = data
        write(.snapshotRequest(snapshotID: id, sourceCluster: localCluster), replicateTo: [])
    }

    func subscription(_ name: String, passedMarker entry: Entry, at position: Position) {
        guard let forwarded = try? ForwardedEntry.parse(entry.body), forwarded.metadata.markerType == Marker.snapshotType,
              case .snapshot(_, let local, let clusters)? = try? Marker.decode(type: Marker.snapshotType, forwarded.payload)
        else { return }
        var snapshots = cache[name] ?? []
        snapshots.append((Position(ledgerID: Int64(local.ledgerID), entryID: Int64(local.entryID)), clusters))
        if snapshots.count > Self.maxCachedPerSubscription { snapshots.removeFirst(snapshots.count - Self.maxCachedPerSubscription) }
        cache[name] = snapshots
    }

    /// A marker that came from `remote`, read at `position` of this topic by the replicator toward it.
    func remoteMarker(_ marker: Marker, from remote: String, at position: Position) {
        switch marker {
        case .snapshotRequest(let id, let source):
            let here = Marker.ClusterPosition(
                cluster: localCluster,
                position: Marker.MarkerPosition(ledgerID: UInt64(position.ledgerID), entryID: UInt64(position.entryID)))
            write(.snapshotResponse(snapshotID: id, cluster: here), replicateTo: [source.isEmpty ? remote : source])
        case .snapshotResponse(let id, let cluster):
            guard var current = pending, current.id == id, current.remotes.contains(cluster.cluster) else { return }
            current.responses[cluster.cluster] = cluster.position
            guard current.responses.count == current.remotes.count else {
                pending = current
                return
            }
            pending = nil
            let local = Marker.MarkerPosition(ledgerID: UInt64(position.ledgerID), entryID: UInt64(position.entryID))
            let clusters = current.responses.sorted { $0.key < $1.key }.map { Marker.ClusterPosition(cluster: $0.key, position: $0.value) }
            write(.snapshot(snapshotID: id, local: local, clusters: clusters), replicateTo: [localCluster])
        case .update(let subscription, let clusters):
            guard let mine = clusters.first(where: { $0.cluster == localCluster }) else { return }
            topic.replicatedSubscriptionUpdated(
                subscription, upTo: Position(ledgerID: Int64(mine.position.ledgerID), entryID: Int64(mine.position.entryID)))
        case .snapshot:
            break
        }
    }

    private func write(_ marker: Marker, replicateTo: [String]) {
        logger.debug("replicated-subscriptions.marker", metadata: ["marker": "\(marker)", "replicate.to": "\(replicateTo)"])
        let body: ByteBuffer
        do {
            body = try marker.entryBody(replicateTo: replicateTo, publishTimeMs: UInt64(Date().timeIntervalSince1970 * 1000))
        } catch {
            logger.error("replicated-subscriptions.marker-encode-failed", metadata: ["error": "\(error)"])
            return
        }
        let logger = self.logger
        let type = marker.type
        topic.appendMarker(body) { result in
            if case .failure(let error) = result {
                logger.warning("replicated-subscriptions.marker-write-failed", metadata: ["marker.type": "\(type)", "error": "\(error)"])
            }
        }
    }
}
