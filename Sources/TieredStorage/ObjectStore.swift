import Foundation
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Where offloaded ledgers go: named objects, written once in parts and read back by byte range.
/// The filesystem driver keeps them as files under a directory; an S3-compatible bucket keeps them
/// as objects. Implementations are thread-safe.
public protocol ObjectStore: Sendable {
    /// Starts writing the object `key`; it becomes visible whole when the upload completes, never half.
    func beginUpload(_ key: String) async throws(TieredStorageError) -> any ObjectUpload
    /// `length` bytes of `key` from `offset` (fewer only at its end).
    func read(_ key: String, offset: Int64, length: Int) async throws(TieredStorageError) -> ByteBuffer
    /// The object's size, nil when there is no such object.
    func size(of key: String) async throws(TieredStorageError) -> Int64?
    /// Deletes `key`; deleting an object that is not there succeeds.
    func delete(_ key: String) async throws(TieredStorageError)
}

/// One object being written: parts in order, then `complete` (or `abort`, which leaves nothing).
public protocol ObjectUpload: Sendable {
    func write(_ part: ByteBuffer) async throws(TieredStorageError)
    func complete() async throws(TieredStorageError)
    func abort() async
}

/// The filesystem driver's objects (`managedLedgerOffloadDriver=filesystem`, `fileSystemURI`): one
/// file per object under `root` (a local or mounted directory). An upload writes a temporary file,
/// syncs it and renames it into place (then syncs the directory), so an object is there whole or
/// not at all. The blocking calls run on `threadPool`, never on an event loop.
public final class FileSystemObjectStore: ObjectStore {
    public let root: String
    private let threadPool: NIOThreadPool

    public init(root: String, threadPool: NIOThreadPool = .singleton) throws(TieredStorageError) {
        self.root = root
        self.threadPool = threadPool
        do {
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        } catch {
            throw TieredStorageError(.invalidArgument, "cannot create the offload directory \(root): \(error)")
        }
    }

    /// Keys are file names: letters, digits, `-`, `_` and `.`, not starting with a dot.
    func path(_ key: String) throws(TieredStorageError) -> String {
        guard !key.isEmpty, !key.hasPrefix("."), key.utf8.count <= 200,
              key.unicodeScalars.allSatisfy({ $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "-_.".unicodeScalars.contains($0)) })
        else { throw TieredStorageError(.invalidArgument, "'\(key)' cannot name an offloaded object") }
        return root + "/" + key
    }

    func run<T: Sendable>(_ body: @escaping @Sendable () throws(TieredStorageError) -> T) async throws(TieredStorageError) -> T {
        let result: Result<T, TieredStorageError>
        do {
            result = try await threadPool.runIfActive { () -> Result<T, TieredStorageError> in
                do throws(TieredStorageError) { return .success(try body()) } catch { return .failure(error) }
            }
        } catch {
            throw TieredStorageError(.unavailable, "the offload thread pool is not running: \(error)")
        }
        return try result.get()
    }

    static func failure(_ what: String, _ path: String) -> TieredStorageError {
        let code: TieredStorageError.Code = errno == ENOENT ? .notFound : .unavailable
        return TieredStorageError(code, "\(what) \(path) failed: \(String(cString: strerror(errno)))")
    }

    public func beginUpload(_ key: String) async throws(TieredStorageError) -> any ObjectUpload {
        let final = try path(key)
        let temporary = "\(root)/.upload-\(UUID().uuidString)-\(key)"
        let descriptor = try await run { () throws(TieredStorageError) -> CInt in
            let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw Self.failure("creating", temporary) }
            return fd
        }
        return FileUpload(store: self, descriptor: descriptor, temporary: temporary, final: final)
    }

    public func read(_ key: String, offset: Int64, length: Int) async throws(TieredStorageError) -> ByteBuffer {
        let path = try path(key)
        guard offset >= 0, length >= 0 else { throw TieredStorageError(.invalidArgument, "read of \(length) bytes at \(offset)") }
        return try await run { () throws(TieredStorageError) -> ByteBuffer in
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw Self.failure("opening", path) }
            defer { close(fd) }
            var buffer = ByteBufferAllocator().buffer(capacity: length)
            var done = 0
            while done < length {
                let count = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length - done) { out in
                    pread(fd, out.baseAddress, length - done, off_t(offset) + off_t(done))
                }
                if count < 0, errno == EINTR { continue }
                guard count >= 0 else { throw Self.failure("reading", path) }
                if count == 0 { break }
                done += count
            }
            return buffer
        }
    }

    public func size(of key: String) async throws(TieredStorageError) -> Int64? {
        let path = try path(key)
        return try await run { () throws(TieredStorageError) -> Int64? in
            var info = stat()
            guard stat(path, &info) == 0 else {
                if errno == ENOENT { return nil }
                throw Self.failure("stat of", path)
            }
            return Int64(info.st_size)
        }
    }

    public func delete(_ key: String) async throws(TieredStorageError) {
        let path = try path(key)
        try await run { () throws(TieredStorageError) in
            guard unlink(path) == 0 || errno == ENOENT else { throw Self.failure("deleting", path) }
        }
    }

    /// Syncs the directory, so a rename into it survives a crash.
    func syncDirectory() throws(TieredStorageError) {
        let fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw Self.failure("opening", root) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw Self.failure("syncing", root) }
    }
}

/// A file being written by a `FileSystemObjectStore` upload; its calls come one at a time.
final class FileUpload: ObjectUpload, @unchecked Sendable {
    private let store: FileSystemObjectStore
    private let descriptor: CInt
    private let temporary: String
    private let final: String

    init(store: FileSystemObjectStore, descriptor: CInt, temporary: String, final: String) {
        self.store = store
        self.descriptor = descriptor
        self.temporary = temporary
        self.final = final
    }

    func write(_ part: ByteBuffer) async throws(TieredStorageError) {
        let fd = descriptor
        let path = temporary
        try await store.run { () throws(TieredStorageError) in
            var rest = part
            while rest.readableBytes > 0 {
                let count = rest.withUnsafeReadableBytes { posixWrite(fd, $0.baseAddress, $0.count) }
                if count < 0, errno == EINTR { continue }
                guard count > 0 else { throw FileSystemObjectStore.failure("writing", path) }
                rest.moveReaderIndex(forwardBy: count)
            }
        }
    }

    func complete() async throws(TieredStorageError) {
        let fd = descriptor
        let (temporary, final, store) = (self.temporary, self.final, self.store)
        try await store.run { () throws(TieredStorageError) in
            defer { close(fd) }
            guard fsync(fd) == 0 else { throw FileSystemObjectStore.failure("syncing", temporary) }
            guard rename(temporary, final) == 0 else { throw FileSystemObjectStore.failure("renaming", temporary) }
            try store.syncDirectory()
        }
    }

    func abort() async {
        let fd = descriptor
        let temporary = self.temporary
        _ = try? await store.run { () throws(TieredStorageError) in
            close(fd)
            unlink(temporary)
        }
    }
}

/// `write(2)` (inside `FileUpload`, `write` names its own method).
private func posixWrite(_ descriptor: CInt, _ bytes: UnsafeRawPointer?, _ count: Int) -> Int {
    write(descriptor, bytes, count)
}
