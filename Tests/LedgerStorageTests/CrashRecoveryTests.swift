import Foundation
import LedgerStorage
import NIOCore
import TestSupport
import Testing

/// A model of what a power loss keeps (tigerbeetle's testing storage, our own code): it watches a
/// store's writes and syncs through `FileWriteObserver`, and `crashImage(into:tearing:)` writes
/// the directory as it would be after a crash *now*: every write not yet covered by a successful
/// sync of its file is undone, except that the most recent one may keep a prefix of its bytes (a
/// torn write). Renames, deletes and truncations count as durable at once (a limit of the model).
final class CrashingDisk: @unchecked Sendable {
    private struct Write {
        var file: String
        var offset: Int64
        var count: Int
        /// The bytes the write covers as they were before it (shorter if the file was shorter).
        var before: [UInt8]
        var sizeBefore: Int64
    }

    let directory: String
    private let lock = NSLock()
    /// Unsynced writes, oldest first.
    private var unsynced: [Write] = []

    init(directory: String) {
        self.directory = directory
    }

    var observer: FileWriteObserver {
        { [self] event in observe(event) }
    }

    private func observe(_ event: FileWriteEvent) {
        lock.withLock {
            switch event {
            case .willWrite(let file, let offset, let count):
                let path = directory + "/" + file
                let handle = FileHandle(forReadingAtPath: path)
                let size = (try? handle?.seekToEnd()).map { Int64($0) } ?? 0
                var before: [UInt8] = []
                if let handle, offset < size {
                    try? handle.seek(toOffset: UInt64(offset))
                    before = [UInt8](handle.readData(ofLength: Int(min(Int64(count), size - offset))))
                }
                try? handle?.close()
                unsynced.append(Write(file: file, offset: offset, count: count, before: before, sizeBefore: size))
            case .synced(let file):
                unsynced.removeAll { $0.file == file }
            }
        }
    }

    /// Copies the store directory to `target` as a crash now would leave it; with `tearing`, the
    /// most recent unsynced write keeps its first `tearing` bytes (at most its length). Returns how
    /// many writes were undone.
    @discardableResult
    func crashImage(into target: String, tearing: Int? = nil) throws -> Int {
        try lock.withLock {
            let manager = FileManager.default
            try manager.createDirectory(atPath: target, withIntermediateDirectories: true)
            var images: [String: [UInt8]] = [:]
            for name in try manager.contentsOfDirectory(atPath: directory) {
                if let data = manager.contents(atPath: directory + "/" + name) { images[name] = [UInt8](data) }
            }
            for (index, write) in unsynced.enumerated().reversed() {
                guard var bytes = images[write.file] else { continue }  // deleted since: nothing to undo
                let kept = index == unsynced.count - 1 ? min(max(tearing ?? 0, 0), write.count) : 0
                let end = Int(write.offset) + write.count
                if bytes.count < end { bytes += [UInt8](repeating: 0, count: end - bytes.count) }
                // Undo the part after the torn prefix: the old bytes where the file had them, then cut
                // the file back to its old size unless the kept prefix reaches past it.
                for i in kept..<write.count {
                    let position = Int(write.offset) + i
                    if i < write.before.count { bytes[position] = write.before[i] }
                }
                // A write that grew the file: cut it back to its old size, plus the kept prefix.
                let newSize = max(Int(write.sizeBefore), Int(write.offset) + kept)
                if end > Int(write.sizeBefore), bytes.count > newSize {
                    bytes.removeSubrange(newSize...)
                }
                images[write.file] = bytes
            }
            for (name, bytes) in images {
                guard manager.createFile(atPath: target + "/" + name, contents: Data(bytes)) else {
                    throw LedgerStoreError.io("cannot write the crash image of \(name)")
                }
            }
            return unsynced.count
        }
    }
}

/// Issue 12, simulated disk faults: whatever a crash keeps of unsynced writes, a store reopened on
/// it serves every acknowledged entry with its exact bytes, and no entry with wrong bytes.
@Suite("FileLedgerStore after a simulated crash")
struct CrashRecoveryTests {
    final class Acknowledged: @unchecked Sendable {
        private let lock = NSLock()
        private var entries: [Int64: Set<Int64>] = [:]
        func add(_ ledgerID: Int64, _ entryID: Int64) { lock.withLock { _ = entries[ledgerID, default: []].insert(entryID) } }
        var snapshot: [Int64: Set<Int64>] { lock.withLock { entries } }
    }

