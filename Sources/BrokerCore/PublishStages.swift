import ManagedLedger

/// What a publish stage decides about one entry.
enum PublishVerdict {
    /// Pass it on (to the next stage, then the managed ledger).
    case write
    /// Answer it as already stored, at `(-1, -1)`, without writing it (deduplication).
    case duplicate
}

/// One step of the publish path. Every entry of a batch passes the topic's stages in order
/// (`Topic.publishStages`: deduplication today; a schema check, the transaction buffer and
/// replication markers are later stages) before it is appended; once appended, each stage that
/// let it through hears, in append order, whether it was persisted or failed. Runs on the
/// topic's event loop.
protocol PublishStage: AnyObject {
    func admit(_ attributes: EntryAttributes) -> PublishVerdict
    /// The entry is durable at `position`.
    func persisted(_ attributes: EntryAttributes, at position: Position)
    /// The entry was admitted but not stored (a full disk, a failed ledger).
    func failed(_ attributes: EntryAttributes)
}

/// Message deduplication (namespace policy `deduplicationEnabled`): per producer name, the highest
/// sequence id persisted and the highest admitted for persisting; an entry at or below the
/// admitted one repeats one already taken. Off (`state == nil`) it lets everything through.
/// Owned by its topic, on the topic's loop.
final class DeduplicationStage: PublishStage {
    /// Present while deduplication is enabled.
    var state: DeduplicationState?
    /// A rebuild of `state` from the log is under way.
    var rebuilding = false

    func admit(_ attributes: EntryAttributes) -> PublishVerdict {
        guard var current = state, !attributes.producerName.isEmpty, !attributes.isNonFinalChunk,
              attributes.highestSequenceID >= 0
        else { return .write }
        let name = attributes.producerName
        if attributes.highestSequenceID <= current.pushed[name] ?? -1 { return .duplicate }
        current.pushed[name] = attributes.highestSequenceID
        state = current
        return .write
    }

    func persisted(_ attributes: EntryAttributes, at position: Position) {
        guard state != nil, !attributes.producerName.isEmpty, !attributes.isNonFinalChunk else { return }
        let name = attributes.producerName
        state!.persisted[name] = max(state!.persisted[name] ?? -1, attributes.highestSequenceID)
    }

    /// The producer's highest admitted sequence id goes back to the highest persisted one, as
    /// Pulsar's `resetHighestSequenceIdPushed` does, so the resend is admitted.
    func failed(_ attributes: EntryAttributes) {
        guard state != nil, !attributes.producerName.isEmpty else { return }
        let name = attributes.producerName
        state!.pushed[name] = state!.persisted[name]
    }
}
