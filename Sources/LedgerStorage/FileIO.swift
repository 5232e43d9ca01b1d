import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

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

    private init(descriptor: CInt, name: String) {
        self.descriptor = descriptor
        self.name = name
    }

    deinit {
        _ = systemClose(descriptor)
    }

    static func open(directory: String, name: String, flags: CInt, mode: mode_t = 0o644) -> Result<OpenFile, LedgerStoreError> {
        let path = directory + "/" + name
        let descriptor = path.withCString { systemOpen($0, flags | O_CLOEXEC, mode) }
        guard descriptor >= 0 else {
            return .failure(ioError("open", name: path, hint: "check that the data directory exists and is writable"))
        }
        return .success(OpenFile(descriptor: descriptor, name: name))
    }

    /// Writes all of `bytes` at `offset` (retrying short writes and EINTR).
    func writeAll(_ bytes: UnsafeRawBufferPointer, at offset: Int64) -> LedgerStoreError? {
        var written = 0
        while written < bytes.count {
            let result = pwrite(descriptor, bytes.baseAddress! + written, bytes.count - written, off_t(offset) + off_t(written))
            if result < 0 {
                if errno == EINTR { continue }
                return ioError("pwrite at offset \(offset + Int64(written))", name: name, hint: "check free disk space and the disk's health, then restart the storage node")
            }
            written += result
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

    /// `fdatasync`: the file's data (and the size needed to read it back) reach stable storage.
    func syncData() -> LedgerStoreError? {
        #if os(Linux)
        let result = fdatasync(descriptor)
        #else
        let result = fsync(descriptor)
        #endif
        guard result == 0 else {
            return ioError("fdatasync", name: name, hint: "the disk may have lost writes; stop the storage node and check the disk")
        }
        return nil
    }

    /// `fsync`: data and all metadata.
    func syncAll() -> LedgerStoreError? {
        guard fsync(descriptor) == 0 else {
            return ioError("fsync", name: name, hint: "the disk may have lost writes; stop the storage node and check the disk")
        }
        return nil
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
        return ioError("fsync directory", name: directory, hint: "the disk may have lost writes; stop the storage node and check the disk")
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

/// Builds `.io` from the current `errno`: what failed, on which file, the errno text, what to do.
func ioError(_ operation: String, name: String, hint: String) -> LedgerStoreError {
    let code = errno
    let text = String(cString: strerror(code))
    return .io("\(operation) \(name) failed: \(text) (errno \(code)); \(hint)")
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
