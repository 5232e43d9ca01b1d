import Foundation
import Testing

@testable import Metadata

/// What only the etcd store has: ephemeral keys bound to a session, watches, root prefixes.
/// The shared behaviour is in `MetadataStoreTests`, which also runs over etcd.
@Suite(.etcdServer, .enabled(if: EtcdTestServer.isAvailable, EtcdTestServer.missingMessage))
struct EtcdMetadataStoreTests {
    @Test func ephemeralKeyDisappearsWhenItsStoreCloses() async throws {
        let root = "/test-\(UUID().uuidString)"
        let owner = try makeEtcdStore(rootPrefix: root)
        let observer = try makeEtcdStore(rootPrefix: root)
        #expect(try await owner.putEphemeral("/owners/bundle-0", value: [1], expectedVersion: -1) == 0)
        #expect(try await observer.get("/owners/bundle-0") == VersionedValue(value: [1], version: 0))
        // Someone else cannot claim it while the owner's session lives.
        #expect(
            await metadataError { try await observer.putEphemeral("/owners/bundle-0", value: [2], expectedVersion: -1) }
                == .badVersion(key: "/owners/bundle-0", expected: -1, actual: 0))
        await owner.close()
        #expect(try await observer.get("/owners/bundle-0") == nil)
        #expect(try await observer.putEphemeral("/owners/bundle-0", value: [2], expectedVersion: -1) == 0)
        await observer.close()
    }

    @Test func ephemeralKeyOutlivesItsTTLWhileRefreshedAndExpiresWhenNot() async throws {
        let root = "/test-\(UUID().uuidString)"
        let owner = try makeEtcdStore(rootPrefix: root, sessionTTL: .seconds(2))
        let observer = try makeEtcdStore(rootPrefix: root)
        try await owner.putEphemeral("/brokers/b1", value: [7], expectedVersion: nil)
        try await Task.sleep(for: .seconds(3))
        #expect(try await observer.get("/brokers/b1") != nil, "the keep-alive did not refresh the session")

        // As if the owner hung: no refresh, no revoke. etcd deletes the key after the TTL.
        await owner.stopSessionKeepAliveForTesting()
        let deadline = ContinuousClock.now + .seconds(15)
        while ContinuousClock.now < deadline, try await observer.get("/brokers/b1") != nil {
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(try await observer.get("/brokers/b1") == nil, "the ephemeral key outlived its session")
        await owner.close()
        await observer.close()
    }

    @Test func watchDeliversPutsAndDeletesInOrder() async throws {
        let root = "/test-\(UUID().uuidString)"
        let writer = try makeEtcdStore(rootPrefix: root)
        let watcher = try makeEtcdStore(rootPrefix: root)
        let events = try await watcher.watch(prefix: "/w/")

        try await writer.put("/w/a", value: [1], expectedVersion: -1)
        try await writer.put("/other", value: [9], expectedVersion: nil)
        try await writer.put("/w/a", value: [2], expectedVersion: 0)
        try await writer.delete("/w/a", expectedVersion: 1)
        try await writer.putEphemeral("/w/e", value: [3], expectedVersion: -1)
        await writer.close()  // ends the session: /w/e is deleted

        let received = await first(5, of: events, within: .seconds(10))
        #expect(
            received == [
                .put(key: "/w/a", value: [1], version: 0),
                .put(key: "/w/a", value: [2], version: 1),
                .delete(key: "/w/a", version: 1),
                .put(key: "/w/e", value: [3], version: 0),
                .delete(key: "/w/e", version: 0),
            ])
        await watcher.close()
    }

    @Test func watchFinishesWhenTheStoreCloses() async throws {
        let store = try makeEtcdStore()
        let events = try await store.watch(prefix: "/")
        await store.close()
        let ended = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                for await _ in events {}
                return true
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(10))
                return false
            }
            let first = await group.next()!
            group.cancelAll()
            return first
        }
        #expect(ended)
    }

    @Test func rootPrefixesDoNotOverlap() async throws {
        let base = "/test-\(UUID().uuidString)"
        let short = try makeEtcdStore(rootPrefix: base)
        let long = try makeEtcdStore(rootPrefix: base + "x")
        try await short.put("/a", value: [1], expectedVersion: nil)
        try await long.put("/b", value: [2], expectedVersion: nil)
        #expect(try await short.list(prefix: "") == ["/a"])
        #expect(try await long.list(prefix: "") == ["/b"])
        #expect(try await short.get("/b") == nil)
        await short.close()
        await long.close()
    }

    /// etcd's gateway sends errors as chunked responses with HTTP trailers, which made Foundation's
    /// URLSession on Linux stop the process (swift-corelibs-foundation#5285); they must be `.io` errors.
    @Test func etcdErrorResponsesAreIOErrors() async throws {
        let server = try #require(EtcdTestServer.current)
        let gateway = EtcdGateway(endpoint: server.endpoint, retryPolicy: .default, requestTimeout: .seconds(5))
        let put = EtcdPutRequest(key: "L3Rlc3Q=", value: "", lease: "12345")
        let error = await metadataError {
            let _: EtcdEmptyResponse = try await gateway.call("/v3/kv/put", put, kind: .write)
        }
        guard case .io(let message) = error else {
            Issue.record("a put with an unknown lease did not fail with .io: \(String(describing: error))")
            return
        }
        #expect(message.contains("requested lease not found"))
    }

    @Test func keysMustBePaths() async throws {
        let store = try makeEtcdStore()
        guard case .io(let message) = await metadataError({ try await store.put("a", value: [], expectedVersion: nil) }) else {
            Issue.record("a key without a leading '/' was accepted")
            return
        }
        #expect(message.contains("does not start with '/'"))
        #expect(try await store.list(prefix: "a").isEmpty)
        await store.close()
    }
}

