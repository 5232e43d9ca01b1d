import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The index of a `FileLedgerStore`: every ledger it holds, with the locations of its entries in
/// the entry logs and what appends are checked against (next entry id, fenced, deleted), plus the
/// entries appended but not yet in an entry log. Written to `index.dat` by a checkpoint
/// (`IndexCheckpoint`), loaded from there by recovery.
///
/// Not thread-safe by itself: the store guards it (and every `LedgerState` in it) with its lock;
/// see `LedgerState` for the fields the journal thread reads without it.
final class EntryIndex {
    private var ledgers: [Int64: LedgerState] = [:]

    init() {}

    /// The index a checkpoint recorded.
    init(checkpoint: IndexCheckpoint) {
        for saved in checkpoint.ledgers {
            let ledger = LedgerState(ledgerID: saved.ledgerID)
            ledger.locations = saved.locations
            ledger.lastAddConfirmed = Int64(saved.locations.count) - 1
            ledger.nextEntryID = Int64(saved.locations.count)
            ledger.fenced = saved.fenced
            ledger.fenceRequested = saved.fenced
            ledger.isOnDisk = true
            ledgers[saved.ledgerID] = ledger
        }
    }

    subscript(ledgerID: Int64) -> LedgerState? {
        get { ledgers[ledgerID] }
        set { ledgers[ledgerID] = newValue }
    }

    var count: Int { ledgers.count }

    /// Ledgers not being deleted, sorted.
    func liveLedgerIDs() -> [Int64] {
        ledgers.values.filter { !$0.deleteRequested }.map(\.ledgerID).sorted()
    }

    /// Every ledger's state object, for a checkpoint to read outside the lock.
    func snapshot() -> [LedgerState] {
        Array(ledgers.values)
    }

    /// What a checkpoint records of `snapshot` (ledgers a journal record was applied for, sorted),
    /// and the entry logs they point into (the current one always counts). Journal thread only:
    /// it reads fields only that thread writes.
    static func checkpointContents(
        of snapshot: [LedgerState], currentEntryLogID: Int64
    ) -> (ledgers: [(ledgerID: Int64, fenced: Bool, locations: [EntryLocation])], referencedEntryLogs: Set<Int64>) {
        var entries: [(ledgerID: Int64, fenced: Bool, locations: [EntryLocation])] = []
        var referenced: Set<Int64> = [currentEntryLogID]
        for ledger in snapshot where ledger.isOnDisk {
            entries.append((ledger.ledgerID, ledger.fenced, ledger.locations))
            var previous: Int64 = -1
            for location in ledger.locations where location.entryLogID != previous {
                referenced.insert(location.entryLogID)
                previous = location.entryLogID
            }
        }
        entries.sort { $0.ledgerID < $1.ledgerID }
        return (entries, referenced)
    }
}

/// One ledger in a `FileLedgerStore`'s index. Every field is read and written under the store's
/// lock, except that the journal thread (the only writer of `locations`, `lastAddConfirmed`,
/// `fenced`, `isOnDisk`) may read those without it.
final class LedgerState {
    let ledgerID: Int64
    // Front: what appends are checked against.
    /// Next entry id `append` accepts.
    var nextEntryID: Int64 = 0
    /// `fence` was called (durable or not): appends are refused.
    var fenceRequested = false
    /// `deleteLedger` was called and its record is not yet applied.
    var deleteRequested = false
    /// Appended entries not yet in the entry log, by entry id.
    var writeCache: [Int64: ByteBuffer] = [:]
    // Applied: what the journal made durable.
    /// Locations of entries 0..<count in the entry logs.
    var locations: [EntryLocation] = []
    var lastAddConfirmed: Int64 = -1
    var fenced = false
    /// A journal record for this ledger was applied, so checkpoints include it.
    var isOnDisk = false

    init(ledgerID: Int64) {
        self.ledgerID = ledgerID
    }
}

extension IndexCheckpoint {
    /// Writes `index.dat`: `index.tmp` first, synced, renamed over it, then the directory synced.
    static func write(
        journalFileID: Int64, journalOffset: Int64, entryLogID: Int64, entryLogSizeBytes: Int64,
        ledgers: [(ledgerID: Int64, fenced: Bool, locations: [EntryLocation])], to directory: DataDirectory
    ) -> LedgerStoreError? {
        let encoded = encode(
            journalFileID: journalFileID, journalOffset: journalOffset, entryLogID: entryLogID,
            entryLogSizeBytes: entryLogSizeBytes, ledgers: ledgers, allocator: ByteBufferAllocator())
        switch directory.open(StoreFileName.indexTemporary, flags: O_WRONLY | O_CREAT | O_TRUNC) {
        case .success(let file):
            if let error = file.writeAll(encoded, at: 0) { return error }
            if let error = file.syncAll() { return error }
        case .failure(let error):
            return error
        }
        if let error = directory.rename(StoreFileName.indexTemporary, to: StoreFileName.index) { return error }
        return directory.sync()
    }

    /// Reads `index.dat`.
    static func load(from directory: DataDirectory) throws(LedgerStoreError) -> IndexCheckpoint {
        let file = try OpenFile.open(directory: directory.path, name: StoreFileName.index, flags: O_RDONLY).get()
        let size = try file.size().get()
        let contents = try file.read(count: Int(size), at: 0, allocator: ByteBufferAllocator()).get()
        return try decode(contents, fileName: StoreFileName.index).get()
    }
}
