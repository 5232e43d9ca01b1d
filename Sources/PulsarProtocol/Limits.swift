/// Every size limit of the Pulsar wire format in one place (TIGER_STYLE: put a limit on everything).
public enum PulsarLimits {
    /// The `max_message_size` announced in CONNECTED (Java's default, 5 MiB). The client sizes chunks from it.
    public static let maxMessageSizeBytes = 5 * 1024 * 1024
    /// Java's `Commands.MESSAGE_SIZE_FRAME_PADDING`: room for the command and metadata around a maximal payload.
    public static let frameSizePaddingBytes = 10 * 1024
    /// The largest frame accepted from a client; checked from the length field, before the frame is buffered.
    public static let maxFrameSizeBytes = maxMessageSizeBytes + frameSizePaddingBytes
    /// The largest serialized `BaseCommand` accepted; commands are small, payloads travel outside them.
    public static let maxCommandSizeBytes = 5 * 1024 * 1024
    /// The protocol version this broker speaks (the 4.2.0 C++ client sends 20).
    public static let protocolVersion: Int32 = 20
    /// Magic number in front of the CRC32C checksum of a payload frame.
    public static let checksumMagic: UInt16 = 0x0e01
    /// Magic number in front of broker entry metadata (which Magnetar never sends).
    public static let brokerEntryMetadataMagic: UInt16 = 0x0e02
}
