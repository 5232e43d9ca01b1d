import Foundation
import LedgerStorage
import Logging
import NIOCore
import Testing

/// Which `LedgerStore` implementation a parameterized test runs over.
enum StoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case memory
    case file

    var testDescription: String { rawValue }
}

/// A store under test plus what it takes to reopen and clean it up. Files go to a fresh
/// temporary directory that `tearDown` removes.
final class StoreFixture {
    let kind: StoreKind
    let directory: String
    let configuration: FileLedgerStoreConfiguration
    private(set) var store: any LedgerStore

    static let logger: Logger = {
        var logger = Logger(label: "magnetar.ledger-storage.tests")
        logger.logLevel = .warning
        return logger
    }()

    init(_ kind: StoreKind, configure: (inout FileLedgerStoreConfiguration) -> Void = { _ in }) throws {
        self.kind = kind
        self.directory = StoreFixture.makeTemporaryDirectory()
        var configuration = FileLedgerStoreConfiguration(directory: directory)
        configuration.groupCommitMaxDelay = .microseconds(200)
        configure(&configuration)
        self.configuration = configuration
        switch kind {
        case .memory: store = InMemoryLedgerStore()
        case .file: store = try FileLedgerStore(configuration: configuration, logger: StoreFixture.logger)
        }
    }

    /// File store: close and open the same directory again. Memory store: nothing (it would lose everything).
    func reopen() throws {
        guard kind == .file else { return }
        store.close()
        store = try FileLedgerStore(configuration: configuration, logger: StoreFixture.logger)
    }

    func tearDown() {
        store.close()
        try? FileManager.default.removeItem(atPath: directory)
    }

    static func makeTemporaryDirectory() -> String {
        let path = FileManager.default.temporaryDirectory.path + "/ledger-storage-tests-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }
}

/// A thread-safe box for results produced on the journal thread.
final class Collected<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var storage: [Value] = []

    func append(_ value: Value) {
        lock.lock()
        storage.append(value)
        lock.unlock()
    }

    var values: [Value] {
        lock.lock()
        defer { lock.unlock() }
        return storage
    }
}

/// Appends and blocks until the completion ran. Returns nil on success, else the error.
@discardableResult
func appendAndWait(
    _ store: any LedgerStore, ledgerID: Int64, entryID: Int64, payload: ByteBuffer, recovery: Bool = false
) -> LedgerStoreError? {
    let results = Collected<Result<Void, LedgerStoreError>>()
    let done = DispatchSemaphore(value: 0)
    store.append(ledgerID: ledgerID, entryID: entryID, payload: payload, recovery: recovery) { result in
        results.append(result)
        done.signal()
    }
    done.wait()
    if case .failure(let error) = results.values[0] { return error }
    return nil
}

/// A deterministic payload for (ledger, entry), `size` bytes.
func makePayload(ledgerID: Int64, entryID: Int64, size: Int) -> ByteBuffer {
    var buffer = ByteBufferAllocator().buffer(capacity: size)
    var state = UInt64(bitPattern: ledgerID &* 1_000_003 &+ entryID) &+ 0x9E37_79B9_7F4A_7C15
    for _ in 0..<size {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        buffer.writeInteger(UInt8(truncatingIfNeeded: state >> 33))
    }
    return buffer
}

func readError(_ store: any LedgerStore, ledgerID: Int64, entryID: Int64) -> LedgerStoreError? {
    do {
        _ = try store.read(ledgerID: ledgerID, entryID: entryID)
        return nil
    } catch {
        return error
    }
}

/// Files of a store directory, for crash tests.
enum StoreDirectory {
    static func files(in directory: String, prefix: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasPrefix(prefix) && $0.hasSuffix(".log") }
            .sorted { id(of: $0, prefix: prefix) < id(of: $1, prefix: prefix) }
    }

    static func id(of name: String, prefix: String) -> Int {
        Int(name.dropFirst(prefix.count).dropLast(4)) ?? -1
    }

    static func size(_ path: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.intValue ?? -1
    }

    static func truncate(_ path: String, by bytes: Int) throws {
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        let size = try handle.seekToEnd()
        try handle.truncate(atOffset: size - UInt64(bytes))
    }

    static func flipByte(_ path: String, atOffsetFromEnd distance: Int) throws {
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        let size = try handle.seekToEnd()
        try flip(handle, at: size - UInt64(distance))
    }

    static func flipByte(_ path: String, atOffset offset: Int) throws {
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try flip(handle, at: UInt64(offset))
    }

    private static func flip(_ handle: FileHandle, at offset: UInt64) throws {
        try handle.seek(toOffset: offset)
        let byte = try handle.read(upToCount: 1)![0]
        try handle.seek(toOffset: offset)
        try handle.write(contentsOf: Data([byte ^ 0xFF]))
    }
}

func errorOf(_ result: Result<Void, LedgerStoreError>) -> LedgerStoreError? {
    if case .failure(let error) = result { return error }
    return nil
}
