import Foundation
import NIOCore

/// The entry logs of a `FileLedgerStore` (`entrylog-N.log`): where add records live once the
/// journal made them durable, read back at the locations the `EntryIndex` keeps. The journal
/// thread writes them (the same framed bytes as in the journal, CRCs included) without a sync per
/// group: the current file is synced when it rolls and before every index checkpoint.
///
/// Threads: the current file and its offset belong to the journal thread (and to recovery before
/// it starts). The files that may be read are guarded by `lock`; a reader takes one under it and
/// `pread`s outside it, and an `OpenFile` closes only with its last reference, so removing an
/// entry log never closes a descriptor under a reader's feet. Lock order: a caller holding the
/// store's lock may take this one, never the other way round.
final class EntryLog: @unchecked Sendable {
    private let directory: DataDirectory
    private let maxBytes: Int
    private let lock = NSLock()
    /// Every entry log that may be read, by id (the current one included). Guarded by `lock`.
    private var files: [Int64: OpenFile]
    // Journal thread.
    /// nil once closed.
    private var currentFile: OpenFile?
    private var current: OpenFile { currentFile! }
    private(set) var currentID: Int64
    /// Where the next record goes in the current file.
    private(set) var offset: Int64

    /// `files` must hold `currentID`; `offset` is the current file's length.
    init(directory: DataDirectory, maxBytes: Int, files: [Int64: OpenFile], currentID: Int64, offset: Int64) {
        self.directory = directory
        self.maxBytes = maxBytes
        self.files = files
        self.currentFile = files[currentID]!
        self.currentID = currentID
        self.offset = offset
    }

    /// The entry log `id` for reading, nil if there is none (removed, or never made).
    func file(_ id: Int64) -> OpenFile? {
        lock.lock()
        defer { lock.unlock() }
        return files[id]
    }

    /// Writes framed add records (ranges of `source`, absolute indices, in order), rolling the file
    /// as needed; records that follow each other in `source` go out in one `pwrite`. Returns the
    /// locations of the records written: all of them, or, with the error, those before the first
    /// record not wholly written (the next write starts where that one began).
    func write(_ source: ByteBuffer, records: [(index: Int, length: Int)]) -> (locations: [EntryLocation], failure: LedgerStoreError?) {
        var locations: [EntryLocation] = []
        locations.reserveCapacity(records.count)
        var runStart = 0
        var runLength = 0
        var runFileOffset: Int64 = 0
        /// Position in `records` of the run's first record.
        var runFirstRecord = 0
        func flushRun() -> LedgerStoreError? {
            guard runLength > 0 else { return nil }
            let error = current.writeAll(source.getSlice(at: runStart, length: runLength)!, at: runFileOffset)
            runLength = 0
            if error != nil {
                // None of the run counts as written: the next write goes over whatever part of it
                // reached the file.
                locations.removeSubrange(runFirstRecord...)
                offset = runFileOffset
            }
            return error
        }
        for (position, record) in records.enumerated() {
            if offset > Int64(OnDiskFormat.fileHeaderBytes) && offset + Int64(record.length) > Int64(maxBytes) {
                if let error = flushRun() { return (locations, error) }
                if let error = roll() { return (locations, error) }
            }
            if runLength > 0 && runStart + runLength == record.index {
                runLength += record.length
            } else {
                if let error = flushRun() { return (locations, error) }
                runStart = record.index
                runLength = record.length
                runFileOffset = offset
                runFirstRecord = position
            }
            locations.append(EntryLocation(entryLogID: currentID, offset: offset, length: UInt32(record.length)))
            offset += Int64(record.length)
        }
        if let error = flushRun() { return (locations, error) }
        return (locations, nil)
    }

    /// Syncs the current file (what the locations handed out so far point at becomes durable).
    func sync() -> LedgerStoreError? {
        current.syncData()
    }

    /// Syncs the current file and starts the next. On failure the current file stays in use; the
    /// roll is tried again with the next write.
    private func roll() -> LedgerStoreError? {
        if let error = current.syncData() { return error }
        let newID = currentID + 1
        switch directory.create(StoreFileName.entryLog(newID), magic: OnDiskFormat.entryLogMagic) {
        case .success(let file):
            lock.lock()
            files[newID] = file
            lock.unlock()
            currentFile = file
            currentID = newID
            offset = Int64(OnDiskFormat.fileHeaderBytes)
            return nil
        case .failure(let error):
            _ = directory.remove(StoreFileName.entryLog(newID))
            return error
        }
    }

    /// Deletes the entry logs before the current one that `referenced` does not name (no live
    /// ledger points into them); returns the ids deleted. A file that cannot be deleted is
    /// reported to `warn` and tried again at the next checkpoint.
    func removeUnreferenced(_ referenced: Set<Int64>, among names: [String], warn: (LedgerStoreError) -> Void) -> [Int64] {
        var removed: [Int64] = []
        for name in names {
            guard let id = StoreFileName.parse(name, prefix: "entrylog-"), id < currentID, !referenced.contains(id) else { continue }
            if let error = directory.remove(name) {
                warn(error)
            } else {
                removed.append(id)
            }
        }
        if !removed.isEmpty {
            lock.lock()
            for id in removed { files[id] = nil }
            lock.unlock()
        }
        return removed
    }

    /// Lets go of every file (the store is closed): a descriptor closes once no reader holds it.
    func closeAll() {
        lock.lock()
        files.removeAll()
        lock.unlock()
        currentFile = nil
    }

    /// The payloads of add records read back in one span: `span` holds the file's bytes from
    /// `spanOffset`, and `locations[i]` is entry `firstEntryID + i` of `ledgerID` (each checked
    /// against what its record says). Each payload is a slice of `span` (no copy).
    static func payloads(
        in span: ByteBuffer, spanOffset: Int64, locations: ArraySlice<EntryLocation>, ledgerID: Int64, firstEntryID: Int64,
        fileName: String
    ) -> [Result<ByteBuffer, LedgerStoreError>] {
        var entryID = firstEntryID
        return locations.map { location in
            defer { entryID += 1 }
            let id = entryID
            return Result { () throws(LedgerStoreError) in
                try payload(
                    in: span, at: span.readerIndex + Int(location.offset - spanOffset), location: location,
                    ledgerID: ledgerID, entryID: id, fileName: fileName)
            }
        }
    }

    /// The payload of the add record at `index` in `buffer`, checked against what the index expects.
    private static func payload(
        in buffer: ByteBuffer, at index: Int, location: EntryLocation, ledgerID: Int64, entryID: Int64, fileName: String
    ) throws(LedgerStoreError) -> ByteBuffer {
        let place = "\(fileName) offset \(location.offset)"
        switch OnDiskFormat.decodeRecord(in: buffer, at: index) {
        case .record(let decoded):
            guard decoded.kind == .add, decoded.ledgerID == ledgerID, decoded.entryID == entryID,
                decoded.recordLength == Int(location.length)
            else {
                throw .corrupted(
                    "\(place): holds \(decoded.kind) of ledger \(decoded.ledgerID) entry \(decoded.entryID), the index expected ledger \(ledgerID) entry \(entryID)")
            }
            return buffer.getSlice(at: decoded.payloadIndex, length: decoded.payloadLength)!
        case .incomplete:
            throw .corrupted("\(place): record of ledger \(ledgerID) entry \(entryID) is truncated")
        case .corrupt(let reason, _):
            throw .corrupted("\(place): \(reason) in ledger \(ledgerID) entry \(entryID)")
        }
    }
}
