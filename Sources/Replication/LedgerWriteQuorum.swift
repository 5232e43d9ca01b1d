import LedgerStorage
import NIOCore

/// Ensemble size E, write quorum Qw, ack quorum Qa of a ledger.
public struct QuorumConfiguration: Sendable, Equatable {
    public var ensembleSize: Int
    public var writeQuorumSize: Int
    public var ackQuorumSize: Int

    /// Requires `E >= Qw >= Qa >= 1`.
    public init(ensembleSize: Int, writeQuorumSize: Int, ackQuorumSize: Int) {
        precondition(ensembleSize >= writeQuorumSize && writeQuorumSize >= ackQuorumSize && ackQuorumSize >= 1,
                     "need E >= Qw >= Qa >= 1")
        self.ensembleSize = ensembleSize
        self.writeQuorumSize = writeQuorumSize
        self.ackQuorumSize = ackQuorumSize
    }

    /// Ensemble indices of entry `entryID`'s write set: Qw of them starting at `entryID % E`
    /// (BookKeeper's round-robin striping).
    public func writeSet(of entryID: Int64) -> [Int] {
        let first = Int(entryID % Int64(ensembleSize))
        return (0..<writeQuorumSize).map { (first + $0) % ensembleSize }
    }
}

/// The writer side of one ledger, BookKeeper's protocol as a pure state machine: events in,
/// actions out, no I/O, no clock. Owned by whoever drives it (a `ReplicatedLedgerClient` on its
/// event loop, or the simulation).
///
/// - An entry is sent to its write set (`QuorumConfiguration.writeSet(of:)`) and is *confirmed*
///   once Qa of those nodes acknowledged it; confirmations are released strictly in entry order
///   (`lastAddConfirmed` moves only over contiguous confirmed entries).
/// - A failed write to node i asks the caller to replace node i (`.replaceNode`); the caller
///   records the change in the ledger's metadata (compare-and-set, asynchronous) and answers
///   `nodeReplaced` (the new node gets every unconfirmed entry of index i, and the ensemble
///   history records a new segment from `lastAddConfirmed + 1`) or `replacementUnavailable` (the
///   index is left out; writing continues while every write set still has Qa live nodes).
///   While a replacement is pending no confirmation is released (BookKeeper holds its add
///   callbacks while changing the ensemble), so `lastAddConfirmed + 1` — the new segment's first
///   entry, which the caller writes to metadata before answering — cannot move meanwhile. Writes to
///   the failed index wait; other indices keep being written and acknowledged.
/// - A fenced answer fences the writer: every pending and later entry fails with `.fenced`.
public struct LedgerWriteQuorum<Node: Hashable & Sendable>: Sendable {
    public enum Action: Sendable, Equatable {
        /// Send entry `entryID` (with `payload`) to `node`; answer with `writeCompleted`.
        case sendEntry(entryID: Int64, payload: ByteBuffer, node: Node)
        /// Node at `ensembleIndex` failed: pick a replacement and call `nodeReplaced`, or
        /// `replacementUnavailable`.
        case replaceNode(ensembleIndex: Int, failed: Node)
        /// Entries `from...through` are confirmed (in order): report success for each.
        case confirmEntries(from: Int64, through: Int64)
        /// These entries failed (in entry order): report the error for each.
        case failEntries([Int64], LedgerStoreError)
    }

    /// What a node answered for one entry.
    public enum WriteResult: Sendable, Equatable {
        case ok
        case fenced
        /// Connection lost, timeout, or an error status: the node is treated as failed.
        case failed
    }

    public enum State: Sendable, Equatable {
        case writing
        case fenced
        /// Not enough live nodes to reach Qa, or closed: every entry fails with this error.
        case failed(LedgerStoreError)
    }

    private struct PendingEntry: Sendable {
        var payload: ByteBuffer
        var ackedIndices: Set<Int> = []
    }

