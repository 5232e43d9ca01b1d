import LedgerStorage
import NIOCore
import TestSupport
import Testing
@testable import Replication

/// A seeded simulation: storage nodes (`StorageNode` over `InMemoryLedgerStore`) behind a network
/// that delivers messages in random order and loses some, one writer (`LedgerWriteQuorum`)
/// appending entries, nodes crashing for good (losing their data) or being cut off (a lost
/// message: the writer replaces them), and a second writer recovering the ledger midway with the
/// real recovery (`LedgerRecovery`, what `ReplicatedLedgerClient.recoverLedger` drives): its fences,
/// listings, reads and recovery adds travel the same network, interleaved with the first writer's
/// adds and as lossy; a recovery that fails (too few answers) starts over, as a topic load retries.
/// Ensemble changes are answered later, as a message through the network (the metadata
/// compare-and-set): once a recovery has started, the change is refused and the writer stops.
///
/// Invariants: confirmations come in entry order; every confirmed entry is readable, with its
/// payload, from a surviving node of its write set; nothing appended after the fence is
/// confirmed, and nothing beyond the recovered last entry ever is; after recovery every entry of
/// the recovered tail is on every surviving node of its write set; a read-forward recovery covers
/// every confirmed entry.
@Suite struct ReplicationSimulationTests {
    enum Message {
        case write(entryID: Int64, node: Int, payload: ByteBuffer)
        case answer(entryID: Int64, node: Int, result: LedgerWriteQuorum<Int>.WriteResult)
        /// The metadata store's answer to an ensemble change of this index.
        case ensembleChangeRecorded(index: Int)
        /// A request of the recovering writer, answered straight back to it when delivered.
        case recovery(LedgerRecovery<Int>.Action)
    }

    final class Inbox: @unchecked Sendable {
        var answers: [(Int64, Int, LedgerWriteQuorum<Int>.WriteResult)] = []
    }

    static let ledgerID: Int64 = 5

