import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A file system call of a `FileLedgerStore` that a `FileFaultInjector` may make fail.
public enum FileOperation: Sendable, Equatable {
    /// A `pwrite` (a journal group, entry log records, a file header, an index checkpoint).
    case write
    /// An `fdatasync` or `fsync` of a file.
    case sync
    /// The `fstatvfs` with which a store whose disk was full checks whether there is room again;
    /// an injected fault reads as "still full".
    case statFileSystem
}

/// What an injected fault does to one file system call.
public enum InjectedFault: Sendable, Equatable {
    /// The call fails with `errorNumber` (an errno value) and changes nothing.
    case fail(errorNumber: CInt)
    /// Writes only: the first `bytes` bytes reach the file, then the call fails with `errorNumber`:
    /// the torn write a disk that fills up in the middle of a group leaves. Other calls: as `fail`.
    case tornWrite(bytes: Int, errorNumber: CInt)
}

/// A test seam: asked before each `write`, `sync` and `statFileSystem` call of a `FileLedgerStore`
/// (on the calling thread, mostly the journal thread), with the operation and the file's name in
/// the store directory; nil lets the call go to the kernel, a fault makes it fail as a full or
/// broken disk would. Must be thread-safe and cheap. Production stores have none.
public typealias FileFaultInjector = @Sendable (_ operation: FileOperation, _ fileName: String) -> InjectedFault?

/// What a `FileWriteObserver` is told: each `pwrite` before it happens, and each successful sync.
public enum FileWriteEvent: Sendable, Equatable {
    /// `count` bytes are about to be written at `offset` of `fileName` (a name in the store directory).
    case willWrite(fileName: String, offset: Int64, count: Int)
    /// An `fdatasync` / `fsync` of `fileName` returned success: its writes so far are durable.
    case synced(fileName: String)
}

/// A test seam beside `FileFaultInjector`: sees every write and sync of a `FileLedgerStore`'s files,
/// on the calling thread, so a test can model what a crash would keep (`CrashingDisk` in the
/// storage tests: unsynced writes lost, the last one torn). Must be thread-safe. Production stores
/// have none.
public typealias FileWriteObserver = @Sendable (FileWriteEvent) -> Void

/// An open file descriptor, closed when the last reference goes away. Readers take a reference
/// under the store's lock and `pread` outside it, so deleting an entry log never closes a
/// descriptor under a reader's feet.
///
/// Methods return the error instead of throwing so they can be called from inside the
/// `withUnsafe…Bytes` closures of `ByteBuffer`.
final class OpenFile: @unchecked Sendable {
    let descriptor: CInt
    /// The file's name inside the store directory, for error messages.
    let name: String
    /// Tests only: decides whether a write, sync or file system check fails.
    private let faultInjector: FileFaultInjector?
    /// Tests only: told about every write and sync.
    private let writeObserver: FileWriteObserver?

    private init(descriptor: CInt, name: String, faultInjector: FileFaultInjector?, writeObserver: FileWriteObserver?) {
        self.descriptor = descriptor
        self.name = name
        self.faultInjector = faultInjector
        self.writeObserver = writeObserver
    }

    deinit {
        _ = systemClose(descriptor)
    }

    static func open(
        directory: String, name: String, flags: CInt, mode: mode_t = 0o644, faultInjector: FileFaultInjector? = nil,
        writeObserver: FileWriteObserver? = nil
    ) -> Result<OpenFile, LedgerStoreError> {
        let path = directory + "/" + name
        let descriptor = path.withCString { systemOpen($0, flags | O_CLOEXEC, mode) }
        guard descriptor >= 0 else {
            return .failure(ioError("open", name: path, hint: "check that the data directory exists and is writable"))
        }
        return .success(OpenFile(descriptor: descriptor, name: name, faultInjector: faultInjector, writeObserver: writeObserver))
    }

    private static let writeHint = "check free disk space (writes resume by themselves once there is room) and the disk's health"

