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
    /// The same keys in UTF-8 byte order, so `list(prefix:)` visits only the matching range: with
    /// 100,000 topics a topic load lists its cursors, and a scan of every key made loading quadratic.
    private var orderedKeys = OrderedKeys()

    var count: Int { entries.count }

    func get(_ key: String) -> VersionedValue? {
        entries[key]
    }

    /// The keys that start with `prefix`, sorted.
    func list(prefix: String) -> [String] {
        orderedKeys.keys(withPrefix: prefix).filter { $0.hasPrefix(prefix) }.sorted()
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
            if entries.updateValue(VersionedValue(value: value, version: version), forKey: key) == nil {
                orderedKeys.insert(key)
            }
        case .delete(let key, _):
            if entries.removeValue(forKey: key) != nil {
                orderedKeys.remove(key)
            }
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

/// A set of strings kept in UTF-8 byte order as sorted chunks of at most `maxChunkCount` (a one-level
/// B-tree): insert and remove cost O(log n + chunk size), listing a prefix O(log n + matches).
/// A pure value.
struct OrderedKeys: Sendable, Equatable {
    private(set) var chunks: [[String]] = []
    static let maxChunkCount = 512

    var count: Int { chunks.reduce(0) { $0 + $1.count } }

    static func precedes(_ a: String, _ b: String) -> Bool {
        a.utf8.lexicographicallyPrecedes(b.utf8)
    }

    /// The first chunk whose last key is not before `key` (`chunks.count` if none).
    private func chunkIndex(for key: String) -> Int {
        var low = 0
        var high = chunks.count
        while low < high {
            let middle = (low + high) / 2
            if Self.precedes(chunks[middle][chunks[middle].count - 1], key) { low = middle + 1 } else { high = middle }
        }
        return low
    }

    /// The first index in `chunk` whose key is not before `key`.
    private static func lowerBound(_ key: String, in chunk: [String]) -> Int {
        var low = 0
        var high = chunk.count
        while low < high {
            let middle = (low + high) / 2
            if precedes(chunk[middle], key) { low = middle + 1 } else { high = middle }
        }
        return low
    }

    mutating func insert(_ key: String) {
        guard !chunks.isEmpty else {
            chunks = [[key]]
            return
        }
        let chunk = min(chunkIndex(for: key), chunks.count - 1)
        let index = Self.lowerBound(key, in: chunks[chunk])
        if index < chunks[chunk].count, chunks[chunk][index] == key { return }
        chunks[chunk].insert(key, at: index)
        if chunks[chunk].count > Self.maxChunkCount {
            let half = chunks[chunk].count / 2
            let upper = Array(chunks[chunk][half...])
            chunks[chunk].removeSubrange(half...)
            chunks.insert(upper, at: chunk + 1)
        }
    }

    mutating func remove(_ key: String) {
        let chunk = chunkIndex(for: key)
        guard chunk < chunks.count else { return }
        let index = Self.lowerBound(key, in: chunks[chunk])
        guard index < chunks[chunk].count, chunks[chunk][index] == key else { return }
        chunks[chunk].remove(at: index)
        if chunks[chunk].isEmpty { chunks.remove(at: chunk) }
    }

    /// Every key whose UTF-8 bytes start with those of `prefix`, in UTF-8 order.
    func keys(withPrefix prefix: String) -> [String] {
        var result: [String] = []
        var chunk = chunkIndex(for: prefix)
        guard chunk < chunks.count else { return result }
        var index = Self.lowerBound(prefix, in: chunks[chunk])
        while chunk < chunks.count {
            while index < chunks[chunk].count {
                let key = chunks[chunk][index]
                guard key.utf8.starts(with: prefix.utf8) else { return result }
                result.append(key)
                index += 1
            }
            chunk += 1
            index = 0
        }
        return result
    }

    /// Every key, in UTF-8 order.
    var all: [String] { chunks.flatMap { $0 } }
}
