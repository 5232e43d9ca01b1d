// TEMPORARY stub until the Metadata helper delivers; delete then.
import Logging
public struct VersionedValue: Sendable, Equatable { public var value: [UInt8]; public var version: Int64 }
public enum MetadataStoreError: Error, Equatable { case badVersion(key: String, expected: Int64?, actual: Int64?), notFound(key: String), io(String), closed }
public protocol MetadataStore: Sendable {
    func get(_ key: String) async throws -> VersionedValue?
    @discardableResult func put(_ key: String, value: [UInt8], expectedVersion: Int64?) async throws -> Int64
    func delete(_ key: String, expectedVersion: Int64?) async throws
    func list(prefix: String) async throws -> [String]
    func increment(_ key: String) async throws -> Int64
    func close() async
}
public actor InMemoryMetadataStore: MetadataStore {
    var map: [String: VersionedValue] = [:]
    public init() {}
    public func get(_ key: String) async throws -> VersionedValue? { map[key] }
    @discardableResult public func put(_ key: String, value: [UInt8], expectedVersion: Int64?) async throws -> Int64 {
        let current = map[key]?.version
        if let e = expectedVersion { if e == -1 ? current != nil : current != e { throw MetadataStoreError.badVersion(key: key, expected: e, actual: current) } }
        let v = (current ?? -1) + 1; map[key] = VersionedValue(value: value, version: v); return v
    }
    public func delete(_ key: String, expectedVersion: Int64?) async throws { map[key] = nil }
    public func list(prefix: String) async throws -> [String] { map.keys.filter { $0.hasPrefix(prefix) }.sorted() }
    public func increment(_ key: String) async throws -> Int64 { let n = (map[key].flatMap { Int64(String(decoding: $0.value, as: UTF8.self)) } ?? 0) + 1; map[key] = VersionedValue(value: Array(String(n).utf8), version: 0); return n }
    public func close() async {}
}
public typealias EmbeddedMetadataStore = _StubEmbedded
public actor _StubEmbedded: MetadataStore {
    let inner = InMemoryMetadataStore()
    public init(directory: String, logger: Logger) throws {}
    public func get(_ key: String) async throws -> VersionedValue? { try await inner.get(key) }
    public func put(_ key: String, value: [UInt8], expectedVersion: Int64?) async throws -> Int64 { try await inner.put(key, value: value, expectedVersion: expectedVersion) }
    public func delete(_ key: String, expectedVersion: Int64?) async throws { try await inner.delete(key, expectedVersion: expectedVersion) }
    public func list(prefix: String) async throws -> [String] { try await inner.list(prefix: prefix) }
    public func increment(_ key: String) async throws -> Int64 { try await inner.increment(key) }
    public func close() async {}
}
