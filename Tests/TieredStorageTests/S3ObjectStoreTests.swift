import Foundation
import NIOCore
import Testing

@testable import TieredStorage

/// The S3 driver against a real S3-compatible server, when one is named by
/// `MAGNETAR_TEST_S3_ENDPOINT` (e.g. `python -m moto.server -p 5005` and
/// `MAGNETAR_TEST_S3_ENDPOINT=http://127.0.0.1:5005`; the bucket `magnetar-test` is created):
/// skipped without one. The offloader's tests cover the same paths over the filesystem driver.
@Suite struct S3ObjectStoreTests {
    static let endpoint = ProcessInfo.processInfo.environment["MAGNETAR_TEST_S3_ENDPOINT"].flatMap(URL.init(string:))

    func store() throws -> S3ObjectStore {
        let signer = SigV4Signer(accessKeyID: "testing", secretAccessKey: "testing", region: "us-east-1")
        return try S3ObjectStore(endpoint: Self.endpoint!, bucket: "magnetar-test", signer: signer)
    }

    static func entry(_ id: Int64) -> ByteBuffer { ByteBuffer(string: "s3-entry-\(id)-" + String(repeating: "z", count: 3000)) }

    @Test(.enabled(if: endpoint != nil)) func aLedgerOffloadedIntoABucketReadsBack() async throws {
        let store = try store()
        _ = try? await store.send(.PUT, key: nil)  // the bucket (already there is fine)
        let offloader = LedgerOffloader(store: store, driver: "aws-s3", container: "magnetar-test", blockSizeBytes: 256 * 1024)
        // ~12 MiB: three multipart parts.
        let location = try await offloader.offload(ledgerID: 77, entryCount: 4000, readBatch: 250) { first, last in (first...last).map(Self.entry) }
        #expect(try await store.size(of: location.dataKey) ?? 0 > 12_000_000)
        let reader = LedgerOffloader(store: try self.store(), driver: "aws-s3", container: "magnetar-test")
        #expect(try await reader.readEntries(location, first: 1234, last: 1300) == (1234...1300).map(Self.entry))
        #expect(try await reader.readEntries(location, first: 3999, last: 3999) == [Self.entry(3999)])
        try await reader.delete(location)
        #expect(try await store.size(of: location.dataKey) == nil)
        #expect(try await store.size(of: location.indexKey) == nil)
    }

    @Test(.enabled(if: endpoint != nil)) func aSmallObjectIsOnePutAndMissingObjectsAreNil() async throws {
        let store = try store()
        _ = try? await store.send(.PUT, key: nil)
        let upload = try await store.beginUpload("small-object")
        try await upload.write(ByteBuffer(string: "hello "))
        try await upload.write(ByteBuffer(string: "tier"))
        try await upload.complete()
        #expect(try await store.size(of: "small-object") == 10)
        #expect(try await store.read("small-object", offset: 6, length: 4) == ByteBuffer(string: "tier"))
        try await store.delete("small-object")
        try await store.delete("small-object")  // twice is fine
        #expect(try await store.size(of: "small-object") == nil)
    }
}