    public let ledgerID: Int64
    public let configuration: QuorumConfiguration
    public private(set) var state: State = .writing
    /// The current ensemble, by index.
    public private(set) var ensemble: [Node]
    /// Ensemble history: segment i holds entries from `firstEntryID` up to the next segment's.
    public private(set) var ensembleHistory: [(firstEntryID: Int64, ensemble: [Node])]
    public private(set) var lastAddConfirmed: Int64 = -1
    public private(set) var nextEntryID: Int64 = 0
    private var pending: [Int64: PendingEntry] = [:]
    /// Indices whose node failed and was not (yet) replaced: no longer written to or counted.
    public private(set) var failedIndices: Set<Int> = []
    /// Failed indices for which no replacement exists: writing goes on without them while Qa can be met.
    public private(set) var abandonedIndices: Set<Int> = []

    public init(ledgerID: Int64, configuration: QuorumConfiguration, ensemble: [Node]) {
        precondition(ensemble.count == configuration.ensembleSize && Set(ensemble).count == ensemble.count,
                     "ensemble must have E distinct nodes")
        self.ledgerID = ledgerID
        self.configuration = configuration
        self.ensemble = ensemble
        self.ensembleHistory = [(0, ensemble)]
    }

    /// Entries appended and not yet confirmed or failed.
    public var pendingEntryIDs: [Int64] { pending.keys.sorted() }

    /// The nodes that should hold `entryID`, in write-set order (from the ensemble segment the entry belongs to).
    public func writeSetNodes(of entryID: Int64) -> [Node] {
        let segment = ensembleHistory.last(where: { $0.firstEntryID <= entryID }) ?? ensembleHistory[0]
        return configuration.writeSet(of: entryID).map { segment.ensemble[$0] }
    }

    /// The payload of an entry appended but not yet confirmed (readers may see in-flight entries).
    public func pendingPayload(of entryID: Int64) -> ByteBuffer? { pending[entryID]?.payload }

    // MARK: - Events

    /// The application appends `entryID` (must be `nextEntryID`).
    public mutating func addEntry(entryID: Int64, payload: ByteBuffer) -> [Action] {
        switch state {
        case .fenced:
            return [.failEntries([entryID], .fenced(ledgerID: ledgerID))]
        case .failed(let error):
            return [.failEntries([entryID], error)]
        case .writing:
            break
        }
        guard entryID == nextEntryID else {
            return [.failEntries([entryID], .outOfOrder(ledgerID: ledgerID, expected: nextEntryID, got: entryID))]
        }
        nextEntryID += 1
        pending[entryID] = PendingEntry(payload: payload)
        var actions: [Action] = []
        for index in configuration.writeSet(of: entryID) where !failedIndices.contains(index) {
            actions.append(.sendEntry(entryID: entryID, payload: payload, node: ensemble[index]))
        }
        return actions
    }

    /// `node` answered the write of `entryID`.
    public mutating func writeCompleted(entryID: Int64, node: Node, result: WriteResult) -> [Action] {
        guard state == .writing else { return [] }
        // Only the node now at that index of the entry's write set counts (a replaced node's late answer does not).
        guard let index = configuration.writeSet(of: entryID).first(where: { ensemble[$0] == node }) else { return [] }
        switch result {
        case .ok:
            guard pending[entryID] != nil, !failedIndices.contains(index) else { return [] }
            pending[entryID]!.ackedIndices.insert(index)
            return releaseConfirmed()
        case .fenced:
            state = .fenced
            return failAllPending(.fenced(ledgerID: ledgerID))
        case .failed:
            // Also for an entry already confirmed by the others: the node is gone all the same, and
            // later entries must not keep waiting on it (with Qa < Qw its failures may all arrive
            // after the other nodes confirmed every entry).
            guard !failedIndices.contains(index) else { return [] }
            failedIndices.insert(index)
            // Acks of the failed node no longer count; the replacement will be asked again.
            for entryID in pending.keys {
                pending[entryID]!.ackedIndices.remove(index)
            }
            return [.replaceNode(ensembleIndex: index, failed: node)]
        }
    }

