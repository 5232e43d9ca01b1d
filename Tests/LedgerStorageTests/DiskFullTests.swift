import Foundation
import LedgerStorage
import NIOCore
import Testing

/// A disk that fills up on demand, through the store's fault injector: while full, every write
/// to a file whose name starts with `prefix` fails with ENOSPC (the first one, if asked, after
/// writing part of its bytes: a torn write), and the free-space check finds no room. Syncs work.
final class FillableDisk: @unchecked Sendable {
    private let lock = NSLock()
    private var full = false
    private var prefix = ""
    private var tornBytes: Int?
    private var refused = 0

    /// From now on writes to files named `prefix…` fail; the first after `tearingAfter` bytes.
    func fill(filesStartingWith prefix: String = "", tearingAfter bytes: Int? = nil) {
        lock.withLock {
            full = true
            self.prefix = prefix
            tornBytes = bytes
        }
    }

    func free() {
        lock.withLock { full = false }
    }

    /// Writes refused so far.
    var refusedWrites: Int { lock.withLock { refused } }

    var injector: FileFaultInjector {
        { [self] operation, name in fault(operation, name) }
    }

    private func fault(_ operation: FileOperation, _ name: String) -> InjectedFault? {
        lock.withLock {
            guard full else { return nil }
            switch operation {
            case .write:
                guard name.hasPrefix(prefix) else { return nil }
                refused += 1
                if let bytes = tornBytes {
                    tornBytes = nil
                    return .tornWrite(bytes: bytes, errorNumber: ENOSPC)
                }
                return .fail(errorNumber: ENOSPC)
            case .sync:
                return nil
            case .statFileSystem:
                return .fail(errorNumber: ENOSPC)
            }
        }
    }
}

/// Issue 12, fault 10: a full disk fails writes fast and typed, keeps reads going, and lets writes
/// resume by themselves once there is room; nothing acknowledged is lost, nothing refused appears.
@Suite("FileLedgerStore on a full disk")
struct DiskFullTests {
    private static let entrySize = 120

    private func payload(_ entryID: Int64) -> ByteBuffer {
        makePayload(ledgerID: 1, entryID: entryID, size: Self.entrySize)
    }

    /// A payload that must never be found in the store: what an append refused for lack of space carried.
    private func refusedPayload(_ entryID: Int64) -> ByteBuffer {
        makePayload(ledgerID: 99, entryID: entryID, size: 300)
    }

    private func makeFixture(_ disk: FillableDisk) throws -> StoreFixture {
        try StoreFixture(.file) { configuration in
            configuration.faultInjector = disk.injector
            configuration.diskFullCheckInterval = .milliseconds(20)
        }
    }

    private func isDiskFull(_ error: LedgerStoreError?) -> Bool {
        if case .diskFull = error { return true }
        return false
    }

    private func expectEntries(_ store: any LedgerStore, count: Int64) throws {
        #expect(store.lastAddConfirmed(ledgerID: 1) == count - 1)
        for entryID in Int64(0)..<count {
            #expect(try store.read(ledgerID: 1, entryID: entryID) == payload(entryID))
        }
        #expect(readError(store, ledgerID: 1, entryID: count) == .entryNotFound(ledgerID: 1, entryID: count))
    }

