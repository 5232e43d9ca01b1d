import ManagedLedger
import NIOCore

/// Entry point of the fuzz target (`scripts/fuzz`): the reader of a stored entry's header (what
/// dispatch, TTL and seeks read back from disk), fed arbitrary bytes. It must return for every
/// input. A pure function.
public enum BrokerCoreFuzzing {
    public static func decodeEntry(_ bytes: UnsafeRawBufferPointer) {
        _ = try? Entry.decode(ByteBuffer(bytes: bytes))
    }
}
