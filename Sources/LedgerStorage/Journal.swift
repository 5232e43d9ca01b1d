import Logging
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The journal of a `FileLedgerStore` (`journal-N.log`), its write-ahead log: a group of framed
/// records (adds, fences, deletes) goes out with one `pwrite` and one `fdatasync`, and an append is
/// durable once its group's sync returned. Files roll past a size; an index checkpoint then makes
/// the older ones unnecessary (the store deletes them). Owned by the journal thread, and by
/// recovery before that thread starts.
final class Journal {
    private let directory: DataDirectory
    /// nil once closed.
    private var handle: OpenFile?
    /// The current file (journal thread only, before `close`).
    var file: OpenFile { handle! }
    private(set) var fileID: Int64
    /// End of the last synced group: where the next group goes.
    private(set) var offset: Int64

    private init(directory: DataDirectory, file: OpenFile, fileID: Int64) {
        self.directory = directory
        self.handle = file
        self.fileID = fileID
        self.offset = Int64(OnDiskFormat.fileHeaderBytes)
    }

    /// Starts `journal-<id>.log`, empty.
    static func create(id: Int64, in directory: DataDirectory) throws(LedgerStoreError) -> Journal {
        let file = try directory.create(StoreFileName.journal(id), magic: OnDiskFormat.journalMagic).get()
        return Journal(directory: directory, file: file, fileID: id)
    }

    /// Writes one group and syncs it; returns how long the write and the sync took. On failure
    /// nothing of the group counts as written (`cutFailedGroup` removes what reached the file).
    func writeGroup(_ group: ByteBuffer) -> Result<(write: Duration, sync: Duration), LedgerStoreError> {
        let clock = ContinuousClock()
        let started = clock.now
        if let error = file.writeAll(group, at: offset) { return .failure(error) }
        let written = clock.now
        if let error = file.syncData() { return .failure(error) }
        offset += Int64(group.readableBytes)
        return .success((written - started, clock.now - written))
    }

    /// After a failed group: cuts off whatever part of it reached the file, so the journal ends
    /// with the last synced group again (recovery never meets a torn record there, and the next
    /// group goes right after the last good one).
    func cutFailedGroup() -> LedgerStoreError? {
        if let error = file.truncate(to: offset) { return error }
        return file.syncData()
    }

    /// Lets go of the current file (the store is closed).
    func close() {
        handle = nil
    }

    /// Whether the current file grew past `maxBytes`.
    func isFull(maxBytes: Int) -> Bool {
        offset >= Int64(maxBytes)
    }

    /// Moves on to `journal-<id + 1>.log`. On failure the current file stays in use (past its
    /// size limit); a file half made for lack of space is removed, so recovery never finds it after
    /// the current one.
    func roll() -> LedgerStoreError? {
        let nextName = StoreFileName.journal(fileID + 1)
        switch directory.create(nextName, magic: OnDiskFormat.journalMagic) {
        case .success(let next):
            handle = next
            fileID += 1
            offset = Int64(OnDiskFormat.fileHeaderBytes)
            return nil
        case .failure(let error):
            if case .diskFull = error { _ = directory.remove(nextName) }
            return error
        }
    }

    /// Replays `journal-<id>.log` from `offset`, handing each intact record to `apply` (with the
    /// file's contents, the record's index in them and the file's name); returns how many it
    /// applied. A torn or corrupt record ends the replay of the last file and is cut off with a
    /// warning (it was never acknowledged); anywhere else, damage refuses to open (`.corrupted`).
    static func replay(
        id: Int64, from offset: Int64, isLast: Bool, in directory: DataDirectory, logger: Logger,
        apply: (DecodedRecord, ByteBuffer, Int, String) throws(LedgerStoreError) -> Void
    ) throws(LedgerStoreError) -> Int {
        let name = StoreFileName.journal(id)
        let file = try directory.open(name, flags: O_RDWR).get()
        let size = try file.size().get()
        let contents = try file.read(count: Int(size), at: 0, allocator: ByteBufferAllocator()).get()
        if let problem = OnDiskFormat.checkFileHeader(magic: OnDiskFormat.journalMagic, in: contents, at: 0) {
            guard isLast, size <= Int64(OnDiskFormat.fileHeaderBytes) else {
                throw .corrupted("\(name) offset 0: \(problem); restore the data directory from a replica")
            }
            // A journal file created just before a crash, its header not yet synced.
            logger.warning("Removing journal file with a torn header", metadata: ["journal.file": "\(name)", "problem": "\(problem)"])
            if let error = directory.remove(name) { throw error }
            return 0
        }
        guard offset <= size else {
            throw .corrupted(
                "\(name) is \(size) bytes, shorter than the position \(offset) \(StoreFileName.index) recorded; restore the data directory from a replica")
        }
        var index = Int(offset)
        var applied = 0
        while index < contents.writerIndex {
            let problem: String
            let partialLedgerID: Int64?
            switch OnDiskFormat.decodeRecord(in: contents, at: index) {
            case .record(let record):
                try apply(record, contents, index, name)
                index += record.recordLength
                applied += 1
                continue
            case .incomplete(let ledgerID):
                problem = "record runs past the end of the file"
                partialLedgerID = ledgerID
            case .corrupt(let reason, let ledgerID):
                problem = reason
                partialLedgerID = ledgerID
            }
            guard isLast else {
                throw .corrupted("\(name) offset \(index): \(problem), before the last journal file; restore the data directory from a replica")
            }
            logger.warning(
                "Journal ends in a torn or corrupt record; truncating it (it was never acknowledged)",
                metadata: [
                    "journal.file": "\(name)", "journal.offset": "\(index)",
                    "ledger.id": "\(partialLedgerID.map { String($0) } ?? "unknown")", "problem": "\(problem)",
                    "bytes.dropped": "\(contents.writerIndex - index)",
                ])
            if let error = file.truncate(to: Int64(index)) { throw error }
            if let error = file.syncData() { throw error }
            break
        }
        return applied
    }
}
