import Foundation
import LedgerStorage
import NIOCore
import Testing

/// What only the file store promises: surviving close, crashes, torn and corrupt records.
@Suite("FileLedgerStore durability")
struct FileLedgerStoreTests {
    /// Appends `count` entries to each ledger, synchronously.
    private func fill(_ store: any LedgerStore, ledgers: ClosedRange<Int64>, count: Int64, size: Int = 120) {
        for entryID in Int64(0)..<count {
            for ledgerID in ledgers {
                let result = appendAndWait(store, ledgerID: ledgerID, entryID: entryID, payload: makePayload(ledgerID: ledgerID, entryID: entryID, size: size))
                #expect(result == nil)
            }
        }
    }

    private func expectEntries(_ store: any LedgerStore, ledgerID: Int64, count: Int64, size: Int = 120) throws {
        #expect(store.lastAddConfirmed(ledgerID: ledgerID) == count - 1)
        for entryID in Int64(0)..<count {
            #expect(try store.read(ledgerID: ledgerID, entryID: entryID) == makePayload(ledgerID: ledgerID, entryID: entryID, size: size))
        }
        #expect(readError(store, ledgerID: ledgerID, entryID: count) == .entryNotFound(ledgerID: ledgerID, entryID: count))
    }

    /// Copies the directory of a live store, as a crash would leave it. The journal thread is idle
    /// (every completion ran and no journal roll is due), so the copy is a state a crash can produce.
    private func crashCopy(of directory: String) throws -> String {
        let copy = StoreFixture.makeTemporaryDirectory()
        try FileManager.default.removeItem(atPath: copy)
        try FileManager.default.copyItem(atPath: directory, toPath: copy)
        return copy
    }

    private func open(_ directory: String) throws -> FileLedgerStore {
        var configuration = FileLedgerStoreConfiguration(directory: directory)
        configuration.groupCommitMaxDelay = .microseconds(200)
        return try FileLedgerStore(configuration: configuration, logger: StoreFixture.logger)
    }

    @Test func closeAndReopenKeepsEverything() throws {
        let fixture = try StoreFixture(.file) { configuration in
            configuration.entryLogMaxBytes = 2 * 1024
            configuration.journalMaxBytes = 4 * 1024
        }
        defer { fixture.tearDown() }
        fill(fixture.store, ledgers: 1...3, count: 40)
        #expect(try fixture.store.fence(ledgerID: 2) == 39)
        try fixture.store.deleteLedger(ledgerID: 3)
        #expect(try fixture.store.fence(ledgerID: 9) == -1)
        try fixture.reopen()
        try fixture.reopen()
        let store = fixture.store
        #expect(store.ledgerIDs() == [1, 2, 9])
        try expectEntries(store, ledgerID: 1, count: 40)
        try expectEntries(store, ledgerID: 2, count: 40)
        #expect(store.lastAddConfirmed(ledgerID: 3) == nil)
        #expect(store.lastAddConfirmed(ledgerID: 9) == -1)
        #expect(appendAndWait(store, ledgerID: 2, entryID: 40, payload: makePayload(ledgerID: 2, entryID: 40, size: 1)) == .fenced(ledgerID: 2))
        #expect(appendAndWait(store, ledgerID: 9, entryID: 0, payload: makePayload(ledgerID: 9, entryID: 0, size: 1)) == .fenced(ledgerID: 9))
        #expect(appendAndWait(store, ledgerID: 1, entryID: 40, payload: makePayload(ledgerID: 1, entryID: 40, size: 120)) == nil)
        try fixture.reopen()
        try expectEntries(fixture.store, ledgerID: 1, count: 41)
    }

    @Test func crashAfterCompletionsKeepsEveryCompletedEntry() throws {
        let fixture = try StoreFixture(.file)
        defer { fixture.tearDown() }
        fill(fixture.store, ledgers: 1...2, count: 30)
        #expect(try fixture.store.fence(ledgerID: 2) == 29)
        try fixture.store.deleteLedger(ledgerID: 1)
        fill(fixture.store, ledgers: 1...1, count: 5)
        let copy = try crashCopy(of: fixture.directory)
        defer { try? FileManager.default.removeItem(atPath: copy) }
        let recovered = try open(copy)
        defer { recovered.close() }
        #expect(recovered.ledgerIDs() == [1, 2])
        try expectEntries(recovered, ledgerID: 1, count: 5)
        try expectEntries(recovered, ledgerID: 2, count: 30)
        #expect(appendAndWait(recovered, ledgerID: 2, entryID: 30, payload: makePayload(ledgerID: 2, entryID: 30, size: 1)) == .fenced(ledgerID: 2))
    }

    @Test func journalReplayKeepsRecoveryAddsAfterAFence() throws {
        let fixture = try StoreFixture(.file)
        defer { fixture.tearDown() }
        fill(fixture.store, ledgers: 1...1, count: 3)
        #expect(try fixture.store.fence(ledgerID: 1) == 2)
        for entryID in Int64(3)..<5 {
            #expect(appendAndWait(fixture.store, ledgerID: 1, entryID: entryID, payload: makePayload(ledgerID: 1, entryID: entryID, size: 120), recovery: true) == nil)
        }
        // The copy has no checkpoint after the fence: the replay meets fence, then the recovery adds.
        let copy = try crashCopy(of: fixture.directory)
        defer { try? FileManager.default.removeItem(atPath: copy) }
        let recovered = try open(copy)
        defer { recovered.close() }
        try expectEntries(recovered, ledgerID: 1, count: 5)
        #expect(appendAndWait(recovered, ledgerID: 1, entryID: 5, payload: makePayload(ledgerID: 1, entryID: 5, size: 1)) == .fenced(ledgerID: 1))
    }