    /// Writes all of `bytes` at `offset` (retrying short writes and EINTR). A full disk gives
    /// `.diskFull`; part of the bytes may have reached the file then.
    func writeAll(_ bytes: UnsafeRawBufferPointer, at offset: Int64) -> LedgerStoreError? {
        var limit = bytes.count
        var injectedError: CInt?
        switch faultInjector?(.write, name) {
        case .fail(let errorNumber)?:
            return ioError("pwrite at offset \(offset)", name: name, hint: Self.writeHint, code: errorNumber)
        case .tornWrite(let count, let errorNumber)?:
            limit = min(max(count, 0), bytes.count)
            injectedError = errorNumber
        case nil:
            break
        }
        writeObserver?(.willWrite(fileName: name, offset: offset, count: limit))
        var written = 0
        while written < limit {
            let result = pwrite(descriptor, bytes.baseAddress! + written, limit - written, off_t(offset) + off_t(written))
            if result < 0 {
                if errno == EINTR { continue }
                return ioError("pwrite at offset \(offset + Int64(written))", name: name, hint: Self.writeHint)
            }
            written += result
        }
        if let injectedError {
            return ioError("pwrite at offset \(offset + Int64(written))", name: name, hint: Self.writeHint, code: injectedError)
        }
        return nil
    }

    func writeAll(_ buffer: ByteBuffer, at offset: Int64) -> LedgerStoreError? {
        buffer.withUnsafeReadableBytes { writeAll($0, at: offset) }
    }

    /// Reads exactly `count` bytes at `offset` into a new buffer. A short read (end of file) is an error.
    func read(count: Int, at offset: Int64, allocator: ByteBufferAllocator) -> Result<ByteBuffer, LedgerStoreError> {
        var buffer = allocator.buffer(capacity: count)
        var failure: LedgerStoreError?
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { target in
            var done = 0
            while done < count {
                let result = pread(descriptor, target.baseAddress! + done, count - done, off_t(offset) + off_t(done))
                if result < 0 {
                    if errno == EINTR { continue }
                    failure = ioError("pread at offset \(offset + Int64(done))", name: name, hint: "check the disk's health")
                    return 0
                }
                if result == 0 {
                    failure = .corrupted("\(name) offset \(offset): file ends \(count - done) bytes before the record does")
                    return 0
                }
                done += result
            }
            return count
        }
        if let failure { return .failure(failure) }
        return .success(buffer)
    }

    /// The errno an injected fault gives a call other than a write, if any.
    private func injectedError(_ operation: FileOperation) -> CInt? {
        switch faultInjector?(operation, name) {
        case .fail(let errorNumber)?, .tornWrite(_, let errorNumber)?: return errorNumber
        case nil: return nil
        }
    }

    private static let syncHint = "the disk may have lost writes; stop the storage node and check the disk"

    /// `fdatasync`: the file's data (and the size needed to read it back) reach stable storage.
    /// A failure is always `.io`, even for ENOSPC (see `syncError`).
    func syncData() -> LedgerStoreError? {
        if let errorNumber = injectedError(.sync) {
            return syncError("fdatasync", name: name, hint: Self.syncHint, code: errorNumber)
        }
        #if os(Linux)
        let result = fdatasync(descriptor)
        #else
        let result = fsync(descriptor)
        #endif
        guard result == 0 else {
            return syncError("fdatasync", name: name, hint: Self.syncHint)
        }
        writeObserver?(.synced(fileName: name))
        return nil
    }

    /// `fsync`: data and all metadata. A failure is always `.io`.
    func syncAll() -> LedgerStoreError? {
        if let errorNumber = injectedError(.sync) {
            return syncError("fsync", name: name, hint: Self.syncHint, code: errorNumber)
        }
        guard fsync(descriptor) == 0 else {
            return syncError("fsync", name: name, hint: Self.syncHint)
        }
        writeObserver?(.synced(fileName: name))
        return nil
    }

