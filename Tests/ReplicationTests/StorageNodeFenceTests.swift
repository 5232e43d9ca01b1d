import LedgerStorage
import NIOConcurrencyHelpers
import NIOCore
import Replication
import TestSupport
import Testing

/// A store whose append completions wait for `release()`, as a file store's completions wait for
/// its journal thread (the in-memory store completes inside `append`, which hides the window).
private final class HeldCompletionStore: ForwardingLedgerStore, @unchecked Sendable {
    let holding = NIOLockedValueBox(false)
    private let held = NIOLockedValueBox<[@Sendable () -> Void]>([])

    override func append(
        ledgerID: Int64, entryID: Int64, payload: ByteBuffer, recovery: Bool,
        completion: @escaping @Sendable (Result<Void, LedgerStoreError>) -> Void
    ) {
        let holding = self.holding
        let held = self.held
        inner.append(ledgerID: ledgerID, entryID: entryID, payload: payload, recovery: recovery) { result in
            if holding.withLockedValue({ $0 }) {
                held.withLockedValue { $0.append { completion(result) } }
            } else {
                completion(result)
            }
        }
    }

    func release() {
        holding.withLockedValue { $0 = false }
        for completion in held.withLockedValue({ held in defer { held.removeAll() }; return held }) { completion() }
    }
}

/// Issue 12 (found by the fault-history checker, seed 31337): a takeover's recovery closed a ledger
/// at an entry no storage node could serve, because a node listed an add that its store refused
/// for the fence only later.
@Suite struct StorageNodeFenceTests {
    private func add(_ node: StorageNode, _ ledgerID: Int64, _ entryID: Int64) -> NIOLockedValueBox<Result<Void, LedgerStoreError>?> {
        let outcome = NIOLockedValueBox<Result<Void, LedgerStoreError>?>(nil)
        node.addEntry(ledgerID: ledgerID, entryID: entryID, payload: ByteBuffer(string: "e\(entryID)")) { result in
            outcome.withLockedValue { $0 = result }
        }
        return outcome
    }

    @Test func anAddStillInFlightIsNotListed() throws {
        let store = HeldCompletionStore()
        let node = try StorageNode(store: store)
        for entryID in 0..<3 { _ = add(node, 7, Int64(entryID)) }
        // The store fenced (say by an earlier run of this node), the node's memory knows nothing of it.
        _ = try store.fence(ledgerID: 7)
        let restarted = try StorageNode(store: store)
        store.holding.withLockedValue { $0 = true }
        let late = add(restarted, 7, 3)
        #expect(restarted.entryIDs(ledgerID: 7, from: 0, limit: 100) == [0, 1, 2], "an add in flight was listed")
        store.release()
        guard case .failure(.fenced)? = late.withLockedValue({ $0 }) else {
            Issue.record("the late add was not refused as fenced: \(String(describing: late.withLockedValue { $0 }))")
            return
        }
        #expect(restarted.entryIDs(ledgerID: 7, from: 0, limit: 100) == [0, 1, 2])
        #expect(throws: LedgerStoreError.self) { try restarted.readEntry(ledgerID: 7, entryID: 3) }
    }

    @Test func anAddAfterTheNodeFencedIsRefusedAtOnce() throws {
        let store = HeldCompletionStore()
        let node = try StorageNode(store: store)
        for entryID in 0..<3 { _ = add(node, 8, Int64(entryID)) }
        #expect(try node.fence(ledgerID: 8) == 2)
        store.holding.withLockedValue { $0 = true }
        let late = add(node, 8, 3)
        guard case .failure(.fenced)? = late.withLockedValue({ $0 }) else {
            Issue.record("an add after the fence was not refused at once")
            return
        }
        #expect(node.entryIDs(ledgerID: 8, from: 0, limit: 100) == [0, 1, 2])
        store.release()
    }
}
