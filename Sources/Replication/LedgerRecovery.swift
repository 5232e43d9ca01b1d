import LedgerStorage
import NIOCore

/// BookKeeper's ledger recovery by a new writer, as a pure state machine: answers in, actions out,
/// no I/O, no clock (like `LedgerWriteQuorum`). `ReplicatedLedgerClient.recoverLedger` drives it
/// over storage nodes; the seeded simulation (`ReplicationSimulationTests`) drives the same code
/// over nodes behind a simulated network.
///
/// The steps, for the ledger's last segment (ensemble E, ack quorum Qa, from `firstEntryID`):
/// 1. **Fence** every node of the ensemble. At least `E - Qa + 1` must answer, so no ack quorum can
///    form for the previous writer any more.
/// 2. **List** the entries each fenced node holds from `firstEntryID` on; again `E - Qa + 1` answers
///    are needed. The candidate end is the run of consecutive entries held somewhere.
/// 3. **Read back** the candidate end (BookKeeper's LedgerRecoveryOp reads what it recovers): a
///    listing says which entries a node holds, not that it can serve them. An entry every listing
///    node answers `notFound` for is stored nowhere (an add that raced the fence): the end moves
///    before it (at most `ReplicationLimits.recoveryReadBackEntries` times). Any other failure stops
///    the recovery for a retry rather than cut entries that may have been acknowledged.
/// 4. **Write back** every entry of the recovered tail to the fenced nodes of its write set that lack
///    it (a recovery add, which a fenced node accepts), reading it from a node that holds it.
/// 5. **Finished** at the recovered end (the caller closes the ledger's metadata there).
public struct LedgerRecovery<Node: Hashable & Comparable & Sendable>: Sendable {
    public enum Action: Sendable, Equatable {
        case fence(node: Node)
        case listEntries(node: Node, fromEntryID: Int64)
        case readEntry(entryID: Int64, node: Node)
        case recoveryAdd(entryID: Int64, payload: ByteBuffer, nodes: [Node])
        /// Listed but stored nowhere: the end moved before it (worth a warning).
        case droppedPhantomEntry(entryID: Int64, nodes: [Node])
        /// No node could serve an entry to write back: left to the re-replication auditor.
        case writeBackUnreadable(entryID: Int64)
        /// Done: the ledger ends at `lastEntryID` (`firstEntryID - 1` when the segment is empty);
        /// `copies` recovery adds were accepted.
        case finished(lastEntryID: Int64, copies: Int)
        case failed(LedgerStoreError)
    }

    /// A node's answer to a read.
    public enum ReadResult: Sendable, Equatable {
        case entry(ByteBuffer)
        case notFound
        /// The node holds a damaged copy: stored (the read path and the auditor repair it).
        case corrupted
        case failed(String)
    }

    private enum Phase: Sendable {
        case idle
        case fencing(answers: Int)
        case listing(answers: Int)
        case readingBack(entryID: Int64, sources: [Node], next: Int, failures: [String], missingEverywhere: Bool)
        case readingForWriteBack(entryID: Int64, sources: [Node], next: Int, targets: [Node])
        case addingBack(entryID: Int64)
        case done
    }

    public let ledgerID: Int64
    public let ensemble: [Node]
    public let firstEntryID: Int64
    public let configuration: QuorumConfiguration
    private var phase = Phase.idle
    private var fenced: [Node] = []
    private var held: [Node: Set<Int64>] = [:]
    private var lastListed: Int64
    private var lastEntryID: Int64
    private var copies = 0

    /// Recovery of the segment of `ensemble` that starts at `firstEntryID` (the ledger's last).
    public init(ledgerID: Int64, ensemble: [Node], firstEntryID: Int64, configuration: QuorumConfiguration) {
        self.ledgerID = ledgerID
        self.ensemble = ensemble
        self.firstEntryID = firstEntryID
        self.configuration = configuration
        lastListed = firstEntryID - 1
        lastEntryID = firstEntryID - 1
    }

    /// Answers needed to fence and to list: `E - Qa + 1`.
    public var answersNeeded: Int { configuration.ensembleSize - configuration.ackQuorumSize + 1 }

    /// The nodes that answered the fence, in answer order.
    public var fencedNodes: [Node] { fenced }

    /// The fenced nodes that listed their entries: those the write-back copies the tail to.
    public var listedNodes: [Node] { held.keys.sorted() }

    /// The nodes of `entryID`'s write set (in the recovered segment).
    public func writeSetNodes(of entryID: Int64) -> [Node] {
        configuration.writeSet(of: entryID).map { ensemble[$0] }
    }

    // MARK: - Events

    public mutating func start() -> [Action] {
        guard case .idle = phase else { return [] }
        phase = .fencing(answers: 0)
        return ensemble.map { .fence(node: $0) }
    }