    /// The caller replaced the node at `ensembleIndex` with `node` (recorded in its metadata).
    public mutating func nodeReplaced(ensembleIndex: Int, with node: Node) -> [Action] {
        guard state == .writing else { return [] }
        precondition(failedIndices.contains(ensembleIndex), "Invalid state: index \(ensembleIndex) did not fail")
        precondition(!ensemble.contains(node), "replacement \(node) is already in the ensemble")
        failedIndices.remove(ensembleIndex)
        abandonedIndices.remove(ensembleIndex)
        ensemble[ensembleIndex] = node
        let segmentStart = nextSegmentFirstEntryID
        if ensembleHistory[ensembleHistory.count - 1].firstEntryID == segmentStart {
            ensembleHistory[ensembleHistory.count - 1].ensemble = ensemble
        } else {
            ensembleHistory.append((segmentStart, ensemble))
        }
        var actions: [Action] = []
        for entryID in pending.keys.sorted() where configuration.writeSet(of: entryID).contains(ensembleIndex) {
            actions.append(.sendEntry(entryID: entryID, payload: pending[entryID]!.payload, node: node))
        }
        // Acks held back during the change may now confirm entries (from the other indices).
        return actions + releaseConfirmed()
    }

    /// The first entry of the segment an ensemble change now would start: `lastAddConfirmed + 1`,
    /// which does not move while a replacement is pending.
    public var nextSegmentFirstEntryID: Int64 { lastAddConfirmed + 1 }

    /// Whether some failed index awaits `nodeReplaced` / `replacementUnavailable` (confirmations are held).
    public var isChangingEnsemble: Bool { !failedIndices.isSubset(of: abandonedIndices) }

    /// No spare node for `ensembleIndex`: keep writing to the others if Qa can still be met.
    public mutating func replacementUnavailable(ensembleIndex: Int) -> [Action] {
        guard state == .writing else { return [] }
        precondition(failedIndices.contains(ensembleIndex), "Invalid state: index \(ensembleIndex) did not fail")
        abandonedIndices.insert(ensembleIndex)
        let failure = checkLiveness()
        return failure.isEmpty ? releaseConfirmed() : failure
    }

    /// The writer itself is fenced (its store fenced the ledger) or closed.
    public mutating func stop(_ error: LedgerStoreError) -> [Action] {
        guard state == .writing else { return [] }
        if case .fenced = error { state = .fenced } else { state = .failed(error) }
        return failAllPending(error)
    }

    // MARK: - Helpers

    private mutating func releaseConfirmed() -> [Action] {
        guard !isChangingEnsemble else { return [] }
        let first = lastAddConfirmed + 1
        var next = first
        while let entry = pending[next], entry.ackedIndices.count >= configuration.ackQuorumSize {
            pending[next] = nil
            next += 1
        }
        guard next > first else { return [] }
        lastAddConfirmed = next - 1
        return [.confirmEntries(from: first, through: next - 1)]
    }

    /// Fails the writer when some write set has fewer than Qa nodes that are live or being replaced.
    private mutating func checkLiveness() -> [Action] {
        let fewestLive = (0..<configuration.ensembleSize).map { first in
            configuration.writeSet(of: Int64(first)).filter { !abandonedIndices.contains($0) }.count
        }.min() ?? 0
        guard fewestLive < configuration.ackQuorumSize else { return [] }
        let error = LedgerStoreError.io("ledger \(ledgerID): fewer than \(configuration.ackQuorumSize) storage nodes left to write to")
        state = .failed(error)
        return failAllPending(error)
    }

    private mutating func failAllPending(_ error: LedgerStoreError) -> [Action] {
        let ids = pending.keys.sorted()
        pending.removeAll()
        return ids.isEmpty ? [] : [.failEntries(ids, error)]
    }
}
