import Foundation
import NIOCore
import Testing

@testable import TieredStorage

/// A ledger offloaded into the filesystem driver and read back, over real files.
@Suite struct LedgerOffloaderTests {
    struct SourceFailed: Error {}

    static func entry(_ id: Int64) -> ByteBuffer {
        ByteBuffer(string: "ledger-entry-\(id)-" + String(repeating: "p", count: Int(id % 300)))
    }

    func temporaryDirectory() -> String {
        NSTemporaryDirectory() + "offload-test-\(UUID().uuidString)"
    }

    func makeOffloader(_ root: String) throws -> LedgerOffloader {
        LedgerOffloader(store: try FileSystemObjectStore(root: root), driver: "filesystem", container: root, blockSizeBytes: 4096)
    }

    @Test func entriesReadBackFromAnyRangeAcrossBlocks() async throws {
        let root = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let offloader = try makeOffloader(root)
        let location = try await offloader.offload(ledgerID: 9, entryCount: 1000, readBatch: 64) { first, last in
            (first...last).map(Self.entry)
        }
        let files = try FileManager.default.contentsOfDirectory(atPath: root).sorted()
        #expect(files == [location.dataKey, location.indexKey].sorted())
        let index = try await offloader.index(of: location)
        #expect(index.entryCount == 1000 && index.blocks.count > 10)
        // A fresh offloader (another broker, a restart) reads the index from the tier.
        let reader = try makeOffloader(root)
        for (first, last) in [(0, 0), (0, 999), (137, 512), (998, 999), (400, 400)] as [(Int64, Int64)] {
            let read = try await reader.readEntries(location, first: first, last: last)
            #expect(read == (first...last).map(Self.entry), "entries \(first)-\(last)")
        }
        await #expect(throws: TieredStorageError.self) { try await reader.readEntries(location, first: 999, last: 1000) }
        try await reader.delete(location)
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).isEmpty)
    }

    @Test func aDamagedDataObjectIsDetectedNotDelivered() async throws {
        let root = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let location = try await makeOffloader(root).offload(ledgerID: 3, entryCount: 200) { first, last in (first...last).map(Self.entry) }
        let path = root + "/" + location.dataKey
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes[bytes.count / 2] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: path))
        let reader = try makeOffloader(root)
        await #expect(throws: TieredStorageError.self) { try await reader.readEntries(location, first: 0, last: 199) }
        // Blocks before the damaged one still read.
        #expect(try await reader.readEntries(location, first: 0, last: 5) == (0...5).map(Self.entry))
    }

    @Test func aFailedOffloadLeavesNothingBehind() async throws {
        let root = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let offloader = try makeOffloader(root)
        await #expect(throws: TieredStorageError.self) {
            try await offloader.offload(ledgerID: 5, entryCount: 500, readBatch: 100) { first, last in
                if first >= 300 { throw SourceFailed() }
                return (first...last).map(Self.entry)
            }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).isEmpty)
    }

    @Test func keysThatAreNotFileNamesAreRefused() throws {
        let store = try FileSystemObjectStore(root: temporaryDirectory())
        defer { try? FileManager.default.removeItem(atPath: store.root) }
        for key in ["", "../escape", ".hidden", "a/b", "spaces are not"] {
            #expect(throws: TieredStorageError.self) { try store.path(key) }
        }
        #expect(try store.path("6f1e-ledger-12-index") == store.root + "/6f1e-ledger-12-index")
    }
}
