import Foundation
import LedgerStorage
import NIOCore
import TestSupport
import Testing

/// The contract of `LedgerStore`, run over every implementation.
@Suite("LedgerStore contract")
struct LedgerStoreTests {
    @Test(arguments: StoreKind.allCases)
    func appendAndReadRoundTripAcrossLedgers(kind: StoreKind) throws {
        let fixture = try StoreFixture(kind)
        defer { fixture.tearDown() }
        let store = fixture.store
        for entryID in Int64(0)..<20 {
            for ledgerID in Int64(1)...3 {
                let payload = makePayload(ledgerID: ledgerID, entryID: entryID, size: Int(entryID * 37 % 500))
                #expect(appendAndWait(store, ledgerID: ledgerID, entryID: entryID, payload: payload) == nil)
            }
        }
        #expect(store.ledgerIDs() == [1, 2, 3])
        for ledgerID in Int64(1)...3 {
            #expect(store.lastAddConfirmed(ledgerID: ledgerID) == 19)
            for entryID in Int64(0)..<20 {
                let expected = makePayload(ledgerID: ledgerID, entryID: entryID, size: Int(entryID * 37 % 500))
                #expect(try store.read(ledgerID: ledgerID, entryID: entryID) == expected)
            }
        }
    }

    /// A range read answers what single reads answer, entry by entry: over a batch written end to
    /// end (one span), entries of ledgers interleaved in the entry log, entry logs that rolled in
    /// between, after a reopen (from the disk), and past the last entry (those fail alone).
    @Test(arguments: StoreKind.allCases)
    func readRangeAnswersWhatSingleReadsAnswer(kind: StoreKind) throws {
        let fixture = try StoreFixture(kind) { configuration in
            configuration.entryLogMaxBytes = 4 * 1024
        }
        defer { fixture.tearDown() }
        func payload(_ ledgerID: Int64, _ entryID: Int64) -> ByteBuffer {
            makePayload(ledgerID: ledgerID, entryID: entryID, size: Int(entryID * 53 % 300))
        }
        let done = DispatchSemaphore(value: 0)
        fixture.store.appendBatch(ledgerID: 1, firstEntryID: 0, payloads: (0..<60).map { payload(1, $0) }) { result in
            #expect((try? result.get()) != nil)
            done.signal()
        }
        done.wait()
        for entryID in Int64(60)..<80 {
            #expect(appendAndWait(fixture.store, ledgerID: 1, entryID: entryID, payload: payload(1, entryID)) == nil)
            #expect(appendAndWait(fixture.store, ledgerID: 2, entryID: entryID - 60, payload: payload(2, entryID - 60)) == nil)
        }
        for round in 0..<2 {
            if round == 1 { try fixture.reopen() }
            let store = fixture.store
            let results = store.readRange(ledgerID: 1, firstEntryID: 0, lastEntryID: 81)
            #expect(results.count == 82)
            for entryID in Int64(0)..<80 {
                #expect(try results[Int(entryID)].get() == payload(1, entryID))
            }
            #expect(results[80] == .failure(.entryNotFound(ledgerID: 1, entryID: 80)))
            #expect(results[81] == .failure(.entryNotFound(ledgerID: 1, entryID: 81)))
            let middle = store.readRange(ledgerID: 2, firstEntryID: 5, lastEntryID: 9)
            #expect(middle.map { try? $0.get() } == (Int64(5)...9).map { payload(2, $0) })
            #expect(store.readRange(ledgerID: 3, firstEntryID: 0, lastEntryID: 0) == [.failure(.ledgerNotFound(ledgerID: 3))])
            #expect(store.readRange(ledgerID: 1, firstEntryID: 4, lastEntryID: 3).isEmpty)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func appendBatchIsAppendInOrderWithOneCompletion(kind: StoreKind) throws {
        let fixture = try StoreFixture(kind)
        defer { fixture.tearDown() }
        let store = fixture.store
        func appendBatch(ledgerID: Int64, first: Int64, count: Int) -> LedgerStoreError? {
            let results = Collected<Result<Void, LedgerStoreError>>()
            let done = DispatchSemaphore(value: 0)
            let payloads = (0..<count).map { makePayload(ledgerID: ledgerID, entryID: first + Int64($0), size: 20 + $0) }
            store.appendBatch(ledgerID: ledgerID, firstEntryID: first, payloads: payloads) { result in
                results.append(result)
                done.signal()
            }
            done.wait()
            // One completion, even when every entry of the batch is refused.
            #expect(results.values.count == 1)
            if case .failure(let error) = results.values[0] { return error }
            return nil
        }
        #expect(appendBatch(ledgerID: 3, first: 0, count: 50) == nil)
        #expect(store.lastAddConfirmed(ledgerID: 3) == 49)
        #expect(appendAndWait(store, ledgerID: 3, entryID: 50, payload: makePayload(ledgerID: 3, entryID: 50, size: 1)) == nil)
        #expect(appendBatch(ledgerID: 3, first: 51, count: 3) == nil)
        for entryID in Int64(0)..<50 {
            #expect(try store.read(ledgerID: 3, entryID: entryID) == makePayload(ledgerID: 3, entryID: entryID, size: 20 + Int(entryID)))
        }
        #expect(try store.read(ledgerID: 3, entryID: 53) == makePayload(ledgerID: 3, entryID: 53, size: 22))
        // A batch that does not continue the ledger is refused as a whole, with one completion.
        #expect(appendBatch(ledgerID: 3, first: 60, count: 4) == .outOfOrder(ledgerID: 3, expected: 54, got: 60))
        #expect(store.lastAddConfirmed(ledgerID: 3) == 53)
        _ = try store.fence(ledgerID: 3)
        #expect(appendBatch(ledgerID: 3, first: 54, count: 2) == .fenced(ledgerID: 3))
    }

    @Test(arguments: StoreKind.allCases)
    func outOfOrderAppendsAreRefused(kind: StoreKind) throws {
        let fixture = try StoreFixture(kind)
        defer { fixture.tearDown() }
        let store = fixture.store
        let payload = makePayload(ledgerID: 7, entryID: 0, size: 10)
        // A ledger must start at entry 0, and is not created by a refused append.
        #expect(appendAndWait(store, ledgerID: 7, entryID: 1, payload: payload) == .outOfOrder(ledgerID: 7, expected: 0, got: 1))
        #expect(store.lastAddConfirmed(ledgerID: 7) == nil)
        #expect(store.ledgerIDs().isEmpty)
        #expect(appendAndWait(store, ledgerID: 7, entryID: 0, payload: payload) == nil)
        #expect(appendAndWait(store, ledgerID: 7, entryID: 2, payload: payload) == .outOfOrder(ledgerID: 7, expected: 1, got: 2))
        #expect(appendAndWait(store, ledgerID: 7, entryID: 0, payload: payload) == .outOfOrder(ledgerID: 7, expected: 1, got: 0))
        #expect(appendAndWait(store, ledgerID: 7, entryID: 1, payload: payload) == nil)
        #expect(store.lastAddConfirmed(ledgerID: 7) == 1)
    }

    @Test(arguments: StoreKind.allCases)
    func lastAddConfirmedFollowsDurableAppends(kind: StoreKind) throws {
        let fixture = try StoreFixture(kind)
        defer { fixture.tearDown() }
        let store = fixture.store
        #expect(store.lastAddConfirmed(ledgerID: 1) == nil)
        for entryID in Int64(0)..<5 {
            appendAndWait(store, ledgerID: 1, entryID: entryID, payload: makePayload(ledgerID: 1, entryID: entryID, size: 8))
            #expect(store.lastAddConfirmed(ledgerID: 1) == entryID)
        }
        // A fenced, never-written ledger exists with no entry.
        #expect(try store.fence(ledgerID: 2) == -1)
        #expect(store.lastAddConfirmed(ledgerID: 2) == -1)
    }

    @Test(arguments: StoreKind.allCases)
    func fenceRefusesLaterAppends(kind: StoreKind) throws {
        let fixture = try StoreFixture(kind)
        defer { fixture.tearDown() }
        let store = fixture.store
        for entryID in Int64(0)..<3 {
            appendAndWait(store, ledgerID: 5, entryID: entryID, payload: makePayload(ledgerID: 5, entryID: entryID, size: 64))
        }
        #expect(try store.fence(ledgerID: 5) == 2)
        #expect(appendAndWait(store, ledgerID: 5, entryID: 3, payload: makePayload(ledgerID: 5, entryID: 3, size: 64)) == .fenced(ledgerID: 5))
        // Fencing again is harmless and reports the same LastAddConfirmed.
        #expect(try store.fence(ledgerID: 5) == 2)
        #expect(store.lastAddConfirmed(ledgerID: 5) == 2)
        #expect(try store.read(ledgerID: 5, entryID: 2) == makePayload(ledgerID: 5, entryID: 2, size: 64))
        // Fencing an unknown ledger shuts out a writer that has not started yet.
        #expect(try store.fence(ledgerID: 6) == -1)
        #expect(appendAndWait(store, ledgerID: 6, entryID: 0, payload: makePayload(ledgerID: 6, entryID: 0, size: 1)) == .fenced(ledgerID: 6))
        #expect(store.ledgerIDs() == [5, 6])
    }

    @Test(arguments: StoreKind.allCases)
    func recoveryAddsAreAcceptedAfterTheFence(kind: StoreKind) throws {
        let fixture = try StoreFixture(kind)
        defer { fixture.tearDown() }
        let store = fixture.store
        appendAndWait(store, ledgerID: 5, entryID: 0, payload: makePayload(ledgerID: 5, entryID: 0, size: 64))
        #expect(try store.fence(ledgerID: 5) == 0)
        #expect(try store.fence(ledgerID: 6) == -1)
        // A storage node writing back recovered entries: same entry-id rule, fence ignored.
        #expect(appendAndWait(store, ledgerID: 5, entryID: 1, payload: makePayload(ledgerID: 5, entryID: 1, size: 64), recovery: true) == nil)
        #expect(appendAndWait(store, ledgerID: 5, entryID: 3, payload: makePayload(ledgerID: 5, entryID: 3, size: 64), recovery: true)
            == .outOfOrder(ledgerID: 5, expected: 2, got: 3))
        #expect(appendAndWait(store, ledgerID: 6, entryID: 0, payload: makePayload(ledgerID: 6, entryID: 0, size: 8), recovery: true) == nil)
        // Ordinary appends stay refused.
        #expect(appendAndWait(store, ledgerID: 5, entryID: 2, payload: makePayload(ledgerID: 5, entryID: 2, size: 64)) == .fenced(ledgerID: 5))
        try fixture.reopen()
        let reopened = fixture.store
        #expect(reopened.lastAddConfirmed(ledgerID: 5) == 1)
        #expect(try reopened.read(ledgerID: 5, entryID: 1) == makePayload(ledgerID: 5, entryID: 1, size: 64))
        #expect(try reopened.read(ledgerID: 6, entryID: 0) == makePayload(ledgerID: 6, entryID: 0, size: 8))
        #expect(appendAndWait(reopened, ledgerID: 6, entryID: 1, payload: makePayload(ledgerID: 6, entryID: 1, size: 8)) == .fenced(ledgerID: 6))
    }

