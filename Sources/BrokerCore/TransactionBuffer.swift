import Foundation
import ManagedLedger
import NIOCore

/// A topic's transaction buffer, as a pure value (Pulsar's `TopicTransactionBuffer`): the
/// transactions writing to the topic now, and the aborted ones whose entries are still in the log.
///
/// A transaction's entries go into the topic's own log, among everything else. Nothing at or after
/// the first entry of the oldest ongoing transaction is dispatched (`readLimit`, Pulsar's max read
/// position; Kafka's last stable offset is `stableOffset`); when a transaction ends a commit or
/// abort marker is appended, and the entries of an aborted one are skipped by every reader.
/// A transaction registers with the buffer before its first entry is written, its lower bound being
/// the log's end then; the state is kept in the metadata store
/// (`MetadataKeys.transactionBuffer`), written at each registration and end, so a restarted broker
/// knows which entries to hold back and which to skip.
package struct TransactionBufferState: Codable, Sendable, Equatable {
    package struct Ongoing: Codable, Sendable, Equatable {
        package var id: TransactionID
        /// At or before the transaction's first entry here (the log's end when it registered).
        package var lowerBound: Position
        /// The offset of `lowerBound`'s message (at or before the first entry's).
        package var firstOffset: Int64
        /// The name its entries (and its marker) carry: a Kafka producer's `kafka-pid-<id>-<epoch>`.
        package var producerName: String
    }

    package struct Aborted: Codable, Sendable, Equatable {
        package var id: TransactionID
        package var firstOffset: Int64
        /// The abort marker's offset and position (Int64.max when the offset was not known).
        package var markerOffset: Int64
        package var markerPosition: Position
        package var producerName: String
    }

    /// In registration order (so `lowerBound`s ascend).
    package private(set) var ongoing: [Ongoing] = []
    /// In marker order.
    package private(set) var aborted: [Aborted] = []

    package init() {}

    /// Entries before this position may be dispatched; nil: no limit.
    package var readLimit: Position? { ongoing.first?.lowerBound }
    /// Kafka's last stable offset: the first offset of the oldest ongoing transaction; nil: the high watermark.
    package var stableOffset: Int64? { ongoing.first?.firstOffset }

    package func ongoing(_ id: TransactionID) -> Ongoing? { ongoing.first { $0.id == id } }

    /// Registers a transaction about to write its first entry here, at the log's end.
    package mutating func register(_ id: TransactionID, at end: Position, offset: Int64, producerName: String) {
        guard ongoing(id) == nil else { return }
        ongoing.append(Ongoing(id: id, lowerBound: end, firstOffset: offset, producerName: producerName))
    }

    /// The transaction's marker is in the log: it is no longer ongoing; aborted, its entries are skipped.
    package mutating func ended(_ id: TransactionID, committed: Bool, markerPosition: Position, markerOffset: Int64?) {
        guard let index = ongoing.firstIndex(where: { $0.id == id }) else { return }
        let transaction = ongoing.remove(at: index)
        guard !committed else { return }
        aborted.append(Aborted(
            id: id, firstOffset: transaction.firstOffset, markerOffset: markerOffset ?? Int64.max,
            markerPosition: markerPosition, producerName: transaction.producerName))
    }

    /// Forgets aborted transactions whose marker was trimmed from the log (none of their entries is left).
    package mutating func trim(before firstRetained: Position?) {
        guard let firstRetained else { return }
        aborted.removeAll { $0.markerPosition < firstRetained }
    }

    /// The aborted transactions overlapping offsets `from ..< to` (Kafka's Fetch lists them).
    package func aborted(overlapping from: Int64, _ to: Int64) -> [Aborted] {
        aborted.filter { $0.firstOffset < to && $0.markerOffset >= from }
    }
}

/// What a topic's subscriptions read of its transaction buffer, on the topic's loop: the read limit
/// and the aborted transactions (whose entries dispatch acknowledges without delivering).
final class TransactionView: @unchecked Sendable {
    private(set) var readLimit: Position?
    private(set) var aborted: Set<TransactionID> = []

    func update(_ state: TransactionBufferState) {
        readLimit = state.readLimit
        aborted = Set(state.aborted.map(\.id))
    }

    /// Whether dispatch may read the entry at `position`.
    @inline(__always) func mayRead(_ position: Position) -> Bool {
        guard let readLimit else { return true }
        return position < readLimit
    }
}

/// How a topic writes a transaction's commit or abort marker in its protocol's bytes (the broker's
/// edge provides it: Pulsar's message metadata with `marker_type` and the transaction id).
public protocol TransactionMarkerCodec: Sendable {
    func markerBody(transaction: TransactionID, committed: Bool, producerName: String, publishTimeMs: Int64) -> ByteBuffer
}
