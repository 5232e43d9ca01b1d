/// Message deduplication state of a topic (namespace policy `deduplicationEnabled`): per producer
/// name, the highest sequence id persisted and the highest accepted for persisting. A pure value
/// owned by the topic.
struct DeduplicationState {
    var persisted: [String: Int64] = [:]
    var pushed: [String: Int64] = [:]
}

extension Topic {
    /// Turns deduplication on or off. Turning it on rebuilds the state by reading the log (the
    /// producer name and highest sequence id are in every entry's header).
    func setDeduplication(enabled: Bool) {
        eventLoop.preconditionInEventLoop()
        guard enabled != (deduplication != nil) else { return }
        guard enabled else {
            deduplication = nil
            return
        }
        var state = DeduplicationState()
        var position = managedLedger.firstPosition
        while let current = position {
            if let entry = try? managedLedger.read(current), !entry.attributes.producerName.isEmpty,
               !entry.attributes.isNonFinalChunk
            {
                let name = entry.attributes.producerName
                state.persisted[name] = max(state.persisted[name] ?? -1, entry.attributes.highestSequenceID)
            }
            position = managedLedger.next(after: current)
        }
        state.pushed = state.persisted
        deduplication = state
        logger.info("topic.deduplication-enabled", metadata: ["producers": "\(state.persisted.count)"])
    }

    /// The highest sequence id persisted for a producer name, or -1 (always -1 without deduplication).
    public func lastPublishedSequenceID(producerName: String) -> Int64 {
        deduplication?.persisted[producerName] ?? -1
    }

    /// Whether this entry repeats one already accepted; records it as accepted otherwise.
    func acceptForDeduplication(_ attributes: EntryAttributes) -> Bool {
        guard var state = deduplication, !attributes.producerName.isEmpty, !attributes.isNonFinalChunk,
              attributes.highestSequenceID >= 0
        else { return true }
        let name = attributes.producerName
        if attributes.highestSequenceID <= state.pushed[name] ?? -1 { return false }
        state.pushed[name] = attributes.highestSequenceID
        deduplication = state
        return true
    }

    /// An accepted entry was not stored (a full disk, a failed ledger): its producer's highest
    /// accepted sequence id goes back to the highest persisted one, as Pulsar's
    /// `resetHighestSequenceIdPushed` does, so the resend is accepted.
    func forgetAcceptedForDeduplication(_ attributes: EntryAttributes) {
        guard deduplication != nil, !attributes.producerName.isEmpty else { return }
        let name = attributes.producerName
        deduplication!.pushed[name] = deduplication!.persisted[name]
    }

    func recordPersisted(_ attributes: EntryAttributes) {
        guard deduplication != nil, !attributes.producerName.isEmpty, !attributes.isNonFinalChunk else { return }
        let name = attributes.producerName
        deduplication!.persisted[name] = max(deduplication!.persisted[name] ?? -1, attributes.highestSequenceID)
    }
}
