#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Thin wrappers over the POSIX file calls the embedded store needs. Every failure becomes a
/// `MetadataStoreError.io` that names the call, the path and the errno text, plus advice.
///
/// "Synced" here means fdatasync(2) (F_FULLFSYNC on Darwin) returned success: the bytes and the file
/// size survive a power loss. A directory is synced with fsync(2) on the directory itself, which makes
/// a create or rename durable.
enum FileIO {
    static func error(_ action: String, _ path: String, errno code: Int32, advice: String) -> MetadataStoreError {
        let reason = String(cString: strerror(code))
        return .io("metadata store: \(action) \(path) failed: \(reason) (errno \(code)); \(advice)")
    }

    static let checkDiskAdvice = "check that the disk is present, writable and not full, then restart the broker"

    /// Creates `path` and any missing parents (mode 0755); syncs the parent of each directory it creates.
    static func makeDirectories(_ path: String) throws(MetadataStoreError) {
        var prefix = path.hasPrefix("/") ? "/" : ""
        for component in path.split(separator: "/") {
            prefix += component
            if mkdir(prefix, 0o755) == 0 {
                try syncDirectory(parent(of: prefix))
            } else if errno != EEXIST {
                throw error("creating directory", prefix, errno: errno, advice: "check the path and its permissions")
            }
            prefix += "/"
        }
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw error("checking directory", path, errno: errno, advice: "check the path and its permissions")
        }
        guard (info.st_mode & S_IFMT) == S_IFDIR else {
            throw MetadataStoreError.io(
                "metadata store: \(path) exists but is not a directory; choose another metadata directory")
        }
    }

    static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    static func open(_ path: String, flags: Int32, mode: mode_t = 0o644) throws(MetadataStoreError) -> Int32 {
        while true {
            let fd = openFile(path, flags | O_CLOEXEC, mode)
            if fd >= 0 { return fd }
            if errno == EINTR { continue }
            throw error(
                "opening", path, errno: errno, advice: "check that the metadata directory exists and is writable")
        }
    }

    /// Takes an exclusive flock on `fd` or throws when another process or store instance holds it.
    static func lockExclusive(_ fd: Int32, path: String) throws(MetadataStoreError) {
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let code = errno
            if code == EWOULDBLOCK {
                throw MetadataStoreError.io(
                    "metadata store: \(path) is locked by another broker process or an open store on the same "
                        + "directory; stop the other one or use a different metadata directory")
            }
            throw error("locking", path, errno: code, advice: checkDiskAdvice)
        }
    }

    static func size(_ fd: Int32, path: String) throws(MetadataStoreError) -> Int {
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw error("reading the size of", path, errno: errno, advice: checkDiskAdvice)
        }
        return Int(info.st_size)
    }

    static func readAll(_ fd: Int32, path: String) throws(MetadataStoreError) -> [UInt8] {
        let total = try size(fd, path: path)
        var bytes = [UInt8](repeating: 0, count: total)
        var done = 0
        while done < total {
            let count = bytes.withUnsafeMutableBytes { buffer in
                pread(fd, buffer.baseAddress! + done, total - done, off_t(done))
            }
            if count < 0 {
                if errno == EINTR { continue }
                throw error("reading", path, errno: errno, advice: checkDiskAdvice)
            }
            if count == 0 { break }  // the file shrank under us; use what was read
            done += count
        }
        return done == total ? bytes : Array(bytes[..<done])
    }

    /// Writes all of `bytes` at `offset`, retrying short writes and EINTR.
    static func write(_ fd: Int32, _ bytes: [UInt8], at offset: Int, path: String) throws(MetadataStoreError) {
        var done = 0
        while done < bytes.count {
            let count = bytes.withUnsafeBytes { buffer in
                pwrite(fd, buffer.baseAddress! + done, bytes.count - done, off_t(offset + done))
            }
            if count < 0 {
                if errno == EINTR { continue }
                throw error("writing", path, errno: errno, advice: checkDiskAdvice)
            }
            done += count
        }
    }

    static func syncData(_ fd: Int32, path: String) throws(MetadataStoreError) {
        while true {
            #if canImport(Darwin)
            let result = fcntl(fd, F_FULLFSYNC)
            #else
            let result = fdatasync(fd)
            #endif
            if result == 0 { return }
            if errno == EINTR { continue }
            throw error("syncing", path, errno: errno, advice: checkDiskAdvice)
        }
    }

    static func truncate(_ fd: Int32, to length: Int, path: String) throws(MetadataStoreError) {
        while ftruncate(fd, off_t(length)) != 0 {
            if errno == EINTR { continue }
            throw error("truncating", path, errno: errno, advice: checkDiskAdvice)
        }
    }

    static func rename(_ from: String, to: String) throws(MetadataStoreError) {
        guard renameFile(from, to) == 0 else {
            throw error("renaming \(from) to", to, errno: errno, advice: checkDiskAdvice)
        }
    }

    /// Removes `path`; a missing file is not an error.
    static func remove(_ path: String) throws(MetadataStoreError) {
        guard unlink(path) == 0 || errno == ENOENT else {
            throw error("removing", path, errno: errno, advice: "remove the file by hand, then restart the broker")
        }
    }

    static func exists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }

    /// fsync on the directory: makes creates, renames and unlinks inside it durable.
    static func syncDirectory(_ path: String) throws(MetadataStoreError) {
        let fd = try open(path, flags: O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        while fsync(fd) != 0 {
            if errno == EINTR { continue }
            throw error("syncing directory", path, errno: errno, advice: checkDiskAdvice)
        }
    }

    static func close(_ fd: Int32) {
        _ = closeFile(fd)
    }
}

// The C functions under names that do not collide with the wrappers above.
private func openFile(_ path: String, _ flags: Int32, _ mode: mode_t) -> Int32 {
    open(path, flags, mode)
}

private func closeFile(_ fd: Int32) -> Int32 {
    close(fd)
}

private func renameFile(_ from: String, _ to: String) -> Int32 {
    rename(from, to)
}
