import Testing

@testable import Metadata

/// Durability and recovery of the on-disk store.
@Suite struct EmbeddedMetadataStoreTests {
    /// Runs `body` with a fresh directory that is removed afterwards.
    func withDirectory(_ body: (String) async throws -> Void) async rethrows {
        let directory = makeTemporaryDirectory()
        defer { removeTemporaryDirectory(directory) }
        try await body(directory)
    }

    func logPath(_ directory: String) -> String {
        directory + "/" + EmbeddedMetadataStore.logFileName
    }

    /// Writes three keys and closes the store; returns the log's size after each record.
    func writeThreeKeys(_ directory: String) async throws -> [Int] {
        let store = try EmbeddedMetadataStore(directory: directory)
        var sizes: [Int] = []
        for (index, key) in ["/a", "/b", "/c"].enumerated() {
            try await store.put(key, value: [UInt8(index)], expectedVersion: -1)
            sizes.append(fileBytes(logPath(directory)).count)
        }
        await store.close()
        return sizes
    }

    @Test func createsTheDirectoryAndAnEmptyLog() async throws {
        try await withDirectory { (root) async throws in
            let directory = root + "/nested/metadata"
            let store = try EmbeddedMetadataStore(directory: directory)
            #expect(store.recovery.createdNewLog)
            #expect(fileBytes(logPath(directory)) == MetadataLogFormat.header())
            await store.close()
        }
    }

