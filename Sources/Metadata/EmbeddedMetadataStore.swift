#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Logging

/// When `EmbeddedMetadataStore` rewrites its log to drop superseded records.
///
/// The log is compacted, on open and after a write, once it holds at least `minimumRecords` records
/// and more than `recordsPerLiveKey` records per live key.
public struct MetadataCompactionPolicy: Sendable, Equatable {
    public var minimumRecords: Int
    public var recordsPerLiveKey: Int

    public init(minimumRecords: Int = 1_000, recordsPerLiveKey: Int = 4) {
        precondition(minimumRecords >= 1 && recordsPerLiveKey >= 1, "compaction thresholds must be positive")
        self.minimumRecords = minimumRecords
        self.recordsPerLiveKey = recordsPerLiveKey
    }

    public static let `default` = MetadataCompactionPolicy()

    func shouldCompact(records: Int, liveKeys: Int) -> Bool {
        records >= minimumRecords && records > recordsPerLiveKey * max(liveKeys, 1)
    }
}

/// What `EmbeddedMetadataStore.init` found and did while opening the log.
public struct MetadataLogRecovery: Sendable, Equatable {
    /// Records read from the log (before compaction).
    public var recordsReplayed: Int
    /// Keys present after the replay.
    public var liveKeys: Int
    /// Bytes of a torn or corrupt last record that were cut off the end of the log.
    public var truncatedBytes: Int
    /// Whether the log was rewritten with one record per live key.
    public var compacted: Bool
    /// Whether there was no usable log and a new, empty one was written.
    public var createdNewLog: Bool
}

