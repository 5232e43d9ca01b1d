/// One change to the metadata map: what the embedded store appends to its log and what both stores apply.
///
/// A pure value. `version` is the key's version after a put, or the version the key had when it was deleted.
enum MetadataRecord: Equatable, Sendable {
    case put(key: String, value: [UInt8], version: Int64)
    case delete(key: String, version: Int64)

    var key: String {
        switch self {
        case .put(let key, _, _), .delete(let key, _):
            return key
        }
    }
}

/// Limits that keep one record, and a replay of the log, bounded.
enum MetadataLimits {
    /// Keys are paths; 16 KiB is far above any Pulsar path.
    static let maxKeyBytes = 16 * 1024
    /// ZooKeeper's default jute.maxbuffer is ~1 MiB; we allow more, but not unbounded.
    static let maxValueBytes = 16 * 1024 * 1024
}

/// The in-memory map of keys to versioned values plus the compare-and-set rules shared by every store.
///
/// A pure value owned by the store actor that holds it. `prepare…` methods check an operation against the
/// current contents and return the record that performs it without changing anything; `apply` changes
/// the map. The embedded store writes the record to disk between the two.
struct MetadataTable: Sendable {
    private(set) var entries: [String: VersionedValue] = [:]

    var count: Int { entries.count }

    func get(_ key: String) -> VersionedValue? {
        entries[key]
    }

    func list(prefix: String) -> [String] {
        entries.keys.filter { $0.hasPrefix(prefix) }.sorted()
    }

    func preparePut(_ key: String, value: [UInt8], expectedVersion: Int64?) throws -> MetadataRecord {
        try Self.checkLimits(key: key, valueCount: value.count)
        let current = entries[key]
        if let expectedVersion, expectedVersion != (current?.version ?? -1) {
            throw MetadataStoreError.badVersion(key: key, expected: expectedVersion, actual: current?.version)
        }
        let version = current.map { $0.version + 1 } ?? 0
        return .put(key: key, value: value, version: version)
    }

    /// nil when there is nothing to delete and that is allowed.
    func prepareDelete(_ key: String, expectedVersion: Int64?) throws -> MetadataRecord? {
        guard let current = entries[key] else {
            if let expectedVersion, expectedVersion >= 0 {
                throw MetadataStoreError.notFound(key: key)
            }
            return nil
        }
        if let expectedVersion, expectedVersion != current.version {
            throw MetadataStoreError.badVersion(key: key, expected: expectedVersion, actual: current.version)
        }
        return .delete(key: key, version: current.version)
    }

    /// The record that stores the incremented counter, and the counter's new value.
    func prepareIncrement(_ key: String) throws -> (record: MetadataRecord, newValue: Int64) {
        let current = entries[key]
        let newValue = try MetadataCounter.incremented(key: key, stored: current?.value)
        let record = try preparePut(
            key, value: MetadataCounter.encode(newValue), expectedVersion: current?.version ?? -1)
        return (record, newValue)
    }

    mutating func apply(_ record: MetadataRecord) {
        switch record {
        case .put(let key, let value, let version):
            entries[key] = VersionedValue(value: value, version: version)
        case .delete(let key, _):
            entries[key] = nil
        }
    }

    /// One put record per live key: the log that rebuilds exactly this table. Sorted for a stable file.
    func snapshotRecords() -> [MetadataRecord] {
        entries.keys.sorted().map { key in
            let entry = entries[key]!
            return .put(key: key, value: entry.value, version: entry.version)
        }
    }

    static func checkLimits(key: String, valueCount: Int) throws {
        let keyCount = key.utf8.count
        if keyCount > MetadataLimits.maxKeyBytes {
            throw MetadataStoreError.io(
                "metadata key of \(keyCount) bytes exceeds the limit of \(MetadataLimits.maxKeyBytes) bytes; "
                    + "use a shorter key")
        }
        if valueCount > MetadataLimits.maxValueBytes {
            throw MetadataStoreError.io(
                "metadata value of \(valueCount) bytes for key '\(key)' exceeds the limit of "
                    + "\(MetadataLimits.maxValueBytes) bytes; split it across several keys")
        }
    }
}