    /// Bytes that unprivileged writers may still use on the file's file system (`fstatvfs`), nil
    /// when unknown (or when a fault is injected: a full disk).
    func availableBytes() -> UInt64? {
        if injectedError(.statFileSystem) != nil { return nil }
        var info = statvfs()
        guard fstatvfs(descriptor, &info) == 0 else { return nil }
        let (bytes, overflow) = UInt64(info.f_bavail).multipliedReportingOverflow(by: UInt64(info.f_frsize))
        return overflow ? .max : bytes
    }

    func truncate(to size: Int64) -> LedgerStoreError? {
        guard ftruncate(descriptor, off_t(size)) == 0 else {
            return ioError("ftruncate to \(size) bytes", name: name, hint: "check that the data directory is writable")
        }
        return nil
    }

    func size() -> Result<Int64, LedgerStoreError> {
        var info = stat()
        guard fstat(descriptor, &info) == 0 else {
            return .failure(ioError("fstat", name: name, hint: "check the data directory"))
        }
        return .success(Int64(info.st_size))
    }

    /// Takes an exclusive advisory lock, so two stores never share a directory.
    func lockExclusively() -> LedgerStoreError? {
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            return ioError("flock", name: name, hint: "another storage node process (or store instance) is using this data directory")
        }
        return nil
    }

    func unlock() {
        _ = flock(descriptor, LOCK_UN)
    }
}

/// `fsync` on the directory, so that created, renamed and removed names are durable.
func syncDirectory(_ directory: String) -> LedgerStoreError? {
    let descriptor = directory.withCString { systemOpen($0, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0) }
    guard descriptor >= 0 else {
        return ioError("open directory", name: directory, hint: "check that the data directory exists")
    }
    defer { _ = systemClose(descriptor) }
    guard fsync(descriptor) == 0 else {
        return syncError("fsync directory", name: directory, hint: "the disk may have lost writes; stop the storage node and check the disk")
    }
    return nil
}

func renameFile(directory: String, from: String, to: String) -> LedgerStoreError? {
    let result = (directory + "/" + from).withCString { source in
        (directory + "/" + to).withCString { target in rename(source, target) }
    }
    guard result == 0 else {
        return ioError("rename \(from) to", name: to, hint: "check that the data directory is writable")
    }
    return nil
}

func removeFile(directory: String, name: String) -> LedgerStoreError? {
    let result = (directory + "/" + name).withCString { unlink($0) }
    guard result == 0 || errno == ENOENT else {
        return ioError("unlink", name: name, hint: "check that the data directory is writable")
    }
    return nil
}

/// Builds the error of a failed call from `code` (the current `errno` unless given): what failed,
/// on which file, the errno text, what to do. No room (`ENOSPC`, `EDQUOT`) is `.diskFull`, which
/// the store recovers from once space is freed; anything else is `.io`.
func ioError(_ operation: String, name: String, hint: String, code: CInt = errno) -> LedgerStoreError {
    let text = errorText(operation, name: name, hint: hint, code: code)
    return code == ENOSPC || code == EDQUOT ? .diskFull(text) : .io(text)
}

/// As `ioError`, but always `.io`: after a failed sync the kernel may have dropped the unsynced
/// pages (and report success for them next time), so no failed sync is ever retried as if
/// nothing had happened, whatever its errno.
func syncError(_ operation: String, name: String, hint: String, code: CInt = errno) -> LedgerStoreError {
    .io(errorText(operation, name: name, hint: hint, code: code))
}

private func errorText(_ operation: String, name: String, hint: String, code: CInt) -> String {
    "\(operation) \(name) failed: \(String(cString: strerror(code))) (errno \(code)); \(hint)"
}

private func systemOpen(_ path: UnsafePointer<CChar>, _ flags: CInt, _ mode: mode_t) -> CInt {
    #if canImport(Glibc)
    return Glibc.open(path, flags, mode)
    #elseif canImport(Musl)
    return Musl.open(path, flags, mode)
    #else
    return Darwin.open(path, flags, mode)
    #endif
}

private func systemClose(_ descriptor: CInt) -> CInt {
    #if canImport(Glibc)
    return Glibc.close(descriptor)
    #elseif canImport(Musl)
    return Musl.close(descriptor)
    #else
    return Darwin.close(descriptor)
    #endif
}