    /// Appends `entryID` until it succeeds (writes resume within a few check intervals).
    private func appendOnceThereIsRoom(_ store: any LedgerStore, entryID: Int64) async throws {
        for _ in 0..<500 {
            let error = appendAndWait(store, ledgerID: 1, entryID: entryID, payload: payload(entryID))
            if error == nil { return }
            #expect(isDiskFull(error), "expected only disk-full refusals, got \(String(describing: error))")
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("appends did not resume after the disk was freed")
    }

    @Test func tornJournalWriteFailsFastKeepsReadsAndResumesWhenSpaceIsBack() async throws {
        let disk = FillableDisk()
        let fixture = try makeFixture(disk)
        defer { fixture.tearDown() }
        let store = fixture.store
        for entryID in Int64(0)..<5 {
            #expect(appendAndWait(store, ledgerID: 1, entryID: entryID, payload: payload(entryID)) == nil)
        }

        // The disk fills up in the middle of the next group: part of its record reaches the journal.
        disk.fill(filesStartingWith: "journal-", tearingAfter: 40)
        let first = appendAndWait(store, ledgerID: 1, entryID: 5, payload: refusedPayload(5))
        #expect(isDiskFull(first))
        #expect(first.map { "\($0)" }?.contains("disk full") == true)
        let refusedBefore = disk.refusedWrites

        // Refused at once, without touching the disk; the entry id was given back.
        let started = ContinuousClock.now
        for _ in 0..<20 {
            #expect(isDiskFull(appendAndWait(store, ledgerID: 1, entryID: 5, payload: refusedPayload(5))))
        }
        #expect(ContinuousClock.now - started < .seconds(1))
        #expect(disk.refusedWrites == refusedBefore)
        #expect(isDiskFull(appendAndWait(store, ledgerID: 2, entryID: 0, payload: refusedPayload(0))))
        #expect(throws: LedgerStoreError.self) { _ = try store.fence(ledgerID: 3) }

        // Reads go on; nothing of the refused appends is visible.
        try expectEntries(store, count: 5)

        // A crash now recovers exactly the acknowledged entries: the torn tail was cut off.
        let crashed = try crashCopy(of: fixture.directory)
        defer { try? FileManager.default.removeItem(atPath: crashed) }
        do {
            var configuration = FileLedgerStoreConfiguration(directory: crashed)
            configuration.groupCommitMaxDelay = .microseconds(200)
            let recovered = try FileLedgerStore(configuration: configuration, logger: StoreFixture.logger)
            defer { recovered.close() }
            try expectEntries(recovered, count: 5)
            #expect(recovered.ledgerIDs() == [1])
        }

        // Space is back: the same entry id is accepted again, without a restart.
        disk.free()
        try await appendOnceThereIsRoom(store, entryID: 5)
        for entryID in Int64(6)..<10 {
            #expect(appendAndWait(store, ledgerID: 1, entryID: entryID, payload: payload(entryID)) == nil)
        }
        try expectEntries(store, count: 10)

        // Recovery sees every acknowledged entry and no refused one.
        try fixture.reopen()
        try expectEntries(fixture.store, count: 10)
        #expect(fixture.store.ledgerIDs() == [1])
        #expect(appendAndWait(fixture.store, ledgerID: 1, entryID: 10, payload: payload(10)) == nil)
    }

    @Test func entryLogWithoutRoomKeepsDurableEntriesReadableAndWritesThemLater() async throws {
        let disk = FillableDisk()
        let fixture = try makeFixture(disk)
        defer { fixture.tearDown() }
        let store = fixture.store
        for entryID in Int64(0)..<3 {
            #expect(appendAndWait(store, ledgerID: 1, entryID: entryID, payload: payload(entryID)) == nil)
        }

        // The journal still has room, the entry log not: entry 3 is durable (journal) and acknowledged.
        disk.fill(filesStartingWith: "entrylog-")
        #expect(appendAndWait(store, ledgerID: 1, entryID: 3, payload: payload(3)) == nil)
        // From then on writes are refused until there is room, and entry 3 is read from memory.
        #expect(isDiskFull(appendAndWait(store, ledgerID: 1, entryID: 4, payload: refusedPayload(4))))
        try expectEntries(store, count: 4)

        disk.free()
        try await appendOnceThereIsRoom(store, entryID: 4)
        try expectEntries(store, count: 5)

        try fixture.reopen()
        try expectEntries(fixture.store, count: 5)
    }

    @Test func closingWhileTheEntryLogHasNoRoomLosesNothing() throws {
        let disk = FillableDisk()
        let fixture = try makeFixture(disk)
        defer { fixture.tearDown() }
        for entryID in Int64(0)..<3 {
            #expect(appendAndWait(fixture.store, ledgerID: 1, entryID: entryID, payload: payload(entryID)) == nil)
        }
        disk.fill(filesStartingWith: "entrylog-")
        #expect(appendAndWait(fixture.store, ledgerID: 1, entryID: 3, payload: payload(3)) == nil)
        // Closed while entry 3 is only in the journal (no checkpoint may cover it); the next open
        // replays it, with room again.
        fixture.store.close()
        disk.free()
        try fixture.reopen()
        try expectEntries(fixture.store, count: 4)
    }

    /// Copies the directory of a live, idle store, as a crash would leave it.
    private func crashCopy(of directory: String) throws -> String {
        let copy = StoreFixture.makeTemporaryDirectory()
        try FileManager.default.removeItem(atPath: copy)
        try FileManager.default.copyItem(atPath: directory, toPath: copy)
        return copy
    }
}
