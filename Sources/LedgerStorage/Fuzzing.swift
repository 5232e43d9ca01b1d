import NIOCore

/// Entry points of the fuzz targets (`scripts/fuzz`): the readers of the storage node's files, fed
/// arbitrary bytes as a file's contents. They must return for every input. Pure functions.
public enum LedgerStorageFuzzing {
    /// Reads the bytes as a journal or entry log file (header, then records until the end, a torn
    /// tail or corruption), and as an index checkpoint.
    public static func readFiles(_ bytes: UnsafeRawBufferPointer) {
        let buffer = ByteBuffer(bytes: bytes)
        for magic in [OnDiskFormat.journalMagic, OnDiskFormat.entryLogMagic] {
            _ = OnDiskFormat.checkFileHeader(magic: magic, in: buffer, at: buffer.readerIndex)
        }
        var index = buffer.readerIndex + min(OnDiskFormat.fileHeaderBytes, buffer.readableBytes)
        // Records from just after the header, and from the very start (a header-less view).
        for start in [index, buffer.readerIndex] {
            index = start
            while index < buffer.writerIndex {
                guard case .record(let record) = OnDiskFormat.decodeRecord(in: buffer, at: index) else { break }
                _ = buffer.getSlice(at: record.payloadIndex, length: record.payloadLength)
                index += record.recordLength
            }
        }
        _ = IndexCheckpoint.decode(buffer, fileName: "fuzz")
    }
}