    @Test(arguments: [1, 2, 3, 4] as [UInt64])
    func everyAcknowledgedEntrySurvivesLostAndTornUnsyncedWrites(_ seed: UInt64) throws {
        var random = SplitMix64(seed: seed)
        let directory = StoreFixture.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let disk = CrashingDisk(directory: directory)
        var configuration = FileLedgerStoreConfiguration(directory: directory)
        configuration.groupCommitMaxDelay = .microseconds(200)
        // Small files: journal rolls, index checkpoints and entry-log rolls happen during the run.
        configuration.journalMaxBytes = 64 * 1024
        configuration.entryLogMaxBytes = 96 * 1024
        configuration.writeObserver = disk.observer
        let store = try FileLedgerStore(configuration: configuration, logger: StoreFixture.logger)
        defer { store.close() }

        let acknowledged = Acknowledged()
        let ledgers: [Int64] = [1, 2, 3]
        var next: [Int64: Int64] = [1: 0, 2: 0, 3: 0]
        var sizes: [Int64: [Int]] = [1: [], 2: [], 3: []]
        var crashes = 0
        var undone = 0
        for round in 0..<10 {
            // A burst of appends to the three ledgers, not waited for one by one.
            let burst = 20 + random.below(50)
            let done = DispatchGroup()
            for _ in 0..<burst {
                let ledgerID = ledgers[random.below(ledgers.count)]
                let entryID = next[ledgerID]!
                next[ledgerID] = entryID + 1
                let size = 16 + random.below(1_500)
                sizes[ledgerID]!.append(size)
                done.enter()
                store.append(ledgerID: ledgerID, entryID: entryID, payload: makePayload(ledgerID: ledgerID, entryID: entryID, size: size)) { result in
                    if case .success = result { acknowledged.add(ledgerID, entryID) }
                    done.leave()
                }
            }
            // Crash at once (appends in flight), or once some of the burst is durable.
            if random.below(2) == 1 { usleep(UInt32(200 + random.below(3_000))) }
            let before = acknowledged.snapshot
            let image = directory + "-crash-\(round)"
            defer { try? FileManager.default.removeItem(atPath: image) }
            undone += try disk.crashImage(into: image, tearing: random.below(3) == 0 ? nil : random.below(5_000))
            crashes += 1
            done.wait()

            var recoveredConfiguration = FileLedgerStoreConfiguration(directory: image)
            recoveredConfiguration.journalMaxBytes = configuration.journalMaxBytes
            recoveredConfiguration.entryLogMaxBytes = configuration.entryLogMaxBytes
            let recovered = try FileLedgerStore(configuration: recoveredConfiguration, logger: StoreFixture.logger)
            defer { recovered.close() }
            for ledgerID in ledgers {
                let acked = before[ledgerID] ?? []
                let last = recovered.lastAddConfirmed(ledgerID: ledgerID) ?? -1
                if let highest = acked.max() {
                    #expect(last >= highest, "seed \(seed) round \(round): ledger \(ledgerID) recovered to \(last), entry \(highest) was acknowledged")
                }
                for entryID in 0..<next[ledgerID]! {
                    do {
                        let stored = try recovered.read(ledgerID: ledgerID, entryID: entryID)
                        // Whatever is served is exactly what was appended.
                        let expected = makePayload(ledgerID: ledgerID, entryID: entryID, size: sizes[ledgerID]![Int(entryID)])
                        #expect(stored == expected, "seed \(seed) round \(round): ledger \(ledgerID) entry \(entryID) came back with other bytes")
                    } catch {
                        #expect(!acked.contains(entryID), "seed \(seed) round \(round): acknowledged entry \(ledgerID):\(entryID) lost: \(error)")
                    }
                }
            }
        }
        #expect(crashes == 10)
        // The model did undo writes (else it tested nothing).
        #expect(undone > 0)
    }
}