    /// A node answered the fence (`fenced` false: refused or unreachable).
    public mutating func fenceAnswered(node: Node, fenced succeeded: Bool) -> [Action] {
        guard case .fencing(var answers) = phase else { return [] }
        answers += 1
        if succeeded, !fenced.contains(node) { fenced.append(node) }
        guard answers == ensemble.count else {
            phase = .fencing(answers: answers)
            return []
        }
        guard fenced.count >= answersNeeded else {
            let missing = ensemble.filter { !fenced.contains($0) }.map { "\($0)" }.joined(separator: ", ")
            return fail(.io("ledger \(ledgerID): fenced on \(fenced.count) of its \(ensemble.count) storage nodes, need \(answersNeeded); start the missing nodes (\(missing)) and retry"))
        }
        phase = .listing(answers: 0)
        return fenced.map { .listEntries(node: $0, fromEntryID: firstEntryID) }
    }

    /// A fenced node listed the entries it holds from `firstEntryID` on (nil: it did not answer).
    public mutating func listed(node: Node, entryIDs: [Int64]?) -> [Action] {
        guard case .listing(var answers) = phase else { return [] }
        answers += 1
        if let entryIDs { held[node] = Set(entryIDs) }
        guard answers == fenced.count else {
            phase = .listing(answers: answers)
            return []
        }
        guard held.count >= answersNeeded else {
            return fail(.io("ledger \(ledgerID): listed entries on \(held.count) storage nodes, need \(answersNeeded); retry"))
        }
        var last = firstEntryID - 1
        while held.values.contains(where: { $0.contains(last + 1) }) { last += 1 }
        lastListed = last
        return readBack(last)
    }

    /// A node answered a read this machine asked for.
    public mutating func readAnswered(entryID: Int64, node: Node, _ result: ReadResult) -> [Action] {
        switch phase {
        case .readingBack(let current, let sources, let next, var failures, var missingEverywhere) where current == entryID:
            switch result {
            case .entry, .corrupted:
                lastEntryID = entryID
                return writeBack(from: firstEntryID)
            case .notFound:
                failures.append("\(node): not found")
            case .failed(let detail):
                missingEverywhere = false
                failures.append("\(node): \(detail)")
            }
            guard next >= sources.count else {
                phase = .readingBack(entryID: entryID, sources: sources, next: next + 1, failures: failures, missingEverywhere: missingEverywhere)
                return [.readEntry(entryID: entryID, node: sources[next])]
            }
            guard missingEverywhere, lastListed - entryID < ReplicationLimits.recoveryReadBackEntries else {
                return fail(.io("ledger \(ledgerID): recovery cannot read entry \(entryID) back (\(failures.joined(separator: "; "))); retry once the storage nodes answer"))
            }
            return [.droppedPhantomEntry(entryID: entryID, nodes: sources)] + readBack(entryID - 1)
        case .readingForWriteBack(let current, let sources, let next, let targets) where current == entryID:
            if case .entry(let payload) = result {
                phase = .addingBack(entryID: entryID)
                return [.recoveryAdd(entryID: entryID, payload: payload, nodes: targets)]
            }
            guard next >= sources.count else {
                phase = .readingForWriteBack(entryID: entryID, sources: sources, next: next + 1, targets: targets)
                return [.readEntry(entryID: entryID, node: sources[next])]
            }
            return [.writeBackUnreadable(entryID: entryID)] + writeBack(from: entryID + 1)
        default:
            return []
        }
    }

    /// The recovery adds of `entryID` were answered: `accepted` of its targets took it.
    public mutating func recoveryAddsAnswered(entryID: Int64, accepted: Int) -> [Action] {
        guard case .addingBack(let current) = phase, current == entryID else { return [] }
        copies += accepted
        return writeBack(from: entryID + 1)
    }

    // MARK: - Steps

    private mutating func readBack(_ entryID: Int64) -> [Action] {
        guard entryID >= firstEntryID else {
            lastEntryID = firstEntryID - 1
            return writeBack(from: firstEntryID)
        }
        let sources = holders(of: entryID)
        guard let first = sources.first else {
            return fail(.io("ledger \(ledgerID): no storage node lists entry \(entryID); retry"))
        }
        phase = .readingBack(entryID: entryID, sources: sources, next: 1, failures: [], missingEverywhere: true)
        return [.readEntry(entryID: entryID, node: first)]
    }

    /// Writes back the first entry from `entryID` on that some fenced node of its write set lacks.
    private mutating func writeBack(from entryID: Int64) -> [Action] {
        var current = entryID
        while current <= lastEntryID {
            let targets = writeSetNodes(of: current).filter { held[$0].map { !$0.contains(current) } ?? false }
            let sources = holders(of: current)
            if !targets.isEmpty, let first = sources.first {
                phase = .readingForWriteBack(entryID: current, sources: sources, next: 1, targets: targets)
                return [.readEntry(entryID: current, node: first)]
            }
            if !targets.isEmpty {
                return [.writeBackUnreadable(entryID: current)] + writeBack(from: current + 1)
            }
            current += 1
        }
        phase = .done
        return [.finished(lastEntryID: lastEntryID, copies: copies)]
    }

    private func holders(of entryID: Int64) -> [Node] {
        held.filter { $0.value.contains(entryID) }.map(\.key).sorted()
    }

    private mutating func fail(_ error: LedgerStoreError) -> [Action] {
        phase = .done
        return [.failed(error)]
    }
}
