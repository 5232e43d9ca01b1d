/// A `MetadataStore` that keeps everything in memory and loses it when released.
///
/// An actor: every operation runs on it, one at a time. Same compare-and-set rules as
/// `EmbeddedMetadataStore`, so tests and single-process setups can use either.
public actor InMemoryMetadataStore: MetadataStore {
    private var table = MetadataTable()
    private var isClosed = false

    public init() {}

    public func get(_ key: String) throws -> VersionedValue? {
        try checkOpen()
        return table.get(key)
    }

    @discardableResult
    public func put(_ key: String, value: [UInt8], expectedVersion: Int64?) throws -> Int64 {
        try checkOpen()
        let record = try table.preparePut(key, value: value, expectedVersion: expectedVersion)
        table.apply(record)
        guard case .put(_, _, let version) = record else { preconditionFailure("put produced \(record)") }
        return version
    }

    public func delete(_ key: String, expectedVersion: Int64?) throws {
        try checkOpen()
        if let record = try table.prepareDelete(key, expectedVersion: expectedVersion) {
            table.apply(record)
        }
    }

    public func list(prefix: String) throws -> [String] {
        try checkOpen()
        return table.list(prefix: prefix)
    }

    public func increment(_ key: String) throws -> Int64 {
        try checkOpen()
        let (record, newValue) = try table.prepareIncrement(key)
        table.apply(record)
        return newValue
    }

    public func close() {
        isClosed = true
    }

    private func checkOpen() throws {
        if isClosed { throw MetadataStoreError.closed }
    }
}
