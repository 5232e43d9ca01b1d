import ManagedLedger

/// Message deduplication state of a topic (namespace policy `deduplicationEnabled`): per producer
/// name, the highest sequence id persisted and the highest accepted for persisting. A pure value
/// owned by the topic.
struct DeduplicationState {
    var persisted: [String: Int64] = [:]
    var pushed: [String: Int64] = [:]
}

extension Topic {
    /// Present while deduplication is enabled (the state of `deduplicationStage`).
    var deduplication: DeduplicationState? {
        get { deduplicationStage.state }
        set { deduplicationStage.state = newValue }
    }

    /// A rebuild of `deduplication` from the log is under way.
    var deduplicationRebuilding: Bool {
        get { deduplicationStage.rebuilding }
        set { deduplicationStage.rebuilding = newValue }
    }

    /// Turns deduplication on or off. Turning it on rebuilds the state by reading the log (the
    /// producer name and highest sequence id are in every entry's header) from a task
    /// (`rebuildDeduplication`): deduplication takes effect once the rebuild has reached the end of
    /// the log.
    func setDeduplication(enabled: Bool) {
        eventLoop.preconditionInEventLoop()
        guard enabled != (deduplication != nil) else { return }
        guard enabled else {
            deduplication = nil
            return
        }
        guard !deduplicationRebuilding else { return }
        deduplicationRebuilding = true
        Task { try? await self.rebuildDeduplication() }
    }

    /// Rebuilds the deduplication state from the log without blocking the loop: positions are taken
    /// on the loop batch by batch, the entries read off it; the state is installed on the loop in
    /// the same turn that finds no further entry, so no entry persisted meanwhile is missed.
    ///
    /// An entry that cannot be read is not skipped (the state would miss its sequence id, and the
    /// producer's resend of it would be written twice): the batch is read again, up to
    /// `Topic.deduplicationRebuildAttempts` times, then the rebuild gives up and throws (a topic
    /// load fails and is retried by the client; turning deduplication on is tried again by the
    /// next policy pass).
    func rebuildDeduplication() async throws {
        var state = DeduplicationState()
        var after: Position?
        var failures = 0
        while true {
            let current = state
            let lastSeen = after
            let batch = try? await eventLoop.submit { () -> [Position]? in
                let batch = self.managedLedger.positionsOnLoop(after: lastSeen, limit: ManagedLedgerLimits.readAheadBatch)
                guard batch.isEmpty else { return batch }
                var installed = current
                installed.pushed = installed.persisted
                self.deduplication = installed
                self.deduplicationRebuilding = false
                self.logger.info("topic.deduplication-enabled", metadata: ["producers": "\(installed.persisted.count)"])
                return nil
            }.get()
            guard let batch else { return }
            let entries = await managedLedger.entriesWithoutBlocking(batch)
            guard entries.allSatisfy({ $0 != nil }) else {
                failures += 1
                guard failures < Topic.deduplicationRebuildAttempts else {
                    _ = try? await eventLoop.submit { self.deduplicationRebuilding = false }.get()
                    logger.warning("topic.deduplication-rebuild-failed", metadata: [
                        "after": "\(after.map { "\($0)" } ?? "start")", "attempts": "\(failures)",
                        "hint": "an entry of the log cannot be read; deduplication stays off until it can",
                    ])
                    throw BrokerError(.serviceNotReady, "deduplication state of \(name) cannot be rebuilt: an entry after \(after.map { "\($0)" } ?? "the start") cannot be read; retry")
                }
                try? await Task.sleep(for: .milliseconds(200))
                continue
            }
            failures = 0
            let read = entries.compactMap { $0 }
            for entry in read where !entry.attributes.producerName.isEmpty && !entry.attributes.isNonFinalChunk {
                let name = entry.attributes.producerName
                state.persisted[name] = max(state.persisted[name] ?? -1, entry.attributes.highestSequenceID)
            }
            after = batch.last
        }
    }

    /// Reads of one batch a deduplication rebuild makes before it gives up.
    static let deduplicationRebuildAttempts = 5

    /// The highest sequence id persisted for a producer name, or -1 (always -1 without deduplication).
    public func lastPublishedSequenceID(producerName: String) -> Int64 {
        deduplication?.persisted[producerName] ?? -1
    }
}
