import LedgerStorage
import NIOCore
import TestSupport
import Testing
@testable import Replication

/// A seeded simulation: storage nodes (`StorageNode` over `InMemoryLedgerStore`) behind a network
/// that delivers messages in random order and loses some, one writer (`LedgerWriteQuorum`)
/// appending entries, nodes crashing for good (losing their data) or being cut off (a lost
/// message: the writer replaces them), and a second writer recovering the ledger midway as
/// `ReplicatedLedgerStore.recoverLedger` does (fence the current ensemble, list what the fenced
/// nodes hold from the last segment on, take the run of consecutive entries, write them back with
/// recovery adds, close the "metadata"). Ensemble changes are answered later, as a message through
/// the network (the metadata compare-and-set): once the ledger is closed by the recovery, the change
/// is refused and the writer stops.
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
        var fencedAtEntry: Int64?   // nextEntryID when the new owner fenced
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
                        if let fencedAtEntry, entryID >= fencedAtEntry { return "entry \(entryID) appended after the fence was confirmed" }
                        if let recovered, entryID > recovered.lastEntryID { return "entry \(entryID) confirmed beyond the recovered end \(recovered.lastEntryID)" }
                        confirmed.append(entryID)
                    }
                case .failEntries(let entryIDs, _):
                    failed.formUnion(entryIDs)
                }
            }
            return nil
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
            if roll == 25, crashed.count < maxCrashes {
                let victim = writer.ensemble.randomElement(using: &rng)!
                crashed.insert(victim)
                nodes[victim] = try! StorageNode(store: InMemoryLedgerStore()) // its disk is gone
                continue
            }
            if roll == 26, fencedAtEntry == nil, nextEntry > 10 {
                // A second writer recovers the ledger (the writer's ensemble is the metadata's: a
                // change reaches the writer only once recorded).
                fencedAtEntry = writer.nextEntryID
                let fenced = writer.ensemble.filter { !crashed.contains($0) && (try? nodes[$0].fence(ledgerID: ledgerID)) != nil }
                if fenced.count < configuration.ensembleSize - configuration.ackQuorumSize + 1 { return "only \(fenced.count) nodes could be fenced" }
                let firstEntryID = writer.ensembleHistory.last!.firstEntryID
                let held = fenced.map { Set(nodes[$0].entryIDs(ledgerID: ledgerID, from: firstEntryID, limit: 1_000) ?? []) }
                var last = firstEntryID - 1
                while held.contains(where: { $0.contains(last + 1) }) { last += 1 }
                if last >= firstEntryID {
                    for entryID in firstEntryID...last {
                        let source = fenced[held.firstIndex { $0.contains(entryID) }!]
                        let payload = try! nodes[source].readEntry(ledgerID: ledgerID, entryID: entryID)
                        for node in writer.writeSetNodes(of: entryID) where fenced.contains(node) {
                            nodes[node].addEntry(ledgerID: ledgerID, entryID: entryID, payload: payload, recovery: true) { result in
                                if case .failure(let error) = result { Issue.record("write-back of \(entryID) to \(node) failed: \(error)") }
                            }
                        }
                    }
                }
                recovered = (firstEntryID, last)
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
            case .ensembleChangeRecorded(let index):
                let actions: [LedgerWriteQuorum<Int>.Action]
                if fencedAtEntry != nil {
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
        let pending = writer.pendingEntryIDs
        if writer.state == .writing, !pending.isEmpty { return "entries \(pending) neither confirmed nor failed" }

        // Nothing acknowledged is lost.
        for entryID in confirmed {
            let holders = writer.writeSetNodes(of: entryID).filter { !crashed.contains($0) }
            let readable = holders.contains { (try? nodes[$0].readEntry(ledgerID: ledgerID, entryID: entryID)) == payloads[entryID] }
            if !readable { return "confirmed entry \(entryID) is not readable from \(holders)" }
        }
        // The recovered tail was written back to every surviving node of each entry's write set.
        if let recovered, recovered.lastEntryID >= recovered.firstEntryID {
            for entryID in recovered.firstEntryID...recovered.lastEntryID {
                for node in writer.writeSetNodes(of: entryID) where !crashed.contains(node) {
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
        if fencedAtEntry == nil {
            for node in writer.ensemble where !crashed.contains(node) { _ = try? nodes[node].fence(ledgerID: ledgerID) }
        }
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