    @Test func crashAfterCheckpointsAndRollsKeepsEveryCompletedEntry() throws {
        let fixture = try StoreFixture(.file) { configuration in
            configuration.entryLogMaxBytes = 4 * 1024
            configuration.journalMaxBytes = 3 * 1024
        }
        defer { fixture.tearDown() }
        // 95 entries of ~150 bytes: several journal rolls and checkpoints; the last roll is not due
        // when the last completion runs, so the journal thread is idle when the copy is taken.
        fill(fixture.store, ledgers: 1...1, count: 95)
        let copy = try crashCopy(of: fixture.directory)
        defer { try? FileManager.default.removeItem(atPath: copy) }
        let recovered = try open(copy)
        defer { recovered.close() }
        try expectEntries(recovered, ledgerID: 1, count: 95)
    }

    @Test func tornJournalTailIsTruncated() throws {
        let fixture = try StoreFixture(.file)
        defer { fixture.tearDown() }
        fill(fixture.store, ledgers: 1...1, count: 10)
        let copy = try crashCopy(of: fixture.directory)
        defer { try? FileManager.default.removeItem(atPath: copy) }
        let journalName = try #require(StoreDirectory.files(in: copy, prefix: "journal-").last)
        let journalPath = copy + "/" + journalName
        let sizeBefore = StoreDirectory.size(journalPath)
        // The last record (entry 9, 8 + 17 + 120 bytes) loses its last 3 bytes: a torn write.
        try StoreDirectory.truncate(journalPath, by: 3)
        do {
            let recovered = try open(copy)
            try expectEntries(recovered, ledgerID: 1, count: 9)
            // The torn tail was cut off: the journal now ends where entry 9's record started.
            #expect(StoreDirectory.size(journalPath) == -1 || StoreDirectory.size(journalPath) == sizeBefore - (8 + 17 + 120))
            #expect(appendAndWait(recovered, ledgerID: 1, entryID: 9, payload: makePayload(ledgerID: 1, entryID: 9, size: 120)) == nil)
            recovered.close()
        }
        let reopened = try open(copy)
        defer { reopened.close() }
        try expectEntries(reopened, ledgerID: 1, count: 10)
    }

    @Test func corruptLastJournalRecordIsDropped() throws {
        let fixture = try StoreFixture(.file)
        defer { fixture.tearDown() }
        fill(fixture.store, ledgers: 1...2, count: 6)
        let copy = try crashCopy(of: fixture.directory)
        defer { try? FileManager.default.removeItem(atPath: copy) }
        let journalName = try #require(StoreDirectory.files(in: copy, prefix: "journal-").last)
        // Flip one byte of the payload of the last record (ledger 2, entry 5).
        try StoreDirectory.flipByte(copy + "/" + journalName, atOffsetFromEnd: 2)
        let recovered = try open(copy)
        defer { recovered.close() }
        try expectEntries(recovered, ledgerID: 1, count: 6)
        try expectEntries(recovered, ledgerID: 2, count: 5)
    }

    @Test func corruptEntryLogRecordIsReportedOnRead() throws {
        let fixture = try StoreFixture(.file)
        defer { fixture.tearDown() }
        fill(fixture.store, ledgers: 1...1, count: 3)
        fixture.store.close()
        let entryLogName = try #require(StoreDirectory.files(in: fixture.directory, prefix: "entrylog-").last)
        // Entry 0's record starts right after the 12-byte header; flip its first payload byte.
        try StoreDirectory.flipByte(fixture.directory + "/" + entryLogName, atOffset: 12 + 8 + 17)
        try fixture.reopen()
        let error = readError(fixture.store, ledgerID: 1, entryID: 0)
        guard case .corrupted(let detail) = error else {
            Issue.record("expected .corrupted, got \(String(describing: error))")
            return
        }
        #expect(detail.contains(entryLogName))
        #expect(detail.contains("offset 12"))
        #expect(try fixture.store.read(ledgerID: 1, entryID: 1) == makePayload(ledgerID: 1, entryID: 1, size: 120))
    }

    @Test func corruptIndexRefusesToOpen() throws {
        let fixture = try StoreFixture(.file)
        defer { fixture.tearDown() }
        fill(fixture.store, ledgers: 1...1, count: 3)
        fixture.store.close()
        try StoreDirectory.flipByte(fixture.directory + "/index.dat", atOffsetFromEnd: 5)
        #expect {
            _ = try open(fixture.directory)
        } throws: { error in
            guard case LedgerStoreError.corrupted(let detail) = error else { return false }
            return detail.contains("index.dat")
        }
    }

    @Test func deletedLedgersGiveBackTheirEntryLogs() throws {
        let fixture = try StoreFixture(.file) { configuration in
            configuration.entryLogMaxBytes = 2 * 1024
        }
        defer { fixture.tearDown() }
        fill(fixture.store, ledgers: 1...1, count: 60)
        fill(fixture.store, ledgers: 2...2, count: 3)
        try fixture.reopen()
        let before = StoreDirectory.files(in: fixture.directory, prefix: "entrylog-").count
        #expect(before > 3)
        try fixture.store.deleteLedger(ledgerID: 1)
        try fixture.reopen()
        let after = StoreDirectory.files(in: fixture.directory, prefix: "entrylog-").count
        #expect(after < before)
        try expectEntries(fixture.store, ledgerID: 2, count: 3)
    }

    @Test func secondStoreOnTheSameDirectoryIsRefused() throws {
        let fixture = try StoreFixture(.file)
        defer { fixture.tearDown() }
        #expect {
            _ = try open(fixture.directory)
        } throws: { error in
            guard case LedgerStoreError.io = error else { return false }
            return true
        }
    }
}
