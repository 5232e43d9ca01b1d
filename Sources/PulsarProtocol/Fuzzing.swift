import NIOCore

/// Entry points of the fuzz targets (`scripts/fuzz`, `Sources/MagnetarFuzz`): each takes arbitrary
/// bytes and runs them through this module's decoders the way the broker and the client do. They
/// must return for every input: a trap is a bug. Pure functions.
public enum PulsarProtocolFuzzing {
    /// The frame decoder over the bytes as one read and again dripped in pieces whose sizes come
    /// from the input; every frame's SEND fields, message metadata and hot-path command readers.
    public static func decodeFrames(_ bytes: UnsafeRawBufferPointer) {
        var whole = ByteBuffer(bytes: bytes)
        decodeAll(&whole)
        // Dripped: the same stream in reads of 1...16 bytes (the first byte picks the step).
        guard let first = bytes.first else { return }
        let step = Int(first % 16) + 1
        var decoder = PulsarFrameDecoder()
        var pending = ByteBuffer()
        var offset = 0
        while offset < bytes.count {
            let end = min(offset + step, bytes.count)
            pending.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[offset..<end]))
            offset = end
            do {
                while let frame = try decoder.decode(buffer: &pending) { inspect(frame) }
            } catch {
                return
            }
        }
    }

    private static func decodeAll(_ buffer: inout ByteBuffer) {
        var decoder = PulsarFrameDecoder()
        do {
            while let frame = try decoder.decode(buffer: &buffer) { inspect(frame) }
            _ = try decoder.decodeLast(buffer: &buffer, seenEOF: true)
        } catch {
            return
        }
    }

    private static func inspect(_ frame: PulsarFrame) {
        _ = frame.type
        _ = frame.send
        if let payload = frame.payload {
            _ = payload.isChecksumValid
            _ = try? SendMetadataFields.parse(payload.checksummedBytes)
            _ = try? SendMetadataFields.parse(payload.checksummedBytes, consumerFields: true)
        }
    }

    /// The hand-written readers of client-side commands (SEND_RECEIPT, MESSAGE) and of SEND, fed
    /// the bytes as a serialized `BaseCommand`.
    public static func decodeHotPathCommands(_ bytes: UnsafeRawBufferPointer) {
        let buffer = ByteBuffer(bytes: bytes)
        _ = SendReceiptFields.decodeCommon(buffer)
        _ = MessageCommandFields.decodeCommon(buffer)
        _ = SendCommandFields.decodeCommon(buffer)
        _ = MessageIDFields.decode(buffer)
        _ = try? SendMetadataFields.parse(buffer, consumerFields: true)
    }
}
