import Foundation
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The data directory of a `FileLedgerStore` and the file operations its parts share: every file
/// they open goes through the same fault injector and write observer (the tests' seams).
struct DataDirectory: Sendable {
    let path: String
    let faultInjector: FileFaultInjector?
    let writeObserver: FileWriteObserver?

    func open(_ name: String, flags: CInt) -> Result<OpenFile, LedgerStoreError> {
        OpenFile.open(directory: path, name: name, flags: flags, faultInjector: faultInjector, writeObserver: writeObserver)
    }

    /// Creates (or empties) a file, writes its header, syncs it and the directory.
    func create(_ name: String, magic: [UInt8]) -> Result<OpenFile, LedgerStoreError> {
        let file: OpenFile
        switch open(name, flags: O_RDWR | O_CREAT | O_TRUNC) {
        case .success(let opened): file = opened
        case .failure(let error): return .failure(error)
        }
        var header = ByteBufferAllocator().buffer(capacity: OnDiskFormat.fileHeaderBytes)
        OnDiskFormat.writeFileHeader(magic: magic, into: &header)
        if let error = file.writeAll(header, at: 0) { return .failure(error) }
        if let error = file.syncData() { return .failure(error) }
        if let error = sync() { return .failure(error) }
        return .success(file)
    }

    func remove(_ name: String) -> LedgerStoreError? {
        removeFile(directory: path, name: name)
    }

    func rename(_ from: String, to: String) -> LedgerStoreError? {
        renameFile(directory: path, from: from, to: to)
    }

    /// `fsync` on the directory: created, renamed and removed names become durable.
    func sync() -> LedgerStoreError? {
        syncDirectory(path)
    }

    /// The names in the directory.
    func names() throws(LedgerStoreError) -> [String] {
        do {
            return try FileManager.default.contentsOfDirectory(atPath: path)
        } catch {
            throw .io("list directory \(path) failed: \(error); check its permissions")
        }
    }
}