    @Test func reopenKeepsDataAndVersions() async throws {
        try await withDirectory { (directory) async throws in
            let store = try EmbeddedMetadataStore(directory: directory)
            try await store.put("/tenants/public", value: Array("p".utf8), expectedVersion: -1)
            try await store.put("/tenants/public", value: Array("p2".utf8), expectedVersion: 0)
            try await store.put("/tenants/gone", value: [9], expectedVersion: nil)
            try await store.delete("/tenants/gone", expectedVersion: 0)
            _ = try await store.increment("/counters/ledger")
            _ = try await store.increment("/counters/ledger")
            try await store.put("/empty", value: [], expectedVersion: nil)
            await store.close()

            let reopened = try EmbeddedMetadataStore(directory: directory)
            #expect(!reopened.recovery.createdNewLog)
            #expect(reopened.recovery.recordsReplayed == 7)
            #expect(reopened.recovery.liveKeys == 3)
            #expect(reopened.recovery.truncatedBytes == 0)
            #expect(try await reopened.get("/tenants/public") == VersionedValue(value: Array("p2".utf8), version: 1))
            #expect(try await reopened.get("/tenants/gone") == nil)
            #expect(try await reopened.get("/empty") == VersionedValue(value: [], version: 0))
            #expect(try await reopened.list(prefix: "/") == ["/counters/ledger", "/empty", "/tenants/public"])
            // Versions and counters continue where they were.
            #expect(try await reopened.increment("/counters/ledger") == 3)
            #expect(
                await metadataError { try await reopened.put("/tenants/public", value: [], expectedVersion: 0) }
                    == .badVersion(key: "/tenants/public", expected: 0, actual: 1))
            #expect(try await reopened.put("/tenants/public", value: [], expectedVersion: 1) == 2)
            await reopened.close()
        }
    }

    @Test func tornLastRecordIsTruncatedAndTheRestSurvives() async throws {
        try await withDirectory { (directory) async throws in
            let sizes = try await writeThreeKeys(directory)
            // A fourth record of which only part reached the disk.
            let record = MetadataLogFormat.encode(.put(key: "/d", value: [1, 2, 3, 4], version: 0))
            let torn = Array(record.prefix(record.count - 3))
            writeFileBytes(logPath(directory), fileBytes(logPath(directory)) + torn)

            let store = try EmbeddedMetadataStore(directory: directory)
            #expect(store.recovery.truncatedBytes == torn.count)
            #expect(store.recovery.recordsReplayed == 3)
            #expect(fileBytes(logPath(directory)).count == sizes[2])
            #expect(try await store.list(prefix: "/") == ["/a", "/b", "/c"])
            #expect(try await store.get("/c") == VersionedValue(value: [2], version: 0))
            // The log is usable again: new writes land after the last good record.
            try await store.put("/d", value: [4], expectedVersion: -1)
            await store.close()

            let again = try EmbeddedMetadataStore(directory: directory)
            #expect(again.recovery.truncatedBytes == 0)
            #expect(try await again.list(prefix: "/") == ["/a", "/b", "/c", "/d"])
            await again.close()
        }
    }

    @Test func tornRecordHeaderIsTruncated() async throws {
        try await withDirectory { (directory) async throws in
            let sizes = try await writeThreeKeys(directory)
            writeFileBytes(logPath(directory), fileBytes(logPath(directory)) + [0, 0, 0])
            let store = try EmbeddedMetadataStore(directory: directory)
            #expect(store.recovery.truncatedBytes == 3)
            #expect(fileBytes(logPath(directory)).count == sizes[2])
            await store.close()
        }
    }

    @Test func lastRecordWithBadChecksumIsTruncated() async throws {
        try await withDirectory { (directory) async throws in
            let sizes = try await writeThreeKeys(directory)
            var bytes = fileBytes(logPath(directory))
            bytes[bytes.count - 1] ^= 0xFF  // inside the value of "/c"
            writeFileBytes(logPath(directory), bytes)

            let store = try EmbeddedMetadataStore(directory: directory)
            #expect(store.recovery.truncatedBytes == sizes[2] - sizes[1])
            #expect(try await store.list(prefix: "/") == ["/a", "/b"])
            await store.close()
        }
    }

    @Test func zeroFilledTailIsTruncated() async throws {
        try await withDirectory { (directory) async throws in
            let sizes = try await writeThreeKeys(directory)
            writeFileBytes(logPath(directory), fileBytes(logPath(directory)) + [UInt8](repeating: 0, count: 4096))
            let store = try EmbeddedMetadataStore(directory: directory)
            #expect(store.recovery.truncatedBytes == 4096)
            #expect(fileBytes(logPath(directory)).count == sizes[2])
            #expect(try await store.list(prefix: "/") == ["/a", "/b", "/c"])
            await store.close()
        }
    }

    @Test func corruptionBeforeGoodRecordsRefusesToOpen() async throws {
        try await withDirectory { (directory) async throws in
            let sizes = try await writeThreeKeys(directory)
            var bytes = fileBytes(logPath(directory))
            bytes[sizes[0] - 1] ^= 0xFF  // last byte of the first record
            writeFileBytes(logPath(directory), bytes)

            let error = await metadataError { _ = try EmbeddedMetadataStore(directory: directory) }
            guard case .io(let message) = error else {
                Issue.record("expected .io, got \(String(describing: error))")
                return
            }
            #expect(message.contains("corrupt at byte \(MetadataLogFormat.headerBytes)"))
            // Nothing was truncated.
            #expect(fileBytes(logPath(directory)) == bytes)
        }
    }

    @Test func foreignFileRefusesToOpen() async throws {
        try await withDirectory { (directory) async throws in
            writeFileBytes(logPath(directory), Array("this is not a metadata log at all".utf8))
            guard case .io(let message) = await metadataError({ _ = try EmbeddedMetadataStore(directory: directory) })
            else {
                Issue.record("foreign file was accepted")
                return
            }
            #expect(message.contains("not a Magnetar metadata log"))
        }
    }

    @Test func newerFormatVersionRefusesToOpen() async throws {
        try await withDirectory { (directory) async throws in
            writeFileBytes(logPath(directory), MetadataLogFormat.magic + [0, 0, 0, 2])
            guard case .io(let message) = await metadataError({ _ = try EmbeddedMetadataStore(directory: directory) })
            else {
                Issue.record("format version 2 was accepted")
                return
            }
            #expect(message.contains("format version 2"))
        }
    }

    @Test func unwrittenHeaderIsRecreated() async throws {
        try await withDirectory { (directory) async throws in
            writeFileBytes(logPath(directory), Array(MetadataLogFormat.header().prefix(5)))
            let store = try EmbeddedMetadataStore(directory: directory)
            #expect(store.recovery.createdNewLog)
            try await store.put("/k", value: [1], expectedVersion: nil)
            await store.close()
            let again = try EmbeddedMetadataStore(directory: directory)
            #expect(try await again.get("/k") == VersionedValue(value: [1], version: 0))
            await again.close()
        }
    }

    @Test func secondStoreOnTheSameDirectoryIsRefused() async throws {
        try await withDirectory { (directory) async throws in
            let first = try EmbeddedMetadataStore(directory: directory)
            guard case .io(let message) = await metadataError({ _ = try EmbeddedMetadataStore(directory: directory) })
            else {
                Issue.record("second store was allowed")
                return
            }
            #expect(message.contains("locked"))
            await first.close()
            let second = try EmbeddedMetadataStore(directory: directory)
            await second.close()
        }
    }

    @Test func compactsOnOpenWhenMostRecordsAreSuperseded() async throws {
        try await withDirectory { (directory) async throws in
            let store = try EmbeddedMetadataStore(directory: directory)
            for round in 0..<40 {
                try await store.put("/hot", value: [UInt8(round)], expectedVersion: nil)
            }
            try await store.put("/cold", value: [7], expectedVersion: nil)
            try await store.put("/deleted", value: [8], expectedVersion: nil)
            try await store.delete("/deleted", expectedVersion: nil)
            #expect(await store.logRecordCount == 43)
            await store.close()
            let sizeBefore = fileBytes(logPath(directory)).count

            let policy = MetadataCompactionPolicy(minimumRecords: 10, recordsPerLiveKey: 4)
            let reopened = try EmbeddedMetadataStore(directory: directory, compactionPolicy: policy)
            #expect(reopened.recovery.compacted)
            #expect(reopened.recovery.recordsReplayed == 43)
            #expect(await reopened.logRecordCount == 2)
            #expect(fileBytes(logPath(directory)).count < sizeBefore)
            #expect(try await reopened.get("/hot") == VersionedValue(value: [39], version: 39))
            #expect(try await reopened.get("/cold") == VersionedValue(value: [7], version: 0))
            #expect(try await reopened.get("/deleted") == nil)
            #expect(try await reopened.put("/hot", value: [], expectedVersion: 39) == 40)
            await reopened.close()

            let again = try EmbeddedMetadataStore(directory: directory, compactionPolicy: policy)
            #expect(!again.recovery.compacted)
            #expect(again.recovery.recordsReplayed == 3)
            #expect(try await again.get("/hot") == VersionedValue(value: [], version: 40))
            await again.close()
        }
    }

    @Test func compactsWhileRunning() async throws {
        try await withDirectory { (directory) async throws in
            let policy = MetadataCompactionPolicy(minimumRecords: 20, recordsPerLiveKey: 2)
            let store = try EmbeddedMetadataStore(directory: directory, compactionPolicy: policy)
            var maximumRecords = 0
            for round in 0..<200 {
                _ = try await store.increment("/counter/\(round % 3)")
                maximumRecords = max(maximumRecords, await store.logRecordCount)
            }
            #expect(maximumRecords < 20)
            await store.close()
            #expect(!FileIO.exists(directory + "/" + EmbeddedMetadataStore.compactionFileName))

            let reopened = try EmbeddedMetadataStore(directory: directory, compactionPolicy: policy)
            #expect(try await reopened.increment("/counter/0") == 68)
            #expect(try await reopened.increment("/counter/1") == 68)
            #expect(try await reopened.increment("/counter/2") == 67)
            await reopened.close()
        }
    }

    @Test func leftoverCompactionFileIsIgnoredAndRemoved() async throws {
        try await withDirectory { (directory) async throws in
            _ = try await writeThreeKeys(directory)
            let leftover = directory + "/" + EmbeddedMetadataStore.compactionFileName
            writeFileBytes(leftover, MetadataLogFormat.header() + [1, 2, 3])
            let store = try EmbeddedMetadataStore(directory: directory)
            #expect(!FileIO.exists(leftover))
            #expect(try await store.list(prefix: "/") == ["/a", "/b", "/c"])
            await store.close()
        }
    }
}
