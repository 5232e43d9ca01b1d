/// A value stored under a metadata key, with the version it was written at.
///
/// A pure value. Versions start at 0 when a key is created and go up by 1 with every put of that key;
/// deleting the key and creating it again starts over at 0 (as ZooKeeper and Pulsar's metadata store do).
public struct VersionedValue: Sendable, Equatable {
    public var value: [UInt8]
    public var version: Int64

    public init(value: [UInt8], version: Int64) {
        self.value = value
        self.version = version
    }
}

/// Why a `MetadataStore` operation failed.
public enum MetadataStoreError: Error, Equatable, CustomStringConvertible {
    /// A compare-and-set failed: `expected` is the version the caller asked for (-1 = "must not exist"),
    /// `actual` the key's current version (nil = the key does not exist).
    case badVersion(key: String, expected: Int64?, actual: Int64?)
    /// The key does not exist (delete with an explicit expected version).
    case notFound(key: String)
    /// The store could not do its job: an I/O error, a corrupt or foreign file, a limit exceeded.
    /// The message says what failed and what the operator can do about it.
    case io(String)
    /// The store was closed with `close()`.
    case closed

    public var description: String {
        switch self {
        case .badVersion(let key, let expected, let actual):
            let expectedText = expected.map { $0 == -1 ? "no existing key" : "version \($0)" } ?? "any version"
            let actualText = actual.map { "version \($0)" } ?? "no such key"
            return "metadata key '\(key)': expected \(expectedText), found \(actualText)"
        case .notFound(let key):
            return "metadata key '\(key)' does not exist"
        case .io(let message):
            return message
        case .closed:
            return "metadata store is closed"
        }
    }
}

/// Metadata (tenants, namespaces, ledger lists, cursor ledgers, ownership) behind one interface.
///
/// Keys are slash-separated paths such as `/managed-ledgers/public/default/persistent/t1`; values are
/// opaque bytes. Every write is linearizable with respect to the other operations on the same store
/// and, for durable implementations, on disk before the call returns.
public protocol MetadataStore: Sendable {
    /// The value and version at `key`, or nil when the key does not exist.
    func get(_ key: String) async throws -> VersionedValue?

    /// expectedVersion: nil = unconditional; -1 = key must not exist; otherwise must equal the current version.
    /// Returns the new version (versions start at 0 and go up by 1 per put of that key). Durable (fsync) before it returns.
    @discardableResult func put(_ key: String, value: [UInt8], expectedVersion: Int64?) async throws -> Int64

    /// expectedVersion as above (nil = unconditional). Deleting a missing key with nil is not an error.
    /// With -1 a missing key is also fine (nothing to delete) and an existing one fails with `badVersion`;
    /// with a version >= 0 a missing key fails with `notFound`.
    func delete(_ key: String, expectedVersion: Int64?) async throws

    /// Keys starting with prefix, sorted.
    func list(prefix: String) async throws -> [String]

    /// Atomically increments a counter stored at key (absent = 0) and returns the new value. Durable.
    /// The counter is stored as 8 bytes, a big-endian two's-complement Int64 (see `MetadataCounter`).
    func increment(_ key: String) async throws -> Int64

    /// Releases the store's resources; every later call throws `MetadataStoreError.closed`.
    func close() async
}

/// The byte encoding of counters written by `MetadataStore.increment(_:)`.
public enum MetadataCounter {
    /// The stored form of `value`: 8 bytes, big-endian.
    public static func encode(_ value: Int64) -> [UInt8] {
        let bits = UInt64(bitPattern: value)
        return (0..<8).map { UInt8(truncatingIfNeeded: bits >> (56 - 8 * UInt64($0))) }
    }

    /// The counter stored in `bytes`, or nil when they are not 8 bytes long.
    public static func decode(_ bytes: [UInt8]) -> Int64? {
        guard bytes.count == 8 else { return nil }
        var bits: UInt64 = 0
        for byte in bytes { bits = bits << 8 | UInt64(byte) }
        return Int64(bitPattern: bits)
    }

    /// The value `increment(_:)` stores next: the counter in `stored` (nil = absent = 0) plus one.
    /// Throws `.io` when `stored` is not an 8-byte counter or the counter is at Int64.max.
    public static func incremented(key: String, stored: [UInt8]?) throws -> Int64 {
        var counter: Int64 = 0
        if let stored {
            guard let decoded = decode(stored) else {
                throw MetadataStoreError.io(
                    "metadata key '\(key)' holds \(stored.count) bytes, not an 8-byte counter; "
                        + "it was written with put(), so increment() cannot use it: "
                        + "pick another key or delete this one")
            }
            counter = decoded
        }
        let (newValue, overflow) = counter.addingReportingOverflow(1)
        if overflow {
            throw MetadataStoreError.io("metadata counter '\(key)' is at Int64.max and cannot be incremented")
        }
        return newValue
    }
}
