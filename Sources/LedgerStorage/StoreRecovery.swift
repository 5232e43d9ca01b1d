import Logging
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// What a `FileLedgerStore` does when it opens, before its journal thread starts: load `index.dat`,
/// cut the current entry log back to its checkpointed (synced) length, replay the journal from the
/// checkpointed position (writing its add records to the entry log again), verifying every CRC,
/// and start a new journal file. A torn or corrupt record at the tail of the last journal file ends
/// the replay and is cut off, with a warning; damage anywhere else refuses to open (`.corrupted`,
/// naming the file, the offset and what to do).
enum StoreRecovery {
    struct Recovered {
        var index: EntryIndex
        var entryLog: EntryLog
        var journal: Journal
        var replayedRecords: Int
    }

    static func recover(directory: DataDirectory, entryLogMaxBytes: Int, logger: Logger) throws(LedgerStoreError) -> Recovered {
        let names = try directory.names()
        let journalIDs = names.compactMap { StoreFileName.parse($0, prefix: "journal-") }.sorted()
        let entryLogIDs = names.compactMap { StoreFileName.parse($0, prefix: "entrylog-") }.sorted()
        let replayFileID: Int64
        let replayOffset: Int64
        let index: EntryIndex
        let entryLog: EntryLog

        if names.contains(StoreFileName.index) {
            let checkpoint = try IndexCheckpoint.load(from: directory)
            replayFileID = checkpoint.journalFileID
            replayOffset = checkpoint.journalOffset
            index = EntryIndex(checkpoint: checkpoint)
            // Entry logs started after the checkpoint hold only unsynced copies of journal records
            // that the replay below writes again.
            for id in entryLogIDs where id > checkpoint.entryLogID {
                logger.info("Removing entry log newer than the index checkpoint; the journal replay rewrites it", metadata: ["entrylog.id": "\(id)"])
                if let error = directory.remove(StoreFileName.entryLog(id)) { throw error }
            }
            guard entryLogIDs.contains(checkpoint.entryLogID) else {
                throw .corrupted(
                    "\(StoreFileName.entryLog(checkpoint.entryLogID)), the current entry log in \(StoreFileName.index), is missing; restore the data directory from a replica")
            }
            var files: [Int64: OpenFile] = [:]
            for id in entryLogIDs where id <= checkpoint.entryLogID {
                files[id] = try directory.open(StoreFileName.entryLog(id), flags: O_RDWR).get()
            }
            let current = files[checkpoint.entryLogID]!
            let size = try current.size().get()
            guard size >= checkpoint.entryLogSizeBytes else {
                throw .corrupted(
                    "\(current.name) is \(size) bytes, shorter than the \(checkpoint.entryLogSizeBytes) synced bytes \(StoreFileName.index) recorded; restore the data directory from a replica")
            }
            if size > checkpoint.entryLogSizeBytes {
                // Unsynced tail written after the checkpoint: the journal replay writes it again.
                if let error = current.truncate(to: checkpoint.entryLogSizeBytes) { throw error }
            }
            for ledger in checkpoint.ledgers {
                for location in ledger.locations where files[location.entryLogID] == nil {
                    throw .corrupted(
                        "\(StoreFileName.entryLog(location.entryLogID)), holding entries of ledger \(ledger.ledgerID), is missing; restore the data directory from a replica")
                }
            }
            entryLog = EntryLog(
                directory: directory, maxBytes: entryLogMaxBytes, files: files, currentID: checkpoint.entryLogID,
                offset: checkpoint.entryLogSizeBytes)
        } else {
            // No checkpoint was ever written, so no journal file was ever deleted: unless one was,
            // the journal holds everything and no entry log is referenced.
            if let first = journalIDs.first, first != 1 {
                throw .corrupted(
                    "\(StoreFileName.index) is missing but the journal starts at \(StoreFileName.journal(first)); restore the data directory from a replica")
            }
            replayFileID = 1
            replayOffset = Int64(OnDiskFormat.fileHeaderBytes)
            index = EntryIndex()
            for id in entryLogIDs {
                if let error = directory.remove(StoreFileName.entryLog(id)) { throw error }
            }
            let newID = (entryLogIDs.last ?? 0) + 1
            let file = try directory.create(StoreFileName.entryLog(newID), magic: OnDiskFormat.entryLogMagic).get()
            entryLog = EntryLog(
                directory: directory, maxBytes: entryLogMaxBytes, files: [newID: file], currentID: newID,
                offset: Int64(OnDiskFormat.fileHeaderBytes))
        }

        let replayIDs = journalIDs.filter { $0 >= replayFileID }
        if let first = replayIDs.first, first != replayFileID {
            throw .corrupted(
                "\(StoreFileName.journal(replayFileID)), where the journal replay starts, is missing; restore the data directory from a replica")
        }
        var replayedRecords = 0
        for (position, id) in replayIDs.enumerated() {
            replayedRecords += try Journal.replay(
                id: id, from: id == replayFileID ? replayOffset : Int64(OnDiskFormat.fileHeaderBytes),
                isLast: position == replayIDs.count - 1, in: directory, logger: logger
            ) { (record, contents, at, journalName) throws(LedgerStoreError) in
                try apply(record, from: contents, at: at, journalName: journalName, to: index, entryLog: entryLog)
            }
        }

        let newJournalID = max(journalIDs.last ?? 0, replayFileID - 1) + 1
        let journal = try Journal.create(id: newJournalID, in: directory)
        return Recovered(index: index, entryLog: entryLog, journal: journal, replayedRecords: replayedRecords)
    }

    /// Applies one replayed journal record to the index (an add is written to the entry log again).
    private static func apply(
        _ record: DecodedRecord, from contents: ByteBuffer, at position: Int, journalName: String, to index: EntryIndex,
        entryLog: EntryLog
    ) throws(LedgerStoreError) {
        switch record.kind {
        case .add:
            let ledger: LedgerState
            if let existing = index[record.ledgerID] {
                // An add after a fence is a recovery add (`append(recovery: true)`), so `fenced` is not checked.
                guard record.entryID == Int64(existing.locations.count) else {
                    throw .corrupted(
                        "\(journalName) offset \(position): add of ledger \(record.ledgerID) entry \(record.entryID) does not follow the index (next entry \(existing.locations.count))")
                }
                ledger = existing
            } else {
                guard record.entryID == 0 else {
                    throw .corrupted(
                        "\(journalName) offset \(position): add of ledger \(record.ledgerID) entry \(record.entryID) for a ledger the index does not know")
                }
                ledger = LedgerState(ledgerID: record.ledgerID)
                index[record.ledgerID] = ledger
            }
            let (written, writeError) = entryLog.write(contents, records: [(position, record.recordLength)])
            if let writeError { throw writeError }
            ledger.locations.append(written[0])
            ledger.lastAddConfirmed = record.entryID
            ledger.nextEntryID = record.entryID + 1
            ledger.isOnDisk = true
        case .fence:
            let ledger = index[record.ledgerID] ?? LedgerState(ledgerID: record.ledgerID)
            index[record.ledgerID] = ledger
            ledger.fenced = true
            ledger.fenceRequested = true
            ledger.isOnDisk = true
        case .delete:
            index[record.ledgerID] = nil
        }
    }
}
