import Foundation
import Logging

/// The cluster `MetadataStore`: etcd v3, spoken to through its JSON gateway (`/v3/kv/...`, `/v3/lease/...`,
/// `/v3/watch`), so several brokers and storage nodes share one linearizable view of the metadata.
///
/// An actor: it owns the session lease, the keep-alive task and the running watches. Store operations
/// do not wait for each other (each is one or a few HTTP requests; etcd orders them), so the actor only
/// guards that state. Lifecycle: `init` does no I/O; every operation may fail with `.io` when etcd cannot
/// be reached (after retrying transient failures, see `EtcdRetryPolicy`); `close()` cancels the
/// watches and ends the session (revoking its lease deletes the ephemeral keys at once). No connection
/// is held between requests.
///
/// Mapping (also in docs/ARCHITECTURE.md, "Metadata stores"):
/// - key `/a/b` is etcd key `<rootPrefix>/a/b`; keys must start with `/`.
/// - our version = etcd's per-key `version` − 1 (etcd counts puts from 1, we from 0; both restart on
///   re-create).
/// - compare-and-set is a txn comparing `version` (expected + 1), or `create_revision == 0` for
///   "must not exist"; its failure branch reads the key, so a conflict costs one round trip.
/// - `list(prefix:)` is a keys-only range from `<root><prefix>` to the prefix's successor.
/// - `increment` is a compare-and-set loop.
/// - the session is one lease (TTL `sessionTTL`) refreshed every third of its TTL.
public actor EtcdMetadataStore: SessionCapableMetadataStore {
    /// The client URL of etcd, e.g. `http://127.0.0.1:2379`.
    public nonisolated let endpoint: URL
    /// Prepended to every key, e.g. `/magnetar`; "" for none. Never ends with `/`.
    public nonisolated let rootPrefix: String
    /// How long etcd keeps the session's ephemeral keys after the last refresh.
    public nonisolated let sessionTTL: Duration

    private let gateway: EtcdGateway
    private let logger: Logger
    private var isClosed = false
    /// The session lease (its etcd ID, a decimal string), once the first ephemeral key was written.
    private var sessionLeaseID: String?
    private var pendingLeaseGrant: Task<String, any Error>?
    private var keepAliveTask: Task<Void, Never>?
    private var watchTasks: [UUID: Task<Void, Never>] = [:]

    public init(
        endpoint: URL,
        rootPrefix: String = "/magnetar",
        sessionTTL: Duration = .seconds(10),
        retryPolicy: EtcdRetryPolicy = .default,
        requestTimeout: Duration = .seconds(10),
        logger: Logger = Logger(label: "magnetar.metadata")
    ) {
        precondition(sessionTTL >= .seconds(1), "etcd lease TTLs are whole seconds, at least 1")
        var root = rootPrefix
        while root.hasSuffix("/") { root.removeLast() }
        self.endpoint = endpoint
        self.rootPrefix = root
        self.sessionTTL = sessionTTL
        self.gateway = EtcdGateway(endpoint: endpoint, retryPolicy: retryPolicy, requestTimeout: requestTimeout)
        var logger = logger
        logger[metadataKey: "etcd.endpoint"] = "\(endpoint.absoluteString)"
        logger[metadataKey: "etcd.root"] = "\(root)"
        self.logger = logger
    }

    /// Reads etcd's current revision: fails with `.io` when etcd is not reachable. For startup checks.
    public func checkConnection() async throws {
        try checkOpen()
        _ = try await currentRevision()
    }

    // MARK: MetadataStore

    public func get(_ key: String) async throws -> VersionedValue? {
        try checkOpen()
        let response: EtcdRangeResponse = try await gateway.call(
            "/v3/kv/range", EtcdRangeRequest(key: try encodedKey(key)), kind: .idempotent)
        return try response.kvs?.first.map { try versionedValue($0) }
    }

    @discardableResult
    public func put(_ key: String, value: [UInt8], expectedVersion: Int64?) async throws -> Int64 {
        try checkOpen()
        return try await checkedPut(key, value: value, expectedVersion: expectedVersion, leaseID: nil)
    }

    public func delete(_ key: String, expectedVersion: Int64?) async throws {
        try checkOpen()
        let etcdKey = try encodedKey(key)
        guard let expectedVersion else {
            let _: EtcdDeleteRangeResponse = try await gateway.call(
                "/v3/kv/deleterange", EtcdDeleteRangeRequest(key: etcdKey), kind: .write)
            return
        }
        let read = EtcdRequestOp(request_range: EtcdRangeRequest(key: etcdKey))
        let txn = EtcdTxnRequest(
            compare: [Self.compare(etcdKey, expectedVersion: expectedVersion)],
            success: expectedVersion == -1 ? [] : [EtcdRequestOp(request_delete_range: EtcdDeleteRangeRequest(key: etcdKey))],
            failure: [read])
        let response: EtcdTxnResponse = try await gateway.call("/v3/kv/txn", txn, kind: .write)
        if response.succeeded == true { return }
        let current = try currentValue(in: response, at: 0)
        if current == nil && expectedVersion >= 0 {
            throw MetadataStoreError.notFound(key: key)
        }
        throw MetadataStoreError.badVersion(key: key, expected: expectedVersion, actual: current?.version)
    }

    public func list(prefix: String) async throws -> [String] {
        try checkOpen()
        guard let (start, end) = keyRange(prefix: prefix) else { return [] }
        let response: EtcdRangeResponse = try await gateway.call(
            "/v3/kv/range", EtcdRangeRequest(key: start, range_end: end, keys_only: true), kind: .idempotent)
        return try (response.kvs ?? []).compactMap { try decodedKey($0.key) }.sorted()
    }

    public func increment(_ key: String) async throws -> Int64 {
        try checkOpen()
        var current = try await get(key)
        for attempt in 1...EtcdLimits.maxIncrementAttempts {
            let newValue = try MetadataCounter.incremented(key: key, stored: current?.value)
            switch try await conditionalPut(
                key, value: MetadataCounter.encode(newValue), expectedVersion: current?.version ?? -1, leaseID: nil)
            {
            case .written:
                return newValue
            case .conflict(let now):
                current = now
                // Spread out competing writers a little so the loop converges under contention.
                if attempt > 2 {
                    try? await Task.sleep(for: .microseconds(Int.random(in: 0...min(attempt, 50) * 200)))
                }
                try checkOpen()
            }
        }
        throw MetadataStoreError.io(
            "etcd at \(endpoint.absoluteString): increment of '\(key)' lost \(EtcdLimits.maxIncrementAttempts) "
                + "compare-and-set races in a row; too many writers on one counter")
    }

    public func close() async {
        guard !isClosed else { return }
        isClosed = true
        keepAliveTask?.cancel()
        keepAliveTask = nil
        for task in watchTasks.values { task.cancel() }
        watchTasks = [:]
        if let leaseID = sessionLeaseID {
            sessionLeaseID = nil
            await revoke(leaseID)
        }
        logger.debug("metadata store closed")
    }

    // MARK: SessionCapableMetadataStore

    @discardableResult
    public func putEphemeral(_ key: String, value: [UInt8], expectedVersion: Int64?) async throws -> Int64 {
        try checkOpen()
        let leaseID = try await sessionLease()
        return try await checkedPut(key, value: value, expectedVersion: expectedVersion, leaseID: leaseID)
    }

    public func watch(prefix: String) async throws -> AsyncStream<MetadataEvent> {
        try checkOpen()
        let (stream, continuation) = AsyncStream.makeStream(
            of: MetadataEvent.self, bufferingPolicy: .bufferingOldest(EtcdLimits.maxBufferedWatchEvents))
        guard let (start, end) = keyRange(prefix: prefix) else {
            // No key can start with this prefix; nothing will ever change under it.
            return stream
        }
        // Changes after the current revision are what "after this call returns" means.
        let startRevision = try await currentRevision() + 1
        let id = UUID()
        let task = Task { [gateway, logger, rootPrefix, weak self] in
            await Self.runWatch(
                gateway: gateway, start: start, end: end, startRevision: startRevision, rootPrefix: rootPrefix,
                continuation: continuation, logger: logger)
            await self?.watchEnded(id)
        }
        watchTasks[id] = task
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    // MARK: Session

    /// The session lease, granted (and kept alive) on first use.
    private func sessionLease() async throws -> String {
        if let sessionLeaseID { return sessionLeaseID }
        if let pendingLeaseGrant { return try await pendingLeaseGrant.value }
        let ttlSeconds = max(1, sessionTTL.components.seconds)
        let grant = Task { [gateway] () throws -> String in
            let response: EtcdLeaseGrantResponse = try await gateway.call(
                "/v3/lease/grant", EtcdLeaseGrantRequest(TTL: String(ttlSeconds)), kind: .idempotent)
            guard let id = response.ID, response.error?.isEmpty ?? true else {
                throw MetadataStoreError.io(
                    "etcd at \(gateway.endpoint.absoluteString): lease grant failed: \(response.error ?? "no lease ID")")
            }
            return id
        }
        pendingLeaseGrant = grant
        defer { pendingLeaseGrant = nil }
        let leaseID = try await grant.value
        if isClosed {
            await revoke(leaseID)
            throw MetadataStoreError.closed
        }
        sessionLeaseID = leaseID
        logger.info("metadata session started", metadata: ["etcd.lease": "\(leaseID)", "ttl": "\(sessionTTL)"])
        keepAliveTask = Task { [gateway, sessionTTL, logger, weak self] in
            await Self.keepAlive(leaseID: leaseID, gateway: gateway, ttl: sessionTTL, logger: logger)
            await self?.sessionEnded(leaseID)
        }
        return leaseID
    }

    /// Refreshes the lease every third of its TTL until cancelled or until the lease is gone.
    private static func keepAlive(leaseID: String, gateway: EtcdGateway, ttl: Duration, logger: Logger) async {
        let clock = ContinuousClock()
        var lastRefresh = clock.now
        while !Task.isCancelled {
            try? await Task.sleep(for: ttl / 3, clock: clock)
            if Task.isCancelled { return }
            do {
                let response: EtcdLeaseKeepAliveResponse = try await gateway.call(
                    "/v3/lease/keepalive", EtcdLeaseIDRequest(ID: leaseID), kind: .idempotent)
                if Int64(response.result?.TTL ?? "0") ?? 0 <= 0 {
                    logger.error(
                        "metadata session lease expired, its ephemeral keys are gone", metadata: ["etcd.lease": "\(leaseID)"])
                    return
                }
                lastRefresh = clock.now
            } catch {
                logger.warning(
                    "metadata session refresh failed", metadata: ["etcd.lease": "\(leaseID)", "error": "\(error)"])
                if lastRefresh.duration(to: clock.now) > ttl {
                    logger.error(
                        "metadata session not refreshed within its TTL, assuming its ephemeral keys are gone",
                        metadata: ["etcd.lease": "\(leaseID)"])
                    return
                }
            }
        }
    }

    /// Called when the keep-alive loop stops: the next `putEphemeral` starts a new session.
    private func sessionEnded(_ leaseID: String) {
        guard sessionLeaseID == leaseID, !isClosed else { return }
        if keepAliveTask?.isCancelled == true { return }  // stopped on purpose (tests)
        sessionLeaseID = nil
        keepAliveTask = nil
    }

    /// Stops refreshing the session without revoking it, as if this process hung: etcd deletes the
    /// ephemeral keys once the TTL runs out. For tests.
    func stopSessionKeepAliveForTesting() {
        keepAliveTask?.cancel()
    }

    private func revoke(_ leaseID: String) async {
        do {
            let _: EtcdEmptyResponse = try await gateway.call(
                "/v3/lease/revoke", EtcdLeaseIDRequest(ID: leaseID), kind: .idempotent)
            logger.info("metadata session ended", metadata: ["etcd.lease": "\(leaseID)"])
        } catch {
            logger.warning(
                "metadata session lease not revoked, its ephemeral keys will expire with its TTL",
                metadata: ["etcd.lease": "\(leaseID)", "error": "\(error)"])
        }
    }

    // MARK: Watch

    /// Thrown from inside a watch stream to end it for good.
    private struct WatchEnded: Error {}

    private func watchEnded(_ id: UUID) {
        watchTasks[id] = nil
    }

    /// Streams etcd's watch into `continuation`, reconnecting after a dropped connection from the
    /// revision after the last event delivered, so no change is missed or repeated.
    private static func runWatch(
        gateway: EtcdGateway, start: String, end: String, startRevision: Int64, rootPrefix: String,
        continuation: AsyncStream<MetadataEvent>.Continuation, logger: Logger
    ) async {
        defer { continuation.finish() }
        var nextRevision = startRevision
        var failures = 0
        while !Task.isCancelled {
            let request = EtcdWatchCreateRequest(
                create_request: .init(key: start, range_end: end, start_revision: String(nextRevision), prev_kv: true))
            do {
                try await gateway.streamLines("/v3/watch", request) { line in
                    let decoded = try JSONDecoder().decode(EtcdWatchLine.self, from: Data(line))
                    if let error = decoded.error {
                        throw EtcdGatewayError(
                            code: error.code, message: error.message ?? "watch failed", isTransient: true,
                            wasNotSent: false)
                    }
                    guard let result = decoded.result else { return }
                    if let compacted = result.compact_revision, compacted != "0" {
                        logger.warning(
                            "metadata watch cannot resume, etcd compacted its history",
                            metadata: ["etcd.revision": "\(nextRevision)", "etcd.compact_revision": "\(compacted)"])
                        throw WatchEnded()
                    }
                    if result.canceled == true {
                        logger.warning(
                            "metadata watch cancelled by etcd", metadata: ["reason": "\(result.cancel_reason ?? "")"])
                        throw WatchEnded()
                    }
                    failures = 0
                    for event in result.events ?? [] {
                        guard let kv = event.kv, let key = try decodedKey(kv.key, rootPrefix: rootPrefix) else { continue }
                        let metadataEvent: MetadataEvent
                        if event.type == "DELETE" {
                            let version = event.prev_kv.flatMap { Int64($0.version ?? "") }.map { $0 - 1 } ?? -1
                            metadataEvent = .delete(key: key, version: version)
                        } else {
                            metadataEvent = .put(
                                key: key, value: try decodedBytes(kv.value), version: (Int64(kv.version ?? "") ?? 0) - 1)
                        }
                        if case .dropped = continuation.yield(metadataEvent) {
                            logger.warning(
                                "metadata watch consumer too slow, ending the watch",
                                metadata: ["limit": "\(EtcdLimits.maxBufferedWatchEvents)"])
                            throw WatchEnded()
                        }
                        if let revision = Int64(kv.mod_revision ?? "") {
                            nextRevision = max(nextRevision, revision + 1)
                        }
                    }
                }
            } catch is WatchEnded {
                return
            } catch {
                if Task.isCancelled { return }
                logger.warning("metadata watch interrupted, reconnecting", metadata: ["error": "\(error)"])
            }
            if Task.isCancelled { return }
            failures += 1
            try? await Task.sleep(for: gateway.retryPolicy.backoff(afterAttempt: min(failures, 8)))
        }
    }

    // MARK: Writes

    private enum PutOutcome {
        case written(version: Int64)
        /// The compare failed; the key's current value (nil = absent).
        case conflict(current: VersionedValue?)
    }

    private func checkedPut(_ key: String, value: [UInt8], expectedVersion: Int64?, leaseID: String?) async throws -> Int64 {
        switch try await conditionalPut(key, value: value, expectedVersion: expectedVersion, leaseID: leaseID) {
        case .written(let version):
            return version
        case .conflict(let current):
            throw MetadataStoreError.badVersion(key: key, expected: expectedVersion, actual: current?.version)
        }
    }

    /// One txn: if the compare holds, put and read back the new version; otherwise read the current value.
    private func conditionalPut(_ key: String, value: [UInt8], expectedVersion: Int64?, leaseID: String?) async throws -> PutOutcome {
        try MetadataTable.checkLimits(key: key, valueCount: value.count)
        let etcdKey = try encodedKey(key)
        let read = EtcdRequestOp(request_range: EtcdRangeRequest(key: etcdKey))
        let write = EtcdRequestOp(
            request_put: EtcdPutRequest(key: etcdKey, value: Data(value).base64EncodedString(), lease: leaseID))
        let txn = EtcdTxnRequest(
            compare: expectedVersion.map { [Self.compare(etcdKey, expectedVersion: $0)] } ?? [],
            success: [write, read],
            failure: [read])
        let response: EtcdTxnResponse = try await gateway.call("/v3/kv/txn", txn, kind: .write)
        if response.succeeded == true {
            guard let written = try currentValue(in: response, at: 1) else {
                throw MetadataStoreError.io(
                    "etcd at \(endpoint.absoluteString): key '\(key)' vanished right after it was written")
            }
            return .written(version: written.version)
        }
        return .conflict(current: try currentValue(in: response, at: 0))
    }

    private static func compare(_ etcdKey: String, expectedVersion: Int64) -> EtcdCompare {
        if expectedVersion == -1 {
            return EtcdCompare(key: etcdKey, target: .CREATE, create_revision: "0")
        }
        return EtcdCompare(key: etcdKey, target: .VERSION, version: String(expectedVersion + 1))
    }

    // MARK: Encoding

    private func checkOpen() throws {
        if isClosed { throw MetadataStoreError.closed }
    }

    private func currentRevision() async throws -> Int64 {
        let response: EtcdRangeResponse = try await gateway.call(
            "/v3/kv/range", EtcdRangeRequest(key: Self.base64(rootPrefix + "/"), count_only: true), kind: .idempotent)
        guard let revision = response.header?.revision.flatMap({ Int64($0) }) else {
            throw MetadataStoreError.io("etcd at \(endpoint.absoluteString): range answer without a revision")
        }
        return revision
    }

    private func encodedKey(_ key: String) throws -> String {
        guard key.hasPrefix("/") else {
            throw MetadataStoreError.io(
                "metadata key '\(key.prefix(100))' does not start with '/'; keys in etcd are paths under '\(rootPrefix)/'")
        }
        return Self.base64(rootPrefix + key)
    }

    /// The base64 range [start, end) of etcd keys for `prefix`, or nil when no key can have it.
    private func keyRange(prefix: String) -> (start: String, end: String)? {
        if prefix.isEmpty {
            return Self.range(forPrefix: Array((rootPrefix + "/").utf8))
        }
        guard prefix.hasPrefix("/") else { return nil }
        return Self.range(forPrefix: Array((rootPrefix + prefix).utf8))
    }

    static func range(forPrefix bytes: [UInt8]) -> (start: String, end: String) {
        var end = bytes
        while let last = end.last, last == 0xFF { end.removeLast() }
        if end.isEmpty {
            end = [0]  // etcd: "\0" as range_end means every key >= start
        } else {
            end[end.count - 1] += 1
        }
        return (Data(bytes).base64EncodedString(), Data(end).base64EncodedString())
    }

    private func decodedKey(_ base64Key: String) throws -> String? {
        try Self.decodedKey(base64Key, rootPrefix: rootPrefix)
    }

    private static func decodedKey(_ base64Key: String, rootPrefix: String) throws -> String? {
        let full = String(decoding: try decodedBytes(base64Key), as: UTF8.self)
        guard full.hasPrefix(rootPrefix + "/") else { return nil }
        return String(full.dropFirst(rootPrefix.count))
    }

    private func versionedValue(_ kv: EtcdKeyValue) throws -> VersionedValue {
        guard let version = Int64(kv.version ?? "") else {
            throw MetadataStoreError.io("etcd at \(endpoint.absoluteString): key without a version in \(kv)")
        }
        return VersionedValue(value: try Self.decodedBytes(kv.value), version: version - 1)
    }

    private func currentValue(in response: EtcdTxnResponse, at index: Int) throws -> VersionedValue? {
        guard let responses = response.responses, index < responses.count,
            let range = responses[index].response_range
        else {
            throw MetadataStoreError.io(
                "etcd at \(endpoint.absoluteString): txn answer without the expected range result")
        }
        return try range.kvs?.first.map { try versionedValue($0) }
    }

    private static func base64(_ string: String) -> String {
        Data(string.utf8).base64EncodedString()
    }

    private static func decodedBytes(_ base64: String?) throws -> [UInt8] {
        guard let base64 else { return [] }  // etcd omits empty values
        guard let data = Data(base64Encoded: base64) else {
            throw MetadataStoreError.io("etcd answer holds invalid base64: \(base64.prefix(100))")
        }
        return [UInt8](data)
    }
}
