import Foundation
import Testing

@testable import Metadata

/// The store implementations every shared test runs over. `etcd` only when an `etcd` binary is
/// installed (see `EtcdTestServer`); the suite must then carry the `.etcdServer` trait.
enum StoreKind: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case inMemory
    case embedded
    case etcd

    static var allCases: [StoreKind] {
        EtcdTestServer.isAvailable ? [.inMemory, .embedded, .etcd] : [.inMemory, .embedded]
    }

    var testDescription: String { rawValue }
}

/// A fresh directory under the system temp directory, removed by `removeTemporaryDirectory`.
func makeTemporaryDirectory() -> String {
    let path = FileManager.default.temporaryDirectory
        .appendingPathComponent("magnetar-metadata-\(UUID().uuidString)").path
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

func removeTemporaryDirectory(_ path: String) {
    try? FileManager.default.removeItem(atPath: path)
}

/// Runs `body` with a new store of `kind`; closes it and removes its directory afterwards.
func withStore(
    _ kind: StoreKind, _ body: (any MetadataStore) async throws -> Void
) async throws {
    let store: any MetadataStore
    var directory: String?
    switch kind {
    case .inMemory:
        store = InMemoryMetadataStore()
    case .embedded:
        let path = makeTemporaryDirectory()
        directory = path
        store = try EmbeddedMetadataStore(directory: path)
    case .etcd:
        store = try makeEtcdStore()
    }
    defer {
        if let directory { removeTemporaryDirectory(directory) }
    }
    do {
        try await body(store)
    } catch {
        await store.close()
        throw error
    }
    await store.close()
}

/// The error `body` throws, as a MetadataStoreError (nil when it does not throw).
func metadataError(_ body: () async throws -> Void) async -> MetadataStoreError? {
    do {
        try await body()
        return nil
    } catch let error as MetadataStoreError {
        return error
    } catch {
        Issue.record("unexpected error type: \(error)")
        return nil
    }
}

func fileBytes(_ path: String) -> [UInt8] {
    [UInt8](FileManager.default.contents(atPath: path)!)
}

func writeFileBytes(_ path: String, _ bytes: [UInt8]) {
    #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
}
