import ManagedLedger
import NIOCore

/// Offset-addressed access to a topic's log, for protocols that read by offset (Kafka): offsets
/// are the managed ledger's gap-free message offsets (`MessageIndex`).
extension Topic {
    /// On the loop, from a `PublishReplier`: the offset of the appended entry's first message, or
    /// nil when it must be looked up (`offset(of:)`).
    package func offsetOfAppended(_ position: Position, numMessages: Int32) -> Int64? {
        managedLedger.offsetOfAppended(position, numMessages: numMessages)
    }

    /// On the loop: the offset the next message takes, if known without waiting.
    package func nextOffsetOnLoop() -> Int64? { managedLedger.nextOffsetOnLoop() }

    /// The offset of the first message of the entry at `position`.
    package func offset(of position: Position) async -> Int64? {
        await managedLedger.offset(of: position)
    }

    /// The first retained offset and the offset the next message takes.
    package func offsetBounds() async -> (first: Int64, next: Int64)? {
        await managedLedger.offsetBounds()
    }

    /// The entry holding message `offset` and that entry's first offset.
    package func position(ofOffset offset: Int64) async -> (position: Position, firstOffset: Int64)? {
        await managedLedger.position(ofOffset: offset)
    }

    /// The first entry published at or after `timestampMs`.
    package func firstPosition(publishedAtOrAfter timestampMs: Int64) async -> Position? {
        await managedLedger.firstPosition(publishedAtOrAfter: timestampMs)
    }

    /// Entries from `position` on (see `ManagedLedger.entries(from:maxEntries:maxBytes:)`).
    package func entries(from position: Position, maxEntries: Int, maxBytes: Int) async -> [(position: Position, entry: Entry)] {
        await managedLedger.entries(from: position, maxEntries: maxEntries, maxBytes: maxBytes)
    }

    /// On the loop: runs `waiter` once, at the next durable entry; returns a token for
    /// `cancelAppendWaiter` (a waiter given up on must be cancelled, or it waits for the next entry).
    package func waitForAppend(_ waiter: @escaping @Sendable () -> Void) -> UInt64 {
        eventLoop.preconditionInEventLoop()
        nextAppendWaiter += 1
        appendWaiters[nextAppendWaiter] = waiter
        return nextAppendWaiter
    }

    package func cancelAppendWaiter(_ token: UInt64) {
        eventLoop.preconditionInEventLoop()
        appendWaiters[token] = nil
    }

    /// Why an offset protocol's publish is refused now (a full disk, an exceeded backlog quota), or nil.
    package var publishRefusal: BrokerError? {
        eventLoop.preconditionInEventLoop()
        if isUnloaded { return unloadedError }
        if let diskFull = managedLedger.diskFullError { return BrokerError(.notAllowed, diskFull.message) }
        if backlogQuotaExceeded {
            return BrokerError(
                .producerBlockedQuota,
                "backlog quota of \(name) exceeded: consume or skip the backlog, or raise the namespace's backlog quota")
        }
        return nil
    }
}