    @Test(arguments: StoreKind.allCases)
    func deleteLedgerForgetsIt(kind: StoreKind) throws {
        let fixture = try StoreFixture(kind)
        defer { fixture.tearDown() }
        let store = fixture.store
        for ledgerID in Int64(1)...2 {
            for entryID in Int64(0)..<4 {
                appendAndWait(store, ledgerID: ledgerID, entryID: entryID, payload: makePayload(ledgerID: ledgerID, entryID: entryID, size: 100))
            }
        }
        try store.deleteLedger(ledgerID: 1)
        #expect(store.ledgerIDs() == [2])
        #expect(store.lastAddConfirmed(ledgerID: 1) == nil)
        #expect(readError(store, ledgerID: 1, entryID: 0) == .ledgerNotFound(ledgerID: 1))
        #expect(throws: LedgerStoreError.ledgerNotFound(ledgerID: 1)) { try store.deleteLedger(ledgerID: 1) }
        #expect(throws: LedgerStoreError.ledgerNotFound(ledgerID: 99)) { try store.deleteLedger(ledgerID: 99) }
        #expect(try store.read(ledgerID: 2, entryID: 3) == makePayload(ledgerID: 2, entryID: 3, size: 100))
        // The id can be used again, from entry 0.
        #expect(appendAndWait(store, ledgerID: 1, entryID: 0, payload: makePayload(ledgerID: 1, entryID: 100, size: 3)) == nil)
        #expect(try store.read(ledgerID: 1, entryID: 0) == makePayload(ledgerID: 1, entryID: 100, size: 3))
    }