/// The durable `MetadataStore`: the whole map lives in memory and every change is appended to
/// `<directory>/metadata.log` and synced (fdatasync) before the call returns.
///
/// An actor: operations run one at a time, so compare-and-set needs no further locking. File I/O is
/// synchronous and short (one pwrite + one fdatasync per change). Lifecycle: `init` creates the
/// directory if needed, takes an exclusive lock on `<directory>/metadata.lock` (one store per directory,
/// across processes), replays the log, truncates a torn last record (logging a warning), and compacts
/// when the log is mostly superseded records; `close()` releases the files and the lock.
///
/// If writing or syncing fails in a way that leaves the file's state unknown, the store stops accepting
/// writes (reads still work) and every write throws `.io` asking for a restart, which replays the log.
/// The byte layout is in `MetadataLogFormat` and docs/ON_DISK_FORMAT.md.
public actor EmbeddedMetadataStore: MetadataStore {
    public static let logFileName = "metadata.log"
    static let compactionFileName = "metadata.log.compacting"
    static let lockFileName = "metadata.lock"

    public nonisolated let directory: String
    /// What opening the log found; also logged.
    public nonisolated let recovery: MetadataLogRecovery

    private let logger: Logger
    private let compactionPolicy: MetadataCompactionPolicy
    private var table: MetadataTable
    private var logDescriptor: Int32
    private var lockDescriptor: Int32
    /// Offset where the next record is written: the end of the last synced record.
    private var logEnd: Int
    /// Records in the current log file (one per live key right after a compaction).
    private var recordCount: Int
    /// Set when a failed write or sync left the file in an unknown state; writes are refused from then on.
    private var writeFailure: String?
    private var isClosed = false

    var logPath: String { Self.path(directory, Self.logFileName) }

    public init(
        directory: String,
        logger: Logger = Logger(label: "magnetar.metadata"),
        compactionPolicy: MetadataCompactionPolicy = .default
    ) throws {
        var logger = logger
        logger[metadataKey: "metadata.directory"] = "\(directory)"
        let opened = try Self.open(directory: directory, logger: logger, compactionPolicy: compactionPolicy)
        self.directory = directory
        self.logger = logger
        self.compactionPolicy = compactionPolicy
        self.table = opened.table
        self.logDescriptor = opened.log.descriptor
        self.lockDescriptor = opened.lockDescriptor
        self.logEnd = opened.log.end
        self.recordCount = opened.log.records
        self.recovery = opened.recovery
    }

    deinit {
        if !isClosed {
            FileIO.close(logDescriptor)
            FileIO.close(lockDescriptor)
        }
    }

    // MARK: - MetadataStore

    public func get(_ key: String) throws -> VersionedValue? {
        try checkOpen()
        return table.get(key)
    }

    @discardableResult
    public func put(_ key: String, value: [UInt8], expectedVersion: Int64?) throws -> Int64 {
        try checkOpen()
        let record = try table.preparePut(key, value: value, expectedVersion: expectedVersion)
        try commit(record)
        guard case .put(_, _, let version) = record else { preconditionFailure("put produced \(record)") }
        return version
    }

    public func delete(_ key: String, expectedVersion: Int64?) throws {
        try checkOpen()
        guard let record = try table.prepareDelete(key, expectedVersion: expectedVersion) else { return }
        try commit(record)
    }

    public func list(prefix: String) throws -> [String] {
        try checkOpen()
        return table.list(prefix: prefix)
    }

    public func increment(_ key: String) throws -> Int64 {
        try checkOpen()
        let (record, newValue) = try table.prepareIncrement(key)
        try commit(record)
        return newValue
    }

    public func close() {
        guard !isClosed else { return }
        isClosed = true
        FileIO.close(logDescriptor)
        FileIO.close(lockDescriptor)  // releases the directory lock
        logger.debug("metadata store closed")
    }

    // MARK: - Writing

    /// Number of records in the current log file (for tests and diagnostics).
    var logRecordCount: Int { recordCount }

    private func checkOpen() throws {
        if isClosed { throw MetadataStoreError.closed }
    }

    /// Appends `record`, syncs it, then applies it to the map; compacts afterwards if due.
    private func commit(_ record: MetadataRecord) throws {
        if let writeFailure {
            throw MetadataStoreError.io(
                "metadata store refuses writes after an earlier failure (\(writeFailure)); "
                    + "restart the broker to reload \(logPath)")
        }
        let bytes = MetadataLogFormat.encode(record)
        do {
            try FileIO.write(logDescriptor, bytes, at: logEnd, path: logPath)
        } catch {
            // Cut off the partial record so the log stays a clean run of records.
            do {
                try FileIO.truncate(logDescriptor, to: logEnd, path: logPath)
            } catch let truncateError {
                fail("\(error); then \(truncateError)")
            }
            throw error
        }
        do {
            try FileIO.syncData(logDescriptor, path: logPath)
        } catch {
            // After a failed fdatasync the kernel may have dropped the dirty pages: the file's
            // contents are unknown, so no further write may build on them.
            fail("\(error)")
            throw error
        }
        logEnd += bytes.count
        recordCount += 1
        table.apply(record)
        if compactionPolicy.shouldCompact(records: recordCount, liveKeys: table.count) {
            compact()
        }
    }

    private func fail(_ reason: String) {
        writeFailure = reason
        logger.error("metadata log write failed, store is read-only until restart", metadata: ["error": "\(reason)"])
    }

    /// Rewrites the log with one record per live key. Failures before the new file replaces the old one
    /// only cost disk space, so they are logged and the old log stays in use.
    private func compact() {
        let before = recordCount
        switch Self.writeCompactedLog(directory: directory, table: table) {
        case .success(let log):
            FileIO.close(logDescriptor)
            adopt(log)
            logger.info(
                "metadata log compacted",
                metadata: ["metadata.records.before": "\(before)", "metadata.records.after": "\(log.records)"])
        case .failure(.notSwapped(let error)):
            logger.warning("metadata log compaction failed, keeping the current log", metadata: ["error": "\(error)"])
        case .failure(.swappedButNotDurable(let log, let error)):
            FileIO.close(logDescriptor)
            adopt(log)
            fail("\(error)")
        }
    }

    private func adopt(_ log: OpenLog) {
        logDescriptor = log.descriptor
        logEnd = log.end
        recordCount = log.records
    }

    // MARK: - Opening

    struct OpenLog {
        var descriptor: Int32
        var end: Int
        var records: Int
    }

    private struct Opened {
        var table: MetadataTable
        var log: OpenLog
        var lockDescriptor: Int32
        var recovery: MetadataLogRecovery
    }

    static func path(_ directory: String, _ name: String) -> String {
        directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }

    private static func open(
        directory: String, logger: Logger, compactionPolicy: MetadataCompactionPolicy
    ) throws -> Opened {
        try FileIO.makeDirectories(directory)
        let lockPath = path(directory, lockFileName)
        let lockDescriptor = try FileIO.open(lockPath, flags: O_RDWR | O_CREAT)
        do {
            try FileIO.lockExclusive(lockDescriptor, path: lockPath)
            var (table, log, recovery) = try replay(directory: directory, logger: logger)
            if compactionPolicy.shouldCompact(records: log.records, liveKeys: table.count) {
                switch writeCompactedLog(directory: directory, table: table) {
                case .success(let compacted):
                    FileIO.close(log.descriptor)
                    log = compacted
                    recovery.compacted = true
                case .failure(.notSwapped(let error)):
                    logger.warning(
                        "metadata log compaction failed, keeping the current log", metadata: ["error": "\(error)"])
                case .failure(.swappedButNotDurable(let compacted, let error)):
                    FileIO.close(log.descriptor)
                    FileIO.close(compacted.descriptor)
                    throw error
                }
            }
            logger.info(
                "metadata store opened",
                metadata: [
                    "metadata.records": "\(recovery.recordsReplayed)",
                    "metadata.keys": "\(recovery.liveKeys)",
                    "metadata.truncatedBytes": "\(recovery.truncatedBytes)",
                    "metadata.compacted": "\(recovery.compacted)",
                ])
            return Opened(table: table, log: log, lockDescriptor: lockDescriptor, recovery: recovery)
        } catch {
            FileIO.close(lockDescriptor)
            throw error
        }
    }

    /// Opens (or creates) the log, reads every record, truncates a torn tail.
    private static func replay(
        directory: String, logger: Logger
    ) throws -> (MetadataTable, OpenLog, MetadataLogRecovery) {
        let logPath = path(directory, logFileName)
        // A leftover from a compaction that crashed before its rename: the log itself is authoritative.
        let compactionPath = path(directory, compactionFileName)
        if FileIO.exists(compactionPath) {
            try FileIO.remove(compactionPath)
            try FileIO.syncDirectory(directory)
        }
        var recovery = MetadataLogRecovery(
            recordsReplayed: 0, liveKeys: 0, truncatedBytes: 0, compacted: false, createdNewLog: false)
        guard FileIO.exists(logPath) else {
            switch writeCompactedLog(directory: directory, table: MetadataTable()) {
            case .success(let log):
                recovery.createdNewLog = true
                return (MetadataTable(), log, recovery)
            case .failure(.notSwapped(let error)):
                throw error
            case .failure(.swappedButNotDurable(let log, let error)):
                FileIO.close(log.descriptor)
                throw error
            }
        }

        let descriptor = try FileIO.open(logPath, flags: O_RDWR)
        do {
            let bytes = try FileIO.readAll(descriptor, path: logPath)
            let scan: MetadataLogFormat.Scan
            do {
                scan = try MetadataLogFormat.scan(bytes)
            } catch {
                throw scanFailure(error, path: logPath)
            }
            if scan.header == .unwritten {
                // Creation crashed before the header was synced; there cannot be any records.
                try FileIO.truncate(descriptor, to: 0, path: logPath)
                try FileIO.write(descriptor, MetadataLogFormat.header(), at: 0, path: logPath)
                try FileIO.syncData(descriptor, path: logPath)
                try FileIO.syncDirectory(directory)
                recovery.createdNewLog = true
                let log = OpenLog(descriptor: descriptor, end: MetadataLogFormat.headerBytes, records: 0)
                return (MetadataTable(), log, recovery)
            }
            if scan.tornBytes > 0 {
                logger.warning(
                    "metadata log ends with a torn or corrupt record, truncating it",
                    metadata: [
                        "metadata.path": "\(logPath)",
                        "metadata.offset": "\(scan.validEnd)",
                        "metadata.truncatedBytes": "\(scan.tornBytes)",
                    ])
                try FileIO.truncate(descriptor, to: scan.validEnd, path: logPath)
                try FileIO.syncData(descriptor, path: logPath)
                recovery.truncatedBytes = scan.tornBytes
            }
            var table = MetadataTable()
            for record in scan.records {
                table.apply(record)
            }
            recovery.recordsReplayed = scan.records.count
            recovery.liveKeys = table.count
            return (table, OpenLog(descriptor: descriptor, end: scan.validEnd, records: scan.records.count), recovery)
        } catch {
            FileIO.close(descriptor)
            throw error
        }
    }

    private static func scanFailure(_ error: MetadataLogFormat.ScanError, path: String) -> MetadataStoreError {
        switch error {
        case .notAMetadataLog:
            return .io(
                "metadata store: \(path) is not a Magnetar metadata log (bad magic); "
                    + "move it away or point the broker at another directory")
        case .unsupportedFormatVersion(let version):
            return .io(
                "metadata store: \(path) has format version \(version), this build reads version "
                    + "\(MetadataLogFormat.formatVersion); run a newer magnetar")
        case .corruptRecord(let offset):
            return .io(
                "metadata store: \(path) is corrupt at byte \(offset) and valid data follows, so it is not a "
                    + "torn write; restore the directory from a backup (truncating the file at that offset "
                    + "would lose the later records)")
        case .undecodableRecord(let offset):
            return .io(
                "metadata store: \(path) has a record at byte \(offset) whose checksum matches but whose "
                    + "contents do not parse; it was written by an incompatible build, "
                    + "run the matching magnetar version")
        }
    }

    // MARK: - Compaction

    enum CompactionFailure: Error {
        /// The old log is still in place and in use.
        case notSwapped(MetadataStoreError)
        /// The new log replaced the old one but the directory sync failed: the rename may not survive a crash.
        case swappedButNotDurable(OpenLog, MetadataStoreError)
    }

    /// Writes `metadata.log.compacting` with one record per live key, syncs it, renames it over
    /// `metadata.log` and syncs the directory. Returns the new log, open for appending.
    static func writeCompactedLog(directory: String, table: MetadataTable) -> Result<OpenLog, CompactionFailure> {
        let logPath = path(directory, logFileName)
        let compactionPath = path(directory, compactionFileName)
        let records = table.snapshotRecords()
        var bytes = MetadataLogFormat.header()
        for record in records {
            bytes += MetadataLogFormat.encode(record)
        }
        let descriptor: Int32
        do throws(MetadataStoreError) {
            descriptor = try FileIO.open(compactionPath, flags: O_RDWR | O_CREAT | O_TRUNC)
        } catch {
            return .failure(.notSwapped(error))
        }
        do throws(MetadataStoreError) {
            try FileIO.write(descriptor, bytes, at: 0, path: compactionPath)
            try FileIO.syncData(descriptor, path: compactionPath)
            try FileIO.rename(compactionPath, to: logPath)
        } catch {
            FileIO.close(descriptor)
            try? FileIO.remove(compactionPath)
            return .failure(.notSwapped(error))
        }
        let log = OpenLog(descriptor: descriptor, end: bytes.count, records: records.count)
        do throws(MetadataStoreError) {
            try FileIO.syncDirectory(directory)
        } catch {
            return .failure(.swappedButNotDurable(log, error))
        }
        return .success(log)
    }
}
