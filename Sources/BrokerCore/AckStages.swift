import ManagedLedger

/// An acknowledgement on its way to a subscription's cursor.
enum Acknowledgement: Equatable, Sendable {
    /// These entries (whole batches) are done.
    case individual([Position])
    /// Some messages of a batch entry are done: `ackSet` is the bit set of those still pending.
    case batchIndexes(Position, ackSet: [Int64])
    /// Everything up to and including `upTo` is done.
    case cumulative(upTo: Position)
}

/// What an acknowledgement stage decides.
enum AckVerdict: Equatable {
    /// Pass this on (to the next stage, then the cursor): the acknowledgement as it came, or less of it.
    case pass(Acknowledgement)
    /// Nothing of it reaches the cursor (refused, or the stage keeps it: a transaction's pending
    /// acknowledgement, later).
    case stop
}

/// One step of the acknowledgement path. Every acknowledgement passes the topic's stages in order
/// (`Topic.ackStages`: the check that it names stored entries today; transactions' pending acks
/// later) before the subscription applies it to its cursor. Runs on the topic's event loop.
protocol AckStage: AnyObject {
    func admit(_ acknowledgement: Acknowledgement, subscription: String) -> AckVerdict
}

/// Acknowledgements must name entries at or before the last durable one (Pulsar refuses to
/// mark-delete ahead of the last confirmed entry): stored, such an acknowledgement would hide the
/// messages written there later. Those positions are dropped and counted; `ignored` reports how
/// many (with the subscription) so the topic can log it.
final class StoredEntriesOnlyStage: AckStage {
    private let lastDurable: () -> Position
    private let ignored: (_ count: Int, _ subscription: String) -> Void

    init(lastDurable: @escaping () -> Position, ignored: @escaping (_ count: Int, _ subscription: String) -> Void) {
        self.lastDurable = lastDurable
        self.ignored = ignored
    }

    func admit(_ acknowledgement: Acknowledgement, subscription: String) -> AckVerdict {
        let last = lastDurable()
        switch acknowledgement {
        case .individual(let positions):
            let valid = positions.filter { $0 <= last }
            if valid.count < positions.count { ignored(positions.count - valid.count, subscription) }
            return valid.isEmpty ? .stop : .pass(.individual(valid))
        case .batchIndexes(let position, _), .cumulative(let position):
            guard position <= last else {
                ignored(1, subscription)
                return .stop
            }
            return .pass(acknowledgement)
        }
    }
}