    static func run(seed: UInt64, configuration: QuorumConfiguration) -> String? {
        var rng = SplitMix64(seed: seed)
        let nodeCount = configuration.ensembleSize + 5
        var nodes = (0..<nodeCount).map { _ in try! StorageNode(store: InMemoryLedgerStore()) }
        var crashed: Set<Int> = []
        var everInEnsemble: Set<Int> = Set(0..<configuration.ensembleSize)
        var writer = LedgerWriteQuorum<Int>(ledgerID: ledgerID, configuration: configuration, ensemble: Array(0..<configuration.ensembleSize))
        var network: [Message] = []
        var confirmed: [Int64] = []
        var failed: Set<Int64> = []
        var payloads: [Int64: ByteBuffer] = [:]
        var recovery: LedgerRecovery<Int>?  // the second writer's, once it started
        var recoveryAttempts = 0
        var unreadableForWriteBack: Set<Int64> = []  // the recovery could not copy them (left to the auditor)
        var recovered: (firstEntryID: Int64, lastEntryID: Int64)?  // the tail the second writer recovered
        let entryCount: Int64 = 40
        let maxCrashes = configuration.ackQuorumSize - 1
        let inbox = Inbox()

        func handle(_ actions: [LedgerWriteQuorum<Int>.Action]) -> String? {
            var queue = actions
            while !queue.isEmpty {
                let action = queue.removeFirst()
                switch action {
                case .sendEntry(let entryID, let payload, let node):
                    network.append(.write(entryID: entryID, node: node, payload: payload))
                case .replaceNode(let index, _):
                    // Recorded in metadata later (a message), as the store's compare-and-set is.
                    network.append(.ensembleChangeRecorded(index: index))
                case .confirmEntries(let from, let through):
                    for entryID in from...through {
                        guard entryID == (confirmed.last ?? -1) + 1 else { return "confirmed \(entryID) out of order after \(confirmed.last ?? -1)" }
                        if let recovered, entryID > recovered.lastEntryID { return "entry \(entryID) confirmed beyond the recovered end \(recovered.lastEntryID)" }
                        confirmed.append(entryID)
                    }
                case .failEntries(let entryIDs, _):
                    failed.formUnion(entryIDs)
                }
            }
            return nil
        }

        /// Sends the recovery's requests through the network; records its outcome.
        func driveRecovery(_ actions: [LedgerRecovery<Int>.Action]) -> String? {
            for action in actions {
                switch action {
                case .fence, .listEntries, .readEntry, .recoveryAdd:
                    network.append(.recovery(action))
                case .droppedPhantomEntry:
                    break
                case .writeBackUnreadable(let entryID):
                    unreadableForWriteBack.insert(entryID)
                case .finished(let lastEntryID, _):
                    recovered = (recovery!.firstEntryID, lastEntryID)
                case .failed(let error):
                    recoveryAttempts += 1
                    unreadableForWriteBack = []
                    guard recoveryAttempts < 20 else { return "recovery failed \(recoveryAttempts) times, last: \(error)" }
                    var again = LedgerRecovery<Int>(
                        ledgerID: ledgerID, ensemble: recovery!.ensemble, firstEntryID: recovery!.firstEntryID,
                        configuration: configuration)
                    let first = again.start()
                    recovery = again
                    if let error = driveRecovery(first) { return error }
                }
            }
            return nil
        }

        /// Delivers one recovery request to its node (or loses it) and hands the answer back.
        func deliver(_ action: LedgerRecovery<Int>.Action, lost: Bool) -> [LedgerRecovery<Int>.Action] {
            switch action {
            case .fence(let node):
                let fenced = !lost && !crashed.contains(node) && (try? nodes[node].fence(ledgerID: ledgerID)) != nil
                return recovery!.fenceAnswered(node: node, fenced: fenced)
            case .listEntries(let node, let fromEntryID):
                let ids = lost || crashed.contains(node) ? nil : nodes[node].entryIDs(ledgerID: ledgerID, from: fromEntryID, limit: 1_000)
                return recovery!.listed(node: node, entryIDs: ids)
            case .readEntry(let entryID, let node):
                let result: LedgerRecovery<Int>.ReadResult
                if lost || crashed.contains(node) {
                    result = .failed("no answer")
                } else {
                    do {
                        result = .entry(try nodes[node].readEntry(ledgerID: ledgerID, entryID: entryID))
                    } catch .entryNotFound, .ledgerNotFound {
                        result = .notFound
                    } catch .corrupted {
                        result = .corrupted
                    } catch {
                        result = .failed("\(error)")
                    }
                }
                return recovery!.readAnswered(entryID: entryID, node: node, result)
            case .recoveryAdd(let entryID, let payload, let targets):
                let accepted = Inbox()
                for node in targets where !crashed.contains(node) {
                    // The in-memory store completes inside the call.
                    nodes[node].addEntry(ledgerID: ledgerID, entryID: entryID, payload: payload, recovery: true) { result in
                        if case .success = result { accepted.answers.append((entryID, node, .ok)) }
                    }
                }
                return recovery!.recoveryAddsAnswered(entryID: entryID, accepted: accepted.answers.count)
            default:
                return []
            }
        }

        var nextEntry: Int64 = 0
        var steps = 0
        while (nextEntry < entryCount || !network.isEmpty), steps < 10_000 {
            steps += 1
            let roll = Int.random(in: 0..<100, using: &rng)
            if nextEntry < entryCount, roll < 25 || network.isEmpty {
                var payload = ByteBuffer()
                payload.writeString("entry-\(nextEntry)-\(seed)")
                payloads[nextEntry] = payload
                if let error = handle(writer.addEntry(entryID: nextEntry, payload: payload)) { return error }
                nextEntry += 1
                continue
            }
            if roll == 25, crashed.count < maxCrashes, recovery == nil || recovered != nil {
                // (Not while a recovery runs: a node that loses its disk then takes entries the
                // recovery listed with it, and only the auditor could bring them back.)
                let victim = writer.ensemble.randomElement(using: &rng)!
                crashed.insert(victim)
                nodes[victim] = try! StorageNode(store: InMemoryLedgerStore()) // its disk is gone
                continue
            }
            if roll == 26, recovery == nil, nextEntry > 10 {
                // A second writer recovers the ledger's last segment (the writer's ensemble is the
                // metadata's: a change reaches the writer only once recorded).
                var started = LedgerRecovery<Int>(
                    ledgerID: ledgerID, ensemble: writer.ensemble, firstEntryID: writer.ensembleHistory.last!.firstEntryID,
                    configuration: configuration)
                let first = started.start()
                recovery = started
                if let error = driveRecovery(first) { return error }
                continue
            }
            guard !network.isEmpty else { continue }
            let message = network.remove(at: Int.random(in: 0..<network.count, using: &rng))
            let lost = Int.random(in: 0..<100, using: &rng) < 3
            switch message {
            case .write(let entryID, let node, let payload):
                if crashed.contains(node) || lost {
                    network.append(.answer(entryID: entryID, node: node, result: .failed))
                    continue
                }
                nodes[node].addEntry(ledgerID: ledgerID, entryID: entryID, payload: payload) { result in
                    let answer: LedgerWriteQuorum<Int>.WriteResult
                    switch result {
                    case .success: answer = .ok
                    case .failure(.fenced): answer = .fenced
                    case .failure: answer = .failed
                    }
                    inbox.answers.append((entryID, node, answer))
                }
                for (entryID, node, answer) in inbox.answers {
                    // A lost answer looks like a failure to the writer; the node keeps the entry.
                    network.append(.answer(entryID: entryID, node: node, result: lost ? .failed : answer))
                }
                inbox.answers.removeAll()
            case .answer(let entryID, let node, let result):
                if let error = handle(writer.writeCompleted(entryID: entryID, node: node, result: lost ? .failed : result)) { return error }
            case .recovery(let action):
                let answers = deliver(action, lost: lost)
                if let error = driveRecovery(answers) { return error }
            case .ensembleChangeRecorded(let index):
                let actions: [LedgerWriteQuorum<Int>.Action]
                if recovery != nil {
                    // The recovering writer closed the ledger's metadata: the compare-and-set fails.
                    actions = writer.stop(.fenced(ledgerID: ledgerID))
                } else if let spare = (0..<nodeCount).filter({ !crashed.contains($0) && !everInEnsemble.contains($0) }).randomElement(using: &rng) {
                    everInEnsemble.insert(spare)
                    actions = writer.nodeReplaced(ensembleIndex: index, with: spare)
                } else {
                    actions = writer.replacementUnavailable(ensembleIndex: index)
                }
                if let error = handle(actions) { return error }
            }
        }
        guard network.isEmpty else { return "network did not drain" }
        if recovery != nil, recovered == nil { return "the recovery never finished" }
        let pending = writer.pendingEntryIDs
        if writer.state == .writing, !pending.isEmpty { return "entries \(pending) neither confirmed nor failed" }

        // Nothing acknowledged is lost.
        for entryID in confirmed {
            let holders = writer.writeSetNodes(of: entryID).filter { !crashed.contains($0) }
            let readable = holders.contains { (try? nodes[$0].readEntry(ledgerID: ledgerID, entryID: entryID)) == payloads[entryID] }
            if !readable { return "confirmed entry \(entryID) is not readable from \(holders)" }
        }
        // The recovered tail was written back to every surviving node of each entry's write set
        // that the recovery heard from (the others are the auditor's to repair).
        if let recovered, let recovery, recovered.lastEntryID >= recovered.firstEntryID {
            let listed = Set(recovery.listedNodes)
            for entryID in recovered.firstEntryID...recovered.lastEntryID where !unreadableForWriteBack.contains(entryID) {
                for node in writer.writeSetNodes(of: entryID) where !crashed.contains(node) && listed.contains(node) {
                    if (try? nodes[node].readEntry(ledgerID: ledgerID, entryID: entryID)) == nil {
                        return "recovered entry \(entryID) was not written back to node \(node)"
                    }
                }
            }
        }
        if let recovered, let last = confirmed.last, last > recovered.lastEntryID {
            return "confirmed \(last) is beyond the recovered end \(recovered.lastEntryID)"
        }
        // Recovery (read forward over every surviving node) covers every confirmed entry.
        var readForward: Int64 = -1
        while (0..<nodeCount).contains(where: { !crashed.contains($0) && (try? nodes[$0].readEntry(ledgerID: ledgerID, entryID: readForward + 1)) != nil }) {
            readForward += 1
        }
        if let last = confirmed.last, readForward < last { return "recovered LAC \(readForward) < confirmed \(last)" }
        // A fenced ledger refuses writes.
        // (The recovery fenced the nodes that answered it; the others are fenced now.)
        for node in writer.ensemble where !crashed.contains(node) { _ = try? nodes[node].fence(ledgerID: ledgerID) }
        for node in writer.ensemble where !crashed.contains(node) {
            nodes[node].addEntry(ledgerID: ledgerID, entryID: 1_000, payload: ByteBuffer(string: "zombie")) { result in
                inbox.answers.append((1_000, node, { if case .failure(.fenced) = result { return .fenced } else { return .ok } }()))
            }
            let refused = inbox.answers.popLast()?.2 == .fenced
            if !refused { return "fenced node \(node) accepted a write" }
        }
        return nil
    }

    @Test(arguments: [
        QuorumConfiguration(ensembleSize: 3, writeQuorumSize: 3, ackQuorumSize: 2),
        QuorumConfiguration(ensembleSize: 5, writeQuorumSize: 3, ackQuorumSize: 2),
        QuorumConfiguration(ensembleSize: 3, writeQuorumSize: 2, ackQuorumSize: 2),
    ])
    func nothingAcknowledgedIsLost(configuration: QuorumConfiguration) {
        for seed in UInt64(1)...200 {
            if let failure = Self.run(seed: seed, configuration: configuration) {
                Issue.record("seed \(seed) (\(configuration)): \(failure)")
                return
            }
        }
    }
}