/// Needs no etcd: what happens when there is none.
@Suite struct EtcdUnreachableTests {
    @Test func unreachableEtcdIsAnIOErrorNamingTheURL() async throws {
        let store = EtcdMetadataStore(
            endpoint: URL(string: "http://127.0.0.1:9")!,  // discard port: nothing listens on loopback
            retryPolicy: EtcdRetryPolicy(maxAttempts: 2, initialBackoff: .milliseconds(10)))
        guard case .io(let message) = await metadataError({ _ = try await store.get("/k") }) else {
            Issue.record("get against a closed port did not fail with .io")
            return
        }
        #expect(message.hasPrefix("etcd at http://127.0.0.1:9: /v3/kv/range failed (after 2 tries)"))
        #expect(message.contains("check that etcd is running"))
        await store.close()
    }

    @Test func retryBackoffDoublesUpToTheCap() {
        let policy = EtcdRetryPolicy(maxAttempts: 10, initialBackoff: .milliseconds(100), maxBackoff: .milliseconds(500))
        #expect((1...5).map { policy.backoff(afterAttempt: $0) } == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(500), .milliseconds(500)])
    }

    @Test func prefixRangeEndIsTheNextKey() {
        func decoded(_ base64: String) -> [UInt8] { [UInt8](Data(base64Encoded: base64)!) }
        let (start, end) = EtcdMetadataStore.range(forPrefix: Array("/m/a".utf8))
        #expect(decoded(start) == Array("/m/a".utf8))
        #expect(decoded(end) == Array("/m/b".utf8))
        #expect(decoded(EtcdMetadataStore.range(forPrefix: [0x2F, 0xFF]).end) == [0x30])
    }
}

@Suite struct MetadataStoreURLTests {
    @Test func etcdURLs() throws {
        #expect(
            try MetadataStoreURL(parsing: "etcd://127.0.0.1:2379")
                == .etcd(endpoint: URL(string: "http://127.0.0.1:2379")!, rootPrefix: "/magnetar"))
        #expect(
            try MetadataStoreURL(parsing: "etcd://etcd.local:4001/prod/cluster-a/")
                == .etcd(endpoint: URL(string: "http://etcd.local:4001")!, rootPrefix: "/prod/cluster-a"))
        #expect(
            try MetadataStoreURL(parsing: "etcd://h/") == .etcd(endpoint: URL(string: "http://h:2379")!, rootPrefix: ""))
        #expect(try MetadataStoreURL(parsing: "etcd://127.0.0.1:2379/x").description == "etcd://127.0.0.1:2379/x")
    }

    @Test func embeddedURLs() throws {
        #expect(try MetadataStoreURL(parsing: "embedded:///var/lib/m") == .embedded(directory: "/var/lib/m"))
        #expect(try MetadataStoreURL(parsing: "embedded://data/meta") == .embedded(directory: "data/meta"))
    }

    @Test(arguments: ["", "zk://h:2181", "etcd://", "etcd:///root", "embedded://", "etcd://h:notaport"])
    func badURLsSayWhatIsExpected(_ text: String) {
        #expect(throws: MetadataStoreError.self) { try MetadataStoreURL(parsing: text) }
    }
}

/// The first `count` events of `stream`, or what arrived before `timeout`.
func first(_ count: Int, of stream: AsyncStream<MetadataEvent>, within timeout: Duration) async -> [MetadataEvent] {
    let collector = EventCollector()
    await withTaskGroup(of: Void.self) { group in
        group.addTask {
            for await event in stream {
                if await collector.append(event) >= count { break }
            }
        }
        group.addTask { try? await Task.sleep(for: timeout) }
        await group.next()
        group.cancelAll()
    }
    return await collector.events
}

actor EventCollector {
    var events: [MetadataEvent] = []

    func append(_ event: MetadataEvent) -> Int {
        events.append(event)
        return events.count
    }
}