    @Test(arguments: StoreKind.allCases)
    func readsOfMissingEntriesFail(kind: StoreKind) throws {
        let fixture = try StoreFixture(kind)
        defer { fixture.tearDown() }
        let store = fixture.store
        appendAndWait(store, ledgerID: 3, entryID: 0, payload: makePayload(ledgerID: 3, entryID: 0, size: 0))
        #expect(try store.read(ledgerID: 3, entryID: 0).readableBytes == 0)
        #expect(readError(store, ledgerID: 3, entryID: 1) == .entryNotFound(ledgerID: 3, entryID: 1))
        #expect(readError(store, ledgerID: 3, entryID: -1) == .entryNotFound(ledgerID: 3, entryID: -1))
        #expect(readError(store, ledgerID: 4, entryID: 0) == .ledgerNotFound(ledgerID: 4))
    }

    @Test(arguments: StoreKind.allCases)
    func completionsRunInAppendOrder(kind: StoreKind) throws {
        let fixture = try StoreFixture(kind)
        defer { fixture.tearDown() }
        let store = fixture.store
        let completed = Collected<(Int64, Int64)>()
        let group = DispatchGroup()
        for entryID in Int64(0)..<200 {
            for ledgerID in Int64(1)...4 {
                group.enter()
                store.append(ledgerID: ledgerID, entryID: entryID, payload: makePayload(ledgerID: ledgerID, entryID: entryID, size: 50)) { result in
                    if case .success = result {
                        completed.append((ledgerID, entryID))
                    }
                    group.leave()
                }
            }
        }
        // A refused append in the middle completes in its place too.
        group.enter()
        store.append(ledgerID: 1, entryID: 500, payload: makePayload(ledgerID: 1, entryID: 500, size: 1)) { result in
            completed.append((1, errorOf(result) == .outOfOrder(ledgerID: 1, expected: 200, got: 500) ? 200 : -1))
            group.leave()
        }
        group.wait()
        for ledgerID in Int64(1)...4 {
            let order = completed.values.filter { $0.0 == ledgerID }.map(\.1)
            #expect(order == Array(0..<(ledgerID == 1 ? 201 : 200)))
            #expect(store.lastAddConfirmed(ledgerID: ledgerID) == 199)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func manyConcurrentAppendsAreAllDurable(kind: StoreKind) throws {
        let fixture = try StoreFixture(kind)
        defer { fixture.tearDown() }
        let store = fixture.store
        let failures = Collected<LedgerStoreError>()
        let group = DispatchGroup()
        let writers = 8
        let entriesPerWriter: Int64 = 250
        DispatchQueue.concurrentPerform(iterations: writers) { writer in
            let ledgerID = Int64(100 + writer)
            for entryID in Int64(0)..<entriesPerWriter {
                group.enter()
                store.append(ledgerID: ledgerID, entryID: entryID, payload: makePayload(ledgerID: ledgerID, entryID: entryID, size: 200)) { result in
                    if case .failure(let error) = result {
                        failures.append(error)
                    }
                    group.leave()
                }
            }
        }
        group.wait()
        #expect(failures.values.isEmpty)
        for writer in 0..<writers {
            let ledgerID = Int64(100 + writer)
            #expect(store.lastAddConfirmed(ledgerID: ledgerID) == entriesPerWriter - 1)
            for entryID in stride(from: Int64(0), to: entriesPerWriter, by: 17) {
                #expect(try store.read(ledgerID: ledgerID, entryID: entryID) == makePayload(ledgerID: ledgerID, entryID: entryID, size: 200))
            }
        }
        if kind == .file {
            try fixture.reopen()
            for writer in 0..<writers {
                #expect(fixture.store.lastAddConfirmed(ledgerID: Int64(100 + writer)) == entriesPerWriter - 1)
            }
        }
    }

    @Test(arguments: StoreKind.allCases)
    func closedStoreRefusesEverything(kind: StoreKind) throws {
        let fixture = try StoreFixture(kind)
        defer { fixture.tearDown() }
        let store = fixture.store
        appendAndWait(store, ledgerID: 1, entryID: 0, payload: makePayload(ledgerID: 1, entryID: 0, size: 4))
        store.close()
        store.close()
        #expect(appendAndWait(store, ledgerID: 1, entryID: 1, payload: makePayload(ledgerID: 1, entryID: 1, size: 4)) == .closed)
        #expect(readError(store, ledgerID: 1, entryID: 0) == .closed)
        #expect(throws: LedgerStoreError.closed) { try store.fence(ledgerID: 1) }
        #expect(throws: LedgerStoreError.closed) { try store.deleteLedger(ledgerID: 1) }
    }

    @Test(arguments: StoreKind.allCases, [UInt64(1), 42, 20_250_101])
    func randomOperationsMatchTheModel(kind: StoreKind, seed: UInt64) throws {
        let fixture = try StoreFixture(kind) { configuration in
            // Small files, so the run rolls entry logs and journals and writes checkpoints.
            configuration.entryLogMaxBytes = 4 * 1024
            configuration.journalMaxBytes = 8 * 1024
            configuration.groupCommitMaxDelay = .zero
        }
        defer { fixture.tearDown() }
        var random = SplitMix64(seed: seed)
        struct ModelLedger {
            var sizes: [Int] = []
            var fenced = false
        }
        var model: [Int64: ModelLedger] = [:]
        // Entry payloads depend on (ledger, entry, generation) so a re-created ledger differs.
        var generation: [Int64: Int64] = [:]
        func payload(_ ledgerID: Int64, _ entryID: Int64, _ size: Int) -> ByteBuffer {
            makePayload(ledgerID: ledgerID &* 1000 &+ (generation[ledgerID] ?? 0), entryID: entryID, size: size)
        }
        func verifyAll(_ step: Int) throws {
            let store = fixture.store
            #expect(store.ledgerIDs() == model.keys.sorted(), "seed \(seed) step \(step)")
            for (ledgerID, ledger) in model {
                #expect(store.lastAddConfirmed(ledgerID: ledgerID) == Int64(ledger.sizes.count) - 1, "seed \(seed) step \(step) ledger \(ledgerID)")
                for (entryID, size) in ledger.sizes.enumerated() {
                    #expect(try store.read(ledgerID: ledgerID, entryID: Int64(entryID)) == payload(ledgerID, Int64(entryID), size), "seed \(seed) step \(step)")
                }
            }
        }
        for step in 0..<400 {
            let store = fixture.store
            let ledgerID = Int64.random(in: 1...6, using: &random)
            let roll = Int.random(in: 0..<100, using: &random)
            switch roll {
            case 0..<55:
                // A burst of appends in flight together, then their completions.
                let burst = Int.random(in: 1...8, using: &random)
                let results = Collected<LedgerStoreError?>()
                let group = DispatchGroup()
                var expected: [LedgerStoreError?] = []
                var ledger = model[ledgerID]
                for _ in 0..<burst {
                    let entryID = Int64(ledger?.sizes.count ?? 0)
                    let size = Int.random(in: 0...300, using: &random)
                    if ledger?.fenced == true {
                        expected.append(.fenced(ledgerID: ledgerID))
                    } else {
                        expected.append(nil)
                        if ledger == nil { ledger = ModelLedger() }
                        ledger!.sizes.append(size)
                    }
                    group.enter()
                    store.append(ledgerID: ledgerID, entryID: entryID, payload: payload(ledgerID, entryID, size)) { result in
                        results.append(errorOf(result))
                        group.leave()
                    }
                }
                group.wait()
                model[ledgerID] = ledger
                #expect(results.values == expected, "seed \(seed) step \(step)")
            case 55..<62:
                let next = Int64(model[ledgerID]?.sizes.count ?? 0)
                let wrong = next + Int64.random(in: 1...3, using: &random) * (Bool.random(using: &random) ? 1 : -1)
                let result = appendAndWait(store, ledgerID: ledgerID, entryID: wrong, payload: payload(ledgerID, wrong, 5))
                if model[ledgerID]?.fenced == true {
                    #expect(result == .fenced(ledgerID: ledgerID), "seed \(seed) step \(step)")
                } else {
                    #expect(result == .outOfOrder(ledgerID: ledgerID, expected: next, got: wrong), "seed \(seed) step \(step)")
                }
            case 62..<68:
                let lastAddConfirmed = try store.fence(ledgerID: ledgerID)
                #expect(lastAddConfirmed == Int64(model[ledgerID]?.sizes.count ?? 0) - 1, "seed \(seed) step \(step)")
                model[ledgerID, default: ModelLedger()].fenced = true
            case 68..<74:
                if model[ledgerID] != nil {
                    try store.deleteLedger(ledgerID: ledgerID)
                    model[ledgerID] = nil
                    generation[ledgerID, default: 0] += 1
                } else {
                    #expect(throws: LedgerStoreError.ledgerNotFound(ledgerID: ledgerID)) { try store.deleteLedger(ledgerID: ledgerID) }
                }
            case 74..<94:
                if let ledger = model[ledgerID], !ledger.sizes.isEmpty {
                    let entryID = Int.random(in: 0..<ledger.sizes.count, using: &random)
                    #expect(try store.read(ledgerID: ledgerID, entryID: Int64(entryID)) == payload(ledgerID, Int64(entryID), ledger.sizes[entryID]), "seed \(seed) step \(step)")
                } else if model[ledgerID] == nil {
                    #expect(readError(store, ledgerID: ledgerID, entryID: 0) == .ledgerNotFound(ledgerID: ledgerID), "seed \(seed) step \(step)")
                }
            case 94..<97:
                #expect(store.lastAddConfirmed(ledgerID: ledgerID) == model[ledgerID].map { Int64($0.sizes.count) - 1 }, "seed \(seed) step \(step)")
            default:
                try fixture.reopen()
                try verifyAll(step)
            }
        }
        try fixture.reopen()
        try verifyAll(-1)
    }
}
