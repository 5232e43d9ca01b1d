import Testing

@testable import Metadata

/// Behaviour every `MetadataStore` must have; runs over each implementation (etcd when installed).
@Suite(.etcdServer) struct MetadataStoreTests {
    @Test(.enabled(if: EtcdTestServer.isAvailable, EtcdTestServer.missingMessage))
    func sharedSuiteAlsoRunsOverEtcd() {
        #expect(StoreKind.allCases.contains(.etcd))
    }

    @Test(arguments: StoreKind.allCases)
    func getOfMissingKeyIsNil(_ kind: StoreKind) async throws {
        try await withStore(kind) { (store) async throws in
            #expect(try await store.get("/missing") == nil)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func putStartsAtVersionZeroAndCountsUp(_ kind: StoreKind) async throws {
        try await withStore(kind) { (store) async throws in
            #expect(try await store.put("/a", value: [1], expectedVersion: nil) == 0)
            #expect(try await store.put("/a", value: [2, 3], expectedVersion: nil) == 1)
            #expect(try await store.put("/b", value: [], expectedVersion: nil) == 0)
            #expect(try await store.get("/a") == VersionedValue(value: [2, 3], version: 1))
            #expect(try await store.get("/b") == VersionedValue(value: [], version: 0))
        }
    }

    @Test(arguments: StoreKind.allCases)
    func compareAndSet(_ kind: StoreKind) async throws {
        try await withStore(kind) { (store) async throws in
            #expect(try await store.put("/k", value: [1], expectedVersion: -1) == 0)
            #expect(
                await metadataError { try await store.put("/k", value: [2], expectedVersion: -1) }
                    == .badVersion(key: "/k", expected: -1, actual: 0))
            #expect(try await store.put("/k", value: [3], expectedVersion: 0) == 1)
            #expect(
                await metadataError { try await store.put("/k", value: [4], expectedVersion: 0) }
                    == .badVersion(key: "/k", expected: 0, actual: 1))
            #expect(
                await metadataError { try await store.put("/absent", value: [5], expectedVersion: 3) }
                    == .badVersion(key: "/absent", expected: 3, actual: nil))
            // Failed writes change nothing.
            #expect(try await store.get("/k") == VersionedValue(value: [3], version: 1))
            #expect(try await store.get("/absent") == nil)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func deleteRules(_ kind: StoreKind) async throws {
        try await withStore(kind) { (store) async throws in
            try await store.delete("/missing", expectedVersion: nil)
            try await store.delete("/missing", expectedVersion: -1)
            #expect(await metadataError { try await store.delete("/missing", expectedVersion: 0) } == .notFound(key: "/missing"))

            try await store.put("/k", value: [1], expectedVersion: nil)
            try await store.put("/k", value: [2], expectedVersion: nil)
            #expect(
                await metadataError { try await store.delete("/k", expectedVersion: 0) }
                    == .badVersion(key: "/k", expected: 0, actual: 1))
            #expect(
                await metadataError { try await store.delete("/k", expectedVersion: -1) }
                    == .badVersion(key: "/k", expected: -1, actual: 1))
            try await store.delete("/k", expectedVersion: 1)
            #expect(try await store.get("/k") == nil)

            // A re-created key starts over at version 0.
            #expect(try await store.put("/k", value: [3], expectedVersion: -1) == 0)
            try await store.delete("/k", expectedVersion: nil)
            #expect(try await store.get("/k") == nil)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func listReturnsSortedKeysWithPrefix(_ kind: StoreKind) async throws {
        try await withStore(kind) { (store) async throws in
            for key in ["/ns/b", "/ns/a", "/ns/c/d", "/other", "/ns"] {
                try await store.put(key, value: [], expectedVersion: nil)
            }
            #expect(try await store.list(prefix: "/ns/") == ["/ns/a", "/ns/b", "/ns/c/d"])
            #expect(try await store.list(prefix: "/ns") == ["/ns", "/ns/a", "/ns/b", "/ns/c/d"])
            #expect(try await store.list(prefix: "") == ["/ns", "/ns/a", "/ns/b", "/ns/c/d", "/other"])
            #expect(try await store.list(prefix: "/none").isEmpty)
            try await store.delete("/ns/b", expectedVersion: nil)
            #expect(try await store.list(prefix: "/ns/") == ["/ns/a", "/ns/c/d"])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func incrementCountsFromOne(_ kind: StoreKind) async throws {
        try await withStore(kind) { (store) async throws in
            #expect(try await store.increment("/counter") == 1)
            #expect(try await store.increment("/counter") == 2)
            #expect(try await store.increment("/counter") == 3)
            #expect(try await store.increment("/other") == 1)
            let stored = try #require(try await store.get("/counter"))
            #expect(stored == VersionedValue(value: [0, 0, 0, 0, 0, 0, 0, 3], version: 2))
            #expect(MetadataCounter.decode(stored.value) == 3)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func incrementRejectsANonCounterValue(_ kind: StoreKind) async throws {
        try await withStore(kind) { (store) async throws in
            try await store.put("/text", value: Array("hello".utf8), expectedVersion: nil)
            guard case .io = await metadataError({ _ = try await store.increment("/text") }) else {
                Issue.record("increment of a non-counter value did not fail with .io")
                return
            }
            #expect(try await store.get("/text") == VersionedValue(value: Array("hello".utf8), version: 0))
        }
    }

    @Test(arguments: StoreKind.allCases)
    func concurrentIncrementsAreAtomic(_ kind: StoreKind) async throws {
        try await withStore(kind) { (store) async throws in
            let values = try await withThrowingTaskGroup(of: Int64.self) { group in
                for _ in 0..<50 {
                    group.addTask { try await store.increment("/seq") }
                }
                var values: [Int64] = []
                for try await value in group { values.append(value) }
                return values
            }
            #expect(values.sorted() == Array(1...50))
            #expect(try await store.get("/seq")?.version == 49)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func oversizedKeyIsRejected(_ kind: StoreKind) async throws {
        try await withStore(kind) { (store) async throws in
            let key = String(repeating: "k", count: MetadataLimits.maxKeyBytes + 1)
            guard case .io = await metadataError({ try await store.put(key, value: [], expectedVersion: nil) }) else {
                Issue.record("oversized key was accepted")
                return
            }
        }
    }

    @Test(arguments: StoreKind.allCases)
    func everyOperationFailsAfterClose(_ kind: StoreKind) async throws {
        try await withStore(kind) { (store) async throws in
            try await store.put("/k", value: [1], expectedVersion: nil)
            await store.close()
            await store.close()  // idempotent
            #expect(await metadataError { _ = try await store.get("/k") } == .closed)
            #expect(await metadataError { try await store.put("/k", value: [], expectedVersion: nil) } == .closed)
            #expect(await metadataError { try await store.delete("/k", expectedVersion: nil) } == .closed)
            #expect(await metadataError { _ = try await store.list(prefix: "") } == .closed)
            #expect(await metadataError { _ = try await store.increment("/c") } == .closed)
        }
    }

    @Test func errorDescriptionsSayWhatHappened() {
        #expect(
            MetadataStoreError.badVersion(key: "/k", expected: 2, actual: 3).description
                == "metadata key '/k': expected version 2, found version 3")
        #expect(
            MetadataStoreError.badVersion(key: "/k", expected: -1, actual: 0).description
                == "metadata key '/k': expected no existing key, found version 0")
        #expect(
            MetadataStoreError.badVersion(key: "/k", expected: 1, actual: nil).description
                == "metadata key '/k': expected version 1, found no such key")
        #expect(MetadataStoreError.notFound(key: "/k").description == "metadata key '/k' does not exist")
        #expect(MetadataStoreError.closed.description == "metadata store is closed")
    }

    @Test func counterEncodingIsBigEndian() {
        #expect(MetadataCounter.encode(0x0102_0304_0506_0708) == [1, 2, 3, 4, 5, 6, 7, 8])
        #expect(MetadataCounter.encode(-1) == [UInt8](repeating: 0xFF, count: 8))
        #expect(MetadataCounter.decode([1, 2, 3, 4, 5, 6, 7, 8]) == 0x0102_0304_0506_0708)
        #expect(MetadataCounter.decode([1, 2, 3]) == nil)
    }
}
